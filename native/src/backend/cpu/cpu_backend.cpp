#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include <fstream>
#include <string>

#if defined(_WIN32)
#include <malloc.h>
#define WIN32_LEAN_AND_MEAN
#define NOMINMAX
#include <windows.h>
#else
#include <unistd.h>
#endif

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common/error.h"
#include "common/int4.h"
#include "engine/infllm.h"

namespace mcpm {

namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kHugePage = size_t{2} << 20;

class HostBuffer final : public Buffer {
 public:
  explicit HostBuffer(size_t bytes) {
    // Large buffers (weights, KV cache) are aligned to 2 MiB and offered to transparent huge pages:
    // decode streams every weight once per token, and 4 KiB pages would cost a TLB miss per page.
    // On Linux they are their own mappings, so freeing a model returns its memory to the system at
    // once instead of leaving it in the malloc heap (where 2 MiB-aligned holes fragment it).
    const bool large = bytes >= 2 * kHugePage;
    const size_t align = large ? kHugePage : kAlignment;
    const size_t rounded = (std::max<size_t>(bytes, 1) + align - 1) / align * align;
#if defined(__linux__)
    if (large) {
      map_ = map_aligned(rounded);
      if (map_ == nullptr)
        throw_error(MCPM_ERR_OUT_OF_MEMORY, "out of host memory allocating " + std::to_string(bytes) + " bytes");
      data_ = map_;
      mapped_ = rounded;
#if defined(MADV_HUGEPAGE)
      madvise(data_, rounded, MADV_HUGEPAGE);  // advisory; failure is harmless
#endif
      size_ = bytes;
      return;
    }
#endif
#if defined(_WIN32)
    data_ = _aligned_malloc(rounded, align);
#else
    data_ = std::aligned_alloc(align, rounded);
#endif
    if (data_ == nullptr)
      throw_error(MCPM_ERR_OUT_OF_MEMORY, "out of host memory allocating " + std::to_string(bytes) + " bytes");
    size_ = bytes;
  }
  ~HostBuffer() override {
#if defined(__linux__)
    if (map_ != nullptr) {
      munmap(map_, mapped_);
      return;
    }
#endif
#if defined(_WIN32)
    _aligned_free(data_);
#else
    std::free(data_);
#endif
  }

 private:
#if defined(__linux__)
  // An anonymous mapping of `bytes` (a multiple of kHugePage) starting on a kHugePage boundary: map
  // one huge page more, then unmap the unaligned head and the tail.
  static void* map_aligned(size_t bytes) {
    const size_t span = bytes + kHugePage;
    void* p = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    const uintptr_t base = reinterpret_cast<uintptr_t>(p);
    const uintptr_t start = (base + kHugePage - 1) / kHugePage * kHugePage;
    if (start > base) munmap(p, start - base);
    const size_t tail = (base + span) - (start + bytes);
    if (tail > 0) munmap(reinterpret_cast<void*>(start + bytes), tail);
    return reinterpret_cast<void*>(start);
  }
  void* map_ = nullptr;
  size_t mapped_ = 0;
#endif
};

CpuContext& cpu(ExecContext& ctx) { return static_cast<CpuContext&>(ctx); }

// Token counts up to which bf16 linears take CpuKernels::gemm_bf16 (where the ISA has one).
constexpr int64_t kDirectBf16MaxTokens = 16;

// Rows per parallel chunk so each thread gets a few chunks (load balance) of useful size.
int64_t row_chunk(const CpuContext& c, int64_t rows, int64_t min_chunk) {
  const int64_t per_thread = (rows + c.pool.size() * 4 - 1) / (c.pool.size() * 4);
  return std::max(min_chunk, per_thread);
}

}  // namespace

CpuPrecision default_cpu_precision() {
  const char* mode = std::getenv("MCPM_CPU_PRECISION");
  return mode != nullptr && std::strcmp(mode, "exact") == 0 ? CpuPrecision::Exact : CpuPrecision::Fast;
}

CpuBackend::CpuBackend() : k_(cpu_kernels()), precision_(default_cpu_precision()) {}
CpuBackend::CpuBackend(const CpuKernels& kernels, CpuPrecision precision) : k_(kernels), precision_(precision) {}

std::unique_ptr<Buffer> CpuBackend::alloc(size_t bytes) { return std::make_unique<HostBuffer>(bytes); }

// Linux: MemAvailable of /proc/meminfo (free memory plus what the kernel can reclaim, the number
// `free` shows as "available"); Windows: ullAvailPhys; other POSIX systems: free pages.
uint64_t CpuBackend::available_memory() const {
#if defined(_WIN32)
  MEMORYSTATUSEX status{};
  status.dwLength = sizeof(status);
  return GlobalMemoryStatusEx(&status) ? static_cast<uint64_t>(status.ullAvailPhys) : 0;
#else
#if defined(__linux__)
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);)
    if (line.rfind("MemAvailable:", 0) == 0) return std::strtoull(line.c_str() + 13, nullptr, 10) * 1024;  // "...  N kB"
