// The CUDA emulator's own tests: each emulated feature against its documented semantics, under every
// fiber order, and the deliberately broken kernels (an off-by-one index, a missing __syncthreads, a
// graph holding a freed pointer, a lane skipping a collective) that must each fail.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string>
#include <random>
#include <vector>

#include "mcpm_emu/cub.h"
#include "mcpm_emu/cublas.h"
#include "mcpm_emu/device.h"
#include "mcpm_emu/emulator.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_TEST_ASAN 1
#endif
#endif

#define LAUNCH(grid, block, smem, stream, ...) \
  ::mcpm_emu::make_launch(grid, block, smem, stream, #__VA_ARGS__, __VA_ARGS__)

namespace {

using mcpm_emu::Order;

// ---- kernels -----------------------------------------------------------------------------------------

// out[b * n + t] = the value thread (t + 1) % n of the same block stored before the barrier.
__global__ void rotate_through_shared(int* out) {
  __shared__ int values[256];
  const int t = static_cast<int>(threadIdx.x), n = static_cast<int>(blockDim.x);
  values[t] = t * 7 + static_cast<int>(blockIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = values[(t + 1) % n];
}

// Block b reads its shared memory before writing it: the bytes it finds (only block 0 writes first).
__global__ void read_before_write(unsigned* out) {
  __shared__ unsigned values[64];
  unsigned* dynamic = reinterpret_cast<unsigned*>(mcpm_emu::dynamic_shared());
  const unsigned t = threadIdx.x;
  out[(blockIdx.x * blockDim.x + t) * 2] = values[t];
  out[(blockIdx.x * blockDim.x + t) * 2 + 1] = dynamic[t];
  values[t] = 1000 + t;
  dynamic[t] = 2000 + t;
}

// Each lane's result of one shuffle kind (0 idx, 1 up, 2 down, 3 xor) with `arg` and `width`.
__global__ void shuffle_kernel(int* out, int kind, int arg, int width) {
  const int lane = static_cast<int>(threadIdx.x);
  const int v = 100 + lane;
  int r = 0;
  switch (kind) {
    case 0: r = __shfl_sync(0xffffffffu, v, arg, width); break;
    case 1: r = __shfl_up_sync(0xffffffffu, v, static_cast<unsigned>(arg), width); break;
    case 2: r = __shfl_down_sync(0xffffffffu, v, static_cast<unsigned>(arg), width); break;
    default: r = __shfl_xor_sync(0xffffffffu, v, arg, width); break;
  }
  out[lane] = r;
}

__global__ void wide_shuffle_and_ballot(double* sums, unsigned* ballots) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  double v = 1.0 + lane * 0.25;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  sums[threadIdx.x] = v;
  ballots[threadIdx.x] = __ballot_sync(0xffffffffu, lane % 3 == 0);
}

// Deliberately broken: lane 5 leaves before the warp's shuffle.
__global__ void lane_skips_shuffle(float* out) {
  const int lane = static_cast<int>(threadIdx.x);
  if (lane == 5) return;
  out[lane] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

// Deliberately broken: half the block exits before a barrier the other half waits at.
__global__ void half_block_skips_barrier(float* out) {
  if (threadIdx.x >= 32) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Block sum of x[0, blockDim.x): the classic two-barrier reduction, or the broken one without the
// barrier between the per-warp partial sums and their reads.
template <bool kBroken>
__global__ void block_sum(const float* x, float* out) {
  __shared__ float partial[32];
  float v = x[threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  if (lane == 0) partial[warp] = v;
  if (!kBroken) __syncthreads();
  if (warp == 0) {
    float s = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) *out = s;
  }
}

// out[i] = in[i] for i < n; the broken variant's bound is off by one.
template <bool kBroken>
__global__ void copy_n(const float* in, float* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (kBroken ? i <= n : i < n) out[i] = kBroken && i == n ? 0.0f : in[i];
}

__global__ void scale_by(const float* in, float* out, float k, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = in[i] * k;
}

// One m16n8k16 mma from A [16][16], B [16][8] (fp16 bits) and C [16][8], fragments as documented.
__global__ void mma_kernel(const uint16_t* A, const uint16_t* B, const float* C, float* D) {
  const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
  uint32_t a[4], b[2];
  float c[4], d[4];
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i % 2), col = 2 * t + 8 * (i / 2);
    a[i] = A[row * 16 + col] | static_cast<uint32_t>(A[row * 16 + col + 1]) << 16;
  }
  for (int i = 0; i < 2; ++i) {
    const int k = 2 * t + 8 * i;
    b[i] = B[k * 8 + g] | static_cast<uint32_t>(B[(k + 1) * 8 + g]) << 16;
  }
  for (int i = 0; i < 4; ++i) c[i] = C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
  mcpm_emu::mma_m16n8k16_f16_f32(d, a, b, c);
  for (int i = 0; i < 4; ++i) D[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = d[i];
}

// cp.async: 16 bytes with src_bytes 7 (zero fill), two groups, what shared memory holds at each step.
__global__ void cp_async_kernel(const unsigned char* src, unsigned char* out) {
  __shared__ __align__(16) unsigned char stage[2][16];
  if (threadIdx.x != 0) return;
  mcpm_emu::cp_async(stage[0], src, 16, 7);
  mcpm_emu::cp_async_commit_group();
  mcpm_emu::cp_async(stage[1], src + 16, 16, 16);
  mcpm_emu::cp_async_commit_group();
  std::memcpy(out, stage[0], 16);  // nothing has landed yet
  mcpm_emu::cp_async_wait_group(1);
  std::memcpy(out + 16, stage[0], 16);  // the first group
  std::memcpy(out + 32, stage[1], 16);  // the second is still in flight
  mcpm_emu::cp_async_wait_group(0);
  std::memcpy(out + 48, stage[1], 16);
}

__global__ void cp_async_never_waits(const unsigned char* src) {
  __shared__ __align__(16) unsigned char stage[16];
  mcpm_emu::cp_async(stage, src, 16, 16);
  mcpm_emu::cp_async_commit_group();
}

// Reads a uint4 at `offset` bytes into `in` (misaligned unless a multiple of 16).
__global__ void load_vector(const unsigned char* in, int offset, unsigned* out) {
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(in + offset));
  *out = v.x + v.y + v.z + v.w;
}

__global__ void big_dynamic_shared(float* out) {
  float* s = reinterpret_cast<float*>(mcpm_emu::dynamic_shared());
  s[threadIdx.x] = 1.0f;
  out[threadIdx.x] = s[threadIdx.x];
}

// ---- helpers -------------------------------------------------------------------------------------------

template <class T>
T* device_alloc(size_t count) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, count * sizeof(T)), cudaSuccess);
  return static_cast<T*>(p);
}

