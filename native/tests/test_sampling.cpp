// Sampling and generation through the C ABI: determinism, greedy, top-k/top-p/min-p support sets,
// the sampled distribution (chi-square), penalties, stop tokens, token budgets, context full,
// abort, and statistics.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "minicpm4.h"
#include "test_util.h"

namespace {

using namespace mcpm_test;

constexpr int32_t kVocab = 256;

TinyConfig SamplingModelConfig() {
  TinyConfig c;
  c.vocab = kVocab, c.hidden = 64, c.heads = 2, c.kv_heads = 1, c.head_dim = 32, c.intermediate = 128;
  c.dtype = MCPM_DTYPE_BF16, c.tied = true, c.seed = 777;
  c.dim_model_base = 32.0f;  // logits O(1): sampling at T ~ 1 is genuinely random
  return c;
}

class SamplingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tm_ = std::make_unique<TinyModel>(SamplingModelConfig());
    // One worker thread: these tests are about sampling, and the multi-threaded forward is
    // covered by test_model; it keeps the many short decode steps cheap.
    model_ = tm_->Load(PrimaryBackend(), nullptr, 1);
    ASSERT_TRUE(model_);
  }

  static mcpm_sampling_params Params() {
    mcpm_sampling_params p{};
    p.struct_size = sizeof p;
    EXPECT_MCPM_OK(mcpm_sampling_params_default(&p));
    return p;
  }

  // A session with `context` prefilled (so it has pending logits and a penalty context).
  SessionPtr SessionWith(const std::vector<int32_t>& context, int32_t capacity = 0) {
    SessionPtr s = MakeSession(model_.get(), capacity, 0);
    if (!s) return nullptr;
    if (!context.empty()) {
      const mcpm_status st = mcpm_session_prefill(s.get(), context.data(), static_cast<int32_t>(context.size()),
                                                  MCPM_LOGITS_NONE, nullptr, 0);
      if (st != MCPM_OK) {
        ADD_FAILURE() << "prefill failed: " << mcpm_last_error();
        return nullptr;
      }
    }
    return s;
  }

  std::unique_ptr<TinyModel> tm_;
  ModelPtr model_;
};

struct GenResult {
  mcpm_status status = -1;
  std::vector<int32_t> tokens;
  mcpm_finish_reason finish = -1;
};

GenResult Generate(mcpm_session* s, int32_t max_tokens, int32_t capacity = -1) {
  GenResult r;
  if (capacity < 0) capacity = max_tokens;
  std::vector<int32_t> buf(static_cast<size_t>(std::max(capacity, 1)), -1);
  int32_t count = -1;
  r.status = mcpm_session_generate(s, max_tokens, buf.data(), capacity, &count, &r.finish);
  if (r.status == MCPM_OK || r.status == MCPM_ERR_CANCELLED) {
    if (count < 0 || count > capacity) {
      ADD_FAILURE() << "generate reported count " << count << " for capacity " << capacity;
      count = 0;
    }
    r.tokens.assign(buf.begin(), buf.begin() + count);
  }
  return r;
}

std::vector<double> Softmax(const std::vector<float>& logits, double temperature) {
  std::vector<double> p(logits.size());
  double mx = -1e300;
  for (float l : logits) mx = std::max(mx, static_cast<double>(l) / temperature);
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp(static_cast<double>(logits[i]) / temperature - mx);
    sum += p[i];
  }
  for (auto& x : p) x /= sum;
  return p;
}

// Ids sorted by decreasing probability.
std::vector<int32_t> ByProbability(const std::vector<double>& p) {
  std::vector<int32_t> ids(p.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)]; });
  return ids;
}

std::vector<int32_t> Draw(mcpm_session* s, const std::vector<float>& logits, int n) {
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    int32_t tok = -1;
    const mcpm_status st = mcpm_session_sample(s, logits.data(), static_cast<int32_t>(logits.size()), &tok);
    if (st != MCPM_OK) {
      ADD_FAILURE() << "mcpm_session_sample failed: " << mcpm_last_error();
      break;
    }
    out.push_back(tok);
  }
  return out;
}


double ChiSquare(const std::map<int32_t, int>& counts, const std::vector<int32_t>& support,
                 const std::vector<double>& expected_p, int n) {
  double chi = 0.0;
  for (size_t i = 0; i < support.size(); ++i) {
    const double e = expected_p[i] * n;
    const auto it = counts.find(support[i]);
    const double o = it == counts.end() ? 0.0 : it->second;
    chi += (o - e) * (o - e) / e;
  }
  return chi;
}

// ---------------------------------------------------------------------------------------------------

TEST(SamplingHelpers, WilsonHilfertyMatchesKnownQuantiles) {
  // Tabulated chi-square 0.999 quantiles: df 5 -> 20.515, df 11 -> 31.264, df 15 -> 37.697.
  EXPECT_NEAR(ChiSquareCritical999(5), 20.515, 0.35);
  EXPECT_NEAR(ChiSquareCritical999(11), 31.264, 0.3);
  EXPECT_NEAR(ChiSquareCritical999(15), 37.697, 0.3);
}

