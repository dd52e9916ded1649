#include "reference_forward.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace mcpm_test {
namespace {

using Vec = std::vector<double>;

// x rounded to `dtype` (unchanged for F32).
Vec RoundVec(const Vec& x, mcpm_dtype dtype) {
  Vec r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = RoundToDtype(static_cast<float>(x[i]), dtype);
  return r;
}

// y[o] = sum_i W[o, i] * x[i]; W is [out, in] row-major (a Hugging Face Linear weight).
Vec Linear(const std::vector<float>& W, const Vec& x_in, size_t out, size_t in, mcpm_dtype round_to = MCPM_DTYPE_F32) {
  const Vec x = round_to == MCPM_DTYPE_F32 ? x_in : RoundVec(x_in, round_to);
  Vec y(out, 0.0);
  for (size_t o = 0; o < out; ++o) {
    const float* row = W.data() + o * in;
    double acc = 0.0;
    for (size_t i = 0; i < in; ++i) acc += static_cast<double>(row[i]) * x[i];
    y[o] = acc;
  }
  return y;
}

Vec RmsNorm(const Vec& x, const std::vector<float>& w, double eps) {
  double ss = 0.0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * static_cast<double>(w[i]);
  return y;
}

// Rotates one head vector x[0..d) in place for position pos.
void Rope(double* x, int d, const Vec& inv_freq, double pos, double attn_factor, bool interleaved) {
  const int half = d / 2;
  for (int i = 0; i < half; ++i) {
    const double ang = pos * inv_freq[static_cast<size_t>(i)];
    const double c = std::cos(ang) * attn_factor, s = std::sin(ang) * attn_factor;
    const int a = interleaved ? 2 * i : i;
    const int b = interleaved ? 2 * i + 1 : i + half;
    const double x1 = x[a], x2 = x[b];
    x[a] = x1 * c - x2 * s;
    x[b] = x2 * c + x1 * s;
  }
}

}  // namespace

