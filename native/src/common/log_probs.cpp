#include "common/log_probs.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace mcpm {

void top_k_indices(const float* values, int32_t n, int32_t k, int32_t* out) {
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](int32_t a, int32_t b) { return values[a] > values[b] || (values[a] == values[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  std::copy(idx.begin(), idx.begin() + k, out);
}

void log_softmax(float* x, int32_t n) {
  const float m = *std::max_element(x, x + n);
  double sum = 0;
  for (int32_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i] - m));
  const float lse = m + static_cast<float>(std::log(sum));
  for (int32_t i = 0; i < n; ++i) x[i] -= lse;
}

}  // namespace mcpm
