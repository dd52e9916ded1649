// The emulated CUDA runtime (runtime.h): device properties, memory, streams, events, stream capture,
// graphs, function attributes, errors and faults. Everything runs under one device lock.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "internal.h"

namespace mcpm_emu {

// ---- streams, events and graphs -------------------------------------------------------------------------

// A recorded stream operation: a launch, copy, memset, GEMM or sort with its arguments.
using DeviceWork = std::function<void()>;

struct Graph {
  std::vector<DeviceWork> work;
};

struct GraphExec {
  std::vector<DeviceWork> work;
};

struct Stream {
  bool capturing = false;
  bool invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id capture_thread;
  std::unique_ptr<Graph> graph;
};

struct Event {
  bool recorded = false;
  std::chrono::steady_clock::time_point when;
};

namespace {

struct DeviceState {
  std::recursive_mutex lock;
  DeviceConfig config;
  ScheduleConfig schedule;
  Stats stats;
  std::map<uintptr_t, size_t> allocations;  // base -> bytes
  size_t allocated = 0;
  std::deque<std::pair<void*, size_t>> quarantine;  // freed blocks kept so addresses are not reused at once
  size_t quarantined = 0;
  bool faulted = false;
  std::string fault;
  std::unordered_map<const void*, int> dynamic_smem_limits;
  std::vector<Stream*> streams;
  bool abort_on_fault = false;
};

constexpr size_t kQuarantineBytes = size_t{64} << 20;
// Without AddressSanitizer every allocation sits between two redzones of canary bytes, checked after
// each kernel that can reach the allocation: a kernel writing just past either end faults. (With
// AddressSanitizer the block is exact and ASan reports the access itself.)
#if defined(MCPM_EMU_ASAN)
constexpr size_t kRedzone = 0;
#else
constexpr size_t kRedzone = 256;
#endif
constexpr unsigned char kCanary = 0xa5;

size_t env_size(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  return end && *end == '\0' ? static_cast<size_t>(n) : fallback;
}

DeviceState& state() {
  static DeviceState* s = [] {
    auto* d = new DeviceState();  // never destroyed: buffers may be freed by static destructors elsewhere
    d->config.devices = static_cast<int>(env_size("MCPM_EMU_DEVICES", 1));
    d->config.memory_bytes = env_size("MCPM_EMU_MEMORY_MB", 1024) << 20;
    d->config.multiprocessors = static_cast<int>(std::max<size_t>(1, env_size("MCPM_EMU_SMS", 8)));
    if (const char* order = std::getenv("MCPM_EMU_SCHEDULE")) {
      const std::string o = order;
      if (o == "reverse") d->schedule.order = Order::Reverse;
      if (o.rfind("random", 0) == 0) {
        d->schedule.order = Order::Random;
        if (o.size() > 7 && o[6] == ':') d->schedule.seed = std::strtoull(o.c_str() + 7, nullptr, 10);
      }
    }
    d->schedule.race_check = env_size("MCPM_EMU_RACE_CHECK", 0) != 0;
    d->abort_on_fault = env_size("MCPM_EMU_FAULT_ABORT", 0) != 0;
    return d;
  }();
  return *s;
}

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local int t_device = 0;
thread_local std::string t_error_text;
thread_local Stream* t_capturing = nullptr;  // this thread's capture (unsafe calls are refused)

cudaError_t fail(cudaError_t err) {
  if (err != cudaSuccess) t_last_error = err;
  return err;
}

// Marks a capture failed, as the hardware does for an operation it cannot record: its
// cudaStreamEndCapture returns cudaErrorStreamCaptureInvalidated. Says why once.
void invalidate_capture(Stream& s, const char* why) {
  if (s.invalidated) return;
  s.invalidated = true;
  std::fprintf(stderr, "CUDA emulator: %s invalidates the stream capture in progress\n", why);
}

// An API call that a capture in this thread forbids (it would synchronise or allocate).
bool refused_by_capture(const char* what) {
  Stream* s = t_capturing;
  if (!s || !s->capturing || s->mode == cudaStreamCaptureModeRelaxed) return false;
  invalidate_capture(*s, what);
  return true;
}

// The allocation containing [p, p + bytes), or false.
bool device_range(const void* p, size_t bytes) {
  uintptr_t base = 0;
  size_t size = 0;
  if (!find_allocation(p, &base, &size)) return false;
  return reinterpret_cast<uintptr_t>(p) + bytes <= base + size;
}

bool is_host_pointer(const void* p) {
  uintptr_t base = 0;
  size_t size = 0;
  return !find_allocation(p, &base, &size);
}

// Runs or records device work on a stream.
cudaError_t submit(cudaStream_t stream, DeviceWork work) {
  DeviceState& d = state();
  if (stream && stream->capturing) {
    if (stream->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
    stream->graph->work.push_back(std::move(work));
    ++d.stats.captured_ops;
    return cudaSuccess;
  }
  if (d.faulted) return fail(cudaErrorLaunchFailure);
  work();
  return d.faulted ? fail(cudaErrorLaunchFailure) : cudaSuccess;
}

cudaError_t copy_checked(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream,
                         bool async) {
  if (bytes == 0) return cudaSuccess;
  if (!dst || !src) return fail(cudaErrorInvalidValue);
  const bool dst_device = !is_host_pointer(dst), src_device = !is_host_pointer(src);
  if (kind == cudaMemcpyDefault) kind = static_cast<cudaMemcpyKind>((src_device ? 2 : 0) | (dst_device ? 1 : 0));
  const bool want_dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool want_src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind > cudaMemcpyDeviceToDevice) return fail(cudaErrorInvalidMemcpyDirection);
  if ((want_dst_device && !device_range(dst, bytes)) || (want_src_device && !device_range(src, bytes)) ||
      (!want_dst_device && dst_device) || (!want_src_device && src_device)) {
    std::fprintf(stderr, "CUDA emulator: cudaMemcpy%s of %zu bytes: a pointer does not match its kind %d or the "
                 "range leaves its allocation\n", async ? "Async" : "", bytes, static_cast<int>(kind));
    return fail(cudaErrorInvalidValue);
  }
  const bool touches_host = !want_dst_device || !want_src_device;
  if (stream && stream->capturing && touches_host) {
    // All host memory here is pageable; a captured copy from it would replay stale bytes.
    invalidate_capture(*stream, "a copy between pageable host memory and the device");
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  if (!async && refused_by_capture("cudaMemcpy")) return fail(cudaErrorStreamCaptureUnsupported);
  return submit(stream, [dst, src, bytes, want_dst_device, want_src_device] {
    if ((want_dst_device && !device_range(dst, bytes)) || (want_src_device && !device_range(src, bytes))) {
      device_fault("a recorded cudaMemcpyAsync touches freed device memory");
      return;
    }
    std::memmove(dst, src, bytes);
  });
}

cudaError_t set_checked(void* dst, int value, size_t bytes, cudaStream_t stream, bool async) {
  if (bytes == 0) return cudaSuccess;
  if (!device_range(dst, bytes)) return fail(cudaErrorInvalidValue);
  if (!async && refused_by_capture("cudaMemset")) return fail(cudaErrorStreamCaptureUnsupported);
  return submit(stream, [dst, value, bytes] {
    if (!device_range(dst, bytes)) {
      device_fault("a recorded cudaMemsetAsync touches freed device memory");
      return;
    }
    std::memset(dst, value, bytes);
  });
}

}  // namespace

// ---- internal.h ----------------------------------------------------------------------------------------

std::recursive_mutex& device_lock() { return state().lock; }
DeviceConfig& config_ref() { return state().config; }
ScheduleConfig& schedule_ref() { return state().schedule; }
Stats& stats_ref() { return state().stats; }

bool find_allocation(const void* p, uintptr_t* base, size_t* size) {
  DeviceState& d = state();
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = d.allocations.upper_bound(a);
  if (it == d.allocations.begin()) return false;
  --it;
  if (a > it->first + it->second) return false;  // the end pointer still counts
  *base = it->first;
  *size = it->second;
  return true;
}

bool device_faulted() { return state().faulted; }

std::string check_redzones(uintptr_t base, size_t size) {
  if (kRedzone == 0) return std::string();
  const unsigned char* p = reinterpret_cast<const unsigned char*>(base);
  for (size_t i = 0; i < kRedzone; ++i) {
    if (p[size + i] != kCanary)
      return "wrote byte " + std::to_string(size + i) + " of a " + std::to_string(size) +
             "-byte allocation, past its end (an out-of-bounds index)";
    if (p[-1 - static_cast<ptrdiff_t>(i)] != kCanary)
      return "wrote " + std::to_string(i + 1) + " bytes before the start of a " + std::to_string(size) +
             "-byte allocation (an out-of-bounds index)";
  }
  return std::string();
}

void restore_redzones(uintptr_t base, size_t size) {
  unsigned char* p = reinterpret_cast<unsigned char*>(base);
  std::memset(p - kRedzone, kCanary, kRedzone);
  std::memset(p + size, kCanary, kRedzone);
}

void raise_fault(const std::string& message) {
  DeviceState& d = state();
  if (d.faulted) return;
  d.faulted = true;
  d.fault = message;
  std::fprintf(stderr, "CUDA emulator: device fault: %s\n", message.c_str());
  if (d.abort_on_fault) std::abort();
}

size_t dynamic_smem_limit(const void* func) {
  DeviceState& d = state();
  auto it = d.dynamic_smem_limits.find(func);
  return it == d.dynamic_smem_limits.end() ? d.config.smem_per_block : static_cast<size_t>(it->second);
}

cudaError_t enqueue_device_work(cudaStream_t stream, std::function<void()> work) {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  return submit(stream, std::move(work));
}

bool is_device_range(const void* p, size_t bytes) {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  return device_range(p, bytes);
}

void device_fault(const std::string& message) { raise_fault(message); }

void submit_launch(cudaStream_t stream, KernelCall call) {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  const uint64_t threads = uint64_t{call.block.x} * call.block.y * call.block.z;
  if (call.block.x == 0 || call.block.y == 0 || call.block.z == 0 || call.block.x > 1024 || call.block.y > 1024 ||
      call.block.z > 64 || threads > 1024 || call.grid.x == 0 || call.grid.y == 0 || call.grid.z == 0 ||
      call.grid.x > 0x7fffffffu || call.grid.y > 65535 || call.grid.z > 65535) {
    std::fprintf(stderr, "CUDA emulator: kernel %s: invalid launch configuration <<<(%u,%u,%u), (%u,%u,%u)>>>\n",
                 call.name, call.grid.x, call.grid.y, call.grid.z, call.block.x, call.block.y, call.block.z);
    fail(cudaErrorInvalidConfiguration);
    if (stream && stream->capturing) invalidate_capture(*stream, "an invalid launch configuration");
    return;
  }
  if (call.dynamic_smem > dynamic_smem_limit(call.func)) {
    std::fprintf(stderr, "CUDA emulator: kernel %s: %zu bytes of dynamic shared memory, over its limit of %zu "
                 "(cudaFuncSetAttribute raises it)\n", call.name, call.dynamic_smem, dynamic_smem_limit(call.func));
    fail(cudaErrorInvalidValue);
    if (stream && stream->capturing) invalidate_capture(*stream, "a launch over its shared-memory limit");
    return;
  }
  submit(stream, [call = std::move(call)] { execute_kernel(call); });
}

// ---- emulator.h --------------------------------------------------------------------------------------

DeviceConfig device_config() {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  return state().config;
}

void set_device_config(const DeviceConfig& config) {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  state().config = config;
}

ScheduleConfig schedule_config() {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  return state().schedule;
}

void set_schedule_config(const ScheduleConfig& config) {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  state().schedule = config;
}

std::string last_fault() {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  return state().faulted ? state().fault : std::string();
}

void clear_fault() {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  state().faulted = false;
  state().fault.clear();
  t_last_error = cudaSuccess;
}

Stats stats() {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  return state().stats;
}

size_t allocated_bytes() {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  return state().allocated;
}

cudaError_t set_function_attribute(const void* func, cudaFuncAttribute attr, int value) {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  DeviceState& d = state();
  if (!func) return fail(cudaErrorInvalidDeviceFunction);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<size_t>(value) > d.config.smem_per_block_optin) return fail(cudaErrorInvalidValue);
    d.dynamic_smem_limits[func] = value;
    return cudaSuccess;
  }
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) return cudaSuccess;
  return fail(cudaErrorInvalidValue);
}

