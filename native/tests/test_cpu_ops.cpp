// Every CPU op and vector kernel against a naive double-precision version on fresh random inputs,
// for every instruction-set path this CPU supports (scalar, AVX2, NEON) and for 1 and 3 threads.
//
// Tolerance for a computed dot product: |got - exact| <= 1e-5 * sum_i |a_i * b_i| + 1e-6. fp32
// accumulation of K terms errs by at most about K * 6e-8 times that sum in the worst case and by
// ~sqrt(K) * 6e-8 typically, so the bound holds with a wide margin for K <= 4096, while any indexing
// or dtype mistake produces errors of the order of the sum itself.
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"
#include "common/dtype.h"

namespace mcpm {
namespace {

std::vector<const CpuKernels*> all_kernels() {
  std::vector<const CpuKernels*> out;
  for (const char* const* level = kCpuIsaLevels; *level != nullptr; ++level)
    if (const CpuKernels* k = cpu_kernels_for(*level)) out.push_back(k);
  return out;
}

std::mt19937_64& rng() {
  static std::mt19937_64 r(std::random_device{}());
  return r;
}

std::vector<float> random_floats(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) {
    do x = d(rng());
    while (x == 0.0f);
  }
  return v;
}

// A weight matrix in a storage dtype, with the exact values it represents.
struct Weight {
  DType dtype;
  int64_t rows, cols;
  std::vector<unsigned char> bytes;
  std::vector<double> values;
  Tensor tensor() { return Tensor{bytes.data(), dtype, rows, cols}; }
};

Weight random_weight(DType dtype, int64_t rows, int64_t cols, float lo = -1.0f, float hi = 1.0f) {
  Weight w{dtype, rows, cols, {}, {}};
  const std::vector<float> src = random_floats(static_cast<size_t>(rows * cols), lo, hi);
  w.bytes.resize(src.size() * dtype_size(dtype));
  w.values.resize(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (dtype == DType::F32) {
      std::memcpy(w.bytes.data() + 4 * i, &src[i], 4);
      w.values[i] = src[i];
    } else {
      uint16_t h;
      if (dtype == DType::BF16) {
        h = f32_to_bf16(src[i]);
        w.values[i] = bf16_to_f32(h);
      } else {
        // Round to fp16 by truncation through an exact path: build from the f32 bits (normal range).
        uint32_t u = f32_to_bits(src[i]);
        const int32_t e = static_cast<int32_t>((u >> 23) & 0xff) - 127 + 15;
        h = e <= 0 ? static_cast<uint16_t>((u >> 16) & 0x8000u)
                   : static_cast<uint16_t>(((u >> 16) & 0x8000u) | (static_cast<uint32_t>(e) << 10) | ((u >> 13) & 0x3ffu));
        w.values[i] = f16_to_f32(h);
      }
      std::memcpy(w.bytes.data() + 2 * i, &h, 2);
    }
  }
  return w;
}

// A weight row times an activation row in double, and the sum of the products' magnitudes (the scale
// of the rounding error a float computation may make).
struct ReferenceDot {
  double exact = 0, abs_sum = 0;
};
template <typename W>
ReferenceDot reference_dot(const W* w, const float* x, int64_t K) {
  ReferenceDot d;
  for (int64_t j = 0; j < K; ++j) {
    d.exact += w[j] * x[j];
    d.abs_sum += std::fabs(w[j] * x[j]);
  }
  return d;
}

void expect_close(double got, double exact, double abs_sum, const std::string& what) {
  const double tol = 1e-5 * abs_sum + 1e-6;
  ASSERT_LE(std::fabs(got - exact), tol) << what << ": got " << got << ", exact " << exact;
}

const DType kDtypes[] = {DType::F32, DType::F16, DType::BF16};

#if defined(MCPM_HAVE_AVX2_KERNELS) && (defined(__GNUC__) || defined(__clang__))
// F16C from CPUID leaf 1 (ECX bit 29), asked directly: Clang's __builtin_cpu_supports lacks "f16c".
bool CpuHasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx >> 29 & 1u);
}
#endif