template <class T>
std::vector<T> download(const T* p, size_t count) {
  std::vector<T> v(count);
  EXPECT_EQ(cudaMemcpy(v.data(), p, count * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

template <class T>
void upload(T* p, const std::vector<T>& v) {
  ASSERT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
}

// out[i] = in[i] * k (i < n), captured on a stream of its own and instantiated; nothing runs yet.
class CapturedScale {
 public:
  CapturedScale(const float* in, float* out, float k, int n) {
    EXPECT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
    EXPECT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    LAUNCH((n + 255) / 256, 256, 0, stream_, scale_by)(in, out, k, n);
    EXPECT_EQ(cudaStreamEndCapture(stream_, &graph_), cudaSuccess);
    EXPECT_EQ(cudaGraphInstantiate(&exec_, graph_, 0), cudaSuccess);
  }
  ~CapturedScale() {
    cudaGraphExecDestroy(exec_);
    cudaGraphDestroy(graph_);
    cudaStreamDestroy(stream_);
  }
  cudaError_t Replay() { return cudaGraphLaunch(exec_, stream_); }
  cudaStream_t stream() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

class Emulator : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = mcpm_emu::schedule_config();
    mcpm_emu::clear_fault();
  }
  void TearDown() override {
    mcpm_emu::set_schedule_config(saved_);
    mcpm_emu::clear_fault();
    (void)cudaGetLastError();
  }
  static void Order_(Order order, bool race_check = false, uint64_t seed = 1) {
    mcpm_emu::ScheduleConfig c;
    c.order = order;
    c.seed = seed;
    c.race_check = race_check;
    mcpm_emu::set_schedule_config(c);
  }
  mcpm_emu::ScheduleConfig saved_;
};

const Order kOrders[] = {Order::Forward, Order::Reverse, Order::Random};

// The sticky fault mentions every one of `parts`; the device is then reset for the rest of the test.
void ExpectFaultMentions(std::initializer_list<const char*> parts) {
  const std::string fault = mcpm_emu::last_fault();
  for (const char* part : parts) EXPECT_NE(fault.find(part), std::string::npos) << part << " in: " << fault;
  mcpm_emu::clear_fault();
}

// ---- tests ---------------------------------------------------------------------------------------------

TEST_F(Emulator, BarrierPublishesSharedWritesUnderEveryOrder) {
  int* out = device_alloc<int>(3 * 256);
  for (Order order : kOrders) {
    Order_(order);
    LAUNCH(3, 256, 0, nullptr, rotate_through_shared)(out);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess) << mcpm_emu::last_fault();
    const std::vector<int> got = download(out, 3 * 256);
    for (int b = 0; b < 3; ++b)
      for (int t = 0; t < 256; ++t) ASSERT_EQ(got[b * 256 + t], ((t + 1) % 256) * 7 + b) << "block " << b << " t " << t;
  }
  cudaFree(out);
}

TEST_F(Emulator, SharedMemoryIsPrivateToEachBlock) {
  unsigned* out = device_alloc<unsigned>(2 * 2 * 64);
  ASSERT_EQ(cudaFuncSetAttribute(read_before_write, cudaFuncAttributeMaxDynamicSharedMemorySize, 256), cudaSuccess);
  LAUNCH(2, 64, 256, nullptr, read_before_write)(out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << mcpm_emu::last_fault();
  const std::vector<unsigned> got = download(out, 2 * 2 * 64);
  // Block 1 runs after block 0 wrote 1000 + t and 2000 + t, yet finds only the fill pattern.
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], 0xffffffffu) << i;
  cudaFree(out);
}

