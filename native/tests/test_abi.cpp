// The C ABI contract: every function rejects NULL / invalid arguments with a non-OK status and a
// message (never crashing), failures leave out-parameters and objects untouched, defaults match
// the header, library information is sane and the last-error message is per thread.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "minicpm4.h"
#include "test_util.h"

namespace {

using namespace mcpm_test;

// Each failing call runs on a fresh thread, whose last-error message starts empty, so a non-empty
// message is known to come from that very call.
#define EXPECT_FAILS_WITH(code, call)                                                                 \
  do {                                                                                                \
    const auto r_ = ::mcpm_test::CallOnFreshThread([&]() -> mcpm_status { return (call); });          \
    EXPECT_EQ(r_.first, (code)) << #call << " -> " << r_.first << " (" << mcpm_status_string(r_.first) \
                                << "): " << r_.second;                                                \
    EXPECT_FALSE(r_.second.empty()) << #call << " failed without a message";                          \
  } while (0)

// Like EXPECT_FAILS_WITH and the message must contain `needle` (e.g. the offending field).
#define EXPECT_FAILS_NAMING(code, needle, call)                                                       \
  do {                                                                                                \
    const auto r_ = ::mcpm_test::CallOnFreshThread([&]() -> mcpm_status { return (call); });          \
    EXPECT_EQ(r_.first, (code)) << #call << " -> " << r_.first << ": " << r_.second;                  \
    EXPECT_NE(r_.second.find(needle), std::string::npos)                                              \
        << #call << ": message \"" << r_.second << "\" does not mention " << (needle);               \
  } while (0)

constexpr mcpm_status kInvalid = MCPM_ERR_INVALID_ARGUMENT;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// Sentinel handle values written into out-pointers to check they stay untouched; never dereferenced.
mcpm_model* const kModelSentinel = reinterpret_cast<mcpm_model*>(uintptr_t{0x5EED});
mcpm_session* const kSessionSentinel = reinterpret_cast<mcpm_session*>(uintptr_t{0x5EED});

TinyConfig SmallConfig() {
  TinyConfig c;
  c.vocab = 300, c.hidden = 64, c.heads = 4, c.kv_heads = 2, c.head_dim = 16, c.intermediate = 128;
  c.max_position_embeddings = 128, c.dtype = MCPM_DTYPE_F32, c.seed = 3;
  return c;
}

// ---- library information --------------------------------------------------------------------------

TEST(AbiInfo, VersionAndBuildInfo) {
  EXPECT_EQ(mcpm_abi_version(), static_cast<uint32_t>(MCPM_ABI_VERSION));
  mcpm_build_info info;
  std::memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  ASSERT_MCPM_OK(mcpm_get_build_info(&info));
  EXPECT_EQ(info.abi_version, static_cast<uint32_t>(MCPM_ABI_VERSION));
  ASSERT_NE(info.version, nullptr);
  EXPECT_GT(std::strlen(info.version), 0u);
  ASSERT_NE(info.cuda_archs, nullptr);
  ASSERT_NE(info.cpu_features, nullptr);
  EXPECT_GT(std::strlen(info.cpu_features), 0u);
  ASSERT_NE(info.compiler, nullptr);
  EXPECT_GT(std::strlen(info.compiler), 0u);
  EXPECT_TRUE(info.backends & MCPM_BACKEND_FLAG_CPU);
  EXPECT_EQ(info.backends & ~(MCPM_BACKEND_FLAG_CPU | MCPM_BACKEND_FLAG_CUDA), 0u);
  if (info.backends & MCPM_BACKEND_FLAG_CUDA) {
    EXPECT_GT(info.cuda_version, 0);
    EXPECT_GT(std::strlen(info.cuda_archs), 0u);
  } else {
    EXPECT_EQ(info.cuda_version, 0);
    EXPECT_STREQ(info.cuda_archs, "");
  }

  EXPECT_FAILS_WITH(kInvalid, mcpm_get_build_info(nullptr));
  for (uint32_t bad : {0u, static_cast<uint32_t>(sizeof(mcpm_build_info) + 100)}) {
    mcpm_build_info b;
    std::memset(&b, 0, sizeof b);
    b.struct_size = bad;
    b.abi_version = 4242;
    EXPECT_FAILS_WITH(kInvalid, mcpm_get_build_info(&b));
    EXPECT_EQ(b.abi_version, 4242u) << "failed call wrote to *info";
  }
}

// Device listing: a build without CUDA (or a machine without a driver or device) reports "CUDA
// unavailable" as BACKEND_UNAVAILABLE; with devices, each one's facts are sane.
TEST(AbiInfo, CudaDeviceListing) {
  mcpm_build_info build{};
  build.struct_size = sizeof build;
  ASSERT_MCPM_OK(mcpm_get_build_info(&build));
  int32_t count = -7;
  EXPECT_FAILS_WITH(MCPM_ERR_INVALID_ARGUMENT, mcpm_cuda_device_count(nullptr));
  mcpm_cuda_device_info info;
  std::memset(&info, 0, sizeof info);
  info.struct_size = 0;
  EXPECT_FAILS_WITH(MCPM_ERR_INVALID_ARGUMENT, mcpm_cuda_device_get_info(0, &info));
  EXPECT_FAILS_WITH(MCPM_ERR_INVALID_ARGUMENT, mcpm_cuda_device_get_info(0, nullptr));
  info.struct_size = sizeof info;
  const auto listed = CallOnFreshThread([&]() -> mcpm_status { return mcpm_cuda_device_count(&count); });
  if (!(build.backends & MCPM_BACKEND_FLAG_CUDA)) {
    EXPECT_EQ(listed.first, MCPM_ERR_BACKEND_UNAVAILABLE);
    EXPECT_NE(listed.second.find("not compiled"), std::string::npos) << listed.second;
  }
  const char* require = std::getenv("MCPM_REQUIRE_CUDA");
  if (require != nullptr && std::string(require) == "1") {
    ASSERT_EQ(listed.first, MCPM_OK) << "MCPM_REQUIRE_CUDA=1 but no CUDA device is listed: " << listed.second;
  }
  if (listed.first != MCPM_OK) {
    EXPECT_EQ(listed.first, MCPM_ERR_BACKEND_UNAVAILABLE) << listed.second;
    EXPECT_EQ(listed.second.rfind("CUDA unavailable: ", 0), 0u) << listed.second;
    EXPECT_EQ(count, -7);
    EXPECT_FAILS_NAMING(MCPM_ERR_BACKEND_UNAVAILABLE, "CUDA unavailable", mcpm_cuda_device_get_info(0, &info));
    return;
  }
  ASSERT_GE(count, 1);
  for (int32_t i = 0; i < count; ++i) {
    ASSERT_MCPM_OK(mcpm_cuda_device_get_info(i, &info));
    EXPECT_EQ(info.index, i);
    EXPECT_GT(std::strlen(info.name), 0u);
    EXPECT_GE(info.compute_capability, 30);
    EXPECT_GT(info.multiprocessor_count, 0);
    EXPECT_GT(info.total_memory_bytes, 0u);
    EXPECT_LE(info.free_memory_bytes, info.total_memory_bytes);
    EXPECT_EQ(info.usable != 0, info.problem[0] == '\0') << info.problem;
    if (info.compute_capability < 80) {
      EXPECT_EQ(info.usable, 0);
    }
  }
  EXPECT_FAILS_NAMING(MCPM_ERR_INVALID_ARGUMENT, "out of range", mcpm_cuda_device_get_info(count, &info));
  EXPECT_FAILS_NAMING(MCPM_ERR_INVALID_ARGUMENT, "out of range", mcpm_cuda_device_get_info(-1, &info));
}

TEST(AbiInfo, StatusStrings) {
  std::set<std::string> names;
  for (mcpm_status s = MCPM_OK; s <= MCPM_ERR_NONFINITE; ++s) {
    const char* n = mcpm_status_string(s);
    ASSERT_NE(n, nullptr) << s;
    EXPECT_GT(std::strlen(n), 0u) << s;
    names.insert(n);
  }
  EXPECT_EQ(names.size(), 10u) << "each status has its own name";
  for (mcpm_status s : {-1, 10, 99, std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min()}) {
    const char* n = mcpm_status_string(s);
    ASSERT_NE(n, nullptr) << s;
  }
}

TEST(AbiInfo, LastErrorIsPerThreadAndNotClearedBySuccess) {
  // A new thread starts with "".
  const auto fresh = CallOnFreshThread([] { return mcpm_abi_version() == MCPM_ABI_VERSION ? MCPM_OK : -1; });
  EXPECT_EQ(fresh.second, "");

  std::mutex mu;
  std::condition_variable cv;
  int phase = 0;
  std::string a_first, a_after, b_msg;
  std::thread ta([&] {
    mcpm_model_config c{};
    c.struct_size = 0;  // fails: unknown struct_size
    const mcpm_status s1 = mcpm_model_config_default(&c);
    a_first = s1 != MCPM_OK ? mcpm_last_error() : "<call did not fail>";
    {
      std::lock_guard<std::mutex> l(mu);
      phase = 1;
    }
    cv.notify_all();
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return phase == 2; });
    // A successful call on this thread does not clear the message either.
    mcpm_model_options o{};
    o.struct_size = sizeof o;
    const mcpm_status s2 = mcpm_model_options_default(&o);
    a_after = s2 == MCPM_OK ? mcpm_last_error() : "<success call failed>";
  });
  std::thread tb([&] {
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return phase == 1; });
    }
    mcpm_session* s = nullptr;
    const mcpm_status st = mcpm_session_create(nullptr, nullptr, &s);  // a different failure
    b_msg = st != MCPM_OK ? mcpm_last_error() : "<call did not fail>";
    {
      std::lock_guard<std::mutex> l(mu);
      phase = 2;
    }
    cv.notify_all();
  });
  ta.join();
  tb.join();
  EXPECT_FALSE(a_first.empty());
  EXPECT_FALSE(b_msg.empty());
  EXPECT_NE(a_first, b_msg) << "the two failures should produce different messages";
  EXPECT_EQ(a_after, a_first) << "thread B's failure or thread A's later success changed A's message";
}

