#!/usr/bin/env bash
# Build and run MiniCPM4.NET.
#
#   ./build.sh            build the native engine and the managed layer (Release), then run the main
#                         job: generate English from the bundled demo model (models/demo), speculatively
#   ./build.sh test       build and run every test tier this machine supports: native tests
#                         (Release), native tests under ASan + UBSan, native tests for aarch64 under
#                         QEMU and the linux-arm64 runtime package restored and run from under QEMU
#                         (when the cross compiler and qemu-user are installed), the CUDA backend
#                         compiled for sm_80 by nvcc (when installed), the CUDA backend on the emulated
#                         device (the CUDA tests and the ABI suite, then again under ASan + UBSan; needs
#                         clang++-14), managed tests (NUnit), tools/compare-llamacpp's tests (GGUF writer,
#                         logits against llama.cpp through LLamaSharp; outside MiniCPM4.sln)
#   ./build.sh test-cuda-emulated
#                         the emulated CUDA tier alone
#   ./build.sh bench ARGS build, then run the native CPU benchmark with ARGS (native/bench/bench.cpp)
#   ./build.sh cli ARGS   build, then run the minicpm4 CLI with ARGS
#   ./build.sh pack       build the native engine (Release) and pack the NuGet packages MiniCPM4, MiniCPM4.AI and
#                         MiniCPM4.Runtime.linux-x64 (plus MiniCPM4.Runtime.linux-x64.Cuda when
#                         $BUILD_DIR/native-cuda/libminicpm4.so exists, MiniCPM4.Runtime.linux-arm64 when
#                         tools/check-aarch64.sh built $BUILD_DIR/aarch64/native/libminicpm4.so) into artifacts/packages/
#
# Environment: BUILD_DIR (default ./build), JOBS (default: number of cores), CUDA_ARCHS (the CUDA
# compile check's architectures, default 80), MCPM_REQUIRE_CUDA_BUILD=1 (a missing nvcc fails the
# CUDA tier instead of skipping it; .ci/run sets it).
#
# build/native is the CPU-only library (MCPM_CUDA=OFF) the managed layer and packages use; the CUDA
# build lives in build/native-cuda (README: "CUDA backend"; scripts/gpu-check.sh on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")"

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)

configure_and_build() {  # dir, extra cmake args...
  local dir=$1
  shift
  cmake -S native -B "$dir" "${GENERATOR[@]}" "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS"
}

native_release() { configure_and_build "$BUILD_DIR/native" -DCMAKE_BUILD_TYPE=Release -DMCPM_CUDA=OFF "$@"; }

# The CUDA backend's compile check: the library, the CUDA tests and the benchmark for CUDA_ARCHS
# (default sm_80 only, to keep CI short). Their tests run on the emulated device (cuda_emulated_tier)
# and, on a GPU, in scripts/gpu-check.sh. nvcc 11.x refuses GCC 12, so clang++-14 is its host compiler
# when installed.
cuda_tier() {
  local nvcc host=()
  nvcc=$(command -v nvcc 2>/dev/null || true)
  if [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ]; then nvcc=/usr/local/cuda/bin/nvcc; fi
  if [ -z "$nvcc" ]; then
    echo "== skipping the CUDA compile check: nvcc not found (install a CUDA toolkit; on Debian 12 .ci/run"
    echo "   installs nvidia-cuda-toolkit from non-free, see shared/reference/toolchain.md)"
    if [ "${MCPM_REQUIRE_CUDA_BUILD:-0}" = 1 ]; then
      echo "   MCPM_REQUIRE_CUDA_BUILD=1: counted as a failure"
      FAILED=$((FAILED + 1))
    fi
    return 0
  fi
  if "$nvcc" --version | grep -q "release 11\." && command -v clang++-14 >/dev/null 2>&1; then
    host=(-DCMAKE_CUDA_HOST_COMPILER=clang++-14)
  fi
  echo "== CUDA backend: compile check for sm_${CUDA_ARCHS:-80} ($("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/nvcc \1/p')${host:+, host clang++-14})"
  local t0=$SECONDS dir="$BUILD_DIR/native-cuda"
  if ! cmake -S native -B "$dir" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DMCPM_CUDA=ON \
      -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-80}" "${host[@]}" \
      -DMCPM_BUILD_TESTS=ON -DMCPM_BUILD_BENCH=ON >/dev/null ||
     ! cmake --build "$dir" -j "$JOBS" --target minicpm4 test_cuda_ops test_cuda_model mcpm_bench mcpm_op_bench; then
    echo "CUDA build failed"
    FAILED=$((FAILED + 1))
    return 0
  fi
  echo "   (CUDA build: $((SECONDS - t0)) s; its tests run on the emulated device below, and on a GPU in"
  echo "   scripts/gpu-check.sh)"
}

