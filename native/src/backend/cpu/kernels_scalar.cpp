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

// The int4 GEMV word by word: word w = 16*col + 4*t + j of a slab, nibble p, is the weight of row
// [2t, 2t+1, 2t+8, 2t+9][o % 4] and column 16j + 8(o / 4) + col, o = [0,2,4,6,1,3,5,7][p].
void int4_gemv(const int32_t* words, int64_t row_words, int64_t K, const float* scale, const float* x, int64_t ldx,
               int64_t M, float* y, int64_t ldy) {
  static constexpr int kInterleave[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  float acc[4][64] = {};
  for (int64_t r = 0; r < K / 16; ++r) {
    const float* s = scale + (r / 8) * 64;
    const int32_t* wr = words + r * row_words;
    for (int w = 0; w < 128; ++w) {
      const uint32_t word = static_cast<uint32_t>(wr[w]);
      const int t = (w / 4) % 4, j = w % 4, col = w / 16;
      for (int p = 0; p < 8; ++p) {
        const int o = kInterleave[p];
        const int row = 2 * t + (o % 4) % 2 + 8 * ((o % 4) / 2), n = 16 * j + 8 * (o / 4) + col;
        const float weight = static_cast<float>(static_cast<int>((word >> (4 * p)) & 15u) - 8) * s[n];
        for (int64_t m = 0; m < M; ++m) acc[m][n] += x[m * ldx + 16 * r + row] * weight;
      }
    }
  }
  for (int64_t m = 0; m < M; ++m)
    for (int n = 0; n < 64; ++n) y[m * ldy + n] = acc[m][n];
}

}  // namespace

const CpuKernels kScalarKernels = {"scalar", gemv_f32, gemv_f16, gemv_bf16, pack_x, f16_row, bf16_row,
                                   gemm4,    dot,      axpy,     scale,     int4_gemv, nullptr};

}  // namespace mcpm