TEST_F(Emulator, ShufflesExchangeLanesAsDocumented) {
  int* out = device_alloc<int>(32);
  struct Case {
    int kind, arg, width;
  };
  const Case cases[] = {{0, 5, 32}, {0, 35, 32}, {0, 3, 8},  {1, 1, 32}, {1, 3, 16}, {2, 1, 32},
                        {2, 4, 8},  {3, 1, 32},  {3, 16, 32}, {3, 7, 8},  {3, 8, 8}};
  for (Order order : kOrders) {
    Order_(order);
    for (const Case& c : cases) {
      LAUNCH(1, 32, 0, nullptr, shuffle_kernel)(out, c.kind, c.arg, c.width);
      ASSERT_EQ(cudaGetLastError(), cudaSuccess) << mcpm_emu::last_fault();
      const std::vector<int> got = download(out, 32);
      for (int lane = 0; lane < 32; ++lane) {
        const int base = lane & ~(c.width - 1);
        int src = lane;
        if (c.kind == 0) src = base + (c.arg & (c.width - 1));
        if (c.kind == 1 && lane - c.arg >= base) src = lane - c.arg;
        if (c.kind == 2 && lane + c.arg < base + c.width) src = lane + c.arg;
        if (c.kind == 3 && (lane ^ c.arg) >= base && (lane ^ c.arg) < base + c.width) src = lane ^ c.arg;
        EXPECT_EQ(got[lane], 100 + src) << "kind " << c.kind << " arg " << c.arg << " width " << c.width << " lane " << lane;
      }
    }
  }
  cudaFree(out);
}

