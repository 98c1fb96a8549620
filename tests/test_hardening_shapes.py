"""Size-1 dimensions are an ordinary case on every native target (issue 9, item 3).

A size-1 operand may be read as a scalar only where an elementwise loop broadcasts it; a
GEMM operand, a softmax-CE operand or anything indexed stays an array. Before the fix the
README's MLP at batch size 1 and every matmul with a 1x1 operand failed to compile. Each case
is checked against the interpreter (target="numpy"): forward values, gc.grad outputs and
several Adam steps. Graphs are few and tiny (each is a Numba compile).
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from _helpers import random_feeds

NATIVE = ("cpu", "parallel")


def _feeds(nodes, batch, seed):
    return random_feeds(nodes, batch, seed, high=10)


def _close(got, want, rtol, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


# ---- forward and gradients of size-1 shapes -----------------------------------------------------

def _size1_graph():
    """One graph holding every size-1 pattern (one compile per target): 1x1 and (k,1)/(1,k)
    GEMM operands on both sides and transposed, (N,1) outputs, reductions over size-1 axes,
    broadcasting of (1,1)/(1,) operands, reshapes and transposes of size-1 shapes."""
    x1 = gc.input("s1_x1", (1, 1), dtype="float64")
    col = gc.input("s1_col", (3, 1), dtype="float64")
    row = gc.input("s1_row", (1, 3), dtype="float64")
    v1 = gc.input("s1_v1", (1,), dtype="float64")
    m = gc.input("s1_m", (3, 4), dtype="float64")
    outs = [
        x1 @ x1,                                  # 1x1 @ 1x1
        row @ col,                                # (1,3) @ (3,1) -> (1,1)
        col @ row,                                # outer product (3,1) @ (1,3)
        col @ x1,                                 # (3,1) @ (1,1)
        x1 @ row,                                 # (1,1) @ (1,3)
        row.T @ x1,                               # transposed (3,1) operand
        col.T @ col,                              # (1,3) @ (3,1) through a transpose
        gc.tanh(col @ x1 + v1),                   # GEMM epilogue with a (1,) bias
        gc.sum(col, axis=1),                      # reduce over a size-1 axis
        gc.mean(row, axis=0, keepdims=True),
        gc.max(col, axis=1, keepdims=True),
        gc.sum(x1), gc.max(x1, axis=0), gc.mean(v1),
        m * x1 + v1,                              # (1,1) and (1,) broadcast in a loop
        gc.reshape(row, (3, 1)) * col,            # reshape of a size-1 shape
        gc.transpose(col) + row,
        gc.softmax(col, axis=1), gc.log_softmax(row, axis=0),
        gc.reshape(x1, ()) * m,
    ]
    return outs, [x1, col, row, v1, m]


@pytest.mark.parametrize("target", NATIVE)
def test_size1_shapes_forward_and_grads_match_numpy(target):
    outs, wrt = _size1_graph()
    y = None
    for k, o in enumerate(outs):
        w = gc.const(np.linspace(-1.0, 1.5, int(np.prod(o.shape)) or 1).reshape(o.shape) + 0.1 * k)
        t = gc.sum(o * w)
        y = t if y is None else y + t
    everything = [*outs, y, *gc.grad(y, wrt)]
    feeds = _feeds(wrt, None, 0)
    want = gc.compile(everything, target="numpy")(**feeds)
    got = gc.compile(everything, target=target)(**feeds)
    for i, (a, b) in enumerate(zip(got, want)):
        _close(a, b, 1e-9, f"{target} output {i} ({everything[i]!r})")


# ---- training steps at batch size 1 and with 1x1 weights -----------------------------------------

def _mlp():
    """The README's MLP."""
    x = gc.input("x", (None, 64))
    y = gc.input("y", (None,), dtype="int64")
    W1 = gc.param("W1", (64, 32), init="he_normal"); b1 = gc.param("b1", (32,))  # noqa: E702
    W2 = gc.param("W2", (32, 10), init="he_normal"); b2 = gc.param("b2", (10,))  # noqa: E702
    logits = gc.relu(x @ W1 + b1) @ W2 + b2
    return gc.softmax_cross_entropy(logits, y)


def _linear(k):
    """Linear regression with ``k`` features and one output: W is (k, 1), preds (B, 1)."""
    x = gc.input("x", (None, k))
    t = gc.input("t", (None, 1))
    W = gc.param("W", (k, 1), init="glorot_uniform")
    b = gc.param("b", (1,), init="ones")
    return gc.mse(x @ W + b, t)


def _train_matches_numpy(build, target, batches, steps=3):
    ref = gc.compile(build(), optimizer=gc.optim.Adam(0.05), target="numpy")
    step = gc.compile(build(), optimizer=gc.optim.Adam(0.05), target=target)
    assert set(step.params) == set(ref.params)
    for p in ref.params:
        np.testing.assert_array_equal(step.params[p], ref.params[p])
    for i in range(steps):
        for batch in batches:
            feeds = _feeds(ref._inputs, batch, 100 * i + batch)
            want, got = ref(**feeds), step(**feeds)
            _close(got["loss"], want["loss"], 1e-4, f"{target} loss, batch {batch}, step {i}")
    for name, v in ref.state_dict()["state"].items():
        _close(step.state_dict()["state"][name], v, 1e-4, f"{target} state {name!r}")
    for name, v in ref.params.items():
        _close(step.params[name], v, 1e-4, f"{target} param {name!r}")
    assert step.iterations == ref.iterations == steps * len(batches)


@pytest.mark.parametrize("target", NATIVE)
def test_readme_mlp_trains_at_batch_size_1(target):
    _train_matches_numpy(_mlp, target, batches=(1, 4))


@pytest.mark.parametrize("target", NATIVE)
def test_one_feature_linear_regression_1x1_weight(target):
    _train_matches_numpy(lambda: _linear(1), target, batches=(1, 5))


@pytest.mark.parametrize("target", NATIVE)
def test_k_by_1_weight_at_batch_size_1(target):
    _train_matches_numpy(lambda: _linear(5), target, batches=(1, 3))


def test_inference_at_batch_size_1_shares_weights():
    step = gc.compile(_mlp(), optimizer=gc.optim.Adam(1e-3))
    x = gc.input("x", (None, 64))
    W1, b1, W2, b2 = (gc.param(n, s) for n, s in (("W1", (64, 32)), ("b1", (32,)), ("W2", (32, 10)), ("b2", (10,))))
    logits = gc.relu(x @ W1 + b1) @ W2 + b2
    predict = gc.compile(gc.softmax(logits), params=step)
    ref = gc.compile(gc.softmax(logits), params=step, target="numpy")
    xb = np.random.default_rng(3).random((1, 64)).astype("float32")
    step(x=xb, y=np.array([2]))
    _close(predict(x=xb), ref(x=xb), 1e-5, "batch-1 inference")


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_zero_size_dims_compile_and_match_numpy(target):
    """A (B, 0) tensor is an ordinary (empty) case: elementwise loops and reductions over it."""
    x = gc.input("zx", (None, 0))
    outs = [gc.exp(x) * 2.0, gc.sum(x, 1), gc.mean(x * 0.0 + 1.0, 0, keepdims=True)]
    v = np.zeros((3, 0), np.float32)
    want = gc.compile(outs, target="numpy")(zx=v)
    got = gc.compile(outs, target=target)(zx=v)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
