// The CUDA backend's memory, execution contexts, error reporting and device probing. The ops live in
// the kernel files of this directory; cuda_internal.cuh explains the data types.
//
// Memory: every Buffer is one cudaMalloc (weights tensor by tensor, the KV cache layer by layer, the
// activations of a session sized by its prefill chunk), released by cudaFree when its owner goes, so
// disposing a model or session gives its device memory back. upload/download are synchronous for
// the caller: they run on a backend-owned transfer stream and wait for it. Sessions never share a
// stream: each ExecContext owns one (plus a cuBLAS handle and scratch), and ops are queued on it in
// order; the engine calls synchronize() before it reads results back.
#include <algorithm>
#include <cstring>
#include <string>

#include "backend/cuda/cuda_internal.cuh"
#include "cuda_config.h"

namespace mcpm {

namespace cuda {

namespace {

const char* cublas_status_name(cublasStatus_t st) {
  switch (st) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "unknown cuBLAS status";
  }
}

std::string where(const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  return std::string(base ? base + 1 : file) + ":" + std::to_string(line);
}

}  // namespace

void throw_cuda(cudaError_t err, const char* what, const char* file, int line) {
  // Clear the error if it is not sticky, so later calls on this thread start clean.
  (void)cudaGetLastError();
  mcpm_status status = MCPM_ERR_INTERNAL;
  if (err == cudaErrorMemoryAllocation) status = MCPM_ERR_OUT_OF_MEMORY;
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver || err == cudaErrorInvalidDevice ||
      err == cudaErrorNoKernelImageForDevice || err == cudaErrorDevicesUnavailable)
    status = MCPM_ERR_BACKEND_UNAVAILABLE;
  throw_error(status, std::string("CUDA error: ") + cudaGetErrorString(err) + " (" + cudaGetErrorName(err) +
                          ") in " + what + " at " + where(file, line));
}

void throw_cublas(cublasStatus_t st, const char* what, const char* file, int line) {
  const mcpm_status status = st == CUBLAS_STATUS_ALLOC_FAILED ? MCPM_ERR_OUT_OF_MEMORY : MCPM_ERR_INTERNAL;
  throw_error(status, std::string("cuBLAS error: ") + cublas_status_name(st) + " in " + what + " at " +
                          where(file, line));
}

// Launched once when a backend is created: proves that this build has code for the device.
__global__ void probe_kernel(int* out) { *out = 42; }

}  // namespace cuda

// ---- buffers, device guard --------------------------------------------------------------------------

CudaBuffer::CudaBuffer(int device, size_t bytes) : device_(device) {
  DeviceGuard guard(device_);
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, std::max<size_t>(bytes, 1));
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    if (err == cudaErrorMemoryAllocation) {
      size_t free_b = 0, total_b = 0;
      (void)cudaMemGetInfo(&free_b, &total_b);
      (void)cudaGetLastError();
      throw_error(MCPM_ERR_OUT_OF_MEMORY, "out of device memory allocating " + std::to_string(bytes) +
                                              " bytes on CUDA device " + std::to_string(device_) + " (" +
                                              std::to_string(free_b >> 20) + " MiB free of " +
                                              std::to_string(total_b >> 20) + " MiB)");
    }
    cuda::throw_cuda(err, "cudaMalloc", __FILE__, __LINE__);
  }
  data_ = p;
  size_ = bytes;
}

CudaBuffer::~CudaBuffer() {
  DeviceGuard guard(device_);
  // cudaFree waits for work still using the memory; an error here (a sticky fault reported late)
  // cannot be thrown from a destructor and leaves nothing else to release.
  (void)cudaFree(data_);
  (void)cudaGetLastError();
}

DeviceGuard::DeviceGuard(int device) {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != device) {
    if (cudaSetDevice(device) == cudaSuccess) previous_ = current;
  }
  (void)cudaGetLastError();
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) (void)cudaSetDevice(previous_);
}

