// The MiniCPM4 forward pass (Hugging Face MiniCPMForCausalLM semantics):
//
//   h = embed[ids] * scale_emb
//   for each layer:
//     a = rmsnorm(h) * w_in
//     q, k, v = a Wq^T, a Wk^T, a Wv^T;  q, k = rope(q, k)          (rotate-half)
//     h += (softmax(q k^T / sqrt(d), causal, GQA) v) Wo^T * s        (s = scale_depth / sqrt(layers))
//          (InfLLM v2 block-sparse attention instead once a sparse model's context reaches dense_len)
//     f = rmsnorm(h) * w_post
//     h += ((silu(f Wg^T) * (f Wu^T)) Wd^T) * s
//   logits = (rmsnorm(h) * w_final * dim_model_base / hidden) W_lm^T
//
// Each residual add is fused with the norm that follows it (backend add_rms_norm).
#include "engine/forward.h"

#include <algorithm>
#include <numeric>

#include "common/error.h"

namespace mcpm {

KvCache::KvCache(Backend& backend, const ModelConfig& config, int64_t cap) : capacity(cap) {
  const DType dt = backend.kv_dtype();
  const int64_t cols = config.kv_dim();
  const size_t bytes = static_cast<size_t>(cap) * static_cast<size_t>(cols) * dtype_size(dt);
  for (int32_t l = 0; l < config.num_layers; ++l) {
    for (std::vector<Tensor>* side : {&k, &v}) {
      storage_.push_back(backend.alloc(bytes));
      side->push_back(Tensor{storage_.back()->data(), dt, cap, cols});
    }
  }
  // Sparse state only when a call on this cache can reach dense_len: a shorter context is always dense
  // (so a backend without InfLLM v2 still serves sparse models at short contexts).
  if (config.sparse.enabled && config.sparse.use_sparse(cap)) {
    const SparseAttentionParams& params = config.sparse;
    const AttentionShape shape{config.num_heads, config.num_kv_heads, config.head_dim};
    for (int32_t l = 0; l < config.num_layers; ++l)
      sparse.push_back(backend.create_sparse_attention_state(params, shape, cap));
  }
}

void KvCache::truncate(int64_t rows) {
  for (const std::unique_ptr<AttentionState>& s : sparse) s->truncate(rows);
}

Workspace::Workspace(Backend& backend, const ModelConfig& c, int64_t n, int64_t rows)
    : max_tokens(n), logit_rows(rows) {
  const DType dt = backend.activation_dtype();
  auto make = [&](int64_t rows, int64_t cols, DType type) {
    storage_.push_back(backend.alloc(static_cast<size_t>(rows * cols) * dtype_size(type)));
    return Tensor{storage_.back()->data(), type, rows, cols};
  };
  x = make(n, c.hidden_size, dt);
  normed = make(n, c.hidden_size, dt);
  q = make(n, c.q_dim(), dt);
  k = make(n, c.kv_dim(), dt);
  v = make(n, c.kv_dim(), dt);
  attn = make(n, c.q_dim(), dt);
  proj = make(n, c.hidden_size, dt);
  gate = make(n, c.intermediate_size, dt);
  up = make(n, c.intermediate_size, dt);
  logits = make(logit_rows, c.vocab_size, DType::F32);
  inv_freq = make(1, c.head_dim / 2, DType::F32);
}

bool uses_sparse_attention(const ModelConfig& config, int64_t end) { return config.sparse.use_sparse(end); }

void forward_layers(const Model& model, ExecContext& ctx, Workspace& ws, const Batch& batch) {
  const int32_t n = batch.n;
  MCPM_CHECK(n > 0 && n <= ws.max_tokens && batch.count > 0);
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  Backend& be = model.backend();
  const float s = c.residual_scale();
  const AttentionShape shape{c.num_heads, c.num_kv_heads, c.head_dim};

  // Each sequence's attention: InfLLM v2 (Hugging Face) makes a sequence's whole call sparse once its
  // KV length reaches dense_len; tree mode never is.
  std::vector<AttentionSegment> segments(static_cast<size_t>(batch.count));
  std::vector<char> sparse(static_cast<size_t>(batch.count));
  int64_t row = 0;
  for (int32_t i = 0; i < batch.count; ++i) {
    const BatchSequence& q = batch.sequences[i];
    MCPM_CHECK(q.kv != nullptr && q.rows > 0 && q.start >= 0 && q.start + q.rows <= q.kv->capacity);
    sparse[static_cast<size_t>(i)] = uses_sparse_attention(c, q.start + q.rows);
    MCPM_CHECK(!sparse[static_cast<size_t>(i)] || q.kv->sparse.size() == static_cast<size_t>(c.num_layers));
    MCPM_CHECK(!(sparse[static_cast<size_t>(i)] && q.tree_masks));
    AttentionSegment& seg = segments[static_cast<size_t>(i)];
    seg.row = row;
    seg.rows = q.rows;
    seg.start = q.start;
    seg.tree_masks = q.tree_masks;
    row += q.rows;
  }
  MCPM_CHECK(row == n);

  const Tensor x = ws.x.slice_rows(0, n), normed = ws.normed.slice_rows(0, n);
  const Tensor q = ws.q.slice_rows(0, n), k = ws.k.slice_rows(0, n), v = ws.v.slice_rows(0, n);
  const Tensor attn = ws.attn.slice_rows(0, n), proj = ws.proj.slice_rows(0, n);
  const Tensor gate = ws.gate.slice_rows(0, n), up = ws.up.slice_rows(0, n);

  be.embedding(ctx, x, w.embed, batch.tokens, c.scale_emb);
  const LayerBuffers buffers{x, normed, q, k, v, attn, proj, gate, up};
  LayerStep step;
  step.shape = shape;
  step.residual_scale = s;
  step.eps = c.rms_norm_eps;
  step.positions = batch.positions;
  step.inv_freq = ws.inv_freq;
  step.attn_factor = ws.attn_factor;
  step.segments = segments.data();
  step.count = batch.count;
  step.leave_residual = true;  // fused with the next layer's input norm, or the final norm
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const size_t layer = static_cast<size_t>(l);
    for (int32_t i = 0; i < batch.count; ++i) {
      AttentionSegment& seg = segments[static_cast<size_t>(i)];
      KvCache& kv = *batch.sequences[i].kv;
      seg.k_cache = kv.k[layer];
      seg.v_cache = kv.v[layer];
      seg.sparse = sparse[static_cast<size_t>(i)] ? kv.sparse[layer].get() : nullptr;
    }
    step.weights = &w.layers[layer];
    step.pending_residual = l > 0;
    decoder_layer(be, ctx, buffers, step);
  }
}

