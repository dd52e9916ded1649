#include "engine/sampler.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>

#include "common/error.h"
#include "common/token_draw.h"

namespace mcpm {

SamplingConfig SamplingConfig::from_abi(const mcpm_sampling_params& p) {
  auto bad = [](const char* field, const std::string& why) {
    invalid_argument(std::string("invalid sampling params: ") + field + " " + why);
  };
  if (!std::isfinite(p.temperature)) bad("temperature", "must be a number (<= 0 means greedy)");
  if (p.top_k < 0) bad("top_k", "must be >= 0");
  if (!std::isfinite(p.top_p) || p.top_p <= 0 || p.top_p > 1) bad("top_p", "must be in (0, 1]");
  if (!std::isfinite(p.min_p) || p.min_p < 0 || p.min_p > 1) bad("min_p", "must be in [0, 1]");
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0) bad("repetition_penalty", "must be > 0");
  if (!std::isfinite(p.frequency_penalty)) bad("frequency_penalty", "must be a number");
  if (!std::isfinite(p.presence_penalty)) bad("presence_penalty", "must be a number");
  if (p.penalty_last_n < -1) bad("penalty_last_n", "must be >= -1");
  if (p.stop_token_count < 0 || (p.stop_token_count > 0 && p.stop_tokens == nullptr))
    bad("stop_tokens", "must hold stop_token_count ids");
  if (p.max_new_tokens < 0) bad("max_new_tokens", "must be >= 0");
  SamplingConfig c;
  c.temperature = p.temperature;
  c.top_k = p.top_k;
  c.top_p = p.top_p;
  c.min_p = p.min_p;
  c.repetition_penalty = p.repetition_penalty;
  c.frequency_penalty = p.frequency_penalty;
  c.presence_penalty = p.presence_penalty;
  c.penalty_last_n = p.penalty_last_n;
  c.seed = p.seed;
  if (p.stop_token_count > 0) c.stop_tokens.assign(p.stop_tokens, p.stop_tokens + p.stop_token_count);
  c.max_new_tokens = p.max_new_tokens;
  c.token_mask = p.token_mask;
  c.token_mask_user_data = p.token_mask_user_data;
  if (p.speculative == 0) {
    c.spec.num_iter = 0;
  } else {
    c.spec.num_iter = p.spec_num_iter;
    c.spec.topk_per_iter = p.spec_topk_per_iter;
    c.spec.tree_size = p.spec_tree_size;
    c.spec.adaptive = p.spec_tree_size == MCPM_SPEC_TREE_AUTO;
    c.spec.validate(INT32_MAX);  // the draft's vocabulary is checked when a session takes the params
  }
  return c;
}

void Rng::seed_with(uint64_t seed) {
  for (uint64_t& s : s_) {  // splitmix64
    seed += 0x9e3779b97f4a7c15ull;
    uint64_t z = seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    s = z ^ (z >> 31);
  }
}

uint64_t Rng::next() {
  auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

void Sampler::configure(SamplingConfig config) {
  config_ = std::move(config);
  rng_.seed_with(config_.seed);
}

bool Sampler::is_stop(int32_t token) const {
  return std::find(config_.stop_tokens.begin(), config_.stop_tokens.end(), token) != config_.stop_tokens.end();
}

PenaltyTable Sampler::penalties(int32_t vocab, const int32_t* context, int64_t context_length) {
  const SamplingConfig& c = config_;
  PenaltyTable t;
  t.repetition = c.repetition_penalty;
  t.frequency = c.frequency_penalty;
  t.presence = c.presence_penalty;
  penalty_ids_.clear();
  penalty_counts_.clear();
  if (c.repetition_penalty == 1.0f && c.frequency_penalty == 0.0f && c.presence_penalty == 0.0f) return t;
  const int64_t n = c.penalty_last_n < 0 ? context_length : std::min<int64_t>(c.penalty_last_n, context_length);
  window_.assign(context + context_length - n, context + context_length);
  std::sort(window_.begin(), window_.end());
  for (size_t i = 0; i < window_.size();) {
    size_t j = i;
    while (j < window_.size() && window_[j] == window_[i]) ++j;
    if (window_[i] >= 0 && window_[i] < vocab) {
      penalty_ids_.push_back(window_[i]);
      penalty_counts_.push_back(static_cast<float>(j - i));
    }
    i = j;
  }
  t.ids = penalty_ids_.data();
  t.counts = penalty_counts_.data();
  t.n = static_cast<int32_t>(penalty_ids_.size());
  return t;
}

int32_t Sampler::sample(const float* logits, int32_t vocab, const int32_t* context, int64_t context_length,
                        const uint32_t* mask) {
  const SamplingConfig& c = config_;
  logits_.assign(logits, logits + vocab);
  apply_penalties(logits_.data(), penalties(vocab, context, context_length));
  const int32_t token = c.temperature <= 0.0f ? greedy_token(logits_.data(), vocab, mask)
                                              : draw_token(logits_.data(), vocab, draw_params(), rng_.uniform(), scratch_, mask);
  MCPM_CHECK(token >= 0);  // the mask allows a token
  return token;
}

DrawParams Sampler::draw_params() const {
  DrawParams d;
  d.temperature = config_.temperature;
  d.top_k = config_.top_k;
  d.top_p = config_.top_p;
  d.min_p = config_.min_p;
  return d;
}

}  // namespace mcpm