#endif
#if defined(_SC_AVPHYS_PAGES)
  const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
#endif
  return 0;
#endif
}

void CpuBackend::upload(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuBackend::download(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
std::unique_ptr<ExecContext> CpuBackend::create_context(int32_t num_threads) {
  return std::make_unique<CpuContext>(num_threads);
}

void CpuBackend::widen(const Tensor& t, int64_t offset, float* dst, int64_t count) const {
  switch (t.dtype) {
    case DType::F32: std::memcpy(dst, t.as<const float>() + offset, static_cast<size_t>(count) * 4); break;
    case DType::F16: k_.f16_to_f32(t.as<const uint16_t>() + offset, dst, count); break;
    case DType::BF16: k_.bf16_to_f32(t.as<const uint16_t>() + offset, dst, count); break;
    case DType::I32: MCPM_CHECK(!"widen: packed int4 weights are not a float dtype"); break;
  }
}

void CpuBackend::embedding(ExecContext& ctx, const Tensor& out, const Tensor& table, const int32_t* ids, float s) {
  MCPM_CHECK(out.cols == table.cols);
  cpu(ctx).pool.parallel_for(out.rows, 8, [&](int64_t b, int64_t e, int32_t) {
    for (int64_t i = b; i < e; ++i) {
      float* row = out.as<float>() + i * out.cols;
      widen(table, static_cast<int64_t>(ids[i]) * table.cols, row, table.cols);
      k_.scale_f32(s, row, out.cols);
    }
  });
}

void CpuBackend::rms_norm(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& weight, float eps) {
  CpuContext& c = cpu(ctx);
  const int64_t dim = x.cols;
  MCPM_CHECK(weight.rows * weight.cols == dim && out.cols == dim && out.rows == x.rows);
  c.pool.parallel_for(x.rows, 4, [&](int64_t b, int64_t e, int32_t t) {
    float* w = c.scratch(t, static_cast<size_t>(dim));
    widen(weight, 0, w, dim);
    for (int64_t i = b; i < e; ++i) {
      const float* xi = x.as<const float>() + i * dim;
      float* oi = out.as<float>() + i * dim;
      const float inv = 1.0f / std::sqrt(k_.dot_f32(xi, xi, dim) / static_cast<float>(dim) + eps);
      for (int64_t j = 0; j < dim; ++j) oi[j] = xi[j] * inv * w[j];
    }
  });
}

void CpuBackend::add_rms_norm(ExecContext& ctx, const Tensor& out, const Tensor& residual, const Tensor& delta,
                              float s, const Tensor& weight, float eps) {
  CpuContext& c = cpu(ctx);
  const int64_t dim = residual.cols;
  MCPM_CHECK(delta.rows == residual.rows && delta.cols == dim && weight.rows * weight.cols == dim);
  c.pool.parallel_for(residual.rows, 4, [&](int64_t b, int64_t e, int32_t t) {
    float* w = c.scratch(t, static_cast<size_t>(dim));
    widen(weight, 0, w, dim);
    for (int64_t i = b; i < e; ++i) {
      float* ri = residual.as<float>() + i * dim;
      float* oi = out.as<float>() + i * dim;
      k_.axpy_f32(s, delta.as<const float>() + i * dim, ri, dim);
      const float inv = 1.0f / std::sqrt(k_.dot_f32(ri, ri, dim) / static_cast<float>(dim) + eps);
      for (int64_t j = 0; j < dim; ++j) oi[j] = ri[j] * inv * w[j];
    }
  });
}

void CpuBackend::add_scaled(ExecContext& ctx, const Tensor& residual, const Tensor& delta, float s) {
  MCPM_CHECK(delta.rows == residual.rows && delta.cols == residual.cols);
  const int64_t dim = residual.cols;
  cpu(ctx).pool.parallel_for(residual.rows, 8, [&](int64_t b, int64_t e, int32_t) {
    for (int64_t i = b; i < e; ++i) k_.axpy_f32(s, delta.as<const float>() + i * dim, residual.as<float>() + i * dim, dim);
  });
}

void CpuBackend::scale(ExecContext& ctx, const Tensor& x, float s) {
  const int64_t dim = x.cols;
  cpu(ctx).pool.parallel_for(x.rows, 8, [&](int64_t b, int64_t e, int32_t) {
    for (int64_t i = b; i < e; ++i) k_.scale_f32(s, x.as<float>() + i * dim, dim);
  });
}

// One token: each thread streams its slice of W straight from memory through the fused
// widen-and-dot GEMV (this is the memory-bound decode path). A few tokens over bf16 weights: the
// ISA's direct multi-token kernel. Otherwise each block of 4 weight rows is widened once into
// per-thread scratch and reused for every token.
void CpuBackend::linear(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& w) {
  CpuContext& c = cpu(ctx);
  const int64_t n = x.rows, K = x.cols, N = w.rows;
  MCPM_CHECK(w.cols == K && out.rows == n && out.cols == N && w.dtype != DType::I32);
  const float* X = x.as<const float>();
  float* Y = out.as<float>();
  if (w.dtype == DType::BF16 && k_.gemm_bf16_dp != nullptr && precision_ == CpuPrecision::Fast) {
    // Fast: activations rounded to bf16 once, then bf16 x bf16 dot products (vdpbf16ps) over 4-row
    // blocks that meet every token while they sit in cache. At every token count: each token's sums
    // run in the same order whatever the others are (gemm_bf16_dp), so decode, speculative
    // verification, prefill and batches of many sessions give a token the same logits.
    uint16_t* xb = reinterpret_cast<uint16_t*>(c.shared_scratch(static_cast<size_t>(n * K + 1) / 2));
    c.pool.parallel_for(n, 8, [&](int64_t b, int64_t e, int32_t) {  // up to 8 tokens: on this thread
      for (int64_t i = b; i < e; ++i) k_.to_bf16(X + i * K, xb + i * K, K);
    });
    const int64_t blocks = (N + 3) / 4;
    c.pool.parallel_for(blocks, std::max<int64_t>(1, row_chunk(c, blocks, 1)), [&](int64_t b, int64_t e, int32_t) {
      const int64_t r0 = 4 * b, rows = std::min(N, 4 * e) - r0;
      k_.gemm_bf16_dp(w.as<const uint16_t>() + r0 * K, rows, K, xb, K, n, Y + r0, N);
    });
    return;
  }
  if (n == 1) {
    const float* packed = nullptr;
    if (w.dtype == DType::BF16) {
      float* p = c.shared_scratch(static_cast<size_t>(K));
      k_.pack_x_bf16(X, p, K);
      packed = p;
    }
    c.pool.parallel_for(N, row_chunk(c, N, 16), [&](int64_t b, int64_t e, int32_t) {
      switch (w.dtype) {
        case DType::F32: k_.gemv_f32(w.as<const float>() + b * K, X, Y + b, e - b, K); break;
        case DType::F16: k_.gemv_f16(w.as<const uint16_t>() + b * K, X, Y + b, e - b, K); break;
        case DType::BF16: k_.gemv_bf16(w.as<const uint16_t>() + b * K, X, packed, Y + b, e - b, K); break;
        case DType::I32: break;  // excluded above
      }
    });
    return;
  }
  if (w.dtype == DType::BF16 && k_.gemm_bf16 != nullptr && n <= kDirectBf16MaxTokens) {
    // A few tokens (speculative verification, short prefill chunks): bf16 rows read directly, each
    // row pair once for all tokens; widening whole rows first would cost more than the products.
    float* packed = c.shared_scratch(static_cast<size_t>(n * K));
    for (int64_t i = 0; i < n; ++i) k_.pack_x_bf16(X + i * K, packed + i * K, K);
    c.pool.parallel_for(N, row_chunk(c, N, 16), [&](int64_t b, int64_t e, int32_t) {
      k_.gemm_bf16(w.as<const uint16_t>() + b * K, e - b, K, X, packed, K, n, Y + b, N);
    });
    return;
  }
  const int64_t blocks = (N + 3) / 4;
  c.pool.parallel_for(blocks, std::max<int64_t>(1, row_chunk(c, blocks, 1)), [&](int64_t b, int64_t e, int32_t t) {
    float* rows4 = c.scratch(t, static_cast<size_t>(4 * K));
    float tail[4];
    for (int64_t blk = b; blk < e; ++blk) {
      const int64_t r0 = blk * 4;
      const int64_t nr = std::min<int64_t>(4, N - r0);
      const float* W4;
      if (w.dtype == DType::F32 && nr == 4) {
        W4 = w.as<const float>() + r0 * K;
      } else {
        widen(w, r0 * K, rows4, nr * K);
        if (nr < 4) std::memset(rows4 + nr * K, 0, static_cast<size_t>((4 - nr) * K) * sizeof(float));
        W4 = rows4;
      }
      if (nr == 4) {
        k_.gemm4_f32(W4, K, X, K, n, Y + r0, N);
      } else {
        for (int64_t i = 0; i < n; ++i) {
          k_.gemm4_f32(W4, K, X + i * K, K, 1, tail, 4);
          for (int64_t r = 0; r < nr; ++r) Y[i * N + r0 + r] = tail[r];
        }
      }
    }
  });
}

void CpuBackend::adopt_int4_qweight(const Tensor& qweight, int64_t K, int64_t N) {
  int4cpu::repack_marlin_codes(qweight.data, K, N);
}
void CpuBackend::adopt_int4_scales(const Tensor& scales, int64_t K, int64_t N) {
  int4cpu::repack_marlin_scales(scales.as<uint16_t>(), K, N);
}

namespace {
// The shape rules of an int4 linear (Backend::linear_int4).
void check_int4(const Tensor& out, const Tensor& x, const Tensor& qweight, const Tensor& scales) {
  const int64_t n = x.rows, K = x.cols, N = out.cols;
  MCPM_CHECK(out.rows == n && K % int4::kGroupSize == 0 && N % int4::kMarlinMinN == 0);
  MCPM_CHECK(qweight.dtype == DType::I32 && qweight.rows == K / int4::kTile && qweight.cols == 2 * N);
  MCPM_CHECK(scales.dtype == DType::F16 && scales.rows == K / int4::kGroupSize && scales.cols == N);
}
}  // namespace

// Int4 linears over the CPU layout (int4_cpu.h, adopted at load). One work item is a block of 4
// output rows, whose 64 * K / 32 code bytes stay in L1 while every token passes over them.
//   Fast:  each token's row is quantised to int8 per 128-block, then the ISA's integer dot-product
//          GEMM (vpdpbusd, vpmaddubsw, sdot) runs per block of rows (int4_fast).
//   Exact: each row block is dequantised to fp32 ((q - 8) * s, exact) and multiplied by the fp32 GEMM
//          micro-kernel; only the summation order differs from int4::gemm_dequant.
void CpuBackend::linear_int4(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& qweight,
                             const Tensor& scales) {
  check_int4(out, x, qweight, scales);
  CpuContext& c = cpu(ctx);
  if (precision_ == CpuPrecision::Fast) {
    const LinearWeight w{Tensor{}, qweight, scales};
    const LinearWeight* one = &w;
    int4_fast(c, &out, x, &one, 1);
    return;
  }
  const int64_t n = x.rows, K = x.cols, N = out.cols;
  const float* X = x.as<const float>();
  float* Y = out.as<float>();
  const int64_t blocks = N / int4cpu::kRowBlock, groups = K / int4cpu::kGroup;
  const int64_t block_codes = groups * int4cpu::kRowBlock * int4cpu::kGroupBytes;
  const int64_t block_scales = groups * int4cpu::kRowBlock;
  c.pool.parallel_for(blocks, std::max<int64_t>(1, row_chunk(c, blocks, 1)), [&](int64_t b, int64_t e, int32_t t) {
    float* w4 = c.scratch(t, static_cast<size_t>(4 * K));
    for (int64_t blk = b; blk < e; ++blk) {
      k_.int4_dequant_block(qweight.as<const uint8_t>() + blk * block_codes,
                            scales.as<const uint16_t>() + blk * block_scales, K, w4);
      k_.gemm4_f32(w4, K, X, K, n, Y + 4 * blk, N);
    }
  });
}

// Linears sharing one input: int4 ones (Fast) quantise the input once and share one parallel region;
// anything else runs one by one.
void CpuBackend::linears(ExecContext& ctx, const Tensor* outs, const Tensor& x, const LinearWeight* const* weights,
                         int32_t count) {
  bool shared = precision_ == CpuPrecision::Fast && count > 1 && count <= kMaxSharedLinears;
  for (int32_t i = 0; i < count && shared; ++i) shared = weights[i]->is_int4();
  if (!shared) {
    Backend::linears(ctx, outs, x, weights, count);
    return;
  }
  for (int32_t i = 0; i < count; ++i) check_int4(outs[i], x, weights[i]->qweight, weights[i]->scales);
  int4_fast(cpu(ctx), outs, x, weights, count);
}

void CpuBackend::int4_fast(CpuContext& c, const Tensor* outs, const Tensor& x, const LinearWeight* const* weights,
                           int32_t count) const {
  const int64_t n = x.rows, K = x.cols, groups = K / int4cpu::kGroup;
  const float* X = x.as<const float>();
  const int4cpu::Q8Buffer q8 = c.quantized_rows(n, K);
  c.pool.parallel_for(n, 8, [&](int64_t b, int64_t e, int32_t) {
    for (int64_t i = b; i < e; ++i)
      k_.quantize_q8(X + i * K, K, q8.q + i * K, q8.scale + i * groups, q8.bias + i * groups);
  });
  // Row blocks are numbered across the weights in order; first[i] is weight i's first block.
  int64_t first[kMaxSharedLinears + 1] = {0};
  for (int32_t i = 0; i < count; ++i) first[i + 1] = first[i] + outs[i].cols / int4cpu::kRowBlock;
  const int64_t total = first[count];
  const int64_t block_codes = groups * int4cpu::kRowBlock * int4cpu::kGroupBytes;
  const int64_t block_scales = groups * int4cpu::kRowBlock;
  const int4cpu::Q8Rows rows = q8.rows();
  c.pool.parallel_for(total, std::max<int64_t>(1, row_chunk(c, total, 1)), [&](int64_t b, int64_t e, int32_t) {
    for (int32_t i = 0; i < count && b < e; ++i) {
      if (b >= first[i + 1]) continue;
      const int64_t lo = b - first[i], hi = std::min(e, first[i + 1]) - first[i];
      const LinearWeight& w = *weights[i];
      k_.int4_q8_gemm(w.qweight.as<const uint8_t>() + lo * block_codes,
                      w.scales.as<const uint16_t>() + lo * block_scales, 4 * (hi - lo), K, rows, n,
                      outs[i].as<float>() + 4 * lo, outs[i].cols);
      b = first[i] + hi;
    }
  });
}

void CpuBackend::rope(ExecContext& ctx, const Tensor& x, int32_t num_heads, int32_t head_dim, const int32_t* positions,
                      const Tensor& inv_freq, float attn_factor) {
  CpuContext& c = cpu(ctx);
  const int32_t half = head_dim / 2;
  MCPM_CHECK(x.cols == static_cast<int64_t>(num_heads) * head_dim && inv_freq.rows * inv_freq.cols == half);
  const float* freq = inv_freq.as<const float>();
  c.pool.parallel_for(x.rows, 4, [&](int64_t b, int64_t e, int32_t t) {
    float* cs = c.scratch(t, static_cast<size_t>(2 * half));
    for (int64_t i = b; i < e; ++i) {
      // The angle is formed in double: positions beyond 2^24/freq would otherwise lose phase.
      for (int32_t j = 0; j < half; ++j) {
        const double angle = static_cast<double>(positions[i]) * static_cast<double>(freq[j]);
        cs[j] = static_cast<float>(std::cos(angle)) * attn_factor;
        cs[half + j] = static_cast<float>(std::sin(angle)) * attn_factor;
      }
      for (int32_t h = 0; h < num_heads; ++h) {
        float* v = x.as<float>() + i * x.cols + static_cast<int64_t>(h) * head_dim;
        for (int32_t j = 0; j < half; ++j) {
          const float a = v[j], bb = v[j + half];
          v[j] = a * cs[j] - bb * cs[half + j];
          v[j + half] = bb * cs[j] + a * cs[half + j];
        }
      }
    }
  });
}

void CpuBackend::store_kv(ExecContext&, const Tensor& k_cache, const Tensor& v_cache, const Tensor& k,
                          const Tensor& v, int64_t start) {
  MCPM_CHECK(k.cols == k_cache.cols && v.cols == v_cache.cols && start + k.rows <= k_cache.rows);
  std::memcpy(k_cache.as<float>() + start * k_cache.cols, k.data, k.bytes());
  std::memcpy(v_cache.as<float>() + start * v_cache.cols, v.data, v.bytes());
}

// Softmax attention of one query head over the cache rows [0, prefix) followed by the rows
// tree_base + j for each set bit j of tree_mask, in ascending order: scores to `scores` (scratch of
// at least prefix + 64 floats), a max-subtracted softmax in fp32, then the weighted sum of values.
void CpuBackend::attend(const float* qi, const float* kbase, const float* vbase, int64_t kv_stride, int64_t hd,
                        int64_t prefix, int64_t tree_base, uint64_t tree_mask, float* scores, float* oi) const {
  const float softmax_scale = 1.0f / std::sqrt(static_cast<float>(hd));
  int32_t tree_rows[64];
  int64_t n_tree = 0;
  for (int32_t j = 0; j < 64; ++j)
    if ((tree_mask >> j) & 1u) tree_rows[n_tree++] = j;
  const int64_t visible = prefix + n_tree;
  auto row = [&](int64_t j) { return j < prefix ? j : tree_base + tree_rows[j - prefix]; };
  float max_score = -INFINITY;
  for (int64_t j = 0; j < visible; ++j) {
    scores[j] = k_.dot_f32(qi, kbase + row(j) * kv_stride, hd) * softmax_scale;
    max_score = std::max(max_score, scores[j]);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < visible; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    sum += scores[j];
  }
  std::memset(oi, 0, static_cast<size_t>(hd) * sizeof(float));
  for (int64_t j = 0; j < visible; ++j) k_.axpy_f32(scores[j], vbase + row(j) * kv_stride, oi, hd);
  k_.scale_f32(1.0f / sum, oi, hd);
}

// The dense and tree segments segments[which[0..n)] in one parallel region; one work item is a (query
// token, query head) pair, numbered segment by segment. A causal query i sees cache rows
// [0, start + i]; a tree query the rows before its prefix and those its mask marks (attend()).
void CpuBackend::attend_segments(CpuContext& c, const Tensor& out, const Tensor& q, const AttentionSegment* segments,
                                 const int32_t* which, int32_t n, const AttentionShape& shape) const {
  const int64_t hd = shape.head_dim, heads = shape.num_heads, group = shape.num_heads / shape.num_kv_heads;
  MCPM_CHECK(q.cols == heads * hd && out.cols == q.cols);
  std::vector<int64_t>& first = c.segment_items;  // first[j]: the first work item of segment which[j]
  first.assign(static_cast<size_t>(n) + 1, 0);
  int64_t longest = 0;
  for (int32_t j = 0; j < n; ++j) {
    const AttentionSegment& s = segments[which[j]];
    MCPM_CHECK(s.row >= 0 && s.row + s.rows <= q.rows && s.k_cache.cols == shape.num_kv_heads * hd);
    if (s.tree_masks) {
      uint64_t all = 0;
      for (int64_t r = 0; r < s.rows; ++r) all |= s.tree_masks[r];
      const int64_t highest = all == 0 ? -1 : 63 - __builtin_clzll(all);
      MCPM_CHECK(s.prefix() + highest + 1 <= s.k_cache.rows);
      longest = std::max(longest, s.prefix() + 64);
    } else {
      MCPM_CHECK(s.start + s.rows <= s.k_cache.rows);
      longest = std::max(longest, s.start + s.rows);
    }
    first[static_cast<size_t>(j) + 1] = first[static_cast<size_t>(j)] + s.rows * heads;
  }
  c.pool.parallel_for(first.back(), 1, [&](int64_t b, int64_t e, int32_t t) {
    float* scores = c.scratch(t, static_cast<size_t>(longest));
    size_t j = static_cast<size_t>(std::upper_bound(first.begin(), first.end(), b) - first.begin()) - 1;
    for (int64_t item = b; item < e; ++item) {
      while (item >= first[j + 1]) ++j;
      const AttentionSegment& s = segments[which[j]];
      const int64_t local = item - first[j], i = local / heads, h = local % heads, kvh = h / group;
      const int64_t row = s.row + i;
      const float* qi = q.as<const float>() + row * q.cols + h * hd;
      const float* kbase = s.k_cache.as<const float>() + kvh * hd;
      const float* vbase = s.v_cache.as<const float>() + kvh * hd;
      float* oi = out.as<float>() + row * out.cols + h * hd;
      if (s.tree_masks)
        attend(qi, kbase, vbase, s.k_cache.cols, hd, s.prefix(), s.prefix(), s.tree_masks[i], scores, oi);
      else
        attend(qi, kbase, vbase, s.k_cache.cols, hd, s.start + i + 1, 0, 0, scores, oi);
    }
  });
}

void CpuBackend::attention(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                           const Tensor& v_cache, const AttentionShape& shape, int64_t start) {
  AttentionSegment s;
  s.rows = q.rows;
  s.k_cache = k_cache;
  s.v_cache = v_cache;
  s.start = start;
  const int32_t only = 0;
  attend_segments(cpu(ctx), out, q, &s, &only, 1, shape);
}

void CpuBackend::tree_attention(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                                const Tensor& v_cache, const AttentionShape& shape, int64_t prefix,
                                const uint64_t* masks) {
  AttentionSegment s;
  s.rows = q.rows;
  s.k_cache = k_cache;
  s.v_cache = v_cache;
  s.start = prefix;
  s.tree_masks = masks;
  const int32_t only = 0;
  attend_segments(cpu(ctx), out, q, &s, &only, 1, shape);
}

// Every dense and tree segment in one parallel region (attend_segments): a batched decode step costs
// one thread synchronisation for its attention, not one per sequence, and each (query, head) pair runs
// attend() exactly as attention() / tree_attention() would (backend memory is host memory here, so
// resident masks read like host ones). Sparse segments go through sparse_attention() one by one.
void CpuBackend::attention_batch(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k,
                                 const Tensor& v, const AttentionSegment* segments, int32_t count,
                                 const AttentionShape& shape) {
  CpuContext& c = cpu(ctx);
  std::vector<int32_t>& dense = c.segment_list;
  dense.clear();
  for (int32_t i = 0; i < count; ++i) {
    const AttentionSegment& s = segments[i];
    MCPM_CHECK(s.row >= 0 && s.rows > 0 && s.row + s.rows <= q.rows);
    store_kv(ctx, s.k_cache, s.v_cache, k.slice_rows(s.row, s.rows), v.slice_rows(s.row, s.rows), s.start);
    if (!s.sparse) dense.push_back(i);
  }
  if (!dense.empty()) attend_segments(c, out, q, segments, dense.data(), static_cast<int32_t>(dense.size()), shape);
  for (int32_t i = 0; i < count; ++i) {
    const AttentionSegment& s = segments[i];
    if (s.sparse)
      sparse_attention(ctx, out.slice_rows(s.row, s.rows), q.slice_rows(s.row, s.rows), s.k_cache, s.v_cache, shape,
                       s.start, *s.sparse);
  }
}

void CpuBackend::copy_rows(ExecContext&, const Tensor& dst, const Tensor& src, const int32_t* dst_rows,
                           const int32_t* src_rows, int32_t n) {
  MCPM_CHECK(dst.dtype == src.dtype && dst.cols == src.cols);
  const size_t row_bytes = static_cast<size_t>(src.cols) * dtype_size(src.dtype);
  for (int32_t i = 0; i < n; ++i) {
    MCPM_CHECK(dst_rows[i] >= 0 && dst_rows[i] < dst.rows && src_rows[i] >= 0 && src_rows[i] < src.rows);
    if (dst.data == src.data && dst_rows[i] == src_rows[i]) continue;
    std::memmove(static_cast<char*>(dst.data) + static_cast<size_t>(dst_rows[i]) * row_bytes,
                 static_cast<const char*>(src.data) + static_cast<size_t>(src_rows[i]) * row_bytes, row_bytes);
  }
}

void CpuBackend::add_bias(ExecContext& ctx, const Tensor& x, const Tensor& bias) {
  CpuContext& c = cpu(ctx);
  const int64_t dim = x.cols;
  MCPM_CHECK(bias.rows * bias.cols == dim);
  float* b = c.shared_scratch(static_cast<size_t>(dim));
  widen(bias, 0, b, dim);
  c.pool.parallel_for(x.rows, 8, [&](int64_t first, int64_t last, int32_t) {
    for (int64_t i = first; i < last; ++i) k_.axpy_f32(1.0f, b, x.as<float>() + i * dim, dim);
  });
}

namespace {

// InfLLM v2 state of one layer: the CPU reference's configuration and the compressed keys of each
// KV head, covering a prefix of the layer's KV cache.
class CpuSparseState final : public AttentionState {
 public:
  void truncate(int64_t rows) override {
    for (infllm::CompressedKeys& ck : keys) infllm::truncate_compressed_keys(cfg, rows, ck);
  }

  infllm::SparseConfig cfg;
  std::vector<infllm::CompressedKeys> keys;  // per KV head
  // sparse_select's result for queries start .. start + n - 1: blocks of item i * kv_heads + h.
  int64_t selected_start = -1, selected_n = 0;
  std::vector<std::vector<int32_t>> selection;
};

infllm::SparseConfig to_infllm(const SparseAttentionParams& p) {
  infllm::SparseConfig cfg;
  cfg.kernel_size = p.kernel_size;
  cfg.kernel_stride = p.kernel_stride;
  cfg.init_blocks = p.init_blocks;
  cfg.block_size = p.block_size;
  cfg.window_size = p.window_size;
  cfg.topk = p.topk;
  cfg.dense_len = -1;  // the model graph has already chosen the sparse path
  cfg.use_nope = false;
  cfg.use_compress_lse = true;  // Hugging Face
  return cfg;
}

}  // namespace

// The compressed keys grow with the cache (engine/infllm's vectors); `capacity` is not needed.
std::unique_ptr<AttentionState> CpuBackend::create_sparse_attention_state(const SparseAttentionParams& params,
                                                                          const AttentionShape& shape, int64_t) {
  auto state = std::make_unique<CpuSparseState>();
  state->cfg = to_infllm(params);
  try {
    infllm::validate(state->cfg);
  } catch (const std::invalid_argument& e) {
    invalid_argument(e.what());
  }
  state->keys.resize(static_cast<size_t>(shape.num_kv_heads));
  for (infllm::CompressedKeys& ck : state->keys) ck.head_dim = shape.head_dim;
  return state;
}

// The CPU reference (engine/infllm) reads the fp32 cache in place (row stride kv_heads*head_dim).
// Compression is incremental per KV head; selection and stage 2 run per (query token, KV group),
// one work item each.
void CpuBackend::sparse_select(ExecContext& ctx, const Tensor& q, const Tensor& k_cache, const AttentionShape& shape,
                               int64_t start, AttentionState& state) {
  CpuContext& c = cpu(ctx);
  CpuSparseState& st = static_cast<CpuSparseState&>(state);
  const int64_t n = q.rows, hd = shape.head_dim, heads = shape.num_heads, kv_heads = shape.num_kv_heads;
  const int64_t group = heads / kv_heads;
  const int64_t ld = k_cache.cols;
  MCPM_CHECK(q.cols == heads * hd && ld == kv_heads * hd);
  MCPM_CHECK(start + n <= k_cache.rows && static_cast<int64_t>(st.keys.size()) == kv_heads);
  const infllm::SparseConfig& cfg = st.cfg;
  const int64_t total = start + n;
  const float* k = k_cache.as<const float>();

  // Drop kernels that read rows >= start (just rewritten), then pool the complete new ones.
  st.truncate(start);
  c.pool.parallel_for(kv_heads, 1, [&](int64_t b, int64_t e, int32_t) {
    for (int64_t h = b; h < e; ++h)
      infllm::update_compressed_keys(cfg, k + h * hd, total, st.keys[static_cast<size_t>(h)], ld);
  });

  const int64_t n_blocks = (total + cfg.block_size - 1) / cfg.block_size;
  st.selection.resize(static_cast<size_t>(n * kv_heads));
  c.pool.parallel_for(n * kv_heads, 1, [&](int64_t b, int64_t e, int32_t) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t i = item / kv_heads, h = item % kv_heads;
      // The `group` query heads of KV head h are contiguous in a row of q.
      const float* q_group = q.as<const float>() + i * q.cols + h * group * hd;
      st.selection[static_cast<size_t>(item)] = infllm::select_for_query(
          cfg, q_group, static_cast<int>(group), st.keys[static_cast<size_t>(h)], start + i, n_blocks);
    }
  });
  st.selected_start = start;
  st.selected_n = n;
}

