#include "backend/cpu/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define MCPM_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define MCPM_CPU_RELAX() asm volatile("yield")
#else
#define MCPM_CPU_RELAX() ((void)0)
#endif

namespace mcpm {

namespace {
constexpr int kSpinIterations = 4000;  // a few microseconds to tens of microseconds, by CPU
}

ThreadPool::ThreadPool(int32_t num_threads) {
  const int32_t workers = std::max<int32_t>(0, num_threads - 1);
  workers_.reserve(static_cast<size_t>(workers));
  for (int32_t i = 0; i < workers; ++i) workers_.emplace_back([this, i] { worker_loop(i + 1); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_ready_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work(int32_t thread_index) {
  try {
    for (;;) {
      const int64_t begin = next_.fetch_add(chunk_, std::memory_order_relaxed);
      if (begin >= n_) break;
      fn_(arg_, begin, std::min(n_, begin + chunk_), thread_index);
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
    next_.store(n_, std::memory_order_relaxed);  // let the others stop early
  }
}

void ThreadPool::worker_loop(int32_t thread_index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int i = 0; i < kSpinIterations && g == seen; ++i) {
      MCPM_CPU_RELAX();
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [&] { return stop_ || generation_.load(std::memory_order_acquire) != seen; });
      if (stop_) return;
      g = generation_.load(std::memory_order_acquire);
    }
    seen = g;
    work(thread_index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);
      work_done_.notify_one();
    }
  }
}

void ThreadPool::run(int64_t n, int64_t chunk, Fn fn, void* arg) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(1, chunk);
  if (workers_.empty() || n <= chunk) {
    for (int64_t b = 0; b < n; b += chunk) fn(arg, b, std::min(n, b + chunk), 0);
    return;
  }
  n_ = n;
  chunk_ = chunk;
  fn_ = fn;
  arg_ = arg;
  error_ = nullptr;
  next_.store(0, std::memory_order_relaxed);
  pending_.store(static_cast<int32_t>(workers_.size()), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  work_ready_.notify_all();
  work(0);
  for (int i = 0; i < kSpinIterations && pending_.load(std::memory_order_acquire) != 0; ++i) MCPM_CPU_RELAX();
  if (pending_.load(std::memory_order_acquire) != 0) {
    std::unique_lock<std::mutex> lock(mutex_);
    work_done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
  }
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

}  // namespace mcpm
