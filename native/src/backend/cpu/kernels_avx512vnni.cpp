// The AVX512-VNNI level (Ice Lake, Cascade Lake, Sapphire Rapids, Zen 4): the int4 W4A8 GEMM on
// vpdpbusd, 64 multiply-adds per instruction. Compiled with the AVX-512 flags plus -mavx512vnni.
// GCC 12's AVX-512 intrinsics build unmasked results from _mm512_undefined_*(), which its own
// -Wuninitialized then reports inside the header: silence that false positive for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "backend/cpu/kernels.h"
#include "common/dtype.h"

namespace mcpm {
namespace {

#include "backend/cpu/kernels_x86_int4.h"

struct Avx512VnniDot {
  static __m512i dot(__m512i acc, const __m512i* w, const __m512i* x, int n) {
    for (int i = 0; i < n; ++i) acc = _mm512_dpbusd_epi32(acc, w[i], x[i]);
    return acc;
  }
};

void int4_q8_gemm(const uint8_t* codes, const uint16_t* scales, int64_t rows, int64_t K, const int4cpu::Q8Rows& x,
                  int64_t T, float* y, int64_t ldy) {
  int4_q8_gemm_x86<Vec512<Avx512VnniDot>>(codes, scales, rows, K, x, T, y, ldy);
}

}  // namespace

const CpuKernels& avx512vnni_kernels() {
  // Built on first use: a copy of a table from another file must not depend on initialisation order.
  static const CpuKernels table = derive_kernels(kAvx2Kernels, "avx512vnni", int4_q8_gemm, kAvx2Kernels.gemm_bf16);
  return table;
}

}  // namespace mcpm
