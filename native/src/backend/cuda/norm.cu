// RMSNorm and the fused residual add + RMSNorm of the CUDA backend.
//
//   rms_norm:      out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * w
//   add_rms_norm:  r[i, :] += delta[i, :] * s;  out[i, :] = r[i, :] / sqrt(mean(r[i, :]^2) + eps) * w
//
// Layout: row-major fp32 [rows, dim]; w is one row of any float dtype. One block of 256 threads per
// row; thread t owns columns t, t + 256, ... in both passes, so in-place use (out == x, as the EAGLE
// draft calls it) is safe: every element is read and rewritten by the same thread, and the sum of
// squares is complete (block barrier) before anything is written. Sums are fp32, like the CPU's.
#include "backend/cuda/cuda_internal.cuh"

namespace mcpm {

namespace cuda {

namespace {

constexpr int kThreads = 256;

// add == 0: out = norm(x) * w (residual unused). add != 0: residual += x * s (x is the delta), then
// out = norm(residual) * w.
__global__ void __launch_bounds__(kThreads)
    rms_norm_kernel(float* out, float* residual, const float* x, float s, int64_t dim, const void* __restrict__ w,
                    DType wdt, float eps, int add) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  float* o = out + row * dim;
  const float* xr = x + row * dim;
  float* rr = add ? residual + row * dim : nullptr;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    float v;
    if (add) {
      v = fmaf(s, xr[c], rr[c]);
      rr[c] = v;
    } else {
      v = xr[c];
    }
    ss = fmaf(v, v, ss);
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    const float v = add ? rr[c] : xr[c];
    o[c] = v * inv * load_as_float(w, wdt, c);
  }
}

}  // namespace

}  // namespace cuda

void CudaBackend::rms_norm(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& weight, float eps) {
  CudaContext& c = cuda_context(ctx);
  const int64_t dim = x.cols;
  MCPM_CHECK(weight.rows * weight.cols == dim && out.cols == dim && out.rows == x.rows);
  MCPM_CHECK(out.dtype == DType::F32 && x.dtype == DType::F32 && weight.dtype != DType::I32);
  if (x.rows == 0) return;
  DeviceGuard guard(device_);
  MCPM_LAUNCH(static_cast<unsigned>(x.rows), cuda::kThreads, 0, c.stream, cuda::rms_norm_kernel)(
      out.as<float>(), nullptr, x.as<const float>(), 0.0f, dim, weight.data, weight.dtype, eps, 0);
  MCPM_CUDA_LAUNCHED(rms_norm_kernel);
}

void CudaBackend::add_rms_norm(ExecContext& ctx, const Tensor& out, const Tensor& residual, const Tensor& delta,
                               float s, const Tensor& weight, float eps) {
  CudaContext& c = cuda_context(ctx);
  const int64_t dim = residual.cols;
  MCPM_CHECK(delta.rows == residual.rows && delta.cols == dim && weight.rows * weight.cols == dim);
  MCPM_CHECK(out.rows == residual.rows && out.cols == dim);
  MCPM_CHECK(out.dtype == DType::F32 && residual.dtype == DType::F32 && delta.dtype == DType::F32 &&
             weight.dtype != DType::I32);
  if (residual.rows == 0) return;
  DeviceGuard guard(device_);
  MCPM_LAUNCH(static_cast<unsigned>(residual.rows), cuda::kThreads, 0, c.stream, cuda::rms_norm_kernel)(
      out.as<float>(), residual.as<float>(), delta.as<const float>(), s, dim, weight.data, weight.dtype, eps, 1);
  MCPM_CUDA_LAUNCHED(rms_norm_kernel);
}

}  // namespace mcpm
