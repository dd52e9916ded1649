// Grammar-constrained sampling through the C ABI (mcpm_sampling_params.token_mask and
// mcpm_session_force_tokens) on random tiny models:
//   - every sampled token is one the mask allows; greedy decoding picks the argmax of the allowed
//     logits (checked against prefill logits); sampling and mcpm_session_sample stay in the mask;
//   - with a draft, constrained speculative decoding gives constrained plain decoding's tokens (greedy
//     and seeded sampling, tree and chain verification), every state the callback is asked about is
//     reachable through allowed tokens (the draft proposes only those), and the callback sees the
//     generated prefix;
//   - forced tokens count as generated, reach the callback and condition the next token;
//   - a failing callback and an empty mask fail the call, report the tokens before the failure and
//     leave the session usable; an mcpm_sampling_params of the older size means no constraint.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <functional>
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

// The host side of a token mask: which tokens a prefix allows next, and a log of the calls.
struct MaskHost {
  int32_t vocab = 0;
  std::function<bool(const std::vector<int32_t>& prefix, int32_t token)> allows;
  std::vector<std::vector<int32_t>> calls;  // the tokens of each call, in order
  int64_t fail_at = -1;                     // a call with this many tokens fails (once)
  int64_t empty_from = -1;                  // calls with at least this many tokens get an empty mask

  static int32_t Callback(void* user, const int32_t* tokens, int32_t n, uint32_t* mask, int32_t words) {
    auto* host = static_cast<MaskHost*>(user);
    EXPECT_EQ(words, (host->vocab + 31) / 32);
    EXPECT_TRUE(std::all_of(mask, mask + words, [](uint32_t w) { return w == 0; })) << "the mask must arrive zeroed";
    std::vector<int32_t> prefix(tokens, tokens + n);
    host->calls.push_back(prefix);
    if (n == host->fail_at) {
      host->fail_at = -1;
      return -1;  // a failure (1 is MCPM_TOKEN_MASK_YIELD)
    }
    if (host->empty_from >= 0 && n >= host->empty_from) return 0;
    for (int32_t t = 0; t < host->vocab; ++t)
      if (host->allows(prefix, t)) mask[t >> 5] |= 1u << (t & 31);
    if (host->vocab % 32 != 0) mask[words - 1] |= ~0u << (host->vocab % 32);  // bits past the vocabulary are ignored
    return 0;
  }

  void Attach(mcpm_sampling_params& p) {
    p.token_mask = &Callback;
    p.token_mask_user_data = this;
  }
};

// 333 tokens: the last mask word is partly past the vocabulary.
TinyConfig ModelConfig(uint64_t seed) {
  TinyConfig c;
  c.vocab = 333, c.hidden = 96, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.head_dim = 32;
  c.intermediate = 160, c.max_position_embeddings = 512, c.seed = seed;
  return c;
}

mcpm_sampling_params Params(float temperature = 0.0f, uint64_t seed = 0) {
  mcpm_sampling_params p{};
  p.struct_size = sizeof p;
  EXPECT_MCPM_OK(mcpm_sampling_params_default(&p));
  p.temperature = temperature;
  p.seed = seed;
  p.spec_num_iter = 3, p.spec_topk_per_iter = 6, p.spec_tree_size = 24;
  return p;
}

struct GenRun {
  std::vector<int32_t> tokens;
  mcpm_finish_reason finish = MCPM_FINISH_NONE;
  mcpm_session_stats stats{};
};

// Prefills `prompt`, sets `sp` (max_new_tokens n unless set) and generates until it finishes, through
// mcpm_session_generate_step (step) or mcpm_session_generate in calls of 5 tokens.
GenRun Generate(mcpm_session* s, const std::vector<int32_t>& prompt, mcpm_sampling_params sp, int n, bool step) {
  GenRun r;
  EXPECT_MCPM_OK(mcpm_session_prefill(s, prompt.data(), static_cast<int32_t>(prompt.size()), MCPM_LOGITS_NONE,
                                      nullptr, 0));
  if (sp.max_new_tokens == 0) sp.max_new_tokens = n;
  EXPECT_MCPM_OK(mcpm_session_set_sampling(s, &sp));
  std::vector<int32_t> buf(MCPM_MAX_STEP_TOKENS);
  while (r.finish == MCPM_FINISH_NONE) {
    int32_t count = 0;
    const mcpm_status st =
        step ? mcpm_session_generate_step(s, buf.data(), static_cast<int32_t>(buf.size()), &count, &r.finish)
             : mcpm_session_generate(s, 5, buf.data(), static_cast<int32_t>(buf.size()), &count, &r.finish);
    if (st != MCPM_OK) {
      ADD_FAILURE() << "generate failed: " << mcpm_last_error();
      break;
    }
    r.tokens.insert(r.tokens.end(), buf.begin(), buf.begin() + count);
  }
  r.stats.struct_size = sizeof r.stats;
  EXPECT_MCPM_OK(mcpm_session_get_stats(s, &r.stats));
  return r;
}

