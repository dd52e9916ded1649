// NEON kernels (aarch64: Jetson Orin, Graviton, Apple). NEON and fp16 conversion are part of the
// aarch64 baseline, so no run-time check is needed.
#include <arm_neon.h>

#include "backend/cpu/kernels.h"
#include "common/dtype.h"

namespace mcpm {
namespace {

// Loaders turning 4 stored elements into 4 floats, plus the scalar version for tails.
struct LoadF32 {
  static float32x4_t load4(const float* p) { return vld1q_f32(p); }
  static float load1(const float* p) { return *p; }
};
struct LoadF16 {
  static float32x4_t load4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  static float load1(const uint16_t* p) { return f16_to_f32(*p); }
};
struct LoadBF16 {
  static float32x4_t load4(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
  static float load1(const uint16_t* p) { return bf16_to_f32(*p); }
};

// Four rows at a time share each load of x; two accumulators per row hide the FMA latency.
template <typename L, typename T>
void gemv(const T* W, const float* x, float* y, int64_t rows, int64_t K) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const T* w[4] = {W + r * K, W + (r + 1) * K, W + (r + 2) * K, W + (r + 3) * K};
    float32x4_t a[4], b[4];
    for (int i = 0; i < 4; ++i) a[i] = b[i] = vdupq_n_f32(0.0f);
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      const float32x4_t x0 = vld1q_f32(x + k);
      const float32x4_t x1 = vld1q_f32(x + k + 4);
      for (int i = 0; i < 4; ++i) {
        a[i] = vfmaq_f32(a[i], L::load4(w[i] + k), x0);
        b[i] = vfmaq_f32(b[i], L::load4(w[i] + k + 4), x1);
      }
    }
    for (int i = 0; i < 4; ++i) {
      float s = vaddvq_f32(vaddq_f32(a[i], b[i]));
      for (int64_t kk = k; kk < K; ++kk) s += L::load1(w[i] + kk) * x[kk];
      y[r + i] = s;
    }
  }
  for (; r < rows; ++r) {
    const T* w = W + r * K;
    float32x4_t a = vdupq_n_f32(0.0f);
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) a = vfmaq_f32(a, L::load4(w + k), vld1q_f32(x + k));
    float s = vaddvq_f32(a);
    for (; k < K; ++k) s += L::load1(w + k) * x[k];
    y[r] = s;
  }
}

void gemv_f32(const float* W, const float* x, float* y, int64_t rows, int64_t K) { gemv<LoadF32>(W, x, y, rows, K); }
void gemv_f16(const uint16_t* W, const float* x, float* y, int64_t rows, int64_t K) {
  gemv<LoadF16>(W, x, y, rows, K);
}
// Packed x for the bf16 GEMV: for each block of 8 elements, its 4 even elements then its 4 odd ones.
void pack_x_bf16(const float* x, float* packed, int64_t K) {
  for (int64_t k = 0; k + 8 <= K; k += 8)
    for (int j = 0; j < 4; ++j) {
      packed[k + j] = x[k + 2 * j];
      packed[k + 4 + j] = x[k + 2 * j + 1];
    }
}

// A 128-bit load holds 4 pairs of bf16: the odd element of each 32-bit lane is widened by a mask,
// the even one by a 16-bit left shift.
void gemv_bf16(const uint16_t* W, const float* x, const float* xp, float* y, int64_t rows, int64_t K) {
  const uint32x4_t upper = vdupq_n_u32(0xffff0000u);
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* w = W + r * K;
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      const uint32x4_t v0 = vreinterpretq_u32_u16(vld1q_u16(w + k));
      const uint32x4_t v1 = vreinterpretq_u32_u16(vld1q_u16(w + k + 8));
      a0 = vfmaq_f32(a0, vreinterpretq_f32_u32(vshlq_n_u32(v0, 16)), vld1q_f32(xp + k));
      a1 = vfmaq_f32(a1, vreinterpretq_f32_u32(vandq_u32(v0, upper)), vld1q_f32(xp + k + 4));
      a2 = vfmaq_f32(a2, vreinterpretq_f32_u32(vshlq_n_u32(v1, 16)), vld1q_f32(xp + k + 8));
      a3 = vfmaq_f32(a3, vreinterpretq_f32_u32(vandq_u32(v1, upper)), vld1q_f32(xp + k + 12));
    }
    for (; k + 8 <= K; k += 8) {
      const uint32x4_t v0 = vreinterpretq_u32_u16(vld1q_u16(w + k));
      a0 = vfmaq_f32(a0, vreinterpretq_f32_u32(vshlq_n_u32(v0, 16)), vld1q_f32(xp + k));
      a1 = vfmaq_f32(a1, vreinterpretq_f32_u32(vandq_u32(v0, upper)), vld1q_f32(xp + k + 4));
    }
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; k < K; ++k) s += bf16_to_f32(w[k]) * x[k];
    y[r] = s;
  }
}

template <typename L>
void convert_row(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, L::load4(src + i));
  for (; i < n; ++i) dst[i] = L::load1(src + i);
}
void f16_row(const uint16_t* src, float* dst, int64_t n) { convert_row<LoadF16>(src, dst, n); }
void bf16_row(const uint16_t* src, float* dst, int64_t n) { convert_row<LoadBF16>(src, dst, n); }

