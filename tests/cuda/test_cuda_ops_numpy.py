"""A representative subset of the NumPy op set (tests/test_ops_numpy.py) on the cuda target:
elementwise math, rounding, modulo, predicates and logic, Keras' activations, min/prod,
cumsum, norm and shape helpers, values and gradients against target="numpy". Values stay in
every function's domain and finite (the simulator runs Python's math, which raises where a
compiled kernel would give NaN); the rounding constants are tested for both float widths."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


def _graph(dtype):
    x = gc.input("x", (3, 1, 4), dtype=dtype)
    y = gc.input("y", (1, 2, 4), dtype=dtype)
    outs = [gc.sin(x), gc.arctan2(x, y), gc.round(x), gc.floor(x), gc.ceil(x), gc.trunc(x), gc.mod(x, y),
            gc.floor_divide(x, y), gc.erf(x), gc.exp2(x), gc.log2(gc.abs(x) + 0.5), gc.arcsinh(x),
            gc.relu6(x * 3.0), gc.hard_swish(x), gc.mish(x), gc.log_sigmoid(x), gc.silu(x), gc.selu(x),
            gc.isfinite(x), gc.logical_and(x > 0, y), gc.logical_xor(x, y > 0),
            gc.min(x * y, 1), gc.prod(x, 2), gc.cumsum(x * y, 2), gc.cumprod(x, 0, reverse=True),
            gc.norm(x * y, axis=-1), gc.any(x > 1.0, (0, 2)), gc.tril(x * y), gc.roll(x, 1, 2), gc.flip(x, 0),
            gc.tile(x, (1, 2, 1)), gc.repeat(x, 2, 0), gc.squeeze(x, 1), x.argmin()]
    return x, y, outs


def _feeds(dtype):
    rng = np.random.default_rng(5)
    xv = rng.uniform(-3, 3, (3, 1, 4))
    xv.flat[:4] = [2.5, -0.5, 0.5, -2.5]  # halfway cases: round half to even, -0.0
    yv = rng.uniform(0.5, 2, (1, 2, 4)) * np.array([1, -1, 1, -1])
    return {"x": xv.astype(dtype), "y": yv.astype(dtype)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numpy_ops_forward_as_on_numpy(dtype):
    x, y, outs = _graph(dtype)
    feeds = _feeds(dtype)
    want = gc.compile(outs, target="numpy")(**feeds)
    got = gc.compile(outs, target="cuda")(**feeds)
    tol = 1e-12 if dtype == "float64" else 2e-6
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, i
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=str(outs[i]))
    np.testing.assert_array_equal(np.signbit(got[2]), np.signbit(np.round(feeds["x"])))  # round's -0.0


def test_numpy_op_gradients_as_on_numpy():
    x, y, outs = _graph("float64")
    w = np.random.default_rng(6)
    loss = gc.sum(gc.stack([gc.sum(o * w.normal(size=o.shape)) for o in outs if o.dtype.kind == "f"]))
    grads = gc.grad(loss, [x, y])
    feeds = _feeds("float64")
    want = gc.compile(grads, target="numpy")(**feeds)
    got = gc.compile(grads, target="cuda")(**feeds)
    for g, v in zip(got, want):
        np.testing.assert_allclose(g, v, rtol=1e-10, atol=1e-12)
