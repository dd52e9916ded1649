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

}  // namespace

const CpuKernels& avx2vnni_kernels() { return int4_level_table<Vec256<AvxVnniDot>>("avx2vnni"); }

}  // namespace mcpm
