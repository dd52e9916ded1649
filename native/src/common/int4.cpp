#include "common/int4.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>

#include "common/dtype.h"

namespace mcpm {
namespace int4 {

namespace {

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument("int4: " + what); }

void require_quant_k(int64_t K) {
  if (K <= 0 || K % kGroupSize != 0)
    fail("K must be a positive multiple of the group size 128 (got K=" + std::to_string(K) + ")");
}

void require_size(const char* name, size_t got, int64_t want) {
  if (static_cast<int64_t>(got) != want)
    fail(std::string(name) + " has " + std::to_string(got) + " elements, expected " + std::to_string(want));
}

// The nibble order inside one Marlin int32: nibble p holds fragment element kInterleave[p].
constexpr int kInterleave[8] = {0, 2, 4, 6, 1, 3, 5, 7};

// One quantised group: the codes of `count` weights w[0], w[stride], ... with fp16 scale `s16` and
// the squared error of the reconstruction, in double.
double quantize_group(const float* w, int64_t stride, int count, uint16_t s16, uint8_t* q_out, int64_t q_stride) {
  const float s = f16_to_f32(s16);
  double err = 0.0;
  for (int t = 0; t < count; ++t) {
    const float v = w[t * stride];
    // nearbyint rounds half to even under the default rounding mode, as torch.round does.
    const float r = std::nearbyint(v / s) + static_cast<float>(kZeroPoint);
    const int q = static_cast<int>(std::min(15.0f, std::max(0.0f, r)));
    if (q_out) q_out[t * q_stride] = static_cast<uint8_t>(q);
    const double d = static_cast<double>(v) - static_cast<double>(q - kZeroPoint) * static_cast<double>(s);
    err += d * d;
  }
  return err;
}

// fp16 scale for a group whose (possibly shrunk) magnitude is xmax: fp16(2*xmax/15), never 0.
uint16_t scale_for(float xmax) {
  uint16_t s16 = f32_to_f16(2.0f * xmax / 15.0f);
  if ((s16 & 0x7fffu) == 0x7c00u) fail("group magnitude too large for an fp16 scale");
  if (s16 == 0) s16 = 0x0001;  // 2^-24: keeps w / s finite for vanishingly small groups
  return s16;
}

}  // namespace

// ---- fp16 ------------------------------------------------------------------------------------------

uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (a >= 0x38800000u) {
    // Normal fp16 (>= 2^-14): rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10
    // bits, half to even; a mantissa carry correctly bumps the exponent.
    const uint32_t rebased = a - (112u << 23);
    const uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
    return static_cast<uint16_t>(sign | (rounded >> 13));
  }
  // Subnormal fp16: the value in units of 2^-24, rounded half to even (scaling by 2^24 is exact).
  // 1024 units is the smallest normal, whose encoding is also 0x0400.
  const float units = std::nearbyint(bits_to_f32(a) * 16777216.0f);
  return static_cast<uint16_t>(sign | static_cast<uint16_t>(units));
}

float f16_to_f32(uint16_t h) { return ::mcpm::f16_to_f32(h); }

// ---- quantisation ----------------------------------------------------------------------------------

Quantized quantize(const float* w_hf, int64_t N, int64_t K, const QuantOptions& opt) {
  require_quant_k(K);
  if (N <= 0) fail("N must be positive");
  if (opt.clip_search && (opt.grid <= 0 || !(opt.max_shrink > 0.0f) || opt.max_shrink > 1.0f))
    fail("clip search needs grid > 0 and max_shrink in (0, 1]");
  const int64_t G = K / kGroupSize;
  Quantized out;
  out.K = K;
  out.N = N;
  out.q.assign(static_cast<size_t>(K * N), 0);
  out.scales.assign(static_cast<size_t>(G * N), 0);
  const int steps = opt.clip_search ? static_cast<int>(opt.max_shrink * static_cast<float>(opt.grid)) : 1;

  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      // The group is w_hf[n][128g .. 128g+127] (contiguous); its codes go to q[128g + t][n].
      const float* w = w_hf + n * K + g * kGroupSize;
      uint8_t* q = out.q.data() + g * kGroupSize * N + n;
      float lo = 0.0f, hi = 0.0f;
      for (int t = 0; t < kGroupSize; ++t) {
        if (!std::isfinite(w[t])) fail("weights must be finite");
        lo = std::min(lo, w[t]);
        hi = std::max(hi, w[t]);
      }
      float xmax = std::max(-lo, hi);
      if (xmax == 0.0f) xmax = 1.0f;  // all-zero group: xmin = -1, xmax = 1, so s = 2/15 and q = 8

      uint16_t best_s = scale_for(xmax);
      double best_err = quantize_group(w, 1, kGroupSize, best_s, nullptr, 0);
      for (int i = 1; i < steps; ++i) {
        const float p = 1.0f - static_cast<float>(i) / static_cast<float>(opt.grid);
        const uint16_t s = scale_for(p * xmax);
        const double err = quantize_group(w, 1, kGroupSize, s, nullptr, 0);
        if (err < best_err) {
          best_err = err;
          best_s = s;
        }
      }
      out.scales[static_cast<size_t>(g * N + n)] = best_s;
      quantize_group(w, 1, kGroupSize, best_s, q, N);
    }
  }
  return out;
}