// An older host's struct: every byte 0x5A, struct_size = v1 (the size of a first release), filled by
// its *_default function, which must write nothing at or past v1 and keep struct_size.
template <typename S>
S OlderStructFromDefaults(size_t v1, mcpm_status (*defaults)(S*)) {
  S s;
  std::memset(&s, 0x5A, sizeof s);
  s.struct_size = static_cast<uint32_t>(v1);
  EXPECT_MCPM_OK(defaults(&s));
  EXPECT_EQ(s.struct_size, v1);
  const unsigned char* tail = reinterpret_cast<const unsigned char*>(&s) + v1;
  for (size_t i = 0; i < sizeof s - v1; ++i)
    if (tail[i] != 0x5A) {
      ADD_FAILURE() << "byte " << v1 + i << " was written";
      break;
    }
  return s;
}

// ---- defaults ----------------------------------------------------------------------------------------

TEST(AbiDefaults, ParamDefaultsMatchTheHeader) {
  mcpm_model_options o;
  std::memset(&o, 0x7F, sizeof o);
  o.struct_size = sizeof o;
  ASSERT_MCPM_OK(mcpm_model_options_default(&o));
  EXPECT_EQ(o.struct_size, sizeof o);
  EXPECT_EQ(o.backend, MCPM_BACKEND_AUTO);
  EXPECT_EQ(o.device_index, 0);
  EXPECT_EQ(o.num_threads, 0);
  EXPECT_EQ(o.weight_arena_bytes, 0u);

  mcpm_session_params sp;
  std::memset(&sp, 0x7F, sizeof sp);
  sp.struct_size = sizeof sp;
  ASSERT_MCPM_OK(mcpm_session_params_default(&sp));
  EXPECT_EQ(sp.struct_size, sizeof sp);
  EXPECT_EQ(sp.context_capacity, 0);
  EXPECT_EQ(sp.prefill_chunk, 256);
  EXPECT_EQ(sp.draft, nullptr);
  EXPECT_EQ(sp.kv_memory_bytes, 0u);
  EXPECT_EQ(sp.kv_memory_fraction, 0.0f);
  EXPECT_EQ(sp.cuda_graphs, 1);

  mcpm_sampling_params p;
  std::memset(&p, 0x7F, sizeof p);
  p.struct_size = sizeof p;
  ASSERT_MCPM_OK(mcpm_sampling_params_default(&p));
  EXPECT_EQ(p.struct_size, sizeof p);
  EXPECT_EQ(p.temperature, 0.0f);
  EXPECT_EQ(p.top_k, 0);
  EXPECT_EQ(p.top_p, 1.0f);
  EXPECT_EQ(p.min_p, 0.0f);
  EXPECT_EQ(p.repetition_penalty, 1.0f);
  EXPECT_EQ(p.frequency_penalty, 0.0f);
  EXPECT_EQ(p.presence_penalty, 0.0f);
  EXPECT_EQ(p.penalty_last_n, 64);
  EXPECT_EQ(p.seed, 0u);
  EXPECT_EQ(p.stop_tokens, nullptr);
  EXPECT_EQ(p.stop_token_count, 0);
  EXPECT_EQ(p.max_new_tokens, 0);

  mcpm_model_config c;
  std::memset(&c, 0x7F, sizeof c);
  c.struct_size = sizeof c;
  ASSERT_MCPM_OK(mcpm_model_config_default(&c));
  EXPECT_EQ(c.struct_size, sizeof c);
  EXPECT_GT(c.vocab_size, 0);
  EXPECT_GT(c.hidden_size, 0);
  EXPECT_GT(c.num_layers, 0);
  EXPECT_GT(c.num_heads, 0);
  ASSERT_GT(c.num_kv_heads, 0);
  EXPECT_EQ(c.num_heads % c.num_kv_heads, 0);
  EXPECT_GT(c.head_dim, 0);
  EXPECT_EQ(c.head_dim % 2, 0);
  EXPECT_GT(c.intermediate_size, 0);
  EXPECT_GT(c.max_position_embeddings, 0);
  EXPECT_GT(c.rms_norm_eps, 0.0f);
  EXPECT_GT(c.rope_theta, 0.0f);
  EXPECT_EQ(c.rope_scaling, MCPM_ROPE_SCALING_NONE) << "defaults have no LongRoPE";
  EXPECT_EQ(c.rope_factor_count, 0);
  EXPECT_GT(c.scale_emb, 0.0f);
  EXPECT_GT(c.scale_depth, 0.0f);
  EXPECT_GT(c.dim_model_base, 0.0f);
  // Sparse attention off, with the MiniCPM4-8B sparse_config sizes.
  EXPECT_EQ(c.sparse_enabled, 0);
  EXPECT_EQ(c.sparse_kernel_size, 32);
  EXPECT_EQ(c.sparse_kernel_stride, 16);
  EXPECT_EQ(c.sparse_init_blocks, 1);
  EXPECT_EQ(c.sparse_block_size, 64);
  EXPECT_EQ(c.sparse_window_size, 2048);
  EXPECT_EQ(c.sparse_topk, 64);
  EXPECT_EQ(c.sparse_dense_len, 8192);
  EXPECT_EQ(c.sparse_use_nope, 0);
}

