// The device side of the CUDA emulator: qualifiers, built-in variables, barriers, warp collectives,
// atomics, device math and kernel launches, so that the backend's .cu files compile as C++ and run
// on the CPU (native/emulator/README in docs/architecture.md).
//
// Execution model: each CUDA thread of a block is a fiber on the launching thread's CPU; fibers run
// until they reach a barrier or a warp collective, and blocks run one after another. __syncthreads
// releases the block once every thread has arrived; a warp collective (shuffles, ballot, __syncwarp,
// mma.sync) completes once every lane named in its mask has arrived at the same collective, and
// exchanges the values exactly as the hardware does. A lane that never arrives (it exited, or waits
// at another barrier) is a fault that names the kernel, the block and the lanes, never a hang.
//
// __shared__ variables are statics in one section (mcpm_emu_shared) that is refilled with 0xff bytes
// before every block, so each block sees only what it wrote itself; dynamic shared memory is a
// heap block of exactly the launch's size (AddressSanitizer sees overruns). Only one kernel runs at a
// time in the process, so built-in variables are plain globals set at every fiber switch.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#error "the CUDA emulator needs Clang: GCC ignores section attributes on the statics of templates, and __shared__ relies on them"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mcpm_emu/half.h"
#include "mcpm_emu/runtime.h"
#include "mcpm_emu/types.h"
#include "mcpm_emu/ptx.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static __attribute__((section("mcpm_emu_shared")))

namespace mcpm_emu {

// ---- built-in variables of the running thread ----
extern uint3 g_thread_idx;
extern uint3 g_block_idx;
extern dim3 g_block_dim;
extern dim3 g_grid_dim;

// ---- the scheduler (scheduler.cpp) ----
void syncthreads();
// A warp collective of the calling lane: `io` is the lane's exchange record (on its own stack) and
// `what` names the operation. When the last lane of `mask` arrives, `combine(records, mask)` runs
// once with every lane's record (null outside the mask) and all lanes continue.
using Combine = void (*)(void* const* records, unsigned mask);
void warp_collective(const char* what, unsigned mask, void* io, Combine combine);
// Start of the launch's dynamic shared memory (aligned to 16 bytes).
unsigned char* dynamic_shared();
// Stops the kernel with a fault (sticky, as a device fault is on hardware) that names the kernel,
// block and thread and says `message`.
[[noreturn]] void kernel_fault(const char* message);

// ---- warp shuffles and votes ----
enum class ShuffleKind { Index, Up, Down, Xor };

template <class T>
struct ShuffleRecord {
  T value;
  int arg;
  int width;
  T result;
};

int shuffle_source(ShuffleKind kind, int lane, int arg, int width);  // -1: keep own value

template <class T, ShuffleKind K>
void combine_shuffle(void* const* records, unsigned mask) {
  for (int lane = 0; lane < 32; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    auto* me = static_cast<ShuffleRecord<T>*>(records[lane]);
    const int src = shuffle_source(K, lane, me->arg, me->width);
    if (src < 0) {
      me->result = me->value;
      continue;
    }
    if (!(mask >> src & 1u)) kernel_fault("a shuffle reads a lane outside its mask (undefined on hardware)");
    me->result = static_cast<ShuffleRecord<T>*>(records[src])->value;
  }
}

template <ShuffleKind K, class T>
T shuffle(const char* what, unsigned mask, T value, int arg, int width) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffles move at most 8 bytes");
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) kernel_fault("shuffle width must be a power of two <= 32");
  ShuffleRecord<T> record{value, arg, width, value};
  warp_collective(what, mask, &record, &combine_shuffle<T, K>);
  return record.result;
}

struct VoteRecord {
  int predicate;
  unsigned result;
};
void combine_ballot(void* const* records, unsigned mask);
void combine_nothing(void* const* records, unsigned mask);

// ---- kernel launches ----

// One kernel launch, type-erased: `run` calls the kernel with the recorded arguments.
struct KernelCall {
  const char* name = "";
  const void* func = nullptr;
  dim3 grid, block;
  size_t dynamic_smem = 0;
  std::function<void()> run;
  std::vector<const void*> pointer_args;  // parameters of pointer type (checked at every run)
  std::vector<const void*> referenced;    // what the kernel may write: non-const pointer parameters and
                                          // every pointer-sized word of struct arguments
};

void submit_launch(cudaStream_t stream, KernelCall call);