std::vector<float> dequantize(const Quantized& qw) {
  require_quant_k(qw.K);
  require_size("q", qw.q.size(), qw.K * qw.N);
  require_size("scales", qw.scales.size(), qw.K / kGroupSize * qw.N);
  std::vector<float> w(static_cast<size_t>(qw.K * qw.N));
  for (int64_t k = 0; k < qw.K; ++k)
    for (int64_t n = 0; n < qw.N; ++n) {
      const float s = f16_to_f32(qw.scales[static_cast<size_t>(k / kGroupSize * qw.N + n)]);
      w[static_cast<size_t>(k * qw.N + n)] = static_cast<float>(qw.q[static_cast<size_t>(k * qw.N + n)] - kZeroPoint) * s;
    }
  return w;
}

// ---- AutoGPTQ format -------------------------------------------------------------------------------

void validate_gptq_config(const GptqConfig& cfg) {
  if (cfg.bits != kBits) fail("only 4-bit GPTQ weights are supported (bits=" + std::to_string(cfg.bits) + ")");
  if (cfg.group_size != kGroupSize)
    fail("only group_size 128 is supported (group_size=" + std::to_string(cfg.group_size) + ")");
  if (!cfg.sym) fail("only symmetric quantisation (sym=true) is supported");
  if (cfg.desc_act) fail("act-order (desc_act=true) is not supported");
}

void validate_gptq(const GptqWeight& w, const GptqConfig& cfg) {
  validate_gptq_config(cfg);
  require_quant_k(w.K);
  if (w.N <= 0 || w.N % 8 != 0) fail("GPTQ N must be a positive multiple of 8 (got N=" + std::to_string(w.N) + ")");
  const int64_t G = w.K / kGroupSize;
  require_size("qweight", w.qweight.size(), w.K / 8 * w.N);
  require_size("scales", w.scales.size(), G * w.N);
  if (!w.qzeros.empty()) {
    require_size("qzeros", w.qzeros.size(), G * w.N / 8);
    for (int32_t z : w.qzeros)
      if (static_cast<uint32_t>(z) != 0x77777777u)
        fail("qzeros must encode zero point 8 (every nibble 7, checkpoint_format gptq); asymmetric or v2 zeros are "
             "not supported");
  }
  if (!w.g_idx.empty()) {
    require_size("g_idx", w.g_idx.size(), w.K);
    for (int64_t k = 0; k < w.K; ++k)
      if (w.g_idx[static_cast<size_t>(k)] != k / kGroupSize)
        fail("g_idx[" + std::to_string(k) + "] != k/128: act-order (desc_act) weights are not supported");
  }
}

std::vector<int32_t> pack_gptq_qweight(const uint8_t* q, int64_t K, int64_t N) {
  if (K <= 0 || K % 8 != 0 || N <= 0) fail("GPTQ packing needs K a positive multiple of 8 and N > 0");
  std::vector<int32_t> out(static_cast<size_t>(K / 8 * N));
  for (int64_t i = 0; i < K / 8; ++i)
    for (int64_t n = 0; n < N; ++n) {
      uint32_t word = 0;
      for (int j = 0; j < 8; ++j) word |= (static_cast<uint32_t>(q[(8 * i + j) * N + n]) & 15u) << (4 * j);
      out[static_cast<size_t>(i * N + n)] = static_cast<int32_t>(word);
    }
  return out;
}

