// Log-probabilities and top-k over a row of logits: the host definitions that the draft's tree
// expansion uses (DraftOps::top_log_probs's default) and that the CUDA kernel repeats.
#pragma once

#include <cstdint>

namespace mcpm {

// Indices of the k largest values (ties to the lower index), in descending order of value.
void top_k_indices(const float* values, int32_t n, int32_t k, int32_t* out);

// In place: x -= logsumexp(x), with lse = max + log(sum exp(x - max)) summed in double.
void log_softmax(float* x, int32_t n);

}  // namespace mcpm
