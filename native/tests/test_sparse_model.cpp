// Whole-model tests of InfLLM v2 sparse attention through the C ABI: a tiny model whose sparse
// config uses reduced sizes (kernel 8/4, block 16, window 32, dense_len 48) over ~200 tokens.
//   - top-k covering every block gives the dense model's logits;
//   - a small top-k changes the logits, and prefill-all, chunked prefill and token-by-token decode
//     agree (the compressed keys are incremental), as do rewind/reset followed by re-evaluation;
//   - below dense_len the logits are bit-identical to the dense model.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "test_util.h"

namespace {

using namespace mcpm_test;

// Paths that differ only in fp32 summation order (PathTolerance: 1e-4 on the CPU, 1e-2 on CUDA, where
// prefill and decode round linear inputs to bf16 through different kernels).
double Tol() { return PathTolerance(PrimaryBackend()); }

struct SparseSizes {
  int32_t topk = 4;
  int32_t dense_len = 48;
};

class SparseModelTest : public ::testing::Test {
 protected:
  static TinyConfig Config() {
    TinyConfig c;
    c.vocab = 300, c.hidden = 128, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.head_dim = 32;
    c.intermediate = 192, c.max_position_embeddings = 512, c.seed = 777;
    return c;
  }
  void SetUp() override {
    tm_ = std::make_unique<TinyModel>(Config());
    V_ = static_cast<size_t>(tm_->config().vocab);
    tokens_ = tm_->RandomTokens(kTokens, 11);
  }

  // Loads the tiny model with sparse attention (enabled) or the plain dense config.
  ModelPtr Load(bool enabled, SparseSizes sz = {}) const {
    mcpm_model_config c = tm_->ApiConfig();
    c.sparse_enabled = enabled ? 1 : 0;
    c.sparse_kernel_size = 8, c.sparse_kernel_stride = 4, c.sparse_init_blocks = 1, c.sparse_block_size = 16;
    c.sparse_window_size = 32, c.sparse_topk = sz.topk, c.sparse_dense_len = sz.dense_len, c.sparse_use_nope = 0;
    mcpm_model_options o{};
    o.struct_size = sizeof o;
    mcpm_model_options_default(&o);
    o.backend = PrimaryBackend();
    mcpm_model* m = nullptr;
    EXPECT_MCPM_OK(mcpm_model_create(&c, &o, &m));
    if (!m) return nullptr;
    ModelPtr model(m);
    EXPECT_MCPM_OK(tm_->SetAll(m));
    EXPECT_MCPM_OK(mcpm_model_finalize(m));
    return model;
  }

  // Logits of every token of `tokens` evaluated with prefill chunks of `chunk` tokens.
  std::vector<float> Prefill(mcpm_model* m, const std::vector<int32_t>& tokens, int32_t chunk) const {
    SessionPtr s = MakeSession(m, 256, chunk);
    std::vector<float> out(V_ * tokens.size());
    if (!s) return out;
    EXPECT_MCPM_OK(mcpm_session_prefill(s.get(), tokens.data(), static_cast<int32_t>(tokens.size()),
                                        MCPM_LOGITS_ALL, out.data(), out.size()));
    return out;
  }

  // Prefill of the first `head` tokens, then one decode per remaining token.
  std::vector<float> Decode(mcpm_model* m, const std::vector<int32_t>& tokens, int32_t head) const {
    SessionPtr s = MakeSession(m, 256, 64);
    std::vector<float> out(V_ * tokens.size());
    if (!s) return out;
    EXPECT_MCPM_OK(mcpm_session_prefill(s.get(), tokens.data(), head, MCPM_LOGITS_ALL, out.data(), out.size()));
    for (size_t t = static_cast<size_t>(head); t < tokens.size(); ++t)
      EXPECT_MCPM_OK(mcpm_session_decode(s.get(), tokens[t], out.data() + t * V_, V_));
    return out;
  }

