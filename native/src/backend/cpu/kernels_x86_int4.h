// The W4A8 int4 GEMM on x86 (CpuKernels::int4_q8_gemm), written once over a vector-traits class and
// instantiated by the translation units compiled for each ISA level (kernels_avx2.cpp,
// kernels_avx2vnni.cpp, kernels_avx512.cpp, kernels_avx512vnni.cpp). Include it only from those
// files, inside their anonymous namespace, after defining the traits:
//
//   I, F                 integer and float vector types; kBytes = bytes per vector (32 or 64)
//   load(p)              unaligned load of kBytes bytes
//   nibbles(raw, lo, hi) split code bytes into the low and the high 4-bit values (as bytes)
//   lane0(v)             an int32 vector holding v in lane 0 and zeros elsewhere
//   dot(acc, w, x, n)    acc + sum over i < n of the int32-lane dot products of unsigned bytes w[i] and
//                        signed bytes x[i] (vpdpbusd, or vpmaddubsw + vpmaddwd)
//   cvt, fma, set1, zero, hsum   on float vectors
//
// Layout (int4_cpu.h): per group a 4-row block is 4 x 64 code bytes; low nibbles are k 0..63 of the
// group, high nibbles k 64..127. For each group the block's codes are split once and meet T tokens'
// activations; the group's int32 lanes (bias in lane 0) become floats scaled by s_w * s_x and
// accumulate per (row, token). One horizontal sum per (row, token) at the end.

template <class V, int T>
void int4_q8_tile(const uint8_t* codes, const uint16_t* scales, int64_t groups, const int4cpu::Q8Rows& x,
                  int64_t t0, float* y, int64_t ldy) {
  using I = typename V::I;
  using F = typename V::F;
  constexpr int P = int4cpu::kGroupBytes / V::kBytes;  // vectors per row and group
  F acc[4][T];
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = V::zero();
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* cg = codes + g * 4 * int4cpu::kGroupBytes;
    I w[4][2 * P];
    for (int r = 0; r < 4; ++r)
      for (int p = 0; p < P; ++p) V::nibbles(V::load(cg + r * int4cpu::kGroupBytes + p * V::kBytes), w[r][p], w[r][P + p]);
    float sw[4];
    for (int r = 0; r < 4; ++r) sw[r] = f16_to_f32(scales[g * 4 + r]);
    for (int t = 0; t < T; ++t) {
      const int64_t row = (t0 + t) * groups + g;
      const int8_t* q = x.q + (t0 + t) * x.K + g * int4cpu::kGroup;
      I xv[2 * P];
      for (int p = 0; p < P; ++p) {
        xv[p] = V::load(q + p * V::kBytes);
        xv[P + p] = V::load(q + int4cpu::kGroupBytes + p * V::kBytes);
      }
      const I bias = V::lane0(x.bias[row]);
      const float sx = x.scale[row];
      for (int r = 0; r < 4; ++r)
        acc[r][t] = V::fma(V::cvt(V::dot(bias, w[r], xv, 2 * P)), V::set1(sw[r] * sx), acc[r][t]);
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < T; ++t) y[(t0 + t) * ldy + r] = V::hsum(acc[r][t]);
}

template <class V>
void int4_q8_gemm_x86(const uint8_t* codes, const uint16_t* scales, int64_t rows, int64_t K,
                      const int4cpu::Q8Rows& x, int64_t T, float* y, int64_t ldy) {
  const int64_t groups = K / int4cpu::kGroup;
  for (int64_t b = 0; b < rows / 4; ++b) {
    const uint8_t* cb = codes + b * groups * 4 * int4cpu::kGroupBytes;
    const uint16_t* sb = scales + b * groups * 4;
    float* yb = y + 4 * b;
    int64_t t = 0;
    for (; t + V::kTokens <= T; t += V::kTokens) int4_q8_tile<V, V::kTokens>(cb, sb, groups, x, t, yb, ldy);
    switch (T - t) {
      case 0: break;
      case 1: int4_q8_tile<V, 1>(cb, sb, groups, x, t, yb, ldy); break;
      case 2: int4_q8_tile<V, 2>(cb, sb, groups, x, t, yb, ldy); break;
      default: int4_q8_tile<V, 3>(cb, sb, groups, x, t, yb, ldy); break;
    }
  }
}

// The table of a level above AVX2 whose difference is its int4 GEMM (traits V). Built on first use:
// a copy of a table from another file must not depend on static initialisation order.
template <class V>
const CpuKernels& int4_level_table(const char* name) {
  static const CpuKernels table = derive_kernels(kAvx2Kernels, name, int4_q8_gemm_x86<V>, kAvx2Kernels.gemm_bf16);
  return table;
}

// 256-bit traits shared by the AVX2 and AVX-VNNI levels; `Dot` supplies the dot product.
template <class Dot>
struct Vec256 {
  using I = __m256i;
  using F = __m256;
  static constexpr int kBytes = 32;
  static constexpr int kTokens = 3;
  static I load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  static void nibbles(I raw, I& lo, I& hi) {
    const I mask = _mm256_set1_epi8(15);
    lo = _mm256_and_si256(raw, mask);
    hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
  }
  static I lane0(int32_t v) { return _mm256_setr_epi32(v, 0, 0, 0, 0, 0, 0, 0); }
  static I dot(I acc, const I* w, const I* x, int n) { return Dot::dot(acc, w, x, n); }
  static F cvt(I v) { return _mm256_cvtepi32_ps(v); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F zero() { return _mm256_setzero_ps(); }
  static float hsum(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

// vpmaddubsw pairs u8 x s8 into int16 (|sum| <= 2 * 15 * 127 = 3810), so up to 8 of them add in int16
// without saturation before one vpmaddwd widens to int32.
struct MaddubsDot256 {
  static __m256i dot(__m256i acc, const __m256i* w, const __m256i* x, int n) {
    __m256i s = _mm256_maddubs_epi16(w[0], x[0]);
    for (int i = 1; i < n; ++i) s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w[i], x[i]));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(s, _mm256_set1_epi16(1)));
  }
};

#if defined(__AVX512BW__)
// 512-bit traits of the AVX-512 levels: one row's 64 code bytes of a group are one register.
template <class Dot>
struct Vec512 {
  using I = __m512i;
  using F = __m512;
  static constexpr int kBytes = 64;
  static constexpr int kTokens = 4;
  static I load(const void* p) { return _mm512_loadu_si512(p); }
  static void nibbles(I raw, I& lo, I& hi) {
    const I mask = _mm512_set1_epi8(15);
    lo = _mm512_and_si512(raw, mask);
    hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask);
  }
  static I lane0(int32_t v) { return _mm512_zextsi128_si512(_mm_cvtsi32_si128(v)); }
  static I dot(I acc, const I* w, const I* x, int n) { return Dot::dot(acc, w, x, n); }
  static F cvt(I v) { return _mm512_cvtepi32_ps(v); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F zero() { return _mm512_setzero_ps(); }
  static float hsum(F v) {  // (GCC 12's _mm512_reduce_add_ps warns about an undefined temporary)
    return Vec256<Dot>::hsum(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
  }
};
#endif