TEST_F(SamplingTest, SameSeedSameTokensDifferentSeedsDiffer) {
  const auto prompt = tm_->RandomTokens(6, 1);
  // All sessions stay alive until the end, so none reuses another's memory (a sampler seeded from
  // anything but the seed, e.g. an address, would then show up as a difference).
  std::vector<SessionPtr> keep;
  auto run = [&](uint64_t seed, std::vector<int> pieces) {
    keep.push_back(SessionWith(prompt));
    mcpm_session* s = keep.back().get();
    EXPECT_TRUE(s);
    if (!s) return std::vector<int32_t>{};
    mcpm_sampling_params p = Params();
    p.temperature = 1.5f;
    p.seed = seed;
    EXPECT_MCPM_OK(mcpm_session_set_sampling(s, &p));
    std::vector<int32_t> all;
    for (int n : pieces) {
      GenResult r = Generate(s, n);
      EXPECT_MCPM_OK(r.status);
      EXPECT_EQ(r.finish, MCPM_FINISH_NONE);
      EXPECT_EQ(static_cast<int>(r.tokens.size()), n);
      all.insert(all.end(), r.tokens.begin(), r.tokens.end());
    }
    EXPECT_EQ(SessionLength(s), static_cast<int32_t>(prompt.size() + all.size()));
    return all;
  };
  const auto a = run(1234, {20});
  const auto b = run(1234, {20});
  const auto c = run(1234, {7, 1, 12});  // split across calls: the RNG stream continues
  ASSERT_EQ(a.size(), 20u);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  int differing = 0;
  for (uint64_t seed : {1235ull, 1236ull, 1237ull}) differing += run(seed, {20}) != a ? 1 : 0;
  EXPECT_GE(differing, 2) << "different seeds almost always give different 20-token samples at T=1.5";

  // set_sampling re-seeds: the same seed on the same session repeats the draws of mcpm_session_sample.
  SessionPtr s = SessionWith(prompt);
  ASSERT_TRUE(s);
  std::vector<float> logits(kVocab);
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& l : logits) l = nd(rng);
  mcpm_sampling_params p = Params();
  p.temperature = 1.0f;
  p.seed = 99;
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
  const auto d1 = Draw(s.get(), logits, 50);
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
  const auto d2 = Draw(s.get(), logits, 50);
  EXPECT_EQ(d1, d2);
  EXPECT_GT(std::set<int32_t>(d1.begin(), d1.end()).size(), 5u) << "T=1 over 256 N(0,1) logits is not greedy";
  // mcpm_session_sample does not touch the KV cache.
  EXPECT_EQ(SessionLength(s.get()), static_cast<int32_t>(prompt.size()));
}

TEST_F(SamplingTest, GreedyIsArgmaxOfDecodeLogits) {
  const auto prompt = tm_->RandomTokens(7, 2);
  SessionPtr gen = SessionWith(prompt);
  ASSERT_TRUE(gen);
  mcpm_sampling_params p = Params();  // defaults are greedy
  ASSERT_MCPM_OK(mcpm_session_set_sampling(gen.get(), &p));
  GenResult r = Generate(gen.get(), 10);
  ASSERT_MCPM_OK(r.status);
  ASSERT_EQ(r.tokens.size(), 10u);

  SessionPtr ref = MakeSession(model_.get());
  ASSERT_TRUE(ref);
  std::vector<float> logits(kVocab);
  ASSERT_MCPM_OK(mcpm_session_prefill(ref.get(), prompt.data(), static_cast<int32_t>(prompt.size()), MCPM_LOGITS_LAST,
                                      logits.data(), logits.size()));
  for (size_t i = 0; i < r.tokens.size(); ++i) {
    EXPECT_EQ(r.tokens[i], ArgMax(logits.data(), logits.size())) << "token " << i;
    ASSERT_MCPM_OK(mcpm_session_decode(ref.get(), r.tokens[i], logits.data(), logits.size()));
  }
  EXPECT_EQ(SessionTokens(gen.get()), SessionTokens(ref.get()));

}

// Hand-made logits with a three-way tie for the maximum at ids 200, 37, 90.
std::vector<float> TiedLogits() {
  std::vector<float> tied(kVocab);
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (auto& l : tied) l = u(rng);
  tied[200] = 5.0f;
  tied[37] = 5.0f;
  tied[90] = 5.0f;
  return tied;
}

TEST_F(SamplingTest, GreedyTiesGoToTheLowestId) {
  SessionPtr s = SessionWith(tm_->RandomTokens(4, 2));
  ASSERT_TRUE(s);
  mcpm_sampling_params p = Params();
  p.temperature = 0.0f;
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
  for (int32_t tok : Draw(s.get(), TiedLogits(), 5)) EXPECT_EQ(tok, 37);
}

TEST_F(SamplingTest, NegativeTemperatureIsGreedy) {
  // The header: "temperature <= 0 is greedy".
  SessionPtr s = SessionWith(tm_->RandomTokens(4, 2));
  ASSERT_TRUE(s);
  mcpm_sampling_params p = Params();
  p.temperature = -1.0f;
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
  for (int32_t tok : Draw(s.get(), TiedLogits(), 5)) EXPECT_EQ(tok, 37);
}

TEST_F(SamplingTest, TopKNeverLeavesTheKLargest) {
  SessionPtr s = SessionWith(tm_->RandomTokens(3, 3));
  ASSERT_TRUE(s);
  // Distinct logits: a random permutation of evenly spaced values in [0, 3).
  std::vector<int32_t> perm(kVocab);
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(4);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<float> logits(kVocab);
  for (int i = 0; i < kVocab; ++i) logits[static_cast<size_t>(i)] = 3.0f * static_cast<float>(perm[static_cast<size_t>(i)]) / kVocab;
  const auto order = ByProbability(Softmax(logits, 1.0));

  for (int32_t k : {1, 5, 17}) {
    mcpm_sampling_params p = Params();
    p.temperature = 1.0f;
    p.top_k = k;
    p.seed = 10u + static_cast<uint64_t>(k);
    ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
    const std::set<int32_t> allowed(order.begin(), order.begin() + k);
    const auto draws = Draw(s.get(), logits, 3000);
    std::set<int32_t> seen;
    for (int32_t t : draws) {
      ASSERT_TRUE(allowed.count(t)) << "top_k=" << k << " emitted token " << t << " outside the k largest";
      seen.insert(t);
    }
    // The k kept tokens have nearly equal probabilities (logit spread < 0.2): all must show up.
    EXPECT_EQ(seen.size(), static_cast<size_t>(k)) << "top_k=" << k;
  }
}

