#include "backend/backend.h"

#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#ifdef MCPM_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "common/error.h"
#include "common/log_probs.h"

namespace mcpm {

void Backend::top_log_probs(ExecContext& ctx, const Tensor& logits, int32_t k, int32_t* ids, float* log_probs) {
  MCPM_CHECK(logits.dtype == DType::F32 && k >= 1 && k <= logits.cols);
  const int32_t vocab = static_cast<int32_t>(logits.cols);
  std::vector<float> row(static_cast<size_t>(vocab));
  synchronize(ctx);
  for (int64_t r = 0; r < logits.rows; ++r) {
    download(row.data(), logits.slice_rows(r, 1).data, row.size() * sizeof(float));
    log_softmax(row.data(), vocab);
    top_k_indices(row.data(), vocab, k, ids + r * k);
    for (int32_t j = 0; j < k; ++j) log_probs[r * k + j] = row[static_cast<size_t>(ids[r * k + j])];
  }
}

std::unique_ptr<AttentionState> Backend::create_sparse_attention_state(const SparseAttentionParams&,
                                                                       const AttentionShape&, int64_t) {
  throw_error(MCPM_ERR_UNSUPPORTED, std::string("InfLLM v2 sparse attention is not implemented by the ") + name() +
                                        " backend");
}

void Backend::sparse_select(ExecContext&, const Tensor&, const Tensor&, const AttentionShape&, int64_t,
                            AttentionState&) {
  throw_error(MCPM_ERR_UNSUPPORTED, std::string("InfLLM v2 sparse attention is not implemented by the ") + name() +
                                        " backend");
}

void Backend::sparse_attend(ExecContext&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                            const AttentionShape&, int64_t, AttentionState&) {
  throw_error(MCPM_ERR_UNSUPPORTED, std::string("InfLLM v2 sparse attention is not implemented by the ") + name() +
                                        " backend");
}

void Backend::linear_int4(ExecContext&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  throw_error(MCPM_ERR_UNSUPPORTED, std::string("int4 linear layers are not implemented by the ") + name() + " backend");
}

uint32_t compiled_backends() {
  uint32_t flags = MCPM_BACKEND_FLAG_CPU;
#ifdef MCPM_HAVE_CUDA
  flags |= MCPM_BACKEND_FLAG_CUDA;
#endif
  return flags;
}

std::shared_ptr<Backend> create_backend(mcpm_backend kind, const BackendOptions& options) {
  switch (kind) {
    case MCPM_BACKEND_AUTO:
#ifdef MCPM_HAVE_CUDA
      // The CUDA backend when its device is usable, else the CPU (the reason is not an error here).
      if (cuda_device_problem(options.device_index).empty()) {
        try {
          return create_cuda_backend(options.device_index);
        } catch (const Error&) {
          // e.g. this build has no code for the device's architecture: fall back to the CPU.
        }
      }
#endif
      return std::make_shared<CpuBackend>();
    case MCPM_BACKEND_CPU:
      return std::make_shared<CpuBackend>();
    case MCPM_BACKEND_CUDA:
#ifdef MCPM_HAVE_CUDA
      return create_cuda_backend(options.device_index);
#else
      throw_error(MCPM_ERR_BACKEND_UNAVAILABLE,
                  "the CUDA backend is not compiled into this build of the library (built with backends: cpu)");
#endif
    default:
      invalid_argument("unknown backend " + std::to_string(kind) + " (expected MCPM_BACKEND_AUTO, _CPU or _CUDA)");
  }
}

}  // namespace mcpm
