// AVX2 + FMA + F16C kernels (x86-64). This file is compiled with -mavx2 -mfma -mf16c and must only
// run after cpu_kernels() checked the CPU: keep everything here internal (static / anonymous
// namespace) so no AVX2 code leaks into functions the linker could share with portable code.
#include <immintrin.h>

#include <limits>

#include "backend/cpu/kernels.h"
#include "common/dtype.h"

namespace mcpm {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Loaders turning 8 stored elements into 8 floats, plus the scalar version for tails.
struct LoadF32 {
  static __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
  static float load1(const float* p) { return *p; }
};
struct LoadF16 {
  static __m256 load8(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static float load1(const uint16_t* p) { return f16_to_f32(*p); }
};
struct LoadBF16 {
  static __m256 load8(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static float load1(const uint16_t* p) { return bf16_to_f32(*p); }
};

// One row at a time with four independent accumulators: a single sequential stream per thread is
// what the hardware prefetchers follow best (interleaving several rows measured 2x slower on Zen 4).
template <typename L, typename T>
void gemv(const T* W, const float* x, float* y, int64_t rows, int64_t K) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* w = W + r * K;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      a0 = _mm256_fmadd_ps(L::load8(w + k), _mm256_loadu_ps(x + k), a0);
      a1 = _mm256_fmadd_ps(L::load8(w + k + 8), _mm256_loadu_ps(x + k + 8), a1);
      a2 = _mm256_fmadd_ps(L::load8(w + k + 16), _mm256_loadu_ps(x + k + 16), a2);
      a3 = _mm256_fmadd_ps(L::load8(w + k + 24), _mm256_loadu_ps(x + k + 24), a3);
    }
    for (; k + 8 <= K; k += 8) a0 = _mm256_fmadd_ps(L::load8(w + k), _mm256_loadu_ps(x + k), a0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; k < K; ++k) s += L::load1(w + k) * x[k];
    y[r] = s;
  }
}

void gemv_f32(const float* W, const float* x, float* y, int64_t rows, int64_t K) { gemv<LoadF32>(W, x, y, rows, K); }
void gemv_f16(const uint16_t* W, const float* x, float* y, int64_t rows, int64_t K) {
  gemv<LoadF16>(W, x, y, rows, K);
}

// Packed x for the bf16 GEMV: for each block of 16 elements, its 8 even elements then its 8 odd
// ones. Elements past the last full block are not packed (the GEMV reads them from x).
void pack_x_bf16(const float* x, float* packed, int64_t K) {
  for (int64_t k = 0; k + 16 <= K; k += 16)
    for (int j = 0; j < 8; ++j) {
      packed[k + j] = x[k + 2 * j];
      packed[k + 8 + j] = x[k + 2 * j + 1];
    }
}

// A 256-bit load holds 8 pairs of bf16. As 32-bit lanes, the odd element of each pair already sits
// in the upper half (a mask makes it an fp32), and the even one needs a 16-bit left shift.
void gemv_bf16(const uint16_t* W, const float* x, const float* xp, float* y, int64_t rows, int64_t K) {
  const __m256i upper = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* w = W + r * K;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k));
      const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k + 16));
      a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), _mm256_loadu_ps(xp + k), a0);
      a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v0, upper)), _mm256_loadu_ps(xp + k + 8), a1);
      a2 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), _mm256_loadu_ps(xp + k + 16), a2);
      a3 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v1, upper)), _mm256_loadu_ps(xp + k + 24), a3);
    }
    for (; k + 16 <= K; k += 16) {
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k));
      a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), _mm256_loadu_ps(xp + k), a0);
      a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v0, upper)), _mm256_loadu_ps(xp + k + 8), a1);
    }
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; k < K; ++k) s += bf16_to_f32(w[k]) * x[k];
    y[r] = s;
  }
}

