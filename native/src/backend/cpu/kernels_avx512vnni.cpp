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

}  // namespace

const CpuKernels& avx512vnni_kernels() { return int4_level_table<Vec512<Avx512VnniDot>>("avx512vnni"); }

}  // namespace mcpm
