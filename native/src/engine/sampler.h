// Token sampling on the host: penalties, temperature, top-k, top-p, min-p and a seeded RNG.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "common/token_draw.h"
#include "engine/speculative.h"
#include "minicpm4.h"

namespace mcpm {

struct SamplingConfig {
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int32_t penalty_last_n = 64;
  uint64_t seed = 0;
  std::vector<int32_t> stop_tokens;
  int32_t max_new_tokens = 0;
  // Speculative decoding (sessions with a draft); spec.num_iter == 0 turns it off.
  SpecParams spec;
  // Grammar-constrained sampling: the host's callback for the set of tokens allowed next (null: none).
  mcpm_token_mask_fn token_mask = nullptr;
  void* token_mask_user_data = nullptr;

  // Validates and copies; throws INVALID_ARGUMENT naming the bad field.
  static SamplingConfig from_abi(const mcpm_sampling_params& p);
};

// xoshiro256** seeded through splitmix64: fast, small state, identical on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { seed_with(seed); }
  void seed_with(uint64_t seed);
  uint64_t next();
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

 private:
  uint64_t s_[4];
};

class Sampler {
 public:
  void configure(SamplingConfig config);
  const SamplingConfig& config() const { return config_; }
  bool is_stop(int32_t token) const;

  // Draws one token from logits[0, vocab) given the context tokens (for the penalties), among the
  // tokens `mask` allows when it is not null (it must allow one).
  int32_t sample(const float* logits, int32_t vocab, const int32_t* context, int64_t context_length,
                 const uint32_t* mask = nullptr);

  // Greedy (temperature <= 0): the token is the argmax of the penalized logits, which a backend can
  // find where the logits are (Backend::greedy_sample) without this sampler.
  bool greedy() const { return config_.temperature <= 0.0f; }
  // The penalties for the next token after context[0, context_length): the distinct in-vocabulary tokens
  // of the penalty window and their counts. Valid until the next call on this sampler.
  PenaltyTable penalties(int32_t vocab, const int32_t* context, int64_t context_length);
  // The temperature and truncations of the current config, and the uniform number of the next draw
  // (one per sampled token, as sample() takes it): what Backend::sample_token needs.
  DrawParams draw_params() const;
  double next_uniform() { return rng_.uniform(); }

 private:
  SamplingConfig config_;
  Rng rng_;
  std::vector<float> logits_;   // working copy
  DrawScratch scratch_;         // candidates of draw_token
  std::vector<int32_t> window_; // sorted penalty window
  std::vector<int32_t> penalty_ids_;
  std::vector<float> penalty_counts_;
};

}  // namespace mcpm
