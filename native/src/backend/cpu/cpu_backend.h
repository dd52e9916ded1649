// The CPU reference backend: exact MiniCPM4 math with fp32 activations, fp32 accumulation and an
// fp32 KV cache; weights stay in their checkpoint dtype and are widened inside the inner loops.
// It is the oracle every other backend is tested against, and what CI runs.
#pragma once

#include <vector>

#include "backend/backend.h"
#include "backend/cpu/int4_cpu.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/thread_pool.h"

namespace mcpm {

class CpuContext final : public ExecContext {
 public:
  explicit CpuContext(int32_t num_threads) : pool(num_threads), scratch_(static_cast<size_t>(pool.size())) {}

  // Per-thread scratch of at least `count` floats (valid until the next call with the same thread).
  float* scratch(int32_t thread, size_t count) {
    std::vector<float>& s = scratch_[static_cast<size_t>(thread)];
    if (s.size() < count) s.resize(count);
    return s.data();
  }

  // The attention ops' segment lists: attention_batch's dense segments and attend_segments' first work items
  // (kept to avoid allocations per call).
  std::vector<int32_t> segment_list;
  std::vector<int64_t> segment_items;

  // Scratch shared by all threads of one op (written before its parallel region).
  float* shared_scratch(size_t count) {
    if (shared_.size() < count) shared_.resize(count);
    return shared_.data();
  }
  // The same for int4's quantised activations (int4_cpu.h): q [n][K], scale and bias [n][K/128].
  int4cpu::Q8Buffer quantized_rows(int64_t n, int64_t K) {
    const size_t qbytes = (static_cast<size_t>(n * K) + 63) / 64 * 64, groups = static_cast<size_t>(n * K / 128);
    if (q8_.size() < qbytes + 8 * groups) q8_.resize(qbytes + 8 * groups);
    int4cpu::Q8Buffer rows;
    rows.q = reinterpret_cast<int8_t*>(q8_.data());
    rows.scale = reinterpret_cast<float*>(q8_.data() + qbytes);
    rows.bias = reinterpret_cast<int32_t*>(q8_.data() + qbytes + 4 * groups);
    rows.K = K;
    return rows;
  }

  ThreadPool pool;

 private:
  std::vector<std::vector<float>> scratch_;
  std::vector<float> shared_;
  std::vector<uint8_t> q8_;
};

// What the CPU backend's linears compute with:
//   Fast:  int4 weights meet activations quantised to int8 per 128-block (W4A8, integer dot products;
//          int4_cpu.h); bf16 linears round the activations to bf16 where the CPU has a bf16 dot
//          product (the avx512bf16 level), at every token count, so a token's result never depends on
//          the other tokens of the call (decode, verification, prefill, batches). The default.
//   Exact: fp32 activations everywhere (W4A16 and bf16 x fp32): the reference the tests compare
//          against and the CUDA kernels' oracle.
// MCPM_CPU_PRECISION=exact|fast in the environment sets the default.
enum class CpuPrecision { Fast, Exact };
CpuPrecision default_cpu_precision();

class CpuBackend final : public Backend {
 public:
  CpuBackend();
  // Uses the given kernel table instead of the best one for this CPU (tests compare ISAs).
  explicit CpuBackend(const CpuKernels& kernels, CpuPrecision precision = default_cpu_precision());

  const char* name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::F32; }
  DType kv_dtype() const override { return DType::F32; }
  std::unique_ptr<Buffer> alloc(size_t bytes) override;
  void upload(void* dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* src, size_t bytes) override;
  std::unique_ptr<ExecContext> create_context(int32_t num_threads) override;
  uint64_t available_memory() const override;

  void embedding(ExecContext& ctx, const Tensor& out, const Tensor& table, const int32_t* ids, float scale) override;
  void rms_norm(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& weight, float eps) override;
  void add_rms_norm(ExecContext& ctx, const Tensor& out, const Tensor& residual, const Tensor& delta, float scale,
                    const Tensor& weight, float eps) override;
  void add_scaled(ExecContext& ctx, const Tensor& residual, const Tensor& delta, float scale) override;
  void scale(ExecContext& ctx, const Tensor& x, float scale) override;
  using Backend::linear;
  void linear(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& weight) override;
  void linear_int4(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& qweight,
                   const Tensor& scales) override;
  void linears(ExecContext& ctx, const Tensor* outs, const Tensor& x, const LinearWeight* const* weights,
               int32_t count) override;
  void adopt_int4_qweight(const Tensor& qweight, int64_t K, int64_t N) override;
  void adopt_int4_scales(const Tensor& scales, int64_t K, int64_t N) override;
  void rope(ExecContext& ctx, const Tensor& x, int32_t num_heads, int32_t head_dim, const int32_t* positions,
            const Tensor& inv_freq, float attn_factor) override;
  void store_kv(ExecContext& ctx, const Tensor& k_cache, const Tensor& v_cache, const Tensor& k, const Tensor& v,
                int64_t start) override;
  void attention(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                 const AttentionShape& shape, int64_t start) override;
  std::unique_ptr<AttentionState> create_sparse_attention_state(const SparseAttentionParams& params,
                                                                const AttentionShape& shape,
                                                                int64_t capacity) override;
  void sparse_select(ExecContext& ctx, const Tensor& q, const Tensor& k_cache, const AttentionShape& shape,
                     int64_t start, AttentionState& state) override;
  void sparse_attend(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                     const Tensor& v_cache, const AttentionShape& shape, int64_t start, AttentionState& state) override;
  void attention_batch(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v,
                       const AttentionSegment* segments, int32_t count, const AttentionShape& shape) override;
  void tree_attention(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                      const Tensor& v_cache, const AttentionShape& shape, int64_t prefix,
                      const uint64_t* masks) override;
  void copy_rows(ExecContext& ctx, const Tensor& dst, const Tensor& src, const int32_t* dst_rows,
                 const int32_t* src_rows, int32_t n) override;
  void add_bias(ExecContext& ctx, const Tensor& x, const Tensor& bias) override;
  void silu_mul(ExecContext& ctx, const Tensor& out, const Tensor& gate, const Tensor& up) override;
  int32_t greedy_sample(ExecContext& ctx, const Tensor& logits, const PenaltyTable& penalties,
                        const Tensor* mask) override;
  int32_t sample_token(ExecContext& ctx, const Tensor& logits, const PenaltyTable& penalties, const DrawParams& params,
                       double u, const Tensor* mask) override;
  void synchronize(ExecContext&) override {}

 private:
  void attend(const float* qi, const float* kbase, const float* vbase, int64_t kv_stride, int64_t hd, int64_t prefix,
              int64_t tree_base, uint64_t tree_mask, float* scores, float* oi) const;
  // The attention of segments[which[0..n)] (dense or tree, their K/V already stored) in one parallel
  // region: attention(), tree_attention() and attention_batch() all run through it.
  void attend_segments(CpuContext& c, const Tensor& out, const Tensor& q, const AttentionSegment* segments,
                       const int32_t* which, int32_t n, const AttentionShape& shape) const;
  // Fast int4 linears of one input: x quantised to int8 once, then the row blocks of all `count`
  // (<= kMaxSharedLinears) weights in one parallel region.
  static constexpr int32_t kMaxSharedLinears = 4;
  void int4_fast(CpuContext& c, const Tensor* outs, const Tensor& x, const LinearWeight* const* weights,
                 int32_t count) const;
  // Widens `count` elements of a weight starting at element `offset` into dst.
  void widen(const Tensor& t, int64_t offset, float* dst, int64_t count) const;

  const CpuKernels& k_;
  CpuPrecision precision_;
};

}  // namespace mcpm