void decoder_layer(Backend& be, ExecContext& ctx, const LayerBuffers& b, const LayerStep& step) {
  const LayerWeights& lw = *step.weights;
  const float s = step.residual_scale;
  const bool input_norm = lw.input_norm.data != nullptr;
  MCPM_CHECK(input_norm || !step.pending_residual);
  // Attention block.
  if (step.pending_residual)
    be.add_rms_norm(ctx, b.normed, b.x, b.proj, s, lw.input_norm, step.eps);
  else if (input_norm)
    be.rms_norm(ctx, b.normed, b.x, lw.input_norm, step.eps);
  {
    const Tensor outs[3] = {b.q, b.k, b.v};
    const LinearWeight* weights[3] = {&lw.q, &lw.k, &lw.v};
    be.linears(ctx, outs, input_norm ? b.normed : b.x, weights, 3);
  }
  be.rope(ctx, b.q, step.shape.num_heads, step.shape.head_dim, step.positions, step.inv_freq, step.attn_factor);
  be.rope(ctx, b.k, step.shape.num_kv_heads, step.shape.head_dim, step.positions, step.inv_freq, step.attn_factor);
  be.attention_batch(ctx, b.attn, b.q, b.k, b.v, step.segments, step.count, step.shape);
  be.linear(ctx, b.proj, b.attn, lw.o);
  // FFN block.
  be.add_rms_norm(ctx, b.normed, b.x, b.proj, s, lw.post_norm, step.eps);
  {
    const Tensor outs[2] = {b.gate, b.up};
    const LinearWeight* weights[2] = {&lw.gate, &lw.up};
    be.linears(ctx, outs, b.normed, weights, 2);
  }
  be.silu_mul(ctx, b.gate, b.gate, b.up);
  be.linear(ctx, b.proj, b.gate, lw.down);
  if (!step.leave_residual) be.add_scaled(ctx, b.x, b.proj, s);
}