cudaError_t get_function_attributes(cudaFuncAttributes* attr, const void* func) {
  std::lock_guard<std::recursive_mutex> hold(device_lock());
  if (!attr || !func) return fail(cudaErrorInvalidValue);
  *attr = cudaFuncAttributes{};
  attr->maxThreadsPerBlock = 1024;
  attr->maxDynamicSharedSizeBytes = static_cast<int>(dynamic_smem_limit(func));
  attr->ptxVersion = 10 * state().config.major + state().config.minor;
  attr->binaryVersion = attr->ptxVersion;
  return cudaSuccess;
}

}  // namespace mcpm_emu

using mcpm_emu::device_lock;
using mcpm_emu::fail;
using mcpm_emu::state;
using Hold = std::lock_guard<std::recursive_mutex>;

// ---- errors ------------------------------------------------------------------------------------------

cudaError_t cudaGetLastError() {
  Hold hold(device_lock());
  if (state().faulted) return cudaErrorLaunchFailure;  // sticky
  const cudaError_t e = mcpm_emu::t_last_error;
  mcpm_emu::t_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  Hold hold(device_lock());
  if (state().faulted) return cudaErrorLaunchFailure;
  return mcpm_emu::t_last_error;
}

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorDevicesUnavailable: return "cudaErrorDevicesUnavailable";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureUnmatched: return "cudaErrorStreamCaptureUnmatched";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
    case cudaErrorUnknown: return "cudaErrorUnknown";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorLaunchFailure: {
      Hold hold(device_lock());
      mcpm_emu::t_error_text = "unspecified launch failure (CUDA emulator: " +
                               (state().faulted ? state().fault : std::string("no fault recorded")) + ")";
      return mcpm_emu::t_error_text.c_str();
    }
    default: return cudaGetErrorName(err);
  }
}

