#!/usr/bin/env bash
# The check of target="cuda" on a real GPU: the CUDA tests on the device, then the step
# benchmark against PyTorch and JAX on the same GPU. On any machine with a CUDA device, from
# the repository root:
#     bash benchmarks/gpu_check.sh        # about 8 minutes (the stage timeouts below: 455 s, plus start-up)
# It installs nothing. It needs numba with numba-cuda, cuda-bindings, numpy, pytest and
# hypothesis; CuPy for cuBLAS GEMMs (else the numba.cuda GEMM is used), and PyTorch and JAX with
# GPU support as the benchmark's peers (a peer that is missing is skipped, saying why). Logs
# land in $OUT (default benchmarks/results). Every stage has its own `timeout`, so a stage that
# hangs costs its time and the next one still runs. The timings assume the GPU runs nothing else
# and the host is otherwise idle: small steps are bound by the host's launch cost.
#   0. versions (numba, numba-cuda, cuda-bindings, CuPy, torch, jax) and the device   30 s
#   1. CUDA-graph replay and convolution tests on the device                            100 s
#   2. the rest of tests/cuda on the device (cuBLAS GEMMs when CuPy imports)             120 s
#   3. bench_cuda.py: graphc cuda (plain, fallback GEMM, graph replay) vs PyTorch eager,
#      PyTorch + CUDA graphs and JAX jit, same GPU, same run; correctness vs cpu         160 s
#   4. kernel and step tests with the fallback numba.cuda GEMM (GRAPHC_CUDA_GEMM=numba)  45 s
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX must leave the GPU's memory to the others
unset NUMBA_ENABLE_CUDASIM
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export GRAPHC_CACHE_DIR="${GRAPHC_CACHE_DIR:-/tmp/graphc-gpu-cache}"
rc=0
echo "== 0. environment"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  timeout 30 python - <<'EOF'
import sys
print("python", sys.version.split()[0])
for m in ("numpy", "numba", "numba_cuda", "cuda.bindings", "cupy", "torch", "jax"):
    try:
        mod = __import__(m, fromlist=["_"])
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "absent:", type(e).__name__, e)
from graphc.backends.cuda.compat import numba_cuda, cupy_or_none
c = numba_cuda()
ok = c.is_available()
print("cuda available", ok, c.get_current_device().name if ok else "", "cupy", cupy_or_none() is not None)
EOF
} 2>&1 | tee "$OUT/gpu_env.txt"

echo "== 1. CUDA-graph replay + convolution tests on the device"
timeout 100 python -m pytest -q -rs tests/cuda/test_cuda_graphs.py tests/cuda/test_cuda_conv.py \
  2>&1 | tee "$OUT/gpu_tests_graphs_conv.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1

echo "== 2. the rest of tests/cuda on the device"
timeout 120 python -m pytest -q -rs tests/cuda --ignore tests/cuda/test_cuda_graphs.py --ignore tests/cuda/test_cuda_conv.py \
  2>&1 | tee "$OUT/gpu_tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1

echo "== 3. step benchmark vs PyTorch (eager, CUDA graphs) and JAX jit on this GPU"
timeout 160 python benchmarks/bench_cuda.py --budget 4 --reps 300 --warmup 10 --no-cpu \
  --out "$OUT/bench_cuda.json" 2>&1 | tee "$OUT/bench_cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1

echo "== 4. kernel and step tests with the fallback GEMM"
GRAPHC_CUDA_GEMM=numba timeout 45 python -m pytest -q -x tests/cuda/test_cuda_step.py tests/cuda/test_cuda_kernels.py \
  2>&1 | tee "$OUT/gpu_tests_fallback.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
echo "gpu_check: exit $rc"
exit $rc