std::vector<int32_t> Prefix(const std::vector<int32_t>& v, size_t n) { return {v.begin(), v.begin() + n}; }

// `got` is the greedy pick from `logits` among the tokens `allowed` accepts: their first maximum or,
// since generation and prefill sum in different orders, within the paths' tolerance of it.
::testing::AssertionResult IsMaskedArgmax(const std::vector<float>& logits, const std::function<bool(int32_t)>& allowed,
                                          int32_t got) {
  int32_t best = -1;
  for (int32_t t = 0; t < static_cast<int32_t>(logits.size()); ++t)
    if (allowed(t) && (best < 0 || logits[t] > logits[best])) best = t;
  if (!allowed(got)) return ::testing::AssertionFailure() << "token " << got << " is not allowed";
  if (got == best) return ::testing::AssertionSuccess();
  const double bound = PathTolerance(PrimaryBackend()) * std::max(1.0, MaxAbs(logits.data(), logits.size()));
  if (std::fabs(static_cast<double>(logits[best]) - logits[got]) <= bound) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "got " << got << " (logit " << logits[got] << "), the allowed argmax is "
                                       << best << " (logit " << logits[best] << ")";
}

// ---- a fixed subset ----------------------------------------------------------------------------------

class RandomSubset : public ::testing::Test {
 protected:
  void SetUp() override {
    tc_ = ModelConfig(3);
    tm_ = std::make_unique<TinyModel>(tc_);
    model_ = tm_->Load(PrimaryBackend(), nullptr, 2);
    ASSERT_TRUE(model_);
    prompt_ = tm_->RandomTokens(7, 11);
    std::mt19937_64 rng(5);
    subset_.assign(static_cast<size_t>(tc_.vocab), 0);
    for (char& in : subset_) in = std::bernoulli_distribution(0.3)(rng) ? 1 : 0;
    host_.vocab = tc_.vocab;
    host_.allows = [this](const std::vector<int32_t>&, int32_t t) { return subset_[static_cast<size_t>(t)] != 0; };
  }
  bool InSubset(int32_t t) const { return t >= 0 && t < tc_.vocab && subset_[static_cast<size_t>(t)] != 0; }

  TinyConfig tc_;
  std::unique_ptr<TinyModel> tm_;
  ModelPtr model_;
  std::vector<int32_t> prompt_;
  std::vector<char> subset_;
  MaskHost host_;
};

// Greedy decoding under the mask picks the argmax of the allowed logits at every step (the logits of
// one prefill over the prompt and the output), and the callback is asked once per step with the output
// so far.
TEST_F(RandomSubset, GreedyIsTheArgmaxOverTheAllowedLogits) {
  SessionPtr s = MakeSession(model_.get(), 256);
  mcpm_sampling_params sp = Params();
  host_.Attach(sp);
  const int n = 24;
  const GenRun r = Generate(s.get(), prompt_, sp, n, /*step=*/false);
  ASSERT_EQ(r.tokens.size(), static_cast<size_t>(n));
  EXPECT_EQ(r.finish, MCPM_FINISH_MAX_TOKENS);
  // One call per sampled token, and one for the state after the last (asked while it is evaluated).
  ASSERT_GE(host_.calls.size(), r.tokens.size());
  for (size_t i = 0; i < host_.calls.size(); ++i) EXPECT_EQ(host_.calls[i], Prefix(r.tokens, i)) << "call " << i;

  std::vector<int32_t> context = prompt_;
  context.insert(context.end(), r.tokens.begin(), r.tokens.end());
  SessionPtr ref = MakeSession(model_.get(), 256);
  const size_t V = static_cast<size_t>(tc_.vocab);
  std::vector<float> all(context.size() * V);
  ASSERT_MCPM_OK(mcpm_session_prefill(ref.get(), context.data(), static_cast<int32_t>(context.size()), MCPM_LOGITS_ALL,
                                      all.data(), all.size()));
  for (int i = 0; i < n; ++i) {
    const size_t row = prompt_.size() - 1 + static_cast<size_t>(i);
    const std::vector<float> logits(all.begin() + static_cast<std::ptrdiff_t>(row * V),
                                    all.begin() + static_cast<std::ptrdiff_t>((row + 1) * V));
    EXPECT_TRUE(IsMaskedArgmax(logits, [this](int32_t t) { return InSubset(t); }, r.tokens[static_cast<size_t>(i)]))
        << "step " << i;
  }
}

