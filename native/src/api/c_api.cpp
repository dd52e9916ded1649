// The C ABI: argument validation, handle management and the exception-to-status boundary. Every
// entry point runs its body inside guarded(), so no C++ exception ever crosses into the host.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <initializer_list>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>
#include <string>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#ifdef MCPM_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#include "cuda_config.h"  // generated: MCPM_CUDA_VERSION, MCPM_CUDA_ARCHS
#endif
#include "common/error.h"
#include "common/int4.h"
#include "engine/draft.h"
#include "engine/model.h"
#include "engine/batch.h"
#include "engine/session.h"
#include "minicpm4.h"

using namespace mcpm;

// The opaque handles. A session shares ownership of its model, so freeing the model handle first
// is safe.
struct mcpm_model {
  std::shared_ptr<Model> impl;
};

struct mcpm_draft {
  std::shared_ptr<DraftModel> impl;
};

struct mcpm_session {
  std::unique_ptr<Session> impl;
  std::atomic<bool> busy{false};
};

struct mcpm_batcher {
  std::shared_ptr<Model> model;
  std::unique_ptr<BatchRunner> impl;
  std::vector<BatchItem> items;  // the last step's, whose messages the host reads
  std::atomic<bool> busy{false};
};

namespace {

template <typename F>
mcpm_status guarded(F&& body) noexcept {
  try {
    body();
    return MCPM_OK;
  } catch (...) {
    std::string message;
    const mcpm_status status = current_exception_status(message);
    set_last_error(message);
    return status;
  }
}

void require_not_null(const void* p, const char* what) {
  if (p == nullptr) invalid_argument(std::string(what) + " is NULL");
}

// Struct versioning: the host's struct_size must be one the library knows: the current size, or for a
// struct that has grown since its first release the sizes of its earlier releases (`older_sizes`,
// each the offset of the first field added after it).
template <typename S>
void require_known_size(const S* s, std::initializer_list<size_t> older_sizes, const char* what) {
  require_not_null(s, what);
  const size_t size = s->struct_size;
  if (size != sizeof(S) && std::find(older_sizes.begin(), older_sizes.end(), size) == older_sizes.end())
    invalid_argument(std::string(what) + "->struct_size is " + std::to_string(size) + ", expected " +
                     std::to_string(sizeof(S)) + " (set it to sizeof(" + what + ") and use the *_default function)");
}

// The arguments of a set_tensor call that the engine does not check itself.
void require_tensor_args(const char* name, const int64_t* shape, int32_t ndim, const void* data) {
  require_not_null(name, "name");
  require_not_null(shape, "shape");
  require_not_null(data, "data");
  if (ndim < 1 || ndim > 8) invalid_argument("tensor '" + std::string(name) + "': ndim must be in [1, 8]");
}

// A struct that has not grown: exactly the current size.
template <typename S>
void require_struct(const S* s, const char* what) {
  require_known_size(s, {}, what);
}

// The host's struct over `defaults`: the fields its struct_size does not cover keep their defaults.
template <typename S>
S read_grown_struct(const S* given, S defaults, std::initializer_list<size_t> older_sizes, const char* what) {
  require_known_size(given, older_sizes, what);
  std::memcpy(static_cast<void*>(&defaults), given, given->struct_size);
  defaults.struct_size = sizeof(S);
  return defaults;
}

// Writes `values` into the host's struct, no further than its struct_size (an older host's struct ends
// earlier), keeping the host's struct_size.
template <typename S>
void write_grown_struct(S* host, S values) {
  values.struct_size = host->struct_size;
  std::memcpy(static_cast<void*>(host), &values, host->struct_size);
}

// The first released sizes of the structs that grew since.
constexpr size_t kSessionParamsV1Size = offsetof(mcpm_session_params, kv_memory_bytes);
constexpr size_t kModelOptionsV1Size = offsetof(mcpm_model_options, weight_arena_bytes);
constexpr size_t kModelOptionsV2Size = offsetof(mcpm_model_options, cpu_precision);
constexpr size_t kDraftConfigV1Size = offsetof(mcpm_draft_config, attention_window);
constexpr size_t kSamplingParamsV1Size = offsetof(mcpm_sampling_params, token_mask);
constexpr size_t kSessionStatsV1Size = offsetof(mcpm_session_stats, spec_plain_tokens);

// A draft belongs to the target model it was created for.
void require_draft_of(const mcpm_draft* draft, const Model& target) {
  if (&draft->impl->base() != &target) invalid_argument("the draft was created for a different target model");
}

Model& finalized_model(mcpm_model* m) {
  require_not_null(m, "model");
  if (!m->impl->finalized()) invalid_argument("the model is not finalized: call mcpm_model_finalize first");
  return *m->impl;
}

// Marks a session busy for the duration of a call so concurrent use is reported, not corrupting.
class SessionCall {
 public:
  explicit SessionCall(mcpm_session* s) : s_(s) {
    require_not_null(s, "session");
    bool expected = false;
    if (!s->busy.compare_exchange_strong(expected, true, std::memory_order_acquire))
      invalid_argument("session is in use by another call; a session must be used by one thread at a time");
  }
  ~SessionCall() { s_->busy.store(false, std::memory_order_release); }
  Session& operator*() const { return *s_->impl; }
  Session* operator->() const { return s_->impl.get(); }

 private:
  mcpm_session* s_;
};

}  // namespace

