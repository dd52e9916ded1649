// mcpm_op_bench: the linear layers of the MiniCPM4-8B shape, one op at a time, on a backend:
// bf16 dense (Backend::linear: GEMV up to 8 rows, cuBLAS above on CUDA) against W4A16 int4
// (Backend::linear_int4, Marlin layout as adopted by the backend), for token counts M (decode is M = 1, tree verification
// M <= 64, prefill larger). Prints per shape and M the time of each, the int4 speed-up and the int4
// bytes streamed per second against the device's copy bandwidth (issue #5's bandwidth floor: the
// weight and scale bytes / the copy bandwidth).
//
//   mcpm_op_bench [--backend cuda|cpu] [--device N] [--iters N] [--m 1,4,16,64] [--bandwidth GBs] [--json]
//                 [--threads N]   (CPU backend threads, default 1)
//
// --bandwidth: the device-to-device copy bandwidth (read + write bytes / s) to compare with; on CUDA
// it is measured here when not given (cudaMemcpy of 1 GiB, best of 5).
//
// Attention (issue #6), one layer of the 8B shape (32 query heads, 2 KV heads of 128):
//
//   mcpm_op_bench ... --contexts 32768,131072 [--attn-tokens 1,64] [--attn-iters N] [--no-linear]
//
// times, for n query tokens at the end of a context of L cached keys, dense attention against
// InfLLM v2 with MiniCPM4-8B's sparse_config, split into block selection (Backend::sparse_select:
// incremental compression, stage-1 scores, top-k) and the block-sparse attention over the selection
// (Backend::sparse_attend), so the selection overhead is reported on its own.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "common/dtype.h"
#include "common/error.h"
#include "common/int4.h"
#ifdef MCPM_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace {

using namespace mcpm;

struct Shape {
  const char* name;
  int64_t N, K;
};

// MiniCPM4-8B: hidden 4096, 32 heads / 2 KV heads of 128, FFN 16384.
const Shape kShapes[] = {{"q_proj", 4096, 4096},     {"k_proj", 256, 4096},  {"v_proj", 256, 4096},
                         {"o_proj", 4096, 4096},     {"gate_proj", 16384, 4096}, {"up_proj", 16384, 4096},
                         {"down_proj", 4096, 16384}};

struct Options {
  mcpm_backend backend = MCPM_BACKEND_CUDA;
  int32_t device = 0;
  int iters = 50;
  std::vector<int64_t> ms{1, 4, 16, 64};
  double bandwidth = 0.0;
  bool json = false;
  bool linear = true;                // the linear-layer table
  std::vector<int64_t> contexts;     // attention rows (none: no attention table)
  std::vector<int64_t> attn_tokens{1};
  int attn_iters = 10;
  int32_t threads = 1;               // CPU backend worker threads (the calling thread included)
};

std::vector<int64_t> parse_list(const char* s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoll(item));
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "mcpm_op_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--backend") {
      const std::string b = value();
      o.backend = b == "cpu" ? MCPM_BACKEND_CPU : MCPM_BACKEND_CUDA;
    } else if (a == "--device") {
      o.device = std::atoi(value());
    } else if (a == "--iters") {
      o.iters = std::max(1, std::atoi(value()));
    } else if (a == "--m") {
      o.ms = parse_list(value());
    } else if (a == "--bandwidth") {
      o.bandwidth = std::atof(value());
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--threads") {
      o.threads = std::max(1, std::atoi(value()));
    } else if (a == "--no-linear") {
      o.linear = false;
    } else if (a == "--contexts") {
      o.contexts = parse_list(value());
    } else if (a == "--attn-tokens") {
      o.attn_tokens = parse_list(value());
    } else if (a == "--attn-iters") {
      o.attn_iters = std::max(1, std::atoi(value()));
    } else {
      std::fprintf(stderr,
                   "usage: mcpm_op_bench [--backend cuda|cpu] [--device N] [--iters N] [--m 1,4,16,64] "
                   "[--bandwidth GBs] [--json] [--no-linear] [--contexts L,L] [--attn-tokens n,n] "
                   "[--attn-iters N] [--threads N]\n");
      std::exit(a == "--help" ? 0 : 2);
    }
  }
  return o;
}

// A device tensor holding `bytes` copied from host memory.
struct DeviceTensor {
  std::unique_ptr<Buffer> buffer;
  Tensor t;
};

