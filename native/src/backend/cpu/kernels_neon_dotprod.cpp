// The NEON dot-product level (ARMv8.2 sdot: Jetson Orin's Cortex-A78AE, Graviton 2+, Apple M1+): the
// NEON kernels with the int4 W4A8 GEMM on sdot, 16 multiply-adds per instruction. Compiled with
// -march=armv8.2-a+dotprod; runs only after cpu_kernels() found the dot-product extension.
#include <arm_neon.h>

#include "backend/cpu/kernels.h"
#include "common/dtype.h"

namespace mcpm {
namespace {

#include "backend/cpu/kernels_neon_int4.h"

struct SdotDot {
  static int32x4_t dot(const int8x16_t* w, const int8x16_t* x) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int i = 0; i < 8; ++i) acc = vdotq_s32(acc, w[i], x[i]);
    return acc;
  }
};

void int4_q8_gemm(const uint8_t* codes, const uint16_t* scales, int64_t rows, int64_t K, const int4cpu::Q8Rows& x,
                  int64_t T, float* y, int64_t ldy) {
  int4_q8_gemm_neon<SdotDot>(codes, scales, rows, K, x, T, y, ldy);
}

}  // namespace

const CpuKernels& neon_dotprod_kernels() {
  // Built on first use: a copy of a table from another file must not depend on initialisation order.
  static const CpuKernels table = derive_kernels(kNeonKernels, "neon-dotprod", int4_q8_gemm, kNeonKernels.gemm_bf16);
  return table;
}

}  // namespace mcpm
