/*
 * minicpm4.h — the whole C ABI of the MiniCPM4 inference engine.
 *
 * Conventions (apply to every function below unless its comment says otherwise):
 *   - Every function returns an mcpm_status. MCPM_OK (0) is success; any other value is a failure
 *     class, and mcpm_last_error() then returns a message describing it.
 *   - Failing calls leave their out-parameters untouched and the objects they were given unchanged,
 *     except where a comment says what partial effect remains.
 *   - No function aborts the process or lets a C++ exception escape. Null pointers, negative sizes,
 *     wrong struct_size values and calls in the wrong state are reported as MCPM_ERR_INVALID_ARGUMENT.
 *   - Handles are opaque. An object is freed only by its *_free function; passing a freed handle is
 *     undefined behaviour (the engine cannot detect it), passing NULL to *_free is a no-op.
 *   - Parameter structs are plain data and start with `struct_size`, which the caller sets to
 *     sizeof(the struct) as compiled against this header. Call the matching *_default() function
 *     first, then change the fields you need. A larger struct_size than the library knows is
 *     rejected; this is how the ABI grows without breaking old callers.
 *   - Booleans are int32_t: 0 is false, anything else true.
 *   - Strings are UTF-8 and NUL-terminated. Strings returned by the library are owned by it.
 *
 * Threading: a finalized mcpm_model is immutable and may be shared by any number of sessions on any
 * threads. An mcpm_session is used by one thread at a time; a second concurrent call on the same
 * session fails with MCPM_ERR_INVALID_ARGUMENT ("session is in use") instead of corrupting it.
 * mcpm_session_request_abort() is the one session function that any thread may call at any time.
 */
#ifndef MINICPM4_H
#define MINICPM4_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  if defined(MCPM_BUILDING_LIBRARY)
#    define MCPM_API __declspec(dllexport)
#  else
#    define MCPM_API __declspec(dllimport)
#  endif
#else
#  define MCPM_API __attribute__((visibility("default")))
#endif

/* Version of this header's ABI. Bumped on any incompatible change; compare with mcpm_abi_version(). */
#define MCPM_ABI_VERSION 1

/* Status codes: one per failure class. */
typedef int32_t mcpm_status;
#define MCPM_OK 0
#define MCPM_ERR_INVALID_ARGUMENT 1     /* bad pointer, size, name, shape, dtype, or call in the wrong state */
#define MCPM_ERR_OUT_OF_MEMORY 2        /* an allocation failed; nothing was changed */
#define MCPM_ERR_UNSUPPORTED 3          /* valid request the engine cannot serve (e.g. a config it does not implement) */
#define MCPM_ERR_CONTEXT_FULL 4         /* the tokens do not fit into the session's KV capacity */
#define MCPM_ERR_CANCELLED 5            /* stopped by mcpm_session_request_abort() */
#define MCPM_ERR_BACKEND_UNAVAILABLE 6  /* the requested backend is not compiled in or has no usable device */
#define MCPM_ERR_INTERNAL 7             /* a bug in the engine; the message says where */
#define MCPM_ERR_CALLBACK 8             /* a host callback reported failure; the host keeps its own message */
#define MCPM_ERR_NONFINITE 9            /* the model's logits hold a NaN or an infinity (corrupt weights, overflow);
                                           the message names the generation step; nothing was sampled there */

/* Element types of weight tensors. */
typedef int32_t mcpm_dtype;
#define MCPM_DTYPE_F32 0
#define MCPM_DTYPE_F16 1
#define MCPM_DTYPE_BF16 2
#define MCPM_DTYPE_I32 3  /* int32: packed int4 weights (qweight), AutoGPTQ qzeros and g_idx */

/* Backends. */
typedef int32_t mcpm_backend;
#define MCPM_BACKEND_AUTO 0   /* the fastest compiled-in backend with a usable device, else CPU */
#define MCPM_BACKEND_CPU 1
#define MCPM_BACKEND_CUDA 2

/* What the CPU backend's linear layers compute with (mcpm_model_options.cpu_precision). */
typedef int32_t mcpm_cpu_precision;
#define MCPM_CPU_PRECISION_DEFAULT 0 /* FAST, unless the environment variable MCPM_CPU_PRECISION is "exact" */
#define MCPM_CPU_PRECISION_FAST 1    /* int4 linears quantise each token's activations to int8 per 128 inputs
                                      * and use integer dot products (W4A8); bf16 linears over 65 or more
                                      * tokens round activations to bf16 where the CPU has AVX512-BF16 */
#define MCPM_CPU_PRECISION_EXACT 2   /* fp32 activations everywhere (W4A16, bf16 x fp32): the reference */

/* Bit flags for mcpm_build_info.backends. */
#define MCPM_BACKEND_FLAG_CPU 1u
#define MCPM_BACKEND_FLAG_CUDA 2u

/* RoPE scaling types. */
typedef int32_t mcpm_rope_scaling;
#define MCPM_ROPE_SCALING_NONE 0
#define MCPM_ROPE_SCALING_LONGROPE 1

/* Which logits an evaluation call writes to the caller's buffer. */
typedef int32_t mcpm_logits_mode;
#define MCPM_LOGITS_NONE 0  /* write nothing (the last position's logits are still kept for sampling) */
#define MCPM_LOGITS_LAST 1  /* write [vocab] floats: the last position */
#define MCPM_LOGITS_ALL 2   /* write [n_tokens, vocab] floats, row-major: every position */

/* Why a generate call returned. */
typedef int32_t mcpm_finish_reason;
#define MCPM_FINISH_NONE 0          /* the call's token budget was used; call again to continue */
#define MCPM_FINISH_STOP_TOKEN 1    /* a stop token was sampled (it is the last token returned and was NOT added to the KV cache) */
#define MCPM_FINISH_MAX_TOKENS 2    /* max_new_tokens of the sampling params were generated */
#define MCPM_FINISH_CONTEXT_FULL 3  /* the KV cache is full; rewind or reset to continue */

/* ------------------------------------------------------------------------------------------------
 * Library information
 * ---------------------------------------------------------------------------------------------- */