namespace {

// Checks one int4 helper buffer: non-NULL and exactly `elements` elements of `element_size` bytes.
void require_buffer(const void* p, size_t size, int64_t elements, size_t element_size, const char* what) {
  require_not_null(p, what);
  const size_t want = static_cast<size_t>(elements) * element_size;
  if (size != want)
    invalid_argument(std::string(what) + " size is " + std::to_string(size) + " bytes, expected " +
                     std::to_string(want));
}

void require_int4_shape(int64_t n_out, int64_t k_in) {
  if (k_in <= 0 || k_in % int4::kGroupSize != 0 || k_in > (int64_t{1} << 24))
    invalid_argument("k_in (input features) must be a positive multiple of 128 up to 16777216, got " +
                     std::to_string(k_in));
  if (n_out <= 0 || n_out % int4::kMarlinMinN != 0 || n_out > (int64_t{1} << 24))
    invalid_argument("n_out (output features) must be a positive multiple of 64 up to 16777216, got " +
                     std::to_string(n_out));
}

// Runs an int4 module call, turning its std::invalid_argument into INVALID_ARGUMENT.
template <typename F>
void int4_call(F&& body) {
  try {
    body();
  } catch (const std::invalid_argument& e) {
    invalid_argument(e.what());
  }
}

}  // namespace

namespace {

#ifdef MCPM_HAVE_CUDA
// The driver's devices, or BACKEND_UNAVAILABLE with the reason there are none.
std::vector<CudaDeviceInfo> cuda_devices_or_throw() {
  std::vector<CudaDeviceInfo> devices = cuda_devices();
  if (devices.empty()) {
    std::string why = cuda_device_problem(0);
    if (why.empty()) why = "the driver reports no usable CUDA device";
    throw_error(MCPM_ERR_BACKEND_UNAVAILABLE, "CUDA unavailable: " + why);
  }
  return devices;
}
#endif

#ifndef MCPM_HAVE_CUDA
[[noreturn]] void cuda_not_compiled() {
  throw_error(MCPM_ERR_BACKEND_UNAVAILABLE,
              "CUDA unavailable: the CUDA backend is not compiled into this build of the library");
}
#endif

// Copies a string into a fixed char array, truncating, always NUL-terminated.
template <size_t N>
void copy_text(char (&dst)[N], const std::string& text) {
  const size_t n = std::min(text.size(), N - 1);
  std::memcpy(dst, text.data(), n);
  dst[n] = '\0';
}

}  // namespace

