// AdaptiveSpeculation's choices on synthetic costs: a draft that does not pay is dropped after one probe, and one
// that pays is used, the tree growing to the fastest one.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

#include "engine/adaptive_speculation.h"

namespace {

using mcpm::AdaptiveSpeculation;

// Runs `steps` choices against a cost model: a plain step costs plain_ns; a round of arm a costs
// levels(a)*level_ns + verify(tree size) and emits accepted(a) tokens. Returns the time taken and the tokens emitted,
// and counts how often each arm ran.
struct Simulation {
  double ns = 0, tokens = 0;
  int counts[AdaptiveSpeculation::kArms] = {};
};

// `cold_plain_steps` plain steps at the start cost 5x (thread pool wake-up, cold caches, as measured on the CPU).
Simulation Simulate(AdaptiveSpeculation& a, int steps, double plain_ns, double level_ns,
                    const std::function<double(int32_t)>& verify_ns, const std::function<int32_t(int32_t)>& accepted,
                    int cold_plain_steps = 0) {
  Simulation s;
  int plain_steps = 0;
  for (int i = 0; i < steps; ++i) {
    const int32_t arm = a.choose();
    ++s.counts[arm];
    if (arm == AdaptiveSpeculation::kPlain) {
      const double ns = plain_steps++ < cold_plain_steps ? 5 * plain_ns : plain_ns;
      a.record(arm, static_cast<int64_t>(ns), 1);
      s.ns += ns, s.tokens += 1;
    } else {
      const auto p = AdaptiveSpeculation::tree(arm);
      const double draft = p.num_iter * level_ns, ns = draft + verify_ns(p.tree_size);
      a.record(arm, static_cast<int64_t>(ns), accepted(arm), static_cast<int64_t>(draft));
      s.ns += ns, s.tokens += accepted(arm);
    }
  }
  return s;
}

TEST(AdaptiveSpeculation, ADraftThatDoesNotPayIsDroppedAfterOneProbe) {
  // The demo model on a CPU: a draft level costs three plain steps, verification grows with the tree; even
  // perfect acceptance could not pay.
  AdaptiveSpeculation a;
  a.reset(2048);
  const Simulation s = Simulate(a, 200, 500e3, 1500e3, [](int32_t n) { return 500e3 + 60e3 * n; },
                                [](int32_t arm) { return AdaptiveSpeculation::tree(arm).num_iter + 1; });
  EXPECT_EQ(s.counts[1], 1) << "one probe of the cheapest tree";
  EXPECT_EQ(s.counts[2] + s.counts[3] + s.counts[4], 0) << "the bound rules the larger trees out without a try";
  const double plain_rate = 1 / 500e3, rate = s.tokens / s.ns;
  EXPECT_GE(rate, 0.95 * plain_rate);
  EXPECT_EQ(a.last_choice(), AdaptiveSpeculation::kPlain);
}

TEST(AdaptiveSpeculation, ADraftThatPaysIsUsedAndTheTreeGrowsToTheFastest) {
  // A GPU-like target: verification barely depends on the tree size, drafting is cheap, acceptance high.
  AdaptiveSpeculation a;
  a.reset(2048);
  const auto accepted = [](int32_t arm) { return std::min(AdaptiveSpeculation::tree(arm).num_iter + 1, 4); };
  const Simulation s = Simulate(a, 300, 1000e3, 100e3, [](int32_t n) { return 1000e3 + 5e3 * n; }, accepted);
  // Arm 3 (3 levels, 4 tokens for 1.38 ms) is the fastest: 2.9 tokens per plain step's time.
  EXPECT_EQ(a.last_choice(), 3);
  EXPECT_GT(s.counts[3], 200);
  EXPECT_GE(s.tokens / s.ns, 2.4 / 1000e3) << "most of the time on the fastest tree";
}

// Plain steps cost 5x while cold (the first three), then 0.35 ms; a round of the smallest tree costs 0.8 ms for 2
// tokens (0.4 ms a token): more than a warm plain step but less than the cold ones. Measured against the cold steps,
// the tree looks faster; plain is measured again (outside the exploration budget) and wins.
TEST(AdaptiveSpeculation, AColdStartDoesNotKeepALosingTreeChosen) {
  AdaptiveSpeculation a;
  a.reset(2048);
  const Simulation s = Simulate(a, 400, 350e3, 200e3, [](int32_t n) { return 600e3 + 50e3 * n; },
                                [](int32_t arm) { return std::min(2, AdaptiveSpeculation::tree(arm).num_iter + 1); },
                                /*cold_plain_steps=*/3);
  EXPECT_EQ(a.last_choice(), AdaptiveSpeculation::kPlain);
  EXPECT_GT(s.counts[AdaptiveSpeculation::kPlain], 340);
  EXPECT_GE(s.tokens / s.ns, 0.9 / 350e3) << "within 10% of plain decoding's rate, cold start included";
}

TEST(AdaptiveSpeculation, APlainStepIsMeasuredFirstAndResetForgetsEverything) {
  AdaptiveSpeculation a;
  a.reset(2048);
  EXPECT_EQ(a.choose(), AdaptiveSpeculation::kPlain);
  // The generation's first step is cold (thread pool wake-up, caches) and not measured; the next one is.
  a.record(AdaptiveSpeculation::kPlain, 5000, 1);
  EXPECT_FALSE(a.measured(AdaptiveSpeculation::kPlain));
  EXPECT_EQ(a.choose(), AdaptiveSpeculation::kPlain);
  a.record(AdaptiveSpeculation::kPlain, 1000, 1);
  EXPECT_TRUE(a.measured(AdaptiveSpeculation::kPlain));
  EXPECT_DOUBLE_EQ(a.rate(AdaptiveSpeculation::kPlain), 1e6);
  a.reset(2048);
  EXPECT_FALSE(a.measured(AdaptiveSpeculation::kPlain));
  for (int32_t arm = 1; arm < AdaptiveSpeculation::kArms; ++arm)
    EXPECT_NO_THROW(AdaptiveSpeculation::tree(arm).validate(8)) << "arm " << arm << " fits a draft of 8 tokens";
}

TEST(AdaptiveSpeculation, TreesTooWideForTheDraftAreNeverChosen) {
  AdaptiveSpeculation a;
  a.reset(4);  // trees 2 to 4 expand 6 or 8 children per node
  const Simulation s = Simulate(a, 300, 1000e3, 100e3, [](int32_t n) { return 1000e3 + 5e3 * n; },
                                [](int32_t arm) { return AdaptiveSpeculation::tree(arm).num_iter + 1; });
  EXPECT_EQ(s.counts[2] + s.counts[3] + s.counts[4], 0);
  EXPECT_EQ(a.last_choice(), 1);
}

}  // namespace