// Temperature sampling with every truncation, and mcpm_session_sample on host logits, never leave it.
TEST_F(RandomSubset, SamplingNeverLeavesTheMask) {
  struct Mix {
    float temperature;
    int32_t top_k;
    float top_p, min_p;
  };
  for (const Mix& mix : {Mix{1.0f, 0, 1.0f, 0.0f}, Mix{1.5f, 20, 1.0f, 0.0f}, Mix{1.2f, 0, 0.9f, 0.0f},
                         Mix{2.0f, 0, 1.0f, 0.02f}, Mix{0.8f, 400, 0.97f, 0.01f}}) {
    for (uint64_t seed : {1u, 2u}) {
      SCOPED_TRACE("T " + std::to_string(mix.temperature) + " top_k " + std::to_string(mix.top_k) + " top_p " +
                   std::to_string(mix.top_p) + " min_p " + std::to_string(mix.min_p) + " seed " + std::to_string(seed));
      SessionPtr s = MakeSession(model_.get(), 256);
      mcpm_sampling_params sp = Params(mix.temperature, seed);
      sp.top_k = mix.top_k, sp.top_p = mix.top_p, sp.min_p = mix.min_p;
      host_.Attach(sp);
      const GenRun r = Generate(s.get(), prompt_, sp, 16, /*step=*/true);
      ASSERT_EQ(r.tokens.size(), 16u);
      for (int32_t t : r.tokens) EXPECT_TRUE(InSubset(t)) << "token " << t;
    }
  }
  // mcpm_session_sample: logits that favour the tokens outside the subset.
  SessionPtr s = MakeSession(model_.get(), 256);
  ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), prompt_.data(), static_cast<int32_t>(prompt_.size()), MCPM_LOGITS_NONE,
                                      nullptr, 0));
  std::vector<float> logits(static_cast<size_t>(tc_.vocab));
  for (int32_t t = 0; t < tc_.vocab; ++t) logits[static_cast<size_t>(t)] = InSubset(t) ? -3.0f + 0.01f * t : 5.0f;
  for (float temperature : {0.0f, 1.0f}) {
    mcpm_sampling_params sp = Params(temperature, 9);
    host_.Attach(sp);
    ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &sp));
    for (int i = 0; i < 20; ++i) {
      int32_t token = -1;
      ASSERT_MCPM_OK(mcpm_session_sample(s.get(), logits.data(), tc_.vocab, &token));
      EXPECT_TRUE(InSubset(token)) << "token " << token;
    }
  }
}

// ---- a mask that depends on the prefix, with and without a draft ------------------------------------

// Allowed after a prefix: the tokens t with t % 7 == (sum of the prefix + 3) % 7; the stop token only
// from `stop_after` tokens on, and from stop_after + 4 on nothing else.
struct ModRule {
  int32_t stop = 5;
  size_t stop_after = 30;
  bool operator()(const std::vector<int32_t>& prefix, int32_t t) const {
    if (t == stop) return prefix.size() >= stop_after;
    if (prefix.size() >= stop_after + 4) return false;
    const int64_t sum = std::accumulate(prefix.begin(), prefix.end(), int64_t{0});
    return t % 7 == (sum + 3) % 7;
  }
};

// Every call's tokens follow the rule (so the draft paths the callback saw were made of allowed
// tokens) and every prefix of the output was asked about.
void ExpectCallsFollowTheRule(const MaskHost& host, const ModRule& rule, const std::vector<int32_t>& output) {
  std::set<std::vector<int32_t>> asked;
  for (const std::vector<int32_t>& call : host.calls) {
    for (size_t j = 0; j < call.size(); ++j)
      if (!rule(Prefix(call, j), call[j])) {
        ADD_FAILURE() << "a call's tokens hold " << call[j] << " at " << j << ", which the mask did not allow";
        break;
      }
    asked.insert(call);
  }
  for (size_t i = 0; i < output.size(); ++i) EXPECT_EQ(asked.count(Prefix(output, i)), 1u) << "prefix of " << i;
}

struct SpecCase {
  const char* name;
  float temperature;
  bool covering_draft;  // FR-Spec vocabulary: the plain run's tokens, so paths get accepted
  int32_t sparse_dense_len;  // > 0: an InfLLM v2 target, chain verification once sparse
};

void PrintTo(const SpecCase& c, std::ostream* os) { *os << c.name; }

class ConstrainedSpeculative : public ::testing::TestWithParam<SpecCase> {};

