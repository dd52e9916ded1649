// The block-selection arithmetic of the CUDA InfLLM v2 kernels (sparse_attention.cu), in plain C++
// that compiles for the device and the host, so that a CPU test (tests/test_infllm.cpp,
// InfllmSelectEmulation.*) runs the kernels' selection step by step against engine/infllm's
// reference in CI.
//
// For one (query token at position t, KV group) the kernels score every block b < n_blocks exactly as
// engine/infllm.h steps 3-4 do (max-pool of the stage-1 kernel scores S over [r*b - 1, r*b + r - 1],
// +inf for the init and local blocks) and keep the k best, ties to the lower block index. Each block
// gets a 64-bit key that orders exactly like that: the score mapped to an order-preserving unsigned
// int in the high 32 bits, 0xffffffff - b in the low 32, so keys are unique and a larger key is the
// preferred block. The k-th largest key is found by an MSB-first radix select over 8-bit digits: 8
// passes of a 256-bin histogram over the blocks whose key agrees with the digits chosen so far. A
// block is selected iff its key >= that threshold (then blocks past t's own block are dropped, as the
// reference does). No sort, no data-dependent memory, any n_blocks.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "backend/cuda/host_device.h"

namespace mcpm {
namespace infllm_select {

constexpr int kDigitBits = 8;
constexpr int kBins = 1 << kDigitBits;
constexpr int kFirstShift = 64 - kDigitBits;  // passes at shifts 56, 48, ..., 0

// Complete kernels of `size` tokens at `stride` in L tokens (engine/infllm.h num_kernels).
MCPM_HD int64_t kernel_count(int64_t L, int64_t size, int64_t stride) {
  return L < size ? 0 : (L - size) / stride + 1;
}

// An unsigned int ordered like the float (-inf lowest, +inf highest; -0 just below +0).
MCPM_HD uint32_t float_order(float f) {
  uint32_t bits;
#if defined(__CUDA_ARCH__)
  bits = __float_as_uint(f);
#else
  std::memcpy(&bits, &f, sizeof bits);
#endif
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// The selection key of block b with score `score` (larger = preferred; unique per block).
MCPM_HD uint64_t block_key(float score, int64_t b) {
  return (static_cast<uint64_t>(float_order(score)) << 32) | (0xffffffffu - static_cast<uint32_t>(b));
}

// The key bits that earlier passes have fixed when the pass at `shift` runs.
MCPM_HD uint64_t radix_fixed_mask(int shift) {
  return shift + kDigitBits >= 64 ? 0 : ~uint64_t{0} << (shift + kDigitBits);
}

MCPM_HD int radix_digit(uint64_t key, int shift) { return static_cast<int>((key >> shift) & (kBins - 1)); }

// One pass's decision: the digit of the rank-th largest key (rank 1-based among the keys that match
// the fixed digits) given their histogram at this digit; subtracts the keys of larger digits from
// rank. Returns -1 if fewer than rank keys were counted (a caller error).
MCPM_HD int radix_choose_digit(const uint32_t* hist, uint32_t& rank) {
  for (int d = kBins - 1; d >= 0; --d) {
    if (hist[d] >= rank) return d;
    rank -= hist[d];
  }
  return -1;
}

// Block b's pooled stage-1 score: max S[c] over c in [r*b - 1, r*b + r - 1] ∩ [0, n1), -inf if empty.
MCPM_HD float pooled_block_score(const float* S, int64_t n1, int64_t r, int64_t b) {
  const int64_t lo = r * b - 1 < 0 ? 0 : r * b - 1;
  const int64_t hi = r * b + r - 1 < n1 - 1 ? r * b + r - 1 : n1 - 1;
  float m = -INFINITY;
  for (int64_t c = lo; c <= hi; ++c) m = S[c] > m ? S[c] : m;
  return m;
}

// Whether block b is always selected for the query at position t: an init block or one of the
// local_blocks blocks before t's own block, or that block itself.
MCPM_HD bool forced_block(int64_t b, int64_t t, int64_t block_size, int64_t init_blocks, int64_t local_blocks) {
  const int64_t qb = t / block_size;
  return b < init_blocks || (b >= qb - local_blocks && b <= qb);
}

}  // namespace infllm_select
}  // namespace mcpm
