// InfLLM v2 trainable block-sparse attention on CUDA (MiniCPM4). The semantics and the CPU reference
// are engine/infllm.h's; the op's contract is backend.h's sparse_attention. Per layer, sparse_select
// launches steps 1-3 and sparse_attend step 4:
//
//   1. compress_kernel: the level-1 (kernel_size / kernel_stride, 32/16) and level-2 (4x: 128/64)
//      mean-pooled keys of every KV head, for the kernels completed since the state's last call
//      (incremental; kernels that read rewritten rows are recomputed). fp32 [kv_heads][kernels][hd],
//      summed in token order and then scaled by 1/size: the reference's exact operations, so the
//      compressed keys are bit-identical to the CPU's for the same (bf16) keys.
//   2. stage1_kernel: one block per (query token, KV head) reads the head's compressed keys once for
//      all `group` query heads that share them: lse_g over the visible level-2 keys (online softmax
//      per lane, merged across the warp), then S[c] = sum_g exp(scale q_g.C1[c] - lse_g) for the
//      visible level-1 kernels and 0 for the others -> scratch [n][kv_heads][n1].
//   3. select_kernel: one block per (query token, KV head): block scores (max-pool of S, +inf for the
//      init and local blocks), the k-th best block key by an 8-pass radix select and the ascending
//      list of blocks with a key at least that, up to the token's own block (infllm_select.h, whose
//      functions the CPU tests run against the reference in CI).
//   4. Stage 2: attention.cu's kernel in block-sparse mode over the selected blocks (split-KV for
//      decode, one token per thread block for prefill).
//
// CUDA graphs (a recorded decode step, CudaContext::graph_mode): every kernel takes the step's start
// from the device step state and derives its lengths from it (stage 1 and selection their kernel
// and block counts; compression the one kernel per level, if any, that the step's row completes),
// and scratch is sized for the bucket, so one replay serves every step of the bucket. The state's
// host count of compressed rows (`rows`) is then only a lower bound (replays do not update it); an
// eager call recompresses from it, which rewrites identical values. Not yet: tensor cores for stage 1
// and stage 2.
#include <algorithm>
#include <climits>
#include <cmath>
#include <vector>

#include "backend/cuda/cuda_internal.cuh"
#include "backend/cuda/infllm_select.h"

namespace mcpm {

namespace {

// The compressed keys of one layer's KV cache.
class CudaSparseState final : public AttentionState {
 public:
  void truncate(int64_t r) override { rows = std::min(rows, r); }

