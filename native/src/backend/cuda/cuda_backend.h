// The CUDA backend's entry points for the rest of the engine. Plain C++ (no CUDA headers), so that
// backend.cpp and the tests, compiled by the host compiler, can create and probe the backend; the
// implementation lives in the .cu files of this directory (cuda_internal.cuh declares the class).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace mcpm {

// The oldest compute capability the CUDA backend runs on (bf16 tensor cores, cp.async: Ampere).
constexpr int32_t kCudaMinComputeCapability = 80;

// Why device `device_index` cannot run the CUDA backend, or "" when it can. The messages are the
// ones MCPM_ERR_BACKEND_UNAVAILABLE carries: "no CUDA device / driver: <cudaGetErrorString>",
// "CUDA device 1 does not exist (1 device found)", "CUDA device 0 (Tesla T4) is sm_75; sm_80 or
// newer required". Never throws.
std::string cuda_device_problem(int32_t device_index);

// Creates the CUDA backend on device `device_index`; throws mcpm::Error(MCPM_ERR_BACKEND_UNAVAILABLE)
// with cuda_device_problem()'s message, or when this build's architectures cannot run on the device.
std::shared_ptr<Backend> create_cuda_backend(int32_t device_index);

struct CudaDeviceInfo {
  int32_t index = 0;
  std::string name;
  int32_t compute_capability = 0;  // 10 * major + minor
  int32_t multiprocessors = 0;
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;  // at the time of the call
  std::string problem;      // "" when the CUDA backend runs on it (compute capability and this build's code)
};

// Every device the driver reports (empty without a driver or device). Creates each device's primary
// context (to read free memory and check for code). Never throws.
std::vector<CudaDeviceInfo> cuda_devices();

// Device-to-device copy bandwidth of `device_index` in GB/s, (read + write bytes) / s of a 1 GiB
// cudaMemcpy, the best of 5 (the convention of the benchmarks' bandwidth floors). Throws on a CUDA error.
double cuda_copy_bandwidth_gbs(int32_t device_index);

// Free and total bytes of device memory on `device_index` (cudaMemGetInfo); throws on a CUDA error.
void cuda_memory_info(int32_t device_index, uint64_t* free_bytes, uint64_t* total_bytes);

// Test hooks (tests/test_cuda_ops.cpp, CudaOps.SparseAttention*), both waiting for ctx's queued work first:
// the level-1 or level-2 compressed keys of a CUDA InfLLM v2 state, [kv_heads][kernels][head_dim]
// with *kernels set to the kernels present; and the block lists the last sparse_attention call on ctx
// selected, entry t * kv_heads + g for query token t and KV head g.
std::vector<float> cuda_sparse_compressed_keys(ExecContext& ctx, const AttentionState& state, int level,
                                               int64_t* kernels);
std::vector<std::vector<int32_t>> cuda_sparse_last_selection(ExecContext& ctx);

// Test hook (CudaOps.LinearInt4*): int4 layers of more than 8 tokens on tensor cores (true, the
// default: fp16 inputs and weights) or on the fp32 tiled kernel. `backend` must be the CUDA backend.
void cuda_set_int4_tensor_cores(Backend& backend, bool on);

}  // namespace mcpm
