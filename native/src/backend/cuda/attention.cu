// Attention of the CUDA backend: causal GQA attention over the KV cache (prefill and decode), tree
// attention (speculative verification and drafting) and block-sparse attention (InfLLM v2 stage 2,
// sparse_attention.cu selects the blocks), one kernel with online softmax and split-KV
// (flash-decoding) partials.
//
// Semantics (backend.h): query i (token row i of q [n, heads * hd], fp32) of head h reads KV head
// g = h / (heads / kv_heads) of the bf16 caches [capacity, kv_heads * hd]. Causal: it sees cache rows
// [0, start + i]. Tree: rows [0, prefix) plus prefix + j for every set bit j of masks[i]. Block-sparse:
// the rows <= start + i of the selected blocks of (i, g), in ascending order. Scores are
// q·k / sqrt(hd) in fp32, softmax in fp32, out[i, h*hd : (h+1)*hd] = sum_j p_j v_j / sum_j p_j.
//
// Tiling. A block (128 threads, 4 warps) owns `rows` = qt tokens x hb query heads of one KV head,
// so the KV head's keys and values are read from memory once per block for all the query heads that
// share them (decode: all `group` heads of the KV head in one block). It walks its keys in tiles of
// kt rows staged in shared memory (K padded by one word per row so the per-key dot products are
// bank-conflict free), and each warp updates its rows with online softmax: running max m, running
// sum l, and an unnormalised accumulator acc[hd] in shared memory. Keys with probability exactly 0
// are skipped, so masked rows never touch values that may be uninitialised memory.
//
// Block-sparse mode walks "logical" keys u = s * block_size + r (r < block_size) over the s-th
// selected block of its (token, KV head), i.e. cache row blocks[s] * block_size + r; a block then
// owns one query token (qt = 1), since each token has its own selection.
//
// Split-KV. When the (token tile, head tile, KV head) blocks cannot fill the GPU (decode: kv_heads
// blocks), the keys are also split into `splits` contiguous ranges (grid.z). Each split writes its
// (acc, m, l) to scratch and attention_combine_kernel merges them in split order with weights
// exp(m_z - max m), deterministically. With one split the kernel normalises and writes out directly.
//
// Not yet: tensor cores (mma) and double-buffered (cp.async) tiles of a FlashAttention-2 kernel.
#include <algorithm>
#include <climits>
#include <cmath>

#include "backend/cuda/cuda_internal.cuh"

