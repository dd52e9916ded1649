// The op interface. A backend owns memory and implements the ops; the model graph
// (engine/forward.cpp) composes them without knowing which backend runs them.
//
// Conventions for every op:
//   - Activations are 2-D row-major tensors [rows = tokens, cols = features] in the backend's
//     activation dtype (activation_dtype()); weights keep their checkpoint dtype.
//   - Linear weights use the Hugging Face layout [out_features, in_features].
//   - Ops run on an ExecContext (a thread pool on the CPU, a stream on CUDA). A context is used by
//     one thread at a time; different contexts may run concurrently over the same weights.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "backend/draft_tree.h"
#include "common/dtype.h"
#include "common/token_draw.h"

namespace mcpm {

// Memory owned by a backend (host memory on the CPU, device memory on CUDA).
class Buffer {
 public:
  virtual ~Buffer() = default;
  void* data() const { return data_; }
  size_t size() const { return size_; }

 protected:
  void* data_ = nullptr;
  size_t size_ = 0;
};

// A non-owning 2-D view. 1-D tensors (norm weights, vectors) have rows == 1.
struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;

  size_t bytes() const { return static_cast<size_t>(rows * cols) * dtype_size(dtype); }
  template <typename T>
  T* as() const { return static_cast<T*>(data); }
  // View of rows [first, first + count).
  Tensor slice_rows(int64_t first, int64_t count) const {
    return Tensor{static_cast<char*>(data) + static_cast<size_t>(first * cols) * dtype_size(dtype), dtype, count,
                  cols};
  }
};

// A linear layer's weight: either `dense` ([N, K], F32/F16/BF16) or W4A16 int4 in the Marlin layout
// (shared/reference/algorithms.md §4.2): `qweight` I32 [K/16, 2N] and `scales` F16 [K/128, N]
// (permuted), with What[k][n] = (q[k][n] - 8) * s[k/128][n]. Exactly one form is set.
struct LinearWeight {
  Tensor dense;
  Tensor qweight;
  Tensor scales;
  bool is_int4() const { return qweight.data != nullptr; }
};

// Repetition / frequency / presence penalties of one sampling step: the n distinct context tokens of
// the penalty window, ids[i] seen counts[i] times (host arrays).
struct PenaltyTable {
  const int32_t* ids = nullptr;
  const float* counts = nullptr;
  int32_t n = 0;
  float repetition = 1.0f;
  float frequency = 0.0f;
  float presence = 0.0f;
};

// A penalized logit, the one definition of the math (Hugging Face order): CTRL's repetition penalty
// (l / r for l > 0, else l * r), then l -= frequency * count + presence. The CUDA kernel repeats it
// with explicitly rounded operations, so both give the same bits.
inline float penalized_logit(float l, float count, const PenaltyTable& t) {
  if (t.repetition != 1.0f) l = l > 0 ? l / t.repetition : l * t.repetition;
  const float penalty = t.frequency * count;
  return l - (penalty + t.presence);
}

// Applies the table to a host row of logits in place.
inline void apply_penalties(float* logits, const PenaltyTable& t) {
  for (int32_t i = 0; i < t.n; ++i) logits[t.ids[i]] = penalized_logit(logits[t.ids[i]], t.counts[i], t);
}

// One step for backends that replay recorded work (Backend::decode_step): a single decoded token, the
// tree of a speculative verification (up to kMaxStepTokens tokens with tree masks), or one level of
// drafting a tree (engine/speculative.cpp).
struct DecodeStep {
  static constexpr int32_t kMaxStepTokens = 64;
  int32_t n = 1;                       // tokens
  const int32_t* tokens = nullptr;     // host [n]; nullptr when the recorded ops read their ids from
                                       // backend memory (embedding_resident)
  const int32_t* positions = nullptr;  // host [n] RoPE positions
  const uint64_t* masks = nullptr;     // host [n] tree masks (Backend::tree_attention); nullptr: causal or
                                       // masks in backend memory (tree_attention_resident)
  int64_t start = 0;                   // the cache row of the first token: the rows before it are history
  int64_t prefix = -1;                 // tree attention's prefix (its rows are history); -1: start
  int64_t capacity = 0;                // cache rows
  // Steps whose recorded work differs are kept apart. A draft level is kDraftLevel + 2 * level + last
  // (the level's bookkeeping differs by level and by whether another level follows).
  enum Variant : int32_t { kDense = 0, kSparse = 1, kTree = 2, kDraftLevel = 3 };
  int32_t variant = kDense;
};

