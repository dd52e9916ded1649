// AVX2 + FMA + F16C kernels (x86-64). This file is compiled with -mavx2 -mfma -mf16c and must only
// run after cpu_kernels() checked the CPU: keep everything here internal (static / anonymous
// namespace) so no AVX2 code leaks into functions the linker could share with portable code.
#include <immintrin.h>

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

// The int4 GEMV. Eight consecutive words 8v..8v+7 of a slab's chunk are lanes
// 2v, 2v+1 (j = 0..3 each) of the Marlin layout: element e holds, per nibble p, row
// [2t, 2t+1, 2t+8, 2t+9][o % 4] with t = 2(v % 2) + e / 4 and column 16(e % 4) + 8(o / 4) + v / 2.
// So one vector of words decodes, nibble by nibble, into weights that meet a fixed input vector
// (two broadcasts: the rows of the two t) and land in accumulator (v, o / 4), element e of which is a
// partial sum of column 16(e % 4) + 8(o / 4) + v / 2. The weight (q - 8) * s is formed exactly as
// q * s - 8s with one FMA; the four partial sums of a column are added at the end.
template <int M>
void int4_gemv_m(const int32_t* words, int64_t row_words, int64_t K, const float* scale, const float* x,
                 int64_t ldx, float* y, int64_t ldy) {
  static constexpr int kInterleave[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  alignas(32) float acc[M][16][2][8] = {};
  alignas(32) float sv[16][2][8], s8v[16][2][8];  // per group: the scales of accumulator (v, h), and 8x
  alignas(32) float xv[M][2][8][8];                // per slab: the input vector of (v % 2, p)
  const __m256i mask = _mm256_set1_epi32(15);
  const int64_t slabs = K / 16;
  for (int64_t r = 0; r < slabs; ++r) {
    if (r % 8 == 0) {
      const float* s = scale + (r / 8) * 64;
      for (int v = 0; v < 16; ++v)
        for (int h = 0; h < 2; ++h)
          for (int e = 0; e < 8; ++e) {
            sv[v][h][e] = s[16 * (e % 4) + 8 * h + v / 2];
            s8v[v][h][e] = 8.0f * sv[v][h][e];
          }
    }
    for (int m = 0; m < M; ++m) {
      const float* xs = x + m * ldx + 16 * r;
      for (int vt = 0; vt < 2; ++vt)
        for (int p = 0; p < 8; ++p) {
          const int slot = kInterleave[p] % 4;
          const int row0 = 2 * (2 * vt) + slot % 2 + 8 * (slot / 2), row1 = row0 + 2;  // t = 2vt and 2vt + 1
          _mm256_store_ps(xv[m][vt][p], _mm256_set_m128(_mm_set1_ps(xs[row1]), _mm_set1_ps(xs[row0])));
        }
    }
    const int32_t* wr = words + r * row_words;
    for (int v = 0; v < 16; ++v) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + 8 * v));
      const __m256 s0 = _mm256_load_ps(sv[v][0]), s1 = _mm256_load_ps(sv[v][1]);
      const __m256 e0 = _mm256_load_ps(s8v[v][0]), e1 = _mm256_load_ps(s8v[v][1]);
      __m256 a[M][2];
      for (int m = 0; m < M; ++m) {
        a[m][0] = _mm256_load_ps(acc[m][v][0]);
        a[m][1] = _mm256_load_ps(acc[m][v][1]);
      }
#pragma GCC unroll 8
      for (int p = 0; p < 8; ++p) {
        const int h = kInterleave[p] / 4;
        const __m256 qf = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(q, _mm_cvtsi32_si128(4 * p)), mask));
        const __m256 w = h == 0 ? _mm256_fmsub_ps(qf, s0, e0) : _mm256_fmsub_ps(qf, s1, e1);
        for (int m = 0; m < M; ++m) a[m][h] = _mm256_fmadd_ps(_mm256_load_ps(xv[m][v % 2][p]), w, a[m][h]);
      }
      for (int m = 0; m < M; ++m) {
        _mm256_store_ps(acc[m][v][0], a[m][0]);
        _mm256_store_ps(acc[m][v][1], a[m][1]);
      }
    }
  }
  // Column 16j + 8h + c = elements j and 4 + j of accumulators (2c, h) and (2c + 1, h).
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < 4; ++j)
      for (int h = 0; h < 2; ++h)
        for (int c = 0; c < 8; ++c)
          y[m * ldy + 16 * j + 8 * h + c] = (acc[m][2 * c][h][j] + acc[m][2 * c][h][4 + j]) +
                                             (acc[m][2 * c + 1][h][j] + acc[m][2 * c + 1][h][4 + j]);
}

void int4_gemv(const int32_t* words, int64_t row_words, int64_t K, const float* scale, const float* x, int64_t ldx,
               int64_t M, float* y, int64_t ldy) {
  switch (M) {
    case 1: int4_gemv_m<1>(words, row_words, K, scale, x, ldx, y, ldy); break;
    case 2: int4_gemv_m<2>(words, row_words, K, scale, x, ldx, y, ldy); break;
    case 3: int4_gemv_m<3>(words, row_words, K, scale, x, ldx, y, ldy); break;
    default: int4_gemv_m<4>(words, row_words, K, scale, x, ldx, y, ldy); break;
  }
}

}  // namespace

const CpuKernels kAvx2Kernels = {"avx2",   gemv_f32, gemv_f16, gemv_bf16, pack_x_bf16, f16_row,  bf16_row,
                                 gemm4,    dot,      axpy,     scale,     int4_gemv, gemm_bf16};

}  // namespace mcpm
