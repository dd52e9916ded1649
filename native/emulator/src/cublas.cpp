// Emulated cuBLAS (cublas.h): reference GEMM in fp32, queued on the handle's stream.
#include "mcpm_emu/cublas.h"

#include <vector>

#include "internal.h"

namespace mcpm_emu {

struct BlasHandle {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

namespace {

size_t type_size(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

float load(const void* p, cudaDataType_t t, size_t i) {
  switch (t) {
    case CUDA_R_16F: return half_bits_to_float(static_cast<const uint16_t*>(p)[i]);
    case CUDA_R_16BF: return bf16_bits_to_float(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

void store(void* p, cudaDataType_t t, size_t i, float v) {
  switch (t) {
    case CUDA_R_16F: static_cast<uint16_t*>(p)[i] = double_to_half_bits(v); break;
    case CUDA_R_16BF: static_cast<uint16_t*>(p)[i] = float_to_bf16_bits(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

bool known(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }

}  // namespace
}  // namespace mcpm_emu

using mcpm_emu::BlasHandle;

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  *handle = new BlasHandle();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes > 0 && !mcpm_emu::is_device_range(workspace, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  handle->workspace = workspace;
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetAtomicsMode(cublasHandle_t handle, cublasAtomicsMode_t) {
  return handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}

// C = alpha op(A) op(B) + beta C, column-major: op(A) is m x k, op(B) k x n, C m x n.
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType_t Atype, int lda, const void* B,
                            cudaDataType_t Btype, int ldb, const void* beta, void* C, cudaDataType_t Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t) {
  using namespace mcpm_emu;
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0 || !alpha || !beta || !known(Atype) || !known(Btype) || !known(Ctype))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_FAST_16F &&
      computeType != CUBLAS_COMPUTE_32F_FAST_16BF && computeType != CUBLAS_COMPUTE_32F_FAST_TF32)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  const int a_rows = transa == CUBLAS_OP_N ? m : k, b_rows = transb == CUBLAS_OP_N ? k : n;
  if (lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) || ldc < std::max(1, m)) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const float a_scale = *static_cast<const float*>(alpha), b_scale = *static_cast<const float*>(beta);  // host mode
  const size_t a_cols = transa == CUBLAS_OP_N ? k : m, b_cols = transb == CUBLAS_OP_N ? n : k;
  const size_t a_bytes = ((a_cols ? a_cols - 1 : 0) * lda + a_rows) * type_size(Atype);
  const size_t b_bytes = ((b_cols ? b_cols - 1 : 0) * ldb + b_rows) * type_size(Btype);
  const size_t c_bytes = (static_cast<size_t>(n - 1) * ldc + m) * type_size(Ctype);
  const cudaError_t err = enqueue_device_work(handle->stream, [=] {
    if ((k > 0 && (!is_device_range(A, a_bytes) || !is_device_range(B, b_bytes))) || !is_device_range(C, c_bytes)) {
      device_fault("cublasGemmEx: an operand lies outside device memory (freed, or a captured stale pointer)");
      return;
    }
    // op(A) as rows of k and op(B) as columns of k, widened to fp32 once.
    std::vector<float> a(static_cast<size_t>(m) * k), b(static_cast<size_t>(n) * k);
    for (int i = 0; i < m; ++i)
      for (int p = 0; p < k; ++p)
        a[static_cast<size_t>(i) * k + p] =
            load(A, Atype, transa == CUBLAS_OP_N ? static_cast<size_t>(p) * lda + i : static_cast<size_t>(i) * lda + p);
    for (int j = 0; j < n; ++j)
      for (int p = 0; p < k; ++p)
        b[static_cast<size_t>(j) * k + p] =
            load(B, Btype, transb == CUBLAS_OP_N ? static_cast<size_t>(j) * ldb + p : static_cast<size_t>(p) * ldb + j);
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        const float* ar = &a[static_cast<size_t>(i) * k];
        const float* bc = &b[static_cast<size_t>(j) * k];
        float acc = 0.0f;
        for (int p = 0; p < k; ++p) acc += ar[p] * bc[p];
        const size_t at = static_cast<size_t>(j) * ldc + i;
        const float prior = b_scale == 0.0f ? 0.0f : b_scale * load(C, Ctype, at);  // beta 0: C is not read
        store(C, Ctype, at, a_scale * acc + prior);
      }
  });
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  return CUBLAS_STATUS_SUCCESS;
}
