// The whole model on the CUDA backend through the C ABI, against the CPU backend: logits, greedy
// decoding, seeded sampling, int4, InfLLM v2, typed errors (out of memory, context full,
// no device) and device memory coming back after a model is freed. Tests that need a GPU skip
// without one (MCPM_REQUIRE_CUDA=1: fail); the build-info and no-device tests run everywhere.
//
// Tolerances: logits relative error max |cuda - cpu| / max(1, max |cpu|) <= 1e-2 in bf16 (the issue's
// bound; RefTolerance in test_util.h explains the CUDA backend's bf16 rounding, which moves the
// logits of these models by up to ~6e-3). Greedy decoding must pick the CPU's token at every step
// where the CPU's best two logits are further apart than twice that bound; closer pairs are ties at
// bf16 precision and are only reported.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "minicpm4.h"
#include "test_util.h"
#if defined(MCPM_CUDA_EMULATED)
#include "mcpm_emu/emulator.h"
#endif

namespace {

using namespace mcpm_test;

constexpr double kLogitsRelTol = 1e-2;

// Built against the CPU emulator of CUDA (native/emulator): the same kernels, fewer steps where a GPU
// run would take minutes there (each test says what it keeps).
#if defined(MCPM_CUDA_EMULATED)
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

// Turns the emulator's race check off for a scope: the long generation tests replay the same kernels
// thousands of times, and every kernel is race-checked by the op tests (CudaOps.*, CudaAttention.*).
class NoRaceCheck {
 public:
#if defined(MCPM_CUDA_EMULATED)
  NoRaceCheck() : saved_(mcpm_emu::schedule_config()) {
    mcpm_emu::ScheduleConfig c = saved_;
    c.race_check = false;
    mcpm_emu::set_schedule_config(c);
  }
  ~NoRaceCheck() { mcpm_emu::set_schedule_config(saved_); }

