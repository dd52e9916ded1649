#!/usr/bin/env bash
# Cross-compiles the native engine and its tests for aarch64 (the Jetson's ISA, NEON kernels) and
# runs them under qemu-user. Needs Debian's g++-aarch64-linux-gnu, qemu-user and libgtest-dev
# (GoogleTest is built from /usr/src/googletest for the target).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BUILD_DIR:-build}/aarch64
gt=$out/googletest
if [ ! -f "$gt/lib/libgtest.a" ]; then
  cmake -S /usr/src/googletest -B "$gt/build" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF -DCMAKE_INSTALL_PREFIX="$PWD/$gt" >/dev/null
  cmake --build "$gt/build" >/dev/null
  cmake --install "$gt/build" >/dev/null
fi
cmake -S native -B "$out/native" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" \
  -DCMAKE_BUILD_TYPE=Release -DMCPM_BUILD_BENCH=OFF -DMCPM_CUDA=OFF -DCMAKE_PREFIX_PATH="$PWD/$gt" \
  -DCMAKE_FIND_ROOT_PATH="/usr/aarch64-linux-gnu;$PWD/$gt" >/dev/null
cmake --build "$out/native" -j "${JOBS:-2}"
ctest --test-dir "$out/native" --output-on-failure -j "${JOBS:-2}"