namespace mcpm {

namespace cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kMaxKeysPerTile = 64;  // two score registers per lane
constexpr int kMaxSplits = 256;

struct AttnArgs {
  const float* q;
  float* out;
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  int64_t q_ld, out_ld, kv_ld;
  int n;              // query tokens
  int heads, group, hd;
  int64_t start;      // causal: first query's position; tree: prefix
  const int64_t* start_dev;  // non-null (a recorded step): start (tree: the prefix) is read from here, kv_len = start + span
  int span;                  // with start_dev: keys past start that the step may see (n, or a tree's mask bits)
  const uint64_t* masks;  // tree mode when non-null (device, one per query)
  KeyBlocks blocks;       // block-sparse mode when blocks.blocks is non-null (qt == 1)
  int64_t kv_len;     // rows [0, kv_len) hold every key any query of the call sees
  float scale;
  int qt, hb, head_tiles, kt, rows;
  int64_t split_len;  // keys per split, a multiple of kt
  int splits;
  float* part;        // splits > 1: [splits][n * heads][hd + 2] = (acc[hd], m, l)
};

// For the block's (query token, head) rows of KV head blockIdx.y, over the keys of split blockIdx.z:
// online-softmax attention (see the file comment), written normalised to out (one split) or as
// unnormalised partials (acc, m, l) to a.part. q/out fp32 [n, heads*hd]; k/v bf16 [cap, kv_heads*hd].
// DPL: accumulator elements per lane (hd <= 32 * DPL).
// The cache row of logical key u: u itself, or in block-sparse mode row u % block_size of the
// (u / block_size)-th selected block `sel`.
__device__ __forceinline__ int64_t key_row(const AttnArgs& a, const int32_t* sel, int64_t u) {
  if (sel == nullptr) return u;
  return static_cast<int64_t>(sel[u / a.blocks.block_size]) * a.blocks.block_size + u % a.blocks.block_size;
}

template <int DPL>
__global__ void __launch_bounds__(kThreads) attention_kernel(const AttnArgs a) {
  MCPM_DYNAMIC_SHARED(float, smem);
  const int hd = a.hd, rows = a.rows, kt = a.kt;
  float* qs = smem;               // [rows][hd]
  float* accs = qs + rows * hd;   // [rows][hd]
  float* ml = accs + rows * hd;   // [rows][2]: running max, running sum
  __nv_bfloat16* ks = reinterpret_cast<__nv_bfloat16*>(ml + 2 * rows);  // [kt][hd + 2]
  __nv_bfloat16* vs = ks + kt * (hd + 2);                                // [kt][hd]
  const int kstride = hd + 2;

  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp, warps = blockDim.x / kWarp;
  const int token_tile = blockIdx.x / a.head_tiles, head_tile = blockIdx.x % a.head_tiles;
  const int g = blockIdx.y, z = blockIdx.z;
  const int t0 = token_tile * a.qt, h0 = head_tile * a.hb;

  for (int e = tid; e < rows * hd; e += blockDim.x) {
    const int r = e / hd, d = e - r * hd;
    const int t = t0 + r / a.hb, hg = h0 + r % a.hb;
    const bool valid = t < a.n && hg < a.group;
    qs[e] = valid ? a.q[static_cast<int64_t>(t) * a.q_ld + static_cast<int64_t>(g * a.group + hg) * hd + d] : 0.0f;
    accs[e] = 0.0f;
  }
  for (int r = tid; r < rows; r += blockDim.x) {
    ml[2 * r] = -INFINITY;
    ml[2 * r + 1] = 0.0f;
  }

  // The keys this block may need: its split's range, cut at the last key its queries can see.
  const int64_t start = a.start_dev ? *a.start_dev : a.start;
  const int64_t kv_len = a.start_dev ? start + a.span : a.kv_len;
  const int last_t = min(a.n, t0 + a.qt) - 1;
  const int64_t causal_end = start + last_t + 1;
  const int32_t* sel = nullptr;  // block-sparse: this (token, KV head)'s selected blocks
  int64_t visible_end = a.masks || causal_end > kv_len ? kv_len : causal_end;
  if (a.blocks.blocks) {
    const int64_t item = static_cast<int64_t>(t0) * gridDim.y + g;
    sel = a.blocks.blocks + item * a.blocks.max_blocks;
    visible_end = static_cast<int64_t>(a.blocks.counts[item]) * a.blocks.block_size;
  }
  const int64_t kb0 = static_cast<int64_t>(z) * a.split_len;
  const int64_t kb1 = kb0 + a.split_len < visible_end ? kb0 + a.split_len : visible_end;
  const int hp = hd / 2;

  for (int64_t kb = kb0; kb < kb1; kb += kt) {
    const int cnt = kb1 - kb < kt ? static_cast<int>(kb1 - kb) : kt;
    __syncthreads();  // the previous tile is no longer read (and the initialisation is complete)
    for (int e = tid; e < kt * hp; e += blockDim.x) {
      const int jj = e / hp, dp = e - jj * hp;
      uint32_t kw = 0, vw = 0;  // rows past the range are zero, never garbage
      const int64_t row = jj < cnt ? key_row(a, sel, kb + jj) : kv_len;
      if (row < kv_len) {  // block-sparse: the tail of the last block may lie past the cache's rows
        const int64_t off = row * a.kv_ld + static_cast<int64_t>(g) * hd + 2 * dp;
        kw = *reinterpret_cast<const uint32_t*>(a.k + off);
        vw = *reinterpret_cast<const uint32_t*>(a.v + off);
      }
      *reinterpret_cast<uint32_t*>(ks + jj * kstride + 2 * dp) = kw;
      *reinterpret_cast<uint32_t*>(vs + jj * hd + 2 * dp) = vw;
    }
    __syncthreads();

    for (int r = warp; r < rows; r += warps) {
      const int t = t0 + r / a.hb, hg = h0 + r % a.hb;
      if (t >= a.n || hg >= a.group) continue;  // warp-uniform
      const int64_t own = start + t;            // causal: the query's own cache row
      const uint64_t mask = a.masks ? a.masks[t] : 0;
      float sc[kMaxKeysPerTile / kWarp];
      float tmax = -INFINITY;
#pragma unroll
      for (int cc = 0; cc < kMaxKeysPerTile / kWarp; ++cc) {
        const int jj = lane + kWarp * cc;
        float s = -INFINITY;
        if (jj < cnt) {
          const int64_t j = key_row(a, sel, kb + jj);
          const bool vis = a.masks ? (j < start || (j - start < 64 && ((mask >> (j - start)) & 1u))) : j <= own;
          if (vis) {
            const float2* q2 = reinterpret_cast<const float2*>(qs + r * hd);
            const __nv_bfloat162* k2 = reinterpret_cast<const __nv_bfloat162*>(ks + jj * kstride);
            float dot = 0.0f;
            for (int dp = 0; dp < hp; ++dp) {
              const float2 qv = q2[dp];
              const float2 kv = __bfloat1622float2(k2[dp]);
              dot = fmaf(qv.x, kv.x, dot);
              dot = fmaf(qv.y, kv.y, dot);
            }
            s = dot * a.scale;
          }
        }
        sc[cc] = s;
        tmax = fmaxf(tmax, s);
      }
      tmax = warp_max(tmax);
      if (tmax == -INFINITY) continue;  // nothing visible in this tile for this row (warp-uniform)
      const float m_old = ml[2 * r], l_old = ml[2 * r + 1];
      const float m_new = fmaxf(m_old, tmax);
      const float corr = expf(m_old - m_new);  // 0 while m_old is -inf
      float psum = 0.0f;
#pragma unroll
      for (int cc = 0; cc < kMaxKeysPerTile / kWarp; ++cc) {
        const float p = sc[cc] == -INFINITY ? 0.0f : expf(sc[cc] - m_new);
        sc[cc] = p;
        psum += p;
      }
      psum = warp_sum(psum);
      float o[DPL];
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        const int d = lane + kWarp * i;
        o[i] = d < hd ? accs[r * hd + d] * corr : 0.0f;
      }
      for (int jj = 0; jj < cnt; ++jj) {
        const float p = __shfl_sync(0xffffffffu, jj < kWarp ? sc[0] : sc[1], jj % kWarp);
        if (p == 0.0f) continue;  // warp-uniform
        const __nv_bfloat16* vr = vs + jj * hd;
#pragma unroll
        for (int i = 0; i < DPL; ++i) {
          const int d = lane + kWarp * i;
          if (d < hd) o[i] = fmaf(p, __bfloat162float(vr[d]), o[i]);
        }
      }
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        const int d = lane + kWarp * i;
        if (d < hd) accs[r * hd + d] = o[i];
      }
      if (lane == 0) {
        ml[2 * r] = m_new;
        ml[2 * r + 1] = l_old * corr + psum;
      }
      __syncwarp();
    }
  }
  __syncthreads();

  for (int r = warp; r < rows; r += warps) {
    const int t = t0 + r / a.hb, hg = h0 + r % a.hb;
    if (t >= a.n || hg >= a.group) continue;
    const int head = g * a.group + hg;
    const float m = ml[2 * r], l = ml[2 * r + 1];
    if (a.splits == 1) {
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      float* o = a.out + static_cast<int64_t>(t) * a.out_ld + static_cast<int64_t>(head) * hd;
      for (int d = lane; d < hd; d += kWarp) o[d] = accs[r * hd + d] * inv;
    } else {
      const int64_t row = static_cast<int64_t>(t) * a.heads + head;
      float* p = a.part + (static_cast<int64_t>(z) * a.n * a.heads + row) * (hd + 2);
      for (int d = lane; d < hd; d += kWarp) p[d] = accs[r * hd + d];
      if (lane == 0) {
        p[hd] = m;
        p[hd + 1] = l;
      }
    }
  }
}

