// W4A16 int4 linear on tensor cores (Backend::linear_int4 for more than 8 tokens: prefill, tree
// verification): Marlin's packed words are already mma.sync.m16n8k16 B fragments, so each lane turns
// its 16-byte load per slab into the B registers of 8 n-tiles with a LOP3, one fp16 subtract and one
// fp16 multiply, with no shuffles and no shared-memory round trip for the weights.
//
//   out[t, n] = sum_k fp16(x[t, k]) * fp16((q[k][n] - 8) * s[k/128][n]),   fp32 accumulation
//
// Rounding, as Marlin: the input to fp16 (relative 2^-11) and each dequantised weight once to fp16;
// the tensor cores multiply exactly and accumulate in fp32. (The CUDA-core kernels of int4_gemm.cu
// keep fp32 inputs and exact weights; CudaOps.LinearInt4... compares both with the CPU.)
//
// Layouts: x fp32 [n_tok, K]; out fp32 [n_tok, N]; qweight / scales as in int4_gemm.cu. Fragment
// math: int4_mma_fragment.h (emulated on the CPU by Int4MmaFragments.*); column math:
// int4_gemv_lane.h (lane_column, scale_position).
//
// Tiling: a block of 4 warps owns 4 consecutive 64-column chunks (warp w: chunk 4 blockIdx.x + w), MT
// m16 tiles of tokens (blockIdx.y) and a range of 128-row K groups (blockIdx.z: a K split that keeps
// the multiprocessors busy when n and N are small). Per group the block stages x[16 MT rows][128 k] in
// shared memory as fp16 (row stride 136 halves, so a warp's A-fragment loads hit 32 distinct banks);
// each warp then walks the group's 8 slabs: one 16-byte load of its words per lane and slab, issued a
// slab ahead, the scales of its 8 columns once per group, and MT x 8 mma per slab. K-split partial
// sums go to scratch and are added in split order (int4_reduce_kernel): deterministic.
//
// Not yet: a cp.async multi-stage pipeline for the A tile and the words (the one-slab register
// prefetch is all the latency hiding), stream-K.
#include <algorithm>
#include <climits>

#include "backend/cuda/cuda_internal.cuh"
#include "backend/cuda/int4_gemv_lane.h"
#include "backend/cuda/int4_mma_fragment.h"

namespace mcpm {

namespace cuda {

namespace {

constexpr int kMmaWarps = 4;
constexpr int kGroupRows = 128;                  // K rows per scale group
constexpr int kSlabsPerGroup = kGroupRows / 16;  // Marlin slabs per group
constexpr int kAStride = kGroupRows + 8;         // halves per staged input row

__device__ __forceinline__ void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ uint32_t half2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 bits_half2(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }

// out (or partial[blockIdx.z]) for the block's tokens and chunks over its K groups (file comment).
template <int MT>
__global__ void __launch_bounds__(kMmaWarps * kWarp)
    int4_mma_kernel(const float* __restrict__ x, const int32_t* __restrict__ qweight,
                    const __half* __restrict__ scales, float* __restrict__ out, int n_tok, int64_t N, int64_t K,
                    int64_t groups_per_split) {
  using namespace int4_mma;
  __shared__ __align__(16) __half xs[MT * 16][kAStride];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * kMmaWarps + warp;
  const bool active = chunk < N / 64;  // warp-uniform; idle warps still help stage the inputs
  const int m0 = blockIdx.y * MT * 16;
  const int64_t groups = K / kGroupRows;
  const int64_t g0 = static_cast<int64_t>(blockIdx.z) * groups_per_split;
  const int64_t g1 = g0 + groups_per_split < groups ? g0 + groups_per_split : groups;
  const bool single_group = K == kGroupRows;
  const __half2 bias = bits_half2(static_cast<uint32_t>(kHalfBias) * 0x10001u);

  float acc[MT][kNTiles][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int a = 0; a < kNTiles; ++a)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][a][i] = 0.0f;

  // The lane's 16 bytes of slab r of its chunk: words 128 chunk + 4 lane .. + 3 of qweight row r.
  const uint4* words_at = reinterpret_cast<const uint4*>(qweight + 128 * chunk) + lane;
  const int64_t row_stride = 2 * N / 4;  // uint4 per qweight row