TEST_F(SamplingTest, TopPNeverLeavesTheNucleus) {
  SessionPtr s = SessionWith(tm_->RandomTokens(3, 4));
  ASSERT_TRUE(s);
  std::vector<float> logits(kVocab);
  std::mt19937_64 rng(6);
  std::normal_distribution<float> nd(0.0f, 1.5f);
  for (auto& l : logits) l = nd(rng);
  const double T = 0.8;
  const auto prob = Softmax(logits, T);
  const auto order = ByProbability(prob);
  // Cumulative probabilities of the top tokens; choose p halfway between cum[k-2] and cum[k-1] so
  // the nucleus (smallest set with cumulative probability >= p) is exactly the top k, with a
  // margin far above float rounding.
  std::vector<double> cum(order.size());
  double acc = 0.0;
  for (size_t i = 0; i < order.size(); ++i) cum[i] = acc += prob[static_cast<size_t>(order[i])];
  for (size_t k : {size_t{1}, size_t{4}, size_t{9}}) {
    const double lo = k >= 2 ? cum[k - 2] : 0.0;
    const double top_p = 0.5 * (lo + cum[k - 1]);
    ASSERT_GT(cum[k - 1] - lo, 2e-3);  // margin
    mcpm_sampling_params p = Params();
    p.temperature = static_cast<float>(T);
    p.top_p = static_cast<float>(top_p);
    p.seed = 20u + k;
    ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
    const std::set<int32_t> nucleus(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k));
    const auto draws = Draw(s.get(), logits, 4000);
    std::set<int32_t> seen;
    for (int32_t t : draws) {
      ASSERT_TRUE(nucleus.count(t)) << "top_p=" << top_p << " emitted " << t << " outside the top-" << k << " nucleus";
      seen.insert(t);
    }
    // Each nucleus token (including the one that crosses p) has renormalised probability
    // >= prob[order[k-1]] / cum[k-1]; all of them must appear in 4000 draws.
    EXPECT_GE(prob[static_cast<size_t>(order[k - 1])] / cum[k - 1], 0.01);
    EXPECT_EQ(seen.size(), k) << "top_p=" << top_p;
  }
}

TEST_F(SamplingTest, MinPNeverEmitsTokensBelowTheThreshold) {
  SessionPtr s = SessionWith(tm_->RandomTokens(3, 5));
  ASSERT_TRUE(s);
  std::vector<float> logits(kVocab);
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.5f);
  for (auto& l : logits) l = nd(rng);
  for (double T : {1.0, 0.7}) {
    const auto prob = Softmax(logits, T);
    const auto order = ByProbability(prob);
    const double pmax = prob[static_cast<size_t>(order[0])];
    // min_p halfway between the ratios p/p_max of the 6th and 7th most likely tokens: exactly six
    // tokens survive, with a wide margin.
    const double r6 = prob[static_cast<size_t>(order[5])] / pmax, r7 = prob[static_cast<size_t>(order[6])] / pmax;
    ASSERT_GT(r6 - r7, 2e-3);
    const double min_p = 0.5 * (r6 + r7);
    mcpm_sampling_params p = Params();
    p.temperature = static_cast<float>(T);
    p.min_p = static_cast<float>(min_p);
    p.seed = 30;
    ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
    std::set<int32_t> allowed;
    for (int32_t i = 0; i < kVocab; ++i) {
      if (prob[static_cast<size_t>(i)] >= min_p * pmax) allowed.insert(i);
    }
    ASSERT_EQ(allowed.size(), 6u);
    const auto draws = Draw(s.get(), logits, 4000);
    std::set<int32_t> seen;
    for (int32_t t : draws) {
      ASSERT_TRUE(allowed.count(t)) << "T=" << T << " min_p=" << min_p << " emitted " << t
                                    << " with p/p_max=" << prob[static_cast<size_t>(t)] / pmax;
      seen.insert(t);
    }
    EXPECT_EQ(seen.size(), allowed.size()) << "every surviving token (p >= min_p*p_max) must be drawn";
  }
}

TEST_F(SamplingTest, EmpiricalDistributionMatchesSoftmax) {
  SessionPtr s = SessionWith(tm_->RandomTokens(3, 6));
  ASSERT_TRUE(s);
  // 12 candidate tokens with distinct logits in [-0.5, 1.0]; all others -40 (probability < 1e-20).
  constexpr int kCand = 12;
  std::mt19937_64 rng(8);
  std::vector<int32_t> ids(kVocab);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  const std::vector<int32_t> cand(ids.begin(), ids.begin() + kCand);
  std::vector<float> logits(kVocab, -40.0f);
  for (int i = 0; i < kCand; ++i) logits[static_cast<size_t>(cand[static_cast<size_t>(i)])] = -0.5f + 1.5f * i / (kCand - 1);

  struct Setting {
    double temperature;
    int32_t top_k;
  };
  for (const Setting& st : {Setting{0.7, 0}, Setting{1.3, 6}}) {
    SCOPED_TRACE("T=" + std::to_string(st.temperature) + " top_k=" + std::to_string(st.top_k));
    mcpm_sampling_params p = Params();
    p.temperature = static_cast<float>(st.temperature);
    p.top_k = st.top_k;
    p.seed = 4321;
    ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
    constexpr int kDraws = 20000;
    const auto draws = Draw(s.get(), logits, kDraws);
    ASSERT_EQ(static_cast<int>(draws.size()), kDraws);
    std::map<int32_t, int> counts;
    for (int32_t t : draws) ++counts[t];

    // Expected: softmax(logits / T) over the candidates, restricted to the top_k largest if set.
    auto expected_for = [&](double T) {
      const auto prob = Softmax(logits, T);
      auto order = ByProbability(prob);
      const size_t keep = st.top_k > 0 ? static_cast<size_t>(st.top_k) : static_cast<size_t>(kCand);
      order.resize(keep);
      double z = 0.0;
      for (int32_t i : order) z += prob[static_cast<size_t>(i)];
      std::vector<double> e;
      for (int32_t i : order) e.push_back(prob[static_cast<size_t>(i)] / z);
      return std::make_pair(order, e);
    };
    const auto [support, expected] = expected_for(st.temperature);
    for (const auto& kv : counts) {
      ASSERT_NE(std::find(support.begin(), support.end(), kv.first), support.end())
          << "token " << kv.first << " drawn " << kv.second << " times is outside the support";
    }
    for (double e : expected) ASSERT_GE(e * kDraws, 50.0);  // chi-square approximation valid
    const int df = static_cast<int>(support.size()) - 1;
    const double crit = ChiSquareCritical999(df);
    const double chi = ChiSquare(counts, support, expected, kDraws);
    EXPECT_LT(chi, crit) << "chi-square " << chi << " with " << df << " df exceeds the 0.999 quantile " << crit;

    // Power check: the same draws are clearly inconsistent with a wrong temperature (T = 1 vs 0.7,
    // or 2.6 vs 1.3), so a sampler ignoring the temperature would fail the test above.
    const auto [support_w, expected_w] = expected_for(st.temperature == 0.7 ? 1.0 : 2.6);
    EXPECT_GT(ChiSquare(counts, support_w, expected_w, kDraws), crit);
  }
}

// ---- penalties ------------------------------------------------------------------------------------

