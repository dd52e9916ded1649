// Vectorised inner loops of the CPU backend, one table per instruction set. Each ISA lives in its
// own translation unit (kernels_scalar.cpp, kernels_avx2.cpp, kernels_neon.cpp) compiled for that
// ISA; cpu_kernels() picks the best one the running CPU supports, once.
//
// All loops accumulate in fp32. Matrices are row-major with rows of K contiguous elements.
#pragma once

#include <cstdint>

namespace mcpm {

struct CpuKernels {
  const char* name;
  // y[r] = dot(W[r, 0:K], x) for r in [0, rows). W in f32 / f16 / bf16.
  void (*gemv_f32)(const float* W, const float* x, float* y, int64_t rows, int64_t K);
  void (*gemv_f16)(const uint16_t* W, const float* x, float* y, int64_t rows, int64_t K);
  // The bf16 GEMV also takes x rearranged by pack_x_bf16 (K floats), so that a vector of bf16
  // pairs widens with one shift (even elements) and one mask (odd elements) instead of shuffles.
  void (*gemv_bf16)(const uint16_t* W, const float* x, const float* x_packed, float* y, int64_t rows, int64_t K);
  void (*pack_x_bf16)(const float* x, float* x_packed, int64_t K);
  // dst[i] = (float)src[i] for i in [0, n).
  void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  void (*bf16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  // The prefill micro-kernel: out[t*ldo + r] = dot(W[r, 0:K], X[t*ldx, 0:K]) for r in [0, 4) and
  // t in [0, T). W holds exactly 4 f32 rows; each is read from cache T times instead of memory.
  void (*gemm4_f32)(const float* W, int64_t K, const float* X, int64_t ldx, int64_t T, float* out, int64_t ldo);
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  // y[i] += a * x[i].
  void (*axpy_f32)(float a, const float* x, float* y, int64_t n);
  // y[i] = a * y[i].
  void (*scale_f32)(float a, float* y, int64_t n);
  // W4A16 GEMV of one 64-column chunk (Marlin layout, common/int4.h) for 1 <= M <= kInt4GemvMaxTokens
  // tokens (the backend calls it per block of tokens), straight from the packed words:
  // y[m*ldy + n] = sum_k x[m*ldx + k] * (q[k][n] - 8) * scale[k/128][n] for n < 64. Slab r's 128 words
  // start at words + r * row_words (word 16*col + 4*t + j, nibble p, holds row [2t, 2t+1, 2t+8, 2t+9]
  // [o % 4] and column 16j + 8(o / 4) + col, o = [0,2,4,6,1,3,5,7][p]); scale is fp32 [K/128][64] in
  // column order.
  void (*int4_gemv)(const int32_t* words, int64_t row_words, int64_t K, const float* scale, const float* x,
                    int64_t ldx, int64_t M, float* y, int64_t ldy);
  // Several tokens over bf16 rows, read directly (no widened copy): out[t*ldo + r] =
  // dot(W[r, 0:K], x[t*ldx, 0:K]) for r < rows, t < T; xp holds the T rows of x packed by pack_x_bf16
  // (same stride). nullptr where the ISA has none (the backend then widens rows and uses gemm4_f32).
  void (*gemm_bf16)(const uint16_t* W, int64_t rows, int64_t K, const float* x, const float* xp, int64_t ldx,
                    int64_t T, float* out, int64_t ldo);
};

constexpr int64_t kInt4GemvMaxTokens = 4;

// The best kernels for this CPU. MCPM_CPU_ISA=scalar|avx2|neon in the environment forces a choice
// (the fallback is used if the forced ISA is not available).
const CpuKernels& cpu_kernels();

// The kernels of one ISA ("scalar", "avx2", "neon"), or nullptr if not compiled in or not
// supported by this CPU. Tests use it to check every path against the scalar one.
const CpuKernels* cpu_kernels_for(const char* isa);

// Human-readable list of compiled paths with the selected one marked.
const char* cpu_features_string();

// Per-ISA tables (defined in their translation units).
extern const CpuKernels kScalarKernels;
#ifdef MCPM_HAVE_AVX2_KERNELS
extern const CpuKernels kAvx2Kernels;
#endif
#ifdef MCPM_HAVE_NEON_KERNELS
extern const CpuKernels kNeonKernels;
#endif

}  // namespace mcpm