std::vector<uint8_t> unpack_gptq_qweight(const int32_t* qweight, int64_t K, int64_t N) {
  if (K <= 0 || K % 8 != 0 || N <= 0) fail("GPTQ unpacking needs K a positive multiple of 8 and N > 0");
  std::vector<uint8_t> q(static_cast<size_t>(K * N));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) {
      const uint32_t word = static_cast<uint32_t>(qweight[k / 8 * N + n]);
      q[static_cast<size_t>(k * N + n)] = static_cast<uint8_t>((word >> (4 * (k % 8))) & 15u);
    }
  return q;
}

std::vector<int32_t> make_gptq_qzeros(int64_t K, int64_t N) {
  require_quant_k(K);
  if (N <= 0 || N % 8 != 0) fail("GPTQ N must be a positive multiple of 8");
  return std::vector<int32_t>(static_cast<size_t>(K / kGroupSize * N / 8), static_cast<int32_t>(0x77777777));
}

std::vector<int32_t> make_gptq_g_idx(int64_t K) {
  std::vector<int32_t> g(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) g[static_cast<size_t>(k)] = static_cast<int32_t>(k / kGroupSize);
  return g;
}

GptqWeight to_gptq(const Quantized& qw) {
  require_quant_k(qw.K);
  require_size("q", qw.q.size(), qw.K * qw.N);
  require_size("scales", qw.scales.size(), qw.K / kGroupSize * qw.N);
  GptqWeight w;
  w.K = qw.K;
  w.N = qw.N;
  w.qweight = pack_gptq_qweight(qw.q.data(), qw.K, qw.N);
  w.scales = qw.scales;
  w.qzeros = make_gptq_qzeros(qw.K, qw.N);
  w.g_idx = make_gptq_g_idx(qw.K);
  return w;
}

Quantized from_gptq(const GptqWeight& w, const GptqConfig& cfg) {
  validate_gptq(w, cfg);
  Quantized qw;
  qw.K = w.K;
  qw.N = w.N;
  qw.q = unpack_gptq_qweight(w.qweight.data(), w.K, w.N);
  qw.scales = w.scales;
  return qw;
}

// ---- Marlin layout ---------------------------------------------------------------------------------

void validate_marlin_shape(int64_t K, int64_t N) {
  if (K <= 0 || K % kGroupSize != 0)
    fail("Marlin K must be a positive multiple of 128 (got K=" + std::to_string(K) + ")");
  if (N <= 0 || N % kMarlinMinN != 0)
    fail("Marlin N must be a positive multiple of 64 (got N=" + std::to_string(N) + ")");
}

void validate_marlin(const MarlinWeight& w) {
  validate_marlin_shape(w.K, w.N);
  require_size("Marlin qweight", w.qweight.size(), w.K / kTile * 2 * w.N);
  require_size("Marlin scales", w.scales.size(), w.K / kGroupSize * w.N);
}

const std::array<int, 1024>& marlin_perm() {
  static const std::array<int, 1024> perm = [] {
    std::array<int, 1024> raw{};
    int idx = 0;
    for (int i = 0; i < 32; ++i) {  // lane
      const int t = i % 4, col = i / 4;
      int base[8];
      int e = 0;
      for (int blk = 0; blk < 2; ++blk)
        for (int row : {2 * t, 2 * t + 1, 2 * t + 8, 2 * t + 9}) base[e++] = 16 * row + col + 8 * blk;
      for (int j = 0; j < 4; ++j)
        for (int b : base) raw[idx++] = b + 256 * j;
    }
    std::array<int, 1024> p{};
    for (int g = 0; g < 128; ++g)
      for (int x = 0; x < 8; ++x) p[8 * g + x] = raw[8 * g + kInterleave[x]];
    return p;
  }();
  return perm;
}

const std::array<int, 64>& marlin_scale_perm() {
  static const std::array<int, 64> perm = [] {
    std::array<int, 64> p{};
    for (int a = 0; a < 8; ++a)
      for (int b = 0; b < 8; ++b) p[8 * a + b] = a + 8 * b;
    return p;
  }();
  return perm;
}