DeviceTensor upload(Backend& be, const void* host, DType dt, int64_t rows, int64_t cols) {
  DeviceTensor d;
  d.t = Tensor{nullptr, dt, rows, cols};
  d.buffer = be.alloc(d.t.bytes());
  d.t.data = d.buffer->data();
  be.upload(d.t.data, host, d.t.bytes());
  return d;
}

// Seconds per call of `op`, the mean over `iters` calls after 3 warm-up calls.
template <typename F>
double time_op(Backend& be, ExecContext& ctx, int iters, F&& op) {
  for (int i = 0; i < 3; ++i) op();
  be.synchronize(ctx);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) op();
  be.synchronize(ctx);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
}

// Random values in the backend's KV cache dtype (fp32 on the CPU, bf16 on CUDA).
DeviceTensor random_cache(Backend& be, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (float& x : v) x = normal(rng);
  if (be.kv_dtype() == DType::F32) return upload(be, v.data(), DType::F32, rows, cols);
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = f32_to_bf16(v[i]);
  return upload(be, b.data(), DType::BF16, rows, cols);
}

// The attention table (file comment): dense vs sparse select + attend per context and token count.
void bench_attention(Backend& be, ExecContext& ctx, const Options& o) {
  const AttentionShape shape{32, 2, 128};
  const SparseAttentionParams sparse;  // MiniCPM4-8B's sparse_config (the defaults)
  const int64_t q_cols = int64_t{shape.num_heads} * shape.head_dim, kv_cols = int64_t{shape.num_kv_heads} * shape.head_dim;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  if (!o.json)
    std::printf("attention, one layer: %d query heads, %d KV heads of %d; InfLLM v2 kernel %d/%d, block %d, window %d, "
                "top-k %d\n",
                shape.num_heads, shape.num_kv_heads, shape.head_dim, sparse.kernel_size, sparse.kernel_stride,
                sparse.block_size, sparse.window_size, sparse.topk);
  for (int64_t L : o.contexts) {
    DeviceTensor k = random_cache(be, L, kv_cols, rng), v = random_cache(be, L, kv_cols, rng);
    for (int64_t n : o.attn_tokens) {
      if (n < 1 || n > L) continue;
      std::vector<float> q(static_cast<size_t>(n * q_cols));
      for (float& x : q) x = normal(rng);
      DeviceTensor qd = upload(be, q.data(), DType::F32, n, q_cols);
      DeviceTensor out = upload(be, std::vector<float>(q.size()).data(), DType::F32, n, q_cols);
      const int64_t start = L - n;
      const double t_dense =
          time_op(be, ctx, o.attn_iters, [&] { be.attention(ctx, out.t, qd.t, k.t, v.t, shape, start); });
      std::unique_ptr<AttentionState> state = be.create_sparse_attention_state(sparse, shape, L);
      be.sparse_attention(ctx, out.t, qd.t, k.t, v.t, shape, start, *state);  // compresses the whole history once
      // Each select redoes what a step redoes: the kernels over rows >= start, stage 1, the top-k.
      const double t_select =
          time_op(be, ctx, o.attn_iters, [&] { be.sparse_select(ctx, qd.t, k.t, shape, start, *state); });
      const double t_attend =
          time_op(be, ctx, o.attn_iters, [&] { be.sparse_attend(ctx, out.t, qd.t, k.t, v.t, shape, start, *state); });
      const double t_sparse = t_select + t_attend;
      if (o.json) {
        std::printf("{\"attention\":true,\"context\":%lld,\"tokens\":%lld,\"dense_us\":%.2f,\"sparse_select_us\":%.2f,"
                    "\"sparse_attend_us\":%.2f,\"sparse_us\":%.2f,\"sparse_speedup\":%.2f}\n",
                    static_cast<long long>(L), static_cast<long long>(n), t_dense * 1e6, t_select * 1e6, t_attend * 1e6,
                    t_sparse * 1e6, t_dense / t_sparse);
      } else {
        std::printf("attention  L %7lld n %4lld: dense %9.1f us, sparse %9.1f us = select %8.1f us (%2.0f%%) + attend "
                    "%8.1f us; %.2fx\n",
                    static_cast<long long>(L), static_cast<long long>(n), t_dense * 1e6, t_sparse * 1e6, t_select * 1e6,
                    100.0 * t_select / t_sparse, t_attend * 1e6, t_dense / t_sparse);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    BackendOptions bo;
    bo.device_index = o.device;
    std::shared_ptr<Backend> be = create_backend(o.backend, bo);
    std::unique_ptr<ExecContext> ctx = be->create_context(o.threads);
    double bandwidth = o.bandwidth;
#ifdef MCPM_HAVE_CUDA
    if (bandwidth <= 0.0 && o.backend == MCPM_BACKEND_CUDA) bandwidth = cuda_copy_bandwidth_gbs(o.device);
#endif
    if (!o.json && o.linear)
      std::printf("backend %s, copy bandwidth %s GB/s; bf16 vs int4 (W4A16, group 128, Marlin layout)\n", be->name(),
                  bandwidth > 0 ? std::to_string(static_cast<int>(bandwidth)).c_str() : "unknown");
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (const Shape& s : o.linear ? std::vector<Shape>(std::begin(kShapes), std::end(kShapes)) : std::vector<Shape>()) {
      std::vector<float> w(static_cast<size_t>(s.N * s.K));
      for (float& v : w) v = normal(rng);
      std::vector<uint16_t> w_bf16(w.size());
      for (size_t i = 0; i < w.size(); ++i) w_bf16[i] = f32_to_bf16(w[i]);
      int4::QuantOptions q;
      const int4::MarlinWeight mw = int4::quantize_marlin(w.data(), s.N, s.K, q, 0);
      DeviceTensor dense = upload(*be, w_bf16.data(), DType::BF16, s.N, s.K);
      DeviceTensor qweight = upload(*be, mw.qweight.data(), DType::I32, s.K / 16, 2 * s.N);
      DeviceTensor scales = upload(*be, mw.scales.data(), DType::F16, s.K / 128, s.N);
      be->adopt_int4_qweight(qweight.t, s.K, s.N);  // into the backend's own layout, as the weight store does
      be->adopt_int4_scales(scales.t, s.K, s.N);
      const double int4_bytes = static_cast<double>(qweight.t.bytes() + scales.t.bytes());
      for (int64_t m : o.ms) {
        std::vector<float> x(static_cast<size_t>(m * s.K));
        for (float& v : x) v = normal(rng) * 50.0f;
        DeviceTensor in = upload(*be, x.data(), DType::F32, m, s.K);
        DeviceTensor out = upload(*be, std::vector<float>(static_cast<size_t>(m * s.N)).data(), DType::F32, m, s.N);
        const double t_dense = time_op(*be, *ctx, o.iters, [&] { be->linear(*ctx, out.t, in.t, dense.t); });
        const double t_int4 =
            time_op(*be, *ctx, o.iters, [&] { be->linear_int4(*ctx, out.t, in.t, qweight.t, scales.t); });
        const double gbs = int4_bytes / t_int4 / 1e9;
        // The floor: the int4 bytes at the copy bandwidth (read + write counted, as the floor).
        const double floor_fraction = bandwidth > 0 ? gbs / bandwidth : 0.0;
        if (o.json) {
          std::printf("{\"shape\":\"%s\",\"N\":%lld,\"K\":%lld,\"M\":%lld,\"bf16_us\":%.2f,\"int4_us\":%.2f,"
                      "\"speedup\":%.2f,\"int4_gbs\":%.1f,\"copy_gbs\":%.1f,\"int4_floor_fraction\":%.3f}\n",
                      s.name, static_cast<long long>(s.N), static_cast<long long>(s.K), static_cast<long long>(m),
                      t_dense * 1e6, t_int4 * 1e6, t_dense / t_int4, gbs, bandwidth, floor_fraction);
        } else {
          std::printf("%-10s N %5lld K %5lld M %4lld: bf16 %8.1f us, int4 %8.1f us (%.2fx), int4 %7.1f GB/s%s\n",
                      s.name, static_cast<long long>(s.N), static_cast<long long>(s.K), static_cast<long long>(m),
                      t_dense * 1e6, t_int4 * 1e6, t_dense / t_int4, gbs,
                      bandwidth > 0 ? (" = " + std::to_string(static_cast<int>(100 * floor_fraction)) + "% of the floor").c_str()
                                    : "");
        }
      }
    }
    bench_attention(*be, *ctx, o);
  } catch (const Error& e) {
    std::fprintf(stderr, "mcpm_op_bench: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mcpm_op_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