 private:
  mcpm_emu::ScheduleConfig saved_;
#else
  NoRaceCheck() {}
#endif
};

// Graph replays so far (the emulator counts them; on hardware nothing to count: -1).
int64_t GraphReplays() {
#if defined(MCPM_CUDA_EMULATED)
  return static_cast<int64_t>(mcpm_emu::stats().graph_launches);
#else
  return -1;
#endif
}

// The native benchmark's "tiny" preset (native/bench/bench.cpp) in bf16, with an untied LM head:
// with the tied head this random model repeats its input token under greedy decoding, which would
// make "the same greedy tokens" say nothing.
TinyConfig TinyPreset(uint64_t seed) {
  TinyConfig c;
  c.vocab = 4096, c.hidden = 256, c.layers = 4, c.heads = 4, c.kv_heads = 2, c.head_dim = 64, c.intermediate = 768;
  c.max_position_embeddings = 1024, c.dim_model_base = 64.0f, c.dtype = MCPM_DTYPE_BF16, c.tied = false;
  c.seed = seed;
  return c;
}

double RelErr(const std::vector<float>& got, const std::vector<float>& want) {
  return MaxAbsDiff(got.data(), want.data(), want.size()) / std::max(1.0, MaxAbs(want.data(), want.size()));
}

int32_t CudaDevice() {
  const char* env = std::getenv("MCPM_TEST_CUDA_DEVICE");
  return env ? std::atoi(env) : 0;
}

mcpm_sampling_params Greedy() {
  mcpm_sampling_params p{};
  p.struct_size = sizeof p;
  EXPECT_MCPM_OK(mcpm_sampling_params_default(&p));
  p.temperature = 0.0f;
  return p;
}

std::vector<int32_t> Generate(mcpm_session* s, const std::vector<int32_t>& prompt, int n,
                              const mcpm_sampling_params& sp) {
  EXPECT_MCPM_OK(mcpm_session_prefill(s, prompt.data(), static_cast<int32_t>(prompt.size()), MCPM_LOGITS_NONE,
                                      nullptr, 0));
  EXPECT_MCPM_OK(mcpm_session_set_sampling(s, &sp));
  std::vector<int32_t> out(static_cast<size_t>(n));
  int32_t count = 0;
  mcpm_finish_reason finish = MCPM_FINISH_NONE;
  EXPECT_MCPM_OK(mcpm_session_generate(s, n, out.data(), n, &count, &finish));
  out.resize(static_cast<size_t>(std::max(count, 0)));
  return out;
}

// A session of `capacity` tokens with CUDA graphs on or off.
SessionPtr GraphSession(mcpm_model* model, int32_t capacity, bool graphs) {
  mcpm_session_params p{};
  p.struct_size = sizeof p;
  EXPECT_MCPM_OK(mcpm_session_params_default(&p));
  p.context_capacity = capacity;
  p.cuda_graphs = graphs ? 1 : 0;
  mcpm_session* s = nullptr;
  EXPECT_MCPM_OK(mcpm_session_create(model, &p, &s));
  return SessionPtr(s);
}

// ---- runs everywhere ----------------------------------------------------------------------------------

TEST(CudaBuild, BuildInfoReportsTheCudaBackend) {
  mcpm_build_info info{};
  info.struct_size = sizeof info;
  ASSERT_MCPM_OK(mcpm_get_build_info(&info));
  EXPECT_TRUE(info.backends & MCPM_BACKEND_FLAG_CUDA);
  EXPECT_TRUE(info.backends & MCPM_BACKEND_FLAG_CPU);
  EXPECT_GE(info.cuda_version, 11000);
  ASSERT_NE(info.cuda_archs, nullptr);
  EXPECT_GT(std::string(info.cuda_archs).size(), 0u);
}

// Without a usable device: MCPM_BACKEND_CUDA fails with BACKEND_UNAVAILABLE and a message that says
// why, AUTO falls back to the CPU. With one: an absent device index is BACKEND_UNAVAILABLE too.
TEST(CudaBuild, UnavailableDeviceIsATypedErrorAndAutoFallsBack) {
  const TinyModel tm(TinyPreset(1));
  const mcpm_model_config c = tm.ApiConfig();
  mcpm_model_options o{};
  o.struct_size = sizeof o;
  ASSERT_MCPM_OK(mcpm_model_options_default(&o));
  o.backend = MCPM_BACKEND_CUDA;
  if (CudaUnavailableReason().empty()) o.device_index = 4096;
  mcpm_model* m = nullptr;
  EXPECT_MCPM_STATUS(mcpm_model_create(&c, &o, &m), MCPM_ERR_BACKEND_UNAVAILABLE);
  EXPECT_EQ(m, nullptr);
  const std::string msg = mcpm_last_error();
  EXPECT_TRUE(msg.find("no CUDA device / driver") != std::string::npos || msg.find("does not exist") != std::string::npos ||
              msg.find("or newer required") != std::string::npos || msg.find("cannot run this build") != std::string::npos)
      << msg;
  std::printf("[ NOTE     ] CUDA backend unavailable message: %s\n", msg.c_str());
  o.backend = MCPM_BACKEND_AUTO;
  o.device_index = 0;
  ASSERT_MCPM_OK(mcpm_model_create(&c, &o, &m));
  mcpm_model_free(m);
}

// ---- need a GPU ---------------------------------------------------------------------------------------

TEST(CudaModel, LogitsMatchCpuInPrefillAndDecode) {
  MCPM_SKIP_WITHOUT_CUDA();
  for (uint64_t seed : {1u, 2u}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const TinyModel tm(TinyPreset(seed));
    const size_t V = static_cast<size_t>(tm.config().vocab);
    ModelPtr cpu = tm.Load(MCPM_BACKEND_CPU), gpu = tm.Load(MCPM_BACKEND_CUDA);
    ASSERT_TRUE(cpu && gpu);
    const std::vector<int32_t> prompt = tm.RandomTokens(37, seed);
    SessionPtr sc = MakeSession(cpu.get(), 128), sg = MakeSession(gpu.get(), 128);
    ASSERT_TRUE(sc && sg);
    std::vector<float> lc(prompt.size() * V), lg(prompt.size() * V);
    ASSERT_MCPM_OK(mcpm_session_prefill(sc.get(), prompt.data(), 37, MCPM_LOGITS_ALL, lc.data(), lc.size()));
    ASSERT_MCPM_OK(mcpm_session_prefill(sg.get(), prompt.data(), 37, MCPM_LOGITS_ALL, lg.data(), lg.size()));
    const double prefill_err = RelErr(lg, lc);
    EXPECT_LE(prefill_err, kLogitsRelTol) << "prefill";
    double decode_err = 0.0;
    const std::vector<int32_t> more = tm.RandomTokens(12, seed + 50);
    std::vector<float> dc(V), dg(V);
    for (int32_t t : more) {
      ASSERT_MCPM_OK(mcpm_session_decode(sc.get(), t, dc.data(), V));
      ASSERT_MCPM_OK(mcpm_session_decode(sg.get(), t, dg.data(), V));
      decode_err = std::max(decode_err, RelErr(dg, dc));
    }
    EXPECT_LE(decode_err, kLogitsRelTol) << "decode";
    std::printf("[ NOTE     ] seed %d: CUDA vs CPU logits relative error: prefill %.2e, decode %.2e\n",
                static_cast<int>(seed), prefill_err, decode_err);
  }
}

// Teacher-forced: both backends are fed the CPU's greedy token, so one tie cannot derail the rest.
TEST(CudaModel, GreedyTokensEqualCpuFor64Steps) {
  MCPM_SKIP_WITHOUT_CUDA();
  const TinyModel tm(TinyPreset(3));
  const size_t V = static_cast<size_t>(tm.config().vocab);
  ModelPtr cpu = tm.Load(MCPM_BACKEND_CPU), gpu = tm.Load(MCPM_BACKEND_CUDA);
  ASSERT_TRUE(cpu && gpu);
  const std::vector<int32_t> prompt = tm.RandomTokens(16, 3);
  SessionPtr sc = MakeSession(cpu.get(), 128), sg = MakeSession(gpu.get(), 128);
  ASSERT_TRUE(sc && sg);
  std::vector<float> lc(V), lg(V);
  ASSERT_MCPM_OK(mcpm_session_prefill(sc.get(), prompt.data(), 16, MCPM_LOGITS_LAST, lc.data(), V));
  ASSERT_MCPM_OK(mcpm_session_prefill(sg.get(), prompt.data(), 16, MCPM_LOGITS_LAST, lg.data(), V));
  std::vector<int32_t> tokens, gpu_choice;
  int ties = 0;
  for (int step = 0; step < 64; ++step) {
    const int32_t a = ArgMax(lc.data(), V), b = ArgMax(lg.data(), V);
    const double bound = kLogitsRelTol * std::max(1.0, MaxAbs(lc.data(), V));
    EXPECT_LE(MaxAbsDiff(lg.data(), lc.data(), V), bound) << "step " << step;
    if (a != b) {
      const double margin = static_cast<double>(lc[static_cast<size_t>(a)]) - lc[static_cast<size_t>(b)];
      if (margin <= 2.0 * bound) {
        ++ties;
        std::printf("[ NOTE     ] step %d: CUDA picks %d, CPU %d, a tie at bf16 precision (margin %.3g)\n", step, b, a,
                    margin);
      } else {
        ADD_FAILURE() << "step " << step << ": CUDA picks " << b << ", CPU " << a << " with a margin of " << margin
                      << " (> 2 x " << bound << ")";
      }
    }
    tokens.push_back(a);
    gpu_choice.push_back(b);
    ASSERT_MCPM_OK(mcpm_session_decode(sc.get(), a, lc.data(), V));
    ASSERT_MCPM_OK(mcpm_session_decode(sg.get(), a, lg.data(), V));
  }
  std::vector<int32_t> distinct = tokens;
  std::sort(distinct.begin(), distinct.end());
  const auto n_distinct = std::unique(distinct.begin(), distinct.end()) - distinct.begin();
  EXPECT_GE(n_distinct, 16) << "degenerate greedy output; the comparison would say little";
  std::printf("[ NOTE     ] 64 greedy steps: %d ties, %d distinct tokens\n", ties, static_cast<int>(n_distinct));
  if (ties == 0) {
    // Then free-running greedy generation must give exactly these tokens on both backends.
    SessionPtr fc = MakeSession(cpu.get(), 128), fg = MakeSession(gpu.get(), 128);
    EXPECT_EQ(Generate(fc.get(), prompt, 64, Greedy()), tokens) << "CPU generate";
    EXPECT_EQ(Generate(fg.get(), prompt, 64, Greedy()), tokens) << "CUDA generate";
  }
}

// CUDA graphs: generation replays recorded decode steps (one graph per length bucket: 256, 512, ...).
// With graphs on and off the tokens must be identical, greedy and seeded sampling, across a bucket
// boundary (a prompt of 240 tokens and 40 generated ones cross 256), after a rewind into an older
// bucket, whose graph is replayed at a shorter length, and after a prefill that grows the scratch
// buffers a recorded graph points into.
TEST(CudaModel, GraphsOnAndOffGiveIdenticalTokensAcrossBuckets) {
  MCPM_SKIP_WITHOUT_CUDA();
  const NoRaceCheck no_race_check;
  const TinyModel tm(TinyPreset(5));
  ModelPtr gpu = tm.Load(MCPM_BACKEND_CUDA);
  ASSERT_TRUE(gpu);
  auto session = [&](bool graphs) { return GraphSession(gpu.get(), 600, graphs); };
  const int64_t replays_before = GraphReplays();
  const std::vector<int32_t> prompt = tm.RandomTokens(240, 5);
  mcpm_sampling_params warm = Greedy();
  warm.temperature = 0.8f, warm.top_p = 0.9f, warm.seed = 77;
  for (const mcpm_sampling_params& sp : {Greedy(), warm}) {
    SCOPED_TRACE(sp.temperature > 0 ? "sampling" : "greedy");
    SessionPtr on = session(true), off = session(false);
    ASSERT_TRUE(on && off);
    const std::vector<int32_t> a = Generate(on.get(), prompt, 40, sp), b = Generate(off.get(), prompt, 40, sp);
    ASSERT_EQ(a.size(), 40u);
    EXPECT_EQ(a, b);
    // Back to 100 tokens (the 256 bucket again), then on: the recorded graph serves the shorter context.
    ASSERT_MCPM_OK(mcpm_session_rewind(on.get(), 100));
    ASSERT_MCPM_OK(mcpm_session_rewind(off.get(), 100));
    const std::vector<int32_t> more = tm.RandomTokens(3, 6);
    EXPECT_EQ(Generate(on.get(), more, 20, sp), Generate(off.get(), more, 20, sp));
  }
  // A graph recorded while the scratch buffers were small, then a long prefill that grows them (the
  // recorded addresses are freed), then generation in the same bucket: the stale graph must not be
  // replayed.
  SessionPtr on = session(true), off = session(false);
  ASSERT_TRUE(on && off);
  const std::vector<int32_t> short_prompt = tm.RandomTokens(5, 7), long_turn = tm.RandomTokens(200, 8);
  EXPECT_EQ(Generate(on.get(), short_prompt, 10, Greedy()), Generate(off.get(), short_prompt, 10, Greedy()));
  EXPECT_EQ(Generate(on.get(), long_turn, 20, Greedy()), Generate(off.get(), long_turn, 20, Greedy()))
      << "after scratch growth";
  // Emulated, the replays are counted: the "on" sessions really ran recorded graphs (at least one per
  // generated token after each bucket's first).
  if (kEmulated) {
    EXPECT_GE(GraphReplays() - replays_before, 100) << "graphs were not replayed";
  }
}

// InfLLM v2 decode steps are recorded too (apart from dense ones, which share their buckets up to
// dense_len): 20k generated tokens of a tiny sparse model (sparse from 512 tokens, so the compressed
// keys, selection and block lists are replayed across 7 buckets and ~1250 kernel completions) give
// the same tokens with graphs on and off, greedy and with seeded sampling. Emulated, the 20k greedy and 3k
// sampled steps become 450 and 150 (sparse from token 512, three buckets), since 20k emulated steps take
// an hour.
TEST(CudaModel, SparseGraphsOnAndOffGiveIdenticalTokensOver20kSteps) {
  MCPM_SKIP_WITHOUT_CUDA();
  const NoRaceCheck no_race_check;
  TinyConfig tc = TinyPreset(9);
  tc.sparse_dense_len = 512;
  tc.max_position_embeddings = 32768;
  const TinyModel tm(tc);
  ModelPtr gpu = tm.Load(MCPM_BACKEND_CUDA);
  ASSERT_TRUE(gpu);
  auto session = [&](bool graphs) { return GraphSession(gpu.get(), kEmulated ? 1000 : 20200, graphs); };
  const std::vector<int32_t> prompt = tm.RandomTokens(100, 9);
  mcpm_sampling_params warm = Greedy();
  warm.temperature = 0.9f, warm.top_k = 50, warm.seed = 5;
  for (const mcpm_sampling_params& sp : {Greedy(), warm}) {
    SCOPED_TRACE(sp.temperature > 0 ? "sampling" : "greedy");
    const int steps = kEmulated ? (sp.temperature > 0 ? 150 : 450) : (sp.temperature > 0 ? 3000 : 20000);
    SessionPtr on = session(true), off = session(false);
    ASSERT_TRUE(on && off);
    const std::vector<int32_t> a = Generate(on.get(), prompt, steps, sp), b = Generate(off.get(), prompt, steps, sp);
    ASSERT_EQ(a.size(), static_cast<size_t>(steps));
    EXPECT_EQ(a, b);
  }
}

TEST(CudaModel, ChunkedPrefillAndDecodeAgreeOnCuda) {
  MCPM_SKIP_WITHOUT_CUDA();
  const TinyModel tm(TinyPreset(4));
  const size_t V = static_cast<size_t>(tm.config().vocab);
  ModelPtr gpu = tm.Load(MCPM_BACKEND_CUDA);
  ASSERT_TRUE(gpu);
  const std::vector<int32_t> tokens = tm.RandomTokens(40, 4);
  SessionPtr one = MakeSession(gpu.get(), 64), chunked = MakeSession(gpu.get(), 64, 7), dec = MakeSession(gpu.get(), 64);
  std::vector<float> a(tokens.size() * V), b(tokens.size() * V), c(tokens.size() * V);
  ASSERT_MCPM_OK(mcpm_session_prefill(one.get(), tokens.data(), 40, MCPM_LOGITS_ALL, a.data(), a.size()));
  ASSERT_MCPM_OK(mcpm_session_prefill(chunked.get(), tokens.data(), 40, MCPM_LOGITS_ALL, b.data(), b.size()));
  for (size_t t = 0; t < tokens.size(); ++t)
    ASSERT_MCPM_OK(mcpm_session_decode(dec.get(), tokens[t], c.data() + t * V, V));
  EXPECT_LE(RelErr(b, a), PathTolerance(MCPM_BACKEND_CUDA)) << "chunked vs one-shot prefill";
  EXPECT_LE(RelErr(c, a), PathTolerance(MCPM_BACKEND_CUDA)) << "decode vs one-shot prefill";
  // The same call twice gives bit-identical logits (deterministic kernels, no atomics).
  SessionPtr again = MakeSession(gpu.get(), 64);
  std::vector<float> a2(a.size());
  ASSERT_MCPM_OK(mcpm_session_prefill(again.get(), tokens.data(), 40, MCPM_LOGITS_ALL, a2.data(), a2.size()));
  EXPECT_EQ(a2, a);
}

TEST(CudaModel, SeededSamplingIsReproducible) {
  MCPM_SKIP_WITHOUT_CUDA();
  const TinyModel tm(TinyPreset(5));
  ModelPtr gpu = tm.Load(MCPM_BACKEND_CUDA);
  ASSERT_TRUE(gpu);
  const std::vector<int32_t> prompt = tm.RandomTokens(10, 5);
  mcpm_sampling_params sp = Greedy();
  sp.temperature = 0.9f, sp.top_p = 0.95f, sp.top_k = 50, sp.seed = 1234;
  std::vector<int32_t> runs[3];
  for (int r = 0; r < 3; ++r) {
    if (r == 2) sp.seed = 4321;
    SessionPtr s = MakeSession(gpu.get(), 128);
    runs[r] = Generate(s.get(), prompt, 48, sp);
    ASSERT_EQ(runs[r].size(), 48u);
  }
  EXPECT_EQ(runs[0], runs[1]) << "same seed, same tokens";
  EXPECT_NE(runs[0], runs[2]) << "a different seed should change something in 48 sampled tokens";
}

TEST(CudaModel, Int4ModelMatchesCpu) {
  MCPM_SKIP_WITHOUT_CUDA();
  TinyConfig c;
  c.vocab = 384, c.hidden = 256, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.head_dim = 64, c.intermediate = 384;
  c.dtype = MCPM_DTYPE_BF16, c.tied = false, c.seed = 81;
  const TinyModel tm(c);
  const size_t V = static_cast<size_t>(c.vocab);
  ModelPtr cpu = tm.Load(MCPM_BACKEND_CPU, nullptr, 2, true), gpu = tm.Load(MCPM_BACKEND_CUDA, nullptr, 0, true);
  ASSERT_TRUE(cpu && gpu);
  const std::vector<int32_t> tokens = tm.RandomTokens(21, 8);
  SessionPtr sc = MakeSession(cpu.get(), 64), sg = MakeSession(gpu.get(), 64);
  std::vector<float> lc(tokens.size() * V), lg(tokens.size() * V);
  ASSERT_MCPM_OK(mcpm_session_prefill(sc.get(), tokens.data(), 21, MCPM_LOGITS_ALL, lc.data(), lc.size()));
  ASSERT_MCPM_OK(mcpm_session_prefill(sg.get(), tokens.data(), 21, MCPM_LOGITS_ALL, lg.data(), lg.size()));
  EXPECT_LE(RelErr(lg, lc), kLogitsRelTol);
  std::vector<float> dc(V), dg(V);
  ASSERT_MCPM_OK(mcpm_session_decode(sc.get(), 7, dc.data(), V));
  ASSERT_MCPM_OK(mcpm_session_decode(sg.get(), 7, dg.data(), V));
  EXPECT_LE(RelErr(dg, dc), kLogitsRelTol) << "decode (the n = 1 int4 path)";
}

TEST(CudaModel, ContextFullIsTypedAndLeavesTheSessionUnchanged) {
  MCPM_SKIP_WITHOUT_CUDA();
  const TinyModel tm(TinyPreset(6));
  ModelPtr gpu = tm.Load(MCPM_BACKEND_CUDA);
  ASSERT_TRUE(gpu);
  SessionPtr s = MakeSession(gpu.get(), 16);
  const std::vector<int32_t> prompt = tm.RandomTokens(17, 6);
  EXPECT_MCPM_STATUS(mcpm_session_prefill(s.get(), prompt.data(), 17, MCPM_LOGITS_NONE, nullptr, 0),
                     MCPM_ERR_CONTEXT_FULL);
  EXPECT_EQ(SessionLength(s.get()), 0);
  EXPECT_MCPM_OK(mcpm_session_prefill(s.get(), prompt.data(), 16, MCPM_LOGITS_NONE, nullptr, 0));
}

// A session whose KV cache cannot fit fails with OUT_OF_MEMORY, leaks nothing, and the model keeps
// working; freeing models and sessions gives the device memory back.
TEST(CudaModel, OutOfMemoryIsTypedAndDeviceMemoryReturnsAfterFree) {
  MCPM_SKIP_WITHOUT_CUDA();
  TinyConfig c = TinyPreset(7);
  c.heads = 32, c.kv_heads = 32, c.head_dim = 128;  // 8 KiB of bf16 K+V per token and layer
  c.max_position_embeddings = 1 << 24;
  const TinyModel tm(c);
  auto run = [&](bool try_oom) {
    ModelPtr gpu = tm.Load(MCPM_BACKEND_CUDA);
    ASSERT_TRUE(gpu);
    if (try_oom) {
      mcpm_session_params p{};
      p.struct_size = sizeof p;
      ASSERT_MCPM_OK(mcpm_session_params_default(&p));
      p.context_capacity = 1 << 24;  // 16 Mi tokens x 4 layers x 16 KiB = 1 TiB of KV cache
      mcpm_session* s = nullptr;
      EXPECT_MCPM_STATUS(mcpm_session_create(gpu.get(), &p, &s), MCPM_ERR_OUT_OF_MEMORY);
      EXPECT_EQ(s, nullptr);
    }
    SessionPtr s = MakeSession(gpu.get(), 256);
    ASSERT_TRUE(s);
    const std::vector<int32_t> prompt = tm.RandomTokens(100, 7);
    ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), prompt.data(), 100, MCPM_LOGITS_NONE, nullptr, 0));
    ASSERT_MCPM_OK(mcpm_session_decode(s.get(), 3, nullptr, 0));
  };
  run(true);  // warm-up: the runtime loads kernels and cuBLAS sets up its state on first use
  uint64_t before = 0, during = 0, after = 0, total = 0;
  mcpm::cuda_memory_info(CudaDevice(), &before, &total);
  {
    ModelPtr gpu = tm.Load(MCPM_BACKEND_CUDA);
    ASSERT_TRUE(gpu);
    SessionPtr s = MakeSession(gpu.get(), 256);
    mcpm::cuda_memory_info(CudaDevice(), &during, nullptr);
  }
  run(true);
  mcpm::cuda_memory_info(CudaDevice(), &after, nullptr);
  EXPECT_GT(before, during) << "loading a model should take device memory";
  const double diff_mib = (static_cast<double>(after) - static_cast<double>(before)) / (1 << 20);
  EXPECT_LE(std::fabs(diff_mib), 4.0) << "free device memory before " << before << ", after " << after;
  std::printf("[ NOTE     ] device memory: %.1f MiB free before, %.1f MiB while loaded, %.1f MiB after\n",
              before / 1048576.0, during / 1048576.0, after / 1048576.0);
}

