// mcpm_bench: prefill/decode throughput of a MiniCPM4-shaped model with random weights on the CPU
// (with the machine's measured memory bandwidth and how close decode comes to it) or on CUDA.
//
//   mcpm_bench [--preset minicpm4-0.5b|minicpm4-8b|tiny] [--hidden N --layers N --heads N --kv-heads N
//              --head-dim N --ffn N --vocab N] [--dtype bf16|fp16|fp32] [--untied]
//              [--prompt-tokens N] [--gen-tokens N] [--threads N] [--json]
//              [--backend cpu|cuda] [--device N]
//              [--spec-trees N,N,...] [--frspec-size R]   (speculative round costs, random draft)
//              [--int4]   (linear layers quantized on load to W4A16 int4, Marlin layout)
//              [--no-graphs]  (CUDA: launch every kernel of a decode step instead of replaying CUDA graphs)
//              [--sparse] [--dense-len N]  (InfLLM v2 with MiniCPM4-8B's sparse_config from N tokens, default
//                                           8192: every prefill chunk that ends at or past N is sparse, as in
//                                           a session)
//
// Decode bytes per token = every weight byte the step reads (all linear layers, the norms and the
// LM head; of an untied embedding only one row) + the KV cache rows attention reads (fp32 on the
// CPU, bf16 on CUDA; with sparse decode the selected blocks' rows plus the fp32 compressed keys). With --backend cuda the host bandwidth probe is skipped (it measures the CPU);
// compare decode_gbs with the device's bandwidth instead (scripts/gpu-check.sh measures it).
// Layers share their random weights (generated once per shape), which keeps the 8B preset's load
// short and changes no timing.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "minicpm4.h"

namespace {

struct Options {
  mcpm_model_config cfg{};
  mcpm_dtype dtype = MCPM_DTYPE_BF16;
  int prompt_tokens = 128;
  int gen_tokens = 32;
  int threads = 0;
  bool json = false;
  std::vector<int> spec_trees;  // --spec-trees 12,32,60: speculative round costs for these tree sizes
  int frspec = 0;               // --frspec-size R: also measure a draft head restricted to R ids
  bool int4 = false;            // --int4: the seven linears of every layer as W4A16 int4
  bool graphs = true;           // --no-graphs: mcpm_session_params.cuda_graphs = 0
  mcpm_backend backend = MCPM_BACKEND_CPU;
  int device = 0;
};

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "mcpm_bench: %s\n", msg.c_str());
  std::exit(1);
}