// ---- devices -------------------------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  Hold hold(device_lock());
  if (!count) return fail(cudaErrorInvalidValue);
  *count = std::max(0, state().config.devices);
  return *count == 0 ? fail(cudaErrorNoDevice) : cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue);
  *device = mcpm_emu::t_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  Hold hold(device_lock());
  if (state().config.devices <= 0) return fail(cudaErrorNoDevice);
  if (device < 0 || device >= state().config.devices) return fail(cudaErrorInvalidDevice);
  mcpm_emu::t_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  Hold hold(device_lock());
  const mcpm_emu::DeviceConfig& c = state().config;
  if (!prop) return fail(cudaErrorInvalidValue);
  if (device < 0 || device >= c.devices) return fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "%s", c.name.c_str());
  prop->totalGlobalMem = c.memory_bytes;
  prop->sharedMemPerBlock = c.smem_per_block;
  prop->sharedMemPerBlockOptin = c.smem_per_block_optin;
  prop->sharedMemPerMultiprocessor = c.smem_per_multiprocessor;
  prop->regsPerBlock = 65536;
  prop->regsPerMultiprocessor = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->clockRate = 1410000;
  prop->major = c.major;
  prop->minor = c.minor;
  prop->multiProcessorCount = c.multiprocessors;
  prop->memoryClockRate = 1215000;
  prop->memoryBusWidth = 5120;
  prop->l2CacheSize = 40 << 20;
  prop->maxThreadsPerMultiProcessor = 2048;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  Hold hold(device_lock());
  if (mcpm_emu::refused_by_capture("cudaDeviceSynchronize")) return fail(cudaErrorStreamCaptureUnsupported);
  return state().faulted ? fail(cudaErrorLaunchFailure) : cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  if (!version) return fail(cudaErrorInvalidValue);
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* version) { return cudaDriverGetVersion(version); }

