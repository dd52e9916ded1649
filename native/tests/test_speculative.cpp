// Speculative decoding (EAGLE-2 trees, FR-Spec draft vocabularies) through the C ABI, on random
// tiny targets with random drafts. The draft only changes how fast tokens come, never which:
//   - greedy speculative output == plain greedy output token for token (many seeds, tree shapes,
//     draft layouts, with and without FR-Spec, dense and InfLLM v2 targets);
//   - sampling with the same seed gives the same tokens, and the distribution of the first two
//     sampled tokens matches the target's exact probabilities (chi-square, toy vocabulary);
//   - after speculative rounds the KV cache equals a plain run's (logits of a continuation agree);
//   - stop tokens, token budgets, context full, rewind and abort behave as without a draft;
//   - bad drafts, vocabularies and tree parameters are rejected with a message.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <cstdio>
#include <map>
#include <numeric>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "draft_util.h"
#include "minicpm4.h"
#include "test_util.h"

namespace {

using namespace mcpm_test;

struct Tree {
  int32_t num_iter, topk, size;
};

mcpm_sampling_params Sampling(Tree t, float temperature = 0.0f, uint64_t seed = 0) {
  mcpm_sampling_params p{};
  p.struct_size = sizeof p;
  EXPECT_MCPM_OK(mcpm_sampling_params_default(&p));
  p.temperature = temperature;
  p.seed = seed;
  p.spec_num_iter = t.num_iter;
  p.spec_topk_per_iter = t.topk;
  p.spec_tree_size = t.size;
  // Random tiny targets fall into loops of one token under plain greedy decoding; a repetition
  // penalty keeps their output varied (and makes every emitted token depend on its whole prefix).
  p.repetition_penalty = 1.6f;
  return p;
}

struct GenRun {
  std::vector<int32_t> tokens;
  mcpm_finish_reason finish = MCPM_FINISH_NONE;
  mcpm_session_stats stats{};
};

// Prefills `prompt`, then generates up to n tokens through mcpm_session_generate_step (step) or
// mcpm_session_generate in calls of `per_call` tokens.
GenRun Generate(mcpm_session* s, const std::vector<int32_t>& prompt, int n, const mcpm_sampling_params& sp,
             bool step = true, int per_call = 7) {
  GenRun r;
  EXPECT_MCPM_OK(mcpm_session_prefill(s, prompt.data(), static_cast<int32_t>(prompt.size()), MCPM_LOGITS_NONE,
                                      nullptr, 0));
  mcpm_sampling_params capped = sp;
  if (capped.max_new_tokens == 0) capped.max_new_tokens = n;  // a last round must not run past n
  EXPECT_MCPM_OK(mcpm_session_set_sampling(s, &capped));
  std::vector<int32_t> buf(MCPM_MAX_STEP_TOKENS);
  while (static_cast<int>(r.tokens.size()) < n && r.finish == MCPM_FINISH_NONE) {
    int32_t count = 0;
    mcpm_status st;
    if (step) {
      st = mcpm_session_generate_step(s, buf.data(), static_cast<int32_t>(buf.size()), &count, &r.finish);
    } else {
      const int32_t want = std::min(per_call, n - static_cast<int>(r.tokens.size()));
      st = mcpm_session_generate(s, want, buf.data(), static_cast<int32_t>(buf.size()), &count, &r.finish);
    }
    if (st != MCPM_OK) {
      ADD_FAILURE() << "generate failed: " << mcpm_last_error();
      break;
    }
    r.tokens.insert(r.tokens.end(), buf.begin(), buf.begin() + count);
  }
  if (static_cast<int>(r.tokens.size()) > n) r.tokens.resize(static_cast<size_t>(n));
  r.stats.struct_size = sizeof r.stats;
  EXPECT_MCPM_OK(mcpm_session_get_stats(s, &r.stats));
  return r;
}

// Plain decoding's run to compare with: a fresh session without a draft (`capacity` tokens) and `sp`
// with speculation off.
GenRun GeneratePlain(mcpm_model* m, const std::vector<int32_t>& prompt, int n, mcpm_sampling_params sp,
                     int32_t capacity = 256) {
  SessionPtr plain = MakeSession(m, capacity);
  if (!plain) {
    ADD_FAILURE() << "plain session: " << mcpm_last_error();
    return GenRun{};
  }
  sp.speculative = 0;
  return Generate(plain.get(), prompt, n, sp);
}

// Greedy speculative output equals plain greedy output "up to floating-point ties" (architecture.md):
// exactly on the CPU, whose evaluation paths differ only in summation order. On CUDA a one-ulp
// difference can flip a bf16 rounding (PathTolerance in test_util.h), so the two runs may part where
// the target's two best (penalised) logits are within that tolerance of each other. Success iff
// `got` equals `want` (on their common length), or on a non-CPU backend they first differ at such
// a tie, recomputed from a fresh plain session over prefix + want[0, i).
::testing::AssertionResult SameGreedyTokens(mcpm_model* m, int32_t vocab, const std::vector<int32_t>& prefix,
                                            const std::vector<int32_t>& want, const std::vector<int32_t>& got,
                                            const mcpm_sampling_params& sp) {
  const size_t common = std::min(want.size(), got.size());
  size_t i = 0;
  while (i < common && want[i] == got[i]) ++i;
  if (i == common) return ::testing::AssertionSuccess();
  auto failure = ::testing::AssertionFailure();
  failure << "tokens differ first at index " << i << " (want " << want[i] << ", got " << got[i] << ")";
  if (EffectiveBackend(PrimaryBackend()) == MCPM_BACKEND_CPU) return failure;
  std::vector<int32_t> context(prefix);
  context.insert(context.end(), want.begin(), want.begin() + static_cast<std::ptrdiff_t>(i));
  SessionPtr s = MakeSession(m, static_cast<int32_t>(context.size()) + 8);
  if (!s) return failure << "; no session to check for a tie";
  std::vector<float> logits(static_cast<size_t>(vocab));
  if (mcpm_session_prefill(s.get(), context.data(), static_cast<int32_t>(context.size()), MCPM_LOGITS_LAST,
                           logits.data(), logits.size()) != MCPM_OK)
    return failure << "; prefill for the tie check failed: " << mcpm_last_error();
  // The sampler's penalties over the last penalty_last_n context tokens (engine/sampler.cpp).
  const int64_t len = static_cast<int64_t>(context.size());
  const int64_t n = sp.penalty_last_n < 0 ? len : std::min<int64_t>(sp.penalty_last_n, len);
  std::map<int32_t, int> counts;
  for (int64_t k = len - n; k < len; ++k) ++counts[context[static_cast<size_t>(k)]];
  for (const auto& [token, count] : counts) {
    float& l = logits[static_cast<size_t>(token)];
    if (sp.repetition_penalty != 1.0f) l = l > 0 ? l / sp.repetition_penalty : l * sp.repetition_penalty;
    l -= sp.frequency_penalty * static_cast<float>(count) + sp.presence_penalty;
  }
  const double margin = std::fabs(static_cast<double>(logits[static_cast<size_t>(want[i])]) - logits[static_cast<size_t>(got[i])]);
  const double bound = PathTolerance(PrimaryBackend()) * std::max(1.0, MaxAbs(logits.data(), static_cast<size_t>(vocab)));
  if (margin <= bound) {
    std::printf("[ NOTE     ] greedy runs part at a floating-point tie at index %zu: logits %d and %d are %.3g apart "
                "(tie bound %.3g)\n", i, want[i], got[i], margin, bound);
    return ::testing::AssertionSuccess();
  }
  return failure << "; the target's logits for them are " << margin << " apart, more than the tie bound " << bound;
}

TinyConfig TargetConfig(uint64_t seed, int32_t heads = 4, int32_t kv_heads = 2, int32_t head_dim = 32) {
  TinyConfig c;
  c.vocab = 320, c.hidden = 96, c.layers = 2, c.heads = heads, c.kv_heads = kv_heads, c.head_dim = head_dim;
  c.intermediate = 160, c.max_position_embeddings = 512, c.seed = seed;
  return c;
}

// A tree of 3 levels whose width fits a draft vocabulary of `vocab` tokens.
Tree TreeFor(size_t vocab) {
  const int32_t k = static_cast<int32_t>(std::min<size_t>(6, vocab));
  return Tree{3, k, std::min(24, 1 + k + 2 * k * k)};
}

// Distinct tokens in order of first appearance, at most `limit`.
std::vector<int32_t> Distinct(const std::vector<int32_t>& tokens, size_t limit) {
  std::vector<int32_t> out;
  for (int32_t t : tokens)
    if (std::find(out.begin(), out.end(), t) == out.end() && out.size() < limit) out.push_back(t);
  return out;
}

// A plain greedy run of n tokens, then the same prompt with a random draft whose FR-Spec vocabulary
// is the reference's first 8 distinct tokens, so its trees cover what the target emits and paths of
// several tokens are accepted. The sessions stay open for further checks.
struct CoveredRun {
  SessionPtr plain, spec;
  DraftPtr draft;
  GenRun reference, result;
  double mean_accepted = 0;
};

CoveredRun RunWithCoveringDraft(mcpm_model* m, const TinyConfig& tc, const std::vector<int32_t>& prompt, int n,
                                uint64_t draft_seed = 5) {
  CoveredRun r;
  r.plain = MakeSession(m, 256);
  mcpm_sampling_params off = Sampling({3, 6, 24});
  off.speculative = 0;
  r.reference = Generate(r.plain.get(), prompt, n, off);
  DraftSpec ds;
  ds.seed = draft_seed;
  ds.vocabulary = Distinct(r.reference.tokens, 8);
  r.draft = MakeDraft(m, tc, ds);
  if (!r.draft) return r;
  r.spec = MakeSpecSession(m, r.draft.get());
  r.result = Generate(r.spec.get(), prompt, n, Sampling(TreeFor(ds.vocabulary.size())));
  r.mean_accepted = static_cast<double>(r.result.stats.spec_emitted_tokens) /
                    static_cast<double>(std::max<int64_t>(r.result.stats.spec_steps, 1));
  return r;
}

// ---------------------------------------------------------------------------------------------------

struct GreedyCase {
  uint64_t seed;
  Tree tree;
  int32_t heads, kv_heads, head_dim;
  DraftSpec draft;
  const char* name;
};

void PrintTo(const GreedyCase& c, std::ostream* os) { *os << c.name; }

class GreedyEquality : public ::testing::TestWithParam<GreedyCase> {};

// Invariant 1: the target decides every emitted token, so any draft gives plain greedy's tokens.
TEST_P(GreedyEquality, SpeculativeGreedyEqualsPlainGreedy) {
  const GreedyCase& gc = GetParam();
  const TinyConfig tc = TargetConfig(gc.seed, gc.heads, gc.kv_heads, gc.head_dim);
  TinyModel tm(tc);
  ModelPtr m = tm.Load(PrimaryBackend(), nullptr, 2);
  ASSERT_TRUE(m);
  const auto prompt = tm.RandomTokens(9, gc.seed + 100);
  const int n = OnEmulatedCuda() ? 24 : 48;  // emulated CUDA: half the tokens

  mcpm_sampling_params off = Sampling(gc.tree);
  off.speculative = 0;
  const GenRun reference = GeneratePlain(m.get(), prompt, n, off);
  ASSERT_EQ(reference.tokens.size(), static_cast<size_t>(n));

  DraftSpec ds = gc.draft;
  ds.seed = gc.seed * 31 + 7;
  DraftPtr d = MakeDraft(m.get(), tc, ds);
  ASSERT_TRUE(d);
  for (bool step : {true, false}) {
    SessionPtr s = MakeSpecSession(m.get(), d.get());
    const GenRun spec = Generate(s.get(), prompt, n, Sampling(gc.tree), step);
    EXPECT_TRUE(SameGreedyTokens(m.get(), tc.vocab, prompt, reference.tokens, spec.tokens, off))
        << gc.name << (step ? " (generate_step)" : " (generate)");
    EXPECT_GT(spec.stats.spec_steps, 0);
    EXPECT_GE(spec.stats.spec_emitted_tokens, spec.stats.spec_steps);  // each round emits >= 1 token
    EXPECT_LE(spec.stats.spec_emitted_tokens, spec.stats.spec_steps * (gc.tree.num_iter + 1));
  }
}

std::vector<GreedyCase> GreedyCases() {
  std::vector<GreedyCase> cases;
  DraftSpec minicpm;  // input norms, attention norm, bias
  DraftSpec plain_eagle;
  plain_eagle.input_norm = false, plain_eagle.attn_norm = false, plain_eagle.bias = true;
  DraftSpec two_layers;
  two_layers.layers = 2, two_layers.bias = false;
  DraftSpec fr;  // FR-Spec: a random quarter of the vocabulary
  {
    std::vector<int32_t> ids(320);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937_64(3));
    ids.resize(80);
    fr.vocabulary = ids;
  }
  cases.push_back({1, {2, 10, 12}, 4, 2, 32, minicpm, "cpmcu_defaults"});
  cases.push_back({2, {6, 10, 60}, 4, 2, 32, minicpm, "frspec_eval_tree"});
  cases.push_back({3, {4, 4, 16}, 8, 1, 16, plain_eagle, "gqa8_plain_eagle"});
  cases.push_back({4, {1, 5, 6}, 4, 4, 24, two_layers, "one_level_mha"});
  cases.push_back({5, {3, 8, 64}, 4, 2, 32, fr, "frspec_quarter_vocab"});
  cases.push_back({6, {5, 2, 10}, 16, 1, 8, fr, "gqa16_narrow_tree"});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Trees, GreedyEquality, ::testing::ValuesIn(GreedyCases()),
                         [](const ::testing::TestParamInfo<GreedyCase>& i) { return std::string(i.param.name); });

