// Sampling on the device, so one int32 crosses to the host per token instead of the [vocab] logits
// row. The math is the host's (common/token_draw.h, PenaltyTable in backend/backend.h).
//
//   penalty_kernel  logits[ids[i]] = penalized_logit(logits[ids[i]], counts[i]) for the n distinct
//                   penalty-window tokens (one thread each; distinct ids, so no two threads share a
//                   logit). Rounded operations, no FMA contraction: the same bits as the CPU.
//   argmax_kernel   greedy: one block of kThreads; each thread scans a strided slice keeping the first
//                   maximum (skipping tokens a token mask leaves out), then a warp-shuffle and
//                   shared-memory reduction ordered by (value desc, index asc) picks the lowest index
//                   among equal maxima, as the host does.
//   top_log_probs_kernel  the draft's tree expansion (DraftOps::top_log_probs): one block per row:
//                   the max (argmax reduction), lse = max + log(sum exp(x - max)) with the sum in double
//                   (block reduction; the host sums sequentially, so lse may differ in its last bit),
//                   then k rounds of the argmax over x - lse restricted to entries after the previous
//                   pick in (value desc, index asc) order: the host's top_k_indices, no sort.
//   mask_candidates_kernel  temperature sampling with a token mask: the candidates are the allowed
//                   tokens only. One block; each thread owns a contiguous run of mask words, counts
//                   their allowed tokens, and a block scan of the counts gives where its tokens go, so
//                   keys/ids [0, count) hold the allowed (logit, id) pairs in id order and *count their
//                   number. The rest [count, vocab) is padding (-inf, vocab) that a stable descending
//                   sort keeps behind every allowed pair, so the first count sorted pairs are the
//                   allowed ones in (logit desc, id asc) order.
//   draw_kernel     temperature sampling over n candidates (keys = logits, ids = token ids; sorted by
//                   (logit desc, id asc) when a truncation is on: CUB's stable radix sort of (logit, id)
//                   pairs in id order gives exactly that order, up to -0.0 sorting below +0.0). One
//                   block of kThreads, each thread owning a contiguous chunk: p_i and the double total,
//                   top-p's cut (block scan of p_i / total, the crossing chunk rescanned in order),
//                   min-p's cut (p_i is non-increasing over sorted candidates, so it is a count), then
//                   the draw: the first candidate whose running sum of the kept p_i exceeds u * kept.
//                   Sums are block reductions of per-chunk partial sums, so they may differ from the
//                   host's sequential sums in the last bits of a double: a u that close to a boundary
//                   may pick the neighbour.
#include <algorithm>
#include <climits>

#include <cub/device/device_radix_sort.cuh>

#include "backend/cuda/cuda_internal.cuh"