const std::array<int, 32>& marlin_scale_perm_single() {
  static const std::array<int, 32> perm = [] {
    constexpr int off[8] = {0, 1, 8, 9, 16, 17, 24, 25};
    std::array<int, 32> p{};
    for (int a = 0; a < 4; ++a)
      for (int m = 0; m < 8; ++m) p[8 * a + m] = 2 * a + off[m];
    return p;
  }();
  return perm;
}

std::vector<int32_t> pack_marlin_qweight(const uint8_t* q, int64_t K, int64_t N) {
  validate_marlin_shape(K, N);
  const std::array<int, 1024>& perm = marlin_perm();
  const int64_t row_len = 16 * N;  // nibbles per 16-row slab
  std::vector<int32_t> out(static_cast<size_t>(K / kTile * 2 * N));
  std::vector<uint8_t> T(static_cast<size_t>(row_len));
  for (int64_t r = 0; r < K / kTile; ++r) {
    // Step 1, tile: T[nt*256 + ki*16 + ni] = q[16r + ki][16nt + ni].
    for (int64_t nt = 0; nt < N / kTile; ++nt)
      for (int ki = 0; ki < kTile; ++ki)
        for (int ni = 0; ni < kTile; ++ni)
          T[static_cast<size_t>(nt * 256 + ki * 16 + ni)] = q[(16 * r + ki) * N + 16 * nt + ni];
    // Steps 2 and 3: P[x] = T[1024*(x/1024) + perm[x%1024]]; word w packs P[8w .. 8w+7], low nibble first.
    int32_t* B = out.data() + r * 2 * N;
    for (int64_t w = 0; w < 2 * N; ++w) {
      uint32_t word = 0;
      for (int p = 0; p < 8; ++p) {
        const int64_t x = 8 * w + p;
        word |= (static_cast<uint32_t>(T[static_cast<size_t>(x / 1024 * 1024 + perm[x % 1024])]) & 15u) << (4 * p);
      }
      B[w] = static_cast<int32_t>(word);
    }
  }
  return out;
}

const std::array<uint8_t, 64>& marlin_scale_positions(bool single_group) {
  // s'[base + x] = s[base + perm[x]], so original column perm[x] sits at permuted index x.
  static const std::array<uint8_t, 64> grouped = [] {
    std::array<uint8_t, 64> t{};
    for (int x = 0; x < 64; ++x) t[static_cast<size_t>(marlin_scale_perm()[static_cast<size_t>(x)])] = static_cast<uint8_t>(x);
    return t;
  }();
  static const std::array<uint8_t, 64> single = [] {
    std::array<uint8_t, 64> t{};
    for (int half = 0; half < 2; ++half)
      for (int x = 0; x < 32; ++x)
        t[static_cast<size_t>(32 * half + marlin_scale_perm_single()[static_cast<size_t>(x)])] =
            static_cast<uint8_t>(32 * half + x);
    return t;
  }();
  return single_group ? single : grouped;
}

std::vector<uint8_t> unpack_marlin_qweight(const int32_t* qweight, int64_t K, int64_t N) {
  validate_marlin_shape(K, N);
  std::vector<uint8_t> q(static_cast<size_t>(K * N));
  for (int64_t r = 0; r < K / kTile; ++r)
    for (int64_t c = 0; c < N / 64; ++c)
      for (int i = 0; i < 32; ++i) {
        const int t = i % 4, col = i / 4;
        const int rows[4] = {2 * t, 2 * t + 1, 2 * t + 8, 2 * t + 9};
        for (int j = 0; j < 4; ++j) {
          const uint32_t word = static_cast<uint32_t>(qweight[r * 2 * N + 128 * c + 4 * i + j]);
          for (int p = 0; p < 8; ++p) {
            const int o = kInterleave[p];
            const int64_t k = 16 * r + rows[o % 4];
            const int64_t n = 64 * c + 16 * j + 8 * (o / 4) + col;
            q[static_cast<size_t>(k * N + n)] = static_cast<uint8_t>((word >> (4 * p)) & 15u);
          }
        }
      }
  return q;
}