TEST_F(Emulator, EightByteShufflesAndBallot) {
  double* sums = device_alloc<double>(64);
  unsigned* ballots = device_alloc<unsigned>(64);
  LAUNCH(1, 64, 0, nullptr, wide_shuffle_and_ballot)(sums, ballots);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << mcpm_emu::last_fault();
  double want = 0.0;
  unsigned bits = 0;
  for (int l = 0; l < 32; ++l) {
    want += 1.0 + l * 0.25;
    if (l % 3 == 0) bits |= 1u << l;
  }
  const std::vector<double> s = download(sums, 64);
  const std::vector<unsigned> b = download(ballots, 64);
  for (int t = 0; t < 64; ++t) {
    EXPECT_EQ(s[t], want);
    EXPECT_EQ(b[t], bits);
  }
  cudaFree(sums);
  cudaFree(ballots);
}

TEST_F(Emulator, LaneThatSkipsACollectiveIsAFaultNotAHang) {
  float* out = device_alloc<float>(32);
  LAUNCH(1, 32, 0, nullptr, lane_skips_shuffle)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  // Sticky, as on hardware, until the device is reset.
  EXPECT_EQ(cudaMemcpy(out, out, 4, cudaMemcpyDeviceToDevice), cudaErrorLaunchFailure);
  ExpectFaultMentions({"lane_skips_shuffle", "__shfl_xor_sync", "lane 5 has exited"});
  cudaFree(out);
}

TEST_F(Emulator, BarrierThatSomeThreadsSkipIsAFault) {
  float* out = device_alloc<float>(64);
  LAUNCH(1, 64, 0, nullptr, half_block_skips_barrier)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  ExpectFaultMentions({"32 threads wait at __syncthreads but 32 threads of the block have exited"});
  cudaFree(out);
}

TEST_F(Emulator, RaceCheckFindsTheMissingSyncthreadsOfABlockReduction) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> d(-8, 8);
  std::vector<float> x(256);
  double want = 0.0;
  for (float& v : x) {
    v = static_cast<float>(d(rng));  // small integers: every summation order is exact
    want += v;
  }
  float* xd = device_alloc<float>(256);
  float* out = device_alloc<float>(1);
  upload(xd, x);
  Order_(Order::Forward, /*race_check=*/true);
  LAUNCH(1, 256, 0, nullptr, block_sum<false>)(xd, out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << mcpm_emu::last_fault();
  EXPECT_EQ(download(out, 1)[0], static_cast<float>(want));
  EXPECT_GE(mcpm_emu::stats().race_checks, 1u);

  LAUNCH(1, 256, 0, nullptr, block_sum<true>)(xd, out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  ExpectFaultMentions({"block_sum<true>", "data race"});
  cudaFree(xd);
  cudaFree(out);
}

TEST_F(Emulator, OffByOneIndexIsCaught) {
  const int n = 1000;
  float* in = device_alloc<float>(n);
  float* out = device_alloc<float>(n);
  upload(in, std::vector<float>(n, 2.0f));
  LAUNCH(4, 256, 0, nullptr, copy_n<false>)(in, out, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << mcpm_emu::last_fault();
#if defined(EMU_TEST_ASAN)
  // AddressSanitizer sees the write one element past the exact-size block.
  EXPECT_DEATH((LAUNCH(4, 256, 0, nullptr, copy_n<true>)(in, out, n)), "heap-buffer-overflow");
#else
  LAUNCH(4, 256, 0, nullptr, copy_n<true>)(in, out, n);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  ExpectFaultMentions({"copy_n<true>", "past its end"});
#endif
  cudaFree(in);
  cudaFree(out);
}

TEST_F(Emulator, MmaEqualsThePlainMatrixProduct) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<uint16_t> A(256), B(128);
    std::vector<float> C(128);
    for (uint16_t& v : A) v = mcpm_emu::double_to_half_bits(u(rng));
    for (uint16_t& v : B) v = mcpm_emu::double_to_half_bits(u(rng));
    for (float& v : C) v = u(rng);
    uint16_t* Ad = device_alloc<uint16_t>(256);
    uint16_t* Bd = device_alloc<uint16_t>(128);
    float* Cd = device_alloc<float>(128);
    float* Dd = device_alloc<float>(128);
    upload(Ad, A);
    upload(Bd, B);
    upload(Cd, C);
    LAUNCH(1, 32, 0, nullptr, mma_kernel)(Ad, Bd, Cd, Dd);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess) << mcpm_emu::last_fault();
    const std::vector<float> D = download(Dd, 128);
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j) {
        double want = C[i * 8 + j];
        double mag = std::fabs(want);
        for (int k = 0; k < 16; ++k) {
          const double p = static_cast<double>(mcpm_emu::half_bits_to_float(A[i * 16 + k])) *
                           mcpm_emu::half_bits_to_float(B[k * 8 + j]);
          want += p;
          mag += std::fabs(p);
        }
        EXPECT_NEAR(D[i * 8 + j], want, 17 * 6e-8 * mag) << "trial " << trial << " D[" << i << "][" << j << "]";
      }
    cudaFree(Ad);
    cudaFree(Bd);
    cudaFree(Cd);
    cudaFree(Dd);
  }
}