class PenaltyTest : public SamplingTest {
 protected:
  // Greedy pick with the given params over hand-made logits: filler everywhere, overrides given.
  int32_t Pick(mcpm_session* s, mcpm_sampling_params p, const std::map<int32_t, float>& values, float filler) {
    p.temperature = 0.0f;
    EXPECT_MCPM_OK(mcpm_session_set_sampling(s, &p));
    std::vector<float> logits(kVocab, filler);
    for (const auto& kv : values) logits[static_cast<size_t>(kv.first)] = kv.second;
    int32_t tok = -1;
    EXPECT_MCPM_OK(mcpm_session_sample(s, logits.data(), kVocab, &tok));
    return tok;
  }
  // Token ids: A appears 3 times in the context, B and C once; X, Y never.
  static constexpr int32_t A = 11, B = 22, C = 33, D = 44, E = 55, F = 66, X = 77, Y = 88;
};

TEST_F(PenaltyTest, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  SessionPtr s = SessionWith({A, B, A, C, A, D, E, F});
  ASSERT_TRUE(s);
  mcpm_sampling_params p = Params();
  p.penalty_last_n = -1;
  // Without penalty the seen token A wins.
  EXPECT_EQ(Pick(s.get(), p, {{A, 4.0f}, {X, 2.5f}}, -5.0f), A);
  p.repetition_penalty = 2.0f;
  // Positive: 4.0 / 2 = 2.0 < 2.5 -> X. (Subtracting r-1 would leave 3.0 and keep A.)
  EXPECT_EQ(Pick(s.get(), p, {{A, 4.0f}, {X, 2.5f}}, -5.0f), X);
  // Applied once per seen token, not per occurrence: 4.0 / 2 = 2.0 > 1.9 keeps A (4/8 would not).
  EXPECT_EQ(Pick(s.get(), p, {{A, 4.0f}, {X, 1.9f}}, -5.0f), A);
  // Negative: -1.0 * 2 = -2.0 < -1.5 -> Y. (Dividing would give -0.5 and keep B.)
  EXPECT_EQ(Pick(s.get(), p, {{B, -1.0f}, {Y, -1.5f}}, -10.0f), Y);
  EXPECT_EQ(Pick(s.get(), p, {{B, -1.0f}, {Y, -2.1f}}, -10.0f), B);
  // Unseen tokens are untouched: X (unseen) at 3.0 beats Y (unseen) at 2.9 and seen A at 5.0 -> 2.5.
  EXPECT_EQ(Pick(s.get(), p, {{A, 5.0f}, {X, 3.0f}, {Y, 2.9f}}, -5.0f), X);
}

TEST_F(PenaltyTest, FrequencyPenaltySubtractsCountTimesF) {
  SessionPtr s = SessionWith({A, B, A, C, A, D, E, F});
  ASSERT_TRUE(s);
  mcpm_sampling_params p = Params();
  p.penalty_last_n = -1;
  EXPECT_EQ(Pick(s.get(), p, {{A, 5.0f}, {B, 4.5f}, {X, 3.75f}}, -5.0f), A);
  p.frequency_penalty = 0.6f;
  // A: 5.0 - 3*0.6 = 3.2; B: 4.5 - 0.6 = 3.9; X: 3.75 -> B.
  EXPECT_EQ(Pick(s.get(), p, {{A, 5.0f}, {B, 4.5f}, {X, 3.75f}}, -5.0f), B);
  // A: 3.2 vs X 3.3 -> X; vs X 3.1 -> A.
  EXPECT_EQ(Pick(s.get(), p, {{A, 5.0f}, {X, 3.3f}}, -5.0f), X);
  EXPECT_EQ(Pick(s.get(), p, {{A, 5.0f}, {X, 3.1f}}, -5.0f), A);
  // B: 4.5 - 0.6 = 3.9 vs X 3.95 -> X; vs X 3.85 -> B.
  EXPECT_EQ(Pick(s.get(), p, {{B, 4.5f}, {X, 3.95f}}, -5.0f), X);
  EXPECT_EQ(Pick(s.get(), p, {{B, 4.5f}, {X, 3.85f}}, -5.0f), B);
}

TEST_F(PenaltyTest, PresencePenaltySubtractsOnce) {
  SessionPtr s = SessionWith({A, B, A, C, A, D, E, F});
  ASSERT_TRUE(s);
  mcpm_sampling_params p = Params();
  p.penalty_last_n = -1;
  p.presence_penalty = 0.6f;
  // A: 5.0 - 0.6 = 4.4 (not 3.2: presence ignores the count); B: 3.9; X: 4.2 -> A.
  EXPECT_EQ(Pick(s.get(), p, {{A, 5.0f}, {B, 4.5f}, {X, 4.2f}}, -5.0f), A);
  // A: 4.7 - 0.6 = 4.1 < 4.2 -> X.
  EXPECT_EQ(Pick(s.get(), p, {{A, 4.7f}, {X, 4.2f}}, -5.0f), X);
  // Negative logits are shifted too: C -1.0 - 0.6 = -1.6 < -1.5 -> Y.
  EXPECT_EQ(Pick(s.get(), p, {{C, -1.0f}, {Y, -1.5f}}, -10.0f), Y);
}

TEST_F(PenaltyTest, OnlyTheLastNTokensArePenalised) {
  // A occurs only at positions 0..2; the last five tokens are B C D E F.
  SessionPtr s = SessionWith({A, A, A, B, C, D, E, F});
  ASSERT_TRUE(s);
  mcpm_sampling_params p = Params();
  p.repetition_penalty = 2.0f;
  const std::map<int32_t, float> v = {{A, 4.0f}, {X, 2.5f}};
  p.penalty_last_n = 5;
  EXPECT_EQ(Pick(s.get(), p, v, -5.0f), A) << "A is outside the window of 5";
  p.penalty_last_n = 0;
  EXPECT_EQ(Pick(s.get(), p, v, -5.0f), A) << "penalty_last_n = 0 disables penalties";
  p.penalty_last_n = 6;
  EXPECT_EQ(Pick(s.get(), p, v, -5.0f), X) << "A at position 2 is inside the window of 6";
  p.penalty_last_n = -1;
  EXPECT_EQ(Pick(s.get(), p, v, -5.0f), X) << "-1 = whole context";
  // Tokens inside the window are penalised: B (position 3) with window 5.
  p.penalty_last_n = 5;
  EXPECT_EQ(Pick(s.get(), p, {{B, 4.0f}, {X, 2.5f}}, -5.0f), X);

  // Frequency counts only occurrences inside the window: window 6 sees A once (5.0 - 0.6 = 4.4),
  // window 8 sees it three times (5.0 - 1.8 = 3.2); X = 4.0 sits between.
  p = Params();
  p.frequency_penalty = 0.6f;
  p.penalty_last_n = 6;
  EXPECT_EQ(Pick(s.get(), p, {{A, 5.0f}, {X, 4.0f}}, -5.0f), A);
  p.penalty_last_n = 8;
  EXPECT_EQ(Pick(s.get(), p, {{A, 5.0f}, {X, 4.0f}}, -5.0f), X);
  p.penalty_last_n = 7;  // sees two: 5.0 - 1.2 = 3.8 < 4.0
  EXPECT_EQ(Pick(s.get(), p, {{A, 5.0f}, {X, 4.0f}}, -5.0f), X);
  EXPECT_EQ(Pick(s.get(), p, {{A, 5.0f}, {X, 3.7f}}, -5.0f), A);
}

