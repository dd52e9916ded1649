// The emulator's execution engine: every CUDA thread of a block is a fiber with its own stack on the
// launching thread; the scheduler resumes ready fibers in the configured order until each reaches a
// barrier, a warp collective or its end, releases barriers and warp collectives when complete, and
// turns any state that could never complete into a fault that names the kernel and the lanes.
//
// Fibers switch with a few instructions of assembly on x86-64 (the callee-saved registers), and with
// ucontext elsewhere; AddressSanitizer is told about every switch.
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <random>
#include <sstream>
#include <vector>

#include "internal.h"

#if defined(MCPM_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// The statics of __shared__ variables, refilled before each block (device.h).
extern "C" unsigned char __start_mcpm_emu_shared[] __attribute__((weak, visibility("hidden")));
extern "C" unsigned char __stop_mcpm_emu_shared[] __attribute__((weak, visibility("hidden")));

namespace mcpm_emu {

uint3 g_thread_idx{0, 0, 0};
uint3 g_block_idx{0, 0, 0};
dim3 g_block_dim;
dim3 g_grid_dim;

namespace {

// ---- context switching ----------------------------------------------------------------------------

#if defined(__x86_64__)
extern "C" void mcpm_emu_switch(void** save_sp, void* new_sp);
extern "C" void mcpm_emu_fiber_start();
// mcpm_emu_switch saves the callee-saved registers rbp, rbx, r12-r15 on the current stack, stores
// the stack pointer in *save_sp, and restores the same from new_sp. (MXCSR and the x87 control word
// are shared by all fibers of the thread: kernels do not change them.) A new fiber's stack holds such
// a frame whose return address is mcpm_emu_fiber_start, which calls r13(r12).
asm(R"(
  .text
  .p2align 4
  .globl mcpm_emu_switch
  .hidden mcpm_emu_switch
  .type mcpm_emu_switch,@function
mcpm_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size mcpm_emu_switch, .-mcpm_emu_switch

  .p2align 4
  .globl mcpm_emu_fiber_start
  .hidden mcpm_emu_fiber_start
  .type mcpm_emu_fiber_start,@function
mcpm_emu_fiber_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size mcpm_emu_fiber_start, .-mcpm_emu_fiber_start
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

enum class FiberState : uint8_t { Ready, AtBarrier, AtWarp, Done };

struct AsyncCopy {
  void* dst;
  const void* src;
  int copy_bytes;
  int src_bytes;
};

struct Fiber {
  void* sp = nullptr;
  unsigned char* stack = nullptr;
  size_t stack_size = 0;
  uint3 tid{0, 0, 0};
  int linear = 0;
  void* record = nullptr;  // the warp-collective record while AtWarp
  std::vector<AsyncCopy> uncommitted;
  std::deque<std::vector<AsyncCopy>> groups;
  void* asan_fake_stack = nullptr;
  bool abandoned = true;  // its stack holds frames that never returned (a fault stopped it)
#if !defined(__x86_64__)
  ucontext_t context;
#endif
};

// A warp collective that some lanes of a warp have reached.
struct PendingCollective {
  unsigned mask = 0;
  unsigned arrived = 0;
  const char* what = nullptr;
  Combine combine = nullptr;
};

struct BlockRun {
  const KernelCall* call = nullptr;
  std::vector<Fiber>* fibers = nullptr;
  int count = 0;
  int done = 0;
  int at_barrier = 0;
  bool faulted = false;
  std::vector<std::vector<PendingCollective>> warps;
};

constexpr size_t kStackBytes = 64 * 1024;
constexpr size_t kGuardPage = 4096;

std::vector<unsigned char*> g_stack_pool;
// The fibers' states, one byte each and apart from the fibers, so that finding the next ready fiber
// scans a few cache lines.
std::vector<FiberState> g_states;
Stats* g_stats = nullptr;  // stats_ref(), cached for the switches
inline FiberState& state_of(const Fiber& f) { return g_states[static_cast<size_t>(f.linear)]; }
BlockRun* g_block = nullptr;
Fiber* g_current = nullptr;
unsigned char* g_dynamic_smem = nullptr;
void* g_scheduler_sp = nullptr;
#if !defined(__x86_64__)
ucontext_t g_scheduler_context;
#endif
const void* g_scheduler_stack_bottom = nullptr;
size_t g_scheduler_stack_size = 0;
void* g_scheduler_fake_stack = nullptr;

unsigned char* stack_at(size_t i) {
  while (g_stack_pool.size() <= i) {
    void* p = mmap(nullptr, kStackBytes + kGuardPage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "CUDA emulator: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(p, kGuardPage, PROT_NONE);  // a guard page below the stack
    g_stack_pool.push_back(static_cast<unsigned char*>(p) + kGuardPage);
  }
  return g_stack_pool[i];
}

inline void asan_start_switch(void** fake_stack_save, const void* bottom, size_t size) {
#if defined(MCPM_EMU_ASAN)
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
}
inline void asan_finish_switch(void* fake_stack_save, const void** bottom_old, size_t* size_old) {
#if defined(MCPM_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
#else
  (void)fake_stack_save, (void)bottom_old, (void)size_old;
#endif
}

std::string dim_text(dim3 d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}
std::string idx_text(uint3 d) { return dim_text(dim3(d.x, d.y, d.z)); }

std::string where_text(const KernelCall& call) {
  return "kernel " + std::string(call.name) + " <<<" + dim_text(call.grid) + ", " + dim_text(call.block) + ", " +
         std::to_string(call.dynamic_smem) + ">>>, block " + idx_text(g_block_idx);
}

// The scheduling round in progress: the fiber order and the next position in it. A fiber that
// stops passes control straight to the next ready fiber of the round (one switch instead of two
// through the scheduler), or back to the scheduler at the end of the round.
struct Round {
  const int* sequence = nullptr;
  int count = 0;
  int next = 0;
};
Round g_round;

// Leaves the running fiber `f`; `final` when it never resumes, `to_scheduler` to end the round now.
void switch_away(Fiber& f, bool final, bool to_scheduler) {
  ++g_stats->switches;
  void** fake_save = final ? nullptr : &f.asan_fake_stack;
  if (!to_scheduler) {
    std::vector<Fiber>& fibers = *g_block->fibers;
    while (g_round.next < g_round.count) {
      const size_t i = static_cast<size_t>(g_round.sequence[g_round.next++]);
      if (g_states[i] != FiberState::Ready) continue;
      Fiber& n = fibers[i];
      g_current = &n;
      g_thread_idx = n.tid;
      asan_start_switch(fake_save, n.stack, n.stack_size);
#if defined(__x86_64__)
      mcpm_emu_switch(&f.sp, n.sp);
#else
      swapcontext(&f.context, &n.context);
#endif
      asan_finish_switch(f.asan_fake_stack, nullptr, nullptr);
      return;
    }
  }
  asan_start_switch(fake_save, g_scheduler_stack_bottom, g_scheduler_stack_size);
#if defined(__x86_64__)
  mcpm_emu_switch(&f.sp, g_scheduler_sp);
#else
  swapcontext(&f.context, &g_scheduler_context);
#endif
  asan_finish_switch(f.asan_fake_stack, nullptr, nullptr);
}

// Suspends the running fiber (or ends it, `final`) and runs the round's next ready fiber.
void pass_on(Fiber& f, bool final) { switch_away(f, final, false); }

// A fiber's whole life: the kernel body, then a final switch.
void fiber_main(Fiber* f) {
  asan_finish_switch(nullptr, nullptr, nullptr);
  g_block->call->run();
  if (!f->groups.empty() || !f->uncommitted.empty())
    kernel_fault("the thread ended with cp.async copies still in flight (a cp.async.wait_group is missing)");
  state_of(*f) = FiberState::Done;
  f->abandoned = false;
  ++g_block->done;
  pass_on(*f, true);
  std::abort();  // never resumed
}

#if !defined(__x86_64__)
void fiber_trampoline(unsigned lo, unsigned hi) {
  fiber_main(reinterpret_cast<Fiber*>((static_cast<uintptr_t>(hi) << 32) | lo));
}
#endif

void prepare_fiber(Fiber& f) {
#if defined(MCPM_EMU_ASAN)
  // Frames left by a fault (never returned from) keep their poisoned redzones; a finished fiber's
  // stack is clean.
  if (f.abandoned) __asan_unpoison_memory_region(f.stack, f.stack_size);
#endif
  f.asan_fake_stack = nullptr;
  f.abandoned = true;  // until it finishes
#if defined(__x86_64__)
  uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + f.stack_size) & ~uintptr_t{15};
  top -= 56;  // seven words: after the six pops and the ret, rsp is 16-byte aligned again
  auto* frame = reinterpret_cast<uint64_t*>(top);
  frame[0] = 0;                                                  // r15
  frame[1] = 0;                                                  // r14
  frame[2] = reinterpret_cast<uint64_t>(&fiber_main);            // r13: the function
  frame[3] = reinterpret_cast<uint64_t>(&f);                     // r12: its argument
  frame[4] = 0;                                                  // rbx
  frame[5] = 0;                                                  // rbp
  frame[6] = reinterpret_cast<uint64_t>(&mcpm_emu_fiber_start);  // return address
  f.sp = frame;
#else
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack;
  f.context.uc_stack.ss_size = f.stack_size;
  f.context.uc_link = nullptr;
  const uintptr_t p = reinterpret_cast<uintptr_t>(&f);
  makecontext(&f.context, reinterpret_cast<void (*)()>(&fiber_trampoline), 2, static_cast<unsigned>(p),
              static_cast<unsigned>(p >> 32));
#endif
}

// Starts a round's chain of fibers at `f`; returns when the round ends or a fault stops it.
void resume(Fiber& f) {
  g_current = &f;
  g_thread_idx = f.tid;
  ++g_stats->switches;
  asan_start_switch(&g_scheduler_fake_stack, f.stack, f.stack_size);
#if defined(__x86_64__)
  mcpm_emu_switch(&g_scheduler_sp, f.sp);
#else
  swapcontext(&g_scheduler_context, &f.context);
#endif
  asan_finish_switch(g_scheduler_fake_stack, nullptr, nullptr);
  g_current = nullptr;
}

const char* state_text(const Fiber& f) {
  switch (state_of(f)) {
    case FiberState::Ready: return "is running";
    case FiberState::AtBarrier: return "waits at __syncthreads";
    case FiberState::AtWarp: return "waits at another warp collective";
    case FiberState::Done: return "has exited";
  }
  return "?";
}

// Why no fiber of the block can go on (called when none is ready).
std::string describe_stall(const BlockRun& b) {
  std::ostringstream os;
  const std::vector<Fiber>& fibers = *b.fibers;
  for (size_t w = 0; w < b.warps.size(); ++w)
    for (const PendingCollective& p : b.warps[w]) {
      os << "lanes 0x" << std::hex << p.arrived << std::dec << " of warp " << w << " wait at " << p.what
         << " (mask 0x" << std::hex << p.mask << std::dec << ")";
      for (int lane = 0; lane < 32; ++lane) {
        if (!(p.mask >> lane & 1u) || (p.arrived >> lane & 1u)) continue;
        const size_t t = w * 32 + static_cast<size_t>(lane);
        if (t >= static_cast<size_t>(b.count)) {
          os << "; lane " << lane << " does not exist in this block";
          continue;
        }
        os << "; lane " << lane << " " << state_text(fibers[t]);
      }
      os << ". ";
    }
  if (b.at_barrier > 0)
    os << b.at_barrier << " of " << b.count << " threads wait at __syncthreads, " << b.done << " have exited";
  return os.str();
}

void block_fault(BlockRun& b, const std::string& message) {
  b.faulted = true;
  raise_fault(where_text(*b.call) + ": " + message);
}

// Runs one block to completion (true) or to a fault (false).
bool run_block(BlockRun& b, Order order, std::mt19937_64& rng) {
  std::vector<Fiber>& fibers = *b.fibers;
  std::vector<int> sequence(static_cast<size_t>(b.count));
  for (int i = 0; i < b.count; ++i) sequence[static_cast<size_t>(i)] = order == Order::Reverse ? b.count - 1 - i : i;
  for (;;) {
    if (order == Order::Random) std::shuffle(sequence.begin(), sequence.end(), rng);
    g_round = Round{sequence.data(), b.count, 0};
    while (g_round.next < g_round.count) {
      const size_t i = static_cast<size_t>(sequence[static_cast<size_t>(g_round.next++)]);
      if (g_states[i] != FiberState::Ready) continue;
      Fiber& f = fibers[i];
      resume(f);  // runs this fiber and the round's later ready ones
      if (b.faulted) return false;
    }
    if (b.done == b.count) return true;
    bool ready = false;
    for (int i = 0; i < b.count && !ready; ++i) ready = g_states[static_cast<size_t>(i)] == FiberState::Ready;
    if (ready) continue;
    bool warps_pending = false;
    for (const auto& w : b.warps) warps_pending = warps_pending || !w.empty();
    if (!warps_pending && b.at_barrier > 0 && b.at_barrier + b.done == b.count) {
      if (b.done > 0) {
        block_fault(b, std::to_string(b.at_barrier) + " threads wait at __syncthreads but " + std::to_string(b.done) +
                           " threads of the block have exited without reaching it (undefined on hardware)");
        return false;
      }
      std::fill(g_states.begin(), g_states.begin() + b.count, FiberState::Ready);
      b.at_barrier = 0;
      continue;
    }
    block_fault(b, "threads can never continue (a lane skipped a collective): " + describe_stall(b));
    return false;
  }
}

void poison_shared() {
  if (__start_mcpm_emu_shared && __stop_mcpm_emu_shared > __start_mcpm_emu_shared)
    std::memset(__start_mcpm_emu_shared, 0xff, static_cast<size_t>(__stop_mcpm_emu_shared - __start_mcpm_emu_shared));
}

// Runs every block of a launch in the given order; false after a fault.
bool run_grid(const KernelCall& call, Order order, uint64_t seed) {
  const unsigned threads = call.block.x * call.block.y * call.block.z;
  const uint64_t blocks = uint64_t{call.grid.x} * call.grid.y * call.grid.z;
  static std::vector<Fiber> fibers;  // kept across launches (one kernel runs at a time)
  if (fibers.size() < threads) fibers.resize(threads);
  g_states.assign(threads, FiberState::Ready);
  g_stats = &stats_ref();
  for (unsigned i = 0; i < threads; ++i) {
    Fiber& f = fibers[i];
    f.stack = stack_at(i);
    f.stack_size = kStackBytes;
    f.linear = static_cast<int>(i);
    f.tid = uint3{i % call.block.x, (i / call.block.x) % call.block.y, i / (call.block.x * call.block.y)};
  }
  // Dynamic shared memory: exactly the launch's bytes, so overruns reach AddressSanitizer.
  std::unique_ptr<unsigned char[]> dynamic(call.dynamic_smem ? new unsigned char[call.dynamic_smem] : nullptr);
  g_dynamic_smem = dynamic.get();
  g_block_dim = call.block;
  g_grid_dim = call.grid;
  {
    // The launching thread's stack, for the switches back to the scheduler (ASan's fiber
    // annotations need it); kernels may be launched from any host thread.
    thread_local const void* bottom = nullptr;
    thread_local size_t size = 0;
    pthread_attr_t attr;
    if (!bottom && pthread_getattr_np(pthread_self(), &attr) == 0) {
      void* addr = nullptr;
      pthread_attr_getstack(&attr, &addr, &size);
      pthread_attr_destroy(&attr);
      bottom = addr;
    }
    g_scheduler_stack_bottom = bottom;
    g_scheduler_stack_size = size;
  }

  std::vector<uint64_t> block_order(blocks);
  for (uint64_t i = 0; i < blocks; ++i) block_order[i] = order == Order::Reverse ? blocks - 1 - i : i;
  std::mt19937_64 rng(seed);
  if (order == Order::Random) std::shuffle(block_order.begin(), block_order.end(), rng);

  BlockRun b;
  b.call = &call;
  b.fibers = &fibers;
  b.count = static_cast<int>(threads);
  b.warps.resize((threads + 31) / 32);
  g_block = &b;
  bool ok = true;
  for (uint64_t linear : block_order) {
    g_block_idx = uint3{static_cast<unsigned>(linear % call.grid.x),
                        static_cast<unsigned>((linear / call.grid.x) % call.grid.y),
                        static_cast<unsigned>(linear / (uint64_t{call.grid.x} * call.grid.y))};
    poison_shared();
    if (dynamic) std::memset(dynamic.get(), 0xff, call.dynamic_smem);
    b.done = 0;
    b.at_barrier = 0;
    for (auto& w : b.warps) w.clear();
    for (unsigned i = 0; i < threads; ++i) {
      Fiber& f = fibers[i];
      state_of(f) = FiberState::Ready;
      f.uncommitted.clear();
      f.groups.clear();
      prepare_fiber(f);
    }
    ++g_stats->blocks;
    g_stats->threads += threads;
    if (!run_block(b, order, rng)) {
      ok = false;
      break;
    }
  }
  g_block = nullptr;
  g_dynamic_smem = nullptr;
  ++g_stats->launches;
  return ok;
}

// A device allocation reachable from a launch's arguments, with a copy of its bytes.
struct Snapshot {
  unsigned char* base;
  size_t size;
  std::vector<unsigned char> bytes;
};

std::vector<Snapshot> reachable_allocations(const KernelCall& call) {
  std::vector<Snapshot> out;
  for (const void* p : call.referenced) {
    uintptr_t base = 0;
    size_t size = 0;
    if (!p || !find_allocation(p, &base, &size)) continue;
    bool seen = false;
    for (const Snapshot& s : out) seen = seen || reinterpret_cast<uintptr_t>(s.base) == base;
    if (!seen) out.push_back(Snapshot{reinterpret_cast<unsigned char*>(base), size, {}});
  }
  return out;
}

constexpr size_t kRaceCheckMaxBytes = size_t{256} << 20;

}  // namespace

// ---- device-side entry points (device.h) -------------------------------------------------------------

void syncthreads() {
  Fiber& f = *g_current;
  state_of(f) = FiberState::AtBarrier;
  ++g_block->at_barrier;
  pass_on(f, false);
}

namespace {
// kernel_fault with "a b c" built on the stack: the fiber never returns, so no heap string may be
// left behind in its frames.
[[noreturn]] void collective_fault(const char* a, const char* b, const char* c) {
  char text[256];
  std::snprintf(text, sizeof text, "%s%s%s", a, b, c);
  kernel_fault(text);
}
}  // namespace

void warp_collective(const char* what, unsigned mask, void* io, Combine combine) {
  Fiber& f = *g_current;
  BlockRun& b = *g_block;
  const int lane = f.linear % 32, warp = f.linear / 32;
  if (!(mask >> lane & 1u)) collective_fault(what, " with a mask that leaves out the calling lane", "");
  const int lanes_here = std::min(32, b.count - warp * 32);
  if (lanes_here < 32 && (mask >> lanes_here) != 0)
    collective_fault(what, " names lanes that do not exist in this block (a partial warp)", "");
  std::vector<PendingCollective>& pending = b.warps[static_cast<size_t>(warp)];
  PendingCollective* p = nullptr;
  for (PendingCollective& c : pending) {
    if (c.mask == mask) {
      p = &c;
    } else if (c.mask & mask) {
      collective_fault(what, " overlaps the lanes of a pending ", c.what);
    }
  }
  if (!p) {
    pending.push_back(PendingCollective{mask, 0, what, combine});
    p = &pending.back();
  } else if (p->combine != combine || (p->what != what && std::strcmp(p->what, what) != 0)) {
    collective_fault(p->what, " and another collective are reached by the lanes of one warp: ", what);
  }
  f.record = io;
  p->arrived |= 1u << lane;
  if (p->arrived != mask) {
    state_of(f) = FiberState::AtWarp;
    pass_on(f, false);
    return;
  }
  // The last lane: exchange, release the others, go on.
  void* records[32] = {};
  std::vector<Fiber>& fibers = *b.fibers;
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u) records[l] = fibers[static_cast<size_t>(warp * 32 + l)].record;
  const Combine run = p->combine;
  pending.erase(pending.begin() + (p - pending.data()));
  run(records, mask);
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && l != lane) g_states[static_cast<size_t>(warp * 32 + l)] = FiberState::Ready;
}

