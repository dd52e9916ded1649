// Elementwise and row-copy ops of the CUDA backend: embedding (host or resident ids), add_scaled, scale, add_bias,
// silu_mul, store_kv, copy_rows, and the fp32 -> bf16/fp16 conversion the linear layers use. All are
// memory-bound; each kernel is a plain grid-stride loop (or one block per row) with fp32 math that
// matches the CPU reference operation for operation.
#include <algorithm>
#include <vector>

#include "backend/cuda/cuda_internal.cuh"

namespace mcpm {

namespace cuda {

namespace {

constexpr int kThreads = 256;

// out[i, c] = table[ids[i], c] * scale. One block per output row; table in any float dtype.
__global__ void embedding_kernel(float* __restrict__ out, const void* __restrict__ table, DType dt, int64_t cols,
                                 const int32_t* __restrict__ ids, float scale) {
  const int64_t i = blockIdx.x;
  const int64_t row = ids[i];
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    out[i * cols + c] = load_as_float(table, dt, row * cols + c) * scale;
}

// cache[*row, c] = bf16(src[c]) for c < cols (round to nearest even): store_kv of one token whose cache
// row is read from device memory (a recorded decode step).
// Row blockIdx.y of src [rows, cols] fp32 -> cache row *start + blockIdx.y, rounded to bf16 (a
// recorded step reads its first row from the step state).
__global__ void store_rows_kernel(__nv_bfloat16* __restrict__ cache, const float* __restrict__ src, int64_t cols,
                                  const int64_t* __restrict__ start) {
  __nv_bfloat16* dst = cache + (*start + blockIdx.y) * cols;
  const float* row = src + static_cast<int64_t>(blockIdx.y) * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(row[i]);
}

// r[i] += s * d[i] over `count` contiguous floats.
__global__ void add_scaled_kernel(float* __restrict__ r, const float* __restrict__ d, float s, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    r[i] = fmaf(s, d[i], r[i]);
}

// x[i] *= s.
__global__ void scale_kernel(float* __restrict__ x, float s, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] *= s;
}

// x[r, c] += bias[c] for x [rows, cols] (bias: one row, any float dtype).
__global__ void add_bias_kernel(float* __restrict__ x, const void* __restrict__ bias, DType dt, int64_t cols,
                                int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] += load_as_float(bias, dt, i % cols);
}

// out[i] = silu(gate[i]) * up[i] = gate / (1 + exp(-gate)) * up. out may be gate (same index only).
__global__ void silu_mul_kernel(float* out, const float* gate, const float* __restrict__ up, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

// dst[i] = src[i] rounded to nearest even in T (bf16 or fp16).
template <typename T>
__global__ void to_dtype_kernel(T* __restrict__ dst, const float* __restrict__ src, int64_t count);

template <>
__global__ void to_dtype_kernel<__nv_bfloat16>(__nv_bfloat16* __restrict__ dst, const float* __restrict__ src,
                                               int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

template <>
__global__ void to_dtype_kernel<__half>(__half* __restrict__ dst, const float* __restrict__ src, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2half_rn(src[i]);
}

// dst row drows[i] = src row srows[i], rows of `units` elements of type U (the widest of 16/4/1 bytes
// that the row size and both base addresses allow). Parallel: one block per copy (grid n). Sequential
// (grid 1): the block performs the copies one after another in index order, with a barrier between
// them, which gives the op's in-order semantics when rows alias (in-place compaction, repeated rows).
template <typename U>
__global__ void copy_rows_kernel(U* dst, const U* src, int64_t units, const int32_t* __restrict__ drows,
                                 const int32_t* __restrict__ srows, int32_t n, int sequential) {
  const int32_t first = sequential ? 0 : static_cast<int32_t>(blockIdx.x);
  const int32_t last = sequential ? n : first + 1;
  for (int32_t i = first; i < last; ++i) {
    const int64_t d = drows[i], s = srows[i];
    if (!(dst == src && d == s)) {
      U* out = dst + d * units;
      const U* in = src + s * units;
      for (int64_t u = threadIdx.x; u < units; u += blockDim.x) out[u] = in[u];
    }
    if (sequential) __syncthreads();  // row i is complete before row i+1 reads anything
  }
}

}  // namespace

void launch_to_dtype(cudaStream_t stream, void* dst, DType dt, const float* src, int64_t count) {
  if (count <= 0) return;
  const unsigned blocks = grid_for(count, kThreads, 8192);
  if (dt == DType::BF16)
    MCPM_LAUNCH(blocks, kThreads, 0, stream, to_dtype_kernel<__nv_bfloat16>)(static_cast<__nv_bfloat16*>(dst), src, count);
  else if (dt == DType::F16)
    MCPM_LAUNCH(blocks, kThreads, 0, stream, to_dtype_kernel<__half>)(static_cast<__half*>(dst), src, count);
  else
    MCPM_CHECK(!"launch_to_dtype: target must be bf16 or fp16");
  MCPM_CUDA_LAUNCHED(to_dtype_kernel);
}

}  // namespace cuda

using cuda::grid_for;

namespace {

constexpr int kThreads = 256;

bool is_float_dtype(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

}  // namespace

void CudaBackend::embedding(ExecContext& ctx, const Tensor& out, const Tensor& table, const int32_t* ids, float s) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(out.dtype == DType::F32 && out.cols == table.cols && is_float_dtype(table.dtype));
  const int64_t n = out.rows;
  if (n == 0) return;
  for (int64_t i = 0; i < n; ++i) MCPM_CHECK(ids[i] >= 0 && ids[i] < table.rows);
  DeviceGuard guard(device_);
  MCPM_CHECK(!c.graph_mode || n == c.graph_tokens);
  const int32_t* d_ids = c.graph_mode ? c.step->tokens
                                      : static_cast<const int32_t*>(c.upload(CudaContext::kIds, ids,
                                                                             static_cast<size_t>(n) * sizeof(int32_t)));
  MCPM_LAUNCH(static_cast<unsigned>(n), kThreads, 0, c.stream, cuda::embedding_kernel)(out.as<float>(), table.data,
                                                                              table.dtype, table.cols, d_ids, s);
  MCPM_CUDA_LAUNCHED(embedding_kernel);
}

void CudaBackend::embedding_resident(ExecContext& ctx, const Tensor& out, const Tensor& table, const int32_t* ids,
                                     float s) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(out.dtype == DType::F32 && out.cols == table.cols && is_float_dtype(table.dtype) && ids != nullptr);
  const int64_t n = out.rows;
  if (n == 0) return;
  // The ids were written on the device (DraftTreeState): the kernel reads them where they are; they
  // are target token ids that tree_expand took from the head's rows, so always in range.
  DeviceGuard guard(device_);
  MCPM_LAUNCH(static_cast<unsigned>(n), kThreads, 0, c.stream, cuda::embedding_kernel)(out.as<float>(), table.data,
                                                                              table.dtype, table.cols, ids, s);
  MCPM_CUDA_LAUNCHED(embedding_kernel);
}