// out row (t, h) = sum_z w_z acc_z / sum_z w_z l_z with w_z = exp(m_z - max_z m_z) (0 for empty
// splits). One block per (token, head) row.
__global__ void __launch_bounds__(kThreads)
    attention_combine_kernel(const float* __restrict__ part, float* __restrict__ out, int64_t out_ld, int n,
                             int heads, int hd, int splits) {
  __shared__ float w[kMaxSplits];
  __shared__ float inv_total;
  const int64_t row = blockIdx.x;
  const int t = static_cast<int>(row / heads), h = static_cast<int>(row % heads);
  const int64_t stride = static_cast<int64_t>(n) * heads * (hd + 2);
  const float* base = part + row * (hd + 2);
  if (threadIdx.x == 0) {
    float m_max = -INFINITY;
    for (int z = 0; z < splits; ++z) m_max = fmaxf(m_max, base[z * stride + hd]);
    float total = 0.0f;
    for (int z = 0; z < splits; ++z) {
      const float m = base[z * stride + hd];
      w[z] = m == -INFINITY ? 0.0f : expf(m - m_max);
      total += w[z] * base[z * stride + hd + 1];
    }
    inv_total = total > 0.0f ? 1.0f / total : 0.0f;
  }
  __syncthreads();
  float* o = out + static_cast<int64_t>(t) * out_ld + static_cast<int64_t>(h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float s = 0.0f;
    for (int z = 0; z < splits; ++z)
      if (w[z] != 0.0f) s = fmaf(w[z], base[z * stride + d], s);
    o[d] = s * inv_total;
  }
}

