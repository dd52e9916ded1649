// The stochastic half of token sampling, shared by the host sampler (engine/sampler.cpp) and the CPU
// backend's Backend::sample_token, and mirrored by the CUDA kernels of backend/cuda/sampling.cu:
//
//   candidates  every id the token mask allows (every id without one), in id order when nothing
//               truncates; otherwise sorted by (logit desc, id asc) and cut to top_k when top_k > 0
//   softmax     p_i = float(exp((l_i - max) / T)) computed in double, max over the candidates;
//               total = sum of the doubles
//   top-p       the shortest prefix whose cumulative p_i / total reaches top_p (at least one)
//   min-p       the prefix of candidates with p_i >= min_p * p_0
//   draw        with kept = sum of the kept p_i, the first candidate whose running sum exceeds u * kept
//
// The penalties come before (PenaltyTable in backend/backend.h); greedy decoding (T <= 0) takes
// greedy_token instead. A masked-out token is never a candidate, so it has probability 0 and the
// draw over the rest is the one an unmasked draw over the same candidates would make.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/cuda/host_device.h"

namespace mcpm {

struct DrawParams {
  float temperature = 1.0f;  // > 0
  int32_t top_k = 0;         // 0 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off
  // Whether the candidates are sorted: any truncation is on.
  bool truncating() const { return top_k > 0 || top_p < 1.0f || min_p > 0.0f; }
};

// Working memory of draw_token, reused between calls.
struct DrawScratch {
  std::vector<int32_t> ids;
  std::vector<float> probs;
};

// A token mask (mcpm_token_mask_fn): token t is allowed iff bit t % 32 of words[t / 32] is set. The
// CUDA sampling kernels use it too.
MCPM_HD bool token_allowed(const uint32_t* mask, int64_t token) {
  return (mask[token >> 5] >> (token & 31)) & 1u;
}

// The greedy pick: the index of the first maximum of logits[0, vocab), among the tokens `mask`
// allows when it is not null; -1 when the mask allows none.
int32_t greedy_token(const float* logits, int32_t vocab, const uint32_t* mask = nullptr);

// Draws from the (penalized) logits[0, vocab) with the uniform number u in [0, 1), among the tokens
// `mask` allows when it is not null; -1 when the mask allows none.
int32_t draw_token(const float* logits, int32_t vocab, const DrawParams& params, double u, DrawScratch& scratch,
                   const uint32_t* mask = nullptr);

}  // namespace mcpm