TEST_F(PenaltyTest, GenerateAppliesPenaltiesOverPromptAndGeneratedTokens) {
  // Greedy generation with a strong frequency penalty over a window of 6 tokens; the expected
  // tokens are recomputed from the engine's own decode logits with the penalty applied here.
  const auto prompt = tm_->RandomTokens(5, 7);
  constexpr int kWindow = 6;
  constexpr float kFreq = 0.9f;
  SessionPtr gen = SessionWith(prompt);
  ASSERT_TRUE(gen);
  mcpm_sampling_params p = Params();
  p.frequency_penalty = kFreq;
  p.penalty_last_n = kWindow;
  ASSERT_MCPM_OK(mcpm_session_set_sampling(gen.get(), &p));
  GenResult r = Generate(gen.get(), 12);
  ASSERT_MCPM_OK(r.status);
  ASSERT_EQ(r.tokens.size(), 12u);

  SessionPtr ref = MakeSession(model_.get());
  ASSERT_TRUE(ref);
  std::vector<float> logits(kVocab);
  ASSERT_MCPM_OK(mcpm_session_prefill(ref.get(), prompt.data(), static_cast<int32_t>(prompt.size()), MCPM_LOGITS_LAST,
                                      logits.data(), logits.size()));
  std::vector<int32_t> context = prompt;
  int penalised_changes = 0;
  for (size_t i = 0; i < r.tokens.size(); ++i) {
    std::vector<double> pen(logits.begin(), logits.end());
    const size_t from = context.size() > kWindow ? context.size() - kWindow : 0;
    for (size_t j = from; j < context.size(); ++j) pen[static_cast<size_t>(context[j])] -= kFreq;
    const int32_t expect = static_cast<int32_t>(std::max_element(pen.begin(), pen.end()) - pen.begin());
    if (expect != ArgMax(logits.data(), logits.size())) ++penalised_changes;
    ASSERT_EQ(r.tokens[i], expect) << "generated token " << i;
    context.push_back(expect);
    ASSERT_MCPM_OK(mcpm_session_decode(ref.get(), expect, logits.data(), logits.size()));
  }
  // Greedy decoding of a tiny random model loops quickly; the penalty must have mattered.
  EXPECT_GT(penalised_changes, 0);
}

// Generation samples where the logits are (Backend::greedy_sample / sample_token) with one RNG draw
// per token, like the host sampler. `n` tokens generated with `p` after `prompt` must equal, token by
// token, what the host sampler (mcpm_session_sample with the same params and seed) picks from a second
// session's decode logits. Returns how many of those picks were not the plain argmax.
int ExpectGenerateMatchesHostSampling(mcpm_model* model, const std::vector<int32_t>& prompt,
                                      const mcpm_sampling_params& p, int n) {
  int not_argmax = 0;
  SessionPtr gen = MakeSession(model);
  SessionPtr ref = MakeSession(model);
  if (!gen || !ref) {
    ADD_FAILURE() << "session creation failed";
    return 0;
  }
  const int32_t len = static_cast<int32_t>(prompt.size());
  EXPECT_MCPM_OK(mcpm_session_prefill(gen.get(), prompt.data(), len, MCPM_LOGITS_NONE, nullptr, 0));
  EXPECT_MCPM_OK(mcpm_session_set_sampling(gen.get(), &p));
  const GenResult r = Generate(gen.get(), n);
  EXPECT_MCPM_OK(r.status);
  EXPECT_EQ(r.tokens.size(), static_cast<size_t>(n));

  EXPECT_MCPM_OK(mcpm_session_set_sampling(ref.get(), &p));
  std::vector<float> logits(kVocab);
  EXPECT_MCPM_OK(mcpm_session_prefill(ref.get(), prompt.data(), len, MCPM_LOGITS_LAST, logits.data(), logits.size()));
  for (size_t i = 0; i < r.tokens.size(); ++i) {
    int32_t expect = -1;
    EXPECT_MCPM_OK(mcpm_session_sample(ref.get(), logits.data(), kVocab, &expect));
    if (expect != ArgMax(logits.data(), logits.size())) ++not_argmax;
    if (r.tokens[i] != expect) {
      ADD_FAILURE() << "generated token " << i << " is " << r.tokens[i] << ", the host sampler picks " << expect;
      break;
    }
    EXPECT_MCPM_OK(mcpm_session_decode(ref.get(), expect, logits.data(), logits.size()));
  }
  return not_argmax;
}

// Greedy with all three penalties: the penalties must have changed some picks.
TEST_F(PenaltyTest, BackendGreedySamplingEqualsTheHostSamplerWithEveryPenalty) {
  mcpm_sampling_params p = Params();
  p.repetition_penalty = 1.35f;
  p.frequency_penalty = 0.4f;
  p.presence_penalty = 0.25f;
  p.penalty_last_n = 9;
  EXPECT_GT(ExpectGenerateMatchesHostSampling(model_.get(), tm_->RandomTokens(7, 21), p, 24), 0);
}