unsigned char* dynamic_shared() { return g_dynamic_smem; }

void kernel_fault(const char* message) {
  if (!g_current || !g_block) {
    raise_fault(message);
    std::abort();  // only reachable through misuse outside a kernel
  }
  Fiber& f = *g_current;
  g_block->faulted = true;
  raise_fault(where_text(*g_block->call) + ", thread " + idx_text(f.tid) + ": " + message);
  state_of(f) = FiberState::Done;
  switch_away(f, true, true);
  std::abort();  // never resumed
}

int shuffle_source(ShuffleKind kind, int lane, int arg, int width) {
  const int segment = lane & ~(width - 1);
  switch (kind) {
    case ShuffleKind::Index: return segment + (arg & (width - 1));
    case ShuffleKind::Up: return lane - arg >= segment ? lane - arg : -1;
    case ShuffleKind::Down: return lane + arg < segment + width ? lane + arg : -1;
    case ShuffleKind::Xor: {
      const int src = lane ^ arg;
      return src >= segment && src < segment + width ? src : -1;
    }
  }
  return -1;
}

void combine_ballot(void* const* records, unsigned mask) {
  unsigned bits = 0;
  for (int lane = 0; lane < 32; ++lane)
    if ((mask >> lane & 1u) && static_cast<VoteRecord*>(records[lane])->predicate) bits |= 1u << lane;
  for (int lane = 0; lane < 32; ++lane)
    if (mask >> lane & 1u) static_cast<VoteRecord*>(records[lane])->result = bits;
}

