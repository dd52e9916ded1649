// Naive double-precision MiniCPM4 forward pass (Hugging Face MiniCPMForCausalLM semantics) over the
// host copy of a TinyModel's weights. Independent of the engine: used as the ground truth.
#ifndef MCPM_TESTS_REFERENCE_FORWARD_H
#define MCPM_TESTS_REFERENCE_FORWARD_H

#include <cstdint>
#include <vector>

#include "test_util.h"

namespace mcpm_test {

struct RefOptions {
  // The session's KV capacity, which picks the LongRoPE factors; 0 = min(max_position_embeddings, 4096)
  // as the engine's default.
  int32_t context_capacity = 0;

  // Round what the CUDA backend rounds (cuda_internal.cuh): every linear layer's input to the weight's
  // dtype (bf16/fp16 weights), and keys and values (after RoPE) to bf16 as its KV cache stores them.
  // The reference is then the exact result of the CUDA backend's arithmetic model.
  bool cuda_rounding = false;

  // Deliberate deviations from the correct math. Only used to show that the comparison tolerance
  // would detect the corresponding engine bug; never used as a ground truth.
  bool bug_no_attention_factor = false;  // LongRoPE attention factor forced to 1
  bool bug_swap_rope_factors = false;    // short <-> long factor choice inverted
  bool bug_interleaved_rope = false;     // GPT-J pairs (2i, 2i+1) instead of rotate-half
  bool bug_gqa_modulo = false;           // query head h uses kv head h % kv_heads
  bool bug_non_causal = false;           // attention sees future tokens
  bool bug_no_residual_scale = false;    // sublayer outputs not scaled by scale_depth/sqrt(L)
  bool bug_no_scale_emb = false;         // embeddings not scaled
  bool bug_no_lm_head_scale = false;     // LM head input not scaled by dim_model_base/hidden
  bool bug_rope_theta_off = false;       // theta used as theta^(i/d) instead of theta^(2i/d)
};

// Logits [tokens.size(), vocab], row-major, for the sequence placed at positions 0..n-1.
std::vector<double> ReferenceLogits(const TinyModel& model, const std::vector<int32_t>& tokens,
                                    const RefOptions& opt = RefOptions());

}  // namespace mcpm_test

#endif  // MCPM_TESTS_REFERENCE_FORWARD_H
