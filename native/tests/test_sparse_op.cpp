// The CPU backend's sparse_attention op against the InfLLM v2 reference (engine/infllm) driven
// directly: the op reads the interleaved [capacity, kv_heads*head_dim] cache in place, keeps the
// compressed keys incrementally across calls, runs multi-threaded and must give exactly the
// reference's output for every chunking, also after truncating its state (rewind).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "engine/infllm.h"

namespace mcpm {
namespace {

constexpr int kHeads = 4, kKvHeads = 2, kHeadDim = 16, kTokens = 150;

struct Data {
  std::vector<float> q, k, v;  // q: [tokens, heads*d]; k, v: [tokens, kv_heads*d] (cache layout)
};

Data RandomData(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  Data d;
  d.q.resize(static_cast<size_t>(kTokens * kHeads * kHeadDim));
  d.k.resize(static_cast<size_t>(kTokens * kKvHeads * kHeadDim));
  d.v.resize(d.k.size());
  for (float& x : d.q) x = n(rng);
  for (float& x : d.k) x = n(rng);
  for (float& x : d.v) x = n(rng);
  return d;
}

// Reference: infllm::sparse_attention over the whole sequence with per-head contiguous keys.
std::vector<float> Reference(const infllm::SparseConfig& cfg, const Data& d) {
  std::vector<std::vector<float>> k(kKvHeads), v(kKvHeads);
  std::vector<const float*> kp, vp;
  for (int h = 0; h < kKvHeads; ++h) {
    for (int t = 0; t < kTokens; ++t)
      for (int i = 0; i < kHeadDim; ++i) {
        k[h].push_back(d.k[(t * kKvHeads + h) * kHeadDim + i]);
        v[h].push_back(d.v[(t * kKvHeads + h) * kHeadDim + i]);
      }
    kp.push_back(k[h].data());
    vp.push_back(v[h].data());
  }
  std::vector<infllm::CompressedKeys> ck;
  std::vector<float> out(d.q.size());
  infllm::sparse_attention(cfg, d.q.data(), kTokens, kHeads, kp.data(), vp.data(), kTokens, kKvHeads, kHeadDim, ck,
                           out.data());
  return out;
}

TEST(CpuSparseAttentionOp, MatchesReferenceForEveryChunkingAndAfterTruncation) {
  SparseAttentionParams p;
  p.kernel_size = 8, p.kernel_stride = 4, p.init_blocks = 1, p.block_size = 16, p.window_size = 16, p.topk = 2;
  infllm::SparseConfig cfg;
  cfg.kernel_size = 8, cfg.kernel_stride = 4, cfg.init_blocks = 1, cfg.block_size = 16, cfg.window_size = 16;
  cfg.topk = 2, cfg.dense_len = -1;
  const Data d = RandomData(5);
  const std::vector<float> want = Reference(cfg, d);

  CpuBackend backend;
  const AttentionShape shape{kHeads, kKvHeads, kHeadDim};
  for (int threads : {1, 3}) {
    for (int chunk : {1, 13, 64, kTokens}) {
      SCOPED_TRACE(::testing::Message() << threads << " threads, chunk " << chunk);
      auto ctx = backend.create_context(threads);
      auto state = backend.create_sparse_attention_state(p, shape, kTokens);
      std::vector<float> kc(d.k.size()), vc(d.v.size()), out(d.q.size(), -1.0f);
      const Tensor k_cache{kc.data(), DType::F32, kTokens, kKvHeads * kHeadDim};
      const Tensor v_cache{vc.data(), DType::F32, kTokens, kKvHeads * kHeadDim};
      auto run = [&](int64_t start, int64_t n) {
        const size_t kv_off = static_cast<size_t>(start * kKvHeads * kHeadDim);
        const size_t kv_len = static_cast<size_t>(n * kKvHeads * kHeadDim);
        std::memcpy(kc.data() + kv_off, d.k.data() + kv_off, kv_len * sizeof(float));
        std::memcpy(vc.data() + kv_off, d.v.data() + kv_off, kv_len * sizeof(float));
        const size_t q_off = static_cast<size_t>(start * kHeads * kHeadDim);
        const Tensor q{const_cast<float*>(d.q.data()) + q_off, DType::F32, n, kHeads * kHeadDim};
        const Tensor o{out.data() + q_off, DType::F32, n, kHeads * kHeadDim};
        backend.sparse_attention(*ctx, o, q, k_cache, v_cache, shape, start, *state);
      };
      for (int64_t s = 0; s < kTokens; s += chunk) run(s, std::min<int64_t>(chunk, kTokens - s));
      EXPECT_EQ(std::memcmp(out.data(), want.data(), want.size() * sizeof(float)), 0);

      // Rewind: overwrite the cache past row 70 with garbage, evaluate it, truncate, redo.
      std::vector<float> saved_k = kc;
      for (size_t i = 70 * kKvHeads * kHeadDim; i < kc.size(); ++i) kc[i] = 1e3f;
      backend.sparse_attention(*ctx, Tensor{out.data(), DType::F32, 1, kHeads * kHeadDim},
                               Tensor{const_cast<float*>(d.q.data()), DType::F32, 1, kHeads * kHeadDim}, k_cache,
                               v_cache, shape, kTokens - 1, *state);
      state->truncate(70);
      std::fill(out.begin() + 70 * kHeads * kHeadDim, out.end(), -1.0f);
      for (int64_t s = 70; s < kTokens; s += chunk) run(s, std::min<int64_t>(chunk, kTokens - s));
      EXPECT_EQ(std::memcmp(out.data() + 70 * kHeads * kHeadDim, want.data() + 70 * kHeads * kHeadDim,
                            (want.size() - 70 * kHeads * kHeadDim) * sizeof(float)),
                0);
    }
  }
}

}  // namespace
}  // namespace mcpm
