"""Shared by the CUDA tests: compile the same outputs for target="numpy" and target="cuda"
and compare (values, and gradients through gc.grad)."""
from __future__ import annotations

import os
import types

import numpy as np
import pytest

import graphc as gc

TOL = {"float64": 1e-9, "float32": 2e-5}


def feeds_for(nodes, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for n in nodes:
        if n.dtype.kind == "f":
            out[n.name] = rng.standard_normal(n.shape).astype(n.dtype)
        else:
            out[n.name] = rng.integers(0, 3, n.shape).astype(n.dtype)
    return out


def assert_close(got, want, rtol, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


def check_cuda(outs, wrt=(), seed=0, feeds=None):
    """outs (+ d(sum of weighted outs)/d wrt) on cuda vs the interpreter; returns the cuda Function."""
    outs = list(outs)
    if wrt:
        y = None
        for k, o in enumerate(outs):
            if o.dtype.kind != "f":
                continue
            w = np.linspace(-1.0, 1.5, int(np.prod(o.shape)) if o.shape else 1).reshape(o.shape) + 0.1 * k
            t = gc.sum(o * gc.const(w.astype(o.dtype)))
            y = t if y is None else y + t
        outs = outs + [y] + list(gc.grad(y, list(wrt)))
    ref = gc.compile(outs, target="numpy")
    feeds = feeds if feeds is not None else feeds_for(ref._inputs, seed)
    want = ref(**feeds)
    f = gc.compile(outs, target="cuda")
    got = f(**feeds)
    for i, (a, b) in enumerate(zip(got, want)):
        rtol = TOL.get(np.dtype(b.dtype).name, 1e-5)
        assert_close(a, b, rtol, f"cuda output {i} of {len(want)} ({outs[i]!r})")
    return f


def use_cublas(monkeypatch) -> None:
    """Run the cuBLAS path: under the simulator through a stand-in CuPy (NumPy's matmul on the
    simulator's device memory), so its launch list, multi-tensor tables and bindings run here;
    on a device through the real CuPy (skips, saying why, where CuPy is absent)."""
    from graphc.backends.cuda import program
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        monkeypatch.setattr(program, "cupy_or_none",
                            lambda: types.SimpleNamespace(asarray=lambda d: d._ary, matmul=np.matmul))
    elif program.cupy_or_none() is None:
        pytest.skip("the cuBLAS path on a device needs CuPy (pip install graphc[cuda])")