TEST(AbiDefaults, DefaultFunctionsRejectNullAndBadStructSize) {
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_config_default(nullptr));
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_options_default(nullptr));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_params_default(nullptr));
  EXPECT_FAILS_WITH(kInvalid, mcpm_sampling_params_default(nullptr));
  for (uint32_t delta : {1u, 2u}) {
    mcpm_model_config c{};
    mcpm_model_options o{};
    mcpm_session_params sp{};
    mcpm_sampling_params p{};
    c.struct_size = delta == 1 ? 0 : sizeof c + 100;
    o.struct_size = delta == 1 ? 0 : sizeof o + 100;
    sp.struct_size = delta == 1 ? 0 : sizeof sp + 100;
    p.struct_size = delta == 1 ? 0 : sizeof p + 100;
    EXPECT_FAILS_WITH(kInvalid, mcpm_model_config_default(&c));
    EXPECT_FAILS_WITH(kInvalid, mcpm_model_options_default(&o));
    EXPECT_FAILS_WITH(kInvalid, mcpm_session_params_default(&sp));
    EXPECT_FAILS_WITH(kInvalid, mcpm_sampling_params_default(&p));
    // Nothing written on failure.
    EXPECT_EQ(c.vocab_size, 0);
    EXPECT_EQ(o.num_threads, 0);
    EXPECT_EQ(sp.prefill_chunk, 0);
    EXPECT_EQ(p.penalty_last_n, 0);
  }
  // NULL is a no-op for the free functions.
  mcpm_model_free(nullptr);
  mcpm_session_free(nullptr);
}

// ---- model creation --------------------------------------------------------------------------------

class AbiModelCreate : public ::testing::Test {
 protected:
  void SetUp() override {
    tm_ = std::make_unique<TinyModel>(SmallConfig());
    lr_cfg_ = SmallConfig();
    lr_cfg_.longrope = true;
    lr_cfg_.original_max_position_embeddings = 64;
    lr_ = std::make_unique<TinyModel>(lr_cfg_);
    opts_.struct_size = sizeof opts_;
    ASSERT_MCPM_OK(mcpm_model_options_default(&opts_));
    opts_.backend = MCPM_BACKEND_CPU;
  }
  // Expects mcpm_model_create(cfg) to fail with `code`, leaving the out handle untouched.
  void ExpectCreateFails(const mcpm_model_config& cfg, const char* field, mcpm_status code = kInvalid) {
    SCOPED_TRACE(field);
    mcpm_model* out = kModelSentinel;
    EXPECT_FAILS_NAMING(code, field, mcpm_model_create(&cfg, &opts_, &out));
    EXPECT_EQ(out, kModelSentinel);
    if (out != kModelSentinel) mcpm_model_free(out);
  }
  std::unique_ptr<TinyModel> tm_, lr_;
  TinyConfig lr_cfg_;
  mcpm_model_options opts_{};
};

TEST_F(AbiModelCreate, PositiveControl) {
  for (const TinyModel* t : {tm_.get(), lr_.get()}) {
    const mcpm_model_config c = t->ApiConfig();
    mcpm_model* out = nullptr;
    ASSERT_MCPM_OK(mcpm_model_create(&c, &opts_, &out));
    ASSERT_NE(out, nullptr);
    mcpm_model_free(out);
    // options may be NULL (defaults: AUTO backend).
    out = nullptr;
    ASSERT_MCPM_OK(mcpm_model_create(&c, nullptr, &out));
    ASSERT_NE(out, nullptr);
    mcpm_model_free(out);
  }
}

