// The AVX-VNNI level (Alder Lake and later Intel cores, Zen 5): the AVX2 kernels with the int4 W4A8
// dot product on VEX-encoded vpdpbusd. Compiled with -mavx2 -mfma -mf16c -mavxvnni; runs only after
// cpu_kernels() checked the CPU.
#include <immintrin.h>

#include "backend/cpu/kernels.h"
#include "common/dtype.h"

namespace mcpm {
namespace {

#include "backend/cpu/kernels_x86_int4.h"

struct AvxVnniDot {
  static __m256i dot(__m256i acc, const __m256i* w, const __m256i* x, int n) {
    for (int i = 0; i < n; ++i) acc = _mm256_dpbusd_avx_epi32(acc, w[i], x[i]);
    return acc;
  }
};

void int4_q8_gemm(const uint8_t* codes, const uint16_t* scales, int64_t rows, int64_t K, const int4cpu::Q8Rows& x,
                  int64_t T, float* y, int64_t ldy) {
  int4_q8_gemm_x86<Vec256<AvxVnniDot>>(codes, scales, rows, K, x, T, y, ldy);
}

}  // namespace

const CpuKernels& avx2vnni_kernels() {
  // Built on first use: a copy of a table from another file must not depend on initialisation order.
  static const CpuKernels table = derive_kernels(kAvx2Kernels, "avx2vnni", int4_q8_gemm, kAvx2Kernels.gemm_bf16);
  return table;
}

}  // namespace mcpm
