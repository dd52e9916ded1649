// EAGLE-2 drafting's bookkeeping, kept out of the op interface (backend/backend.h): the draft head's
// top-k and the tree under construction (backend/draft_tree.h), where the draft's state lives, so
// drafting a tree needs no host round trip between levels. The model graph (engine/speculative.cpp)
// composes the draft's forward passes from ordinary ops and calls these between them.
#pragma once

#include <cstdint>

#include "backend/backend.h"
#include "backend/draft_tree.h"

namespace mcpm {

// One level of drafting an EAGLE-2 tree where its state lives (DraftOps::tree_expand; the state's
// layout: backend/draft_tree.h). Every pointer and tensor is backend memory.
struct TreeExpandArgs {
  void* state = nullptr;                // DraftTreeState
  Tensor ids, log_probs;                // I32 / F32 [rows, k]: each expanded row's top-k (top_log_probs)
  const int32_t* vocabulary = nullptr;  // head row -> target token (FR-Spec) [head rows]; nullptr: identity
  int32_t level = 0;                    // 0: the root's row (rows = 1); d >= 1: frontier slots (d-1)k.. (rows = k)
  int32_t k = 1;
  bool last = false;                    // no further level: no frontier to pick
  Tensor x;                             // the draft's output features, rows [0, rows)
  Tensor features;                      // the next level's input features, rows [0, k) written
};

class DraftOps {
 public:
  virtual ~DraftOps() = default;

  // The draft's tree expansion: for each row r of `logits` [rows, vocab] f32, the k largest entries
  // (ties to the lower index, best first) as ids[r, j] and their log-probabilities
  // log_probs[r, j] = x - logsumexp(row), in backend tensors (I32 / F32 [rows, k]), so nothing leaves
  // the backend. The host version runs common/log_probs.h on downloaded rows; the CUDA backend does
  // it on the device (the same selection; lse summed in double in another order).
  virtual void top_log_probs(ExecContext& ctx, const Tensor& logits, int32_t k, const Tensor& ids,
                             const Tensor& log_probs) = 0;

  // tree_expand records one level's candidates and, unless args.last, picks the next frontier (the k
  // best new candidates), writes its tokens and tree masks into the state and gathers its parents'
  // output features (args.x rows) into args.features rows [0, k). tree_select then picks the
  // min(tree_size - 1, candidates) best candidates and writes the tree (DraftTreeState::tree). Both
  // follow tree_expand_host / tree_select_host exactly.
  virtual void tree_expand(ExecContext& ctx, const TreeExpandArgs& args) = 0;
  virtual void tree_select(ExecContext& ctx, void* state, int32_t candidates, int32_t tree_size,
                           int32_t root_token) = 0;
};

// The host version over any backend: downloads what it needs, runs the host reference, uploads the
// result (on the CPU backend, whose memory is the host's, the copies are plain memcpy).
class HostDraftOps final : public DraftOps {
 public:
  explicit HostDraftOps(Backend& backend) : backend_(backend) {}
  void top_log_probs(ExecContext& ctx, const Tensor& logits, int32_t k, const Tensor& ids,
                     const Tensor& log_probs) override;
  void tree_expand(ExecContext& ctx, const TreeExpandArgs& args) override;
  void tree_select(ExecContext& ctx, void* state, int32_t candidates, int32_t tree_size,
                   int32_t root_token) override;

 private:
  Backend& backend_;
};

}  // namespace mcpm