void check(mcpm_status s, const char* what) {
  if (s != MCPM_OK) die(std::string(what) + " failed: " + mcpm_status_string(s) + ": " + mcpm_last_error());
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void preset(mcpm_model_config& c, const std::string& name) {
  if (name == "minicpm4-0.5b") {
    c.vocab_size = 73448; c.hidden_size = 1024; c.num_layers = 24; c.num_heads = 16; c.num_kv_heads = 2;
    c.head_dim = 64; c.intermediate_size = 4096; c.tie_word_embeddings = 1;
  } else if (name == "minicpm4-8b") {
    c.vocab_size = 73448; c.hidden_size = 4096; c.num_layers = 32; c.num_heads = 32; c.num_kv_heads = 2;
    c.head_dim = 128; c.intermediate_size = 16384; c.tie_word_embeddings = 0;
  } else if (name == "tiny") {
    c.vocab_size = 4096; c.hidden_size = 256; c.num_layers = 4; c.num_heads = 4; c.num_kv_heads = 2;
    c.head_dim = 64; c.intermediate_size = 768; c.tie_word_embeddings = 1;
  } else {
    die("unknown preset '" + name + "' (minicpm4-0.5b, minicpm4-8b, tiny)");
  }
}

Options parse(int argc, char** argv) {
  Options o;
  o.cfg.struct_size = sizeof(o.cfg);
  check(mcpm_model_config_default(&o.cfg), "mcpm_model_config_default");
  preset(o.cfg, "minicpm4-0.5b");
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value after " + a);
      return argv[++i];
    };
    auto int_value = [&]() { return std::atoi(value().c_str()); };
    if (a == "--preset") preset(o.cfg, value());
    else if (a == "--hidden") o.cfg.hidden_size = int_value();
    else if (a == "--layers") o.cfg.num_layers = int_value();
    else if (a == "--heads") o.cfg.num_heads = int_value();
    else if (a == "--kv-heads") o.cfg.num_kv_heads = int_value();
    else if (a == "--head-dim") o.cfg.head_dim = int_value();
    else if (a == "--ffn") o.cfg.intermediate_size = int_value();
    else if (a == "--vocab") o.cfg.vocab_size = int_value();
    else if (a == "--untied") o.cfg.tie_word_embeddings = 0;
    else if (a == "--prompt-tokens") o.prompt_tokens = int_value();
    else if (a == "--gen-tokens") o.gen_tokens = int_value();
    else if (a == "--threads") o.threads = int_value();
    else if (a == "--json") o.json = true;
    else if (a == "--int4") o.int4 = true;
    else if (a == "--no-graphs") o.graphs = false;
    else if (a == "--sparse") o.cfg.sparse_enabled = 1;
    else if (a == "--dense-len") o.cfg.sparse_dense_len = int_value();
    else if (a == "--frspec-size") o.frspec = int_value();
    else if (a == "--device") o.device = int_value();
    else if (a == "--backend") {
      const std::string b = value();
      if (b == "cpu") o.backend = MCPM_BACKEND_CPU;
      else if (b == "cuda") o.backend = MCPM_BACKEND_CUDA;
      else die("unknown backend '" + b + "' (cpu, cuda)");
    }
    else if (a == "--spec-trees") {
      const std::string list = value();
      size_t pos = 0;
      while (pos <= list.size()) {
        const size_t comma = std::min(list.find(',', pos), list.size());
        const int n = std::atoi(list.substr(pos, comma - pos).c_str());
        if (n < 2 || n > 64) die("--spec-trees sizes must be in [2, 64]");
        o.spec_trees.push_back(n);
        pos = comma + 1;
      }
    }
    else if (a == "--dtype") {
      const std::string d = value();
      o.dtype = d == "bf16" ? MCPM_DTYPE_BF16 : d == "fp16" ? MCPM_DTYPE_F16 : d == "fp32" ? MCPM_DTYPE_F32 : -1;
      if (o.dtype < 0) die("unknown dtype '" + d + "' (bf16, fp16, fp32)");
    } else if (a == "--help" || a == "-h") {
      std::printf("usage: mcpm_bench [--preset minicpm4-0.5b|minicpm4-8b|tiny] [--hidden N] [--layers N] [--heads N] "
                  "[--kv-heads N] [--head-dim N] [--ffn N] [--vocab N] [--untied] [--dtype bf16|fp16|fp32] "
                  "[--prompt-tokens N] [--gen-tokens N] [--threads N] [--json] [--backend cpu|cuda] [--device N] "
                  "[--spec-trees N,N,...] [--frspec-size R] [--int4] [--no-graphs] [--sparse] [--dense-len N]\n");
      std::exit(0);
    } else {
      die("unknown argument '" + a + "' (see --help)");
    }
  }
  if (o.prompt_tokens < 1 || o.gen_tokens < 1) die("--prompt-tokens and --gen-tokens must be >= 1");
  return o;
}

int thread_count(int requested) {
  if (requested > 0) return requested;
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

// Runs f(thread_index) on `threads` threads and returns the wall time of the slowest.
template <typename F>
double timed_parallel(int threads, F f) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(f, t);
  f(0);
  for (auto& th : pool) th.join();
  return seconds_since(t0);
}

struct Bandwidth {
  double copy_gbs;  // STREAM convention: (bytes read + bytes written) / s
  double read_gbs;  // bytes read / s
};

