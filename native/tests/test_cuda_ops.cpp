// Every op of the CUDA backend against the CPU backend (the oracle) on fresh random inputs (never
// zeros) at the shapes that matter: odd lengths and widths, GQA 16:1 and 8:1 and MHA, head_dim 64
// and 128 (plus 96 and 256 for the generic paths), contexts from 1 to 32k, and the fp32/fp16/bf16
// weight dtypes. Without a usable CUDA device every test is skipped with the reason; with
// MCPM_REQUIRE_CUDA=1 it fails instead, so a GPU machine cannot skip silently.
//
// Tolerances (u = 2^-24, fp32's unit roundoff):
//   - embedding, store_kv (bf16, round to nearest even), copy_rows, linear_int4 with one K split,
//     greedy_sample (penalties with explicitly rounded operations, then argmax): the same operations
//     in the same order -> compared exactly (store_kv and copy_rows bit for bit).
//   - elementwise ops (add_scaled, scale, add_bias, silu_mul) and RoPE: one or two roundings apart
//     (fma contraction, expf's 2-ulp bound on CUDA): |d| <= 4e-7 * |terms| + 1e-30.
//   - RMSNorm: the sum of squares is summed in a different order; |d| <= 2e-5 * |out| + 1e-6.
//   - linear: inputs are made exactly representable in the weight dtype (the CUDA backend rounds its
//     fp32 input to that dtype), so every product is exact in fp32 and only the summation order of
//     K terms differs: |d| <= 1e-4 * sum_k |x_k w_k| + 1e-6 (tensor cores may round partial sums
//     toward zero, hence 1e-4 rather than sqrt(K) u). A second test feeds arbitrary fp32 inputs
//     and allows the input rounding on top: + 2^-8 (bf16) or 2^-11 (fp16) * sum_k |x_k w_k|.
//   - linear_int4: both dequantise exactly in fp32 and sum in ascending k; K splits change the
//     order: |d| <= 1e-5 * sum_k |x_k w_k| + 1e-6. The tensor-core path (more than 8 tokens) rounds
//     inputs and weights to fp16: |d| <= 1.1e-3 * sum_k |x_k w_k| + 1e-6, mean relative error < 1e-3.
//   - attention and tree attention: K/V are made bf16-representable (the CUDA cache is bf16, the CPU
//     cache fp32), so only fp32 evaluation order differs (online vs two-pass softmax, split-KV
//     merge): |d| <= 5e-5 * max|v| + 1e-6.
//   - InfLLM v2 sparse attention: compressed keys bit-identical (same bf16 keys, same sums in the
//     same order); selected blocks identical except at a near tie of the reference's block scores at
//     the top-k boundary (|B - B_k| <= 1e-5 |B_k|: stage-1 scores are fp32 sums of exps in another
//     order), which must stay rare (<= 2% of (token, KV head) pairs); outputs of the groups with the
//     same blocks as attention: |d| <= 5e-5 * max|v| + 1e-6.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/draft_ops.h"
#include "backend/draft_tree.h"
#include "common/dtype.h"
#include "common/error.h"
#include "common/int4.h"
#include "engine/infllm.h"

namespace {

using namespace mcpm;

// Built against the CPU emulator of CUDA (native/emulator): the same kernels run, on smaller shapes
// where a GPU-sized one would take minutes (each case says what it keeps).
#if defined(MCPM_CUDA_EMULATED)
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

bool CudaRequired() {
  const char* env = std::getenv("MCPM_REQUIRE_CUDA");
  return env != nullptr && std::string(env) == "1";
}

int32_t TestDevice() {
  const char* env = std::getenv("MCPM_TEST_CUDA_DEVICE");
  return env ? std::atoi(env) : 0;
}

float Round(float v, DType dt) {
  switch (dt) {
    case DType::BF16: return bf16_to_f32(f32_to_bf16(v));
    case DType::F16: return int4::f16_to_f32(int4::f32_to_f16(v));
    default: return v;
  }
}

std::vector<float> RoundAll(std::vector<float> v, DType dt) {
  for (float& x : v) x = Round(x, dt);
  return v;
}

// Uniform in [lo, hi), never exactly zero.
std::vector<float> Random(size_t n, std::mt19937_64& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) {
    x = d(rng);
    if (x == 0.0f) x = 0.5f * hi;
  }
  return v;
}

// A tensor in one backend's memory.
struct Dev {
  std::unique_ptr<Buffer> buf;
  Tensor t;
};

std::vector<uint8_t> Encode(const std::vector<float>& v, DType dt) {
  std::vector<uint8_t> bytes(v.size() * dtype_size(dt));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dt == DType::F32) {
      std::memcpy(&bytes[4 * i], &v[i], 4);
    } else {
      const uint16_t h = dt == DType::BF16 ? f32_to_bf16(v[i]) : int4::f32_to_f16(v[i]);
      std::memcpy(&bytes[2 * i], &h, 2);
    }
  }
  return bytes;
}

Dev Make(Backend& be, DType dt, int64_t rows, int64_t cols, const std::vector<float>& values) {
  Dev d;
  const size_t n = static_cast<size_t>(rows * cols);
  d.buf = be.alloc(n * dtype_size(dt));
  d.t = Tensor{d.buf->data(), dt, rows, cols};
  std::vector<float> v = values;
  v.resize(n, 0.0f);
  const std::vector<uint8_t> bytes = Encode(v, dt);
  be.upload(d.buf->data(), bytes.data(), bytes.size());
  return d;
}

Dev MakeRaw(Backend& be, DType dt, int64_t rows, int64_t cols, const void* data) {
  Dev d;
  const size_t bytes = static_cast<size_t>(rows * cols) * dtype_size(dt);
  d.buf = be.alloc(bytes);
  d.t = Tensor{d.buf->data(), dt, rows, cols};
  be.upload(d.buf->data(), data, bytes);
  return d;
}

std::vector<float> Read(Backend& be, const Tensor& t) {
  const size_t n = static_cast<size_t>(t.rows * t.cols);
  std::vector<uint8_t> bytes(n * dtype_size(t.dtype));
  be.download(bytes.data(), t.data, bytes.size());
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (t.dtype == DType::F32) {
      std::memcpy(&out[i], &bytes[4 * i], 4);
    } else {
      uint16_t h;
      std::memcpy(&h, &bytes[2 * i], 2);
      out[i] = t.dtype == DType::BF16 ? bf16_to_f32(h) : int4::f16_to_f32(h);
    }
  }
  return out;
}

std::vector<uint8_t> ReadBytes(Backend& be, const Tensor& t) {
  std::vector<uint8_t> bytes(t.bytes());
  be.download(bytes.data(), t.data, bytes.size());
  return bytes;
}

// got vs want with a per-element bound; reports the worst element relative to its bound.
::testing::AssertionResult Within(const std::vector<float>& got, const std::vector<float>& want,
                                  const std::vector<double>& bound) {
  if (got.size() != want.size() || bound.size() != want.size())
    return ::testing::AssertionFailure() << "sizes " << got.size() << " / " << want.size() << " / " << bound.size();
  double worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double r = d / bound[i];
    if (!(r <= worst)) {  // NaN propagates
      worst = r;
      at = i;
    }
  }
  if (worst <= 1.0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "element " << at << ": cuda " << got[at] << " vs cpu " << want[at]
                                       << " (|d| = " << std::fabs(static_cast<double>(got[at]) - want[at])
                                       << ", bound " << bound[at] << ", " << worst << "x the bound)";
}

::testing::AssertionResult Within(const std::vector<float>& got, const std::vector<float>& want, double rel,
                                  double abs) {
  std::vector<double> bound(want.size());
  for (size_t i = 0; i < want.size(); ++i) bound[i] = rel * std::fabs(static_cast<double>(want[i])) + abs;
  return Within(got, want, bound);
}

::testing::AssertionResult Exact(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], 4) != 0)
      return ::testing::AssertionFailure() << "element " << i << ": cuda " << got[i] << " vs cpu " << want[i];
  return ::testing::AssertionSuccess();
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string problem = cuda_device_problem(TestDevice());
    if (!problem.empty()) {
      if (CudaRequired()) FAIL() << "MCPM_REQUIRE_CUDA=1 but CUDA is unavailable: " << problem;
      GTEST_SKIP() << "no usable CUDA device: " << problem;
    }
    try {
      gpu_ = create_cuda_backend(TestDevice());
    } catch (const Error& e) {
      if (CudaRequired()) FAIL() << "MCPM_REQUIRE_CUDA=1 but creating the CUDA backend failed: " << e.what();
      GTEST_SKIP() << "CUDA backend unavailable: " << e.what();
    }
    cpu_ = std::make_shared<CpuBackend>(cpu_kernels(), CpuPrecision::Exact);  // the oracle: fp32 activations
    gctx_ = gpu_->create_context(1);
    cctx_ = cpu_->create_context(2);
  }

  void Sync() { gpu_->synchronize(*gctx_); }

  std::shared_ptr<Backend> gpu_, cpu_;
  std::unique_ptr<ExecContext> gctx_, cctx_;
  std::mt19937_64 rng_{20261125};
};

// ---- backend basics ---------------------------------------------------------------------------------

