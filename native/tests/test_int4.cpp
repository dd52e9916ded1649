// W4A16 int4 module (common/int4.h) against algorithms.md §4.6, on random inputs (normal weights and
// activations, uniform codes; never all zeros except the one test of the all-zero-group rule).
//
// Expected layouts are written out here independently of the implementation: the Marlin position
// of (k, n) is computed by the forward formula in marlin_position() below and pinned on hand-worked
// positions; AutoGPTQ nibbles are read back by hand.
//
// Tolerances: layout/packing results are compared exactly. Quantisation: |What - w| <= s/2 for every
// element with w/s in [-8.5, 7.5] (relative slack 1e-6 for the fp32 division), and for the group
// maximum that the fp16 rounding of s can push past 7.5*s, s/2 + 7.5*|s - 2*xmax/15|. GEMM: per element
// |y - y_ref| <= 1e-4 * sum_k |x[m][k] * What[k][n]| with y_ref in double, and overall
// mean|y - y_ref| / mean|y_ref| < 1e-5 (fp32 accumulation over K <= 256 errs by ~1e-7).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <limits>
#include <memory>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/int4_cpu.h"
#include "backend/cpu/kernels.h"
#include "backend/cuda/int4_gemv_lane.h"
#include "backend/cuda/int4_mma_fragment.h"
#include "common/int4.h"

namespace mcpm {
namespace int4 {
namespace {

std::vector<float> randn(std::mt19937& rng, size_t n, float sd = 1.0f) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<uint8_t> random_codes(std::mt19937& rng, int64_t K, int64_t N) {
  std::uniform_int_distribution<int> d(0, 15);
  std::vector<uint8_t> q(static_cast<size_t>(K * N));
  for (uint8_t& x : q) x = static_cast<uint8_t>(d(rng));
  return q;
}

std::vector<uint16_t> random_scales(std::mt19937& rng, int64_t K, int64_t N) {
  std::uniform_real_distribution<float> d(0.001f, 0.1f);
  std::vector<uint16_t> s(static_cast<size_t>(K / 128 * N));
  for (uint16_t& x : s) x = f32_to_f16(d(rng));
  return s;
}

// Where Marlin stores q[k][n] (algorithms.md §4.2, solved forwards): int32 index into B [K/16][2N]
// and nibble index. Row k%16 = [2t, 2t+1, 2t+8, 2t+9][rr]; column n%64 = 16j + 8blk + col; lane
// i = 4col + t; fragment element o = 4blk + rr sits at nibble p with interleave[p] = o.
struct Pos {
  int64_t word;
  int nibble;
};
Pos marlin_position(int64_t k, int64_t n, int64_t N) {
  const int64_t r = k / 16, kr = k % 16;
  const int64_t t = (kr % 8) / 2;
  const int64_t rr = (kr % 2) + 2 * (kr / 8);
  const int64_t c = n / 64, j = (n % 64) / 16, blk = (n % 16) / 8, col = n % 8;
  const int64_t i = 4 * col + t;
  const int64_t o = 4 * blk + rr;
  static const int inv_interleave[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // p such that [0,2,4,6,1,3,5,7][p] = o
  return {r * 2 * N + 128 * c + 4 * i + j, inv_interleave[o]};
}

int nibble_of(const std::vector<int32_t>& B, Pos p) {
  return static_cast<int>((static_cast<uint32_t>(B[static_cast<size_t>(p.word)]) >> (4 * p.nibble)) & 15u);
}

template <class F>
void expect_throw_with(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected std::invalid_argument containing '" << needle << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// ---- fp16 ------------------------------------------------------------------------------------------

TEST(Int4F16, RoundTripAndRounding) {
  for (uint32_t h = 0; h < 65536; ++h) {
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0) continue;  // NaN payloads
    EXPECT_EQ(f32_to_f16(f16_to_f32(static_cast<uint16_t>(h))), h) << h;
  }
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie -> even (down)
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie -> even (up)
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);      // tie between 0 and 2^-24 -> 0
  EXPECT_EQ(f32_to_f16(3 * std::ldexp(1.0f, -25)), 0x0002);  // tie between 1 and 2 units -> 2
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -14)), 0x8400);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26)), 0x0400);  // rounds up to normal
}

// ---- quantisation ----------------------------------------------------------------------------------

TEST(Int4Quant, RtnErrorBoundAndScaleRule) {
  std::mt19937 rng(101);
  const int64_t N = 40, K = 384;
  std::vector<float> w = randn(rng, static_cast<size_t>(N * K), 0.05f);
  for (int e = 0; e < 20; ++e) w[static_cast<size_t>(rng() % w.size())] *= 30.0f;  // outliers
  const Quantized qw = quantize_rtn(w.data(), N, K);
  ASSERT_EQ(qw.q.size(), static_cast<size_t>(K * N));
  ASSERT_EQ(qw.scales.size(), static_cast<size_t>(K / 128 * N));
  const std::vector<float> deq = dequantize(qw);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < K / 128; ++g) {
      float xmax = 0.0f;
      for (int64_t k = 128 * g; k < 128 * g + 128; ++k) xmax = std::max(xmax, std::fabs(w[n * K + k]));
      const uint16_t s16 = qw.scales[static_cast<size_t>(g * N + n)];
      EXPECT_EQ(s16, f32_to_f16(2.0f * xmax / 15.0f));
      const double s = f16_to_f32(s16);
      const double s_exact = 2.0 * xmax / 15.0;
      for (int64_t k = 128 * g; k < 128 * g + 128; ++k) {
        const int q = qw.q[static_cast<size_t>(k * N + n)];
        ASSERT_LE(q, 15);
        const double v = w[static_cast<size_t>(n * K + k)];
        const double what = (q - 8) * s;
        EXPECT_EQ(deq[static_cast<size_t>(k * N + n)], static_cast<float>(what));
        const double err = std::fabs(what - v);
        if (v / s <= 7.5 && v / s >= -8.5)
          EXPECT_LE(err, 0.5 * s * (1 + 1e-6)) << "n=" << n << " k=" << k;
        else
          EXPECT_LE(err, 0.5 * s + 7.5 * std::fabs(s - s_exact) + 1e-9) << "n=" << n << " k=" << k;
      }
    }
}

TEST(Int4Quant, AllZeroGroupUsesUnitRange) {
  std::mt19937 rng(102);
  const int64_t N = 3, K = 256;
  std::vector<float> w = randn(rng, static_cast<size_t>(N * K));
  for (int64_t k = 128; k < 256; ++k) w[static_cast<size_t>(1 * K + k)] = 0.0f;  // group 1 of row n=1
  const Quantized qw = quantize_rtn(w.data(), N, K);
  EXPECT_EQ(qw.scales[static_cast<size_t>(1 * N + 1)], f32_to_f16(2.0f / 15.0f));
  for (int64_t k = 128; k < 256; ++k) EXPECT_EQ(qw.q[static_cast<size_t>(k * N + 1)], 8);
}