// An FR-Spec vocabulary made of the tokens the target is about to emit makes the random draft's
// trees cover them, so paths of several tokens get accepted: the compaction and draft catch-up
// paths run, and the output still equals plain greedy.
TEST(Speculative, AcceptedPathsOfSeveralTokensKeepTheOutputExact) {
  for (uint64_t seed : {11u, 12u, 13u}) {
    const TinyConfig tc = TargetConfig(seed);
    TinyModel tm(tc);
    ModelPtr m = tm.Load(PrimaryBackend(), nullptr, 2);
    ASSERT_TRUE(m);
    const auto prompt = tm.RandomTokens(7, seed);
    const CoveredRun r = RunWithCoveringDraft(m.get(), tc, prompt, 60, seed);
    EXPECT_TRUE(SameGreedyTokens(m.get(), tc.vocab, prompt, r.reference.tokens, r.result.tokens, Sampling({3, 6, 24})))
        << "seed " << seed;
    const double mean = r.mean_accepted;
    EXPECT_GT(mean, 1.3) << "seed " << seed << ": the trees should cover the target's tokens";
  }
}

// MCPM_SPEC_TREE_AUTO: whatever adaptive speculation chooses per step (plain decoding, trees of 4 to 32 nodes), the
// tokens are plain greedy's, and the statistics account for every emitted token and report the last choice.
TEST(Speculative, AdaptiveSpeculationKeepsTheOutputAndReportsItsChoice) {
  const TinyConfig tc = TargetConfig(11);
  TinyModel tm(tc);
  ModelPtr m = tm.Load(PrimaryBackend(), nullptr, 2);
  ASSERT_TRUE(m);
  const auto prompt = tm.RandomTokens(7, 11);
  const int n = 60;
  mcpm_sampling_params off = Sampling({2, 10, 12});
  off.speculative = 0;
  const GenRun reference = GeneratePlain(m.get(), prompt, n, off);
  DraftSpec ds;
  ds.seed = 9;
  // Trees that cover the output (rounds accept several tokens), padded to 8 tokens so every tree of the ladder fits.
  ds.vocabulary = Distinct(reference.tokens, 8);
  for (int32_t id = 0; ds.vocabulary.size() < 8; ++id)
    if (std::find(ds.vocabulary.begin(), ds.vocabulary.end(), id) == ds.vocabulary.end()) ds.vocabulary.push_back(id);
  DraftPtr d = MakeDraft(m.get(), tc, ds);
  ASSERT_TRUE(d);
  for (bool step : {true, false}) {
    SessionPtr s = MakeSpecSession(m.get(), d.get());
    const GenRun spec = Generate(s.get(), prompt, n, Sampling({2, 10, MCPM_SPEC_TREE_AUTO}), step);
    EXPECT_TRUE(SameGreedyTokens(m.get(), tc.vocab, prompt, reference.tokens, spec.tokens, off));
    EXPECT_GT(spec.stats.spec_steps, 0) << "the first probe round always runs";
    // Every token is the first one (sampled from the prefill's logits), a round's, a plain step's by choice, or
    // one before a round (which fed the draft).
    EXPECT_LE(spec.stats.spec_emitted_tokens + spec.stats.spec_plain_tokens, spec.stats.generated_tokens);
    EXPECT_GT(spec.stats.spec_plain_tokens, 0) << "plain steps are measured first";
    EXPECT_TRUE(spec.stats.spec_tree_size == 0 || spec.stats.spec_tree_size == 4 || spec.stats.spec_tree_size == 8 ||
                spec.stats.spec_tree_size == 16 || spec.stats.spec_tree_size == 32)
        << spec.stats.spec_tree_size;
    EXPECT_EQ(spec.stats.spec_num_iter == 0, spec.stats.spec_tree_size == 0);
  }
  // A host built before the adaptive fields were added gets the older fields only.
  SessionPtr s = MakeSpecSession(m.get(), d.get());
  mcpm_session_stats older{};
  older.struct_size = static_cast<uint32_t>(offsetof(mcpm_session_stats, spec_plain_tokens));
  older.spec_plain_tokens = -7;
  EXPECT_MCPM_OK(mcpm_session_get_stats(s.get(), &older));
  EXPECT_EQ(older.spec_plain_tokens, -7) << "written past the host's struct_size";
}