extern "C" {

MCPM_API uint32_t mcpm_abi_version(void) { return MCPM_ABI_VERSION; }

MCPM_API mcpm_status mcpm_get_build_info(mcpm_build_info* info) {
  return guarded([&] {
    require_struct(info, "mcpm_build_info");
    info->abi_version = MCPM_ABI_VERSION;
    info->version = MCPM_VERSION_STRING;
    info->backends = compiled_backends();
#ifdef MCPM_CUDA_VERSION
    info->cuda_version = MCPM_CUDA_VERSION;
    info->cuda_archs = MCPM_CUDA_ARCHS;
#else
    info->cuda_version = 0;
    info->cuda_archs = "";
#endif
    info->cpu_features = cpu_features_string();
#if defined(__clang__)
    info->compiler = "clang " __clang_version__ " (" MCPM_BUILD_TYPE_STRING ")";
#elif defined(__GNUC__)
    info->compiler = "gcc " __VERSION__ " (" MCPM_BUILD_TYPE_STRING ")";
#else
    info->compiler = "unknown compiler (" MCPM_BUILD_TYPE_STRING ")";
#endif
  });
}

MCPM_API mcpm_status mcpm_cuda_device_count(int32_t* out_count) {
  return guarded([&] {
    require_not_null(out_count, "out_count");
#ifdef MCPM_HAVE_CUDA
    *out_count = static_cast<int32_t>(cuda_devices_or_throw().size());
#else
    cuda_not_compiled();
#endif
  });
}

MCPM_API mcpm_status mcpm_cuda_device_get_info(int32_t index, mcpm_cuda_device_info* info) {
  return guarded([&] {
    require_struct(info, "mcpm_cuda_device_info");
#ifdef MCPM_HAVE_CUDA
    const std::vector<CudaDeviceInfo> devices = cuda_devices_or_throw();
    if (index < 0 || static_cast<size_t>(index) >= devices.size())
      invalid_argument("CUDA device index " + std::to_string(index) + " is out of range (" +
                       std::to_string(devices.size()) + (devices.size() == 1 ? " device)" : " devices)"));
    const CudaDeviceInfo& d = devices[static_cast<size_t>(index)];
    info->index = d.index;
    copy_text(info->name, d.name);
    info->compute_capability = d.compute_capability;
    info->multiprocessor_count = d.multiprocessors;
    info->total_memory_bytes = d.total_bytes;
    info->free_memory_bytes = d.free_bytes;
    info->usable = d.problem.empty() ? 1 : 0;
    copy_text(info->problem, d.problem);
#else
    (void)index;
    cuda_not_compiled();
#endif
  });
}

MCPM_API const char* mcpm_last_error(void) { return last_error(); }

MCPM_API const char* mcpm_status_string(mcpm_status status) {
  switch (status) {
    case MCPM_OK: return "ok";
    case MCPM_ERR_INVALID_ARGUMENT: return "invalid argument";
    case MCPM_ERR_OUT_OF_MEMORY: return "out of memory";
    case MCPM_ERR_UNSUPPORTED: return "unsupported";
    case MCPM_ERR_CONTEXT_FULL: return "context full";
    case MCPM_ERR_CANCELLED: return "cancelled";
    case MCPM_ERR_BACKEND_UNAVAILABLE: return "backend unavailable";
    case MCPM_ERR_INTERNAL: return "internal error";
    case MCPM_ERR_CALLBACK: return "callback failed";
    case MCPM_ERR_NONFINITE: return "non-finite logits";
    default: return "unknown status";
  }
}

// ---- model ---------------------------------------------------------------------------------------

MCPM_API mcpm_status mcpm_model_config_default(mcpm_model_config* c) {
  return guarded([&] {
    require_struct(c, "mcpm_model_config");
    const uint32_t size = c->struct_size;
    std::memset(c, 0, sizeof(*c));
    c->struct_size = size;
    c->vocab_size = 73448;
    c->hidden_size = 1024;
    c->num_layers = 24;
    c->num_heads = 16;
    c->num_kv_heads = 2;
    c->head_dim = 64;
    c->intermediate_size = 4096;
    c->max_position_embeddings = 32768;
    c->rms_norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->rope_scaling = MCPM_ROPE_SCALING_NONE;
    c->original_max_position_embeddings = 32768;
    c->scale_emb = 12.0f;
    c->scale_depth = 1.4f;
    c->dim_model_base = 256.0f;
    c->tie_word_embeddings = 1;
    c->sparse_enabled = 0;
    c->sparse_kernel_size = 32;
    c->sparse_kernel_stride = 16;
    c->sparse_init_blocks = 1;
    c->sparse_block_size = 64;
    c->sparse_window_size = 2048;
    c->sparse_topk = 64;
    c->sparse_dense_len = 8192;
    c->sparse_use_nope = 0;
  });
}

MCPM_API mcpm_status mcpm_model_options_default(mcpm_model_options* o) {
  return guarded([&] {
    require_known_size(o, {kModelOptionsV1Size, kModelOptionsV2Size}, "mcpm_model_options");
    mcpm_model_options d{};
    d.backend = MCPM_BACKEND_AUTO;
    d.device_index = 0;
    d.num_threads = 0;
    d.weight_arena_bytes = 0;
    d.cpu_precision = MCPM_CPU_PRECISION_DEFAULT;
    write_grown_struct(o, d);
  });
}

MCPM_API mcpm_status mcpm_model_create(const mcpm_model_config* config, const mcpm_model_options* options,
                                       mcpm_model** out_model) {
  return guarded([&] {
    require_struct(config, "mcpm_model_config");
    require_not_null(out_model, "out_model");
    mcpm_model_options opts{};
    opts.struct_size = sizeof(opts);
    mcpm_model_options_default(&opts);
    if (options != nullptr)
      opts = read_grown_struct(options, opts, {kModelOptionsV1Size, kModelOptionsV2Size}, "mcpm_model_options");
    if (opts.cpu_precision < MCPM_CPU_PRECISION_DEFAULT || opts.cpu_precision > MCPM_CPU_PRECISION_EXACT)
      invalid_argument("cpu_precision must be MCPM_CPU_PRECISION_DEFAULT, _FAST or _EXACT, got " +
                       std::to_string(opts.cpu_precision));
    if (opts.num_threads < 0 || opts.num_threads > 1024)
      invalid_argument("num_threads must be in [0, 1024], got " + std::to_string(opts.num_threads));
    if (opts.device_index < 0) invalid_argument("device_index must be >= 0");
    ModelConfig cfg = ModelConfig::from_abi(*config);
    BackendOptions bo;
    bo.device_index = opts.device_index;
    bo.cpu_precision = opts.cpu_precision;
    std::shared_ptr<Backend> backend = create_backend(opts.backend, bo);
    const int32_t threads = opts.num_threads > 0 ? opts.num_threads : available_cores();
    auto handle = std::make_unique<mcpm_model>();
    handle->impl = std::make_shared<Model>(std::move(cfg), std::move(backend), threads, opts.weight_arena_bytes);
    *out_model = handle.release();
  });
}

MCPM_API mcpm_status mcpm_model_set_tensor(mcpm_model* model, const char* name, mcpm_dtype dtype,
                                           const int64_t* shape, int32_t ndim, const void* data, size_t data_size) {
  return guarded([&] {
    require_not_null(model, "model");
    require_tensor_args(name, shape, ndim, data);
    model->impl->set_tensor(name, dtype, shape, ndim, data, data_size);
  });
}

MCPM_API mcpm_status mcpm_model_finalize(mcpm_model* model) {
  return guarded([&] {
    require_not_null(model, "model");
    model->impl->finalize();
  });
}

MCPM_API mcpm_status mcpm_model_weight_bytes(const mcpm_model* model, uint64_t* out_bytes) {
  return guarded([&] {
    require_not_null(model, "model");
    require_not_null(out_bytes, "out_bytes");
    *out_bytes = model->impl->weight_bytes();
  });
}

MCPM_API mcpm_status mcpm_model_weight_arena(const mcpm_model* model, uint64_t* out_reserved, uint64_t* out_used,
                                             int32_t* out_separate) {
  return guarded([&] {
    require_not_null(model, "model");
    const WeightStore::ArenaUse use = model->impl->weight_arena();
    if (out_reserved) *out_reserved = use.reserved;
    if (out_used) *out_used = use.used;
    if (out_separate) *out_separate = use.separate;
  });
}

MCPM_API mcpm_status mcpm_model_int4_linear_count(const mcpm_model* model, int32_t* out_count) {
  return guarded([&] {
    require_not_null(model, "model");
    require_not_null(out_count, "out_count");
    *out_count = model->impl->int4_linear_count();
  });
}

MCPM_API void mcpm_model_free(mcpm_model* model) { delete model; }

// ---- int4 ----------------------------------------------------------------------------------------

MCPM_API mcpm_status mcpm_int4_quantize_params_default(mcpm_int4_quantize_params* p) {
  return guarded([&] {
    require_struct(p, "params");
    p->layout = MCPM_INT4_LAYOUT_MARLIN;
    p->clip_search = 0;
    p->num_threads = 0;
  });
}

MCPM_API mcpm_status mcpm_int4_quantize(mcpm_dtype dtype, const void* w, size_t w_size, int64_t n_out, int64_t k_in,
                                        const mcpm_int4_quantize_params* params, int32_t* qweight,
                                        size_t qweight_size, uint16_t* scales, size_t scales_size) {
  return guarded([&] {
    mcpm_int4_quantize_params p{};
    p.struct_size = sizeof p;
    mcpm_int4_quantize_params_default(&p);
    if (params != nullptr) {
      require_struct(params, "params");
      p = *params;
    }
    if (p.layout != MCPM_INT4_LAYOUT_MARLIN && p.layout != MCPM_INT4_LAYOUT_GPTQ)
      invalid_argument("params->layout must be MCPM_INT4_LAYOUT_MARLIN or _GPTQ, got " + std::to_string(p.layout));
    if (p.num_threads < 0 || p.num_threads > 1024)
      invalid_argument("params->num_threads must be in [0, 1024], got " + std::to_string(p.num_threads));
    if (dtype != MCPM_DTYPE_F32 && dtype != MCPM_DTYPE_F16 && dtype != MCPM_DTYPE_BF16)
      invalid_argument("dtype must be MCPM_DTYPE_F32, _F16 or _BF16, got " + std::to_string(dtype));
    require_int4_shape(n_out, k_in);
    const DType dt = static_cast<DType>(dtype);
    require_buffer(w, w_size, n_out * k_in, dtype_size(dt), "w");
    const bool marlin = p.layout == MCPM_INT4_LAYOUT_MARLIN;
    const int64_t q_elements = marlin ? k_in / int4::kTile * 2 * n_out : k_in / 8 * n_out;
    require_buffer(qweight, qweight_size, q_elements, 4, "qweight");
    require_buffer(scales, scales_size, k_in / int4::kGroupSize * n_out, 2, "scales");

    std::vector<float> wf(static_cast<size_t>(n_out * k_in));
    for (size_t i = 0; i < wf.size(); ++i) {
      switch (dt) {
        case DType::F32: std::memcpy(&wf[i], static_cast<const char*>(w) + 4 * i, 4); break;
        case DType::F16: wf[i] = f16_to_f32(static_cast<const uint16_t*>(w)[i]); break;
        case DType::BF16: wf[i] = bf16_to_f32(static_cast<const uint16_t*>(w)[i]); break;
        case DType::I32: break;
      }
      if (!std::isfinite(wf[i]))
        invalid_argument("w[" + std::to_string(i / static_cast<size_t>(k_in)) + "][" +
                         std::to_string(i % static_cast<size_t>(k_in)) + "] is not a finite number");
    }
    int4::QuantOptions opt;
    opt.clip_search = p.clip_search != 0;
    const int threads = p.num_threads > 0 ? p.num_threads : available_cores();
    int4_call([&] {
      if (marlin) {
        const int4::MarlinWeight m = int4::quantize_marlin(wf.data(), n_out, k_in, opt, threads);
        std::memcpy(qweight, m.qweight.data(), qweight_size);
        std::memcpy(scales, m.scales.data(), scales_size);
      } else {
        const int4::GptqWeight g = int4::quantize_gptq(wf.data(), n_out, k_in, opt, threads);
        std::memcpy(qweight, g.qweight.data(), qweight_size);
        std::memcpy(scales, g.scales.data(), scales_size);
      }
    });
  });
}

MCPM_API mcpm_status mcpm_int4_repack_gptq(int64_t n_out, int64_t k_in, const int32_t* gptq_qweight,
                                           size_t gptq_qweight_size, const uint16_t* gptq_scales,
                                           size_t gptq_scales_size, const int32_t* qzeros, size_t qzeros_size,
                                           const int32_t* g_idx, size_t g_idx_size, int32_t* qweight,
                                           size_t qweight_size, uint16_t* scales, size_t scales_size) {
  return guarded([&] {
    require_int4_shape(n_out, k_in);
    require_buffer(gptq_qweight, gptq_qweight_size, k_in / 8 * n_out, 4, "gptq_qweight");
    require_buffer(gptq_scales, gptq_scales_size, k_in / int4::kGroupSize * n_out, 2, "gptq_scales");
    if (qzeros != nullptr) require_buffer(qzeros, qzeros_size, k_in / int4::kGroupSize * n_out / 8, 4, "qzeros");
    if (g_idx != nullptr) require_buffer(g_idx, g_idx_size, k_in, 4, "g_idx");
    require_buffer(qweight, qweight_size, k_in / int4::kTile * 2 * n_out, 4, "qweight");
    require_buffer(scales, scales_size, k_in / int4::kGroupSize * n_out, 2, "scales");
    int4::GptqWeight g;
    g.K = k_in;
    g.N = n_out;
    g.qweight.assign(gptq_qweight, gptq_qweight + gptq_qweight_size / 4);
    g.scales.assign(gptq_scales, gptq_scales + gptq_scales_size / 2);
    if (qzeros != nullptr) g.qzeros.assign(qzeros, qzeros + qzeros_size / 4);
    if (g_idx != nullptr) g.g_idx.assign(g_idx, g_idx + g_idx_size / 4);
    int4_call([&] {
      const int4::MarlinWeight m = int4::gptq_to_marlin(g);
      std::memcpy(qweight, m.qweight.data(), qweight_size);
      std::memcpy(scales, m.scales.data(), scales_size);
    });
  });
}

// ---- draft ---------------------------------------------------------------------------------------

MCPM_API mcpm_status mcpm_draft_config_default(const mcpm_model* target, mcpm_draft_config* c) {
  return guarded([&] {
    require_known_size(c, {kDraftConfigV1Size}, "mcpm_draft_config");
    require_not_null(target, "target");
    if (!target->impl->finalized()) invalid_argument("the target model is not finalized: call mcpm_model_finalize first");
    const ModelConfig& m = target->impl->config();
    mcpm_draft_config d{};
    d.num_layers = 1;
    d.num_heads = m.num_heads;
    d.num_kv_heads = m.num_kv_heads;
    d.head_dim = m.head_dim;
    d.intermediate_size = m.intermediate_size;
    d.rms_norm_eps = m.rms_norm_eps;
    d.residual_scale = m.scale_depth / std::sqrt(static_cast<float>(m.num_layers + 1));
    d.use_input_norm = 1;
    d.use_attn_norm = 1;
    d.attention_window = 0;
    write_grown_struct(c, d);
  });
}

MCPM_API mcpm_status mcpm_draft_create(mcpm_model* target, const mcpm_draft_config* config, mcpm_draft** out_draft) {
  return guarded([&] {
    finalized_model(target);
    mcpm_draft_config defaults{};  // attention_window 0 for an older host's struct
    const mcpm_draft_config full = read_grown_struct(config, defaults, {kDraftConfigV1Size}, "mcpm_draft_config");
    require_not_null(out_draft, "out_draft");
    DraftConfig cfg = DraftConfig::from_abi(full, target->impl->config());
    auto handle = std::make_unique<mcpm_draft>();
    handle->impl = std::make_shared<DraftModel>(target->impl, std::move(cfg));
    *out_draft = handle.release();
  });
}

MCPM_API mcpm_status mcpm_draft_set_tensor(mcpm_draft* draft, const char* name, mcpm_dtype dtype, const int64_t* shape,
                                           int32_t ndim, const void* data, size_t data_size) {
  return guarded([&] {
    require_not_null(draft, "draft");
    require_tensor_args(name, shape, ndim, data);
    draft->impl->set_tensor(name, dtype, shape, ndim, data, data_size);
  });
}

MCPM_API mcpm_status mcpm_draft_set_vocabulary(mcpm_draft* draft, const int32_t* ids, int32_t count) {
  return guarded([&] {
    require_not_null(draft, "draft");
    require_not_null(ids, "ids");
    draft->impl->set_vocabulary(ids, count);
  });
}

MCPM_API mcpm_status mcpm_draft_finalize(mcpm_draft* draft) {
  return guarded([&] {
    require_not_null(draft, "draft");
    draft->impl->finalize();
  });
}

MCPM_API mcpm_status mcpm_draft_weight_bytes(const mcpm_draft* draft, uint64_t* out_bytes) {
  return guarded([&] {
    require_not_null(draft, "draft");
    require_not_null(out_bytes, "out_bytes");
    *out_bytes = draft->impl->weight_bytes();
  });
}

MCPM_API void mcpm_draft_free(mcpm_draft* draft) { delete draft; }

// ---- session -------------------------------------------------------------------------------------

MCPM_API mcpm_status mcpm_session_params_default(mcpm_session_params* p) {
  return guarded([&] {
    require_known_size(p, {kSessionParamsV1Size}, "mcpm_session_params");
    mcpm_session_params d{};
    d.context_capacity = 0;
    d.prefill_chunk = 256;
    d.draft = nullptr;
    d.kv_memory_bytes = 0;
    d.kv_memory_fraction = 0.0f;
    d.cuda_graphs = 1;
    write_grown_struct(p, d);
  });
}

MCPM_API mcpm_status mcpm_session_kv_bytes_per_token(const mcpm_model* model, const mcpm_draft* draft,
                                                     uint64_t* out_bytes) {
  return guarded([&] {
    require_not_null(model, "model");
    require_not_null(out_bytes, "out_bytes");
    if (draft != nullptr) require_draft_of(draft, *model->impl);
    *out_bytes = Session::kv_bytes_per_token(*model->impl, draft ? draft->impl.get() : nullptr);
  });
}

MCPM_API mcpm_status mcpm_session_create(mcpm_model* model, const mcpm_session_params* params,
                                         mcpm_session** out_session) {
  return guarded([&] {
    Model& m = finalized_model(model);
    require_not_null(out_session, "out_session");
    mcpm_session_params p{};
    p.struct_size = sizeof(p);
    mcpm_session_params_default(&p);
    if (params != nullptr) p = read_grown_struct(params, p, {kSessionParamsV1Size}, "mcpm_session_params");
    const int32_t max_pos = m.config().max_position_embeddings;
    if (p.context_capacity < 0 || p.context_capacity > max_pos)
      invalid_argument("context_capacity must be in [0, max_position_embeddings = " + std::to_string(max_pos) +
                       "], got " + std::to_string(p.context_capacity));
    if (p.prefill_chunk < 1 || p.prefill_chunk > 65536)
      invalid_argument("prefill_chunk must be in [1, 65536], got " + std::to_string(p.prefill_chunk));
    if (!(p.kv_memory_fraction >= 0.0f && p.kv_memory_fraction <= 1.0f))
      invalid_argument("kv_memory_fraction must be in [0, 1] (0 = off), got " + std::to_string(p.kv_memory_fraction));
    std::shared_ptr<const DraftModel> draft;
    if (p.draft != nullptr) {
      if (!p.draft->impl->finalized()) invalid_argument("the draft is not finalized: call mcpm_draft_finalize first");
      require_draft_of(p.draft, m);
      draft = p.draft->impl;
    }
    int32_t capacity = p.context_capacity > 0 ? p.context_capacity : std::min(max_pos, 4096);
    if (p.kv_memory_bytes > 0 || p.kv_memory_fraction > 0.0f) {
      // The tighter of the two limits; the capacity is then the most that fits, up to the explicit one.
      uint64_t budget = p.kv_memory_bytes > 0 ? p.kv_memory_bytes : UINT64_MAX;
      std::string source = std::to_string(p.kv_memory_bytes) + " bytes (kv_memory_bytes)";
      if (p.kv_memory_fraction > 0.0f) {
        const uint64_t available = m.backend().available_memory();
        const auto share = static_cast<uint64_t>(static_cast<double>(p.kv_memory_fraction) * static_cast<double>(available));
        if (share < budget) {
          budget = share;
          source = std::to_string(share) + " bytes (kv_memory_fraction " + std::to_string(p.kv_memory_fraction) +
                   " of " + std::to_string(available) + " bytes available on " + m.backend().name() + ")";
        }
      }
      const int64_t fits = Session::capacity_for_kv_budget(m, draft.get(), budget);
      if (fits < 1)
        throw_error(MCPM_ERR_OUT_OF_MEMORY,
                    "the KV memory limit of " + source + " holds no token: one token of context takes " +
                        std::to_string(Session::kv_bytes_per_token(m, draft.get())) + " bytes" +
                        (draft ? " (and a draft session needs 64 tree rows on top)" : ""));
      const int32_t ceiling = p.context_capacity > 0 ? p.context_capacity : max_pos;
      capacity = static_cast<int32_t>(std::min<int64_t>(fits, ceiling));
    }
    auto handle = std::make_unique<mcpm_session>();
    handle->impl = std::make_unique<Session>(model->impl, std::move(draft), capacity, std::min(p.prefill_chunk, capacity),
                                             p.cuda_graphs != 0);
    *out_session = handle.release();
  });
}

MCPM_API void mcpm_session_free(mcpm_session* session) { delete session; }

MCPM_API mcpm_status mcpm_session_prefill(mcpm_session* session, const int32_t* tokens, int32_t n_tokens,
                                          mcpm_logits_mode logits_mode, float* logits, size_t logits_capacity) {
  return guarded([&] {
    SessionCall s(session);
    if (n_tokens < 0) invalid_argument("n_tokens must be >= 0, got " + std::to_string(n_tokens));
    if (n_tokens > 0) require_not_null(tokens, "tokens");
    s->prefill(tokens, n_tokens, logits_mode, logits, logits_capacity);
  });
}

MCPM_API mcpm_status mcpm_session_decode(mcpm_session* session, int32_t token, float* logits,
                                         size_t logits_capacity) {
  return guarded([&] {
    SessionCall s(session);
    s->decode(token, logits, logits_capacity);
  });
}

MCPM_API mcpm_status mcpm_session_length(const mcpm_session* session, int32_t* out_length) {
  return guarded([&] {
    require_not_null(session, "session");
    require_not_null(out_length, "out_length");
    *out_length = session->impl->length();
  });
}

MCPM_API mcpm_status mcpm_session_capacity(const mcpm_session* session, int32_t* out_capacity) {
  return guarded([&] {
    require_not_null(session, "session");
    require_not_null(out_capacity, "out_capacity");
    *out_capacity = session->impl->capacity();
  });
}

MCPM_API mcpm_status mcpm_session_tokens(const mcpm_session* session, int32_t* tokens, int32_t capacity,
                                         int32_t* out_count) {
  return guarded([&] {
    require_not_null(session, "session");
    require_not_null(out_count, "out_count");
    if (capacity < 0) invalid_argument("capacity must be >= 0");
    if (capacity > 0) require_not_null(tokens, "tokens");
    const std::vector<int32_t>& t = session->impl->tokens();
    const size_t n = std::min(t.size(), static_cast<size_t>(capacity));
    if (n > 0) std::memcpy(tokens, t.data(), n * sizeof(int32_t));
    *out_count = static_cast<int32_t>(t.size());
  });
}

MCPM_API mcpm_status mcpm_session_rewind(mcpm_session* session, int32_t new_length) {
  return guarded([&] {
    SessionCall s(session);
    s->rewind(new_length);
  });
}

MCPM_API mcpm_status mcpm_session_reset(mcpm_session* session) {
  return guarded([&] {
    SessionCall s(session);
    s->reset();
  });
}

MCPM_API mcpm_status mcpm_session_request_abort(mcpm_session* session) {
  return guarded([&] {
    require_not_null(session, "session");
    session->impl->request_abort();
  });
}

MCPM_API mcpm_status mcpm_session_clear_abort(mcpm_session* session) {
  return guarded([&] {
    require_not_null(session, "session");
    session->impl->clear_abort();
  });
}

// ---- sampling --------------------------------------------------------------------------------------

MCPM_API mcpm_status mcpm_sampling_params_default(mcpm_sampling_params* p) {
  return guarded([&] {
    require_known_size(p, {kSamplingParamsV1Size}, "mcpm_sampling_params");
    mcpm_sampling_params d{};
    d.temperature = 0.0f;
    d.top_k = 0;
    d.top_p = 1.0f;
    d.min_p = 0.0f;
    d.repetition_penalty = 1.0f;
    d.frequency_penalty = 0.0f;
    d.presence_penalty = 0.0f;
    d.penalty_last_n = 64;
    d.seed = 0;
    d.stop_tokens = nullptr;
    d.stop_token_count = 0;
    d.max_new_tokens = 0;
    d.speculative = 1;
    d.spec_num_iter = 2;
    d.spec_topk_per_iter = 10;
    d.spec_tree_size = 12;
    d.token_mask = nullptr;
    d.token_mask_user_data = nullptr;
    write_grown_struct(p, d);
  });
}

MCPM_API mcpm_status mcpm_session_set_sampling(mcpm_session* session, const mcpm_sampling_params* params) {
  return guarded([&] {
    SessionCall s(session);
    mcpm_sampling_params defaults{};
    defaults.struct_size = sizeof defaults;
    mcpm_sampling_params_default(&defaults);
    s->set_sampling(SamplingConfig::from_abi(
        read_grown_struct(params, defaults, {kSamplingParamsV1Size}, "mcpm_sampling_params")));
  });
}

MCPM_API mcpm_status mcpm_session_generate(mcpm_session* session, int32_t max_tokens, int32_t* tokens,
                                           int32_t capacity, int32_t* out_count, mcpm_finish_reason* out_finish) {
  return guarded([&] {
    SessionCall s(session);
    require_not_null(out_count, "out_count");
    require_not_null(out_finish, "out_finish");
    const GenerateResult r = s->generate(max_tokens, tokens, capacity);
    *out_count = r.count;
    *out_finish = r.finish;
    if (r.cancelled)
      throw_error(MCPM_ERR_CANCELLED,
                  "generation cancelled by an abort request after " + std::to_string(r.count) + " tokens");
    if (r.error != MCPM_OK) throw_error(r.error, r.error_message);
  });
}

MCPM_API mcpm_status mcpm_session_generate_step(mcpm_session* session, int32_t* tokens, int32_t capacity,
                                                int32_t* out_count, mcpm_finish_reason* out_finish) {
  return guarded([&] {
    SessionCall s(session);
    require_not_null(tokens, "tokens");
    require_not_null(out_count, "out_count");
    require_not_null(out_finish, "out_finish");
    if (capacity < MCPM_MAX_STEP_TOKENS)
      invalid_argument("capacity must be >= MCPM_MAX_STEP_TOKENS (" + std::to_string(MCPM_MAX_STEP_TOKENS) + "), got " +
                       std::to_string(capacity));
    const GenerateResult r = s->generate(capacity, tokens, capacity, /*single_step=*/true);
    *out_count = r.count;
    *out_finish = r.finish;
    if (r.cancelled) throw_error(MCPM_ERR_CANCELLED, "generation cancelled by an abort request");
    if (r.error != MCPM_OK) throw_error(r.error, r.error_message);
  });
}

MCPM_API mcpm_status mcpm_session_sample(mcpm_session* session, const float* logits, int32_t n_vocab,
                                         int32_t* out_token) {
  return guarded([&] {
    SessionCall s(session);
    require_not_null(logits, "logits");
    require_not_null(out_token, "out_token");
    const int32_t vocab = s->model().config().vocab_size;
    if (n_vocab != vocab)
      invalid_argument("n_vocab is " + std::to_string(n_vocab) + " but the model's vocabulary has " +
                       std::to_string(vocab) + " tokens");
    *out_token = s->sample(logits);
  });
}

MCPM_API mcpm_status mcpm_session_force_tokens(mcpm_session* session, const int32_t* tokens, int32_t n_tokens) {
  return guarded([&] {
    SessionCall s(session);
    if (n_tokens < 0) invalid_argument("n_tokens must be >= 0, got " + std::to_string(n_tokens));
    if (n_tokens > 0) require_not_null(tokens, "tokens");
    s->force_tokens(tokens, n_tokens);
  });
}

// ---- stats -------------------------------------------------------------------------------------------

MCPM_API mcpm_status mcpm_session_get_stats(const mcpm_session* session, mcpm_session_stats* stats) {
  return guarded([&] {
    require_not_null(session, "session");
    require_known_size(stats, {kSessionStatsV1Size}, "mcpm_session_stats");
    const SessionStats& st = session->impl->stats();
    mcpm_session_stats out{};
    out.prefill_tokens = st.prefill_tokens;
    out.prefill_ns = st.prefill_ns;
    out.decode_tokens = st.decode_tokens;
    out.decode_ns = st.decode_ns;
    out.sample_ns = st.sample_ns;
    out.generated_tokens = st.generated_tokens;
    out.spec_steps = st.spec_steps;
    out.spec_emitted_tokens = st.spec_emitted_tokens;
    out.spec_draft_ns = st.spec_draft_ns;
    out.spec_verify_ns = st.spec_verify_ns;
    out.spec_plain_tokens = st.spec_plain_tokens;
    out.spec_tree_size = st.spec_tree_size;
    out.spec_num_iter = st.spec_num_iter;
    write_grown_struct(stats, out);
  });
}

MCPM_API mcpm_status mcpm_session_reset_stats(mcpm_session* session) {
  return guarded([&] {
    SessionCall s(session);
    s->reset_stats();
  });
}

}  // extern "C"

