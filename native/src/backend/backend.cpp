#include "backend/backend.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/draft_ops.h"
#ifdef MCPM_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "common/error.h"
#include "common/log_probs.h"

namespace mcpm {

bool all_finite(const float* values, size_t n) {
  // An exponent of all ones is an infinity or a NaN; an integer OR over the words vectorizes.
  uint32_t non_finite = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, values + i, sizeof bits);
    non_finite |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return non_finite == 0;
}

bool Backend::logits_finite(ExecContext& ctx, const Tensor& logits) {
  MCPM_CHECK(logits.dtype == DType::F32 && logits.rows == 1);
  constexpr int64_t kBlock = 1024;  // 4 KB: stays in L1 between the copy and the check
  float block[kBlock];
  synchronize(ctx);
  for (int64_t i = 0; i < logits.cols; i += kBlock) {
    const int64_t n = std::min(kBlock, logits.cols - i);
    download(block, logits.as<float>() + i, static_cast<size_t>(n) * sizeof(float));
    if (!all_finite(block, static_cast<size_t>(n))) return false;
  }
  return true;
}

void HostDraftOps::top_log_probs(ExecContext& ctx, const Tensor& logits, int32_t k, const Tensor& ids,
                            const Tensor& log_probs) {
  MCPM_CHECK(logits.dtype == DType::F32 && k >= 1 && k <= logits.cols);
  MCPM_CHECK(ids.dtype == DType::I32 && log_probs.dtype == DType::F32 && ids.rows * ids.cols >= logits.rows * k &&
             log_probs.rows * log_probs.cols >= logits.rows * k);
  const int32_t vocab = static_cast<int32_t>(logits.cols);
  std::vector<float> row(static_cast<size_t>(vocab));
  std::vector<int32_t> top(static_cast<size_t>(k));
  std::vector<float> lp(static_cast<size_t>(k));
  backend_.synchronize(ctx);
  for (int64_t r = 0; r < logits.rows; ++r) {
    backend_.download(row.data(), logits.slice_rows(r, 1).data, row.size() * sizeof(float));
    log_softmax(row.data(), vocab);
    top_k_indices(row.data(), vocab, k, top.data());
    for (int32_t j = 0; j < k; ++j) lp[static_cast<size_t>(j)] = row[static_cast<size_t>(top[static_cast<size_t>(j)])];
    backend_.upload(ids.as<int32_t>() + r * k, top.data(), top.size() * sizeof(int32_t));
    backend_.upload(log_probs.as<float>() + r * k, lp.data(), lp.size() * sizeof(float));
  }
}

void HostDraftOps::tree_expand(ExecContext& ctx, const TreeExpandArgs& a) {
  const int32_t rows = tree_level_rows(a.level, a.k), n = rows * a.k;
  MCPM_CHECK(a.state != nullptr && a.k >= 1 && a.ids.dtype == DType::I32 && a.log_probs.dtype == DType::F32 &&
             a.ids.rows * a.ids.cols >= n && a.log_probs.rows * a.log_probs.cols >= n);
  MCPM_CHECK(a.last || (a.x.rows >= rows && a.features.rows >= a.k && a.x.dtype == a.features.dtype &&
                        a.x.cols == a.features.cols));
  backend_.synchronize(ctx);
  auto state = std::make_unique<DraftTreeState>();
  backend_.download(state.get(), a.state, sizeof(DraftTreeState));
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  std::vector<float> lp(static_cast<size_t>(n));
  backend_.download(tokens.data(), a.ids.data, tokens.size() * sizeof(int32_t));
  backend_.download(lp.data(), a.log_probs.data, lp.size() * sizeof(float));
  if (a.vocabulary != nullptr)
    for (int32_t& t : tokens) backend_.download(&t, a.vocabulary + t, sizeof(int32_t));
  std::vector<int32_t> parent_rows(static_cast<size_t>(a.k));
  tree_expand_host(*state, a.level, a.k, a.last, tokens.data(), lp.data(), parent_rows.data());
  backend_.upload(a.state, state.get(), sizeof(DraftTreeState));
  if (a.last) return;
  std::vector<int32_t> dst(static_cast<size_t>(a.k));
  for (int32_t r = 0; r < a.k; ++r) dst[static_cast<size_t>(r)] = r;
  backend_.copy_rows(ctx, a.features, a.x, dst.data(), parent_rows.data(), a.k);
}

void HostDraftOps::tree_select(ExecContext& ctx, void* state, int32_t candidates, int32_t tree_size, int32_t root_token) {
  backend_.synchronize(ctx);
  auto s = std::make_unique<DraftTreeState>();
  backend_.download(s.get(), state, sizeof(DraftTreeState));
  tree_select_host(*s, candidates, tree_size, root_token);
  backend_.upload(state, s.get(), sizeof(DraftTreeState));
}

Backend::Backend() = default;
Backend::~Backend() = default;

DraftOps& Backend::draft_ops() {
  if (!host_draft_ops_) host_draft_ops_ = std::make_unique<HostDraftOps>(*this);
  return *host_draft_ops_;
}

void Backend::embedding_resident(ExecContext& ctx, const Tensor& out, const Tensor& table, const int32_t* ids,
                                 float scale) {
  std::vector<int32_t> host(static_cast<size_t>(out.rows));
  synchronize(ctx);
  download(host.data(), ids, host.size() * sizeof(int32_t));
  embedding(ctx, out, table, host.data(), scale);
}

