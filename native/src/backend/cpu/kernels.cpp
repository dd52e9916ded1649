#include "backend/cpu/kernels.h"

#include <cstdlib>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif
#include <string>

namespace mcpm {

const char* const kCpuIsaLevels[9] = {"avx512bf16", "avx512vnni", "avx512", "avx2vnni", "avx2", "neon-dotprod", "neon", "scalar",
                                      nullptr};

namespace {

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
// CPUID feature bits (Intel SDM vol. 2, CPUID). __builtin_cpu_supports does not know all of them in
// every compiler we build with, so the leaves are read directly. AVX and AVX-512 state must also be
// enabled by the OS (XCR0), which __builtin_cpu_supports("avx2"/"avx512f") checks.
struct X86Features {
  bool avx2 = false, avx_vnni = false, avx512 = false, avx512_vnni = false, avx512_bf16 = false;
};

X86Features x86_features() {
  X86Features f;
  __builtin_cpu_init();
  unsigned a = 0, b = 0, c = 0, d = 0;
  const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1u);
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  unsigned b7 = 0, c7 = 0, a71 = 0;
  if (__get_cpuid_count(7, 0, &a, &b7, &c7, &d)) {
    unsigned b71 = 0, c71 = 0, d71 = 0;
    if (a >= 1) __get_cpuid_count(7, 1, &a71, &b71, &c71, &d71);
  }
  f.avx_vnni = f.avx2 && (a71 >> 4 & 1u);
  f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") && (b7 >> 30 & 1u) /* BW */ && (b7 >> 31 & 1u) /* VL */ &&
             (b7 >> 17 & 1u) /* DQ */;
  f.avx512_vnni = f.avx512 && (c7 >> 11 & 1u);
  f.avx512_bf16 = f.avx512_vnni && (a71 >> 5 & 1u);
  return f;
}
#endif

bool isa_supported(const char* isa) {
  if (std::strcmp(isa, "scalar") == 0) return true;
#ifdef MCPM_HAVE_AVX2_KERNELS
#if defined(__GNUC__) || defined(__clang__)
  static const X86Features f = x86_features();
  if (std::strcmp(isa, "avx2") == 0) return f.avx2;
#else
  if (std::strcmp(isa, "avx2") == 0) return true;  // MSVC builds only enable this path with /arch:AVX2 targets.
#endif
#endif
#ifdef MCPM_HAVE_AVX512_KERNELS
  if (std::strcmp(isa, "avx2vnni") == 0) return f.avx_vnni;
  if (std::strcmp(isa, "avx512") == 0) return f.avx512;
  if (std::strcmp(isa, "avx512vnni") == 0) return f.avx512_vnni;
  if (std::strcmp(isa, "avx512bf16") == 0) return f.avx512_bf16;
#endif
#ifdef MCPM_HAVE_NEON_KERNELS
  if (std::strcmp(isa, "neon") == 0) return true;  // NEON is part of the aarch64 baseline.
  if (std::strcmp(isa, "neon-dotprod") == 0) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & (1ul << 20)) != 0;  // HWCAP_ASIMDDP
#elif defined(__APPLE__)
    return true;  // every Apple arm64 core has the dot-product extension
#else
    return false;
#endif
  }
#endif
  return false;
}

const CpuKernels& select_kernels() {
  if (const char* forced = std::getenv("MCPM_CPU_ISA")) {
    if (const CpuKernels* k = cpu_kernels_for(forced)) return *k;
  }
  for (const char* const* level = kCpuIsaLevels; *level != nullptr; ++level)
    if (const CpuKernels* k = cpu_kernels_for(*level)) return *k;
  return kScalarKernels;
}

}  // namespace

const CpuKernels* cpu_kernels_for(const char* isa) {
  if (isa == nullptr || !isa_supported(isa)) return nullptr;
  if (std::strcmp(isa, "scalar") == 0) return &kScalarKernels;
#ifdef MCPM_HAVE_AVX2_KERNELS
  if (std::strcmp(isa, "avx2") == 0) return &kAvx2Kernels;
#endif
#ifdef MCPM_HAVE_AVX512_KERNELS
  if (std::strcmp(isa, "avx2vnni") == 0) return &avx2vnni_kernels();
  if (std::strcmp(isa, "avx512") == 0) return &avx512_kernels();
  if (std::strcmp(isa, "avx512vnni") == 0) return &avx512vnni_kernels();
  if (std::strcmp(isa, "avx512bf16") == 0) return &avx512bf16_kernels();
#endif
#ifdef MCPM_HAVE_NEON_KERNELS
  if (std::strcmp(isa, "neon") == 0) return &kNeonKernels;
  if (std::strcmp(isa, "neon-dotprod") == 0) return &neon_dotprod_kernels();
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
    for (const char* const* level = kCpuIsaLevels; *level != nullptr; ++level) {
      const CpuKernels* k = cpu_kernels_for(*level);
      if (k == nullptr) continue;
      if (!s.empty()) s += ", ";
      s += *level;
      if (k == &cpu_kernels()) s += " (selected)";
    }
    return s;
  }();
  return text.c_str();
}

}  // namespace mcpm
