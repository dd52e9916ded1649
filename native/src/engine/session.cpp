#include "engine/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "common/error.h"

namespace mcpm {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Rows a draft call or a verification pass may need beyond a prefill chunk: a whole tree.
constexpr int32_t kTreeRows = DraftWorkspace::kTreeSlots;

// A token-mask failure: the host's callback failed (MCPM_ERR_CALLBACK) or a mask allows no token
// (INVALID_ARGUMENT). Thrown only where the session is consistent, so generate() reports the tokens
// before it.
class MaskFailure : public Error {
 public:
  using Error::Error;
};

}  // namespace

uint64_t Session::kv_bytes_per_token(const Model& model, const DraftModel* draft) {
  const ModelConfig& c = model.config();
  const double kv_element = static_cast<double>(dtype_size(model.backend().kv_dtype()));
  double bytes = 2.0 * c.num_layers * static_cast<double>(c.kv_dim()) * kv_element;
  if (c.sparse.enabled) {
    const double stride = c.sparse.kernel_stride;
    bytes += c.num_layers * static_cast<double>(c.kv_dim()) * sizeof(float) * (1.0 / stride + 1.0 / (4.0 * stride));
  }
  if (draft) bytes += 2.0 * draft->config().num_layers * static_cast<double>(draft->config().kv_dim()) * kv_element;
  return static_cast<uint64_t>(std::ceil(bytes));
}

int64_t Session::capacity_for_kv_budget(const Model& model, const DraftModel* draft, uint64_t budget) {
  const int64_t rows = static_cast<int64_t>(budget / kv_bytes_per_token(model, draft));
  return rows - (draft ? kTreeRows : 0);
}

Session::Session(std::shared_ptr<const Model> model, std::shared_ptr<const DraftModel> draft,
                 int32_t context_capacity, int32_t prefill_chunk, bool use_graphs)
    : model_(std::move(model)),
      use_graphs_(use_graphs),
      ctx_(model_->backend().create_context(model_->num_threads())),
      capacity_(context_capacity),
      // A tree under verification occupies up to kTreeRows rows past the history.
      kv_(model_->backend(), model_->config(), context_capacity + (draft ? kTreeRows : 0)),
      ws_(model_->backend(), model_->config(), draft ? std::max(prefill_chunk, kTreeRows) : prefill_chunk,
          draft ? kTreeRows : 16) {
  const RopeParams rope = compute_rope(model_->config(), context_capacity);
  model_->backend().upload(ws_.inv_freq.data, rope.inv_freq.data(), rope.inv_freq.size() * sizeof(float));
  ws_.attn_factor = rope.attn_factor;
  rope_table_ = rope.inv_freq;
  rope_table_.push_back(rope.attn_factor);
  if (draft)
    speculator_ = std::make_unique<Speculator>(std::move(draft), context_capacity, static_cast<int32_t>(ws_.max_tokens),
                                               use_graphs_);
  if (speculator_) {
    // Until the host sets sampling params, speculate with the default tree if the draft's
    // vocabulary allows it.
    SamplingConfig initial;
    try {
      initial.spec.validate(speculator_->draft().head_rows());
    } catch (const Error&) {
      initial.spec.num_iter = 0;
    }
    sampler_.configure(std::move(initial));
  }
  tokens_.reserve(static_cast<size_t>(context_capacity));
  last_logits_.resize(static_cast<size_t>(model_->config().vocab_size));
  mask_words_ = (model_->config().vocab_size + 31) / 32;
}