// Temperature sampling with every mix of truncations, penalties and a seed.
TEST_F(PenaltyTest, BackendTemperatureSamplingEqualsTheHostSamplerForTheSameSeed) {
  struct Mix {
    float temperature;
    int32_t top_k;
    float top_p, min_p;
  };
  for (const Mix& mix : {Mix{0.9f, 0, 1.0f, 0.0f}, Mix{1.3f, 12, 1.0f, 0.0f}, Mix{0.8f, 0, 0.9f, 0.0f},
                         Mix{1.1f, 0, 1.0f, 0.05f}, Mix{0.7f, 40, 0.8f, 0.02f}}) {
    SCOPED_TRACE("T " + std::to_string(mix.temperature) + " top_k " + std::to_string(mix.top_k) + " top_p " +
                 std::to_string(mix.top_p) + " min_p " + std::to_string(mix.min_p));
    mcpm_sampling_params p = Params();
    p.temperature = mix.temperature, p.top_k = mix.top_k, p.top_p = mix.top_p, p.min_p = mix.min_p;
    p.repetition_penalty = 1.2f, p.presence_penalty = 0.1f, p.seed = 1234;
    EXPECT_GT(ExpectGenerateMatchesHostSampling(model_.get(), tm_->RandomTokens(5, 41), p, 20), 0);
  }
}

// After greedy generation the next step's logits are still on the backend. Whatever comes next must
// see them as if they had been copied: a cancelled prefill (which reuses the logits buffer) keeps
// them, and a switch to temperature sampling samples from them on the host.
TEST_F(SamplingTest, LogitsLeftOnTheBackendSurviveACancelledPrefillAndASamplingSwitch) {
  const auto prompt = tm_->RandomTokens(6, 31);
  const auto more = tm_->RandomTokens(5, 32);
  mcpm_sampling_params greedy = Params();
  mcpm_sampling_params warm = Params();
  warm.temperature = 1.5f;
  warm.seed = 99;

  SessionPtr s = SessionWith(prompt);
  ASSERT_TRUE(s);
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &greedy));
  const GenResult first = Generate(s.get(), 3);
  ASSERT_MCPM_OK(first.status);
  ASSERT_EQ(first.tokens.size(), 3u);
  ASSERT_MCPM_OK(mcpm_session_request_abort(s.get()));
  EXPECT_MCPM_STATUS(mcpm_session_prefill(s.get(), more.data(), 5, MCPM_LOGITS_NONE, nullptr, 0), MCPM_ERR_CANCELLED);
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &warm));
  const GenResult next = Generate(s.get(), 4);
  ASSERT_MCPM_OK(next.status);

  // The same history prefilled in one go, logits on the host from the start.
  std::vector<int32_t> history = prompt;
  history.insert(history.end(), first.tokens.begin(), first.tokens.end());
  SessionPtr ref = SessionWith(history);
  ASSERT_TRUE(ref);
  ASSERT_MCPM_OK(mcpm_session_set_sampling(ref.get(), &warm));
  const GenResult expect = Generate(ref.get(), 4);
  ASSERT_MCPM_OK(expect.status);
  EXPECT_EQ(next.tokens, expect.tokens);
}

// ---- generation control ---------------------------------------------------------------------------

TEST_F(SamplingTest, StopTokenEndsGenerationAndIsNotAppended) {
  const auto prompt = tm_->RandomTokens(6, 8);
  // The greedy continuation without stop tokens.
  SessionPtr a = SessionWith(prompt);
  ASSERT_TRUE(a);
  mcpm_sampling_params p = Params();
  ASSERT_MCPM_OK(mcpm_session_set_sampling(a.get(), &p));
  const GenResult path = Generate(a.get(), 12);
  ASSERT_MCPM_OK(path.status);
  ASSERT_EQ(path.tokens.size(), 12u);
  // First position j >= 1 whose token did not occur before (else 0).
  size_t j = 0;
  for (size_t i = 1; i < path.tokens.size() && j == 0; ++i) {
    if (std::find(path.tokens.begin(), path.tokens.begin() + static_cast<std::ptrdiff_t>(i), path.tokens[i]) ==
        path.tokens.begin() + static_cast<std::ptrdiff_t>(i)) {
      j = i;
    }
  }
  int32_t unused = 0;
  while (std::find(path.tokens.begin(), path.tokens.end(), unused) != path.tokens.end()) ++unused;
  const std::vector<int32_t> stops = {unused, path.tokens[j]};

  SessionPtr b = SessionWith(prompt);
  ASSERT_TRUE(b);
  p.stop_tokens = stops.data();
  p.stop_token_count = static_cast<int32_t>(stops.size());
  ASSERT_MCPM_OK(mcpm_session_set_sampling(b.get(), &p));
  const GenResult r = Generate(b.get(), 50);
  ASSERT_MCPM_OK(r.status);
  EXPECT_EQ(r.finish, MCPM_FINISH_STOP_TOKEN);
  const std::vector<int32_t> expect(path.tokens.begin(), path.tokens.begin() + static_cast<std::ptrdiff_t>(j + 1));
  EXPECT_EQ(r.tokens, expect) << "the stop token is returned last";
  EXPECT_EQ(SessionLength(b.get()), static_cast<int32_t>(prompt.size() + j)) << "the stop token is not in the KV cache";
  std::vector<int32_t> kv = prompt;
  kv.insert(kv.end(), path.tokens.begin(), path.tokens.begin() + static_cast<std::ptrdiff_t>(j));
  EXPECT_EQ(SessionTokens(b.get()), kv);
}