// A 2 MiB-aligned buffer offered to transparent huge pages, like the engine's weights, so the
// probe and the engine see the same TLB behaviour.
struct HugeBuffer {
  explicit HugeBuffer(size_t bytes) : size(bytes) {
    data = static_cast<float*>(std::aligned_alloc(size_t{2} << 20, bytes));
    if (data == nullptr) die("out of memory for the bandwidth probe");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(data, bytes, MADV_HUGEPAGE);
#endif
  }
  ~HugeBuffer() { std::free(data); }
  float* data;
  size_t size;
};

// Best of several passes over buffers far larger than any cache. The read loop keeps eight
// independent sums so the compiler vectorises it and the loop is limited by memory, not adds.
Bandwidth measure_bandwidth(int threads) {
  const size_t bytes = size_t{512} << 20;
  HugeBuffer a(bytes), b(bytes);
  const size_t n = bytes / sizeof(float);
  for (size_t i = 0; i < n; ++i) a.data[i] = static_cast<float>(i & 1023);  // touch every page
  std::memset(b.data, 1, bytes);
  const size_t per = n / static_cast<size_t>(threads) / 8 * 8;
  Bandwidth bw{0, 0};
  std::vector<float> sums(static_cast<size_t>(threads) * 16);
  for (int rep = 0; rep < 5; ++rep) {
    const double tc = timed_parallel(threads, [&](int t) {
      std::memcpy(b.data + per * t, a.data + per * t, per * sizeof(float));
    });
    bw.copy_gbs = std::max(bw.copy_gbs, 2.0 * static_cast<double>(per * threads * sizeof(float)) / tc / 1e9);
    const double tr = timed_parallel(threads, [&](int t) {
      const float* p = a.data + per * t;
      float acc[8] = {};
      for (size_t i = 0; i < per; i += 8)
        for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
      float s = 0;
      for (float v : acc) s += v;
      sums[static_cast<size_t>(t) * 16] = s;
    });
    bw.read_gbs = std::max(bw.read_gbs, static_cast<double>(per * threads * sizeof(float)) / tr / 1e9);
  }
  if (sums[0] == -1.0f) std::fprintf(stderr, " ");  // keep the read loop observable
  return bw;
}

uint16_t to_half_bits(float f, mcpm_dtype dtype) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (dtype == MCPM_DTYPE_BF16) return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  // fp16 for values well inside its normal range (|f| in [2^-14, 2]).
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((u >> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return static_cast<uint16_t>(sign);
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exp) << 10) | ((u >> 13) & 0x3ffu));
}

// Fills a tensor with uniform values in [-scale, scale] (norm weights: [0.5, 1.5]) and sets it.
// Fills buf with random values of `shape` in `dtype`: norms in [0.5, 1.5), others in [-scale, scale).
void fill_random(const std::vector<int64_t>& shape, mcpm_dtype dtype, float scale, bool is_norm, uint64_t& rng,
                 std::vector<unsigned char>& buf) {
  size_t count = 1;
  for (int64_t d : shape) count *= static_cast<size_t>(d);
  const size_t esize = dtype == MCPM_DTYPE_F32 ? 4 : 2;
  buf.resize(count * esize);
  for (size_t i = 0; i < count; ++i) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    const float u = static_cast<float>(rng >> 40) / static_cast<float>(1 << 24);  // [0, 1)
    const float v = is_norm ? 0.5f + u : (2.0f * u - 1.0f) * scale;
    if (esize == 4) std::memcpy(buf.data() + i * 4, &v, 4);
    else {
      const uint16_t h = to_half_bits(v, dtype);
      std::memcpy(buf.data() + i * 2, &h, 2);
    }
  }
}

// Random tensors by (shape, scale, kind): layers reuse the first layer's values.
struct RandomCache {
  std::vector<std::pair<std::string, std::vector<unsigned char>>> entries;
  const std::vector<unsigned char>& get(const std::vector<int64_t>& shape, mcpm_dtype dtype, float scale, bool is_norm,
                                        uint64_t& rng) {
    std::string key = std::to_string(dtype) + "/" + std::to_string(scale) + "/" + (is_norm ? "n" : "w");
    for (int64_t d : shape) key += "/" + std::to_string(d);
    for (const auto& e : entries)
      if (e.first == key) return e.second;
    entries.emplace_back(key, std::vector<unsigned char>());
    fill_random(shape, dtype, scale, is_norm, rng, entries.back().second);
    return entries.back().second;
  }
};