TEST(Int4Quant, ClipSearchNeverIncreasesGroupError) {
  std::mt19937 rng(103);
  const int64_t N = 24, K = 512;
  std::student_t_distribution<float> heavy(2.0f);  // heavy tails: clipping should help somewhere
  std::vector<float> w(static_cast<size_t>(N * K));
  for (float& x : w) x = 0.02f * heavy(rng);
  const Quantized rtn = quantize_rtn(w.data(), N, K);
  QuantOptions opt;
  opt.clip_search = true;
  const Quantized clip = quantize(w.data(), N, K, opt);
  const std::vector<float> d_rtn = dequantize(rtn), d_clip = dequantize(clip);
  int improved = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < K / 128; ++g) {
      double e_rtn = 0, e_clip = 0;
      for (int64_t k = 128 * g; k < 128 * g + 128; ++k) {
        const double v = w[static_cast<size_t>(n * K + k)];
        e_rtn += std::pow(d_rtn[static_cast<size_t>(k * N + n)] - v, 2);
        e_clip += std::pow(d_clip[static_cast<size_t>(k * N + n)] - v, 2);
      }
      EXPECT_LE(e_clip, e_rtn) << "n=" << n << " g=" << g;
      if (e_clip < e_rtn) ++improved;
      EXPECT_LE(clip.scales[static_cast<size_t>(g * N + n)], rtn.scales[static_cast<size_t>(g * N + n)]);  // shrink only
    }
  EXPECT_GT(improved, 0);
  for (uint8_t q : clip.q) ASSERT_LE(q, 15);
}

// ---- AutoGPTQ ------------------------------------------------------------------------------------

TEST(Int4Gptq, PackLayoutAndRoundTrip) {
  std::mt19937 rng(201);
  const int64_t K = 256, N = 24;
  const std::vector<uint8_t> q = random_codes(rng, K, N);
  const std::vector<int32_t> qw = pack_gptq_qweight(q.data(), K, N);
  ASSERT_EQ(qw.size(), static_cast<size_t>(K / 8 * N));
  for (int64_t i = 0; i < K / 8; ++i)
    for (int64_t n = 0; n < N; ++n)
      for (int j = 0; j < 8; ++j)
        ASSERT_EQ((static_cast<uint32_t>(qw[static_cast<size_t>(i * N + n)]) >> (4 * j)) & 15u,
                  q[static_cast<size_t>((8 * i + j) * N + n)]);
  EXPECT_EQ(unpack_gptq_qweight(qw.data(), K, N), q);
  const std::vector<int32_t> z = make_gptq_qzeros(K, N);
  ASSERT_EQ(z.size(), static_cast<size_t>(K / 128 * N / 8));
  for (int32_t v : z) EXPECT_EQ(static_cast<uint32_t>(v), 0x77777777u);
  const std::vector<int32_t> g = make_gptq_g_idx(K);
  EXPECT_EQ(g[127], 0);
  EXPECT_EQ(g[128], 1);
  EXPECT_EQ(g[255], 1);
}

// ---- Marlin layout ---------------------------------------------------------------------------------

TEST(Int4Marlin, PermTables) {
  const std::array<int, 1024>& perm = marlin_perm();
  // Lane 0 (t=0, col=0): fragment offsets 16*row + 8*blk for rows 0,1,8,9 and blk 0,1 =
  // [0,16,128,144, 8,24,136,152], then interleaved [0,2,4,6,1,3,5,7].
  const int first[8] = {0, 128, 8, 136, 16, 144, 24, 152};
  for (int x = 0; x < 8; ++x) EXPECT_EQ(perm[x], first[x]);
  for (int x = 0; x < 8; ++x) EXPECT_EQ(perm[8 + x], first[x] + 256);  // same lane, next n16 tile
  std::vector<int> seen(1024, 0);
  for (int v : perm) {
    ASSERT_GE(v, 0);
    ASSERT_LT(v, 1024);
    ++seen[static_cast<size_t>(v)];
  }
  for (int c : seen) EXPECT_EQ(c, 1);
  const std::array<int, 64>& sp = marlin_scale_perm();
  EXPECT_EQ(sp[0], 0);
  EXPECT_EQ(sp[1], 8);
  EXPECT_EQ(sp[8], 1);
  EXPECT_EQ(sp[63], 63);
  const std::array<int, 32>& ss = marlin_scale_perm_single();
  const int single_first[10] = {0, 1, 8, 9, 16, 17, 24, 25, 2, 3};
  for (int x = 0; x < 10; ++x) EXPECT_EQ(ss[x], single_first[x]);
  EXPECT_EQ(ss[31], 31);
}

TEST(Int4Marlin, ClosedFormLayoutHandChecked) {
  std::mt19937 rng(301);
  const int64_t K = 256, N = 128;
  const std::vector<uint8_t> q = random_codes(rng, K, N);
  const std::vector<int32_t> B = pack_marlin_qweight(q.data(), K, N);
  ASSERT_EQ(B.size(), static_cast<size_t>(K / 16 * 2 * N));
  // Hand-worked: (k, n) -> (int32 index, nibble).
  struct Case {
    int64_t k, n, word;
    int nibble;
  };
  const Case cases[] = {
      {0, 0, 0, 0},                  // lane 0, first element
      {1, 0, 0, 4},                  // row 2t+1 -> o=1 -> nibble 4
      {8, 0, 0, 1},                  // row 2t+8 -> o=2 -> nibble 1
      {9, 0, 0, 5},                  // row 2t+9 -> o=3 -> nibble 5
      {0, 8, 0, 2},                  // second n8 half -> o=4 -> nibble 2
      {2, 0, 4, 0},                  // t=1 -> lane 1 -> word 4
      {0, 1, 16, 0},                 // col=1 -> lane 4 -> word 16
      {0, 16, 1, 0},                 // next n16 tile -> j=1
      {0, 64, 128, 0},               // next 64-column chunk
      {16, 0, 2 * N, 0},             // next 16-row slab
      {15, 63, 127, 7},              // t=3, rr=3, j=3, blk=1, col=7: last nibble of chunk 0
      {16 + 5, 64 + 16 * 2 + 8 + 3,  // r=1; kr=5: t=2, rr=1; c=1, j=2, blk=1, col=3; i=14; o=5 -> p=6
       2 * N + 128 + 4 * 14 + 2, 6},
  };
  for (const Case& c : cases) {
    const Pos p = marlin_position(c.k, c.n, N);
    EXPECT_EQ(p.word, c.word) << c.k << "," << c.n;
    EXPECT_EQ(p.nibble, c.nibble) << c.k << "," << c.n;
    EXPECT_EQ(nibble_of(B, {c.word, c.nibble}), q[static_cast<size_t>(c.k * N + c.n)]) << c.k << "," << c.n;
  }
  // And the forward formula everywhere, so the formula (not just the round trip) is what is packed.
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n)
      ASSERT_EQ(nibble_of(B, marlin_position(k, n, N)), q[static_cast<size_t>(k * N + n)]) << k << "," << n;
}

TEST(Int4Marlin, PackUnpackRoundTrip) {
  std::mt19937 rng(302);
  for (int64_t K : {128, 256, 512})
    for (int64_t N : {64, 128, 320}) {
      const std::vector<uint8_t> q = random_codes(rng, K, N);
      const std::vector<int32_t> B = pack_marlin_qweight(q.data(), K, N);
      EXPECT_EQ(unpack_marlin_qweight(B.data(), K, N), q) << K << "x" << N;
      // Bijection the other way: arbitrary words survive unpack then pack.
      std::vector<int32_t> words(B.size());
      for (int32_t& v : words) v = static_cast<int32_t>(rng());
      const std::vector<uint8_t> q2 = unpack_marlin_qweight(words.data(), K, N);
      EXPECT_EQ(pack_marlin_qweight(q2.data(), K, N), words) << K << "x" << N;
    }
}