TEST_F(AbiModelCreate, NullAndStructSize) {
  const mcpm_model_config good = tm_->ApiConfig();
  mcpm_model* out = kModelSentinel;
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_create(nullptr, &opts_, &out));
  EXPECT_EQ(out, kModelSentinel);
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_create(&good, &opts_, nullptr));
  for (uint32_t sz : {0u, static_cast<uint32_t>(sizeof(mcpm_model_config) + 100)}) {
    mcpm_model_config c = good;
    c.struct_size = sz;
    EXPECT_FAILS_WITH(kInvalid, mcpm_model_create(&c, &opts_, &out));
    EXPECT_EQ(out, kModelSentinel);
  }
  for (uint32_t sz : {0u, static_cast<uint32_t>(sizeof(mcpm_model_options) + 100)}) {
    mcpm_model_options o = opts_;
    o.struct_size = sz;
    EXPECT_FAILS_WITH(kInvalid, mcpm_model_create(&good, &o, &out));
    EXPECT_EQ(out, kModelSentinel);
  }
}

// A host compiled against the first release of mcpm_model_options (which ended at num_threads) still
// works: its struct_size is accepted, the defaults function does not write past it, and the tail
// (garbage here) is not read: no weight arena.
TEST_F(AbiModelCreate, OlderModelOptionsSizeIsAccepted) {
  const size_t v1 = offsetof(mcpm_model_options, weight_arena_bytes);
  mcpm_model_options o = OlderStructFromDefaults<mcpm_model_options>(v1, mcpm_model_options_default);
  EXPECT_EQ(o.num_threads, 0);
  o.backend = MCPM_BACKEND_CPU;
  const mcpm_model_config c = tm_->ApiConfig();
  mcpm_model* raw = nullptr;
  ASSERT_MCPM_OK(mcpm_model_create(&c, &o, &raw));
  ModelPtr m(raw);
  uint64_t reserved = 1;
  ASSERT_MCPM_OK(mcpm_model_weight_arena(m.get(), &reserved, nullptr, nullptr));
  EXPECT_EQ(reserved, 0u);
  o.struct_size = static_cast<uint32_t>(v1 - 4);  // not a released size
  mcpm_model* out = kModelSentinel;
  EXPECT_FAILS_NAMING(kInvalid, "struct_size", mcpm_model_create(&c, &o, &out));
  EXPECT_EQ(out, kModelSentinel);
}

TEST_F(AbiModelCreate, InvalidConfigFieldsAreNamed) {
  const mcpm_model_config good = tm_->ApiConfig();
  auto with = [&](auto mutate) {
    mcpm_model_config c = good;
    mutate(c);
    return c;
  };
  for (int32_t v : {0, -1}) {
    ExpectCreateFails(with([&](auto& c) { c.vocab_size = v; }), "vocab_size");
    ExpectCreateFails(with([&](auto& c) { c.hidden_size = v; }), "hidden_size");
    ExpectCreateFails(with([&](auto& c) { c.num_layers = v; }), "num_layers");
    ExpectCreateFails(with([&](auto& c) { c.num_heads = v; }), "num_heads");
    ExpectCreateFails(with([&](auto& c) { c.num_kv_heads = v; }), "num_kv_heads");
    ExpectCreateFails(with([&](auto& c) { c.head_dim = v; }), "head_dim");
    ExpectCreateFails(with([&](auto& c) { c.intermediate_size = v; }), "intermediate_size");
    ExpectCreateFails(with([&](auto& c) { c.max_position_embeddings = v; }), "max_position_embeddings");
  }
  ExpectCreateFails(with([](auto& c) { c.num_kv_heads = 3; }), "num_kv_heads");  // 4 % 3 != 0
  ExpectCreateFails(with([](auto& c) { c.num_kv_heads = 8; }), "num_kv_heads");  // more kv than q heads
  ExpectCreateFails(with([](auto& c) { c.head_dim = 15; }), "head_dim");         // odd
  ExpectCreateFails(with([](auto& c) { c.rms_norm_eps = -1e-5f; }), "rms_norm_eps");
  ExpectCreateFails(with([](auto& c) { c.rms_norm_eps = kNaN; }), "rms_norm_eps");
  ExpectCreateFails(with([](auto& c) { c.rope_theta = 0.0f; }), "rope_theta");
  ExpectCreateFails(with([](auto& c) { c.rope_theta = -10000.0f; }), "rope_theta");
  ExpectCreateFails(with([](auto& c) { c.rope_scaling = 7; }), "rope_scaling");
}

TEST_F(AbiModelCreate, SparseAttentionFieldsAreValidatedWhenEnabled) {
  mcpm_model_config good = tm_->ApiConfig();
  good.sparse_enabled = 1;
  good.sparse_kernel_size = 8, good.sparse_kernel_stride = 4, good.sparse_block_size = 16;
  good.sparse_window_size = 32, good.sparse_topk = 4, good.sparse_init_blocks = 1, good.sparse_dense_len = 48;
  auto with = [&](auto mutate) {
    mcpm_model_config c = good;
    mutate(c);
    return c;
  };
  // Positive controls: the reduced sizes, dense_len -1 (always sparse), no window, no top-k.
  for (const mcpm_model_config& c : {good, with([](auto& c) { c.sparse_dense_len = -1; }),
                                     with([](auto& c) { c.sparse_window_size = 0, c.sparse_topk = 0; }),
                                     with([](auto& c) { c.sparse_init_blocks = 0; })}) {
    mcpm_model* out = nullptr;
    ASSERT_MCPM_OK(mcpm_model_create(&c, &opts_, &out));
    mcpm_model_free(out);
  }
  for (int32_t v : {0, -1}) {
    ExpectCreateFails(with([&](auto& c) { c.sparse_kernel_stride = v; }), "sparse_kernel_stride");
    ExpectCreateFails(with([&](auto& c) { c.sparse_kernel_size = v; }), "sparse_kernel_size");
    ExpectCreateFails(with([&](auto& c) { c.sparse_block_size = v; }), "sparse_block_size");
  }
  ExpectCreateFails(with([](auto& c) { c.sparse_kernel_size = 2; }), "sparse_kernel_size");  // < stride
  ExpectCreateFails(with([](auto& c) { c.sparse_block_size = 18; }), "sparse_block_size");   // not a multiple of 4
  ExpectCreateFails(with([](auto& c) { c.sparse_window_size = 40; }), "sparse_window_size"); // not a multiple of 16
  ExpectCreateFails(with([](auto& c) { c.sparse_window_size = -16; }), "sparse_window_size");
  ExpectCreateFails(with([](auto& c) { c.sparse_init_blocks = -1; }), "sparse_init_blocks");
  ExpectCreateFails(with([](auto& c) { c.sparse_topk = -1; }), "sparse_topk");
  ExpectCreateFails(with([](auto& c) { c.sparse_dense_len = -2; }), "sparse_dense_len");
  ExpectCreateFails(with([](auto& c) { c.sparse_use_nope = 1; }), "sparse_use_nope", MCPM_ERR_UNSUPPORTED);

  // With sparse_enabled = 0 the other sparse fields are ignored (zero-initialised hosts keep working).
  mcpm_model_config off = with([](auto& c) { c.sparse_kernel_stride = 0, c.sparse_use_nope = 1; });
  off.sparse_enabled = 0;
  mcpm_model* out = nullptr;
  ASSERT_MCPM_OK(mcpm_model_create(&off, &opts_, &out));
  mcpm_model_free(out);
}