void CpuBackend::sparse_attend(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                               const Tensor& v_cache, const AttentionShape& shape, int64_t start, AttentionState& state) {
  CpuContext& c = cpu(ctx);
  const CpuSparseState& st = static_cast<const CpuSparseState&>(state);
  const int64_t n = q.rows, hd = shape.head_dim, heads = shape.num_heads, kv_heads = shape.num_kv_heads;
  const int64_t group = heads / kv_heads;
  const int64_t ld = k_cache.cols;
  MCPM_CHECK(q.cols == heads * hd && out.cols == q.cols && ld == kv_heads * hd && v_cache.cols == ld);
  MCPM_CHECK(st.selected_start == start && st.selected_n == n);  // sparse_select ran for these queries
  const float* k = k_cache.as<const float>();
  const float* v = v_cache.as<const float>();
  c.pool.parallel_for(n * kv_heads, 1, [&](int64_t b, int64_t e, int32_t) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t i = item / kv_heads, h = item % kv_heads;
      const std::vector<int32_t>& sel = st.selection[static_cast<size_t>(item)];
      for (int64_t g = 0; g < group; ++g) {
        const int64_t head = h * group + g;
        infllm::block_sparse_attention(q.as<const float>() + i * q.cols + head * hd, k + h * hd, v + h * hd, hd,
                                       start + i, sel.data(), static_cast<int64_t>(sel.size()), st.cfg.block_size,
                                       out.as<float>() + i * out.cols + head * hd, ld);
      }
    }
  });
}

