#include "engine/speculative.h"

#include <algorithm>
#include <numeric>

#include "common/error.h"

namespace mcpm {

void SpecParams::validate(int32_t draft_vocab) const {
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

DraftTree select_tree(int32_t root_token, const std::vector<TreeCandidate>& cand, int32_t tree_size) {
  const int32_t n = static_cast<int32_t>(cand.size());
  const int32_t take = std::min(tree_size - 1, n);
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + take, order.end(), [&](int32_t a, int32_t b) {
    return cand[a].score > cand[b].score || (cand[a].score == cand[b].score && a < b);
  });
  order.resize(static_cast<size_t>(take));
  std::sort(order.begin(), order.end());  // candidate order: parents before children

  std::vector<int32_t> node_of(static_cast<size_t>(n), -1);
  DraftTree t;
  t.tokens.push_back(root_token);
  t.parents.push_back(-1);
  t.depths.push_back(0);
  t.masks.push_back(1);
  for (int32_t c : order) {
    const TreeCandidate& tc = cand[static_cast<size_t>(c)];
    const int32_t parent = tc.parent < 0 ? 0 : node_of[static_cast<size_t>(tc.parent)];
    MCPM_CHECK(parent >= 0);  // a parent always outranks its children
    const int32_t i = t.size();
    node_of[static_cast<size_t>(c)] = i;
    t.tokens.push_back(tc.token);
    t.parents.push_back(parent);
    t.depths.push_back(t.depths[static_cast<size_t>(parent)] + 1);
    t.masks.push_back((uint64_t{1} << i) | t.masks[static_cast<size_t>(parent)]);
  }
  return t;
}

Speculator::Speculator(std::shared_ptr<const DraftModel> draft, int64_t capacity, int32_t max_rows)
    : draft_(std::move(draft)), ws_(*draft_, capacity, max_rows) {
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
  draft_forward(*draft_, ctx, ws_, call, inv_freq, attn_factor);
  committed_ = first_pos + n;
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
  // Per expanded row: its k best head rows and their log-probabilities.
  std::vector<int32_t> top(static_cast<size_t>(k) * static_cast<size_t>(k));
  std::vector<float> lp(top.size());

  // Level 0: the pending row (feature at rows-1, next token = root) predicts the root's children.
  {
    const int32_t zero = 0;
    be.copy_rows(ctx, ws_.features, pending_, &zero, &zero, 1);
    run_rows(ctx, &root, 1, rows - 1, inv_freq, attn_factor);
    has_pending_ = false;
  }
  draft_top_log_probs(*draft_, ctx, ws_, 0, 1, k, top.data(), lp.data());

  std::vector<TreeCandidate> cand;
  struct Frontier {
    int32_t cand;      // candidate index
    int32_t out_row;   // ws_.x row holding its parent's output feature
    uint64_t mask;     // draft-side ancestors among the tree scratch slots (relative to `rows`)
  };
  std::vector<Frontier> frontier;
  for (int32_t j = 0; j < k; ++j) {
    cand.push_back(TreeCandidate{draft_->head_token(top[static_cast<size_t>(j)]), -1, 1, lp[static_cast<size_t>(j)]});
    frontier.push_back(Frontier{j, 0, 0});
  }

  std::vector<int32_t> tokens(static_cast<size_t>(k)), positions(static_cast<size_t>(k)), dst(static_cast<size_t>(k)),
      src(static_cast<size_t>(k));
  std::vector<uint64_t> masks(static_cast<size_t>(k));
  std::vector<float> scores(static_cast<size_t>(k) * static_cast<size_t>(k));
  std::vector<int32_t> flat(static_cast<size_t>(k) * static_cast<size_t>(k));
  for (int32_t d = 1; d < p.num_iter; ++d) {
    // Run the frontier (depth-d candidates) at the position after their parents', in scratch slots.
    const int32_t slot0 = (d - 1) * k;
    for (int32_t j = 0; j < k; ++j) {
      const Frontier& f = frontier[static_cast<size_t>(j)];
      tokens[static_cast<size_t>(j)] = cand[static_cast<size_t>(f.cand)].token;
      positions[static_cast<size_t>(j)] = static_cast<int32_t>(rows + d - 1);
      masks[static_cast<size_t>(j)] = f.mask | (uint64_t{1} << (slot0 + j));
      dst[static_cast<size_t>(j)] = j;
      src[static_cast<size_t>(j)] = f.out_row;
    }
    be.copy_rows(ctx, ws_.features, ws_.x, dst.data(), src.data(), k);
    DraftCall call;
    call.next_tokens = tokens.data();
    call.n = k;
    call.positions = positions.data();
    call.slot = rows + slot0;
    call.tree_masks = masks.data();
    call.tree_prefix = rows;
    draft_forward(*draft_, ctx, ws_, call, inv_freq, attn_factor);
    draft_top_log_probs(*draft_, ctx, ws_, 0, k, k, top.data(), lp.data());

    // k children per frontier node; their scores extend the parent's cumulative log-probability.
    const int32_t first_child = static_cast<int32_t>(cand.size());
    for (int32_t j = 0; j < k; ++j) {
      const Frontier& f = frontier[static_cast<size_t>(j)];
      const float base = cand[static_cast<size_t>(f.cand)].score;
      for (int32_t m = 0; m < k; ++m) {
        const size_t at = static_cast<size_t>(j * k + m);
        const float s = base + lp[at];
        cand.push_back(TreeCandidate{draft_->head_token(top[at]), f.cand, d + 1, s});
        scores[at] = s;
      }
    }
    if (d + 1 == p.num_iter) break;
    // The next frontier: the k best children (ties to the lower index).
    top_k_indices(scores.data(), k * k, k, flat.data());
    std::vector<Frontier> next;
    for (int32_t j = 0; j < k; ++j) {
      const int32_t c = flat[static_cast<size_t>(j)];
      const int32_t parent_row = c / k;
      next.push_back(Frontier{first_child + c, parent_row, masks[static_cast<size_t>(parent_row)]});
    }
    frontier.swap(next);
  }
  return select_tree(root, cand, p.tree_size);
}

}  // namespace mcpm