// Int4 (Marlin) target and draft, the draft's fc through CPM.cu's fused fc.qweight: speculative
// greedy output is the int4 target's plain greedy output, and the int4 draft (whose FR-Spec
// vocabulary covers some of the target's tokens) still gets draft tokens accepted.
TEST(Speculative, Int4TargetAndDraftGreedyEqualsPlainGreedy) {
  TinyConfig tc = TargetConfig(35, 4, 2, 32);
  tc.hidden = 128, tc.intermediate = 256;  // int4-compatible: every K % 128 == 0, N % 64 == 0
  tc.tied = false;  // with a tied head this wider random model keeps repeating its input token
  TinyModel tm(tc);
  ModelPtr m = tm.Load(PrimaryBackend(), nullptr, 2, /*int4=*/true);
  ASSERT_TRUE(m);
  const auto prompt = tm.RandomTokens(8, 31);
  const int n = 40;
  const Tree tree{3, 6, 24};
  mcpm_sampling_params off = Sampling(tree);
  off.speculative = 0;
  const GenRun reference = GeneratePlain(m.get(), prompt, n, off);
  ASSERT_EQ(reference.tokens.size(), static_cast<size_t>(n));
  ASSERT_GE(Distinct(reference.tokens, 8).size(), 6u) << "the target should not repeat one token";
  DraftSpec ds;
  ds.int4 = true;
  ds.seed = 32;
  for (bool covering : {false, true}) {
    ds.vocabulary = covering ? Distinct(reference.tokens, 8) : std::vector<int32_t>{};
    DraftPtr d = MakeDraft(m.get(), tc, ds);
    ASSERT_TRUE(d);
    SessionPtr s = MakeSpecSession(m.get(), d.get());
    const GenRun spec = Generate(s.get(), prompt, n, Sampling(covering ? TreeFor(ds.vocabulary.size()) : tree));
    EXPECT_TRUE(SameGreedyTokens(m.get(), tc.vocab, prompt, reference.tokens, spec.tokens, off))
        << (covering ? "covering FR-Spec draft" : "random draft");
    EXPECT_GT(spec.stats.spec_steps, 0) << "draft " << covering << " vocabulary " << ds.vocabulary.size();
    if (covering) {
      EXPECT_GT(spec.stats.spec_emitted_tokens, spec.stats.spec_steps) << "no round accepted a draft token";
    }
  }
}

