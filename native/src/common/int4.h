// W4A16 int4 weights (GPTQ symmetric 4-bit, group 128, fp16 scales) and the Marlin weight layout:
// quantisation, AutoGPTQ and Marlin packing, and a CPU reference GEMM. Internal module; the
// specification is shared/reference/algorithms.md §4 (and cpmcu.md §2.4 for the checkpoint).
//
// Conventions used by every function below (all arrays row-major, contiguous):
//
//   K = input features, N = output features. nn.Linear.weight is W_hf[N][K]; the quantised weight is
//   viewed as its transpose W[k][n] (algorithms.md §4.1).
//
//   codes  q       uint8   [K][N]        q[k*N + n] in 0..15 (one value per byte, unpacked)
//   scales s       uint16  [K/128][N]    IEEE binary16 bits, s[g*N + n] for k in [128g, 128g+128)
//   dequantised    float   [K][N]        What[k][n] = (q[k][n] - 8) * s[k/128][n]
//
//   AutoGPTQ (checkpoint_format "gptq", i.e. the v1 zero convention):
//     qweight int32 [K/8][N]       nibble j (bits 4j..4j+3) of qweight[i][n] = q[8i+j][n]
//     scales  fp16  [K/128][N]     unpermuted
//     qzeros  int32 [K/128][N/8]   nibble j of qzeros[g][c] = zero - 1 = 7 (the effective zero is 8)
//     g_idx   int32 [K]            g_idx[k] = k / 128 (anything else means act-order: rejected)
//
//   Marlin (what CPM.cu's gptq2marlin.py writes; algorithms.md §4.2):
//     qweight int32 [K/16][2N]     slab r holds rows 16r..16r+15; inside it, for 64-column chunk c,
//                                  lane i in [0,32) (t = i%4, col = i/4), sub-tile j in [0,4) and
//                                  nibble p in [0,8), with o = [0,2,4,6,1,3,5,7][p]:
//                                    word = qweight[r][128c + 4i + j], value = (word >> 4p) & 15
//                                    k = 16r + [2t, 2t+1, 2t+8, 2t+9][o % 4]
//                                    n = 64c + 16j + 8(o / 4) + col
//     scales  fp16  [K/128][N]     permuted within each row:
//                                    K > 128 (grouped):   s'[64c + 8a + b] = s[64c + a + 8b],
//                                                         a, b in [0,8)
//                                    K == 128 (one group, "per-channel" perm; see below):
//                                                         s'[32c + 8a + m] = s[32c + 2a + off[m]],
//                                                         off = [0,1,8,9,16,17,24,25], a in [0,4)
//
// Ambiguity resolved here: the converter chooses the scale permutation with
// `group_size < size_k` (vLLM's marlin_permute_scales), so a matrix with exactly one group (K == 128)
// gets the per-channel permutation even though group_size is 128. We reproduce the file format
// byte for byte, so pack_marlin / unpack_marlin follow the same rule.
//
// Shapes: quantisation needs K % 128 == 0; everything Marlin needs K % 128 == 0 and N % 64 == 0
// (vLLM's MIN_THREAD_K / MIN_THREAD_N), and AutoGPTQ needs N % 8 == 0 for qzeros. Violations
// throw std::invalid_argument with a message naming the rule.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace mcpm {
namespace int4 {

constexpr int kBits = 4;
constexpr int kGroupSize = 128;  // quantisation group along K
constexpr int kZeroPoint = 8;    // symmetric uint4b8: value = q - 8
constexpr int kTile = 16;        // Marlin tile (16 x 16)
constexpr int kMarlinMinN = 64;  // N granularity of the Marlin layout (one permutation chunk)

// ---- fp16 ------------------------------------------------------------------------------------------

// IEEE binary32 -> binary16 bits, round to nearest even; overflow gives inf, NaN stays NaN.
uint16_t f32_to_f16(float f);
// binary16 bits -> binary32, exact.
float f16_to_f32(uint16_t h);

// ---- quantisation ----------------------------------------------------------------------------------

struct Quantized {
  int64_t K = 0, N = 0;
  std::vector<uint8_t> q;        // [K][N], 0..15
  std::vector<uint16_t> scales;  // [K/128][N], fp16 bits, unpermuted
};

struct QuantOptions {
  // false: plain round-to-nearest with xmax = max|w| over the group.
  // true: also try xmax' = p * xmax for p = 1 - i/grid, i in [0, max_shrink*grid), and keep the p with
  // the smallest squared group error sum (w - What)^2 (GPTQ Quantizer.find_params(mse=True), with
  // norm 2 instead of 2.4). p = 1 comes first and only a strictly smaller error replaces it, so the
  // search never does worse than RTN.
  bool clip_search = false;
  int grid = 100;
  float max_shrink = 0.8f;
};

// Symmetric 4-bit quantisation of w_hf, the nn.Linear weight [N][K] (row n = output feature).
// Per output column n and group g (k in [128g, 128g+128)):
//   xmax = max(|min_k w|, max_k w) (0 is included, as in GPTQ); xmax == 0 -> xmax = 1
//   s    = fp16(2 * xmax / 15)   (round to nearest even; a scale that would round to 0 becomes the
//                                 smallest subnormal 2^-24, one that overflows throws)
//   q    = clamp(round_half_even(w / s) + 8, 0, 15), computed with the stored fp16 s
// Representable values are (-8..7) * s. Throws on non-finite w or K % 128 != 0.
Quantized quantize(const float* w_hf, int64_t N, int64_t K, const QuantOptions& opt = {});
inline Quantized quantize_rtn(const float* w_hf, int64_t N, int64_t K) { return quantize(w_hf, N, K, {}); }

// What[k][n] = (q[k][n] - 8) * s[k/128][n] in fp32 (exact: an fp16 times an integer in -8..7),
// returned as [K][N].
std::vector<float> dequantize(const Quantized& qw);

// ---- AutoGPTQ format -------------------------------------------------------------------------------

struct GptqConfig {  // the quantization_config fields CPM.cu's converter checks
  int bits = 4;
  int group_size = 128;
  bool sym = true;
  bool desc_act = false;
};

struct GptqWeight {
  int64_t K = 0, N = 0;
  std::vector<int32_t> qweight;  // [K/8][N]
  std::vector<uint16_t> scales;  // [K/128][N] fp16 bits
  std::vector<int32_t> qzeros;   // [K/128][N/8] all nibbles 7; may be empty (Marlin ignores it)
  std::vector<int32_t> g_idx;    // [K] = k/128; may be empty (no act-order information given)
};

// Throws unless bits == 4, group_size == 128, sym and !desc_act.
void validate_gptq_config(const GptqConfig& cfg);
// Throws unless cfg is valid, K % 128 == 0, N % 8 == 0, the vectors have the sizes above, every
// qzeros nibble is 7 and g_idx[k] == k / 128 (a permuted g_idx is act-order).
void validate_gptq(const GptqWeight& w, const GptqConfig& cfg = {});

// qweight[i][n] = sum_j q[8i+j][n] << 4j, for q [K][N].
std::vector<int32_t> pack_gptq_qweight(const uint8_t* q, int64_t K, int64_t N);
// Inverse: q[k][n] = (qweight[k/8][n] >> 4(k%8)) & 15, returned as [K][N].
std::vector<uint8_t> unpack_gptq_qweight(const int32_t* qweight, int64_t K, int64_t N);
// [K/128][N/8] int32 with every nibble 7 (0x77777777): the v1 encoding of zero point 8.
std::vector<int32_t> make_gptq_qzeros(int64_t K, int64_t N);
// [K] with g_idx[k] = k / 128.
std::vector<int32_t> make_gptq_g_idx(int64_t K);

// Quantized -> AutoGPTQ tensors (with qzeros and g_idx filled in).
GptqWeight to_gptq(const Quantized& qw);
// AutoGPTQ tensors -> Quantized; validates first.
Quantized from_gptq(const GptqWeight& w, const GptqConfig& cfg = {});

// ---- Marlin layout ---------------------------------------------------------------------------------

struct MarlinWeight {
  int64_t K = 0, N = 0;
  std::vector<int32_t> qweight;  // [K/16][2N]
  std::vector<uint16_t> scales;  // [K/128][N] fp16 bits, permuted
};

// Throws unless K > 0, N > 0, K % 128 == 0 and N % 64 == 0.
void validate_marlin_shape(int64_t K, int64_t N);
// Also checks the vector sizes.
void validate_marlin(const MarlinWeight& w);

// The 1024-entry weight permutation of §4.2 (built the way the reference builds it: per lane the 8
// fragment offsets 16*row + col + 8*blk, repeated for 4 n16 tiles at +256, then every 8 reordered by
// the interleave [0,2,4,6,1,3,5,7]).
const std::array<int, 1024>& marlin_perm();
// Scale permutations: grouped, 64 entries, perm[8a+b] = a + 8b; single, 32 entries,
// perm[8a+m] = 2a + off[m]. Permuted scales are s'[chunk + x] = s[chunk + perm[x]].
const std::array<int, 64>& marlin_scale_perm();
const std::array<int, 32>& marlin_scale_perm_single();

// Where the scale of local column nl (0..63) of a 64-column chunk sits inside that chunk of a
// permuted scale row: s[g][64c + nl] == s'[g][64c + idx[nl]]. `single_group` selects the K == 128
// permutation (see the header comment).
const std::array<uint8_t, 64>& marlin_scale_positions(bool single_group);

// Marlin qweight from codes q [K][N], via the permutation (tile, permute each 1024-chunk, pack 8
// consecutive nibbles little-end first): B[r][w] = sum_p P[r][8w+p] << 4p.
std::vector<int32_t> pack_marlin_qweight(const uint8_t* q, int64_t K, int64_t N);
// Inverse, via the closed form (independent of marlin_perm()), returned as q [K][N].
std::vector<uint8_t> unpack_marlin_qweight(const int32_t* qweight, int64_t K, int64_t N);
// Scale permutation (see the header comment for the K == 128 rule) and its inverse, [K/128][N].
std::vector<uint16_t> permute_marlin_scales(const uint16_t* s, int64_t K, int64_t N);
std::vector<uint16_t> unpermute_marlin_scales(const uint16_t* s_perm, int64_t K, int64_t N);

MarlinWeight pack_marlin(const Quantized& qw);
Quantized unpack_marlin(const MarlinWeight& w);
// AutoGPTQ -> Marlin, as gptq2marlin.py does for one (possibly already N-concatenated) matrix:
// validate, unpack qweight, pack Marlin, permute scales. qzeros and g_idx are dropped.
MarlinWeight gptq_to_marlin(const GptqWeight& w, const GptqConfig& cfg = {});

// Quantises w_hf [N][K] (f32) straight into the Marlin layout (qweight [K/16][2N], permuted scales
// [K/128][N]), splitting N over up to `threads` workers (packing commutes with concatenation along N
// at multiples of 64, so each worker packs its own column range). Same codes and scales as
// pack_marlin(quantize(w_hf, N, K, opt)).
MarlinWeight quantize_marlin(const float* w_hf, int64_t N, int64_t K, const QuantOptions& opt, int threads);
// The same for the AutoGPTQ layout (qweight [K/8][N], unpermuted scales; qzeros/g_idx left empty).
GptqWeight quantize_gptq(const float* w_hf, int64_t N, int64_t K, const QuantOptions& opt, int threads);

// ---- CPU reference GEMM ----------------------------------------------------------------------------

// y[m][n] = sum_k x[m][k] * (q[k][n] - 8) * s[k/128][n] for x [M][K] fp32 and y [M][N] fp32, read
// straight from the Marlin layout one 16-row slab at a time (closed form). Each weight is the exact
// fp32 (q-8)*s; products are accumulated in fp32 in ascending k. Scalar code, clarity first.
void gemm_dequant(const float* x, int64_t M, const MarlinWeight& w, float* y);

}  // namespace int4
}  // namespace mcpm
