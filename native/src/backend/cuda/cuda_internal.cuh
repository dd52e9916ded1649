// Internals shared by the CUDA backend's translation units: error checking, dtype helpers, warp and
// block reductions, and the CudaBackend / CudaContext classes. Each op is implemented in the .cu
// file of its concern (elementwise.cu, norm.cu, rope.cu, gemm.cu, int4_gemm.cu, attention.cu,
// sparse_attention.cu, sampling.cu).
//
// Data types, chosen once for the whole backend:
//   - Activations are fp32 (activation_dtype()). The residual stream, norms, RoPE, softmax and every
//     elementwise op therefore compute exactly like the CPU reference; decode reads a few KB of
//     activations per layer next to megabytes of weights, so fp32 costs nothing where it matters.
//   - The KV cache is bf16 (kv_dtype()): it halves the cache's memory and the bytes attention reads
//     per token (the cache dominates decode traffic at long contexts), and bf16 keeps fp32's range, so
//     large keys cannot overflow as they could in fp16. Keys/values are rounded to nearest even once,
//     when stored; attention widens them to fp32 and accumulates in fp32.
//   - Linear layers round their fp32 input to the weight's dtype (bf16 or fp16; fp32 weights keep fp32
//     inputs) and accumulate in fp32, for every batch size: cuBLAS (cublasGemmEx, CUBLAS_COMPUTE_32F,
//     tensor cores) for more than kGemvMaxRows rows, the hand-written GEMV up to that. Both paths see
//     the same rounded inputs, so prefill, decode and speculative verification differ only by fp32
//     summation order (as the CPU's paths do), and what rounding there is matches a bf16 PyTorch run.
//     int4 layers keep fp32 inputs for 1..8 tokens (their dequantised weights are exact in fp32); more
//     tokens run on tensor cores with fp16 inputs and fp16-rounded weights, as Marlin (int4_mma.cu).
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/draft_ops.h"
#include "backend/cuda/cuda_backend.h"
#include "common/dtype.h"
#include "common/error.h"