TEST_F(AbiModelCreate, InvalidLongRopeConfigs) {
  const mcpm_model_config good = lr_->ApiConfig();
  mcpm_model_config c = good;
  c.rope_short_factor = nullptr;
  ExpectCreateFails(c, "rope_short_factor");
  c = good;
  c.rope_long_factor = nullptr;
  ExpectCreateFails(c, "rope_long_factor");
  for (int32_t n : {0, -1, lr_cfg_.head_dim / 2 - 1, lr_cfg_.head_dim / 2 + 1, lr_cfg_.head_dim}) {
    c = good;
    c.rope_factor_count = n;
    ExpectCreateFails(c, "rope_factor_count");
  }
  for (int32_t n : {0, -5}) {
    c = good;
    c.original_max_position_embeddings = n;
    ExpectCreateFails(c, "original_max_position_embeddings");
  }
}

TEST_F(AbiModelCreate, InvalidOptionsAndBackends) {
  const mcpm_model_config good = tm_->ApiConfig();
  mcpm_model* out = kModelSentinel;
  mcpm_model_options o = opts_;
  o.backend = 17;
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_create(&good, &o, &out));
  o.backend = -1;
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_create(&good, &o, &out));
  o = opts_;
  o.num_threads = -1;
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_create(&good, &o, &out));
  EXPECT_EQ(out, kModelSentinel);

  mcpm_build_info info{};
  info.struct_size = sizeof info;
  ASSERT_MCPM_OK(mcpm_get_build_info(&info));
  o = opts_;
  o.backend = MCPM_BACKEND_CUDA;
  if (!(info.backends & MCPM_BACKEND_FLAG_CUDA)) {
    EXPECT_FAILS_WITH(MCPM_ERR_BACKEND_UNAVAILABLE, mcpm_model_create(&good, &o, &out));
    EXPECT_EQ(out, kModelSentinel);
  } else {
    o.device_index = 4096;  // no such device
    EXPECT_FAILS_WITH(MCPM_ERR_BACKEND_UNAVAILABLE, mcpm_model_create(&good, &o, &out));
    EXPECT_EQ(out, kModelSentinel);
  }
  // AUTO always works (falls back to the CPU).
  o = opts_;
  o.backend = MCPM_BACKEND_AUTO;
  mcpm_model* ok = nullptr;
  ASSERT_MCPM_OK(mcpm_model_create(&good, &o, &ok));
  mcpm_model_free(ok);
}

// ---- tensors and finalize -------------------------------------------------------------------------

TEST(AbiTensors, SetTensorFinalizeWeightBytesArguments) {
  const TinyModel tm(SmallConfig());
  ModelPtr m;
  ASSERT_MCPM_OK(tm.Create(&m, MCPM_BACKEND_CPU));
  const HostTensor& t = tm.tensor("model.layers.0.mlp.up_proj.weight");
  const char* name = t.name.c_str();
  const int32_t nd = static_cast<int32_t>(t.shape.size());
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_set_tensor(nullptr, name, t.dtype, t.shape.data(), nd, t.bytes.data(), t.bytes.size()));
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_set_tensor(m.get(), nullptr, t.dtype, t.shape.data(), nd, t.bytes.data(), t.bytes.size()));
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_set_tensor(m.get(), name, t.dtype, nullptr, nd, t.bytes.data(), t.bytes.size()));
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_set_tensor(m.get(), name, t.dtype, t.shape.data(), nd, nullptr, t.bytes.size()));
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_set_tensor(m.get(), name, t.dtype, t.shape.data(), -1, t.bytes.data(), t.bytes.size()));
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_set_tensor(m.get(), name, t.dtype, t.shape.data(), 0, t.bytes.data(), t.bytes.size()));
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_set_tensor(m.get(), "", t.dtype, t.shape.data(), nd, t.bytes.data(), t.bytes.size()));
  const int64_t neg_shape[2] = {-t.shape[0], -t.shape[1]};
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_set_tensor(m.get(), name, t.dtype, neg_shape, nd, t.bytes.data(), t.bytes.size()));
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_set_tensor(m.get(), name, t.dtype, t.shape.data(), nd, t.bytes.data(), 0));

  EXPECT_FAILS_WITH(kInvalid, mcpm_model_finalize(nullptr));
  uint64_t bytes = 77;
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_weight_bytes(nullptr, &bytes));
  EXPECT_EQ(bytes, 77u);
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_weight_bytes(m.get(), nullptr));
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_weight_arena(nullptr, &bytes, &bytes, nullptr));
  EXPECT_EQ(bytes, 77u);

  // An unfinalized model refuses sessions.
  mcpm_session* s = kSessionSentinel;
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_create(m.get(), nullptr, &s));
  EXPECT_EQ(s, kSessionSentinel);

  ASSERT_MCPM_OK(tm.SetAll(m.get()));
  ASSERT_MCPM_OK(mcpm_model_finalize(m.get()));
  // After finalize: a second finalize and any set_tensor fail; the model is unchanged.
  EXPECT_FAILS_WITH(kInvalid, mcpm_model_finalize(m.get()));
  EXPECT_FAILS_WITH(kInvalid, tm.SetTensor(m.get(), t));
  ASSERT_MCPM_OK(mcpm_model_weight_bytes(m.get(), &bytes));
  EXPECT_EQ(bytes, tm.TotalBytes());
}

// ---- sessions ------------------------------------------------------------------------------------------

