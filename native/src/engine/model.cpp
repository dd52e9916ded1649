#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>

#include "common/error.h"

#if defined(__linux__)
#include <sched.h>
#endif

namespace mcpm {

namespace {

void require(bool ok, const char* field, const std::string& why) { require_field(ok, "model config", field, why); }

}  // namespace

float ModelConfig::residual_scale() const { return scale_depth / std::sqrt(static_cast<float>(num_layers)); }

ModelConfig ModelConfig::from_abi(const mcpm_model_config& a) {
  constexpr int32_t kMaxDim = 1 << 20;
  require(a.vocab_size > 0 && a.vocab_size <= (1 << 24), "vocab_size", "must be in [1, 16777216], got " + std::to_string(a.vocab_size));
  require(a.hidden_size > 0 && a.hidden_size <= kMaxDim, "hidden_size", "must be in [1, 1048576], got " + std::to_string(a.hidden_size));
  require(a.num_layers > 0 && a.num_layers <= 4096, "num_layers", "must be in [1, 4096], got " + std::to_string(a.num_layers));
  require(a.num_heads > 0 && a.num_heads <= 4096, "num_heads", "must be in [1, 4096], got " + std::to_string(a.num_heads));
  require(a.num_kv_heads > 0 && a.num_kv_heads <= a.num_heads && a.num_heads % a.num_kv_heads == 0, "num_kv_heads",
          "must divide num_heads (" + std::to_string(a.num_heads) + "), got " + std::to_string(a.num_kv_heads));
  require(a.head_dim > 0 && a.head_dim % 2 == 0 && a.head_dim <= 1024, "head_dim",
          "must be even and in [2, 1024], got " + std::to_string(a.head_dim));
  require(a.intermediate_size > 0 && a.intermediate_size <= kMaxDim, "intermediate_size",
          "must be in [1, 1048576], got " + std::to_string(a.intermediate_size));
  require(a.max_position_embeddings > 0, "max_position_embeddings", "must be positive");
  require(std::isfinite(a.rms_norm_eps) && a.rms_norm_eps > 0, "rms_norm_eps", "must be a positive number");
  require(std::isfinite(a.rope_theta) && a.rope_theta > 1, "rope_theta", "must be a number > 1");
  require(std::isfinite(a.scale_emb) && a.scale_emb != 0, "scale_emb", "must be a nonzero number");
  require(std::isfinite(a.scale_depth) && a.scale_depth != 0, "scale_depth", "must be a nonzero number");
  require(std::isfinite(a.dim_model_base) && a.dim_model_base > 0, "dim_model_base", "must be a positive number");

  ModelConfig c;
  c.vocab_size = a.vocab_size;
  c.hidden_size = a.hidden_size;
  c.num_layers = a.num_layers;
  c.num_heads = a.num_heads;
  c.num_kv_heads = a.num_kv_heads;
  c.head_dim = a.head_dim;
  c.intermediate_size = a.intermediate_size;
  c.max_position_embeddings = a.max_position_embeddings;
  c.rms_norm_eps = a.rms_norm_eps;
  c.rope_theta = a.rope_theta;
  c.rope_scaling = a.rope_scaling;
  c.original_max_position_embeddings = a.original_max_position_embeddings;
  c.scale_emb = a.scale_emb;
  c.scale_depth = a.scale_depth;
  c.dim_model_base = a.dim_model_base;
  c.tie_word_embeddings = a.tie_word_embeddings != 0;

  if (a.rope_scaling == MCPM_ROPE_SCALING_LONGROPE) {
    const int32_t half = a.head_dim / 2;
    require(a.rope_factor_count == half, "rope_factor_count",
            "must equal head_dim/2 (" + std::to_string(half) + ") with LongRoPE, got " + std::to_string(a.rope_factor_count));
    require(a.rope_short_factor != nullptr, "rope_short_factor", "must not be NULL with LongRoPE");
    require(a.rope_long_factor != nullptr, "rope_long_factor", "must not be NULL with LongRoPE");
    require(a.original_max_position_embeddings > 1, "original_max_position_embeddings", "must be > 1 with LongRoPE");
    c.rope_short_factor.assign(a.rope_short_factor, a.rope_short_factor + half);
    c.rope_long_factor.assign(a.rope_long_factor, a.rope_long_factor + half);
    for (int32_t i = 0; i < half; ++i) {
      require(std::isfinite(c.rope_short_factor[i]) && c.rope_short_factor[i] > 0, "rope_short_factor",
              "values must be positive numbers (index " + std::to_string(i) + ")");
      require(std::isfinite(c.rope_long_factor[i]) && c.rope_long_factor[i] > 0, "rope_long_factor",
              "values must be positive numbers (index " + std::to_string(i) + ")");
    }
  } else {
    require(a.rope_scaling == MCPM_ROPE_SCALING_NONE, "rope_scaling",
            "must be MCPM_ROPE_SCALING_NONE or _LONGROPE, got " + std::to_string(a.rope_scaling));
    require(a.rope_factor_count == 0, "rope_factor_count",
            "must be 0 without LongRoPE, got " + std::to_string(a.rope_factor_count));
  }
  if (a.sparse_enabled != 0) {
    constexpr int32_t kMaxLen = 1 << 24;
    auto in_range = [](int32_t v, int32_t lo, int32_t hi) { return v >= lo && v <= hi; };
    require(in_range(a.sparse_kernel_stride, 1, kMaxLen), "sparse_kernel_stride",
            "must be in [1, 16777216], got " + std::to_string(a.sparse_kernel_stride));
    require(in_range(a.sparse_kernel_size, a.sparse_kernel_stride, kMaxLen), "sparse_kernel_size",
            "must be in [sparse_kernel_stride (" + std::to_string(a.sparse_kernel_stride) + "), 16777216], got " +
                std::to_string(a.sparse_kernel_size));
    require(in_range(a.sparse_block_size, 1, kMaxLen) && a.sparse_block_size % a.sparse_kernel_stride == 0,
            "sparse_block_size",
            "must be a positive multiple of sparse_kernel_stride (" + std::to_string(a.sparse_kernel_stride) +
                ") up to 16777216, got " + std::to_string(a.sparse_block_size));
    require(in_range(a.sparse_window_size, 0, 1 << 30) && a.sparse_window_size % a.sparse_block_size == 0,
            "sparse_window_size",
            "must be a multiple of sparse_block_size (" + std::to_string(a.sparse_block_size) +
                ") in [0, 1073741824], got " + std::to_string(a.sparse_window_size));
    require(in_range(a.sparse_init_blocks, 0, kMaxLen), "sparse_init_blocks",
            "must be in [0, 16777216], got " + std::to_string(a.sparse_init_blocks));
    require(in_range(a.sparse_topk, 0, kMaxLen), "sparse_topk",
            "must be in [0, 16777216], got " + std::to_string(a.sparse_topk));
    require(a.sparse_dense_len >= -1, "sparse_dense_len",
            "must be -1 (always sparse) or >= 0, got " + std::to_string(a.sparse_dense_len));
    if (a.sparse_use_nope != 0)
      throw_error(MCPM_ERR_UNSUPPORTED,
                  "unsupported model config: sparse_use_nope (block scoring with un-rotated Q/K) is not "
                  "implemented; set it to 0");
    c.sparse.enabled = true;
    c.sparse.kernel_size = a.sparse_kernel_size;
    c.sparse.kernel_stride = a.sparse_kernel_stride;
    c.sparse.init_blocks = a.sparse_init_blocks;
    c.sparse.block_size = a.sparse_block_size;
    c.sparse.window_size = a.sparse_window_size;
    c.sparse.topk = a.sparse_topk;
    c.sparse.dense_len = a.sparse_dense_len;
  }
  return c;
}

void declare_layer(WeightStore& store, const std::string& p, int64_t H, int64_t q_dim, int64_t kv_dim, int64_t I,
                   LayerWeights& w, bool has_input_norm) {
  if (has_input_norm) store.add(p + "input_layernorm.weight", {H}, &w.input_norm);
  store.add_linear(p + "self_attn.q_proj", q_dim, H, &w.q);
  store.add_linear(p + "self_attn.k_proj", kv_dim, H, &w.k);
  store.add_linear(p + "self_attn.v_proj", kv_dim, H, &w.v);
  store.add_linear(p + "self_attn.o_proj", H, q_dim, &w.o);
  store.add(p + "post_attention_layernorm.weight", {H}, &w.post_norm);
  store.add_linear(p + "mlp.gate_proj", I, H, &w.gate);
  store.add_linear(p + "mlp.up_proj", I, H, &w.up);
  store.add_linear(p + "mlp.down_proj", H, I, &w.down);
  // CPM.cu's Marlin checkpoints fuse q|k|v and gate|up along N.
  store.add_fused_int4(p + "self_attn.qkv_proj.qweight", p + "self_attn.qkv_proj.scales",
                       {p + "self_attn.q_proj.qweight", p + "self_attn.k_proj.qweight", p + "self_attn.v_proj.qweight"});
  store.add_fused_int4(p + "mlp.gate_up_proj.qweight", p + "mlp.gate_up_proj.scales",
                       {p + "mlp.gate_proj.qweight", p + "mlp.up_proj.qweight"});
}

int32_t available_cores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int32_t>(n) : 1;
}