int32_t forward_batch(const Model& model, ExecContext& ctx, Workspace& ws, const Batch& batch) {
  forward_layers(model, ctx, ws, batch);
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  Backend& be = model.backend();
  const int32_t n = batch.n;
  be.add_rms_norm(ctx, ws.normed.slice_rows(0, n), ws.x.slice_rows(0, n), ws.proj.slice_rows(0, n),
                  c.residual_scale(), w.final_norm, c.rms_norm_eps);
  // The logit rows, gathered into ws.proj (free now) so the LM head runs once over all of them.
  std::vector<int32_t> dst, src;
  int32_t row = 0;
  for (int32_t i = 0; i < batch.count; ++i) {
    row += batch.sequences[i].rows;
    if (!batch.sequences[i].wants_logits) continue;
    dst.push_back(static_cast<int32_t>(dst.size()));
    src.push_back(row - 1);
  }
  const int32_t m = static_cast<int32_t>(dst.size());
  if (m == 0) return 0;
  MCPM_CHECK(m <= ws.logit_rows);
  be.copy_rows(ctx, ws.proj, ws.normed, dst.data(), src.data(), m);
  const Tensor out = ws.logits.slice_rows(0, m);
  be.linear(ctx, out, ws.proj.slice_rows(0, m), w.lm_head);
  be.scale(ctx, out, c.lm_head_scale());
  return m;
}

void forward(const Model& model, ExecContext& ctx, Workspace& ws, KvCache& kv, const ForwardArgs& a) {
  const int32_t n = a.n;
  const int64_t start = a.start;
  MCPM_CHECK(n > 0 && n <= ws.max_tokens && start + n <= kv.capacity);
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  Backend& be = model.backend();
  const float s = c.residual_scale();

  std::vector<int32_t> default_positions;
  const int32_t* positions = a.positions;
  if (positions == nullptr) {
    default_positions.resize(static_cast<size_t>(n));
    std::iota(default_positions.begin(), default_positions.end(), static_cast<int32_t>(start));
    positions = default_positions.data();
  }
  BatchSequence sequence;
  sequence.kv = &kv;
  sequence.start = start;
  sequence.rows = n;
  sequence.tree_masks = a.tree_masks;
  Batch batch;
  batch.tokens = a.tokens;
  batch.positions = positions;
  batch.n = n;
  batch.sequences = &sequence;
  batch.count = 1;
  forward_layers(model, ctx, ws, batch);
  const Tensor x = ws.x.slice_rows(0, n), normed = ws.normed.slice_rows(0, n), proj = ws.proj.slice_rows(0, n);

  // Only the rows whose logits (or features) are wanted go through the final norm; only the logit
  // rows through the LM head. The LM-head input scale is applied to the logits, which leaves the
  // normed rows unscaled for an EAGLE draft.
  const int64_t logit_first = a.rows == LogitRows::Last ? n - 1 : 0;
  const int64_t first = a.keep_features ? 0 : logit_first;
  be.add_rms_norm(ctx, normed.slice_rows(first, n - first), x.slice_rows(first, n - first),
                  proj.slice_rows(first, n - first), s, w.final_norm, c.rms_norm_eps);
  const int64_t count = n - logit_first;
  if (a.host_logits == nullptr) {
    if (a.device_logits) {
      MCPM_CHECK(count <= ws.logit_rows);
      const Tensor out = ws.logits.slice_rows(0, count);
      be.linear(ctx, out, normed.slice_rows(logit_first, count), w.lm_head);
      be.scale(ctx, out, c.lm_head_scale());
    }
    return;
  }
  for (int64_t r = 0; r < count; r += ws.logit_rows) {
    const int64_t m = std::min(ws.logit_rows, count - r);
    const Tensor out = ws.logits.slice_rows(0, m);
    be.linear(ctx, out, normed.slice_rows(logit_first + r, m), w.lm_head);
    be.scale(ctx, out, c.lm_head_scale());
    be.synchronize(ctx);
    be.download(a.host_logits + r * c.vocab_size, out.data, out.bytes());
  }
}

}  // namespace mcpm
