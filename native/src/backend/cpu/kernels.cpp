#include "backend/cpu/kernels.h"

#include <cstdlib>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <string>

namespace mcpm {

namespace {

bool isa_supported(const char* isa) {
  if (std::strcmp(isa, "scalar") == 0) return true;
#ifdef MCPM_HAVE_AVX2_KERNELS
  if (std::strcmp(isa, "avx2") == 0) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_cpu_init();
    // F16C from CPUID leaf 1 (ECX bit 29): Clang's __builtin_cpu_supports does not know "f16c".
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx >> 29 & 1u);
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
#else
    return true;  // MSVC builds only enable this path with /arch:AVX2 targets.
#endif
  }
#endif
#ifdef MCPM_HAVE_NEON_KERNELS
  if (std::strcmp(isa, "neon") == 0) return true;  // NEON is part of the aarch64 baseline.
#endif
  return false;
}

const CpuKernels& select_kernels() {
  if (const char* forced = std::getenv("MCPM_CPU_ISA")) {
    if (const CpuKernels* k = cpu_kernels_for(forced)) return *k;
  }
#ifdef MCPM_HAVE_AVX2_KERNELS
  if (isa_supported("avx2")) return kAvx2Kernels;
#endif
#ifdef MCPM_HAVE_NEON_KERNELS
  return kNeonKernels;
#else
  return kScalarKernels;
#endif
}

}  // namespace

const CpuKernels* cpu_kernels_for(const char* isa) {
  if (isa == nullptr || !isa_supported(isa)) return nullptr;
  if (std::strcmp(isa, "scalar") == 0) return &kScalarKernels;
#ifdef MCPM_HAVE_AVX2_KERNELS
  if (std::strcmp(isa, "avx2") == 0) return &kAvx2Kernels;
#endif
#ifdef MCPM_HAVE_NEON_KERNELS
  if (std::strcmp(isa, "neon") == 0) return &kNeonKernels;
#endif
  return nullptr;
}

const CpuKernels& cpu_kernels() {
  static const CpuKernels& selected = select_kernels();
  return selected;
}

const char* cpu_features_string() {
  static const std::string text = [] {
    std::string s;
    for (const char* isa : {"avx2", "neon", "scalar"}) {
      const CpuKernels* k = cpu_kernels_for(isa);
      if (k == nullptr) continue;
      if (!s.empty()) s += ", ";
      s += isa;
      if (k == &cpu_kernels()) s += " (selected)";
    }
    return s;
  }();
  return text.c_str();
}

}  // namespace mcpm