TEST_F(Emulator, CpAsyncZeroFillsAndLandsOnlyAtItsWait) {
  std::vector<unsigned char> src(32);
  for (int i = 0; i < 32; ++i) src[i] = static_cast<unsigned char>(i + 1);
  unsigned char* s = device_alloc<unsigned char>(32);
  unsigned char* out = device_alloc<unsigned char>(64);
  upload(s, src);
  LAUNCH(1, 32, 0, nullptr, cp_async_kernel)(s, out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << mcpm_emu::last_fault();
  const std::vector<unsigned char> got = download(out, 64);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(got[i], 0xff) << "before any wait, byte " << i;
    EXPECT_EQ(got[16 + i], i < 7 ? i + 1 : 0) << "first group (src-size 7), byte " << i;
    EXPECT_EQ(got[32 + i], 0xff) << "second group still in flight, byte " << i;
    EXPECT_EQ(got[48 + i], 17 + i) << "second group, byte " << i;
  }
  LAUNCH(1, 32, 0, nullptr, cp_async_never_waits)(s);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  ExpectFaultMentions({"cp.async copies still in flight"});
  cudaFree(s);
  cudaFree(out);
}

TEST_F(Emulator, Lop3FollowsItsLookupTable) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 100; ++trial) {
    const uint32_t a = rng(), b = rng(), c = rng();
    EXPECT_EQ(mcpm_emu::lop3(a, b, c, 0xEA), (a & b) | c);
    EXPECT_EQ(mcpm_emu::lop3(a, b, c, 0x96), a ^ b ^ c);
    EXPECT_EQ(mcpm_emu::lop3(a, b, c, 0x80), a & b & c);
    EXPECT_EQ(mcpm_emu::lop3(a, b, c, 0xFE), a | b | c);
    EXPECT_EQ(mcpm_emu::lop3(a, b, c, 0xF0), a);
    EXPECT_EQ(mcpm_emu::lop3(a, b, c, 0xCC), b);
    EXPECT_EQ(mcpm_emu::lop3(a, b, c, 0xAA), c);
  }
}

