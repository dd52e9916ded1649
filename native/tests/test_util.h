// Shared helpers for the C ABI tests: dtype conversions, RAII handles, status assertions and a
// builder of tiny random MiniCPM4 models whose weights are kept on the host for the reference.
#ifndef MCPM_TESTS_TEST_UTIL_H
#define MCPM_TESTS_TEST_UTIL_H

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "minicpm4.h"

namespace mcpm_test {

// ---- dtype conversions (round to nearest, ties to even) ------------------------------------------
uint16_t FloatToBf16(float f);
float Bf16ToFloat(uint16_t h);
uint16_t FloatToFp16(float f);
float Fp16ToFloat(uint16_t h);
// The float value that storing f in `dtype` and reading it back gives.
float RoundToDtype(float f, mcpm_dtype dtype);
size_t DtypeSize(mcpm_dtype dtype);
const char* DtypeName(mcpm_dtype dtype);

// ---- RAII handles ----------------------------------------------------------------------------------
struct ModelDeleter {
  void operator()(mcpm_model* m) const { mcpm_model_free(m); }
};
struct SessionDeleter {
  void operator()(mcpm_session* s) const { mcpm_session_free(s); }
};
using ModelPtr = std::unique_ptr<mcpm_model, ModelDeleter>;
using SessionPtr = std::unique_ptr<mcpm_session, SessionDeleter>;

// ---- status assertions -----------------------------------------------------------------------------
// Success iff s == MCPM_OK; otherwise the failure message carries the code and mcpm_last_error().
::testing::AssertionResult IsOk(const char* expr, mcpm_status s);
// Success iff s == expected and (for a failure code) mcpm_last_error() is non-empty.
::testing::AssertionResult HasStatus(const char* expr, const char* expected_expr, mcpm_status s,
                                     mcpm_status expected);

#define ASSERT_MCPM_OK(expr) ASSERT_PRED_FORMAT1(::mcpm_test::IsOk, (expr))
#define EXPECT_MCPM_OK(expr) EXPECT_PRED_FORMAT1(::mcpm_test::IsOk, (expr))
#define ASSERT_MCPM_STATUS(expr, code) ASSERT_PRED_FORMAT2(::mcpm_test::HasStatus, (expr), (code))
#define EXPECT_MCPM_STATUS(expr, code) EXPECT_PRED_FORMAT2(::mcpm_test::HasStatus, (expr), (code))

// Backend the tests run on: $MCPM_TEST_BACKEND = cpu (default) | cuda | auto.
mcpm_backend PrimaryBackend();
// Backends compiled into the library that the reference tests should cover (CPU first).
std::vector<mcpm_backend> CompiledBackends();
const char* BackendName(mcpm_backend b);

// ---- CUDA ------------------------------------------------------------------------------------------
// "" when this library can create a model on the CUDA backend (device $MCPM_TEST_CUDA_DEVICE, default
// 0); otherwise why not (mcpm_last_error of the attempt). Probed once per process.
const std::string& CudaUnavailableReason();
// $MCPM_REQUIRE_CUDA=1: tests that need CUDA fail instead of skipping when it is unavailable (a GPU
// machine must never skip them silently).
bool CudaRequired();
// Whether the tests run on the CUDA backend of a library built against the CPU emulator of CUDA
// (build info "emulated sm_80"): a few GPU-sized loops shrink there (each test says how).
bool OnEmulatedCuda();
// Skips the current test when the CUDA backend is unavailable, or fails it under MCPM_REQUIRE_CUDA=1.
// Use at the top of a TEST body (or SetUp).
#define MCPM_SKIP_WITHOUT_CUDA()                                                                       \
  do {                                                                                                 \
    const std::string& mcpm_reason_ = ::mcpm_test::CudaUnavailableReason();                            \
    if (!mcpm_reason_.empty()) {                                                                       \
      if (::mcpm_test::CudaRequired()) FAIL() << "MCPM_REQUIRE_CUDA=1 but CUDA is unavailable: " << mcpm_reason_; \
      GTEST_SKIP() << "CUDA backend unavailable: " << mcpm_reason_;                                  \
    }                                                                                                  \
  } while (0)

// The backend a model created with `b` runs on (AUTO resolves to CUDA when it is available).
mcpm_backend EffectiveBackend(mcpm_backend b);

// ---- tolerances per backend -----------------------------------------------------------------------------
// Engine logits vs the double-precision reference: max |engine - ref| <= RefTolerance * max(1, max |ref|).
// CPU: 2e-3 (fp32 accumulation only; see test_model.cpp). CUDA: 1e-2, the bound, because the
// CUDA backend rounds every linear input to the weight dtype and stores K/V in bf16
// (backend/cuda/cuda_internal.cuh): the reference with exactly that rounding applied
// (RefOptions::cuda_rounding) differs from the exact one by up to 6e-3 on the tiny test models.
double RefTolerance(mcpm_backend b);
// Between one backend's own evaluation paths (one-shot/chunked prefill, decode, speculative rounds):
// CPU 1e-4 (summation order only). CUDA 1e-2: its paths also differ by summation order only, but a
// last-bit difference can flip the bf16 rounding of a K/V entry or a linear input (one bf16 ulp of
// one element), and the test models' large q/k gains amplify a flipped key: the reference with
// cuda_rounding and a 3e-7 relative perturbation before each rounding moved the logits by up to
// 2.9e-3 relative (gqa2_hd128_untied_bf16), i.e. as much as the rounding itself.
double PathTolerance(mcpm_backend b);

// ---- tiny random models ------------------------------------------------------------------------------
struct TinyConfig {
  int32_t vocab = 384;
  int32_t hidden = 128;
  int32_t layers = 2;
  int32_t heads = 4;
  int32_t kv_heads = 2;
  int32_t head_dim = 64;
  int32_t intermediate = 256;
  int32_t max_position_embeddings = 512;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool longrope = false;
  // LongRoPE: the factors are drawn uniformly from [1, 4] (short and long independently).
  int32_t original_max_position_embeddings = 128;
  float scale_emb = 2.5f;
  // scale_depth / sqrt(layers) far from 1 so a missing residual scale is visible.
  float scale_depth = 2.0f;
  // dim_model_base / hidden scales the LM head input; a quarter keeps the logits O(1-10).
  float dim_model_base = 32.0f;
  bool tied = true;
  // Nonzero: InfLLM v2 sparse attention from this total length (-1: always), with sizes for tiny
  // contexts (kernel 8 / stride 4, 1 init block, block 16, window 32, top-k sparse_topk).
  int32_t sparse_dense_len = 0;
  int32_t sparse_topk = 2;
  mcpm_dtype dtype = MCPM_DTYPE_F32;
  // Give each tensor a different dtype (cycling F32, F16, BF16) instead of `dtype`.
  bool mixed_dtypes = false;
  uint64_t seed = 1;
};

struct HostTensor {
  std::string name;
  std::vector<int64_t> shape;  // outermost first
  mcpm_dtype dtype = MCPM_DTYPE_F32;
  std::vector<float> values;   // already rounded to dtype: exactly what the engine stores
  std::vector<uint8_t> bytes;  // the values encoded in dtype (little endian, as in memory)
  size_t numel() const { return values.size(); }
};

// Encodes float values into the raw bytes of `dtype`.
std::vector<uint8_t> EncodeTensor(const std::vector<float>& values, mcpm_dtype dtype);

class TinyModel {
 public:
  explicit TinyModel(const TinyConfig& cfg);

