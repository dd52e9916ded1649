// Emulated PTX instructions used by the kernels (backend/cuda/ptx.h maps each to inline assembly
// under nvcc and to these functions in the emulator):
//   mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32  a warp collective over the documented fragment
//       layout: lane l, g = l / 4, t = l % 4; A reg i = A[g + 8 (i % 2)][2t + 8 (i / 2) + {0,1}],
//       B reg i = B[2t + 8 i + {0,1}][g], C/D c[i] = C[g + 8 (i / 2)][2t + i % 2]; products of fp16
//       values are exact in fp32 and accumulated in fp32.
//   cp.async.cg.shared.global (16 bytes, src_bytes < 16 zero-fills the rest), cp.async.commit_group,
//       cp.async.wait_group N: a copy is queued by its thread and lands only when a wait_group
//       retires its group, so a read before the wait sees the stale bytes, as it may on hardware.
//   lop3.b32 with an immediate lookup table.
#pragma once

#include <cstdint>

namespace mcpm_emu {

void mma_m16n8k16_f16_f32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]);
void cp_async(void* shared_dst, const void* global_src, int copy_bytes, int src_bytes);
void cp_async_commit_group();
void cp_async_wait_group(int pending);

// lop3.b32: bit i of the result is bit (a_i << 2 | b_i << 1 | c_i) of the table.
inline uint32_t lop3(uint32_t a, uint32_t b, uint32_t c, uint8_t table) {
  uint32_t r = 0;
  for (int m = 0; m < 8; ++m) {
    if (!(table >> m & 1)) continue;
    r |= ((m & 4) ? a : ~a) & ((m & 2) ? b : ~b) & ((m & 1) ? c : ~c);
  }
  return r;
}

}  // namespace mcpm_emu