float dot(const float* a, const float* b, int64_t n) {
  float32x4_t s0 = vdupq_n_f32(0.0f), s1 = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
  }
  float s = vaddvq_f32(vaddq_f32(s0, s1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// 4 weight rows x 2 tokens per step.
void gemm4(const float* W, int64_t K, const float* X, int64_t ldx, int64_t T, float* out, int64_t ldo) {
  int64_t t = 0;
  for (; t + 2 <= T; t += 2) {
    const float* xa = X + t * ldx;
    const float* xb = xa + ldx;
    float32x4_t a[4], b[4];
    for (int r = 0; r < 4; ++r) a[r] = b[r] = vdupq_n_f32(0.0f);
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
      const float32x4_t va = vld1q_f32(xa + k);
      const float32x4_t vb = vld1q_f32(xb + k);
      for (int r = 0; r < 4; ++r) {
        const float32x4_t w = vld1q_f32(W + r * K + k);
        a[r] = vfmaq_f32(a[r], w, va);
        b[r] = vfmaq_f32(b[r], w, vb);
      }
    }
    for (int r = 0; r < 4; ++r) {
      float sa = vaddvq_f32(a[r]), sb = vaddvq_f32(b[r]);
      for (int64_t kk = k; kk < K; ++kk) {
        sa += W[r * K + kk] * xa[kk];
        sb += W[r * K + kk] * xb[kk];
      }
      out[t * ldo + r] = sa;
      out[(t + 1) * ldo + r] = sb;
    }
  }
  if (t < T) {
    for (int r = 0; r < 4; ++r) out[t * ldo + r] = dot(W + r * K, X + t * ldx, K);
  }
}

void axpy(float a, const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
  for (; i < n; ++i) y[i] += a * x[i];
}

void scale(float a, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vmulq_n_f32(vld1q_f32(y + i), a));
  for (; i < n; ++i) y[i] *= a;
}

// The int4 GEMV (see the AVX2 version). Four consecutive words 4u..4u+3 are Marlin
// lane u (j = 0..3): per nibble p every element has the same row, [2t, 2t+1, 2t+8, 2t+9][o % 4]
// with t = u % 4, so the input is one scalar, and element j lands in column 16j + 8(o / 4) + u / 4:
// accumulator (u, o / 4). A column's four partial sums (t = 0..3) are added at the end.
template <int M>
void int4_gemv_m(const int32_t* words, int64_t row_words, int64_t K, const float* scale, const float* x,
                 int64_t ldx, float* y, int64_t ldy) {
  static constexpr int kInterleave[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  float acc[M][32][2][4] = {};
  float sv[32][2][4], s8v[32][2][4];  // per group: the scales of accumulator (u, h), and 8x
  const uint32x4_t mask = vdupq_n_u32(15);
  const int64_t slabs = K / 16;
  for (int64_t r = 0; r < slabs; ++r) {
    if (r % 8 == 0) {
      const float* s = scale + (r / 8) * 64;
      for (int u = 0; u < 32; ++u)
        for (int h = 0; h < 2; ++h)
          for (int j = 0; j < 4; ++j) {
            sv[u][h][j] = s[16 * j + 8 * h + u / 4];
            s8v[u][h][j] = 8.0f * sv[u][h][j];
          }
    }
    const int32_t* wr = words + r * row_words;
    for (int u = 0; u < 32; ++u) {
      const uint32x4_t q = vld1q_u32(reinterpret_cast<const uint32_t*>(wr + 4 * u));
      const float32x4_t s0 = vld1q_f32(sv[u][0]), s1 = vld1q_f32(sv[u][1]);
      const float32x4_t e0 = vld1q_f32(s8v[u][0]), e1 = vld1q_f32(s8v[u][1]);
      const int t = u % 4;
      float32x4_t a[M][2];
      for (int m = 0; m < M; ++m) {
        a[m][0] = vld1q_f32(acc[m][u][0]);
        a[m][1] = vld1q_f32(acc[m][u][1]);
      }
      for (int p = 0; p < 8; ++p) {
        const int o = kInterleave[p], h = o / 4, slot = o % 4;
        const int row = 2 * t + slot % 2 + 8 * (slot / 2);
        const float32x4_t qf = vcvtq_f32_u32(vandq_u32(vshlq_u32(q, vdupq_n_s32(-4 * p)), mask));
        // (q - 8) * s = q * s - 8s, exact in fp32.
        const float32x4_t w = h == 0 ? vsubq_f32(vmulq_f32(qf, s0), e0) : vsubq_f32(vmulq_f32(qf, s1), e1);
        for (int m = 0; m < M; ++m) a[m][h] = vfmaq_n_f32(a[m][h], w, x[m * ldx + 16 * r + row]);
      }
      for (int m = 0; m < M; ++m) {
        vst1q_f32(acc[m][u][0], a[m][0]);
        vst1q_f32(acc[m][u][1], a[m][1]);
      }
    }
  }
  // Column 16j + 8h + c = element j of accumulators (4c + t, h), t = 0..3.
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < 4; ++j)
      for (int h = 0; h < 2; ++h)
        for (int c = 0; c < 8; ++c)
          y[m * ldy + 16 * j + 8 * h + c] = (acc[m][4 * c][h][j] + acc[m][4 * c + 1][h][j]) +
                                             (acc[m][4 * c + 2][h][j] + acc[m][4 * c + 3][h][j]);
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

const CpuKernels kNeonKernels = {"neon",   gemv_f32, gemv_f16, gemv_bf16, pack_x_bf16, f16_row,  bf16_row,
                                 gemm4,    dot,      axpy,     scale,     int4_gemv, nullptr};

}  // namespace mcpm
