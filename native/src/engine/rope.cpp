#include "engine/rope.h"

#include <cmath>

namespace mcpm {

RopeParams compute_rope(const ModelConfig& c, int64_t context_length) {
  RopeParams p;
  const int32_t half = c.head_dim / 2;
  p.inv_freq.resize(static_cast<size_t>(half));
  const bool longrope = c.rope_scaling == MCPM_ROPE_SCALING_LONGROPE;
  const std::vector<float>* factors = nullptr;
  if (longrope)
    factors = context_length > c.original_max_position_embeddings ? &c.rope_long_factor : &c.rope_short_factor;
  for (int32_t i = 0; i < half; ++i) {
    const double exponent = static_cast<double>(2 * i) / static_cast<double>(c.head_dim);
    const double factor = factors ? static_cast<double>((*factors)[static_cast<size_t>(i)]) : 1.0;
    p.inv_freq[static_cast<size_t>(i)] =
        static_cast<float>(1.0 / (factor * std::pow(static_cast<double>(c.rope_theta), exponent)));
  }
  if (longrope && c.max_position_embeddings > c.original_max_position_embeddings) {
    const double scale = static_cast<double>(c.max_position_embeddings) / c.original_max_position_embeddings;
    p.attn_factor = static_cast<float>(
        std::sqrt(1.0 + std::log(scale) / std::log(static_cast<double>(c.original_max_position_embeddings))));
  }
  return p;
}

}  // namespace mcpm
