// The per-lane arithmetic of the CUDA batch-1..8 int4 GEMV (int4_gemm.cu; its tiled kernel decodes
// with the same index functions), in plain C++ that compiles
// for the device and the host, so that a CPU test (tests/test_int4.cpp, Int4GemvLane.*) can emulate a
// warp with exactly these functions and check the Marlin index math against the CPU reference in CI.
//
// Marlin layout (common/int4.h): slab r (K rows 16r..16r+15) of 64-column chunk c is the 128 int32
// words [128c, 128c + 128) of qweight row r. Word w = 4i + j (lane_i = i = 4*col + t) holds nibbles
// p = 0..7 with o = [0,2,4,6,1,3,5,7][p] at k = 16r + [2t, 2t+1, 2t+8, 2t+9][o % 4] and
// n = 64c + 16j + 8(o / 4) + col. So lane l of a warp that loads words 4l..4l+3 (one 16-byte load)
// holds exactly the 32 weights k in {2t, 2t+1, 2t+8, 2t+9} x n in {16j + 8h + col : j < 4, h < 2}
// with t = l % 4, col = l / 4: 8 output columns (accumulator a = 2j + h) over 4 k of the slab. The
// four lanes 4col..4col+3 share their columns and sum their partial results at the end.
#pragma once

#include <cmath>
#include <cstdint>

#include "backend/cuda/host_device.h"

namespace mcpm {
namespace int4_gemv {

constexpr int kLaneColumns = 8;  // accumulators per lane and token
constexpr int kSlabRows = 16;    // K rows per slab
constexpr int kChunkColumns = 64;

// Column within the chunk of a lane's accumulator a (a = 2j + h).
MCPM_HD int lane_column(int lane, int a) { return 16 * (a / 2) + 8 * (a % 2) + lane / 4; }

// The Marlin order of nibble p within its word: o = [0,2,4,6,1,3,5,7][p].
MCPM_HD int nibble_order(int p) { return p < 4 ? 2 * p : 2 * (p - 4) + 1; }

// A lane's four inputs of a slab per token are rows [2t, 2t+1, 2t+8, 2t+9] of it (t = lane % 4);
// nibble p of every word multiplies input slot o % 4.
MCPM_HD int slot_row(int lane, int slot) { return 2 * (lane % 4) + (slot % 2) + 8 * (slot / 2); }
MCPM_HD int input_slot(int p) { return nibble_order(p) % 4; }

// Accumulator (column slot) of nibble p of word j: 2j + o / 4.
MCPM_HD int nibble_accumulator(int j, int p) { return 2 * j + nibble_order(p) / 4; }

// Position of chunk column nl in a permuted scales row (common/int4.h): K > 128: 8(nl % 8) + nl / 8;
// K == 128 (one group): 32h + 8((l % 8) / 2) + 2(l / 8) + l % 2 with h = nl / 32, l = nl % 32.
MCPM_HD int scale_position(int nl, bool single_group) {
  if (!single_group) return 8 * (nl % 8) + nl / 8;
  const int h = nl / 32, l = nl % 32;
  return 32 * h + 8 * ((l % 8) / 2) + 2 * (l / 8) + l % 2;
}

MCPM_HD float fused_multiply_add(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return fmaf(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// One slab for one lane: acc[m][a] += xv[m][slot] * (q - 8) * scale[a] over the lane's 32 nibbles, in
// nibble order. words: the lane's 4 words; xv: its 4 inputs per token (slot_row); scale: its 8 column
// scales of the slab's group, as floats. (q - 8) * scale is exact in fp32.
template <int M>
MCPM_HD void accumulate_slab(const uint32_t (&words)[4], const float (&xv)[M][4], const float (&scale)[8],
                             float (&acc)[M][kLaneColumns]) {
MCPM_UNROLL
  for (int j = 0; j < 4; ++j) {
MCPM_UNROLL
    for (int p = 0; p < 8; ++p) {
      const int a = nibble_accumulator(j, p), slot = input_slot(p);
      const float w = static_cast<float>(static_cast<int>((words[j] >> (4 * p)) & 15u) - 8) * scale[a];
MCPM_UNROLL
      for (int m = 0; m < M; ++m) acc[m][a] = fused_multiply_add(xv[m][slot], w, acc[m][a]);
    }
  }
}

}  // namespace int4_gemv
}  // namespace mcpm
