#!/usr/bin/env bash
# GPU check of the CUDA backend, for a machine with an NVIDIA GPU, CMake, nvcc and PyTorch but no
# .NET. Every step runs even when an earlier one fails (except that nothing runs without a build),
# and the script ends with one summary table in which anything that did not run says so and why.
#
#   scripts/gpu-check.sh                     everything below
#   QUICK=1 scripts/gpu-check.sh             skip the 8B benchmarks
#   BUDGET_S=570 scripts/gpu-check.sh        stop starting steps that cannot finish in 570 s from the
#                                            start (each is also cut off there) and still print the
#                                            summary: for a runner that kills the job at 600 s
#   STEPS=ops,bench scripts/gpu-check.sh     only these steps (an existing build is reused when
#                                            "build" is not among them); e.g. one call per step group
#
# Steps:
#   build     native library, tests and mcpm_bench with the CUDA backend for the GPUs present
#             (CMAKE_CUDA_ARCHITECTURES=native), Release, into build/native-cuda-check
#   ops       the CUDA-vs-CPU parity tests (test_cuda_ops, test_cuda_model) with MCPM_REQUIRE_CUDA=1:
#             a missing device fails instead of skipping
#   suite     the whole native test suite with MCPM_TEST_BACKEND=cuda (every ABI test on CUDA)
#   bandwidth device-to-device copy bandwidth measured with PyTorch (the decode roofline)
#   bench     mcpm_bench --backend cuda on the MiniCPM4-0.5B and -8B shapes (random weights, bf16; the 0.5B
#             also without CUDA graphs, the 8B also with --int4, at a 32k context dense vs InfLLM v2, and
#             InfLLM v2 with int4 at 128k)
#   torch     scripts/torch_baseline.py on the 0.5B and 8B shapes (Hugging Face LlamaForCausalLM with a static
#             cache when transformers runs, else its own PyTorch Llama) and mcpm's decode speed over it
#   op-bench  mcpm_op_bench: each 8B linear layer, bf16 vs int4, M = 1..1024, against the copy bandwidth; one
#             8B attention layer at 32k and 128k, dense vs InfLLM v2 (block selection and attention apart)
#   cli       end-to-end with a published self-contained CLI, when artifacts/minicpm4-linux-x64/minicpm4
#             exists (dotnet publish src/MiniCPM4.Cli -c Release -r linux-x64 --self-contained
#             -p:PublishSingleFile=true -p:PublishTrimmed=true -o artifacts/minicpm4-linux-x64):
#             demo-model logits CPU vs CUDA, greedy tokens CPU vs CUDA, speculative == plain on CUDA, and
#             continuous batching (bench --sessions 8 on the 0.5B shape)
#
# Environment: BUILD_DIR (default build), JOBS (default: cores), CUDA_ARCHS (default native),
# CLI (default artifacts/minicpm4-linux-x64/minicpm4), QUICK=1, BUDGET_S, STEPS (default: all of
# build,ops,suite,bandwidth,bench,torch,op-bench,cli).
set -uo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
DIR="$BUILD_DIR/native-cuda-check"
OUT="$BUILD_DIR/gpu-check"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
CLI=${CLI:-artifacts/minicpm4-linux-x64/minicpm4}
mkdir -p "$OUT"

ROWS=()
FAILURES=0
START=$SECONDS
STEPS=",${STEPS:-build,ops,suite,bandwidth,bench,torch,op-bench,cli},"
want() { [[ "$STEPS" == *",$1,"* ]]; }
# Seconds left of BUDGET_S, keeping 15 s for the summary (a large number without a budget).
left() { if [ -n "${BUDGET_S:-}" ]; then echo $((BUDGET_S - 15 - (SECONDS - START))); else echo 100000; fi; }
# step, seconds it needs at least[, summary row, default the step] -> true when it should run;
# otherwise records why not in that row.
should_run() {
  local step=$1 need=$2 name=${3:-$1}
  if ! want "$step"; then
    row "$name" "NOT RUN" "$step not in STEPS"
    return 1
  fi
  if [ "$(left)" -lt "$need" ]; then
    row "$name" "NOT RUN" "time budget: $(left) s left of BUDGET_S=$BUDGET_S, needs about $need s"
    return 1
  fi
}
# A command cut off where the budget ends (and at `cap` seconds in any case).
budgeted() {  # cap, command...
  local cap=$1
  shift
  local l
  l=$(left)
  [ "$l" -lt "$cap" ] && cap=$l
  [ "$cap" -lt 1 ] && cap=1
  timeout "$cap" "$@"
}
row() {  # step, status (PASS|FAIL|NOT RUN|INFO), detail
  ROWS+=("$1"$'\t'"$2"$'\t'"$3")
  [ "$2" = FAIL ] && FAILURES=$((FAILURES + 1))
  printf '>> %-10s %-8s %s\n' "$1" "$2" "$3"
}