/* Returns MCPM_ABI_VERSION as compiled into the library. Never fails; thread-safe. A host built
 * against a different MCPM_ABI_VERSION must not use the library. */
MCPM_API uint32_t mcpm_abi_version(void);

typedef struct mcpm_build_info {
  uint32_t struct_size;       /* in: sizeof(mcpm_build_info) */
  uint32_t abi_version;       /* MCPM_ABI_VERSION of the library */
  const char* version;        /* library version, e.g. "0.1.0"; static storage */
  uint32_t backends;          /* MCPM_BACKEND_FLAG_* of the backends compiled in */
  int32_t cuda_version;       /* CUDA toolkit version compiled against as 1000*major+10*minor, 0 without CUDA */
  const char* cuda_archs;     /* CUDA architectures compiled, e.g. "80;86;90"; "" without CUDA; static storage */
  const char* cpu_features;   /* vector paths compiled and the one selected at run time, e.g. "avx512bf16 (selected), avx512vnni, avx512, avx2, scalar"; static storage */
  const char* compiler;       /* compiler and build type; static storage */
} mcpm_build_info;

/* Fills *info. Thread-safe.
 * Errors: MCPM_ERR_INVALID_ARGUMENT if info is NULL or info->struct_size is not a known size. */
MCPM_API mcpm_status mcpm_get_build_info(mcpm_build_info* info);

/* ------------------------------------------------------------------------------------------------
 * Devices
 * ---------------------------------------------------------------------------------------------- */

/* One CUDA device as the driver reports it. */
typedef struct mcpm_cuda_device_info {
  uint32_t struct_size;         /* in: sizeof(mcpm_cuda_device_info) */
  int32_t index;                /* the ordinal to pass as mcpm_model_options.device_index */
  char name[256];               /* e.g. "NVIDIA H100 80GB HBM3"; NUL-terminated */
  int32_t compute_capability;   /* 10 * major + minor, e.g. 90 */
  int32_t multiprocessor_count;
  uint64_t total_memory_bytes;
  uint64_t free_memory_bytes;   /* free device memory at the time of the call (cudaMemGetInfo) */
  int32_t usable;               /* nonzero: the CUDA backend runs on this device */
  char problem[256];            /* why not when usable is 0 (e.g. "sm_75; sm_80 or newer required"), else "" */
} mcpm_cuda_device_info;

/* Writes the number of CUDA devices to *out_count (at least 1 on success). Thread-safe.
 * Errors: BACKEND_UNAVAILABLE when the CUDA backend is not compiled in, or there is no driver or no
 * device (mcpm_last_error() says which: this is how a host reports "CUDA unavailable"). */
MCPM_API mcpm_status mcpm_cuda_device_count(int32_t* out_count);

/* Fills *info for device `index` in [0, count). Querying free memory creates the device's primary
 * CUDA context if no one has yet. Errors: INVALID_ARGUMENT (NULL, struct_size, index out of range),
 * BACKEND_UNAVAILABLE as for mcpm_cuda_device_count. */
MCPM_API mcpm_status mcpm_cuda_device_get_info(int32_t index, mcpm_cuda_device_info* info);

/* Returns the message of the last failing call made on this thread, or "" if none failed yet. The
 * pointer stays valid until the next call into the library on the same thread. Never NULL. A
 * successful call does not clear it. */
MCPM_API const char* mcpm_last_error(void);

/* Returns a static, human-readable name for a status code ("ok", "invalid argument", ...). Never NULL. */
MCPM_API const char* mcpm_status_string(mcpm_status status);

/* ------------------------------------------------------------------------------------------------
 * Model
 * ---------------------------------------------------------------------------------------------- */

typedef struct mcpm_model mcpm_model;

/* The architecture of a MiniCPM4 (Hugging Face MiniCPMForCausalLM) model. */
typedef struct mcpm_model_config {
  uint32_t struct_size;                 /* in: sizeof(mcpm_model_config) */
  int32_t vocab_size;
  int32_t hidden_size;
  int32_t num_layers;
  int32_t num_heads;
  int32_t num_kv_heads;                 /* must divide num_heads */
  int32_t head_dim;                     /* even; usually hidden_size / num_heads */
  int32_t intermediate_size;
  int32_t max_position_embeddings;
  float rms_norm_eps;
  float rope_theta;
  mcpm_rope_scaling rope_scaling;       /* MCPM_ROPE_SCALING_NONE or _LONGROPE */
  const float* rope_short_factor;       /* LONGROPE: head_dim/2 floats; copied during mcpm_model_create */
  const float* rope_long_factor;        /* LONGROPE: head_dim/2 floats; copied during mcpm_model_create */
  int32_t rope_factor_count;            /* LONGROPE: must equal head_dim/2; 0 otherwise */
  int32_t original_max_position_embeddings; /* LONGROPE: the context the short factors were trained for */
  float scale_emb;                      /* embeddings are multiplied by this */
  float scale_depth;                    /* each sublayer output is multiplied by scale_depth/sqrt(num_layers) */
  float dim_model_base;                 /* the LM head input is multiplied by dim_model_base/hidden_size */
  int32_t tie_word_embeddings;          /* nonzero: lm_head.weight is model.embed_tokens.weight and must not be set */
  /* InfLLM v2 block-sparse attention (config.json "sparse_config", Hugging Face semantics). The
   * fields below are read only when sparse_enabled is nonzero. Lengths are in tokens. */
  int32_t sparse_enabled;               /* nonzero: InfLLM v2 attention once the context reaches sparse_dense_len; 0: dense (default) */
  int32_t sparse_kernel_size;           /* level-1 compression kernel length, >= sparse_kernel_stride; default 32 */
  int32_t sparse_kernel_stride;         /* level-1 compression kernel stride, > 0; default 16 (level 2 is 4x both) */
  int32_t sparse_init_blocks;           /* leading blocks every query attends to (attention sink), >= 0; default 1 */
  int32_t sparse_block_size;            /* selection block length, a multiple of sparse_kernel_stride; default 64 */
  int32_t sparse_window_size;           /* local window, a multiple of sparse_block_size (>= 0); default 2048 */
  int32_t sparse_topk;                  /* blocks selected on top of the local window's, >= 0; default 64 */
  int32_t sparse_dense_len;             /* total lengths below this use dense attention; -1 = always sparse; default 8192 */
  int32_t sparse_use_nope;              /* nonzero: score blocks with un-rotated Q/K (UNSUPPORTED for now); must be 0 */
} mcpm_model_config;

