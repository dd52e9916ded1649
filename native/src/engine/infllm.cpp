// InfLLM v2 block-sparse attention, CPU reference. See infllm.h for the algorithm and layouts.
#include "engine/infllm.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

namespace mcpm {
namespace infllm {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// out[0:d] = softmax_j(scale * q.K[keys[j]]) weighted sum of V[keys[j]], keys in the given order.
// fp32, max-subtracted. `keys` must be non-empty.
void attend(const float* q, const float* K, const float* V, int64_t d, int64_t ld, const std::vector<int64_t>& keys,
            float* out) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  std::vector<float> w(keys.size());
  float m = -kInf;
  for (size_t j = 0; j < keys.size(); ++j) {
    w[j] = scale * dot(q, K + keys[j] * ld, d);
    m = std::max(m, w[j]);
  }
  float sum = 0.0f;
  for (size_t j = 0; j < keys.size(); ++j) {
    w[j] = std::exp(w[j] - m);
    sum += w[j];
  }
  std::fill(out, out + d, 0.0f);
  for (size_t j = 0; j < keys.size(); ++j) {
    const float* vj = V + keys[j] * ld;
    for (int64_t i = 0; i < d; ++i) out[i] += w[j] * vj[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < d; ++i) out[i] *= inv;
}

}  // namespace

void validate(const SparseConfig& cfg) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("InfLLM v2 sparse_config: " + what); };
  if (cfg.kernel_size <= 0 || cfg.kernel_stride <= 0 || cfg.block_size <= 0 || cfg.window_size < 0)
    fail("sizes must be positive");
  if (cfg.kernel_size < cfg.kernel_stride) fail("kernel_size < kernel_stride leaves gaps");
  if (cfg.block_size % cfg.kernel_stride != 0) fail("block_size must be a multiple of kernel_stride");
  if (cfg.window_size % cfg.block_size != 0) fail("window_size must be a multiple of block_size");
  if (cfg.topk < 0 || cfg.init_blocks < 0) fail("topk and init_blocks must be >= 0");
}

int64_t num_kernels(int64_t L, int64_t size, int64_t stride) { return L < size ? 0 : (L - size) / stride + 1; }

int64_t num_visible_kernels(int64_t t, int64_t n, int64_t size, int64_t stride) {
  return std::min(n, num_kernels(t + 1, size, stride));
}

void mean_pool(const float* K, int64_t head_dim, int64_t size, int64_t stride, int64_t c_begin, int64_t c_end,
               float* out, int64_t row_stride) {
  const int64_t ld = row_stride > 0 ? row_stride : head_dim;
  const float inv = 1.0f / static_cast<float>(size);
  for (int64_t c = c_begin; c < c_end; ++c) {
    float* o = out + (c - c_begin) * head_dim;
    std::fill(o, o + head_dim, 0.0f);
    for (int64_t j = 0; j < size; ++j) {
      const float* row = K + (c * stride + j) * ld;
      for (int64_t i = 0; i < head_dim; ++i) o[i] += row[i];
    }
    for (int64_t i = 0; i < head_dim; ++i) o[i] *= inv;
  }
}

CompressedKeys compress_keys(const SparseConfig& cfg, const float* K, int64_t L, int64_t head_dim) {
  CompressedKeys ck;
  ck.head_dim = head_dim;
  ck.n1 = num_kernels(L, cfg.kernel_size, cfg.kernel_stride);
  ck.n2 = num_kernels(L, cfg.kernel_size2(), cfg.kernel_stride2());
  ck.c1.resize(static_cast<size_t>(ck.n1 * head_dim));
  ck.c2.resize(static_cast<size_t>(ck.n2 * head_dim));
  mean_pool(K, head_dim, cfg.kernel_size, cfg.kernel_stride, 0, ck.n1, ck.c1.data());
  mean_pool(K, head_dim, cfg.kernel_size2(), cfg.kernel_stride2(), 0, ck.n2, ck.c2.data());
  return ck;
}

