// Continuous batching through the C ABI (mcpm_batcher_step), on random tiny models, on the backend of
// $MCPM_TEST_BACKEND (CPU by default; the emulated-CUDA tier runs it on CUDA). A session's output in a
// batch must be its output alone:
//   - greedy tokens identical, for sessions of different lengths that join and leave mid-run, whose
//     prompts are prefilled in chunks inside steps where others decode;
//   - the KV cache the batch wrote equals the one a lone run writes: the logits of one more decoded
//     token agree within PathTolerance (fp32 summation order: the batch's GEMMs group rows differently);
//   - seeded sampling, penalties and token masks per row; an abort cancels one session only;
//   - InfLLM v2 (sparse) sequences, LongRoPE sessions whose RoPE tables differ (separate passes), and a
//     session with an EAGLE draft that speculates alone after batched steps;
//   - malformed calls change nothing; a full context fails its own item only.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "draft_util.h"
#include "minicpm4.h"
#include "test_util.h"

namespace {

using namespace mcpm_test;

struct BatcherDeleter {
  void operator()(mcpm_batcher* b) const { mcpm_batcher_free(b); }
};
using BatcherPtr = std::unique_ptr<mcpm_batcher, BatcherDeleter>;

BatcherPtr MakeBatcher(mcpm_model* m, int32_t max_rows = 64) {
  mcpm_batcher_params p{};
  p.struct_size = sizeof p;
  EXPECT_MCPM_OK(mcpm_batcher_params_default(&p));
  p.max_rows = max_rows;
  mcpm_batcher* b = nullptr;
  EXPECT_MCPM_OK(mcpm_batcher_create(m, &p, &b));
  return BatcherPtr(b);
}

SessionPtr MakeSession(mcpm_model* m, int32_t capacity = 256) {
  mcpm_session_params p{};
  p.struct_size = sizeof p;
  EXPECT_MCPM_OK(mcpm_session_params_default(&p));
  p.context_capacity = capacity;
  mcpm_session* s = nullptr;
  EXPECT_MCPM_OK(mcpm_session_create(m, &p, &s));
  return SessionPtr(s);
}

mcpm_sampling_params Sampling(int32_t max_new, float temperature = 0.0f, uint64_t seed = 0) {
  mcpm_sampling_params p{};
  p.struct_size = sizeof p;
  EXPECT_MCPM_OK(mcpm_sampling_params_default(&p));
  p.max_new_tokens = max_new;
  p.temperature = temperature;
  p.seed = seed;
  p.top_k = temperature > 0 ? 40 : 0;
  // Random tiny models fall into one-token loops under greedy decoding; a penalty keeps them varied.
  p.repetition_penalty = 1.5f;
  p.speculative = 0;
  return p;
}

// One session's job in a run: its prompt, when it joins (step index), its sampling.
struct Job {
  std::vector<int32_t> prompt;
  int32_t join_step = 0;
  mcpm_sampling_params sampling{};
};

struct Outcome {
  std::vector<int32_t> tokens;
  mcpm_finish_reason finish = MCPM_FINISH_NONE;
  mcpm_status status = MCPM_OK;
};

// The lone reference: prefill, then generate_step until finished.
Outcome RunAlone(mcpm_session* s, const Job& job) {
  Outcome o;
  EXPECT_MCPM_OK(mcpm_session_prefill(s, job.prompt.data(), static_cast<int32_t>(job.prompt.size()),
                                      MCPM_LOGITS_NONE, nullptr, 0));
  EXPECT_MCPM_OK(mcpm_session_set_sampling(s, &job.sampling));
  std::vector<int32_t> buf(MCPM_MAX_STEP_TOKENS);
  for (int guard = 0; guard < 1000 && o.finish == MCPM_FINISH_NONE; ++guard) {
    int32_t count = 0;
    o.status = mcpm_session_generate_step(s, buf.data(), MCPM_MAX_STEP_TOKENS, &count, &o.finish);
    o.tokens.insert(o.tokens.end(), buf.begin(), buf.begin() + count);
    if (o.status != MCPM_OK) break;
  }
  return o;
}

// The batched run: a session joins at its step, prefills in chunks of `chunk` tokens (one chunk per
// step) and then generates one token per step, all through mcpm_batcher_step; it leaves when finished.
std::vector<Outcome> RunBatched(mcpm_batcher* batcher, const std::vector<mcpm_session*>& sessions,
                                const std::vector<Job>& jobs, int32_t chunk) {
  const size_t n = jobs.size();
  std::vector<Outcome> out(n);
  std::vector<size_t> prefilled(n, 0);
  std::vector<bool> done(n, false), configured(n, false);
  std::vector<int32_t> token(n);
  for (int step = 0; step < 2000; ++step) {
    std::vector<mcpm_batch_item> items;
    std::vector<size_t> who;
    for (size_t i = 0; i < n; ++i) {
      if (done[i] || step < jobs[i].join_step) continue;
      mcpm_batch_item it{};
      it.session = sessions[i];
      if (prefilled[i] < jobs[i].prompt.size()) {
        const size_t m = std::min<size_t>(static_cast<size_t>(chunk), jobs[i].prompt.size() - prefilled[i]);
        it.tokens = jobs[i].prompt.data() + prefilled[i];
        it.n_tokens = static_cast<int32_t>(m);
      } else {
        if (!configured[i]) {
          EXPECT_MCPM_OK(mcpm_session_set_sampling(sessions[i], &jobs[i].sampling));
          configured[i] = true;
        }
        it.out_tokens = &token[i];
        it.out_capacity = 1;
      }
      items.push_back(it);
      who.push_back(i);
    }
    if (items.empty()) break;
    EXPECT_MCPM_OK(mcpm_batcher_step(batcher, items.data(), static_cast<int32_t>(items.size())));
    for (size_t k = 0; k < items.size(); ++k) {
      const size_t i = who[k];
      const mcpm_batch_item& it = items[k];
      if (it.n_tokens > 0) {
        EXPECT_EQ(it.out_status, MCPM_OK) << (it.out_message ? it.out_message : "");
        if (it.out_status == MCPM_OK) {
          prefilled[i] += static_cast<size_t>(it.n_tokens);
        } else {
          done[i] = true;
        }
        continue;
      }
      if (it.out_count == 1) out[i].tokens.push_back(token[i]);
      out[i].finish = it.out_finish;
      out[i].status = it.out_status;
      if (it.out_status != MCPM_OK || it.out_finish != MCPM_FINISH_NONE) done[i] = true;
    }
  }
  return out;
}

// Logits of decoding `token` next (the KV cache's content shows in them).
std::vector<float> NextLogits(mcpm_session* s, int32_t token, int32_t vocab) {
  std::vector<float> logits(static_cast<size_t>(vocab));
  EXPECT_MCPM_OK(mcpm_session_decode(s, token, logits.data(), logits.size()));
  return logits;
}

double MaxRelativeDifference(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

std::vector<Job> MixedJobs(const TinyModel& model, int count, int32_t max_new, float temperature = 0.0f) {
  std::vector<Job> jobs;
  for (int i = 0; i < count; ++i) {
    Job j;
    j.prompt = model.RandomTokens(3 + 11 * i % 37, 100 + static_cast<uint64_t>(i));
    j.join_step = (i * 3) % 7;
    j.sampling = Sampling(max_new + 4 * (i % 3), temperature, 7 + static_cast<uint64_t>(i));
    jobs.push_back(j);
  }
  return jobs;
}

// Runs the jobs batched and alone and checks each session's tokens and cache.
void ExpectBatchedEqualsAlone(const TinyModel& tiny, mcpm_model* m, const std::vector<Job>& jobs, int32_t chunk,
                              int32_t max_rows = 64, int32_t capacity = 256) {
  BatcherPtr batcher = MakeBatcher(m, max_rows);
  std::vector<SessionPtr> owned;
  std::vector<mcpm_session*> sessions;
  for (size_t i = 0; i < jobs.size(); ++i) {
    owned.push_back(MakeSession(m, capacity));
    sessions.push_back(owned.back().get());
  }
  const std::vector<Outcome> batched = RunBatched(batcher.get(), sessions, jobs, chunk);
  for (size_t i = 0; i < jobs.size(); ++i) {
    SessionPtr alone = MakeSession(m, capacity);
    const Outcome ref = RunAlone(alone.get(), jobs[i]);
    EXPECT_EQ(batched[i].status, MCPM_OK) << "session " << i;
    EXPECT_EQ(batched[i].tokens, ref.tokens) << "session " << i;
    EXPECT_EQ(batched[i].finish, ref.finish) << "session " << i;
    if (batched[i].tokens != ref.tokens || ref.finish != MCPM_FINISH_MAX_TOKENS) continue;
    const int32_t next = static_cast<int32_t>(5 + i);
    const double d = MaxRelativeDifference(NextLogits(sessions[i], next, tiny.config().vocab),
                                           NextLogits(alone.get(), next, tiny.config().vocab));
    EXPECT_LE(d, PathTolerance(EffectiveBackend(PrimaryBackend()))) << "session " << i;
  }
}

TEST(Batching, GreedySessionsJoiningAndLeavingEqualTheirLoneRuns) {
  TinyModel tiny(TinyConfig{});
  ModelPtr m = tiny.Load();
  ASSERT_TRUE(m);
  ExpectBatchedEqualsAlone(tiny, m.get(), MixedJobs(tiny, 6, 12), /*chunk=*/8);
}

TEST(Batching, ManyRowsSplitIntoSeveralPassesPerStep) {
  TinyModel tiny(TinyConfig{});
  ModelPtr m = tiny.Load();
  ASSERT_TRUE(m);
  // 8 rows per pass: prefill chunks of 7 plus decode rows overflow one pass.
  ExpectBatchedEqualsAlone(tiny, m.get(), MixedJobs(tiny, 5, 6), /*chunk=*/7, /*max_rows=*/8);
}

TEST(Batching, SeededSamplingPerRowEqualsLoneRuns) {
  TinyModel tiny(TinyConfig{});
  ModelPtr m = tiny.Load();
  ASSERT_TRUE(m);
  ExpectBatchedEqualsAlone(tiny, m.get(), MixedJobs(tiny, 5, 10, /*temperature=*/0.9f), 16);
}

TEST(Batching, Bf16AndInt4ModelsEqualTheirLoneRuns) {
  TinyConfig bf16;
  bf16.dtype = MCPM_DTYPE_BF16;
  TinyModel tiny_bf16(bf16);
  ModelPtr m = tiny_bf16.Load();
  ASSERT_TRUE(m);
  ExpectBatchedEqualsAlone(tiny_bf16, m.get(), MixedJobs(tiny_bf16, 4, 8), 16);

  TinyConfig q;
  q.hidden = 128;
  q.intermediate = 256;
  TinyModel tiny_int4(q);
  // The CPU's fast int4 path (int8 activations) is independent of the other rows in a call, too.
  ModelPtr mi = tiny_int4.Load(PrimaryBackend(), nullptr, 0, /*int4=*/true, MCPM_CPU_PRECISION_FAST);
  ASSERT_TRUE(mi);
  ExpectBatchedEqualsAlone(tiny_int4, mi.get(), MixedJobs(tiny_int4, 4, 8), 16);
}

TEST(Batching, SparseAttentionSequencesEqualTheirLoneRuns) {
  TinyConfig c;
  c.sparse_dense_len = 48;  // sessions cross into InfLLM v2 mid-run, at different steps
  c.max_position_embeddings = 512;
  TinyModel tiny(c);
  ModelPtr m = tiny.Load();
  ASSERT_TRUE(m);
  std::vector<Job> jobs = MixedJobs(tiny, 4, 20);
  for (size_t i = 0; i < jobs.size(); ++i) jobs[i].prompt = tiny.RandomTokens(30 + 6 * static_cast<int>(i), 50 + i);
  ExpectBatchedEqualsAlone(tiny, m.get(), jobs, 16);
}

TEST(Batching, LongRopeSessionsWithDifferentTablesRunApartAndEqualTheirLoneRuns) {
  TinyConfig c;
  c.longrope = true;
  c.original_max_position_embeddings = 128;
  TinyModel tiny(c);
  ModelPtr m = tiny.Load();
  ASSERT_TRUE(m);
  BatcherPtr batcher = MakeBatcher(m.get());
  // Capacity 96 uses the short factors, 256 the long ones.
  SessionPtr short_s = MakeSession(m.get(), 96), long_s = MakeSession(m.get(), 256);
  std::vector<Job> jobs = MixedJobs(tiny, 2, 8);
  jobs[0].join_step = jobs[1].join_step = 0;
  const std::vector<Outcome> batched = RunBatched(batcher.get(), {short_s.get(), long_s.get()}, jobs, 8);
  SessionPtr a = MakeSession(m.get(), 96), b = MakeSession(m.get(), 256);
  EXPECT_EQ(batched[0].tokens, RunAlone(a.get(), jobs[0]).tokens);
  EXPECT_EQ(batched[1].tokens, RunAlone(b.get(), jobs[1]).tokens);
}

// Allows only tokens whose id is congruent to the user data's residue mod 3.
int32_t ResidueMask(void* user_data, const int32_t*, int32_t, uint32_t* mask, int32_t words) {
  const int32_t residue = *static_cast<const int32_t*>(user_data);
  for (int32_t t = 0; t < words * 32; ++t)
    if (t % 3 == residue) mask[t >> 5] |= 1u << (t & 31);
  return 0;
}

TEST(Batching, TokenMasksApplyPerRow) {
  TinyModel tiny(TinyConfig{});
  ModelPtr m = tiny.Load();
  ASSERT_TRUE(m);
  std::vector<Job> jobs = MixedJobs(tiny, 3, 10);
  int32_t residues[3] = {0, 1, 2};
  for (size_t i = 0; i < jobs.size(); ++i) {
    jobs[i].sampling.token_mask = &ResidueMask;
    jobs[i].sampling.token_mask_user_data = &residues[i];
  }
  BatcherPtr batcher = MakeBatcher(m.get());
  std::vector<SessionPtr> owned;
  std::vector<mcpm_session*> sessions;
  for (size_t i = 0; i < jobs.size(); ++i) {
    owned.push_back(MakeSession(m.get()));
    sessions.push_back(owned.back().get());
  }
  const std::vector<Outcome> batched = RunBatched(batcher.get(), sessions, jobs, 8);
  for (size_t i = 0; i < jobs.size(); ++i) {
    ASSERT_FALSE(batched[i].tokens.empty());
    for (int32_t t : batched[i].tokens) EXPECT_EQ(t % 3, residues[i]) << "session " << i;
    SessionPtr alone = MakeSession(m.get());
    EXPECT_EQ(batched[i].tokens, RunAlone(alone.get(), jobs[i]).tokens) << "session " << i;
  }
}

TEST(Batching, AbortCancelsOneSessionAndTheOthersGoOn) {
  TinyModel tiny(TinyConfig{});
  ModelPtr m = tiny.Load();
  ASSERT_TRUE(m);
  BatcherPtr batcher = MakeBatcher(m.get());
  std::vector<SessionPtr> s;
  for (int i = 0; i < 3; ++i) s.push_back(MakeSession(m.get()));
  std::vector<Job> jobs = MixedJobs(tiny, 3, 10);
  std::vector<int32_t> token(3);
  std::vector<std::vector<int32_t>> got(3);
  for (int i = 0; i < 3; ++i) {
    ASSERT_MCPM_OK(mcpm_session_prefill(s[i].get(), jobs[i].prompt.data(), static_cast<int32_t>(jobs[i].prompt.size()),
                                        MCPM_LOGITS_NONE, nullptr, 0));
    ASSERT_MCPM_OK(mcpm_session_set_sampling(s[i].get(), &jobs[i].sampling));
  }
  for (int step = 0; step < 6; ++step) {
    if (step == 3) {
      ASSERT_MCPM_OK(mcpm_session_request_abort(s[1].get()));
    }
    std::vector<mcpm_batch_item> items(3);
    for (int i = 0; i < 3; ++i) {
      items[i].session = s[i].get();
      items[i].out_tokens = &token[i];
      items[i].out_capacity = 1;
    }
    ASSERT_MCPM_OK(mcpm_batcher_step(batcher.get(), items.data(), 3));
    for (int i = 0; i < 3; ++i) {
      if (step == 3 && i == 1) {
        EXPECT_EQ(items[i].out_status, MCPM_ERR_CANCELLED);
        EXPECT_EQ(items[i].out_count, 0);
        ASSERT_NE(items[i].out_message, nullptr);
        continue;
      }
      ASSERT_EQ(items[i].out_status, MCPM_OK) << items[i].out_message;
      got[i].push_back(token[i]);
    }
  }
  // The cancelled session lost nothing: it goes on where it was; the others are unaffected.
  for (int i = 0; i < 3; ++i) {
    SessionPtr alone = MakeSession(m.get());
    Outcome ref = RunAlone(alone.get(), jobs[i]);
    ref.tokens.resize(got[i].size());
    EXPECT_EQ(got[i], ref.tokens) << "session " << i;
  }
}

TEST(Batching, ADraftSessionDecodesPlainlyInABatchThenSpeculatesAlone) {
  TinyModel tiny(TinyConfig{});
  ModelPtr m = tiny.Load();
  ASSERT_TRUE(m);
  DraftPtr draft = MakeDraft(m.get(), tiny.config(), DraftSpec{});
  ASSERT_TRUE(draft);
  BatcherPtr batcher = MakeBatcher(m.get());
  SessionPtr spec = MakeSpecSession(m.get(), draft.get());
  SessionPtr other = MakeSession(m.get());
  const std::vector<int32_t> prompt = tiny.RandomTokens(20, 3), prompt2 = tiny.RandomTokens(9, 4);
  mcpm_sampling_params sp = Sampling(30);
  sp.speculative = 1;
  sp.spec_num_iter = 3;
  sp.spec_topk_per_iter = 4;
  sp.spec_tree_size = 10;
  ASSERT_MCPM_OK(mcpm_session_prefill(spec.get(), prompt.data(), 20, MCPM_LOGITS_NONE, nullptr, 0));
  ASSERT_MCPM_OK(mcpm_session_prefill(other.get(), prompt2.data(), 9, MCPM_LOGITS_NONE, nullptr, 0));
  ASSERT_MCPM_OK(mcpm_session_set_sampling(spec.get(), &sp));
  mcpm_sampling_params plain = Sampling(30);
  ASSERT_MCPM_OK(mcpm_session_set_sampling(other.get(), &plain));
  std::vector<int32_t> got;
  std::vector<int32_t> buf(MCPM_MAX_STEP_TOKENS);
  mcpm_finish_reason finish = MCPM_FINISH_NONE;
  // Alternate: two speculative rounds alone, then three batched steps, until done.
  for (int phase = 0; phase < 40 && finish == MCPM_FINISH_NONE; ++phase) {
    if (phase % 2 == 0) {
      for (int r = 0; r < 2 && finish == MCPM_FINISH_NONE; ++r) {
        int32_t count = 0;
        ASSERT_MCPM_OK(mcpm_session_generate_step(spec.get(), buf.data(), MCPM_MAX_STEP_TOKENS, &count, &finish));
        got.insert(got.end(), buf.begin(), buf.begin() + count);
      }
    } else {
      for (int r = 0; r < 3 && finish == MCPM_FINISH_NONE; ++r) {
        int32_t t0 = -1, t1 = -1;
        mcpm_batch_item items[2]{};
        items[0].session = spec.get();
        items[0].out_tokens = &t0;
        items[0].out_capacity = 1;
        items[1].session = other.get();
        items[1].out_tokens = &t1;
        items[1].out_capacity = 1;
        ASSERT_MCPM_OK(mcpm_batcher_step(batcher.get(), items, 2));
        ASSERT_EQ(items[0].out_status, MCPM_OK) << items[0].out_message;
        if (items[0].out_count == 1) got.push_back(t0);
        finish = items[0].out_finish;
      }
    }
  }
  mcpm_session_stats stats{};
  stats.struct_size = sizeof stats;
  ASSERT_MCPM_OK(mcpm_session_get_stats(spec.get(), &stats));
  EXPECT_GT(stats.spec_steps, 0);
  // The reference: plain greedy decoding alone.
  SessionPtr alone = MakeSession(m.get());
  Job job;
  job.prompt = prompt;
  job.sampling = Sampling(30);
  EXPECT_EQ(got, RunAlone(alone.get(), job).tokens);
}

TEST(Batching, MalformedCallsChangeNothingAndAFullContextFailsItsOwnItem) {
  TinyModel tiny(TinyConfig{});
  ModelPtr m = tiny.Load(), other_model = tiny.Load();
  ASSERT_TRUE(m && other_model);
  BatcherPtr batcher = MakeBatcher(m.get(), 16);
  SessionPtr a = MakeSession(m.get(), 24), b = MakeSession(m.get()), foreign = MakeSession(other_model.get());
  const std::vector<int32_t> prompt = tiny.RandomTokens(20, 9);
  int32_t ta = 0;
  mcpm_batch_item twice[2]{};
  twice[0].session = twice[1].session = a.get();
  twice[0].tokens = twice[1].tokens = prompt.data();
  twice[0].n_tokens = twice[1].n_tokens = 4;
  EXPECT_MCPM_STATUS(mcpm_batcher_step(batcher.get(), twice, 2), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(mcpm_last_error()).find("listed twice"), std::string::npos);
  mcpm_batch_item wrong{};
  wrong.session = foreign.get();
  wrong.tokens = prompt.data();
  wrong.n_tokens = 4;
  EXPECT_MCPM_STATUS(mcpm_batcher_step(batcher.get(), &wrong, 1), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(mcpm_last_error()).find("another model"), std::string::npos);
  int32_t length = -1;
  ASSERT_MCPM_OK(mcpm_session_length(a.get(), &length));
  EXPECT_EQ(length, 0);

  // a: 15 of 24 tokens; b: a chunk larger than a pass fails alone; then a's chunk of 10 does not fit.
  mcpm_batch_item items[2]{};
  items[0].session = a.get();
  items[0].tokens = prompt.data();
  items[0].n_tokens = 15;
  items[1].session = b.get();
  items[1].tokens = prompt.data();
  items[1].n_tokens = 16;
  ASSERT_MCPM_OK(mcpm_batcher_step(batcher.get(), items, 2));
  EXPECT_EQ(items[0].out_status, MCPM_OK);
  EXPECT_EQ(items[1].out_status, MCPM_ERR_INVALID_ARGUMENT);
  ASSERT_NE(items[1].out_message, nullptr);
  EXPECT_NE(std::string(items[1].out_message).find("max_rows"), std::string::npos);
  items[0].n_tokens = 10;
  items[1].n_tokens = 5;
  ASSERT_MCPM_OK(mcpm_batcher_step(batcher.get(), items, 2));
  EXPECT_EQ(items[0].out_status, MCPM_ERR_CONTEXT_FULL);
  EXPECT_EQ(items[1].out_status, MCPM_OK);
  ASSERT_MCPM_OK(mcpm_session_length(a.get(), &length));
  EXPECT_EQ(length, 15);
  ASSERT_MCPM_OK(mcpm_session_length(b.get(), &length));
  EXPECT_EQ(length, 5);
  // Generating up to the capacity finishes a with CONTEXT_FULL.
  mcpm_sampling_params sp = Sampling(0);
  ASSERT_MCPM_OK(mcpm_session_set_sampling(a.get(), &sp));
  mcpm_batch_item gen{};
  gen.session = a.get();
  gen.out_tokens = &ta;
  gen.out_capacity = 1;
  mcpm_finish_reason finish = MCPM_FINISH_NONE;
  for (int i = 0; i < 20 && finish == MCPM_FINISH_NONE; ++i) {
    ASSERT_MCPM_OK(mcpm_batcher_step(batcher.get(), &gen, 1));
    ASSERT_EQ(gen.out_status, MCPM_OK);
    finish = gen.out_finish;
  }
  EXPECT_EQ(finish, MCPM_FINISH_CONTEXT_FULL);
  mcpm_batcher_params bad{};
  bad.struct_size = sizeof bad;
  ASSERT_MCPM_OK(mcpm_batcher_params_default(&bad));
  bad.max_rows = 1;
  mcpm_batcher* none = nullptr;
  EXPECT_MCPM_STATUS(mcpm_batcher_create(m.get(), &bad, &none), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(none, nullptr);
}

}  // namespace
