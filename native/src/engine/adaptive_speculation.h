// Adaptive speculation (spec_tree_size = MCPM_SPEC_TREE_AUTO): per generation step, plain decoding or one
// draft-and-verify round with a tree from a fixed ladder, whichever is expected to emit the most tokens per second.
//
// The session reports what each step cost (wall time) and emitted. Each arm keeps exponentially decayed sums of
// both, so its rate follows the text (acceptance changes with it). An arm that was never measured is tried only if
// an upper bound on its rate beats the best measured arm: a round of d draft levels emits at most d + 1 tokens and
// costs at least d draft levels plus the verification of its tree (at least a plain step, and at least what a
// smaller tree's verification took), so once one round has measured those costs, trees that cannot pay are never
// tried again. Trying and re-checking arms that are not the best is limited
// to a small share of the decoding time, so a draft that does not pay costs almost nothing.
// Any choice is lossless: a round samples every emitted token from the target's logits, as plain decoding does.
#pragma once

#include <array>
#include <cstdint>

#include "engine/speculative.h"

namespace mcpm {

class AdaptiveSpeculation {
 public:
  static constexpr int32_t kPlain = 0;
  static constexpr int32_t kArms = 5;  // plain and four trees

  // The speculative parameters of arm 1 .. kArms-1 (depth, width and size grow together).
  static SpecParams tree(int32_t arm);

  // Forgets every measurement (new sampling params: acceptance depends on them). Trees whose parameters a draft of
  // `draft_vocab` tokens cannot draft (more children per node than tokens) are never chosen.
  void reset(int32_t draft_vocab);

  // The arm for the next step.
  int32_t choose();

  // A step of `arm` took `ns` and emitted `tokens`; draft_ns of it went to drafting (spec arms).
  void record(int32_t arm, int64_t ns, int32_t tokens, int64_t draft_ns = 0);

  // Expected tokens per second of a measured arm (0 when not measured).
  double rate(int32_t arm) const;
  bool measured(int32_t arm) const { return arms_[static_cast<size_t>(arm)].steps > 0; }
  int32_t last_choice() const { return last_; }

 private:
  struct Arm {
    double ns = 0, tokens = 0;  // decayed sums
    int64_t steps = 0;          // steps measured since reset
    int64_t last_step = 0;      // step_ of the last measurement
    double min_verify_ns = 0;   // rounds: the least time a round took beyond drafting (verification and walk)
  };
  double upper_bound(int32_t arm) const;
  double plain_ns() const { return arms_[kPlain].ns / arms_[kPlain].tokens; }

  std::array<Arm, kArms> arms_{};
  std::array<bool, kArms> usable_{};
  double level_ns_ = 0;        // the cheapest draft level measured (ns), 0 until a round ran
  double total_ns_ = 0;        // all recorded time
  double regret_ns_ = 0;       // time steps of other arms lost against the best measured arm (negative: gained)
  int64_t step_ = 0;
  int32_t last_ = kPlain;
  int32_t best_ = kPlain;
  bool warm_ = false;  // the first recorded step (cold) has been seen and dropped
};

}  // namespace mcpm
