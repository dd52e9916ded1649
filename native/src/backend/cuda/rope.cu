// Rotate-half RoPE (with LongRoPE's factors already folded into inv_freq, and its attention factor)
// of the CUDA backend, in place on x [n, heads * head_dim] fp32:
//
//   angle = positions[t] * inv_freq[i]   (formed in double, as on the CPU: long positions keep phase)
//   c = cos(angle) * attn_factor,  s = sin(angle) * attn_factor
//   (x[i], x[i + d/2]) -> (x[i] c - x[i + d/2] s,  x[i + d/2] c + x[i] s)   for each head, i < d/2
//
// One block per token: the token's cos/sin table (head_dim/2 pairs, at most 1024 floats of shared
// memory) is computed once, then every (head, i) pair is rotated by one thread.
#include "backend/cuda/cuda_internal.cuh"

namespace mcpm {

namespace cuda {

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    rope_kernel(float* __restrict__ x, int64_t ld, int heads, int head_dim, const int32_t* __restrict__ positions,
                const float* __restrict__ inv_freq, float attn_factor) {
  MCPM_DYNAMIC_SHARED(float, cs);  // [0, half): cos, [half, 2 half): sin
  const int half = head_dim / 2;
  const int64_t t = blockIdx.x;
  const double pos = static_cast<double>(positions[t]);
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    double sn, cn;
    sincos(pos * static_cast<double>(inv_freq[j]), &sn, &cn);
    cs[j] = static_cast<float>(cn) * attn_factor;
    cs[half + j] = static_cast<float>(sn) * attn_factor;
  }
  __syncthreads();
  float* row = x + t * ld;
  const int pairs = heads * half;
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int h = p / half, j = p - h * half;
    float* v = row + static_cast<int64_t>(h) * head_dim;
    const float a = v[j], b = v[j + half];
    const float c = cs[j], s = cs[half + j];
    v[j] = a * c - b * s;
    v[j + half] = b * c + a * s;
  }
}

}  // namespace

}  // namespace cuda

void CudaBackend::rope(ExecContext& ctx, const Tensor& x, int32_t num_heads, int32_t head_dim,
                       const int32_t* positions, const Tensor& inv_freq, float attn_factor) {
  CudaContext& c = cuda_context(ctx);
  const int32_t half = head_dim / 2;
  MCPM_CHECK(head_dim > 0 && head_dim % 2 == 0 && head_dim <= 2048);
  MCPM_CHECK(x.dtype == DType::F32 && x.cols == static_cast<int64_t>(num_heads) * head_dim);
  MCPM_CHECK(inv_freq.dtype == DType::F32 && inv_freq.rows * inv_freq.cols == half);
  const int64_t n = x.rows;
  if (n == 0) return;
  DeviceGuard guard(device_);
  MCPM_CHECK(!c.graph_mode || n == c.graph_tokens);
  const int32_t* d_pos = c.graph_mode ? c.step->positions
                                      : static_cast<const int32_t*>(c.upload(CudaContext::kPositions, positions,
                                                                             static_cast<size_t>(n) * sizeof(int32_t)));
  const size_t smem = static_cast<size_t>(head_dim) * sizeof(float);
  MCPM_LAUNCH(static_cast<unsigned>(n), cuda::kThreads, smem, c.stream, cuda::rope_kernel)(
      x.as<float>(), x.cols, num_heads, head_dim, d_pos, inv_freq.as<const float>(), attn_factor);
  MCPM_CUDA_LAUNCHED(rope_kernel);
}

}  // namespace mcpm
