// The MiniCPM4 forward pass over a chunk of tokens, composed from backend ops.
#pragma once

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "engine/model.h"
#include "engine/rope.h"

namespace mcpm {

// Per-layer K and V caches [capacity, kv_heads * head_dim] in the backend's KV dtype, plus the
// per-layer InfLLM v2 state (compressed keys) when the config enables sparse attention.
struct KvCache {
  KvCache(Backend& backend, const ModelConfig& config, int64_t capacity);
  int64_t capacity;
  std::vector<Tensor> k, v;
  std::vector<std::unique_ptr<AttentionState>> sparse;  // per layer; empty when sparse attention is off

  // The cache now holds only rows [0, rows) (rewind, reset, failed evaluation): drops the sparse
  // state derived from later rows, which will be rewritten.
  void truncate(int64_t rows);

 private:
  std::vector<std::unique_ptr<Buffer>> storage_;
};

// Activation buffers sized for `max_tokens` tokens per forward call, plus the LM-head output.
struct Workspace {
  // logit_rows: LM-head rows per pass (bounds the logits buffer; a speculative session verifies a
  // whole tree of up to 64 rows in one pass).
  Workspace(Backend& backend, const ModelConfig& config, int64_t max_tokens, int64_t logit_rows = 16);
  int64_t max_tokens;
  int64_t logit_rows;
  Tensor x;        // residual stream [n, hidden]
  Tensor normed;   // [n, hidden]
  Tensor q;        // [n, heads * head_dim]
  Tensor k, v;     // [n, kv_heads * head_dim]
  Tensor attn;     // [n, heads * head_dim]
  Tensor proj;     // sublayer output [n, hidden]
  Tensor gate, up; // [n, intermediate]
  Tensor logits;   // [logit_rows, vocab]
  Tensor inv_freq; // [head_dim / 2] f32
  float attn_factor = 1.0f;


 private:
  std::vector<std::unique_ptr<Buffer>> storage_;
};

enum class LogitRows { Last, All };

// One forward call over tokens[0, n) written to cache rows [start, start + n).
struct ForwardArgs {
  const int32_t* tokens = nullptr;
  int32_t n = 0;
  int64_t start = 0;
  // RoPE positions of the tokens (host); nullptr means start + i.
  const int32_t* positions = nullptr;
  // Tree mode (speculative verification): token i attends to cache rows [0, start) and to rows
  // start + j for each set bit j of tree_masks[i] (see Backend::tree_attention). nullptr: causal.
  const uint64_t* tree_masks = nullptr;
  LogitRows rows = LogitRows::Last;
  float* host_logits = nullptr;  // [vocab] (Last) or [n, vocab] (All)
  // Without host_logits: leave the wanted rows' logits in ws.logits rows [0, 1) (Last) or [0, n) (All,
  // n <= ws.logit_rows) on the backend, not copied to the host (Backend::greedy_sample, a recorded
  // verification step).
  bool device_logits = false;
  // Leave the final-normed hidden state of every token (before the LM-head scale) in ws.normed
  // rows [0, n): the features an EAGLE draft reads.
  bool keep_features = false;
};

// One sequence's consecutive rows in a Batch: written to its cache rows [start, start + rows).
struct BatchSequence {
  KvCache* kv = nullptr;
  int64_t start = 0;
  int32_t rows = 0;
  // Tree mode (see ForwardArgs::tree_masks), host [rows]; nullptr: causal.
  const uint64_t* tree_masks = nullptr;
  bool wants_logits = true;  // the logits of its last row
};

// The rows of one forward pass: one sequence (a session's prefill chunk, decode step or tree) or
// several (continuous batching: the decode steps and prefill chunks of many sessions). Row r has
// token tokens[r] at RoPE position positions[r]; the sequences cover rows [0, n) in order. Every
// sequence shares the workspace's RoPE table (the batch's sessions have the same RoPE parameters).
struct Batch {
  const int32_t* tokens = nullptr;     // host [n]
  const int32_t* positions = nullptr;  // host [n]
  int32_t n = 0;
  const BatchSequence* sequences = nullptr;
  int32_t count = 0;
};

// One decoder layer's activation buffers (rows [0, n) in use): the residual stream x, the normed
// sublayer input, q/k/v, the attention output, the sublayer output proj, and the FFN's gate/up.
struct LayerBuffers {
  Tensor x, normed, q, k, v, attn, proj, gate, up;
};

// How a decoder layer runs: its weights and geometry, the rows' RoPE positions and tables, each
// sequence's attention segment (this layer's caches), and where its residual adds go.
struct LayerStep {
  const LayerWeights* weights = nullptr;  // input_norm.data == nullptr: no attention input norm (a plain EAGLE draft)
  AttentionShape shape;
  float residual_scale = 1.0f;
  float eps = 1e-6f;
  const int32_t* positions = nullptr;  // host [n]
  Tensor inv_freq;
  float attn_factor = 1.0f;
  const AttentionSegment* segments = nullptr;
  int32_t count = 0;
  // proj holds the previous sublayer's output, not yet added to x: added here, fused with the norm.
  bool pending_residual = false;
  // Leave this layer's FFN output in proj for the caller to add (fused with its next norm) instead of
  // adding it here.
  bool leave_residual = false;
};

// One MiniCPM4 decoder layer, target or EAGLE draft:
//   x += proj * s (pending); a = norm_in(x);  q, k, v = a Wq, a Wk, a Wv;  rope(q, k)
//   x += attention(q, k, v) Wo * s;  f = norm_post(x);  proj = (silu(f Wg) * (f Wu)) Wd;  x += proj * s
void decoder_layer(Backend& be, ExecContext& ctx, const LayerBuffers& b, const LayerStep& step);

// Runs the decoder layers over a batch: embedding, then every layer. Leaves the residual stream in
// ws.x and the last layer's FFN output in ws.proj rows [0, n), not yet added (the caller fuses that
// add with the final norm). The one decoder-layer stack of the target model.
void forward_layers(const Model& model, ExecContext& ctx, Workspace& ws, const Batch& batch);

// A whole forward pass over a batch of sequences: the final-normed hidden state of every row stays
// in ws.normed rows [0, n) (a draft's features) and the logits of each sequence that wants them, in
// sequence order, in ws.logits rows [0, m) on the backend (m <= ws.logit_rows). Returns m.
int32_t forward_batch(const Model& model, ExecContext& ctx, Workspace& ws, const Batch& batch);

// Evaluates the tokens (n <= ws.max_tokens, start + n <= capacity): writes their K/V into the cache
// and the requested logits to host memory. A sparse (InfLLM v2) model cannot run tree mode once
// sparse attention is active; the caller checks with uses_sparse_attention().
void forward(const Model& model, ExecContext& ctx, Workspace& ws, KvCache& kv, const ForwardArgs& args);

// Causal shorthand: tokens at positions start .. start+n-1.
inline void forward(const Model& model, ExecContext& ctx, Workspace& ws, KvCache& kv, const int32_t* tokens,
                    int32_t n, int64_t start, LogitRows rows, float* host_logits) {
  ForwardArgs args;
  args.tokens = tokens;
  args.n = n;
  args.start = start;
  args.rows = rows;
  args.host_logits = host_logits;
  forward(model, ctx, ws, kv, args);
}

// Whether a forward call whose cache ends at row `end` runs InfLLM v2 sparse attention.
bool uses_sparse_attention(const ModelConfig& config, int64_t end);

}  // namespace mcpm
