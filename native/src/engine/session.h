// A session: one conversation's KV cache, token history, pending logits and sampler over a shared,
// immutable model, plus (with an EAGLE draft) the speculator that drafts token trees. Used by one
// thread at a time (the C API enforces it); request_abort() is the only member any thread may call
// concurrently.
//
// History vs cache: tokens() is the whole history. Normally every token is in the KV cache and the
// pending logits are those of the last one. Two states leave the last token out of the cache:
//   - after speculative generation, the last emitted token (the next tree's root) is evaluated by
//     the next verification pass rather than on its own;
//   - after rewinding a session with a draft, the last kept token is evaluated again so the draft
//     gets its feature back.
// Any prefill or decode evaluates such a token first; callers never see the difference.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "engine/adaptive_speculation.h"
#include "engine/forward.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/speculative.h"

namespace mcpm {

struct SessionStats {
  int64_t prefill_tokens = 0, prefill_ns = 0;
  int64_t decode_tokens = 0, decode_ns = 0;
  int64_t sample_ns = 0;
  int64_t generated_tokens = 0;
  int64_t spec_steps = 0;           // draft-and-verify rounds
  int64_t spec_emitted_tokens = 0;  // tokens those rounds emitted (accepted drafts + the target's own)
  int64_t spec_draft_ns = 0, spec_verify_ns = 0;
  int64_t spec_plain_tokens = 0;  // adaptive speculation: tokens decoded plainly by its choice
  int32_t spec_tree_size = 0, spec_num_iter = 0;  // the last step's tree (0: plain)
};

struct GenerateResult {
  int32_t count = 0;
  mcpm_finish_reason finish = MCPM_FINISH_NONE;
  bool cancelled = false;
  // A token-mask failure after `count` tokens (MCPM_ERR_CALLBACK: the host's callback failed;
  // INVALID_ARGUMENT: a mask allowed no token); the session is consistent and the call fails with it.
  mcpm_status error = MCPM_OK;
  std::string error_message;
};

class Session {
 public:
  // `draft` may be null (no speculative decoding).
  // use_graphs: generated tokens and speculative verifications go through Backend::decode_step (CUDA graphs).
  Session(std::shared_ptr<const Model> model, std::shared_ptr<const DraftModel> draft, int32_t context_capacity,
          int32_t prefill_chunk, bool use_graphs = true);
  // Waits for the session's queued backend work before its buffers are released.
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // KV cache bytes per token of context capacity: K and V rows of every target and draft layer in the
  // backend's KV dtype, plus InfLLM v2's fp32 compressed keys (a level-1 row per kernel_stride tokens
  // and a level-2 row per 4*kernel_stride) when sparse attention is on; rounded up. `draft` may be null.
  static uint64_t kv_bytes_per_token(const Model& model, const DraftModel* draft);
  // The largest capacity whose KV cache (including the tree rows a draft adds) fits in `budget` bytes;
  // 0 or less when not even one token fits.
  static int64_t capacity_for_kv_budget(const Model& model, const DraftModel* draft, uint64_t budget);

