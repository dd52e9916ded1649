// The fragment math of the CUDA tensor-core int4 GEMM (int4_mma.cu) in plain C++ for the device and
// the host, so that a CPU test (tests/test_int4.cpp, Int4MmaFragments.*) can emulate a warp's
// mma.sync.m16n8k16 steps with exactly these functions and check them against the reference in CI.
//
// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 (PTX ISA, "matrix fragments for mma.m16n8k16"),
// lane l, g = l / 4, t = l % 4; each 32-bit register holds two fp16 values, the lower index in the low
// half:
//   A (16 x 16, row-major): reg i = A[g + 8 (i % 2)][2t + 8 (i / 2) + {0, 1}]
//   B (16 x 8, "col"):      reg i = B[2t + 8 i + {0, 1}][g]
//   C (16 x 8, fp32):       c[i]  = C[g + 8 (i / 2)][2t + i % 2]
//
// Marlin's packing (common/int4.h, int4_gemv_lane.h) is laid out for exactly this: lane l's four
// words of a slab (16 k rows) of a 64-column chunk hold the k rows {2t, 2t+1, 2t+8, 2t+9} of the
// columns 8a + g, a = 2j + h (word j, half h), i.e. lane l's B fragments of the chunk's eight n-tiles.
// Nibble p of a word sits at k slot o % 4 and column half o / 4 with o = [0,2,4,6,1,3,5,7][p], so
// n-tile (j, h)'s B registers are the nibble pairs (p, p + 4) = (2h, 2h + 4) and (2h + 1, 2h + 5):
// (word >> (8h + 4 reg)) & 0x000f000f puts the pair in the two fp16 halves. OR-ing 0x6400 (1024.0)
// makes each half 1024 + q exactly; subtracting 1032 gives q - 8, and one fp16 multiply by the
// column's scale the weight, (q - 8) * s rounded to fp16 once.
#pragma once

#include <cstdint>

#include "backend/cuda/host_device.h"
#if defined(MCPM_CUDA_EMULATED) && !defined(__CUDACC__)
#include "mcpm_emu/ptx.h"  // the emulated LOP3
#endif

namespace mcpm {
namespace int4_mma {

constexpr int kNTiles = 8;                 // n8 tiles per 64-column chunk
constexpr uint32_t kNibbleMask = 0x000f000fu;
constexpr uint32_t kHalfMagic = 0x64006400u;  // fp16 1024.0 in both halves
constexpr uint16_t kHalfBias = 0x6408;         // fp16 1032.0 = 1024 + the zero point 8

// A fragment: row and column (within the 16 x 16 tile) of element e (0, 1) of register i (0..3).
MCPM_HD int a_row(int lane, int i) { return lane / 4 + 8 * (i % 2); }
MCPM_HD int a_col(int lane, int i, int e) { return 2 * (lane % 4) + 8 * (i / 2) + e; }

// C fragment: row and column (within the 16 x 8 tile) of accumulator i (0..3).
MCPM_HD int c_row(int lane, int i) { return lane / 4 + 8 * (i / 2); }
MCPM_HD int c_col(int lane, int i) { return 2 * (lane % 4) + i % 2; }

// Word and right shift of n-tile a's B register `reg` (0, 1) in a lane's four words.
MCPM_HD int b_word(int a) { return a / 2; }
MCPM_HD int b_shift(int a, int reg) { return 8 * (a % 2) + 4 * reg; }

// Two nibbles as fp16 bit patterns 1024 + q (low and high half); on the device one LOP3.
MCPM_HD uint32_t magic_nibble_pair(uint32_t word, int shift) {
#if defined(__CUDA_ARCH__)
  uint32_t r;
  const uint32_t shifted = word >> shift;
  // (shifted & mask) | magic: LUT 0xEA = (a & b) | c.
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(shifted), "r"(kNibbleMask), "r"(kHalfMagic));
  return r;
#elif defined(MCPM_CUDA_EMULATED) && !defined(__CUDACC__)
  return ::mcpm_emu::lop3(word >> shift, kNibbleMask, kHalfMagic, 0xEA);  // the emulated LOP3
#else
  return ((word >> shift) & kNibbleMask) | kHalfMagic;
#endif
}

}  // namespace int4_mma
}  // namespace mcpm