void combine_nothing(void* const*, unsigned) {}

// ---- PTX (ptx.h) ---------------------------------------------------------------------------------------

namespace {

struct MmaRecord {
  const uint32_t* a;
  const uint32_t* b;
  const float* c;
  float* d;
};

float half_lo(uint32_t r) { return half_bits_to_float(static_cast<uint16_t>(r & 0xffffu)); }
float half_hi(uint32_t r) { return half_bits_to_float(static_cast<uint16_t>(r >> 16)); }

// D = A B + C for one m16n8k16 tile from the 32 lanes' fragments (layout: ptx.h).
void combine_mma(void* const* records, unsigned mask) {
  if (mask != 0xffffffffu) kernel_fault("mma.sync needs all 32 lanes of the warp");
  float A[16][16], B[16][8], C[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const auto* r = static_cast<const MmaRecord*>(records[lane]);
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i % 2), col = 2 * t + 8 * (i / 2);
      A[row][col] = half_lo(r->a[i]);
      A[row][col + 1] = half_hi(r->a[i]);
    }
    for (int i = 0; i < 2; ++i) {
      B[2 * t + 8 * i][g] = half_lo(r->b[i]);
      B[2 * t + 8 * i + 1][g] = half_hi(r->b[i]);
    }
    for (int i = 0; i < 4; ++i) C[g + 8 * (i / 2)][2 * t + i % 2] = r->c[i];
  }
  for (int lane = 0; lane < 32; ++lane) {
    const auto* r = static_cast<const MmaRecord*>(records[lane]);
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
      float acc = C[row][col];
      for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];  // fp16 products are exact in fp32
      r->d[i] = acc;
    }
  }
}