// The weight arena on the device (mcpm_model_options.weight_arena_bytes; the managed loader always
// sets it): one allocation holds every tensor, dense and int4, the logits equal those of per-tensor
// allocations bit for bit, an arena larger than the device fails mcpm_model_create with
// OUT_OF_MEMORY, and freeing the model gives the memory back.
TEST(CudaModel, WeightArenaHoldsTheModelAndReturnsItsMemory) {
  MCPM_SKIP_WITHOUT_CUDA();
  const TinyModel tm(TinyPreset(12));
  const size_t V = static_cast<size_t>(tm.config().vocab);
  const std::vector<int32_t> tokens = tm.RandomTokens(40, 12);
  auto load = [&](bool int4, uint64_t arena) {
    ModelPtr m;
    EXPECT_MCPM_OK(tm.Create(&m, MCPM_BACKEND_CUDA, 0, arena));
    if (m) {
      EXPECT_MCPM_OK(int4 ? tm.SetAllInt4(m.get()) : tm.SetAll(m.get()));
      EXPECT_MCPM_OK(mcpm_model_finalize(m.get()));
    }
    return m;
  };
  auto logits = [&](mcpm_model* m) {
    SessionPtr s = MakeSession(m, 64);
    std::vector<float> out(tokens.size() * V);
    EXPECT_MCPM_OK(mcpm_session_prefill(s.get(), tokens.data(), static_cast<int32_t>(tokens.size()), MCPM_LOGITS_ALL,
                                        out.data(), out.size()));
    return out;
  };
  for (bool int4 : {false, true}) {
    ModelPtr separate = load(int4, 0), arena = load(int4, tm.ArenaBytes(int4));
    ASSERT_TRUE(separate && arena);
    uint64_t reserved = 0, used = 0;
    int32_t outside = -1;
    ASSERT_MCPM_OK(mcpm_model_weight_arena(arena.get(), &reserved, &used, &outside));
    EXPECT_EQ(reserved, tm.ArenaBytes(int4));
    EXPECT_EQ(used, reserved);
    EXPECT_EQ(outside, 0);
    EXPECT_EQ(logits(arena.get()), logits(separate.get())) << (int4 ? "int4" : "bf16");
  }
  uint64_t before = 0, after = 0, total = 0;
  mcpm::cuda_memory_info(CudaDevice(), &before, &total);
  {
    ModelPtr too_big;
    EXPECT_MCPM_STATUS(tm.Create(&too_big, MCPM_BACKEND_CUDA, 0, 2 * total), MCPM_ERR_OUT_OF_MEMORY);
    EXPECT_NE(std::string(mcpm_last_error()).find("weight arena"), std::string::npos) << mcpm_last_error();
    ModelPtr m = load(false, tm.ArenaBytes(false));
    ASSERT_TRUE(m);
    (void)logits(m.get());
  }
  mcpm::cuda_memory_info(CudaDevice(), &after, nullptr);
  const double diff_mib = (static_cast<double>(after) - static_cast<double>(before)) / (1 << 20);
  EXPECT_LE(std::fabs(diff_mib), 4.0) << "free device memory before " << before << ", after " << after;
}

