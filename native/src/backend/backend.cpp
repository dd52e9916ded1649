#include "backend/backend.h"

#include <string>

#include "backend/cpu/cpu_backend.h"
#ifdef MCPM_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "common/error.h"

namespace mcpm {

std::unique_ptr<AttentionState> Backend::create_sparse_attention_state(const SparseAttentionParams&,
                                                                       const AttentionShape&, int64_t) {
  throw_error(MCPM_ERR_UNSUPPORTED, std::string("InfLLM v2 sparse attention is not implemented by the ") + name() +
                                        " backend");
}

void Backend::sparse_attention(ExecContext&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                               const AttentionShape&, int64_t, const SparseAttentionParams&, AttentionState&) {
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