class AbiSession : public ::testing::Test {
 protected:
  void SetUp() override {
    tm_ = std::make_unique<TinyModel>(SmallConfig());
    model_ = tm_->Load(MCPM_BACKEND_CPU);
    ASSERT_TRUE(model_);
    session_ = MakeSession(model_.get(), 32, 4);
    ASSERT_TRUE(session_);
    prompt_ = tm_->RandomTokens(5, 1);
    ASSERT_MCPM_OK(mcpm_session_prefill(session_.get(), prompt_.data(), 5, MCPM_LOGITS_NONE, nullptr, 0));
    V_ = tm_->config().vocab;
  }
  void ExpectUnchanged() {
    EXPECT_EQ(SessionLength(session_.get()), 5);
    EXPECT_EQ(SessionTokens(session_.get()), prompt_);
  }
  std::unique_ptr<TinyModel> tm_;
  ModelPtr model_;
  SessionPtr session_;
  std::vector<int32_t> prompt_;
  int32_t V_ = 0;
};

TEST_F(AbiSession, CreateArguments) {
  mcpm_session* out = kSessionSentinel;
  mcpm_session_params p{};
  p.struct_size = sizeof p;
  ASSERT_MCPM_OK(mcpm_session_params_default(&p));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_create(nullptr, &p, &out));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_create(model_.get(), &p, nullptr));
  for (uint32_t sz : {0u, static_cast<uint32_t>(sizeof(mcpm_session_params) + 100)}) {
    mcpm_session_params q = p;
    q.struct_size = sz;
    EXPECT_FAILS_WITH(kInvalid, mcpm_session_create(model_.get(), &q, &out));
  }
  for (int32_t cap : {-1, tm_->config().max_position_embeddings + 1}) {
    mcpm_session_params q = p;
    q.context_capacity = cap;
    EXPECT_FAILS_WITH(kInvalid, mcpm_session_create(model_.get(), &q, &out));
  }
  mcpm_session_params q = p;
  q.prefill_chunk = -1;
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_create(model_.get(), &q, &out));
  EXPECT_EQ(out, kSessionSentinel);
  // NULL params = defaults.
  mcpm_session* ok = nullptr;
  ASSERT_MCPM_OK(mcpm_session_create(model_.get(), nullptr, &ok));
  int32_t cap = 0;
  EXPECT_MCPM_OK(mcpm_session_capacity(ok, &cap));
  EXPECT_EQ(cap, tm_->config().max_position_embeddings);
  mcpm_session_free(ok);
}

// KV memory limits: the capacity is the most that fits the byte limit or the fraction of available
// memory, capped by context_capacity and max_position_embeddings; a limit without room for one token
// is OUT_OF_MEMORY; a bad fraction is named.
TEST_F(AbiSession, KvMemoryLimitsSizeTheCapacity) {
  uint64_t per_token = 0;
  ASSERT_MCPM_OK(mcpm_session_kv_bytes_per_token(model_.get(), nullptr, &per_token));
  const TinyConfig& tc = tm_->config();
  // CPU backend: fp32 K and V rows of every layer.
  EXPECT_EQ(per_token, 2u * tc.layers * tc.kv_heads * tc.head_dim * sizeof(float));
  uint64_t untouched = 77;
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_kv_bytes_per_token(nullptr, nullptr, &untouched));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_kv_bytes_per_token(model_.get(), nullptr, nullptr));
  EXPECT_EQ(untouched, 77u);

  auto capacity_with = [&](uint64_t bytes, float fraction, int32_t context) -> int32_t {
    mcpm_session_params p{};
    p.struct_size = sizeof p;
    EXPECT_MCPM_OK(mcpm_session_params_default(&p));
    p.kv_memory_bytes = bytes, p.kv_memory_fraction = fraction, p.context_capacity = context;
    mcpm_session* s = nullptr;
    if (mcpm_session_create(model_.get(), &p, &s) != MCPM_OK) return -1;
    int32_t cap = 0;
    EXPECT_MCPM_OK(mcpm_session_capacity(s, &cap));
    mcpm_session_free(s);
    return cap;
  };
  const int32_t max_pos = tc.max_position_embeddings;
  EXPECT_EQ(capacity_with(per_token * 50 + per_token - 1, 0, 0), 50);
  EXPECT_EQ(capacity_with(per_token * 50, 0, 0), 50);
  EXPECT_EQ(capacity_with(per_token * 50, 0, 20), 20);               // the explicit capacity caps it
  EXPECT_EQ(capacity_with(per_token * 100000, 0, 0), max_pos);       // so does max_position_embeddings
  EXPECT_EQ(capacity_with(0, 1.0f, 0), max_pos);                     // all available memory holds 128 tokens
  EXPECT_EQ(capacity_with(per_token * 7, 1.0f, 0), 7);               // the tighter limit wins
  // A session created with the limit really holds that many tokens, and no more.
  {
    mcpm_session_params p{};
    p.struct_size = sizeof p;
    ASSERT_MCPM_OK(mcpm_session_params_default(&p));
    p.kv_memory_bytes = per_token * 9;
    mcpm_session* raw = nullptr;
    ASSERT_MCPM_OK(mcpm_session_create(model_.get(), &p, &raw));
    SessionPtr s(raw);
    const std::vector<int32_t> nine = tm_->RandomTokens(9, 4);
    ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), nine.data(), 9, MCPM_LOGITS_NONE, nullptr, 0));
    EXPECT_MCPM_STATUS(mcpm_session_decode(s.get(), nine[0], nullptr, 0), MCPM_ERR_CONTEXT_FULL);
  }

  mcpm_session* out = kSessionSentinel;
  mcpm_session_params p{};
  p.struct_size = sizeof p;
  ASSERT_MCPM_OK(mcpm_session_params_default(&p));
  p.kv_memory_bytes = per_token - 1;
  EXPECT_FAILS_NAMING(MCPM_ERR_OUT_OF_MEMORY, "holds no token", mcpm_session_create(model_.get(), &p, &out));
  p.kv_memory_bytes = 0;
  p.kv_memory_fraction = 1e-30f;
  EXPECT_FAILS_NAMING(MCPM_ERR_OUT_OF_MEMORY, "kv_memory_fraction", mcpm_session_create(model_.get(), &p, &out));
  for (float bad : {-0.5f, 1.5f, kNaN}) {
    p.kv_memory_fraction = bad;
    EXPECT_FAILS_NAMING(kInvalid, "kv_memory_fraction", mcpm_session_create(model_.get(), &p, &out));
  }
  EXPECT_EQ(out, kSessionSentinel);
}

