// The engine's own copy of the architecture (mcpm_model_config with owned arrays), validated once.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "minicpm4.h"

namespace mcpm {

// InfLLM v2 block-sparse attention (mcpm_model_config.sparse_*), all lengths in tokens: the op's
// parameters plus the model-level switch.
struct SparseAttentionConfig : SparseAttentionParams {
  bool enabled = false;
  int32_t dense_len = 8192;  // -1: always sparse

  // Hugging Face switch: a forward call whose total KV length (cache + chunk) is below dense_len is
  // dense; otherwise every query of the call uses sparse attention.
  bool use_sparse(int64_t total_length) const { return enabled && total_length >= dense_len; }
};

struct ModelConfig {
  int32_t vocab_size = 0;
  int32_t hidden_size = 0;
  int32_t num_layers = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t intermediate_size = 0;
  int32_t max_position_embeddings = 0;
  float rms_norm_eps = 0;
  float rope_theta = 0;
  mcpm_rope_scaling rope_scaling = MCPM_ROPE_SCALING_NONE;
  std::vector<float> rope_short_factor;
  std::vector<float> rope_long_factor;
  int32_t original_max_position_embeddings = 0;
  float scale_emb = 1;
  float scale_depth = 1;
  float dim_model_base = 1;
  bool tie_word_embeddings = false;
  SparseAttentionConfig sparse;

  int64_t q_dim() const { return static_cast<int64_t>(num_heads) * head_dim; }
  int64_t kv_dim() const { return static_cast<int64_t>(num_kv_heads) * head_dim; }
  // Each sublayer output is multiplied by this before it joins the residual stream.
  float residual_scale() const;
  // The final hidden state is multiplied by this before the LM head.
  float lm_head_scale() const { return dim_model_base / static_cast<float>(hidden_size); }

  // Copies and validates a host config; throws INVALID_ARGUMENT naming the offending field.
  static ModelConfig from_abi(const mcpm_model_config& c);
};

}  // namespace mcpm