summary() {
  echo
  echo "==================================================================================================="
  echo "GPU check summary ($(date -u +%Y-%m-%dT%H:%MZ), $(hostname))"
  printf '%-12s %-8s %s\n' step status detail
  printf '%-12s %-8s %s\n' ------------ -------- -------------------------------------------------------------
  for r in "${ROWS[@]}"; do
    IFS=$'\t' read -r step status detail <<<"$r"
    printf '%-12s %-8s %s\n' "$step" "$status" "$detail"
  done
  echo "==================================================================================================="
  echo "logs: $OUT"
  [ "$FAILURES" -eq 0 ]
}

PY=$(command -v python3 || true)
json_field() {  # file, key -> value of the first JSON object line that has it
  [ -n "$PY" ] || { echo "?"; return; }
  "$PY" - "$1" "$2" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if sys.argv[2] in d:
            print(d[sys.argv[2]])
            break
EOF
}

# ---- environment ------------------------------------------------------------------------------------
GPU="none found (no nvidia-smi)"
if command -v nvidia-smi >/dev/null 2>&1; then
  GPU=$(nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
fi
NVCC=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
row env INFO "GPU: ${GPU:-none}; nvcc: ${NVCC:-missing} $([ -n "$NVCC" ] && "$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'); cmake $(cmake --version | head -1 | awk '{print $3}')"

# ---- build ----------------------------------------------------------------------------------------------
if [ -z "$NVCC" ]; then
  row build FAIL "nvcc not found"
  for s in ops suite bandwidth bench cli; do row "$s" "NOT RUN" "no build"; done
  summary
  exit 1
fi
host=()
if "$NVCC" --version | grep -q "release 11\." && command -v clang++-14 >/dev/null 2>&1; then
  host=(-DCMAKE_CUDA_HOST_COMPILER=clang++-14)
fi
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
t0=$SECONDS
if ! want build && [ -f "$DIR/libminicpm4.so" ]; then
  row build INFO "reused $DIR (build not in STEPS)"
elif cmake -S native -B "$DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DMCPM_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC" \
     -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-native}" "${host[@]}" -DMCPM_BUILD_TESTS=ON -DMCPM_BUILD_BENCH=ON \
     >"$OUT/configure.log" 2>&1 &&
   budgeted 3600 cmake --build "$DIR" -j "$JOBS" >"$OUT/build.log" 2>&1; then
  row build PASS "$DIR ($((SECONDS - t0)) s, architectures $(sed -n 's/^CMAKE_CUDA_ARCHITECTURES:[A-Z]*=//p' "$DIR/CMakeCache.txt"))"
else
  row build FAIL "see $OUT/configure.log and $OUT/build.log (last lines: $(tail -3 "$OUT/build.log" 2>/dev/null | tr '\n' ' ' | cut -c1-160))"
  for s in ops suite bandwidth bench cli; do row "$s" "NOT RUN" "no build"; done
  summary
  exit 1
fi
LIB="$(cd "$DIR" && pwd)/libminicpm4.so"

# ---- tests ----------------------------------------------------------------------------------------------
ctest_row() {  # step, log, ctest args...
  local step=$1 log=$2
  shift 2
  local t0=$SECONDS rc=0
  budgeted 1800 ctest --test-dir "$DIR" --output-on-failure "$@" >"$log" 2>&1 || rc=$?
  local line failed_list skipped
  line=$(grep -E "tests passed|tests failed" "$log" | tail -1)
  skipped=$(grep -c '(Skipped)$' "$log" || true)
  failed_list=$(sed -n 's/^[[:space:]]*[0-9]* - \(.*\) (Failed)$/\1/p' "$log" | head -8 | tr '\n' ' ')
  if [ $rc -eq 0 ] && [ -n "$line" ]; then
    row "$step" PASS "$line; $skipped skipped ($((SECONDS - t0)) s)"
  else
    row "$step" FAIL "${line:-ctest rc $rc}; $skipped skipped; failed: ${failed_list:-see $log}"
  fi
}
export MCPM_REQUIRE_CUDA=1  # a test that needs CUDA fails instead of skipping
should_run ops 60 && ctest_row ops "$OUT/ops.log" -R '^Cuda' -j 1
export MCPM_TEST_BACKEND=cuda
should_run suite 60 && ctest_row suite "$OUT/suite.log" -j 2
unset MCPM_TEST_BACKEND MCPM_REQUIRE_CUDA

