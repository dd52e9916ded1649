// W4A16 int4 linear layers of the CUDA backend (Backend::linear_int4) on CUDA cores: a GEMV for 1..8
// tokens (decode, short verification) that streams the packed weights at full width, and a tiled
// dequantising kernel for more tokens. More than 8 tokens normally go to the tensor-core kernel
// (int4_mma.cu); the tiled kernel here serves when that is switched off (cuda_set_int4_tensor_cores),
// with fp32 inputs and exact weights.
//
//   out[t, n] = sum_k x[t, k] * What[k][n],   What[k][n] = (q[k][n] - 8) * s[k/128][n]   (exact in fp32)
//
// Layouts (common/int4.h, read with its closed form, not through the CPU's lookup tables):
//   x       fp32 [n_tok, K] row-major;  out fp32 [n_tok, N]
//   qweight int32 [K/16][2N]: for slab r (rows 16r..16r+15) and 64-column chunk c, word 128c + w of the
//           slab row (w = 4i + j, lane i = 4 col + t) holds 8 nibbles p, o = [0,2,4,6,1,3,5,7][p]:
//           k = 16r + [2t, 2t+1, 2t+8, 2t+9][o % 4],  n = 64c + 16j + 8(o / 4) + col
//   scales  fp16 [K/128][N], permuted per row: K > 128: column 64c + nl sits at 64c + 8(nl % 8) + nl / 8;
//           K == 128 (one group): column 32h + l sits at 32h + 8((l % 8) / 2) + 2(l / 8) + l % 2.
//
// GEMV (n_tok <= 8): lane l of a warp loads words 4l..4l+3 of a slab's chunk (one 16-byte load, the
// warp 512 contiguous bytes) and those are 32 weights of 8 columns (int4_gemv_lane.h, whose lane math
// a CPU test emulates). A block of 8 warps owns one chunk and 8 consecutive ranges of slabs; the four
// lanes sharing columns add their sums by shuffles, the warps in order through shared memory, and
// K ranges of several blocks (grid.y) in order by the reduce kernel: deterministic, no atomics.
//
// Tiled (n_tok > 8): block = 256 threads for one 64-column chunk (grid.x), one tile of up to 32
// tokens (grid.y) and one range of slabs (grid.z, a K split that keeps the GPU busy when N and n are
// small). Per slab the block decodes the chunk's 1024 nibbles into a shared fp32 tile [16][64] with the
// scales applied, stages the 32 x 16 inputs, and every thread accumulates 8 outputs (one column, 8
// tokens) in ascending k, like the CPU reference. K-split partial sums go to scratch and are added in
// split order by a second kernel.
#include <algorithm>

#include "backend/cuda/cuda_internal.cuh"
#include "backend/cuda/int4_gemv_lane.h"