TEST_F(CudaOps, DtypesAndName) {
  EXPECT_STREQ(gpu_->name(), "cuda");
  EXPECT_EQ(gpu_->activation_dtype(), DType::F32);
  EXPECT_EQ(gpu_->kv_dtype(), DType::BF16);
}

TEST_F(CudaOps, UploadDownloadRoundTrip) {
  const std::vector<float> v = Random(1000003, rng_);
  Dev d = Make(*gpu_, DType::F32, 1, static_cast<int64_t>(v.size()), v);
  EXPECT_TRUE(Exact(Read(*gpu_, d.t), v));
}

TEST_F(CudaOps, OutOfMemoryIsTypedAndRecoverable) {
  try {
    (void)gpu_->alloc(size_t{1} << 50);  // 1 PiB
    FAIL() << "a 1 PiB allocation succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), MCPM_ERR_OUT_OF_MEMORY) << e.what();
    EXPECT_NE(std::string(e.what()).find("out of device memory"), std::string::npos) << e.what();
  }
  // The device keeps working.
  const std::vector<float> v = Random(4096, rng_);
  Dev d = Make(*gpu_, DType::F32, 64, 64, v);
  EXPECT_TRUE(Exact(Read(*gpu_, d.t), v));
}

TEST_F(CudaOps, UnknownDeviceIsUnavailable) {
  try {
    (void)create_cuda_backend(4096);
    FAIL() << "device 4096 exists";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), MCPM_ERR_BACKEND_UNAVAILABLE);
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

// ---- elementwise ----------------------------------------------------------------------------------------

TEST_F(CudaOps, EmbeddingEqualsCpu) {
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    for (int64_t cols : {1, 67, 1024}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " cols " + std::to_string(cols));
      const int64_t vocab = 301;
      const std::vector<float> table = RoundAll(Random(static_cast<size_t>(vocab * cols), rng_), dt);
      Dev tg = Make(*gpu_, dt, vocab, cols, table), tc = Make(*cpu_, dt, vocab, cols, table);
      for (int64_t n : {1, 7, 33}) {
        std::vector<int32_t> ids(static_cast<size_t>(n));
        std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
        for (auto& id : ids) id = pick(rng_);
        ids[0] = static_cast<int32_t>(vocab - 1);  // the last row
        Dev og = Make(*gpu_, DType::F32, n, cols, {}), oc = Make(*cpu_, DType::F32, n, cols, {});
        gpu_->embedding(*gctx_, og.t, tg.t, ids.data(), 2.5f);
        cpu_->embedding(*cctx_, oc.t, tc.t, ids.data(), 2.5f);
        Sync();
        EXPECT_TRUE(Exact(Read(*gpu_, og.t), Read(*cpu_, oc.t)));
        // The same ids already in device memory (a tree level's tokens from tree_expand).
        Dev idg = MakeRaw(*gpu_, DType::I32, 1, n, ids.data());
        Dev rg = Make(*gpu_, DType::F32, n, cols, {});
        gpu_->embedding_resident(*gctx_, rg.t, tg.t, idg.t.as<const int32_t>(), 2.5f);
        Sync();
        EXPECT_TRUE(Exact(Read(*gpu_, rg.t), Read(*cpu_, oc.t))) << "embedding_resident";
      }
    }
  }
}

TEST_F(CudaOps, AddScaledScaleAddBiasSiluMulMatchCpu) {
  for (int64_t rows : {1, 5, 33}) {
    for (int64_t cols : {3, 257, 4096}) {
      SCOPED_TRACE("rows " + std::to_string(rows) + " cols " + std::to_string(cols));
      const size_t n = static_cast<size_t>(rows * cols);
      const std::vector<float> r = Random(n, rng_, -4, 4), d = Random(n, rng_, -4, 4);
      // add_scaled
      Dev rg = Make(*gpu_, DType::F32, rows, cols, r), dg = Make(*gpu_, DType::F32, rows, cols, d);
      Dev rc = Make(*cpu_, DType::F32, rows, cols, r), dc = Make(*cpu_, DType::F32, rows, cols, d);
      gpu_->add_scaled(*gctx_, rg.t, dg.t, 0.37f);
      cpu_->add_scaled(*cctx_, rc.t, dc.t, 0.37f);
      // scale (in place on d)
      gpu_->scale(*gctx_, dg.t, -1.7f);
      cpu_->scale(*cctx_, dc.t, -1.7f);
      Sync();
      std::vector<double> bound(n);
      for (size_t i = 0; i < n; ++i) bound[i] = 4e-7 * (std::fabs(r[i]) + 0.37 * std::fabs(d[i])) + 1e-30;
      EXPECT_TRUE(Within(Read(*gpu_, rg.t), Read(*cpu_, rc.t), bound)) << "add_scaled";
      EXPECT_TRUE(Within(Read(*gpu_, dg.t), Read(*cpu_, dc.t), 4e-7, 1e-30)) << "scale";
      // add_bias with each bias dtype
      for (DType bt : {DType::F32, DType::F16, DType::BF16}) {
        const std::vector<float> b = RoundAll(Random(static_cast<size_t>(cols), rng_), bt);
        Dev bg = Make(*gpu_, bt, 1, cols, b), bc = Make(*cpu_, bt, 1, cols, b);
        Dev xg = Make(*gpu_, DType::F32, rows, cols, r), xc = Make(*cpu_, DType::F32, rows, cols, r);
        gpu_->add_bias(*gctx_, xg.t, bg.t);
        cpu_->add_bias(*cctx_, xc.t, bc.t);
        Sync();
        EXPECT_TRUE(Exact(Read(*gpu_, xg.t), Read(*cpu_, xc.t))) << "add_bias " << dtype_name(bt);
      }
      // silu_mul, out aliasing gate as the model graph calls it
      Dev gg = Make(*gpu_, DType::F32, rows, cols, r), ug = Make(*gpu_, DType::F32, rows, cols, d);
      Dev gc = Make(*cpu_, DType::F32, rows, cols, r), uc = Make(*cpu_, DType::F32, rows, cols, d);
      gpu_->silu_mul(*gctx_, gg.t, gg.t, ug.t);
      cpu_->silu_mul(*cctx_, gc.t, gc.t, uc.t);
      Sync();
      EXPECT_TRUE(Within(Read(*gpu_, gg.t), Read(*cpu_, gc.t), 1e-6, 1e-30)) << "silu_mul";
    }
  }
}

// ---- norms ------------------------------------------------------------------------------------------------

TEST_F(CudaOps, RmsNormAndAddRmsNormMatchCpu) {
  for (int64_t dim : {1, 67, 1024, 4096}) {
    for (int64_t rows : {1, 5, 33}) {
      for (DType wt : {DType::F32, DType::BF16}) {
        SCOPED_TRACE("dim " + std::to_string(dim) + " rows " + std::to_string(rows) + " " + dtype_name(wt));
        const size_t n = static_cast<size_t>(rows * dim);
        const std::vector<float> x = Random(n, rng_, -3, 3), d = Random(n, rng_, -3, 3);
        const std::vector<float> w = RoundAll(Random(static_cast<size_t>(dim), rng_, 0.5f, 1.5f), wt);
        Dev wg = Make(*gpu_, wt, 1, dim, w), wc = Make(*cpu_, wt, 1, dim, w);
        // In place (out == x), as the EAGLE draft calls it.
        Dev xg = Make(*gpu_, DType::F32, rows, dim, x), xc = Make(*cpu_, DType::F32, rows, dim, x);
        gpu_->rms_norm(*gctx_, xg.t, xg.t, wg.t, 1e-5f);
        cpu_->rms_norm(*cctx_, xc.t, xc.t, wc.t, 1e-5f);
        // Fused residual add.
        Dev rg = Make(*gpu_, DType::F32, rows, dim, x), dg = Make(*gpu_, DType::F32, rows, dim, d);
        Dev rc = Make(*cpu_, DType::F32, rows, dim, x), dc = Make(*cpu_, DType::F32, rows, dim, d);
        Dev og = Make(*gpu_, DType::F32, rows, dim, {}), oc = Make(*cpu_, DType::F32, rows, dim, {});
        gpu_->add_rms_norm(*gctx_, og.t, rg.t, dg.t, 0.6f, wg.t, 1e-5f);
        cpu_->add_rms_norm(*cctx_, oc.t, rc.t, dc.t, 0.6f, wc.t, 1e-5f);
        Sync();
        EXPECT_TRUE(Within(Read(*gpu_, xg.t), Read(*cpu_, xc.t), 2e-5, 1e-6)) << "rms_norm";
        EXPECT_TRUE(Within(Read(*gpu_, rg.t), Read(*cpu_, rc.t), 4e-7, 1e-6)) << "add_rms_norm residual";
        EXPECT_TRUE(Within(Read(*gpu_, og.t), Read(*cpu_, oc.t), 2e-5, 1e-6)) << "add_rms_norm output";
      }
    }
  }
}

// ---- RoPE ---------------------------------------------------------------------------------------------------

