// Element types and scalar conversions. Functions are `static inline` on purpose: this header is
// included by translation units compiled for different ISAs (kernels_avx2.cpp), and internal
// linkage keeps the linker from merging an AVX2-compiled copy into code that runs on any CPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "minicpm4.h"

namespace mcpm {

// I32 holds packed int4 weights (Marlin qweight); float ops never see it.
enum class DType : int32_t { F32 = MCPM_DTYPE_F32, F16 = MCPM_DTYPE_F16, BF16 = MCPM_DTYPE_BF16, I32 = MCPM_DTYPE_I32 };

static inline size_t dtype_size(DType t) { return t == DType::F32 || t == DType::I32 ? 4 : 2; }

static inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
  }
  return "?";
}

static inline float bits_to_f32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

static inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// bf16 is the upper half of an IEEE binary32.
static inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

// Round to nearest even; NaN stays NaN.
static inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// IEEE binary16 -> binary32, exact (including subnormals, inf, NaN).
static inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bits_to_f32(sign);
  // Subnormal: normalise.
  int e = -1;
  do {
    ++e;
    mant <<= 1;
  } while ((mant & 0x400u) == 0);
  return bits_to_f32(sign | ((112u - static_cast<uint32_t>(e)) << 23) | ((mant & 0x3ffu) << 13));
}

}  // namespace mcpm