/* Fills *config with MiniCPM4-0.5B-shaped defaults (no LongRoPE; sparse attention off with the
 * MiniCPM4-8B sparse_config sizes 32/16/1/64/2048/64/8192). config->struct_size must be set.
 * Errors: MCPM_ERR_INVALID_ARGUMENT for NULL or an unknown struct_size. */
MCPM_API mcpm_status mcpm_model_config_default(mcpm_model_config* config);

typedef struct mcpm_model_options {
  uint32_t struct_size;     /* in: sizeof(mcpm_model_options) */
  mcpm_backend backend;     /* default MCPM_BACKEND_AUTO */
  int32_t device_index;     /* CUDA device ordinal; ignored by the CPU backend; default 0 */
  int32_t num_threads;      /* CPU worker threads per session; 0 = one per available core (default) */
  /* Added after the first release of ABI 1 (a struct_size ending before it is accepted and means 0). */
  uint64_t weight_arena_bytes; /* > 0: place the weights in one backend allocation of this many bytes,
                                * made by mcpm_model_create (OUT_OF_MEMORY there if it does not fit).
                                * Size it as the sum, over the tensors the host will set, of data_size
                                * rounded up to a multiple of 256 (a fused int4 tensor counts as its
                                * parts, split along N). Tensors past it get allocations of their own.
                                * 0 (default): one allocation per tensor. */
  /* Added with the CPU int8 kernels (a struct_size ending before it means MCPM_CPU_PRECISION_DEFAULT). */
  mcpm_cpu_precision cpu_precision; /* the CPU backend's linears; ignored by CUDA; default 0 (DEFAULT) */
} mcpm_model_options;

/* Fills *options with defaults. Errors: MCPM_ERR_INVALID_ARGUMENT for NULL or an unknown struct_size. */
MCPM_API mcpm_status mcpm_model_options_default(mcpm_model_options* options);

/* Creates an empty model with the given architecture on the chosen backend. The config (including
 * the LongRoPE factor arrays) is copied; the caller keeps ownership of everything it passed.
 * options may be NULL for defaults. On success *out_model receives a handle owned by the caller,
 * released with mcpm_model_free(). The model is not usable by sessions until mcpm_model_finalize().
 * Errors: INVALID_ARGUMENT (inconsistent config: the message names the field), BACKEND_UNAVAILABLE
 * (backend not compiled in or no device), OUT_OF_MEMORY, UNSUPPORTED. */
MCPM_API mcpm_status mcpm_model_create(const mcpm_model_config* config, const mcpm_model_options* options,
                                       mcpm_model** out_model);

/* Copies one weight tensor from host memory into the engine's own storage, in its checkpoint dtype
 * (bf16 stays 2 bytes per element). The caller may free or unmap `data` as soon as this returns.
 * `name` is the Hugging Face tensor name ("model.embed_tokens.weight",
 * "model.layers.3.self_attn.q_proj.weight", "lm_head.weight", ...); `shape` holds `ndim` dimensions,
 * outermost first, exactly as in the checkpoint; `data_size` is the byte size of `data`, which must
 * equal the element count times the dtype size. Setting a tensor twice replaces it.
 * Not thread-safe with other calls on the same model. Fails after mcpm_model_finalize().
 *
 * W4A16 int4 linear layers (the seven projections of every layer; the embedding, norms and LM head
 * stay dense): instead of "<linear>.weight" [N, K] a layer may be given as "<linear>.qweight"
 * (MCPM_DTYPE_I32 [K/16, 2N], Marlin layout) plus "<linear>.scales" (MCPM_DTYPE_F16 [K/128, N],
 * Marlin-permuted, finite), i.e. symmetric 4-bit with group size 128 and zero point 8:
 * w[n][k] = (q - 8) * scale (mcpm_int4_quantize writes this format; mcpm_int4_repack_gptq converts
 * AutoGPTQ tensors to it). It needs K % 128 == 0 and N % 64 == 0. CPM.cu's fused names
 * "self_attn.qkv_proj.{qweight,scales}" (columns q | k | v) and "mlp.gate_up_proj.{qweight,scales}"
 * (gate | up) are accepted and split. Setting one form of a layer drops the other form.
 * Errors: INVALID_ARGUMENT (unknown name, shape that disagrees with the config, unknown dtype,
 * data_size mismatch, model already finalized, an int4 layer whose shape the layout does not
 * support, non-finite scales; the message names the tensor and both shapes), OUT_OF_MEMORY. */
MCPM_API mcpm_status mcpm_model_set_tensor(mcpm_model* model, const char* name, mcpm_dtype dtype,
                                           const int64_t* shape, int32_t ndim, const void* data,
                                           size_t data_size);

/* Checks that every tensor the architecture needs is present and makes the model ready for
 * sessions. After success the model is immutable. Calling it twice is an error.
 * Errors: INVALID_ARGUMENT naming the first missing tensor (and how many are missing; an int4 layer
 * with qweight but no scales, or the reverse, names the missing half), or if already finalized. */
MCPM_API mcpm_status mcpm_model_finalize(mcpm_model* model);

/* Number of weight bytes held by the model (all tensors, in their stored dtypes). */
MCPM_API mcpm_status mcpm_model_weight_bytes(const mcpm_model* model, uint64_t* out_bytes);

/* The weight arena (mcpm_model_options.weight_arena_bytes): its size in bytes (0: none), the bytes
 * its tensors take (replaced tensors included), and the number of tensors held in allocations of
 * their own (every tensor without an arena). Out pointers may be NULL. */
MCPM_API mcpm_status mcpm_model_weight_arena(const mcpm_model* model, uint64_t* out_reserved, uint64_t* out_used,
                                             int32_t* out_separate);

/* Number of linear layers held as int4 (0 for a dense model; 7 per layer when fully quantized). */
MCPM_API mcpm_status mcpm_model_int4_linear_count(const mcpm_model* model, int32_t* out_count);