  SparseAttentionParams params;
  AttentionShape shape;
  int64_t capacity = 0;
  int64_t cap1 = 0, cap2 = 0;  // level-1 / level-2 kernels that fit in `capacity` rows
  std::unique_ptr<Buffer> c1, c2;  // fp32 [kv_heads][cap1 | cap2][hd]
  int64_t rows = 0;  // the leading cache rows whose complete kernels are compressed
  // sparse_select's last call (its blocks and counts are the context's kSparseBlocks / kSparseCounts).
  int64_t selected_start = -1, selected_n = 0, max_blocks = 0;
};

}  // namespace

namespace cuda {
namespace {

namespace sel = infllm_select;

constexpr int kCompressThreads = 128;
constexpr int kStage1Threads = 256;
constexpr int kSelectThreads = 256;
constexpr int kMaxGroup = 32;  // query heads per KV head in stage 1 (MiniCPM4: 8 and 16)

// out[h][c][d] = (1 / size) * sum_{j < size} K[c * stride + j][h * hd + d] for c = c0 + blockIdx.x and
// KV head h = blockIdx.y; K bf16 [rows, kv_ld], out fp32 [kv_heads][cap][hd]. Token order, then the
// scale, as engine/infllm's mean_pool. With start_dev (a recorded decode step, one block per head):
// the kernel that ends at the step's row start_dev + 1, if there is one.
__global__ void __launch_bounds__(kCompressThreads)
    compress_kernel(const __nv_bfloat16* __restrict__ k, int64_t kv_ld, int hd, int size, int stride, int64_t c0,
                    const int64_t* start_dev, float* __restrict__ out, int64_t cap) {
  int64_t c = c0 + blockIdx.x;
  if (start_dev) {
    const int64_t rows = *start_dev + 1;
    if (rows < size || (rows - size) % stride != 0) return;
    c = (rows - size) / stride;
  }
  const int h = blockIdx.y;
  const float inv = 1.0f / static_cast<float>(size);
  const __nv_bfloat16* base = k + c * stride * kv_ld + static_cast<int64_t>(h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float s = 0.0f;
    for (int j = 0; j < size; ++j) s += __bfloat162float(base[static_cast<int64_t>(j) * kv_ld + d]);
    out[(static_cast<int64_t>(h) * cap + c) * hd + d] = s * inv;
  }
}

struct Stage1Args {
  const float* q;  // [n, heads * hd]; the group's heads h*group .. h*group+group-1 are contiguous
  int64_t q_ld;
  const float* c1;  // [kv_heads][cap1][hd]
  const float* c2;  // [kv_heads][cap2][hd]
  int64_t cap1, cap2;
  float* S;         // [n][kv_heads][s_stride]
  int64_t s_stride; // >= the level-1 kernels of the call's rows
  int64_t start;
  const int64_t* start_dev;  // a recorded decode step: start is read from here
  int group, hd;
  int kernel_size, kernel_stride;  // level 1; level 2 is 4x both
  float scale;
};

// Stage 1 for query token blockIdx.x and KV head blockIdx.y (see the file comment). GMAX >= group:
// the per-thread dot products of the group live in registers.
template <int GMAX>
__global__ void __launch_bounds__(kStage1Threads) stage1_kernel(const Stage1Args a) {
  MCPM_DYNAMIC_SHARED(float, smem);
  const int hd = a.hd, group = a.group;
  float* qs = smem;                // [group][hd]
  float* lse = qs + group * hd;    // [group]
  const int i = blockIdx.x, h = blockIdx.y, kv_heads = gridDim.y;
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp, warps = blockDim.x / kWarp;
  const float* qrow = a.q + static_cast<int64_t>(i) * a.q_ld + static_cast<int64_t>(h) * group * hd;
  for (int e = tid; e < group * hd; e += blockDim.x) qs[e] = qrow[e];
  __syncthreads();

  const int64_t start = a.start_dev ? *a.start_dev : a.start, t = start + i, total = start + gridDim.x;
  const int64_t n1 = sel::kernel_count(total, a.kernel_size, a.kernel_stride);  // the compressed kernels
  const int64_t vis1 = sel::kernel_count(t + 1, a.kernel_size, a.kernel_stride);
  const int64_t vis2 = sel::kernel_count(t + 1, 4 * a.kernel_size, 4 * a.kernel_stride);
  float* S = a.S + (static_cast<int64_t>(i) * kv_heads + h) * a.s_stride;
  if (vis2 == 0) {  // no normalising key yet: every score 0 (the reference maps HF's NaN to 0)
    for (int64_t c = tid; c < n1; c += blockDim.x) S[c] = 0.0f;
    return;
  }
  const float* c1 = a.c1 + static_cast<int64_t>(h) * a.cap1 * hd;
  const float* c2 = a.c2 + static_cast<int64_t>(h) * a.cap2 * hd;

  // lse_g = log sum_{c < vis2} exp(scale q_g.C2[c]): a warp per query head, lanes over the keys.
  for (int g = warp; g < group; g += warps) {
    const float* qg = qs + g * hd;
    float m = -INFINITY, l = 0.0f;
    for (int64_t c = lane; c < vis2; c += kWarp) {
      const float* key = c2 + c * hd;
      float dot = 0.0f;
      for (int d = 0; d < hd; ++d) dot = fmaf(qg[d], key[d], dot);
      const float x = a.scale * dot;
      if (x > m) {
        l = l * expf(m - x) + 1.0f;  // l is 0 while m is -inf
        m = x;
      } else {
        l += expf(x - m);
      }
    }
#pragma unroll
    for (int o = kWarp / 2; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o), l2 = __shfl_xor_sync(0xffffffffu, l, o);
      const float mm = fmaxf(m, m2);
      l = (m == -INFINITY ? 0.0f : l * expf(m - mm)) + (m2 == -INFINITY ? 0.0f : l2 * expf(m2 - mm));
      m = mm;
    }
    if (lane == 0) lse[g] = m + logf(l);
  }
  __syncthreads();

