// White-box tests of the speculative-decoding building blocks (shared/reference/algorithms.md §3.7):
//   - DraftOps::tree_expand / tree_select keep EAGLE-2's candidates and frontier and lay out
//     well-formed trees (parents first, ancestor masks, depths, distinct siblings, the best
//     candidates) from random draft top-k rows; the CUDA kernels' rank selection equals the host's;
//   - the tree_attention op gives, for every node, the causal attention over its root-to-node path
//     (the path's K/V laid out contiguously after the prefix), on random inputs;
//   - copy_rows compacts in place in ascending order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/draft_ops.h"
#include "backend/draft_tree.h"
#include "common/log_probs.h"

namespace {

using namespace mcpm;

int popcount64(uint64_t x) {
  int n = 0;
  for (; x; x &= x - 1) ++n;
  return n;
}

// A drafted candidate as the test's own model of EAGLE-2 bookkeeping sees it.
struct RefCandidate {
  int32_t token;
  int32_t parent;  // candidate index, -1: the root
  float score;
};

// Indices [0, n) of `score` in (score desc, index asc) order: a stable sort, not the ops' partial sort.
std::vector<int32_t> RankedOrder(const std::vector<float>& score) {
  std::vector<int32_t> order(score.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return score[static_cast<size_t>(a)] > score[static_cast<size_t>(b)];
  });
  return order;
}

// Random drafting rounds through DraftOps::tree_expand / tree_select (the CPU backend runs the Backend
// defaults over the host reference): each level gets random top-k rows (distinct head rows, log-probs
// <= 0 best first, quantized so that ties occur), with and without an FR-Spec vocabulary. The test
// keeps its own candidate list, frontier and tree and checks the state against them after every op,
// the gathered input features, and the tree's invariants (parents first, ancestor masks, depths,
// distinct siblings, the best candidates chosen).
TEST(DraftTree, ExpandAndSelectFollowEagle2Bookkeeping) {
  CpuBackend be;
  auto ctx = be.create_context(1);
  std::mt19937_64 rng(1);
  constexpr int32_t kHeadRows = 200, kCols = 8;
  std::vector<int32_t> vocabulary(kHeadRows);
  for (int32_t i = 0; i < kHeadRows; ++i) vocabulary[static_cast<size_t>(i)] = 1000 + 3 * i;
  std::shuffle(vocabulary.begin(), vocabulary.end(), rng);
  auto state = std::make_unique<DraftTreeState>();
  std::vector<int32_t> ids(64 * 64);
  std::vector<float> lps(64 * 64), x(64 * kCols), features(64 * kCols);
  std::uniform_int_distribution<int> quarter(-12, 0);
  for (int trial = 0; trial < 300; ++trial) {
    const int32_t k = 1 + static_cast<int32_t>(rng() % 10);
    int32_t levels = 1 + static_cast<int32_t>(rng() % 6);
    while (k * (levels - 1) > 64) --levels;
    const int32_t tree_size = 2 + static_cast<int32_t>(rng() % 63);
    const bool fr_spec = trial % 2 == 1;
    const int32_t root = 7;
    SCOPED_TRACE("trial " + std::to_string(trial) + ": k " + std::to_string(k) + ", levels " + std::to_string(levels) +
                 ", tree_size " + std::to_string(tree_size));

    std::vector<RefCandidate> ref;
    std::vector<int32_t> frontier;   // candidate index per frontier row of the current level
    std::vector<uint64_t> frontier_mask;
    for (int32_t level = 0; level < levels; ++level) {
      const int32_t rows = level == 0 ? 1 : k, n = rows * k;
      const bool last = level + 1 == levels;
      for (int32_t r = 0; r < rows; ++r) {
        std::vector<int32_t> row(kHeadRows);
        for (int32_t i = 0; i < kHeadRows; ++i) row[static_cast<size_t>(i)] = i;
        std::shuffle(row.begin(), row.end(), rng);
        std::vector<float> lp(static_cast<size_t>(k));
        for (float& v : lp) v = 0.25f * static_cast<float>(quarter(rng));
        std::sort(lp.rbegin(), lp.rend());
        for (int32_t m = 0; m < k; ++m) {
          ids[static_cast<size_t>(r * k + m)] = row[static_cast<size_t>(m)];
          lps[static_cast<size_t>(r * k + m)] = lp[static_cast<size_t>(m)];
        }
      }
      for (float& v : x) v = static_cast<float>(rng() % 1000);
      TreeExpandArgs args;
      args.state = state.get();
      args.ids = Tensor{ids.data(), DType::I32, rows, k};
      args.log_probs = Tensor{lps.data(), DType::F32, rows, k};
      args.vocabulary = fr_spec ? vocabulary.data() : nullptr;
      args.level = level;
      args.k = k;
      args.last = last;
      args.x = Tensor{x.data(), DType::F32, 64, kCols};
      args.features = Tensor{features.data(), DType::F32, 64, kCols};
      be.draft_ops().tree_expand(*ctx, args);

      const int32_t first = static_cast<int32_t>(ref.size());
      ASSERT_EQ(first, tree_level_first_candidate(level, k));
      for (int32_t i = 0; i < n; ++i) {
        const int32_t parent = level == 0 ? -1 : frontier[static_cast<size_t>(i / k)];
        const int32_t id = ids[static_cast<size_t>(i)];
        const float lp = lps[static_cast<size_t>(i)];
        ref.push_back(RefCandidate{fr_spec ? vocabulary[static_cast<size_t>(id)] : id, parent,
                                   parent < 0 ? lp : ref[static_cast<size_t>(parent)].score + lp});
        ASSERT_EQ(state->cand_token[first + i], ref.back().token);
        ASSERT_EQ(state->cand_parent[first + i], ref.back().parent);
        ASSERT_EQ(state->cand_score[first + i], ref.back().score);
      }
      if (last) break;
      std::vector<float> scores;
      for (int32_t i = 0; i < n; ++i) scores.push_back(ref[static_cast<size_t>(first + i)].score);
      const std::vector<int32_t> order = RankedOrder(scores);
      std::vector<int32_t> next;
      std::vector<uint64_t> next_mask;
      for (int32_t r = 0; r < k; ++r) {
        const int32_t i = order[static_cast<size_t>(r)], slot = level * k + r, parent_row = i / k;
        next.push_back(first + i);
        next_mask.push_back((level == 0 ? 0 : frontier_mask[static_cast<size_t>(parent_row)]) | (uint64_t{1} << slot));
        ASSERT_EQ(state->frontier_cand[slot], next.back());
        ASSERT_EQ(state->frontier_token[slot], ref[static_cast<size_t>(first + i)].token);
        ASSERT_EQ(state->frontier_mask[slot], next_mask.back());
        for (int32_t col = 0; col < kCols; ++col)
          ASSERT_EQ(features[static_cast<size_t>(r * kCols + col)], x[static_cast<size_t>(parent_row * kCols + col)])
              << "frontier node " << r << " takes its parent row's output feature";
      }
      frontier = next;
      frontier_mask = next_mask;
    }

    const int32_t candidates = static_cast<int32_t>(ref.size());
    be.draft_ops().tree_select(*ctx, state.get(), candidates, tree_size, root);
    const DraftTreeState::Tree& t = state->tree;
    const int32_t take = std::min(tree_size - 1, candidates);
    ASSERT_EQ(t.size, take + 1);
    std::vector<float> scores;
    for (const RefCandidate& c : ref) scores.push_back(c.score);
    std::vector<int32_t> chosen = RankedOrder(scores);
    chosen.resize(static_cast<size_t>(take));
    std::sort(chosen.begin(), chosen.end());
    EXPECT_EQ(t.tokens[0], root);
    EXPECT_EQ(t.parents[0], -1);
    EXPECT_EQ(t.depths[0], 0);
    EXPECT_EQ(t.masks[0], 1u);
    for (int32_t i = 1; i < t.size; ++i) {
      const RefCandidate& c = ref[static_cast<size_t>(chosen[static_cast<size_t>(i - 1)])];
      const int32_t p = t.parents[i];
      ASSERT_EQ(t.tokens[i], c.token) << "node " << i;
      ASSERT_GE(p, 0);
      ASSERT_LT(p, i) << "parents precede children";
      if (c.parent < 0) {
        EXPECT_EQ(p, 0);
      } else {
        EXPECT_EQ(chosen[static_cast<size_t>(p - 1)], c.parent) << "node " << i << " hangs under its candidate parent";
      }
      EXPECT_EQ(t.masks[i], (uint64_t{1} << i) | t.masks[p]);
      EXPECT_EQ(t.depths[i], t.depths[p] + 1);
      EXPECT_EQ(popcount64(t.masks[i]), t.depths[i] + 1);
      for (int32_t j = 1; j < i; ++j) {
        if (t.parents[j] == p) {
          EXPECT_NE(t.tokens[j], t.tokens[i]) << "siblings are distinct";
        }
      }
    }
  }
}

