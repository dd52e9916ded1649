// InfLLM v2 sparse attention (engine/infllm.h) against the invariants of algorithms.md §1.9, on
// fresh random inputs (normal keys, values and queries; never zeros).
//
// Most tests use a reduced configuration with the same geometry as the default one (kernel 8 /
// stride 4, block 16 = 4 strides, so blocks pool kernels [4b-1, 4b+3]; level 2 is 32/16; a 2-block
// local window and topk 6) so that a few hundred tokens already give many non-forced blocks.
//
// Tolerances: values compared with a naive double-precision computation use |got - exact| <= 2e-5
// (fp32 softmax over <= 2k keys of O(1) logits and O(1) values errs by ~1e-6). Quantities that
// the algorithm computes along the same code path (incremental vs batch compression, prefill vs
// decode, the dense fallback) are compared bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

#include "backend/cuda/infllm_select.h"
#include "engine/infllm.h"

namespace mcpm {
namespace infllm {
namespace {

SparseConfig small_config() {
  SparseConfig c;
  c.kernel_size = 8;
  c.kernel_stride = 4;
  c.block_size = 16;
  c.window_size = 32;  // 2 local blocks
  c.topk = 6;          // topk_total 8
  c.init_blocks = 1;
  c.dense_len = -1;  // always sparse
  return c;
}

std::vector<float> randn(std::mt19937& rng, size_t n, float sd = 1.0f) {
  std::normal_distribution<float> dist(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Queries for every position and the keys/values of every KV head.
struct Problem {
  int n_heads, n_kv;
  int64_t d, L;
  std::vector<float> q;               // [L, n_heads, d]
  std::vector<std::vector<float>> k;  // n_kv x [L, d]
  std::vector<std::vector<float>> v;
  Problem(std::mt19937& rng, int n_heads_, int n_kv_, int64_t d_, int64_t L_)
      : n_heads(n_heads_), n_kv(n_kv_), d(d_), L(L_) {
    q = randn(rng, static_cast<size_t>(L * n_heads * d));
    for (int h = 0; h < n_kv; ++h) {
      k.push_back(randn(rng, static_cast<size_t>(L * d)));
      v.push_back(randn(rng, static_cast<size_t>(L * d)));
    }
  }
  std::vector<const float*> kp() const {
    std::vector<const float*> p;
    for (auto& x : k) p.push_back(x.data());
    return p;
  }
  std::vector<const float*> vp() const {
    std::vector<const float*> p;
    for (auto& x : v) p.push_back(x.data());
    return p;
  }
};

// Runs the first `upto` tokens through sparse_attention in chunks of the given sizes (the last
// size repeats). Returns outputs [upto, n_heads, d]; sel[h][t] is the block set of KV head h at t.
struct RunResult {
  std::vector<float> out;
  std::vector<std::vector<std::vector<int32_t>>> sel;
};
RunResult run_chunked(const SparseConfig& cfg, const Problem& p, int64_t upto, std::vector<int64_t> chunks) {
  RunResult r;
  r.out.assign(static_cast<size_t>(upto * p.n_heads * p.d), 0.0f);
  r.sel.assign(p.n_kv, std::vector<std::vector<int32_t>>(static_cast<size_t>(upto)));
  std::vector<CompressedKeys> ck;
  auto kp = p.kp(), vp = p.vp();
  int64_t s = 0;
  size_t ci = 0;
  while (s < upto) {
    const int64_t T = std::min(chunks[std::min(ci, chunks.size() - 1)], upto - s);
    ++ci;
    std::vector<std::vector<int32_t>> sel;
    sparse_attention(cfg, p.q.data() + s * p.n_heads * p.d, T, p.n_heads, kp.data(), vp.data(), s + T, p.n_kv, p.d,
                     ck, r.out.data() + s * p.n_heads * p.d, &sel);
    if (!sel.empty())
      for (int h = 0; h < p.n_kv; ++h)
        for (int64_t i = 0; i < T; ++i) r.sel[h][s + i] = sel[h * T + i];
    s += T;
  }
  return r;
}

// Naive double-precision attention of one query over the keys j <= t with keep(j).
template <class Keep>
std::vector<double> naive_attention(const float* q, const float* K, const float* V, int64_t d, int64_t t, Keep keep) {
  std::vector<double> logits, out(static_cast<size_t>(d), 0.0);
  std::vector<int64_t> idx;
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j <= t; ++j) {
    if (!keep(j)) continue;
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += double(q[i]) * K[j * d + i];
    s /= std::sqrt(double(d));
    logits.push_back(s);
    idx.push_back(j);
    m = std::max(m, s);
  }
  double sum = 0;
  for (size_t a = 0; a < idx.size(); ++a) {
    const double w = std::exp(logits[a] - m);
    sum += w;
    for (int64_t i = 0; i < d; ++i) out[i] += w * V[idx[a] * d + i];
  }
  for (auto& x : out) x /= sum;
  return out;
}

TEST(InfLLM, KernelCountsFollowTheFormula) {
  const SparseConfig cfg;
  EXPECT_EQ(num_kernels(0, 32, 16), 0);
  EXPECT_EQ(num_kernels(31, 32, 16), 0);
  EXPECT_EQ(num_kernels(32, 32, 16), 1);
  EXPECT_EQ(num_kernels(47, 32, 16), 1);
  EXPECT_EQ(num_kernels(48, 32, 16), 2);
  EXPECT_EQ(num_kernels(127, cfg.kernel_size2(), cfg.kernel_stride2()), 0);
  EXPECT_EQ(num_kernels(128, cfg.kernel_size2(), cfg.kernel_stride2()), 1);
  EXPECT_EQ(num_kernels(191, cfg.kernel_size2(), cfg.kernel_stride2()), 1);
  EXPECT_EQ(num_kernels(192, cfg.kernel_size2(), cfg.kernel_stride2()), 2);
  for (int64_t L = 0; L < 700; ++L)
    for (auto [size, stride] : {std::pair<int64_t, int64_t>{32, 16}, {128, 64}, {8, 4}}) {
      int64_t brute = 0;
      while (brute * stride + size <= L) ++brute;  // kernels whose last token exists
      ASSERT_EQ(num_kernels(L, size, stride), brute) << L;
      // Visible to t = L-1 within a longer sequence: exactly the complete ones of the prefix.
      ASSERT_EQ(num_visible_kernels(L - 1, 1000, size, stride), brute) << L;
    }
}

TEST(InfLLM, CompressionIsMeanPoolingAndIncrementalEqualsBatch) {
  std::mt19937 rng(11);
  for (const SparseConfig cfg : {SparseConfig{}, small_config()}) {
    const int64_t L = 777, d = 24;
    const std::vector<float> K = randn(rng, static_cast<size_t>(L * d));
    const CompressedKeys all = compress_keys(cfg, K.data(), L, d);
    ASSERT_EQ(all.n1, num_kernels(L, cfg.kernel_size, cfg.kernel_stride));
    ASSERT_EQ(all.n2, num_kernels(L, cfg.kernel_size2(), cfg.kernel_stride2()));
    // Against a naive double mean: |err| <= 1e-5 (means of <= 128 O(1) values).
    auto check = [&](const std::vector<float>& C, int64_t n, int64_t size, int64_t stride) {
      for (int64_t c = 0; c < n; ++c)
        for (int64_t i = 0; i < d; ++i) {
          double s = 0;
          for (int64_t j = 0; j < size; ++j) s += K[(c * stride + j) * d + i];
          ASSERT_NEAR(C[c * d + i], s / size, 1e-5) << c << " " << i;
        }
    };
    check(all.c1, all.n1, cfg.kernel_size, cfg.kernel_stride);
    check(all.c2, all.n2, cfg.kernel_size2(), cfg.kernel_stride2());

    // Incremental from several starting lengths, token by token and in random steps.
    for (int64_t start : {0, 31, 127, 333}) {
      CompressedKeys ck = compress_keys(cfg, K.data(), start, d);
      std::uniform_int_distribution<int64_t> step(0, 70);
      for (int64_t len = start; len <= L;) {
        update_compressed_keys(cfg, K.data(), len, ck);
        const CompressedKeys ref = compress_keys(cfg, K.data(), len, d);
        ASSERT_EQ(ck.n1, ref.n1);
        ASSERT_EQ(ck.n2, ref.n2);
        ASSERT_EQ(ck.c1, ref.c1) << "len " << len;  // bit-identical
        ASSERT_EQ(ck.c2, ref.c2) << "len " << len;
        len += (start == 0) ? 1 : step(rng);
      }
    }
    // Rolling back and growing again gives the batch result too.
    CompressedKeys ck = all;
    truncate_compressed_keys(cfg, 301, ck);
    EXPECT_EQ(ck.c1, compress_keys(cfg, K.data(), 301, d).c1);
    update_compressed_keys(cfg, K.data(), L, ck);
    EXPECT_EQ(ck.c1, all.c1);
    EXPECT_EQ(ck.c2, all.c2);
  }
}

TEST(InfLLM, Stage1IsCausalOverCompressedKeys) {
  std::mt19937 rng(12);
  const int64_t L = 400, d = 16;
  const int G = 4;
  for (bool compress_lse : {true, false}) {
    SparseConfig cfg = small_config();
    cfg.use_compress_lse = compress_lse;
    std::vector<float> K = randn(rng, static_cast<size_t>(L * d));
    const CompressedKeys ck = compress_keys(cfg, K.data(), L, d);
    for (int64_t t : {0, 6, 7, 30, 31, 32, 47, 63, 64, 100, 211, 398, 399}) {
      const std::vector<float> qg = randn(rng, static_cast<size_t>(G * d));
      std::vector<float> S(ck.n1);
      stage1_kernel_scores(cfg, qg.data(), G, ck, t, S.data());
      const bool has_norm = compress_lse ? (t >= cfg.kernel_size2() - 1) : (t >= cfg.kernel_size - 1);
      double total = 0;
      for (int64_t c = 0; c < ck.n1; ++c) {
        const bool visible = c * cfg.kernel_stride + cfg.kernel_size - 1 <= t;
        ASSERT_TRUE(std::isfinite(S[c]));
        if (!visible || !has_norm) {
          ASSERT_EQ(S[c], 0.0f) << "t " << t << " c " << c;
        } else {
          ASSERT_GT(S[c], 0.0f) << "t " << t << " c " << c;
        }
        total += S[c];
      }
      // Against the formula in double: lse_g over the visible level-2 (or level-1) keys, then
      // S[c] = sum_g exp(scale*q_g.C1[c] - lse_g); relative tolerance 1e-5.
      if (has_norm) {
        const double scale = 1.0 / std::sqrt(double(d));
        const int64_t v1 = num_kernels(t + 1, cfg.kernel_size, cfg.kernel_stride);
        const int64_t v2 = num_kernels(t + 1, cfg.kernel_size2(), cfg.kernel_stride2());
        const std::vector<float>& NK = compress_lse ? ck.c2 : ck.c1;
        const int64_t nn = compress_lse ? v2 : v1;
        std::vector<double> ref(ck.n1, 0.0);
        for (int g = 0; g < G; ++g) {
          auto logit = [&](const float* key) {
            double s = 0;
            for (int64_t i = 0; i < d; ++i) s += double(qg[g * d + i]) * key[i];
            return s * scale;
          };
          double z = 0;
          for (int64_t c = 0; c < nn; ++c) z += std::exp(logit(NK.data() + c * d));
          for (int64_t c = 0; c < v1; ++c) ref[c] += std::exp(logit(ck.c1.data() + c * d)) / z;
        }
        for (int64_t c = 0; c < ck.n1; ++c) ASSERT_NEAR(S[c], ref[c], 1e-5 * (1.0 + ref[c])) << "t " << t << " c " << c;
      }
      // Exact softmax over the visible level-1 keys: each of the G heads contributes 1.
      if (!compress_lse && has_norm) {
        EXPECT_NEAR(total, G, 1e-4) << t;
      }

      // Changing every key after t changes no score of t.
      std::vector<float> K2 = K;
      for (int64_t j = (t + 1) * d; j < L * d; ++j) K2[j] += 3.0f;
      const CompressedKeys ck2 = compress_keys(cfg, K2.data(), L, d);
      std::vector<float> S2(ck2.n1);
      stage1_kernel_scores(cfg, qg.data(), G, ck2, t, S2.data());
      ASSERT_EQ(S, S2) << t;
    }
  }
}

TEST(InfLLM, PoolingReadsExactlyKernels4bMinus1To4bPlus3) {
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> u(0.01f, 1.0f);
  for (const SparseConfig cfg : {SparseConfig{}, small_config()}) {
    ASSERT_EQ(cfg.pool_ratio(), 4);
    const int64_t n1 = 101, n_blocks = 27;  // the last block reads no kernel at all
    for (int64_t c = 0; c < n1; ++c) {
      std::vector<float> S(n1);
      for (auto& x : S) x = u(rng);
      S[c] = 5.0f;
      std::vector<float> B(n_blocks);
      pool_to_blocks(cfg, S.data(), n1, n_blocks, B.data());
      for (int64_t b = 0; b < n_blocks; ++b) {
        const bool spiked = b == c / 4 || b == (c + 1) / 4;
        ASSERT_EQ(B[b] == 5.0f, spiked) << "c " << c << " b " << b;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t cc = 4 * b - 1; cc <= 4 * b + 3; ++cc)
          if (cc >= 0 && cc < n1) m = std::max(m, S[cc]);
        ASSERT_EQ(B[b], m) << "c " << c << " b " << b;
      }
    }
  }
}

TEST(InfLLM, TopKBreaksTiesByLowerIndexAndDropsFutureBlocks) {
  SparseConfig cfg = small_config();  // topk_total 8
  // 20 blocks, query in block 9: forced {0, 7, 8, 9}; candidates 1..6 with ties, futures 10..19.
  std::vector<float> B(20, 0.5f);
  force_blocks(cfg, 9 * 16 + 3, 20, B.data());
  B[3] = 0.9f;
  B[5] = 0.9f;
  B[2] = 0.7f;
  const std::vector<int32_t> sel = select_blocks(cfg, B.data(), 20, 9 * 16 + 3);
  // The 4 forced, the two 0.9s, the 0.7, then of the 0.5 ties the lowest index (1).
  EXPECT_EQ(sel, (std::vector<int32_t>{0, 1, 2, 3, 5, 7, 8, 9}));
  // Fewer real candidates than k: the future picks are dropped, every past block kept.
  std::vector<float> B2(12, 0.5f);
  force_blocks(cfg, 3 * 16, 12, B2.data());
  EXPECT_EQ(select_blocks(cfg, B2.data(), 12, 3 * 16), (std::vector<int32_t>{0, 1, 2, 3}));
}

// Invariant 4 on full runs, plus an independent re-derivation of the top-k from the block scores.
TEST(InfLLM, ForcedBlocksAlwaysSelectedAndNoFutureBlock) {
  std::mt19937 rng(14);
  const SparseConfig cfg = small_config();
  const Problem p(rng, 4, 2, 16, 600);
  const RunResult r = run_chunked(cfg, p, p.L, {p.L});
  const int G = p.n_heads / p.n_kv;
  const int64_t n_blocks = (p.L + 15) / 16;
  for (int h = 0; h < p.n_kv; ++h) {
    const CompressedKeys ck = compress_keys(cfg, p.k[h].data(), p.L, p.d);
    for (int64_t t = 0; t < p.L; ++t) {
      const auto& sel = r.sel[h][t];
      const int64_t qb = t / cfg.block_size;
      ASSERT_TRUE(std::is_sorted(sel.begin(), sel.end()));
      ASSERT_EQ(std::set<int32_t>(sel.begin(), sel.end()).size(), sel.size());
      const std::set<int32_t> s(sel.begin(), sel.end());
      ASSERT_TRUE(s.count(0));
      for (int64_t b = std::max<int64_t>(0, qb - cfg.local_blocks()); b <= qb; ++b) ASSERT_TRUE(s.count(b)) << t;
      ASSERT_LE(sel.back(), qb);
      ASSERT_EQ(static_cast<int64_t>(sel.size()), std::min<int64_t>(cfg.topk_total(), qb + 1)) << t;

      // Independent top-k: forced blocks, then the best others by (score desc, index asc).
      std::vector<float> S(ck.n1), B(n_blocks);
      stage1_kernel_scores(cfg, p.q.data() + (t * p.n_heads + h * G) * p.d, G, ck, t, S.data());
      pool_to_blocks(cfg, S.data(), ck.n1, n_blocks, B.data());
      std::vector<int32_t> others;
      std::set<int32_t> expect;
      for (int32_t b = 0; b <= qb; ++b) {
        if (b < cfg.init_blocks || b >= qb - cfg.local_blocks())
          expect.insert(b);
        else
          others.push_back(b);
      }
      std::stable_sort(others.begin(), others.end(), [&](int32_t a, int32_t b) { return B[a] > B[b]; });
      for (int32_t b : others)
        if (static_cast<int64_t>(expect.size()) < std::min<int64_t>(cfg.topk_total(), qb + 1)) expect.insert(b);
      ASSERT_EQ(s, expect) << "h " << h << " t " << t;
    }
  }
}

// Invariant 5: enough top-k for every causal block gives dense causal attention.
TEST(InfLLM, ReducesToDenseWhenTopKCoversEveryBlock) {
  std::mt19937 rng(15);
  {  // reduced config, huge topk, full prefill
    SparseConfig cfg = small_config();
    cfg.topk = 1000;
    const Problem p(rng, 4, 2, 16, 300);
    const RunResult r = run_chunked(cfg, p, p.L, {p.L});
    for (int64_t t = 0; t < p.L; ++t) {
      for (int h = 0; h < p.n_kv; ++h) ASSERT_EQ(static_cast<int64_t>(r.sel[h][t].size()), t / 16 + 1);
      for (int g = 0; g < p.n_heads; ++g) {
        const auto ref = naive_attention(p.q.data() + (t * p.n_heads + g) * p.d, p.k[g / 2].data(),
                                         p.v[g / 2].data(), p.d, t, [](int64_t) { return true; });
        for (int64_t i = 0; i < p.d; ++i) ASSERT_NEAR(r.out[(t * p.n_heads + g) * p.d + i], ref[i], 2e-5);
      }
    }
  }
  {  // default config (topk_total 96 >= qb + 1 for t < 6144), a 200-query chunk with 1300 tokens of history
    SparseConfig cfg;
    cfg.dense_len = -1;
    const Problem p(rng, 4, 2, 16, 1500);
    std::vector<CompressedKeys> ck;
    std::vector<std::vector<int32_t>> sel;
    const int64_t T = 200, hist = 1300;
    std::vector<float> out(static_cast<size_t>(T * p.n_heads * p.d));
    auto kp = p.kp(), vp = p.vp();
    sparse_attention(cfg, p.q.data() + hist * p.n_heads * p.d, T, p.n_heads, kp.data(), vp.data(), p.L, p.n_kv, p.d,
                     ck, out.data(), &sel);
    ASSERT_EQ(sel.size(), static_cast<size_t>(p.n_kv * T));
    for (int64_t i = 0; i < T; i += 7) {
      const int64_t t = hist + i;
      for (int h = 0; h < p.n_kv; ++h) ASSERT_EQ(static_cast<int64_t>(sel[h * T + i].size()), t / 64 + 1);
      for (int g = 0; g < p.n_heads; ++g) {
        const auto ref = naive_attention(p.q.data() + (t * p.n_heads + g) * p.d, p.k[g / 2].data(),
                                         p.v[g / 2].data(), p.d, t, [](int64_t) { return true; });
        for (int64_t j = 0; j < p.d; ++j) ASSERT_NEAR(out[(i * p.n_heads + g) * p.d + j], ref[j], 2e-5);
      }
    }
  }
}

// Invariant 7: chunked prefill with history, full prefill and token-by-token decode agree.
TEST(InfLLM, PrefillAndDecodeAgree) {
  std::mt19937 rng(16);
  const SparseConfig cfg = small_config();
  const Problem p(rng, 4, 2, 16, 413);  // 413 % 16 = 13
  const RunResult full = run_chunked(cfg, p, p.L, {p.L});
  const RunResult last = run_chunked(cfg, p, p.L, {p.L - 1, 1});
  const RunResult one = run_chunked(cfg, p, p.L, {1});
  const RunResult mixed = run_chunked(cfg, p, p.L, {100, 37, 5, 64});
  const int64_t row = p.n_heads * p.d;
  for (const RunResult* r : {&last, &one, &mixed}) {
    // Every token (the selection of a query does not depend on the length of its chunk).
    for (int64_t t = 0; t < p.L; ++t)
      for (int h = 0; h < p.n_kv; ++h) ASSERT_EQ(r->sel[h][t], full.sel[h][t]) << "t " << t;
    for (int64_t x = 0; x < p.L * row; ++x) ASSERT_EQ(r->out[x], full.out[x]) << x / row;
  }
  // Selections are genuinely sparse here (topk_total 8 of up to 26 blocks).
  EXPECT_EQ(full.sel[0][p.L - 1].size(), 8u);

  // With a dense prefix (dense_len 200): a one-token-at-a-time run is dense up to 199 tokens,
  // then compresses everything on its first sparse call; the last token agrees with full prefill.
  SparseConfig cfg2 = cfg;
  cfg2.dense_len = 200;
  const RunResult full2 = run_chunked(cfg2, p, p.L, {p.L});
  const RunResult one2 = run_chunked(cfg2, p, p.L, {1});
  for (int64_t t = 0; t < 199; ++t) EXPECT_TRUE(one2.sel[0][t].empty());
  for (int64_t t = 199; t < p.L; ++t) ASSERT_EQ(one2.sel[1][t], full2.sel[1][t]);
  for (int64_t x = (p.L - 1) * row; x < p.L * row; ++x) ASSERT_EQ(one2.out[x], full2.out[x]);
}

// Invariant 8: all query heads of a group use the group's single block set; permuting the heads of
// a group permutes the outputs and changes neither the scores (to fp rounding) nor the selection.
TEST(InfLLM, QueryHeadsOfAGroupShareOneSelection) {
  std::mt19937 rng(17);
  const SparseConfig cfg = small_config();
  Problem p(rng, 8, 2, 16, 350);  // G = 4
  const int G = 4;
  const RunResult r = run_chunked(cfg, p, p.L, {128});
  for (int64_t t = 0; t < p.L; t += 3)
    for (int hq = 0; hq < p.n_heads; ++hq) {
      const auto& sel = r.sel[hq / G][t];
      std::vector<float> o(p.d);
      block_sparse_attention(p.q.data() + (t * p.n_heads + hq) * p.d, p.k[hq / G].data(), p.v[hq / G].data(), p.d,
                             t, sel.data(), static_cast<int64_t>(sel.size()), cfg.block_size, o.data());
      for (int64_t i = 0; i < p.d; ++i) ASSERT_EQ(o[i], r.out[(t * p.n_heads + hq) * p.d + i]);
    }

  const int perm[8] = {2, 0, 3, 1, 7, 5, 4, 6};  // within each group of 4
  Problem pp = p;
  for (int64_t t = 0; t < p.L; ++t)
    for (int hq = 0; hq < p.n_heads; ++hq)
      std::copy_n(p.q.data() + (t * p.n_heads + perm[hq]) * p.d, p.d, pp.q.data() + (t * p.n_heads + hq) * p.d);
  const RunResult rp = run_chunked(cfg, pp, p.L, {128});
  const CompressedKeys ck = compress_keys(cfg, p.k[1].data(), p.L, p.d);
  for (int64_t t = 0; t < p.L; ++t) {
    for (int h = 0; h < p.n_kv; ++h) ASSERT_EQ(rp.sel[h][t], r.sel[h][t]) << t;
    for (int hq = 0; hq < p.n_heads; ++hq)
      for (int64_t i = 0; i < p.d; ++i)
        ASSERT_EQ(rp.out[(t * p.n_heads + hq) * p.d + i], r.out[(t * p.n_heads + perm[hq]) * p.d + i]);
    std::vector<float> S(ck.n1), Sp(ck.n1);
    stage1_kernel_scores(cfg, p.q.data() + (t * p.n_heads + G) * p.d, G, ck, t, S.data());
    stage1_kernel_scores(cfg, pp.q.data() + (t * p.n_heads + G) * p.d, G, ck, t, Sp.data());
    for (int64_t c = 0; c < ck.n1; ++c) ASSERT_NEAR(Sp[c], S[c], 1e-6f * (1.0f + S[c]));
  }
}

// Invariant 9: stage 2 with an explicit block set equals masked dense attention (double).
TEST(InfLLM, Stage2EqualsMaskedDenseAttention) {
  std::mt19937 rng(18);
  const int64_t L = 700, d = 32;
  const std::vector<float> K = randn(rng, L * d), V = randn(rng, L * d);
  std::uniform_int_distribution<int64_t> pos(0, L - 1);
  std::bernoulli_distribution coin(0.3);
  for (int block_size : {16, 64}) {
    for (int trial = 0; trial < 60; ++trial) {
      const int64_t t = pos(rng);
      const std::vector<float> q = randn(rng, d);
      // Random block set over the whole sequence (blocks past t included: the causal mask drops them),
      // always with the query's own block so that some key is visible.
      std::vector<int32_t> blocks;
      for (int32_t b = 0; b * block_size < L; ++b)
        if (coin(rng) || b == t / block_size) blocks.push_back(b);
      std::vector<float> out(d);
      block_sparse_attention(q.data(), K.data(), V.data(), d, t, blocks.data(), static_cast<int64_t>(blocks.size()),
                             block_size, out.data());
      const std::set<int32_t> s(blocks.begin(), blocks.end());
      const auto ref = naive_attention(q.data(), K.data(), V.data(), d, t,
                                       [&](int64_t j) { return s.count(static_cast<int32_t>(j / block_size)) > 0; });
      for (int64_t i = 0; i < d; ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << "t " << t;
    }
  }
  // Dense causal attention against the naive one too.
  for (int64_t t : {0, 1, 63, 64, 699}) {
    const std::vector<float> q = randn(rng, d);
    std::vector<float> out(d);
    dense_causal_attention(q.data(), K.data(), V.data(), d, t, out.data());
    const auto ref = naive_attention(q.data(), K.data(), V.data(), d, t, [](int64_t) { return true; });
    for (int64_t i = 0; i < d; ++i) ASSERT_NEAR(out[i], ref[i], 2e-5);
  }
}

// Invariant 6: below dense_len the path is plain dense attention, bit for bit, and touches no state.
TEST(InfLLM, BelowDenseLenIsExactlyDense) {
  std::mt19937 rng(19);
  SparseConfig cfg = small_config();
  cfg.dense_len = 500;
  const Problem p(rng, 4, 2, 16, 499);
  std::vector<CompressedKeys> ck;
  std::vector<std::vector<int32_t>> sel(3);
  const int64_t T = 120, hist = p.L - T;
  std::vector<float> out(static_cast<size_t>(T * p.n_heads * p.d));
  auto kp = p.kp(), vp = p.vp();
  sparse_attention(cfg, p.q.data() + hist * p.n_heads * p.d, T, p.n_heads, kp.data(), vp.data(), p.L, p.n_kv, p.d, ck,
                   out.data(), &sel);
  EXPECT_TRUE(ck.empty());
  EXPECT_TRUE(sel.empty());
  std::vector<float> o(p.d);
  for (int64_t i = 0; i < T; ++i)
    for (int g = 0; g < p.n_heads; ++g) {
      dense_causal_attention(p.q.data() + ((hist + i) * p.n_heads + g) * p.d, p.k[g / 2].data(), p.v[g / 2].data(),
                             p.d, hist + i, o.data());
      for (int64_t j = 0; j < p.d; ++j) ASSERT_EQ(out[(i * p.n_heads + g) * p.d + j], o[j]);
    }
}

TEST(InfLLM, ConfigValidation) {
  EXPECT_NO_THROW(validate(SparseConfig{}));
  EXPECT_NO_THROW(validate(small_config()));
  SparseConfig c;
  c.block_size = 40;  // not a multiple of kernel_stride 16
  EXPECT_THROW(validate(c), std::invalid_argument);
  c = SparseConfig{};
  c.window_size = 100;
  EXPECT_THROW(validate(c), std::invalid_argument);
  c = SparseConfig{};
  c.kernel_size = 8;  // < stride
  EXPECT_THROW(validate(c), std::invalid_argument);
  EXPECT_EQ(SparseConfig{}.topk_total(), 96);
  EXPECT_EQ(SparseConfig{}.local_blocks(), 32);
}


// ---- the CUDA kernels' selection, emulated -------------------------------------------------------
//
// The CUDA backend selects blocks with backend/cuda/infllm_select.h (block scores from S, an MSB-first
// radix select of the k-th largest block key, then every block with a key >= it up to t's own
// block). Run here sequentially, as one thread block does it, it must give exactly
// pool_to_blocks + force_blocks + select_blocks, including exact ties (adjacent blocks that pool the
// same kernel, planted equal scores, zeros of invisible kernels, forced +inf blocks).
std::vector<int32_t> EmulateCudaSelection(const SparseConfig& cfg, const float* S, int64_t n1, int64_t n_blocks,
                                          int64_t t) {
  namespace sel = infllm_select;
  auto key = [&](int64_t b) {
    const float score = sel::forced_block(b, t, cfg.block_size, cfg.init_blocks, cfg.local_blocks())
                            ? INFINITY
                            : sel::pooled_block_score(S, n1, cfg.pool_ratio(), b);
    return sel::block_key(score, b);
  };
  const int64_t k = std::min<int64_t>(cfg.topk_total(), n_blocks);
  std::vector<int32_t> out;
  if (k == 0) return out;
  uint64_t threshold = 0;
  uint32_t rank = static_cast<uint32_t>(k);
  for (int shift = sel::kFirstShift; shift >= 0; shift -= sel::kDigitBits) {
    uint32_t hist[sel::kBins] = {};
    const uint64_t fixed = sel::radix_fixed_mask(shift);
    for (int64_t b = 0; b < n_blocks; ++b) {
      const uint64_t kb = key(b);
      if ((kb & fixed) == (threshold & fixed)) ++hist[sel::radix_digit(kb, shift)];
    }
    const int d = sel::radix_choose_digit(hist, rank);
    EXPECT_GE(d, 0) << "shift " << shift;
    if (d < 0) return out;
    threshold |= static_cast<uint64_t>(d) << shift;
  }
  for (int64_t b = 0; b <= std::min(n_blocks - 1, t / cfg.block_size); ++b)
    if (key(b) >= threshold) out.push_back(static_cast<int32_t>(b));
  return out;
}

TEST(InfllmSelectEmulation, KernelScoresAndKeysMatchTheReference) {
  namespace sel = infllm_select;
  std::mt19937_64 rng(4242);
  std::uniform_real_distribution<float> u(0.0f, 3.0f);
  const SparseConfig cfg = small_config();
  for (int64_t L : {1, 7, 8, 11, 16, 100, 257}) {
    const int64_t n1 = num_kernels(L, cfg.kernel_size, cfg.kernel_stride);
    EXPECT_EQ(sel::kernel_count(L, cfg.kernel_size, cfg.kernel_stride), n1);
    const int64_t n_blocks = (L + cfg.block_size - 1) / cfg.block_size;
    std::vector<float> S(static_cast<size_t>(n1)), B(static_cast<size_t>(n_blocks));
    for (float& x : S) x = u(rng);
    pool_to_blocks(cfg, S.data(), n1, n_blocks, B.data());
    for (int64_t b = 0; b < n_blocks; ++b)
      EXPECT_EQ(sel::pooled_block_score(S.data(), n1, cfg.pool_ratio(), b), B[static_cast<size_t>(b)]) << b;
    const int64_t t = L - 1;
    std::vector<float> forced(static_cast<size_t>(n_blocks), 0.0f);
    force_blocks(cfg, t, n_blocks, forced.data());
    for (int64_t b = 0; b < n_blocks; ++b)
      EXPECT_EQ(sel::forced_block(b, t, cfg.block_size, cfg.init_blocks, cfg.local_blocks()),
                std::isinf(forced[static_cast<size_t>(b)]))
          << "L " << L << " b " << b;
  }
  // The key order is the float order, then the lower block first.
  const float values[] = {-INFINITY, -3.5f, -1e-30f, -0.0f, 0.0f, 1e-30f, 0.25f, 7.0f, 3e38f, INFINITY};
  for (size_t i = 0; i + 1 < sizeof values / sizeof values[0]; ++i) {
    EXPECT_LT(sel::float_order(values[i]), sel::float_order(values[i + 1])) << values[i] << " vs " << values[i + 1];
    EXPECT_LT(sel::block_key(values[i], 0), sel::block_key(values[i + 1], 1000));
  }
  EXPECT_GT(sel::block_key(2.0f, 3), sel::block_key(2.0f, 4));
}

TEST(InfllmSelectEmulation, RadixSelectEqualsTopkWithTiesAndForcedBlocks) {
  std::mt19937_64 rng(2026);
  std::uniform_real_distribution<float> u(0.01f, 5.0f);
  std::uniform_int_distribution<int> pick(0, 3);
  for (int variant = 0; variant < 4; ++variant) {
    SparseConfig cfg = small_config();
    if (variant == 1) cfg.topk = 0;                      // only the forced blocks
    if (variant == 2) cfg.topk = 40;                     // k >= n_blocks for short sequences
    if (variant == 3) cfg.init_blocks = 0, cfg.window_size = 0, cfg.topk = 3;  // nothing forced
    for (int64_t L : {1, 15, 16, 17, 64, 200, 555, 2048}) {
      const int64_t n1 = num_kernels(L, cfg.kernel_size, cfg.kernel_stride);
      const int64_t n_blocks = (L + cfg.block_size - 1) / cfg.block_size;
      std::vector<float> S(static_cast<size_t>(n1));
      // A third of the scores from four values (many exact ties), the rest distinct.
      const float few[] = {0.0f, 0.5f, 1.5f, 4.0f};
      for (float& x : S) x = pick(rng) == 0 ? few[pick(rng)] : u(rng);
      for (int64_t t : {L - 1, L / 2, int64_t{0}}) {
        // As for a query at t: kernels not visible to it score 0.
        std::vector<float> St = S;
        const int64_t vis = num_visible_kernels(t, n1, cfg.kernel_size, cfg.kernel_stride);
        for (int64_t c = vis; c < n1; ++c) St[static_cast<size_t>(c)] = 0.0f;
        std::vector<float> B(static_cast<size_t>(n_blocks));
        pool_to_blocks(cfg, St.data(), n1, n_blocks, B.data());
        force_blocks(cfg, t, n_blocks, B.data());
        const std::vector<int32_t> want = select_blocks(cfg, B.data(), n_blocks, t);
        EXPECT_EQ(EmulateCudaSelection(cfg, St.data(), n1, n_blocks, t), want)
            << "variant " << variant << " L " << L << " t " << t;
      }
    }
  }
}

// The same on real stage-1 scores of random queries and keys (the default geometry, 20k tokens).
TEST(InfllmSelectEmulation, RadixSelectEqualsReferenceOnStage1Scores) {
  SparseConfig cfg;  // 32/16, block 64, window 2048, topk 64
  cfg.dense_len = -1;
  const int64_t L = 20000, d = 32;
  const int G = 4;
  std::mt19937_64 rng(99);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> K(static_cast<size_t>(L * d)), q(static_cast<size_t>(G * d));
  for (float& x : K) x = n(rng);
  const CompressedKeys ck = compress_keys(cfg, K.data(), L, d);
  const int64_t n_blocks = (L + cfg.block_size - 1) / cfg.block_size;
  for (int64_t t : {L - 1, int64_t{12345}, int64_t{4096}}) {
    for (float& x : q) x = n(rng);
    std::vector<float> S(static_cast<size_t>(ck.n1));
    stage1_kernel_scores(cfg, q.data(), G, ck, t, S.data());
    EXPECT_EQ(EmulateCudaSelection(cfg, S.data(), ck.n1, n_blocks, t),
              select_for_query(cfg, q.data(), G, ck, t, n_blocks))
        << "t " << t;
  }
}

}  // namespace
}  // namespace infllm
}  // namespace mcpm