Session::~Session() {
  // An asynchronous backend (CUDA) may still run work that reads the KV cache or the workspace, which
  // the members' destructors free next; a failure here (a device fault) leaves nothing to wait for.
  try {
    model_->backend().synchronize(*ctx_);
  } catch (...) {
  }
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

void Session::forward_chunk(const int32_t* tokens, int32_t m, LogitRows rows, float* logits, bool device_logits) {
  ForwardArgs args;
  args.tokens = tokens;
  args.n = m;
  args.start = kv_len_;
  args.rows = rows;
  args.host_logits = logits;
  args.device_logits = device_logits;
  const bool feed_draft = speculator_ && feed_draft_;
  args.keep_features = feed_draft;
  // A generated token of a session without a draft (or with the draft paused): the backend may replay a
  // recorded step (CUDA graphs), dense and InfLLM v2 steps recorded apart.
  if (use_graphs_ && m == 1 && device_logits && !feed_draft) {
    const int32_t position = static_cast<int32_t>(kv_len_);
    DecodeStep step;
    step.tokens = tokens;
    step.positions = &position;
    step.start = kv_len_;
    step.capacity = kv_.capacity;
    step.variant = uses_sparse_attention(model_->config(), kv_len_ + 1) ? DecodeStep::kSparse : DecodeStep::kDense;
    model_->backend().decode_step(*ctx_, step, [&] { forward(*model_, *ctx_, ws_, kv_, args); });
  } else {
    forward(*model_, *ctx_, ws_, kv_, args);
  }
  if (feed_draft) speculator_->advance(*ctx_, tokens, ws_.normed, m, kv_len_, ws_.inv_freq, ws_.attn_factor);
  kv_len_ += m;
}

void Session::evaluate(const int32_t* tokens, int32_t n, float* all_logits, bool abortable, bool device_logits) {
  const int32_t vocab = model_->config().vocab_size;
  // The forward pass reuses ws_.logits: keep pending logits that are still there (a failed call must
  // leave them as they were).
  if (device_logits_pending_) pending_logits();
  device_logits = device_logits && all_logits == nullptr && n > 0;
  const int32_t start_length = length();
  const int64_t start_kv = kv_len_;
  // Only an evaluation that runs the draft changes its state (adaptive speculation's plain steps do not).
  const bool feeds_draft = speculator_ && feed_draft_;
  Speculator::Mark draft_mark{};
  if (feeds_draft) draft_mark = speculator_->mark(*ctx_);
  // The new logits go to a side buffer and replace the pending ones only on success, so a failed or
  // cancelled call leaves the session exactly as it was (pending logits included).
  next_logits_.resize(last_logits_.size());
  try {
    if (kv_len_ < length()) {
      // The history's last token is not in the cache yet (speculative root or rewind): evaluate it.
      const int32_t held = tokens_.back();
      forward_chunk(&held, 1, LogitRows::Last, next_logits_.data());
    }
    for (int32_t done = 0; done < n;) {
      if (abortable && consume_abort()) throw_error(MCPM_ERR_CANCELLED, "prefill cancelled by an abort request");
      const int32_t m = static_cast<int32_t>(std::min<int64_t>(ws_.max_tokens, n - done));
      const bool last_chunk = done + m == n;
      float* dst = all_logits ? all_logits + static_cast<size_t>(done) * vocab : nullptr;
      if (dst) {
        forward_chunk(tokens + done, m, LogitRows::All, dst);
        if (last_chunk) std::memcpy(next_logits_.data(), dst + static_cast<size_t>(m - 1) * vocab, vocab * sizeof(float));
      } else if (last_chunk && device_logits) {
        forward_chunk(tokens + done, m, LogitRows::Last, nullptr, true);
      } else {
        // Intermediate chunks still pay for one LM-head row; negligible next to the chunk itself.
        forward_chunk(tokens + done, m, LogitRows::Last, next_logits_.data());
      }
      tokens_.insert(tokens_.end(), tokens + done, tokens + done + m);
      done += m;
    }
  } catch (...) {
    tokens_.resize(static_cast<size_t>(start_length));  // cache rows past the length are simply overwritten later
    kv_len_ = start_kv;
    kv_.truncate(start_kv);
    if (feeds_draft) speculator_->restore(*ctx_, draft_mark);
    throw;
  }
  if (device_logits)
    device_logits_pending_ = true;
  else
    last_logits_.swap(next_logits_);
  logits_valid_ = true;
  root_pending_ = false;
  mask_current_ = false;
}

void Session::download_logits(std::vector<float>& dst) {
  Backend& be = model_->backend();
  be.synchronize(*ctx_);
  be.download(dst.data(), ws_.logits.data, dst.size() * sizeof(float));
}

const float* Session::pending_logits() {
  if (device_logits_pending_) {
    download_logits(last_logits_);
    device_logits_pending_ = false;
  }
  return last_logits_.data();
}

int32_t Session::sample_pending() {
  if (!device_logits_pending_) return sample(last_logits_.data());
  if (constrained()) prepare_mask();
  const int32_t token = sample_row(0);
  if (token == Backend::kNonFiniteToken) throw_non_finite(0);
  // The row is penalized in place and so no longer the pending logits; the caller evaluates the
  // token next or ends the generation.
  device_logits_pending_ = false;
  logits_valid_ = false;
  return token;
}

int32_t Session::sample_row(int32_t row) {
  const int64_t t0 = now_ns();
  const int32_t vocab = model_->config().vocab_size;
  const PenaltyTable penalties = sampler_.penalties(vocab, tokens_.data(), length());
  Backend& be = model_->backend();
  const Tensor logits = ws_.logits.slice_rows(row, 1);
  const Tensor mask_row = constrained() ? masks_.slice_rows(row, 1) : Tensor{};
  const Tensor* mask = constrained() ? &mask_row : nullptr;
  // One RNG draw per sampled token, as on the host, so both paths consume the same random numbers.
  int32_t token = sampler_.greedy() ? be.greedy_sample(*ctx_, logits, penalties, mask)
                                    : be.sample_token(*ctx_, logits, penalties, sampler_.draw_params(),
                                                      sampler_.next_uniform(), mask);
  if (token != Backend::kNonFiniteToken && !be.logits_finite(*ctx_, logits)) token = Backend::kNonFiniteToken;
  stats_.sample_ns += now_ns() - t0;
  return token;
}

void Session::throw_non_finite(int32_t row) const {
  throw Error(MCPM_ERR_NONFINITE,
              "the logits of generation step " + std::to_string(generated_since_config_ + row + 1) + " (after " +
                  std::to_string(length() + row) + " context tokens) hold a NaN or an infinity: the weights are " +
                  "corrupt or the computation overflowed; nothing was sampled");
}

void Session::advance(int32_t token) {
  check_tokens(&token, 1);
  const int64_t t0 = now_ns();
  evaluate(&token, 1, nullptr, false, true);
  // An asynchronous backend has only queued the step: the host asks for the next token's mask while
  // the device runs it.
  if (constrained()) {
    request_mask(0, tokens_.data() + output_start_, length() - output_start_);
    upload_masks(1);
    mask_current_ = true;
  }
  // Wait, so decode time is not counted as sampling.
  model_->backend().synchronize(*ctx_);
  stats_.decode_tokens += 1;
  stats_.decode_ns += now_ns() - t0;
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
  // With a draft the last kept token is evaluated again (by the next prefill or decode): the draft
  // needs the target's feature at that position, which is not kept.
  kv_len_ = std::min<int64_t>(kv_len_, speculator_ && new_length > 0 ? new_length - 1 : new_length);
  kv_.truncate(kv_len_);  // and the sparse-attention state derived from later rows is dropped
  if (speculator_) speculator_->truncate(kv_len_);
  logits_valid_ = false;
  root_pending_ = false;
  device_logits_pending_ = false;
  output_start_ = std::min(output_start_, new_length);
  mask_current_ = false;
}

void Session::reset() {
  tokens_.clear();
  kv_len_ = 0;
  kv_.truncate(0);
  if (speculator_) speculator_->truncate(0);
  logits_valid_ = false;
  root_pending_ = false;
  device_logits_pending_ = false;
  generated_since_config_ = 0;
  output_start_ = 0;
  mask_current_ = false;
}

void Session::set_sampling(SamplingConfig config) {
  const int32_t vocab = model_->config().vocab_size;
  for (size_t i = 0; i < config.stop_tokens.size(); ++i)
    if (config.stop_tokens[i] < 0 || config.stop_tokens[i] >= vocab)
      invalid_argument("invalid sampling params: stop_tokens[" + std::to_string(i) + "] = " +
                       std::to_string(config.stop_tokens[i]) + " is outside the vocabulary [0, " +
                       std::to_string(vocab) + ")");
  if (speculator_ && config.spec.num_iter > 0) config.spec.validate(speculator_->draft().head_rows());
  if (config.token_mask != nullptr && !mask_storage_) {
    // One mask per tree node a speculative round can verify, else one.
    const int32_t rows = speculator_ ? kTreeRows : 1;
    mask_storage_ = model_->backend().alloc(static_cast<size_t>(rows) * mask_words_ * sizeof(uint32_t));
    masks_ = Tensor{mask_storage_->data(), DType::I32, rows, mask_words_};
    host_masks_.assign(static_cast<size_t>(rows) * mask_words_, 0u);
    mask_yields_.assign(static_cast<size_t>(rows), 0);
  }
  sampler_.configure(std::move(config));
  adaptive_.reset(speculator_ ? speculator_->draft().head_rows() : 0);
  prepared_arm_ = -1;
  generated_since_config_ = 0;
  output_start_ = length();
  mask_current_ = false;
}

int32_t Session::sample(const float* logits) {
  if (constrained()) prepare_mask();
  if (!all_finite(logits, static_cast<size_t>(model_->config().vocab_size))) throw_non_finite(0);
  const int64_t t0 = now_ns();
  const int32_t token = sampler_.sample(logits, model_->config().vocab_size, tokens_.data(), length(),
                                        constrained() ? host_mask(0) : nullptr);
  stats_.sample_ns += now_ns() - t0;
  return token;
}

void Session::force_tokens(const int32_t* tokens, int32_t n) {
  if (n == 0) return;
  check_tokens(tokens, n);
  const int64_t t0 = now_ns();
  evaluate(tokens, n, nullptr, true, /*device_logits=*/true);
  stats_.prefill_tokens += n;
  stats_.prefill_ns += now_ns() - t0;
  generated_since_config_ += n;
  stats_.generated_tokens += n;
}

void Session::request_mask(int32_t row, const int32_t* tokens, int32_t n) {
  uint32_t* mask = host_masks_.data() + static_cast<size_t>(row) * mask_words_;
  std::fill(mask, mask + mask_words_, 0u);
  const SamplingConfig& c = sampler_.config();
  const int32_t status = c.token_mask(c.token_mask_user_data, tokens, n, mask, mask_words_);
  mask_yields_[static_cast<size_t>(row)] = status == MCPM_TOKEN_MASK_YIELD;
  if (status == MCPM_TOKEN_MASK_YIELD) {
    std::fill(mask, mask + mask_words_, 0u);  // nothing is sampled in a yielded state
    return;
  }
  if (status != 0)
    throw MaskFailure(MCPM_ERR_CALLBACK, "the token mask callback failed (returned " + std::to_string(status) +
                                             ") for the state after " + std::to_string(n) + " tokens");
  const int32_t tail = model_->config().vocab_size % 32;  // bits past the vocabulary do not count
  if (tail != 0) mask[mask_words_ - 1] &= (1u << tail) - 1u;
}

void Session::upload_masks(int32_t rows) {
  model_->backend().upload(masks_.data, host_masks_.data(), static_cast<size_t>(rows) * mask_words_ * sizeof(uint32_t));
}

bool Session::allows_any(int32_t row) const {
  const uint32_t* mask = host_mask(row);
  return std::any_of(mask, mask + mask_words_, [](uint32_t word) { return word != 0; });
}

void Session::require_allowed(int32_t row) const {
  if (!allows_any(row))
    throw MaskFailure(MCPM_ERR_INVALID_ARGUMENT,
                      "the token mask allows no token (step " + std::to_string(length() - output_start_) + ")");
}

void Session::prepare_mask() {
  if (!mask_current_) {
    request_mask(0, tokens_.data() + output_start_, length() - output_start_);
    upload_masks(1);
    mask_current_ = true;
  }
  if (!allows_any(0) && !yields(0)) {
    mask_current_ = false;  // the next call asks again: the host may have changed its mind
    require_allowed(0);
  }
}

bool Session::current_state_yields() {
  if (!constrained()) return false;
  prepare_mask();
  return yields(0);
}

DraftTree Session::verified_nodes(const DraftTree& tree, bool chain) {
  const bool masked = constrained();
  DraftTree kept;
  std::vector<int32_t> index(static_cast<size_t>(tree.size()), -1);  // a node's kept index; -1: dropped
  // A node's state for the callback: the output so far (the root included), then its path below the root.
  if (masked) mask_tokens_.assign(tokens_.begin() + output_start_, tokens_.end());
  const size_t output = mask_tokens_.size();
  for (int32_t i = 0; i < tree.size(); ++i) {
    int32_t parent = -1;
    if (i > 0) {
      parent = index[static_cast<size_t>(tree.parents[static_cast<size_t>(i)])];
      if (parent < 0) continue;                          // under a dropped node
      if (chain && parent != kept.size() - 1) continue;  // the chain's last node already has its child
      if (masked && !token_allowed(host_mask(parent), tree.tokens[static_cast<size_t>(i)])) continue;
    }
    const int32_t j = kept.size();
    index[static_cast<size_t>(i)] = j;
    kept.tokens.push_back(tree.tokens[static_cast<size_t>(i)]);
    kept.parents.push_back(parent);
    kept.depths.push_back(tree.depths[static_cast<size_t>(i)]);
    kept.masks.push_back((parent < 0 ? 0 : kept.masks[static_cast<size_t>(parent)]) | (uint64_t{1} << j));
    if (masked) {
      mask_tokens_.resize(output);
      for (int32_t a = j; a > 0; a = kept.parents[static_cast<size_t>(a)])
        mask_tokens_.push_back(kept.tokens[static_cast<size_t>(a)]);
      std::reverse(mask_tokens_.begin() + static_cast<std::ptrdiff_t>(output), mask_tokens_.end());
      // The root's state is the current one: its mask is usually in row 0 already (generate asked for it).
      if (j > 0 || !mask_current_) request_mask(j, mask_tokens_.data(), static_cast<int32_t>(mask_tokens_.size()));
      if (j == 0 && yields(0)) return DraftTree{};  // the host appends the root's tokens itself
      if (j == 0) require_allowed(0);  // the root's: plain decoding would fail here too
    }
  }
  if (masked) upload_masks(kept.size());
  return kept;
}

// One EAGLE-2 round (shared/reference/algorithms.md §3.2–3.6). The root, tokens_.back(), is emitted
// but not in the cache. The draft proposes a tree under it; the target evaluates root and tree in one
// pass; then the emitted tokens are sampled one at a time from the target's logits along the tree,
// exactly as plain decoding would sample them (same processors, same context, one RNG draw each),
// following the child whose token was sampled. The walk ends at a node with no such child; the last
// sampled token becomes the next root. Hence the output equals plain decoding for greedy and is
// distributed like it when sampling, whatever the draft proposes.
int32_t Session::speculative_step(int32_t* out, int32_t budget, bool* stopped, const SpecParams& params) {
  const ModelConfig& c = model_->config();
  const int64_t root_row = kv_len_;
  if (device_logits_pending_) pending_logits();  // verification reuses ws_.logits

  int64_t t0 = now_ns();
  DraftTree tree =
      speculator_->draft_tree(*ctx_, tokens_.back(), root_row, params, ws_.inv_freq, ws_.attn_factor);
  // InfLLM v2 has no tree attention: once sparse attention is active, verify the draft's most likely
  // chain (the first child at each level) with ordinary causal attention. Under a token mask the
  // target verifies only what the masks allow, and each node is sampled with its mask (a failing
  // callback throws here, before anything changed but the consumed draft row: the next step then
  // evaluates the root plainly, as after a rewind).
  const bool chain = uses_sparse_attention(c, root_row + tree.size());
  if (chain || constrained()) tree = verified_nodes(tree, chain);
  mask_current_ = false;  // the rows are the tree's now
  const int32_t n = tree.size();
  stats_.spec_draft_ns += now_ns() - t0;
  if (n == 0) return 0;  // the host yielded the root's state: it appends the next tokens itself

  t0 = now_ns();
  std::vector<int32_t> positions(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) positions[static_cast<size_t>(i)] = static_cast<int32_t>(root_row + tree.depths[static_cast<size_t>(i)]);
  // Every node's logits stay in ws_.logits rows [0, n): the walk below samples them where they are.
  ForwardArgs args;
  args.tokens = tree.tokens.data();
  args.n = n;
  args.start = root_row;
  args.positions = positions.data();
  args.tree_masks = chain ? nullptr : tree.masks.data();
  args.rows = LogitRows::All;
  args.keep_features = true;
  args.device_logits = true;
  Backend& be = model_->backend();
  if (use_graphs_ && !chain && n <= DecodeStep::kMaxStepTokens) {
    // A recorded step (CUDA graphs: one per length bucket and tree size).
    DecodeStep step;
    step.n = n;
    step.tokens = tree.tokens.data();
    step.positions = positions.data();
    step.masks = tree.masks.data();
    step.start = root_row;
    step.capacity = kv_.capacity;
    step.variant = DecodeStep::kTree;
    be.decode_step(*ctx_, step, [&] { forward(*model_, *ctx_, ws_, kv_, args); });
  } else {
    forward(*model_, *ctx_, ws_, kv_, args);
  }
  be.synchronize(*ctx_);
  stats_.spec_verify_ns += now_ns() - t0;

  // Walk the tree, sampling at each node from the target's logits on the backend: one token id per
  // emitted token crosses to the host, never a row of logits.
  std::vector<int32_t> path{0};
  int32_t emitted = 0;
  *stopped = false;
  const int32_t max_new = sampler_.config().max_new_tokens;
  for (int32_t node = 0;;) {
    const int32_t token = sample_row(node);
    // Non-finite logits at the root fail the step before anything is emitted (the next step evaluates the root
    // plainly, as after a rewind); deeper in the tree they end the round at the tokens emitted so far.
    if (token == Backend::kNonFiniteToken) {
      if (node == 0) throw_non_finite(0);
      break;
    }
    out[emitted++] = token;
    ++generated_since_config_;
    ++stats_.generated_tokens;
    if (sampler_.is_stop(token)) {
      *stopped = true;
      break;
    }
    tokens_.push_back(token);
    if (emitted == budget || (max_new > 0 && generated_since_config_ >= max_new) || length() >= capacity()) break;
    int32_t next = -1;
    for (int32_t i = node + 1; i < n && next < 0; ++i)
      if (tree.parents[static_cast<size_t>(i)] == node && tree.tokens[static_cast<size_t>(i)] == token) next = i;
    if (next < 0) break;
    // A state whose mask allows nothing ends the round: the token is the next root, whose round fails
    // before emitting anything, as plain decoding fails at that step; a state the host yielded ends it
    // the same way, and the host appends that state's tokens.
    if (constrained() && !allows_any(next)) break;
    node = next;
    path.push_back(node);
  }

  // Keep the K/V of the path (root included): slot root_row + path[d] moves to root_row + d.
  const int32_t keep = static_cast<int32_t>(path.size());
  std::vector<int32_t> dst(static_cast<size_t>(keep)), src(static_cast<size_t>(keep));
  for (int32_t d = 0; d < keep; ++d) {
    dst[static_cast<size_t>(d)] = static_cast<int32_t>(root_row + d);
    src[static_cast<size_t>(d)] = static_cast<int32_t>(root_row + path[static_cast<size_t>(d)]);
  }
  for (int32_t l = 0; l < c.num_layers; ++l) {
    be.copy_rows(*ctx_, kv_.k[static_cast<size_t>(l)], kv_.k[static_cast<size_t>(l)], dst.data(), src.data(), keep);
    be.copy_rows(*ctx_, kv_.v[static_cast<size_t>(l)], kv_.v[static_cast<size_t>(l)], dst.data(), src.data(), keep);
  }
  kv_len_ = root_row + keep;
  kv_.truncate(kv_len_);
  // The draft catches up on the kept rows: features of the path nodes, tokens of the history.
  speculator_->advance_gathered(*ctx_, tokens_.data() + root_row, ws_.normed, path.data(), keep, root_row,
                                ws_.inv_freq, ws_.attn_factor);
  ++stats_.spec_steps;
  stats_.spec_emitted_tokens += emitted;
  if (*stopped) {
    logits_valid_ = false;  // the stop token is reported but not evaluated
    root_pending_ = false;
  } else {
    root_pending_ = true;  // tokens_.back() is the next root
  }
  return emitted;
}

int32_t Session::sample_plain(int32_t* out, GenerateResult& r) {
  const int32_t token = sample_pending();
  out[r.count++] = token;
  ++generated_since_config_;
  ++stats_.generated_tokens;
  if (sampler_.is_stop(token)) {
    logits_valid_ = false;  // the stop token is reported but not evaluated
    r.finish = MCPM_FINISH_STOP_TOKEN;
  }
  return token;
}

mcpm_finish_reason Session::finish_state() const {
  const int32_t max_new = sampler_.config().max_new_tokens;
  if (max_new > 0 && generated_since_config_ >= max_new) return MCPM_FINISH_MAX_TOKENS;
  if (length() >= capacity()) return MCPM_FINISH_CONTEXT_FULL;
  return MCPM_FINISH_NONE;
}

bool Session::batches_with(const Session& other) const {
  return model_ == other.model_ && rope_table_ == other.rope_table_;
}

void Session::batch_prepare(BatchTurn& turn) {
  turn.rows.clear();
  turn.appended = 0;
  turn.result = GenerateResult{};
  turn.start = kv_len_;
  // The history's last token may be out of the cache (a speculative root, a rewound draft session):
  // it goes first.
  const bool held = kv_len_ < length();
  if (turn.n > 0) {
    check_tokens(turn.tokens, turn.n);
    if (consume_abort()) throw_error(MCPM_ERR_CANCELLED, "prefill cancelled by an abort request");
    if (held) turn.rows.push_back(tokens_.back());
    turn.rows.insert(turn.rows.end(), turn.tokens, turn.tokens + turn.n);
    turn.appended = turn.n;
    return;
  }
  GenerateResult& r = turn.result;
  if (!logits_valid_ && !root_pending_)
    invalid_argument("no pending logits: prefill or decode before generating (a stop token or rewind clears them)");
  r.finish = finish_state();
  if (r.finish != MCPM_FINISH_NONE) return;
  if (consume_abort()) {
    r.cancelled = true;
    return;
  }
  try {
    // A held token (a speculative round's next root) is evaluated on its own first, so that every
    // generate turn samples: this happens once when a session that speculated alone joins a batch.
    if (held) {
      evaluate(nullptr, 0, nullptr, false, /*device_logits=*/true);
      turn.start = kv_len_;
    }
    if (current_state_yields()) return;  // the host appends this state's tokens itself
    const int32_t token = sample_plain(turn.out, r);
    if (r.finish == MCPM_FINISH_STOP_TOKEN) return;
    check_tokens(&token, 1);
    turn.rows.push_back(token);
    turn.appended = 1;
  } catch (const MaskFailure& e) {
    r.error = e.status();
    r.error_message = e.what();
  }
}

void Session::batch_commit(BatchTurn& turn, ExecContext& ctx, const Tensor& logits, int32_t logit_row,
                           const Tensor& features, int32_t feature_row, int64_t elapsed_ns) {
  const int32_t m = static_cast<int32_t>(turn.rows.size());
  Backend& be = model_->backend();
  const int32_t zero = 0;
  be.copy_rows(ctx, ws_.logits, logits, &zero, &logit_row, 1);
  if (speculator_)
    speculator_->advance(ctx, turn.rows.data(), features.slice_rows(feature_row, m), m, turn.start, ws_.inv_freq,
                         ws_.attn_factor);
  tokens_.insert(tokens_.end(), turn.rows.end() - turn.appended, turn.rows.end());
  kv_len_ = turn.start + m;
  device_logits_pending_ = true;
  logits_valid_ = true;
  root_pending_ = false;
  mask_current_ = false;
  prepared_arm_ = -1;
  if (turn.n > 0) {
    stats_.prefill_tokens += turn.n;
    stats_.prefill_ns += elapsed_ns;
  } else {
    stats_.decode_tokens += m;
    stats_.decode_ns += elapsed_ns;
    stats_.spec_tree_size = 0;
    stats_.spec_num_iter = 0;
  }
}

void Session::batch_abandon(const BatchTurn& turn) { kv_.truncate(turn.start); }

GenerateResult Session::generate(int32_t max_tokens, int32_t* out, int32_t out_capacity, bool single_step) {
  if (max_tokens < 0) invalid_argument("max_tokens must be >= 0, got " + std::to_string(max_tokens));
  if (out == nullptr && out_capacity > 0) invalid_argument("tokens buffer is NULL");
  if (out_capacity < 0) invalid_argument("capacity must be >= 0");
  if (!logits_valid_ && !root_pending_)
    invalid_argument("no pending logits: prefill or decode before generating (a stop token or rewind clears them)");
  GenerateResult r;
  const int32_t budget = std::min(max_tokens, out_capacity);
  auto finished = [&]() { return finish_state(); };
  r.finish = finished();
  // A token-mask failure leaves the session consistent: report the tokens before it with it.
  try {
    while (r.finish == MCPM_FINISH_NONE && r.count < budget) {
      if (consume_abort()) {
        r.cancelled = true;
        return r;
      }
      // With MCPM_SPEC_TREE_AUTO the step's arm is chosen from what earlier steps cost and emitted.
      const SpecParams& configured = sampler_.config().spec;
      const bool adaptive = speculative() && configured.adaptive;
      // A round prepared by a plain step (which fed the draft) keeps the arm it was chosen with.
      const int32_t arm = !adaptive              ? AdaptiveSpeculation::kPlain
                          : prepared_arm_ >= 0 ? std::exchange(prepared_arm_, -1)
                                               : adaptive_.choose();
      const bool spec = speculative() && (!adaptive || arm != AdaptiveSpeculation::kPlain);
      const SpecParams params = adaptive && spec ? AdaptiveSpeculation::tree(arm) : configured;
      // A state the host yielded (MCPM_TOKEN_MASK_YIELD): return before sampling in it; the host appends
      // its tokens (mcpm_session_force_tokens) and generates again.
      if (current_state_yields()) break;
      if (spec && root_pending_ && speculator_->ready(kv_len_)) {
        bool stopped = false;
        const int64_t t0 = now_ns(), draft0 = stats_.spec_draft_ns;
        const int32_t emitted = speculative_step(out + r.count, budget - r.count, &stopped, params);
        r.count += emitted;
        if (adaptive) adaptive_.record(arm, now_ns() - t0, emitted, stats_.spec_draft_ns - draft0);
        stats_.spec_tree_size = params.tree_size;
        stats_.spec_num_iter = params.num_iter;
        if (stopped) {
          r.finish = MCPM_FINISH_STOP_TOKEN;
          break;
        }
        r.finish = finished();
        if (single_step) break;
        continue;
      }
      // A plain step. Adaptive speculation that chose it leaves the draft out; a step before a round feeds it.
      const int64_t t0 = now_ns();
      const bool evaluates_root = root_pending_;  // then the step costs two target passes: not a plain step's cost
      feed_draft_ = !adaptive || spec;
      struct FeedAgain {
        bool& feed;
        ~FeedAgain() { feed = true; }
      } feed_again{feed_draft_};
      if (root_pending_) evaluate(nullptr, 0, nullptr, false);  // plain decoding after speculative rounds
      const int32_t token = sample_plain(out, r);
      if (r.finish == MCPM_FINISH_STOP_TOKEN) break;
      if (spec) {
        // The token becomes the root of the next round, which evaluates it with the tree.
        tokens_.push_back(token);
        logits_valid_ = false;
        root_pending_ = true;
        mask_current_ = false;
        if (adaptive) prepared_arm_ = arm;
        r.finish = finished();
        continue;  // a step is not over until its round ran
      }
      advance(token);
      if (adaptive) {
        if (!evaluates_root) adaptive_.record(arm, now_ns() - t0, 1);
        ++stats_.spec_plain_tokens;
        stats_.spec_tree_size = 0;
        stats_.spec_num_iter = 0;
      }
      r.finish = finished();
      if (single_step) break;
    }
  } catch (const MaskFailure& e) {
    r.error = e.status();
    r.error_message = e.what();
  }
  return r;
}

}  // namespace mcpm