namespace mcpm {

namespace cuda {

namespace {

constexpr int kArgmaxThreads = 1024;
constexpr int kDrawThreads = 1024;

__global__ void penalty_kernel(float* __restrict__ logits, const int32_t* __restrict__ ids,
                               const float* __restrict__ counts, int32_t n, float repetition, float frequency,
                               float presence) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float l = logits[ids[i]];
  if (repetition != 1.0f) l = l > 0.0f ? __fdiv_rn(l, repetition) : __fmul_rn(l, repetition);
  const float penalty = __fmul_rn(frequency, counts[i]);
  logits[ids[i]] = __fsub_rn(l, __fadd_rn(penalty, presence));
}

// (value, index) a comes before b: larger value, then lower index.
__device__ __forceinline__ bool before(float va, int64_t ia, float vb, int64_t ib) {
  return va > vb || (va == vb && ia < ib);
}

// The block's first (value, index) pair in `before` order, returned to every thread (blockDim.x a
// multiple of 32, at most kArgmaxThreads). Contains __syncthreads: every thread must call it.
__device__ void block_first(float& best, int64_t& best_i) {
  __shared__ float warp_best[kArgmaxThreads / 32];
  __shared__ int64_t warp_index[kArgmaxThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, offset);
    const int64_t i = __shfl_xor_sync(0xffffffffu, best_i, offset);
    if (before(v, i, best, best_i)) {
      best = v;
      best_i = i;
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // a previous call's results are no longer read
  if (lane == 0) {
    warp_best[warp] = best;
    warp_index[warp] = best_i;
  }
  __syncthreads();
  best = warp_best[0];
  best_i = warp_index[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w)
    if (before(warp_best[w], warp_index[w], best, best_i)) {
      best = warp_best[w];
      best_i = warp_index[w];
    }
}

// The first maximum of logits[0, vocab) among the tokens `mask` allows (every token when it is null).
__global__ void argmax_kernel(const float* __restrict__ logits, int64_t vocab, const uint32_t* __restrict__ mask,
                              int32_t* __restrict__ out) {
  // With a mask a thread starts from "none yet", which every allowed entry comes before.
  float best = mask ? -INFINITY : logits[0];
  int64_t best_i = mask ? LLONG_MAX : 0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    if (mask && !token_allowed(mask, i)) continue;
    const float v = logits[i];
    if (before(v, i, best, best_i)) {
      best = v;
      best_i = i;
    }
  }
  block_first(best, best_i);
  if (threadIdx.x == 0) *out = static_cast<int32_t>(best_i);
}

// Overwrites *token with Backend::kNonFiniteToken when logits[0, vocab) holds a NaN or an infinity (an exponent of
// all ones). One block of kArgmaxThreads: a strided OR per thread, a warp OR, then per-warp flags in shared memory.
__global__ void nonfinite_kernel(const float* __restrict__ logits, int64_t vocab, int32_t* __restrict__ token) {
  __shared__ unsigned warp_flags[kArgmaxThreads / 32];
  unsigned flag = 0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
    flag |= static_cast<unsigned>((__float_as_uint(logits[i]) & 0x7f800000u) == 0x7f800000u);
  for (int offset = 16; offset > 0; offset >>= 1) flag |= __shfl_xor_sync(0xffffffffu, flag, offset);
  if (threadIdx.x % 32 == 0) warp_flags[threadIdx.x / 32] = flag;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned any = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) any |= warp_flags[w];
    if (any != 0) *token = Backend::kNonFiniteToken;
  }
}

// For row blockIdx.x of logits [rows, vocab]: its k best entries of x - lse (ties to the lower index)
// as ids[row * k + j] and their values as log_probs[row * k + j] (file comment).
__global__ void top_log_probs_kernel(const float* __restrict__ logits, int64_t vocab, int k, int32_t* __restrict__ ids,
                                     float* __restrict__ log_probs) {
  __shared__ double partial[kArgmaxThreads / 32];
  const float* x = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  float m = x[0];
  int64_t m_i = 0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
    if (before(x[i], i, m, m_i)) {
      m = x[i];
      m_i = i;
    }
  block_first(m, m_i);
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) s += exp(static_cast<double>(x[i] - m));
  for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = s;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += partial[w];
  const float lse = m + static_cast<float>(log(total));

  float prev = INFINITY;
  int64_t prev_i = -1;
  for (int j = 0; j < k; ++j) {
    float best = -INFINITY;
    int64_t best_i = LLONG_MAX;  // "none yet": every entry comes before it
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float v = x[i] - lse;
      if (before(prev, prev_i, v, i) && before(v, i, best, best_i)) {
        best = v;
        best_i = i;
      }
    }
    block_first(best, best_i);
    if (threadIdx.x == 0) {
      ids[static_cast<int64_t>(blockIdx.x) * k + j] = static_cast<int32_t>(best_i);
      log_probs[static_cast<int64_t>(blockIdx.x) * k + j] = best;
    }
    prev = best;
    prev_i = best_i;
  }
}

// ids[i] = i.
__global__ void iota_kernel(int32_t* __restrict__ ids, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    ids[i] = static_cast<int32_t>(i);
}

// The exclusive prefix of v over the block's threads in thread order, and (in *total) the sum of all.
// `shared` holds blockDim.x / 32 values. Every thread must call it.
template <typename T>
__device__ T block_exclusive_scan(T v, T* shared, T* total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  T inclusive = v;
  for (int offset = 1; offset < 32; offset <<= 1) {
    const T up = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += up;
  }
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 31) shared[warp] = inclusive;
  __syncthreads();
  T before = 0, all = 0;
  for (int w = 0; w < warps; ++w) {
    if (w < warp) before += shared[w];
    all += shared[w];
  }
  *total = all;
  return before + inclusive - v;
}