void CudaBackend::add_scaled(ExecContext& ctx, const Tensor& residual, const Tensor& delta, float s) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(delta.rows == residual.rows && delta.cols == residual.cols);
  MCPM_CHECK(residual.dtype == DType::F32 && delta.dtype == DType::F32);
  const int64_t count = residual.rows * residual.cols;
  if (count == 0) return;
  DeviceGuard guard(device_);
  MCPM_LAUNCH(grid_for(count, kThreads, 8192), kThreads, 0, c.stream, cuda::add_scaled_kernel)(
      residual.as<float>(), delta.as<const float>(), s, count);
  MCPM_CUDA_LAUNCHED(add_scaled_kernel);
}

void CudaBackend::scale(ExecContext& ctx, const Tensor& x, float s) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(x.dtype == DType::F32);
  const int64_t count = x.rows * x.cols;
  if (count == 0) return;
  DeviceGuard guard(device_);
  MCPM_LAUNCH(grid_for(count, kThreads, 8192), kThreads, 0, c.stream, cuda::scale_kernel)(x.as<float>(), s, count);
  MCPM_CUDA_LAUNCHED(scale_kernel);
}

void CudaBackend::add_bias(ExecContext& ctx, const Tensor& x, const Tensor& bias) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(x.dtype == DType::F32 && bias.rows * bias.cols == x.cols && is_float_dtype(bias.dtype));
  const int64_t count = x.rows * x.cols;
  if (count == 0) return;
  DeviceGuard guard(device_);
  MCPM_LAUNCH(grid_for(count, kThreads, 8192), kThreads, 0, c.stream, cuda::add_bias_kernel)(x.as<float>(), bias.data,
                                                                                    bias.dtype, x.cols, count);
  MCPM_CUDA_LAUNCHED(add_bias_kernel);
}

void CudaBackend::silu_mul(ExecContext& ctx, const Tensor& out, const Tensor& gate, const Tensor& up) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(gate.rows == up.rows && gate.cols == up.cols && out.rows == gate.rows && out.cols == gate.cols);
  MCPM_CHECK(out.dtype == DType::F32 && gate.dtype == DType::F32 && up.dtype == DType::F32);
  const int64_t count = gate.rows * gate.cols;
  if (count == 0) return;
  DeviceGuard guard(device_);
  MCPM_LAUNCH(grid_for(count, kThreads, 8192), kThreads, 0, c.stream, cuda::silu_mul_kernel)(
      out.as<float>(), gate.as<const float>(), up.as<const float>(), count);
  MCPM_CUDA_LAUNCHED(silu_mul_kernel);
}