/* Releases the caller's reference to the model. Sessions hold their own reference, so a model freed
 * before its sessions stays alive until the last session is freed. NULL is a no-op. Must not race
 * with other calls that use the same handle. */
MCPM_API void mcpm_model_free(mcpm_model* model);

/* ------------------------------------------------------------------------------------------------
 * EAGLE draft model for speculative decoding
 * ---------------------------------------------------------------------------------------------- */

typedef struct mcpm_draft mcpm_draft;

/* The architecture of an EAGLE(-2) draft for a MiniCPM4 target (the MiniCPM4-Eagle-FRSpec layout):
 * fc [hidden, 2*hidden] over [embedding ; target feature], then num_layers decoder layers, reusing
 * the target's embedding and LM head. hidden_size is the target's. */
typedef struct mcpm_draft_config {
  uint32_t struct_size;       /* in: sizeof(mcpm_draft_config) */
  int32_t num_layers;         /* default 1 */
  int32_t num_heads;
  int32_t num_kv_heads;       /* must divide num_heads */
  int32_t head_dim;           /* must equal the target's (the RoPE tables are shared) */
  int32_t intermediate_size;
  float rms_norm_eps;
  float residual_scale;       /* sublayer outputs are multiplied by this (MiniCPM4: scale_depth/sqrt(target layers + 1)) */
  int32_t use_input_norm;     /* nonzero: input_norm1/input_norm2 RMSNorms before fc (MiniCPM4); default 1 */
  int32_t use_attn_norm;      /* nonzero: layer 0 has input_layernorm (MiniCPM4); 0: skipped (plain EAGLE); default 1 */
  /* Added after the first release of ABI 1 (a struct_size ending before it is accepted and means 0). */
  int32_t attention_window;   /* draft attention reads at most the last attention_window cache rows before a draft
                                 call (plus the call's own rows: each query sees at least its window); 0 = the
                                 whole context (default). Bounds the draft's cost at long contexts (CPM.cu's
                                 eagle_window_size); the output does not change, only the draft's proposals. */
} mcpm_draft_config;

/* Fills *config with the target's attention shape (heads, KV heads, head_dim, FFN size, eps) and
 * the MiniCPM4 draft defaults (1 layer, both norms, residual scale scale_depth/sqrt(layers + 1), no
 * attention window).
 * Errors: INVALID_ARGUMENT for NULL, an unknown struct_size or a model that is not finalized. */
MCPM_API mcpm_status mcpm_draft_config_default(const mcpm_model* target, mcpm_draft_config* config);

/* Creates an empty draft over a finalized target model (the draft holds a reference to it). On
 * success *out_draft is owned by the caller (mcpm_draft_free). Fill it with mcpm_draft_set_tensor,
 * optionally restrict its vocabulary (mcpm_draft_set_vocabulary), then mcpm_draft_finalize.
 * Errors: INVALID_ARGUMENT naming the bad field, OUT_OF_MEMORY. */
MCPM_API mcpm_status mcpm_draft_create(mcpm_model* target, const mcpm_draft_config* config, mcpm_draft** out_draft);

/* Copies one draft tensor, with the conventions of mcpm_model_set_tensor. Names (checkpoint names):
 * "fc.weight" [H, 2H], "fc.bias" [H] (optional), "input_norm1.weight", "input_norm2.weight" [H],
 * "layers.{i}.input_layernorm.weight", "layers.{i}.self_attn.{q,k,v,o}_proj.weight",
 * "layers.{i}.post_attention_layernorm.weight", "layers.{i}.mlp.{gate,up,down}_proj.weight".
 * Int4 layers as for the model; CPM.cu's quantized fc is "fc.qweight" [H/16, 4H] / "fc.scales"
 * [H/128, 2H], the N-concatenation of the embedding half's and the feature half's Marlin tensors.
 * Errors: INVALID_ARGUMENT (unknown name, shape, dtype, size, already finalized), OUT_OF_MEMORY. */
MCPM_API mcpm_status mcpm_draft_set_tensor(mcpm_draft* draft, const char* name, mcpm_dtype dtype, const int64_t* shape,
                                           int32_t ndim, const void* data, size_t data_size);

/* FR-Spec: restricts the draft's LM head to `count` target token ids (row i of the head is token
 * ids[i], with the target's logit scale); the target still verifies over the whole vocabulary, so
 * outputs do not change. ids are copied. Errors: INVALID_ARGUMENT (count outside [1, vocab], an id
 * out of range or repeated, already finalized). */
MCPM_API mcpm_status mcpm_draft_set_vocabulary(mcpm_draft* draft, const int32_t* ids, int32_t count);

/* Checks that every required tensor is present and builds the draft head. Errors: INVALID_ARGUMENT
 * naming the first missing tensor, or if already finalized; OUT_OF_MEMORY. */
MCPM_API mcpm_status mcpm_draft_finalize(mcpm_draft* draft);

/* Number of bytes the draft holds (its tensors and an FR-Spec head). */
MCPM_API mcpm_status mcpm_draft_weight_bytes(const mcpm_draft* draft, uint64_t* out_bytes);

/* Releases the caller's reference; sessions using the draft keep theirs. NULL is a no-op. */
MCPM_API void mcpm_draft_free(mcpm_draft* draft);

/* ------------------------------------------------------------------------------------------------
 * W4A16 int4 weights (GPTQ symmetric 4-bit, group size 128 along K, zero point 8, fp16 scales)
 *
 * Stateless helpers for hosts that load or write quantized checkpoints. Shapes: a linear layer has
 * K input and N output features (nn.Linear.weight is [N, K]); K % 128 == 0 and N % 64 == 0.
 * ---------------------------------------------------------------------------------------------- */

typedef int32_t mcpm_int4_layout;
#define MCPM_INT4_LAYOUT_MARLIN 0  /* qweight int32 [K/16, 2N] (Marlin tiles), scales fp16 [K/128, N] permuted */
#define MCPM_INT4_LAYOUT_GPTQ 1    /* AutoGPTQ: qweight int32 [K/8, N] (nibble j of row i is k = 8i + j), scales fp16 [K/128, N] */