// ---- contexts -------------------------------------------------------------------------------------------

CudaContext::CudaContext(int dev) : device(dev) {
  DeviceGuard guard(device);
  MCPM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasStatus_t st = cublasCreate(&cublas);
  const char* what = "cublasCreate";
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasSetStream(cublas, stream);
    what = "cublasSetStream";
  }
  if (st == CUBLAS_STATUS_SUCCESS) {
    // Deterministic results: no atomics-based reductions inside cuBLAS routines (the default, stated).
    st = cublasSetAtomicsMode(cublas, CUBLAS_ATOMICS_NOT_ALLOWED);
    what = "cublasSetAtomicsMode";
  }
  if (st == CUBLAS_STATUS_SUCCESS) {
    // A workspace of our own: cuBLAS then never allocates inside a call, which a CUDA graph capture
    // (a recorded verification step runs cuBLAS GEMMs) would not allow.
    if (cudaMalloc(&cublas_workspace, kCublasWorkspaceBytes) != cudaSuccess) {
      (void)cudaGetLastError();
      cublas_workspace = nullptr;
      st = CUBLAS_STATUS_ALLOC_FAILED;
      what = "cudaMalloc (cuBLAS workspace)";
    } else {
      st = cublasSetWorkspace(cublas, cublas_workspace, kCublasWorkspaceBytes);
      what = "cublasSetWorkspace";
    }
  }
  if (st != CUBLAS_STATUS_SUCCESS) {
    if (cublas) (void)cublasDestroy(cublas);
    if (cublas_workspace) (void)cudaFree(cublas_workspace);
    (void)cudaStreamDestroy(stream);
    cuda::throw_cublas(st, what, __FILE__, __LINE__);
  }
}

CudaContext::~CudaContext() {
  DeviceGuard guard(device);
  (void)cudaStreamSynchronize(stream);
  drop_graphs();
  if (step) (void)cudaFree(step);
  for (Scratch& s : slots_)
    if (s.ptr) (void)cudaFree(s.ptr);
  if (cublas) (void)cublasDestroy(cublas);
  if (cublas_workspace) (void)cudaFree(cublas_workspace);
  if (stream) (void)cudaStreamDestroy(stream);
  (void)cudaGetLastError();
}

void* CudaContext::scratch(Slot slot, size_t bytes) {
  Scratch& s = slots_[slot];
  s.shadow_valid = false;
  if (bytes <= s.size && s.ptr) return s.ptr;
  const size_t want = std::max<size_t>({bytes, 2 * s.size, 256});
  MCPM_CUDA_CHECK(cudaStreamSynchronize(stream));  // queued kernels may still read the old block
  if (s.ptr) {
    drop_graphs();  // recorded steps hold the old address: they are re-recorded when next needed
    MCPM_CUDA_CHECK(cudaFree(s.ptr));
    s.ptr = nullptr;
    s.size = 0;
  }
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, want);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    if (err == cudaErrorMemoryAllocation)
      throw_error(MCPM_ERR_OUT_OF_MEMORY, "out of device memory allocating " + std::to_string(want) +
                                              " bytes of scratch on CUDA device " + std::to_string(device));
    cuda::throw_cuda(err, "cudaMalloc (scratch)", __FILE__, __LINE__);
  }
  s.ptr = p;
  s.size = want;
  return p;
}

void CudaContext::drop_graphs() {
  for (RecordedStep& g : graphs) (void)cudaGraphExecDestroy(g.exec);
  graphs.clear();
}

const void* CudaContext::upload(Slot slot, const void* host, size_t bytes) {
  Scratch& s = slots_[slot];
  if (bytes == 0) return s.ptr;
  if (s.shadow_valid && s.shadow.size() == bytes && std::memcmp(s.shadow.data(), host, bytes) == 0) return s.ptr;
  void* dst = scratch(slot, bytes);  // invalidates the shadow
  // From pageable memory the driver stages the bytes before returning, so the host array may change
  // right after; stream order makes the kernels queued next see the new contents.
  MCPM_CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream));
  s.shadow.assign(static_cast<const unsigned char*>(host), static_cast<const unsigned char*>(host) + bytes);
  s.shadow_valid = true;
  return dst;
}