// The candidates of masked temperature sampling (file comment): the allowed (logit, id) pairs of
// logits[0, vocab) compacted in id order into keys/ids [0, *count), padding (-inf, vocab) after them.
__global__ void mask_candidates_kernel(const float* __restrict__ logits, const uint32_t* __restrict__ mask,
                                       int64_t vocab, float* __restrict__ keys, int32_t* __restrict__ ids,
                                       int32_t* __restrict__ count) {
  __shared__ int32_t scan_shared[kDrawThreads / 32];
  // This thread's tokens: a contiguous run of whole mask words.
  const int64_t words = (vocab + 31) / 32;
  const int64_t per = (words + blockDim.x - 1) / blockDim.x;
  const int64_t begin = min(vocab, 32 * min(words, static_cast<int64_t>(threadIdx.x) * per));
  const int64_t end = min(vocab, begin + 32 * per);
  int32_t mine = 0;
  for (int64_t token = begin; token < end; ++token) mine += token_allowed(mask, token) ? 1 : 0;
  int32_t total = 0;
  int64_t at = block_exclusive_scan<int32_t>(mine, scan_shared, &total);
  for (int64_t token = begin; token < end; ++token)
    if (token_allowed(mask, token)) {
      keys[at] = logits[token];
      ids[at] = static_cast<int32_t>(token);
      ++at;
    }
  for (int64_t i = total + threadIdx.x; i < vocab; i += blockDim.x) {
    keys[i] = -INFINITY;
    ids[i] = static_cast<int32_t>(vocab);
  }
  if (threadIdx.x == 0) *count = total;
}

__device__ float block_max(float v, float* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, offset));
  __syncthreads();
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  float m = shared[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) m = fmaxf(m, shared[w]);
  return m;
}

// See the file comment. keys/ids: max_n candidates, or only the first *allowed of them when `allowed`
// is not null (masked sampling; ids == nullptr: id = index); probs: scratch [max_n].
__global__ void draw_kernel(const float* __restrict__ keys, const int32_t* __restrict__ ids, int64_t max_n,
                            const int32_t* __restrict__ allowed, int sorted, float temperature, float top_p,
                            float min_p, double u, float* __restrict__ probs, int32_t* __restrict__ out) {
  __shared__ double scan_shared[kDrawThreads / 32];
  __shared__ float max_shared[kDrawThreads / 32];
  __shared__ unsigned long long cut;
  const int64_t n = allowed ? min(max_n, static_cast<int64_t>(*allowed)) : max_n;
  const int64_t per = (n + blockDim.x - 1) / blockDim.x;
  const int64_t begin = min(n, static_cast<int64_t>(threadIdx.x) * per), end = min(n, begin + per);
  if (threadIdx.x == 0) cut = static_cast<unsigned long long>(n);

  // Softmax numerators and their total.
  float local_max = -INFINITY;
  if (!sorted)
    for (int64_t i = begin; i < end; ++i) local_max = fmaxf(local_max, keys[i]);
  const double max_l = sorted ? static_cast<double>(keys[0]) : static_cast<double>(block_max(local_max, max_shared));
  const double inv_t = 1.0 / static_cast<double>(temperature);
  double local = 0.0;
  for (int64_t i = begin; i < end; ++i) {
    const double p = exp((static_cast<double>(keys[i]) - max_l) * inv_t);
    probs[i] = static_cast<float>(p);
    local += p;
  }
  double total = 0.0;
  block_exclusive_scan(local, scan_shared, &total);

  // top-p: the first i whose cumulative probs[0..i] / total reaches top_p; the cut is i + 1.
  if (top_p < 1.0f) {
    double mine = 0.0;
    for (int64_t i = begin; i < end; ++i) mine += probs[i] / total;
    double all = 0.0;
    const double prefix = block_exclusive_scan(mine, scan_shared, &all);
    if (begin < end && prefix < top_p && prefix + mine >= top_p) {
      int64_t found = end;  // rounding: the chunk's sum reached top_p, its running sum not quite
      double c = prefix;
      for (int64_t i = begin; i < end; ++i) {
        c += probs[i] / total;
        if (c >= top_p) {
          found = i + 1;
          break;
        }
      }
      atomicMin(&cut, static_cast<unsigned long long>(found));
    }
  }
  __syncthreads();
  int64_t keep = static_cast<int64_t>(cut);

  // min-p over sorted candidates: probs[0] is the largest and probs never increases, so the kept ones
  // are those at or above the threshold, and at least the first.
  if (min_p > 0.0f) {
    const float threshold = min_p * probs[0];
    double count = 0.0;
    const int64_t from = begin > 1 ? begin : 1, to = end < keep ? end : keep;
    for (int64_t i = from; i < to; ++i) count += probs[i] >= threshold ? 1.0 : 0.0;
    double above = 0.0;
    block_exclusive_scan(count, scan_shared, &above);
    keep = 1 + static_cast<int64_t>(above);
  }

  // The draw: the first kept candidate whose running sum exceeds u * kept.
  __syncthreads();
  if (threadIdx.x == 0) cut = static_cast<unsigned long long>(keep - 1);  // rounding fallback: the last kept
  double mine = 0.0;
  const int64_t stop = end < keep ? end : keep;
  for (int64_t i = begin; i < stop; ++i) mine += probs[i];
  double kept = 0.0;
  const double prefix = block_exclusive_scan(mine, scan_shared, &kept);
  const double target = u * kept;
  if (begin < stop && prefix <= target && target < prefix + mine) {
    int64_t found = stop - 1;
    double c = prefix;
    for (int64_t i = begin; i < stop; ++i) {
      c += probs[i];
      if (c > target) {
        found = i;
        break;
      }
    }
    atomicMin(&cut, static_cast<unsigned long long>(found));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int64_t pick = static_cast<int64_t>(cut);
    *out = ids ? ids[pick] : static_cast<int32_t>(pick);
  }
}

}  // namespace

}  // namespace cuda