// The vector path of the build's architecture exists and is what runs by default, so the parity
// tests below really cover it (not only the scalar fallback).
TEST(Kernels, VectorPathIsCompiledAndSelectedByDefault) {
#if defined(MCPM_HAVE_NEON_KERNELS)
  ASSERT_NE(cpu_kernels_for("neon"), nullptr);
#elif defined(MCPM_HAVE_AVX2_KERNELS) && (defined(__GNUC__) || defined(__clang__))
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && CpuHasF16c()) {
    ASSERT_NE(cpu_kernels_for("avx2"), nullptr);
  }
#if defined(MCPM_HAVE_AVX512_KERNELS) && !defined(__clang__)
  // The AVX-512 levels follow the CPU's own report (GCC knows these feature names).
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  EXPECT_EQ(cpu_kernels_for("avx512") != nullptr, avx512);
  EXPECT_EQ(cpu_kernels_for("avx512vnni") != nullptr, avx512 && __builtin_cpu_supports("avx512vnni"));
#endif
#endif
  // By default the best level this CPU runs (levels are listed best first).
  const CpuKernels* best = nullptr;
  for (const char* const* level = kCpuIsaLevels; *level != nullptr && best == nullptr; ++level)
    best = cpu_kernels_for(*level);
  if (std::getenv("MCPM_CPU_ISA") == nullptr) {
    EXPECT_EQ(&cpu_kernels(), best) << cpu_kernels().name << " selected, " << best->name << " is the best";
  }
  EXPECT_NE(cpu_kernels_for("scalar"), nullptr);
  EXPECT_EQ(cpu_kernels_for("no-such-isa"), nullptr);
}

// ---- conversions --------------------------------------------------------------------------------

TEST(Dtype, Fp16ConversionIsExactForEveryBitPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    const uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    if (exp == 31) {
      EXPECT_TRUE(mant ? std::isnan(f) : std::isinf(f)) << h;
      continue;
    }
    const double expected = exp == 0 ? sign * mant * std::ldexp(1.0, -24) : sign * (1024 + mant) * std::ldexp(1.0, static_cast<int>(exp) - 25);
    ASSERT_EQ(static_cast<double>(f), expected) << "fp16 bits " << h;
  }
}

TEST(Dtype, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f808000u)), 0x3f80);  // tie -> even
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f818000u)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f808001u)), 0x3f81);  // above the tie
  for (float v : random_floats(1000, -100, 100)) {
    const float r = bf16_to_f32(f32_to_bf16(v));
    EXPECT_LE(std::fabs(r - v), std::fabs(v) * (1.0 / 256)) << v;
  }
}

TEST(Kernels, ConversionsMatchScalarDefinition) {
  for (const CpuKernels* k : all_kernels()) {
    for (int64_t n : {1, 7, 8, 9, 33, 1000}) {
      std::vector<uint16_t> src(static_cast<size_t>(n));
      std::uniform_int_distribution<int> d(0, 65535);
      for (auto& s : src) {
        do s = static_cast<uint16_t>(d(rng()));
        while (((s >> 10) & 0x1f) == 0x1f || ((s >> 7) & 0xff) == 0xff);  // finite in both formats
      }
      std::vector<float> out(static_cast<size_t>(n));
      k->f16_to_f32(src.data(), out.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], f16_to_f32(src[i])) << k->name;
      k->bf16_to_f32(src.data(), out.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], bf16_to_f32(src[i])) << k->name;
    }
  }
}

// ---- vector kernels -----------------------------------------------------------------------------

TEST(Kernels, GemvAllDtypesAndShapes) {
  for (const CpuKernels* k : all_kernels()) {
    for (DType dt : kDtypes) {
      for (int64_t rows : {1, 3, 4, 5, 13}) {
        for (int64_t K : {1, 7, 8, 15, 16, 17, 64, 100, 1024}) {
          Weight w = random_weight(dt, rows, K);
          const std::vector<float> x = random_floats(static_cast<size_t>(K));
          std::vector<float> y(static_cast<size_t>(rows));
          if (dt == DType::F32) k->gemv_f32(reinterpret_cast<const float*>(w.bytes.data()), x.data(), y.data(), rows, K);
          if (dt == DType::F16) k->gemv_f16(reinterpret_cast<const uint16_t*>(w.bytes.data()), x.data(), y.data(), rows, K);
          if (dt == DType::BF16) { std::vector<float> xp(x.size()); k->pack_x_bf16(x.data(), xp.data(), K); k->gemv_bf16(reinterpret_cast<const uint16_t*>(w.bytes.data()), x.data(), xp.data(), y.data(), rows, K); }
          for (int64_t r = 0; r < rows; ++r) {
            double exact = 0, abs_sum = 0;
            for (int64_t i = 0; i < K; ++i) {
              exact += w.values[r * K + i] * x[i];
              abs_sum += std::fabs(w.values[r * K + i] * x[i]);
            }
            expect_close(y[r], exact, abs_sum,
                         std::string(k->name) + " gemv " + dtype_name(dt) + " rows=" + std::to_string(rows) +
                             " K=" + std::to_string(K));
          }
        }
      }
    }
  }
}

