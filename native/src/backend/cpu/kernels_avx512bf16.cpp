// The AVX512-BF16 level (Cooper Lake, Sapphire Rapids, Zen 4): the AVX512-VNNI kernels plus a bf16
// prefill GEMM on vdpbf16ps, which multiplies pairs of bf16 and adds both products to an fp32 lane
// (32 multiply-adds per instruction). The activations are rounded to bf16 first (round to nearest
// even), as llama.cpp's BF16 matmul does; products of two bf16 are exact in fp32, so the only new error
// is that rounding, |x - bf16(x)| <= 2^-9 |x|. Compiled with the AVX-512 flags plus -mavx512vnni
// -mavx512bf16.
#if defined(__GNUC__) && !defined(__clang__)  // see kernels_avx512.cpp
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "backend/cpu/kernels.h"
#include "common/dtype.h"

namespace mcpm {
namespace {

// dst[i] = bf16(src[i]), round to nearest even, 32 at a time (a masked tail).
void to_bf16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
    _mm512_storeu_si512(dst + i, reinterpret_cast<const __m512i&>(v));
  }
  for (; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

inline float hsum(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// R weight rows x T tokens: 32 k per step, R + T loads for R * T vdpbf16ps; a masked final step for
// K % 32. Lanes hold partial sums over k pairs, summed once at the end.
template <int R, int T>
void tile(const uint16_t* W, int64_t K, const uint16_t* x, int64_t ldx, float* out, int64_t ldo) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  auto step = [&](int64_t k, __mmask32 m, bool full) {
    __m512bh w[R];
    for (int r = 0; r < R; ++r) {
      const __m512i v = full ? _mm512_loadu_si512(W + r * K + k) : _mm512_maskz_loadu_epi16(m, W + r * K + k);
      w[r] = reinterpret_cast<const __m512bh&>(v);
    }
    for (int t = 0; t < T; ++t) {
      const __m512i xi = full ? _mm512_loadu_si512(x + t * ldx + k) : _mm512_maskz_loadu_epi16(m, x + t * ldx + k);
      const __m512bh xv = reinterpret_cast<const __m512bh&>(xi);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], w[r], xv);
    }
  };
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) step(k, ~__mmask32{0}, true);
  if (k < K) step(k, static_cast<__mmask32>((1u << (K - k)) - 1u), false);
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[t * ldo + r] = hsum(acc[r][t]);
}

template <int R>
void rows_tile(const uint16_t* W, int64_t K, const uint16_t* x, int64_t ldx, int64_t T, float* out, int64_t ldo) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) tile<R, 4>(W, K, x + t * ldx, ldx, out + t * ldo, ldo);
  switch (T - t) {
    case 0: break;
    case 1: tile<R, 1>(W, K, x + t * ldx, ldx, out + t * ldo, ldo); break;
    case 2: tile<R, 2>(W, K, x + t * ldx, ldx, out + t * ldo, ldo); break;
    default: tile<R, 3>(W, K, x + t * ldx, ldx, out + t * ldo, ldo); break;
  }
}

// out[t*ldo + r] = dot(W[r, 0:K], x[t*ldx, 0:K]) over bf16 rows and bf16 activations: 4 rows at a
// time, each 4-row block meeting every token while it sits in L1/L2.
void gemm_bf16_dp(const uint16_t* W, int64_t rows, int64_t K, const uint16_t* x, int64_t ldx, int64_t T, float* out,
                  int64_t ldo) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) rows_tile<4>(W + r * K, K, x, ldx, T, out + r, ldo);
  for (; r < rows; ++r) rows_tile<1>(W + r * K, K, x, ldx, T, out + r, ldo);
}

}  // namespace

const CpuKernels& avx512bf16_kernels() {
  // Built on first use: a copy of a table from another file must not depend on initialisation order.
  static const CpuKernels table = [] {
    CpuKernels k = avx512vnni_kernels();
    k.name = "avx512bf16";
    k.to_bf16 = to_bf16;
    k.gemm_bf16_dp = gemm_bf16_dp;
    return k;
  }();
  return table;
}

}  // namespace mcpm
