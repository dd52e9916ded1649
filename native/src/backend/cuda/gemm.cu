// Dense linear layers of the CUDA backend: out[n, N] = x[n, K] · W[N, K]^T with fp32 accumulation.
//
// x is fp32; W is fp32, fp16 or bf16 in the Hugging Face layout [out_features, in_features],
// row-major. For fp16/bf16 weights every input element is rounded to the weight's dtype (nearest
// even) on both paths below, so each product is exact in fp32 and the paths differ only in
// summation order (see cuda_internal.cuh for why):
//
//   n <= kGemvMaxRows  gemv_kernel: one warp per weight row streams the row once with 16-byte
//                      loads and dots it with the n fp32 input rows (held in L1/L2), rounding each
//                      input element as it is read; fp32 partial sums reduced across the warp.
//                      Decode (n = 1) and small trees are memory-bound, and this reads W exactly
//                      once at full width with no extra kernel.
//   n >  kGemvMaxRows  the input is converted once into context scratch, then cublasGemmEx (tensor
//                      cores for fp16/bf16, CUBLAS_COMPUTE_32F, fp32 output). Row-major
//                      Y[n,N] = X W^T is column-major Y^T[N,n] = W^T(col-major K×N)^T · X^T(K×n):
//                      op(A) = T on W with lda = K, op(B) = N on X with ldb = K, ldc = N.
#include <climits>

#include "backend/cuda/cuda_internal.cuh"