  // S[c]: a thread per level-1 kernel, the group's dot products over d in ascending order.
  for (int64_t c = tid; c < n1; c += blockDim.x) {
    if (c >= vis1) {
      S[c] = 0.0f;
      continue;
    }
    const float* key = c1 + c * hd;
    float dots[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; ++g) dots[g] = 0.0f;
    for (int d = 0; d < hd; ++d) {
      const float kd = key[d];
#pragma unroll
      for (int g = 0; g < GMAX; ++g)
        if (g < group) dots[g] = fmaf(qs[g * hd + d], kd, dots[g]);
    }
    float s = 0.0f;
#pragma unroll
    for (int g = 0; g < GMAX; ++g)
      if (g < group) s += expf(a.scale * dots[g] - lse[g]);
    S[c] = s;
  }
}

struct SelectArgs {
  const float* S;  // [n][kv_heads][s_stride]
  int64_t s_stride;
  int64_t start;             // the call's first query position (its rows end at start + n)
  const int64_t* start_dev;  // a recorded decode step: start is read from here
  int64_t kernel_size, kernel_stride;
  int64_t block_size, init_blocks, local_blocks, pool_ratio, topk_total;
  int32_t* blocks;  // [n][kv_heads][max_blocks]
  int32_t* counts;  // [n][kv_heads]
  int max_blocks;
};

// Block selection for query token blockIdx.x and KV head blockIdx.y (see the file comment and
// infllm_select.h). blockDim.x is kSelectThreads.
__global__ void __launch_bounds__(kSelectThreads) select_kernel(const SelectArgs a) {
  __shared__ uint32_t hist[sel::kBins];
  __shared__ uint64_t threshold_s;
  __shared__ uint32_t rank_s;
  __shared__ int warp_counts[kSelectThreads / kWarp];
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp, warps = blockDim.x / kWarp;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * gridDim.y + blockIdx.y;
  const int64_t start = a.start_dev ? *a.start_dev : a.start, t = start + blockIdx.x, total = start + gridDim.x;
  const int64_t n1 = sel::kernel_count(total, a.kernel_size, a.kernel_stride);
  const int64_t n_blocks = (total + a.block_size - 1) / a.block_size;
  const int64_t k = min(a.topk_total, n_blocks);
  const float* S = a.S + item * a.s_stride;
  int32_t* out = a.blocks + item * a.max_blocks;
  auto key = [&](int64_t b) {
    const float score = sel::forced_block(b, t, a.block_size, a.init_blocks, a.local_blocks)
                            ? INFINITY
                            : sel::pooled_block_score(S, n1, a.pool_ratio, b);
    return sel::block_key(score, b);
  };
  if (k <= 0) {
    if (tid == 0) a.counts[item] = 0;
    return;
  }

  // The k-th largest key, 8 bits at a time from the top.
  if (tid == 0) {
    threshold_s = 0;
    rank_s = static_cast<uint32_t>(k);
  }
  for (int shift = sel::kFirstShift; shift >= 0; shift -= sel::kDigitBits) {
    for (int e = tid; e < sel::kBins; e += blockDim.x) hist[e] = 0;
    __syncthreads();  // also publishes threshold_s and rank_s
    const uint64_t fixed = sel::radix_fixed_mask(shift), thr = threshold_s;
    for (int64_t b = tid; b < n_blocks; b += blockDim.x) {
      const uint64_t kb = key(b);
      if ((kb & fixed) == (thr & fixed)) atomicAdd(&hist[sel::radix_digit(kb, shift)], 1u);
    }
    __syncthreads();
    if (tid == 0) {
      uint32_t rank = rank_s;
      const int d = sel::radix_choose_digit(hist, rank);  // >= 0: k <= n_blocks keys were counted
      rank_s = rank;
      threshold_s = thr | (static_cast<uint64_t>(d < 0 ? 0 : d) << shift);
    }
    __syncthreads();
  }
  const uint64_t thr = threshold_s;

  // The selected blocks up to t's own block, ascending: per tile of blockDim.x blocks, each warp's
  // ballot gives a lane's rank in its warp, the warps before it give the rest.
  const int64_t last = min(n_blocks - 1, t / a.block_size);
  int64_t base = 0;
  for (int64_t b0 = 0; b0 <= last; b0 += blockDim.x) {
    const int64_t b = b0 + tid;
    const bool take = b <= last && key(b) >= thr;
    const unsigned ballot = __ballot_sync(0xffffffffu, take);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int64_t before = base, tile = 0;
    for (int w = 0; w < warps; ++w) {
      if (w < warp) before += warp_counts[w];
      tile += warp_counts[w];
    }
    const int64_t pos = before + __popc(ballot & ((1u << lane) - 1u));
    if (take && pos < a.max_blocks) out[pos] = static_cast<int32_t>(b);
    base += tile;
    __syncthreads();  // warp_counts is rewritten by the next tile
  }
  if (tid == 0) a.counts[item] = static_cast<int32_t>(base < a.max_blocks ? base : a.max_blocks);
}

}  // namespace
}  // namespace cuda

