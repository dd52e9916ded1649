#include "engine/session.h"

#include <chrono>
#include <cstring>
#include <string>

#include "common/error.h"

namespace mcpm {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Session::Session(std::shared_ptr<const Model> model, int32_t context_capacity, int32_t prefill_chunk)
    : model_(std::move(model)),
      ctx_(model_->backend().create_context(model_->num_threads())),
      kv_(model_->backend(), model_->config(), context_capacity),
      ws_(model_->backend(), model_->config(), prefill_chunk) {
  const RopeParams rope = compute_rope(model_->config(), context_capacity);
  model_->backend().upload(ws_.inv_freq.data, rope.inv_freq.data(), rope.inv_freq.size() * sizeof(float));
  ws_.attn_factor = rope.attn_factor;
  tokens_.reserve(static_cast<size_t>(context_capacity));
  last_logits_.resize(static_cast<size_t>(model_->config().vocab_size));
}

void Session::check_tokens(const int32_t* tokens, int32_t n) const {
  if (static_cast<int64_t>(length()) + n > capacity())
    throw_error(MCPM_ERR_CONTEXT_FULL, std::to_string(n) + " tokens do not fit: the session holds " +
                                           std::to_string(length()) + " of " + std::to_string(capacity()) +
                                           " tokens (context capacity)");
  const int32_t vocab = model_->config().vocab_size;
  for (int32_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      invalid_argument("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                       " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
}

void Session::evaluate(const int32_t* tokens, int32_t n, float* all_logits, bool abortable) {
  const int32_t vocab = model_->config().vocab_size;
  const int32_t start_length = length();
  // The new logits go to a side buffer and replace the pending ones only on success, so a failed or
  // cancelled call leaves the session exactly as it was (pending logits included).
  next_logits_.resize(last_logits_.size());
  try {
    for (int32_t done = 0; done < n;) {
      if (abortable && consume_abort()) throw_error(MCPM_ERR_CANCELLED, "prefill cancelled by an abort request");
      const int32_t m = static_cast<int32_t>(std::min<int64_t>(ws_.max_tokens, n - done));
      const bool last_chunk = done + m == n;
      float* dst = all_logits ? all_logits + static_cast<size_t>(done) * vocab : nullptr;
      if (dst) {
        forward(*model_, *ctx_, ws_, kv_, tokens + done, m, length(), LogitRows::All, dst);
        if (last_chunk) std::memcpy(next_logits_.data(), dst + static_cast<size_t>(m - 1) * vocab, vocab * sizeof(float));
      } else {
        // Intermediate chunks still pay for one LM-head row; negligible next to the chunk itself.
        forward(*model_, *ctx_, ws_, kv_, tokens + done, m, length(), LogitRows::Last, next_logits_.data());
      }
      tokens_.insert(tokens_.end(), tokens + done, tokens + done + m);
      done += m;
    }
  } catch (...) {
    tokens_.resize(static_cast<size_t>(start_length));  // cache rows past the length are simply overwritten later
    kv_.truncate(start_length);
    throw;
  }
  last_logits_.swap(next_logits_);
  logits_valid_ = true;
}

void Session::prefill(const int32_t* tokens, int32_t n, mcpm_logits_mode mode, float* logits,
                      size_t logits_capacity) {
  const size_t vocab = static_cast<size_t>(model_->config().vocab_size);
  if (mode != MCPM_LOGITS_NONE && mode != MCPM_LOGITS_LAST && mode != MCPM_LOGITS_ALL)
    invalid_argument("unknown logits_mode " + std::to_string(mode));
  const size_t needed = mode == MCPM_LOGITS_ALL ? vocab * static_cast<size_t>(n) : mode == MCPM_LOGITS_LAST ? vocab : 0;
  if (needed > 0 && (logits == nullptr || logits_capacity < needed))
    invalid_argument("logits buffer holds " + std::to_string(logits ? logits_capacity : 0) + " floats but " +
                     std::to_string(needed) + " are needed");
  if (n == 0) {
    if (mode != MCPM_LOGITS_NONE) invalid_argument("n_tokens is 0, so there are no logits to return");
    return;
  }
  check_tokens(tokens, n);
  const int64_t t0 = now_ns();
  evaluate(tokens, n, mode == MCPM_LOGITS_ALL ? logits : nullptr, true);
  stats_.prefill_tokens += n;
  stats_.prefill_ns += now_ns() - t0;
  if (mode == MCPM_LOGITS_LAST) std::memcpy(logits, last_logits_.data(), vocab * sizeof(float));
}

void Session::decode(int32_t token, float* logits, size_t logits_capacity) {
  const size_t vocab = static_cast<size_t>(model_->config().vocab_size);
  if (logits != nullptr && logits_capacity < vocab)
    invalid_argument("logits buffer holds " + std::to_string(logits_capacity) + " floats but " + std::to_string(vocab) +
                     " are needed");
  check_tokens(&token, 1);
  const int64_t t0 = now_ns();
  evaluate(&token, 1, nullptr, false);
  stats_.decode_tokens += 1;
  stats_.decode_ns += now_ns() - t0;
  if (logits != nullptr) std::memcpy(logits, last_logits_.data(), vocab * sizeof(float));
}

void Session::rewind(int32_t new_length) {
  if (new_length < 0 || new_length > length())
    invalid_argument("cannot rewind to " + std::to_string(new_length) + " tokens: the session holds " +
                     std::to_string(length()));
  if (new_length == length()) return;
  tokens_.resize(static_cast<size_t>(new_length));  // cache rows past the length are simply overwritten later
  kv_.truncate(new_length);  // and the sparse-attention state derived from them is dropped
  logits_valid_ = false;
}

void Session::reset() {
  tokens_.clear();
  kv_.truncate(0);
  logits_valid_ = false;
  generated_since_config_ = 0;
}

void Session::set_sampling(SamplingConfig config) {
  const int32_t vocab = model_->config().vocab_size;
  for (size_t i = 0; i < config.stop_tokens.size(); ++i)
    if (config.stop_tokens[i] < 0 || config.stop_tokens[i] >= vocab)
      invalid_argument("invalid sampling params: stop_tokens[" + std::to_string(i) + "] = " +
                       std::to_string(config.stop_tokens[i]) + " is outside the vocabulary [0, " +
                       std::to_string(vocab) + ")");
  sampler_.configure(std::move(config));
  generated_since_config_ = 0;
}

int32_t Session::sample(const float* logits) {
  const int64_t t0 = now_ns();
  const int32_t token = sampler_.sample(logits, model_->config().vocab_size, tokens_.data(), length());
  stats_.sample_ns += now_ns() - t0;
  return token;
}

GenerateResult Session::generate(int32_t max_tokens, int32_t* out, int32_t out_capacity) {
  if (max_tokens < 0) invalid_argument("max_tokens must be >= 0, got " + std::to_string(max_tokens));
  if (out == nullptr && out_capacity > 0) invalid_argument("tokens buffer is NULL");
  if (out_capacity < 0) invalid_argument("capacity must be >= 0");
  if (!logits_valid_)
    invalid_argument("no pending logits: prefill or decode before generating (a stop token or rewind clears them)");
  GenerateResult r;
  const int32_t budget = std::min(max_tokens, out_capacity);
  const int32_t max_new = sampler_.config().max_new_tokens;
  auto finished = [&]() {
    if (max_new > 0 && generated_since_config_ >= max_new) return MCPM_FINISH_MAX_TOKENS;
    if (length() >= capacity()) return MCPM_FINISH_CONTEXT_FULL;
    return MCPM_FINISH_NONE;
  };
  r.finish = finished();
  while (r.finish == MCPM_FINISH_NONE && r.count < budget) {
    if (consume_abort()) {
      r.cancelled = true;
      return r;
    }
    const int32_t token = sample(last_logits_.data());
    out[r.count++] = token;
    ++generated_since_config_;
    ++stats_.generated_tokens;
    if (sampler_.is_stop(token)) {
      logits_valid_ = false;  // the stop token is reported but not evaluated
      r.finish = MCPM_FINISH_STOP_TOKEN;
      break;
    }
    decode(token, nullptr, 0);
    r.finish = finished();
  }
  return r;
}

}  // namespace mcpm