namespace mcpm {
namespace cuda {

// ---- errors ----------------------------------------------------------------------------------------

// Throws mcpm::Error for a failed CUDA call: OUT_OF_MEMORY for allocation failures,
// BACKEND_UNAVAILABLE for a missing driver or device, INTERNAL otherwise; the message names the
// call, cudaGetErrorString and the source position.
[[noreturn]] void throw_cuda(cudaError_t err, const char* what, const char* file, int line);
[[noreturn]] void throw_cublas(cublasStatus_t st, const char* what, const char* file, int line);

#define MCPM_CUDA_CHECK(expr)                                                          \
  do {                                                                                 \
    const cudaError_t mcpm_err_ = (expr);                                              \
    if (mcpm_err_ != cudaSuccess) ::mcpm::cuda::throw_cuda(mcpm_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define MCPM_CUBLAS_CHECK(expr)                                                        \
  do {                                                                                 \
    const cublasStatus_t mcpm_st_ = (expr);                                            \
    if (mcpm_st_ != CUBLAS_STATUS_SUCCESS) ::mcpm::cuda::throw_cublas(mcpm_st_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: reports an invalid launch configuration (or an earlier asynchronous error).
#define MCPM_CUDA_LAUNCHED(kernel_name) MCPM_CUDA_CHECK(cudaPeekAtLastError())

// ---- launch helpers ---------------------------------------------------------------------------------

// Every kernel launch goes through MCPM_LAUNCH(grid, block, dynamic_smem, stream, kernel)(args...):
// under nvcc it is kernel<<<grid, block, dynamic_smem, stream>>>(args...); in the CPU emulation of
// the CUDA subset we use (native/emulator, MCPM_CUDA_EMULATED builds) the emulator runs it, so the
// same kernel source executes in CI. Dynamic shared memory is declared with MCPM_DYNAMIC_SHARED.
#if defined(__CUDACC__)
#define MCPM_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define MCPM_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#else
#define MCPM_LAUNCH(grid, block, smem, stream, ...) \
  ::mcpm_emu::make_launch(grid, block, smem, stream, #__VA_ARGS__, __VA_ARGS__)
#define MCPM_DYNAMIC_SHARED(type, name) type* const name = reinterpret_cast<type*>(::mcpm_emu::dynamic_shared())
#endif

constexpr int kWarp = 32;

// Blocks for a grid-stride loop over `count` elements with `threads` per block.
inline unsigned grid_for(int64_t count, int threads, int64_t max_blocks = 65535) {
  int64_t blocks = (count + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > max_blocks) blocks = max_blocks;
  return static_cast<unsigned>(blocks);
}

// ---- dtype helpers (device) ------------------------------------------------------------------------

// Element i of a weight-like array of any float dtype, widened to fp32 (exact).
__device__ __forceinline__ float load_as_float(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// ---- reductions (device) ---------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024), returned to every thread.
// `scratch` holds 32 floats of shared memory; the call contains __syncthreads(), so every thread of
// the block must reach it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(total);
}

// dst[i] = src[i] rounded to nearest even in `dt` (BF16 or F16), i < count, queued on `stream`.
void launch_to_dtype(cudaStream_t stream, void* dst, DType dt, const float* src, int64_t count);
// Lets the int4 tensor-core kernels use up to `smem_per_block` bytes of shared memory (int4_mma.cu;
// once per device, when a backend is created).
void configure_int4_mma(size_t smem_per_block);

}  // namespace cuda

// ---- memory and contexts --------------------------------------------------------------------------

// Device memory from cudaMalloc (256-byte aligned), released with cudaFree.
class CudaBuffer final : public Buffer {
 public:
  CudaBuffer(int device, size_t bytes);
  ~CudaBuffer() override;

 private:
  int device_;
};

// Sets the calling thread's current device for the scope (hosts call the ABI from any thread) and
// restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// Per-session execution state: one non-blocking stream that every op of the session is queued on in
// order, a cuBLAS handle bound to it, and device scratch that grows on demand.
class CudaContext final : public ExecContext {
 public:
  enum Slot : int {
    kIds,          // embedding ids
    kPositions,    // RoPE positions
    kMasks,        // tree-attention masks
    kDstRows,      // copy_rows destinations
    kSrcRows,      // copy_rows sources
    kGemmInput,    // the linear input rounded to the weight dtype
    kAttnPartial,  // split-KV partial results
    kInt4Partial,  // int4 K-split partial sums
    kPenaltyIds,   // sampling: penalty-window token ids
    kPenaltyCounts,// sampling: their counts
    kSampledToken, // greedy_sample / sample_token: the result
    kSortIdsIn,    // sample_token: token ids 0..vocab-1
    kSortIdsOut,   // sample_token: ids in sorted order
    kSortKeysOut,  // sample_token: logits in sorted order
    kSortTemp,     // sample_token: the radix sort's temporary storage
    kProbs,        // sample_token: candidate probabilities
    kMaskedKeys,   // sample_token with a token mask: the allowed tokens' logits, in id order
    kMaskedCount,  // sample_token with a token mask: how many tokens it allows
    kSparseScores, // sparse_attention: stage-1 kernel scores [n][kv_heads][n1]
    kSparseBlocks, // sparse_attention: selected blocks [n][kv_heads][max_blocks]
    kSparseCounts, // sparse_attention: their counts [n][kv_heads]
    kSlotCount
  };

  explicit CudaContext(int device);
  ~CudaContext() override;

  // At least `bytes` of device scratch for `slot`, valid until the next call for the same slot. Growing
  // waits for the stream first, so no queued kernel still reads the old allocation, and drops every
  // recorded graph (they hold the old address).
  void* scratch(Slot slot, size_t bytes);
  // A device copy of host[0, bytes), queued on the stream (so kernels queued after it see it). A copy
  // whose bytes equal the slot's previous upload is skipped: a forward call passes the same positions,
  // ids and masks to every layer.
  const void* upload(Slot slot, const void* host, size_t bytes);
  // Destroys every recorded step (the stream must not be replaying one).
  void drop_graphs();

  int device;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  static constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;  // cuBLAS's own default on Hopper
  void* cublas_workspace = nullptr;

  // CUDA graphs of decode steps (CudaBackend::decode_step). In graph mode the embedding, rope,
  // store_kv and attention ops read the step's token, position, start and prefix from `step` (device memory)
  // and attention sizes its key splits for `graph_bucket` keys, so a recording serves any step of
  // its bucket.
  struct StepState {
    int64_t start;
    int64_t prefix;  // tree attention's prefix
    uint64_t masks[DecodeStep::kMaxStepTokens];
    int32_t tokens[DecodeStep::kMaxStepTokens];
    int32_t positions[DecodeStep::kMaxStepTokens];
  };
  StepState* step = nullptr;
  bool graph_mode = false;
  int64_t graph_bucket = 0;
  int32_t graph_tokens = 0;  // the recorded step's token count
  struct RecordedStep {
    int64_t bucket;
    int32_t variant;  // DecodeStep::variant
    int32_t tokens;   // DecodeStep::n
    cudaGraphExec_t exec;
  };
  std::vector<RecordedStep> graphs;
  bool graphs_failed = false;  // a capture failed once: launch kernels one by one from then on

  // Shape of the last sparse_attention call's selection in kSparseBlocks / kSparseCounts (test hook).
  int64_t sparse_rows = 0, sparse_max_blocks = 0;

 private:
  struct Scratch {
    void* ptr = nullptr;
    size_t size = 0;
    std::vector<unsigned char> shadow;  // host copy of the last upload
    bool shadow_valid = false;
  };
  Scratch slots_[kSlotCount];
};

// The selected key blocks of block-sparse attention (device): for query token t and KV head g,
// blocks[(t * kv_heads + g) * max_blocks + s] for s < counts[t * kv_heads + g], ascending.
struct KeyBlocks {
  const int32_t* blocks = nullptr;
  const int32_t* counts = nullptr;
  int32_t max_blocks = 0;
  int32_t block_size = 0;
};

// The tree masks of a tree-attention call: host masks (uploaded; a recorded step's come from its
// state), or masks already in device memory whose bits are all below `bits`.
struct TreeMasks {
  const uint64_t* host = nullptr;
  const uint64_t* device = nullptr;
  int32_t bits = 0;
};

class CudaBackend final : public Backend, public DraftOps {
 public:
  // The device must have passed cuda_device_problem(); throws BACKEND_UNAVAILABLE when this build
  // cannot run kernels on it.
  explicit CudaBackend(int device);
  ~CudaBackend() override;

  const char* name() const override { return "cuda"; }
  DType activation_dtype() const override { return DType::F32; }
  DType kv_dtype() const override { return DType::BF16; }
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
  void rope(ExecContext& ctx, const Tensor& x, int32_t num_heads, int32_t head_dim, const int32_t* positions,
            const Tensor& inv_freq, float attn_factor) override;
  void store_kv(ExecContext& ctx, const Tensor& k_cache, const Tensor& v_cache, const Tensor& k, const Tensor& v,
                int64_t start) override;
  void attention(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                 const AttentionShape& shape, int64_t start) override;
  void tree_attention(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                      const Tensor& v_cache, const AttentionShape& shape, int64_t prefix,
                      const uint64_t* masks) override;
  void copy_rows(ExecContext& ctx, const Tensor& dst, const Tensor& src, const int32_t* dst_rows,
                 const int32_t* src_rows, int32_t n) override;
  void add_bias(ExecContext& ctx, const Tensor& x, const Tensor& bias) override;
  void silu_mul(ExecContext& ctx, const Tensor& out, const Tensor& gate, const Tensor& up) override;
  int32_t greedy_sample(ExecContext& ctx, const Tensor& logits, const PenaltyTable& penalties,
                        const Tensor* mask) override;
  // greedy_sample and sample_token check the row on the device and return kNonFiniteToken.
  bool logits_finite(ExecContext&, const Tensor&) override { return true; }
  // EAGLE-2 bookkeeping on the device (backend/draft_ops.h).
  DraftOps& draft_ops() override { return *this; }
  void top_log_probs(ExecContext& ctx, const Tensor& logits, int32_t k, const Tensor& ids,
                     const Tensor& log_probs) override;
  void tree_expand(ExecContext& ctx, const TreeExpandArgs& args) override;
  void tree_select(ExecContext& ctx, void* state, int32_t candidates, int32_t tree_size, int32_t root_token) override;
  void embedding_resident(ExecContext& ctx, const Tensor& out, const Tensor& table, const int32_t* ids,
                          float scale) override;
  void tree_attention_resident(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                               const Tensor& v_cache, const AttentionShape& shape, int64_t prefix,
                               const uint64_t* masks, int32_t mask_bits) override;
  void decode_step(ExecContext& ctx, const DecodeStep& step, const std::function<void()>& record) override;
  int32_t sample_token(ExecContext& ctx, const Tensor& logits, const PenaltyTable& penalties, const DrawParams& params,
                       double u, const Tensor* mask) override;
  void synchronize(ExecContext& ctx) override;
  std::unique_ptr<AttentionState> create_sparse_attention_state(const SparseAttentionParams& params,
                                                                const AttentionShape& shape,
                                                                int64_t capacity) override;
  void sparse_select(ExecContext& ctx, const Tensor& q, const Tensor& k_cache, const AttentionShape& shape,
                     int64_t start, AttentionState& state) override;
  void sparse_attend(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                     const Tensor& v_cache, const AttentionShape& shape, int64_t start, AttentionState& state) override;

  int device() const { return device_; }
  // More than kGemvMaxRows tokens of an int4 layer: the tensor-core kernel (default) or the fp32
  // tiled one. Set it while no work is queued (tests compare both paths).
  void set_int4_tensor_cores(bool on) { int4_tensor_cores_ = on; }
  int multiprocessors() const { return multiprocessors_; }

  // Rows up to which linear() uses the hand-written GEMV instead of cuBLAS.
  static constexpr int64_t kGemvMaxRows = 8;

 private:
  // linear_int4 for 1..8 tokens (int4_gemm.cu).
  void linear_int4_gemv(CudaContext& c, const Tensor& out, const Tensor& x, const Tensor& qweight,
                        const Tensor& scales);
  // linear_int4 for more tokens on tensor cores (int4_mma.cu).
  void linear_int4_mma(CudaContext& c, const Tensor& out, const Tensor& x, const Tensor& qweight,
                       const Tensor& scales);
  // Shared body of attention(), tree_attention(_resident)() and sparse_attend() (masks == nullptr
  // and key_blocks == nullptr: causal).
  void attend(CudaContext& c, const Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
              const AttentionShape& shape, int64_t start, const TreeMasks* masks,
              const KeyBlocks* key_blocks = nullptr);

  int device_;
  int multiprocessors_ = 1;
  size_t smem_per_block_optin_ = 48 * 1024;      // shared memory a kernel may opt in to
  size_t smem_per_multiprocessor_ = 100 * 1024;  // shared memory of one multiprocessor
  bool int4_tensor_cores_ = true;
  cudaStream_t transfer_ = nullptr;  // upload/download (synchronous to the caller)
};

CudaContext& cuda_context(ExecContext& ctx);

}  // namespace mcpm
