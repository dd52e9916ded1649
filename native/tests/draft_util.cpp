#include "draft_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <utility>

namespace mcpm_test {

// Random draft tensors in the MiniCPM4-Eagle layout for a target of config `tc`.
std::vector<HostTensor> DraftTensors(const TinyConfig& tc, const DraftSpec& spec) {
  std::mt19937_64 rng(spec.seed);
  std::vector<HostTensor> out;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float lo, float hi) {
    HostTensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.dtype = tc.dtype;
    size_t n = 1;
    for (int64_t d : t.shape) n *= static_cast<size_t>(d);
    std::uniform_real_distribution<float> u(lo, hi);
    t.values.resize(n);
    for (float& v : t.values) v = RoundToDtype(u(rng), t.dtype);
    t.bytes = EncodeTensor(t.values, t.dtype);
    out.push_back(std::move(t));
  };
  const int64_t H = tc.hidden, I = tc.intermediate, q = int64_t{tc.heads} * tc.head_dim,
                kv = int64_t{tc.kv_heads} * tc.head_dim;
  const float a = 1.5f / std::sqrt(static_cast<float>(H));
  add("fc.weight", {H, 2 * H}, -a, a);
  if (spec.bias) add("fc.bias", {H}, -0.1f, 0.1f);
  if (spec.input_norm) {
    add("input_norm1.weight", {H}, 0.8f, 1.2f);
    add("input_norm2.weight", {H}, 0.8f, 1.2f);
  }
  for (int32_t l = 0; l < spec.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    if (l > 0 || spec.attn_norm) add(p + "input_layernorm.weight", {H}, 0.8f, 1.2f);
    add(p + "self_attn.q_proj.weight", {q, H}, -a, a);
    add(p + "self_attn.k_proj.weight", {kv, H}, -a, a);
    add(p + "self_attn.v_proj.weight", {kv, H}, -a, a);
    add(p + "self_attn.o_proj.weight", {H, q}, -a, a);
    add(p + "post_attention_layernorm.weight", {H}, 0.8f, 1.2f);
    add(p + "mlp.gate_proj.weight", {I, H}, -a, a);
    add(p + "mlp.up_proj.weight", {I, H}, -a, a);
    add(p + "mlp.down_proj.weight", {H, I}, -a, a);
  }
  return out;
}

mcpm_draft_config DraftConfigFor(mcpm_model* m, const DraftSpec& spec) {
  mcpm_draft_config c{};
  c.struct_size = sizeof c;
  EXPECT_MCPM_OK(mcpm_draft_config_default(m, &c));
  c.num_layers = spec.layers;
  c.use_input_norm = spec.input_norm ? 1 : 0;
  c.use_attn_norm = spec.attn_norm ? 1 : 0;
  c.attention_window = spec.window;
  return c;
}

namespace {

// CPM.cu's quantized fc: fc.weight [H, 2H] split into its embedding and feature halves ([H, H] each,
// input columns), each quantized on its own, and the Marlin tensors concatenated along N.
mcpm_status SetInt4Fc(const SetTensorFn& set, const HostTensor& fc) {
  const int64_t H = fc.shape[0];
  Int4Tensors halves[2];
  for (int side = 0; side < 2; ++side) {
    HostTensor half;
    half.name = "fc.weight (half)";
    half.shape = {H, H};
    half.dtype = MCPM_DTYPE_F32;
    for (int64_t r = 0; r < H; ++r)
      half.values.insert(half.values.end(), fc.values.begin() + (r * 2 * H + side * H),
                         fc.values.begin() + (r * 2 * H + side * H + H));
    half.bytes = EncodeTensor(half.values, MCPM_DTYPE_F32);
    halves[side] = QuantizeInt4(half);
    if (halves[side].qweight.empty()) return MCPM_ERR_INVALID_ARGUMENT;
  }
  std::vector<int32_t> qweight;
  for (int64_t r = 0; r < H / 16; ++r)
    for (const Int4Tensors& h : halves)
      qweight.insert(qweight.end(), h.qweight.begin() + r * 2 * H, h.qweight.begin() + (r + 1) * 2 * H);
  std::vector<uint16_t> scales;
  for (int64_t g = 0; g < H / 128; ++g)
    for (const Int4Tensors& h : halves) scales.insert(scales.end(), h.scales.begin() + g * H, h.scales.begin() + (g + 1) * H);
  const int64_t qshape[2] = {H / 16, 4 * H}, sshape[2] = {H / 128, 2 * H};
  mcpm_status st = set("fc.qweight", MCPM_DTYPE_I32, qshape, 2, qweight.data(), qweight.size() * 4);
  if (st == MCPM_OK) st = set("fc.scales", MCPM_DTYPE_F16, sshape, 2, scales.data(), scales.size() * 2);
  return st;
}

}  // namespace

DraftPtr MakeDraft(mcpm_model* m, const TinyConfig& tc, const DraftSpec& spec) {
  const mcpm_draft_config c = DraftConfigFor(m, spec);
  mcpm_draft* d = nullptr;
  EXPECT_MCPM_OK(mcpm_draft_create(m, &c, &d));
  if (!d) return nullptr;
  DraftPtr draft(d);
  const SetTensorFn set = [d](const char* name, mcpm_dtype dt, const int64_t* shape, int32_t ndim, const void* data,
                              size_t size) { return mcpm_draft_set_tensor(d, name, dt, shape, ndim, data, size); };
  for (const HostTensor& t : DraftTensors(tc, spec)) {
    mcpm_status st;
    if (spec.int4 && t.name == "fc.weight")
      st = SetInt4Fc(set, t);
    else if (spec.int4 && IsLinearWeight(t.name))
      st = SetInt4(set, t);
    else
      st = set(t.name.c_str(), t.dtype, t.shape.data(), static_cast<int32_t>(t.shape.size()), t.bytes.data(),
               t.bytes.size());
    if (st != MCPM_OK) {
      ADD_FAILURE() << "draft tensor " << t.name << ": " << mcpm_last_error();
      return nullptr;
    }
  }
  if (!spec.vocabulary.empty()) {
    EXPECT_MCPM_OK(mcpm_draft_set_vocabulary(d, spec.vocabulary.data(), static_cast<int32_t>(spec.vocabulary.size())));
  }
  EXPECT_MCPM_OK(mcpm_draft_finalize(d));
  return draft;
}

SessionPtr MakeSpecSession(mcpm_model* m, const mcpm_draft* d, int32_t capacity, int32_t chunk, bool graphs) {
  mcpm_session_params p{};
  p.struct_size = sizeof p;
  EXPECT_MCPM_OK(mcpm_session_params_default(&p));
  p.context_capacity = capacity;
  if (chunk > 0) p.prefill_chunk = chunk;
  p.draft = d;
  p.cuda_graphs = graphs ? 1 : 0;
  mcpm_session* s = nullptr;
  EXPECT_MCPM_OK(mcpm_session_create(m, &p, &s));
  return SessionPtr(s);
}

}  // namespace mcpm_test
