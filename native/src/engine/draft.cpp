#include "engine/draft.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_set>

#include "backend/draft_ops.h"
#include "common/error.h"
#include "engine/forward.h"

namespace mcpm {

namespace {

void require(bool ok, const char* field, const std::string& why) { require_field(ok, "draft config", field, why); }

}  // namespace

DraftConfig DraftConfig::from_abi(const mcpm_draft_config& a, const ModelConfig& base) {
  require(a.num_layers > 0 && a.num_layers <= 64, "num_layers", "must be in [1, 64], got " + std::to_string(a.num_layers));
  require(a.num_heads > 0 && a.num_heads <= 4096, "num_heads", "must be in [1, 4096], got " + std::to_string(a.num_heads));
  require(a.num_kv_heads > 0 && a.num_kv_heads <= a.num_heads && a.num_heads % a.num_kv_heads == 0, "num_kv_heads",
          "must divide num_heads (" + std::to_string(a.num_heads) + "), got " + std::to_string(a.num_kv_heads));
  // The draft shares the target's RoPE tables, so its head_dim must be the target's.
  require(a.head_dim == base.head_dim, "head_dim",
          "must equal the target's head_dim (" + std::to_string(base.head_dim) + "), got " + std::to_string(a.head_dim));
  require(a.intermediate_size > 0 && a.intermediate_size <= (1 << 20), "intermediate_size",
          "must be in [1, 1048576], got " + std::to_string(a.intermediate_size));
  require(std::isfinite(a.rms_norm_eps) && a.rms_norm_eps > 0, "rms_norm_eps", "must be a positive number");
  require(std::isfinite(a.residual_scale) && a.residual_scale != 0, "residual_scale", "must be a nonzero number");
  require(a.attention_window >= 0, "attention_window", "must be >= 0 (0 = the whole context), got " + std::to_string(a.attention_window));
  DraftConfig c;
  c.num_layers = a.num_layers;
  c.num_heads = a.num_heads;
  c.num_kv_heads = a.num_kv_heads;
  c.head_dim = a.head_dim;
  c.intermediate_size = a.intermediate_size;
  c.rms_norm_eps = a.rms_norm_eps;
  c.residual_scale = a.residual_scale;
  c.use_input_norm = a.use_input_norm != 0;
  c.use_attn_norm = a.use_attn_norm != 0;
  c.attention_window = a.attention_window;
  return c;
}

DraftModel::DraftModel(std::shared_ptr<const Model> base, DraftConfig config)
    : base_(std::move(base)), config_(std::move(config)), store_(base_->backend(), "this EAGLE draft") {
  const DraftConfig& c = config_;
  const int64_t H = base_->config().hidden_size, I = c.intermediate_size;
  // fc.weight [H, 2H] arrives whole and is split in set_tensor into its two [H, H] halves (input
  // columns); a Marlin fc is the N-concatenation of the halves' int4 tensors.
  store_.add_linear("fc.weight (embedding half)", "fc.qweight (embedding half)", "fc.scales (embedding half)", H, H,
                    &weights_.fc_embed);
  store_.add_linear("fc.weight (feature half)", "fc.qweight (feature half)", "fc.scales (feature half)", H, H,
                    &weights_.fc_feature);
  store_.add_fused_int4("fc.qweight", "fc.scales", {"fc.qweight (embedding half)", "fc.qweight (feature half)"});
  store_.add("fc.bias", {H}, &weights_.fc_bias, /*optional=*/true);
  if (c.use_input_norm) {
    store_.add("input_norm1.weight", {H}, &weights_.input_norm1);
    store_.add("input_norm2.weight", {H}, &weights_.input_norm2);
  }
  weights_.layers.resize(static_cast<size_t>(c.num_layers));
  for (int32_t l = 0; l < c.num_layers; ++l)
    declare_layer(store_, "layers." + std::to_string(l) + ".", H, c.q_dim(), c.kv_dim(), I,
                  weights_.layers[static_cast<size_t>(l)], l > 0 || c.use_attn_norm);
}

void DraftModel::set_tensor(const char* name, mcpm_dtype dtype, const int64_t* shape, int32_t ndim,
                            const void* data, size_t data_size) {
  if (finalized_) invalid_argument(std::string("cannot set tensor '") + name + "': the draft is already finalized");
  const std::string n(name);
  if (n != "fc.weight") {
    store_.set(n, dtype, shape, ndim, data, data_size);
    return;
  }
  const int64_t H = base_->config().hidden_size;
  if (ndim != 2 || shape[0] != H || shape[1] != 2 * H) {
    const int64_t expected[2] = {H, 2 * H};
    invalid_argument("tensor 'fc.weight' has shape " + shape_string(shape, static_cast<size_t>(std::max(ndim, 0))) +
                     " but the draft requires " + shape_string(expected, 2));
  }
  if (dtype != MCPM_DTYPE_F32 && dtype != MCPM_DTYPE_F16 && dtype != MCPM_DTYPE_BF16)
    invalid_argument("tensor 'fc.weight': unsupported dtype " + std::to_string(dtype) +
                     " (expected MCPM_DTYPE_F32, _F16 or _BF16)");
  const size_t es = dtype_size(static_cast<DType>(dtype));
  const size_t row = static_cast<size_t>(H) * es;
  if (data_size != 2 * row * static_cast<size_t>(H))
    invalid_argument("tensor 'fc.weight': data_size is " + std::to_string(data_size) + " bytes but " +
                     std::to_string(2 * row * static_cast<size_t>(H)) + " are needed");
  // Input columns [0, H) multiply the embedding, [H, 2H) the target feature.
  std::vector<char> half(row * static_cast<size_t>(H));
  const int64_t half_shape[2] = {H, H};
  for (int side = 0; side < 2; ++side) {
    for (int64_t r = 0; r < H; ++r)
      std::memcpy(half.data() + static_cast<size_t>(r) * row,
                  static_cast<const char*>(data) + static_cast<size_t>(r) * 2 * row + static_cast<size_t>(side) * row,
                  row);
    store_.set(side == 0 ? "fc.weight (embedding half)" : "fc.weight (feature half)", dtype, half_shape, 2,
               half.data(), half.size());
  }
}

void DraftModel::set_vocabulary(const int32_t* ids, int32_t n) {
  if (finalized_) invalid_argument("cannot set the draft vocabulary: the draft is already finalized");
  const int32_t vocab = base_->config().vocab_size;
  if (n < 1 || n > vocab)
    invalid_argument("draft vocabulary has " + std::to_string(n) + " ids; it must have 1 to " + std::to_string(vocab) +
                     " (the target vocabulary size)");
  std::vector<char> seen(static_cast<size_t>(vocab), 0);
  for (int32_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab)
      invalid_argument("draft vocabulary id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                       " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    if (seen[static_cast<size_t>(ids[i])]++)
      invalid_argument("draft vocabulary id " + std::to_string(ids[i]) + " appears twice (again at index " +
                       std::to_string(i) + ")");
  }
  vocabulary_.assign(ids, ids + n);
}

void DraftModel::finalize() {
  if (finalized_) invalid_argument("the draft is already finalized");
  store_.check_complete();
  const Tensor& lm = base_->weights().lm_head;
  if (vocabulary_.empty()) {
    weights_.head = lm;
  } else {
    // FR-Spec: gather the head rows once (row i = target token vocabulary_[i]).
    Backend& be = base_->backend();
    const int32_t r = static_cast<int32_t>(vocabulary_.size());
    head_storage_ = be.alloc(static_cast<size_t>(r) * static_cast<size_t>(lm.cols) * dtype_size(lm.dtype));
    weights_.head = Tensor{head_storage_->data(), lm.dtype, r, lm.cols};
    std::vector<int32_t> dst(static_cast<size_t>(r));
    for (int32_t i = 0; i < r; ++i) dst[static_cast<size_t>(i)] = i;
    std::unique_ptr<ExecContext> ctx = be.create_context(1);
    be.copy_rows(*ctx, weights_.head, lm, dst.data(), vocabulary_.data(), r);
    be.synchronize(*ctx);
    vocabulary_storage_ = be.alloc(static_cast<size_t>(r) * sizeof(int32_t));
    be.upload(vocabulary_storage_->data(), vocabulary_.data(), static_cast<size_t>(r) * sizeof(int32_t));
  }
  finalized_ = true;
}

uint64_t DraftModel::weight_bytes() const {
  return store_.bytes() + (head_storage_ ? head_storage_->size() : 0) +
         (vocabulary_storage_ ? vocabulary_storage_->size() : 0);
}

DraftWorkspace::DraftWorkspace(const DraftModel& draft, int64_t cap, int32_t rows) : capacity(cap), max_rows(rows) {
  Backend& be = draft.base().backend();
  const DraftConfig& c = draft.config();
  const int64_t H = draft.base().config().hidden_size;
  auto make = [&](int64_t r, int64_t cols, DType type) {
    storage_.push_back(be.alloc(static_cast<size_t>(r * cols) * dtype_size(type)));
    return Tensor{storage_.back()->data(), type, r, cols};
  };
  for (int32_t l = 0; l < c.num_layers; ++l) {
    k.push_back(make(cap + kTreeSlots, c.kv_dim(), be.kv_dtype()));
    v.push_back(make(cap + kTreeSlots, c.kv_dim(), be.kv_dtype()));
  }
  const DType dt = be.activation_dtype();
  features = make(rows, H, dt);
  x = make(rows, H, dt);
  a = make(rows, H, dt);
  normed = make(rows, H, dt);
  q = make(rows, c.q_dim(), dt);
  kk = make(rows, c.kv_dim(), dt);
  vv = make(rows, c.kv_dim(), dt);
  attn = make(rows, c.q_dim(), dt);
  proj = make(rows, H, dt);
  gate = make(rows, c.intermediate_size, dt);
  up = make(rows, c.intermediate_size, dt);
  logits = make(rows, draft.head_rows(), DType::F32);
  top_ids = make(kTreeSlots, kTreeSlots, DType::I32);
  top_log_probs = make(kTreeSlots, kTreeSlots, DType::F32);
  storage_.push_back(be.alloc(sizeof(DraftTreeState)));
  tree = storage_.back()->data();
}

namespace {

// The first cache row a draft call's attention reads (see DraftConfig::attention_window).
int64_t window_start(const DraftConfig& c, const DraftCall& call) {
  if (c.attention_window <= 0) return 0;
  const int64_t first = call.tree_masks ? call.tree_prefix - c.attention_window : call.slot - c.attention_window + 1;
  return std::max<int64_t>(0, first);
}

}  // namespace

void draft_forward(const DraftModel& draft, ExecContext& ctx, DraftWorkspace& ws, const DraftCall& call,
                   const Tensor& inv_freq, float attn_factor) {
  const int32_t n = call.n;
  MCPM_CHECK(n > 0 && n <= ws.max_rows && call.slot + n <= ws.capacity + DraftWorkspace::kTreeSlots);
  const ModelConfig& base = draft.base().config();
  const DraftConfig& c = draft.config();
  const DraftWeights& w = draft.weights();
  Backend& be = draft.base().backend();
  const float s = c.residual_scale;
  const AttentionShape shape{c.num_heads, c.num_kv_heads, c.head_dim};

  const Tensor x = ws.x.slice_rows(0, n), a = ws.a.slice_rows(0, n), normed = ws.normed.slice_rows(0, n);
  const Tensor f = ws.features.slice_rows(0, n);
  const Tensor q = ws.q.slice_rows(0, n), k = ws.kk.slice_rows(0, n), v = ws.vv.slice_rows(0, n);
  const Tensor attn = ws.attn.slice_rows(0, n), proj = ws.proj.slice_rows(0, n);
  const Tensor gate = ws.gate.slice_rows(0, n), up = ws.up.slice_rows(0, n);

  // h = fc_e(norm1(e)) + fc_f(norm2(f)) + bias
  if (call.resident)
    be.embedding_resident(ctx, a, draft.base().weights().embed, call.next_tokens, base.scale_emb);
  else
    be.embedding(ctx, a, draft.base().weights().embed, call.next_tokens, base.scale_emb);
  if (c.use_input_norm) {
    be.rms_norm(ctx, a, a, w.input_norm1, base.rms_norm_eps);
    be.rms_norm(ctx, normed, f, w.input_norm2, base.rms_norm_eps);
  }
  be.linear(ctx, x, a, w.fc_embed);
  be.linear(ctx, proj, c.use_input_norm ? normed : f, w.fc_feature);
  be.add_scaled(ctx, x, proj, 1.0f);
  if (w.fc_bias.data != nullptr) be.add_bias(ctx, x, w.fc_bias);

  // The layers: the target's decoder layer (engine/forward.h) over the draft's cache, one sequence.
  const LayerBuffers buffers{x, normed, q, k, v, attn, proj, gate, up};
  const int64_t first = window_start(c, call);
  AttentionSegment segment;
  segment.rows = n;
  // A window is a view of the cache that starts later: the attention ops need no window of their own.
  segment.start = call.slot - first;
  segment.tree_masks = call.tree_masks;
  segment.tree_prefix = call.tree_masks ? call.tree_prefix - first : -1;
  segment.masks_resident = call.tree_masks != nullptr && call.resident;
  segment.mask_bits = call.mask_bits;
  LayerStep step;
  step.shape = shape;
  step.residual_scale = s;
  step.eps = c.rms_norm_eps;
  step.positions = call.positions;
  step.inv_freq = inv_freq;
  step.attn_factor = attn_factor;
  step.segments = &segment;
  step.count = 1;
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const Tensor& k_cache = ws.k[static_cast<size_t>(l)];
    const Tensor& v_cache = ws.v[static_cast<size_t>(l)];
    segment.k_cache = k_cache.slice_rows(first, k_cache.rows - first);
    segment.v_cache = v_cache.slice_rows(first, v_cache.rows - first);
    step.weights = &w.layers[static_cast<size_t>(l)];
    decoder_layer(be, ctx, buffers, step);
  }
}

void draft_top_log_probs(const DraftModel& draft, ExecContext& ctx, DraftWorkspace& ws, int32_t count, int32_t k) {
  Backend& be = draft.base().backend();
  MCPM_CHECK(count >= 1 && count <= DraftWorkspace::kTreeSlots && k >= 1 && k <= DraftWorkspace::kTreeSlots);
  const Tensor out = ws.logits.slice_rows(0, count);
  be.linear(ctx, out, ws.x.slice_rows(0, count), draft.weights().head);
  be.scale(ctx, out, draft.base().config().lm_head_scale());
  // [count, k] views of the top-k buffers.
  const Tensor ids{ws.top_ids.data, DType::I32, count, k};
  const Tensor log_probs{ws.top_log_probs.data, DType::F32, count, k};
  be.draft_ops().top_log_probs(ctx, out, k, ids, log_probs);
}

}  // namespace mcpm
