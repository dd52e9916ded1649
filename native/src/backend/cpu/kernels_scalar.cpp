// Portable scalar kernels: the fallback on CPUs without a vector path, and the baseline every
// vector path is tested against.
#include "backend/cpu/kernels.h"
#include "common/dtype.h"

namespace mcpm {
namespace {

// Eight independent partial sums: portable code the compiler can map onto whatever vector unit
// the baseline ISA has (SSE2 on x86-64), without -ffast-math.
constexpr int kLanes = 8;

template <typename Load>
float dot_lanes(Load load, const float* x, int64_t K) {
  float acc[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += load(k + j) * x[k + j];
  float s = 0.0f;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  for (; k < K; ++k) s += load(k) * x[k];
  return s;
}

template <typename Load>
void gemv_rows(Load load, const float* x, float* y, int64_t rows, int64_t K) {
  for (int64_t r = 0; r < rows; ++r) y[r] = dot_lanes([&](int64_t k) { return load(r * K + k); }, x, K);
}

void gemv_f32(const float* W, const float* x, float* y, int64_t rows, int64_t K) {
  gemv_rows([W](int64_t i) { return W[i]; }, x, y, rows, K);
}
void gemv_f16(const uint16_t* W, const float* x, float* y, int64_t rows, int64_t K) {
  gemv_rows([W](int64_t i) { return f16_to_f32(W[i]); }, x, y, rows, K);
}
void gemv_bf16(const uint16_t* W, const float* x, const float*, float* y, int64_t rows, int64_t K) {
  gemv_rows([W](int64_t i) { return bf16_to_f32(W[i]); }, x, y, rows, K);
}
void pack_x(const float*, float*, int64_t) {}  // the scalar GEMV reads x directly

void f16_row(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}
void bf16_row(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

float dot(const float* a, const float* b, int64_t n) {
  return dot_lanes([a](int64_t i) { return a[i]; }, b, n);
}

void gemm4(const float* W, int64_t K, const float* X, int64_t ldx, int64_t T, float* out, int64_t ldo) {
  for (int64_t t = 0; t < T; ++t)
    for (int r = 0; r < 4; ++r) out[t * ldo + r] = dot(W + r * K, X + t * ldx, K);
}

void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void scale(float a, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= a;
}

// The exact int4 weights of one 4-row block: (c - 8) * s in fp32 (an fp16 times a small integer).
void int4_dequant_block(const uint8_t* codes, const uint16_t* scales, int64_t K, float* out) {
  const int64_t groups = K / int4cpu::kGroup;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t r = 0; r < int4cpu::kRowBlock; ++r) {
      const uint8_t* c = codes + (g * int4cpu::kRowBlock + r) * int4cpu::kGroupBytes;
      const float s = f16_to_f32(scales[g * int4cpu::kRowBlock + r]);
      float* o = out + r * K + g * int4cpu::kGroup;
      for (int64_t j = 0; j < int4cpu::kGroupBytes; ++j) {
        o[j] = static_cast<float>(static_cast<int>(c[j] & 15u) - 8) * s;
        o[j + int4cpu::kGroupBytes] = static_cast<float>(static_cast<int>(c[j] >> 4) - 8) * s;
      }
    }
}

// The W4A8 reference: per (row, token, group) the exact integer dot, then the two scales in fp32.
void int4_q8_gemm(const uint8_t* codes, const uint16_t* scales, int64_t rows, int64_t K, const int4cpu::Q8Rows& x,
                  int64_t T, float* y, int64_t ldy) {
  const int64_t groups = K / int4cpu::kGroup;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t block = r / int4cpu::kRowBlock, lane = r % int4cpu::kRowBlock;
    for (int64_t t = 0; t < T; ++t) {
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t slot = (block * groups + g) * int4cpu::kRowBlock + lane;
        const uint8_t* c = codes + slot * int4cpu::kGroupBytes;
        const int8_t* q = x.q + t * K + g * int4cpu::kGroup;
        int32_t dot = x.bias[t * groups + g];
        for (int64_t j = 0; j < int4cpu::kGroupBytes; ++j)
          dot += static_cast<int32_t>(c[j] & 15u) * q[j] + static_cast<int32_t>(c[j] >> 4) * q[j + int4cpu::kGroupBytes];
        acc += static_cast<float>(dot) * (f16_to_f32(scales[slot]) * x.scale[t * groups + g]);
      }
      y[t * ldy + r] = acc;
    }
  }
}

}  // namespace

const CpuKernels kScalarKernels = {"scalar", gemv_f32, gemv_f16, gemv_bf16, pack_x, f16_row, bf16_row,
                                   gemm4,    dot,      axpy,     scale,     int4_dequant_block, int4_q8_gemm, int4cpu::quantize_row_q8,
                                   nullptr, nullptr, nullptr};

}  // namespace mcpm