namespace mcpm {

namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kTokTile = 32;  // tokens per block
constexpr int kChunk = 64;    // output columns per block
constexpr int kSlab = 16;     // K rows per Marlin slab

// out[t, n] (or its K-split partial) = sum over this block's slabs of x[t, k] * What[k][n] for the
// block's 64 columns and up to 32 tokens (see the file comment for the layouts).
// partial: nullptr -> write out directly (one K split); else partial[z][t][n].
__global__ void __launch_bounds__(kThreads)
    int4_gemm_kernel(const float* __restrict__ x, const int32_t* __restrict__ qweight,
                     const __half* __restrict__ scales, float* __restrict__ out, float* __restrict__ partial,
                     int n_tok, int64_t N, int64_t K, int slabs_per_split) {
  __shared__ float tile[kSlab][kChunk];
  __shared__ float xs[kTokTile][kSlab];
  const int tid = threadIdx.x;
  const int64_t chunk = blockIdx.x;
  const int t0 = blockIdx.y * kTokTile;
  const int64_t slabs = K / kSlab;
  const int64_t r_begin = static_cast<int64_t>(blockIdx.z) * slabs_per_split;
  const int64_t r_end = r_begin + slabs_per_split < slabs ? r_begin + slabs_per_split : slabs;
  const bool single_group = K == 128;

  // Accumulation mapping: column col, tokens tg, tg + 4, ..., tg + 28 of the tile.
  const int col = tid % kChunk, tg = tid / kChunk;
  float acc[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = 0.0f;

  // Decode mapping: half a word per thread (word w = tid / 2 of Marlin lane w / 4, nibbles p in
  // [4 (tid % 2), +4)); the lane math is int4_gemv_lane.h's.
  const int w = tid / 2, p0 = (tid % 2) * 4;
  const int lane_i = w / 4, j = w % 4;

  for (int64_t r = r_begin; r < r_end; ++r) {
    __syncthreads();  // the previous slab's tile and inputs are no longer read
    const uint32_t word = static_cast<uint32_t>(qweight[r * 2 * N + 128 * chunk + w]);
    const int64_t g = (16 * r) / 128;
#pragma unroll
    for (int pp = 0; pp < 4; ++pp) {
      const int p = p0 + pp;
      const int kl = int4_gemv::slot_row(lane_i, int4_gemv::input_slot(p));
      const int nl = int4_gemv::lane_column(lane_i, int4_gemv::nibble_accumulator(j, p));
      const float s = __half2float(scales[g * N + kChunk * chunk + int4_gemv::scale_position(nl, single_group)]);
      const int q = static_cast<int>((word >> (4 * p)) & 15u);
      tile[kl][nl] = static_cast<float>(q - 8) * s;
    }
    for (int e = tid; e < kTokTile * kSlab; e += kThreads) {
      const int tt = e / kSlab, kk = e % kSlab;
      const int t = t0 + tt;
      xs[tt][kk] = t < n_tok ? x[static_cast<int64_t>(t) * K + 16 * r + kk] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSlab; ++kk) {
      const float wv = tile[kk][col];
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = fmaf(xs[tg + 4 * i][kk], wv, acc[i]);
    }
  }

  const int64_t n_col = kChunk * chunk + col;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int t = t0 + tg + 4 * i;
    if (t >= n_tok) continue;
    if (partial)
      partial[(static_cast<int64_t>(blockIdx.z) * n_tok + t) * N + n_col] = acc[i];
    else
      out[static_cast<int64_t>(t) * N + n_col] = acc[i];
  }
}

constexpr int kGemvWarps = 8;
constexpr int kGemvMaxTokens = 8;

// The batch-1..8 GEMV (file comment). out: [n_tok][N], or with gridDim.y > 1 the partial sums
// [blockIdx.y][n_tok][N]. Warp w of block (c, y) takes slabs [(y * kGemvWarps + w) * spw, + spw).
template <int M>
__global__ void __launch_bounds__(kGemvWarps * kWarp)
    int4_gemv_kernel(const float* __restrict__ x, const int32_t* __restrict__ qweight,
                     const __half* __restrict__ scales, float* __restrict__ out, int64_t N, int64_t K,
                     int64_t slabs_per_warp) {
  using namespace int4_gemv;
  __shared__ float sums[kGemvWarps][M][kChunkColumns];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t c = blockIdx.x;
  const int64_t slabs = K / kSlabRows;
  const int64_t r0 = (static_cast<int64_t>(blockIdx.y) * kGemvWarps + warp) * slabs_per_warp;
  const int64_t r1 = r0 + slabs_per_warp < slabs ? r0 + slabs_per_warp : slabs;
  const bool single_group = K == 128;
  const int row0 = slot_row(lane, 0);  // the lane's inputs: rows row0, row0 + 1, row0 + 8, row0 + 9

  float acc[M][kLaneColumns];
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int a = 0; a < kLaneColumns; ++a) acc[m][a] = 0.0f;
  float scale[kLaneColumns];
  int64_t group = -1;
  const uint4* words_at = reinterpret_cast<const uint4*>(qweight + 128 * c) + lane;  // + r * (2N / 4) for slab r
  const int64_t row_stride = 2 * N / 4;
  for (int64_t r = r0; r < r1; ++r) {
    const uint4 v = __ldg(words_at + r * row_stride);
    const int64_t g = r * kSlabRows / 128;
    if (g != group) {
      group = g;
#pragma unroll
      for (int a = 0; a < kLaneColumns; ++a)
        scale[a] = __half2float(scales[g * N + kChunkColumns * c + scale_position(lane_column(lane, a), single_group)]);
    }
    float xv[M][4];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float* xr = x + m * K + r * kSlabRows + row0;
      const float2 lo = __ldg(reinterpret_cast<const float2*>(xr));
      const float2 hi = __ldg(reinterpret_cast<const float2*>(xr + 8));
      xv[m][0] = lo.x, xv[m][1] = lo.y, xv[m][2] = hi.x, xv[m][3] = hi.y;
    }
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
    accumulate_slab<M>(words, xv, scale, acc);
  }
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int a = 0; a < kLaneColumns; ++a) {
      float s = acc[m][a];
      s += __shfl_xor_sync(0xffffffffu, s, 1);
      s += __shfl_xor_sync(0xffffffffu, s, 2);
      if (lane % 4 == 0) sums[warp][m][lane_column(lane, a)] = s;
    }
  __syncthreads();
  for (int e = threadIdx.x; e < M * kChunkColumns; e += blockDim.x) {
    const int m = e / kChunkColumns, col = e % kChunkColumns;
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < kGemvWarps; ++w) s += sums[w][m][col];
    out[(static_cast<int64_t>(blockIdx.y) * M + m) * N + kChunkColumns * c + col] = s;
  }
}

