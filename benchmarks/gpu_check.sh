#!/usr/bin/env bash
# Every GPU path checked and timed in one command, on a bare GPU host: PyTorch, cuda-python and the
# CUDA toolkit's ptxas present; TensorRT, compute-sanitizer, tritonserver and network optional;
# nothing built beforehand (each step makes the ONNX, bank or engine it needs).
#
#   bash benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]      (OUT_DIR default: build/gpu_check)
#
#   1 env         GPU, driver, CUDA, NVRTC and the PTX ISA it writes vs what the driver loads
#   2 compile     every kernel variant through NVRTC, ptxas registers / spills (all targets)
#   3 gpu tests   tests/gpu: every kernel and tactic against the float64 reference
#   4 memcheck    compute-sanitizer memcheck of every kernel and tactic on odd sizes
#   5 racecheck   compute-sanitizer racecheck, same kernels on the small odd sizes
#   6 kernel bench  ours vs torch.cdist + topk and the GEMM form, with the measured roofline
#   7 student fp16  PyTorch FP16 student throughput on the GPU
#   8 training    a short CUDA training run, QFM matching through our kernel and through PyTorch
#   9 tensorrt    student FP16 engine and the match engine with our AOT plugins ("skipped: no
#                 TensorRT" where it is not installed)
#  10 entrypoint  the serving container's GPU start without Docker: engines built into a fresh
#                 cache, then reused by a second start; the gpu-ngc repository
#
# Steps are independent: one failing does not stop the rest. A step that cannot run here exits 77
# after printing "skipped: <reason>". At the end a table (step, pass / FAIL / skipped and why,
# seconds), also in OUT_DIR/summary.txt; the full log in OUT_DIR/gpu_check.log. Exit 1 if any step
# failed. --dry-run (run by `make test` on a CPU) runs every step's script with its real arguments
# up to argument parsing, and collects the GPU tests, so a typo cannot wait for a GPU to show up.
# Uses .venv/bin/python when present, else python3 (GPU hosts often bring their own torch).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT="${1:-build/gpu_check}"
mkdir -p "$OUT"
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/gpu_check.log"
: > "$LOG"
ROWS=()
FAILED=0
SANITIZER=$(command -v compute-sanitizer || true)
[ -z "$SANITIZER" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && SANITIZER=/usr/local/cuda/bin/compute-sanitizer

record() {  # record NAME STATUS SECONDS
  ROWS+=("$(printf '%-14s %-70s %7s' "$1" "$2" "$3")")
}

# step NAME LIMIT_S [--skip REASON] CMD...: run CMD (with QFM_DRY_RUN=1 under --dry-run), log it,
# classify its exit code.
step() {
  local name=$1 limit=$2 skip_reason=""
  shift 2
  if [ "${1:-}" = "--skip" ]; then skip_reason=$2; shift 2; fi
  echo | tee -a "$LOG"
  echo "=== $name: $*" | tee -a "$LOG"
  if [ -n "$skip_reason" ] && [ "$DRY" = 0 ]; then
    echo "skipped: $skip_reason" | tee -a "$LOG"
    record "$name" "skipped: $skip_reason" 0
    return
  fi
  local t0=$SECONDS out="$OUT/.step.out" rc
  if [ "$(type -t "$1")" = function ]; then   # timeout runs programs: a function goes through bash -c
    set -- bash -c "$(printf '%q ' "$@")"
  fi
  QFM_DRY_RUN=$DRY timeout "$limit" "$@" 2>&1 | tee "$out" | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  local secs=$((SECONDS - t0))
  if [ "$rc" -eq 0 ]; then
    record "$name" "pass" "$secs"
  elif [ "$rc" -eq 77 ]; then
    record "$name" "$(grep -m1 '^skipped:' "$out" | cut -c1-70)" "$secs"
  elif [ "$rc" -eq 124 ]; then
    record "$name" "FAIL (over its ${limit} s limit)" "$secs"; FAILED=1
  else
    record "$name" "FAIL (exit $rc)" "$secs"; FAILED=1
  fi
  rm -f "$out"
}

# The GPU tests: only collected under --dry-run (the module then imports without a GPU).
gpu_tests() {
  if [ "$DRY" = 1 ]; then
    $PY -m pytest --collect-only -q tests/gpu -p no:cacheprovider
    return
  fi
  $PY -m pytest -q -rs tests/gpu -p no:cacheprovider; local rc=$?
  if [ "$rc" -eq 5 ]; then echo "skipped: no GPU test ran (no CUDA GPU visible)"; return 77; fi
  return "$rc"
}

# compute-sanitizer TOOL on kernel_sanitize.py, our kernels only (kns=qfm_): PyTorch's own kernels
# are neither instrumented nor checked, which keeps this to a minute or two.
sanitize() {
  local tool=$1; shift
  if [ "$DRY" = 1 ]; then $PY benchmarks/kernel_sanitize.py "$@"; return; fi
  "$SANITIZER" --tool "$tool" --kernel-name kns=qfm_ --error-exitcode 1 $PY benchmarks/kernel_sanitize.py "$@"
}

export PY DRY SANITIZER
export -f gpu_tests sanitize

if [ "$DRY" = 0 ] && command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$LOG"
fi
NO_SAN=""
[ -z "$SANITIZER" ] && NO_SAN="compute-sanitizer not on PATH (CUDA toolkit)"

step "env" 120 $PY benchmarks/gpu_env.py --out "$OUT/env.json"
step "compile" 300 $PY -m export.kernels.compile
step "gpu tests" 300 gpu_tests
step "memcheck" 300 ${NO_SAN:+--skip "$NO_SAN"} sanitize memcheck --shapes all
step "racecheck" 300 ${NO_SAN:+--skip "$NO_SAN"} sanitize racecheck --shapes small
step "kernel bench" 300 $PY benchmarks/kernel_bench.py --out "$OUT/kernel_bench.json"
step "student fp16" 180 $PY benchmarks/inprocess_bench.py --backends torch_cuda_fp16 --batch 128 --iters 20 \
  --out "$OUT/inprocess_gpu.json"
step "training" 300 $PY benchmarks/gpu_train_check.py --steps 40 --out "$OUT/train_check.json"
step "tensorrt" 600 $PY benchmarks/tensorrt_check.py --out "$OUT/tensorrt"
step "entrypoint" 900 $PY benchmarks/entrypoint_check.py --out "$OUT/entrypoint"

{
  echo
  echo "gpu_check summary$([ "$DRY" = 1 ] && echo ' (dry run: arguments and imports only)'), $(date -u '+%Y-%m-%d %H:%M UTC')"
  printf '%-14s %-70s %7s\n' "step" "result" "seconds"
  printf '%s\n' "${ROWS[@]}"
  echo "log: $LOG"
} | tee "$OUT/summary.txt" | tee -a "$LOG"
exit $FAILED