CudaContext& cuda_context(ExecContext& ctx) { return static_cast<CudaContext&>(ctx); }

// ---- the backend ----------------------------------------------------------------------------------------

CudaBackend::CudaBackend(int device) : device_(device) {
  DeviceGuard guard(device_);
  cudaDeviceProp prop{};
  MCPM_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  multiprocessors_ = std::max(1, prop.multiProcessorCount);
  smem_per_block_optin_ = prop.sharedMemPerBlockOptin;
  smem_per_multiprocessor_ = prop.sharedMemPerMultiprocessor;
  MCPM_CUDA_CHECK(cudaStreamCreateWithFlags(&transfer_, cudaStreamNonBlocking));
  // A first kernel: fails cleanly when this build has no code for the device's architecture.
  int* flag = nullptr;
  cudaError_t err = cudaMalloc(&flag, sizeof(int));
  if (err == cudaSuccess) {
    MCPM_LAUNCH(1, 1, 0, transfer_, cuda::probe_kernel)(flag);
    err = cudaPeekAtLastError();
    if (err == cudaSuccess) err = cudaStreamSynchronize(transfer_);
    (void)cudaFree(flag);
  }
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    (void)cudaStreamDestroy(transfer_);
    if (err == cudaErrorMemoryAllocation)
      throw_error(MCPM_ERR_OUT_OF_MEMORY, "CUDA device " + std::to_string(device_) + ": out of device memory");
    throw_error(MCPM_ERR_BACKEND_UNAVAILABLE,
                "CUDA device " + std::to_string(device_) + " (" + prop.name + ", sm_" + std::to_string(prop.major) +
                    std::to_string(prop.minor) + ") cannot run this build (compiled for CUDA architectures " +
                    MCPM_CUDA_ARCHS + "): " + cudaGetErrorString(err));
  }
  try {
    cuda::configure_int4_mma(smem_per_block_optin_);
  } catch (...) {
    (void)cudaStreamDestroy(transfer_);  // the destructor does not run for a throwing constructor
    throw;
  }
}

CudaBackend::~CudaBackend() {
  DeviceGuard guard(device_);
  if (transfer_) (void)cudaStreamDestroy(transfer_);
  (void)cudaGetLastError();
}

std::unique_ptr<Buffer> CudaBackend::alloc(size_t bytes) { return std::make_unique<CudaBuffer>(device_, bytes); }

void CudaBackend::upload(void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  DeviceGuard guard(device_);
  MCPM_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, transfer_));
  MCPM_CUDA_CHECK(cudaStreamSynchronize(transfer_));
}

void CudaBackend::download(void* host_dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  DeviceGuard guard(device_);
  MCPM_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, transfer_));
  MCPM_CUDA_CHECK(cudaStreamSynchronize(transfer_));
}

std::unique_ptr<ExecContext> CudaBackend::create_context(int32_t) { return std::make_unique<CudaContext>(device_); }

// ---- CUDA graphs of decode steps ------------------------------------------------------------------------

namespace {

// The smallest power of two >= max(256, keys), capped at the cache: one recorded graph per bucket.
int64_t decode_bucket(int64_t keys, int64_t capacity) {
  int64_t bucket = 256;
  while (bucket < keys) bucket *= 2;
  return std::min(bucket, capacity);
}

}  // namespace