TEST(Int4Marlin, ScalePermutation) {
  std::mt19937 rng(303);
  // Grouped (K > 128): s'[64c + 8a + b] = s[64c + a + 8b] in every row.
  {
    const int64_t K = 384, N = 192;
    const std::vector<uint16_t> s = random_scales(rng, K, N);
    const std::vector<uint16_t> sp = permute_marlin_scales(s.data(), K, N);
    for (int64_t g = 0; g < K / 128; ++g)
      for (int64_t c = 0; c < N / 64; ++c)
        for (int a = 0; a < 8; ++a)
          for (int b = 0; b < 8; ++b)
            ASSERT_EQ(sp[static_cast<size_t>(g * N + 64 * c + 8 * a + b)], s[static_cast<size_t>(g * N + 64 * c + a + 8 * b)]);
    EXPECT_EQ(unpermute_marlin_scales(sp.data(), K, N), s);
  }
  // One group (K == 128): the per-channel permutation, s'[32c + 8a + m] = s[32c + 2a + off[m]].
  {
    const int64_t K = 128, N = 128;
    const int off[8] = {0, 1, 8, 9, 16, 17, 24, 25};
    const std::vector<uint16_t> s = random_scales(rng, K, N);
    const std::vector<uint16_t> sp = permute_marlin_scales(s.data(), K, N);
    for (int64_t c = 0; c < N / 32; ++c)
      for (int a = 0; a < 4; ++a)
        for (int m = 0; m < 8; ++m)
          ASSERT_EQ(sp[static_cast<size_t>(32 * c + 8 * a + m)], s[static_cast<size_t>(32 * c + 2 * a + off[m])]);
    EXPECT_EQ(unpermute_marlin_scales(sp.data(), K, N), s);
  }
}

TEST(Int4Marlin, GptqRepackEqualsDirectPacking) {
  std::mt19937 rng(304);
  for (int64_t K : {128, 256})
    for (int64_t N : {64, 192}) {
      const std::vector<float> w = randn(rng, static_cast<size_t>(N * K), 0.03f);
      const Quantized qw = quantize_rtn(w.data(), N, K);
      const MarlinWeight direct = pack_marlin(qw);
      const GptqWeight g = to_gptq(qw);
      const MarlinWeight repacked = gptq_to_marlin(g);
      EXPECT_EQ(repacked.K, K);
      EXPECT_EQ(repacked.N, N);
      EXPECT_EQ(repacked.qweight, direct.qweight) << K << "x" << N;
      EXPECT_EQ(repacked.scales, direct.scales) << K << "x" << N;
      // Without the optional qzeros / g_idx too, and back through unpack.
      GptqWeight bare = g;
      bare.qzeros.clear();
      bare.g_idx.clear();
      EXPECT_EQ(gptq_to_marlin(bare).qweight, direct.qweight);
      const Quantized back = unpack_marlin(direct);
      EXPECT_EQ(back.q, qw.q);
      EXPECT_EQ(back.scales, qw.scales);
      EXPECT_EQ(from_gptq(g).q, qw.q);
    }
}

// §4.2: packing commutes with concatenation along N at multiples of 64 (fused qkv / gate_up).
TEST(Int4Marlin, PackingCommutesWithConcatAlongN) {
  std::mt19937 rng(305);
  for (int64_t K : {128, 384})
    for (auto widths : {std::vector<int64_t>{64, 192}, std::vector<int64_t>{128, 64, 64}}) {
      int64_t N = 0;
      for (int64_t x : widths) N += x;
      std::vector<Quantized> parts;
      Quantized cat;
      cat.K = K;
      cat.N = N;
      cat.q.assign(static_cast<size_t>(K * N), 0);
      cat.scales.assign(static_cast<size_t>(K / 128 * N), 0);
      int64_t n0 = 0;
      for (int64_t Np : widths) {
        Quantized p;
        p.K = K;
        p.N = Np;
        p.q = random_codes(rng, K, Np);
        p.scales = random_scales(rng, K, Np);
        for (int64_t k = 0; k < K; ++k)
          for (int64_t n = 0; n < Np; ++n) cat.q[static_cast<size_t>(k * N + n0 + n)] = p.q[static_cast<size_t>(k * Np + n)];
        for (int64_t g = 0; g < K / 128; ++g)
          for (int64_t n = 0; n < Np; ++n)
            cat.scales[static_cast<size_t>(g * N + n0 + n)] = p.scales[static_cast<size_t>(g * Np + n)];
        parts.push_back(p);
        n0 += Np;
      }
      const MarlinWeight whole = pack_marlin(cat);
      n0 = 0;
      for (const Quantized& p : parts) {
        const MarlinWeight mp = pack_marlin(p);
        // int32 columns [2*n0, 2*(n0+Np)) of every slab, scale columns [n0, n0+Np) of every group row.
        for (int64_t r = 0; r < K / 16; ++r)
          for (int64_t x = 0; x < 2 * p.N; ++x)
            ASSERT_EQ(whole.qweight[static_cast<size_t>(r * 2 * N + 2 * n0 + x)], mp.qweight[static_cast<size_t>(r * 2 * p.N + x)]);
        for (int64_t g = 0; g < K / 128; ++g)
          for (int64_t x = 0; x < p.N; ++x)
            ASSERT_EQ(whole.scales[static_cast<size_t>(g * N + n0 + x)], mp.scales[static_cast<size_t>(g * p.N + x)]);
        // The GEMM of the fused weight is, column block by column block, the GEMM of the part.
        const int64_t M = 3;
        const std::vector<float> x = randn(rng, static_cast<size_t>(M * K));
        std::vector<float> y_whole(static_cast<size_t>(M * N)), y_part(static_cast<size_t>(M * p.N));
        gemm_dequant(x.data(), M, whole, y_whole.data());
        gemm_dequant(x.data(), M, mp, y_part.data());
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < p.N; ++n)
            ASSERT_EQ(y_whole[static_cast<size_t>(m * N + n0 + n)], y_part[static_cast<size_t>(m * p.N + n)]);
        n0 += p.N;
      }
    }
}

// ---- GEMM --------------------------------------------------------------------------------------------

TEST(Int4Gemm, MatchesDoubleReference) {
  std::mt19937 rng(401);
  for (int64_t M : {1, 3, 17})
    for (int64_t K : {128, 256})
      for (int64_t N : {64, 192}) {
        const std::vector<float> w = randn(rng, static_cast<size_t>(N * K), 0.05f);
        const Quantized qw = quantize_rtn(w.data(), N, K);
        const MarlinWeight mw = pack_marlin(qw);
        const std::vector<float> x = randn(rng, static_cast<size_t>(M * K));
        std::vector<float> y(static_cast<size_t>(M * N), 12345.0f);
        gemm_dequant(x.data(), M, mw, y.data());
        double abs_err = 0, abs_ref = 0;
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            double ref = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
              const double s = f16_to_f32(qw.scales[static_cast<size_t>(k / 128 * N + n)]);
              const double term = static_cast<double>(x[static_cast<size_t>(m * K + k)]) *
                                  (static_cast<int>(qw.q[static_cast<size_t>(k * N + n)]) - 8) * s;
              ref += term;
              mag += std::fabs(term);
            }
            const double got = y[static_cast<size_t>(m * N + n)];
            ASSERT_LE(std::fabs(got - ref), 1e-4 * mag) << "M=" << M << " K=" << K << " N=" << N << " m=" << m << " n=" << n;
            abs_err += std::fabs(got - ref);
            abs_ref += std::fabs(ref);
          }
        EXPECT_LT(abs_err / abs_ref, 1e-5) << "M=" << M << " K=" << K << " N=" << N;
      }
}