# ---- device bandwidth (PyTorch) ---------------------------------------------------------------------------
BW=""
if (want bandwidth || want bench || want op-bench) && [ "$(left)" -ge 30 ] && [ -n "$PY" ] &&
   "$PY" -c "import torch; assert torch.cuda.is_available()" >/dev/null 2>&1; then
  BW=$(budgeted 120 "$PY" - <<'EOF' 2>"$OUT/bandwidth.log"
import torch
n = 1 << 30  # 1 GiB
a = torch.empty(n, dtype=torch.uint8, device="cuda")
b = torch.empty_like(a)
for _ in range(3):
    b.copy_(a)
torch.cuda.synchronize()
best = 0.0
for _ in range(10):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); b.copy_(a); e.record(); torch.cuda.synchronize()
    best = max(best, 2 * n / (s.elapsed_time(e) * 1e-3) / 1e9)
print(f"{best:.0f}")
EOF
)
fi
if ! want bandwidth; then
  row bandwidth "NOT RUN" "not in STEPS${BW:+ (measured for the benchmarks: $BW GB/s)}"
elif [ -n "$BW" ]; then
  row bandwidth INFO "device-to-device copy: $BW GB/s (read + write), PyTorch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  row bandwidth "NOT RUN" "no PyTorch with CUDA (python3 -c 'import torch'); decode is reported without a roofline"
fi

# ---- benchmarks -------------------------------------------------------------------------------------------
bench_row() {  # name, seconds it needs at least, args...
  local name=$1 need=$2
  shift 2
  local log="$OUT/bench-$name.log"
  should_run bench "$need" "$name" || return
  if budgeted 900 "$DIR/bench/mcpm_bench" --backend cuda --json "$@" >"$log" 2>&1; then
    local dec pre gbs gen frac=""
    dec=$(json_field "$log" decode_tokens_per_s)
    gen=$(json_field "$log" generate_tokens_per_s)
    pre=$(json_field "$log" prefill_tokens_per_s)
    gbs=$(json_field "$log" decode_gbs)
    if [ -n "$BW" ] && [ -n "$PY" ]; then frac=$("$PY" -c "print(f'{100*$gbs/$BW:.0f}% of the copy bandwidth')"); fi
    row "$name" INFO "prefill $pre tok/s; decode $dec tok/s = $gbs GB/s ${frac:+($frac)}; generate (wall, with sampling) $gen tok/s"
    if [ -n "$PY" ] && grep -q '"spec_tree"' "$log"; then
      local spec
      spec=$("$PY" - "$log" <<'EOF'
import json, sys
out = []
for line in open(sys.argv[1]):
    if '"spec_tree"' in line:
        d = json.loads(line)
        out.append(f"tree {d['spec_tree']} head {d['draft_vocab']}: verify {d['verify_ms']:.2f} ms "
                   f"({d['verify_vs_decode']:.2f}x decode), draft {d['draft_ms']:.2f} ms")
print("; ".join(out))
EOF
)
      row "$name" INFO "speculative rounds: $spec"
    fi
  else
    row "$name" FAIL "mcpm_bench failed: $(tail -2 "$log" | tr '\n' ' ' | cut -c1-200)"
  fi
}
bench_row bench-0.5b 20 --preset minicpm4-0.5b --prompt-tokens 512 --gen-tokens 128 --spec-trees 12,32,60 --frspec-size 8192
bench_row bench-0.5b-no-graphs 15 --preset minicpm4-0.5b --prompt-tokens 512 --gen-tokens 128 --no-graphs
if [ "${QUICK:-0}" = 1 ]; then
  for s in bench-8b bench-8b-int4 bench-8b-32k-dense bench-8b-32k-sparse bench-8b-128k-sparse-int4; do
    row "$s" "NOT RUN" "QUICK=1"
  done
