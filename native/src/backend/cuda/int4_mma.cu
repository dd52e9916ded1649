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
// the multiprocessors busy when n and N are small). The input is first rounded to fp16 once
// (launch_to_dtype into scratch), so the kernel's loads are plain copies.
//
// Pipeline: one stage holds a K group's tiles in shared memory: the fp16 inputs x[16 MT rows][128 k]
// (row stride 136 halves, so a warp's A-fragment loads hit 32 distinct banks), each warp's eight
// 512-byte slabs of words and its 64 scales. `stages` (2..4, from the shared memory the device
// offers) stages rotate: while the warps run the mma of group i, cp.async copies of groups i + 1 ..
// i + stages - 1 are in flight, each its own commit group, so wait_group(stages - 2) at the top of
// an iteration means "group i has landed". Each lane copies (and later reads) exactly its own 16
// bytes of every slab, so the words need no barrier of their own; the barrier after the wait
// publishes the input tile and frees the slot that the next copies overwrite.
//
// K-split partial sums go to scratch and are added in split order (int4_reduce_kernel): deterministic.
//
// Not yet: stream-K (split-K with an in-order reduction serves batch 1).
#include <algorithm>
#include <climits>

#include "backend/cuda/cuda_internal.cuh"
#include "backend/cuda/int4_gemv_lane.h"
#include "backend/cuda/int4_mma_fragment.h"
#include "backend/cuda/ptx.h"

namespace mcpm {

namespace cuda {

namespace {

constexpr int kMmaWarps = 4;
constexpr int kGroupRows = 128;                  // K rows per scale group
constexpr int kSlabsPerGroup = kGroupRows / 16;  // Marlin slabs per group
constexpr int kAStride = kGroupRows + 8;         // halves per staged input row

__device__ __forceinline__ uint32_t half2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 bits_half2(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }

// Shared-memory bytes of one pipeline stage for MT token tiles: inputs, words, scales.
constexpr size_t kWordBytes = size_t{kMmaWarps} * kSlabsPerGroup * kWarp * 16;
constexpr size_t kScaleBytes = size_t{kMmaWarps} * 64 * sizeof(__half);
MCPM_HD constexpr size_t input_tile_bytes(int mt) { return size_t{16} * mt * kAStride * sizeof(__half); }
MCPM_HD constexpr size_t stage_bytes(int mt) { return input_tile_bytes(mt) + kWordBytes + kScaleBytes; }

// out (or partial[blockIdx.z]) for the block's tokens and chunks over its K groups (file comment).
// x16: the inputs in fp16 [n_tok, K]; dynamic shared memory: stages * stage_bytes(MT).
template <int MT>
__global__ void __launch_bounds__(kMmaWarps * kWarp)
    int4_mma_kernel(const __half* __restrict__ x16, const int32_t* __restrict__ qweight,
                    const __half* __restrict__ scales, float* __restrict__ out, int n_tok, int64_t N, int64_t K,
                    int64_t groups_per_split, int stages) {
  using namespace int4_mma;
  using namespace ptx;
  MCPM_DYNAMIC_SHARED(unsigned char, smem);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * kMmaWarps + warp;
  const bool active = chunk < N / 64;  // warp-uniform; idle warps still copy the inputs
  const int m0 = blockIdx.y * MT * 16;
  const int64_t groups = K / kGroupRows;
  const int64_t g0 = static_cast<int64_t>(blockIdx.z) * groups_per_split;
  const int64_t count = (g0 + groups_per_split < groups ? g0 + groups_per_split : groups) - g0;
  const bool single_group = K == kGroupRows;
  const __half2 bias = bits_half2(static_cast<uint32_t>(kHalfBias) * 0x10001u);

  // The lane's 16 bytes of slab r of its chunk: words 128 chunk + 4 lane .. + 3 of qweight row r.
  const uint4* words_at = reinterpret_cast<const uint4*>(qweight + 128 * chunk) + lane;
  const int64_t row_stride = 2 * N / 4;  // uint4 per qweight row

  // Stage `slot`'s three tiles.
  auto inputs = [&](int slot) {
    return reinterpret_cast<__half(*)[kAStride]>(smem + static_cast<size_t>(slot) * stage_bytes(MT));
  };
  auto words = [&](int slot) {  // [warp][slab][lane]
    return reinterpret_cast<uint4*>(smem + static_cast<size_t>(slot) * stage_bytes(MT) + input_tile_bytes(MT)) +
           warp * kSlabsPerGroup * kWarp;
  };
  auto group_scales = [&](int slot) {  // [warp][64]
    return reinterpret_cast<__half*>(smem + static_cast<size_t>(slot) * stage_bytes(MT) + input_tile_bytes(MT) +
                                     kWordBytes) +
           warp * 64;
  };

  // Queues the copies of K group g0 + i into slot i % stages (one commit group, possibly empty).
  auto load_group = [&](int64_t i) {
    if (i < count) {
      const int slot = static_cast<int>(i % stages);
      const int64_t grp = g0 + i;
      __half(*xs)[kAStride] = inputs(slot);
      for (int e = threadIdx.x; e < MT * 16 * (kGroupRows / 8); e += blockDim.x) {
        const int row = e / (kGroupRows / 8), part = e % (kGroupRows / 8);
        const int t = m0 + row;  // rows past the tokens are zero-filled (their outputs are dropped)
        const __half* src = x16 + static_cast<int64_t>(t < n_tok ? t : n_tok - 1) * K + grp * kGroupRows + 8 * part;
        cp_async16(&xs[row][8 * part], src, t < n_tok ? 16 : 0);
      }
      if (active) {
        uint4* w = words(slot);
#pragma unroll
        for (int sl = 0; sl < kSlabsPerGroup; ++sl)
          cp_async16(w + sl * kWarp + lane, words_at + (grp * kSlabsPerGroup + sl) * row_stride, 16);
        if (lane < 8) cp_async16(group_scales(slot) + 8 * lane, scales + grp * N + 64 * chunk + 8 * lane, 16);
      }
    }
    cp_async_commit();
  };

  float acc[MT][kNTiles][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int a = 0; a < kNTiles; ++a)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][a][i] = 0.0f;