TEST(Kernels, Gemm4DotAxpyScale) {
  for (const CpuKernels* k : all_kernels()) {
    for (int64_t K : {1, 9, 16, 31, 256}) {
      for (int64_t T : {1, 2, 3, 6}) {
        const int64_t ldx = K + 3, ldo = 7;
        const std::vector<float> W = random_floats(static_cast<size_t>(4 * K));
        const std::vector<float> X = random_floats(static_cast<size_t>(T * ldx));
        std::vector<float> out(static_cast<size_t>(T * ldo), 12345.0f);
        k->gemm4_f32(W.data(), K, X.data(), ldx, T, out.data(), ldo);
        for (int64_t t = 0; t < T; ++t) {
          for (int r = 0; r < 4; ++r) {
            double exact = 0, abs_sum = 0;
            for (int64_t i = 0; i < K; ++i) {
              exact += static_cast<double>(W[r * K + i]) * X[t * ldx + i];
              abs_sum += std::fabs(static_cast<double>(W[r * K + i]) * X[t * ldx + i]);
            }
            expect_close(out[t * ldo + r], exact, abs_sum, std::string(k->name) + " gemm4");
          }
          for (int64_t c = 4; c < ldo; ++c) ASSERT_EQ(out[t * ldo + c], 12345.0f) << "gemm4 wrote outside its tile";
        }
      }
      const std::vector<float> a = random_floats(static_cast<size_t>(K)), b = random_floats(static_cast<size_t>(K));
      double exact = 0, abs_sum = 0;
      for (int64_t i = 0; i < K; ++i) {
        exact += static_cast<double>(a[i]) * b[i];
        abs_sum += std::fabs(static_cast<double>(a[i]) * b[i]);
      }
      expect_close(k->dot_f32(a.data(), b.data(), K), exact, abs_sum, std::string(k->name) + " dot");
      std::vector<float> y = b;
      k->axpy_f32(0.37f, a.data(), y.data(), K);
      for (int64_t i = 0; i < K; ++i) ASSERT_NEAR(y[i], b[i] + 0.37 * a[i], 1e-6) << k->name << " axpy";
      y = b;
      k->scale_f32(-1.5f, y.data(), K);
      for (int64_t i = 0; i < K; ++i) ASSERT_NEAR(y[i], -1.5 * b[i], 1e-6) << k->name << " scale";
    }
  }
}

// The direct multi-token bf16 kernel (ISAs that have one): every row/token tail, K tails past the
// 16-element blocks, strided inputs and outputs, nothing written outside the tile.
TEST(Kernels, GemmBf16MatchesExact) {
  int tested = 0;
  for (const CpuKernels* k : all_kernels()) {
    if (k->gemm_bf16 == nullptr) continue;
    ++tested;
    for (int64_t rows : {1, 2, 3, 5})
      for (int64_t K : {1, 15, 16, 17, 100, 256})
        for (int64_t T : {1, 2, 3, 4, 5, 9}) {
          const int64_t ldx = K + 3, ldo = rows + 2;
          Weight w = random_weight(DType::BF16, rows, K);
          const std::vector<float> X = random_floats(static_cast<size_t>(T * ldx));
          std::vector<float> Xp(X.size());
          for (int64_t t = 0; t < T; ++t) k->pack_x_bf16(X.data() + t * ldx, Xp.data() + t * ldx, K);
          std::vector<float> out(static_cast<size_t>(T * ldo), 12345.0f);
          k->gemm_bf16(reinterpret_cast<const uint16_t*>(w.bytes.data()), rows, K, X.data(), Xp.data(), ldx, T,
                       out.data(), ldo);
          for (int64_t t = 0; t < T; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
              double exact = 0, abs_sum = 0;
              for (int64_t i = 0; i < K; ++i) {
                exact += w.values[r * K + i] * X[t * ldx + i];
                abs_sum += std::fabs(w.values[r * K + i] * X[t * ldx + i]);
              }
              expect_close(out[t * ldo + r], exact, abs_sum,
                           std::string(k->name) + " gemm_bf16 rows=" + std::to_string(rows) + " K=" +
                               std::to_string(K) + " T=" + std::to_string(T));
            }
            for (int64_t c = rows; c < ldo; ++c) ASSERT_EQ(out[t * ldo + c], 12345.0f) << "wrote outside its tile";
          }
        }
  }