class ExecContext {
 public:
  virtual ~ExecContext() = default;
};

// Attention geometry shared by the attention and KV ops.
struct AttentionShape {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
};

// InfLLM v2 block-sparse attention settings (shared/reference/algorithms.md §1), in tokens. The
// level-2 compression kernel is 4x the level-1 one. The dense/sparse switch (dense_len) is the
// model graph's decision, not the op's.
struct SparseAttentionParams {
  int32_t kernel_size = 32;
  int32_t kernel_stride = 16;
  int32_t init_blocks = 1;
  int32_t block_size = 64;
  int32_t window_size = 2048;
  int32_t topk = 64;
};

// State a backend keeps per layer next to the KV cache for an attention variant (InfLLM v2: the
// mean-pooled keys of each KV head). Opaque to the model graph.
class AttentionState {
 public:
  virtual ~AttentionState() = default;
  // Forgets everything derived from cache rows >= rows (the cache was rewound to `rows` tokens).
  virtual void truncate(int64_t rows) = 0;
};

// One sequence's rows of a batch for Backend::attention_batch: rows [row, row + rows) of the batch's
// q, k, v and out belong to the sequence whose layer caches are k_cache / v_cache. Their K/V go to
// cache rows [start, start + rows); they attend causally (query i sees cache rows [0, start + i]), or
// by tree_masks as Backend::tree_attention, or by InfLLM v2 when `sparse` is set. (A draft's attention window is a view of its cache that starts later: k_cache / v_cache and start
// are then relative to it.)
struct AttentionSegment {
  int64_t row = 0;
  int64_t rows = 0;
  Tensor k_cache, v_cache;
  int64_t start = 0;
  const uint64_t* tree_masks = nullptr;  // [rows]; nullptr: causal
  // Tree mode's prefix: the rows before it are history and mask bit j is cache row prefix + j; -1:
  // start (a verified tree). A draft level stores its rows after the earlier levels' (start > prefix).
  int64_t tree_prefix = -1;
  int64_t prefix() const { return tree_prefix >= 0 ? tree_prefix : start; }
  // The masks are in backend memory (a tree drafted on the backend), each bit below mask_bits, as
  // Backend::tree_attention_resident reads them; else host memory.
  bool masks_resident = false;
  int32_t mask_bits = 64;
  AttentionState* sparse = nullptr;  // the sequence's InfLLM v2 state for this layer; nullptr: dense
};

// Whether values[0, n) holds no NaN and no infinity.
bool all_finite(const float* values, size_t n);

class DraftOps;

class Backend {
 public:
  Backend();
  virtual ~Backend();
  virtual const char* name() const = 0;

  // ---- memory ----
  virtual DType activation_dtype() const = 0;
  virtual DType kv_dtype() const = 0;
  // Throws mcpm::Error(MCPM_ERR_OUT_OF_MEMORY) when the allocation fails.
  virtual std::unique_ptr<Buffer> alloc(size_t bytes) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual std::unique_ptr<ExecContext> create_context(int32_t num_threads) = 0;
  // Bytes the backend could still allocate right now: free device memory (CUDA), the system's
  // available memory (CPU). Sizes KV caches from a fraction of it; never throws (0 if unknown).
  virtual uint64_t available_memory() const = 0;

  // ---- ops ----
  // out[i, :] = table[ids[i], :] * scale.  ids: host int32 [n].
  virtual void embedding(ExecContext& ctx, const Tensor& out, const Tensor& table, const int32_t* ids,
                         float scale) = 0;

  // out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * weight.
  virtual void rms_norm(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& weight,
                        float eps) = 0;