TEST_F(CudaOps, RopeMatchesCpuIncludingLongPositionsAndLongRopeFactors) {
  struct Case {
    int32_t heads, head_dim;
    bool longrope;
  };
  for (const Case& cs : {Case{16, 64, false}, Case{2, 128, true}, Case{3, 96, true}, Case{1, 256, false}}) {
    SCOPED_TRACE("heads " + std::to_string(cs.heads) + " head_dim " + std::to_string(cs.head_dim));
    const int32_t half = cs.head_dim / 2;
    std::vector<float> inv(static_cast<size_t>(half));
    std::uniform_real_distribution<double> fac(1.0, 4.0);
    for (int32_t i = 0; i < half; ++i)
      inv[static_cast<size_t>(i)] = static_cast<float>(
          1.0 / ((cs.longrope ? fac(rng_) : 1.0) * std::pow(10000.0, 2.0 * i / cs.head_dim)));
    Dev fg = Make(*gpu_, DType::F32, 1, half, inv), fc = Make(*cpu_, DType::F32, 1, half, inv);
    const std::vector<int32_t> positions{0, 1, 2, 17, 4095, 32767, 131071, 1000003, 5};
    const int64_t n = static_cast<int64_t>(positions.size()), cols = int64_t{cs.heads} * cs.head_dim;
    const std::vector<float> x = Random(static_cast<size_t>(n * cols), rng_, -2, 2);
    Dev xg = Make(*gpu_, DType::F32, n, cols, x), xc = Make(*cpu_, DType::F32, n, cols, x);
    const float attn_factor = cs.longrope ? 1.29f : 1.0f;
    gpu_->rope(*gctx_, xg.t, cs.heads, cs.head_dim, positions.data(), fg.t, attn_factor);
    cpu_->rope(*cctx_, xc.t, cs.heads, cs.head_dim, positions.data(), fc.t, attn_factor);
    Sync();
    // Each output is a*c -/+ b*s of inputs |a|, |b| <= 2 and |c|, |s| <= attn_factor.
    EXPECT_TRUE(Within(Read(*gpu_, xg.t), Read(*cpu_, xc.t), 0.0, 4e-7 * 2 * 2 * attn_factor));
  }
}

// ---- KV cache and row copies ----------------------------------------------------------------------

TEST_F(CudaOps, StoreKvRoundsToBf16BitExactly) {
  const int64_t capacity = 41, kv_dim = 2 * 64, n = 7, start = 33;
  const std::vector<float> k = Random(static_cast<size_t>(n * kv_dim), rng_, -8, 8);
  const std::vector<float> v = Random(static_cast<size_t>(n * kv_dim), rng_, -8, 8);
  Dev kg = Make(*gpu_, DType::F32, n, kv_dim, k), vg = Make(*gpu_, DType::F32, n, kv_dim, v);
  Dev kc = Make(*gpu_, DType::BF16, capacity, kv_dim, Random(static_cast<size_t>(capacity * kv_dim), rng_));
  Dev vc = Make(*gpu_, DType::BF16, capacity, kv_dim, Random(static_cast<size_t>(capacity * kv_dim), rng_));
  const std::vector<uint8_t> k_before = ReadBytes(*gpu_, kc.t);
  gpu_->store_kv(*gctx_, kc.t, vc.t, kg.t, vg.t, start);
  Sync();
  const std::vector<uint8_t> k_after = ReadBytes(*gpu_, kc.t), v_after = ReadBytes(*gpu_, vc.t);
  for (int64_t r = 0; r < capacity; ++r)
    for (int64_t c = 0; c < kv_dim; ++c) {
      const size_t at = static_cast<size_t>(r * kv_dim + c);
      uint16_t got_k, got_v;
      std::memcpy(&got_k, &k_after[2 * at], 2);
      std::memcpy(&got_v, &v_after[2 * at], 2);
      if (r >= start && r < start + n) {
        const size_t src = static_cast<size_t>((r - start) * kv_dim + c);
        ASSERT_EQ(got_k, f32_to_bf16(k[src])) << "row " << r << " col " << c;
        ASSERT_EQ(got_v, f32_to_bf16(v[src])) << "row " << r << " col " << c;
      } else {
        uint16_t before;
        std::memcpy(&before, &k_before[2 * at], 2);
        ASSERT_EQ(got_k, before) << "row " << r << " outside [start, start + n) changed";
      }
    }
}

TEST_F(CudaOps, CopyRowsGatherAndInPlaceCompactionMatchCpu) {
  for (DType dt : {DType::F32, DType::BF16}) {
    for (int64_t cols : {1, 3, 256}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " cols " + std::to_string(cols));
      const int64_t rows = 80;
      const std::vector<float> a = RoundAll(Random(static_cast<size_t>(rows * cols), rng_), dt);
      const std::vector<float> b = RoundAll(Random(static_cast<size_t>(rows * cols), rng_), dt);
      // Gather between tensors (parallel path), with a repeated destination (in-order path).
      {
        const std::vector<int32_t> dst{5, 0, 79, 6, 7}, src{79, 3, 0, 3, 40};
        Dev sg = Make(*gpu_, dt, rows, cols, a), dg = Make(*gpu_, dt, rows, cols, b);
        Dev sc = Make(*cpu_, dt, rows, cols, a), dc = Make(*cpu_, dt, rows, cols, b);
        gpu_->copy_rows(*gctx_, dg.t, sg.t, dst.data(), src.data(), static_cast<int32_t>(dst.size()));
        cpu_->copy_rows(*cctx_, dc.t, sc.t, dst.data(), src.data(), static_cast<int32_t>(dst.size()));
        const std::vector<int32_t> dst2{9, 9, 9}, src2{1, 2, 3};  // the last write wins
        gpu_->copy_rows(*gctx_, dg.t, sg.t, dst2.data(), src2.data(), 3);
        cpu_->copy_rows(*cctx_, dc.t, sc.t, dst2.data(), src2.data(), 3);
        Sync();
        EXPECT_TRUE(Exact(Read(*gpu_, dg.t), Read(*cpu_, dc.t))) << "gather";
      }
      // In-place ascending compaction (speculative KV fix-up) and a chain that needs in-order copies.
      {
        const std::vector<int32_t> dst{10, 11, 12, 13}, src{10, 14, 17, 30};
        const std::vector<int32_t> dst2{1, 2, 3}, src2{0, 1, 2};  // shifts row 0 down by three, in order
        Dev xg = Make(*gpu_, dt, rows, cols, a), xc = Make(*cpu_, dt, rows, cols, a);
        gpu_->copy_rows(*gctx_, xg.t, xg.t, dst.data(), src.data(), 4);
        cpu_->copy_rows(*cctx_, xc.t, xc.t, dst.data(), src.data(), 4);
        gpu_->copy_rows(*gctx_, xg.t, xg.t, dst2.data(), src2.data(), 3);
        cpu_->copy_rows(*cctx_, xc.t, xc.t, dst2.data(), src2.data(), 3);
        Sync();
        EXPECT_TRUE(Exact(Read(*gpu_, xg.t), Read(*cpu_, xc.t))) << "in place";
      }
    }
  }
}

// ---- linear layers ------------------------------------------------------------------------------------------

struct LinearCase {
  int64_t n, N, K;
};

std::vector<LinearCase> LinearCases() {
  // n: GEMV (1, 3, 8) and cuBLAS (9, 17, 64) paths; K odd (scalar GEMV path) and vector-friendly.
  return {{1, 67, 129}, {3, 256, 1024}, {8, 33, 4096}, {9, 96, 257}, {17, 512, 1024}, {64, 1000, 384}, {1, 73448, 64}};
}

// sum_k |x[t][k] w[r][k]| for every output.
std::vector<double> AbsDot(const std::vector<float>& x, const std::vector<float>& w, int64_t n, int64_t N,
                           int64_t K) {
  std::vector<double> out(static_cast<size_t>(n * N));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < N; ++r) {
      double s = 0.0;
      for (int64_t k = 0; k < K; ++k)
        s += std::fabs(static_cast<double>(x[static_cast<size_t>(t * K + k)]) * w[static_cast<size_t>(r * K + k)]);
      out[static_cast<size_t>(t * N + r)] = s;
    }
  return out;
}

TEST_F(CudaOps, LinearMatchesCpuForEveryWeightDtypeAndBatchSize) {
  for (DType wt : {DType::F32, DType::F16, DType::BF16}) {
    for (const LinearCase& lc : LinearCases()) {
      for (bool representable : {true, false}) {
        SCOPED_TRACE(std::string(dtype_name(wt)) + " n " + std::to_string(lc.n) + " N " + std::to_string(lc.N) +
                     " K " + std::to_string(lc.K) + (representable ? "" : " (arbitrary fp32 input)"));
        const std::vector<float> w = RoundAll(Random(static_cast<size_t>(lc.N * lc.K), rng_), wt);
        std::vector<float> x = Random(static_cast<size_t>(lc.n * lc.K), rng_, -2, 2);
        if (representable) x = RoundAll(x, wt);
        Dev wg = Make(*gpu_, wt, lc.N, lc.K, w), wc = Make(*cpu_, wt, lc.N, lc.K, w);
        Dev xg = Make(*gpu_, DType::F32, lc.n, lc.K, x), xc = Make(*cpu_, DType::F32, lc.n, lc.K, x);
        Dev og = Make(*gpu_, DType::F32, lc.n, lc.N, {}), oc = Make(*cpu_, DType::F32, lc.n, lc.N, {});
        gpu_->linear(*gctx_, og.t, xg.t, wg.t);
        cpu_->linear(*cctx_, oc.t, xc.t, wc.t);
        Sync();
        const double input_rounding = representable || wt == DType::F32 ? 0.0 : wt == DType::BF16 ? 1.0 / 256 : 1.0 / 2048;
        std::vector<double> bound = AbsDot(x, w, lc.n, lc.N, lc.K);
        for (double& b : bound) b = (1e-4 + input_rounding) * b + 1e-6;
        EXPECT_TRUE(Within(Read(*gpu_, og.t), Read(*cpu_, oc.t), bound));
      }
    }
  }
}