TEST_F(Emulator, GraphReplayReadsDeviceMemoryNowAndArgumentsAsCaptured) {
  const int n = 300;
  float* in = device_alloc<float>(n);
  float* out = device_alloc<float>(n);
  upload(in, std::vector<float>(n, 1.5f));
  {
    float k = 3.0f;
    CapturedScale graph(in, out, k, n);
    EXPECT_TRUE(std::isnan(download(out, 1)[0])) << "captured, not run: out still holds the fill pattern";
    upload(in, std::vector<float>(n, 2.0f));  // after capture: the replay reads it
    k = 100.0f;                               // a host value: the replay uses the captured 3
    ASSERT_EQ(graph.Replay(), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(graph.stream()), cudaSuccess);
    for (float v : download(out, n)) ASSERT_EQ(v, 6.0f);
  }
  cudaFree(in);
  cudaFree(out);
}

TEST_F(Emulator, GraphThatCapturedAFreedPointerFaultsAtReplay) {
  const int n = 64;
  float* in = device_alloc<float>(n);
  float* out = device_alloc<float>(n);
  upload(in, std::vector<float>(n, 1.0f));
  CapturedScale graph(in, out, 2.0f, n);
  // The input is reallocated (as a scratch buffer that grows) without re-recording the graph.
  ASSERT_EQ(cudaFree(in), cudaSuccess);
  float* bigger = device_alloc<float>(4 * n);
  EXPECT_EQ(graph.Replay(), cudaErrorLaunchFailure);
  ExpectFaultMentions({"scale_by", "not in device memory"});
  cudaFree(bigger);
  cudaFree(out);
}

TEST_F(Emulator, CaptureRefusesHostCopiesAndSynchronisation) {
  float* d = device_alloc<float>(4);
  float host[4] = {1, 2, 3, 4};
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_EQ(cudaMemcpyAsync(d, host, sizeof host, cudaMemcpyHostToDevice, stream), cudaErrorStreamCaptureUnsupported);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(graph, nullptr);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, 16), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();
  cudaStreamDestroy(stream);
  cudaFree(d);
}

TEST_F(Emulator, LaunchLimitsAreEnforcedAsOnHardware) {
  float* out = device_alloc<float>(1024);
  LAUNCH(1, 1025, 0, nullptr, big_dynamic_shared)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a configuration error is not sticky";
  LAUNCH(dim3(1, 70000), 32, 0, nullptr, big_dynamic_shared)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  // More than 48 KiB of dynamic shared memory needs the opt-in, up to the device's per-block limit.
  LAUNCH(1, 32, 64 * 1024, nullptr, big_dynamic_shared)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFuncSetAttribute(big_dynamic_shared, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024), cudaSuccess);
  LAUNCH(1, 32, 64 * 1024, nullptr, big_dynamic_shared)(out);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << mcpm_emu::last_fault();
  EXPECT_EQ(cudaFuncSetAttribute(big_dynamic_shared, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(mcpm_emu::device_config().smem_per_block_optin) + 1),
            cudaErrorInvalidValue);
  (void)cudaGetLastError();
  cudaFuncAttributes attributes{};
  EXPECT_EQ(cudaFuncGetAttributes(&attributes, big_dynamic_shared), cudaSuccess);
  EXPECT_EQ(attributes.maxDynamicSharedSizeBytes, 64 * 1024);
  cudaFree(out);
}

TEST_F(Emulator, MisalignedVectorLoadIsAFault) {
  unsigned char* in = device_alloc<unsigned char>(64);
  unsigned* out = device_alloc<unsigned>(1);
  upload(in, std::vector<unsigned char>(64, 1));
  LAUNCH(1, 1, 0, nullptr, load_vector)(in, 16, out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << mcpm_emu::last_fault();
  EXPECT_EQ(download(out, 1)[0], 4u * 0x01010101u);
  LAUNCH(1, 1, 0, nullptr, load_vector)(in, 4, out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  ExpectFaultMentions({"misaligned"});
  cudaFree(in);
  cudaFree(out);
}

TEST_F(Emulator, MemoryIsAccountedAndOutOfMemoryIsReachable) {
  size_t free0 = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free0, &total), cudaSuccess);
  EXPECT_EQ(total, mcpm_emu::device_config().memory_bytes);
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, total + 1), cudaErrorMemoryAllocation);
  EXPECT_EQ(p, nullptr);
  (void)cudaGetLastError();
  ASSERT_EQ(cudaMalloc(&p, size_t{1} << 20), cudaSuccess);
  size_t free1 = 0;
  ASSERT_EQ(cudaMemGetInfo(&free1, &total), cudaSuccess);
  EXPECT_EQ(free0 - free1, size_t{1} << 20);
  ASSERT_EQ(cudaFree(p), cudaSuccess);
  ASSERT_EQ(cudaMemGetInfo(&free1, &total), cudaSuccess);
  EXPECT_EQ(free1, free0);
  EXPECT_EQ(cudaFree(p), cudaErrorInvalidValue) << "a double free is refused";
  (void)cudaGetLastError();
}