// The CUDA kernels select by rank (tree_rank, one thread per entry) where the host sorts: on random
// scores with many ties, {i : rank(i) < t} is the host's t best, and numbering the chosen entries by
// how many chosen come before them (tree_select_kernel) gives the host's candidate-order layout.
TEST(DraftTree, RankSelectionEqualsTheHostSort) {
  std::mt19937_64 rng(2);
  for (int trial = 0; trial < 200; ++trial) {
    const int32_t n = 1 + static_cast<int32_t>(rng() % DraftTreeState::kMaxCandidates);
    const int32_t t = 1 + static_cast<int32_t>(rng() % 64);
    std::vector<float> score(static_cast<size_t>(n));
    for (float& s : score) s = -0.5f * static_cast<float>(rng() % 40);
    std::vector<int32_t> host = RankedOrder(score);
    host.resize(static_cast<size_t>(std::min(t, n)));
    std::sort(host.begin(), host.end());
    std::vector<int32_t> by_rank;
    std::vector<int32_t> ranks(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) {
      ranks[static_cast<size_t>(i)] = tree_rank(score.data(), n, i);
      if (ranks[static_cast<size_t>(i)] < t) by_rank.push_back(i);  // ascending: the kernel's numbering
    }
    ASSERT_EQ(by_rank, host) << "trial " << trial;
    std::vector<int32_t> sorted_ranks = ranks;
    std::sort(sorted_ranks.begin(), sorted_ranks.end());
    for (int32_t i = 0; i < n; ++i) ASSERT_EQ(sorted_ranks[static_cast<size_t>(i)], i) << "ranks are a permutation";
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