// Both paths above 8 tokens: the tensor-core kernel (fp16 inputs and weights, as Marlin) and the fp32
// tiled kernel; 1..8 tokens always take the GEMV. The M list runs on the 8B q_proj / o_proj
// shape (4096 x 4096), where the tensor-core path must also keep the mean relative error
// sum |d| / sum |y_cpu| below 1e-3.
TEST_F(CudaOps, LinearInt4MatchesCpu) {
  struct Case {
    int64_t n, N, K;
  };
  // K == 128 (single-group scale permutation) and K > 128; several 64-column chunks (also a count that
  // is not a multiple of the tensor-core block's 4 chunks); decode, small batches, tile boundaries.
  std::vector<Case> cases{Case{1, 64, 128}, Case{1, 192, 512}, Case{5, 128, 256}, Case{8, 64, 2048},
                          Case{33, 192, 384}, Case{9, 64, 128}, Case{70, 320, 1024}};
  // The M list on an 8B-sized layer; emulated, on a 512 x 1024 one (the same tiles, splits and
  // pipeline stages, a sixteenth of the columns and a quarter of the K groups).
  const int64_t big_n = kEmulated ? 512 : 4096, big_k = kEmulated ? 1024 : 4096;
  cases.push_back(Case{1, big_n, big_k});
  for (int64_t m : {2, 3, 8, 16, 17, 64, 118, 1024}) cases.push_back(Case{m, big_n, kEmulated && m == 1024 ? 256 : big_k});
  for (const Case& lc : cases) {
    const std::vector<float> w = Random(static_cast<size_t>(lc.N * lc.K), rng_);  // [N][K]
    const int4::MarlinWeight mw = int4::quantize_marlin(w.data(), lc.N, lc.K, int4::QuantOptions{}, 2);
    const std::vector<float> x = Random(static_cast<size_t>(lc.n * lc.K), rng_, -2, 2);
    Dev qg = MakeRaw(*gpu_, DType::I32, lc.K / 16, 2 * lc.N, mw.qweight.data());
    Dev sg = MakeRaw(*gpu_, DType::F16, lc.K / 128, lc.N, mw.scales.data());
    Dev qc = MakeRaw(*cpu_, DType::I32, lc.K / 16, 2 * lc.N, mw.qweight.data());
    Dev sc = MakeRaw(*cpu_, DType::F16, lc.K / 128, lc.N, mw.scales.data());
    cpu_->adopt_int4_qweight(qc.t, lc.K, lc.N);  // the CPU's own layout, as the weight store does
    cpu_->adopt_int4_scales(sc.t, lc.K, lc.N);
    gpu_->adopt_int4_qweight(qg.t, lc.K, lc.N);
    gpu_->adopt_int4_scales(sg.t, lc.K, lc.N);
    Dev xg = Make(*gpu_, DType::F32, lc.n, lc.K, x), xc = Make(*cpu_, DType::F32, lc.n, lc.K, x);
    Dev oc = Make(*cpu_, DType::F32, lc.n, lc.N, {});
    cpu_->linear_int4(*cctx_, oc.t, xc.t, qc.t, sc.t);
    const std::vector<float> want = Read(*cpu_, oc.t);
    // Bound from the dequantised weights What[k][n] (exact), as W [N][K].
    const int4::Quantized qz = int4::unpack_marlin(mw);
    const std::vector<float> deq = int4::dequantize(qz);  // [K][N]
    std::vector<float> wt(static_cast<size_t>(lc.N * lc.K));
    for (int64_t k = 0; k < lc.K; ++k)
      for (int64_t nn = 0; nn < lc.N; ++nn)
        wt[static_cast<size_t>(nn * lc.K + k)] = deq[static_cast<size_t>(k * lc.N + nn)];
    // sum_k |x_k w_k| by the CPU backend's (threaded) fp32 linear over |x| and |W|: 1024 x 4096 x 4096
    // terms are too many for a scalar loop.
    std::vector<float> ax = x, aw = wt;
    for (float& v : ax) v = std::fabs(v);
    for (float& v : aw) v = std::fabs(v);
    Dev axc = Make(*cpu_, DType::F32, lc.n, lc.K, ax), awc = Make(*cpu_, DType::F32, lc.N, lc.K, aw);
    Dev magc = Make(*cpu_, DType::F32, lc.n, lc.N, {});
    cpu_->linear(*cctx_, magc.t, axc.t, awc.t);
    const std::vector<float> magf = Read(*cpu_, magc.t);
    const std::vector<double> mag(magf.begin(), magf.end());
    for (bool tensor_cores : {true, false}) {
      if (lc.n <= 8 && !tensor_cores) continue;  // the GEMV either way
      SCOPED_TRACE("n " + std::to_string(lc.n) + " N " + std::to_string(lc.N) + " K " + std::to_string(lc.K) +
                   (lc.n > 8 ? (tensor_cores ? " (tensor cores)" : " (fp32 tiled)") : ""));
      cuda_set_int4_tensor_cores(*gpu_, tensor_cores);
      Dev og = Make(*gpu_, DType::F32, lc.n, lc.N, {});
      gpu_->linear_int4(*gctx_, og.t, xg.t, qg.t, sg.t);
      Sync();
      const std::vector<float> got = Read(*gpu_, og.t);
      // fp32 paths: summation order only. Tensor cores: fp16 rounding of input and weight (2^-11 each).
      const bool fp16 = tensor_cores && lc.n > 8;
      std::vector<double> bound = mag;
      for (double& b : bound) b = (fp16 ? 1.1e-3 : 1e-5) * b + 1e-6;
      EXPECT_TRUE(Within(got, want, bound));
      if (fp16) {
        double diff = 0.0, total = 0.0;
        for (size_t i = 0; i < want.size(); ++i) {
          diff += std::fabs(static_cast<double>(got[i]) - want[i]);
          total += std::fabs(static_cast<double>(want[i]));
        }
        EXPECT_LT(diff / total, 1e-3) << "mean relative error";
        if (lc.N == big_n)
          std::printf("[ NOTE     ] int4 tensor cores, M %lld: mean relative error %.2e\n", static_cast<long long>(lc.n),
                      diff / total);
      }
    }
  }
  cuda_set_int4_tensor_cores(*gpu_, true);
}

// ---- attention ------------------------------------------------------------------------------------------------

struct AttnCase {
  int32_t heads, kv_heads, head_dim;
  int64_t n, start;
};

std::string Name(const AttnCase& a) {
  return "heads " + std::to_string(a.heads) + "/" + std::to_string(a.kv_heads) + " hd " + std::to_string(a.head_dim) +
         " n " + std::to_string(a.n) + " start " + std::to_string(a.start);
}

class CudaAttention : public CudaOps {
 protected:
  // Random q and bf16-representable caches of `capacity` rows; the rows past `filled`, and row
  // `nan_row` if >= 0, hold NaN on the GPU (never visible: no result may depend on them).
  void Prepare(const AttnCase& a, int64_t capacity, int64_t filled, int64_t nan_row = -1) {
    const int64_t q_dim = int64_t{a.heads} * a.head_dim, kv_dim = int64_t{a.kv_heads} * a.head_dim;
    q_ = Random(static_cast<size_t>(a.n * q_dim), rng_, -2, 2);
    k_ = RoundAll(Random(static_cast<size_t>(capacity * kv_dim), rng_), DType::BF16);
    v_ = RoundAll(Random(static_cast<size_t>(capacity * kv_dim), rng_, -3, 3), DType::BF16);
    std::vector<float> kg = k_, vg = v_;
    for (int64_t i = filled * kv_dim; i < capacity * kv_dim; ++i) kg[static_cast<size_t>(i)] = vg[static_cast<size_t>(i)] = std::nanf("");
    if (nan_row >= 0)
      for (int64_t i = nan_row * kv_dim; i < (nan_row + 1) * kv_dim; ++i)
        kg[static_cast<size_t>(i)] = vg[static_cast<size_t>(i)] = std::nanf("");
    qg_ = Make(*gpu_, DType::F32, a.n, q_dim, q_);
    qc_ = Make(*cpu_, DType::F32, a.n, q_dim, q_);
    kg_ = Make(*gpu_, DType::BF16, capacity, kv_dim, kg);
    vg_ = Make(*gpu_, DType::BF16, capacity, kv_dim, vg);
    kc_ = Make(*cpu_, DType::F32, capacity, kv_dim, k_);
    vc_ = Make(*cpu_, DType::F32, capacity, kv_dim, v_);
    og_ = Make(*gpu_, DType::F32, a.n, q_dim, {});
    oc_ = Make(*cpu_, DType::F32, a.n, q_dim, {});
  }