// The first step of a bucket runs eagerly in graph mode (which also grows every scratch buffer the
// recording needs, so nothing allocates or synchronises during the capture) and is then recorded;
// later steps of the bucket replay the graph. Any failure to record turns graphs off for the context
// (that step has already run eagerly).
void CudaBackend::decode_step(ExecContext& ctx, const DecodeStep& step, const std::function<void()>& record) {
  CudaContext& c = cuda_context(ctx);
  if (c.graphs_failed) {
    record();
    return;
  }
  DeviceGuard guard(device_);
  MCPM_CHECK(step.n >= 1 && step.n <= DecodeStep::kMaxStepTokens && step.positions);
  if (c.step == nullptr) MCPM_CUDA_CHECK(cudaMalloc(&c.step, sizeof(CudaContext::StepState)));
  // From pageable memory: the driver stages the bytes before returning, so `host` may go away.
  CudaContext::StepState host{};
  host.start = step.start;
  host.prefix = step.prefix < 0 ? step.start : step.prefix;
  for (int32_t i = 0; i < step.n; ++i) {
    host.tokens[i] = step.tokens ? step.tokens[i] : 0;
    host.positions[i] = step.positions[i];
    host.masks[i] = step.masks ? step.masks[i] : 0;
  }
  MCPM_CUDA_CHECK(cudaMemcpyAsync(c.step, &host, sizeof(host), cudaMemcpyHostToDevice, c.stream));
  const int64_t bucket = decode_bucket(step.start + step.n, step.capacity);
  for (const auto& g : c.graphs)
    if (g.bucket == bucket && g.variant == step.variant && g.tokens == step.n) {
      MCPM_CUDA_CHECK(cudaGraphLaunch(g.exec, c.stream));
      return;
    }
  c.graph_mode = true;
  c.graph_bucket = bucket;
  c.graph_tokens = step.n;
  struct ModeReset {
    CudaContext& c;
    ~ModeReset() { c.graph_mode = false; }
  } reset{c};
  record();
  cudaGraph_t graph = nullptr;
  cudaError_t err = cudaStreamBeginCapture(c.stream, cudaStreamCaptureModeThreadLocal);
  if (err == cudaSuccess) {
    try {
      record();
    } catch (...) {
      (void)cudaStreamEndCapture(c.stream, &graph);
      if (graph) (void)cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      c.graphs_failed = true;
      return;
    }
    err = cudaStreamEndCapture(c.stream, &graph);
  }
  cudaGraphExec_t exec = nullptr;
#if CUDART_VERSION >= 12000
  if (err == cudaSuccess) err = cudaGraphInstantiate(&exec, graph, 0);
#else
  if (err == cudaSuccess) err = cudaGraphInstantiate(&exec, graph, nullptr, nullptr, 0);
#endif
  if (graph) (void)cudaGraphDestroy(graph);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    c.graphs_failed = true;
    return;
  }
  c.graphs.push_back(CudaContext::RecordedStep{bucket, step.variant, step.n, exec});
}

uint64_t CudaBackend::available_memory() const {
  DeviceGuard guard(device_);
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return free_bytes;
}

void CudaBackend::synchronize(ExecContext& ctx) {
  CudaContext& c = cuda_context(ctx);
  DeviceGuard guard(device_);
  MCPM_CUDA_CHECK(cudaStreamSynchronize(c.stream));
}

// ---- probing and the factory ---------------------------------------------------------------------

namespace {

std::string plural_devices(int n) { return std::to_string(n) + (n == 1 ? " device" : " devices"); }

std::string problem_of(const cudaDeviceProp& p, int index) {
  const int cc = 10 * p.major + p.minor;
  if (cc < kCudaMinComputeCapability)
    return "CUDA device " + std::to_string(index) + " (" + p.name + ") is sm_" + std::to_string(cc) + "; sm_" +
           std::to_string(kCudaMinComputeCapability) + " or newer required";
  return std::string();
}

}  // namespace

