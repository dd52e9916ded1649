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
  if (config.sparse.enabled) {
    const SparseAttentionParams& params = config.sparse;
    const AttentionShape shape{config.num_heads, config.num_kv_heads, config.head_dim};
    for (int32_t l = 0; l < config.num_layers; ++l)
      sparse.push_back(backend.create_sparse_attention_state(params, shape));
  }
}

void KvCache::truncate(int64_t rows) {
  for (const std::unique_ptr<AttentionState>& s : sparse) s->truncate(rows);
}

Workspace::Workspace(Backend& backend, const ModelConfig& c, int64_t n) : max_tokens(n) {
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
  logits = make(kLogitRows, c.vocab_size, DType::F32);
  inv_freq = make(1, c.head_dim / 2, DType::F32);
}

void forward(const Model& model, ExecContext& ctx, Workspace& ws, KvCache& kv, const int32_t* tokens, int32_t n,
             int64_t start, LogitRows rows, float* host_logits) {
  MCPM_CHECK(n > 0 && n <= ws.max_tokens && start + n <= kv.capacity);
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  Backend& be = model.backend();
  const float s = c.residual_scale();
  const AttentionShape shape{c.num_heads, c.num_kv_heads, c.head_dim};
  // InfLLM v2 (Hugging Face): the whole call is sparse once the total KV length reaches dense_len.
  const bool sparse = c.sparse.use_sparse(start + n);
  const SparseAttentionParams& sparse_p = c.sparse;
  MCPM_CHECK(!sparse || kv.sparse.size() == static_cast<size_t>(c.num_layers));

  std::vector<int32_t> positions(static_cast<size_t>(n));
  std::iota(positions.begin(), positions.end(), static_cast<int32_t>(start));

  const Tensor x = ws.x.slice_rows(0, n), normed = ws.normed.slice_rows(0, n);
  const Tensor q = ws.q.slice_rows(0, n), k = ws.k.slice_rows(0, n), v = ws.v.slice_rows(0, n);
  const Tensor attn = ws.attn.slice_rows(0, n), proj = ws.proj.slice_rows(0, n);
  const Tensor gate = ws.gate.slice_rows(0, n), up = ws.up.slice_rows(0, n);

  be.embedding(ctx, x, w.embed, tokens, c.scale_emb);
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w.layers[static_cast<size_t>(l)];
    // Attention block. `proj` holds the previous layer's FFN output, added here with the norm.
    if (l == 0)
      be.rms_norm(ctx, normed, x, lw.input_norm, c.rms_norm_eps);
    else
      be.add_rms_norm(ctx, normed, x, proj, s, lw.input_norm, c.rms_norm_eps);
    be.linear(ctx, q, normed, lw.q);
    be.linear(ctx, k, normed, lw.k);
    be.linear(ctx, v, normed, lw.v);
    be.rope(ctx, q, c.num_heads, c.head_dim, positions.data(), ws.inv_freq, ws.attn_factor);
    be.rope(ctx, k, c.num_kv_heads, c.head_dim, positions.data(), ws.inv_freq, ws.attn_factor);
    be.store_kv(ctx, kv.k[static_cast<size_t>(l)], kv.v[static_cast<size_t>(l)], k, v, start);
    if (sparse)
      be.sparse_attention(ctx, attn, q, kv.k[static_cast<size_t>(l)], kv.v[static_cast<size_t>(l)], shape, start,
                          sparse_p, *kv.sparse[static_cast<size_t>(l)]);
    else
      be.attention(ctx, attn, q, kv.k[static_cast<size_t>(l)], kv.v[static_cast<size_t>(l)], shape, start);
    be.linear(ctx, proj, attn, lw.o);
    // FFN block.
    be.add_rms_norm(ctx, normed, x, proj, s, lw.post_norm, c.rms_norm_eps);
    be.linear(ctx, gate, normed, lw.gate);
    be.linear(ctx, up, normed, lw.up);
    be.silu_mul(ctx, gate, gate, up);
    be.linear(ctx, proj, gate, lw.down);
  }

  // Only the rows whose logits are wanted go through the final norm and the LM head.
  const int64_t first = rows == LogitRows::Last ? n - 1 : 0;
  const int64_t count = n - first;
  const Tensor xs = x.slice_rows(first, count), ps = proj.slice_rows(first, count);
  const Tensor hs = normed.slice_rows(first, count);
  be.add_rms_norm(ctx, hs, xs, ps, s, w.final_norm, c.rms_norm_eps);
  be.scale(ctx, hs, c.lm_head_scale());
  for (int64_t r = 0; r < count; r += Workspace::kLogitRows) {
    const int64_t m = std::min(Workspace::kLogitRows, count - r);
    const Tensor out = ws.logits.slice_rows(0, m);
    be.linear(ctx, out, hs.slice_rows(r, m), w.lm_head);
    be.synchronize(ctx);
    be.download(host_logits + r * c.vocab_size, out.data, out.bytes());
  }
}

}  // namespace mcpm