#if defined(__x86_64__)
  if (cpu_kernels_for("avx2") != nullptr) {
    EXPECT_GT(tested, 0) << "the AVX2 table has gemm_bf16";
  }
#endif
}

// The bf16-activation prefill kernels (levels with a bf16 dot product): to_bf16 is f32_to_bf16 (round
// to nearest even) element by element, tails included; gemm_bf16_dp against the exact sum of w * bf16(x)
// within 1e-5 * sum |w * bf16(x)| (bf16 products are exact in fp32, only the summation order differs),
// every row/token tail, K tails past the 32-element steps, strided operands, nothing written outside.
TEST(Kernels, GemmBf16ActivationsMatchExact) {
  int tested = 0;
  for (const CpuKernels* k : all_kernels()) {
    if (k->gemm_bf16_dp == nullptr) continue;
    ++tested;
    for (int64_t n : {1, 31, 32, 33, 100}) {
      std::vector<float> x = random_floats(static_cast<size_t>(n), -3.0f, 3.0f);
      x[0] = bf16_to_f32(0x3f81) + (bf16_to_f32(0x3f82) - bf16_to_f32(0x3f81)) / 2;  // a tie: rounds to even
      std::vector<uint16_t> got(static_cast<size_t>(n) + 1, 0xabcd);
      k->to_bf16(x.data(), got.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], f32_to_bf16(x[i])) << k->name << " to_bf16 n=" << n << " i=" << i;
      ASSERT_EQ(got[n], 0xabcd) << "wrote past the end";
    }
    for (int64_t rows : {1, 3, 4, 5, 9})
      for (int64_t K : {1, 31, 32, 33, 100, 256})
        for (int64_t T : {1, 2, 3, 4, 5, 9}) {
          const int64_t ldx = K + 3, ldo = rows + 2;
          Weight w = random_weight(DType::BF16, rows, K);
          std::vector<uint16_t> xb(static_cast<size_t>(T * ldx));
          for (uint16_t& v : xb) v = f32_to_bf16(random_floats(1)[0]);
          std::vector<float> out(static_cast<size_t>(T * ldo), 12345.0f);
          k->gemm_bf16_dp(reinterpret_cast<const uint16_t*>(w.bytes.data()), rows, K, xb.data(), ldx, T, out.data(),
                          ldo);
          for (int64_t t = 0; t < T; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
              double exact = 0, abs_sum = 0;
              for (int64_t i = 0; i < K; ++i) {
                const double p = w.values[r * K + i] * bf16_to_f32(xb[t * ldx + i]);
                exact += p;
                abs_sum += std::fabs(p);
              }
              expect_close(out[t * ldo + r], exact, abs_sum,
                           std::string(k->name) + " gemm_bf16_dp rows=" + std::to_string(rows) + " K=" +
                               std::to_string(K) + " T=" + std::to_string(T));
            }
            for (int64_t c = rows; c < ldo; ++c) ASSERT_EQ(out[t * ldo + c], 12345.0f) << "wrote outside its tile";
          }
        }
  }
#if defined(__x86_64__)
  if (cpu_kernels_for("avx512bf16") != nullptr) {
    EXPECT_GT(tested, 0) << "the avx512bf16 level has gemm_bf16_dp";
  }
#endif
}

// ---- backend ops --------------------------------------------------------------------------------

// The ops at their exact precision (fp32 activations); CpuOps.LinearBf16Precision and the int4 tests
// cover Fast.
struct OpsFixture {
  explicit OpsFixture(const CpuKernels& k, int32_t threads)
      : backend(k, CpuPrecision::Exact), ctx(backend.create_context(threads)) {}
  CpuBackend backend;
  std::unique_ptr<ExecContext> ctx;
};