std::vector<double> ReferenceLogits(const TinyModel& model, const std::vector<int32_t>& tokens,
                                    const RefOptions& opt) {
  const TinyConfig& c = model.config();
  const size_t H = static_cast<size_t>(c.hidden), D = static_cast<size_t>(c.head_dim);
  const size_t NH = static_cast<size_t>(c.heads), NKV = static_cast<size_t>(c.kv_heads);
  const size_t I = static_cast<size_t>(c.intermediate), V = static_cast<size_t>(c.vocab);
  const size_t n = tokens.size();
  const double eps = static_cast<double>(c.rms_norm_eps);

  // RoPE frequencies and the LongRoPE attention factor.
  const int32_t capacity =
      opt.context_capacity > 0 ? opt.context_capacity : std::min<int32_t>(c.max_position_embeddings, 4096);
  Vec inv_freq(D / 2);
  for (size_t i = 0; i < D / 2; ++i) {
    const double expo = opt.bug_rope_theta_off ? static_cast<double>(i) / static_cast<double>(D)
                                               : static_cast<double>(2 * i) / static_cast<double>(D);
    double factor = 1.0;
    if (c.longrope) {
      bool use_long = capacity > c.original_max_position_embeddings;
      if (opt.bug_swap_rope_factors) use_long = !use_long;
      factor = use_long ? model.long_factor()[i] : model.short_factor()[i];
    }
    inv_freq[i] = 1.0 / (factor * std::pow(static_cast<double>(c.rope_theta), expo));
  }
  double attn_factor = 1.0;
  if (c.longrope && c.max_position_embeddings > c.original_max_position_embeddings && !opt.bug_no_attention_factor) {
    const double orig = c.original_max_position_embeddings;
    attn_factor = std::sqrt(1.0 + std::log(c.max_position_embeddings / orig) / std::log(orig));
  }
  const double residual_scale =
      opt.bug_no_residual_scale ? 1.0 : static_cast<double>(c.scale_depth) / std::sqrt(static_cast<double>(c.layers));
  const double emb_scale = opt.bug_no_scale_emb ? 1.0 : static_cast<double>(c.scale_emb);
  const double lm_scale =
      opt.bug_no_lm_head_scale ? 1.0 : static_cast<double>(c.dim_model_base) / static_cast<double>(c.hidden);

  // Embedding.
  const std::vector<float>& E = model.w("model.embed_tokens.weight");
  std::vector<Vec> h(n, Vec(H));
  for (size_t t = 0; t < n; ++t) {
    const float* row = E.data() + static_cast<size_t>(tokens[t]) * H;
    for (size_t i = 0; i < H; ++i) h[t][i] = static_cast<double>(row[i]) * emb_scale;
  }

  // The dtype a linear layer's input is rounded to under cuda_rounding.
  auto in_dtype = [&](const std::string& weight) {
    if (!opt.cuda_rounding) return MCPM_DTYPE_F32;
    return model.tensor(weight).dtype;
  };

  const size_t group = NH / NKV;
  const double softmax_scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto& w_in = model.w(p + "input_layernorm.weight");
    const auto& Wq = model.w(p + "self_attn.q_proj.weight");
    const auto& Wk = model.w(p + "self_attn.k_proj.weight");
    const auto& Wv = model.w(p + "self_attn.v_proj.weight");
    const auto& Wo = model.w(p + "self_attn.o_proj.weight");
    const auto& w_post = model.w(p + "post_attention_layernorm.weight");
    const auto& Wg = model.w(p + "mlp.gate_proj.weight");
    const auto& Wu = model.w(p + "mlp.up_proj.weight");
    const auto& Wd = model.w(p + "mlp.down_proj.weight");

    std::vector<Vec> q(n), k(n), v(n);
    for (size_t t = 0; t < n; ++t) {
      const Vec a = RmsNorm(h[t], w_in, eps);
      q[t] = Linear(Wq, a, NH * D, H, in_dtype(p + "self_attn.q_proj.weight"));
      k[t] = Linear(Wk, a, NKV * D, H, in_dtype(p + "self_attn.k_proj.weight"));
      v[t] = Linear(Wv, a, NKV * D, H, in_dtype(p + "self_attn.v_proj.weight"));
      for (size_t hh = 0; hh < NH; ++hh) {
        Rope(q[t].data() + hh * D, c.head_dim, inv_freq, static_cast<double>(t), attn_factor, opt.bug_interleaved_rope);
      }
      for (size_t hh = 0; hh < NKV; ++hh) {
        Rope(k[t].data() + hh * D, c.head_dim, inv_freq, static_cast<double>(t), attn_factor, opt.bug_interleaved_rope);
      }
      if (opt.cuda_rounding) {
        k[t] = RoundVec(k[t], MCPM_DTYPE_BF16);
        v[t] = RoundVec(v[t], MCPM_DTYPE_BF16);
      }
    }

    for (size_t t = 0; t < n; ++t) {
      Vec attn(NH * D, 0.0);
      const size_t n_keys = opt.bug_non_causal ? n : t + 1;
      for (size_t hh = 0; hh < NH; ++hh) {
        const size_t kvh = opt.bug_gqa_modulo ? hh % NKV : hh / group;
        const double* qh = q[t].data() + hh * D;
        Vec scores(n_keys);
        double mx = -1e300;
        for (size_t s = 0; s < n_keys; ++s) {
          const double* kh = k[s].data() + kvh * D;
          double dot = 0.0;
          for (size_t d = 0; d < D; ++d) dot += qh[d] * kh[d];
          scores[s] = dot * softmax_scale;
          mx = std::max(mx, scores[s]);
        }
        double sum = 0.0;
        for (auto& sc : scores) {
          sc = std::exp(sc - mx);
          sum += sc;
        }
        double* out = attn.data() + hh * D;
        for (size_t s = 0; s < n_keys; ++s) {
          const double pr = scores[s] / sum;
          const double* vh = v[s].data() + kvh * D;
          for (size_t d = 0; d < D; ++d) out[d] += pr * vh[d];
        }
      }
      const Vec o = Linear(Wo, attn, H, NH * D, in_dtype(p + "self_attn.o_proj.weight"));
      for (size_t i = 0; i < H; ++i) h[t][i] += o[i] * residual_scale;
    }

    for (size_t t = 0; t < n; ++t) {
      const Vec f = RmsNorm(h[t], w_post, eps);
      const Vec g = Linear(Wg, f, I, H, in_dtype(p + "mlp.gate_proj.weight"));
      const Vec u = Linear(Wu, f, I, H, in_dtype(p + "mlp.up_proj.weight"));
      Vec m(I);
      for (size_t i = 0; i < I; ++i) m[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      const Vec d = Linear(Wd, m, H, I, in_dtype(p + "mlp.down_proj.weight"));
      for (size_t i = 0; i < H; ++i) h[t][i] += d[i] * residual_scale;
    }
  }

  const auto& w_final = model.w("model.norm.weight");
  const std::vector<float>& Wlm = c.tied ? E : model.w("lm_head.weight");
  std::vector<double> logits(n * V);
  for (size_t t = 0; t < n; ++t) {
    // The engine applies the LM-head input scale to the logits (the same value in exact arithmetic;
    // with cuda_rounding the unscaled rows are what gets rounded).
    const Vec hf = RmsNorm(h[t], w_final, eps);
    Vec row = Linear(Wlm, hf, V, H, in_dtype(c.tied ? "model.embed_tokens.weight" : "lm_head.weight"));
    for (auto& x : row) x *= lm_scale;
    std::copy(row.begin(), row.end(), logits.begin() + static_cast<std::ptrdiff_t>(t * V));
  }
  return logits;
}

}  // namespace mcpm_test