// A host compiled against the first release of mcpm_session_params (which ended at `draft`) still
// works: its struct_size is accepted, the defaults function does not write past it, and the KV limits
// it cannot set are off.
TEST_F(AbiSession, OlderSessionParamsSizeIsAccepted) {
  const size_t v1 = offsetof(mcpm_session_params, kv_memory_bytes);
  mcpm_session_params p = OlderStructFromDefaults<mcpm_session_params>(v1, mcpm_session_params_default);
  EXPECT_EQ(p.prefill_chunk, 256);
  p.context_capacity = 24;  // the tail still holds 0x5A garbage, which must be ignored
  mcpm_session* raw = nullptr;
  ASSERT_MCPM_OK(mcpm_session_create(model_.get(), &p, &raw));
  SessionPtr s(raw);
  int32_t cap = 0;
  ASSERT_MCPM_OK(mcpm_session_capacity(s.get(), &cap));
  EXPECT_EQ(cap, 24);
  p.struct_size = static_cast<uint32_t>(v1 - 4);  // not a released size
  mcpm_session* out = kSessionSentinel;
  EXPECT_FAILS_NAMING(kInvalid, "struct_size", mcpm_session_create(model_.get(), &p, &out));
  EXPECT_EQ(out, kSessionSentinel);
}

TEST_F(AbiSession, PrefillArguments) {
  mcpm_session* s = session_.get();
  const size_t V = static_cast<size_t>(V_);
  std::vector<int32_t> toks = tm_->RandomTokens(3, 2);
  std::vector<float> buf(3 * V, 12345.0f);
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_prefill(nullptr, toks.data(), 3, MCPM_LOGITS_NONE, nullptr, 0));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_prefill(s, nullptr, 3, MCPM_LOGITS_NONE, nullptr, 0));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_prefill(s, toks.data(), -1, MCPM_LOGITS_NONE, nullptr, 0));
  for (int32_t bad : {V_, -1, V_ + 1000, std::numeric_limits<int32_t>::min()}) {
    std::vector<int32_t> t = toks;
    t[1] = bad;
    EXPECT_FAILS_WITH(kInvalid, mcpm_session_prefill(s, t.data(), 3, MCPM_LOGITS_ALL, buf.data(), buf.size()));
  }
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_prefill(s, toks.data(), 3, 3, buf.data(), buf.size()));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_prefill(s, toks.data(), 3, -1, buf.data(), buf.size()));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_prefill(s, toks.data(), 3, MCPM_LOGITS_LAST, nullptr, V));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_prefill(s, toks.data(), 3, MCPM_LOGITS_LAST, buf.data(), V - 1));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_prefill(s, toks.data(), 3, MCPM_LOGITS_ALL, nullptr, 3 * V));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_prefill(s, toks.data(), 3, MCPM_LOGITS_ALL, buf.data(), 3 * V - 1));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_prefill(s, toks.data(), 3, MCPM_LOGITS_ALL, buf.data(), V));
  ExpectUnchanged();
  for (float x : buf) ASSERT_EQ(x, 12345.0f) << "a failed prefill wrote logits";
  // Positive control with the exact sizes.
  EXPECT_MCPM_OK(mcpm_session_prefill(s, toks.data(), 3, MCPM_LOGITS_ALL, buf.data(), 3 * V));
  EXPECT_EQ(SessionLength(s), 8);
}

TEST_F(AbiSession, DecodeArguments) {
  mcpm_session* s = session_.get();
  const size_t V = static_cast<size_t>(V_);
  std::vector<float> buf(V, 12345.0f);
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_decode(nullptr, 1, buf.data(), V));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_decode(s, -1, buf.data(), V));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_decode(s, V_, buf.data(), V));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_decode(s, 1, buf.data(), V - 1));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_decode(s, 1, buf.data(), 0));
  ExpectUnchanged();
  for (float x : buf) ASSERT_EQ(x, 12345.0f) << "a failed decode wrote logits";
  EXPECT_MCPM_OK(mcpm_session_decode(s, 1, nullptr, 0));
  EXPECT_MCPM_OK(mcpm_session_decode(s, V_ - 1, buf.data(), V));
  EXPECT_EQ(SessionLength(s), 7);
}

TEST_F(AbiSession, QueryArguments) {
  mcpm_session* s = session_.get();
  int32_t v = -9;
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_length(nullptr, &v));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_length(s, nullptr));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_capacity(nullptr, &v));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_capacity(s, nullptr));
  EXPECT_EQ(v, -9);
  int32_t toks[8];
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_tokens(nullptr, toks, 8, &v));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_tokens(s, nullptr, 8, &v));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_tokens(s, toks, -1, &v));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_tokens(s, toks, 8, nullptr));
  EXPECT_EQ(v, -9);
  mcpm_session_stats st{};
  st.struct_size = sizeof st;
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_get_stats(nullptr, &st));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_get_stats(s, nullptr));
  for (uint32_t sz : {0u, static_cast<uint32_t>(sizeof(mcpm_session_stats) + 100)}) {
    mcpm_session_stats bad{};
    bad.struct_size = sz;
    bad.prefill_tokens = -3;
    EXPECT_FAILS_WITH(kInvalid, mcpm_session_get_stats(s, &bad));
    EXPECT_EQ(bad.prefill_tokens, -3);
  }
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_reset_stats(nullptr));
  EXPECT_MCPM_OK(mcpm_session_get_stats(s, &st));
  EXPECT_EQ(st.prefill_tokens, 5);
}

TEST_F(AbiSession, StateChangeArguments) {
  mcpm_session* s = session_.get();
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_rewind(nullptr, 0));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_rewind(s, -1));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_rewind(s, 6));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_rewind(s, 1000));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_reset(nullptr));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_request_abort(nullptr));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_clear_abort(nullptr));
  ExpectUnchanged();
}