template <int M>
void launch_int4_gemv(dim3 grid, cudaStream_t stream, const float* x, const int32_t* qweight, const __half* scales,
                      float* out, int64_t N, int64_t K, int64_t slabs_per_warp) {
  MCPM_LAUNCH(grid, kGemvWarps * kWarp, 0, stream, int4_gemv_kernel<M>)(x, qweight, scales, out, N, K, slabs_per_warp);
  MCPM_CUDA_LAUNCHED(int4_gemv_kernel);
}

__global__ void int4_reduce_kernel(const float* __restrict__ partial, float* __restrict__ out, int splits,
                                   int64_t count);

}  // namespace

// out[i] = sum_z partial[z][i] in split order, i < count.
void launch_int4_reduce(cudaStream_t stream, const float* partial, float* out, int splits, int64_t count) {
  MCPM_LAUNCH(grid_for(count, kThreads, 8192), kThreads, 0, stream, int4_reduce_kernel)(partial, out, splits, count);
  MCPM_CUDA_LAUNCHED(int4_reduce_kernel);
}

namespace {

__global__ void int4_reduce_kernel(const float* __restrict__ partial, float* __restrict__ out, int splits,
                                   int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float s = partial[i];
    for (int z = 1; z < splits; ++z) s += partial[z * count + i];
    out[i] = s;
  }
}

}  // namespace

}  // namespace cuda

void CudaBackend::linear_int4(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& qweight,
                              const Tensor& scales) {
  CudaContext& c = cuda_context(ctx);
  const int64_t n = x.rows, K = x.cols, N = out.cols;
  MCPM_CHECK(out.rows == n && K % 128 == 0 && N % 64 == 0 && K > 0 && N > 0);
  MCPM_CHECK(x.dtype == DType::F32 && out.dtype == DType::F32);
  MCPM_CHECK(qweight.dtype == DType::I32 && qweight.rows == K / 16 && qweight.cols == 2 * N);
  MCPM_CHECK(scales.dtype == DType::F16 && scales.rows == K / 128 && scales.cols == N);
  if (n == 0) return;
  MCPM_CHECK(n <= 65535LL * cuda::kTokTile);
  DeviceGuard guard(device_);
  if (n <= cuda::kGemvMaxTokens) {
    linear_int4_gemv(c, out, x, qweight, scales);
    return;
  }
  if (int4_tensor_cores_) {
    linear_int4_mma(c, out, x, qweight, scales);
    return;
  }
  const int64_t chunks = N / cuda::kChunk, tok_tiles = (n + cuda::kTokTile - 1) / cuda::kTokTile;
  const int64_t slabs = K / cuda::kSlab;
  // Split K so that about two blocks per multiprocessor run, keeping at least 8 slabs (128 k) each.
  const int64_t base = chunks * tok_tiles;
  int64_t splits = std::min<int64_t>((2 * multiprocessors_ + base - 1) / base, std::max<int64_t>(1, slabs / 8));
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, 64));
  const int64_t per_split = (slabs + splits - 1) / splits;
  splits = (slabs + per_split - 1) / per_split;
  float* partial = nullptr;
  if (splits > 1)
    partial = static_cast<float*>(
        c.scratch(CudaContext::kInt4Partial, static_cast<size_t>(splits * n * N) * sizeof(float)));
  const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(tok_tiles), static_cast<unsigned>(splits));
  MCPM_LAUNCH(grid, cuda::kThreads, 0, c.stream, cuda::int4_gemm_kernel)(
      x.as<const float>(), qweight.as<const int32_t>(), static_cast<const __half*>(scales.data), out.as<float>(),
      partial, static_cast<int>(n), N, K, static_cast<int>(per_split));
  MCPM_CUDA_LAUNCHED(int4_gemm_kernel);
  if (partial) cuda::launch_int4_reduce(c.stream, partial, out.as<float>(), static_cast<int>(splits), n * N);
}