  ::testing::AssertionResult Compare() {
    double vmax = 0.0;
    for (float x : v_) vmax = std::max(vmax, std::fabs(static_cast<double>(x)));
    return Within(Read(*gpu_, og_.t), Read(*cpu_, oc_.t), 0.0, 5e-5 * vmax + 1e-6);
  }

  std::vector<float> q_, k_, v_;
  Dev qg_, qc_, kg_, vg_, kc_, vc_, og_, oc_;
};

TEST_F(CudaAttention, CausalMatchesCpu) {
  const std::vector<AttnCase> cases{
      // GQA 16:1, head_dim 64: decode, odd prefill chunks, chunks after a prefix.
      {16, 1, 64, 1, 0}, {16, 1, 64, 7, 0}, {16, 1, 64, 33, 5}, {16, 1, 64, 1, 100},
      // GQA 8:1, head_dim 128.
      {16, 2, 128, 1, 0}, {16, 2, 128, 13, 77}, {16, 2, 128, 1, 1000}, {16, 2, 128, 40, 1000},
      // MHA, and the MiniCPM4 shapes (0.5B: 16/2 x 64; 8B: 32/2 x 128).
      {4, 4, 128, 9, 3}, {16, 2, 64, 64, 2000}, {32, 2, 128, 3, 511},
      // Generic head dims (the DPL=4 path with a partial lane, and DPL=32).
      {6, 2, 96, 11, 20}, {4, 1, 256, 5, 300},
  };
  for (const AttnCase& a : cases) {
    SCOPED_TRACE(Name(a));
    const int64_t capacity = a.start + a.n + 3;
    Prepare(a, capacity, a.start + a.n);
    const AttentionShape shape{a.heads, a.kv_heads, a.head_dim};
    gpu_->attention(*gctx_, og_.t, qg_.t, kg_.t, vg_.t, shape, a.start);
    cpu_->attention(*cctx_, oc_.t, qc_.t, kc_.t, vc_.t, shape, a.start);
    Sync();
    EXPECT_TRUE(Compare());
  }
}

// Long contexts: decode at 4k and 32k (split-KV with many splits) and a prefill chunk at 8k.
TEST_F(CudaAttention, LongContextsMatchCpu) {
  for (const AttnCase& a : {AttnCase{32, 2, 128, 1, 4095}, AttnCase{16, 2, 64, 1, 32767},
                            AttnCase{32, 2, 128, 1, 32767}, AttnCase{16, 2, 64, 16, 8000}}) {
    SCOPED_TRACE(Name(a));
    const int64_t capacity = a.start + a.n;
    Prepare(a, capacity, capacity);
    const AttentionShape shape{a.heads, a.kv_heads, a.head_dim};
    gpu_->attention(*gctx_, og_.t, qg_.t, kg_.t, vg_.t, shape, a.start);
    cpu_->attention(*cctx_, oc_.t, qc_.t, kc_.t, vc_.t, shape, a.start);
    Sync();
    EXPECT_TRUE(Compare());
  }
}

// Random trees of n nodes over a prefix: node i's mask marks its own bit and its ancestors'.
TEST_F(CudaAttention, TreeAttentionMatchesCpu) {
  // Emulated, the largest tree sits over a 1500-token prefix instead of 5000 (still several key splits).
  for (const AttnCase& a : {AttnCase{16, 1, 64, 12, 0}, AttnCase{16, 2, 128, 12, 10}, AttnCase{16, 2, 64, 60, 300},
                            AttnCase{4, 4, 128, 1, 37}, AttnCase{32, 2, 128, 64, kEmulated ? 1500 : 5000}}) {
    SCOPED_TRACE(Name(a));
    std::vector<uint64_t> masks(static_cast<size_t>(a.n));
    for (int64_t i = 0; i < a.n; ++i) {
      uint64_t m = uint64_t{1} << i;
      if (i > 0) {
        std::uniform_int_distribution<int64_t> parent(0, i - 1);
        m |= masks[static_cast<size_t>(parent(rng_))];
      }
      masks[static_cast<size_t>(i)] = m;
    }
    const int64_t capacity = a.start + 64 + 2;  // tree slots past the prefix; rows past the tree are NaN
    Prepare(a, capacity, a.start + a.n);
    const AttentionShape shape{a.heads, a.kv_heads, a.head_dim};
    gpu_->tree_attention(*gctx_, og_.t, qg_.t, kg_.t, vg_.t, shape, a.start, masks.data());
    cpu_->tree_attention(*cctx_, oc_.t, qc_.t, kc_.t, vc_.t, shape, a.start, masks.data());
    Sync();
    EXPECT_TRUE(Compare());
    // The masks already in device memory (a draft level's, from tree_expand), bounded by 64 bits: the
    // keys past the tree are NaN and must stay unseen.
    {
      Dev mg = MakeRaw(*gpu_, DType::I32, a.n, 2, masks.data());
      gpu_->tree_attention_resident(*gctx_, og_.t, qg_.t, kg_.t, vg_.t, shape, a.start,
                                    static_cast<const uint64_t*>(mg.t.data), 64);
      Sync();
      EXPECT_TRUE(Compare()) << "tree_attention_resident";
    }
    // The same tree one slot further on: slot 0 (row `prefix`) is seen by no query and holds NaN, as
    // an unwritten draft scratch row may; it shares a key tile with visible rows.
    if (a.n < 64) {
      for (uint64_t& m : masks) m <<= 1;
      Prepare(a, capacity, a.start + a.n + 1, a.start);
      gpu_->tree_attention(*gctx_, og_.t, qg_.t, kg_.t, vg_.t, shape, a.start, masks.data());
      cpu_->tree_attention(*cctx_, oc_.t, qc_.t, kc_.t, vc_.t, shape, a.start, masks.data());
      Sync();
      EXPECT_TRUE(Compare()) << "with an invisible NaN row";
    }
  }
}

// greedy_sample: the penalized row bit for bit and the chosen index, on random logits with a random
// penalty window, with every penalty and none, and with planted ties (the lowest index must win).
TEST_F(CudaOps, GreedySampleMatchesCpuIncludingPenaltiesAndTies) {
  for (int64_t vocab : {1, 7, 1000, 73448}) {
    for (int variant = 0; variant < 3; ++variant) {
      SCOPED_TRACE("vocab " + std::to_string(vocab) + " variant " + std::to_string(variant));
      std::vector<float> logits = Random(static_cast<size_t>(vocab), rng_, -8.0f, 8.0f);
      std::uniform_int_distribution<int64_t> pick(0, vocab - 1);
      if (variant == 2 && vocab > 1) {  // three equal maxima: the first must be chosen
        const float top = 100.0f;
        for (int k = 0; k < 3; ++k) logits[static_cast<size_t>(pick(rng_))] = top;
      }
      std::vector<int32_t> ids;
      std::vector<float> counts;
      if (variant != 0) {
        std::vector<char> used(static_cast<size_t>(vocab), 0);
        for (int k = 0; k < std::min<int64_t>(40, vocab); ++k) {
          const int64_t id = pick(rng_);
          if (used[static_cast<size_t>(id)]) continue;
          used[static_cast<size_t>(id)] = 1;
          ids.push_back(static_cast<int32_t>(id));
          counts.push_back(static_cast<float>(1 + k % 4));
        }
      }
      PenaltyTable t;
      t.ids = ids.data();
      t.counts = counts.data();
      t.n = static_cast<int32_t>(ids.size());
      if (variant != 0) t.repetition = 1.3f, t.frequency = 0.37f, t.presence = 0.21f;
      Dev g = Make(*gpu_, DType::F32, 1, vocab, logits), c = Make(*cpu_, DType::F32, 1, vocab, logits);
      const int32_t gpu_token = gpu_->greedy_sample(*gctx_, g.t, t, nullptr);
      const int32_t cpu_token = cpu_->greedy_sample(*cctx_, c.t, t, nullptr);
      EXPECT_EQ(gpu_token, cpu_token);
      EXPECT_TRUE(Exact(Read(*gpu_, g.t), Read(*cpu_, c.t))) << "penalized logits differ";
    }
  }
}