# The CUDA backend on the emulated device (native/emulator): the same kernel files compiled as C++ by
# Clang against the CPU emulator of the CUDA subset they use, then the emulator's own tests, the CUDA
# op and model tests and the whole ABI suite with MCPM_TEST_BACKEND=cuda (MCPM_REQUIRE_CUDA=1: nothing
# may skip). First in Release: the emulator's and the CUDA tests with the race check (every kernel runs
# twice, forward and reverse fiber order, and must leave the same memory), then the ABI suite; then all
# of it under ASan + UBSan with a seeded random fiber order.
emulated_run() {  # label, build dir, ctest labels, extra env...
  local label=$1 dir=$2 labels=$3 before_p=$PASSED before_f=$FAILED before_s=$SKIPPED
  shift 3
  # ctest starts the costliest tests first when it knows their costs; a fresh build does not, and the
  # longest emulated test would then start last and run alone. Seed the costs of the long ones
  # (seconds under ASan on 2 cores; ctest refines the file after each run).
  local costs="$dir/Testing/Temporary/CTestCostData.txt"
  if [ ! -f "$costs" ]; then
    mkdir -p "$(dirname "$costs")"
    printf '%s 1 %s\n' CudaModel.SparseGraphsOnAndOffGiveIdenticalTokensOver20kSteps 300 \
      CudaModel.GraphsOnAndOffGiveIdenticalTokensAcrossBuckets 90 \
      Speculative.VerificationGraphsOnAndOffGiveIdenticalTokens 70 \
      Trees/GreedyEquality.SpeculativeGreedyEqualsPlainGreedy/frspec_eval_tree 45 \
      Speculative.SampledTokensFollowTheTargetDistribution 40 CudaModel.SeededSamplingIsReproducible 35 > "$costs"
    echo "---" >> "$costs"
  fi
  tally ctest env MCPM_REQUIRE_CUDA=1 MCPM_TEST_BACKEND=cuda "$@" \
    ctest --test-dir "$dir" --output-on-failure -j "$JOBS" -L "$labels"
  echo "   emulated CUDA ($label): $((PASSED - before_p + FAILED - before_f + SKIPPED - before_s)) tests ran:" \
       "$((PASSED - before_p)) passed, $((FAILED - before_f)) failed, $((SKIPPED - before_s)) skipped"
}

emulated_build() {  # dir, cmake args... (uses $targets)
  local dir=$1
  shift
  cmake -S native -B "$dir" "${GENERATOR[@]}" "$@" >/dev/null && cmake --build "$dir" -j "$JOBS" "${targets[@]}"
}