TEST_F(SamplingTest, MaxNewTokensAcrossSeveralCalls) {
  const auto prompt = tm_->RandomTokens(5, 9);
  mcpm_sampling_params p = Params();
  p.temperature = 1.0f;
  p.seed = 7;
  p.max_new_tokens = 7;

  SessionPtr s = SessionWith(prompt);
  ASSERT_TRUE(s);
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
  std::vector<int32_t> pieces;
  GenResult r1 = Generate(s.get(), 3);
  ASSERT_MCPM_OK(r1.status);
  EXPECT_EQ(r1.tokens.size(), 3u);
  EXPECT_EQ(r1.finish, MCPM_FINISH_NONE);
  GenResult r2 = Generate(s.get(), 3);
  ASSERT_MCPM_OK(r2.status);
  EXPECT_EQ(r2.tokens.size(), 3u);
  EXPECT_EQ(r2.finish, MCPM_FINISH_NONE);
  GenResult r3 = Generate(s.get(), 3);
  ASSERT_MCPM_OK(r3.status);
  EXPECT_EQ(r3.tokens.size(), 1u);
  EXPECT_EQ(r3.finish, MCPM_FINISH_MAX_TOKENS);
  for (const auto* r : {&r1, &r2, &r3}) pieces.insert(pieces.end(), r->tokens.begin(), r->tokens.end());
  EXPECT_EQ(SessionLength(s.get()), static_cast<int32_t>(prompt.size() + 7));

  // One call with a large budget gives the same 7 tokens (same seed) and stops at max_new_tokens.
  SessionPtr t = SessionWith(prompt);
  ASSERT_TRUE(t);
  ASSERT_MCPM_OK(mcpm_session_set_sampling(t.get(), &p));
  GenResult one = Generate(t.get(), 100);
  ASSERT_MCPM_OK(one.status);
  EXPECT_EQ(one.finish, MCPM_FINISH_MAX_TOKENS);
  EXPECT_EQ(one.tokens, pieces);

  // A buffer smaller than max_tokens bounds the count.
  SessionPtr u = SessionWith(prompt);
  ASSERT_TRUE(u);
  ASSERT_MCPM_OK(mcpm_session_set_sampling(u.get(), &p));
  GenResult small = Generate(u.get(), 10, 2);
  ASSERT_MCPM_OK(small.status);
  EXPECT_EQ(small.tokens.size(), 2u);
  EXPECT_EQ(small.finish, MCPM_FINISH_NONE);
  EXPECT_EQ(small.tokens, std::vector<int32_t>(pieces.begin(), pieces.begin() + 2));

  // set_sampling resets the generated-token count: the session can generate again.
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
  GenResult again = Generate(s.get(), 4);
  ASSERT_MCPM_OK(again.status);
  EXPECT_EQ(again.tokens.size(), 4u);
}

TEST_F(SamplingTest, GenerateUntilContextFull) {
  const auto prompt = tm_->RandomTokens(8, 10);
  SessionPtr s = SessionWith(prompt, 12);
  ASSERT_TRUE(s);
  mcpm_sampling_params p = Params();
  p.temperature = 1.0f;
  p.seed = 3;
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
  GenResult r = Generate(s.get(), 100);
  ASSERT_MCPM_OK(r.status);
  EXPECT_EQ(r.finish, MCPM_FINISH_CONTEXT_FULL);
  EXPECT_EQ(SessionLength(s.get()), 12);
  // The 4 tokens that fit are appended; an implementation may also report one more sampled token
  // that no longer fits (the header leaves this open), never more.
  EXPECT_GE(r.tokens.size(), 4u);
  EXPECT_LE(r.tokens.size(), 5u);
  const auto kv = SessionTokens(s.get());
  ASSERT_EQ(kv.size(), 12u);
  for (size_t i = 0; i < 4 && i < r.tokens.size(); ++i) EXPECT_EQ(kv[8 + i], r.tokens[i]);
}

TEST_F(SamplingTest, GenerateWithoutPendingLogitsFails) {
  SessionPtr s = MakeSession(model_.get());
  ASSERT_TRUE(s);
  mcpm_sampling_params p = Params();
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
  int32_t buf[4] = {-7, -7, -7, -7};
  int32_t count = -7;
  mcpm_finish_reason fin = -7;
  EXPECT_MCPM_STATUS(mcpm_session_generate(s.get(), 4, buf, 4, &count, &fin), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(count, -7) << "out parameters untouched on failure";
  EXPECT_EQ(fin, -7);
  EXPECT_EQ(SessionLength(s.get()), 0);

  const auto prompt = tm_->RandomTokens(6, 11);
  ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), prompt.data(), 6, MCPM_LOGITS_NONE, nullptr, 0));
  // Rewinding to the current length keeps the logits; to a shorter one invalidates them.
  ASSERT_MCPM_OK(mcpm_session_rewind(s.get(), 6));
  EXPECT_MCPM_OK(mcpm_session_generate(s.get(), 1, buf, 4, &count, &fin));
  EXPECT_EQ(count, 1);
  ASSERT_MCPM_OK(mcpm_session_rewind(s.get(), 4));
  EXPECT_MCPM_STATUS(mcpm_session_generate(s.get(), 1, buf, 4, &count, &fin), MCPM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(SessionLength(s.get()), 4);
  // Reset drops them too.
  ASSERT_MCPM_OK(mcpm_session_decode(s.get(), prompt[4], nullptr, 0));
  EXPECT_MCPM_OK(mcpm_session_generate(s.get(), 1, buf, 4, &count, &fin));
  ASSERT_MCPM_OK(mcpm_session_reset(s.get()));
  EXPECT_MCPM_STATUS(mcpm_session_generate(s.get(), 1, buf, 4, &count, &fin), MCPM_ERR_INVALID_ARGUMENT);
}

TEST_F(SamplingTest, AbortDuringGenerateKeepsSessionConsistent) {
  const auto prompt = tm_->RandomTokens(6, 12);
  SessionPtr s = SessionWith(prompt);
  ASSERT_TRUE(s);
  mcpm_sampling_params p = Params();
  p.temperature = 1.0f;
  p.seed = 5;
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
  ASSERT_MCPM_OK(mcpm_session_request_abort(s.get()));
  GenResult r = Generate(s.get(), 20);
  EXPECT_MCPM_STATUS(r.status, MCPM_ERR_CANCELLED);
  EXPECT_LT(r.tokens.size(), 20u);
  EXPECT_EQ(SessionLength(s.get()), static_cast<int32_t>(prompt.size() + r.tokens.size()));
  std::vector<int32_t> kv = prompt;
  kv.insert(kv.end(), r.tokens.begin(), r.tokens.end());
  EXPECT_EQ(SessionTokens(s.get()), kv);
  // The request was consumed; generation continues normally.
  GenResult r2 = Generate(s.get(), 5);
  ASSERT_MCPM_OK(r2.status);
  EXPECT_EQ(r2.tokens.size(), 5u);
  EXPECT_EQ(SessionLength(s.get()), static_cast<int32_t>(prompt.size() + r.tokens.size() + 5));
}

