// The PTX instructions the kernels use, one function each: inline assembly under nvcc, the CUDA
// emulator's implementation of the same documented semantics otherwise (native/emulator, ptx.h
// there, each with a unit test in test_emulator.cpp).
#pragma once

#include <cstdint>

#include "backend/cuda/host_device.h"

namespace mcpm {
namespace ptx {

// D = A B + C for one m16n8k16 tile: A 16x16 fp16 (row), B 16x8 fp16 (col), C and D fp32; every lane
// of the warp holds its fragments (layout: int4_mma_fragment.h).
__device__ __forceinline__ void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDACC__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  ::mcpm_emu::mma_m16n8k16_f16_f32(c, a, b, c);
#endif
}

// 16 bytes global -> shared without a register round trip; src_bytes 0 writes 16 zero bytes instead.
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src, int src_bytes) {
#if defined(__CUDACC__)
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_bytes)
               : "memory");
#else
  ::mcpm_emu::cp_async(smem_dst, gmem_src, 16, src_bytes);
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDACC__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
  ::mcpm_emu::cp_async_commit_group();
#endif
}

// Waits until at most `pending` (0..2) of this thread's newest commit groups are still in flight.
__device__ __forceinline__ void cp_async_wait(int pending) {
#if defined(__CUDACC__)
  if (pending <= 0)
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
  else if (pending == 1)
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
  else
    asm volatile("cp.async.wait_group 2;\n" ::: "memory");
#else
  ::mcpm_emu::cp_async_wait_group(pending <= 0 ? 0 : pending == 1 ? 1 : 2);
#endif
}

}  // namespace ptx
}  // namespace mcpm