// ---- memory --------------------------------------------------------------------------------------------

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  Hold hold(device_lock());
  mcpm_emu::DeviceState& d = state();
  if (!ptr) return fail(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (mcpm_emu::refused_by_capture("cudaMalloc")) return fail(cudaErrorStreamCaptureUnsupported);
  if (d.faulted) return fail(cudaErrorLaunchFailure);
  if (d.config.devices <= 0) return fail(cudaErrorNoDevice);
  if (bytes == 0) return cudaSuccess;
  if (bytes > d.config.memory_bytes - std::min(d.allocated, d.config.memory_bytes)) return fail(cudaErrorMemoryAllocation);
  void* raw = nullptr;
  if (posix_memalign(&raw, 256, bytes + 2 * mcpm_emu::kRedzone) != 0 || !raw) return fail(cudaErrorMemoryAllocation);
  unsigned char* p = static_cast<unsigned char*>(raw) + mcpm_emu::kRedzone;
  std::memset(p - mcpm_emu::kRedzone, mcpm_emu::kCanary, mcpm_emu::kRedzone);
  std::memset(p + bytes, mcpm_emu::kCanary, mcpm_emu::kRedzone);
  std::memset(p, 0xff, bytes);  // uninitialised device memory: NaN as float
  d.allocations[reinterpret_cast<uintptr_t>(p)] = bytes;
  d.allocated += bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  Hold hold(device_lock());
  mcpm_emu::DeviceState& d = state();
  if (!ptr) return cudaSuccess;
  if (mcpm_emu::refused_by_capture("cudaFree")) return fail(cudaErrorStreamCaptureUnsupported);
  auto it = d.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == d.allocations.end()) return fail(cudaErrorInvalidValue);
  const size_t bytes = it->second;
  d.allocated -= bytes;
  d.allocations.erase(it);