// k, v [n, kv_dim] fp32 -> rows [start, start + n) of the bf16 caches, rounded to nearest even.
void CudaBackend::store_kv(ExecContext& ctx, const Tensor& k_cache, const Tensor& v_cache, const Tensor& k,
                           const Tensor& v, int64_t start) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(k_cache.dtype == DType::BF16 && v_cache.dtype == DType::BF16);
  MCPM_CHECK(k.dtype == DType::F32 && v.dtype == DType::F32 && k.rows == v.rows);
  MCPM_CHECK(k.cols == k_cache.cols && v.cols == v_cache.cols && start >= 0 && start + k.rows <= k_cache.rows &&
             start + v.rows <= v_cache.rows);
  DeviceGuard guard(device_);
  if (c.graph_mode) {  // the first row comes from the recorded step state
    MCPM_CHECK(k.rows == c.graph_tokens && v.rows == c.graph_tokens);
    const dim3 kgrid(cuda::grid_for(k.cols, kThreads, 64), static_cast<unsigned>(k.rows));
    const dim3 vgrid(cuda::grid_for(v.cols, kThreads, 64), static_cast<unsigned>(v.rows));
    MCPM_LAUNCH(kgrid, kThreads, 0, c.stream, cuda::store_rows_kernel)(k_cache.as<__nv_bfloat16>(), k.as<const float>(),
                                                              k.cols, &c.step->start);
    MCPM_CUDA_LAUNCHED(store_rows_kernel);
    MCPM_LAUNCH(vgrid, kThreads, 0, c.stream, cuda::store_rows_kernel)(v_cache.as<__nv_bfloat16>(), v.as<const float>(),
                                                              v.cols, &c.step->start);
    MCPM_CUDA_LAUNCHED(store_rows_kernel);
    return;
  }
  cuda::launch_to_dtype(c.stream, k_cache.as<__nv_bfloat16>() + start * k_cache.cols, DType::BF16,
                        k.as<const float>(), k.rows * k.cols);
  cuda::launch_to_dtype(c.stream, v_cache.as<__nv_bfloat16>() + start * v_cache.cols, DType::BF16,
                        v.as<const float>(), v.rows * v.cols);
}

void CudaBackend::copy_rows(ExecContext& ctx, const Tensor& dst, const Tensor& src, const int32_t* dst_rows,
                            const int32_t* src_rows, int32_t n) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(dst.dtype == src.dtype && dst.cols == src.cols && n >= 0);
  if (n == 0) return;
  for (int32_t i = 0; i < n; ++i)
    MCPM_CHECK(dst_rows[i] >= 0 && dst_rows[i] < dst.rows && src_rows[i] >= 0 && src_rows[i] < src.rows);
  const size_t row_bytes = static_cast<size_t>(src.cols) * dtype_size(src.dtype);
  if (row_bytes == 0) return;
  // Parallel only when no copy can observe another: the two tensors' memory does not overlap and
  // every destination row is distinct. Otherwise the in-order sequential kernel.
  const char* d0 = static_cast<const char*>(dst.data);
  const char* s0 = static_cast<const char*>(src.data);
  const bool overlap = d0 < s0 + src.rows * row_bytes && s0 < d0 + dst.rows * row_bytes;
  bool distinct = true;
  if (!overlap) {
    std::vector<int32_t> sorted(dst_rows, dst_rows + n);
    std::sort(sorted.begin(), sorted.end());
    distinct = std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end();
  }
  const bool sequential = overlap || !distinct;

  DeviceGuard guard(device_);
  const size_t idx_bytes = static_cast<size_t>(n) * sizeof(int32_t);
  const int32_t* d_dst = static_cast<const int32_t*>(c.upload(CudaContext::kDstRows, dst_rows, idx_bytes));
  const int32_t* d_src = static_cast<const int32_t*>(c.upload(CudaContext::kSrcRows, src_rows, idx_bytes));
  const uintptr_t align = reinterpret_cast<uintptr_t>(dst.data) | reinterpret_cast<uintptr_t>(src.data) | row_bytes;
  const unsigned grid = sequential ? 1u : static_cast<unsigned>(n);
  const int threads = sequential ? 1024 : kThreads;
  if (align % 16 == 0) {
    MCPM_LAUNCH(grid, threads, 0, c.stream, cuda::copy_rows_kernel<uint4>)(
        static_cast<uint4*>(dst.data), static_cast<const uint4*>(src.data), static_cast<int64_t>(row_bytes / 16),
        d_dst, d_src, n, sequential ? 1 : 0);
  } else if (align % 4 == 0) {
    MCPM_LAUNCH(grid, threads, 0, c.stream, cuda::copy_rows_kernel<uint32_t>)(
        static_cast<uint32_t*>(dst.data), static_cast<const uint32_t*>(src.data), static_cast<int64_t>(row_bytes / 4),
        d_dst, d_src, n, sequential ? 1 : 0);
  } else {
    MCPM_LAUNCH(grid, threads, 0, c.stream, cuda::copy_rows_kernel<unsigned char>)(
        static_cast<unsigned char*>(dst.data), static_cast<const unsigned char*>(src.data),
        static_cast<int64_t>(row_bytes), d_dst, d_src, n, sequential ? 1 : 0);
  }
  MCPM_CUDA_LAUNCHED(copy_rows_kernel);
}

}  // namespace mcpm
