#!/usr/bin/env bash
# The ONE device check of target="cuda", for a session that has a lent GPU (the `run` tool,
# 15 minutes of device time in all). Everything it needs is in the device image (numba +
# numba-cuda, numpy 2.5, CuPy, PyTorch, networkx, scipy, pytest, hypothesis); nothing is
# installed. Budget about 8 minutes: run it as
#     run(command="bash benchmarks/gpu_check.sh", timeout_s=540)
# then give the machine back. Logs land in $OUT (or benchmarks/results).
#   1. tests/cuda for real: every kernel kind and the MLP step vs numpy, PTX, store coherence
#   2. the same kernel/step tests with the fallback numba.cuda GEMM (GRAPHC_CUDA_GEMM=numba)
#   3. benchmarks/bench_cuda.py: correctness vs cpu, us/step, launches/step, launch cost
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset NUMBA_ENABLE_CUDASIM
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export GRAPHC_CACHE_DIR="${GRAPHC_CACHE_DIR:-/tmp/graphc-gpu-cache}"
rc=0
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  python -c "import sys, numpy, numba; print(sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__)"
  python -c "from graphc.backends.cuda.compat import numba_cuda, cupy_or_none; c = numba_cuda(); print('cuda available', c.is_available(), c.get_current_device().name if c.is_available() and hasattr(c, 'get_current_device') else '', 'cupy', cupy_or_none() is not None)"
} 2>&1 | tee "$OUT/gpu_env.txt"

echo "== 1. tests/cuda on the device (cuBLAS GEMMs when CuPy imports)"
timeout 200 python -m pytest -q -x tests/cuda 2>&1 | tee "$OUT/gpu_tests.txt" || rc=1

echo "== 2. kernel and step tests with the fallback GEMM"
GRAPHC_CUDA_GEMM=numba timeout 120 python -m pytest -q -x tests/cuda/test_cuda_kernels.py tests/cuda/test_cuda_step.py \
  2>&1 | tee "$OUT/gpu_tests_fallback.txt" || rc=1

echo "== 3. step benchmark (cuda vs cpu vs torch eager; reference numbers in the script)"
timeout 180 python benchmarks/bench_cuda.py --budget 8 --reps 400 --out "$OUT/bench_cuda.json" \
  2>&1 | tee "$OUT/bench_cuda.txt" || rc=1
echo "gpu_check: exit $rc"
exit $rc