namespace {
// Applies (inverse=false: s'[base+x] = s[base+perm[x]]) or undoes the scale permutation chunk-wise.
template <size_t L>
std::vector<uint16_t> apply_scale_perm(const uint16_t* s, int64_t count, const std::array<int, L>& perm, bool inverse) {
  std::vector<uint16_t> out(static_cast<size_t>(count));
  for (int64_t base = 0; base < count; base += static_cast<int64_t>(L))
    for (size_t x = 0; x < L; ++x) {
      if (!inverse)
        out[static_cast<size_t>(base) + x] = s[base + perm[x]];
      else
        out[static_cast<size_t>(base + perm[x])] = s[static_cast<size_t>(base) + x];
    }
  return out;
}

std::vector<uint16_t> scale_perm_dispatch(const uint16_t* s, int64_t K, int64_t N, bool inverse) {
  validate_marlin_shape(K, N);
  const int64_t count = K / kGroupSize * N;
  // gptq2marlin.py: grouped permutation iff group_size < size_k (see int4.h).
  if (kGroupSize < K) return apply_scale_perm(s, count, marlin_scale_perm(), inverse);
  return apply_scale_perm(s, count, marlin_scale_perm_single(), inverse);
}
}  // namespace

std::vector<uint16_t> permute_marlin_scales(const uint16_t* s, int64_t K, int64_t N) {
  return scale_perm_dispatch(s, K, N, false);
}

std::vector<uint16_t> unpermute_marlin_scales(const uint16_t* s_perm, int64_t K, int64_t N) {
  return scale_perm_dispatch(s_perm, K, N, true);
}

MarlinWeight pack_marlin(const Quantized& qw) {
  validate_marlin_shape(qw.K, qw.N);
  require_size("q", qw.q.size(), qw.K * qw.N);
  require_size("scales", qw.scales.size(), qw.K / kGroupSize * qw.N);
  MarlinWeight w;
  w.K = qw.K;
  w.N = qw.N;
  w.qweight = pack_marlin_qweight(qw.q.data(), qw.K, qw.N);
  w.scales = permute_marlin_scales(qw.scales.data(), qw.K, qw.N);
  return w;
}

Quantized unpack_marlin(const MarlinWeight& w) {
  validate_marlin(w);
  Quantized qw;
  qw.K = w.K;
  qw.N = w.N;
  qw.q = unpack_marlin_qweight(w.qweight.data(), w.K, w.N);
  qw.scales = unpermute_marlin_scales(w.scales.data(), w.K, w.N);
  return qw;
}

MarlinWeight gptq_to_marlin(const GptqWeight& w, const GptqConfig& cfg) {
  validate_gptq(w, cfg);
  validate_marlin_shape(w.K, w.N);
  MarlinWeight m;
  m.K = w.K;
  m.N = w.N;
  const std::vector<uint8_t> q = unpack_gptq_qweight(w.qweight.data(), w.K, w.N);
  m.qweight = pack_marlin_qweight(q.data(), w.K, w.N);
  m.scales = permute_marlin_scales(w.scales.data(), w.K, w.N);
  return m;
}

// ---- parallel quantisation -------------------------------------------------------------------------

namespace {

// Splits [0, N) into at most `threads` ranges of whole 64-column chunks, runs body(n0, n1, part) on
// each (part = range index) on its own thread, and rethrows the first exception.
template <typename F>
void for_column_ranges(int64_t N, int threads, F&& body) {
  const int64_t chunks = N / kMarlinMinN;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, chunks));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(parts));
  std::vector<std::thread> pool;
  auto run = [&](int64_t part) {
    try {
      const int64_t n0 = chunks * part / parts * kMarlinMinN, n1 = chunks * (part + 1) / parts * kMarlinMinN;
      body(n0, n1, part);
    } catch (...) {
      errors[static_cast<size_t>(part)] = std::current_exception();
    }
  };
  for (int64_t part = 1; part < parts; ++part) pool.emplace_back(run, part);
  run(0);
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

// Copies the columns [0, src_cols) of every row of src into columns [col0, col0 + src_cols) of dst.
template <typename T>
void place_columns(const std::vector<T>& src, int64_t rows, int64_t src_cols, std::vector<T>& dst, int64_t dst_cols,
                   int64_t col0) {
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(dst.data() + r * dst_cols + col0, src.data() + r * src_cols, static_cast<size_t>(src_cols) * sizeof(T));
}

}  // namespace