void Backend::tree_attention_resident(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k_cache,
                                      const Tensor& v_cache, const AttentionShape& shape, int64_t prefix,
                                      const uint64_t* masks, int32_t mask_bits) {
  MCPM_CHECK(mask_bits >= 1 && mask_bits <= 64 && prefix + mask_bits <= k_cache.rows);
  std::vector<uint64_t> host(static_cast<size_t>(q.rows));
  synchronize(ctx);
  download(host.data(), masks, host.size() * sizeof(uint64_t));
  const uint64_t allowed = mask_bits == 64 ? ~uint64_t{0} : (uint64_t{1} << mask_bits) - 1;
  for (uint64_t m : host) MCPM_CHECK((m & ~allowed) == 0);
  tree_attention(ctx, out, q, k_cache, v_cache, shape, prefix, host.data());
}

std::unique_ptr<AttentionState> Backend::create_sparse_attention_state(const SparseAttentionParams&,
                                                                       const AttentionShape&, int64_t) {
  throw_error(MCPM_ERR_UNSUPPORTED, std::string("InfLLM v2 sparse attention is not implemented by the ") + name() +
                                        " backend");
}

void Backend::sparse_select(ExecContext&, const Tensor&, const Tensor&, const AttentionShape&, int64_t,
                            AttentionState&) {
  throw_error(MCPM_ERR_UNSUPPORTED, std::string("InfLLM v2 sparse attention is not implemented by the ") + name() +
                                        " backend");
}

void Backend::sparse_attend(ExecContext&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                            const AttentionShape&, int64_t, AttentionState&) {
  throw_error(MCPM_ERR_UNSUPPORTED, std::string("InfLLM v2 sparse attention is not implemented by the ") + name() +
                                        " backend");
}

void Backend::attention_batch(ExecContext& ctx, const Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v,
                              const AttentionSegment* segments, int32_t count, const AttentionShape& shape) {
  for (int32_t i = 0; i < count; ++i) {
    const AttentionSegment& s = segments[i];
    const Tensor qs = q.slice_rows(s.row, s.rows), os = out.slice_rows(s.row, s.rows);
    store_kv(ctx, s.k_cache, s.v_cache, k.slice_rows(s.row, s.rows), v.slice_rows(s.row, s.rows), s.start);
    if (s.tree_masks && s.masks_resident)
      tree_attention_resident(ctx, os, qs, s.k_cache, s.v_cache, shape, s.prefix(), s.tree_masks, s.mask_bits);
    else if (s.tree_masks)
      tree_attention(ctx, os, qs, s.k_cache, s.v_cache, shape, s.prefix(), s.tree_masks);
    else if (s.sparse)
      sparse_attention(ctx, os, qs, s.k_cache, s.v_cache, shape, s.start, *s.sparse);
    else
      attention(ctx, os, qs, s.k_cache, s.v_cache, shape, s.start);
  }
}

void Backend::adopt_int4_qweight(const Tensor&, int64_t, int64_t) {}
void Backend::adopt_int4_scales(const Tensor&, int64_t, int64_t) {}

void Backend::linear_int4(ExecContext&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  throw_error(MCPM_ERR_UNSUPPORTED, std::string("int4 linear layers are not implemented by the ") + name() + " backend");
}

uint32_t compiled_backends() {
  uint32_t flags = MCPM_BACKEND_FLAG_CPU;
#ifdef MCPM_HAVE_CUDA
  flags |= MCPM_BACKEND_FLAG_CUDA;
#endif
  return flags;
}

namespace {
std::shared_ptr<Backend> create_cpu_backend(const BackendOptions& options) {
  switch (options.cpu_precision) {
    case MCPM_CPU_PRECISION_FAST: return std::make_shared<CpuBackend>(cpu_kernels(), CpuPrecision::Fast);
    case MCPM_CPU_PRECISION_EXACT: return std::make_shared<CpuBackend>(cpu_kernels(), CpuPrecision::Exact);
    default: return std::make_shared<CpuBackend>();  // the environment's default
  }
}
}  // namespace

std::shared_ptr<Backend> create_backend(mcpm_backend kind, const BackendOptions& options) {
  switch (kind) {
    case MCPM_BACKEND_AUTO:
#ifdef MCPM_HAVE_CUDA
      // The CUDA backend when its device is usable, else the CPU (the reason is not an error here).
      if (cuda_device_problem(options.device_index).empty()) {
        try {
          return create_cuda_backend(options.device_index);
        } catch (const Error&) {
          // e.g. this build has no code for the device's architecture: fall back to the CPU.
        }
      }
#endif
      return create_cpu_backend(options);
    case MCPM_BACKEND_CPU:
      return create_cpu_backend(options);
    case MCPM_BACKEND_CUDA:
#ifdef MCPM_HAVE_CUDA
      return create_cuda_backend(options.device_index);
#else
      throw_error(MCPM_ERR_BACKEND_UNAVAILABLE,
                  "the CUDA backend is not compiled into this build of the library (built with backends: cpu)");
#endif
    default:
      invalid_argument("unknown backend " + std::to_string(kind) + " (expected MCPM_BACKEND_AUTO, _CPU or _CUDA)");
  }
}

}  // namespace mcpm
