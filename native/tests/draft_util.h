// Random EAGLE drafts for the C ABI tests of speculative decoding (test_speculative.cpp,
// test_token_mask.cpp): tensors in the MiniCPM4-Eagle layout for a TinyModel target.
#ifndef MCPM_TESTS_DRAFT_UTIL_H
#define MCPM_TESTS_DRAFT_UTIL_H

#include <cstdint>
#include <memory>
#include <vector>

#include "minicpm4.h"
#include "test_util.h"

namespace mcpm_test {

struct DraftDeleter {
  void operator()(mcpm_draft* d) const { mcpm_draft_free(d); }
};
using DraftPtr = std::unique_ptr<mcpm_draft, DraftDeleter>;

struct DraftSpec {
  int32_t layers = 1;
  bool input_norm = true;
  bool attn_norm = true;
  bool bias = true;
  uint64_t seed = 5;
  std::vector<int32_t> vocabulary;  // FR-Spec ids; empty = whole vocabulary
  bool int4 = false;                 // linears as Marlin int4 (fc through CPM.cu's fused fc.qweight/fc.scales)
  int32_t window = 0;                // mcpm_draft_config.attention_window
};

// Random draft tensors in the MiniCPM4-Eagle layout for a target of config `tc`.
std::vector<HostTensor> DraftTensors(const TinyConfig& tc, const DraftSpec& spec);

// mcpm_draft_config_default for m with the spec's layout.
mcpm_draft_config DraftConfigFor(mcpm_model* m, const DraftSpec& spec);

// A finalized random draft for m (records a test failure and returns nullptr on failure).
DraftPtr MakeDraft(mcpm_model* m, const TinyConfig& tc, const DraftSpec& spec);

// A session over m with draft d (records a test failure on failure).
SessionPtr MakeSpecSession(mcpm_model* m, const mcpm_draft* d, int32_t capacity = 256, int32_t chunk = 0,
                           bool graphs = true);

}  // namespace mcpm_test

#endif  // MCPM_TESTS_DRAFT_UTIL_H