#if defined(MCPM_EMU_ASAN)
  std::free(ptr);  // AddressSanitizer's quarantine reports any later use
#else
  std::memset(ptr, 0xfd, bytes);
  d.quarantine.emplace_back(static_cast<unsigned char*>(ptr) - mcpm_emu::kRedzone, bytes);
  d.quarantined += bytes;
  while (d.quarantined > mcpm_emu::kQuarantineBytes && !d.quarantine.empty()) {
    std::free(d.quarantine.front().first);
    d.quarantined -= d.quarantine.front().second;
    d.quarantine.pop_front();
  }
#endif
  return d.faulted ? fail(cudaErrorLaunchFailure) : cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  Hold hold(device_lock());
  mcpm_emu::DeviceState& d = state();
  if (d.config.devices <= 0) return fail(cudaErrorNoDevice);
  if (free_bytes) *free_bytes = d.config.memory_bytes - std::min(d.allocated, d.config.memory_bytes);
  if (total_bytes) *total_bytes = d.config.memory_bytes;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  Hold hold(device_lock());
  return mcpm_emu::copy_checked(dst, src, bytes, kind, nullptr, false);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  Hold hold(device_lock());
  return mcpm_emu::copy_checked(dst, src, bytes, kind, stream, true);
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  Hold hold(device_lock());
  return mcpm_emu::set_checked(dst, value, bytes, nullptr, false);
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  Hold hold(device_lock());
  return mcpm_emu::set_checked(dst, value, bytes, stream, true);
}

