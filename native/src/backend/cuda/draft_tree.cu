// EAGLE-2 drafting bookkeeping on the device (DraftOps::tree_expand / tree_select): the tree under
// construction stays in a DraftTreeState in device memory (layout: backend/draft_tree.h), so the
// draft's levels follow each other on the stream with no host round trip, and the host fetches only
// the finished tree. Both kernels run as one block: a level has at most 63 * 63 new candidates and a
// tree at most 4160 (kMaxCandidates), so the work is a few thousand comparisons.
//
//   tree_expand_kernel  one thread per new candidate writes (token, parent, score = parent score +
//                       log-prob, a plain fp32 add as on the host); then, unless last, each computes
//                       its rank among the level's candidates (tree_rank: how many come before it in
//                       (score desc, index asc) order) and the k ranked first become the next frontier
//                       at slot level * k + rank; finally the block copies each frontier node's parent
//                       output feature row x[row] into features[rank].
//   tree_select_kernel  the candidates' scores go to shared memory; every candidate whose rank is below
//                       tree_size - 1 is chosen; a chosen candidate's node index is 1 + the number of
//                       chosen candidates before it (candidate order keeps parents first); then one
//                       thread links each node to its parent's node and fills depths and masks, in node
//                       order (tree_link, the host's code).
// The selections are exactly those of tree_expand_host / tree_select_host (a strict total order has
// one set of t best); DraftTree.* tests run tree_rank against the host's sort on the CPU.
#include <algorithm>

#include "backend/cuda/cuda_internal.cuh"

namespace mcpm {

namespace cuda {

namespace {

constexpr int kTreeThreads = 1024;

__global__ void tree_expand_kernel(DraftTreeState* __restrict__ s, const int32_t* __restrict__ ids,
                                   const float* __restrict__ log_probs, const int32_t* __restrict__ vocabulary,
                                   int32_t level, int32_t k, bool last, const float* __restrict__ x,
                                   float* __restrict__ features, int64_t cols) {
  __shared__ int32_t parent_row[DraftTreeState::kFrontierSlots];
  const int32_t first = tree_level_first_candidate(level, k), n = tree_level_rows(level, k) * k;
  for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int32_t row = i / k;
    const int32_t parent = level == 0 ? -1 : s->frontier_cand[(level - 1) * k + row];
    const int32_t id = ids[i];
    s->cand_token[first + i] = vocabulary ? vocabulary[id] : id;
    s->cand_parent[first + i] = parent;
    s->cand_score[first + i] = level == 0 ? log_probs[i] : __fadd_rn(s->cand_score[parent], log_probs[i]);
  }
  if (last) return;
  __syncthreads();  // every new score is written
  for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int32_t rank = tree_rank(s->cand_score + first, n, i);
    if (rank >= k) continue;
    const int32_t slot = level * k + rank, row = i / k;
    s->frontier_cand[slot] = first + i;
    s->frontier_token[slot] = s->cand_token[first + i];
    const uint64_t parent_mask = level == 0 ? 0ull : s->frontier_mask[(level - 1) * k + row];
    s->frontier_mask[slot] = parent_mask | (1ull << slot);
    parent_row[rank] = row;
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < static_cast<int64_t>(k) * cols; e += blockDim.x) {
    const int64_t r = e / cols, c = e % cols;
    features[r * cols + c] = x[static_cast<int64_t>(parent_row[r]) * cols + c];
  }
}

__global__ void tree_select_kernel(DraftTreeState* __restrict__ s, int32_t n, int32_t take, int32_t root) {
  __shared__ float score[DraftTreeState::kMaxCandidates];
  __shared__ int32_t node_of[DraftTreeState::kMaxCandidates];
  __shared__ int32_t candidate_of[DraftTreeState::kMaxNodes];
  for (int32_t i = threadIdx.x; i < n; i += blockDim.x) score[i] = s->cand_score[i];
  __syncthreads();
  for (int32_t i = threadIdx.x; i < n; i += blockDim.x) node_of[i] = tree_rank(score, n, i) < take ? 0 : -1;
  __syncthreads();
  for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
    if (node_of[i] < 0) continue;
    int32_t before = 0;
    for (int32_t j = 0; j < i; ++j) before += node_of[j] >= 0 ? 1 : 0;
    candidate_of[1 + before] = i;
  }
  __syncthreads();
  for (int32_t node = 1 + threadIdx.x; node <= take; node += blockDim.x) node_of[candidate_of[node]] = node;
  __syncthreads();
  // A chosen candidate's parent is always chosen (it ranks first: a score no lower, a lower index).
  if (threadIdx.x == 0) (void)tree_link(*s, take, root, candidate_of, node_of);
}

}  // namespace

}  // namespace cuda

void CudaBackend::tree_expand(ExecContext& ctx, const TreeExpandArgs& a) {
  CudaContext& c = cuda_context(ctx);
  const int32_t rows = tree_level_rows(a.level, a.k), n = rows * a.k;
  MCPM_CHECK(a.state != nullptr && a.k >= 1 && a.level >= 0);
  MCPM_CHECK(tree_level_first_candidate(a.level, a.k) + n <= DraftTreeState::kMaxCandidates);
  MCPM_CHECK(a.ids.dtype == DType::I32 && a.log_probs.dtype == DType::F32 && a.ids.rows * a.ids.cols >= n &&
             a.log_probs.rows * a.log_probs.cols >= n);
  MCPM_CHECK(a.last || ((a.level + 1) * a.k <= DraftTreeState::kFrontierSlots &&
                        a.x.dtype == DType::F32 && a.features.dtype == DType::F32 && a.x.cols == a.features.cols &&
                        a.x.rows >= rows && a.features.rows >= a.k));
  DeviceGuard guard(device_);
  MCPM_LAUNCH(1, cuda::kTreeThreads, 0, c.stream, cuda::tree_expand_kernel)(
      static_cast<DraftTreeState*>(a.state), a.ids.as<const int32_t>(), a.log_probs.as<const float>(), a.vocabulary,
      a.level, a.k, a.last, a.last ? nullptr : a.x.as<const float>(), a.last ? nullptr : a.features.as<float>(),
      a.x.cols);
  MCPM_CUDA_LAUNCHED(tree_expand_kernel);
}

void CudaBackend::tree_select(ExecContext& ctx, void* state, int32_t candidates, int32_t tree_size, int32_t root_token) {
  CudaContext& c = cuda_context(ctx);
  MCPM_CHECK(state != nullptr && candidates >= 0 && candidates <= DraftTreeState::kMaxCandidates && tree_size >= 1 &&
             tree_size <= DraftTreeState::kMaxNodes);
  DeviceGuard guard(device_);
  const int32_t take = std::min(tree_size - 1, candidates);
  MCPM_LAUNCH(1, cuda::kTreeThreads, 0, c.stream, cuda::tree_select_kernel)(static_cast<DraftTreeState*>(state), candidates,
                                                                   take, root_token);
  MCPM_CUDA_LAUNCHED(tree_select_kernel);
}

}  // namespace mcpm