  for (int64_t grp = g0; grp < g1; ++grp) {
    __syncthreads();  // the previous group's inputs are no longer read
    for (int e = threadIdx.x; e < MT * 16 * (kGroupRows / 2); e += blockDim.x) {
      const int row = e / (kGroupRows / 2), kp = e % (kGroupRows / 2);
      const int t = m0 + row;
      float2 v = make_float2(0.0f, 0.0f);  // rows past the tokens are zero (their outputs are dropped)
      if (t < n_tok) v = __ldg(reinterpret_cast<const float2*>(x + static_cast<int64_t>(t) * K + grp * kGroupRows) + kp);
      *reinterpret_cast<__half2*>(&xs[row][2 * kp]) = __floats2half2_rn(v.x, v.y);
    }
    __syncthreads();
    if (!active) continue;

    __half2 scale[kNTiles];
#pragma unroll
    for (int a = 0; a < kNTiles; ++a) {
      const int col = int4_gemv::scale_position(int4_gemv::lane_column(lane, a), single_group);
      scale[a] = __half2half2(scales[grp * N + 64 * chunk + col]);
    }
    uint4 next = __ldg(words_at + grp * kSlabsPerGroup * row_stride);
#pragma unroll 1
    for (int sl = 0; sl < kSlabsPerGroup; ++sl) {
      const uint4 cur = next;
      if (sl + 1 < kSlabsPerGroup) next = __ldg(words_at + (grp * kSlabsPerGroup + sl + 1) * row_stride);
      const uint32_t words[4] = {cur.x, cur.y, cur.z, cur.w};
      uint32_t af[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          af[mt][i] = *reinterpret_cast<const uint32_t*>(&xs[16 * mt + a_row(lane, i)][16 * sl + a_col(lane, i, 0)]);
#pragma unroll
      for (int a = 0; a < kNTiles; ++a) {
        uint32_t b[2];
#pragma unroll
        for (int reg = 0; reg < 2; ++reg) {
          const __half2 q = __hsub2(bits_half2(magic_nibble_pair(words[b_word(a)], b_shift(a, reg))), bias);
          b[reg] = half2_bits(__hmul2(q, scale[a]));
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) mma_m16n8k16(acc[mt][a], af[mt], b);
      }
    }
  }
  if (!active) return;

  float* dst = out + static_cast<int64_t>(blockIdx.z) * n_tok * N;  // out, or this split's partial sums
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int a = 0; a < kNTiles; ++a)
#pragma unroll
      for (int half = 0; half < 2; ++half) {  // accumulators (0, 1) and (2, 3): two adjacent columns
        const int t = m0 + 16 * mt + c_row(lane, 2 * half);
        if (t >= n_tok) continue;
        const int64_t col = 64 * chunk + 8 * a + c_col(lane, 2 * half);
        *reinterpret_cast<float2*>(dst + static_cast<int64_t>(t) * N + col) =
            make_float2(acc[mt][a][2 * half], acc[mt][a][2 * half + 1]);
      }
}

template <int MT>
void launch_int4_mma(dim3 grid, cudaStream_t stream, const float* x, const int32_t* qweight, const __half* scales,
                     float* out, int n_tok, int64_t N, int64_t K, int64_t groups_per_split) {
  int4_mma_kernel<MT><<<grid, kMmaWarps * kWarp, 0, stream>>>(x, qweight, scales, out, n_tok, N, K, groups_per_split);
  MCPM_CUDA_LAUNCHED(int4_mma_kernel);
}

}  // namespace

// out[i] = sum_z partial[z][i] in split order (int4_gemm.cu).
void launch_int4_reduce(cudaStream_t stream, const float* partial, float* out, int splits, int64_t count);

}  // namespace cuda

void CudaBackend::linear_int4_mma(CudaContext& c, const Tensor& out, const Tensor& x, const Tensor& qweight,
                                  const Tensor& scales) {
  const int64_t n = x.rows, K = x.cols, N = out.cols;
  const int mt = n <= 16 ? 1 : n <= 32 ? 2 : 4;
  const int64_t block_cols = cuda::kMmaWarps * 64;
  const int64_t col_blocks = (N + block_cols - 1) / block_cols, tok_blocks = (n + 16 * mt - 1) / (16 * mt);
  const int64_t groups = K / cuda::kGroupRows;
  MCPM_CHECK(tok_blocks <= 65535 && col_blocks <= INT_MAX && n <= INT_MAX);
  // Split K so that about two blocks per multiprocessor run (at most one split per group, 64 in all).
  const int64_t base = col_blocks * tok_blocks;
  int64_t splits = std::min<int64_t>({(2 * multiprocessors_ + base - 1) / base, groups, 64});
  splits = std::max<int64_t>(1, splits);
  const int64_t per_split = (groups + splits - 1) / splits;
  splits = (groups + per_split - 1) / per_split;
  float* dst = out.as<float>();
  if (splits > 1)
    dst = static_cast<float*>(c.scratch(CudaContext::kInt4Partial, static_cast<size_t>(splits * n * N) * sizeof(float)));
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(tok_blocks), static_cast<unsigned>(splits));
  const float* xp = x.as<const float>();
  const int32_t* qp = qweight.as<const int32_t>();
  const auto* sp = static_cast<const __half*>(scales.data);
  const int nt = static_cast<int>(n);
  switch (mt) {
    case 1: cuda::launch_int4_mma<1>(grid, c.stream, xp, qp, sp, dst, nt, N, K, per_split); break;
    case 2: cuda::launch_int4_mma<2>(grid, c.stream, xp, qp, sp, dst, nt, N, K, per_split); break;
    default: cuda::launch_int4_mma<4>(grid, c.stream, xp, qp, sp, dst, nt, N, K, per_split); break;
  }
  if (splits > 1) cuda::launch_int4_reduce(c.stream, dst, out.as<float>(), static_cast<int>(splits), n * N);
}

void cuda_set_int4_tensor_cores(Backend& backend, bool on) {
  dynamic_cast<CudaBackend&>(backend).set_int4_tensor_cores(on);
}

}  // namespace mcpm