// sample_token: the same u picks the same token as the CPU backend (common/token_draw.h on the host)
// for plain temperature sampling and every truncation, on random logits with planted ties and a
// penalty window. A u within ~1e-12 of a boundary between two candidates' cumulative probabilities
// could legitimately differ (double sums in another order); the u values here are fixed and random.
TEST_F(CudaOps, SampleTokenMatchesCpuForTheSameUniformNumber) {
  struct Mix {
    float temperature;
    int32_t top_k;
    float top_p, min_p;
  };
  const Mix mixes[] = {{1.0f, 0, 1.0f, 0.0f}, {0.7f, 50, 1.0f, 0.0f}, {0.9f, 0, 0.8f, 0.0f},
                       {1.2f, 0, 1.0f, 0.05f}, {0.6f, 100, 0.95f, 0.01f}, {2.0f, 1, 1.0f, 0.0f}};
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int64_t vocab : {5, 1000, 73448}) {
    std::vector<float> logits = Random(static_cast<size_t>(vocab), rng_, -6.0f, 6.0f);
    for (int64_t i = 0; i + 3 < vocab; i += 97) logits[static_cast<size_t>(i + 3)] = logits[static_cast<size_t>(i)];  // ties
    std::vector<int32_t> ids{0, static_cast<int32_t>(vocab / 2), static_cast<int32_t>(vocab - 1)};
    std::vector<float> counts{1.0f, 2.0f, 3.0f};
    PenaltyTable t;
    t.ids = ids.data(), t.counts = counts.data(), t.n = static_cast<int32_t>(ids.size());
    t.repetition = 1.25f, t.frequency = 0.1f;
    for (const Mix& mix : mixes) {
      DrawParams p;
      p.temperature = mix.temperature, p.top_k = mix.top_k, p.top_p = mix.top_p, p.min_p = mix.min_p;
      for (int draw = 0; draw < 8; ++draw) {
        const double u = uniform(rng_);
        SCOPED_TRACE("vocab " + std::to_string(vocab) + " T " + std::to_string(p.temperature) + " top_k " +
                     std::to_string(p.top_k) + " top_p " + std::to_string(p.top_p) + " min_p " +
                     std::to_string(p.min_p) + " u " + std::to_string(u));
        Dev g = Make(*gpu_, DType::F32, 1, vocab, logits), c = Make(*cpu_, DType::F32, 1, vocab, logits);
        EXPECT_EQ(gpu_->sample_token(*gctx_, g.t, t, p, u, nullptr), cpu_->sample_token(*cctx_, c.t, t, p, u, nullptr));
      }
    }
  }
}

// Greedy and temperature sampling under a token mask (grammar-constrained decoding): the same token as
// the CPU backend, and an allowed one, for random masks from dense to a single token (bits set past
// the vocabulary too, which must be ignored), with a penalty window and planted ties among the allowed
// tokens, and logits that favour the masked-out tokens.
TEST_F(CudaOps, MaskedGreedyAndSampleTokenMatchCpu) {
  struct Mix {
    float temperature;
    int32_t top_k;
    float top_p, min_p;
  };
  const Mix mixes[] = {{0.0f, 0, 1.0f, 0.0f}, {1.0f, 0, 1.0f, 0.0f}, {0.7f, 50, 1.0f, 0.0f},
                       {0.9f, 0, 0.8f, 0.0f}, {1.2f, 0, 1.0f, 0.05f}, {0.6f, 100, 0.95f, 0.01f}};
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int64_t vocab : {5, 1000, 73448}) {
    for (double density : {0.4, 0.003, 0.0}) {  // 0: a single allowed token
      const int64_t words = (vocab + 31) / 32;
      std::vector<uint32_t> mask(static_cast<size_t>(words), 0u);
      std::uniform_int_distribution<int64_t> pick(0, vocab - 1);
      std::bernoulli_distribution allowed(density);
      for (int64_t i = 0; i < vocab; ++i)
        if (allowed(rng_)) mask[static_cast<size_t>(i / 32)] |= 1u << (i % 32);
      const int64_t one = pick(rng_);
      mask[static_cast<size_t>(one / 32)] |= 1u << (one % 32);  // at least one allowed token
      if (vocab % 32 != 0) mask.back() |= ~0u << (vocab % 32);
      auto is_allowed = [&](int32_t token) {
        return token >= 0 && token < vocab && ((mask[static_cast<size_t>(token / 32)] >> (token % 32)) & 1u);
      };
      std::vector<float> logits = Random(static_cast<size_t>(vocab), rng_, -6.0f, 6.0f);
      std::vector<int64_t> allowed_ids;
      for (int32_t i = 0; i < vocab; ++i) {
        if (is_allowed(i)) {
          allowed_ids.push_back(i);
        } else {
          logits[static_cast<size_t>(i)] += 8.0f;  // the best logits are masked out
        }
      }
      for (size_t j = 0; j + 2 < allowed_ids.size(); j += 7)  // ties among the allowed
        logits[static_cast<size_t>(allowed_ids[j + 2])] = logits[static_cast<size_t>(allowed_ids[j])];
      std::vector<int32_t> ids{0, static_cast<int32_t>(vocab / 2), static_cast<int32_t>(allowed_ids[0])};
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
      const std::vector<float> counts(ids.size(), 2.0f);
      PenaltyTable t;
      t.ids = ids.data(), t.counts = counts.data(), t.n = static_cast<int32_t>(ids.size());
      t.repetition = 1.25f, t.frequency = 0.1f;
      Dev gmask = MakeRaw(*gpu_, DType::I32, 1, words, mask.data()), cmask = MakeRaw(*cpu_, DType::I32, 1, words, mask.data());
      for (const Mix& mix : mixes) {
        DrawParams p;
        p.temperature = mix.temperature, p.top_k = mix.top_k, p.top_p = mix.top_p, p.min_p = mix.min_p;
        for (int draw = 0; draw < (mix.temperature > 0.0f ? 4 : 1); ++draw) {
          const double u = uniform(rng_);
          SCOPED_TRACE("vocab " + std::to_string(vocab) + " allowed " + std::to_string(allowed_ids.size()) + " T " +
                       std::to_string(p.temperature) + " top_k " + std::to_string(p.top_k) + " top_p " +
                       std::to_string(p.top_p) + " min_p " + std::to_string(p.min_p) + " u " + std::to_string(u));
          Dev g = Make(*gpu_, DType::F32, 1, vocab, logits), c = Make(*cpu_, DType::F32, 1, vocab, logits);
          const int32_t gpu_token = p.temperature > 0.0f ? gpu_->sample_token(*gctx_, g.t, t, p, u, &gmask.t)
                                                         : gpu_->greedy_sample(*gctx_, g.t, t, &gmask.t);
          const int32_t cpu_token = p.temperature > 0.0f ? cpu_->sample_token(*cctx_, c.t, t, p, u, &cmask.t)
                                                         : cpu_->greedy_sample(*cctx_, c.t, t, &cmask.t);
          EXPECT_EQ(gpu_token, cpu_token);
          EXPECT_TRUE(is_allowed(gpu_token)) << "token " << gpu_token;
        }
      }
    }
  }
}

// The draft's top-k log-probabilities: the same ids in the same order (ties to the lower index; a
// near tie could only part them through lse's last bit, and the planted ties here are exact), the
// log-probabilities within 1e-5 (lse summed in double in another order, rounded to fp32).
TEST_F(CudaOps, TopLogProbsMatchesCpu) {
  struct Case {
    int64_t rows, vocab;
    int32_t k;
  };
  for (const Case& tc : {Case{1, 73448, 10}, Case{10, 73448, 10}, Case{4, 32768, 63}, Case{3, 100, 1}, Case{2, 17, 17}}) {
    SCOPED_TRACE("rows " + std::to_string(tc.rows) + " vocab " + std::to_string(tc.vocab) + " k " + std::to_string(tc.k));
    std::vector<float> logits = Random(static_cast<size_t>(tc.rows * tc.vocab), rng_, -8, 8);
    // Exact ties among the best: copies of each row's maximum further along the row.
    for (int64_t r = 0; r < tc.rows; ++r) {
      float* row = logits.data() + r * tc.vocab;
      const int64_t at = std::max_element(row, row + tc.vocab) - row;
      row[(at + tc.vocab / 3) % tc.vocab] = row[at];
      row[(at + 2 * tc.vocab / 3) % tc.vocab] = row[at];
    }
    Dev g = Make(*gpu_, DType::F32, tc.rows, tc.vocab, logits), c = Make(*cpu_, DType::F32, tc.rows, tc.vocab, logits);
    const size_t n = static_cast<size_t>(tc.rows * tc.k);
    const std::vector<int32_t> none(n, -1);
    Dev gid = MakeRaw(*gpu_, DType::I32, tc.rows, tc.k, none.data()), cid = MakeRaw(*cpu_, DType::I32, tc.rows, tc.k, none.data());
    Dev glp = Make(*gpu_, DType::F32, tc.rows, tc.k, {}), clp = Make(*cpu_, DType::F32, tc.rows, tc.k, {});
    gpu_->draft_ops().top_log_probs(*gctx_, g.t, tc.k, gid.t, glp.t);
    cpu_->draft_ops().top_log_probs(*cctx_, c.t, tc.k, cid.t, clp.t);
    Sync();
    std::vector<int32_t> gids(n), cids(n);
    gpu_->download(gids.data(), gid.t.data, n * sizeof(int32_t));
    cpu_->download(cids.data(), cid.t.data, n * sizeof(int32_t));
    EXPECT_EQ(gids, cids);
    EXPECT_TRUE(Within(Read(*gpu_, glp.t), Read(*cpu_, clp.t), 0.0, 1e-5));
  }
}

