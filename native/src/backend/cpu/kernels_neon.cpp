// NEON kernels (aarch64: Jetson Orin, Graviton, Apple). NEON and fp16 conversion are part of the
// aarch64 baseline, so no run-time check is needed.
#include <arm_neon.h>

#include <limits>

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

#include "backend/cpu/kernels_neon_int4.h"

// Plain NEON: widening multiplies of the two halves (|c - 8| * 127 * 2 fits int16), pairwise-added
// into int32 lanes.
struct MullDot {
  static int32x4_t dot(const int8x16_t* w, const int8x16_t* x) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int i = 0; i < 8; ++i) {
      const int16x8_t p = vmlal_high_s8(vmull_s8(vget_low_s8(w[i]), vget_low_s8(x[i])), w[i], x[i]);
      acc = vpadalq_s16(acc, p);
    }
    return acc;
  }
};

void int4_q8_gemm(const uint8_t* codes, const uint16_t* scales, int64_t rows, int64_t K, const int4cpu::Q8Rows& x,
                  int64_t T, float* y, int64_t ldy) {
  int4_q8_gemm_neon<MullDot>(codes, scales, rows, K, x, T, y, ldy);
}

// int4cpu::quantize_row_q8 with vcvtnq (round half to even), 4 lanes at a time.
void quantize_q8(const float* x, int64_t K, int8_t* q, float* scale, int32_t* bias) {
  for (int64_t g = 0; g < K / int4cpu::kGroup; ++g) {
    const float* xb = x + g * int4cpu::kGroup;
    float32x4_t amax = vdupq_n_f32(0.0f), probe = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < int4cpu::kGroup; i += 4) {
      const float32x4_t v = vld1q_f32(xb + i);
      amax = vmaxq_f32(amax, vabsq_f32(v));
      probe = vaddq_f32(probe, vmulq_n_f32(v, 0.0f));
    }
    const float m = vmaxvq_f32(amax);
    const bool finite = vaddvq_f32(probe) == 0.0f;
    const float inv = m > 0.0f ? 127.0f / m : 0.0f;
    int32x4_t sum = vdupq_n_s32(0);
    for (int64_t i = 0; i < int4cpu::kGroup; i += 8) {
      int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(xb + i), inv));
      int32x4_t b = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(xb + i + 4), inv));
      a = vmaxq_s32(vminq_s32(a, vdupq_n_s32(127)), vdupq_n_s32(-127));
      b = vmaxq_s32(vminq_s32(b, vdupq_n_s32(127)), vdupq_n_s32(-127));
      sum = vaddq_s32(sum, vaddq_s32(a, b));
      vst1_s8(q + g * int4cpu::kGroup + i, vmovn_s16(vcombine_s16(vmovn_s32(a), vmovn_s32(b))));
    }
    scale[g] = finite ? m / 127.0f : std::numeric_limits<float>::quiet_NaN();
    bias[g] = -8 * vaddvq_s32(sum);
  }
}

// The exact int4 weights of one 4-row block, (c - 8) * s in fp32.
void int4_dequant_block(const uint8_t* codes, const uint16_t* scales, int64_t K, float* out) {
  const int64_t groups = K / int4cpu::kGroup;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t r = 0; r < 4; ++r) {
      const uint8_t* c = codes + (g * 4 + r) * int4cpu::kGroupBytes;
      const float s = f16_to_f32(scales[g * 4 + r]);
      float* o = out + r * K + g * int4cpu::kGroup;
      for (int64_t j = 0; j < int4cpu::kGroupBytes; j += 8) {
        const int16x8_t v = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(c + j)));
        const int16x8_t lo = vsubq_s16(vandq_s16(v, vdupq_n_s16(15)), vdupq_n_s16(8));
        const int16x8_t hi = vsubq_s16(vshrq_n_s16(v, 4), vdupq_n_s16(8));
        vst1q_f32(o + j, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), s));
        vst1q_f32(o + j + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), s));
        vst1q_f32(o + int4cpu::kGroupBytes + j, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), s));
        vst1q_f32(o + int4cpu::kGroupBytes + j + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), s));
      }
    }
}

}  // namespace

const CpuKernels kNeonKernels = {"neon",   gemv_f32, gemv_f16, gemv_bf16, pack_x_bf16, f16_row,  bf16_row,
                                 gemm4,    dot,      axpy,     scale,     int4_dequant_block, int4_q8_gemm, quantize_q8, nullptr, nullptr, nullptr};

}  // namespace mcpm