// The target decides every emitted token under the same masks, so any draft gives plain decoding's
// constrained tokens.
TEST_P(ConstrainedSpeculative, GivesConstrainedPlainDecodingsTokens) {
  const SpecCase& c = GetParam();
  TinyConfig tc = ModelConfig(21);
  tc.sparse_dense_len = c.sparse_dense_len;
  TinyModel tm(tc);
  ModelPtr m = tm.Load(PrimaryBackend(), nullptr, 2);
  ASSERT_TRUE(m);
  const auto prompt = tm.RandomTokens(c.sparse_dense_len > 0 ? 20 : 6, 4);
  ModRule rule;
  mcpm_sampling_params sp = Params(c.temperature, 17);
  sp.repetition_penalty = 1.3f;  // the output then depends on its whole prefix
  if (c.temperature > 0) sp.top_k = 30, sp.top_p = 0.95f;
  sp.max_new_tokens = 200;
  sp.stop_tokens = &rule.stop;
  sp.stop_token_count = 1;

  MaskHost plain_host;
  plain_host.vocab = tc.vocab;
  plain_host.allows = rule;
  SessionPtr plain = MakeSession(m.get(), 256);
  mcpm_sampling_params off = sp;
  off.speculative = 0;
  plain_host.Attach(off);
  const GenRun reference = Generate(plain.get(), prompt, off, 0, /*step=*/false);
  ASSERT_EQ(reference.finish, MCPM_FINISH_STOP_TOKEN);
  ASSERT_GE(reference.tokens.size(), rule.stop_after + 1);
  EXPECT_EQ(reference.tokens.back(), rule.stop);
  for (size_t i = 0; i < reference.tokens.size(); ++i)
    EXPECT_TRUE(rule(Prefix(reference.tokens, i), reference.tokens[i])) << "plain token " << i;
  for (size_t i = 0; i < plain_host.calls.size(); ++i) EXPECT_EQ(plain_host.calls[i], Prefix(reference.tokens, i));

  DraftSpec ds;
  ds.seed = 9;
  if (c.covering_draft) {
    for (int32_t t : reference.tokens)
      if (std::find(ds.vocabulary.begin(), ds.vocabulary.end(), t) == ds.vocabulary.end() && ds.vocabulary.size() < 12)
        ds.vocabulary.push_back(t);
  }
  DraftPtr d = MakeDraft(m.get(), tc, ds);
  ASSERT_TRUE(d);
  for (bool step : {true, false}) {
    SCOPED_TRACE(step ? "generate_step" : "generate");
    MaskHost host;
    host.vocab = tc.vocab;
    host.allows = rule;
    mcpm_sampling_params on = sp;
    host.Attach(on);
    SessionPtr s = MakeSpecSession(m.get(), d.get());
    const GenRun spec = Generate(s.get(), prompt, on, 0, step);
    EXPECT_EQ(spec.tokens, reference.tokens);
    EXPECT_EQ(spec.finish, MCPM_FINISH_STOP_TOKEN);
    EXPECT_GT(spec.stats.spec_steps, 0);
    if (c.covering_draft) {
      EXPECT_LT(spec.stats.spec_steps, spec.stats.spec_emitted_tokens) << "no round accepted a drafted token";
    }
    ExpectCallsFollowTheRule(host, rule, spec.tokens);
    std::printf("[ NOTE     ] %s (%s): %lld rounds emitted %lld tokens, %zu mask calls\n", c.name,
                step ? "step" : "generate", static_cast<long long>(spec.stats.spec_steps),
                static_cast<long long>(spec.stats.spec_emitted_tokens), host.calls.size());
  }
}

INSTANTIATE_TEST_SUITE_P(TokenMask, ConstrainedSpeculative,
                         ::testing::Values(SpecCase{"greedy", 0.0f, false, 0},
                                           SpecCase{"greedy_covering_draft", 0.0f, true, 0},
                                           SpecCase{"sampled", 0.9f, false, 0},
                                           SpecCase{"sampled_covering_draft", 0.9f, true, 0},
                                           SpecCase{"greedy_sparse_chain", 0.0f, true, 40}),
                         [](const ::testing::TestParamInfo<SpecCase>& i) { return std::string(i.param.name); });

// ---- yielded states (MCPM_TOKEN_MASK_YIELD) ----------------------------------------------------------

// A host that appends the tokens of some states itself: every state whose output length is 4 mod 9
// is yielded, and the host then forces the smallest token the rule allows there. Generation stops
// before sampling in such a state (plain) and a speculative round ends at it, so plain and speculative
// decoding force at the same states and give the same tokens.
struct YieldingHost : MaskHost {
  static bool Yields(size_t length) { return length % 9 == 4; }
  static int32_t YieldingCallback(void* user, const int32_t* tokens, int32_t n, uint32_t* mask, int32_t words) {
    if (Yields(static_cast<size_t>(n))) {
      static_cast<MaskHost*>(user)->calls.emplace_back(tokens, tokens + n);
      return MCPM_TOKEN_MASK_YIELD;
    }
    return Callback(user, tokens, n, mask, words);
  }
  void Attach(mcpm_sampling_params& p) {
    p.token_mask = &YieldingCallback;
    p.token_mask_user_data = this;
  }
};