  const TinyConfig& config() const { return cfg_; }
  // The engine config; the LongRoPE factor pointers point into this object.
  mcpm_model_config ApiConfig() const;
  const std::vector<HostTensor>& tensors() const { return tensors_; }
  const HostTensor& tensor(const std::string& name) const;   // aborts the test binary if unknown
  const std::vector<float>& w(const std::string& name) const { return tensor(name).values; }
  const std::vector<float>& short_factor() const { return short_factor_; }
  const std::vector<float>& long_factor() const { return long_factor_; }
  // Sum of the tensors' byte sizes in their storage dtypes.
  uint64_t TotalBytes() const;
  // mcpm_model_options.weight_arena_bytes that holds exactly what SetAll (SetAllInt4 with int4) sets:
  // each tensor's bytes rounded up to 256, int4 linears as Marlin qweight + scales.
  uint64_t ArenaBytes(bool int4) const;

  // mcpm_model_create with this config (and a weight arena of that many bytes); returns the status
  // (out untouched on failure).
  // The CPU backend computes exactly (fp32 activations, MCPM_CPU_PRECISION_EXACT) unless `precision` says
  // otherwise: these models are compared with references.
  mcpm_status Create(ModelPtr* out, mcpm_backend backend, int32_t num_threads = 0, uint64_t weight_arena_bytes = 0,
                     mcpm_cpu_precision precision = MCPM_CPU_PRECISION_EXACT) const;
  mcpm_status SetTensor(mcpm_model* model, const HostTensor& t) const;
  // Sets every tensor except the one named `skip` (if any); stops at the first failure.
  mcpm_status SetAll(mcpm_model* model, const std::string& skip = std::string()) const;
  // Like SetAll, but the seven linear weights of every layer are quantized with mcpm_int4_quantize
  // and set as Marlin qweight/scales.
  mcpm_status SetAllInt4(mcpm_model* model) const;
  // Create + SetAll (SetAllInt4 with int4) + finalize. On failure records a test failure (with
  // mcpm_last_error) and returns nullptr; *status (if given) receives the failing status.
  ModelPtr Load(mcpm_backend backend, mcpm_status* status = nullptr, int32_t num_threads = 0, bool int4 = false,
                mcpm_cpu_precision precision = MCPM_CPU_PRECISION_EXACT) const;
  ModelPtr Load() const { return Load(PrimaryBackend()); }