void set_random(mcpm_model* m, const std::string& name, std::vector<int64_t> shape, mcpm_dtype dtype, float scale,
                bool is_norm, uint64_t& rng, RandomCache& cache) {
  const std::vector<unsigned char>& buf = cache.get(shape, dtype, scale, is_norm, rng);
  check(mcpm_model_set_tensor(m, name.c_str(), dtype, shape.data(), static_cast<int32_t>(shape.size()), buf.data(),
                              buf.size()),
        name.c_str());
}

// A random linear weight [N, K], set dense or (int4) quantized to the Marlin layout on the host.
void set_linear(mcpm_model* m, const std::string& name, int64_t N, int64_t K, mcpm_dtype dtype, float scale, bool int4,
                uint64_t& rng, RandomCache& cache) {
  if (!int4) {
    set_random(m, name + ".weight", {N, K}, dtype, scale, false, rng, cache);
    return;
  }
  const std::vector<unsigned char>& buf = cache.get({N, K}, dtype, scale, false, rng);
  std::vector<int32_t> qweight(static_cast<size_t>(K / 16 * 2 * N));
  std::vector<uint16_t> scales(static_cast<size_t>(K / 128 * N));
  check(mcpm_int4_quantize(dtype, buf.data(), buf.size(), N, K, nullptr, qweight.data(), qweight.size() * 4,
                           scales.data(), scales.size() * 2),
        (name + " (quantize)").c_str());
  const std::vector<int64_t> qshape{K / 16, 2 * N}, sshape{K / 128, N};
  check(mcpm_model_set_tensor(m, (name + ".qweight").c_str(), MCPM_DTYPE_I32, qshape.data(), 2, qweight.data(),
                              qweight.size() * 4),
        (name + ".qweight").c_str());
  check(mcpm_model_set_tensor(m, (name + ".scales").c_str(), MCPM_DTYPE_F16, sshape.data(), 2, scales.data(),
                              scales.size() * 2),
        (name + ".scales").c_str());
}