// EAGLE-2 bookkeeping on the device (tree_expand / tree_select) against the CPU backend's host
// reference: random drafting rounds (random top-k rows with planted score ties, with and without an
// FR-Spec vocabulary, k and levels up to the limits) must leave bit-identical states (candidates,
// frontier tokens and masks, the tree) and identical gathered features. Scores are fp32 adds of the
// same operands in the same order on both, and the selections are a strict total order, so there is
// no tolerance.
TEST_F(CudaOps, DraftTreeBookkeepingMatchesCpu) {
  struct Case {
    int32_t k, levels, tree_size;
    bool fr_spec;
  };
  constexpr int32_t kHeadRows = 5000, kCols = 4096;
  std::vector<int32_t> vocabulary(kHeadRows);
  for (int32_t i = 0; i < kHeadRows; ++i) vocabulary[static_cast<size_t>(i)] = 70000 - 7 * i;
  Dev vg = MakeRaw(*gpu_, DType::I32, 1, kHeadRows, vocabulary.data());
  for (const Case& tc : {Case{10, 6, 60, true}, Case{10, 2, 12, false}, Case{32, 3, 64, true}, Case{63, 2, 64, false},
                         Case{1, 64, 64, false}, Case{8, 9, 40, true}}) {
    SCOPED_TRACE("k " + std::to_string(tc.k) + " levels " + std::to_string(tc.levels));
    auto zero = std::make_unique<DraftTreeState>();
    std::memset(zero.get(), 0, sizeof(DraftTreeState));
    Dev sg = MakeRaw(*gpu_, DType::I32, 1, sizeof(DraftTreeState) / 4, zero.get());
    Dev sc = MakeRaw(*cpu_, DType::I32, 1, sizeof(DraftTreeState) / 4, zero.get());
    Dev fg = Make(*gpu_, DType::F32, 64, kCols, {}), fc = Make(*cpu_, DType::F32, 64, kCols, {});
    std::uniform_int_distribution<int> quarter(-40, 0);
    for (int32_t level = 0; level < tc.levels; ++level) {
      const int32_t rows = level == 0 ? 1 : tc.k;
      std::vector<int32_t> ids;
      std::vector<float> lps;
      for (int32_t r = 0; r < rows; ++r) {
        std::vector<int32_t> row(kHeadRows);
        for (int32_t i = 0; i < kHeadRows; ++i) row[static_cast<size_t>(i)] = i;
        std::shuffle(row.begin(), row.end(), rng_);
        std::vector<float> lp(static_cast<size_t>(tc.k));
        for (float& v : lp) v = 0.125f * static_cast<float>(quarter(rng_));
        std::sort(lp.rbegin(), lp.rend());
        ids.insert(ids.end(), row.begin(), row.begin() + tc.k);
        lps.insert(lps.end(), lp.begin(), lp.end());
      }
      const std::vector<float> x = Random(static_cast<size_t>(rows) * kCols, rng_);
      Dev ig = MakeRaw(*gpu_, DType::I32, rows, tc.k, ids.data()), ic = MakeRaw(*cpu_, DType::I32, rows, tc.k, ids.data());
      Dev lg = MakeRaw(*gpu_, DType::F32, rows, tc.k, lps.data()), lc = MakeRaw(*cpu_, DType::F32, rows, tc.k, lps.data());
      Dev xg = Make(*gpu_, DType::F32, rows, kCols, x), xc = Make(*cpu_, DType::F32, rows, kCols, x);
      TreeExpandArgs ga, ca;
      ga.state = sg.t.data, ca.state = sc.t.data;
      ga.ids = ig.t, ca.ids = ic.t;
      ga.log_probs = lg.t, ca.log_probs = lc.t;
      ga.vocabulary = tc.fr_spec ? vg.t.as<const int32_t>() : nullptr;
      ca.vocabulary = tc.fr_spec ? vocabulary.data() : nullptr;
      ga.level = ca.level = level;
      ga.k = ca.k = tc.k;
      ga.last = ca.last = level + 1 == tc.levels;
      ga.x = xg.t, ca.x = xc.t;
      ga.features = fg.t, ca.features = fc.t;
      gpu_->draft_ops().tree_expand(*gctx_, ga);
      cpu_->draft_ops().tree_expand(*cctx_, ca);
      Sync();
      if (!ga.last) {
        EXPECT_TRUE(Exact(Read(*gpu_, fg.t), Read(*cpu_, fc.t))) << "gathered features, level " << level;
      }
    }
    const int32_t candidates = tc.k + (tc.levels - 1) * tc.k * tc.k;
    gpu_->draft_ops().tree_select(*gctx_, sg.t.data, candidates, tc.tree_size, 4242);
    cpu_->draft_ops().tree_select(*cctx_, sc.t.data, candidates, tc.tree_size, 4242);
    Sync();
    auto gs = std::make_unique<DraftTreeState>(), cs = std::make_unique<DraftTreeState>();
    gpu_->download(gs.get(), sg.t.data, sizeof(DraftTreeState));
    cpu_->download(cs.get(), sc.t.data, sizeof(DraftTreeState));
    EXPECT_EQ(std::memcmp(gs.get(), cs.get(), sizeof(DraftTreeState)), 0) << "states differ";
    EXPECT_EQ(gs->tree.size, std::min(tc.tree_size, candidates + 1));
  }
}

// Ops queued back to back on one stream without synchronising in between see each other's results,
// and two contexts (two sessions) work independently over the same weights.
TEST_F(CudaOps, QueuedOpsAndTwoContexts) {
  const int64_t n = 4, K = 256, N = 128;
  const std::vector<float> w = RoundAll(Random(static_cast<size_t>(N * K), rng_), DType::BF16);
  const std::vector<float> x = Random(static_cast<size_t>(n * K), rng_);
  const std::vector<float> nw = Random(static_cast<size_t>(K), rng_, 0.5f, 1.5f);
  Dev wg = Make(*gpu_, DType::BF16, N, K, w), wc = Make(*cpu_, DType::BF16, N, K, w);
  Dev nwg = Make(*gpu_, DType::F32, 1, K, nw), nwc = Make(*cpu_, DType::F32, 1, K, nw);
  std::unique_ptr<ExecContext> second = gpu_->create_context(1);
  std::vector<float> results[2];
  for (int ci = 0; ci < 2; ++ci) {
    ExecContext& ctx = ci == 0 ? *gctx_ : *second;
    Dev xg = Make(*gpu_, DType::F32, n, K, x), og = Make(*gpu_, DType::F32, n, N, {});
    gpu_->rms_norm(ctx, xg.t, xg.t, nwg.t, 1e-5f);
    gpu_->linear(ctx, og.t, xg.t, wg.t);
    gpu_->scale(ctx, og.t, 0.5f);
    gpu_->synchronize(ctx);
    results[ci] = Read(*gpu_, og.t);
  }
  Dev xc = Make(*cpu_, DType::F32, n, K, x), oc = Make(*cpu_, DType::F32, n, N, {});
  cpu_->rms_norm(*cctx_, xc.t, xc.t, nwc.t, 1e-5f);
  cpu_->linear(*cctx_, oc.t, xc.t, wc.t);
  cpu_->scale(*cctx_, oc.t, 0.5f);
  // The CUDA linear rounds the normed input to bf16: allow that rounding (2^-8 of sum |x w|) and the
  // normalisation's own difference (2e-5 relative), times the 0.5 scale.
  const std::vector<float> want = Read(*cpu_, oc.t);
  std::vector<double> bound = AbsDot(Read(*cpu_, xc.t), w, n, N, K);
  for (double& b : bound) b = 0.5 * (1.0 / 256 + 1e-4 + 2e-5) * b + 1e-6;
  EXPECT_TRUE(Within(results[0], want, bound));
  EXPECT_TRUE(Exact(results[1], results[0])) << "two contexts, same inputs: bit-identical (deterministic kernels)";
}

// ---- InfLLM v2 sparse attention ---------------------------------------------------------------------------

struct SparseCase {
  const char* name;
  int32_t heads, kv_heads, head_dim;
  SparseAttentionParams params;
  int64_t capacity;
  std::vector<std::pair<int64_t, int64_t>> calls;  // (start, n); a start before the last end is a rewind
};

SparseAttentionParams SmallSparse(int32_t topk, int32_t window) {
  SparseAttentionParams p;
  p.kernel_size = 8, p.kernel_stride = 4, p.init_blocks = 1, p.block_size = 16, p.window_size = window, p.topk = topk;
  return p;
}

infllm::SparseConfig ReferenceConfig(const SparseAttentionParams& p) {
  infllm::SparseConfig c;
  c.kernel_size = p.kernel_size, c.kernel_stride = p.kernel_stride, c.init_blocks = p.init_blocks;
  c.block_size = p.block_size, c.window_size = p.window_size, c.topk = p.topk, c.dense_len = -1;
  return c;
}