  // residual += delta * scale; out = rms_norm(residual) * weight (the fused residual add).
  virtual void add_rms_norm(ExecContext& ctx, const Tensor& out, const Tensor& residual, const Tensor& delta,
                            float scale, const Tensor& weight, float eps) = 0;

  // residual += delta * scale.
  virtual void add_scaled(ExecContext& ctx, const Tensor& residual, const Tensor& delta, float scale) = 0;

  // x *= scale, in place.
  virtual void scale(ExecContext& ctx, const Tensor& x, float scale) = 0;

  // out[n, N] = x[n, K] · W[N, K]^T, fp32 accumulation.
  virtual void linear(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& weight) = 0;

  // out[n, N] = x[n, K] · What, What[k][n] = (q[k][n] - 8) * s[k/128][n] read from the Marlin layout
  // (qweight I32 [K/16, 2N], scales F16 [K/128, N] permuted; K % 128 == 0, N % 64 == 0) as adopted by
  // adopt_int4_qweight/adopt_int4_scales, fp32 accumulation (the CPU backend may quantise x to int8,
  // see CpuBackend). The default throws mcpm::Error(MCPM_ERR_UNSUPPORTED).
  virtual void linear_int4(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& qweight,
                           const Tensor& scales);

  // Called once for each int4 linear tensor just stored in the Marlin layout: rewrites it in place
  // (same size) into the layout this backend's linear_int4 reads. The default keeps Marlin (CUDA
  // reads it directly); the CPU backend repacks (backend/cpu/int4_cpu.h).
  virtual void adopt_int4_qweight(const Tensor& qweight, int64_t K, int64_t N);
  virtual void adopt_int4_scales(const Tensor& scales, int64_t K, int64_t N);

  // The linear layer in whichever form its weight is held.
  void linear(ExecContext& ctx, const Tensor& out, const Tensor& x, const LinearWeight& w) {
    if (w.is_int4())
      linear_int4(ctx, out, x, w.qweight, w.scales);
    else
      linear(ctx, out, x, w.dense);
  }

  // Several linear layers over one input (q/k/v, gate/up): outs[i] = x · weights[i]. The default runs
  // them one by one; the CPU backend prepares the input once and runs all of them in one parallel
  // region when they are int4 (fewer thread synchronisations per decode step).
  virtual void linears(ExecContext& ctx, const Tensor* outs, const Tensor& x, const LinearWeight* const* weights,
                       int32_t count) {
    for (int32_t i = 0; i < count; ++i) linear(ctx, outs[i], x, *weights[i]);
  }

  // Rotate-half RoPE in place on x[n, heads * head_dim]: for each head and i < head_dim/2, with
  // angle = positions[t] * inv_freq[i]: (x[i], x[i+d/2]) -> (x[i]c - x[i+d/2]s, x[i+d/2]c + x[i]s)
  // where c = cos(angle)*attn_factor, s = sin(angle)*attn_factor. positions: host int32 [n];
  // inv_freq: backend memory, f32 [head_dim/2].
  virtual void rope(ExecContext& ctx, const Tensor& x, int32_t num_heads, int32_t head_dim,
                    const int32_t* positions, const Tensor& inv_freq, float attn_factor) = 0;

  // Writes k, v [n, kv_heads*head_dim] into rows [start, start+n) of the layer's caches
  // [capacity, kv_heads*head_dim] (kv_dtype()).
  virtual void store_kv(ExecContext& ctx, const Tensor& k_cache, const Tensor& v_cache, const Tensor& k,
                        const Tensor& v, int64_t start) = 0;

  // Causal GQA attention for n queries at positions start..start+n-1 over cache rows
  // [0, start + i] for query i. q, out: [n, heads*head_dim]. Query head h reads KV head
  // h / (heads / kv_heads). Scores scaled by 1/sqrt(head_dim), softmax in fp32.
  virtual void attention(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                         const Tensor& v_cache, const AttentionShape& shape, int64_t start) = 0;