// Decode-sized calls: enough warps in flight to saturate memory (about 16 per multiprocessor), at
// least 2 slabs (32 k) per warp, blocks of 8 warps over one chunk, partial sums per block row (grid.y).
void CudaBackend::linear_int4_gemv(CudaContext& c, const Tensor& out, const Tensor& x, const Tensor& qweight,
                                   const Tensor& scales) {
  const int64_t n = x.rows, K = x.cols, N = out.cols;
  const int64_t chunks = N / cuda::kChunk, slabs = K / cuda::kSlab;
  const int64_t want_warps = 16LL * multiprocessors_;
  const int64_t warps_per_chunk = std::max<int64_t>(1, std::min<int64_t>(slabs, (want_warps + chunks - 1) / chunks));
  int64_t per_warp = std::max<int64_t>(2, (slabs + warps_per_chunk - 1) / warps_per_chunk);
  const int64_t warps = (slabs + per_warp - 1) / per_warp;
  const int64_t rows = (warps + cuda::kGemvWarps - 1) / cuda::kGemvWarps;
  MCPM_CHECK(chunks <= INT32_MAX && rows <= 65535);
  float* dst = out.as<float>();
  if (rows > 1)
    dst = static_cast<float*>(c.scratch(CudaContext::kInt4Partial, static_cast<size_t>(rows * n * N) * sizeof(float)));
  const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(rows));
  const float* xp = x.as<const float>();
  const int32_t* qp = qweight.as<const int32_t>();
  const auto* sp = static_cast<const __half*>(scales.data);
  switch (n) {
    case 1: cuda::launch_int4_gemv<1>(grid, c.stream, xp, qp, sp, dst, N, K, per_warp); break;
    case 2: cuda::launch_int4_gemv<2>(grid, c.stream, xp, qp, sp, dst, N, K, per_warp); break;
    case 3: cuda::launch_int4_gemv<3>(grid, c.stream, xp, qp, sp, dst, N, K, per_warp); break;
    case 4: cuda::launch_int4_gemv<4>(grid, c.stream, xp, qp, sp, dst, N, K, per_warp); break;
    case 5: cuda::launch_int4_gemv<5>(grid, c.stream, xp, qp, sp, dst, N, K, per_warp); break;
    case 6: cuda::launch_int4_gemv<6>(grid, c.stream, xp, qp, sp, dst, N, K, per_warp); break;
    case 7: cuda::launch_int4_gemv<7>(grid, c.stream, xp, qp, sp, dst, N, K, per_warp); break;
    default: cuda::launch_int4_gemv<8>(grid, c.stream, xp, qp, sp, dst, N, K, per_warp); break;
  }
  if (rows > 1) cuda::launch_int4_reduce(c.stream, dst, out.as<float>(), static_cast<int>(rows), n * N);
}

}  // namespace mcpm