typedef struct mcpm_int4_quantize_params {
  uint32_t struct_size;     /* in: sizeof(mcpm_int4_quantize_params) */
  mcpm_int4_layout layout;  /* default MCPM_INT4_LAYOUT_MARLIN */
  int32_t clip_search;      /* nonzero: per group, also try clipping ranges p*absmax (p = 1, 0.99, ..., 0.21) and keep the one with the least squared error; 0: plain
                               round-to-nearest with the absmax scale (default) */
  int32_t num_threads;      /* worker threads; 0 = one per available core (default) */
} mcpm_int4_quantize_params;

/* Fills *params with defaults. Errors: INVALID_ARGUMENT for NULL or an unknown struct_size. */
MCPM_API mcpm_status mcpm_int4_quantize_params_default(mcpm_int4_quantize_params* params);

/* Quantizes w ([N, K] row-major, dtype F32/F16/BF16, w_size bytes): per output feature n and group
 * g of 128 inputs, scale = fp16(2 * absmax / 15) (absmax 0 -> 1), q = clamp(round_half_even(w / scale)
 * + 8, 0, 15). Writes qweight (qweight_size bytes: 4 * K/16 * 2N for Marlin, 4 * K/8 * N for GPTQ) and
 * scales (scales_size bytes: 2 * K/128 * N, fp16 bits) in params->layout. params may be NULL.
 * Errors: INVALID_ARGUMENT (shape, dtype, a size that does not match, NULL pointers, non-finite
 * weights, a scale that overflows fp16). */
MCPM_API mcpm_status mcpm_int4_quantize(mcpm_dtype dtype, const void* w, size_t w_size, int64_t n_out, int64_t k_in,
                                        const mcpm_int4_quantize_params* params, int32_t* qweight,
                                        size_t qweight_size, uint16_t* scales, size_t scales_size);

/* Repacks one AutoGPTQ linear (checkpoint_format "gptq", sym, desc_act false, group 128) into the
 * Marlin layout that mcpm_model_set_tensor takes: gptq_qweight int32 [K/8, N], gptq_scales fp16 [K/128, N];
 * qzeros int32 [K/128, N/8] and g_idx int32 [K] may be NULL, and when given are checked to be the
 * symmetric zero point (every nibble 7) and g_idx[k] == k / 128 (anything else is act-order or an
 * asymmetric quantization: INVALID_ARGUMENT). Each size is in bytes. Output sizes as for
 * mcpm_int4_quantize with the Marlin layout. */
MCPM_API mcpm_status mcpm_int4_repack_gptq(int64_t n_out, int64_t k_in, const int32_t* gptq_qweight, size_t gptq_qweight_size,
                                           const uint16_t* gptq_scales, size_t gptq_scales_size, const int32_t* qzeros,
                                           size_t qzeros_size, const int32_t* g_idx, size_t g_idx_size,
                                           int32_t* qweight, size_t qweight_size, uint16_t* scales,
                                           size_t scales_size);

/* ------------------------------------------------------------------------------------------------
 * Session: a KV cache and the generation state of one conversation
 * ---------------------------------------------------------------------------------------------- */

typedef struct mcpm_session mcpm_session;

typedef struct mcpm_session_params {
  uint32_t struct_size;     /* in: sizeof(mcpm_session_params) */
  int32_t context_capacity; /* KV cache capacity in tokens; 0 = min(max_position_embeddings, 4096), or the most the
                               kv_memory limits below allow when one is set. Default 0 */
  int32_t prefill_chunk;    /* tokens per prefill chunk (activation memory scales with it); default 256 */
  const mcpm_draft* draft;  /* EAGLE draft for speculative decoding (finalized, over the same model); NULL = none (default) */
  /* KV cache memory limits (added after the first release of ABI 1; a struct_size that ends before
   * them is accepted and means 0 for both). The KV cache is every layer's K and V rows (the draft's
   * too) plus InfLLM v2's compressed keys; mcpm_session_kv_bytes_per_token() gives its size per token.
   * With a limit the capacity is the largest that fits it, capped at max_position_embeddings and, when
   * set, at context_capacity; a limit that holds no token at all fails with OUT_OF_MEMORY. */
  uint64_t kv_memory_bytes;   /* at most this many bytes; 0 = no byte limit (default) */
  float kv_memory_fraction;   /* at most this fraction, in (0, 1], of the memory free when the session is created
                                 (CUDA: the device's free memory; CPU: the system's available memory); 0 = off (default) */
  int32_t cuda_graphs;        /* nonzero (default): on CUDA, each generated token of a session without a draft, and
                                 each speculative verification pass of a session with one, runs as a replayed CUDA
                                 graph (one recorded per context-length bucket of powers of two from 256; dense,
                                 InfLLM v2 and tree steps apart); 0: kernels are launched one by one. The output is the same. Ignored by the CPU backend. Also added after the
                                 first release (an older struct_size means 1). */
} mcpm_session_params;

/* Fills *params with defaults. Errors: INVALID_ARGUMENT for NULL or an unknown struct_size. */
MCPM_API mcpm_status mcpm_session_params_default(mcpm_session_params* params);

/* Creates a session over a finalized model, allocating its KV cache. The session holds a reference
 * to the model (and to params->draft, whose own draft KV cache it allocates). With a draft the KV
 * cache has 64 extra rows for the tree under verification. params may be NULL for defaults. Thread-safe with respect to the model (sessions
 * may be created concurrently). The KV cache capacity cannot exceed max_position_embeddings.
 * With LongRoPE, the long factors are used when context_capacity exceeds
 * original_max_position_embeddings, else the short factors (the choice is fixed per session).
 * Errors: INVALID_ARGUMENT (model not finalized, bad capacity or chunk), OUT_OF_MEMORY. */
MCPM_API mcpm_status mcpm_session_create(mcpm_model* model, const mcpm_session_params* params,
                                         mcpm_session** out_session);

/* Writes the KV cache bytes one token of context costs a session of this model (with `draft`, which
 * may be NULL; the same model as the session's) to *out_bytes. Errors: INVALID_ARGUMENT. */
