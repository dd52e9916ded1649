#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace mcpm_test {

// ---- dtype conversions -------------------------------------------------------------------------------

static uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

static float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

uint16_t FloatToBf16(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu) != 0) {
    return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN, sign kept
  }
  uint32_t lsb = (u >> 16) & 1u;
  u += 0x7FFFu + lsb;  // round to nearest, ties to even (overflow carries into inf correctly)
  return static_cast<uint16_t>(u >> 16);
}

float Bf16ToFloat(uint16_t h) { return BitsFloat(static_cast<uint32_t>(h) << 16); }

uint16_t FloatToFp16(float f) {
  const uint32_t u = FloatBits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t exp = (u >> 23) & 0xFFu;
  uint32_t mant = u & 0x007FFFFFu;
  if (exp == 0xFFu) return static_cast<uint16_t>(sign | 0x7C00u | (mant ? 0x0200u : 0u));
  const int e = static_cast<int>(exp) - 127 + 15;  // biased fp16 exponent
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7C00u);  // overflow: infinity
  if (e <= 0) {
    // fp16 subnormal (or zero): value = m * 2^-24 with m = M >> (14 - e), M the 24-bit significand.
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x00800000u;
    const uint32_t shift = static_cast<uint32_t>(14 - e);  // 14..24
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry may round up to inf: correct
  return static_cast<uint16_t>(sign | h);
}

float Fp16ToFloat(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    const float mag = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -mag : mag;
  }
  if (exp == 31) return BitsFloat(sign | 0x7F800000u | (mant << 13));
  return BitsFloat(sign | ((exp + 112u) << 23) | (mant << 13));
}

float RoundToDtype(float f, mcpm_dtype dtype) {
  switch (dtype) {
    case MCPM_DTYPE_F16: return Fp16ToFloat(FloatToFp16(f));
    case MCPM_DTYPE_BF16: return Bf16ToFloat(FloatToBf16(f));
    default: return f;
  }
}

size_t DtypeSize(mcpm_dtype dtype) {
  switch (dtype) {
    case MCPM_DTYPE_F32: return 4;
    case MCPM_DTYPE_F16: return 2;
    case MCPM_DTYPE_BF16: return 2;
    default: return 0;
  }
}

const char* DtypeName(mcpm_dtype dtype) {
  switch (dtype) {
    case MCPM_DTYPE_F32: return "f32";
    case MCPM_DTYPE_F16: return "f16";
    case MCPM_DTYPE_BF16: return "bf16";
    default: return "?";
  }
}

std::vector<uint8_t> EncodeTensor(const std::vector<float>& values, mcpm_dtype dtype) {
  std::vector<uint8_t> bytes(values.size() * DtypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == MCPM_DTYPE_F32) {
      std::memcpy(&bytes[4 * i], &values[i], 4);
    } else {
      const uint16_t h = dtype == MCPM_DTYPE_F16 ? FloatToFp16(values[i]) : FloatToBf16(values[i]);
      std::memcpy(&bytes[2 * i], &h, 2);
    }
  }
  return bytes;
}

// ---- status assertions ------------------------------------------------------------------------------

::testing::AssertionResult IsOk(const char* expr, mcpm_status s) {
  if (s == MCPM_OK) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << expr << " returned " << s << " (" << mcpm_status_string(s)
                                       << "): " << mcpm_last_error();
}

::testing::AssertionResult HasStatus(const char* expr, const char* expected_expr, mcpm_status s,
                                     mcpm_status expected) {
  if (s != expected) {
    auto r = ::testing::AssertionFailure();
    r << expr << " returned " << s << " (" << mcpm_status_string(s) << "), expected " << expected_expr
      << " = " << expected << " (" << mcpm_status_string(expected) << ")";
    if (s != MCPM_OK) r << "; last error: " << mcpm_last_error();
    return r;
  }
  if (s != MCPM_OK) {
    const char* msg = mcpm_last_error();
    if (msg == nullptr || msg[0] == '\0') {
      return ::testing::AssertionFailure() << expr << " failed as expected but mcpm_last_error() is empty";
    }
  }
  return ::testing::AssertionSuccess();
}

// ---- backends -----------------------------------------------------------------------------------------

mcpm_backend PrimaryBackend() {
  const char* env = std::getenv("MCPM_TEST_BACKEND");
  if (env == nullptr) return MCPM_BACKEND_CPU;
  const std::string s(env);
  if (s == "cuda" || s == "CUDA") return MCPM_BACKEND_CUDA;
  if (s == "auto" || s == "AUTO") return MCPM_BACKEND_AUTO;
  return MCPM_BACKEND_CPU;
}

