// A small fork-join pool: parallel_for splits [0, n) into chunks that the calling thread and the
// workers take from a shared counter. Workers spin briefly before sleeping, because decode issues a
// few hundred short parallel regions per token and a futex wake-up each time would cost more than
// the work. One pool per session (ExecContext), so sessions on different threads never contend.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace mcpm {

class ThreadPool {
 public:
  // num_threads counts the calling thread: 1 means no workers.
  explicit ThreadPool(int32_t num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int32_t size() const { return static_cast<int32_t>(workers_.size()) + 1; }

  // Calls f(begin, end, thread_index) over chunks of at most `chunk` items covering [0, n).
  // thread_index is in [0, size()). Blocks until all chunks are done; rethrows the first exception.
  template <typename F>
  void parallel_for(int64_t n, int64_t chunk, F&& f) {
    auto trampoline = [](void* arg, int64_t b, int64_t e, int32_t t) { (*static_cast<F*>(arg))(b, e, t); };
    run(n, chunk, trampoline, &f);
  }

 private:
  using Fn = void (*)(void*, int64_t, int64_t, int32_t);
  void run(int64_t n, int64_t chunk, Fn fn, void* arg);
  void work(int32_t thread_index);
  void worker_loop(int32_t thread_index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int32_t> pending_{0};
  std::atomic<int64_t> next_{0};
  bool stop_ = false;
  // The current job (written before generation_ is bumped, read after it is observed).
  int64_t n_ = 0;
  int64_t chunk_ = 1;
  Fn fn_ = nullptr;
  void* arg_ = nullptr;
  std::exception_ptr error_;
};

}  // namespace mcpm