// Invariant 5: after compaction the cache holds what a plain run holds: the logits of a common
// continuation agree, and so does the history.
TEST(Speculative, KvCacheAfterSpeculativeRoundsEqualsPlainRun) {
  const TinyConfig tc = TargetConfig(21);
  TinyModel tm(tc);
  ModelPtr m = tm.Load(PrimaryBackend(), nullptr, 2);
  ASSERT_TRUE(m);
  const auto prompt = tm.RandomTokens(12, 4);
  const CoveredRun r = RunWithCoveringDraft(m.get(), tc, prompt, 40);
  ASSERT_TRUE(SameGreedyTokens(m.get(), tc.vocab, prompt, r.reference.tokens, r.result.tokens, Sampling({3, 6, 24})));
  if (r.result.tokens != r.reference.tokens) GTEST_SKIP() << "the runs parted at a floating-point tie (see NOTE)";
  EXPECT_EQ(SessionTokens(r.spec.get()), SessionTokens(r.plain.get()));

  const auto tail = tm.RandomTokens(5, 99);
  const size_t V = static_cast<size_t>(tc.vocab);
  std::vector<float> a(V * tail.size()), b(V * tail.size());
  ASSERT_MCPM_OK(mcpm_session_prefill(r.plain.get(), tail.data(), 5, MCPM_LOGITS_ALL, a.data(), a.size()));
  ASSERT_MCPM_OK(mcpm_session_prefill(r.spec.get(), tail.data(), 5, MCPM_LOGITS_ALL, b.data(), b.size()));
  EXPECT_LT(MaxAbsDiff(a.data(), b.data(), a.size()),
            PathTolerance(PrimaryBackend()) * std::max(1.0, MaxAbs(a.data(), a.size())));
}

// Sampling: each emitted token is drawn from the target's logits at its accepted prefix with the
// session's processors and one RNG draw, as in plain decoding, so the same seed gives the same tokens.
TEST(Speculative, SamplingWithTheSameSeedGivesPlainDecodingsTokens) {
  const TinyConfig tc = TargetConfig(31);
  TinyModel tm(tc);
  ModelPtr m = tm.Load(PrimaryBackend(), nullptr, 2);
  ASSERT_TRUE(m);
  const auto prompt = tm.RandomTokens(6, 8);
  DraftSpec ds;
  DraftPtr d = MakeDraft(m.get(), tc, ds);
  const std::vector<uint64_t> seeds = OnEmulatedCuda() ? std::vector<uint64_t>{1, 2} : std::vector<uint64_t>{1, 2, 3, 4};
  for (uint64_t seed : seeds) {
    mcpm_sampling_params sp = Sampling({3, 5, 16}, 0.9f, seed);
    sp.top_k = 40, sp.top_p = 0.95f, sp.repetition_penalty = 1.1f;
    const GenRun reference = GeneratePlain(m.get(), prompt, 40, sp);
    SessionPtr s = MakeSpecSession(m.get(), d.get());
    const GenRun spec = Generate(s.get(), prompt, 40, sp);
    EXPECT_EQ(spec.tokens, reference.tokens) << "seed " << seed;
  }
}


// Speculative rounds as recorded steps (CUDA graphs: the verification per length bucket and tree
// size, each draft level per level, bucket and k) and as ops launched one by one give the same tokens,
// greedy and seeded sampling, across the 256-row bucket boundary, and both give plain decoding's
// tokens (the CPU backend has no graphs: there both sessions take the same path and the comparison
// with plain decoding is what can fail).
TEST(Speculative, VerificationGraphsOnAndOffGiveIdenticalTokens) {
  const TinyConfig tc = TargetConfig(33);
  TinyModel tm(tc);
  ModelPtr m = tm.Load(PrimaryBackend(), nullptr, 2);
  ASSERT_TRUE(m);
  const auto prompt = tm.RandomTokens(230, 9);
  DraftSpec ds;
  DraftPtr d = MakeDraft(m.get(), tc, ds);
  for (float temperature : {0.0f, 0.9f}) {
    const mcpm_sampling_params sp = Sampling({3, 5, 16}, temperature, 7);
    SessionPtr on = MakeSpecSession(m.get(), d.get(), 400, 0, true);
    SessionPtr off = MakeSpecSession(m.get(), d.get(), 400, 0, false);
    ASSERT_TRUE(on && off);
    const int n = OnEmulatedCuda() ? 40 : 60;  // emulated CUDA: still across the 256 bucket (230 + 40)
    const GenRun a = Generate(on.get(), prompt, n, sp), b = Generate(off.get(), prompt, n, sp);
    const GenRun reference = GeneratePlain(m.get(), prompt, n, sp, 400);
    EXPECT_EQ(a.tokens.size(), static_cast<size_t>(n));
    EXPECT_EQ(a.tokens, b.tokens) << "temperature " << temperature;
    EXPECT_EQ(a.tokens, reference.tokens) << "temperature " << temperature << ": plain decoding's tokens";
    EXPECT_GT(a.stats.spec_steps, 0) << "no speculative round ran";
  }
}