std::unique_ptr<AttentionState> CudaBackend::create_sparse_attention_state(const SparseAttentionParams& params,
                                                                           const AttentionShape& shape,
                                                                           int64_t capacity) {
  // The model validated the parameters (engine/model.cpp); these are the kernels' own limits.
  MCPM_CHECK(params.kernel_size >= params.kernel_stride && params.kernel_stride > 0 && params.block_size > 0 &&
             params.block_size % params.kernel_stride == 0 && params.window_size >= 0 &&
             params.window_size % params.block_size == 0 && params.topk >= 0 && params.init_blocks >= 0);
  MCPM_CHECK(shape.num_kv_heads > 0 && shape.num_heads % shape.num_kv_heads == 0 && shape.head_dim > 0 &&
             capacity >= 0);
  auto state = std::make_unique<CudaSparseState>();
  state->params = params;
  state->shape = shape;
  state->capacity = capacity;
  state->cap1 = infllm_select::kernel_count(capacity, params.kernel_size, params.kernel_stride);
  state->cap2 = infllm_select::kernel_count(capacity, 4 * int64_t{params.kernel_size}, 4 * int64_t{params.kernel_stride});
  const size_t row = static_cast<size_t>(shape.num_kv_heads) * static_cast<size_t>(shape.head_dim) * sizeof(float);
  state->c1 = alloc(std::max<size_t>(1, static_cast<size_t>(state->cap1)) * row);
  state->c2 = alloc(std::max<size_t>(1, static_cast<size_t>(state->cap2)) * row);
  return state;
}

