#include "engine/batch.h"

#include <chrono>
#include <utility>

#include "common/error.h"

namespace mcpm {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Records the exception being handled as the item's failure.
void fail(BatchItem& item) { item.status = current_exception_status(item.message); }

}  // namespace

BatchRunner::BatchRunner(std::shared_ptr<const Model> model, int32_t max_rows)
    : model_(std::move(model)),
      ctx_(model_->backend().create_context(model_->num_threads())),
      ws_(model_->backend(), model_->config(), max_rows, max_rows) {}

BatchRunner::~BatchRunner() {
  try {
    model_->backend().synchronize(*ctx_);
  } catch (...) {
  }
}

void BatchRunner::step(BatchItem* items, int32_t count) {
  std::vector<Session::BatchTurn> turns(static_cast<size_t>(count));
  for (int32_t i = 0; i < count; ++i) {
    BatchItem& item = items[i];
    Session::BatchTurn& turn = turns[static_cast<size_t>(i)];
    item.count = 0;
    item.finish = MCPM_FINISH_NONE;
    item.status = MCPM_OK;
    item.message.clear();
    turn.tokens = item.tokens;
    turn.n = item.n_tokens;
    turn.out = item.out;
    try {
      if (item.n_tokens + 1 > max_rows())
        invalid_argument("a prefill chunk of " + std::to_string(item.n_tokens) + " tokens does not fit a batch of " +
                         std::to_string(max_rows()) + " rows (at most max_rows - 1 tokens per chunk)");
      item.session->batch_prepare(turn);
    } catch (...) {
      fail(item);
      turn.rows.clear();
      continue;
    }
    const GenerateResult& r = turn.result;
    item.count = r.count;
    item.finish = r.finish;
    if (r.cancelled) {
      item.status = MCPM_ERR_CANCELLED;
      item.message = "generation cancelled by an abort request";
    } else if (r.error != MCPM_OK) {
      item.status = r.error;
      item.message = r.error_message;
    }
  }

  // Turns with rows, grouped by sessions that batch together, packed in order into passes of at most
  // max_rows() rows.
  std::vector<char> placed(static_cast<size_t>(count), 0);
  for (int32_t i = 0; i < count; ++i) {
    if (placed[static_cast<size_t>(i)] || turns[static_cast<size_t>(i)].rows.empty()) continue;
    std::vector<BatchItem*> pass_items;
    std::vector<Session::BatchTurn*> pass_turns;
    int64_t rows = 0;
    for (int32_t j = i; j < count; ++j) {
      Session::BatchTurn& turn = turns[static_cast<size_t>(j)];
      if (placed[static_cast<size_t>(j)] || turn.rows.empty() || !items[i].session->batches_with(*items[j].session))
        continue;
      const int64_t m = static_cast<int64_t>(turn.rows.size());
      if (rows + m > max_rows()) {
        run_pass(pass_items, pass_turns);
        pass_items.clear();
        pass_turns.clear();
        rows = 0;
      }
      placed[static_cast<size_t>(j)] = 1;
      pass_items.push_back(&items[j]);
      pass_turns.push_back(&turn);
      rows += m;
    }
    if (!pass_items.empty()) run_pass(pass_items, pass_turns);
  }
}

void BatchRunner::run_pass(std::vector<BatchItem*>& items, std::vector<Session::BatchTurn*>& turns) {
  Backend& be = model_->backend();
  const size_t count = items.size();
  std::vector<int32_t> tokens, positions;
  std::vector<BatchSequence> sequences(count);
  for (size_t i = 0; i < count; ++i) {
    Session& session = *items[i]->session;
    const Session::BatchTurn& turn = *turns[i];
    be.synchronize(session.context());  // its earlier work (sampling, a speculative round) is done
    BatchSequence& q = sequences[i];
    q.kv = &session.kv_cache();
    q.start = turn.start;
    q.rows = static_cast<int32_t>(turn.rows.size());
    for (int32_t r = 0; r < q.rows; ++r) {
      tokens.push_back(turn.rows[static_cast<size_t>(r)]);
      positions.push_back(static_cast<int32_t>(turn.start + r));
    }
  }
  // The batch's sessions share one RoPE table (Session::batches_with): the first one's.
  const Workspace& first = items[0]->session->workspace();
  const int32_t zero = 0;
  be.copy_rows(*ctx_, ws_.inv_freq, first.inv_freq, &zero, &zero, 1);
  ws_.attn_factor = first.attn_factor;

  Batch batch;
  batch.tokens = tokens.data();
  batch.positions = positions.data();
  batch.n = static_cast<int32_t>(tokens.size());
  batch.sequences = sequences.data();
  batch.count = static_cast<int32_t>(count);
  const int64_t t0 = now_ns();
  try {
    forward_batch(*model_, *ctx_, ws_, batch);
    be.synchronize(*ctx_);
  } catch (...) {
    for (size_t i = 0; i < count; ++i) {
      fail(*items[i]);
      items[i]->session->batch_abandon(*turns[i]);
    }
    return;
  }
  const int64_t elapsed = now_ns() - t0;
  int32_t row = 0;
  for (size_t i = 0; i < count; ++i) {
    try {
      items[i]->session->batch_commit(*turns[i], *ctx_, ws_.logits, static_cast<int32_t>(i), ws_.normed, row,
                                      elapsed);
    } catch (...) {
      fail(*items[i]);
      items[i]->session->batch_abandon(*turns[i]);
    }
    row += sequences[i].rows;
  }
  be.synchronize(*ctx_);
}

}  // namespace mcpm