std::vector<mcpm_backend> CompiledBackends() {
  std::vector<mcpm_backend> out{MCPM_BACKEND_CPU};
  mcpm_build_info info{};
  info.struct_size = sizeof info;
  if (mcpm_get_build_info(&info) == MCPM_OK && (info.backends & MCPM_BACKEND_FLAG_CUDA)) {
    out.push_back(MCPM_BACKEND_CUDA);
  }
  return out;
}

const char* BackendName(mcpm_backend b) {
  switch (b) {
    case MCPM_BACKEND_AUTO: return "auto";
    case MCPM_BACKEND_CPU: return "cpu";
    case MCPM_BACKEND_CUDA: return "cuda";
    default: return "?";
  }
}

// ---- CUDA ----------------------------------------------------------------------------------------------

const std::string& CudaUnavailableReason() {
  static const std::string reason = [] {
    mcpm_build_info info{};
    info.struct_size = sizeof info;
    if (mcpm_get_build_info(&info) != MCPM_OK || !(info.backends & MCPM_BACKEND_FLAG_CUDA))
      return std::string("the CUDA backend is not compiled into this library");
    mcpm_model_config c{};
    c.struct_size = sizeof c;
    mcpm_model_config_default(&c);
    mcpm_model_options o{};
    o.struct_size = sizeof o;
    mcpm_model_options_default(&o);
    o.backend = MCPM_BACKEND_CUDA;
    const char* dev = std::getenv("MCPM_TEST_CUDA_DEVICE");
    o.device_index = dev ? std::atoi(dev) : 0;
    mcpm_model* m = nullptr;
    const mcpm_status s = mcpm_model_create(&c, &o, &m);
    if (s != MCPM_OK) return std::string(mcpm_status_string(s)) + ": " + mcpm_last_error();
    mcpm_model_free(m);
    return std::string();
  }();
  return reason;
}

bool CudaRequired() {
  const char* env = std::getenv("MCPM_REQUIRE_CUDA");
  return env != nullptr && std::string(env) == "1";
}

bool OnEmulatedCuda() {
  static const bool emulated = [] {
    mcpm_build_info info{};
    info.struct_size = sizeof info;
    return mcpm_get_build_info(&info) == MCPM_OK && info.cuda_archs != nullptr &&
           std::string(info.cuda_archs).rfind("emulated", 0) == 0;
  }();
  return emulated && EffectiveBackend(PrimaryBackend()) == MCPM_BACKEND_CUDA;
}

mcpm_backend EffectiveBackend(mcpm_backend b) {
  if (b == MCPM_BACKEND_AUTO) return CudaUnavailableReason().empty() ? MCPM_BACKEND_CUDA : MCPM_BACKEND_CPU;
  return b;
}

double RefTolerance(mcpm_backend b) { return EffectiveBackend(b) == MCPM_BACKEND_CUDA ? 1e-2 : 2e-3; }

double PathTolerance(mcpm_backend b) { return EffectiveBackend(b) == MCPM_BACKEND_CUDA ? 1e-2 : 1e-4; }

// ---- TinyModel ----------------------------------------------------------------------------------------

TinyModel::TinyModel(const TinyConfig& cfg) : cfg_(cfg) {
  std::mt19937_64 rng(cfg.seed * 0x9E3779B97F4A7C15ull + 12345u);
  const int64_t H = cfg.hidden, D = cfg.head_dim, I = cfg.intermediate, V = cfg.vocab;
  const int64_t QD = static_cast<int64_t>(cfg.heads) * D, KVD = static_cast<int64_t>(cfg.kv_heads) * D;
  const float in_h = 1.0f / std::sqrt(static_cast<float>(H));
  // Gains: q/k larger so attention is clearly non-uniform (score std ~2), the rest keep activations O(1).
  AddTensor("model.embed_tokens.weight", {V, H}, -1.0f, 1.0f, rng);
  for (int l = 0; l < cfg.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    AddTensor(p + "input_layernorm.weight", {H}, 0.5f, 1.5f, rng);
    AddTensor(p + "self_attn.q_proj.weight", {QD, H}, -2.5f * in_h, 2.5f * in_h, rng);
    AddTensor(p + "self_attn.k_proj.weight", {KVD, H}, -2.5f * in_h, 2.5f * in_h, rng);
    AddTensor(p + "self_attn.v_proj.weight", {KVD, H}, -1.7f * in_h, 1.7f * in_h, rng);
    const float in_o = 1.7f / std::sqrt(static_cast<float>(QD));
    AddTensor(p + "self_attn.o_proj.weight", {H, QD}, -in_o, in_o, rng);
    AddTensor(p + "post_attention_layernorm.weight", {H}, 0.5f, 1.5f, rng);
    AddTensor(p + "mlp.gate_proj.weight", {I, H}, -1.7f * in_h, 1.7f * in_h, rng);
    AddTensor(p + "mlp.up_proj.weight", {I, H}, -1.7f * in_h, 1.7f * in_h, rng);
    const float in_d = 1.7f / std::sqrt(static_cast<float>(I));
    AddTensor(p + "mlp.down_proj.weight", {H, I}, -in_d, in_d, rng);
  }
  AddTensor("model.norm.weight", {H}, 0.5f, 1.5f, rng);
  if (!cfg.tied) AddTensor("lm_head.weight", {V, H}, -1.0f, 1.0f, rng);

  if (cfg.longrope) {
    std::uniform_real_distribution<float> fac(1.0f, 4.0f);
    short_factor_.resize(static_cast<size_t>(cfg.head_dim / 2));
    long_factor_.resize(static_cast<size_t>(cfg.head_dim / 2));
    for (auto& f : short_factor_) f = fac(rng);
    for (auto& f : long_factor_) f = fac(rng);
  }
}