namespace {

// Queues the penalties for one logits row on the context's stream.
void apply_penalties(CudaContext& c, float* logits, const PenaltyTable& t) {
  if (t.n <= 0) return;
  const auto* ids = static_cast<const int32_t*>(
      c.upload(CudaContext::kPenaltyIds, t.ids, static_cast<size_t>(t.n) * sizeof(int32_t)));
  const auto* counts = static_cast<const float*>(
      c.upload(CudaContext::kPenaltyCounts, t.counts, static_cast<size_t>(t.n) * sizeof(float)));
  MCPM_LAUNCH((t.n + 255) / 256, 256, 0, c.stream, cuda::penalty_kernel)(logits, ids, counts, t.n, t.repetition, t.frequency,
                                                                 t.presence);
  MCPM_CUDA_LAUNCHED(penalty_kernel);
}

// Copies the sampled token back (the only device-to-host transfer of a sampling step).
// The sampled token, or Backend::kNonFiniteToken when the row it was sampled from is not finite: the check runs on
// the device in the same stream, so it costs one small kernel and no extra copy or synchronization.
int32_t read_token(CudaContext& c, const float* logits, int64_t vocab, int32_t* token) {
  MCPM_LAUNCH(1, cuda::kArgmaxThreads, 0, c.stream, cuda::nonfinite_kernel)(logits, vocab, token);
  MCPM_CUDA_LAUNCHED(nonfinite_kernel);
  int32_t host = 0;
  MCPM_CUDA_CHECK(cudaMemcpyAsync(&host, token, sizeof(host), cudaMemcpyDeviceToHost, c.stream));
  MCPM_CUDA_CHECK(cudaStreamSynchronize(c.stream));
  return host;
}

// The words of a token mask for a row of `vocab` logits (nullptr: no mask).
const uint32_t* mask_words(const Tensor* mask, int64_t vocab) {
  if (mask == nullptr) return nullptr;
  MCPM_CHECK(mask->dtype == DType::I32 && mask->rows == 1 && mask->cols >= (vocab + 31) / 32);
  return mask->as<const uint32_t>();
}

}  // namespace