// §3.7 invariant 6: on a toy vocabulary, tokens sampled speculatively (T = 1, a draft restricted to
// half the vocabulary) follow the target's exact distribution. The tokens x2, x3 are the first
// speculative round's: x1 (the round's root) is drawn from the prefill logits, x2 at the root node
// and x3 at x2's node when the tree has it (otherwise by the next round), so accepted and rejected
// paths both contribute. Expected: p(x2, x3) = sum over x1 of p(x1) p(x2 | x1) p(x3 | x1, x2).
TEST(Speculative, SampledTokensFollowTheTargetDistribution) {
  TinyConfig tc;
  tc.vocab = 8, tc.hidden = 32, tc.layers = 1, tc.heads = 2, tc.kv_heads = 1, tc.head_dim = 16, tc.intermediate = 48;
  tc.dim_model_base = 8.0f, tc.seed = 41;
  TinyModel tm(tc);
  ModelPtr m = tm.Load(PrimaryBackend(), nullptr, 1);
  ASSERT_TRUE(m);
  const std::vector<int32_t> prompt{3, 1, 4};
  const size_t V = 8;

  auto probs = [&](const std::vector<int32_t>& ctx) {
    SessionPtr s = MakeSession(m.get(), 64);
    std::vector<float> l(V);
    EXPECT_MCPM_OK(mcpm_session_prefill(s.get(), ctx.data(), static_cast<int32_t>(ctx.size()), MCPM_LOGITS_LAST,
                                        l.data(), V));
    std::vector<double> p(V);
    const double mx = *std::max_element(l.begin(), l.end());
    double sum = 0;
    for (size_t i = 0; i < V; ++i) sum += (p[i] = std::exp(l[i] - mx));
    for (double& x : p) x /= sum;
    return p;
  };
  std::vector<double> joint(V * V, 0.0);
  const auto p1 = probs(prompt);
  for (int32_t a = 0; a < 8; ++a) {
    std::vector<int32_t> c1 = prompt;
    c1.push_back(a);
    const auto p2 = probs(c1);
    for (int32_t b = 0; b < 8; ++b) {
      std::vector<int32_t> c2 = c1;
      c2.push_back(b);
      const auto p3 = probs(c2);
      for (size_t c = 0; c < V; ++c) joint[static_cast<size_t>(b) * V + c] += p1[a] * p2[b] * p3[c];
    }
  }

  DraftSpec ds;
  ds.vocabulary = {0, 2, 5, 7};
  DraftPtr d = MakeDraft(m.get(), tc, ds);
  ASSERT_TRUE(d);
  const int n = OnEmulatedCuda() ? 250 : 4000;  // emulated CUDA: fewer draws, the same chi-square test
  std::vector<int> counts(V * V, 0);
  int64_t steps = 0, emitted = 0;
  SessionPtr s = MakeSpecSession(m.get(), d.get(), 64);
  for (int i = 0; i < n; ++i) {
    ASSERT_MCPM_OK(mcpm_session_reset(s.get()));
    ASSERT_MCPM_OK(mcpm_session_reset_stats(s.get()));
    mcpm_sampling_params sp = Sampling({2, 3, 6}, 1.0f, 1000 + static_cast<uint64_t>(i));
    sp.repetition_penalty = 1.0f;  // the expected distribution is the plain softmax
    const GenRun r = Generate(s.get(), prompt, 3, sp);
    ASSERT_EQ(r.tokens.size(), 3u);
    ++counts[static_cast<size_t>(r.tokens[1]) * V + static_cast<size_t>(r.tokens[2])];
    steps += r.stats.spec_steps;
    emitted += r.stats.spec_emitted_tokens;
  }
  EXPECT_LT(steps, 2 * n) << "no round accepted a drafted token: the test would not cover acceptance";
  EXPECT_EQ(emitted, 2 * n);
  // Chi-square over cells with expected count >= 5; the rest pooled into one cell.
  double chi = 0, pooled_e = 0, pooled_o = 0;
  int cells = 0;
  for (size_t c = 0; c < V * V; ++c) {
    const double e = joint[c] * n;
    if (e >= 5) {
      chi += (counts[c] - e) * (counts[c] - e) / e;
      ++cells;
    } else {
      pooled_e += e;
      pooled_o += counts[c];
    }
  }
  if (pooled_e >= 5) {
    chi += (pooled_o - pooled_e) * (pooled_o - pooled_e) / pooled_e;
    ++cells;
  }
  ASSERT_GE(cells, 6) << "the toy model's distribution is too peaked for the test to mean anything";
  EXPECT_LT(chi, ChiSquareCritical999(cells - 1)) << "chi-square over " << cells << " cells";
}

// InfLLM v2 targets: tree verification while dense, chain verification once sparse attention is on.
TEST(Speculative, SparseTargetGreedyEqualsPlainGreedyAcrossTheDenseToSparseSwitch) {
  TinyConfig tc = TargetConfig(51);
  tc.sparse_dense_len = 48;
  TinyModel tm(tc);
  ModelPtr m = tm.Load(PrimaryBackend());
  ASSERT_TRUE(m);
  const auto prompt = tm.RandomTokens(20, 3);
  const CoveredRun r = RunWithCoveringDraft(m.get(), tc, prompt, 120);
  EXPECT_EQ(r.result.tokens, r.reference.tokens);
}

