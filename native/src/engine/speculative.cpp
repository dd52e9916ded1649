#include "engine/speculative.h"

#include <algorithm>
#include <cstddef>
#include <functional>
#include <numeric>

#include "backend/draft_ops.h"
#include "common/error.h"

namespace mcpm {

void SpecParams::validate(int32_t draft_vocab) const {
  if (adaptive) return;  // AdaptiveSpeculation uses only the trees the draft can draft
  auto fail = [](const std::string& m) { invalid_argument("invalid speculative params: " + m); };
  if (num_iter < 1 || num_iter > 64) fail("spec_num_iter must be in [1, 64], got " + std::to_string(num_iter));
  if (tree_size < 2 || tree_size > 64) fail("spec_tree_size must be in [2, 64], got " + std::to_string(tree_size));
  if (topk_per_iter < 1 || topk_per_iter > tree_size - 1)
    fail("spec_topk_per_iter must be in [1, spec_tree_size - 1 = " + std::to_string(tree_size - 1) + "], got " +
         std::to_string(topk_per_iter));
  if (topk_per_iter > draft_vocab)
    fail("spec_topk_per_iter (" + std::to_string(topk_per_iter) + ") exceeds the draft vocabulary (" +
         std::to_string(draft_vocab) + " tokens)");
  // Frontier nodes of levels 1 .. num_iter-1 each take a draft KV scratch row (64 at most).
  if (static_cast<int64_t>(topk_per_iter) * (num_iter - 1) > DraftWorkspace::kTreeSlots)
    fail("spec_topk_per_iter * (spec_num_iter - 1) must be <= 64, got " +
         std::to_string(static_cast<int64_t>(topk_per_iter) * (num_iter - 1)));
  const int64_t candidates = topk_per_iter + static_cast<int64_t>(num_iter - 1) * topk_per_iter * topk_per_iter;
  if (tree_size - 1 > candidates)
    fail("spec_tree_size - 1 (" + std::to_string(tree_size - 1) + ") exceeds the " + std::to_string(candidates) +
         " candidates that spec_num_iter and spec_topk_per_iter draft");
}

Speculator::Speculator(std::shared_ptr<const DraftModel> draft, int64_t capacity, int32_t max_rows, bool use_graphs)
    : draft_(std::move(draft)), ws_(*draft_, capacity, max_rows) {
  // A windowed draft reads its cache through a view that starts later every round, which a recorded
  // step would keep at the address it was recorded with.
  use_graphs_ = use_graphs && draft_->config().attention_window == 0;
  Backend& be = draft_->base().backend();
  const int64_t H = draft_->base().config().hidden_size;
  pending_storage_ = be.alloc(static_cast<size_t>(2 * H) * dtype_size(be.activation_dtype()));
  pending_ = Tensor{pending_storage_->data(), be.activation_dtype(), 2, H};
}

void Speculator::run_rows(ExecContext& ctx, const int32_t* next_tokens, int32_t n, int64_t first_pos,
                          const Tensor& inv_freq, float attn_factor) {
  if (n == 0) return;
  std::vector<int32_t> positions(static_cast<size_t>(n));
  std::iota(positions.begin(), positions.end(), static_cast<int32_t>(first_pos));
  DraftCall call;
  call.next_tokens = next_tokens;
  call.n = n;
  call.positions = positions.data();
  call.slot = first_pos;
  cover(ctx, first_pos);
  draft_forward(*draft_, ctx, ws_, call, inv_freq, attn_factor);
  committed_ = first_pos + n;
  written_ = std::max(written_, committed_);
}

void Speculator::cover(ExecContext& ctx, int64_t row) {
  if (row <= written_) return;
  zero_rows(ctx, written_, row);
  written_ = row;
}

// Rows the draft skipped (a session decoded them without feeding it: adaptive speculation's plain steps)
// are read by its later attention like any other history row. Zeroed, they are finite, harmless keys
// (stale rows can only lower acceptance); left alone they would hold whatever the memory held (the CUDA
// emulator fills fresh allocations with NaN, which once reached the tree's token ids).
void Speculator::zero_rows(ExecContext& ctx, int64_t from, int64_t to) {
  Backend& be = draft_->base().backend();
  be.synchronize(ctx);
  // Every layer's K and V cache has the same row size: one zero buffer serves them all.
  const std::vector<char> zeros(ws_.k.front().slice_rows(from, to - from).bytes(), 0);
  for (const std::vector<Tensor>* side : {&ws_.k, &ws_.v})
    for (const Tensor& t : *side) be.upload(t.slice_rows(from, to - from).data, zeros.data(), zeros.size());
}

void Speculator::advance(ExecContext& ctx, const int32_t* tokens, const Tensor& features, int32_t n,
                         int64_t first_pos, const Tensor& inv_freq, float attn_factor) {
  std::vector<int32_t> rows(static_cast<size_t>(n));
  std::iota(rows.begin(), rows.end(), 0);
  advance_gathered(ctx, tokens, features, rows.data(), n, first_pos, inv_freq, attn_factor);
}

void Speculator::advance_gathered(ExecContext& ctx, const int32_t* tokens, const Tensor& features,
                                  const int32_t* feature_rows, int32_t n, int64_t first_pos,
                                  const Tensor& inv_freq, float attn_factor) {
  Backend& be = draft_->base().backend();
  MCPM_CHECK(n > 0 && n <= ws_.max_rows);
  // Row r of the draft pairs the target feature at position r with the token at position r + 1.
  const bool use_pending = has_pending_ && pending_pos_ == first_pos - 1;
  const int64_t first_row = use_pending ? first_pos - 1 : first_pos;
  std::vector<int32_t> next_tokens, dst, src;
  if (use_pending) {
    const int32_t zero = 0;
    be.copy_rows(ctx, ws_.features, pending_, &zero, &zero, 1);
    next_tokens.push_back(tokens[0]);
  }
  for (int32_t i = 0; i + 1 < n; ++i) {
    dst.push_back(static_cast<int32_t>(next_tokens.size()));
    src.push_back(feature_rows[i]);
    next_tokens.push_back(tokens[i + 1]);
  }
  be.copy_rows(ctx, ws_.features, features, dst.data(), src.data(), static_cast<int32_t>(dst.size()));
  // Rows before first_row are assumed committed; after a gap (nothing pending) they may be stale,
  // which only lowers acceptance: the target alone decides every emitted token.
  run_rows(ctx, next_tokens.data(), static_cast<int32_t>(next_tokens.size()), first_row, inv_freq, attn_factor);
  const int32_t zero = 0;
  be.copy_rows(ctx, pending_, features, &zero, &feature_rows[n - 1], 1);
  has_pending_ = true;
  pending_pos_ = first_pos + n - 1;
  committed_ = std::max<int64_t>(committed_, pending_pos_);
}

void Speculator::truncate(int64_t rows) {
  committed_ = std::min(committed_, rows);
  has_pending_ = false;
}

Speculator::Mark Speculator::mark(ExecContext& ctx) {
  if (has_pending_) {
    const int32_t zero = 0, one = 1;
    draft_->base().backend().copy_rows(ctx, pending_, pending_, &one, &zero, 1);
  }
  return Mark{committed_, has_pending_, pending_pos_};
}

void Speculator::restore(ExecContext& ctx, const Mark& m) {
  committed_ = m.committed;
  has_pending_ = m.has_pending;
  pending_pos_ = m.pending_pos;
  if (has_pending_) {
    const int32_t zero = 0, one = 1;
    draft_->base().backend().copy_rows(ctx, pending_, pending_, &zero, &one, 1);
  }
}

DraftTree Speculator::draft_tree(ExecContext& ctx, int32_t root, int64_t rows, const SpecParams& p,
                                 const Tensor& inv_freq, float attn_factor) {
  MCPM_CHECK(ready(rows));
  Backend& be = draft_->base().backend();
  const int32_t k = p.topk_per_iter;
  // Every level runs where the backend's memory is: the head's top-k (DraftOps::top_log_probs), the
  // candidates, the next frontier and its input features (DraftOps::tree_expand) stay in ws_.tree, and
  // the next level reads its tokens and masks from there. Only the finished tree comes to the host.
  TreeExpandArgs expand;
  expand.state = ws_.tree;
  expand.vocabulary = draft_->resident_vocabulary();
  expand.k = k;
  expand.x = ws_.x;
  expand.features = ws_.features;

  auto expand_level = [&](int32_t level, int32_t expanded_rows) {
    draft_top_log_probs(*draft_, ctx, ws_, expanded_rows, k);
    expand.ids = Tensor{ws_.top_ids.data, DType::I32, expanded_rows, k};
    expand.log_probs = Tensor{ws_.top_log_probs.data, DType::F32, expanded_rows, k};
    expand.level = level;
    expand.last = level + 1 == p.num_iter;
    be.draft_ops().tree_expand(ctx, expand);
  };
  // Each level is one recorded step (Backend::decode_step: a CUDA graph per level, length bucket and
  // k): the draft's forward pass, its head's top-k and the bookkeeping.
  DecodeStep step;
  step.capacity = ws_.capacity + DraftWorkspace::kTreeSlots;
  auto run_level = [&](int32_t level, const std::function<void()>& record) {
    step.variant = DecodeStep::kDraftLevel + 2 * level + (level + 1 == p.num_iter ? 1 : 0);
    if (use_graphs_)
      be.decode_step(ctx, step, record);
    else
      record();
  };

  // Level 0: the pending row (feature at rows-1, next token = root) predicts the root's children.
  const int32_t zero = 0;
  be.copy_rows(ctx, ws_.features, pending_, &zero, &zero, 1);
  const int32_t root_position = static_cast<int32_t>(rows - 1);
  cover(ctx, rows - 1);
  written_ = std::max<int64_t>(written_, rows);
  step.n = 1;
  step.tokens = &root;
  step.positions = &root_position;
  step.start = rows - 1;
  run_level(0, [&] {
    DraftCall call;
    call.next_tokens = &root;
    call.n = 1;
    call.positions = &root_position;
    call.slot = rows - 1;
    draft_forward(*draft_, ctx, ws_, call, inv_freq, attn_factor);
    expand_level(0, 1);
  });
  committed_ = rows;
  has_pending_ = false;

  auto* state = static_cast<char*>(ws_.tree);
  const auto* frontier_tokens = reinterpret_cast<const int32_t*>(state + offsetof(DraftTreeState, frontier_token));
  const auto* frontier_masks = reinterpret_cast<const uint64_t*>(state + offsetof(DraftTreeState, frontier_mask));
  std::vector<int32_t> positions(static_cast<size_t>(k));
  for (int32_t d = 1; d < p.num_iter; ++d) {
    // The frontier (depth-d candidates) runs at the position after their parents', in the draft's
    // scratch KV slots (d-1)k.., each seeing the history and its own ancestors' slots. Its tokens and
    // masks are in the state, where tree_expand left them.
    const int32_t slot0 = (d - 1) * k;
    std::fill(positions.begin(), positions.end(), static_cast<int32_t>(rows + d - 1));
    step.n = k;
    step.tokens = nullptr;
    step.positions = positions.data();
    step.start = rows + slot0;
    step.prefix = rows;
    run_level(d, [&] {
      DraftCall call;
      call.next_tokens = frontier_tokens + slot0;
      call.n = k;
      call.positions = positions.data();
      call.slot = rows + slot0;
      call.tree_masks = frontier_masks + slot0;
      call.tree_prefix = rows;
      call.resident = true;
      call.mask_bits = slot0 + k;
      draft_forward(*draft_, ctx, ws_, call, inv_freq, attn_factor);
      expand_level(d, k);
    });
  }

  const int32_t candidates = k + (p.num_iter - 1) * k * k;
  be.draft_ops().tree_select(ctx, ws_.tree, candidates, p.tree_size, root);
  DraftTreeState::Tree host;
  be.synchronize(ctx);
  be.download(&host, state + offsetof(DraftTreeState, tree), sizeof(host));
  MCPM_CHECK(host.size == std::min(p.tree_size, candidates + 1));
  DraftTree t;
  t.tokens.assign(host.tokens, host.tokens + host.size);
  t.parents.assign(host.parents, host.parents + host.size);
  t.depths.assign(host.depths, host.depths + host.size);
  t.masks.assign(host.masks, host.masks + host.size);
  return t;
}

}  // namespace mcpm
