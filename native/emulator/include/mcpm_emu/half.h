// Emulated CUDA half-precision types (cuda_fp16.h / cuda_bf16.h): __half, __half2, __nv_bfloat16,
// __nv_bfloat162 and the conversion and arithmetic intrinsics the backend uses. Storage is the IEEE
// binary16 / bfloat16 bit pattern; conversions round to nearest even, as the hardware's _rn forms.
// Arithmetic on halves is exact in double and rounded once, so it equals the hardware's correctly
// rounded half arithmetic.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "mcpm_emu/types.h"

namespace mcpm_emu {

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// binary16 -> binary32, exact (subnormals, inf, NaN included).
inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  const float mag = static_cast<float>(mant) * 5.9604644775390625e-8f;  // mant * 2^-24, exact
  return sign ? -mag : mag;
}

// binary64 -> binary16, round to nearest even, overflow to infinity, NaN stays NaN.
inline uint16_t double_to_half_bits(double d) {
  const uint16_t sign = std::signbit(d) ? 0x8000u : 0u;
  if (std::isnan(d)) return static_cast<uint16_t>(sign | 0x7e00u);
  const double a = std::fabs(d);
  if (a >= 65520.0) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past the largest half
  if (a < 6.103515625e-05) {                                         // subnormal range: units of 2^-24
    const double units = std::nearbyint(a * 16777216.0);             // ties to even (default rounding)
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(units));  // 1024 units = the smallest normal
  }
  int e = 0;
  const double m = std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1)
  double mant = std::nearbyint(m * 2048.0);  // 11 significant bits, ties to even
  if (mant >= 2048.0) {
    mant /= 2.0;
    ++e;
  }
  const int biased = e - 1 + 15;
  if (biased >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  return static_cast<uint16_t>(sign | (biased << 10) | (static_cast<uint32_t>(mant) & 0x3ffu));
}

inline float bf16_bits_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// binary32 -> bfloat16, round to nearest even; NaN stays NaN.
inline uint16_t float_to_bf16_bits(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace mcpm_emu

struct __half {
  uint16_t __x;
  __half() = default;
  constexpr explicit __half(uint16_t bits, bool) : __x(bits) {}
  __half(float f) : __x(mcpm_emu::double_to_half_bits(f)) {}
  operator float() const { return mcpm_emu::half_bits_to_float(__x); }
};

struct alignas(4) __half2 {
  __half x, y;
};

struct __nv_bfloat16 {
  uint16_t __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(mcpm_emu::float_to_bf16_bits(f)) {}
  operator float() const { return mcpm_emu::bf16_bits_to_float(__x); }
};

struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

inline float __half2float(__half h) { return mcpm_emu::half_bits_to_float(h.__x); }
inline __half __float2half_rn(float f) { return __half(mcpm_emu::double_to_half_bits(f), true); }
inline float __bfloat162float(__nv_bfloat16 h) { return mcpm_emu::bf16_bits_to_float(h.__x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  __nv_bfloat16 r;
  r.__x = mcpm_emu::float_to_bf16_bits(f);
  return r;
}

inline __half2 __half2half2(__half h) { return __half2{h, h}; }

namespace mcpm_emu {
// The difference or product of two halves is exact in double; rounding it once gives the hardware's
// correctly rounded result.
inline __half round_to_half(double exact) { return __half(double_to_half_bits(exact), true); }
inline double wide(__half h) { return half_bits_to_float(h.__x); }
}  // namespace mcpm_emu

inline __half2 __hsub2(__half2 a, __half2 b) {
  using mcpm_emu::round_to_half, mcpm_emu::wide;
  return __half2{round_to_half(wide(a.x) - wide(b.x)), round_to_half(wide(a.y) - wide(b.y))};
}
inline __half2 __hmul2(__half2 a, __half2 b) {
  using mcpm_emu::round_to_half, mcpm_emu::wide;
  return __half2{round_to_half(wide(a.x) * wide(b.x)), round_to_half(wide(a.y) * wide(b.y))};
}

inline float2 __half22float2(__half2 h) { return float2{__half2float(h.x), __half2float(h.y)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return float2{__bfloat162float(h.x), __bfloat162float(h.y)}; }