// ---- streams and events ----------------------------------------------------------------------------------

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  Hold hold(device_lock());
  if (!stream) return fail(cudaErrorInvalidValue);
  if (state().config.devices <= 0) return fail(cudaErrorNoDevice);
  auto* s = new mcpm_emu::Stream();
  (void)flags;  // every emulated stream is independent of the legacy default stream
  state().streams.push_back(s);
  *stream = s;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Hold hold(device_lock());
  auto& streams = state().streams;
  auto it = std::find(streams.begin(), streams.end(), stream);
  if (!stream || it == streams.end()) return fail(cudaErrorInvalidResourceHandle);
  streams.erase(it);
  if (mcpm_emu::t_capturing == stream) mcpm_emu::t_capturing = nullptr;
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Hold hold(device_lock());
  if (stream && stream->capturing) {
    mcpm_emu::invalidate_capture(*stream, "cudaStreamSynchronize on the capturing stream");
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  if (mcpm_emu::refused_by_capture("cudaStreamSynchronize")) return fail(cudaErrorStreamCaptureUnsupported);
  return state().faulted ? fail(cudaErrorLaunchFailure) : cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
  Hold hold(device_lock());
  if (mcpm_emu::refused_by_capture("cudaStreamQuery")) return fail(cudaErrorStreamCaptureUnsupported);
  (void)stream;
  return state().faulted ? fail(cudaErrorLaunchFailure) : cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  if (!event) return fail(cudaErrorInvalidValue);
  *event = new mcpm_emu::Event();
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Hold hold(device_lock());
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  if (stream && stream->capturing) {  // event nodes (fork/join) are not emulated
    mcpm_emu::invalidate_capture(*stream, "cudaEventRecord (event nodes are not emulated)");
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  event->recorded = true;
  event->when = std::chrono::steady_clock::now();
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  Hold hold(device_lock());
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  if (mcpm_emu::refused_by_capture("cudaEventSynchronize")) return fail(cudaErrorStreamCaptureUnsupported);
  return state().faulted ? fail(cudaErrorLaunchFailure) : cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms || !start || !end) return fail(cudaErrorInvalidValue);
  if (!start->recorded || !end->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

// ---- capture and graphs ------------------------------------------------------------------------------------

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  Hold hold(device_lock());
  if (!stream) return fail(cudaErrorStreamCaptureUnsupported);  // the legacy default stream cannot capture
  if (stream->capturing) return fail(cudaErrorIllegalAddress);
  if (state().faulted) return fail(cudaErrorLaunchFailure);
  stream->capturing = true;
  stream->invalidated = false;
  stream->mode = mode;
  stream->capture_thread = std::this_thread::get_id();
  stream->graph = std::make_unique<mcpm_emu::Graph>();
  if (mode != cudaStreamCaptureModeRelaxed) mcpm_emu::t_capturing = stream;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  Hold hold(device_lock());
  if (!graph) return fail(cudaErrorInvalidValue);
  *graph = nullptr;
  if (!stream || !stream->capturing) return fail(cudaErrorIllegalAddress);
  if (stream->capture_thread != std::this_thread::get_id() && stream->mode != cudaStreamCaptureModeRelaxed)
    return fail(cudaErrorStreamCaptureWrongThread);
  stream->capturing = false;
  if (mcpm_emu::t_capturing == stream) mcpm_emu::t_capturing = nullptr;
  std::unique_ptr<mcpm_emu::Graph> g = std::move(stream->graph);
  if (stream->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
  *graph = g.release();
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  Hold hold(device_lock());
  if (!status) return fail(cudaErrorInvalidValue);
  *status = !stream || !stream->capturing ? cudaStreamCaptureStatusNone
            : stream->invalidated         ? cudaStreamCaptureStatusInvalidated
                                          : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  Hold hold(device_lock());
  if (!exec || !graph) return fail(cudaErrorInvalidValue);
  auto* e = new mcpm_emu::GraphExec();
  e->work = graph->work;
  *exec = e;
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  Hold hold(device_lock());
  if (!exec) return fail(cudaErrorInvalidResourceHandle);
  if (stream && stream->capturing) {
    for (const mcpm_emu::DeviceWork& w : exec->work) stream->graph->work.push_back(w);
    return cudaSuccess;
  }
  if (state().faulted) return fail(cudaErrorLaunchFailure);
  ++state().stats.graph_launches;
  for (const mcpm_emu::DeviceWork& w : exec->work) {
    w();
    if (state().faulted) return fail(cudaErrorLaunchFailure);
  }
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
