// Rotary position embedding parameters: inverse frequencies (with LongRoPE factors) and the
// Hugging Face LongRoPE attention factor.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/config.h"

namespace mcpm {

struct RopeParams {
  std::vector<float> inv_freq;  // head_dim / 2 values
  float attn_factor = 1.0f;     // multiplies cos and sin
};

// inv_freq[i] = 1 / (factor_i * theta^(2i / head_dim)), factor_i = 1 without scaling; with
// LongRoPE the long factors are used when the context exceeds original_max_position_embeddings,
// else the short ones. attn_factor = sqrt(1 + ln(max/orig) / ln(orig)) when LongRoPE's
// max_position_embeddings exceeds the original, else 1.
RopeParams compute_rope(const ModelConfig& config, int64_t context_length);

}  // namespace mcpm