  const Model& model() const { return *model_; }
  int32_t length() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t capacity() const { return capacity_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  bool has_draft() const { return speculator_ != nullptr; }

  // Throws CONTEXT_FULL, CANCELLED (session rewound to its previous length), INVALID_ARGUMENT.
  void prefill(const int32_t* tokens, int32_t n, mcpm_logits_mode mode, float* logits, size_t logits_capacity);
  void decode(int32_t token, float* logits, size_t logits_capacity);
  void rewind(int32_t new_length);
  void reset();

  void set_sampling(SamplingConfig config);
  // Samples from host logits with the sampling params, RNG and history (and the token mask of the
  // current state, if any); the session's tokens do not change.
  int32_t sample(const float* logits);
  // Appends tokens as if generated (mcpm_session_force_tokens): evaluated like a prefill, counted as
  // generated, seen by the token mask; generation continues from their logits.
  void force_tokens(const int32_t* tokens, int32_t n);
  // Generates up to max_tokens tokens; with single_step, returns after one token (plain) or one
  // draft-and-verify round (speculative).
  GenerateResult generate(int32_t max_tokens, int32_t* out, int32_t out_capacity, bool single_step = false);

  // ---- one turn of a batched step (engine/batch.h runs one forward pass over many sessions' turns) ----
  // A generate turn (n == 0: sample one token from the pending logits, then evaluate it) or a prefill
  // chunk (tokens[0, n)). Plain decoding: a session with a draft keeps feeding it, so it can speculate
  // again when it runs alone.
  struct BatchTurn {
    const int32_t* tokens = nullptr;
    int32_t n = 0;
    int32_t* out = nullptr;  // a generate turn's token, when one was sampled (result.count == 1)
    GenerateResult result;
    std::vector<int32_t> rows;  // what this session adds to the forward pass; empty: nothing
    int64_t start = 0;          // the cache row of rows[0]
    int32_t appended = 0;       // tokens of `rows` not yet in the history (the held token is)
  };
  // Decides the turn's rows; a generate turn samples here. Throws (Error, with the status of the
  // equivalent single-session call) leaving the session consistent.
  void batch_prepare(BatchTurn& turn);
  // After the pass wrote the rows' K/V, their final-normed features to `features` rows [feature_row,
  // + rows) and the last row's logits to `logits` row logit_row (all on ctx): takes them (the logits
  // become the pending logits, the draft advances). `elapsed_ns`: the pass's wall time.
  void batch_commit(BatchTurn& turn, ExecContext& ctx, const Tensor& logits, int32_t logit_row,
                    const Tensor& features, int32_t feature_row, int64_t elapsed_ns);
  // The pass failed: drops what it may have derived from the turn's cache rows.
  void batch_abandon(const BatchTurn& turn);
  // Whether the two sessions can share a forward pass: same model and the same RoPE table.
  bool batches_with(const Session& other) const;
  KvCache& kv_cache() { return kv_; }
  const Workspace& workspace() const { return ws_; }
  ExecContext& context() { return *ctx_; }

  void request_abort() { abort_.store(true, std::memory_order_release); }
  void clear_abort() { abort_.store(false, std::memory_order_release); }

  const SessionStats& stats() const { return stats_; }
  void reset_stats() { stats_ = SessionStats{}; }

 private:
  bool consume_abort() { return abort_.exchange(false, std::memory_order_acq_rel); }
  // Samples the next token from the pending logits and emits it into out[r.count] (a plain step);
  // a stop token sets r.finish (it is reported, not evaluated).
  int32_t sample_plain(int32_t* out, GenerateResult& r);
  // Why generation cannot go on (max_new_tokens reached, context full), or MCPM_FINISH_NONE.
  mcpm_finish_reason finish_state() const;
  void check_tokens(const int32_t* tokens, int32_t n) const;
  bool speculative() const { return speculator_ && sampler_.config().spec.num_iter > 0; }
  // Evaluates the history's unevaluated token (if any), then tokens [0, n) appended to it, in chunks;
  // keeps the last logits.
  // With device_logits (and no all_logits) the last logits stay in ws_.logits row 0 on the backend
  // (device_logits_pending_) instead of coming to last_logits_.
  void evaluate(const int32_t* tokens, int32_t n, float* all_logits, bool abortable, bool device_logits = false);
  // One forward chunk at cache row kv_len_; feeds the draft.
  void forward_chunk(const int32_t* tokens, int32_t m, LogitRows rows, float* logits, bool device_logits = false);
  // Evaluates a generated token, leaving its logits on the backend for sample_pending.
  void advance(int32_t token);
  // Copies the first dst.size() floats of ws_.logits (left on the backend) into dst, after the queued work.
  void download_logits(std::vector<float>& dst);
  // The pending logits in last_logits_, copied from the backend first if they are still there.
  const float* pending_logits();
  // Samples the next token from the pending logits: on the backend (Backend::greedy_sample or
  // sample_token) when they are there, else on the host.
  int32_t sample_pending();
  // Samples from ws_.logits row `row` on the backend (Backend::greedy_sample or sample_token) with the
  // penalties of the whole history; the row is penalized in place.
  int32_t sample_row(int32_t row);
  // Throws MCPM_ERR_NONFINITE naming the generation step whose logits (row `row` of a round) are not finite.
  [[noreturn]] void throw_non_finite(int32_t row) const;
  // One draft-and-verify round after the root tokens_.back(); emits into out, at most `budget`.
  int32_t speculative_step(int32_t* out, int32_t budget, bool* stopped, const SpecParams& params);
  // The nodes of a drafted tree that the target verifies, re-indexed in their order (parents first):
  // with `chain` only the first child at each level; under a token mask only the nodes whose token the
  // mask of their parent's state allows (with their subtrees), each kept node's mask in mask row i.
  DraftTree verified_nodes(const DraftTree& tree, bool chain);

  // ---- grammar-constrained sampling (SamplingConfig::token_mask) ----
  // The callback's tokens for the current state are tokens_[output_start_, length()). Host row r of
  // host_masks_ and backend row r of masks_ hold one mask: row 0 the current state's in plain
  // decoding (current while mask_current_), the verified tree's nodes in a speculative round.
  bool constrained() const { return sampler_.config().token_mask != nullptr; }
  // Asks the callback for the mask after tokens[0, n) into host row `row`; throws on failure.
  void request_mask(int32_t row, const int32_t* tokens, int32_t n);
  // The host rows [0, rows) to the backend rows that sampling reads.
  void upload_masks(int32_t rows);
  // Row 0 holds the current state's mask (asked for and uploaded unless it already did) and it allows
  // a token; throws otherwise.
  void prepare_mask();
  // Under a token mask: whether the host yielded the current state (asking for its mask if needed).
  bool current_state_yields();
  // Throws when host row `row`, the mask of the current state, allows no token.
  void require_allowed(int32_t row) const;
  bool allows_any(int32_t row) const;
  // Whether the host yielded the state of mask row `row` (MCPM_TOKEN_MASK_YIELD): it appends that
  // state's tokens itself, so nothing is sampled there.
  bool yields(int32_t row) const { return mask_yields_[static_cast<size_t>(row)] != 0; }
  const uint32_t* host_mask(int32_t row) const { return host_masks_.data() + static_cast<size_t>(row) * mask_words_; }

  std::shared_ptr<const Model> model_;
  std::vector<float> rope_table_;  // inv_freq then attn_factor (batches_with compares them)
  bool use_graphs_;
  std::unique_ptr<ExecContext> ctx_;
  int32_t capacity_;
  KvCache kv_;
  Workspace ws_;
  std::unique_ptr<Speculator> speculator_;
  std::vector<int32_t> tokens_;
  int64_t kv_len_ = 0;              // rows of tokens_ in the KV cache: length() or length() - 1
  std::vector<float> last_logits_;  // logits of the last evaluated token, for sampling
  std::vector<float> next_logits_;  // written by an evaluation in progress
  bool logits_valid_ = false;       // last_logits_ belong to tokens_.back() (all tokens evaluated)
  bool root_pending_ = false;       // tokens_.back() is an emitted speculative root, not yet evaluated
  bool device_logits_pending_ = false;  // the pending logits are in ws_.logits row 0, not last_logits_
  Sampler sampler_;
  int32_t generated_since_config_ = 0;
  int32_t output_start_ = 0;              // tokens_ from here on are the token mask's tokens
  int32_t mask_words_ = 0;                // (vocab + 31) / 32
  std::unique_ptr<Buffer> mask_storage_;  // allocated when a token mask is first set
  Tensor masks_;                          // I32 [1 or kTreeRows, mask_words_] on the backend
  std::vector<uint32_t> host_masks_;      // the same rows on the host
  std::vector<uint8_t> mask_yields_;      // per row: the host yielded that state (its mask is empty)
  std::vector<int32_t> mask_tokens_;      // a speculative node's tokens for the callback
  bool mask_current_ = false;             // row 0 is the mask of the state after tokens_
  SessionStats stats_;
  AdaptiveSpeculation adaptive_;
  int32_t prepared_arm_ = -1;  // the arm whose round the last plain step prepared (its root is pending)
  // Whether target evaluations run the draft (off while adaptive speculation decodes plainly: the draft rows of
  // those positions then go stale, which can only lower acceptance once rounds resume).
  bool feed_draft_ = true;
  std::atomic<bool> abort_{false};
};

}  // namespace mcpm
