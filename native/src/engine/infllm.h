// InfLLM v2 trainable block-sparse attention (MiniCPM4), CPU reference in fp32.
//
// Semantics follow the Hugging Face / training code (infllmv2_cuda_impl), as specified in
// shared/reference/algorithms.md §1. All windows are in tokens (config) or 64-token blocks, never in
// CPM.cu's 32-token kernel tiles. In short, for one query at absolute position t and one KV head h:
//
//   1. Compression (per KV head, parameter-free mean pooling of the RoPE'd keys):
//        C1[c] = mean(K[s*c .. s*c+k-1]),      k = kernel_size,   s = kernel_stride   (32/16)
//        C2[c] = mean(K[4s*c .. 4s*c+4k-1])                                          (128/64)
//      Only complete kernels exist: n(L) = L < size ? 0 : (L - size) / stride + 1.
//   2. Stage 1: for each Q head g of the group, lse_g = logsumexp_{c in vis2(t)} scale*q_g.C2[c];
//      S[c] = sum_g exp(scale*q_g.C1[c] - lse_g) for c in vis1(t), else 0. A kernel is visible iff its
//      last token is <= t.
//   3. Block scores: B[b] = max(S[c], c in [r*b-1, r*b+r-1] ∩ [0, n1)), r = block_size/kernel_stride
//      (a 1-D max-pool, kernel r+1, stride r, padding 1; with the defaults c in [4b-1, 4b+3]).
//      Forced to +inf: b < init_blocks and qb-local_blocks <= b <= qb, qb = t / block_size.
//   4. Top-k: k = min(topk + local_blocks, n_blocks); the k best blocks (ties to the lower index),
//      sorted ascending, blocks > qb dropped.
//   5. Stage 2: every Q head of the group attends (softmax, scale 1/sqrt(d)) to the keys j <= t whose
//      block j / block_size is selected.
//   Below dense_len total tokens the whole thing is plain dense causal attention.
//
// Layouts (all row-major fp32): keys and values of one KV head are [tokens, head_dim]; queries and
// outputs of a chunk are [T_q, n_heads, head_dim]; Q head g belongs to KV head g / (n_heads / n_kv_heads)
// (Hugging Face repeat_kv order).
#pragma once

#include <cstdint>
#include <vector>

namespace mcpm {
namespace infllm {

struct SparseConfig {
  int kernel_size = 32;    // level-1 kernel length (tokens)
  int kernel_stride = 16;  // level-1 kernel stride (tokens)
  int init_blocks = 1;     // leading blocks always selected (attention sink)
  int block_size = 64;     // stage-2 block granularity (tokens)
  int window_size = 2048;  // local window (tokens); local_blocks = window_size / block_size
  int topk = 64;           // top-k blocks on top of the local blocks (HF: topk_total = topk + local)
  int dense_len = 8192;    // total KV length below which attention is dense; -1 = always sparse
  bool use_nope = false;   // ignored here: the caller passes whichever keys/queries are scored
  // true (HF): the stage-1 normaliser comes from the level-2 keys (compressed LSE).
  // false: exact softmax over the visible level-1 keys.
  bool use_compress_lse = true;

