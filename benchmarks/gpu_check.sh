#!/usr/bin/env bash
# Every GPU path checked and timed in one command, for whoever has a GPU machine:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. the kernels compile for this GPU (NVRTC) and assemble without spills (ptxas)
# 2. the GPU tests: our kernels against the float64 reference
# 3. kernel_bench.py: our kernel vs torch.cdist + topk and a GEMM formulation (table + JSON)
# 4. inprocess_bench.py: the student in PyTorch FP16 on the GPU and, where TensorRT and an engine
#    exist, the TensorRT FP16 engine (each missing one is skipped with its reason)
# Uses .venv/bin/python when present, else python3 (GPU hosts often bring their own torch).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-build/gpu_check}"
mkdir -p "$OUT"
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
step() { echo; echo "=== $1"; shift; "$@" 2>&1 | tee -a "$OUT/gpu_check.log"; local rc=${PIPESTATUS[0]}; [ "$rc" -eq 0 ] || status=$rc; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu_check.log"
step "kernels: NVRTC + ptxas (all targets)" $PY -m export.kernels.compile
step "GPU tests" $PY -m pytest -q -rs tests/gpu -p no:cacheprovider
step "kernel benchmark" $PY benchmarks/kernel_bench.py --out "$OUT/kernel_bench.json"
step "student in-process (GPU backends)" $PY benchmarks/inprocess_bench.py --out "$OUT/inprocess_gpu.json"
echo; echo "gpu_check: exit $status; log and JSON in $OUT"
exit $status