// ---- decode tables and parallel quantisation ---------------------------------------------------------

// The scale table finds every original scale inside the permuted row, for both permutations.
TEST(Int4Marlin, ScalePositionTableMatchesPermutation) {
  std::mt19937 rng(611);
  for (int64_t K : {128, 384})
    for (int64_t N : {64, 192}) {
      const std::vector<uint16_t> s = random_scales(rng, K, N);
      const std::vector<uint16_t> sp = permute_marlin_scales(s.data(), K, N);
      const std::array<uint8_t, 64>& spos = marlin_scale_positions(K == 128);
      for (int64_t g = 0; g < K / 128; ++g)
        for (int64_t n = 0; n < N; ++n)
          ASSERT_EQ(sp[static_cast<size_t>(g * N + n / 64 * 64 + spos[static_cast<size_t>(n % 64)])],
                    s[static_cast<size_t>(g * N + n)])
              << "K=" << K << " N=" << N << " g=" << g << " n=" << n;
    }
}

// Quantising column ranges on several threads and concatenating gives the single-threaded result
// byte for byte, for both layouts, with and without the clip search.
TEST(Int4Quant, ParallelQuantizeEqualsSerial) {
  std::mt19937 rng(612);
  for (int64_t N : {64, 320})
    for (int64_t K : {128, 256})
      for (bool clip : {false, true}) {
        const std::vector<float> w = randn(rng, static_cast<size_t>(N * K), 0.05f);
        QuantOptions opt;
        opt.clip_search = clip;
        const Quantized serial = quantize(w.data(), N, K, opt);
        const MarlinWeight want_m = pack_marlin(serial);
        const GptqWeight want_g = to_gptq(serial);
        for (int threads : {1, 2, 3, 8}) {
          const MarlinWeight m = quantize_marlin(w.data(), N, K, opt, threads);
          EXPECT_EQ(m.qweight, want_m.qweight) << "N=" << N << " K=" << K << " threads=" << threads;
          EXPECT_EQ(m.scales, want_m.scales) << "N=" << N << " K=" << K << " threads=" << threads;
          const GptqWeight g = quantize_gptq(w.data(), N, K, opt, threads);
          EXPECT_EQ(g.qweight, want_g.qweight) << "N=" << N << " K=" << K << " threads=" << threads;
          EXPECT_EQ(g.scales, want_g.scales) << "N=" << N << " K=" << K << " threads=" << threads;
        }
      }
  const std::vector<float> bad = randn(rng, 96 * 128);
  expect_throw_with([&] { quantize_marlin(bad.data(), 96, 128, {}, 2); }, "multiple of 64");
}

// ---- the CPU backend's int4 linear op ------------------------------------------------------------------

// got [M][N] against gemm_dequant (the scalar closed-form reference) per element within
// 1e-5 * sum_k |x * What| (only the summation order differs).
::testing::AssertionResult MatchesInt4Reference(const std::vector<float>& x, int64_t M, const Quantized& qw,
                                                const MarlinWeight& mw, const std::vector<float>& got) {
  const int64_t K = mw.K, N = mw.N;
  std::vector<float> want(static_cast<size_t>(M * N));
  gemm_dequant(x.data(), M, mw, want.data());
  const std::vector<float> deq = dequantize(qw);  // [K][N]
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double mag = 0;
      for (int64_t k = 0; k < K; ++k)
        mag += std::fabs(static_cast<double>(x[static_cast<size_t>(m * K + k)]) * deq[static_cast<size_t>(k * N + n)]);
      const size_t i = static_cast<size_t>(m * N + n);
      if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= 1e-5 * mag + 1e-30))
        return ::testing::AssertionFailure() << "m=" << m << " n=" << n << ": " << got[i] << " vs " << want[i];
    }
  return ::testing::AssertionSuccess();
}

// The W4A8 error bound of int4_cpu.h: each activation moves by at most max|x_block| / 254, so
// |y8 - y16| <= sum_g (max_{k in g} |x_k| / 254) * sum_{k in g} |What[k][n]|, plus fp32 rounding of
// both sums (1e-5 * sum_k |x * What|). y16 is gemm_dequant, the exact W4A16 reference.
::testing::AssertionResult MatchesInt8Bound(const std::vector<float>& x, int64_t M, const Quantized& qw,
                                            const MarlinWeight& mw, const std::vector<float>& got) {
  const int64_t K = mw.K, N = mw.N;
  std::vector<float> want(static_cast<size_t>(M * N));
  gemm_dequant(x.data(), M, mw, want.data());
  const std::vector<float> deq = dequantize(qw);  // [K][N]
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double mag = 0, bound = 0;
      for (int64_t g = 0; g < K / 128; ++g) {
        double amax = 0, wsum = 0;
        for (int64_t k = 128 * g; k < 128 * g + 128; ++k) {
          const double xk = x[static_cast<size_t>(m * K + k)], wk = deq[static_cast<size_t>(k * N + n)];
          amax = std::max(amax, std::fabs(xk));
          wsum += std::fabs(wk);
          mag += std::fabs(xk * wk);
        }
        bound += amax / 254.0 * wsum;
      }
      const size_t i = static_cast<size_t>(m * N + n);
      if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= bound * (1 + 1e-6) + 1e-5 * mag + 1e-30))
        return ::testing::AssertionFailure() << "m=" << m << " n=" << n << ": " << got[i] << " vs " << want[i]
                                             << " (bound " << bound << ")";
    }
  return ::testing::AssertionSuccess();
}