// A sequence of sparse_attention calls on one cache, CUDA vs CPU after every call (the file comment
// has the tolerances). Calls that start past the previous end read rows already in the cache as
// history (a dense prefill wrote them); a rewind truncates both states and rewrites the rows.
TEST_F(CudaOps, SparseAttentionMatchesCpuAcrossPrefillDecodeAndRewind) {
  const std::vector<SparseCase> cases{
      {"GQA 8:1 hd 64, small blocks", 16, 2, 64, SmallSparse(6, 32), 640,
       {{0, 300}, {300, 1}, {301, 1}, {302, 37}, {339, 1}, {200, 50}, {250, 1}, {600, 3}}},
      {"MHA hd 128, small blocks", 4, 4, 128, SmallSparse(3, 16), 300, {{0, 5}, {5, 200}, {205, 1}}},
      {"only forced blocks: top-k 0", 8, 2, 64, SmallSparse(0, 32), 200, {{0, 150}, {150, 1}}},
      {"nothing selectable: top-k 0, no window", 8, 2, 64, SmallSparse(0, 0), 64, {{0, 40}}},
      {"MiniCPM4-8B shape (32/2 x 128), default sparse_config", 32, 2, 128, SparseAttentionParams{}, 32800,
       {{20000, 16}, {20016, 1}, {20017, 1}, {32767, 1}, {20010, 5}, {20015, 1}}},
      {"GQA 8:1 hd 64, default sparse_config", 16, 2, 64, SparseAttentionParams{}, 9100, {{8990, 33}, {9023, 1}}},
  };
  int64_t compared_pairs = 0, tie_pairs = 0;
  for (const SparseCase& sc : cases) {
    SCOPED_TRACE(sc.name);
    const int64_t hd = sc.head_dim, kv_heads = sc.kv_heads, G = sc.heads / sc.kv_heads;
    const int64_t q_dim = sc.heads * hd, kv_dim = kv_heads * hd, cap = sc.capacity;
    const infllm::SparseConfig cfg = ReferenceConfig(sc.params);
    std::vector<float> k = RoundAll(Random(static_cast<size_t>(cap * kv_dim), rng_), DType::BF16);
    std::vector<float> v = RoundAll(Random(static_cast<size_t>(cap * kv_dim), rng_, -3, 3), DType::BF16);
    Dev kg = Make(*gpu_, DType::BF16, cap, kv_dim, k), vg = Make(*gpu_, DType::BF16, cap, kv_dim, v);
    Dev kc = Make(*cpu_, DType::F32, cap, kv_dim, k), vc = Make(*cpu_, DType::F32, cap, kv_dim, v);
    double vmax = 0.0;
    for (float x : v) vmax = std::max(vmax, std::fabs(static_cast<double>(x)));
    const AttentionShape shape{sc.heads, sc.kv_heads, sc.head_dim};
    std::unique_ptr<AttentionState> gstate = gpu_->create_sparse_attention_state(sc.params, shape, cap);
    std::unique_ptr<AttentionState> cstate = cpu_->create_sparse_attention_state(sc.params, shape, cap);
    int64_t end = 0;
    for (const auto& [start, n] : sc.calls) {
      SCOPED_TRACE("call start " + std::to_string(start) + " n " + std::to_string(n));
      if (start < end) {  // rewind: new keys and values for the rewritten rows
        gstate->truncate(start);
        cstate->truncate(start);
        const std::vector<float> nk = RoundAll(Random(static_cast<size_t>(n * kv_dim), rng_), DType::BF16);
        const std::vector<float> nv = RoundAll(Random(static_cast<size_t>(n * kv_dim), rng_, -3, 3), DType::BF16);
        std::copy(nk.begin(), nk.end(), k.begin() + start * kv_dim);
        std::copy(nv.begin(), nv.end(), v.begin() + start * kv_dim);
        const size_t off = static_cast<size_t>(start * kv_dim);
        gpu_->upload(static_cast<uint16_t*>(kg.t.data) + off, Encode(nk, DType::BF16).data(), nk.size() * 2);
        gpu_->upload(static_cast<uint16_t*>(vg.t.data) + off, Encode(nv, DType::BF16).data(), nv.size() * 2);
        cpu_->upload(static_cast<float*>(kc.t.data) + off, nk.data(), nk.size() * 4);
        cpu_->upload(static_cast<float*>(vc.t.data) + off, nv.data(), nv.size() * 4);
      }
      end = start + n;
      const std::vector<float> q = Random(static_cast<size_t>(n * q_dim), rng_, -2, 2);
      Dev qg = Make(*gpu_, DType::F32, n, q_dim, q), qc = Make(*cpu_, DType::F32, n, q_dim, q);
      Dev og = Make(*gpu_, DType::F32, n, q_dim, {}), oc = Make(*cpu_, DType::F32, n, q_dim, {});
      gpu_->sparse_attention(*gctx_, og.t, qg.t, kg.t, vg.t, shape, start, *gstate);
      cpu_->sparse_attention(*cctx_, oc.t, qc.t, kc.t, vc.t, shape, start, *cstate);
      Sync();

      // Compressed keys, bit for bit, against engine/infllm's batch compression of rows [0, end).
      std::vector<infllm::CompressedKeys> ck(static_cast<size_t>(kv_heads));
      for (int64_t h = 0; h < kv_heads; ++h) {
        std::vector<float> kh(static_cast<size_t>(end * hd));
        for (int64_t r = 0; r < end; ++r)
          std::copy_n(k.begin() + r * kv_dim + h * hd, hd, kh.begin() + r * hd);
        ck[static_cast<size_t>(h)] = infllm::compress_keys(cfg, kh.data(), end, hd);
      }
      for (int level : {1, 2}) {
        int64_t kernels = -1;
        const std::vector<float> got = cuda_sparse_compressed_keys(*gctx_, *gstate, level, &kernels);
        for (int64_t h = 0; h < kv_heads; ++h) {
          const infllm::CompressedKeys& want = ck[static_cast<size_t>(h)];
          const std::vector<float>& wk = level == 1 ? want.c1 : want.c2;
          ASSERT_EQ(kernels, level == 1 ? want.n1 : want.n2) << "level " << level;
          // (No compressed kernel yet: empty vectors, whose data() may be null, which memcmp must not see.)
          EXPECT_TRUE(wk.empty() || std::memcmp(got.data() + h * kernels * hd, wk.data(), wk.size() * sizeof(float)) == 0)
              << "level " << level << " KV head " << h;
        }
      }

      // Selections and outputs.
      const std::vector<std::vector<int32_t>> selection = cuda_sparse_last_selection(*gctx_);
      const bool nothing = sc.params.topk == 0 && sc.params.window_size == 0;
      if (!nothing) {
        ASSERT_EQ(static_cast<int64_t>(selection.size()), n * kv_heads);
      }
      const std::vector<float> got = Read(*gpu_, og.t), want = Read(*cpu_, oc.t);
      const int64_t n_blocks = (end + cfg.block_size - 1) / cfg.block_size;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t h = 0; h < kv_heads; ++h) {
          const float* q_group = q.data() + i * q_dim + h * G * hd;
          const infllm::CompressedKeys& ckh = ck[static_cast<size_t>(h)];
          const std::vector<int32_t> want_sel = infllm::select_for_query(cfg, q_group, static_cast<int>(G), ckh,
                                                                         start + i, n_blocks);
          if (!nothing && selection[static_cast<size_t>(i * kv_heads + h)] != want_sel) {
            // Only a near tie at the top-k boundary may differ.
            std::vector<float> S(static_cast<size_t>(ckh.n1)), B(static_cast<size_t>(n_blocks));
            infllm::stage1_kernel_scores(cfg, q_group, static_cast<int>(G), ckh, start + i, S.data());
            infllm::pool_to_blocks(cfg, S.data(), ckh.n1, n_blocks, B.data());
            infllm::force_blocks(cfg, start + i, n_blocks, B.data());
            std::vector<float> sorted = B;
            std::sort(sorted.begin(), sorted.end(), std::greater<float>());
            const float kth = sorted[static_cast<size_t>(std::min<int64_t>(cfg.topk_total(), n_blocks) - 1)];
            std::vector<int32_t> diff;
            const std::vector<int32_t>& gs = selection[static_cast<size_t>(i * kv_heads + h)];
            std::set_symmetric_difference(gs.begin(), gs.end(), want_sel.begin(), want_sel.end(),
                                          std::back_inserter(diff));
            for (int32_t b : diff)
              EXPECT_LE(std::fabs(static_cast<double>(B[static_cast<size_t>(b)]) - kth), 1e-5 * std::fabs(kth))
                  << "token " << i << " KV head " << h << ": block " << b << " (score " << B[static_cast<size_t>(b)]
                  << ") selected differently, k-th score " << kth;
            ++tie_pairs;
            continue;
          }
          ++compared_pairs;
          for (int64_t g = 0; g < G; ++g) {
            const size_t off = static_cast<size_t>(i * q_dim + (h * G + g) * hd);
            const std::vector<float> a(got.begin() + off, got.begin() + off + hd);
            const std::vector<float> b(want.begin() + off, want.begin() + off + hd);
            EXPECT_TRUE(Within(a, b, 0.0, 5e-5 * vmax + 1e-6)) << "token " << i << " head " << h * G + g;
          }
        }
      }
    }
  }
  EXPECT_GT(compared_pairs, 0);
  EXPECT_LE(tie_pairs, compared_pairs / 50) << tie_pairs << " near-tie selections of " << compared_pairs + tie_pairs;
  std::printf("[ NOTE     ] sparse attention: %lld (token, KV head) pairs compared, %lld near-tie selections\n",
              static_cast<long long>(compared_pairs), static_cast<long long>(tie_pairs));
}

}  // namespace
