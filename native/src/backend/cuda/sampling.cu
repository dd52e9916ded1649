// Greedy sampling on the device: penalties, then argmax, so one int32 crosses to the host per token
// instead of the [vocab] logits row.
//
//   penalty_kernel  logits[ids[i]] = penalized_logit(logits[ids[i]], counts[i]) for the n distinct
//                   penalty-window tokens (one thread each; distinct ids, so no two threads share a
//                   logit). Rounded operations, no FMA contraction: the same bits as the CPU.
//   argmax_kernel   one block of kArgmaxThreads: each thread scans a strided slice keeping the first
//                   maximum, then a warp-shuffle and shared-memory reduction ordered by (value desc,
//                   index asc) picks the lowest index among equal maxima, as Sampler's greedy path.
#include "backend/cuda/cuda_internal.cuh"

namespace mcpm {

namespace cuda {

namespace {

constexpr int kArgmaxThreads = 1024;

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

__global__ void argmax_kernel(const float* __restrict__ logits, int64_t vocab, int32_t* __restrict__ out) {
  float best = logits[0];
  int64_t best_i = 0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = logits[i];
    if (before(v, i, best, best_i)) {
      best = v;
      best_i = i;
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float v = __shfl_down_sync(0xffffffffu, best, offset);
    const int64_t i = __shfl_down_sync(0xffffffffu, best_i, offset);
    if (before(v, i, best, best_i)) {
      best = v;
      best_i = i;
    }
  }
  __shared__ float warp_best[kArgmaxThreads / 32];
  __shared__ int64_t warp_index[kArgmaxThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    warp_best[warp] = best;
    warp_index[warp] = best_i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w)
      if (before(warp_best[w], warp_index[w], best, best_i)) {
        best = warp_best[w];
        best_i = warp_index[w];
      }
    *out = static_cast<int32_t>(best_i);
  }
}

}  // namespace

}  // namespace cuda

int32_t CudaBackend::greedy_sample(ExecContext& ctx, const Tensor& logits, const PenaltyTable& t) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(logits.dtype == DType::F32 && logits.rows == 1 && logits.cols > 0);
  DeviceGuard guard(device_);
  float* l = logits.as<float>();
  if (t.n > 0) {
    const auto* ids = static_cast<const int32_t*>(
        c.upload(CudaContext::kPenaltyIds, t.ids, static_cast<size_t>(t.n) * sizeof(int32_t)));
    const auto* counts = static_cast<const float*>(
        c.upload(CudaContext::kPenaltyCounts, t.counts, static_cast<size_t>(t.n) * sizeof(float)));
    cuda::penalty_kernel<<<(t.n + 255) / 256, 256, 0, c.stream>>>(l, ids, counts, t.n, t.repetition, t.frequency,
                                                                   t.presence);
    MCPM_CUDA_LAUNCHED(penalty_kernel);
  }
  auto* token = static_cast<int32_t*>(c.scratch(CudaContext::kSampledToken, sizeof(int32_t)));
  cuda::argmax_kernel<<<1, cuda::kArgmaxThreads, 0, c.stream>>>(l, logits.cols, token);
  MCPM_CUDA_LAUNCHED(argmax_kernel);
  int32_t host = 0;
  MCPM_CUDA_CHECK(cudaMemcpyAsync(&host, token, sizeof(host), cudaMemcpyDeviceToHost, c.stream));
  MCPM_CUDA_CHECK(cudaStreamSynchronize(c.stream));
  return host;
}

}  // namespace mcpm