template <int DPL>
void launch_attention(const AttnArgs& a, dim3 grid, size_t smem, cudaStream_t stream) {
  MCPM_LAUNCH(grid, kThreads, smem, stream, attention_kernel<DPL>)(a);
  MCPM_CUDA_LAUNCHED(attention_kernel);
}

}  // namespace

}  // namespace cuda

void CudaBackend::attention(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                            const Tensor& v_cache, const AttentionShape& shape, int64_t start) {
  attend(cuda_context(ctx), out, q, k_cache, v_cache, shape, start, nullptr);
}

void CudaBackend::tree_attention(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                                 const Tensor& v_cache, const AttentionShape& shape, int64_t prefix,
                                 const uint64_t* masks) {
  MCPM_CHECK(masks != nullptr);
  const TreeMasks tree{masks, nullptr, 0};
  attend(cuda_context(ctx), out, q, k_cache, v_cache, shape, prefix, &tree);
}

void CudaBackend::tree_attention_resident(ExecContext& ctx, const Tensor& out, const Tensor& q,
                                          const Tensor& k_cache, const Tensor& v_cache, const AttentionShape& shape,
                                          int64_t prefix, const uint64_t* masks, int32_t mask_bits) {
  MCPM_CHECK(masks != nullptr && mask_bits >= 1 && mask_bits <= 64);
  const TreeMasks tree{nullptr, masks, mask_bits};
  attend(cuda_context(ctx), out, q, k_cache, v_cache, shape, prefix, &tree);
}