GenRun GenerateYielding(mcpm_session* s, const std::vector<int32_t>& prompt, mcpm_sampling_params sp,
                        const ModRule& rule, int32_t vocab, int* forced_count) {
  GenRun r;
  EXPECT_MCPM_OK(mcpm_session_prefill(s, prompt.data(), static_cast<int32_t>(prompt.size()), MCPM_LOGITS_NONE,
                                      nullptr, 0));
  EXPECT_MCPM_OK(mcpm_session_set_sampling(s, &sp));
  std::vector<int32_t> buf(MCPM_MAX_STEP_TOKENS);
  for (int guard = 0; r.finish == MCPM_FINISH_NONE && guard < 1000; ++guard) {
    int32_t count = 0;
    if (mcpm_session_generate_step(s, buf.data(), static_cast<int32_t>(buf.size()), &count, &r.finish) != MCPM_OK) {
      ADD_FAILURE() << "generate failed: " << mcpm_last_error();
      break;
    }
    r.tokens.insert(r.tokens.end(), buf.begin(), buf.begin() + count);
    if (count > 0 || r.finish != MCPM_FINISH_NONE) continue;
    // The engine returned before a yielded state: append its token.
    EXPECT_TRUE(YieldingHost::Yields(r.tokens.size())) << "returned with no token at a state it was not told to yield";
    int32_t forced = 0;
    while (forced < vocab && !rule(r.tokens, forced)) ++forced;
    EXPECT_MCPM_OK(mcpm_session_force_tokens(s, &forced, 1));
    r.tokens.push_back(forced);
    ++*forced_count;
  }
  return r;
}

TEST(TokenMask, YieldedStatesAreNeverSampledPlainAndSpeculativeAlike) {
  TinyConfig tc = ModelConfig(44);
  TinyModel tm(tc);
  ModelPtr m = tm.Load(PrimaryBackend(), nullptr, 2);
  ASSERT_TRUE(m);
  const auto prompt = tm.RandomTokens(6, 8);
  ModRule rule;
  for (float temperature : {0.0f, 0.9f}) {
    SCOPED_TRACE(temperature);
    mcpm_sampling_params sp = Params(temperature, 23);
    sp.max_new_tokens = 120;
    sp.stop_tokens = &rule.stop;
    sp.stop_token_count = 1;
    YieldingHost plain_host;
    plain_host.vocab = tc.vocab;
    plain_host.allows = rule;
    mcpm_sampling_params off = sp;
    off.speculative = 0;
    plain_host.Attach(off);
    SessionPtr plain = MakeSession(m.get(), 256);
    int plain_forced = 0;
    const GenRun reference = GenerateYielding(plain.get(), prompt, off, rule, tc.vocab, &plain_forced);
    ASSERT_EQ(reference.finish, MCPM_FINISH_STOP_TOKEN);
    EXPECT_GE(plain_forced, 3);
    for (size_t i = 0; i < reference.tokens.size(); ++i)
      EXPECT_TRUE(rule(Prefix(reference.tokens, i), reference.tokens[i])) << "token " << i;

    DraftSpec ds;
    ds.seed = 4;
    for (int32_t t : reference.tokens)
      if (std::find(ds.vocabulary.begin(), ds.vocabulary.end(), t) == ds.vocabulary.end() && ds.vocabulary.size() < 12)
        ds.vocabulary.push_back(t);
    DraftPtr d = MakeDraft(m.get(), tc, ds);
    ASSERT_TRUE(d);
    YieldingHost host;
    host.vocab = tc.vocab;
    host.allows = rule;
    mcpm_sampling_params on = sp;
    host.Attach(on);
    SessionPtr s = MakeSpecSession(m.get(), d.get());
    int spec_forced = 0;
    const GenRun spec = GenerateYielding(s.get(), prompt, on, rule, tc.vocab, &spec_forced);
    EXPECT_EQ(spec.tokens, reference.tokens);
    EXPECT_EQ(spec_forced, plain_forced);
  }
}

// ---- forced tokens ---------------------------------------------------------------------------------

class ForceTokens : public ::testing::Test {
 protected:
  void SetUp() override {
    tc_ = ModelConfig(33);
    tm_ = std::make_unique<TinyModel>(tc_);
    model_ = tm_->Load(PrimaryBackend(), nullptr, 2);
    ASSERT_TRUE(model_);
    prompt_ = tm_->RandomTokens(5, 3);
    host_.vocab = tc_.vocab;
    host_.allows = [](const std::vector<int32_t>&, int32_t t) { return t % 2 == 1; };
  }