std::string cuda_device_problem(int32_t device_index) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("no CUDA device / driver: ") + cudaGetErrorString(err);
  }
  if (count <= 0) return "no CUDA device / driver: no CUDA-capable device is detected";
  if (device_index < 0 || device_index >= count)
    return "CUDA device " + std::to_string(device_index) + " does not exist (" + plural_devices(count) + " found)";
  cudaDeviceProp prop{};
  const cudaError_t perr = cudaGetDeviceProperties(&prop, device_index);
  if (perr != cudaSuccess) {
    (void)cudaGetLastError();
    return "CUDA device " + std::to_string(device_index) + ": " + cudaGetErrorString(perr);
  }
  return problem_of(prop, device_index);
}

std::shared_ptr<Backend> create_cuda_backend(int32_t device_index) {
  const std::string problem = cuda_device_problem(device_index);
  if (!problem.empty()) throw_error(MCPM_ERR_BACKEND_UNAVAILABLE, problem);
  return std::make_shared<CudaBackend>(device_index);
}

std::vector<CudaDeviceInfo> cuda_devices() {
  std::vector<CudaDeviceInfo> out;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return out;
  }
  for (int i = 0; i < count; ++i) {
    CudaDeviceInfo d;
    d.index = i;
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      d.problem = std::string("cudaGetDeviceProperties failed: ") + cudaGetErrorString(cudaGetLastError());
      out.push_back(std::move(d));
      continue;
    }
    d.name = prop.name;
    d.compute_capability = 10 * prop.major + prop.minor;
    d.multiprocessors = prop.multiProcessorCount;
    d.total_bytes = prop.totalGlobalMem;
    d.problem = problem_of(prop, i);
    DeviceGuard guard(i);
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) d.free_bytes = free_bytes;
    // Whether this build holds code for the device: loading the probe kernel's attributes fails
    // with "no kernel image" otherwise.
    cudaFuncAttributes attributes{};
    const cudaError_t image = cudaFuncGetAttributes(&attributes, cuda::probe_kernel);
    if (image != cudaSuccess && d.problem.empty())
      d.problem = std::string("this build (CUDA architectures ") + MCPM_CUDA_ARCHS + ") cannot run on sm_" +
                  std::to_string(d.compute_capability) + ": " + cudaGetErrorString(image);
    (void)cudaGetLastError();
    out.push_back(std::move(d));
  }
  return out;
}

double cuda_copy_bandwidth_gbs(int32_t device_index) {
  DeviceGuard guard(device_index);
  const size_t bytes = size_t{1} << 30;
  void* a = nullptr;
  void* b = nullptr;
  MCPM_CUDA_CHECK(cudaMalloc(&a, bytes));
  double best = 0.0;
  cudaEvent_t start = nullptr, stop = nullptr;
  try {
    MCPM_CUDA_CHECK(cudaMalloc(&b, bytes));
    MCPM_CUDA_CHECK(cudaEventCreate(&start));
    MCPM_CUDA_CHECK(cudaEventCreate(&stop));
    MCPM_CUDA_CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));  // warm-up
    for (int i = 0; i < 5; ++i) {
      MCPM_CUDA_CHECK(cudaEventRecord(start));
      MCPM_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
      MCPM_CUDA_CHECK(cudaEventRecord(stop));
      MCPM_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0.0f;
      MCPM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      best = std::max(best, 2.0 * static_cast<double>(bytes) / (static_cast<double>(ms) * 1e-3) / 1e9);
    }
  } catch (...) {
    if (start) (void)cudaEventDestroy(start);
    if (stop) (void)cudaEventDestroy(stop);
    (void)cudaFree(b);
    (void)cudaFree(a);
    throw;
  }
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  (void)cudaFree(b);
  (void)cudaFree(a);
  return best;
}

void cuda_memory_info(int32_t device_index, uint64_t* free_bytes, uint64_t* total_bytes) {
  DeviceGuard guard(device_index);
  size_t f = 0, t = 0;
  MCPM_CUDA_CHECK(cudaMemGetInfo(&f, &t));
  if (free_bytes) *free_bytes = f;
  if (total_bytes) *total_bytes = t;
}

}  // namespace mcpm