// RR rows x TT tokens of the multi-token bf16 product, straight from the bf16 rows (the pair trick of
// gemv_bf16): per 16 k, RR loads and 2 RR widening ops serve TT tokens, and RR x TT accumulators
// (at most 8) take an even and an odd FMA each. xp: TT packed rows (stride ldx); tails from x.
template <int RR, int TT>
void gemm_bf16_tile(const uint16_t* W, int64_t K, const float* x, const float* xp, int64_t ldx, float* out,
                    int64_t ldo) {
  const __m256i upper = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  __m256 acc[RR][TT];
  for (int r = 0; r < RR; ++r)
    for (int t = 0; t < TT; ++t) acc[r][t] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256 even[RR], odd[RR];
    for (int r = 0; r < RR; ++r) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(W + r * K + k));
      even[r] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
      odd[r] = _mm256_castsi256_ps(_mm256_and_si256(v, upper));
    }
    for (int t = 0; t < TT; ++t) {
      const __m256 xe = _mm256_loadu_ps(xp + t * ldx + k), xo = _mm256_loadu_ps(xp + t * ldx + k + 8);
      for (int r = 0; r < RR; ++r) acc[r][t] = _mm256_fmadd_ps(odd[r], xo, _mm256_fmadd_ps(even[r], xe, acc[r][t]));
    }
  }
  for (int r = 0; r < RR; ++r)
    for (int t = 0; t < TT; ++t) {
      float s = hsum(acc[r][t]);
      for (int64_t kk = k; kk < K; ++kk) s += bf16_to_f32(W[r * K + kk]) * x[t * ldx + kk];
      out[t * ldo + r] = s;
    }
}

template <int TT>
void gemm_bf16_tokens(const uint16_t* W, int64_t rows, int64_t K, const float* x, const float* xp, int64_t ldx,
                      float* out, int64_t ldo) {
  int64_t r = 0;
  for (; r + 2 <= rows; r += 2) gemm_bf16_tile<2, TT>(W + r * K, K, x, xp, ldx, out + r, ldo);
  if (r < rows) gemm_bf16_tile<1, TT>(W + r * K, K, x, xp, ldx, out + r, ldo);
}

// Rows in pairs, tokens in groups of 4: a row pair (2 x K bf16) stays in cache across the groups, so
// the weights stream from memory once.
void gemm_bf16(const uint16_t* W, int64_t rows, int64_t K, const float* x, const float* xp, int64_t ldx, int64_t T,
               float* out, int64_t ldo) {
  for (int64_t r0 = 0; r0 < rows; r0 += 2) {
    const int64_t rr = rows - r0 < 2 ? rows - r0 : 2;
    int64_t t = 0;
    for (; t + 4 <= T; t += 4)
      gemm_bf16_tokens<4>(W + r0 * K, rr, K, x + t * ldx, xp + t * ldx, ldx, out + t * ldo + r0, ldo);
    const float* xt = x + t * ldx;
    const float* xpt = xp + t * ldx;
    float* o = out + t * ldo + r0;
    switch (T - t) {
      case 3: gemm_bf16_tokens<3>(W + r0 * K, rr, K, xt, xpt, ldx, o, ldo); break;
      case 2: gemm_bf16_tokens<2>(W + r0 * K, rr, K, xt, xpt, ldx, o, ldo); break;
      case 1: gemm_bf16_tokens<1>(W + r0 * K, rr, K, xt, xpt, ldx, o, ldo); break;
      default: break;
    }
  }
}

template <typename L>
void convert_row(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, L::load8(src + i));
  for (; i < n; ++i) dst[i] = L::load1(src + i);
}
void f16_row(const uint16_t* src, float* dst, int64_t n) { convert_row<LoadF16>(src, dst, n); }
void bf16_row(const uint16_t* src, float* dst, int64_t n) { convert_row<LoadBF16>(src, dst, n); }

