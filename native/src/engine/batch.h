// Continuous batching: one forward pass over the turns of many sessions (a generated token each, or
// a prefill chunk), so a memory-bound decode step reads the weights once for all of them.
//
// KV memory: each session keeps its own contiguous KV slot (engine/forward.h KvCache), sized at
// creation; a batch's attention reads every sequence from its own slot (Backend::attention_batch).
// Slots rather than paged blocks because every attention kernel (dense, tree, InfLLM v2's compressed
// keys) already reads contiguous rows, and a session's capacity is fixed when it is created; the
// managed MiniCpmSessionPool bounds how many slots exist.
//
// The scheduler that decides which sessions' turns form a step lives in managed code
// (MiniCpmBatchScheduler): sampling constraints, cancellation and streaming are managed concerns.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/forward.h"
#include "engine/session.h"

namespace mcpm {

// One session's turn in BatchRunner::step, and what came of it.
struct BatchItem {
  Session* session = nullptr;
  const int32_t* tokens = nullptr;  // a prefill chunk; nullptr with n_tokens == 0: generate one token
  int32_t n_tokens = 0;
  int32_t* out = nullptr;           // a generate turn's token (room for one)
  int32_t count = 0;
  mcpm_finish_reason finish = MCPM_FINISH_NONE;
  mcpm_status status = MCPM_OK;
  std::string message;
};

class BatchRunner {
 public:
  // max_rows: tokens per forward pass (the activation workspace); a prefill chunk plus a held token
  // must fit.
  BatchRunner(std::shared_ptr<const Model> model, int32_t max_rows);
  ~BatchRunner();
  BatchRunner(const BatchRunner&) = delete;
  BatchRunner& operator=(const BatchRunner&) = delete;

  int32_t max_rows() const { return static_cast<int32_t>(ws_.max_tokens); }

  // Runs every item's turn: the turns whose sessions batch together (Session::batches_with) share
  // forward passes of at most max_rows() rows. An item's failure is its own (status, message); the
  // others go on. The items' sessions are distinct and not in use elsewhere.
  void step(BatchItem* items, int32_t count);

 private:
  // One forward pass over turns [0, count) of `pass` (their rows fit).
  void run_pass(std::vector<BatchItem*>& items, std::vector<Session::BatchTurn*>& turns);

  std::shared_ptr<const Model> model_;
  std::unique_ptr<ExecContext> ctx_;
  Workspace ws_;
};

}  // namespace mcpm