  for (int s = 0; s < stages - 1; ++s) load_group(s);
  for (int64_t i = 0; i < count; ++i) {
    cp_async_wait(stages - 2);  // this thread's copies of group i are done ...
    __syncthreads();            // ... and everyone's; slot (i - 1) % stages is no longer read
    load_group(i + stages - 1);
    if (!active) continue;
    const int slot = static_cast<int>(i % stages);
    const __half(*xs)[kAStride] = inputs(slot);
    const uint4* w = words(slot);
    const __half* gs = group_scales(slot);

    __half2 scale[kNTiles];
#pragma unroll
    for (int a = 0; a < kNTiles; ++a)
      scale[a] = __half2half2(gs[int4_gemv::scale_position(int4_gemv::lane_column(lane, a), single_group)]);
#pragma unroll 2
    for (int sl = 0; sl < kSlabsPerGroup; ++sl) {
      const uint4 cur = w[sl * kWarp + lane];
      const uint32_t wd[4] = {cur.x, cur.y, cur.z, cur.w};
      uint32_t af[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r)
          af[mt][r] = *reinterpret_cast<const uint32_t*>(&xs[16 * mt + a_row(lane, r)][16 * sl + a_col(lane, r, 0)]);
#pragma unroll
      for (int a = 0; a < kNTiles; ++a) {
        uint32_t b[2];
#pragma unroll
        for (int reg = 0; reg < 2; ++reg) {
          const __half2 q = __hsub2(bits_half2(magic_nibble_pair(wd[b_word(a)], b_shift(a, reg))), bias);
          b[reg] = half2_bits(__hmul2(q, scale[a]));
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) mma_m16n8k16(acc[mt][a], af[mt], b);
      }
    }
  }
  cp_async_wait(0);  // no copy outlives the block (the trailing groups are empty)
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

// Pipeline depth for MT token tiles: as many stages (2..4) as leave room for two blocks per
// multiprocessor, but never fewer than two (those fit the per-block limit of every sm_80+ GPU).
int pipeline_stages(int mt, size_t smem_per_block, size_t smem_per_sm) {
  const size_t per_block = std::min(smem_per_block, smem_per_sm / 2 - 1024);  // 1 KiB the runtime reserves
  return static_cast<int>(std::clamp<size_t>(per_block / stage_bytes(mt), 2, 4));
}

template <int MT>
void launch_int4_mma(dim3 grid, int stages, cudaStream_t stream, const __half* x16, const int32_t* qweight,
                     const __half* scales, float* out, int n_tok, int64_t N, int64_t K, int64_t groups_per_split) {
  const size_t smem = static_cast<size_t>(stages) * stage_bytes(MT);  // opted in by configure_int4_mma
  MCPM_LAUNCH(grid, kMmaWarps * kWarp, smem, stream, int4_mma_kernel<MT>)(x16, qweight, scales, out, n_tok, N, K,
                                                                 groups_per_split, stages);
  MCPM_CUDA_LAUNCHED(int4_mma_kernel);
}

template <int MT>
void allow_pipeline_smem(size_t smem_per_block) {
  const size_t most = std::min(smem_per_block, 4 * stage_bytes(MT));
  MCPM_CUDA_CHECK(cudaFuncSetAttribute(int4_mma_kernel<MT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(most)));
}

}  // namespace

// Above 48 KiB of dynamic shared memory a kernel must opt in, once per device: lets each instance
// take the most its pipeline may use (4 stages, capped by the per-block limit).
void configure_int4_mma(size_t smem_per_block) {
  allow_pipeline_smem<1>(smem_per_block);
  allow_pipeline_smem<2>(smem_per_block);
  allow_pipeline_smem<4>(smem_per_block);
}

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
  // The inputs rounded to fp16 once, as the tensor cores take them (file comment).
  auto* x16 = static_cast<__half*>(c.scratch(CudaContext::kGemmInput, static_cast<size_t>(n * K) * sizeof(__half)));
  cuda::launch_to_dtype(c.stream, x16, DType::F16, x.as<const float>(), n * K);
  const int32_t* qp = qweight.as<const int32_t>();
  const auto* sp = static_cast<const __half*>(scales.data);
  const int nt = static_cast<int>(n);
  const int stages = cuda::pipeline_stages(mt, smem_per_block_optin_, smem_per_multiprocessor_);
  switch (mt) {
    case 1: cuda::launch_int4_mma<1>(grid, stages, c.stream, x16, qp, sp, dst, nt, N, K, per_split); break;
    case 2: cuda::launch_int4_mma<2>(grid, stages, c.stream, x16, qp, sp, dst, nt, N, K, per_split); break;
    default: cuda::launch_int4_mma<4>(grid, stages, c.stream, x16, qp, sp, dst, nt, N, K, per_split); break;
  }
  if (splits > 1) cuda::launch_int4_reduce(c.stream, dst, out.as<float>(), static_cast<int>(splits), n * N);
}

void cuda_set_int4_tensor_cores(Backend& backend, bool on) {
  dynamic_cast<CudaBackend&>(backend).set_int4_tensor_cores(on);
}

}  // namespace mcpm