  static constexpr int kTokens = 200;
  std::unique_ptr<TinyModel> tm_;
  size_t V_ = 0;
  std::vector<int32_t> tokens_;
};

TEST_F(SparseModelTest, TopkCoveringEveryBlockEqualsDense) {
  // 200 tokens = 13 blocks of 16; topk 16 + 2 local blocks selects all of them.
  ModelPtr dense = Load(false), sparse = Load(true, {16, 48});
  ASSERT_TRUE(dense && sparse);
  const std::vector<float> want = Prefill(dense.get(), tokens_, 256);
  const std::vector<float> got = Prefill(sparse.get(), tokens_, 256);
  EXPECT_LE(MaxAbsDiff(got.data(), want.data(), want.size()), Tol());
  const std::vector<float> got_decode = Decode(sparse.get(), tokens_, 20);
  EXPECT_LE(MaxAbsDiff(got_decode.data(), want.data(), want.size()), Tol());
  // Always sparse (dense_len -1) too.
  ModelPtr always = Load(true, {16, -1});
  ASSERT_TRUE(always);
  const std::vector<float> got_always = Prefill(always.get(), tokens_, 256);
  EXPECT_LE(MaxAbsDiff(got_always.data(), want.data(), want.size()), Tol());
}

TEST_F(SparseModelTest, SmallTopkChangesLogitsAndPrefillChunkedDecodeAgree) {
  ModelPtr dense = Load(false), sparse = Load(true, {4, 48});
  ASSERT_TRUE(dense && sparse);
  const std::vector<float> dense_logits = Prefill(dense.get(), tokens_, 256);
  const std::vector<float> all = Prefill(sparse.get(), tokens_, 256);
  // topk 4 + 2 local blocks = 6 selected blocks: up to 96 tokens nothing is dropped (prefill rows
  // from dense_len on are sparse but equal to dense); later the selection really prunes.
  const size_t early = 64 * V_;
  EXPECT_LE(MaxAbsDiff(all.data(), dense_logits.data(), early), Tol());
  EXPECT_GT(MaxAbsDiff(all.data() + 120 * V_, dense_logits.data() + 120 * V_, (kTokens - 120) * V_), 1e-2)
      << "the sparse path was not taken";

  const std::vector<int32_t> chunks = OnEmulatedCuda() ? std::vector<int32_t>{7, 50} : std::vector<int32_t>{1, 7, 16, 50};
  for (int32_t chunk : chunks) {  // emulated CUDA: two chunk sizes
    const std::vector<float> chunked = Prefill(sparse.get(), tokens_, chunk);
    EXPECT_LE(MaxAbsDiff(chunked.data(), all.data(), all.size()), Tol()) << "chunk " << chunk;
  }
  for (int32_t head : {1, 47, 48, 100}) {
    const std::vector<float> decoded = Decode(sparse.get(), tokens_, head);
    EXPECT_LE(MaxAbsDiff(decoded.data(), all.data(), all.size()), Tol()) << "prefill " << head << " then decode";
  }
}

TEST_F(SparseModelTest, RewindAndResetReproduceSparseLogits) {
  ModelPtr sparse = Load(true, {4, 48});
  ASSERT_TRUE(sparse);
  const std::vector<float> all = Prefill(sparse.get(), tokens_, 256);
  SessionPtr s = MakeSession(sparse.get(), 256, 32);
  ASSERT_TRUE(s);
  std::vector<float> scratch(V_ * kTokens), row(V_);
  ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), tokens_.data(), kTokens, MCPM_LOGITS_NONE, nullptr, 0));
  // Rewind to a point past dense_len, inside a compression kernel, and below dense_len (the dense
  // calls in between must not see stale compressed keys); each time re-decode to the end.
  for (int32_t to : {150, 137, 30, 0}) {
    SCOPED_TRACE(to);
    ASSERT_MCPM_OK(mcpm_session_rewind(s.get(), to));
    if (to == 30) {
      // A different continuation first, then rewind again and redo the real one.
      const std::vector<int32_t> other = tm_->RandomTokens(100, 99);
      ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), other.data(), 100, MCPM_LOGITS_NONE, nullptr, 0));
      ASSERT_MCPM_OK(mcpm_session_rewind(s.get(), to));
    }
    for (int32_t t = to; t < kTokens; ++t) {
      ASSERT_MCPM_OK(mcpm_session_decode(s.get(), tokens_[static_cast<size_t>(t)], row.data(), V_));
      ASSERT_LE(MaxAbsDiff(row.data(), all.data() + static_cast<size_t>(t) * V_, V_), Tol()) << "position " << t;
    }
  }
  ASSERT_MCPM_OK(mcpm_session_reset(s.get()));
  ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), tokens_.data(), kTokens, MCPM_LOGITS_ALL, scratch.data(),
                                      scratch.size()));
  EXPECT_LE(MaxAbsDiff(scratch.data(), all.data(), all.size()), Tol());
}

TEST_F(SparseModelTest, BelowDenseLenIsBitIdenticalToDense) {
  ModelPtr dense = Load(false), sparse = Load(true, {4, 48}), late = Load(true, {2, 1000});
  ASSERT_TRUE(dense && sparse && late);
  // 47 tokens stay below dense_len 48 in every call.
  const std::vector<int32_t> head(tokens_.begin(), tokens_.begin() + 47);
  for (int32_t chunk : {256, 5}) {
    const std::vector<float> want = Prefill(dense.get(), head, chunk);
    const std::vector<float> got = Prefill(sparse.get(), head, chunk);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0) << "chunk " << chunk;
  }
  // A dense_len past the whole sequence: identical over all 200 tokens, prefill and decode.
  const std::vector<float> want = Prefill(dense.get(), tokens_, 256);
  const std::vector<float> got = Prefill(late.get(), tokens_, 256);
  EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0);
  const std::vector<float> want_dec = Decode(dense.get(), tokens_, 100);
  const std::vector<float> got_dec = Decode(late.get(), tokens_, 100);
  EXPECT_EQ(std::memcmp(got_dec.data(), want_dec.data(), want_dec.size() * sizeof(float)), 0);
}

}  // namespace
