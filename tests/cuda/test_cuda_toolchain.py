"""What needs a process WITHOUT the simulator (the simulator is switched on process-wide
before numba is imported, so these run in subprocesses with NUMBA_ENABLE_CUDASIM removed):

- target="cuda" on a machine without a GPU raises graphc's clear error, no driver traceback;
- every generated kernel compiles to PTX (numba.cuda.compile_ptx needs NVVM, not a GPU):
  this catches typing and lowering errors the simulator, which runs kernels as Python, misses.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)


def run_ptx(code: str) -> str:
    """Run a PTX-compiling script (outside the simulator) and return its stdout; skip, saying
    why, where it printed NO-NVVM (numba.cuda.compile_ptx cannot run without libnvvm)."""
    r = _run(code)
    assert r.returncode == 0, r.stdout + r.stderr
    if "NO-NVVM" in r.stdout:
        pytest.skip("NVVM (libnvvm from the CUDA toolkit) is not available, so numba.cuda.compile_ptx "
                    "cannot run: " + r.stdout.strip())
    return r.stdout


@functools.lru_cache(maxsize=None)
def _nvvm_missing() -> str | None:
    probe = _run("from graphc.backends.cuda.compat import numba_cuda; import numba\n"
                 "numba_cuda().compile_ptx(lambda a: None, (numba.float32[:],), cc=(9, 0))")
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or [""])[-1]


def require_nvvm() -> None:
    """Skip (saying why) where numba.cuda.compile_ptx cannot run: NVVM is absent (probed once)."""
    why = _nvvm_missing()
    if why is not None:
        pytest.skip("NVVM (libnvvm from the CUDA toolkit) is not available, so numba.cuda.compile_ptx "
                    "cannot run: " + why)


MLP = """
import numpy as np, graphc as gc
x = gc.input("x", (None, 6)); y = gc.input("y", (None,), dtype="int64")
W1 = gc.param("W1", (6, 5), init="he_normal"); b1 = gc.param("b1", (5,))
W2 = gc.param("W2", (5, 3), init="he_normal"); b2 = gc.param("b2", (3,))
logits = gc.relu(x @ W1 + b1) @ W2 + b2
loss = gc.softmax_cross_entropy(logits, y)
"""


def test_no_device_gives_a_clear_error():
    probe = _run("from graphc.backends.cuda.compat import numba_cuda; print(numba_cuda().is_available())")
    if probe.stdout.strip() == "True":
        pytest.skip("a CUDA device is present: the no-device error cannot be provoked here")
    r = _run(MLP + """
try:
    gc.compile(loss, optimizer="adam", target="cuda")
except gc.GraphcError as e:
    print("ERR", type(e).__name__, e)
""")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "ERR CudaUnavailableError" in out, out + r.stderr
    assert "no CUDA device was found" in out and "NUMBA_ENABLE_CUDASIM=1" in out
    assert "Traceback" not in r.stderr


PTX = MLP + """
import sys
from graphc.backends.cuda.emitter import REAL, emit_for, compile_ptx
from graphc.compiler import lowered
from graphc.backends.cuda.compat import numba_cuda
cuda = numba_cuda()
try:
    cuda.compile_ptx(lambda a: None, (__import__("numba").float32[:],), cc=(9, 0))
except Exception as e:
    print("NO-NVVM", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    sys.exit(0)
step = gc.compile(loss, optimizer="adam", target="cpu")
progs = [(step._program, 4, step._store.layout)]
# every kernel kind: broadcast/transposed leaves, block and serial reductions, copy, bool/int
a = gc.input("a", (3, 4)); b = gc.input("b", (4,)); i = gc.input("i", (3, 4), dtype="int64")
e = gc.exp(gc.transpose(a))
outs = [gc.tanh(a + b), gc.sum(e, 0), gc.max(a, 1, keepdims=True), gc.sum(gc.exp(a), 0), gc.sum(gc.exp(a), 1),
        gc.transpose(a), a > 0.0, gc.cast(a, "int64") + i, gc.transpose(a) @ a]
f = gc.compile(outs, target="cpu")
progs.append((f._program, None, f._store.layout))
for fp64 in (False, True):
    for prog, batch, layout in progs:
        mod = emit_for(lowered(prog, batch, {}), layout, lp=REAL, use_cublas=fp64)
        ptx = compile_ptx(mod, cc=(9, 0))
        assert ptx and all(".entry" in p or ".visible" in p for p in ptx.values())
        print("PTX", len(ptx), sorted(k.split("_")[0] for k in ptx))
"""


def test_generated_kernels_compile_to_ptx():
    out = run_ptx(PTX)
    lines = [ln for ln in out.splitlines() if ln.startswith("PTX")]
    assert len(lines) == 4, out
    kinds = " ".join(lines)
    for kind in ("ew", "block", "serial", "sce", "copy", "gemm"):
        assert kind in kinds, kinds
