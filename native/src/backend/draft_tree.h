// The EAGLE-2 tree under construction, kept in backend memory so that drafting a tree needs no
// host round trip between draft levels (shared/reference/algorithms.md §3.2–3.3). The model graph
// (engine/speculative.cpp) runs the draft's forward passes; DraftOps::tree_expand and tree_select do
// the bookkeeping between them where the state lives, and only the finished tree (at most 64 nodes)
// comes back to the host, once per round.
//
// Layout (a POD in backend memory, shared by the host reference in draft_tree.cpp and the CUDA
// kernels in cuda/draft_tree.cu):
//   candidates   every drafted node in drafting order: level 0's k children of the root at [0, k),
//                then level d's k * k at [k + (d-1) k^2, k + d k^2) (child m of frontier row j at
//                offset j * k + m); token, parent candidate (-1: the root) and cumulative score.
//   frontier     slot s = (d-1) k + j (d >= 1) is the j-th node the draft expands at level d: its
//                candidate, its token (the draft's input) and its draft-side tree mask (bit s and its
//                ancestors' slots; the slots are the draft's scratch KV rows after the history).
//   tree         tree_select's result: node 0 is the root, every other node's parent comes first,
//                masks[i] has bit j set iff j is i or an ancestor of i.
#pragma once

#include <cstdint>

#include "backend/cuda/host_device.h"

namespace mcpm {

struct DraftTreeState {
  static constexpr int32_t kMaxNodes = 64;       // tree nodes, root included
  static constexpr int32_t kFrontierSlots = 64;  // k * (levels - 1) <= 64
  // k + (levels - 1) k^2 with k <= 63 and k (levels - 1) <= 64.
  static constexpr int32_t kMaxCandidates = 64 + 64 * 64;

  // tree_select's result, one block so that the host fetches it with one copy.
  struct Tree {
    uint64_t masks[kMaxNodes];
    int32_t tokens[kMaxNodes];
    int32_t parents[kMaxNodes];
    int32_t depths[kMaxNodes];
    int32_t size;
  };
  Tree tree;
  uint64_t frontier_mask[kFrontierSlots];
  int32_t frontier_cand[kFrontierSlots];
  int32_t frontier_token[kFrontierSlots];
  int32_t cand_token[kMaxCandidates];
  int32_t cand_parent[kMaxCandidates];
  float cand_score[kMaxCandidates];
};

// Where level `level`'s candidates start and how many rows it expanded.
MCPM_HD int32_t tree_level_first_candidate(int32_t level, int32_t k) {
  return level == 0 ? 0 : k + (level - 1) * k * k;
}
MCPM_HD int32_t tree_level_rows(int32_t level, int32_t k) { return level == 0 ? 1 : k; }

// (score, index) a ranks before b: the larger score, then the lower index (top_k_indices' order).
MCPM_HD bool tree_ranks_before(float score_a, int32_t a, float score_b, int32_t b) {
  return score_a > score_b || (score_a == score_b && a < b);
}

// The rank of entry i among scores[0, n) in tree_ranks_before order: how many entries come before
// it. The entries with rank < t are exactly the t best, which is how the CUDA kernels select (one
// thread per entry) where the host reference sorts; tests check both agree.
MCPM_HD int32_t tree_rank(const float* scores, int32_t n, int32_t i) {
  int32_t rank = 0;
  for (int32_t j = 0; j < n; ++j) rank += tree_ranks_before(scores[j], j, scores[i], i) ? 1 : 0;
  return rank;
}

// tree_select's last step, shared by the host reference and the CUDA kernel: writes s.tree from the
// chosen candidates, candidate_of[node] for nodes 1..take (ascending candidate order, so parents
// come first) and node_of[c] the node of candidate c (-1: not chosen). Returns false if a chosen
// candidate's parent was not chosen (it hangs under the root then; cannot happen for EAGLE-2 scores).
MCPM_HD bool tree_link(DraftTreeState& s, int32_t take, int32_t root_token, const int32_t* candidate_of,
                       const int32_t* node_of) {
  DraftTreeState::Tree& t = s.tree;
  bool linked = true;
  t.size = take + 1;
  t.tokens[0] = root_token;
  t.parents[0] = -1;
  t.depths[0] = 0;
  t.masks[0] = 1;
  for (int32_t node = 1; node <= take; ++node) {
    const int32_t c = candidate_of[node], pc = s.cand_parent[c];
    int32_t parent = pc < 0 ? 0 : node_of[pc];
    if (parent < 0) {
      linked = false;
      parent = 0;
    }
    t.tokens[node] = s.cand_token[c];
    t.parents[node] = parent;
    t.depths[node] = t.depths[parent] + 1;
    t.masks[node] = (uint64_t{1} << node) | t.masks[parent];
  }
  return linked;
}

// Host reference of DraftOps::tree_expand / tree_select on a state in host memory (HostDraftOps runs
// them on a downloaded copy; the CPU backend's memory is the host's).
//
// tree_expand's bookkeeping for level `level` (DraftOps::tree_expand describes it): tokens and
// log_probs [rows * k] are the rows' top-k, already mapped to target tokens. Unless `last`, writes
// the next frontier and, in parent_rows[0, k), the draft row whose output feature each of its
// nodes takes.
void tree_expand_host(DraftTreeState& s, int32_t level, int32_t k, bool last, const int32_t* tokens,
                      const float* log_probs, int32_t* parent_rows);
// Selects the min(tree_size - 1, candidates) best candidates by (score desc, index asc), lays them
// out in candidate order under the root (so parents precede children: a child's score is its
// parent's plus a log-probability <= 0, and ties go to the lower index) and writes the tree.
// Throws INTERNAL if a chosen candidate's parent was not chosen.
void tree_select_host(DraftTreeState& s, int32_t candidates, int32_t tree_size, int32_t root_token);

}  // namespace mcpm
