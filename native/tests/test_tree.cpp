// White-box tests of the speculative-decoding building blocks (shared/reference/algorithms.md §3.7):
//   - select_tree() lays out well-formed trees (parents first, ancestor masks, depths, distinct
//     siblings, size) from EAGLE-2 style candidate sets with random scores;
//   - the tree_attention op gives, for every node, the causal attention over its root-to-node path
//     (the path's K/V laid out contiguously after the prefix), on random inputs;
//   - copy_rows compacts in place in ascending order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "engine/speculative.h"

namespace {

using namespace mcpm;

int popcount64(uint64_t x) {
  int n = 0;
  for (; x; x &= x - 1) ++n;
  return n;
}

// Candidates as EAGLE-2 drafts them: k children of the root, then for each further level k
// children of each of the k best nodes of the previous level; log-prob scores, so a child's score
// is its parent's plus a non-positive number. Sibling tokens are distinct.
std::vector<TreeCandidate> RandomCandidates(std::mt19937_64& rng, int32_t levels, int32_t k, int32_t vocab) {
  std::vector<TreeCandidate> cand;
  std::uniform_real_distribution<float> lp(-4.0f, 0.0f);
  auto children = [&](int32_t parent, int32_t depth, float base) {
    std::vector<int32_t> tokens(static_cast<size_t>(vocab));
    for (int32_t i = 0; i < vocab; ++i) tokens[static_cast<size_t>(i)] = i;
    std::shuffle(tokens.begin(), tokens.end(), rng);
    std::vector<float> s(static_cast<size_t>(k));
    for (float& x : s) x = base + lp(rng);
    std::sort(s.rbegin(), s.rend());
    for (int32_t m = 0; m < k; ++m) cand.push_back(TreeCandidate{tokens[static_cast<size_t>(m)], parent, depth, s[static_cast<size_t>(m)]});
  };
  children(-1, 1, 0.0f);
  std::vector<int32_t> frontier(static_cast<size_t>(k));
  for (int32_t j = 0; j < k; ++j) frontier[static_cast<size_t>(j)] = j;
  for (int32_t d = 1; d < levels; ++d) {
    const int32_t first = static_cast<int32_t>(cand.size());
    for (int32_t f : frontier) children(f, d + 1, cand[static_cast<size_t>(f)].score);
    std::vector<int32_t> next(static_cast<size_t>(k * k));
    for (int32_t i = 0; i < k * k; ++i) next[static_cast<size_t>(i)] = first + i;
    std::stable_sort(next.begin(), next.end(),
                     [&](int32_t a, int32_t b) { return cand[static_cast<size_t>(a)].score > cand[static_cast<size_t>(b)].score; });
    next.resize(static_cast<size_t>(k));
    frontier = next;
  }
  return cand;
}

TEST(SelectTree, TreesAreWellFormed) {
  std::mt19937_64 rng(1);
  for (int trial = 0; trial < 300; ++trial) {
    const int32_t levels = 1 + static_cast<int32_t>(rng() % 6);
    const int32_t k = 1 + static_cast<int32_t>(rng() % 10);
    const int32_t tree_size = 2 + static_cast<int32_t>(rng() % 63);
    const auto cand = RandomCandidates(rng, levels, k, 50);
    const int32_t root = 7;
    const DraftTree t = select_tree(root, cand, tree_size);
    const int32_t expected = std::min<int32_t>(tree_size, static_cast<int32_t>(cand.size()) + 1);
    ASSERT_EQ(t.size(), expected);
    ASSERT_LE(t.size(), 64);
    EXPECT_EQ(t.tokens[0], root);
    EXPECT_EQ(t.parents[0], -1);
    EXPECT_EQ(t.depths[0], 0);
    EXPECT_EQ(t.masks[0], 1u);
    for (int32_t i = 1; i < t.size(); ++i) {
      const int32_t p = t.parents[static_cast<size_t>(i)];
      ASSERT_GE(p, 0);
      ASSERT_LT(p, i) << "parents precede children";
      EXPECT_EQ(t.masks[static_cast<size_t>(i)], (uint64_t{1} << i) | t.masks[static_cast<size_t>(p)]);
      EXPECT_EQ(t.depths[static_cast<size_t>(i)], t.depths[static_cast<size_t>(p)] + 1);
      EXPECT_EQ(popcount64(t.masks[static_cast<size_t>(i)]), t.depths[static_cast<size_t>(i)] + 1);
      for (int32_t j = 1; j < i; ++j) {
        if (t.parents[static_cast<size_t>(j)] == p) {
          EXPECT_NE(t.tokens[static_cast<size_t>(j)], t.tokens[static_cast<size_t>(i)]) << "siblings are distinct";
        }
      }
    }
    // The chosen nodes are the best by score: every left-out candidate scores no higher than the
    // lowest chosen one.
    std::vector<float> all;
    for (const TreeCandidate& c : cand) all.push_back(c.score);
    std::sort(all.rbegin(), all.rend());
    if (static_cast<int32_t>(all.size()) > tree_size - 1) {
      const float threshold = all[static_cast<size_t>(tree_size - 2)];
      int32_t above = 0;
      for (float s : all) above += s > threshold;
      EXPECT_LE(above, tree_size - 1);
    }
  }
}

TEST(TopK, LargestFirstTiesToLowerIndex) {
  const float v[] = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f};
  int32_t out[3];
  top_k_indices(v, 5, 3, out);
  EXPECT_EQ(out[0], 1);
  EXPECT_EQ(out[1], 3);
  EXPECT_EQ(out[2], 2);
}