TEST_F(Emulator, EventsMeasureElapsedTime) {
  cudaEvent_t a = nullptr, b = nullptr;
  ASSERT_EQ(cudaEventCreate(&a), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&b), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(a), cudaSuccess);
  float* out = device_alloc<float>(1024);
  LAUNCH(4, 256, 0, nullptr, scale_by)(out, out, 1.0f, 1024);
  ASSERT_EQ(cudaEventRecord(b), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(b), cudaSuccess);
  float ms = -1.0f;
  ASSERT_EQ(cudaEventElapsedTime(&ms, a, b), cudaSuccess);
  EXPECT_GE(ms, 0.0f);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaFree(out);
}

TEST_F(Emulator, GemmExHonoursTransposesLeadingDimensionsAndTypes) {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  const int m = 5, n = 3, k = 7, pad = 2;
  for (cudaDataType_t type : {CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF})
    for (cublasOperation_t ta : {CUBLAS_OP_N, CUBLAS_OP_T})
      for (cublasOperation_t tb : {CUBLAS_OP_N, CUBLAS_OP_T}) {
        // op(A) m x k, op(B) k x n, column-major with padded leading dimensions.
        const int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
        const int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
        const int lda = a_rows + pad, ldb = b_rows + pad, ldc = m + pad;
        const size_t esize = type == CUDA_R_32F ? 4 : 2;
        std::vector<float> A(static_cast<size_t>(lda) * a_cols), B(static_cast<size_t>(ldb) * b_cols);
        std::vector<unsigned char> Ab(A.size() * esize), Bb(B.size() * esize);
        auto put = [&](std::vector<float>& vals, std::vector<unsigned char>& bytes) {
          for (size_t i = 0; i < vals.size(); ++i) {
            float v = u(rng);
            if (type == CUDA_R_16F) {
              const uint16_t b = mcpm_emu::double_to_half_bits(v);
              v = mcpm_emu::half_bits_to_float(b);
              std::memcpy(&bytes[2 * i], &b, 2);
            } else if (type == CUDA_R_16BF) {
              const uint16_t b = mcpm_emu::float_to_bf16_bits(v);
              v = mcpm_emu::bf16_bits_to_float(b);
              std::memcpy(&bytes[2 * i], &b, 2);
            } else {
              std::memcpy(&bytes[4 * i], &v, 4);
            }
            vals[i] = v;
          }
        };
        put(A, Ab);
        put(B, Bb);
        std::vector<float> C(static_cast<size_t>(ldc) * n);
        for (float& v : C) v = u(rng);
        unsigned char* Ad = device_alloc<unsigned char>(Ab.size());
        unsigned char* Bd = device_alloc<unsigned char>(Bb.size());
        float* Cd = device_alloc<float>(C.size());
        upload(Ad, Ab);
        upload(Bd, Bb);
        upload(Cd, C);
        const float alpha = 1.5f, beta = -0.5f;
        ASSERT_EQ(cublasGemmEx(h, ta, tb, m, n, k, &alpha, Ad, type, lda, Bd, type, ldb, &beta, Cd, CUDA_R_32F, ldc,
                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                  CUBLAS_STATUS_SUCCESS);
        const std::vector<float> got = download(Cd, C.size());
        for (int j = 0; j < n; ++j)
          for (int i = 0; i < m; ++i) {
            double acc = 0.0;
            for (int p = 0; p < k; ++p) {
              const double a = ta == CUBLAS_OP_N ? A[static_cast<size_t>(p) * lda + i] : A[static_cast<size_t>(i) * lda + p];
              const double b = tb == CUBLAS_OP_N ? B[static_cast<size_t>(j) * ldb + p] : B[static_cast<size_t>(p) * ldb + j];
              acc += a * b;
            }
            const double want = alpha * acc + beta * C[static_cast<size_t>(j) * ldc + i];
            EXPECT_NEAR(got[static_cast<size_t>(j) * ldc + i], want, 1e-5) << "type " << type << " ta " << ta << " tb " << tb;
          }
        for (int j = 0; j < n; ++j)  // the padding rows of C are untouched
          for (int i = m; i < ldc; ++i) EXPECT_EQ(got[static_cast<size_t>(j) * ldc + i], C[static_cast<size_t>(j) * ldc + i]);
        cudaFree(Ad);
        cudaFree(Bd);
        cudaFree(Cd);
      }
  // A leading dimension shorter than the rows is refused, as by cuBLAS.
  const float one = 1.0f;
  EXPECT_EQ(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, nullptr, CUDA_R_32F, 3, nullptr, CUDA_R_32F, 4, &one,
                         nullptr, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);
  cublasDestroy(h);
}

TEST_F(Emulator, RadixSortFollowsCubsTemporaryStorageProtocolAndIsStable) {
  const int n = 1000;
  std::mt19937 rng(4);
  std::uniform_int_distribution<int> d(-20, 20);
  std::vector<float> keys(n);
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) {
    keys[static_cast<size_t>(i)] = static_cast<float>(d(rng)) * 0.5f;  // many ties
    ids[static_cast<size_t>(i)] = i;
  }
  keys[3] = -INFINITY;
  keys[4] = INFINITY;
  float* kin = device_alloc<float>(n);
  float* kout = device_alloc<float>(n);
  int32_t* vin = device_alloc<int32_t>(n);
  int32_t* vout = device_alloc<int32_t>(n);
  upload(kin, keys);
  upload(vin, ids);
  size_t temp_bytes = 0;
  ASSERT_EQ(cub::DeviceRadixSort::SortPairsDescending(nullptr, temp_bytes, kin, kout, vin, vout, n), cudaSuccess);
  ASSERT_GT(temp_bytes, 0u);
  unsigned char* temp = device_alloc<unsigned char>(temp_bytes);
  size_t short_bytes = temp_bytes - 1;
  EXPECT_EQ(cub::DeviceRadixSort::SortPairsDescending(temp, short_bytes, kin, kout, vin, vout, n),
            cudaErrorInvalidValue);
  ASSERT_EQ(cub::DeviceRadixSort::SortPairsDescending(temp, temp_bytes, kin, kout, vin, vout, n), cudaSuccess);
  std::vector<size_t> order(n);
  for (int i = 0; i < n; ++i) order[static_cast<size_t>(i)] = static_cast<size_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return keys[a] > keys[b]; });
  const std::vector<float> got_keys = download(kout, n);
  const std::vector<int32_t> got_ids = download(vout, n);
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(got_ids[static_cast<size_t>(i)], static_cast<int32_t>(order[static_cast<size_t>(i)])) << i;
    ASSERT_EQ(got_keys[static_cast<size_t>(i)], keys[order[static_cast<size_t>(i)]]) << i;
  }
  for (void* p : {static_cast<void*>(kin), static_cast<void*>(kout), static_cast<void*>(vin), static_cast<void*>(vout),
                  static_cast<void*>(temp)})
    cudaFree(p);
}

}  // namespace