  // The level-2 kernel is hard-wired to 4x the level-1 one (128/64 with the defaults).
  int kernel_size2() const { return 4 * kernel_size; }
  int kernel_stride2() const { return 4 * kernel_stride; }
  int local_blocks() const { return window_size / block_size; }
  int topk_total() const { return topk + local_blocks(); }
  // Level-1 kernels per block in the max-pool (pool kernel pool_ratio()+1, stride pool_ratio()).
  int pool_ratio() const { return block_size / kernel_stride; }
};

// Throws std::invalid_argument unless all sizes are positive, block_size is a multiple of
// kernel_stride, kernel_size >= kernel_stride, window_size is a multiple of block_size, topk >= 0,
// init_blocks >= 0.
void validate(const SparseConfig& cfg);

// Number of complete kernels of length `size` and stride `stride` in a sequence of L tokens:
// L < size ? 0 : (L - size) / stride + 1.
int64_t num_kernels(int64_t L, int64_t size, int64_t stride);

// Number of kernels visible to the query at absolute position t (those whose last token is <= t),
// clipped to the n that exist: min(n, num_kernels(t + 1, size, stride)).
int64_t num_visible_kernels(int64_t t, int64_t n, int64_t size, int64_t stride);

// out[c, :] = (1/size) * sum_{j<size} K[c*stride + j, :] for c in [c_begin, c_end).
// K is [tokens, head_dim] and must hold at least (c_end-1)*stride + size rows; out is
// [c_end - c_begin, head_dim]. Accumulates in fp32 in token order, then multiplies by 1/size.
// row_stride: floats between consecutive rows of K (0 = head_dim, i.e. dense rows); a KV cache of
// [tokens, kv_heads*head_dim] is read in place with K = cache + h*head_dim, row_stride = kv_heads*head_dim.
void mean_pool(const float* K, int64_t head_dim, int64_t size, int64_t stride, int64_t c_begin, int64_t c_end,
               float* out, int64_t row_stride = 0);

// The compressed keys of one KV head.
struct CompressedKeys {
  int64_t head_dim = 0;
  int64_t n1 = 0, n2 = 0;  // complete level-1 / level-2 kernels
  std::vector<float> c1;   // [n1, head_dim]
  std::vector<float> c2;   // [n2, head_dim]
};

// Batch: compress all L rows of K ([L, head_dim]) from scratch.
CompressedKeys compress_keys(const SparseConfig& cfg, const float* K, int64_t L, int64_t head_dim);

// Incremental: K now holds L rows (the rows already compressed must be unchanged); appends only the
// kernels that became complete since the last call. Result == compress_keys(cfg, K, L, head_dim).
// row_stride as in mean_pool.
void update_compressed_keys(const SparseConfig& cfg, const float* K, int64_t L, CompressedKeys& ck,
                            int64_t row_stride = 0);

// Drops the kernels that are not complete within the first L tokens (for a rolled-back KV cache).
void truncate_compressed_keys(const SparseConfig& cfg, int64_t L, CompressedKeys& ck);

// Stage 1 for one query token and one KV group. q_group is [G, head_dim]: the G query heads of the
// group at absolute position t. Writes S[0 .. ck.n1): S[c] = sum_g exp(scale*q_g.C1[c] - lse_g) for
// visible c, 0 for c not visible to t. When no normalising kernel is visible (t shorter than one
// level-2 kernel) S is all 0 (HF maps the kernel's NaN to 0; such queries only use forced blocks).
void stage1_kernel_scores(const SparseConfig& cfg, const float* q_group, int G, const CompressedKeys& ck, int64_t t,
                          float* S);

// Pure max-pool of kernel scores to blocks: B[b] = max_{c in [r*b-1, r*b+r-1] ∩ [0, n1)} S[c]
// (-inf if that range is empty) for b in [0, n_blocks), r = cfg.pool_ratio().
void pool_to_blocks(const SparseConfig& cfg, const float* S, int64_t n1, int64_t n_blocks, float* B);

// Sets B[b] = +inf for the forced blocks of the query at absolute position t: b < init_blocks and
// qb - local_blocks <= b <= qb (qb = t / block_size), clipped to [0, n_blocks).
void force_blocks(const SparseConfig& cfg, int64_t t, int64_t n_blocks, float* B);

// HF top-k: k = min(topk_total, n_blocks) highest B (ties to the lower block index), returned as
// ascending block indices with every block > t / block_size dropped.
std::vector<int32_t> select_blocks(const SparseConfig& cfg, const float* B, int64_t n_blocks, int64_t t);

// The whole selection for one query token and one KV group (stage 1, pooling, forcing, top-k).
// n_blocks = ceil(L_total / block_size) for the chunk the query belongs to; requires ck to cover
// L_total tokens.
std::vector<int32_t> select_for_query(const SparseConfig& cfg, const float* q_group, int G, const CompressedKeys& ck,
                                      int64_t t, int64_t n_blocks);

// Stage 2 for one query head at absolute position t: out[0:d] = sum_j softmax_j(scale*q.K[j]) V[j]
// over the keys j <= t whose block j / block_size is in `blocks` (ascending, unique); keys are taken
// in ascending order. K and V are [tokens, head_dim] with > t rows. scale = 1/sqrt(head_dim).
// row_stride as in mean_pool (the same for K and V).
void block_sparse_attention(const float* q, const float* K, const float* V, int64_t head_dim, int64_t t,
                            const int32_t* blocks, int64_t n_sel, int block_size, float* out,
                            int64_t row_stride = 0);

// Dense causal attention for one query head at absolute position t (all keys 0..t), same numerics.
void dense_causal_attention(const float* q, const float* K, const float* V, int64_t head_dim, int64_t t,
                            float* out);

// A chunk of T_q queries at absolute positions history .. history+T_q-1 (history = L_total - T_q).
//   q:   [T_q, n_heads, head_dim]; out: same.
//   k, v: n_kv_heads pointers, each [L_total, head_dim] (history and the chunk's own keys).
//   compressed: per KV head compression state, resized to n_kv_heads and brought up to L_total
//     incrementally on the sparse path (left untouched on the dense path).
//   selection (optional): on the sparse path, resized to n_kv_heads*T_q with entry h*T_q + i the
//     ascending block set of KV head h for query i; cleared on the dense path.
// Dense causal attention when dense_len >= 0 and L_total < dense_len, sparse otherwise.
void sparse_attention(const SparseConfig& cfg, const float* q, int64_t T_q, int n_heads, const float* const* k,
                      const float* const* v, int64_t L_total, int n_kv_heads, int64_t head_dim,
                      std::vector<CompressedKeys>& compressed, float* out,
                      std::vector<std::vector<int32_t>>* selection = nullptr);

}  // namespace infllm
}  // namespace mcpm
