#include "common/token_draw.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>

namespace mcpm {

int32_t greedy_token(const float* logits, int32_t vocab, const uint32_t* mask) {
  if (mask == nullptr) {
    int32_t best = 0;
    for (int32_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return best;
  }
  int32_t best = -1;
  for (int32_t i = 0; i < vocab; ++i)
    if (token_allowed(mask, i) && (best < 0 || logits[i] > logits[best])) best = i;
  return best;
}

int32_t draw_token(const float* logits, int32_t vocab, const DrawParams& c, double u, DrawScratch& scratch,
                   const uint32_t* mask) {
  std::vector<int32_t>& ids = scratch.ids;
  std::vector<float>& probs = scratch.probs;
  if (mask == nullptr) {
    ids.resize(static_cast<size_t>(vocab));
    std::iota(ids.begin(), ids.end(), 0);
  } else {
    ids.clear();
    for (int32_t i = 0; i < vocab; ++i)
      if (token_allowed(mask, i)) ids.push_back(i);
    if (ids.empty()) return -1;
  }
  auto before = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  size_t n = ids.size();
  if (c.top_k > 0 && static_cast<size_t>(c.top_k) < n) {
    std::nth_element(ids.begin(), ids.begin() + c.top_k, ids.end(), before);
    n = static_cast<size_t>(c.top_k);
  }
  // Sorting is only needed for the truncations; plain temperature sampling draws in id order.
  const bool truncating = c.truncating();
  if (truncating) std::sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n), before);

  const double inv_t = 1.0 / static_cast<double>(c.temperature);
  double max_l;
  if (truncating) {
    max_l = logits[ids[0]];
  } else if (mask == nullptr) {
    max_l = *std::max_element(logits, logits + vocab);
  } else {
    float m = logits[ids[0]];
    for (size_t i = 1; i < n; ++i) m = std::max(m, logits[ids[i]]);
    max_l = m;
  }
  probs.resize(n);
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double p = std::exp((static_cast<double>(logits[ids[i]]) - max_l) * inv_t);
    probs[i] = static_cast<float>(p);
    total += p;
  }
  if (c.top_p < 1.0f) {
    double cumulative = 0.0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      cumulative += probs[i] / total;
      if (cumulative >= c.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
  }
  if (c.min_p > 0.0f) {  // probs[0] is the largest
    const float threshold = c.min_p * probs[0];
    size_t keep = 1;
    while (keep < n && probs[keep] >= threshold) ++keep;
    n = keep;
  }
  double kept = 0.0;
  for (size_t i = 0; i < n; ++i) kept += probs[i];
  double left = u * kept;
  for (size_t i = 0; i < n; ++i) {
    left -= probs[i];
    if (left < 0.0) return ids[i];
  }
  return ids[n - 1];  // rounding left `left` at or just above zero
}

}  // namespace mcpm
