#!/usr/bin/env bash
# Build and run MiniCPM4.NET.
#
#   ./build.sh            configure and build the native engine (Release), then run the main job:
#                         the CPU benchmark on a MiniCPM4-0.5B-shaped model
#   ./build.sh test       build and run every test tier this machine supports:
#                         native tests (Release) and native tests under ASan + UBSan
#   ./build.sh bench ARGS build, then run the benchmark with ARGS (see native/bench/bench.cpp)
#
# Environment: BUILD_DIR (default ./build), JOBS (default: number of cores).
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

native_release() { configure_and_build "$BUILD_DIR/native" -DCMAKE_BUILD_TYPE=Release "$@"; }

run_tests() {
  echo "== native tests (Release)"
  native_release -DMCPM_BUILD_TESTS=ON
  ctest --test-dir "$BUILD_DIR/native" --output-on-failure -j "$JOBS"

  echo "== native tests (AddressSanitizer + UndefinedBehaviorSanitizer)"
  configure_and_build "$BUILD_DIR/native-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMCPM_SANITIZE=ON \
    -DMCPM_BUILD_TESTS=ON -DMCPM_BUILD_BENCH=OFF
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$BUILD_DIR/native-asan" --output-on-failure -j "$JOBS"
}

case "${1:-run}" in
  run)
    native_release -DMCPM_BUILD_TESTS=OFF
    "$BUILD_DIR/native/bench/mcpm_bench" --preset minicpm4-0.5b --prompt-tokens 128 --gen-tokens 32
    ;;
  test)
    run_tests
    ;;
  bench)
    shift
    native_release -DMCPM_BUILD_TESTS=OFF
    "$BUILD_DIR/native/bench/mcpm_bench" "$@"
    ;;
  *)
    echo "usage: ./build.sh [run|test|bench ARGS...]" >&2
    exit 2
    ;;
esac
