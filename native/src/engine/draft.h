// The EAGLE-2 draft model of MiniCPM4 speculative decoding (shared/reference/algorithms.md §3.1):
// one (or a few) decoder layers over the target's embedding of the next token and the target's
// final hidden state, reusing the target's embedding and LM head. Like Model, it is filled tensor
// by tensor, finalized, then immutable and shareable by sessions.
//
// Per row i (position i):  e = embed[x_{i+1}] * scale_emb
//                          h = fc_e(norm1(e)) + fc_f(norm2(f_i)) + fc_bias      (fc.weight = [fc_e | fc_f])
//                          h += s_d * attn(norm_in(h));  h += s_d * mlp(norm_post(h))   per layer
//                          logits = (h * dim_model_base / hidden) W_head^T        (no final norm)
// where f_i is the target's final-normed hidden state at position i and s_d the draft's residual
// scale (MiniCPM4: scale_depth / sqrt(target layers + 1)). With an FR-Spec vocabulary the head is
// the rows of the target LM head for those ids, with the same logit scale.
#pragma once

#include <memory>
#include <vector>

#include "engine/model.h"
#include "engine/weights.h"

namespace mcpm {

struct DraftConfig {
  int32_t num_layers = 1;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t intermediate_size = 0;
  float rms_norm_eps = 1e-6f;
  float residual_scale = 1.0f;
  bool use_input_norm = true;  // norm1/norm2 before fc (MiniCPM4 drafts)
  bool use_attn_norm = true;   // layer 0 keeps its attention input norm (MiniCPM4); plain EAGLE skips it
  // Draft attention window in cache rows (0 = whole context): a call over rows [slot, slot + n), or a
  // tree over `prefix`, reads cache rows from max(0, slot - window + 1) / max(0, prefix - window) on.
  int32_t attention_window = 0;

  int64_t q_dim() const { return static_cast<int64_t>(num_heads) * head_dim; }
  int64_t kv_dim() const { return static_cast<int64_t>(num_kv_heads) * head_dim; }

  // Validates against the target; throws INVALID_ARGUMENT naming the field.
  static DraftConfig from_abi(const mcpm_draft_config& c, const ModelConfig& base);
};

struct DraftWeights {
  LinearWeight fc_embed, fc_feature;  // [H, H]: the two halves of fc.weight [H, 2H] (dense or int4)
  Tensor fc_bias;               // [H]; data == nullptr when the checkpoint has none
  Tensor input_norm1, input_norm2;
  std::vector<LayerWeights> layers;
  Tensor head;                  // [head_rows, H]
};

class DraftModel {
 public:
  DraftModel(std::shared_ptr<const Model> base, DraftConfig config);

  void set_tensor(const char* name, mcpm_dtype dtype, const int64_t* shape, int32_t ndim, const void* data,
                  size_t data_size);
  // FR-Spec: restricts the draft head to these target token ids (row i = ids[i]). Validated:
  // 1 <= n <= vocab, ids unique and in range.
  void set_vocabulary(const int32_t* ids, int32_t n);
  void finalize();

  bool finalized() const { return finalized_; }
  const Model& base() const { return *base_; }
  const DraftConfig& config() const { return config_; }
  const DraftWeights& weights() const { return weights_; }
  // Target token id of head row i; empty means the head is the whole vocabulary.
  const std::vector<int32_t>& vocabulary() const { return vocabulary_; }
  int32_t head_rows() const { return static_cast<int32_t>(weights_.head.rows); }
  // The vocabulary in backend memory (DraftOps::tree_expand maps head rows to tokens with it); nullptr
  // when the head is the whole vocabulary.
  const int32_t* resident_vocabulary() const {
    return vocabulary_storage_ ? static_cast<const int32_t*>(vocabulary_storage_->data()) : nullptr;
  }
  uint64_t weight_bytes() const;

 private:
  std::shared_ptr<const Model> base_;
  DraftConfig config_;
  DraftWeights weights_;
  WeightStore store_;
  std::vector<int32_t> vocabulary_;
  std::unique_ptr<Buffer> head_storage_, vocabulary_storage_;
  bool finalized_ = false;
};

// A session's draft state: the draft's KV cache (one row per committed target position, plus
// `tree_slots` scratch rows for the frontier of the tree being drafted) and its activations.
struct DraftWorkspace {
  DraftWorkspace(const DraftModel& draft, int64_t capacity, int32_t max_rows);
  int64_t capacity;   // committed rows
  int32_t max_rows;   // rows per draft call
  std::vector<Tensor> k, v;
  Tensor features;    // [max_rows, H] input features
  Tensor x;           // [max_rows, H] residual stream; the draft's output features after a call
  Tensor a, normed;   // [max_rows, H]
  Tensor q, kk, vv, attn, proj, gate, up;
  Tensor logits;      // [max_rows, head_rows] f32
  Tensor top_ids;     // [kTreeSlots, kTreeSlots] I32: the head's top-k per row (draft_top_log_probs)
  Tensor top_log_probs;  // [kTreeSlots, kTreeSlots] f32: their log-probabilities
  void* tree = nullptr;  // the DraftTreeState of the tree being drafted (backend memory)

  static constexpr int32_t kTreeSlots = 64;

 private:
  std::vector<std::unique_ptr<Buffer>> storage_;
};

struct DraftCall {
  // x_{i+1} per row: host memory, or backend memory when `resident` (a tree level whose tokens
  // DraftOps::tree_expand chose on the backend).
  const int32_t* next_tokens = nullptr;
  int32_t n = 0;
  const int32_t* positions = nullptr;    // per row (host)
  int64_t slot = 0;                      // KV rows written: [slot, slot + n)
  // nullptr: causal (row i sees KV rows [0, slot + i]); else tree mode over prefix `tree_prefix`, the
  // masks in the same memory as next_tokens, every bit below `mask_bits` (resident masks).
  const uint64_t* tree_masks = nullptr;
  int64_t tree_prefix = 0;
  bool resident = false;
  int32_t mask_bits = 64;
};

// Runs the draft over rows whose features are in ws.features rows [0, n); the output features are
// left in ws.x rows [0, n). `inv_freq`/`attn_factor`: the target session's RoPE tables.
void draft_forward(const DraftModel& draft, ExecContext& ctx, DraftWorkspace& ws, const DraftCall& call,
                   const Tensor& inv_freq, float attn_factor);

// The draft head over ws.x rows [0, count), reduced where the logits are to each row's k best head
// rows and their log-probabilities (DraftOps::top_log_probs) in ws.top_ids / ws.top_log_probs rows
// [0, count) (k columns each).
void draft_top_log_probs(const DraftModel& draft, ExecContext& ctx, DraftWorkspace& ws, int32_t count, int32_t k);

}  // namespace mcpm