// A random one-layer EAGLE draft for `model` (MiniCPM4 layout), with an FR-Spec head of `frspec`
// ids (0 = the whole vocabulary).
mcpm_draft* random_draft(mcpm_model* model, const mcpm_model_config& c, mcpm_dtype dtype, int frspec, uint64_t& rng) {
  mcpm_draft_config dc{};
  dc.struct_size = sizeof(dc);
  check(mcpm_draft_config_default(model, &dc), "mcpm_draft_config_default");
  mcpm_draft* d = nullptr;
  check(mcpm_draft_create(model, &dc, &d), "mcpm_draft_create");
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t Q = int64_t{c.num_heads} * c.head_dim, KV = int64_t{c.num_kv_heads} * c.head_dim;
  const float sh = 1.0f / std::sqrt(static_cast<float>(H));
  std::vector<unsigned char> buf;
  auto set = [&](const std::string& name, std::vector<int64_t> shape, float scale, bool norm) {
    fill_random(shape, dtype, scale, norm, rng, buf);
    check(mcpm_draft_set_tensor(d, name.c_str(), dtype, shape.data(), static_cast<int32_t>(shape.size()), buf.data(),
                                buf.size()),
          name.c_str());
  };
  set("fc.weight", {H, 2 * H}, sh, false);
  set("fc.bias", {H}, 0.01f, false);
  set("input_norm1.weight", {H}, 0, true);
  set("input_norm2.weight", {H}, 0, true);
  set("layers.0.input_layernorm.weight", {H}, 0, true);
  set("layers.0.self_attn.q_proj.weight", {Q, H}, sh, false);
  set("layers.0.self_attn.k_proj.weight", {KV, H}, sh, false);
  set("layers.0.self_attn.v_proj.weight", {KV, H}, sh, false);
  set("layers.0.self_attn.o_proj.weight", {H, Q}, 1.0f / std::sqrt(static_cast<float>(Q)), false);
  set("layers.0.post_attention_layernorm.weight", {H}, 0, true);
  set("layers.0.mlp.gate_proj.weight", {I, H}, sh, false);
  set("layers.0.mlp.up_proj.weight", {I, H}, sh, false);
  set("layers.0.mlp.down_proj.weight", {H, I}, 1.0f / std::sqrt(static_cast<float>(I)), false);
  if (frspec > 0) {
    std::vector<int32_t> ids(static_cast<size_t>(frspec));
    for (int i = 0; i < frspec; ++i) ids[static_cast<size_t>(i)] = i;
    check(mcpm_draft_set_vocabulary(d, ids.data(), frspec), "mcpm_draft_set_vocabulary");
  }
  check(mcpm_draft_finalize(d), "mcpm_draft_finalize");
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  mcpm_model_config& c = o.cfg;
  c.max_position_embeddings = std::max(c.max_position_embeddings, o.prompt_tokens + o.gen_tokens + 1);
  const int threads = thread_count(o.threads);

  const bool on_cpu = o.backend == MCPM_BACKEND_CPU;
  const Bandwidth bw = on_cpu ? measure_bandwidth(threads) : Bandwidth{0, 0};

  mcpm_model_options mo{};
  mo.struct_size = sizeof(mo);
  check(mcpm_model_options_default(&mo), "mcpm_model_options_default");
  mo.backend = o.backend;
  mo.device_index = o.device;
  mo.num_threads = threads;
  mcpm_model* model = nullptr;
  check(mcpm_model_create(&c, &mo, &model), "mcpm_model_create");

  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t Q = int64_t{c.num_heads} * c.head_dim, KV = int64_t{c.num_kv_heads} * c.head_dim;
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  RandomCache cache;
  const auto t_load = std::chrono::steady_clock::now();
  set_random(model, "model.embed_tokens.weight", {V, H}, o.dtype, 1.0f, false, rng, cache);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    set_random(model, p + "input_layernorm.weight", {H}, o.dtype, 0, true, rng, cache);
    set_random(model, p + "post_attention_layernorm.weight", {H}, o.dtype, 0, true, rng, cache);
    const float sh = 1.0f / std::sqrt(static_cast<float>(H));
    const float sq = 1.0f / std::sqrt(static_cast<float>(Q)), si = 1.0f / std::sqrt(static_cast<float>(I));
    set_linear(model, p + "self_attn.q_proj", Q, H, o.dtype, sh, o.int4, rng, cache);
    set_linear(model, p + "self_attn.k_proj", KV, H, o.dtype, sh, o.int4, rng, cache);
    set_linear(model, p + "self_attn.v_proj", KV, H, o.dtype, sh, o.int4, rng, cache);
    set_linear(model, p + "self_attn.o_proj", H, Q, o.dtype, sq, o.int4, rng, cache);
    set_linear(model, p + "mlp.gate_proj", I, H, o.dtype, sh, o.int4, rng, cache);
    set_linear(model, p + "mlp.up_proj", I, H, o.dtype, sh, o.int4, rng, cache);
    set_linear(model, p + "mlp.down_proj", H, I, o.dtype, si, o.int4, rng, cache);
  }
  set_random(model, "model.norm.weight", {H}, o.dtype, 0, true, rng, cache);
  if (!c.tie_word_embeddings) set_random(model, "lm_head.weight", {V, H}, o.dtype, 0.05f, false, rng, cache);
  check(mcpm_model_finalize(model), "mcpm_model_finalize");
  const double load_s = seconds_since(t_load);
  cache.entries.clear();
  cache.entries.shrink_to_fit();

  uint64_t weight_bytes = 0;
  check(mcpm_model_weight_bytes(model, &weight_bytes), "mcpm_model_weight_bytes");
  const size_t esize = o.dtype == MCPM_DTYPE_F32 ? 4 : 2;
  // An untied embedding is only gathered (one row per token), not streamed.
  const double streamed_weight_bytes =
      static_cast<double>(weight_bytes) - (c.tie_word_embeddings ? 0.0 : static_cast<double>(V * H * esize)) +
      (c.tie_word_embeddings ? 0.0 : static_cast<double>(H * esize));

  mcpm_session_params sp{};
  sp.struct_size = sizeof(sp);
  check(mcpm_session_params_default(&sp), "mcpm_session_params_default");
  sp.context_capacity = o.prompt_tokens + o.gen_tokens + 1;
  sp.cuda_graphs = o.graphs ? 1 : 0;
  mcpm_session* session = nullptr;
  check(mcpm_session_create(model, &sp, &session), "mcpm_session_create");

  std::vector<int32_t> prompt(static_cast<size_t>(o.prompt_tokens));
  for (auto& t : prompt) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    t = static_cast<int32_t>(rng % static_cast<uint64_t>(V));
  }
  check(mcpm_session_prefill(session, prompt.data(), o.prompt_tokens, MCPM_LOGITS_NONE, nullptr, 0), "prefill");

  mcpm_sampling_params samp{};
  samp.struct_size = sizeof(samp);
  check(mcpm_sampling_params_default(&samp), "mcpm_sampling_params_default");
  samp.max_new_tokens = o.gen_tokens;
  check(mcpm_session_set_sampling(session, &samp), "set_sampling");
  std::vector<int32_t> out(static_cast<size_t>(o.gen_tokens));
  int32_t produced = 0;
  mcpm_finish_reason finish = MCPM_FINISH_NONE;
  // Generation's wall time: decode steps plus sampling and every per-token overhead (what a user sees).
  const auto generate_start = std::chrono::steady_clock::now();
  while (finish == MCPM_FINISH_NONE) {
    int32_t n = 0;
    check(mcpm_session_generate(session, o.gen_tokens - produced, out.data() + produced, o.gen_tokens - produced, &n,
                                &finish),
          "generate");
    produced += n;
  }

  const double generate_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - generate_start).count();
  const double generate_tps = produced / generate_s;
  mcpm_session_stats st{};
  st.struct_size = sizeof(st);
  check(mcpm_session_get_stats(session, &st), "stats");
  const double prefill_tps = static_cast<double>(st.prefill_tokens) / (static_cast<double>(st.prefill_ns) * 1e-9);
  const double decode_tps = static_cast<double>(st.decode_tokens) / (static_cast<double>(st.decode_ns) * 1e-9);
  // KV rows read per decoded token: on average the context at the middle of the generation.
  const double mean_context = o.prompt_tokens + (st.decode_tokens + 1) / 2.0;
  const double kv_elem = on_cpu ? 4.0 : 2.0;  // f32 cache on the CPU, bf16 on CUDA
  double kv_bytes = mean_context * c.num_layers * 2.0 * static_cast<double>(KV) * kv_elem;
  const bool sparse_decode = c.sparse_enabled && (c.sparse_dense_len < 0 || mean_context >= c.sparse_dense_len);
  if (sparse_decode) {
    // InfLLM v2: K and V of the selected blocks plus both levels of fp32 compressed keys.
    const double selected = std::min(mean_context, static_cast<double>(c.sparse_topk + c.sparse_window_size /
                                                                                         c.sparse_block_size) *
                                                       c.sparse_block_size);
    const double compressed = mean_context / c.sparse_kernel_stride + mean_context / (4.0 * c.sparse_kernel_stride);
    kv_bytes = c.num_layers * static_cast<double>(KV) * (selected * 2.0 * kv_elem + compressed * 4.0);
  }
  const double bytes_per_token = streamed_weight_bytes + kv_bytes;
  const double achieved_gbs = bytes_per_token * decode_tps / 1e9;

  mcpm_build_info info{};
  info.struct_size = sizeof(info);
  check(mcpm_get_build_info(&info), "build info");
  const char* dtype_name = o.dtype == MCPM_DTYPE_BF16 ? "bf16" : o.dtype == MCPM_DTYPE_F16 ? "fp16" : "fp32";

  const char* backend_name = on_cpu ? "cpu" : "cuda";
  // Fractions of the host bandwidth only mean something on the CPU (null / "n/a" on CUDA).
  auto fraction = [&](double bw_gbs) { return on_cpu && bw_gbs > 0 ? achieved_gbs / bw_gbs : -1.0; };
  if (o.json) {
    char copy_frac[32] = "null", read_frac[32] = "null";
    if (on_cpu) {
      std::snprintf(copy_frac, sizeof copy_frac, "%.3f", fraction(bw.copy_gbs));
      std::snprintf(read_frac, sizeof read_frac, "%.3f", fraction(bw.read_gbs));
    }
    std::printf(
        "{\"backend\":\"%s\",\"hidden\":%d,\"layers\":%d,\"heads\":%d,\"kv_heads\":%d,\"head_dim\":%d,\"ffn\":%d,"
        "\"vocab\":%d,\"dtype\":\"%s\",\"int4\":%s,\"sparse_dense_len\":%d,\"tied\":%s,\"threads\":%d,\"cpu_kernels\":\"%s\",\"prompt_tokens\":%d,"
        "\"gen_tokens\":%lld,\"load_s\":%.3f,\"weight_bytes\":%llu,\"copy_bandwidth_gbs\":%.2f,"
        "\"read_bandwidth_gbs\":%.2f,\"prefill_tokens_per_s\":%.3f,\"decode_tokens_per_s\":%.3f,"
        "\"generate_tokens_per_s\":%.3f,"
        "\"decode_bytes_per_token\":%.0f,\"decode_gbs\":%.2f,\"decode_fraction_of_copy_bw\":%s,"
        "\"decode_fraction_of_read_bw\":%s}\n",
        backend_name, c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size,
        c.vocab_size, dtype_name, o.int4 ? "true" : "false", c.sparse_enabled ? c.sparse_dense_len : 0,
        c.tie_word_embeddings ? "true" : "false", threads, info.cpu_features,
        o.prompt_tokens, static_cast<long long>(st.decode_tokens), load_s,
        static_cast<unsigned long long>(weight_bytes), bw.copy_gbs, bw.read_gbs, prefill_tps, decode_tps, generate_tps,
        bytes_per_token, achieved_gbs, copy_frac, read_frac);
  } else {
    std::printf("model      hidden %d, layers %d, heads %d/%d kv, head_dim %d, ffn %d, vocab %d, %s%s, %s\n",
                c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size,
                c.vocab_size, dtype_name, o.int4 ? " (linears int4)" : "", c.tie_word_embeddings ? "tied" : "untied");
    if (c.sparse_enabled)
      std::printf("attention  InfLLM v2 from %d tokens (top-k %d, window %d, block %d, kernels %d/%d)%s\n",
                  c.sparse_dense_len, c.sparse_topk, c.sparse_window_size, c.sparse_block_size, c.sparse_kernel_size,
                  c.sparse_kernel_stride, sparse_decode ? "" : "; decode stays dense at this context");
    if (on_cpu) {
      std::printf("machine    %d threads, kernels: %s\n", threads, info.cpu_features);
      std::printf("memory     copy %.2f GB/s (read+write), read %.2f GB/s\n", bw.copy_gbs, bw.read_gbs);
    } else {
      std::printf("machine    CUDA device %d (CUDA %d, architectures %s)\n", o.device, info.cuda_version,
                  info.cuda_archs);
    }
    std::printf("weights    %.1f MB, loaded in %.2f s\n", static_cast<double>(weight_bytes) / 1e6, load_s);
    std::printf("prefill    %d tokens: %.2f tokens/s\n", o.prompt_tokens, prefill_tps);
    if (on_cpu)
      std::printf("decode     %lld tokens: %.2f tokens/s, %.1f MB/token -> %.2f GB/s = %.0f%% of copy, %.0f%% of read "
                  "bandwidth\n",
                  static_cast<long long>(st.decode_tokens), decode_tps, bytes_per_token / 1e6, achieved_gbs,
                  100.0 * fraction(bw.copy_gbs), 100.0 * fraction(bw.read_gbs));
    else
      std::printf("decode     %lld tokens: %.2f tokens/s, %.1f MB/token -> %.2f GB/s\n",
                  static_cast<long long>(st.decode_tokens), decode_tps, bytes_per_token / 1e6, achieved_gbs);
    std::printf("generate   %d tokens in %.3f s: %.2f tokens/s (wall time: decode, sampling and per-token overhead)\n",
                produced, generate_s, generate_tps);
  }
  // Speculative round costs: a random draft (its acceptance is meaningless, so only the cost of one
  // draft-and-verify round is reported), per tree size, with the full draft head and an FR-Spec one.
  if (!o.spec_trees.empty()) {
    const double decode_ms = static_cast<double>(st.decode_ns) * 1e-6 / static_cast<double>(st.decode_tokens);
    std::vector<int> heads{0};
    if (o.frspec > 0) heads.push_back(o.frspec);
    for (int frspec : heads) {
      mcpm_draft* draft = random_draft(model, c, o.dtype, frspec, rng);
      for (int tree : o.spec_trees) {
        mcpm_session_params dp = sp;
        dp.context_capacity = o.prompt_tokens + o.gen_tokens + 1;
        dp.draft = draft;
        mcpm_session* s = nullptr;
        check(mcpm_session_create(model, &dp, &s), "mcpm_session_create (draft)");
        check(mcpm_session_prefill(s, prompt.data(), o.prompt_tokens, MCPM_LOGITS_NONE, nullptr, 0), "prefill");
        mcpm_sampling_params ss = samp;
        // k = 10 children per node (fewer for tiny trees) and just enough levels to fill the tree.
        ss.spec_topk_per_iter = std::min(10, tree - 1);
        const int k = ss.spec_topk_per_iter;
        ss.spec_num_iter = 1;
        while (k + (ss.spec_num_iter - 1) * k * k < tree - 1) ++ss.spec_num_iter;
        ss.spec_tree_size = tree;
        check(mcpm_session_set_sampling(s, &ss), "set_sampling (speculative)");
        int32_t n = 0;
        mcpm_finish_reason f = MCPM_FINISH_NONE;
        std::vector<int32_t> toks(static_cast<size_t>(o.gen_tokens) + MCPM_MAX_STEP_TOKENS);
        for (int produced_spec = 0; f == MCPM_FINISH_NONE;) {
          check(mcpm_session_generate_step(s, toks.data(), MCPM_MAX_STEP_TOKENS, &n, &f), "generate_step");
          produced_spec += n;
        }
        mcpm_session_stats ds{};
        ds.struct_size = sizeof(ds);
        check(mcpm_session_get_stats(s, &ds), "stats");
        const double rounds = static_cast<double>(std::max<int64_t>(ds.spec_steps, 1));
        const double verify_ms = static_cast<double>(ds.spec_verify_ns) * 1e-6 / rounds;
        const double draft_ms = static_cast<double>(ds.spec_draft_ns) * 1e-6 / rounds;
        if (o.json)
          std::printf("{\"spec_tree\":%d,\"spec_num_iter\":%d,\"spec_topk\":%d,\"draft_vocab\":%d,\"rounds\":%lld,"
                      "\"verify_ms\":%.3f,\"verify_vs_decode\":%.3f,\"draft_ms\":%.3f,\"decode_ms\":%.3f}\n",
                      tree, ss.spec_num_iter, k, frspec > 0 ? frspec : c.vocab_size, static_cast<long long>(ds.spec_steps),
                      verify_ms, verify_ms / decode_ms, draft_ms, decode_ms);
        else
          std::printf("spec       tree %2d (%d levels x %2d), draft head %6d rows: verify %.2f ms = %.2fx a 1-token "
                      "decode (%.2f ms), draft %.2f ms per round (%lld rounds)\n",
                      tree, ss.spec_num_iter, k, frspec > 0 ? frspec : c.vocab_size, verify_ms, verify_ms / decode_ms,
                      decode_ms, draft_ms, static_cast<long long>(ds.spec_steps));
        mcpm_session_free(s);
      }
      mcpm_draft_free(draft);
    }
  }
  mcpm_session_free(session);
  mcpm_model_free(model);
  return 0;
}