cuda_emulated_tier() {
  if ! command -v clang++-14 >/dev/null 2>&1; then
    echo "== skipping the emulated CUDA tier: clang++-14 not found (the emulator needs Clang)"
    if [ "${MCPM_REQUIRE_CUDA_BUILD:-0}" = 1 ]; then FAILED=$((FAILED + 1)); fi
    return 0
  fi
  local clang=(-DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 -DMCPM_CUDA_EMULATOR=ON
               -DMCPM_BUILD_TESTS=ON -DMCPM_BUILD_BENCH=OFF) t0=$SECONDS
  # Only what the tier runs: the CPU-only white-box tests already ran in the tiers above.
  local targets=(--target minicpm4 test_emulator test_cuda_ops test_cuda_model test_model test_sparse_model
                 test_sampling test_abi test_speculative test_token_mask test_int4_model test_batch)
  echo "== CUDA backend on the emulated device (Release, race check)"
  if ! emulated_build "$BUILD_DIR/native-cuda-emu" -DCMAKE_BUILD_TYPE=Release "${clang[@]}"; then
    echo "emulated CUDA build failed"
    FAILED=$((FAILED + 1))
    return 0
  fi
  emulated_run "Release, race check" "$BUILD_DIR/native-cuda-emu" 'emulator|cuda' MCPM_EMU_RACE_CHECK=1
  emulated_run "Release, ABI suite" "$BUILD_DIR/native-cuda-emu" 'abi'
  echo "   ($((SECONDS - t0)) s)"
  t0=$SECONDS
  echo "== CUDA backend on the emulated device (ASan + UBSan, random fiber order)"
  if ! emulated_build "$BUILD_DIR/native-cuda-emu-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMCPM_SANITIZE=ON \
       "${clang[@]}"; then
    echo "emulated CUDA build (ASan + UBSan) failed"
    FAILED=$((FAILED + 1))
    return 0
  fi
  emulated_run "ASan + UBSan" "$BUILD_DIR/native-cuda-emu-asan" 'emulator|cuda|abi' MCPM_EMU_SCHEDULE=random:7 \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  echo "   ($((SECONDS - t0)) s)"
}

managed_build() {
  local lib
  lib="$(cd "$BUILD_DIR/native" && pwd)/libminicpm4.so"
  dotnet build MiniCPM4.sln -c Release -nologo -v quiet -clp:ErrorsOnly -p:MiniCpmNativeLibrary="$lib"
}

CLI="src/MiniCPM4.Cli/bin/Release/net10.0/minicpm4"

# Runs a test tier, echoing its output, and adds its counts to the totals for the closing line.
PASSED=0
FAILED=0
SKIPPED=0
tally() {  # kind (ctest|dotnet), command...
  local kind=$1 log rc=0
  shift
  log=$(mktemp)
  "$@" 2>&1 | tee "$log" || rc=$?
  if [ "$kind" = ctest ]; then
    local total failed skipped
    total=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
    failed=$(sed -n 's/.*, \([0-9]*\) tests failed out of.*/\1/p' "$log" | tail -1)
    skipped=$(grep -c '(Skipped)$' "$log" || true)
    PASSED=$((PASSED + ${total:-0} - ${failed:-0} - ${skipped:-0}))
    FAILED=$((FAILED + ${failed:-0}))
    SKIPPED=$((SKIPPED + ${skipped:-0}))
  else
    PASSED=$((PASSED + $(sed -n 's/.*Passed: *\([0-9]*\),.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')))
    FAILED=$((FAILED + $(sed -n 's/.*Failed: *\([0-9]*\),.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')))
    SKIPPED=$((SKIPPED + $(sed -n 's/.*Skipped: *\([0-9]*\),.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')))
  fi
  rm -f "$log"
  if [ $rc -ne 0 ] && [ "$FAILED" -eq 0 ]; then FAILED=1; fi  # a build or runner failure counts too
  return 0
}

# tools/compare-llamacpp and its tests stay outside MiniCPM4.sln (the main build does not restore LLamaSharp).
compare_llamacpp_tests() {
  local lib
  lib="$(cd "$BUILD_DIR/native" && pwd)/libminicpm4.so"
  echo "== tools/compare-llamacpp tests (GGUF writer; llama.cpp's logits against ours, through LLamaSharp)"
  if dotnet build tests/CompareLlamaCpp.Tests -c Release -nologo -v quiet -clp:ErrorsOnly -p:MiniCpmNativeLibrary="$lib"; then
    tally dotnet dotnet test tests/CompareLlamaCpp.Tests -c Release --no-build -nologo
  else
    echo "compare-llamacpp build failed"
    FAILED=$((FAILED + 1))
  fi
}