// The KV bytes per token count the draft's layers and InfLLM v2's compressed keys, and a KV memory
// limit leaves room for the 64 tree rows a draft session adds.
TEST(Speculative, KvBytesPerTokenCountsTheDraftAndSparseKeys) {
  TinyConfig tc = TargetConfig(61);
  TinyModel tm(tc);
  tc.sparse_dense_len = 48;
  TinyModel sparse_tm(tc);  // the same seed: the same weights
  ModelPtr sparse = sparse_tm.Load(MCPM_BACKEND_CPU), dense = tm.Load(MCPM_BACKEND_CPU);
  ASSERT_TRUE(sparse && dense);

  const uint64_t kv_dim = static_cast<uint64_t>(tc.kv_heads) * tc.head_dim;
  const uint64_t kv_rows = 2 * tc.layers * kv_dim * sizeof(float);  // CPU: fp32 K and V
  uint64_t dense_bytes = 0, sparse_bytes = 0, draft_bytes = 0;
  ASSERT_MCPM_OK(mcpm_session_kv_bytes_per_token(dense.get(), nullptr, &dense_bytes));
  ASSERT_MCPM_OK(mcpm_session_kv_bytes_per_token(sparse.get(), nullptr, &sparse_bytes));
  EXPECT_EQ(dense_bytes, kv_rows);
  // Level-1 keys: one fp32 row per 4 tokens, level 2: one per 16.
  EXPECT_EQ(sparse_bytes, kv_rows + static_cast<uint64_t>(std::ceil(tc.layers * kv_dim * 4.0 * (1.0 / 4 + 1.0 / 16))));

  DraftSpec ds;
  DraftPtr d = MakeDraft(dense.get(), tc, ds);
  ASSERT_TRUE(d);
  ASSERT_MCPM_OK(mcpm_session_kv_bytes_per_token(dense.get(), d.get(), &draft_bytes));
  EXPECT_EQ(draft_bytes, kv_rows + 2 * ds.layers * kv_dim * sizeof(float));
  uint64_t untouched = 5;
  EXPECT_MCPM_STATUS(mcpm_session_kv_bytes_per_token(sparse.get(), d.get(), &untouched), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(untouched, 5u);

  mcpm_session_params p{};
  p.struct_size = sizeof p;
  ASSERT_MCPM_OK(mcpm_session_params_default(&p));
  p.draft = d.get();
  p.kv_memory_bytes = draft_bytes * (64 + 100);
  mcpm_session* s = nullptr;
  ASSERT_MCPM_OK(mcpm_session_create(dense.get(), &p, &s));
  int32_t cap = 0;
  EXPECT_MCPM_OK(mcpm_session_capacity(s, &cap));
  EXPECT_EQ(cap, 100);
  mcpm_session_free(s);
  p.kv_memory_bytes = draft_bytes * 64;  // the tree rows alone
  s = nullptr;
  EXPECT_MCPM_STATUS(mcpm_session_create(dense.get(), &p, &s), MCPM_ERR_OUT_OF_MEMORY);
  EXPECT_NE(std::string(mcpm_last_error()).find("64 tree rows"), std::string::npos) << mcpm_last_error();
  EXPECT_EQ(s, nullptr);
}

// A draft attention window changes what the draft proposes (fewer cache rows), never the output: greedy
// speculative tokens equal plain greedy for every window, a window covering the whole context gives
// exactly the unwindowed rounds, and a small one gives different rounds for some draft.
TEST(Speculative, DraftAttentionWindowKeepsTheOutputAndChangesTheProposals) {
  const TinyConfig tc = TargetConfig(71);
  TinyModel tm(tc);
  ModelPtr m = tm.Load(PrimaryBackend());
  ASSERT_TRUE(m);
  const auto prompt = tm.RandomTokens(60, 72);
  constexpr int n = 80;
  mcpm_sampling_params off = Sampling({3, 6, 24});
  off.speculative = 0;
  const GenRun reference = GeneratePlain(m.get(), prompt, n, off);
  ASSERT_EQ(reference.tokens.size(), static_cast<size_t>(n));

  bool some_round_differs = false;
  for (uint64_t seed : {5u, 6u, 7u}) {
    if (OnEmulatedCuda() && some_round_differs) break;  // emulated CUDA: the drafts until one differs
    SCOPED_TRACE("draft seed " + std::to_string(seed));
    std::vector<mcpm_session_stats> stats;
    for (int32_t window : {0, 1000, 4}) {
      SCOPED_TRACE("window " + std::to_string(window));
      DraftSpec ds;
      ds.seed = seed;
      ds.vocabulary = Distinct(reference.tokens, 8);
      ds.window = window;
      DraftPtr d = MakeDraft(m.get(), tc, ds);
      ASSERT_TRUE(d);
      SessionPtr s = MakeSpecSession(m.get(), d.get());
      const GenRun run = Generate(s.get(), prompt, n, Sampling(TreeFor(ds.vocabulary.size())));
      EXPECT_TRUE(SameGreedyTokens(m.get(), tc.vocab, prompt, reference.tokens, run.tokens, off));
      stats.push_back(run.stats);
    }
    EXPECT_EQ(stats[1].spec_steps, stats[0].spec_steps) << "a window longer than the context changes nothing";
    EXPECT_EQ(stats[1].spec_emitted_tokens, stats[0].spec_emitted_tokens);
    if (stats[2].spec_steps != stats[0].spec_steps || stats[2].spec_emitted_tokens != stats[0].spec_emitted_tokens)
      some_round_differs = true;
  }
  EXPECT_TRUE(some_round_differs) << "a 4-row window should change some draft's proposals";
}

TEST(Speculative, DraftConfigWindowIsValidatedAndAnOlderStructIsAccepted) {
  const TinyConfig tc = TargetConfig(73);
  TinyModel tm(tc);
  ModelPtr m = tm.Load(MCPM_BACKEND_CPU);
  ASSERT_TRUE(m);
  mcpm_draft_config c = DraftConfigFor(m.get(), DraftSpec{});
  EXPECT_EQ(c.attention_window, 0);
  c.attention_window = -1;
  mcpm_draft* d = nullptr;
  EXPECT_MCPM_STATUS(mcpm_draft_create(m.get(), &c, &d), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(mcpm_last_error()).find("attention_window"), std::string::npos) << mcpm_last_error();
  EXPECT_EQ(d, nullptr);

  // A host compiled before attention_window existed: its struct ends just before it.
  const size_t v1 = offsetof(mcpm_draft_config, attention_window);
  mcpm_draft_config old;
  std::memset(&old, 0x5A, sizeof old);
  old.struct_size = static_cast<uint32_t>(v1);
  ASSERT_MCPM_OK(mcpm_draft_config_default(m.get(), &old));
  EXPECT_EQ(old.struct_size, v1);
  EXPECT_EQ(old.attention_window, 0x5A5A5A5A) << "the defaults must not be written past the host's struct";
  ASSERT_MCPM_OK(mcpm_draft_create(m.get(), &old, &d));  // the 0x5A tail is ignored: no window
  mcpm_draft_free(d);
}

class SpecSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tc_ = TargetConfig(61);
    tm_ = std::make_unique<TinyModel>(tc_);
    model_ = tm_->Load(PrimaryBackend(), nullptr, 2);
    ASSERT_TRUE(model_);
    prompt_ = tm_->RandomTokens(8, 5);
    reference_ = GeneratePlain(model_.get(), prompt_, 60, Sampling({3, 6, 24})).tokens;
    DraftSpec ds;
    ds.vocabulary = Distinct(reference_, 8);
    draft_ = MakeDraft(model_.get(), tc_, ds);
    ASSERT_TRUE(draft_);
    tree_ = TreeFor(ds.vocabulary.size());
  }

  TinyConfig tc_;
  std::unique_ptr<TinyModel> tm_;
  ModelPtr model_;
  DraftPtr draft_;
  std::vector<int32_t> prompt_, reference_;
  Tree tree_{3, 6, 24};
};