// InfLLM v2 through the whole model on CUDA: a tiny model whose attention turns sparse at 64 tokens
// (kernel 8/4, block 16, window 32, top-k 2 on top of the 2 local blocks), so most blocks compete for
// the top-k slots. Logits CUDA vs CPU over a 150-token prefill (dense, then sparse with history in
// the second chunk) and 40 decode steps, within the dense bound; a selection that flips at a near tie
// of block scores under bf16 rounding would show as a larger error here (the op test compares
// selections directly).
TEST(CudaModel, SparseModelLogitsMatchCpu) {
  MCPM_SKIP_WITHOUT_CUDA();
  TinyConfig tc = TinyPreset(8);
  tc.sparse_dense_len = 64;
  const TinyModel tm(tc);
  const size_t V = static_cast<size_t>(tm.config().vocab);
  ModelPtr cpu = tm.Load(MCPM_BACKEND_CPU), gpu = tm.Load(MCPM_BACKEND_CUDA);
  ASSERT_TRUE(cpu && gpu);
  const std::vector<int32_t> prompt = tm.RandomTokens(150, 8);
  SessionPtr sc = MakeSession(cpu.get(), 256, 100), sg = MakeSession(gpu.get(), 256, 100);
  ASSERT_TRUE(sc && sg);
  std::vector<float> lc(prompt.size() * V), lg(prompt.size() * V);
  ASSERT_MCPM_OK(mcpm_session_prefill(sc.get(), prompt.data(), 150, MCPM_LOGITS_ALL, lc.data(), lc.size()));
  ASSERT_MCPM_OK(mcpm_session_prefill(sg.get(), prompt.data(), 150, MCPM_LOGITS_ALL, lg.data(), lg.size()));
  const double prefill_err = RelErr(lg, lc);
  EXPECT_LE(prefill_err, kLogitsRelTol) << "prefill";
  double decode_err = 0.0;
  std::vector<float> dc(V), dg(V);
  for (int32_t t : tm.RandomTokens(40, 9)) {
    ASSERT_MCPM_OK(mcpm_session_decode(sc.get(), t, dc.data(), V));
    ASSERT_MCPM_OK(mcpm_session_decode(sg.get(), t, dg.data(), V));
    decode_err = std::max(decode_err, RelErr(dg, dc));
  }
  EXPECT_LE(decode_err, kLogitsRelTol) << "decode";
  std::printf("[ NOTE     ] sparse model: CUDA vs CPU logits relative error: prefill %.2e, decode %.2e\n", prefill_err,
              decode_err);
}

}  // namespace
