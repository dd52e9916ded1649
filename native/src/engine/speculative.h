// EAGLE-2 dynamic-tree drafting with an optional FR-Spec draft vocabulary
// (shared/reference/algorithms.md §2–3). The session (engine/session.cpp) verifies the tree with
// the target and accepts a path; this file builds trees and keeps the draft's KV cache in step
// with the target's. A tree is drafted where the backend's memory is: the draft levels, the top-k
// and the candidate bookkeeping (DraftOps::tree_expand / tree_select, backend/draft_tree.h) queue one
// after another, and the finished tree is the only thing copied to the host.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/draft.h"

namespace mcpm {

struct SpecParams {
  int32_t num_iter = 2;       // draft forward levels, the root level included
  int32_t topk_per_iter = 10; // children per expanded node, and frontier width
  int32_t tree_size = 12;     // nodes including the root, <= 64
  // MCPM_SPEC_TREE_AUTO: each step chooses plain decoding or a tree of AdaptiveSpeculation's ladder (the three
  // fields above are then unused).
  bool adaptive = false;

  // Throws INVALID_ARGUMENT naming the bad field.
  void validate(int32_t draft_vocab) const;
};

// A drafted tree. Node 0 is the root (the last emitted token, whose KV is not written yet); every
// other node's parent has a smaller index. masks[i] has bit j set iff j is i or an ancestor of i.
struct DraftTree {
  std::vector<int32_t> tokens, parents, depths;
  std::vector<uint64_t> masks;
  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
};

// The draft side of one session: the draft KV cache covers target positions [0, committed); the
// features of the target's last evaluated position wait in `pending` until the token after it is
// known. rows = max rows per draft call. use_graphs: each level of a tree is drafted as a recorded
// step (Backend::decode_step; CUDA graphs).
class Speculator {
 public:
  Speculator(std::shared_ptr<const DraftModel> draft, int64_t capacity, int32_t max_rows, bool use_graphs = true);

  const DraftModel& draft() const { return *draft_; }

  // The target evaluated `tokens` at positions first_pos .. first_pos+n-1 and left their features in
  // `features` rows [0, n). Runs the draft over every row whose next token is now known.
  void advance(ExecContext& ctx, const int32_t* tokens, const Tensor& features, int32_t n, int64_t first_pos,
               const Tensor& inv_freq, float attn_factor);
  // As advance(), with the feature rows gathered from `features` rows feature_rows[0..n).
  void advance_gathered(ExecContext& ctx, const int32_t* tokens, const Tensor& features,
                        const int32_t* feature_rows, int32_t n, int64_t first_pos, const Tensor& inv_freq,
                        float attn_factor);

  // The target cache now holds `rows` rows and nothing is pending (rewind, reset).
  void truncate(int64_t rows);

  // Whether a tree can be drafted after a target cache of `rows` rows (the pending row is rows-1).
  bool ready(int64_t rows) const { return has_pending_ && pending_pos_ == rows - 1; }

  // Drafts a tree under `root` (the token at position `rows`, not yet in the target cache).
  // Consumes the pending row.
  DraftTree draft_tree(ExecContext& ctx, int32_t root, int64_t rows, const SpecParams& params,
                       const Tensor& inv_freq, float attn_factor);

  // Snapshot for undoing an advance() when the target evaluation it followed fails.
  struct Mark {
    int64_t committed;
    bool has_pending;
    int64_t pending_pos;
  };
  Mark mark(ExecContext& ctx);
  void restore(ExecContext& ctx, const Mark& m);

 private:
  void run_rows(ExecContext& ctx, const int32_t* next_tokens, int32_t n, int64_t first_pos, const Tensor& inv_freq,
                float attn_factor);
  // Before the draft writes row `row` and attends to the rows below it: every row below has been
  // written once, or is zeroed now (rows a session decoded without feeding the draft).
  void cover(ExecContext& ctx, int64_t row);
  // Zeroes the draft's KV rows [from, to) in every layer.
  void zero_rows(ExecContext& ctx, int64_t from, int64_t to);

  std::shared_ptr<const DraftModel> draft_;
  DraftWorkspace ws_;
  bool use_graphs_ = true;
  std::unique_ptr<Buffer> pending_storage_;
  Tensor pending_;         // [2, H]: row 0 the pending feature, row 1 its backup for restore()
  bool has_pending_ = false;
  int64_t pending_pos_ = 0;
  int64_t committed_ = 0;  // draft KV rows that match the target's history
  int64_t written_ = 0;    // draft KV rows [0, written_) have been written (or zeroed) at least once
};

}  // namespace mcpm