Tensor f32_tensor(std::vector<float>& v, int64_t rows, int64_t cols) { return Tensor{v.data(), DType::F32, rows, cols}; }

template <typename F>
void for_each_backend(F f) {
  for (const CpuKernels* k : all_kernels())
    for (int32_t threads : {1, 3}) {
      OpsFixture fx(*k, threads);
      SCOPED_TRACE(std::string(k->name) + " threads=" + std::to_string(threads));
      f(fx);
    }
}

TEST(CpuOps, Linear) {
  for_each_backend([](OpsFixture& fx) {
    for (DType dt : kDtypes) {
      for (int64_t n : {1, 2, 5, 17}) {  // 17: past the direct bf16 kernel's token limit
        for (int64_t N : {1, 4, 7, 33}) {
          const int64_t K = 40;
          Weight w = random_weight(dt, N, K);
          std::vector<float> x = random_floats(static_cast<size_t>(n * K));
          std::vector<float> y(static_cast<size_t>(n * N));
          fx.backend.linear(*fx.ctx, f32_tensor(y, n, N), f32_tensor(x, n, K), w.tensor());
          for (int64_t i = 0; i < n; ++i)
            for (int64_t r = 0; r < N; ++r) {
              const ReferenceDot d = reference_dot(w.values.data() + r * K, x.data() + i * K, K);
              expect_close(y[i * N + r], d.exact, d.abs_sum, std::string("linear ") + dtype_name(dt));
            }
        }
      }
    }
  });
}

// bf16 linears at decode, verification and prefill sizes: Exact keeps fp32 activations (within
// 1e-5 * sum |w * x| of the exact sum); Fast may round them to bf16, which moves each product by at most
// 2^-9 |w * x|, so it must be within (2^-9 + 1e-5) * sum |w * x|. Odd N and K exercise the row and K
// tails. Fast also computes each token exactly as it would alone (bitwise): batches of sessions and
// speculative verification give a token the logits of its own decode step.
TEST(CpuOps, LinearBf16Precision) {
  for (const CpuKernels* k : all_kernels())
    for (CpuPrecision precision : {CpuPrecision::Fast, CpuPrecision::Exact})
      for (int64_t n : {1, 3, 8, 70}) {
        CpuBackend backend(*k, precision);
        std::unique_ptr<ExecContext> ctx = backend.create_context(2);
        const int64_t N = 37, K = 96;
        Weight w = random_weight(DType::BF16, N, K);
        std::vector<float> x = random_floats(static_cast<size_t>(n * K));
        std::vector<float> y(static_cast<size_t>(n * N));
        backend.linear(*ctx, f32_tensor(y, n, N), f32_tensor(x, n, K), w.tensor());
        const double rel = precision == CpuPrecision::Exact ? 1e-5 : 1e-5 + 1.0 / 512;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t r = 0; r < N; ++r) {
            const ReferenceDot d = reference_dot(w.values.data() + r * K, x.data() + i * K, K);
            ASSERT_LE(std::fabs(y[i * N + r] - d.exact), rel * d.abs_sum + 1e-6)
                << k->name << (precision == CpuPrecision::Exact ? " exact" : " fast") << " n " << n << " token " << i
                << " row " << r;
          }
        if (precision != CpuPrecision::Fast || k->gemm_bf16_dp == nullptr) continue;
        for (int64_t i = 0; i < n; ++i) {
          std::vector<float> xi(x.begin() + i * K, x.begin() + (i + 1) * K), yi(static_cast<size_t>(N));
          backend.linear(*ctx, f32_tensor(yi, 1, N), f32_tensor(xi, 1, K), w.tensor());
          for (int64_t r = 0; r < N; ++r)
            ASSERT_EQ(yi[r], y[i * N + r]) << k->name << " n " << n << " token " << i << " row " << r;
        }
      }
}

TEST(CpuOps, EmbeddingScalesRows) {
  for_each_backend([](OpsFixture& fx) {
    for (DType dt : kDtypes) {
      const int64_t V = 11, H = 19;
      Weight table = random_weight(dt, V, H);
      std::vector<int32_t> ids = {3, 0, 10, 3};
      std::vector<float> out(ids.size() * H);
      fx.backend.embedding(*fx.ctx, f32_tensor(out, 4, H), table.tensor(), ids.data(), 12.0f);
      for (size_t i = 0; i < ids.size(); ++i)
        for (int64_t j = 0; j < H; ++j)
          ASSERT_NEAR(out[i * H + j], table.values[ids[i] * H + j] * 12.0, 1e-5) << dtype_name(dt);
    }
  });
}