void TinyModel::AddTensor(const std::string& name, std::vector<int64_t> shape, float lo, float hi,
                          std::mt19937_64& rng) {
  HostTensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.dtype = cfg_.mixed_dtypes ? static_cast<mcpm_dtype>(tensors_.size() % 3) : cfg_.dtype;
  size_t n = 1;
  for (int64_t d : t.shape) n *= static_cast<size_t>(d);
  std::uniform_real_distribution<float> dist(lo, hi);
  t.values.resize(n);
  for (auto& v : t.values) {
    float x = dist(rng);
    if (x == 0.0f) x = 0.5f * hi;  // never store exact zeros
    v = RoundToDtype(x, t.dtype);
  }
  t.bytes = EncodeTensor(t.values, t.dtype);
  tensors_.push_back(std::move(t));
}

mcpm_model_config TinyModel::ApiConfig() const {
  mcpm_model_config c{};
  c.struct_size = sizeof c;
  mcpm_model_config_default(&c);
  c.struct_size = sizeof c;
  c.vocab_size = cfg_.vocab;
  c.hidden_size = cfg_.hidden;
  c.num_layers = cfg_.layers;
  c.num_heads = cfg_.heads;
  c.num_kv_heads = cfg_.kv_heads;
  c.head_dim = cfg_.head_dim;
  c.intermediate_size = cfg_.intermediate;
  c.max_position_embeddings = cfg_.max_position_embeddings;
  c.rms_norm_eps = cfg_.rms_norm_eps;
  c.rope_theta = cfg_.rope_theta;
  if (cfg_.longrope) {
    c.rope_scaling = MCPM_ROPE_SCALING_LONGROPE;
    c.rope_short_factor = short_factor_.data();
    c.rope_long_factor = long_factor_.data();
    c.rope_factor_count = cfg_.head_dim / 2;
    c.original_max_position_embeddings = cfg_.original_max_position_embeddings;
  } else {
    c.rope_scaling = MCPM_ROPE_SCALING_NONE;
    c.rope_short_factor = nullptr;
    c.rope_long_factor = nullptr;
    c.rope_factor_count = 0;
    c.original_max_position_embeddings = cfg_.original_max_position_embeddings;
  }
  c.scale_emb = cfg_.scale_emb;
  c.scale_depth = cfg_.scale_depth;
  c.dim_model_base = cfg_.dim_model_base;
  c.tie_word_embeddings = cfg_.tied ? 1 : 0;
  if (cfg_.sparse_dense_len != 0) {
    c.sparse_enabled = 1;
    c.sparse_kernel_size = 8, c.sparse_kernel_stride = 4, c.sparse_init_blocks = 1, c.sparse_block_size = 16;
    c.sparse_window_size = 32, c.sparse_topk = cfg_.sparse_topk, c.sparse_dense_len = cfg_.sparse_dense_len;
    c.sparse_use_nope = 0;
  }
  return c;
}

const HostTensor& TinyModel::tensor(const std::string& name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return t;
  }
  std::fprintf(stderr, "TinyModel: no tensor named %s\n", name.c_str());
  std::abort();
}

uint64_t TinyModel::TotalBytes() const {
  uint64_t total = 0;
  for (const auto& t : tensors_) total += t.bytes.size();
  return total;
}