void update_compressed_keys(const SparseConfig& cfg, const float* K, int64_t L, CompressedKeys& ck, int64_t row_stride) {
  const int64_t d = ck.head_dim;
  const int64_t n1 = num_kernels(L, cfg.kernel_size, cfg.kernel_stride);
  const int64_t n2 = num_kernels(L, cfg.kernel_size2(), cfg.kernel_stride2());
  if (n1 < ck.n1 || n2 < ck.n2) throw std::invalid_argument("update_compressed_keys: L shrank; truncate first");
  ck.c1.resize(static_cast<size_t>(n1 * d));
  ck.c2.resize(static_cast<size_t>(n2 * d));
  mean_pool(K, d, cfg.kernel_size, cfg.kernel_stride, ck.n1, n1, ck.c1.data() + ck.n1 * d, row_stride);
  mean_pool(K, d, cfg.kernel_size2(), cfg.kernel_stride2(), ck.n2, n2, ck.c2.data() + ck.n2 * d, row_stride);
  ck.n1 = n1;
  ck.n2 = n2;
}

void truncate_compressed_keys(const SparseConfig& cfg, int64_t L, CompressedKeys& ck) {
  ck.n1 = std::min(ck.n1, num_kernels(L, cfg.kernel_size, cfg.kernel_stride));
  ck.n2 = std::min(ck.n2, num_kernels(L, cfg.kernel_size2(), cfg.kernel_stride2()));
  ck.c1.resize(static_cast<size_t>(ck.n1 * ck.head_dim));
  ck.c2.resize(static_cast<size_t>(ck.n2 * ck.head_dim));
}

void stage1_kernel_scores(const SparseConfig& cfg, const float* q_group, int G, const CompressedKeys& ck, int64_t t,
                          float* S) {
  const int64_t d = ck.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t vis1 = num_visible_kernels(t, ck.n1, cfg.kernel_size, cfg.kernel_stride);
  const int64_t vis2 = num_visible_kernels(t, ck.n2, cfg.kernel_size2(), cfg.kernel_stride2());
  std::fill(S, S + ck.n1, 0.0f);
  // The normalising keys: level 2 (compressed LSE) or the visible level-1 keys themselves.
  const float* norm_keys = cfg.use_compress_lse ? ck.c2.data() : ck.c1.data();
  const int64_t n_norm = cfg.use_compress_lse ? vis2 : vis1;
  if (n_norm == 0) return;  // HF: NaN -> 0. Only queries inside the forced blocks get here.
  std::vector<float> logits(static_cast<size_t>(std::max(n_norm, vis1)));
  for (int g = 0; g < G; ++g) {
    const float* qg = q_group + static_cast<int64_t>(g) * d;
    // lse_g = log sum_c exp(scale * q_g . norm_keys[c]), max-subtracted.
    float m = -kInf;
    for (int64_t c = 0; c < n_norm; ++c) {
      logits[c] = scale * dot(qg, norm_keys + c * d, d);
      m = std::max(m, logits[c]);
    }
    float sum = 0.0f;
    for (int64_t c = 0; c < n_norm; ++c) sum += std::exp(logits[c] - m);
    const float lse = m + std::log(sum);
    for (int64_t c = 0; c < vis1; ++c) S[c] += std::exp(scale * dot(qg, ck.c1.data() + c * d, d) - lse);
  }
}

void pool_to_blocks(const SparseConfig& cfg, const float* S, int64_t n1, int64_t n_blocks, float* B) {
  const int64_t r = cfg.pool_ratio();
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t lo = std::max<int64_t>(0, r * b - 1);
    const int64_t hi = std::min<int64_t>(n1 - 1, r * b + r - 1);
    float m = -kInf;
    for (int64_t c = lo; c <= hi; ++c) m = std::max(m, S[c]);
    B[b] = m;
  }
}

void force_blocks(const SparseConfig& cfg, int64_t t, int64_t n_blocks, float* B) {
  const int64_t qb = t / cfg.block_size;
  for (int64_t b = 0; b < std::min<int64_t>(cfg.init_blocks, n_blocks); ++b) B[b] = kInf;
  for (int64_t b = std::max<int64_t>(0, qb - cfg.local_blocks()); b <= std::min(qb, n_blocks - 1); ++b) B[b] = kInf;
}

std::vector<int32_t> select_blocks(const SparseConfig& cfg, const float* B, int64_t n_blocks, int64_t t) {
  const int64_t k = std::min<int64_t>(cfg.topk_total(), n_blocks);
  std::vector<int32_t> order(static_cast<size_t>(n_blocks));
  std::iota(order.begin(), order.end(), 0);
  // Highest score first; equal scores (including +inf forced blocks) by lower index.
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [B](int32_t a, int32_t b) {
    return B[a] > B[b] || (B[a] == B[b] && a < b);
  });
  order.resize(static_cast<size_t>(k));
  std::sort(order.begin(), order.end());
  const int64_t qb = t / cfg.block_size;
  while (!order.empty() && order.back() > qb) order.pop_back();  // future blocks (HF sets them to -1)
  return order;
}