void reference_rms_norm(const double* x, const std::vector<double>& w, int64_t dim, double eps, double* out) {
  double ss = 0;
  for (int64_t j = 0; j < dim; ++j) ss += x[j] * x[j];
  const double inv = 1.0 / std::sqrt(ss / dim + eps);
  for (int64_t j = 0; j < dim; ++j) out[j] = x[j] * inv * w[j];
}

TEST(CpuOps, RmsNormAndFusedResidualAdd) {
  for_each_backend([](OpsFixture& fx) {
    for (DType dt : kDtypes) {
      const int64_t n = 5, dim = 37;
      const float eps = 1e-5f, s = 0.3f;
      Weight w = random_weight(dt, 1, dim, 0.5f, 1.5f);
      std::vector<float> x = random_floats(n * dim, -3, 3), delta = random_floats(n * dim);
      std::vector<float> out(n * dim), residual = x;
      fx.backend.rms_norm(*fx.ctx, f32_tensor(out, n, dim), f32_tensor(x, n, dim), w.tensor(), eps);
      std::vector<double> xd(dim), ref(dim);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < dim; ++j) xd[j] = x[i * dim + j];
        reference_rms_norm(xd.data(), w.values, dim, eps, ref.data());
        for (int64_t j = 0; j < dim; ++j) ASSERT_NEAR(out[i * dim + j], ref[j], 1e-5 * (1 + std::fabs(ref[j])));
      }
      fx.backend.add_rms_norm(*fx.ctx, f32_tensor(out, n, dim), f32_tensor(residual, n, dim), f32_tensor(delta, n, dim), s,
                              w.tensor(), eps);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < dim; ++j) {
          xd[j] = static_cast<double>(x[i * dim + j]) + s * static_cast<double>(delta[i * dim + j]);
          ASSERT_NEAR(residual[i * dim + j], xd[j], 1e-6 * (1 + std::fabs(xd[j]))) << "residual not updated in place";
        }
        reference_rms_norm(xd.data(), w.values, dim, eps, ref.data());
        for (int64_t j = 0; j < dim; ++j) ASSERT_NEAR(out[i * dim + j], ref[j], 1e-5 * (1 + std::fabs(ref[j])));
      }
    }
  });
}

TEST(CpuOps, AddScaledScaleSiluMul) {
  for_each_backend([](OpsFixture& fx) {
    const int64_t n = 3, d = 21;
    std::vector<float> a = random_floats(n * d), b = random_floats(n * d), acopy = a;
    fx.backend.add_scaled(*fx.ctx, f32_tensor(a, n, d), f32_tensor(b, n, d), -0.7f);
    for (int64_t i = 0; i < n * d; ++i) ASSERT_NEAR(a[i], acopy[i] - 0.7 * b[i], 1e-6);
    acopy = a;
    fx.backend.scale(*fx.ctx, f32_tensor(a, n, d), 0.0625f);
    for (int64_t i = 0; i < n * d; ++i) ASSERT_NEAR(a[i], acopy[i] * 0.0625, 1e-7);
    std::vector<float> g = random_floats(n * d, -6, 6), u = random_floats(n * d), out(n * d);
    fx.backend.silu_mul(*fx.ctx, f32_tensor(out, n, d), f32_tensor(g, n, d), f32_tensor(u, n, d));
    for (int64_t i = 0; i < n * d; ++i) {
      const double ref = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
      ASSERT_NEAR(out[i], ref, 1e-6 * (1 + std::fabs(ref)));
    }
  });
}