void CudaBackend::sparse_select(ExecContext& ctx, const Tensor& q, const Tensor& k_cache, const AttentionShape& shape,
                                int64_t start, AttentionState& state) {
  CudaContext& c = cuda_context(ctx);
  CudaSparseState& st = static_cast<CudaSparseState&>(state);
  const int64_t n = q.rows, hd = shape.head_dim, heads = shape.num_heads, kv_heads = shape.num_kv_heads;
  MCPM_CHECK(heads == st.shape.num_heads && kv_heads == st.shape.num_kv_heads && hd == st.shape.head_dim);
  MCPM_CHECK(heads % kv_heads == 0 && heads / kv_heads <= cuda::kMaxGroup && kv_heads <= 65535);
  MCPM_CHECK(q.dtype == DType::F32 && q.cols == heads * hd && k_cache.dtype == DType::BF16 &&
             k_cache.cols == kv_heads * hd);
  MCPM_CHECK(start >= 0 && start + n <= st.capacity && start + n <= k_cache.rows && n <= INT_MAX);
  if (n == 0) return;
  const SparseAttentionParams& p = st.params;
  const int64_t group = heads / kv_heads, total = start + n;
  // A recorded step reads its start from the step state; the launches are sized for the bucket.
  const bool recorded = c.graph_mode;
  MCPM_CHECK(!recorded || (n == 1 && c.graph_bucket >= total && c.graph_bucket <= st.capacity));
  const int64_t span = recorded ? c.graph_bucket : total;  // rows the launches are sized for
  const int64_t* start_dev = recorded ? &c.step->start : nullptr;
  DeviceGuard guard(device_);

  // 1. Compress the kernels completed since the state's rows (those reading rows >= start are redone);
  // a recorded step first catches up to its start eagerly (only the eager run before the capture
  // finds anything to do), then records the kernels its own row completes.
  st.rows = std::min(st.rows, start);
  struct Level {
    int64_t size, stride, cap;
    float* keys;
  };
  const Level levels[2] = {
      {p.kernel_size, p.kernel_stride, st.cap1, static_cast<float*>(st.c1->data())},
      {4 * int64_t{p.kernel_size}, 4 * int64_t{p.kernel_stride}, st.cap2, static_cast<float*>(st.c2->data())}};
  for (const Level& lv : levels) {
    const int64_t from = infllm_select::kernel_count(st.rows, lv.size, lv.stride);
    const int64_t to = infllm_select::kernel_count(recorded ? start : total, lv.size, lv.stride);
    MCPM_CHECK(infllm_select::kernel_count(span, lv.size, lv.stride) <= lv.cap && to - from <= INT_MAX);
    if (to > from) {
      MCPM_LAUNCH(dim3(static_cast<unsigned>(to - from), static_cast<unsigned>(kv_heads)),
                              cuda::kCompressThreads, 0, c.stream, cuda::compress_kernel)(
          k_cache.as<const __nv_bfloat16>(), k_cache.cols, static_cast<int>(hd), static_cast<int>(lv.size),
          static_cast<int>(lv.stride), from, nullptr, lv.keys, lv.cap);
      MCPM_CUDA_LAUNCHED(compress_kernel);
    }
    if (recorded) {
      MCPM_LAUNCH(dim3(1, static_cast<unsigned>(kv_heads)), cuda::kCompressThreads, 0, c.stream, cuda::compress_kernel)(
          k_cache.as<const __nv_bfloat16>(), k_cache.cols, static_cast<int>(hd), static_cast<int>(lv.size),
          static_cast<int>(lv.stride), 0, start_dev, lv.keys, lv.cap);
      MCPM_CUDA_LAUNCHED(compress_kernel);
    }
  }
  st.rows = total;
  const int64_t n1_span = infllm_select::kernel_count(span, p.kernel_size, p.kernel_stride);

  // 2. Stage-1 kernel scores.
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(kv_heads));
  auto* scores = static_cast<float*>(c.scratch(
      CudaContext::kSparseScores, static_cast<size_t>(n * kv_heads * std::max<int64_t>(n1_span, 1)) * sizeof(float)));
  if (n1_span > 0) {
    cuda::Stage1Args a{};
    a.q = q.as<const float>();
    a.q_ld = q.cols;
    a.c1 = static_cast<const float*>(st.c1->data());
    a.c2 = static_cast<const float*>(st.c2->data());
    a.cap1 = st.cap1;
    a.cap2 = st.cap2;
    a.S = scores;
    a.s_stride = n1_span;
    a.start = start;
    a.start_dev = start_dev;
    a.group = static_cast<int>(group);
    a.hd = static_cast<int>(hd);
    a.kernel_size = p.kernel_size;
    a.kernel_stride = p.kernel_stride;
    a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const size_t smem = static_cast<size_t>(group * hd + group) * sizeof(float);
    MCPM_CHECK(smem <= 48 * 1024);
    if (group <= 8)
      MCPM_LAUNCH(grid, cuda::kStage1Threads, smem, c.stream, cuda::stage1_kernel<8>)(a);
    else if (group <= 16)
      MCPM_LAUNCH(grid, cuda::kStage1Threads, smem, c.stream, cuda::stage1_kernel<16>)(a);
    else
      MCPM_LAUNCH(grid, cuda::kStage1Threads, smem, c.stream, cuda::stage1_kernel<cuda::kMaxGroup>)(a);
    MCPM_CUDA_LAUNCHED(stage1_kernel);
  }

  // 3. Block selection.
  const int64_t n_blocks = (span + p.block_size - 1) / p.block_size;
  const int64_t local_blocks = p.window_size / p.block_size;
  const int64_t topk_total = int64_t{p.topk} + local_blocks;
  const int64_t max_blocks = std::min(topk_total, n_blocks);
  st.selected_start = start;
  st.selected_n = n;
  st.max_blocks = max_blocks;
  if (max_blocks == 0) return;  // nothing can be selected (topk 0, no window): sparse_attend writes zeros
  MCPM_CHECK(max_blocks <= INT_MAX && n_blocks <= INT_MAX);
  auto* blocks = static_cast<int32_t*>(
      c.scratch(CudaContext::kSparseBlocks, static_cast<size_t>(n * kv_heads * max_blocks) * sizeof(int32_t)));
  auto* counts = static_cast<int32_t*>(
      c.scratch(CudaContext::kSparseCounts, static_cast<size_t>(n * kv_heads) * sizeof(int32_t)));
  cuda::SelectArgs s{};
  s.S = scores;
  s.s_stride = std::max<int64_t>(n1_span, 1);
  s.start = start;
  s.start_dev = start_dev;
  s.kernel_size = p.kernel_size;
  s.kernel_stride = p.kernel_stride;
  s.block_size = p.block_size;
  s.init_blocks = p.init_blocks;
  s.local_blocks = local_blocks;
  s.pool_ratio = p.block_size / p.kernel_stride;
  s.topk_total = topk_total;
  s.blocks = blocks;
  s.counts = counts;
  s.max_blocks = static_cast<int>(max_blocks);
  MCPM_LAUNCH(grid, cuda::kSelectThreads, 0, c.stream, cuda::select_kernel)(s);
  MCPM_CUDA_LAUNCHED(select_kernel);
  c.sparse_rows = n * kv_heads;
  c.sparse_max_blocks = max_blocks;
}