  // Prefill, then with max_new_tokens 10: generate 2, force `forced`, generate the rest.
  void GenerateForceGenerate(mcpm_session* s, const std::vector<int32_t>& forced, std::vector<int32_t>* output,
                             mcpm_finish_reason* finish) {
    ASSERT_MCPM_OK(mcpm_session_prefill(s, prompt_.data(), static_cast<int32_t>(prompt_.size()), MCPM_LOGITS_NONE,
                                        nullptr, 0));
    mcpm_sampling_params sp = Params();
    sp.max_new_tokens = 10;
    host_.Attach(sp);
    ASSERT_MCPM_OK(mcpm_session_set_sampling(s, &sp));
    std::vector<int32_t> buf(MCPM_MAX_STEP_TOKENS);
    int32_t count = 0;
    ASSERT_MCPM_OK(mcpm_session_generate(s, 2, buf.data(), static_cast<int32_t>(buf.size()), &count, finish));
    ASSERT_EQ(count, 2);
    output->assign(buf.begin(), buf.begin() + 2);
    ASSERT_MCPM_OK(mcpm_session_force_tokens(s, forced.data(), static_cast<int32_t>(forced.size())));
    output->insert(output->end(), forced.begin(), forced.end());
    ASSERT_MCPM_OK(mcpm_session_generate(s, 50, buf.data(), static_cast<int32_t>(buf.size()), &count, finish));
    output->insert(output->end(), buf.begin(), buf.begin() + count);
  }

  TinyConfig tc_;
  std::unique_ptr<TinyModel> tm_;
  ModelPtr model_;
  std::vector<int32_t> prompt_;
  MaskHost host_;
};

// Forced tokens (even ones the mask would not allow: the host decides) count toward max_new_tokens
// and the statistics, the callback sees them, and the next token is the allowed argmax of the logits
// after them.
TEST_F(ForceTokens, CountAsGeneratedReachTheCallbackAndConditionTheNextToken) {
  const std::vector<int32_t> forced{4, 17, 250};
  SessionPtr s = MakeSession(model_.get(), 128);
  std::vector<int32_t> output;
  mcpm_finish_reason finish = MCPM_FINISH_NONE;
  GenerateForceGenerate(s.get(), forced, &output, &finish);
  ASSERT_EQ(output.size(), 10u);
  EXPECT_EQ(finish, MCPM_FINISH_MAX_TOKENS);
  mcpm_session_stats st{};
  st.struct_size = sizeof st;
  ASSERT_MCPM_OK(mcpm_session_get_stats(s.get(), &st));
  EXPECT_EQ(st.generated_tokens, 10);
  EXPECT_EQ(SessionLength(s.get()), static_cast<int32_t>(prompt_.size() + 10));
  // The callback's calls: the first two states, then every state after the forced tokens.
  ASSERT_GE(host_.calls.size(), 7u);
  EXPECT_EQ(host_.calls[0], Prefix(output, 0));
  EXPECT_EQ(host_.calls[1], Prefix(output, 1));
  bool saw_forced = false;
  for (const auto& call : host_.calls) saw_forced = saw_forced || call == Prefix(output, 5);
  EXPECT_TRUE(saw_forced) << "the state after the forced tokens was not asked";
  for (size_t i = 0; i < output.size(); ++i)
    if (i < 2 || i >= 5) {
      EXPECT_EQ(output[i] % 2, 1) << "token " << i;
    }

  std::vector<int32_t> context = prompt_;
  context.insert(context.end(), output.begin(), output.begin() + 5);
  SessionPtr ref = MakeSession(model_.get(), 128);
  std::vector<float> logits(static_cast<size_t>(tc_.vocab));
  ASSERT_MCPM_OK(mcpm_session_prefill(ref.get(), context.data(), static_cast<int32_t>(context.size()), MCPM_LOGITS_LAST,
                                      logits.data(), logits.size()));
  EXPECT_TRUE(IsMaskedArgmax(logits, [](int32_t t) { return t % 2 == 1; }, output[5]));
}

// With a draft the speculator follows the forced tokens: the output equals a plain session's.
TEST_F(ForceTokens, WithADraftGiveThePlainSessionsTokens) {
  const std::vector<int32_t> forced{3, 3, 8, 101, 7};
  SessionPtr plain = MakeSession(model_.get(), 128);
  std::vector<int32_t> want;
  mcpm_finish_reason finish = MCPM_FINISH_NONE;
  GenerateForceGenerate(plain.get(), forced, &want, &finish);
  DraftPtr d = MakeDraft(model_.get(), tc_, DraftSpec{});
  ASSERT_TRUE(d);
  SessionPtr spec = MakeSpecSession(model_.get(), d.get(), 128);
  std::vector<int32_t> got;
  GenerateForceGenerate(spec.get(), forced, &got, &finish);
  EXPECT_EQ(got, want);
  EXPECT_EQ(finish, MCPM_FINISH_MAX_TOKENS);
}