void retire_copies(Fiber& f, size_t keep_groups) {
  while (f.groups.size() > keep_groups) {
    for (const AsyncCopy& c : f.groups.front()) {
      const int n = std::min(c.src_bytes, c.copy_bytes);
      if (n > 0) std::memcpy(c.dst, c.src, static_cast<size_t>(n));
      if (n < c.copy_bytes) std::memset(static_cast<unsigned char*>(c.dst) + n, 0, static_cast<size_t>(c.copy_bytes - n));
    }
    f.groups.pop_front();
  }
}

}  // namespace

void mma_m16n8k16_f16_f32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  float out[4];
  MmaRecord r{a, b, c, out};
  warp_collective("mma.sync.m16n8k16", 0xffffffffu, &r, &combine_mma);
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

void cp_async(void* shared_dst, const void* global_src, int copy_bytes, int src_bytes) {
  if (!g_current) std::abort();
  if (copy_bytes != 4 && copy_bytes != 8 && copy_bytes != 16) kernel_fault("cp.async copies 4, 8 or 16 bytes");
  if (src_bytes < 0 || src_bytes > copy_bytes) kernel_fault("cp.async src-size outside [0, cp-size]");
  if (reinterpret_cast<uintptr_t>(shared_dst) % static_cast<uintptr_t>(copy_bytes) != 0 ||
      reinterpret_cast<uintptr_t>(global_src) % static_cast<uintptr_t>(copy_bytes) != 0)
    kernel_fault("cp.async address not aligned to its size");
  if (src_bytes > 0 && !is_device_range(global_src, static_cast<size_t>(src_bytes)))
    kernel_fault("cp.async reads outside device memory");
  g_current->uncommitted.push_back(AsyncCopy{shared_dst, global_src, copy_bytes, src_bytes});
}