TEST_F(SamplingTest, StatsCountPrefillDecodeAndGeneratedTokens) {
  SessionPtr s = MakeSession(model_.get(), 0, 4);
  ASSERT_TRUE(s);
  mcpm_session_stats st{};
  st.struct_size = sizeof st;
  ASSERT_MCPM_OK(mcpm_session_get_stats(s.get(), &st));
  EXPECT_EQ(st.prefill_tokens, 0);
  EXPECT_EQ(st.decode_tokens, 0);
  EXPECT_EQ(st.generated_tokens, 0);

  const auto prompt = tm_->RandomTokens(10, 13);
  ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), prompt.data(), 10, MCPM_LOGITS_NONE, nullptr, 0));
  ASSERT_MCPM_OK(mcpm_session_decode(s.get(), prompt[0], nullptr, 0));
  ASSERT_MCPM_OK(mcpm_session_decode(s.get(), prompt[1], nullptr, 0));
  mcpm_sampling_params p = Params();
  p.max_new_tokens = 5;
  ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
  GenResult r = Generate(s.get(), 10);
  ASSERT_MCPM_OK(r.status);
  ASSERT_EQ(r.tokens.size(), 5u);
  ASSERT_EQ(r.finish, MCPM_FINISH_MAX_TOKENS);

  st = mcpm_session_stats{};
  st.struct_size = sizeof st;
  ASSERT_MCPM_OK(mcpm_session_get_stats(s.get(), &st));
  EXPECT_EQ(st.prefill_tokens, 10);
  EXPECT_GT(st.prefill_ns, 0);
  EXPECT_EQ(st.decode_tokens, 2 + 5) << "each generated (non-stop) token is appended and evaluated";
  EXPECT_GT(st.decode_ns, 0);
  EXPECT_GE(st.sample_ns, 0);
  EXPECT_EQ(st.generated_tokens, 5);
  EXPECT_EQ(SessionLength(s.get()), 17);

  // Session reset keeps the stats; reset_stats zeroes them.
  ASSERT_MCPM_OK(mcpm_session_reset(s.get()));
  mcpm_session_stats st2{};
  st2.struct_size = sizeof st2;
  ASSERT_MCPM_OK(mcpm_session_get_stats(s.get(), &st2));
  EXPECT_EQ(st2.prefill_tokens, 10);
  EXPECT_EQ(st2.generated_tokens, 5);
  ASSERT_MCPM_OK(mcpm_session_reset_stats(s.get()));
  ASSERT_MCPM_OK(mcpm_session_get_stats(s.get(), &st2));
  EXPECT_EQ(st2.prefill_tokens, 0);
  EXPECT_EQ(st2.prefill_ns, 0);
  EXPECT_EQ(st2.decode_tokens, 0);
  EXPECT_EQ(st2.decode_ns, 0);
  EXPECT_EQ(st2.sample_ns, 0);
  EXPECT_EQ(st2.generated_tokens, 0);
  // And counting resumes.
  ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), prompt.data(), 3, MCPM_LOGITS_NONE, nullptr, 0));
  ASSERT_MCPM_OK(mcpm_session_get_stats(s.get(), &st2));
  EXPECT_EQ(st2.prefill_tokens, 3);
}

}  // namespace

namespace {

// A tiny model whose LM head row `row` is NaN (untied: the embedding stays finite), so every step's logits hold a
// NaN: greedy and temperature sampling, where the logits are (on CUDA, on the device), fail with
// MCPM_ERR_NONFINITE naming the step, and the session stays usable (it fails the same way again).
TEST(NonFiniteLogits, GenerationFailsNamingTheStep) {
  TinyConfig c = SamplingModelConfig();
  c.tied = false;
  TinyModel tm(c);
  ModelPtr m;
  ASSERT_MCPM_OK(tm.Create(&m, PrimaryBackend(), 1));
  for (const HostTensor& t : tm.tensors()) {
    if (t.name != "lm_head.weight") {
      ASSERT_MCPM_OK(tm.SetTensor(m.get(), t));
      continue;
    }
    HostTensor corrupt = t;
    corrupt.values[static_cast<size_t>(5 * c.hidden)] = std::numeric_limits<float>::quiet_NaN();
    corrupt.bytes = EncodeTensor(corrupt.values, corrupt.dtype);
    ASSERT_MCPM_OK(tm.SetTensor(m.get(), corrupt));
  }
  ASSERT_MCPM_OK(mcpm_model_finalize(m.get()));
  for (float temperature : {0.0f, 0.8f}) {
    SessionPtr s = MakeSession(m.get());
    const std::vector<int32_t> prompt{1, 2, 3};
    ASSERT_MCPM_OK(mcpm_session_prefill(s.get(), prompt.data(), 3, MCPM_LOGITS_NONE, nullptr, 0));
    mcpm_sampling_params p{};
    p.struct_size = sizeof p;
    ASSERT_MCPM_OK(mcpm_sampling_params_default(&p));
    p.temperature = temperature;
    ASSERT_MCPM_OK(mcpm_session_set_sampling(s.get(), &p));
    // Two tokens appended as generated output: the failing step is the third.
    const std::vector<int32_t> forced{7, 8};
    ASSERT_MCPM_OK(mcpm_session_force_tokens(s.get(), forced.data(), 2));
    std::vector<int32_t> out(MCPM_MAX_STEP_TOKENS);
    int32_t count = -1;
    mcpm_finish_reason finish;
    for (int attempt = 0; attempt < 2; ++attempt) {
      EXPECT_EQ(mcpm_session_generate(s.get(), 4, out.data(), static_cast<int32_t>(out.size()), &count, &finish),
                MCPM_ERR_NONFINITE);
      const std::string error = mcpm_last_error();
      EXPECT_NE(error.find("generation step 3 (after 5 context tokens)"), std::string::npos) << error;
    }
    int32_t length = 0;
    ASSERT_MCPM_OK(mcpm_session_length(s.get(), &length));
    EXPECT_EQ(length, 5) << "nothing was appended";
    // Sampling from host logits checks them too.
    std::vector<float> logits(static_cast<size_t>(c.vocab), 0.5f);
    logits[9] = std::numeric_limits<float>::infinity();
    int32_t token = -1;
    EXPECT_EQ(mcpm_session_sample(s.get(), logits.data(), c.vocab, &token), MCPM_ERR_NONFINITE);
    EXPECT_NE(std::string(mcpm_last_error()).find("NaN or an infinity"), std::string::npos) << mcpm_last_error();
  }
  EXPECT_STREQ(mcpm_status_string(MCPM_ERR_NONFINITE), "non-finite logits");
}

}  // namespace