Model::Model(ModelConfig config, std::shared_ptr<Backend> backend, int32_t num_threads, uint64_t weight_arena_bytes)
    : config_(std::move(config)),
      backend_(std::move(backend)),
      num_threads_(num_threads),
      store_(std::make_unique<WeightStore>(*backend_, "this MiniCPM4 config")) {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  weights_.layers.resize(static_cast<size_t>(c.num_layers));
  store_->add("model.embed_tokens.weight", {V, H}, &weights_.embed);
  for (int32_t l = 0; l < c.num_layers; ++l) {
    LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    declare_layer(*store_, p, H, c.q_dim(), c.kv_dim(), I, w, /*has_input_norm=*/true);
  }
  store_->add("model.norm.weight", {H}, &weights_.final_norm);
  if (!c.tie_word_embeddings) store_->add("lm_head.weight", {V, H}, &weights_.lm_head);
  if (weight_arena_bytes > SIZE_MAX) invalid_argument("weight_arena_bytes does not fit this machine's address space");
  store_->reserve(static_cast<size_t>(weight_arena_bytes));
}

void Model::set_tensor(const char* name, mcpm_dtype dtype, const int64_t* shape, int32_t ndim, const void* data,
                       size_t data_size) {
  if (finalized_) invalid_argument(std::string("cannot set tensor '") + name + "': the model is already finalized");
  if (config_.tie_word_embeddings && std::string(name) == "lm_head.weight")
    invalid_argument("tensor 'lm_head.weight' must not be set: the config ties the LM head to the embeddings");
  store_->set(name, dtype, shape, ndim, data, data_size);
}

void Model::finalize() {
  if (finalized_) invalid_argument("the model is already finalized");
  store_->check_complete();
  if (config_.tie_word_embeddings) weights_.lm_head = weights_.embed;
  finalized_ = true;
}

uint64_t Model::weight_bytes() const { return store_->bytes(); }

}  // namespace mcpm