uint64_t TinyModel::ArenaBytes(bool int4) const {
  auto footprint = [](uint64_t bytes) { return (bytes + 255) / 256 * 256; };
  uint64_t total = 0;
  for (const HostTensor& t : tensors_) {
    if (int4 && IsLinearWeight(t.name)) {
      const uint64_t N = static_cast<uint64_t>(t.shape[0]), K = static_cast<uint64_t>(t.shape[1]);
      total += footprint(K / 16 * 2 * N * 4) + footprint(K / 128 * N * 2);
    } else {
      total += footprint(t.bytes.size());
    }
  }
  return total;
}

mcpm_status TinyModel::Create(ModelPtr* out, mcpm_backend backend, int32_t num_threads, uint64_t weight_arena_bytes,
                              mcpm_cpu_precision precision) const {
  const mcpm_model_config c = ApiConfig();
  mcpm_model_options o{};
  o.struct_size = sizeof o;
  mcpm_model_options_default(&o);
  o.backend = backend;
  o.num_threads = num_threads;
  o.weight_arena_bytes = weight_arena_bytes;
  o.cpu_precision = precision;
  if (const char* dev = std::getenv("MCPM_TEST_CUDA_DEVICE")) o.device_index = std::atoi(dev);
  mcpm_model* m = nullptr;
  const mcpm_status s = mcpm_model_create(&c, &o, &m);
  if (s == MCPM_OK) out->reset(m);
  return s;
}

mcpm_status TinyModel::SetTensor(mcpm_model* model, const HostTensor& t) const {
  return mcpm_model_set_tensor(model, t.name.c_str(), t.dtype, t.shape.data(), static_cast<int32_t>(t.shape.size()),
                               t.bytes.data(), t.bytes.size());
}

mcpm_status TinyModel::SetAll(mcpm_model* model, const std::string& skip) const {
  for (const auto& t : tensors_) {
    if (t.name == skip) continue;
    const mcpm_status s = SetTensor(model, t);
    if (s != MCPM_OK) return s;
  }
  return MCPM_OK;
}

mcpm_status TinyModel::SetAllInt4(mcpm_model* model) const {
  const SetTensorFn set = [model](const char* name, mcpm_dtype dt, const int64_t* shape, int32_t ndim,
                                  const void* data, size_t size) {
    return mcpm_model_set_tensor(model, name, dt, shape, ndim, data, size);
  };
  for (const auto& t : tensors_) {
    const mcpm_status s = IsLinearWeight(t.name) ? SetInt4(set, t) : SetTensor(model, t);
    if (s != MCPM_OK) return s;
  }
  return MCPM_OK;
}

ModelPtr TinyModel::Load(mcpm_backend backend, mcpm_status* status, int32_t num_threads, bool int4,
                         mcpm_cpu_precision precision) const {
  ModelPtr m;
  mcpm_status s = Create(&m, backend, num_threads, 0, precision);
  if (s == MCPM_OK) s = int4 ? SetAllInt4(m.get()) : SetAll(m.get());
  if (s == MCPM_OK) s = mcpm_model_finalize(m.get());
  if (status) *status = s;
  if (s != MCPM_OK) {
    ADD_FAILURE() << "loading tiny model on backend " << BackendName(backend) << " failed: " << s << " ("
                  << mcpm_status_string(s) << "): " << mcpm_last_error();
    return nullptr;
  }
  return m;
}

std::vector<int32_t> TinyModel::RandomTokens(int n, uint64_t seed) const {
  std::mt19937_64 rng(seed + 777u);
  std::uniform_int_distribution<int32_t> dist(0, cfg_.vocab - 1);
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (auto& t : out) t = dist(rng);
  return out;
}

Int4Tensors QuantizeInt4(const HostTensor& t, mcpm_int4_layout layout, bool clip) {
  Int4Tensors out;
  if (t.shape.size() != 2) {
    ADD_FAILURE() << "QuantizeInt4: " << t.name << " is not a matrix";
    return out;
  }
  const int64_t N = t.shape[0], K = t.shape[1];
  out.qweight.resize(static_cast<size_t>(layout == MCPM_INT4_LAYOUT_MARLIN ? K / 16 * 2 * N : K / 8 * N));
  out.scales.resize(static_cast<size_t>(K / 128 * N));
  mcpm_int4_quantize_params p{};
  p.struct_size = sizeof p;
  mcpm_int4_quantize_params_default(&p);
  p.layout = layout;
  p.clip_search = clip ? 1 : 0;
  p.num_threads = 2;
  const mcpm_status s = mcpm_int4_quantize(t.dtype, t.bytes.data(), t.bytes.size(), N, K, &p, out.qweight.data(),
                                           out.qweight.size() * 4, out.scales.data(), out.scales.size() * 2);
  if (s != MCPM_OK) {
    ADD_FAILURE() << "mcpm_int4_quantize(" << t.name << "): " << mcpm_last_error();
    return Int4Tensors{};
  }
  return out;
}