TEST(CpuOps, RopeRotateHalf) {
  for_each_backend([](OpsFixture& fx) {
    const int32_t heads = 3, hd = 16, half = hd / 2;
    const int64_t n = 4;
    std::vector<float> x = random_floats(n * heads * hd), orig = x;
    std::vector<float> freq = random_floats(half, 0.001f, 1.0f);
    std::vector<int32_t> pos = {0, 5, 1000, 31999};
    const float attn_factor = 1.17f;
    fx.backend.rope(*fx.ctx, f32_tensor(x, n, heads * hd), heads, hd, pos.data(), f32_tensor(freq, 1, half), attn_factor);
    for (int64_t i = 0; i < n; ++i)
      for (int32_t h = 0; h < heads; ++h)
        for (int32_t j = 0; j < half; ++j) {
          const double angle = static_cast<double>(pos[i]) * freq[j];
          const double c = std::cos(angle) * attn_factor, s = std::sin(angle) * attn_factor;
          const size_t base = static_cast<size_t>(i * heads * hd + h * hd);
          const double a = orig[base + j], b = orig[base + j + half];
          ASSERT_NEAR(x[base + j], a * c - b * s, 1e-5);
          ASSERT_NEAR(x[base + j + half], b * c + a * s, 1e-5);
        }
  });
}

TEST(CpuOps, CausalGqaAttentionWithHistory) {
  for_each_backend([](OpsFixture& fx) {
    for (int32_t group : {1, 2, 4}) {
      const int32_t kv_heads = 2, heads = kv_heads * group, hd = 24;
      const int64_t capacity = 20, start = 6, n = 5;
      std::vector<float> kc = random_floats(capacity * kv_heads * hd), vc = random_floats(capacity * kv_heads * hd);
      std::vector<float> k = random_floats(n * kv_heads * hd, -2, 2), v = random_floats(n * kv_heads * hd);
      std::vector<float> q = random_floats(n * heads * hd, -2, 2), out(n * heads * hd);
      const Tensor kct = f32_tensor(kc, capacity, kv_heads * hd), vct = f32_tensor(vc, capacity, kv_heads * hd);
      fx.backend.store_kv(*fx.ctx, kct, vct, f32_tensor(k, n, kv_heads * hd), f32_tensor(v, n, kv_heads * hd), start);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < kv_heads * hd; ++j) {
          ASSERT_EQ(kc[(start + i) * kv_heads * hd + j], k[i * kv_heads * hd + j]);
          ASSERT_EQ(vc[(start + i) * kv_heads * hd + j], v[i * kv_heads * hd + j]);
        }
      fx.backend.attention(*fx.ctx, f32_tensor(out, n, heads * hd), f32_tensor(q, n, heads * hd), kct, vct,
                           AttentionShape{heads, kv_heads, hd}, start);
      for (int64_t i = 0; i < n; ++i)
        for (int32_t h = 0; h < heads; ++h) {
          const int32_t kvh = h / group;
          const int64_t visible = start + i + 1;  // causal: keys 0..start+i
          std::vector<double> p(static_cast<size_t>(visible));
          double mx = -1e300, sum = 0;
          for (int64_t j = 0; j < visible; ++j) {
            double s = 0;
            for (int32_t d = 0; d < hd; ++d)
              s += static_cast<double>(q[(i * heads + h) * hd + d]) * kc[(j * kv_heads + kvh) * hd + d];
            p[j] = s / std::sqrt(static_cast<double>(hd));
            mx = std::max(mx, p[j]);
          }
          for (double& e : p) sum += (e = std::exp(e - mx));
          for (int32_t d = 0; d < hd; ++d) {
            double ref = 0;
            for (int64_t j = 0; j < visible; ++j) ref += p[j] / sum * vc[(j * kv_heads + kvh) * hd + d];
            ASSERT_NEAR(out[(i * heads + h) * hd + d], ref, 1e-5) << "group " << group << " i " << i << " h " << h;
          }
        }
    }
  });
}

TEST(ThreadPool, CoversRangeExactlyOnceAndPropagatesExceptions) {
  for (int32_t threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 7, 1000}) {
      for (int64_t chunk : {1, 3, 64}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.parallel_for(n, chunk, [&](int64_t b, int64_t e, int32_t t) {
          ASSERT_LT(t, pool.size());
          for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
        });
        for (auto& h : hits) ASSERT_EQ(h.load(), 1);
      }
    }
    EXPECT_THROW(pool.parallel_for(100, 1, [](int64_t b, int64_t, int32_t) {
      if (b == 42) throw std::runtime_error("boom");
    }), std::runtime_error);
    int64_t total = 0;  // still usable after an exception
    std::mutex m;
    pool.parallel_for(10, 1, [&](int64_t b, int64_t e, int32_t) {
      std::lock_guard<std::mutex> l(m);
      total += e - b;
    });
    EXPECT_EQ(total, 10);
  }
}

}  // namespace
}  // namespace mcpm