int32_t CudaBackend::sample_token(ExecContext& ctx, const Tensor& logits, const PenaltyTable& t,
                                  const DrawParams& params, double u, const Tensor* mask_tensor) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(logits.dtype == DType::F32 && logits.rows == 1 && logits.cols > 0 && params.temperature > 0.0f);
  MCPM_CHECK(logits.cols <= INT32_MAX);
  DeviceGuard guard(device_);
  float* l = logits.as<float>();
  const int64_t vocab = logits.cols;
  const uint32_t* mask = mask_words(mask_tensor, vocab);
  apply_penalties(c, l, t);

  // The candidates: every (logit, id) in id order, or with a mask the allowed ones compacted to the
  // front (their count stays on the device).
  const size_t key_bytes = static_cast<size_t>(vocab) * sizeof(float), id_bytes = static_cast<size_t>(vocab) * sizeof(int32_t);
  const float* keys = l;
  int32_t* ids = nullptr;
  const int32_t* allowed = nullptr;
  if (mask) {
    auto* masked_keys = static_cast<float*>(c.scratch(CudaContext::kMaskedKeys, key_bytes));
    ids = static_cast<int32_t*>(c.scratch(CudaContext::kSortIdsIn, id_bytes));
    auto* count = static_cast<int32_t*>(c.scratch(CudaContext::kMaskedCount, sizeof(int32_t)));
    MCPM_LAUNCH(1, cuda::kDrawThreads, 0, c.stream, cuda::mask_candidates_kernel)(l, mask, vocab, masked_keys, ids,
                                                                                 count);
    MCPM_CUDA_LAUNCHED(mask_candidates_kernel);
    keys = masked_keys;
    allowed = count;
  }
  int64_t n = vocab;
  if (params.truncating()) {
    // (logit, id) pairs sorted by logit descending; the radix sort is stable, so ties keep id order
    // (and a mask's padding stays behind the allowed pairs).
    int32_t* ids_in = ids;
    if (!mask) {
      ids_in = static_cast<int32_t*>(c.scratch(CudaContext::kSortIdsIn, id_bytes));
      MCPM_LAUNCH(cuda::grid_for(vocab, 256, 1024), 256, 0, c.stream, cuda::iota_kernel)(ids_in, vocab);
      MCPM_CUDA_LAUNCHED(iota_kernel);
    }
    auto* ids_out = static_cast<int32_t*>(c.scratch(CudaContext::kSortIdsOut, id_bytes));
    auto* keys_out = static_cast<float*>(c.scratch(CudaContext::kSortKeysOut, key_bytes));
    size_t temp_bytes = 0;
    MCPM_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, temp_bytes, keys, keys_out, ids_in, ids_out,
                                                              static_cast<int>(vocab), 0, 32, c.stream));
    void* temp = c.scratch(CudaContext::kSortTemp, std::max<size_t>(temp_bytes, 1));
    MCPM_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(temp, temp_bytes, keys, keys_out, ids_in, ids_out,
                                                              static_cast<int>(vocab), 0, 32, c.stream));
    keys = keys_out;
    ids = ids_out;
    if (params.top_k > 0) n = std::min<int64_t>(params.top_k, vocab);
  }
  auto* probs = static_cast<float*>(c.scratch(CudaContext::kProbs, static_cast<size_t>(n) * sizeof(float)));
  auto* token = static_cast<int32_t*>(c.scratch(CudaContext::kSampledToken, sizeof(int32_t)));
  MCPM_LAUNCH(1, cuda::kDrawThreads, 0, c.stream, cuda::draw_kernel)(keys, ids, n, allowed,
                                                            params.truncating() ? 1 : 0, params.temperature,
                                                            params.top_p, params.min_p, u, probs, token);
  MCPM_CUDA_LAUNCHED(draw_kernel);
  return read_token(c, l, vocab, token);
}

void CudaBackend::top_log_probs(ExecContext& ctx, const Tensor& logits, int32_t k, const Tensor& ids,
                                const Tensor& log_probs) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(logits.dtype == DType::F32 && k >= 1 && k <= logits.cols && logits.rows >= 1 && logits.rows <= 65535);
  MCPM_CHECK(ids.dtype == DType::I32 && log_probs.dtype == DType::F32 && ids.rows * ids.cols >= logits.rows * k &&
             log_probs.rows * log_probs.cols >= logits.rows * k);
  DeviceGuard guard(device_);
  MCPM_LAUNCH(static_cast<unsigned>(logits.rows), cuda::kArgmaxThreads, 0, c.stream, cuda::top_log_probs_kernel)(
      logits.as<const float>(), logits.cols, k, ids.as<int32_t>(), log_probs.as<float>());
  MCPM_CUDA_LAUNCHED(top_log_probs_kernel);
}

int32_t CudaBackend::greedy_sample(ExecContext& ctx, const Tensor& logits, const PenaltyTable& t,
                                   const Tensor* mask) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(logits.dtype == DType::F32 && logits.rows == 1 && logits.cols > 0);
  DeviceGuard guard(device_);
  float* l = logits.as<float>();
  apply_penalties(c, l, t);
  auto* token = static_cast<int32_t*>(c.scratch(CudaContext::kSampledToken, sizeof(int32_t)));
  MCPM_LAUNCH(1, cuda::kArgmaxThreads, 0, c.stream, cuda::argmax_kernel)(l, logits.cols, mask_words(mask, logits.cols),
                                                                         token);
  MCPM_CUDA_LAUNCHED(argmax_kernel);
  return read_token(c, l, logits.cols, token);
}

}  // namespace mcpm
