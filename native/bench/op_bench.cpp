// mcpm_op_bench: the linear layers of the MiniCPM4-8B shape, one op at a time, on a backend:
// bf16 dense (Backend::linear: GEMV up to 8 rows, cuBLAS above on CUDA) against W4A16 int4
// (Backend::linear_int4, Marlin layout), for token counts M (decode is M = 1, tree verification
// M <= 64, prefill larger). Prints per shape and M the time of each, the int4 speed-up and the int4
// bytes streamed per second against the device's copy bandwidth (issue #5's bandwidth floor: the
// weight and scale bytes / the copy bandwidth).
//
//   mcpm_op_bench [--backend cuda|cpu] [--device N] [--iters N] [--m 1,4,16,64] [--bandwidth GBs] [--json]
//
// --bandwidth: the device-to-device copy bandwidth (read + write bytes / s) to compare with; on CUDA
// it is measured here when not given (cudaMemcpy of 1 GiB, best of 5).
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
    } else {
      std::fprintf(stderr,
                   "usage: mcpm_op_bench [--backend cuda|cpu] [--device N] [--iters N] [--m 1,4,16,64] "
                   "[--bandwidth GBs] [--json]\n");
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

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    BackendOptions bo;
    bo.device_index = o.device;
    std::shared_ptr<Backend> be = create_backend(o.backend, bo);
    std::unique_ptr<ExecContext> ctx = be->create_context(0);
    double bandwidth = o.bandwidth;
#ifdef MCPM_HAVE_CUDA
    if (bandwidth <= 0.0 && o.backend == MCPM_BACKEND_CUDA) bandwidth = cuda_copy_bandwidth_gbs(o.device);
#endif
    if (!o.json)
      std::printf("backend %s, copy bandwidth %s GB/s; bf16 vs int4 (W4A16, group 128, Marlin layout)\n", be->name(),
                  bandwidth > 0 ? std::to_string(static_cast<int>(bandwidth)).c_str() : "unknown");
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (const Shape& s : kShapes) {
      std::vector<float> w(static_cast<size_t>(s.N * s.K));
      for (float& v : w) v = normal(rng);
      std::vector<uint16_t> w_bf16(w.size());
      for (size_t i = 0; i < w.size(); ++i) w_bf16[i] = f32_to_bf16(w[i]);
      int4::QuantOptions q;
      const int4::MarlinWeight mw = int4::quantize_marlin(w.data(), s.N, s.K, q, 0);
      DeviceTensor dense = upload(*be, w_bf16.data(), DType::BF16, s.N, s.K);
      DeviceTensor qweight = upload(*be, mw.qweight.data(), DType::I32, s.K / 16, 2 * s.N);
      DeviceTensor scales = upload(*be, mw.scales.data(), DType::F16, s.K / 128, s.N);
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
  } catch (const Error& e) {
    std::fprintf(stderr, "mcpm_op_bench: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mcpm_op_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
