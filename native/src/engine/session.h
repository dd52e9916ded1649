// A session: one conversation's KV cache, token history, pending logits and sampler over a shared,
// immutable model. Used by one thread at a time (the C API enforces it); request_abort() is the
// only member any thread may call concurrently.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "engine/forward.h"
#include "engine/model.h"
#include "engine/sampler.h"

namespace mcpm {

struct SessionStats {
  int64_t prefill_tokens = 0, prefill_ns = 0;
  int64_t decode_tokens = 0, decode_ns = 0;
  int64_t sample_ns = 0;
  int64_t generated_tokens = 0;
};

struct GenerateResult {
  int32_t count = 0;
  mcpm_finish_reason finish = MCPM_FINISH_NONE;
  bool cancelled = false;
};

class Session {
 public:
  Session(std::shared_ptr<const Model> model, int32_t context_capacity, int32_t prefill_chunk);

  const Model& model() const { return *model_; }
  int32_t length() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t capacity() const { return static_cast<int32_t>(kv_.capacity); }
  const std::vector<int32_t>& tokens() const { return tokens_; }

  // Throws CONTEXT_FULL, CANCELLED (session rewound to its previous length), INVALID_ARGUMENT.
  void prefill(const int32_t* tokens, int32_t n, mcpm_logits_mode mode, float* logits, size_t logits_capacity);
  void decode(int32_t token, float* logits, size_t logits_capacity);
  void rewind(int32_t new_length);
  void reset();

  void set_sampling(SamplingConfig config);
  int32_t sample(const float* logits);
  GenerateResult generate(int32_t max_tokens, int32_t* out, int32_t out_capacity);

  void request_abort() { abort_.store(true, std::memory_order_release); }
  void clear_abort() { abort_.store(false, std::memory_order_release); }

  const SessionStats& stats() const { return stats_; }
  void reset_stats() { stats_ = SessionStats{}; }

 private:
  bool consume_abort() { return abort_.exchange(false, std::memory_order_acq_rel); }
  void check_tokens(const int32_t* tokens, int32_t n) const;
  // Evaluates tokens [0, n) at the end of the cache in chunks; keeps the last logits.
  void evaluate(const int32_t* tokens, int32_t n, float* all_logits, bool abortable);

  std::shared_ptr<const Model> model_;
  std::unique_ptr<ExecContext> ctx_;
  KvCache kv_;
  Workspace ws_;
  std::vector<int32_t> tokens_;
  std::vector<float> last_logits_;  // logits of the last evaluated token, for sampling
  std::vector<float> next_logits_;  // written by an evaluation in progress
  bool logits_valid_ = false;
  Sampler sampler_;
  int32_t generated_since_config_ = 0;
  SessionStats stats_;
  std::atomic<bool> abort_{false};
};

}  // namespace mcpm