float dot(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// 4 weight rows x 2 tokens per step: 6 loads feed 8 FMAs.
void gemm4(const float* W, int64_t K, const float* X, int64_t ldx, int64_t T, float* out, int64_t ldo) {
  const float* w0 = W;
  const float* w1 = W + K;
  const float* w2 = W + 2 * K;
  const float* w3 = W + 3 * K;
  int64_t t = 0;
  for (; t + 2 <= T; t += 2) {
    const float* xa = X + t * ldx;
    const float* xb = xa + ldx;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      const __m256 va = _mm256_loadu_ps(xa + k);
      const __m256 vb = _mm256_loadu_ps(xb + k);
      const __m256 v0 = _mm256_loadu_ps(w0 + k), v1 = _mm256_loadu_ps(w1 + k);
      const __m256 v2 = _mm256_loadu_ps(w2 + k), v3 = _mm256_loadu_ps(w3 + k);
      a0 = _mm256_fmadd_ps(v0, va, a0);
      a1 = _mm256_fmadd_ps(v1, va, a1);
      a2 = _mm256_fmadd_ps(v2, va, a2);
      a3 = _mm256_fmadd_ps(v3, va, a3);
      b0 = _mm256_fmadd_ps(v0, vb, b0);
      b1 = _mm256_fmadd_ps(v1, vb, b1);
      b2 = _mm256_fmadd_ps(v2, vb, b2);
      b3 = _mm256_fmadd_ps(v3, vb, b3);
    }
    float ra[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
    float rb[4] = {hsum(b0), hsum(b1), hsum(b2), hsum(b3)};
    for (; k < K; ++k) {
      const float wk[4] = {w0[k], w1[k], w2[k], w3[k]};
      for (int r = 0; r < 4; ++r) {
        ra[r] += wk[r] * xa[k];
        rb[r] += wk[r] * xb[k];
      }
    }
    for (int r = 0; r < 4; ++r) {
      out[t * ldo + r] = ra[r];
      out[(t + 1) * ldo + r] = rb[r];
    }
  }
  if (t < T) {
    const float* x = X + t * ldx;
    for (int r = 0; r < 4; ++r) out[t * ldo + r] = dot(W + r * K, x, K);
  }
}

void axpy(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

void scale(float a, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] *= a;
}

// The exact int4 weights of one 4-row block, 16 codes at a time: (c - 8) * s = c * s - 8s, one FMA
// that is exact (c * s needs at most 15 significant bits).
void int4_dequant_block(const uint8_t* codes, const uint16_t* scales, int64_t K, float* out) {
  const int64_t groups = K / int4cpu::kGroup;
  const __m128i mask = _mm_set1_epi8(15);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t r = 0; r < 4; ++r) {
      const uint8_t* c = codes + (g * 4 + r) * int4cpu::kGroupBytes;
      const float sf = f16_to_f32(scales[g * 4 + r]);
      const __m256 s = _mm256_set1_ps(sf), s8 = _mm256_set1_ps(8.0f * sf);
      float* o = out + r * K + g * int4cpu::kGroup;
      for (int64_t j = 0; j < int4cpu::kGroupBytes; j += 16) {
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + j));
        const __m128i lo = _mm_and_si128(raw, mask), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
        const __m128i parts[2][2] = {{lo, _mm_srli_si128(lo, 8)}, {hi, _mm_srli_si128(hi, 8)}};
        for (int h = 0; h < 2; ++h)
          for (int i = 0; i < 2; ++i) {
            const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[h][i]));
            _mm256_storeu_ps(o + h * int4cpu::kGroupBytes + j + 8 * i, _mm256_fmsub_ps(v, s, s8));
          }
      }
    }
}

#include "backend/cpu/kernels_x86_int4.h"

// int4cpu::quantize_row_q8, 8 lanes at a time (vroundps to nearest even, then exact conversions).
void quantize_q8(const float* x, int64_t K, int8_t* q, float* scale, int32_t* bias) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t g = 0; g < K / int4cpu::kGroup; ++g) {
    const float* xb = x + g * int4cpu::kGroup;
    __m256 amax = _mm256_setzero_ps(), probe = _mm256_setzero_ps();
    for (int64_t i = 0; i < int4cpu::kGroup; i += 8) {
      const __m256 v = _mm256_loadu_ps(xb + i);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v));
      probe = _mm256_add_ps(probe, _mm256_mul_ps(v, _mm256_setzero_ps()));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    const float m = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    const bool finite = hsum(probe) == 0.0f;
    const __m256 inv = _mm256_set1_ps(m > 0.0f ? 127.0f / m : 0.0f);
    __m256i sum = _mm256_setzero_si256();
    for (int64_t i = 0; i < int4cpu::kGroup; i += 32) {
      __m256i v[4];
      for (int j = 0; j < 4; ++j) {
        const __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 8 * j), inv),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v[j] = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(r, _mm256_set1_ps(127.0f)), _mm256_set1_ps(-127.0f)));
        sum = _mm256_add_epi32(sum, v[j]);
      }
      // Pack 32 int32 to int8 (the values fit, no saturation); packs interleave 128-bit lanes, so
      // restore the order with one permute.
      const __m256i w = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      const __m256i ordered = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + g * int4cpu::kGroup + i), ordered);
    }
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    scale[g] = finite ? m / 127.0f : std::numeric_limits<float>::quiet_NaN();
    bias[g] = -8 * _mm_cvtsi128_si32(s4);
  }
}

void int4_q8_gemm(const uint8_t* codes, const uint16_t* scales, int64_t rows, int64_t K, const int4cpu::Q8Rows& x,
                  int64_t T, float* y, int64_t ldy) {
  int4_q8_gemm_x86<Vec256<MaddubsDot256>>(codes, scales, rows, K, x, T, y, ldy);
}

}  // namespace

const CpuKernels kAvx2Kernels = {"avx2",   gemv_f32, gemv_f16, gemv_bf16, pack_x_bf16, f16_row,  bf16_row,
                                 gemm4,    dot,      axpy,     scale,     int4_dequant_block, int4_q8_gemm, quantize_q8,
                                 gemm_bf16, nullptr, nullptr};

}  // namespace mcpm
