#include "engine/adaptive_speculation.h"

#include <algorithm>

#include "common/error.h"

namespace mcpm {

namespace {
// Share of the decoding time that trying arms other than the best may take, and the decay of the measurements.
constexpr double kExploreShare = 0.03;
constexpr double kDecay = 0.8;
// An arm other than the best is measured again after this many steps (its rate may have changed with the text).
constexpr int64_t kRecheckSteps = 64;
// Plain steps measured before the first round is tried.
constexpr int64_t kWarmupSteps = 3;
}  // namespace

SpecParams AdaptiveSpeculation::tree(int32_t arm) {
  SpecParams p;
  switch (arm) {
    case 1: p.num_iter = 1, p.topk_per_iter = 3, p.tree_size = 4; break;
    case 2: p.num_iter = 2, p.topk_per_iter = 6, p.tree_size = 8; break;
    case 3: p.num_iter = 3, p.topk_per_iter = 8, p.tree_size = 16; break;
    default: p.num_iter = 4, p.topk_per_iter = 8, p.tree_size = 32; break;
  }
  return p;
}

void AdaptiveSpeculation::reset(int32_t draft_vocab) {
  *this = AdaptiveSpeculation{};
  usable_[kPlain] = true;
  for (int32_t arm = 1; arm < kArms; ++arm) {
    try {
      tree(arm).validate(draft_vocab);
      usable_[static_cast<size_t>(arm)] = true;
    } catch (const Error&) {
      usable_[static_cast<size_t>(arm)] = false;
    }
  }
}

double AdaptiveSpeculation::rate(int32_t arm) const {
  const Arm& a = arms_[static_cast<size_t>(arm)];
  return a.steps > 0 && a.ns > 0 ? a.tokens / a.ns * 1e9 : 0;
}

double AdaptiveSpeculation::upper_bound(int32_t arm) const {
  // d levels emit at most d + 1 tokens and cost at least d levels plus the verification of the tree: at least one
  // target pass (a plain step), and at least what verifying any smaller tree measured took.
  const SpecParams p = tree(arm);
  double verify_ns = plain_ns();
  for (int32_t b = 1; b < kArms; ++b) {
    const Arm& smaller = arms_[static_cast<size_t>(b)];
    if (smaller.steps > 0 && tree(b).tree_size <= p.tree_size) verify_ns = std::max(verify_ns, smaller.min_verify_ns);
  }
  return (p.num_iter + 1) / (p.num_iter * level_ns_ + verify_ns) * 1e9;
}

int32_t AdaptiveSpeculation::choose() {
  ++step_;
  if (arms_[kPlain].steps < kWarmupSteps) return last_ = kPlain;
  best_ = kPlain;
  for (int32_t a = 1; a < kArms; ++a)
    if (rate(a) > rate(best_)) best_ = a;
  const double best_rate = rate(best_);
  // Another arm is tried while what trying arms has lost stays within its share of the time (the first try is
  // always allowed, and a try that found a better arm gained time instead).
  const bool may_explore = regret_ns_ <= kExploreShare * total_ns_;
  if (may_explore) {
    for (int32_t a = 1; a < kArms; ++a) {  // cheapest first
      const Arm& arm = arms_[static_cast<size_t>(a)];
      if (!usable_[static_cast<size_t>(a)] || a == best_ || upper_bound(a) <= best_rate) continue;
      if (arm.steps == 0 || step_ - arm.last_step >= kRecheckSteps) return last_ = a;
    }
  }
  // Plain decoding is measured again once a tree is the best (the text may stop being predictable, or the plain
  // steps measured may have been slowed by the machine). A plain step loses little, so this is not charged to the
  // exploration budget: a stale plain estimate must not keep a losing tree chosen for good.
  if (best_ != kPlain && step_ - arms_[kPlain].last_step >= kRecheckSteps / 4) return last_ = kPlain;
  return last_ = best_;
}

void AdaptiveSpeculation::record(int32_t arm, int64_t ns, int32_t tokens, int64_t draft_ns) {
  if (ns <= 0 || tokens <= 0) return;
  // The first step of a generation pays for waking the thread pool and cold caches (measured up to 5x a warm
  // step on the CPU): it is not the arm's cost.
  if (!warm_) {
    warm_ = true;
    return;
  }
  total_ns_ += static_cast<double>(ns);
  // Time lost (or, when negative, gained) against the best arm as it was measured before this step.
  if (arm != best_ && rate(best_) > 0) regret_ns_ += static_cast<double>(ns) - tokens / rate(best_) * 1e9;
  Arm& a = arms_[static_cast<size_t>(arm)];
  // A step far slower than the arm's mean is the machine's doing (the thread was preempted), not the arm's cost:
  // counted as twice the mean, so one stall cannot make a fast arm look slow for long.
  double cost = static_cast<double>(ns);
  if (a.steps > 0) cost = std::min(cost, 2 * a.ns / a.tokens * tokens);
  // A plain step (always one token, so its cost varies only with the machine) far faster than the mean shows the
  // earlier ones were slowed (a cold start, a busy machine): start the mean over from it.
  if (arm == kPlain && a.steps > 0 && cost < 0.5 * a.ns / a.tokens) a.ns = a.tokens = 0;
  a.ns = a.ns * kDecay + cost;
  a.tokens = a.tokens * kDecay + tokens;
  ++a.steps;
  a.last_step = step_;
  if (arm != kPlain && draft_ns > 0) {
    const double level = static_cast<double>(draft_ns) / tree(arm).num_iter;
    level_ns_ = level_ns_ == 0 ? level : std::min(level_ns_, level);
    const double verify = static_cast<double>(ns - draft_ns);
    a.min_verify_ns = a.steps == 1 ? verify : std::min(a.min_verify_ns, verify);
  }
}

}  // namespace mcpm