void CudaBackend::sparse_attend(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                                const Tensor& v_cache, const AttentionShape& shape, int64_t start,
                                AttentionState& state) {
  CudaContext& c = cuda_context(ctx);
  const CudaSparseState& st = static_cast<const CudaSparseState&>(state);
  const int64_t n = q.rows, kv_heads = shape.num_kv_heads;
  if (n == 0) return;
  MCPM_CHECK(st.selected_start == start && st.selected_n == n);  // sparse_select ran for these queries
  DeviceGuard guard(device_);
  if (st.max_blocks == 0) {  // the reference's zeros
    MCPM_CUDA_CHECK(cudaMemsetAsync(out.data, 0, out.bytes(), c.stream));
    return;
  }
  // The selection in the context's scratch, as sparse_select sized it (same sizes: no growth).
  KeyBlocks kb;
  kb.blocks = static_cast<int32_t*>(
      c.scratch(CudaContext::kSparseBlocks, static_cast<size_t>(n * kv_heads * st.max_blocks) * sizeof(int32_t)));
  kb.counts = static_cast<int32_t*>(
      c.scratch(CudaContext::kSparseCounts, static_cast<size_t>(n * kv_heads) * sizeof(int32_t)));
  kb.max_blocks = static_cast<int32_t>(st.max_blocks);
  kb.block_size = st.params.block_size;
  attend(c, out, q, k_cache, v_cache, shape, start, nullptr, &kb);
}

std::vector<float> cuda_sparse_compressed_keys(ExecContext& ctx, const AttentionState& state, int level,
                                               int64_t* kernels) {
  CudaContext& c = cuda_context(ctx);
  const auto& st = dynamic_cast<const CudaSparseState&>(state);
  MCPM_CHECK(level == 1 || level == 2);
  const int64_t scale = level == 1 ? 1 : 4;
  const int64_t n = infllm_select::kernel_count(st.rows, scale * st.params.kernel_size, scale * st.params.kernel_stride);
  const int64_t cap = level == 1 ? st.cap1 : st.cap2;
  const int64_t hd = st.shape.head_dim, kv_heads = st.shape.num_kv_heads;
  std::vector<float> out(static_cast<size_t>(kv_heads * n * hd));
  DeviceGuard guard(c.device);
  MCPM_CUDA_CHECK(cudaStreamSynchronize(c.stream));
  const float* keys = static_cast<const float*>(level == 1 ? st.c1->data() : st.c2->data());
  for (int64_t h = 0; h < kv_heads && n > 0; ++h)
    MCPM_CUDA_CHECK(cudaMemcpy(out.data() + h * n * hd, keys + h * cap * hd, static_cast<size_t>(n * hd) * sizeof(float),
                               cudaMemcpyDeviceToHost));
  if (kernels) *kernels = n;
  return out;
}

std::vector<std::vector<int32_t>> cuda_sparse_last_selection(ExecContext& ctx) {
  CudaContext& c = cuda_context(ctx);
  const int64_t rows = c.sparse_rows, width = c.sparse_max_blocks;
  std::vector<int32_t> blocks(static_cast<size_t>(rows * width)), counts(static_cast<size_t>(rows));
  DeviceGuard guard(c.device);
  MCPM_CUDA_CHECK(cudaStreamSynchronize(c.stream));
  if (rows > 0) {
    MCPM_CUDA_CHECK(cudaMemcpy(blocks.data(), c.scratch(CudaContext::kSparseBlocks, blocks.size() * sizeof(int32_t)),
                               blocks.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
    MCPM_CUDA_CHECK(cudaMemcpy(counts.data(), c.scratch(CudaContext::kSparseCounts, counts.size() * sizeof(int32_t)),
                               counts.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
  }
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    out[static_cast<size_t>(r)].assign(blocks.begin() + r * width, blocks.begin() + r * width + counts[static_cast<size_t>(r)]);
  return out;
}

}  // namespace mcpm