else
  bench_row bench-8b 60 --preset minicpm4-8b --prompt-tokens 512 --gen-tokens 64
  bench_row bench-8b-int4 60 --preset minicpm4-8b --int4 --prompt-tokens 512 --gen-tokens 64
  # InfLLM v2 vs dense at a 32k context (the same prompt; sparse from 8192 tokens, MiniCPM4-8B's sparse_config).
  bench_row bench-8b-32k-dense 120 --preset minicpm4-8b --prompt-tokens 32768 --gen-tokens 64
  bench_row bench-8b-32k-sparse 90 --preset minicpm4-8b --prompt-tokens 32768 --gen-tokens 64 --sparse
  # Issue #6's time to first token at 128k with int4 weights: 131072 / the prefill rate.
  bench_row bench-8b-128k-sparse-int4 150 --preset minicpm4-8b --int4 --prompt-tokens 131072 --gen-tokens 16 --sparse
fi

# ---- PyTorch on the same shapes (issue #4's side-by-side ratio) ---------------------------------------------
torch_row() {  # name, our bench row's name, seconds it needs at least, torch_baseline.py args...
  local name=$1 ours=$2 need=$3
  shift 3
  local log="$OUT/$name.log"
  should_run torch "$need" "$name" || return
  if [ -z "$PY" ] || ! "$PY" -c "import torch; assert torch.cuda.is_available()" >/dev/null 2>&1; then
    row "$name" "NOT RUN" "no PyTorch with CUDA"
    return
  fi
  if budgeted 900 "$PY" scripts/torch_baseline.py --device cuda --json "$@" >"$log" 2>&1; then
    local tdec tpre impl mine ratio=""
    tdec=$(json_field "$log" decode_tokens_per_s)
    tpre=$(json_field "$log" prefill_tokens_per_s)
    impl=$(json_field "$log" impl)
    mine=$(json_field "$OUT/bench-$ours.log" decode_tokens_per_s 2>/dev/null)
    if [ -n "$mine" ] && [ "$mine" != "?" ]; then
      ratio=$("$PY" -c "print(f'{$mine/$tdec:.2f}x')" 2>/dev/null)
    fi
    row "$name" INFO "$impl: prefill $tpre tok/s, decode $tdec tok/s${ratio:+; mcpm decode / PyTorch decode = $ratio}"
  else
    row "$name" FAIL "torch_baseline.py failed: $(tail -2 "$log" | tr '\n' ' ' | cut -c1-200)"
  fi
}
torch_row torch-0.5b bench-0.5b 60 --preset minicpm4-0.5b --prompt-tokens 512 --gen-tokens 128
if [ "${QUICK:-0}" = 1 ]; then
  row torch-8b "NOT RUN" "QUICK=1"
else
  torch_row torch-8b bench-8b 120 --preset minicpm4-8b --prompt-tokens 512 --gen-tokens 64
fi

# ---- the 8B linear layers one at a time: bf16 vs int4 (issue #5's M = 1 floor and speed-up) --------------------
ops_log="$OUT/op-bench.log"
if ! should_run op-bench 45; then
  :
elif budgeted 600 "$DIR/bench/mcpm_op_bench" --backend cuda --json --m 1,4,16,64,1024 ${BW:+--bandwidth "$BW"} \
    --contexts 32768,131072 --attn-tokens 1,256 >"$ops_log" 2>&1; then
  if [ -n "$PY" ]; then
    ops=$("$PY" - "$ops_log" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
attn = [r for r in rows if r.get("attention")]
m1 = [r for r in rows if r.get("M") == 1]
worst = min(m1, key=lambda r: r["int4_floor_fraction"])
slow = min(m1, key=lambda r: r["speedup"])
print(f"M=1: int4 at {100*worst['int4_floor_fraction']:.0f}% of the floor at worst ({worst['shape']}), "
      f"{slow['speedup']:.2f}x bf16 at worst ({slow['shape']}); " + "; ".join(
      f"attention L={r['context']} n={r['tokens']}: dense {r['dense_us']:.0f} us, sparse {r['sparse_us']:.0f} us "
      f"(select {r['sparse_select_us']:.0f}) = {r['sparse_speedup']:.2f}x" for r in attn) + "; all rows in op-bench.log")
EOF
)
    row op-bench INFO "$ops"
  else
    row op-bench INFO "see $ops_log"
  fi
else
  row op-bench FAIL "mcpm_op_bench failed: $(tail -2 "$ops_log" | tr '\n' ' ' | cut -c1-200)"
fi

# ---- end to end with the published CLI ----------------------------------------------------------------------
if ! should_run cli 60; then
  :