void cp_async_commit_group() {
  Fiber& f = *g_current;
  f.groups.push_back(std::move(f.uncommitted));
  f.uncommitted.clear();
}

void cp_async_wait_group(int pending) { retire_copies(*g_current, static_cast<size_t>(std::max(pending, 0))); }

// ---- running a launch --------------------------------------------------------------------------------

namespace {
// One run, or two under the race check (forward, then reverse or another random order) from the same
// contents of `memory` (what the kernel may write), compared.
void run_checked(const KernelCall& call, std::vector<Snapshot>& memory) {
  const ScheduleConfig schedule = schedule_ref();
  const uint64_t seed = schedule.seed + stats_ref().launches;
  if (!schedule.race_check) {
    run_grid(call, schedule.order, seed);
    return;
  }
  size_t total = 0;
  for (const Snapshot& s : memory) total += s.size;
  if (total > kRaceCheckMaxBytes) {
    run_grid(call, schedule.order, seed);
    return;
  }
  for (Snapshot& s : memory) s.bytes.assign(s.base, s.base + s.size);
  if (!run_grid(call, Order::Forward, seed)) return;
  std::vector<std::vector<unsigned char>> forward(memory.size());
  for (size_t i = 0; i < memory.size(); ++i) {
    forward[i].assign(memory[i].base, memory[i].base + memory[i].size);
    std::memcpy(memory[i].base, memory[i].bytes.data(), memory[i].size);
  }
  const Order second = schedule.order == Order::Random ? Order::Random : Order::Reverse;
  if (!run_grid(call, second, seed ^ 0x9e3779b97f4a7c15ull)) return;
  ++stats_ref().race_checks;
  for (size_t i = 0; i < memory.size(); ++i) {
    const Snapshot& s = memory[i];
    for (size_t off = 0; off < s.size; ++off) {
      if (s.base[off] == forward[i][off]) continue;
      char text[256];
      std::snprintf(text, sizeof text,
                    "kernel %s <<<%s, %s>>>: data race: byte %zu of a %zu-byte allocation is 0x%02x after a "
                    "forward and 0x%02x after a %s fiber order (a missing __syncthreads / __syncwarp, or "
                    "threads writing one location)",
                    call.name, dim_text(call.grid).c_str(), dim_text(call.block).c_str(), off, s.size, forward[i][off],
                    s.base[off], second == Order::Reverse ? "reverse" : "random");
      raise_fault(text);
      return;
    }
  }
}

}  // namespace

void execute_kernel(const KernelCall& call) {
  if (device_faulted()) return;
  for (size_t i = 0; i < call.pointer_args.size(); ++i) {
    const void* p = call.pointer_args[i];
    uintptr_t base = 0;
    size_t size = 0;
    if (p && !find_allocation(p, &base, &size)) {
      char text[64];
      std::snprintf(text, sizeof text, "%p", p);
      raise_fault("kernel " + std::string(call.name) + ": pointer argument " + std::to_string(i) + " (" + text +
                  ") is not in device memory (freed, never allocated, or a host pointer; a graph replay reads "
                  "the pointers it captured)");
      return;
    }
  }
  std::vector<Snapshot> memory = reachable_allocations(call);
  run_checked(call, memory);
  // Out-of-bounds writes into the redzones of the allocations the kernel could reach.
  for (const Snapshot& s : memory) {
    const std::string damage = check_redzones(reinterpret_cast<uintptr_t>(s.base), s.size);
    if (damage.empty()) continue;
    restore_redzones(reinterpret_cast<uintptr_t>(s.base), s.size);
    raise_fault("kernel " + std::string(call.name) + " " + damage);
    return;
  }
}

}  // namespace mcpm_emu