TEST_F(ForceTokens, ErrorsLeaveTheSessionAsItWas) {
  SessionPtr s = MakeSession(model_.get(), 16, /*prefill_chunk=*/2);
  ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), prompt_.data(), static_cast<int32_t>(prompt_.size()), MCPM_LOGITS_NONE,
                                      nullptr, 0));
  const int32_t length = SessionLength(s.get());
  const std::vector<int32_t> ok{1, 2, 3};
  const std::vector<int32_t> bad{1, tc_.vocab, 3};
  const std::vector<int32_t> many(12, 1);
  EXPECT_MCPM_STATUS(mcpm_session_force_tokens(nullptr, ok.data(), 3), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_MCPM_STATUS(mcpm_session_force_tokens(s.get(), nullptr, 3), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_MCPM_STATUS(mcpm_session_force_tokens(s.get(), ok.data(), -1), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_MCPM_STATUS(mcpm_session_force_tokens(s.get(), bad.data(), 3), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_MCPM_STATUS(mcpm_session_force_tokens(s.get(), many.data(), 12), MCPM_ERR_CONTEXT_FULL);
  ASSERT_MCPM_OK(mcpm_session_request_abort(s.get()));
  EXPECT_MCPM_STATUS(mcpm_session_force_tokens(s.get(), ok.data(), 3), MCPM_ERR_CANCELLED);
  EXPECT_EQ(SessionLength(s.get()), length);
  EXPECT_MCPM_OK(mcpm_session_force_tokens(s.get(), ok.data(), 0));
  EXPECT_MCPM_OK(mcpm_session_force_tokens(s.get(), ok.data(), 3));
  EXPECT_EQ(SessionLength(s.get()), length + 3);
}

// ---- failures --------------------------------------------------------------------------------------

class MaskFailures : public ::testing::TestWithParam<bool> {  // with a draft?
 protected:
  void SetUp() override {
    tc_ = ModelConfig(45);
    tm_ = std::make_unique<TinyModel>(tc_);
    model_ = tm_->Load(PrimaryBackend(), nullptr, 2);
    ASSERT_TRUE(model_);
    prompt_ = tm_->RandomTokens(6, 8);
    if (GetParam()) {
      draft_ = MakeDraft(model_.get(), tc_, DraftSpec{});
      ASSERT_TRUE(draft_);
    }
    host_.vocab = tc_.vocab;
    host_.allows = ModRule{};
  }
  SessionPtr NewSession() { return GetParam() ? MakeSpecSession(model_.get(), draft_.get()) : MakeSession(model_.get(), 256); }
  // Prefilled, with the rule's mask and max_new_tokens 20.
  SessionPtr Start() {
    SessionPtr s = NewSession();
    EXPECT_MCPM_OK(mcpm_session_prefill(s.get(), prompt_.data(), static_cast<int32_t>(prompt_.size()), MCPM_LOGITS_NONE,
                                        nullptr, 0));
    mcpm_sampling_params sp = Params();
    sp.max_new_tokens = 20;
    host_.Attach(sp);
    EXPECT_MCPM_OK(mcpm_session_set_sampling(s.get(), &sp));
    return s;
  }

  TinyConfig tc_;
  std::unique_ptr<TinyModel> tm_;
  ModelPtr model_;
  DraftPtr draft_;
  std::vector<int32_t> prompt_;
  MaskHost host_;
};

// Generates until it finishes or fails; returns the tokens and the first failure's status.
mcpm_status GenerateAll(mcpm_session* s, std::vector<int32_t>* out, std::string* message) {
  std::vector<int32_t> buf(64);
  for (;;) {
    int32_t count = -1;
    mcpm_finish_reason finish = MCPM_FINISH_NONE;
    const mcpm_status st = mcpm_session_generate(s, 7, buf.data(), 64, &count, &finish);
    EXPECT_GE(count, 0);
    out->insert(out->end(), buf.begin(), buf.begin() + std::max(count, 0));
    if (st != MCPM_OK) {
      *message = mcpm_last_error();
      return st;
    }
    if (finish != MCPM_FINISH_NONE) return MCPM_OK;
  }
}

// A callback that fails fails the call with MCPM_ERR_CALLBACK, which reports the tokens generated
// before; the next call asks again and the output is the uninterrupted one.
TEST_P(MaskFailures, ACallbackFailureFailsTheCallAndTheSessionGoesOn) {
  std::vector<int32_t> want;
  std::string message;
  {
    SessionPtr s = Start();
    ASSERT_MCPM_OK(GenerateAll(s.get(), &want, &message));
    ASSERT_EQ(want.size(), 20u);
  }
  for (int64_t fail_at : {0, 1, 9}) {
    SCOPED_TRACE("failing at " + std::to_string(fail_at));
    host_.calls.clear();
    host_.fail_at = fail_at;
    SessionPtr s = Start();
    std::vector<int32_t> got;
    EXPECT_EQ(GenerateAll(s.get(), &got, &message), MCPM_ERR_CALLBACK);
    EXPECT_NE(message.find("token mask callback failed"), std::string::npos) << message;
    EXPECT_LE(got.size(), static_cast<size_t>(fail_at));
    EXPECT_EQ(host_.fail_at, -1) << "the callback was not asked about that state";
    EXPECT_EQ(SessionLength(s.get()), static_cast<int32_t>(prompt_.size() + got.size()));
    ASSERT_MCPM_OK(GenerateAll(s.get(), &got, &message));
    EXPECT_EQ(got, want);
  }
}

// A mask that allows nothing fails the call with INVALID_ARGUMENT naming the step, after the tokens
// before it (with a draft that state may first come up inside a round); the host can then fix its mask
// and go on.
TEST_P(MaskFailures, AnEmptyMaskFailsTheCallNamingTheStep) {
  std::vector<int32_t> want;
  std::string message;
  {
    SessionPtr s = Start();
    ASSERT_MCPM_OK(GenerateAll(s.get(), &want, &message));
  }
  for (int64_t empty_from : {0, 1, 7, 13}) {
    SCOPED_TRACE("empty from step " + std::to_string(empty_from));
    host_.empty_from = empty_from;
    SessionPtr s = Start();
    std::vector<int32_t> got;
    EXPECT_EQ(GenerateAll(s.get(), &got, &message), MCPM_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(got.size(), static_cast<size_t>(empty_from));
    EXPECT_NE(message.find("the token mask allows no token (step " + std::to_string(empty_from) + ")"),
              std::string::npos)
        << message;
    host_.empty_from = -1;
    ASSERT_MCPM_OK(GenerateAll(s.get(), &got, &message));
    EXPECT_EQ(got, want);
  }
}

INSTANTIATE_TEST_SUITE_P(TokenMask, MaskFailures, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "draft" : "plain"; });

// A host compiled before token_mask existed passes the shorter struct: accepted, no constraint (the
// garbage where the fields would be is never read), and the defaults function writes nothing past it.
TEST(TokenMask, AnOlderSamplingParamsSizeMeansNoConstraint) {
  const size_t v1 = offsetof(mcpm_sampling_params, token_mask);
  mcpm_sampling_params p;
  std::memset(&p, 0x5A, sizeof p);
  p.struct_size = static_cast<uint32_t>(v1);
  ASSERT_MCPM_OK(mcpm_sampling_params_default(&p));
  const unsigned char* tail = reinterpret_cast<const unsigned char*>(&p) + v1;
  EXPECT_TRUE(std::all_of(tail, tail + (sizeof p - v1), [](unsigned char b) { return b == 0x5A; }));
  EXPECT_EQ(p.spec_tree_size, 12);
  mcpm_sampling_params full{};
  full.struct_size = sizeof full;
  ASSERT_MCPM_OK(mcpm_sampling_params_default(&full));
  EXPECT_TRUE(full.token_mask == nullptr);
  EXPECT_TRUE(full.token_mask_user_data == nullptr);

  TinyModel tm(ModelConfig(7));
  ModelPtr m = tm.Load(PrimaryBackend(), nullptr, 2);
  ASSERT_TRUE(m);
  SessionPtr s = MakeSession(m.get(), 64);
  const auto prompt = tm.RandomTokens(4, 1);
  p.max_new_tokens = 5;
  ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), prompt.data(), 4, MCPM_LOGITS_NONE, nullptr, 0));
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
  std::vector<int32_t> buf(8);
  int32_t count = 0;
  mcpm_finish_reason finish;
  ASSERT_MCPM_OK(mcpm_session_generate(s.get(), 8, buf.data(), 8, &count, &finish));
  EXPECT_EQ(count, 5);
  p.struct_size = static_cast<uint32_t>(v1 + 4);  // not a released size
  EXPECT_MCPM_STATUS(mcpm_session_set_sampling(s.get(), &p), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_STREQ(mcpm_status_string(MCPM_ERR_CALLBACK), "callback failed");
}

}  // namespace