// CpuBackend::linear_int4 for every kernel level this CPU runs, both int4 modes and 1 or 3 threads,
// at token counts with every tile tail (1..5, 8, 17, 64, 118) and shapes covering both Marlin scale
// permutations (K == 128 and K > 128), with the tensors adopted into the CPU layout first as the
// weight store does. Exact: within 1e-5 * sum_k |x * What| of gemm_dequant (only the summation order
// differs). Int8: within the W4A8 bound above; every level's int8 result within fp32 rounding of the
// scalar level's (the integer sums are exact, only the float sum over groups differs); and a token's
// result the same bits whether it is computed alone or with others.
TEST(Int4CpuOp, LinearInt4MatchesReference) {
  std::mt19937 rng(613);
  struct Shape {
    int64_t K, N;
  };
  int levels = 0;
  for (const char* const* level = kCpuIsaLevels; *level != nullptr; ++level) {
    const CpuKernels* kernels = cpu_kernels_for(*level);
    if (kernels == nullptr) continue;
    ++levels;
    for (int32_t threads : {1, 3}) {
      CpuBackend exact(*kernels, CpuPrecision::Exact), int8(*kernels, CpuPrecision::Fast);
      CpuBackend scalar8(*cpu_kernels_for("scalar"), CpuPrecision::Fast);
      std::unique_ptr<ExecContext> ctx = exact.create_context(threads);
      for (const Shape sh : {Shape{128, 64}, Shape{128, 192}, Shape{256, 128}, Shape{640, 320}})
        for (int64_t M : {1, 2, 3, 4, 5, 8, 17, 64, 118}) {
          if (sh.K * sh.N > 128 * 192 && M > 17) continue;  // keep the big shape to small M
          const std::vector<float> w = randn(rng, static_cast<size_t>(sh.N * sh.K), 0.05f);
          const Quantized qw = quantize_rtn(w.data(), sh.N, sh.K);
          const MarlinWeight mw = pack_marlin(qw);
          MarlinWeight cpu = mw;
          const Tensor qweight{cpu.qweight.data(), DType::I32, sh.K / 16, 2 * sh.N};
          const Tensor scales{cpu.scales.data(), DType::F16, sh.K / 128, sh.N};
          exact.adopt_int4_qweight(qweight, sh.K, sh.N);
          exact.adopt_int4_scales(scales, sh.K, sh.N);
          std::vector<float> x = randn(rng, static_cast<size_t>(M * sh.K));
          if (M > 2) x[static_cast<size_t>(sh.K + 5)] = 0.0f;  // a zero among the inputs
          const Tensor in{x.data(), DType::F32, M, sh.K};
          std::vector<float> got(static_cast<size_t>(M * sh.N), 777.0f), got8 = got, ref8 = got;
          const std::string where = std::string(*level) + " threads=" + std::to_string(threads) +
                                    " K=" + std::to_string(sh.K) + " N=" + std::to_string(sh.N) +
                                    " M=" + std::to_string(M);
          exact.linear_int4(*ctx, Tensor{got.data(), DType::F32, M, sh.N}, in, qweight, scales);
          ASSERT_TRUE(MatchesInt4Reference(x, M, qw, mw, got)) << where;
          int8.linear_int4(*ctx, Tensor{got8.data(), DType::F32, M, sh.N}, in, qweight, scales);
          ASSERT_TRUE(MatchesInt8Bound(x, M, qw, mw, got8)) << where;
          scalar8.linear_int4(*ctx, Tensor{ref8.data(), DType::F32, M, sh.N}, in, qweight, scales);
          for (size_t i = 0; i < got8.size(); ++i)
            ASSERT_NEAR(got8[i], ref8[i], 1e-5f * (std::fabs(ref8[i]) + 1.0f)) << where << " i=" << i;
          // Batch independence, bit for bit: a token's outputs do not depend on the other tokens in
          // the call (speculative verification must reproduce plain decoding).
          const int64_t last = M - 1;
          std::vector<float> alone(static_cast<size_t>(sh.N));
          int8.linear_int4(*ctx, Tensor{alone.data(), DType::F32, 1, sh.N}, in.slice_rows(last, 1), qweight, scales);
          ASSERT_EQ(std::memcmp(alone.data(), got8.data() + last * sh.N, alone.size() * sizeof(float)), 0) << where;
        }
    }
  }
#if defined(__x86_64__) || defined(__aarch64__)
  EXPECT_GE(levels, 2) << "only the scalar level ran";
#endif
}

// Backend::linears (q/k/v and gate/up share their input): the CPU backend's one-region version gives
// the bits of one linear_int4 call per weight, for every level, both precisions, 1 and 5 tokens and a
// thread count whose chunks straddle the weights.
TEST(Int4CpuOp, SharedInputLinearsEqualSeparateCalls) {
  std::mt19937 rng(77);
  const int64_t K = 256;
  const int64_t Ns[3] = {64, 192, 128};
  std::vector<MarlinWeight> mws;
  for (int64_t N : Ns) {
    const std::vector<float> w = randn(rng, static_cast<size_t>(N * K), 0.05f);
    mws.push_back(pack_marlin(quantize_rtn(w.data(), N, K)));
  }
  for (const char* const* level = kCpuIsaLevels; *level != nullptr; ++level) {
    const CpuKernels* kernels = cpu_kernels_for(*level);
    if (kernels == nullptr) continue;
    for (CpuPrecision precision : {CpuPrecision::Fast, CpuPrecision::Exact}) {
      CpuBackend backend(*kernels, precision);
      std::unique_ptr<ExecContext> ctx = backend.create_context(3);
      std::vector<MarlinWeight> cpu = mws;
      LinearWeight lw[3];
      for (int i = 0; i < 3; ++i) {
        lw[i].qweight = Tensor{cpu[i].qweight.data(), DType::I32, K / 16, 2 * Ns[i]};
        lw[i].scales = Tensor{cpu[i].scales.data(), DType::F16, K / 128, Ns[i]};
        backend.adopt_int4_qweight(lw[i].qweight, K, Ns[i]);
        backend.adopt_int4_scales(lw[i].scales, K, Ns[i]);
      }
      const LinearWeight* weights[3] = {&lw[0], &lw[1], &lw[2]};
      for (int64_t M : {1, 5}) {
        std::vector<float> x = randn(rng, static_cast<size_t>(M * K));
        const Tensor in{x.data(), DType::F32, M, K};
        std::vector<std::vector<float>> together(3), alone(3);
        Tensor outs[3];
        for (int i = 0; i < 3; ++i) {
          together[i].assign(static_cast<size_t>(M * Ns[i]), 777.0f);
          alone[i].assign(static_cast<size_t>(M * Ns[i]), 555.0f);
          outs[i] = Tensor{together[i].data(), DType::F32, M, Ns[i]};
        }
        backend.linears(*ctx, outs, in, weights, 3);
        for (int i = 0; i < 3; ++i) {
          backend.linear_int4(*ctx, Tensor{alone[i].data(), DType::F32, M, Ns[i]}, in, lw[i].qweight, lw[i].scales);
          ASSERT_EQ(together[i], alone[i]) << *level << " weight " << i << " M=" << M;
        }
      }
    }
  }
}

// The CPU layout (int4_cpu.h): adopting Marlin tensors gives exactly the codes and scales packed from
// the unquantised q and s, and dequantising a block gives (q - 8) * s for its 4 rows, every level.
TEST(Int4CpuOp, AdoptedLayoutIsThePackedCodes) {
  std::mt19937 rng(29);
  for (const int64_t K : {128, 384}) {
    const int64_t N = 128;
    const std::vector<float> w = randn(rng, static_cast<size_t>(N * K), 0.05f);
    const Quantized qw = quantize_rtn(w.data(), N, K);
    MarlinWeight mw = pack_marlin(qw);
    int4cpu::repack_marlin_codes(mw.qweight.data(), K, N);
    int4cpu::repack_marlin_scales(mw.scales.data(), K, N);
    std::vector<uint8_t> codes(static_cast<size_t>(K * N / 2));
    std::vector<uint16_t> scales(qw.scales.size());
    int4cpu::pack_codes(qw.q.data(), K, N, codes.data());
    int4cpu::pack_scales(qw.scales.data(), K, N, scales.data());
    ASSERT_EQ(std::memcmp(codes.data(), mw.qweight.data(), codes.size()), 0) << "K=" << K;
    ASSERT_EQ(scales, mw.scales) << "K=" << K;
    // Hand check of one byte: row 4*1 + 2 = 6, group 0, byte 5 holds q[5][6] | q[69][6] << 4.
    EXPECT_EQ(codes[static_cast<size_t>(((1 * (K / 128) + 0) * 4 + 2) * 64 + 5)],
              qw.q[static_cast<size_t>(5 * N + 6)] | qw.q[static_cast<size_t>(69 * N + 6)] << 4);
    const std::vector<float> deq = dequantize(qw);
    for (const char* const* level = kCpuIsaLevels; *level != nullptr; ++level) {
      const CpuKernels* kernels = cpu_kernels_for(*level);
      if (kernels == nullptr) continue;
      std::vector<float> block(static_cast<size_t>(4 * K));
      for (int64_t b = 0; b < N / 4; ++b) {
        kernels->int4_dequant_block(codes.data() + b * (K / 128) * 256, scales.data() + b * (K / 128) * 4, K,
                                    block.data());
        for (int64_t r = 0; r < 4; ++r)
          for (int64_t k = 0; k < K; ++k)
            ASSERT_EQ(block[static_cast<size_t>(r * K + k)], deq[static_cast<size_t>(k * N + 4 * b + r)])
                << *level << " K=" << K << " row " << 4 * b + r << " k=" << k;
      }
    }
  }
}