MCPM_API mcpm_status mcpm_session_kv_bytes_per_token(const mcpm_model* model, const mcpm_draft* draft,
                                                     uint64_t* out_bytes);

/* Frees the session and drops its model reference. NULL is a no-op. Must not race with other calls
 * on the same session (mcpm_session_request_abort included). */
MCPM_API void mcpm_session_free(mcpm_session* session);

/* Appends n_tokens tokens to the KV cache, evaluating them in chunks of prefill_chunk, and keeps the
 * last position's logits for sampling. logits_mode selects what is written to `logits`, which must
 * hold logits_capacity floats: vocab (LAST) or n_tokens*vocab (ALL); it may be NULL with
 * MCPM_LOGITS_NONE. Token ids must lie in [0, vocab).
 * An abort request is honoured between chunks: the call then fails with CANCELLED and the session
 * is rewound to its length before the call.
 * Errors: INVALID_ARGUMENT (bad ids, buffer too small, session in use), CONTEXT_FULL (length +
 * n_tokens > capacity; nothing is appended), CANCELLED. */
MCPM_API mcpm_status mcpm_session_prefill(mcpm_session* session, const int32_t* tokens, int32_t n_tokens,
                                          mcpm_logits_mode logits_mode, float* logits, size_t logits_capacity);

/* Appends one token and writes its logits ([vocab] floats) to `logits` (may be NULL to only keep
 * them for sampling). The single-token fast path; equivalent to prefill of one token.
 * Errors: INVALID_ARGUMENT, CONTEXT_FULL. */
MCPM_API mcpm_status mcpm_session_decode(mcpm_session* session, int32_t token, float* logits,
                                         size_t logits_capacity);

/* Tokens currently in the KV cache. */
MCPM_API mcpm_status mcpm_session_length(const mcpm_session* session, int32_t* out_length);

/* KV cache capacity in tokens. */
MCPM_API mcpm_status mcpm_session_capacity(const mcpm_session* session, int32_t* out_capacity);

/* Copies the token ids in the KV cache (up to `capacity` of them) into `tokens` and the total count
 * into *out_count. tokens may be NULL when capacity is 0 (to query the count). */
MCPM_API mcpm_status mcpm_session_tokens(const mcpm_session* session, int32_t* tokens, int32_t capacity,
                                         int32_t* out_count);

/* Shortens the KV cache to new_length tokens (0 <= new_length <= length). The logits for sampling
 * are invalidated unless new_length equals the current length: prefill or decode again before
 * generating. Errors: INVALID_ARGUMENT. */
MCPM_API mcpm_status mcpm_session_rewind(mcpm_session* session, int32_t new_length);

/* Note for sessions with a draft: generation leaves the last generated token out of the KV cache
 * (the next draft-and-verify round evaluates it with the tree), and a rewind re-evaluates the last
 * kept token on the next prefill or decode. Length, tokens and results are the same as without a
 * draft; only the work is scheduled differently. */

/* Empties the KV cache, the pending logits and the generation counters; keeps sampling params and stats. */
MCPM_API mcpm_status mcpm_session_reset(mcpm_session* session);

/* Asks the call running on this session (prefill or generate), or the next one if none is running,
 * to stop at its next check point (between prefill chunks or between generated tokens). Any thread,
 * any time, lock-free. The request is consumed by the call that honours it; mcpm_session_clear_abort
 * withdraws an unconsumed request. */
MCPM_API mcpm_status mcpm_session_request_abort(mcpm_session* session);
MCPM_API mcpm_status mcpm_session_clear_abort(mcpm_session* session);

/* ------------------------------------------------------------------------------------------------
 * Sampling and generation
 * ---------------------------------------------------------------------------------------------- */

/* Grammar-constrained sampling: the host's set of tokens allowed next. Writes, for the state after
 * tokens[0, n_tokens), the allowed token ids as a bitmask: token id t is allowed iff bit (t & 31) of
 * mask[t >> 5] is set; mask_words = (n_vocab + 31) / 32 (bits past n_vocab are ignored; the words
 * arrive zeroed). `tokens` are the tokens appended to the session since mcpm_session_set_sampling
 * (generated, forced or prefilled; a rewind or reset drops those it removes), oldest first; during a
 * speculative round it ends with a hypothetical draft path, which may never be emitted (calls are not
 * in output order, and a state may be asked again). The engine then samples only allowed tokens:
 * masked-out tokens have probability 0, greedy decoding takes the argmax over the allowed ones. Stop
 * tokens are tokens like any other: the host sets their bits when the output may end. Return 0 (the
 * mask is written), MCPM_TOKEN_MASK_YIELD (the host appends this state's next tokens itself, with
 * mcpm_session_force_tokens: the generating call returns before sampling in this state, and a
 * speculative round ends at it), or any other value to fail the generating call with
 * MCPM_ERR_CALLBACK. Called on the thread that called into
 * the session; it must not call functions of the same session. The pointers are valid only during the
 * call. */
#define MCPM_TOKEN_MASK_YIELD 1
typedef int32_t (*mcpm_token_mask_fn)(void* user_data, const int32_t* tokens, int32_t n_tokens, uint32_t* mask,
                                      int32_t mask_words);

/* Logit processing order (as in Hugging Face transformers): token mask → penalties over the last
 * penalty_last_n context tokens → temperature → top-k → top-p → min-p → draw. temperature <= 0 is
 * greedy (argmax after penalties; ties go to the lowest id). */