TEST_F(SpecSessionTest, StopTokenInsideAnAcceptedPathEndsGenerationThere) {
  // Stop at the first occurrence of the 25th reference token.
  const int32_t stop = reference_[24];
  const size_t first = static_cast<size_t>(std::find(reference_.begin(), reference_.end(), stop) - reference_.begin());
  SessionPtr s = MakeSpecSession(model_.get(), draft_.get());
  mcpm_sampling_params sp = Sampling(tree_);
  sp.stop_tokens = &stop;
  sp.stop_token_count = 1;
  const GenRun r = Generate(s.get(), prompt_, 60, sp);
  EXPECT_EQ(r.finish, MCPM_FINISH_STOP_TOKEN);
  ASSERT_EQ(r.tokens.size(), first + 1);
  EXPECT_TRUE(SameGreedyTokens(model_.get(), tc_.vocab, prompt_, reference_, r.tokens, Sampling(tree_)));
  // The stop token is reported, not appended.
  EXPECT_EQ(SessionLength(s.get()), static_cast<int32_t>(prompt_.size() + first));
}

TEST_F(SpecSessionTest, MaxNewTokensIsExactAcrossRounds) {
  for (int32_t max_new : {1, 2, 5, 17}) {
    SessionPtr s = MakeSpecSession(model_.get(), draft_.get());
    mcpm_sampling_params sp = Sampling(tree_);
    sp.max_new_tokens = max_new;
    const GenRun r = Generate(s.get(), prompt_, 100, sp);
    EXPECT_EQ(r.finish, MCPM_FINISH_MAX_TOKENS);
    ASSERT_EQ(r.tokens.size(), static_cast<size_t>(max_new));
    EXPECT_TRUE(SameGreedyTokens(model_.get(), tc_.vocab, prompt_, reference_, r.tokens, Sampling(tree_)));
    EXPECT_EQ(SessionLength(s.get()), static_cast<int32_t>(prompt_.size()) + max_new);
  }
}

TEST_F(SpecSessionTest, ContextFullStopsAtCapacityWithPlainTokens) {
  const int32_t capacity = static_cast<int32_t>(prompt_.size()) + 23;
  SessionPtr s = MakeSpecSession(model_.get(), draft_.get(), capacity);
  const GenRun r = Generate(s.get(), prompt_, 100, Sampling(tree_));
  EXPECT_EQ(r.finish, MCPM_FINISH_CONTEXT_FULL);
  ASSERT_EQ(r.tokens.size(), 23u);
  EXPECT_TRUE(SameGreedyTokens(model_.get(), tc_.vocab, prompt_, reference_, r.tokens, Sampling(tree_)));
  EXPECT_EQ(SessionLength(s.get()), capacity);
  // The last token is held for the next round, yet the session can still evaluate it (rewind first).
  ASSERT_MCPM_OK(mcpm_session_rewind(s.get(), capacity - 1));
  const int32_t last = reference_[22];
  EXPECT_MCPM_OK(mcpm_session_decode(s.get(), last, nullptr, 0));
}

TEST_F(SpecSessionTest, RewindThenContinueMatchesAFreshPlainSession) {
  SessionPtr s = MakeSpecSession(model_.get(), draft_.get());
  Generate(s.get(), prompt_, 30, Sampling(tree_));
  // Keep the prompt and 10 generated tokens, then continue with other tokens and generate again.
  const int32_t keep = static_cast<int32_t>(prompt_.size()) + 10;
  ASSERT_MCPM_OK(mcpm_session_rewind(s.get(), keep));
  mcpm_finish_reason finish;
  int32_t count = 0;
  std::vector<int32_t> buf(MCPM_MAX_STEP_TOKENS);
  EXPECT_MCPM_STATUS(mcpm_session_generate_step(s.get(), buf.data(), MCPM_MAX_STEP_TOKENS, &count, &finish),
                     MCPM_ERR_INVALID_ARGUMENT);  // a rewind clears the pending logits, as without a draft
  const auto more = tm_->RandomTokens(4, 77);
  const GenRun spec = Generate(s.get(), more, 30, Sampling(tree_));

  std::vector<int32_t> context(prompt_);
  context.insert(context.end(), reference_.begin(), reference_.begin() + 10);
  SessionPtr plain = MakeSession(model_.get(), 256);
  ASSERT_MCPM_OK(mcpm_session_prefill(plain.get(), context.data(), keep, MCPM_LOGITS_NONE, nullptr, 0));
  mcpm_sampling_params off = Sampling({3, 6, 24});
  off.speculative = 0;
  const GenRun expected = Generate(plain.get(), more, 30, off);
  context.insert(context.end(), more.begin(), more.end());
  EXPECT_TRUE(SameGreedyTokens(model_.get(), tc_.vocab, context, expected.tokens, spec.tokens, off));
  EXPECT_EQ(SessionTokens(s.get()), SessionTokens(plain.get()));
}

TEST_F(SpecSessionTest, SwitchingSpeculationOffAndOnMidConversationKeepsTheOutput) {
  SessionPtr s = MakeSpecSession(model_.get(), draft_.get());
  ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), prompt_.data(), static_cast<int32_t>(prompt_.size()),
                                      MCPM_LOGITS_NONE, nullptr, 0));
  std::vector<int32_t> got;
  std::vector<int32_t> buf(64);
  for (int round = 0; round < 6; ++round) {
    mcpm_sampling_params sp = Sampling(tree_);
    sp.speculative = round % 2 == 0;
    ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &sp));
    int32_t count = 0;
    mcpm_finish_reason finish;
    ASSERT_MCPM_OK(mcpm_session_generate(s.get(), 9, buf.data(), 64, &count, &finish));
    got.insert(got.end(), buf.begin(), buf.begin() + count);
  }
  ASSERT_EQ(got.size(), 54u);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), reference_.begin()));
}