std::vector<int32_t> select_for_query(const SparseConfig& cfg, const float* q_group, int G, const CompressedKeys& ck,
                                      int64_t t, int64_t n_blocks) {
  std::vector<float> S(static_cast<size_t>(ck.n1));
  std::vector<float> B(static_cast<size_t>(n_blocks));
  stage1_kernel_scores(cfg, q_group, G, ck, t, S.data());
  pool_to_blocks(cfg, S.data(), ck.n1, n_blocks, B.data());
  force_blocks(cfg, t, n_blocks, B.data());
  return select_blocks(cfg, B.data(), n_blocks, t);
}

void block_sparse_attention(const float* q, const float* K, const float* V, int64_t head_dim, int64_t t,
                            const int32_t* blocks, int64_t n_sel, int block_size, float* out, int64_t row_stride) {
  std::vector<int64_t> keys;
  for (int64_t s = 0; s < n_sel; ++s) {
    const int64_t begin = static_cast<int64_t>(blocks[s]) * block_size;
    const int64_t end = std::min<int64_t>(begin + block_size, t + 1);
    for (int64_t j = begin; j < end; ++j) keys.push_back(j);
  }
  if (keys.empty()) {  // cannot happen with forced blocks; defined as 0 rather than NaN
    std::fill(out, out + head_dim, 0.0f);
    return;
  }
  attend(q, K, V, head_dim, row_stride > 0 ? row_stride : head_dim, keys, out);
}

void dense_causal_attention(const float* q, const float* K, const float* V, int64_t head_dim, int64_t t,
                            float* out) {
  std::vector<int64_t> keys(static_cast<size_t>(t + 1));
  std::iota(keys.begin(), keys.end(), int64_t{0});
  attend(q, K, V, head_dim, head_dim, keys, out);
}

void sparse_attention(const SparseConfig& cfg, const float* q, int64_t T_q, int n_heads, const float* const* k,
                      const float* const* v, int64_t L_total, int n_kv_heads, int64_t head_dim,
                      std::vector<CompressedKeys>& compressed, float* out,
                      std::vector<std::vector<int32_t>>* selection) {
  validate(cfg);
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0) throw std::invalid_argument("n_heads % n_kv_heads != 0");
  if (T_q > L_total) throw std::invalid_argument("T_q > L_total");
  const int G = n_heads / n_kv_heads;
  const int64_t history = L_total - T_q;
  const int64_t d = head_dim;

  if (cfg.dense_len >= 0 && L_total < cfg.dense_len) {
    if (selection) selection->clear();
    for (int64_t i = 0; i < T_q; ++i)
      for (int g = 0; g < n_heads; ++g)
        dense_causal_attention(q + (i * n_heads + g) * d, k[g / G], v[g / G], d, history + i,
                               out + (i * n_heads + g) * d);
    return;
  }

  // Compression state covers all L_total keys (first sparse call: all of them in one pass).
  compressed.resize(static_cast<size_t>(n_kv_heads));
  for (int h = 0; h < n_kv_heads; ++h) {
    if (compressed[h].head_dim == 0) compressed[h].head_dim = d;
    update_compressed_keys(cfg, k[h], L_total, compressed[h]);
  }
  if (selection) selection->assign(static_cast<size_t>(n_kv_heads * T_q), {});

  const int64_t n_blocks = (L_total + cfg.block_size - 1) / cfg.block_size;
  for (int64_t i = 0; i < T_q; ++i) {
    const int64_t t = history + i;
    for (int h = 0; h < n_kv_heads; ++h) {
      // The G query heads of group h are contiguous in the [T_q, n_heads, d] layout.
      const float* q_group = q + (i * n_heads + static_cast<int64_t>(h) * G) * d;
      const std::vector<int32_t> sel = select_for_query(cfg, q_group, G, compressed[h], t, n_blocks);
      for (int g = 0; g < G; ++g) {
        const int64_t head = static_cast<int64_t>(h) * G + g;
        block_sparse_attention(q + (i * n_heads + head) * d, k[h], v[h], d, t, sel.data(),
                               static_cast<int64_t>(sel.size()), cfg.block_size, out + (i * n_heads + head) * d);
      }
      if (selection) (*selection)[static_cast<size_t>(h * T_q + i)] = sel;
    }
  }
}

}  // namespace infllm
}  // namespace mcpm