template <class T>
void note_argument(KernelCall& call, const T& value) {
  if constexpr (std::is_pointer<T>::value) {
    call.pointer_args.push_back(reinterpret_cast<const void*>(value));
    // Memory behind a pointer to const is only read: the race check and the redzone check skip it.
    if constexpr (!std::is_const<std::remove_pointer_t<T>>::value)
      call.referenced.push_back(reinterpret_cast<const void*>(value));
  } else if constexpr (std::is_trivially_copyable<T>::value && sizeof(T) >= sizeof(void*) &&
                       alignof(T) >= alignof(void*)) {
    // Structs of arguments may hold device pointers: every aligned word is a candidate.
    for (size_t off = 0; off + sizeof(void*) <= sizeof(T); off += sizeof(void*)) {
      const void* word = nullptr;
      std::memcpy(&word, reinterpret_cast<const unsigned char*>(&value) + off, sizeof(word));
      call.referenced.push_back(word);
    }
  }
}

template <class... P>
class Launch {
 public:
  Launch(void (*kernel)(P...), const char* name, dim3 grid, dim3 block, size_t smem, cudaStream_t stream)
      : kernel_(kernel), name_(name), grid_(grid), block_(block), smem_(smem), stream_(stream) {}

  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    auto values = std::make_shared<std::tuple<std::decay_t<P>...>>(std::forward<A>(args)...);
    KernelCall call;
    call.name = name_;
    call.func = reinterpret_cast<const void*>(kernel_);
    call.grid = grid_;
    call.block = block_;
    call.dynamic_smem = smem_;
    std::apply([&call](const auto&... v) { (note_argument(call, v), ...); }, *values);
    auto kernel = kernel_;
    call.run = [kernel, values] { std::apply(kernel, *values); };
    submit_launch(stream_, std::move(call));
  }

 private:
  void (*kernel_)(P...);
  const char* name_;
  dim3 grid_, block_;
  size_t smem_;
  cudaStream_t stream_;
};

template <class... P>
Launch<P...> make_launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const char* name,
                         void (*kernel)(P...)) {
  return Launch<P...>(kernel, name, grid, block, smem, stream);
}

}  // namespace mcpm_emu

#define threadIdx (::mcpm_emu::g_thread_idx)
#define blockIdx (::mcpm_emu::g_block_idx)
#define blockDim (::mcpm_emu::g_block_dim)
#define gridDim (::mcpm_emu::g_grid_dim)

// ---- barriers and warp collectives ----
inline void __syncthreads() { mcpm_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  mcpm_emu::warp_collective("__syncwarp", mask, nullptr, &mcpm_emu::combine_nothing);
}

template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return mcpm_emu::shuffle<mcpm_emu::ShuffleKind::Index>("__shfl_sync", mask, v, src_lane, width);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return mcpm_emu::shuffle<mcpm_emu::ShuffleKind::Up>("__shfl_up_sync", mask, v, static_cast<int>(delta), width);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return mcpm_emu::shuffle<mcpm_emu::ShuffleKind::Down>("__shfl_down_sync", mask, v, static_cast<int>(delta), width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return mcpm_emu::shuffle<mcpm_emu::ShuffleKind::Xor>("__shfl_xor_sync", mask, v, lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  mcpm_emu::VoteRecord r{predicate, 0};
  mcpm_emu::warp_collective("__ballot_sync", mask, &r, &mcpm_emu::combine_ballot);
  return r.result;
}

// ---- atomics: one kernel thread runs at a time, so a read-modify-write is atomic ----
namespace mcpm_emu {
template <class T, class F>
T read_modify_write(T* p, F next) {
  const T old = *p;
  *p = next(old);
  return old;
}
}  // namespace mcpm_emu
template <class T>
T atomicAdd(T* p, T v) {
  return mcpm_emu::read_modify_write(p, [v](T old) { return static_cast<T>(old + v); });
}
template <class T>
T atomicMin(T* p, T v) {
  return mcpm_emu::read_modify_write(p, [v](T old) { return v < old ? v : old; });
}

// ---- loads, bits and math ----
// A load the hardware faults on when misaligned (a uint4 / float4 needs 16 bytes): checked here.
template <class T>
inline T __ldg(const T* p) {
  if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0) mcpm_emu::kernel_fault("__ldg from a misaligned address");
  return *p;
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline float __uint_as_float(unsigned u) { return mcpm_emu::bits_float(u); }
inline unsigned __float_as_uint(float f) { return mcpm_emu::float_bits(f); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}