typedef struct mcpm_sampling_params {
  uint32_t struct_size;       /* in: sizeof(mcpm_sampling_params) */
  float temperature;          /* default 0; any value <= 0 is greedy */
  int32_t top_k;              /* keep the k most likely tokens; 0 = off (default) */
  float top_p;                /* keep the smallest set with cumulative probability >= top_p; 1 = off (default) */
  float min_p;                /* drop tokens with p < min_p * p_max; 0 = off (default) */
  float repetition_penalty;   /* CTRL-style: seen token logits l -> l/r if l > 0 else l*r; 1 = off (default) */
  float frequency_penalty;    /* l -= frequency_penalty * count; 0 = off (default) */
  float presence_penalty;     /* l -= presence_penalty if count > 0; 0 = off (default) */
  int32_t penalty_last_n;     /* context window the penalties look at; -1 = whole context, 0 = none; default 64 */
  uint64_t seed;              /* RNG seed: same seed, params and context give the same tokens; default 0 */
  const int32_t* stop_tokens; /* token ids that end generation; copied by mcpm_session_set_sampling */
  int32_t stop_token_count;
  int32_t max_new_tokens;     /* generation ends after this many tokens; 0 = until stop or context full. Default 0 */
  /* Speculative decoding (EAGLE-2 dynamic trees), used when the session has a draft. The output is
   * the same as without it: identical tokens for greedy decoding, and the same distribution (the
   * same tokens for the same seed, up to floating-point ties) when sampling. */
  int32_t speculative;        /* nonzero: use the session's draft (default 1); 0: plain decoding */
  int32_t spec_num_iter;      /* draft levels, the root's included, in [1, 64]; default 2 */
  int32_t spec_topk_per_iter; /* children per expanded node and frontier width, in [1, spec_tree_size-1]; default 10 */
  int32_t spec_tree_size;     /* tree nodes including the root, in [2, 64]; default 12. Also
                                 spec_topk_per_iter*(spec_num_iter-1) <= 64 and spec_tree_size-1 <= the
                                 number of drafted candidates. MCPM_SPEC_TREE_AUTO: adaptive speculation,
                                 see below (spec_num_iter and spec_topk_per_iter are then ignored) */
  /* Added after the first release of ABI 1 (a struct_size ending before token_mask is accepted and
   * means NULL). With a draft, the draft proposes only tokens the masks allow: each round asks the mask
   * of the root and of every drafted node whose token its parent's mask allows. */
  mcpm_token_mask_fn token_mask; /* NULL (default): no constraint */
  void* token_mask_user_data;    /* passed to token_mask as user_data */
} mcpm_sampling_params;

/* spec_tree_size = MCPM_SPEC_TREE_AUTO: before each step the session chooses plain decoding or one round with a
 * tree of 4, 8, 16 or 32 nodes (1 to 4 draft levels), whichever it expects to emit the most tokens per second. It
 * measures as it runs: the wall time of plain steps and of rounds per tree, and the tokens each emitted (decayed,
 * so the choice follows the text). A tree is tried only while an upper bound on its rate (d levels emit at most
 * d+1 tokens and cost at least d draft levels plus one target pass) beats the best measured choice, and trying
 * choices other than the best may lose at most ~3% of the decoding time. While it decodes plainly the draft is
 * not run. The output is the same whatever it chooses. mcpm_session_stats reports the choice. */
#define MCPM_SPEC_TREE_AUTO 0

/* Fills *params with defaults (greedy). Errors: INVALID_ARGUMENT for NULL or an unknown struct_size. */
MCPM_API mcpm_status mcpm_sampling_params_default(mcpm_sampling_params* params);

/* Sets the sampling params of the session (copied), seeds its RNG and resets its count of generated
 * tokens. Call before each generation. Errors: INVALID_ARGUMENT naming the bad field. */
MCPM_API mcpm_status mcpm_session_set_sampling(mcpm_session* session, const mcpm_sampling_params* params);

/* Generates up to max_tokens tokens (at most `capacity` of `tokens`): samples from the pending
 * logits, appends the token to the KV cache and evaluates it, repeatedly. Writes the new ids to
 * `tokens`, their count to *out_count and why it returned to *out_finish. A stop token is returned
 * as the last token but not appended to the KV cache. Returning with MCPM_FINISH_NONE after a small
 * max_tokens lets the host stream text and cancel between calls.
 * An abort request is honoured between tokens: the call then returns CANCELLED with *out_count
 * tokens already appended and reported (the session stays consistent and usable).
 * With a token_mask (mcpm_sampling_params), the mask of the next state is asked for while the
 * current token is evaluated. A failing callback fails the call with MCPM_ERR_CALLBACK, and a mask
 * that allows no token with INVALID_ARGUMENT ("the token mask allows no token (step N)", N = the
 * callback's n_tokens); as for CANCELLED, *out_count and *out_finish then report the tokens appended
 * before the failure, and the session stays usable (the next call asks for the mask again).
 * Errors: INVALID_ARGUMENT (no pending logits: prefill first; bad buffers; an empty mask), CANCELLED,
 * CALLBACK. */
MCPM_API mcpm_status mcpm_session_generate(mcpm_session* session, int32_t max_tokens, int32_t* tokens,
                                           int32_t capacity, int32_t* out_count, mcpm_finish_reason* out_finish);

/* One decoding step for streaming: like mcpm_session_generate, but returns after one token without
 * a draft, or after one draft-and-verify round with one (up to spec_num_iter+1 tokens, plus the
 * round's root when the step starts from fresh logits). `capacity` must be at least
 * MCPM_MAX_STEP_TOKENS. Same finish reasons, errors and abort behaviour as mcpm_session_generate. */
#define MCPM_MAX_STEP_TOKENS 66
MCPM_API mcpm_status mcpm_session_generate_step(mcpm_session* session, int32_t* tokens, int32_t capacity,
                                                int32_t* out_count, mcpm_finish_reason* out_finish);

/* Samples one token from caller-provided logits ([n_vocab] floats, not modified) with the session's
 * sampling params, RNG and context (for penalties), without touching the KV cache. Useful for
 * hosts that post-process logits. With a token_mask the token is one the mask of the session's
 * current state allows. Errors: INVALID_ARGUMENT (also an empty mask), CALLBACK. */
MCPM_API mcpm_status mcpm_session_sample(mcpm_session* session, const float* logits, int32_t n_vocab,
                                         int32_t* out_token);

/* Appends n_tokens tokens to the output as if they had been generated (a host that knows what comes
 * next, e.g. the only continuation a grammar allows): they are evaluated in one pass like a prefill,
 * in chunks of prefill_chunk, without sampling and without a stop-token check; they count toward
 * max_new_tokens and mcpm_session_stats.generated_tokens (their evaluation as prefill_tokens), a
 * token_mask callback sees them among its tokens, and generation then continues from their logits.
 * n_tokens may be 0 (nothing happens). An abort request is honoured between chunks: the call then
 * fails with CANCELLED and the session is rewound to its length before the call.
 * Errors: INVALID_ARGUMENT (bad ids, NULL tokens, session in use), CONTEXT_FULL (length + n_tokens >
 * capacity; nothing is appended), CANCELLED. */
