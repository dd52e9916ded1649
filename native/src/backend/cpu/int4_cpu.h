// The CPU backend's own int4 weight layout and its int8 activations (W4A8 dot products).
//
// Checkpoints keep the Marlin layout (common/int4.h). When the CPU backend receives an int4 linear it
// rewrites both tensors in place (same byte size) into a layout that its dot-product kernels read
// sequentially:
//
//   codes  (the qweight tensor's bytes, K*N/2): output rows in blocks of 4; for row block b, group
//          g (k in [128g, 128g+128)) and row r in [0,4), 64 bytes start at ((b*G + g)*4 + r)*64,
//          G = K/128. Byte j of them holds q[128g + j][4b + r] in its low nibble and
//          q[128g + 64 + j][4b + r] in its high nibble (q in 0..15, weight (q - 8) * s).
//   scales (the scales tensor, K/128*N fp16): s[g][4b + r] at (b*G + g)*4 + r.
//
// So one 4-row block of one group is 256 contiguous bytes plus 4 contiguous scales, and a vector
// of 32 or 64 code bytes splits into the weights of 32 or 64 consecutive k with one AND (low
// nibbles) and one shift + AND (high nibbles).
//
// Int8 activations (Q8Rows): each token's input row is quantised per 128-element block (one weight
// group), symmetric: scale = max|x| / 127, q = round_half_even(x * (127 / max|x|)) in [-127, 127]
// (a block of zeros has scale 0 and q = 0; a block holding NaN or infinity gets scale NaN).
// `bias` = -8 * sum(q) over the block: with unsigned codes, sum (c - 8) * q = sum c * q + bias,
// which lets x86 kernels multiply unsigned codes by signed activations (vpmaddubsw, vpdpbusd).
//
//   y[t][n] = sum_g s[g][n] * scale[t][g] * (sum_{k in g} c[k][n] * q[t][k] + bias[t][g])
//
// Accuracy against the exact W4A16 product: the only new error is the activation rounding,
// |x - q*scale| <= scale/2 = max|x_block|/254 per element.
#pragma once

#include <cstdint>

namespace mcpm {
namespace int4cpu {

constexpr int64_t kGroup = 128;      // elements per weight group and per activation block
constexpr int64_t kRowBlock = 4;     // output rows interleaved per block
constexpr int64_t kGroupBytes = 64;  // code bytes of one row of one group

// Marlin qweight (I32 [K/16][2N]) -> CPU codes, in place (K*N/2 bytes).
void repack_marlin_codes(void* qweight, int64_t K, int64_t N);
// Marlin-permuted fp16 scales [K/128][N] -> CPU scale order, in place.
void repack_marlin_scales(uint16_t* scales, int64_t K, int64_t N);
// Codes q [K][N] (0..15) -> CPU codes (K*N/2 bytes); plain scales [K/128][N] -> CPU scale order.
void pack_codes(const uint8_t* q, int64_t K, int64_t N, uint8_t* codes);
void pack_scales(const uint16_t* scales, int64_t K, int64_t N, uint16_t* cpu_scales);

// Quantised activations of T tokens: q [T][K], scale and bias [T][K/128].
struct Q8Rows {
  const int8_t* q = nullptr;
  const float* scale = nullptr;
  const int32_t* bias = nullptr;
  int64_t K = 0;
};

// Writable storage for Q8Rows.
struct Q8Buffer {
  int8_t* q = nullptr;
  float* scale = nullptr;
  int32_t* bias = nullptr;
  int64_t K = 0;
  Q8Rows rows() const { return Q8Rows{q, scale, bias, K}; }
};

// Quantises one row x[0..K) (K % 128 == 0) into q[0..K), scale[0..K/128), bias[0..K/128).
void quantize_row_q8(const float* x, int64_t K, int8_t* q, float* scale, int32_t* bias);

}  // namespace int4cpu
}  // namespace mcpm