// Activation quantisation: round half to even of x * 127 / max|x| per 128-block, bias = -8 * sum q,
// zeros stay zero with scale 0, and a NaN or infinity makes the block's scale NaN (so it reaches the
// logits instead of being clamped away).
TEST(Int4CpuOp, ActivationQuantisation) {
  std::vector<float> x(256);
  for (size_t i = 0; i < 128; ++i) x[i] = static_cast<float>(i) - 63.5f;
  x[0] = 0.25f * 64.0f / 127.0f;  // 0.25 quanta -> 0
  x[1] = 2.5f * 64.0f / 127.0f;   // 2.5 -> 2 (half to even)
  x[2] = -64.0f;                  // max |x|: -> -127
  std::vector<int8_t> q(256);
  float scale[2];
  int32_t bias[2];
  int4cpu::quantize_row_q8(x.data(), 256, q.data(), scale, bias);
  EXPECT_EQ(scale[0], 64.0f / 127.0f);
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], 2);
  EXPECT_EQ(q[2], -127);
  EXPECT_EQ(q[127], 126);  // 63.5 * 127 / 64 = 126.0078
  int32_t sum = 0;
  for (size_t i = 0; i < 128; ++i) sum += q[i];
  EXPECT_EQ(bias[0], -8 * sum);
  EXPECT_EQ(scale[1], 0.0f);
  EXPECT_EQ(bias[1], 0);
  x[200] = std::numeric_limits<float>::quiet_NaN();
  int4cpu::quantize_row_q8(x.data(), 256, q.data(), scale, bias);
  EXPECT_TRUE(std::isnan(scale[1]));
  x[200] = std::numeric_limits<float>::infinity();
  int4cpu::quantize_row_q8(x.data(), 256, q.data(), scale, bias);
  EXPECT_TRUE(std::isnan(scale[1]));
  EXPECT_EQ(scale[0], 64.0f / 127.0f);
  // Every level's vectorised quantiser gives the reference's bytes, on random rows with exact ties,
  // a zero block and a NaN block.
  std::mt19937 rng(5);
  std::vector<float> row = randn(rng, 1024);
  for (size_t i = 0; i < 128; ++i) row[256 + i] = 0.0f;
  row[300 + 128] = std::numeric_limits<float>::quiet_NaN();
  for (size_t i = 640; i < 768; ++i) row[i] = static_cast<float>(static_cast<int>(i % 9) - 4) * 0.5f;  // ties
  std::vector<int8_t> want_q(1024);
  float want_s[8];
  int32_t want_b[8];
  int4cpu::quantize_row_q8(row.data(), 1024, want_q.data(), want_s, want_b);
  for (const char* const* level = kCpuIsaLevels; *level != nullptr; ++level) {
    const CpuKernels* kernels = cpu_kernels_for(*level);
    if (kernels == nullptr) continue;
    std::vector<int8_t> got_q(1024, 99);
    float got_s[8];
    int32_t got_b[8];
    kernels->quantize_q8(row.data(), 1024, got_q.data(), got_s, got_b);
    for (int g = 0; g < 8; ++g) {
      if (std::isnan(want_s[g])) {
        EXPECT_TRUE(std::isnan(got_s[g])) << *level << " block " << g;
        continue;
      }
      EXPECT_EQ(got_s[g], want_s[g]) << *level << " block " << g;
      EXPECT_EQ(got_b[g], want_b[g]) << *level << " block " << g;
      for (int i = 0; i < 128; ++i) ASSERT_EQ(got_q[128 * g + i], want_q[128 * g + i]) << *level << " element " << 128 * g + i;
    }
  }
}

// ---- the CUDA GEMV's lane math, emulated on the CPU ------------------------------------------------------

// The batch-1..8 int4 GEMV of the CUDA backend (int4_gemm.cu) as a CPU emulation built from the very
// lane functions the kernel calls (backend/cuda/int4_gemv_lane.h): lane l of a warp takes words
// 4l..4l+3 of each slab of a 64-column chunk, the four lanes that share columns add their partial sums
// in the kernel's shuffle order (xor 1, then xor 2), and the warps' slab ranges are summed in order.
// Checks the decode path's Marlin index math in CI, where no GPU runs the kernel itself.
template <int M>
void EmulateInt4Gemv(const float* x, int64_t K, int64_t N, const MarlinWeight& w, int64_t slabs_per_warp, float* y) {
  using namespace mcpm::int4_gemv;
  const int64_t slabs = K / kSlabRows;
  for (int64_t i = 0; i < M * N; ++i) y[i] = 0.0f;
  for (int64_t c = 0; c < N / kChunkColumns; ++c)
    for (int64_t r0 = 0; r0 < slabs; r0 += slabs_per_warp) {
      float acc[32][M][kLaneColumns] = {};
      for (int lane = 0; lane < 32; ++lane)
        for (int64_t r = r0; r < std::min(slabs, r0 + slabs_per_warp); ++r) {
          uint32_t words[4];
          for (int j = 0; j < 4; ++j)
            words[j] = static_cast<uint32_t>(w.qweight[static_cast<size_t>(r * 2 * N + 128 * c + 4 * lane + j)]);
          float scale[8];
          const int64_t g = r * kSlabRows / 128;
          for (int a = 0; a < 8; ++a)
            scale[a] = f16_to_f32(w.scales[static_cast<size_t>(g * N + 64 * c +
                                                                scale_position(lane_column(lane, a), K == 128))]);
          float xv[M][4];
          for (int m = 0; m < M; ++m)
            for (int slot = 0; slot < 4; ++slot) xv[m][slot] = x[m * K + r * kSlabRows + slot_row(lane, slot)];
          accumulate_slab<M>(words, xv, scale, acc[lane]);
        }
      for (int step : {1, 2}) {  // __shfl_xor_sync(…, step): every lane adds its partner's value
        float next[32][M][kLaneColumns];
        for (int lane = 0; lane < 32; ++lane)
          for (int m = 0; m < M; ++m)
            for (int a = 0; a < kLaneColumns; ++a) next[lane][m][a] = acc[lane][m][a] + acc[lane ^ step][m][a];
        std::memcpy(acc, next, sizeof acc);
      }
      for (int lane = 0; lane < 32; lane += 4)
        for (int m = 0; m < M; ++m)
          for (int a = 0; a < kLaneColumns; ++a) y[m * N + 64 * c + lane_column(lane, a)] += acc[lane][m][a];
    }
}

