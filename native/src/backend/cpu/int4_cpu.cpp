#include "backend/cpu/int4_cpu.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/int4.h"

namespace mcpm {
namespace int4cpu {

void pack_codes(const uint8_t* q, int64_t K, int64_t N, uint8_t* codes) {
  const int64_t groups = K / kGroup;
  // Rows of q (one k each) are read contiguously; each k's codes land at stride 64 within a group.
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t j = 0; j < kGroupBytes; ++j) {
      const uint8_t* lo = q + (kGroup * g + j) * N;
      const uint8_t* hi = lo + kGroupBytes * N;
      for (int64_t n = 0; n < N; ++n) {
        const int64_t b = n / kRowBlock, r = n % kRowBlock;
        codes[((b * groups + g) * kRowBlock + r) * kGroupBytes + j] =
            static_cast<uint8_t>((lo[n] & 15u) | (hi[n] & 15u) << 4);
      }
    }
}

void pack_scales(const uint16_t* scales, int64_t K, int64_t N, uint16_t* cpu_scales) {
  const int64_t groups = K / kGroup;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t n = 0; n < N; ++n)
      cpu_scales[(n / kRowBlock * groups + g) * kRowBlock + n % kRowBlock] = scales[g * N + n];
}

void repack_marlin_codes(void* qweight, int64_t K, int64_t N) {
  const std::vector<uint8_t> q = int4::unpack_marlin_qweight(static_cast<const int32_t*>(qweight), K, N);
  pack_codes(q.data(), K, N, static_cast<uint8_t*>(qweight));
}

void repack_marlin_scales(uint16_t* scales, int64_t K, int64_t N) {
  const std::vector<uint16_t> plain = int4::unpermute_marlin_scales(scales, K, N);
  pack_scales(plain.data(), K, N, scales);
}

void quantize_row_q8(const float* x, int64_t K, int8_t* q, float* scale, int32_t* bias) {
  for (int64_t g = 0; g < K / kGroup; ++g) {
    const float* xb = x + g * kGroup;
    float amax = 0.0f, probe = 0.0f;  // probe becomes NaN if the block holds a NaN or an infinity
    for (int64_t i = 0; i < kGroup; ++i) {
      amax = std::fmax(amax, std::fabs(xb[i]));
      probe += xb[i] * 0.0f;
    }
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    int32_t sum = 0;
    for (int64_t i = 0; i < kGroup; ++i) {
      const float v = std::nearbyint(xb[i] * inv);
      const int32_t c = static_cast<int32_t>(std::fmin(127.0f, std::fmax(-127.0f, v)));
      q[g * kGroup + i] = static_cast<int8_t>(c);
      sum += c;
    }
    // A non-finite input must stay visible downstream (the engine's non-finite logits check).
    scale[g] = probe == 0.0f ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
    bias[g] = -8 * sum;
  }
}

}  // namespace int4cpu
}  // namespace mcpm