  // State for sparse_attention() over one layer's KV cache of `capacity` rows (a backend may allocate
  // the compressed keys for all of them up front). The default throws mcpm::Error(MCPM_ERR_UNSUPPORTED)
  // (backends without InfLLM v2).
  virtual std::unique_ptr<AttentionState> create_sparse_attention_state(const SparseAttentionParams& params,
                                                                        const AttentionShape& shape,
                                                                        int64_t capacity);

  // InfLLM v2 attention (Hugging Face semantics) with the layout and contract of attention(): the
  // query at absolute position t = start + i attends, per KV group, to the keys j <= t of the blocks
  // selected from the compressed keys (init blocks, the local window and the top-k by stage-1
  // score). `state` (from create_sparse_attention_state with the same params and shape) holds what
  // earlier calls derived from this cache; the caller truncates it whenever cache rows are rewritten
  // (rewind), and the op itself drops anything derived from rows >= start before reading the new
  // rows. Runs sparse_select, then sparse_attend.
  void sparse_attention(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                        const Tensor& v_cache, const AttentionShape& shape, int64_t start, AttentionState& state) {
    sparse_select(ctx, q, k_cache, shape, start, state);
    sparse_attend(ctx, out, q, k_cache, v_cache, shape, start, state);
  }
  // sparse_attention's two steps (mcpm_op_bench times them apart). sparse_select brings the state's
  // compressed keys up to start + n cache rows and selects the key blocks of each (query, KV group)
  // into the state; sparse_attend then runs block-sparse attention for the same queries over that
  // selection. The defaults throw mcpm::Error(MCPM_ERR_UNSUPPORTED).
  virtual void sparse_select(ExecContext& ctx, const Tensor& q, const Tensor& k_cache, const AttentionShape& shape,
                             int64_t start, AttentionState& state);
  virtual void sparse_attend(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                             const Tensor& v_cache, const AttentionShape& shape, int64_t start, AttentionState& state);

  // Tree attention (speculative verification and EAGLE drafting). Query i's own K/V row is already
  // stored in the cache; it attends to every cache row [0, prefix) and to row prefix + j for each
  // set bit j of masks[i] (host, one uint64 per query; bit j must be set for the query's own row).
  // Rows are visited in ascending order, so a query whose mask marks its root-to-node path computes
  // the same sums, in the same order, as causal attention over that path. Layout as attention().
  virtual void tree_attention(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                              const Tensor& v_cache, const AttentionShape& shape, int64_t prefix,
                              const uint64_t* masks) = 0;

  // The attention of a batch that mixes sequences (continuous batching): for each segment, stores
  // its rows of k and v into its caches, then runs its queries as attention(), tree_attention() or
  // sparse_attention() would (same sums in the same order, so a sequence's rows come out the same
  // whether it runs alone or in a batch). q, out: [n, heads*head_dim]; k, v: [n, kv_heads*head_dim].
  // The default runs the segments one by one through those ops; the CPU backend runs every dense and
  // tree segment's (query, head) pairs in one parallel region.
  virtual void attention_batch(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k,
                               const Tensor& v, const AttentionSegment* segments, int32_t count,
                               const AttentionShape& shape);

  // dst[dst_rows[i], :] = src[src_rows[i], :] for i = 0..n-1 in order (host indices; dst and src have
  // the same dtype and cols and may be the same tensor: an ascending in-place compaction with
  // src_rows[i] >= dst_rows[i] is safe).
  virtual void copy_rows(ExecContext& ctx, const Tensor& dst, const Tensor& src, const int32_t* dst_rows,
                         const int32_t* src_rows, int32_t n) = 0;

  // x[i, :] += bias (bias: one row, any weight dtype).
  virtual void add_bias(ExecContext& ctx, const Tensor& x, const Tensor& bias) = 0;

  // out = silu(gate) * up, elementwise over [n, intermediate].
  virtual void silu_mul(ExecContext& ctx, const Tensor& out, const Tensor& gate, const Tensor& up) = 0;