MCPM_API mcpm_status mcpm_session_force_tokens(mcpm_session* session, const int32_t* tokens, int32_t n_tokens);

/* ------------------------------------------------------------------------------------------------
 * Continuous batching
 *
 * A batcher runs one step of many sessions of a model as shared forward passes: each session's turn
 * is one generated token (sampled with its own params, mask and RNG from its pending logits, then
 * evaluated) or one prefill chunk. A memory-bound decode step then reads the weights once for every
 * session in it. A session's tokens are the same whether it runs alone or in a batch (greedy: the
 * same ids; sampling: the same draws), up to the floating-point summation order of the shared GEMMs.
 * Inside a batch, decoding is plain: a session with a draft keeps feeding it and speculates again in
 * its own mcpm_session_generate_step calls. Which sessions form a step is the host's choice (the
 * managed MiniCpmBatchScheduler); each session keeps its own KV cache (a slot sized at creation).
 * ---------------------------------------------------------------------------------------------- */

typedef struct mcpm_batcher mcpm_batcher;

typedef struct mcpm_batcher_params {
  uint32_t struct_size; /* in: sizeof(mcpm_batcher_params) */
  int32_t max_rows;     /* tokens per forward pass, in [2, 4096]: bounds its activation memory and the rows of a
                           step's passes (a step with more rows runs several passes); default 64 */
} mcpm_batcher_params;

/* Fills *params with defaults. Errors: INVALID_ARGUMENT for NULL or an unknown struct_size. */
MCPM_API mcpm_status mcpm_batcher_params_default(mcpm_batcher_params* params);

/* Creates a batcher for a finalized model (it holds a reference to the model). params may be NULL.
 * Errors: INVALID_ARGUMENT, OUT_OF_MEMORY. */
MCPM_API mcpm_status mcpm_batcher_create(mcpm_model* model, const mcpm_batcher_params* params,
                                         mcpm_batcher** out_batcher);

/* Frees the batcher. NULL is a no-op. Must not race with mcpm_batcher_step on it. */
MCPM_API void mcpm_batcher_free(mcpm_batcher* batcher);

/* One session's turn in a step. */
typedef struct mcpm_batch_item {
  mcpm_session* session;         /* in: a session of the batcher's model */
  const int32_t* tokens;         /* in: a prefill chunk to append (at most max_rows - 1 tokens); NULL with
                                    n_tokens = 0: generate one token */
  int32_t n_tokens;              /* in */
  int32_t* out_tokens;           /* in: room for the generated token (generate turns) */
  int32_t out_capacity;          /* in: >= 1 for generate turns */
  int32_t out_count;             /* out: tokens written to out_tokens: 1, or 0 with a finish reason, a failure,
                                    or when a token_mask yielded the state (as mcpm_session_generate_step) */
  mcpm_finish_reason out_finish; /* out: as mcpm_session_generate_step */
  mcpm_status out_status;        /* out: this turn's status: OK, or as the single-session call would fail
                                    (CANCELLED after mcpm_session_request_abort, CONTEXT_FULL, CALLBACK,
                                    NONFINITE, ...); the other turns are not affected */
  const char* out_message;       /* out: the failure's message (NULL when OK); valid until the batcher's next
                                    step or free */
} mcpm_batch_item;

/* Runs one turn of each item (sessions distinct, not in use by another call, of the batcher's model).
 * Sessions whose RoPE tables differ (LongRoPE with capacities on both sides of the original context)
 * run in separate passes. Returns INVALID_ARGUMENT without running anything when the call itself is
 * malformed (NULL pointers, a session listed twice or in use, another model, a bad buffer); otherwise
 * OK, with each turn's own outcome in its item. Thread-safe with respect to other batchers and to
 * sessions not in the step. */
MCPM_API mcpm_status mcpm_batcher_step(mcpm_batcher* batcher, mcpm_batch_item* items, int32_t count);

/* ------------------------------------------------------------------------------------------------
 * Statistics
 * ---------------------------------------------------------------------------------------------- */

typedef struct mcpm_session_stats {
  uint32_t struct_size;       /* in: sizeof(mcpm_session_stats) */
  int64_t prefill_tokens;     /* tokens evaluated by mcpm_session_prefill */
  int64_t prefill_ns;         /* wall time spent in them */
  int64_t decode_tokens;      /* tokens evaluated one at a time (decode and generate) */
  int64_t decode_ns;
  int64_t sample_ns;          /* time spent sampling */
  int64_t generated_tokens;   /* tokens produced by mcpm_session_generate (and mcpm_session_force_tokens) since creation or stats reset */
  int64_t spec_steps;         /* speculative draft-and-verify rounds */
  int64_t spec_emitted_tokens;/* tokens those rounds emitted; spec_emitted_tokens/spec_steps is the mean accepted length */
  int64_t spec_draft_ns;      /* time spent drafting trees */
  int64_t spec_verify_ns;     /* time spent in target verification passes */
  /* Added after the first release of ABI 1 (a struct_size ending before spec_plain_tokens is accepted and
   * gets the fields before it). Adaptive speculation (MCPM_SPEC_TREE_AUTO): */
  int64_t spec_plain_tokens;  /* tokens decoded plainly because plain decoding was expected to be faster */
  int32_t spec_tree_size;     /* tree size of the last step: 0 = plain decoding (or no speculation) */
  int32_t spec_num_iter;      /* its draft levels (0 for plain) */
} mcpm_session_stats;

/* Copies the session's counters into *stats (struct_size must be set). */
MCPM_API mcpm_status mcpm_session_get_stats(const mcpm_session* session, mcpm_session_stats* stats);

/* Zeroes the session's counters. */
MCPM_API mcpm_status mcpm_session_reset_stats(mcpm_session* session);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MINICPM4_H */