namespace {

// The words of a token mask for a row of `vocab` logits (nullptr: no mask).
const uint32_t* mask_words(const Tensor* mask, int64_t vocab) {
  if (mask == nullptr) return nullptr;
  MCPM_CHECK(mask->dtype == DType::I32 && mask->rows == 1 && mask->cols >= (vocab + 31) / 32);
  return mask->as<const uint32_t>();
}

}  // namespace

int32_t CpuBackend::greedy_sample(ExecContext&, const Tensor& logits, const PenaltyTable& t, const Tensor* mask) {
  MCPM_CHECK(logits.dtype == DType::F32 && logits.rows == 1 && logits.cols > 0);
  apply_penalties(logits.as<float>(), t);
  const int32_t token =
      greedy_token(logits.as<const float>(), static_cast<int32_t>(logits.cols), mask_words(mask, logits.cols));
  MCPM_CHECK(token >= 0);  // the mask allows a token
  return token;
}

int32_t CpuBackend::sample_token(ExecContext&, const Tensor& logits, const PenaltyTable& t, const DrawParams& params,
                                 double u, const Tensor* mask) {
  MCPM_CHECK(logits.dtype == DType::F32 && logits.rows == 1 && logits.cols > 0 && params.temperature > 0.0f);
  apply_penalties(logits.as<float>(), t);
  thread_local DrawScratch scratch;  // the backend is shared by sessions on several threads
  const int32_t token = draw_token(logits.as<const float>(), static_cast<int32_t>(logits.cols), params, u, scratch,
                                   mask_words(mask, logits.cols));
  MCPM_CHECK(token >= 0);
  return token;
}

void CpuBackend::silu_mul(ExecContext& ctx, const Tensor& out, const Tensor& gate, const Tensor& up) {
  MCPM_CHECK(gate.rows == up.rows && gate.cols == up.cols && out.rows == gate.rows && out.cols == gate.cols);
  const int64_t total = gate.rows * gate.cols;
  cpu(ctx).pool.parallel_for(total, 4096, [&](int64_t b, int64_t e, int32_t) {
    const float* g = gate.as<const float>();
    const float* u = up.as<const float>();
    float* o = out.as<float>();
    for (int64_t i = b; i < e; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  });
}

}  // namespace mcpm