  // Random token ids in [0, vocab).
  std::vector<int32_t> RandomTokens(int n, uint64_t seed) const;

 private:
  void AddTensor(const std::string& name, std::vector<int64_t> shape, float lo, float hi, std::mt19937_64& rng);

  TinyConfig cfg_;
  std::vector<HostTensor> tensors_;
  std::vector<float> short_factor_;
  std::vector<float> long_factor_;
};

// ---- int4 -------------------------------------------------------------------------------------------

struct Int4Tensors {
  std::vector<int32_t> qweight;  // Marlin [K/16][2N] or GPTQ [K/8][N]
  std::vector<uint16_t> scales;  // [K/128][N] fp16 bits (Marlin-permuted for the Marlin layout)
};
// mcpm_int4_quantize of the [N, K] tensor t; records a test failure (and returns empty vectors) on error.
Int4Tensors QuantizeInt4(const HostTensor& t, mcpm_int4_layout layout = MCPM_INT4_LAYOUT_MARLIN, bool clip = false);
// True for the seven projection weights of a decoder layer ("...self_attn.q_proj.weight", "...mlp.down_proj.weight").
bool IsLinearWeight(const std::string& name);
// "x.q_proj.weight" -> "x.q_proj" + suffix.
std::string LinearName(const std::string& weight_name, const char* suffix);
// The set_tensor of a model or a draft.
using SetTensorFn = std::function<mcpm_status(const char* name, mcpm_dtype dtype, const int64_t* shape, int32_t ndim,
                                              const void* data, size_t size)>;
// Quantizes t (a linear weight) and sets its ".qweight" and ".scales" through `set`.
mcpm_status SetInt4(const SetTensorFn& set, const HostTensor& t);

// Session with the given capacity (0 = engine default) and prefill chunk (0 = engine default).
// Records a test failure and returns nullptr on failure.
SessionPtr MakeSession(mcpm_model* model, int32_t capacity = 0, int32_t prefill_chunk = 0);

// max |a - b| over two equally long arrays, and max |x|.
double MaxAbsDiff(const float* a, const float* b, size_t n);
double MaxAbsDiff(const float* a, const double* b, size_t n);
double MaxAbs(const float* a, size_t n);
double MaxAbs(const double* a, size_t n);

// Index of the largest value, lowest index on ties.
int32_t ArgMax(const float* v, size_t n);

// Upper 0.999 quantile of chi-square with k degrees of freedom (Wilson-Hilferty approximation,
// accurate to ~1% for k >= 3).
double ChiSquareCritical999(int k);

// Session helpers (return empty / -1 and record a failure on error).
int32_t SessionLength(const mcpm_session* s);
std::vector<int32_t> SessionTokens(const mcpm_session* s);

// Runs fn on a brand-new thread (whose last-error message starts empty) and returns its status and
// the mcpm_last_error() seen on that thread right after.
std::pair<mcpm_status, std::string> CallOnFreshThread(const std::function<mcpm_status()>& fn);

}  // namespace mcpm_test

#endif  // MCPM_TESTS_TEST_UTIL_H