TEST(Int4GemvLane, WarpEmulationMatchesReference) {
  std::mt19937 rng(614);
  struct Shape {
    int64_t K, N;
  };
  for (const Shape sh : {Shape{128, 64}, Shape{128, 192}, Shape{384, 128}, Shape{1024, 256}})
    for (int64_t spw : {1, 3, 8}) {
      const std::vector<float> w = randn(rng, static_cast<size_t>(sh.N * sh.K), 0.05f);
      const Quantized qw = quantize_rtn(w.data(), sh.N, sh.K);
      const MarlinWeight mw = pack_marlin(qw);
      auto check = [&](int64_t M, const std::vector<float>& x, const std::vector<float>& got) {
        ASSERT_TRUE(MatchesInt4Reference(x, M, qw, mw, got))
            << "K=" << sh.K << " N=" << sh.N << " M=" << M << " slabs/warp=" << spw;
      };
      {
        const std::vector<float> x = randn(rng, static_cast<size_t>(sh.K));
        std::vector<float> got(static_cast<size_t>(sh.N));
        EmulateInt4Gemv<1>(x.data(), sh.K, sh.N, mw, spw, got.data());
        check(1, x, got);
      }
      {
        const std::vector<float> x = randn(rng, static_cast<size_t>(3 * sh.K));
        std::vector<float> got(static_cast<size_t>(3 * sh.N));
        EmulateInt4Gemv<3>(x.data(), sh.K, sh.N, mw, spw, got.data());
        check(3, x, got);
      }
    }
}

// ---- the CUDA tensor-core kernel's fragment math, emulated on the CPU ------------------------------------

// One fp16 value of a 32-bit register: element e (0 = low half).
float HalfOf(uint32_t reg, int e) { return f16_to_f32(static_cast<uint16_t>(e == 0 ? reg & 0xffffu : reg >> 16)); }

// The tensor-core int4 GEMM of the CUDA backend (int4_mma.cu) emulated warp by warp on the CPU: every
// lane builds its A registers (fp16 inputs) and B registers (LOP3 magic, fp16 subtract of 1032, fp16
// multiply by the column's scale) with the kernel's own functions (int4_mma_fragment.h,
// int4_gemv_lane.h), and mma.sync.m16n8k16 is emulated from the PTX ISA's fragment tables, spelled
// out here independently of the header: A reg i = A[g + 8(i odd)][2t + 8(i >= 2) + e], B reg i =
// B[2t + 8i + e][g], C[i] = C[g + 8(i >= 2)][2t + (i & 1)] (g = lane / 4, t = lane % 4).
void EmulateInt4Mma(const std::vector<float>& x, int64_t M, int64_t K, int64_t N, const MarlinWeight& w,
                    std::vector<float>& y) {
  using namespace mcpm::int4_mma;
  y.assign(static_cast<size_t>(M * N), 0.0f);
  const float bias = f16_to_f32(kHalfBias);
  for (int64_t c = 0; c < N / 64; ++c)
    for (int64_t m0 = 0; m0 < M; m0 += 16) {
      double acc[32][kNTiles][4] = {};
      for (int64_t r = 0; r < K / 16; ++r) {
        const int64_t g = r * 16 / 128;
        uint32_t af[32][4], bf[32][kNTiles][2];
        for (int lane = 0; lane < 32; ++lane) {
          for (int i = 0; i < 4; ++i) {
            uint32_t reg = 0;
            for (int e = 0; e < 2; ++e) {
              const int64_t t = m0 + a_row(lane, i), k = 16 * r + a_col(lane, i, e);
              const float v = t < M ? x[static_cast<size_t>(t * K + k)] : 0.0f;
              reg |= static_cast<uint32_t>(f32_to_f16(v)) << (16 * e);
            }
            af[lane][i] = reg;
          }
          uint32_t words[4];
          for (int j = 0; j < 4; ++j)
            words[j] = static_cast<uint32_t>(w.qweight[static_cast<size_t>(r * 2 * N + 128 * c + 4 * lane + j)]);
          for (int a = 0; a < kNTiles; ++a) {
            const float s = f16_to_f32(w.scales[static_cast<size_t>(
                g * N + 64 * c + int4_gemv::scale_position(int4_gemv::lane_column(lane, a), K == 128))]);
            for (int reg = 0; reg < 2; ++reg) {
              const uint32_t bits = magic_nibble_pair(words[b_word(a)], b_shift(a, reg));
              uint32_t out = 0;
              for (int e = 0; e < 2; ++e) {
                const float q = HalfOf(bits, e) - bias;  // __hsub2: exact, q - 8 in [-8, 7]
                out |= static_cast<uint32_t>(f32_to_f16(q * s)) << (16 * e);  // __hmul2: one rounding
              }
              bf[lane][a][reg] = out;
            }
          }
        }
        // mma.sync.m16n8k16 per n-tile, from the PTX tables.
        for (int a = 0; a < kNTiles; ++a) {
          float A[16][16], B[16][8];
          for (int lane = 0; lane < 32; ++lane) {
            const int gid = lane / 4, tid = lane % 4;
            for (int i = 0; i < 4; ++i)
              for (int e = 0; e < 2; ++e) A[gid + (i % 2 == 1 ? 8 : 0)][2 * tid + (i >= 2 ? 8 : 0) + e] = HalfOf(af[lane][i], e);
            for (int i = 0; i < 2; ++i)
              for (int e = 0; e < 2; ++e) B[2 * tid + 8 * i + e][gid] = HalfOf(bf[lane][a][i], e);
          }
          for (int lane = 0; lane < 32; ++lane) {
            const int gid = lane / 4, tid = lane % 4;
            for (int i = 0; i < 4; ++i) {
              const int row = gid + (i >= 2 ? 8 : 0), col = 2 * tid + (i & 1);
              double d = 0.0;
              for (int k = 0; k < 16; ++k) d += static_cast<double>(A[row][k]) * B[k][col];
              acc[lane][a][i] += d;
            }
          }
        }
      }
      for (int lane = 0; lane < 32; ++lane)
        for (int a = 0; a < kNTiles; ++a)
          for (int i = 0; i < 4; ++i) {
            const int64_t t = m0 + c_row(lane, i);
            if (t < M) y[static_cast<size_t>(t * N + 64 * c + 8 * a + c_col(lane, i))] = static_cast<float>(acc[lane][a][i]);
          }
    }
}

TEST(Int4MmaFragments, HeaderLayoutsAreThePtxTables) {
  using namespace mcpm::int4_mma;
  // Lane 0 and lane 13 (g 3, t 1) from the PTX ISA's m16n8k16 figures.
  EXPECT_EQ(a_row(0, 0), 0);
  EXPECT_EQ(a_row(0, 1), 8);
  EXPECT_EQ(a_row(0, 2), 0);
  EXPECT_EQ(a_row(0, 3), 8);
  EXPECT_EQ(a_col(0, 0, 1), 1);
  EXPECT_EQ(a_col(0, 2, 0), 8);
  EXPECT_EQ(a_col(0, 3, 1), 9);
  EXPECT_EQ(a_row(13, 0), 3);
  EXPECT_EQ(a_row(13, 3), 11);
  EXPECT_EQ(a_col(13, 0, 0), 2);
  EXPECT_EQ(a_col(13, 2, 1), 11);
  EXPECT_EQ(c_row(13, 0), 3);
  EXPECT_EQ(c_row(13, 2), 11);
  EXPECT_EQ(c_col(13, 0), 2);
  EXPECT_EQ(c_col(13, 3), 3);
  // The magic: 0x6400 | q is 1024 + q in fp16, and 1032 is the bias.
  for (uint32_t q = 0; q < 16; ++q) {
    // Nibble p sits at bits 4p..4p+3: nibbles 0 and 4 (shift 0), 1 and 5 (shift 4), 3 and 7 (shift 12).
    const uint32_t word = (q << 4) | ((15 - q) << 20) | (q << 12) | (0xau << 28) | 0x50005u;
    EXPECT_EQ(HalfOf(magic_nibble_pair(word, 0), 0), 1029.0f);
    EXPECT_EQ(HalfOf(magic_nibble_pair(word, 0), 1), 1029.0f);
    EXPECT_EQ(HalfOf(magic_nibble_pair(word, 4), 0), 1024.0f + q);
    EXPECT_EQ(HalfOf(magic_nibble_pair(word, 4), 1), 1024.0f + (15 - q));
    EXPECT_EQ(HalfOf(magic_nibble_pair(word, 12), 0), 1024.0f + q);
    EXPECT_EQ(HalfOf(magic_nibble_pair(word, 12), 1), 1034.0f);
  }
  EXPECT_EQ(f16_to_f32(kHalfBias), 1032.0f);
}