void CudaBackend::attend(CudaContext& c, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                         const Tensor& v_cache, const AttentionShape& shape, int64_t start, const TreeMasks* masks,
                         const KeyBlocks* key_blocks) {
  const int64_t n = q.rows, hd = shape.head_dim, heads = shape.num_heads, kv_heads = shape.num_kv_heads;
  MCPM_CHECK(hd > 0 && hd % 2 == 0 && hd <= 1024 && heads > 0 && kv_heads > 0 && heads % kv_heads == 0);
  MCPM_CHECK(q.dtype == DType::F32 && out.dtype == DType::F32);
  MCPM_CHECK(k_cache.dtype == DType::BF16 && v_cache.dtype == DType::BF16);
  MCPM_CHECK(q.cols == heads * hd && out.cols == q.cols && out.rows == n);
  MCPM_CHECK(k_cache.cols == kv_heads * hd && v_cache.cols == k_cache.cols && v_cache.rows == k_cache.rows);
  MCPM_CHECK(start >= 0 && n <= INT_MAX);
  if (n == 0) return;
  const int64_t group = heads / kv_heads;
  int64_t kv_len;
  if (masks && masks->device) {
    MCPM_CHECK(n <= 64);
    kv_len = start + masks->bits;  // the masks are not on the host: the keys their bits may reach
  } else if (masks) {
    MCPM_CHECK(n <= 64 && masks->host != nullptr);
    uint64_t all = 0;
    for (int64_t i = 0; i < n; ++i) all |= masks->host[i];
    int64_t highest = -1;
    for (int j = 0; j < 64; ++j)
      if ((all >> j) & 1u) highest = j;
    kv_len = start + highest + 1;
  } else {
    kv_len = start + n;
  }
  MCPM_CHECK(kv_len <= k_cache.rows);
  // A recorded step reads its start (and tree masks) from the step state and sizes the key splits for
  // its bucket, so the same launch serves every length of the bucket (splits past the keys stay empty).
  const bool recorded = c.graph_mode;
  MCPM_CHECK(key_blocks == nullptr || (masks == nullptr && key_blocks->block_size > 0 && key_blocks->max_blocks > 0));
  if (recorded) {
    MCPM_CHECK(n == c.graph_tokens && c.graph_bucket >= kv_len && c.graph_bucket <= k_cache.rows);
    kv_len = c.graph_bucket;
  }
  if (kv_len == 0) {  // a tree call with no visible key at all
    DeviceGuard guard(device_);
    MCPM_CUDA_CHECK(cudaMemsetAsync(out.data, 0, out.bytes(), c.stream));
    return;
  }

  cuda::AttnArgs a{};
  a.q = q.as<const float>();
  a.out = out.as<float>();
  a.k = k_cache.as<const __nv_bfloat16>();
  a.v = v_cache.as<const __nv_bfloat16>();
  a.q_ld = q.cols;
  a.out_ld = out.cols;
  a.kv_ld = k_cache.cols;
  a.n = static_cast<int>(n);
  a.heads = static_cast<int>(heads);
  a.group = static_cast<int>(group);
  a.hd = static_cast<int>(hd);
  a.start = start;
  a.start_dev = recorded ? (masks ? &c.step->prefix : &c.step->start) : nullptr;
  a.span = masks && masks->device ? masks->bits : static_cast<int>(n);
  a.kv_len = kv_len;
  if (key_blocks) a.blocks = *key_blocks;
  a.scale = 1.0f / std::sqrt(static_cast<float>(hd));

  // Rows per block: queries x heads whose q and accumulators fit 16 KB of shared memory (at most 32).
  const int rows_max = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(32, 2048 / hd)));
  a.hb = static_cast<int>(std::min<int64_t>(group, rows_max));
  a.head_tiles = static_cast<int>((group + a.hb - 1) / a.hb);
  a.qt = key_blocks ? 1 : static_cast<int>(std::min<int64_t>(n, std::max(1, rows_max / a.hb)));
  a.rows = a.qt * a.hb;
  a.kt = static_cast<int>(std::min<int64_t>(cuda::kMaxKeysPerTile, std::max<int64_t>(4, 4096 / hd)));
  const int64_t token_tiles = (n + a.qt - 1) / a.qt;
  const int64_t blocks = token_tiles * a.head_tiles * kv_heads;
  MCPM_CHECK(token_tiles * a.head_tiles <= INT_MAX && kv_heads <= 65535);

  // Split the keys when the blocks alone leave multiprocessors idle (decode), two tiles per split at least.
  const int64_t key_span = key_blocks ? int64_t{key_blocks->max_blocks} * key_blocks->block_size : kv_len;
  const int64_t tiles = (key_span + a.kt - 1) / a.kt;
  int64_t splits = 1;
  if (blocks < 2 * multiprocessors_) splits = std::min<int64_t>((2 * multiprocessors_ + blocks - 1) / blocks, (tiles + 1) / 2);
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, cuda::kMaxSplits));
  const int64_t split_tiles = (tiles + splits - 1) / splits;
  splits = (tiles + split_tiles - 1) / split_tiles;
  a.split_len = split_tiles * a.kt;
  a.splits = static_cast<int>(splits);

  DeviceGuard guard(device_);
  if (masks)
    a.masks = masks->device ? masks->device
              : recorded    ? c.step->masks
                            : static_cast<const uint64_t*>(c.upload(CudaContext::kMasks, masks->host,
                                                                    static_cast<size_t>(n) * sizeof(uint64_t)));
  if (splits > 1)
    a.part = static_cast<float*>(c.scratch(CudaContext::kAttnPartial,
                                           static_cast<size_t>(splits * n * heads * (hd + 2)) * sizeof(float)));
  const size_t smem = static_cast<size_t>(2 * a.rows * hd + 2 * a.rows) * sizeof(float) +
                      static_cast<size_t>(a.kt) * static_cast<size_t>(2 * hd + 2) * sizeof(__nv_bfloat16);
  MCPM_CHECK(smem <= 48 * 1024);
  const dim3 grid(static_cast<unsigned>(token_tiles * a.head_tiles), static_cast<unsigned>(kv_heads),
                  static_cast<unsigned>(splits));
  if (hd <= 64)
    cuda::launch_attention<2>(a, grid, smem, c.stream);
  else if (hd <= 128)
    cuda::launch_attention<4>(a, grid, smem, c.stream);
  else
    cuda::launch_attention<32>(a, grid, smem, c.stream);
  if (splits > 1) {
    MCPM_LAUNCH(static_cast<unsigned>(n * heads), cuda::kThreads, 0, c.stream, cuda::attention_combine_kernel)(
        a.part, a.out, a.out_ld, a.n, a.heads, a.hd, a.splits);
    MCPM_CUDA_LAUNCHED(attention_combine_kernel);
  }
}

}  // namespace mcpm