  // Greedy sampling where the logits live, so only the token id comes back: `logits` is one row
  // [1, vocab] f32, used as scratch (penalized in place); the penalties are applied first, then the
  // index of the maximum is returned (the lowest index on ties, as Sampler's greedy path). `mask`,
  // when not null, is a token mask in backend memory (I32 [1, >= (vocab + 31) / 32], read as uint32
  // words: common/token_draw.h's token_allowed) that allows at least one token; the maximum is then
  // taken over the allowed tokens only. Waits for the queued work it depends on.
  virtual int32_t greedy_sample(ExecContext& ctx, const Tensor& logits, const PenaltyTable& penalties,
                                const Tensor* mask) = 0;

  // What greedy_sample / sample_token may return instead of a token when the row holds a NaN or an infinity
  // (a backend that checks while it samples; the CUDA backend does, on the device).
  static constexpr int32_t kNonFiniteToken = -1;

  // Whether row `logits` [1, vocab] f32 holds only finite values, after greedy_sample / sample_token sampled it
  // (penalties leave a finite row finite). The default downloads the row in small blocks and checks them on the
  // host; a backend whose sampling returns kNonFiniteToken itself returns true.
  virtual bool logits_finite(ExecContext& ctx, const Tensor& logits);

  // Temperature sampling where the logits live: the penalties, then common/token_draw.h's candidates
  // (only the tokens `mask` allows when it is not null; as for greedy_sample), softmax, top-k / top-p
  // / min-p and the draw at the uniform number u in [0, 1) (the caller's RNG draw), so the same u
  // picks the same token as the host sampler up to the summation order of doubles. `logits` as for
  // greedy_sample; params.temperature > 0.
  virtual int32_t sample_token(ExecContext& ctx, const Tensor& logits, const PenaltyTable& penalties,
                               const DrawParams& params, double u, const Tensor* mask) = 0;

  // EAGLE-2 drafting's bookkeeping (backend/draft_ops.h), apart from the ops. The default runs it on
  // the host over downloaded copies; the CUDA backend runs it on the device.
  virtual DraftOps& draft_ops();

  // embedding() and tree_attention() with their index arrays in backend memory, written by earlier
  // ops on ctx (a tree drafted by tree_expand): ids int32 [n], masks uint64 [n]. Every mask bit is
  // below `mask_bits` (<= 64), which bounds the keys read without looking at the masks. The defaults
  // download the arrays and call the host-array ops.
  virtual void embedding_resident(ExecContext& ctx, const Tensor& out, const Tensor& table, const int32_t* ids,
                                  float scale);
  virtual void tree_attention_resident(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                                       const Tensor& v_cache, const AttentionShape& shape, int64_t prefix,
                                       const uint64_t* masks, int32_t mask_bits);

  // Runs `record`, the forward pass of `step` (its logits left on the backend), or a replay of it.
  // The default runs it. The CUDA backend keeps one CUDA graph per length bucket, variant and token
  // count: it copies the step's tokens, positions, masks, start and prefix to device memory that the
  // recorded kernels read (inside `record` its embedding, rope, store_kv, attention, tree_attention
  // and sparse_attention ops take them from there, not from their host arguments; the _resident ops
  // read backend memory at fixed addresses anyway), so one replay serves every step of its bucket.
  virtual void decode_step(ExecContext& ctx, const DecodeStep& step, const std::function<void()>& record) {
    (void)ctx;
    (void)step;
    record();
  }

  // Waits until every op queued on ctx has finished (a no-op on the synchronous CPU backend).
  virtual void synchronize(ExecContext& ctx) = 0;

 private:
  std::unique_ptr<DraftOps> host_draft_ops_;  // draft_ops()'s default, made on first use
};

struct BackendOptions {
  int32_t device_index = 0;
  mcpm_cpu_precision cpu_precision = MCPM_CPU_PRECISION_DEFAULT;
};

// Creates the backend for `kind` (MCPM_BACKEND_*; AUTO picks the best available). Throws
// mcpm::Error(MCPM_ERR_BACKEND_UNAVAILABLE) when it is not compiled in or has no device.
std::shared_ptr<Backend> create_backend(mcpm_backend kind, const BackendOptions& options);

// Bit mask of MCPM_BACKEND_FLAG_* compiled into this library.
uint32_t compiled_backends();

}  // namespace mcpm