// Against the exact reference: fp16 inputs and fp16 weights cost at most 2^-11 each per product, so
// |y - y_ref| <= 1.1e-3 * sum_k |x w| (+ the emulation's double accumulation, negligible). An index
// error in the fragment math is of the order of |y| itself, far above that bound.
TEST(Int4MmaFragments, WarpEmulationMatchesReference) {
  std::mt19937 rng(615);
  struct Shape {
    int64_t K, N, M;
  };
  for (const Shape sh : {Shape{128, 64, 16}, Shape{128, 192, 9}, Shape{384, 128, 33}, Shape{1024, 64, 20}}) {
    const std::vector<float> w = randn(rng, static_cast<size_t>(sh.N * sh.K), 0.05f);
    const Quantized qw = quantize_rtn(w.data(), sh.N, sh.K);
    const MarlinWeight mw = pack_marlin(qw);
    const std::vector<float> x = randn(rng, static_cast<size_t>(sh.M * sh.K));
    std::vector<float> got, want(static_cast<size_t>(sh.M * sh.N));
    EmulateInt4Mma(x, sh.M, sh.K, sh.N, mw, got);
    gemm_dequant(x.data(), sh.M, mw, want.data());
    const std::vector<float> deq = dequantize(qw);  // [K][N]
    double worst = 0.0;
    for (int64_t m = 0; m < sh.M; ++m)
      for (int64_t n = 0; n < sh.N; ++n) {
        double mag = 0.0;
        for (int64_t k = 0; k < sh.K; ++k)
          mag += std::fabs(static_cast<double>(x[static_cast<size_t>(m * sh.K + k)]) * deq[static_cast<size_t>(k * sh.N + n)]);
        const size_t i = static_cast<size_t>(m * sh.N + n);
        const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
        worst = std::max(worst, d / mag);
        ASSERT_LE(d, 1.1e-3 * mag + 1e-6) << "K=" << sh.K << " N=" << sh.N << " M=" << sh.M << " m=" << m << " n=" << n;
      }
    EXPECT_GT(worst, 0.0) << "fp16 rounding should show somewhere";
  }
}

// ---- validation --------------------------------------------------------------------------------------

TEST(Int4Validation, RejectsBadShapesAndConfigs) {
  std::mt19937 rng(501);
  // Marlin shapes.
  expect_throw_with([] { validate_marlin_shape(64, 64); }, "multiple of 128");
  expect_throw_with([] { validate_marlin_shape(192, 64); }, "multiple of 128");
  expect_throw_with([] { validate_marlin_shape(0, 64); }, "multiple of 128");
  expect_throw_with([] { validate_marlin_shape(128, 32); }, "multiple of 64");
  expect_throw_with([] { validate_marlin_shape(128, 100); }, "multiple of 64");
  EXPECT_NO_THROW(validate_marlin_shape(256, 192));
  {
    const std::vector<uint8_t> q = random_codes(rng, 128, 96);
    expect_throw_with([&] { pack_marlin_qweight(q.data(), 128, 96); }, "multiple of 64");
  }
  // Quantisation along K needs whole groups.
  {
    const std::vector<float> w = randn(rng, 4 * 200);
    expect_throw_with([&] { quantize_rtn(w.data(), 4, 200); }, "group size 128");
  }
  // GPTQ configs CPM.cu's converter rejects.
  GptqConfig c;
  EXPECT_NO_THROW(validate_gptq_config(c));
  c.bits = 8;
  expect_throw_with([&] { validate_gptq_config(c); }, "4-bit");
  c = GptqConfig{};
  c.group_size = 64;
  expect_throw_with([&] { validate_gptq_config(c); }, "group_size 128");
  c.group_size = -1;
  expect_throw_with([&] { validate_gptq_config(c); }, "group_size 128");
  c = GptqConfig{};
  c.sym = false;
  expect_throw_with([&] { validate_gptq_config(c); }, "symmetric");
  c = GptqConfig{};
  c.desc_act = true;
  expect_throw_with([&] { validate_gptq_config(c); }, "act-order");
  // Tensors.
  const std::vector<float> w = randn(rng, static_cast<size_t>(64 * 256), 0.05f);
  const GptqWeight good = to_gptq(quantize_rtn(w.data(), 64, 256));
  EXPECT_NO_THROW(validate_gptq(good));
  {
    GptqWeight g = good;  // act-order: a permuted g_idx
    std::swap(g.g_idx[5], g.g_idx[200]);
    expect_throw_with([&] { gptq_to_marlin(g); }, "act-order");
  }
  {
    GptqWeight g = good;
    g.g_idx.pop_back();
    expect_throw_with([&] { gptq_to_marlin(g); }, "g_idx");
  }
  {
    GptqWeight g = good;  // an asymmetric zero point
    g.qzeros[1] = static_cast<int32_t>(0x77777787);
    expect_throw_with([&] { gptq_to_marlin(g); }, "qzeros");
  }
  {
    GptqWeight g = good;
    g.qweight.resize(g.qweight.size() - 1);
    expect_throw_with([&] { gptq_to_marlin(g); }, "qweight");
  }
  {
    GptqWeight g = good;
    g.scales.push_back(0);
    expect_throw_with([&] { gptq_to_marlin(g); }, "scales");
  }
  {
    GptqConfig cfg;
    cfg.group_size = 32;
    expect_throw_with([&] { gptq_to_marlin(good, cfg); }, "group_size 128");
  }
  {
    // N = 24 is a valid GPTQ matrix but not a Marlin one.
    const std::vector<float> w24 = randn(rng, static_cast<size_t>(24 * 128), 0.05f);
    const GptqWeight g24 = to_gptq(quantize_rtn(w24.data(), 24, 128));
    EXPECT_NO_THROW(validate_gptq(g24));
    expect_throw_with([&] { gptq_to_marlin(g24); }, "multiple of 64");
  }
  {
    MarlinWeight m = pack_marlin(from_gptq(good));
    const std::vector<float> x = randn(rng, 256);
    std::vector<float> y(64);
    EXPECT_NO_THROW(gemm_dequant(x.data(), 1, m, y.data()));
    m.qweight.pop_back();
    expect_throw_with([&] { gemm_dequant(x.data(), 1, m, y.data()); }, "Marlin qweight");
  }
}

}  // namespace
}  // namespace int4
}  // namespace mcpm