MarlinWeight quantize_marlin(const float* w_hf, int64_t N, int64_t K, const QuantOptions& opt, int threads) {
  validate_marlin_shape(K, N);
  MarlinWeight out;
  out.K = K;
  out.N = N;
  out.qweight.resize(static_cast<size_t>(K / kTile * 2 * N));
  out.scales.resize(static_cast<size_t>(K / kGroupSize * N));
  for_column_ranges(N, threads, [&](int64_t n0, int64_t n1, int64_t) {
    // Rows n0..n1 of w_hf are output columns n0..n1: quantise and pack them as their own matrix.
    const MarlinWeight part = pack_marlin(quantize(w_hf + n0 * K, n1 - n0, K, opt));
    place_columns(part.qweight, K / kTile, 2 * (n1 - n0), out.qweight, 2 * N, 2 * n0);
    place_columns(part.scales, K / kGroupSize, n1 - n0, out.scales, N, n0);
  });
  return out;
}

GptqWeight quantize_gptq(const float* w_hf, int64_t N, int64_t K, const QuantOptions& opt, int threads) {
  validate_marlin_shape(K, N);
  GptqWeight out;
  out.K = K;
  out.N = N;
  out.qweight.resize(static_cast<size_t>(K / 8 * N));
  out.scales.resize(static_cast<size_t>(K / kGroupSize * N));
  for_column_ranges(N, threads, [&](int64_t n0, int64_t n1, int64_t) {
    const Quantized part = quantize(w_hf + n0 * K, n1 - n0, K, opt);
    place_columns(pack_gptq_qweight(part.q.data(), K, n1 - n0), K / 8, n1 - n0, out.qweight, N, n0);
    place_columns(part.scales, K / kGroupSize, n1 - n0, out.scales, N, n0);
  });
  return out;
}

// ---- CPU reference GEMM ----------------------------------------------------------------------------

void gemm_dequant(const float* x, int64_t M, const MarlinWeight& w, float* y) {
  validate_marlin(w);
  if (M < 0) fail("M must be non-negative");
  const int64_t K = w.K, N = w.N;
  const std::vector<uint16_t> s = unpermute_marlin_scales(w.scales.data(), K, N);  // [K/128][N]
  std::fill(y, y + M * N, 0.0f);
  std::vector<float> slab(static_cast<size_t>(kTile * N));  // What[16r + ki][n]
  for (int64_t r = 0; r < K / kTile; ++r) {
    // Dequantise slab r from its 2N words with the closed form of §4.2.
    const uint16_t* srow = s.data() + (16 * r / kGroupSize) * N;
    for (int64_t c = 0; c < N / 64; ++c)
      for (int i = 0; i < 32; ++i) {
        const int t = i % 4, col = i / 4;
        const int rows[4] = {2 * t, 2 * t + 1, 2 * t + 8, 2 * t + 9};
        for (int j = 0; j < 4; ++j) {
          const uint32_t word = static_cast<uint32_t>(w.qweight[static_cast<size_t>(r * 2 * N + 128 * c + 4 * i + j)]);
          for (int p = 0; p < 8; ++p) {
            const int o = kInterleave[p];
            const int64_t n = 64 * c + 16 * j + 8 * (o / 4) + col;
            const int v = static_cast<int>((word >> (4 * p)) & 15u) - kZeroPoint;
            slab[static_cast<size_t>(rows[o % 4] * N + n)] = static_cast<float>(v) * f16_to_f32(srow[n]);
          }
        }
      }
    // Accumulate y[m][n] += x[m][k] * What[k][n] for the 16 rows of the slab, in ascending k.
    for (int64_t m = 0; m < M; ++m) {
      float* yrow = y + m * N;
      for (int ki = 0; ki < kTile; ++ki) {
        const float xv = x[m * K + 16 * r + ki];
        const float* wrow = slab.data() + ki * N;
        for (int64_t n = 0; n < N; ++n) yrow[n] += xv * wrow[n];
      }
    }
  }
}

}  // namespace int4
}  // namespace mcpm
