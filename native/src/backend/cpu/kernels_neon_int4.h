// The W4A8 int4 GEMM on NEON (CpuKernels::int4_q8_gemm), written once over the dot product and
// included (inside the anonymous namespace) by kernels_neon.cpp (plain NEON: vmull + vpadal) and
// kernels_neon_dotprod.cpp (ARMv8.2 sdot). NEON multiplies signed by signed bytes, so codes become
// c - 8 in [-8, 7] when they are split and the activations' bias (int4_cpu.h) is not needed.
// Layout and accumulation as in kernels_x86_int4.h, with 16-byte vectors: a row's 64 code bytes of a
// group are 4 vectors, hence 8 vectors of weights (low nibbles: k 0..63, high nibbles: k 64..127).

template <class Dot, int T>
void int4_q8_tile(const uint8_t* codes, const uint16_t* scales, int64_t groups, const int4cpu::Q8Rows& x,
                  int64_t t0, float* y, int64_t ldy) {
  float32x4_t acc[4][T];
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_f32(0.0f);
  const uint8x16_t mask = vdupq_n_u8(15);
  const int8x16_t eight = vdupq_n_s8(8);
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* cg = codes + g * 4 * int4cpu::kGroupBytes;
    int8x16_t w[4][8];
    for (int r = 0; r < 4; ++r)
      for (int p = 0; p < 4; ++p) {
        const uint8x16_t raw = vld1q_u8(cg + r * int4cpu::kGroupBytes + 16 * p);
        w[r][p] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, mask)), eight);
        w[r][4 + p] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), eight);
      }
    float sw[4];
    for (int r = 0; r < 4; ++r) sw[r] = f16_to_f32(scales[g * 4 + r]);
    for (int t = 0; t < T; ++t) {
      const int8_t* q = x.q + (t0 + t) * x.K + g * int4cpu::kGroup;
      int8x16_t xv[8];
      for (int p = 0; p < 8; ++p) xv[p] = vld1q_s8(q + 16 * p);
      const float sx = x.scale[(t0 + t) * groups + g];
      for (int r = 0; r < 4; ++r) acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(Dot::dot(w[r], xv)), sw[r] * sx);
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < T; ++t) y[(t0 + t) * ldy + r] = vaddvq_f32(acc[r][t]);
}

template <class Dot>
void int4_q8_gemm_neon(const uint8_t* codes, const uint16_t* scales, int64_t rows, int64_t K,
                       const int4cpu::Q8Rows& x, int64_t T, float* y, int64_t ldy) {
  const int64_t groups = K / int4cpu::kGroup;
  for (int64_t b = 0; b < rows / 4; ++b) {
    const uint8_t* cb = codes + b * groups * 4 * int4cpu::kGroupBytes;
    const uint16_t* sb = scales + b * groups * 4;
    float* yb = y + 4 * b;
    int64_t t = 0;
    for (; t + 2 <= T; t += 2) int4_q8_tile<Dot, 2>(cb, sb, groups, x, t, yb, ldy);
    if (t < T) int4_q8_tile<Dot, 1>(cb, sb, groups, x, t, yb, ldy);
  }
}
