#include "backend/draft_tree.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "common/error.h"

namespace mcpm {

void tree_expand_host(DraftTreeState& s, int32_t level, int32_t k, bool last, const int32_t* tokens,
                      const float* log_probs, int32_t* parent_rows) {
  const int32_t rows = tree_level_rows(level, k), first = tree_level_first_candidate(level, k);
  const int32_t n = rows * k;
  MCPM_CHECK(k >= 1 && first + n <= DraftTreeState::kMaxCandidates);
  for (int32_t i = 0; i < n; ++i) {
    const int32_t row = i / k;
    const int32_t parent = level == 0 ? -1 : s.frontier_cand[(level - 1) * k + row];
    s.cand_token[first + i] = tokens[i];
    s.cand_parent[first + i] = parent;
    s.cand_score[first + i] = level == 0 ? log_probs[i] : s.cand_score[parent] + log_probs[i];
  }
  if (last) return;
  MCPM_CHECK((level + 1) * k <= DraftTreeState::kFrontierSlots);
  // The k best new candidates, best first (ties to the lower index).
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  const float* score = s.cand_score + first;
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return tree_ranks_before(score[a], a, score[b], b); });
  for (int32_t r = 0; r < k; ++r) {
    const int32_t i = order[static_cast<size_t>(r)], row = i / k, slot = level * k + r;
    s.frontier_cand[slot] = first + i;
    s.frontier_token[slot] = tokens[i];
    s.frontier_mask[slot] = (level == 0 ? uint64_t{0} : s.frontier_mask[(level - 1) * k + row]) | (uint64_t{1} << slot);
    parent_rows[r] = row;
  }
}

void tree_select_host(DraftTreeState& s, int32_t candidates, int32_t tree_size, int32_t root_token) {
  MCPM_CHECK(candidates >= 0 && candidates <= DraftTreeState::kMaxCandidates && tree_size >= 1 &&
             tree_size <= DraftTreeState::kMaxNodes);
  const int32_t take = std::min(tree_size - 1, candidates);
  std::vector<int32_t> order(static_cast<size_t>(candidates));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + take, order.end(), [&](int32_t a, int32_t b) {
    return tree_ranks_before(s.cand_score[a], a, s.cand_score[b], b);
  });
  order.resize(static_cast<size_t>(take));
  std::sort(order.begin(), order.end());  // candidate order: parents before children

  std::vector<int32_t> node_of(static_cast<size_t>(candidates), -1), candidate_of(static_cast<size_t>(take) + 1, -1);
  for (int32_t node = 1; node <= take; ++node) {
    candidate_of[static_cast<size_t>(node)] = order[static_cast<size_t>(node - 1)];
    node_of[static_cast<size_t>(order[static_cast<size_t>(node - 1)])] = node;
  }
  MCPM_CHECK(tree_link(s, take, root_token, candidate_of.data(), node_of.data()));  // parents outrank children
}

}  // namespace mcpm
