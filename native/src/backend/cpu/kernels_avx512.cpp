// The AVX-512 levels (F, BW, VL, DQ: Skylake-SP and later, Zen 4): the AVX2 kernels with the int4 W4A8
// GEMM on 512-bit vectors, one row's 64 code bytes per group in one register. This file is compiled
// with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c (no VNNI: see kernels_avx512vnni.cpp).
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

// vpmaddubsw + vpmaddwd (see MaddubsDot256).
struct MaddubsDot512 {
  static __m512i dot(__m512i acc, const __m512i* w, const __m512i* x, int n) {
    __m512i s = _mm512_maddubs_epi16(w[0], x[0]);
    for (int i = 1; i < n; ++i) s = _mm512_add_epi16(s, _mm512_maddubs_epi16(w[i], x[i]));
    return _mm512_add_epi32(acc, _mm512_madd_epi16(s, _mm512_set1_epi16(1)));
  }
};

}  // namespace

const CpuKernels& avx512_kernels() { return int4_level_table<Vec512<MaddubsDot512>>("avx512"); }

}  // namespace mcpm
