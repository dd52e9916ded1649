#!/usr/bin/env bash
# Build and run MiniCPM4.NET.
#
#   ./build.sh            build the native engine and the managed layer (Release), then run the main
#                         job: create a tiny random checkpoint (once) and generate text from it
#   ./build.sh test       build and run every test tier this machine supports: native tests
#                         (Release), native tests under ASan + UBSan, managed tests (NUnit)
#   ./build.sh bench ARGS build, then run the native CPU benchmark with ARGS (native/bench/bench.cpp)
#   ./build.sh cli ARGS   build, then run the minicpm4 CLI with ARGS
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

managed_build() {
  dotnet build MiniCPM4.sln -c Release -nologo -v quiet -p:MiniCpmNativeLibrary="$PWD/$BUILD_DIR/native/libminicpm4.so"
}

CLI="src/MiniCPM4.Cli/bin/Release/net10.0/minicpm4"

run_tests() {
  echo "== native tests (Release)"
  native_release -DMCPM_BUILD_TESTS=ON
  ctest --test-dir "$BUILD_DIR/native" --output-on-failure -j "$JOBS"

  echo "== native tests (AddressSanitizer + UndefinedBehaviorSanitizer)"
  configure_and_build "$BUILD_DIR/native-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMCPM_SANITIZE=ON \
    -DMCPM_BUILD_TESTS=ON -DMCPM_BUILD_BENCH=OFF
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$BUILD_DIR/native-asan" --output-on-failure -j "$JOBS"

  echo "== managed tests (NUnit)"
  managed_build
  dotnet test MiniCPM4.sln -c Release --no-build -nologo
}

case "${1:-run}" in
  run)
    native_release -DMCPM_BUILD_TESTS=OFF
    managed_build
    model="$BUILD_DIR/models/tiny"
    [ -f "$model/config.json" ] || "$CLI" create-model --preset tiny --out "$model" --seed 1
    "$CLI" generate -m "$model" -p "Once upon a time" --max-tokens 48 --temperature 0.8 --seed 7
    ;;
  test)
    run_tests
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
  *)
    echo "usage: ./build.sh [run|test|bench ARGS...|cli ARGS...]" >&2
    exit 2
    ;;
esac