run_tests() {
  echo "== native tests (Release)"
  native_release -DMCPM_BUILD_TESTS=ON
  tally ctest ctest --test-dir "$BUILD_DIR/native" --output-on-failure -j "$JOBS"

  echo "== native tests (AddressSanitizer + UndefinedBehaviorSanitizer)"
  configure_and_build "$BUILD_DIR/native-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMCPM_SANITIZE=ON \
    -DMCPM_CUDA=OFF -DMCPM_BUILD_TESTS=ON -DMCPM_BUILD_BENCH=OFF
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    tally ctest ctest --test-dir "$BUILD_DIR/native-asan" --output-on-failure -j "$JOBS"

  if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 && command -v qemu-aarch64 >/dev/null 2>&1; then
    echo "== native tests for aarch64 (NEON kernels; cross-built, run under QEMU)"
    tally ctest tools/check-aarch64.sh
    echo "== the MiniCPM4.Runtime.linux-arm64 package: packed, restored, the engine run from it under QEMU"
    if tools/check-aarch64-package.sh; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
  else
    echo "== skipping the aarch64 tier: install g++-aarch64-linux-gnu and qemu-user to run it"
  fi

  cuda_tier
  cuda_emulated_tier

  echo "== managed tests (NUnit)"
  managed_build
  tally dotnet dotnet test MiniCPM4.sln -c Release --no-build -nologo
  compare_llamacpp_tests

  echo
  echo "all tiers: $PASSED passed, $FAILED failed, $SKIPPED skipped"
  [ "$FAILED" -eq 0 ]
}

case "${1:-run}" in
  run)
    native_release -DMCPM_BUILD_TESTS=OFF
    managed_build
    # No -m: the CLI uses the bundled demo model (models/demo) with its EAGLE draft and FR-Spec list.
    "$CLI" generate -p "Once upon a time" --max-tokens 48 --temperature 0.8 --seed 7
    ;;
  test)
    run_tests
    ;;
  test-cuda-emulated)
    cuda_emulated_tier
    echo
    echo "emulated CUDA tier: $PASSED passed, $FAILED failed, $SKIPPED skipped"
    [ "$FAILED" -eq 0 ]
    ;;
  bench)
    shift
    native_release -DMCPM_BUILD_TESTS=OFF
    "$BUILD_DIR/native/bench/mcpm_bench" "$@"
    ;;
  cli)
    shift
    native_release -DMCPM_BUILD_TESTS=OFF
    managed_build
    "$CLI" "$@"
    ;;
  pack)
    native_release -DMCPM_BUILD_TESTS=OFF
    out=artifacts/packages
    lib="$(cd "$BUILD_DIR/native" && pwd)/libminicpm4.so"
    runtime=packaging/MiniCPM4.Runtime.linux-x64/MiniCPM4.Runtime.linux-x64.csproj
    pack() { dotnet pack "$@" -c Release -o "$out" -nologo -v quiet -clp:ErrorsOnly -p:MiniCpmNativeLibrary="$lib"; }
    pack "$runtime"
    cuda="$BUILD_DIR/native-cuda/libminicpm4.so"
    if [ -f "$cuda" ]; then
      pack "$runtime" -p:MiniCpmRuntimeVariant=Cuda -p:MiniCpmCudaNativeLibrary="$(cd "$(dirname "$cuda")" && pwd)/libminicpm4.so"
    fi
    arm64="$BUILD_DIR/aarch64/native/libminicpm4.so"   # tools/check-aarch64.sh builds it
    if [ -f "$arm64" ]; then
      pack packaging/MiniCPM4.Runtime.linux-arm64/MiniCPM4.Runtime.linux-arm64.csproj \
        -p:MiniCpmArm64NativeLibrary="$(cd "$(dirname "$arm64")" && pwd)/libminicpm4.so"
    fi
    pack src/MiniCPM4/MiniCPM4.csproj
    pack src/MiniCPM4.AI/MiniCPM4.AI.csproj
    ls -l "$out"
    ;;
  *)
    echo "usage: ./build.sh [run|test|test-cuda-emulated|bench ARGS...|cli ARGS...|pack]" >&2
    exit 2
    ;;
esac