elif [ ! -x "$CLI" ]; then
  row cli "NOT RUN" "no published CLI at $CLI (dotnet publish src/MiniCPM4.Cli -c Release -r linux-x64 --self-contained -p:PublishSingleFile=true -p:PublishTrimmed=true -o artifacts/minicpm4-linux-x64)"
elif [ -z "$PY" ] || ! "$PY" -c "import numpy" >/dev/null 2>&1; then
  row cli "NOT RUN" "python3 with numpy is needed to compare the CLI's outputs"
else
  export MINICPM4_NATIVE_LIBRARY="$LIB"  # the CLI loads this build's library (CPU and CUDA backends)
  if "$CLI" info --device cuda >"$OUT/cli-info.log" 2>&1; then
    row cli-info PASS "minicpm4 info --device cuda"
  else
    row cli-info FAIL "$(tail -2 "$OUT/cli-info.log" | tr '\n' ' ' | cut -c1-200)"
  fi
  ids="1,450,4996,29892,1724,338,263,1243,310,278,4094,1788,29889,13,7,99,1000,2047,3000,5"
  ok=1
  for dev in cpu cuda; do
    "$CLI" logits --device "$dev" --tokens "$ids" --out "$OUT/logits-$dev.npy" >"$OUT/cli-logits-$dev.log" 2>&1 || ok=0
  done
  if [ $ok = 1 ]; then
    rel=$("$PY" -c "import numpy as np; c=np.load('$OUT/logits-cpu.npy'); g=np.load('$OUT/logits-cuda.npy'); print(f'{np.abs(g-c).max()/max(1.0,np.abs(c).max()):.2e}')")
    if "$PY" -c "import sys; sys.exit(0 if float('$rel') <= 1e-2 else 1)"; then
      row cli-logits PASS "demo model, 20 tokens: CUDA vs CPU logits relative error $rel (<= 1e-2)"
    else
      row cli-logits FAIL "demo model: CUDA vs CPU logits relative error $rel > 1e-2"
    fi
  else
    row cli-logits FAIL "minicpm4 logits failed: see $OUT/cli-logits-*.log"
  fi
  gen() {  # device, extra args... -> token ids (one line)
    local dev=$1
    shift
    "$CLI" generate --device "$dev" -p "Once upon a time" --max-tokens 64 --temperature 0 --json "$@" \
      >"$OUT/cli-gen-$dev$*.log" 2>&1 || return 1
    json_field "$OUT/cli-gen-$dev$*.log" token_ids
  }
  cpu_plain=$(gen cpu --no-speculative) || cpu_plain="error"
  cuda_plain=$(gen cuda --no-speculative) || cuda_plain="error"
  cuda_spec=$(gen cuda) || cuda_spec="error"
  if [ "$cuda_plain" != error ] && [ "$cuda_plain" = "$cpu_plain" ]; then
    row cli-greedy PASS "demo model, 64 greedy tokens: CUDA == CPU"
  else
    row cli-greedy FAIL "CUDA greedy tokens differ from the CPU's, or a run failed (a bf16 tie can part them; compare the logits): see $OUT/cli-gen-*.log"
  fi
  if [ "$cuda_spec" != error ] && [ "$cuda_spec" = "$cuda_plain" ]; then
    row cli-spec PASS "demo model with its EAGLE draft on CUDA: speculative greedy == plain greedy ($(json_field "$OUT/cli-gen-cuda.log" mean_accepted_tokens) accepted per round)"
  else
    row cli-spec FAIL "speculative greedy on CUDA differs from plain greedy (or failed): see $OUT/cli-gen-cuda*.log"
  fi
  # Continuous batching on the device: 8 sessions of the 0.5B shape against one alone, in one run.
  if "$CLI" bench --device cuda --preset minicpm4-0.5b --sessions 8 --prompt-tokens 128 --gen-tokens 64 --json \
      >"$OUT/cli-batch.log" 2>&1; then
    row cli-batch PASS "0.5B bf16, 8 sessions: $(json_field "$OUT/cli-batch.log" aggregate_decode_tokens_per_s) tok/s in total vs $(json_field "$OUT/cli-batch.log" single_session_decode_tokens_per_s) alone ($(json_field "$OUT/cli-batch.log" batch_speedup)x)"
  else
    row cli-batch FAIL "minicpm4 bench --sessions 8 on CUDA failed: see $OUT/cli-batch.log"
  fi
fi

summary