TEST(LogSoftmax, ExponentialsSumToOne) {
  std::vector<float> x{1.0f, -2.0f, 30.0f, 0.5f};
  log_softmax(x.data(), 4);
  double sum = 0;
  for (float v : x) sum += std::exp(static_cast<double>(v));
  EXPECT_NEAR(sum, 1.0, 1e-6);
}

// Random fp32 tensor storage.
struct Buf {
  std::vector<float> v;
  int64_t rows, cols;
  Buf(int64_t r, int64_t c, std::mt19937_64* rng) : v(static_cast<size_t>(r * c)), rows(r), cols(c) {
    if (rng) {
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      for (float& x : v) x = u(*rng);
    }
  }
  Tensor t() { return Tensor{v.data(), DType::F32, rows, cols}; }
};

TEST(TreeAttention, EachNodeAttendsLikeCausalAttentionOverItsPath) {
  CpuBackend be;
  auto ctx = be.create_context(2);
  std::mt19937_64 rng(3);
  for (const AttentionShape shape : {AttentionShape{4, 2, 16}, AttentionShape{8, 1, 32}, AttentionShape{2, 2, 64}}) {
    for (const int64_t prefix : {int64_t{0}, int64_t{1}, int64_t{37}}) {
      const int32_t n = 1 + static_cast<int32_t>(rng() % 40);
      // A random tree: node 0 the root, each later node's parent an earlier node.
      std::vector<int32_t> parent(static_cast<size_t>(n), -1);
      std::vector<uint64_t> mask(static_cast<size_t>(n), 1);
      for (int32_t i = 1; i < n; ++i) {
        parent[static_cast<size_t>(i)] = static_cast<int32_t>(rng() % static_cast<uint64_t>(i));
        mask[static_cast<size_t>(i)] = (uint64_t{1} << i) | mask[static_cast<size_t>(parent[static_cast<size_t>(i)])];
      }
      const int64_t kv = int64_t{shape.num_kv_heads} * shape.head_dim, qd = int64_t{shape.num_heads} * shape.head_dim;
      Buf k(prefix + n, kv, &rng), v(prefix + n, kv, &rng), q(n, qd, &rng), out(n, qd, nullptr);
      be.tree_attention(*ctx, out.t(), q.t(), k.t(), v.t(), shape, prefix, mask.data());
      for (int32_t i = 0; i < n; ++i) {
        // The path root..i laid out contiguously after the prefix; node i is the last row.
        std::vector<int32_t> path;
        for (int32_t j = i; j >= 0; j = parent[static_cast<size_t>(j)]) path.push_back(j);
        std::reverse(path.begin(), path.end());
        const int64_t len = prefix + static_cast<int64_t>(path.size());
        Buf pk(len, kv, nullptr), pv(len, kv, nullptr), pq(1, qd, nullptr), po(1, qd, nullptr);
        std::copy(k.v.begin(), k.v.begin() + prefix * kv, pk.v.begin());
        std::copy(v.v.begin(), v.v.begin() + prefix * kv, pv.v.begin());
        for (size_t d = 0; d < path.size(); ++d) {
          const int64_t src = prefix + path[d], dst = prefix + static_cast<int64_t>(d);
          std::copy(k.v.begin() + src * kv, k.v.begin() + (src + 1) * kv, pk.v.begin() + dst * kv);
          std::copy(v.v.begin() + src * kv, v.v.begin() + (src + 1) * kv, pv.v.begin() + dst * kv);
        }
        std::copy(q.v.begin() + i * qd, q.v.begin() + (i + 1) * qd, pq.v.begin());
        be.attention(*ctx, po.t(), pq.t(), pk.t(), pv.t(), shape, len - 1);
        for (int64_t c = 0; c < qd; ++c)
          ASSERT_EQ(out.v[static_cast<size_t>(i * qd + c)], po.v[static_cast<size_t>(c)])
              << "node " << i << " col " << c << ": same keys in the same order must give the same sums";
      }
    }
  }
}

TEST(CopyRows, AscendingInPlaceCompaction) {
  CpuBackend be;
  auto ctx = be.create_context(1);
  std::mt19937_64 rng(4);
  Buf a(10, 3, &rng);
  const std::vector<float> before = a.v;
  const int32_t dst[] = {2, 3, 4}, src[] = {2, 5, 9};
  be.copy_rows(*ctx, a.t(), a.t(), dst, src, 3);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(a.v[static_cast<size_t>(dst[r] * 3 + c)], before[static_cast<size_t>(src[r] * 3 + c)]);
  EXPECT_EQ(a.v[0], before[0]);
}

}  // namespace