// ---- continuous batching ----

MCPM_API mcpm_status mcpm_batcher_params_default(mcpm_batcher_params* params) {
  return guarded([&] {
    require_struct(params, "mcpm_batcher_params");
    params->max_rows = 64;
  });
}

MCPM_API mcpm_status mcpm_batcher_create(mcpm_model* model, const mcpm_batcher_params* params,
                                         mcpm_batcher** out_batcher) {
  return guarded([&] {
    finalized_model(model);
    require_not_null(out_batcher, "out_batcher");
    *out_batcher = nullptr;
    mcpm_batcher_params p{};
    p.struct_size = sizeof(p);
    mcpm_batcher_params_default(&p);
    if (params != nullptr) p = read_grown_struct(params, p, {}, "mcpm_batcher_params");
    if (p.max_rows < 2 || p.max_rows > 4096)
      invalid_argument("max_rows must be in [2, 4096], got " + std::to_string(p.max_rows));
    auto batcher = std::make_unique<mcpm_batcher>();
    batcher->model = model->impl;
    batcher->impl = std::make_unique<BatchRunner>(model->impl, p.max_rows);
    *out_batcher = batcher.release();
  });
}

MCPM_API void mcpm_batcher_free(mcpm_batcher* batcher) { delete batcher; }

MCPM_API mcpm_status mcpm_batcher_step(mcpm_batcher* batcher, mcpm_batch_item* items, int32_t count) {
  return guarded([&] {
    require_not_null(batcher, "batcher");
    if (count < 0) invalid_argument("count must be >= 0, got " + std::to_string(count));
    if (count == 0) return;
    require_not_null(items, "items");
    bool expected = false;
    if (!batcher->busy.compare_exchange_strong(expected, true, std::memory_order_acquire))
      invalid_argument("batcher is in use by another call");
    struct Release {
      std::atomic<bool>& busy;
      ~Release() { busy.store(false, std::memory_order_release); }
    } release{batcher->busy};
    // The call is checked whole before any session is touched.
    for (int32_t i = 0; i < count; ++i) {
      const mcpm_batch_item& it = items[i];
      const std::string where = "items[" + std::to_string(i) + "]";
      if (it.session == nullptr) invalid_argument(where + ".session is NULL");
      if (&it.session->impl->model() != batcher->model.get())
        invalid_argument(where + ".session belongs to another model than the batcher");
      if (it.n_tokens < 0) invalid_argument(where + ".n_tokens must be >= 0");
      if (it.n_tokens > 0 && it.tokens == nullptr) invalid_argument(where + ".tokens is NULL");
      if (it.n_tokens == 0 && (it.out_tokens == nullptr || it.out_capacity < 1))
        invalid_argument(where + ": a generate turn needs out_tokens with out_capacity >= 1");
      for (int32_t j = 0; j < i; ++j)
        if (items[j].session == it.session) invalid_argument(where + ".session is listed twice");
    }
    // Claim every session; a session in use elsewhere fails the call before anything ran.
    int32_t claimed = 0;
    struct Unclaim {
      mcpm_batch_item* items;
      int32_t& claimed;
      ~Unclaim() {
        for (int32_t i = 0; i < claimed; ++i) items[i].session->busy.store(false, std::memory_order_release);
      }
    } unclaim{items, claimed};
    for (; claimed < count; ++claimed) {
      bool idle = false;
      if (!items[claimed].session->busy.compare_exchange_strong(idle, true, std::memory_order_acquire))
        invalid_argument("items[" + std::to_string(claimed) +
                         "].session is in use by another call; a session must be used by one thread at a time");
    }
    std::vector<BatchItem>& batch = batcher->items;
    batch.assign(static_cast<size_t>(count), BatchItem{});
    for (int32_t i = 0; i < count; ++i) {
      batch[static_cast<size_t>(i)].session = items[i].session->impl.get();
      batch[static_cast<size_t>(i)].tokens = items[i].n_tokens > 0 ? items[i].tokens : nullptr;
      batch[static_cast<size_t>(i)].n_tokens = items[i].n_tokens;
      batch[static_cast<size_t>(i)].out = items[i].out_tokens;
    }
    batcher->impl->step(batch.data(), count);
    for (int32_t i = 0; i < count; ++i) {
      const BatchItem& b = batch[static_cast<size_t>(i)];
      items[i].out_count = b.count;
      items[i].out_finish = b.finish;
      items[i].out_status = b.status;
      items[i].out_message = b.status == MCPM_OK ? nullptr : b.message.c_str();
    }
  });
}