TEST_F(SpecSessionTest, AbortBetweenRoundsKeepsTheSessionUsable) {
  SessionPtr s = MakeSpecSession(model_.get(), draft_.get());
  ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), prompt_.data(), static_cast<int32_t>(prompt_.size()),
                                      MCPM_LOGITS_NONE, nullptr, 0));
  mcpm_sampling_params sp = Sampling(tree_);
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &sp));
  std::vector<int32_t> buf(64);
  int32_t count = 0;
  mcpm_finish_reason finish;
  ASSERT_MCPM_OK(mcpm_session_generate(s.get(), 10, buf.data(), 64, &count, &finish));
  std::vector<int32_t> got(buf.begin(), buf.begin() + count);
  ASSERT_MCPM_OK(mcpm_session_request_abort(s.get()));
  EXPECT_MCPM_STATUS(mcpm_session_generate(s.get(), 10, buf.data(), 64, &count, &finish), MCPM_ERR_CANCELLED);
  EXPECT_EQ(count, 0);
  ASSERT_MCPM_OK(mcpm_session_generate(s.get(), 20, buf.data(), 64, &count, &finish));
  got.insert(got.end(), buf.begin(), buf.begin() + count);
  ASSERT_EQ(got.size(), 30u);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), reference_.begin()));
}

// ---- misuse ------------------------------------------------------------------------------------------

TEST(SpeculativeErrors, DraftConfigAndTensorsAreValidated) {
  const TinyConfig tc = TargetConfig(71);
  TinyModel tm(tc);
  ModelPtr m = tm.Load();
  ASSERT_TRUE(m);
  mcpm_draft_config c{};
  c.struct_size = sizeof c;
  ASSERT_MCPM_OK(mcpm_draft_config_default(m.get(), &c));
  EXPECT_EQ(c.head_dim, tc.head_dim);
  EXPECT_FLOAT_EQ(c.residual_scale, tc.scale_depth / std::sqrt(static_cast<float>(tc.layers + 1)));
  mcpm_draft* d = nullptr;
  mcpm_draft_config bad = c;
  bad.head_dim = tc.head_dim * 2;
  EXPECT_MCPM_STATUS(mcpm_draft_create(m.get(), &bad, &d), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(mcpm_last_error()).find("head_dim"), std::string::npos);
  EXPECT_EQ(d, nullptr);
  bad = c;
  bad.num_kv_heads = 3;
  EXPECT_MCPM_STATUS(mcpm_draft_create(m.get(), &bad, &d), MCPM_ERR_INVALID_ARGUMENT);

  ASSERT_MCPM_OK(mcpm_draft_create(m.get(), &c, &d));
  DraftPtr draft(d);
  const int64_t wrong[2] = {tc.hidden, tc.hidden};
  std::vector<float> zeros(static_cast<size_t>(tc.hidden * tc.hidden), 0.5f);
  EXPECT_MCPM_STATUS(mcpm_draft_set_tensor(d, "fc.weight", MCPM_DTYPE_F32, wrong, 2, zeros.data(), zeros.size() * 4),
                     MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(mcpm_last_error()).find("fc.weight"), std::string::npos);
  EXPECT_MCPM_STATUS(mcpm_draft_set_tensor(d, "lm_head.weight", MCPM_DTYPE_F32, wrong, 2, zeros.data(), zeros.size() * 4),
                     MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(mcpm_last_error()).find("unknown tensor 'lm_head.weight'"), std::string::npos);
  EXPECT_MCPM_STATUS(mcpm_draft_finalize(d), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(mcpm_last_error()).find("missing tensor"), std::string::npos);

  const std::vector<int32_t> dup{1, 2, 1}, range{0, 320}, ok{2, 1};
  EXPECT_MCPM_STATUS(mcpm_draft_set_vocabulary(d, dup.data(), 3), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(mcpm_last_error()).find("appears twice"), std::string::npos);
  EXPECT_MCPM_STATUS(mcpm_draft_set_vocabulary(d, range.data(), 2), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_MCPM_STATUS(mcpm_draft_set_vocabulary(d, ok.data(), 0), MCPM_ERR_INVALID_ARGUMENT);

  // An unfinalized draft, or one made for another model, cannot back a session.
  mcpm_session_params p{};
  p.struct_size = sizeof p;
  ASSERT_MCPM_OK(mcpm_session_params_default(&p));
  p.draft = d;
  mcpm_session* s = nullptr;
  EXPECT_MCPM_STATUS(mcpm_session_create(m.get(), &p, &s), MCPM_ERR_INVALID_ARGUMENT);
  ModelPtr other = tm.Load();
  DraftSpec ds;
  DraftPtr good = MakeDraft(m.get(), tc, ds);
  p.draft = good.get();
  EXPECT_MCPM_STATUS(mcpm_session_create(other.get(), &p, &s), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(mcpm_last_error()).find("different target model"), std::string::npos);
  EXPECT_EQ(s, nullptr);
}

TEST(SpeculativeErrors, TreeParametersAreValidated) {
  const TinyConfig tc = TargetConfig(72);
  TinyModel tm(tc);
  ModelPtr m = tm.Load();
  DraftSpec ds;
  ds.vocabulary = {1, 2, 3, 4};
  DraftPtr d = MakeDraft(m.get(), tc, ds);
  SessionPtr s = MakeSpecSession(m.get(), d.get());
  struct Bad {
    Tree t;
    const char* field;
  };
  for (const Bad& b : {Bad{{2, 10, 65}, "spec_tree_size"}, Bad{{2, 0, 12}, "spec_topk_per_iter"},
                       Bad{{0, 3, 12}, "spec_num_iter"}, Bad{{2, 5, 12}, "draft vocabulary"},
                       Bad{{20, 4, 30}, "<= 64"}, Bad{{1, 3, 12}, "candidates"}}) {
    const mcpm_sampling_params sp = Sampling(b.t);
    EXPECT_MCPM_STATUS(mcpm_session_set_sampling(s.get(), &sp), MCPM_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(mcpm_last_error()).find(b.field), std::string::npos) << mcpm_last_error();
  }
  // Without speculation the tree fields are not used, so they are not checked.
  mcpm_sampling_params off = Sampling({2, 10, 65});
  off.speculative = 0;
  EXPECT_MCPM_OK(mcpm_session_set_sampling(s.get(), &off));
  // generate_step needs room for a whole round.
  const std::vector<int32_t> prompt{1, 2, 3};
  ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), prompt.data(), 3, MCPM_LOGITS_NONE, nullptr, 0));
  std::vector<int32_t> buf(8);
  int32_t count = 0;
  mcpm_finish_reason finish;
  EXPECT_MCPM_STATUS(mcpm_session_generate_step(s.get(), buf.data(), 8, &count, &finish), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(mcpm_last_error()).find("MCPM_MAX_STEP_TOKENS"), std::string::npos);
}

}  // namespace