namespace mcpm {

namespace cuda {

namespace {

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / kWarp;  // weight rows per block
constexpr int kMaxRows = static_cast<int>(CudaBackend::kGemvMaxRows);

// 16 bytes of T widened to fp32.
template <typename T>
struct Vec16;

template <>
struct Vec16<float> {
  static constexpr int kCount = 4;
  __device__ __forceinline__ static void widen(const uint4& q, float* f) {
    f[0] = __uint_as_float(q.x);
    f[1] = __uint_as_float(q.y);
    f[2] = __uint_as_float(q.z);
    f[3] = __uint_as_float(q.w);
  }
};

template <>
struct Vec16<__nv_bfloat16> {
  static constexpr int kCount = 8;
  // bf16 is the upper half of an fp32: the low element of each word shifts up, the high one is masked.
  __device__ __forceinline__ static void widen(const uint4& q, float* f) {
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
};

template <>
struct Vec16<__half> {
  static constexpr int kCount = 8;
  __device__ __forceinline__ static void widen(const uint4& q, float* f) {
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      __half2 h;
      memcpy(&h, &w[i], sizeof h);
      const float2 v = __half22float2(h);
      f[2 * i] = v.x;
      f[2 * i + 1] = v.y;
    }
  }
};

// v rounded to T and widened back (the value a linear layer with T weights multiplies).
__device__ __forceinline__ float round_as(float v, float) { return v; }
__device__ __forceinline__ float round_as(float v, __half) { return __half2float(__float2half_rn(v)); }
__device__ __forceinline__ float round_as(float v, __nv_bfloat16) { return __bfloat162float(__float2bfloat16_rn(v)); }

// E consecutive fp32 inputs starting at element E * i of row x (16-byte aligned), rounded to T.
template <typename T, int E>
__device__ __forceinline__ void load_inputs(const float* __restrict__ x, int64_t i, float* f) {
  const float4* x4 = reinterpret_cast<const float4*>(x) + i * (E / 4);
#pragma unroll
  for (int q = 0; q < E / 4; ++q) {
    const float4 v = __ldg(x4 + q);
    f[4 * q + 0] = round_as(v.x, T());
    f[4 * q + 1] = round_as(v.y, T());
    f[4 * q + 2] = round_as(v.z, T());
    f[4 * q + 3] = round_as(v.w, T());
  }
}

// Y[t, r] = sum_k round_T(X[t, k]) * W[r, k] for t < n (n <= kMaxRows), r < N. One warp per weight
// row r. vec: W and X 16-byte aligned and K * sizeof(T) a multiple of 16 (then 16-byte loads of W
// and X), else scalar loads.
template <typename T>
__global__ void __launch_bounds__(kGemvThreads)
    gemv_kernel(const T* __restrict__ W, const float* __restrict__ X, float* __restrict__ Y, int n, int64_t N,
                int64_t K, int vec) {
  const int lane = threadIdx.x % kWarp;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / kWarp;
  if (r >= N) return;  // the whole warp leaves; no block-level barrier follows
  float acc[kMaxRows];
#pragma unroll
  for (int t = 0; t < kMaxRows; ++t) acc[t] = 0.0f;
  const T* w = W + r * K;
  if (vec) {
    constexpr int E = Vec16<T>::kCount;
    const int64_t nv = K / E;
    const uint4* wv = reinterpret_cast<const uint4*>(w);
#pragma unroll 2
    for (int64_t i = lane; i < nv; i += kWarp) {
      float wf[E];
      Vec16<T>::widen(__ldg(wv + i), wf);
#pragma unroll
      for (int t = 0; t < kMaxRows; ++t) {
        if (t < n) {
          float xf[E];
          load_inputs<T, E>(X + t * K, i, xf);
#pragma unroll
          for (int e = 0; e < E; ++e) acc[t] = fmaf(wf[e], xf[e], acc[t]);
        }
      }
    }
  } else {
    for (int64_t k = lane; k < K; k += kWarp) {
      const float wk = to_float(w[k]);
#pragma unroll
      for (int t = 0; t < kMaxRows; ++t)
        if (t < n) acc[t] = fmaf(wk, round_as(X[t * K + k], T()), acc[t]);
    }
  }
#pragma unroll
  for (int t = 0; t < kMaxRows; ++t) {
    if (t < n) {
      const float s = warp_sum(acc[t]);
      if (lane == 0) Y[t * N + r] = s;
    }
  }
}

template <typename T>
void launch_gemv(cudaStream_t stream, const void* W, const float* X, float* Y, int n, int64_t N, int64_t K) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(W) | reinterpret_cast<uintptr_t>(X);
  const int vec = addr % 16 == 0 && (K * static_cast<int64_t>(sizeof(T))) % 16 == 0;
  const unsigned blocks = static_cast<unsigned>((N + kGemvWarps - 1) / kGemvWarps);
  MCPM_LAUNCH(blocks, kGemvThreads, 0, stream, gemv_kernel<T>)(static_cast<const T*>(W), X, Y, n, N, K, vec);
  MCPM_CUDA_LAUNCHED(gemv_kernel);
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

}  // namespace

}  // namespace cuda

void CudaBackend::linear(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& w) {
  CudaContext& c = cuda_context(ctx);
  const int64_t n = x.rows, K = x.cols, N = w.rows;
  MCPM_CHECK(w.cols == K && out.rows == n && out.cols == N);
  MCPM_CHECK(x.dtype == DType::F32 && out.dtype == DType::F32);
  MCPM_CHECK(w.dtype == DType::F32 || w.dtype == DType::F16 || w.dtype == DType::BF16);
  if (n == 0 || N == 0) return;
  DeviceGuard guard(device_);
  if (K == 0) {
    MCPM_CUDA_CHECK(cudaMemsetAsync(out.data, 0, out.bytes(), c.stream));
    return;
  }
  if (n <= kGemvMaxRows) {
    const int rows = static_cast<int>(n);
    const float* X = x.as<const float>();
    switch (w.dtype) {
      case DType::F32: cuda::launch_gemv<float>(c.stream, w.data, X, out.as<float>(), rows, N, K); break;
      case DType::F16: cuda::launch_gemv<__half>(c.stream, w.data, X, out.as<float>(), rows, N, K); break;
      default: cuda::launch_gemv<__nv_bfloat16>(c.stream, w.data, X, out.as<float>(), rows, N, K); break;
    }
    return;
  }
  // The input in the weight's dtype (fp32 weights: the input as it is).
  const void* xin = x.data;
  if (w.dtype != DType::F32) {
    void* conv = c.scratch(CudaContext::kGemmInput, static_cast<size_t>(n * K) * dtype_size(w.dtype));
    cuda::launch_to_dtype(c.stream, conv, w.dtype, x.as<const float>(), n * K);
    xin = conv;
  }
  MCPM_CHECK(n <= INT_MAX && N <= INT_MAX && K <= INT_MAX);
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType_t type = cuda::cuda_type(w.dtype);
  MCPM_CUBLAS_CHECK(cublasGemmEx(c.cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(n),
                                 static_cast<int>(K), &alpha, w.data, type, static_cast<int>(K), xin, type,
                                 static_cast<int>(K), &beta, out.data, CUDA_R_32F, static_cast<int>(N),
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace mcpm
