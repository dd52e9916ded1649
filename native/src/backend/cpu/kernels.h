// Vectorised inner loops of the CPU backend, one table per instruction set. Each ISA lives in its
// own translation unit (kernels_scalar.cpp, kernels_avx2.cpp, kernels_neon.cpp) compiled for that
// ISA; cpu_kernels() picks the best one the running CPU supports, once.
//
// All loops accumulate in fp32. Matrices are row-major with rows of K contiguous elements.
#pragma once

#include <cstdint>

#include "backend/cpu/int4_cpu.h"

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
  // Exact W4A16 (the reference int4 path): one 4-row block of the CPU int4 layout (int4_cpu.h;
  // codes and scales point at the block) dequantised to out[4][K] fp32, exactly (c - 8) * s.
  void (*int4_dequant_block)(const uint8_t* codes, const uint16_t* scales, int64_t K, float* out);
  // W4A8 with integer dot products: y[t*ldy + r] = sum_g s[g][r] * x.scale[t][g] * (sum_k c[k][r] *
  // x.q[t][k] + x.bias[t][g]) for rows r < rows (a multiple of 4; codes and scales point at the first
  // row's block) and tokens t < T. Integer sums are exact; the float sum over groups is in any order.
  void (*int4_q8_gemm)(const uint8_t* codes, const uint16_t* scales, int64_t rows, int64_t K,
                       const int4cpu::Q8Rows& x, int64_t T, float* y, int64_t ldy);
  // int4cpu::quantize_row_q8, vectorised; every level gives the same bytes (max, one product and
  // round-half-even are exact operations).
  void (*quantize_q8)(const float* x, int64_t K, int8_t* q, float* scale, int32_t* bias);
  // Several tokens over bf16 rows, read directly (no widened copy): out[t*ldo + r] =
  // dot(W[r, 0:K], x[t*ldx, 0:K]) for r < rows, t < T; xp holds the T rows of x packed by pack_x_bf16
  // (same stride). nullptr where the ISA has none (the backend then widens rows and uses gemm4_f32).
  void (*gemm_bf16)(const uint16_t* W, int64_t rows, int64_t K, const float* x, const float* xp, int64_t ldx,
                    int64_t T, float* out, int64_t ldo);
  // Prefill over bf16 rows with bf16 activations (nullptr where the ISA has no bf16 dot product):
  // to_bf16 rounds activations to bf16 (nearest even), gemm_bf16_dp computes out[t*ldo + r] =
  // dot(W[r, 0:K], xb[t*ldx, 0:K]) for r < rows, t < T with exact products and fp32 sums.
  void (*to_bf16)(const float* x, uint16_t* out, int64_t n);
  void (*gemm_bf16_dp)(const uint16_t* W, int64_t rows, int64_t K, const uint16_t* xb, int64_t ldx, int64_t T,
                       float* out, int64_t ldo);
};

// The best kernels for this CPU. MCPM_CPU_ISA=<level> in the environment forces a choice (the
// fallback is used if the forced level is not available). Levels, each adding to the one before:
//   x86-64:  scalar, avx2 (AVX2 + FMA + F16C), avx2vnni (+ AVX-VNNI), avx512 (AVX-512 F/BW/VL/DQ),
//            avx512vnni (+ AVX512-VNNI), avx512bf16 (+ AVX512-BF16: bf16 prefill on vdpbf16ps);
//            avx2vnni and avx512 are independent of each other.
//   aarch64: scalar, neon, neon-dotprod (ARMv8.2 sdot).
const CpuKernels& cpu_kernels();

// The kernels of one level (kCpuIsaLevels), or nullptr if not compiled in or not
// supported by this CPU. Tests use it to check every path against the scalar one.
const CpuKernels* cpu_kernels_for(const char* isa);

// Every level name, best first.
extern const char* const kCpuIsaLevels[9];

// Human-readable list of compiled paths with the selected one marked.
const char* cpu_features_string();

// Per-ISA tables (defined in their translation units).
extern const CpuKernels kScalarKernels;
#ifdef MCPM_HAVE_AVX2_KERNELS
extern const CpuKernels kAvx2Kernels;
#endif
#ifdef MCPM_HAVE_AVX512_KERNELS
// The levels above AVX2 derive from its table (built on first use, see derive_kernels).
const CpuKernels& avx2vnni_kernels();
const CpuKernels& avx512_kernels();
const CpuKernels& avx512vnni_kernels();
const CpuKernels& avx512bf16_kernels();
#endif
#ifdef MCPM_HAVE_NEON_KERNELS
extern const CpuKernels kNeonKernels;
const CpuKernels& neon_dotprod_kernels();
#endif

// `base` with its name, int4 W4A8 GEMM and multi-token bf16 GEMM replaced. `static`: files compiled for
// different ISAs include this header, and the linker must not pick one file's copy for another.
static inline CpuKernels derive_kernels(const CpuKernels& base, const char* name, decltype(CpuKernels::int4_q8_gemm) int4_q8,
                                 decltype(CpuKernels::gemm_bf16) bf16) {
  CpuKernels k = base;
  k.name = name;
  k.int4_q8_gemm = int4_q8;
  k.gemm_bf16 = bf16;
  return k;
}

}  // namespace mcpm
