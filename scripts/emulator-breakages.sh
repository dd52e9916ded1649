#!/usr/bin/env bash
# A manual check that the emulated CUDA tier catches bugs in the real backend source: three deliberate
# breakages, each applied to a copy of native/, built against the emulator and run through the test
# that must fail. The emulator's own tests (Emulator.* in native/emulator/tests) cover the same kinds of
# bug on small kernels in every CI run; this script shows them on the product's kernels.
#
#   scripts/emulator-breakages.sh        (needs clang++-14, CMake, GoogleTest; about 5 minutes on 2 cores)
#
# The breakages:
#   off-by-one   add_scaled_kernel's loop bound `i < count` becomes `i <= count` (elementwise.cu)
#   no-barrier   block_sum loses the __syncthreads between the per-warp sums and their reads
#                (cuda_internal.cuh; every RMSNorm uses it)
#   stale-graph  CudaContext::scratch no longer drops the recorded graphs when a buffer grows, so a
#                replay reads the freed buffer (cuda_backend.cu)
# It prints one line per breakage and exits non-zero when the tests did not fail for one of them.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r native "$work/native"
src="$work/native/src/backend/cuda"
build="$work/build"
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
cmake -S "$work/native" -B "$build" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang-14 \
  -DCMAKE_CXX_COMPILER=clang++-14 -DMCPM_CUDA_EMULATOR=ON -DMCPM_BUILD_TESTS=ON -DMCPM_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target test_cuda_ops test_cuda_model >/dev/null

missed=0
# breakage name, file, python replacement (old, new), test binary, gtest filter, extra env
check() {
  local name=$1 file=$2 old=$3 new=$4 binary=$5 filter=$6
  shift 6
  cp "$src/$file" "$work/saved"
  python3 - "$src/$file" "$old" "$new" <<'EOF'
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
assert text.count(old) == 1, f"{path}: the text to break is not there exactly once"
open(path, "w").write(text.replace(old, new))
EOF
  cmake --build "$build" -j "${JOBS:-$(nproc)}" --target "$binary" >/dev/null
  local log="$work/$name.log" rc=0
  env MCPM_REQUIRE_CUDA=1 "$@" "$build/tests/$binary" --gtest_filter="$filter" >"$log" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    echo "$name: caught ($(grep -m1 -oE 'device fault: .{0,160}|Failure' "$log" || echo "test failed"))"
  else
    echo "$name: NOT caught"
    missed=$((missed + 1))
  fi
  cp "$work/saved" "$src/$file"
}

check off-by-one elementwise.cu \
  'threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    r[i] = fmaf(s, d[i], r[i]);' \
  'threadIdx.x; i <= count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    r[i] = fmaf(s, d[i], r[i]);' \
  test_cuda_ops 'CudaOps.AddScaledScaleAddBiasSiluMulMatchCpu'
check no-barrier cuda_internal.cuh \
  '  if (lane == 0) scratch[warp] = v;
  __syncthreads();' \
  '  if (lane == 0) scratch[warp] = v;' \
  test_cuda_ops 'CudaOps.RmsNormAndAddRmsNormMatchCpu' MCPM_EMU_RACE_CHECK=1
check stale-graph cuda_backend.cu \
  '    drop_graphs();  // recorded steps hold the old address' \
  '    // (deliberately broken: the recorded steps keep the old address)' \
  test_cuda_model 'CudaModel.GraphsOnAndOffGiveIdenticalTokensAcrossBuckets'
exit $missed