TEST_F(AbiSession, SetSamplingArgumentsAreValidatedAndNamed) {
  mcpm_session* s = session_.get();
  mcpm_sampling_params good{};
  good.struct_size = sizeof good;
  ASSERT_MCPM_OK(mcpm_sampling_params_default(&good));
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s, &good));  // greedy
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_set_sampling(nullptr, &good));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_set_sampling(s, nullptr));
  for (uint32_t sz : {0u, static_cast<uint32_t>(sizeof(mcpm_sampling_params) + 100)}) {
    mcpm_sampling_params p = good;
    p.struct_size = sz;
    EXPECT_FAILS_WITH(kInvalid, mcpm_session_set_sampling(s, &p));
  }
  auto bad = [&](const char* field, auto mutate) {
    mcpm_sampling_params p = good;
    p.temperature = 1.0f;  // would make sampling random if it were accepted
    mutate(p);
    EXPECT_FAILS_NAMING(kInvalid, field, mcpm_session_set_sampling(s, &p));
  };
  const int32_t in_range[2] = {1, 2};
  const int32_t out_of_range[2] = {1, V_};
  const int32_t negative_id[1] = {-1};
  bad("temperature", [](auto& p) { p.temperature = kNaN; });
  bad("top_k", [](auto& p) { p.top_k = -1; });
  bad("top_p", [](auto& p) { p.top_p = -0.1f; });
  bad("top_p", [](auto& p) { p.top_p = 1.5f; });
  bad("top_p", [](auto& p) { p.top_p = kNaN; });
  bad("min_p", [](auto& p) { p.min_p = -0.1f; });
  bad("min_p", [](auto& p) { p.min_p = 1.5f; });
  bad("repetition_penalty", [](auto& p) { p.repetition_penalty = 0.0f; });
  bad("repetition_penalty", [](auto& p) { p.repetition_penalty = -1.0f; });
  bad("penalty_last_n", [](auto& p) { p.penalty_last_n = -2; });
  bad("stop", [](auto& p) { p.stop_token_count = -1; });
  bad("stop", [&](auto& p) { p.stop_tokens = nullptr, p.stop_token_count = 2; (void)in_range; });
  bad("stop", [&](auto& p) { p.stop_tokens = out_of_range, p.stop_token_count = 2; });
  bad("stop", [&](auto& p) { p.stop_tokens = negative_id, p.stop_token_count = 1; });
  bad("max_new_tokens", [](auto& p) { p.max_new_tokens = -1; });

  // The failed calls did not replace the greedy params: sampling stays argmax.
  std::vector<float> logits(static_cast<size_t>(V_));
  for (int32_t i = 0; i < V_; ++i) logits[static_cast<size_t>(i)] = std::sin(0.37f * static_cast<float>(i));
  const int32_t best = ArgMax(logits.data(), logits.size());
  for (int i = 0; i < 20; ++i) {
    int32_t tok = -1;
    ASSERT_MCPM_OK(mcpm_session_sample(s, logits.data(), V_, &tok));
    EXPECT_EQ(tok, best);
  }
  // Valid stop tokens are accepted.
  mcpm_sampling_params p = good;
  p.stop_tokens = in_range;
  p.stop_token_count = 2;
  EXPECT_MCPM_OK(mcpm_session_set_sampling(s, &p));
}

TEST_F(AbiSession, GenerateAndSampleArguments) {
  mcpm_session* s = session_.get();
  mcpm_sampling_params good{};
  good.struct_size = sizeof good;
  ASSERT_MCPM_OK(mcpm_sampling_params_default(&good));
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s, &good));
  int32_t toks[4] = {-5, -5, -5, -5};
  int32_t count = -5;
  mcpm_finish_reason fin = -5;
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_generate(nullptr, 2, toks, 4, &count, &fin));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_generate(s, 2, nullptr, 4, &count, &fin));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_generate(s, 2, toks, -1, &count, &fin));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_generate(s, -1, toks, 4, &count, &fin));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_generate(s, 2, toks, 4, nullptr, &fin));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_generate(s, 2, toks, 4, &count, nullptr));
  EXPECT_EQ(count, -5);
  EXPECT_EQ(fin, -5);
  for (int32_t t : toks) EXPECT_EQ(t, -5);
  ExpectUnchanged();

  std::vector<float> logits(static_cast<size_t>(V_), 0.5f);
  logits[7] = 2.0f;
  int32_t tok = -5;
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_sample(nullptr, logits.data(), V_, &tok));
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_sample(s, nullptr, V_, &tok));
  for (int32_t n : {V_ - 1, V_ + 1, 0, -1}) {
    EXPECT_FAILS_WITH(kInvalid, mcpm_session_sample(s, logits.data(), n, &tok));
  }
  EXPECT_FAILS_WITH(kInvalid, mcpm_session_sample(s, logits.data(), V_, nullptr));
  EXPECT_EQ(tok, -5);
  ASSERT_MCPM_OK(mcpm_session_sample(s, logits.data(), V_, &tok));
  EXPECT_EQ(tok, 7);
  // Positive control for generate.
  ASSERT_MCPM_OK(mcpm_session_generate(s, 2, toks, 4, &count, &fin));
  EXPECT_EQ(count, 2);
  EXPECT_EQ(fin, MCPM_FINISH_NONE);
}

// ---- the test utilities themselves -------------------------------------------------------------------

TEST(TestUtil, HalfPrecisionConversions) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xC000);
  EXPECT_EQ(Bf16ToFloat(0x3F80), 1.0f);
  // Ties to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 -> 1; 1 + 3*2^-8 -> 1 + 2^-6.
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 0.00390625f)), 1.0f);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 3 * 0.00390625f)), 1.0f + 0.015625f);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 0.0040f)), 1.0f + 0.0078125f);  // above halfway rounds up
  EXPECT_EQ(FloatToFp16(1.0f), 0x3C00);
  EXPECT_EQ(FloatToFp16(-2.0f), 0xC000);
  EXPECT_EQ(FloatToFp16(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToFp16(1e6f), 0x7C00);
  EXPECT_EQ(FloatToFp16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToFp16(std::ldexp(1.0f, -25)), 0x0000);  // halfway to it: ties to even (0)
  EXPECT_EQ(FloatToFp16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(Fp16ToFloat(0x3C00), 1.0f);
  EXPECT_EQ(Fp16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(Fp16ToFloat(0x3555), 0.333251953125f);
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10 -> 1; 1 + 3*2^-11 -> 1 + 2^-9.
  EXPECT_EQ(Fp16ToFloat(FloatToFp16(1.0f + std::ldexp(1.0f, -11))), 1.0f);
  EXPECT_EQ(Fp16ToFloat(FloatToFp16(1.0f + 3 * std::ldexp(1.0f, -11))), 1.0f + std::ldexp(1.0f, -9));
  // Round trips of every finite fp16 / a sweep of bf16 values are exact.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00) continue;  // inf / nan
    ASSERT_EQ(FloatToFp16(Fp16ToFloat(static_cast<uint16_t>(h))), h) << h;
  }
  for (uint32_t h = 0; h < 0x10000; h += 7) {
    if ((h & 0x7F80) == 0x7F80) continue;
    ASSERT_EQ(FloatToBf16(Bf16ToFloat(static_cast<uint16_t>(h))), h) << h;
  }
}

}  // namespace