bool IsLinearWeight(const std::string& name) {
  static const char* const kLinears[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                         "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                         "mlp.gate_proj.weight",    "mlp.up_proj.weight",
                                         "mlp.down_proj.weight"};
  for (const char* l : kLinears) {
    const std::string suffix(l);
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        name[name.size() - suffix.size() - 1] == '.')
      return true;
  }
  return false;
}

std::string LinearName(const std::string& weight_name, const char* suffix) {
  return weight_name.substr(0, weight_name.size() - std::string(".weight").size()) + suffix;
}

mcpm_status SetInt4(const SetTensorFn& set, const HostTensor& t) {
  const Int4Tensors q = QuantizeInt4(t);
  if (q.qweight.empty()) return MCPM_ERR_INVALID_ARGUMENT;
  const int64_t N = t.shape[0], K = t.shape[1];
  const int64_t qshape[2] = {K / 16, 2 * N}, sshape[2] = {K / 128, N};
  mcpm_status s = set(LinearName(t.name, ".qweight").c_str(), MCPM_DTYPE_I32, qshape, 2, q.qweight.data(),
                      q.qweight.size() * 4);
  if (s == MCPM_OK)
    s = set(LinearName(t.name, ".scales").c_str(), MCPM_DTYPE_F16, sshape, 2, q.scales.data(), q.scales.size() * 2);
  return s;
}

SessionPtr MakeSession(mcpm_model* model, int32_t capacity, int32_t prefill_chunk) {
  mcpm_session_params p{};
  p.struct_size = sizeof p;
  mcpm_status s = mcpm_session_params_default(&p);
  if (s != MCPM_OK) {
    ADD_FAILURE() << "mcpm_session_params_default failed: " << mcpm_last_error();
    return nullptr;
  }
  if (capacity > 0) p.context_capacity = capacity;
  if (prefill_chunk > 0) p.prefill_chunk = prefill_chunk;
  mcpm_session* sess = nullptr;
  s = mcpm_session_create(model, &p, &sess);
  if (s != MCPM_OK) {
    ADD_FAILURE() << "mcpm_session_create failed: " << s << " (" << mcpm_status_string(s)
                  << "): " << mcpm_last_error();
    return nullptr;
  }
  return SessionPtr(sess);
}

// ---- numeric helpers ----------------------------------------------------------------------------------

double MaxAbsDiff(const float* a, const float* b, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (!(d <= m)) m = d;  // NaN propagates as the max
  }
  return m;
}

double MaxAbsDiff(const float* a, const double* b, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= m)) m = d;
  }
  return m;
}

double MaxAbs(const float* a, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(static_cast<double>(a[i])));
  return m;
}

double MaxAbs(const double* a, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i]));
  return m;
}

double ChiSquareCritical999(int k) {
  const double z = 3.090232306167813;  // standard normal 0.999 quantile
  const double a = 2.0 / (9.0 * k);
  const double c = 1.0 - a + z * std::sqrt(a);
  return k * c * c * c;
}

int32_t ArgMax(const float* v, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; ++i) {
    if (v[i] > v[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

int32_t SessionLength(const mcpm_session* s) {
  int32_t len = -1;
  const mcpm_status st = mcpm_session_length(s, &len);
  if (st != MCPM_OK) {
    ADD_FAILURE() << "mcpm_session_length failed: " << mcpm_last_error();
    return -1;
  }
  return len;
}

std::vector<int32_t> SessionTokens(const mcpm_session* s) {
  int32_t count = -1;
  mcpm_status st = mcpm_session_tokens(s, nullptr, 0, &count);
  if (st != MCPM_OK || count < 0) {
    ADD_FAILURE() << "mcpm_session_tokens (count query) failed: " << mcpm_last_error();
    return {};
  }
  std::vector<int32_t> out(static_cast<size_t>(count));
  int32_t count2 = -1;
  st = mcpm_session_tokens(s, out.data(), count, &count2);
  if (st != MCPM_OK || count2 != count) {
    ADD_FAILURE() << "mcpm_session_tokens failed or changed count: " << mcpm_last_error();
    return {};
  }
  return out;
}

std::pair<mcpm_status, std::string> CallOnFreshThread(const std::function<mcpm_status()>& fn) {
  mcpm_status status = MCPM_OK;
  std::string message;
  std::thread t([&] {
    status = fn();
    const char* m = mcpm_last_error();
    message = m ? m : "<NULL>";
  });
  t.join();
  return {status, message};
}

}  // namespace mcpm_test
