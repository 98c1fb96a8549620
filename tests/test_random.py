"""The in-step random generator (gc.random_uniform, gc.dropout): bit-identical on every CPU
target and the interpreter, uniform, a new draw every training step, reproducible from seed
and step, and dropout as keras.random.dropout: zero with probability rate, else x / (1 - rate),
with the same mask in the forward and the backward pass."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


def test_draws_are_identical_on_every_target_and_uniform():
    key = gc.input("rk", (), "int64")
    u32 = gc.random_uniform((200, 100), seed=3, key=key)
    u64 = gc.random_uniform((50_000,), seed=3, dtype="float64", key=key)
    got = {t: gc.compile([u32, u64], target=t)(rk=np.int64(11)) for t in ("numpy", "cpu", "parallel")}
    for t in ("cpu", "parallel"):
        for a, b in zip(got[t], got["numpy"]):
            np.testing.assert_array_equal(a, b)
    a, b = got["cpu"]
    assert a.dtype == np.float32 and b.dtype == np.float64
    for v in (a.ravel(), b):
        assert v.min() >= 0.0 and v.max() < 1.0
        assert abs(v.mean() - 0.5) < 0.01 and abs(v.var() - 1 / 12) < 0.005
        hist = np.histogram(v, bins=10, range=(0, 1))[0] / v.size
        assert np.all(np.abs(hist - 0.1) < 0.01), hist
    # successive elements, other keys and other seeds are uncorrelated
    assert abs(np.corrcoef(b[:-1], b[1:])[0, 1]) < 0.02
    other = gc.compile(u64, target="cpu")(rk=np.int64(12))
    assert abs(np.corrcoef(b, other)[0, 1]) < 0.02
    reseeded = gc.compile(gc.random_uniform((50_000,), seed=4, dtype="float64", key=key), target="cpu")(rk=np.int64(11))
    assert abs(np.corrcoef(b, reseeded)[0, 1]) < 0.02


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_dropout_is_keras_dropout_with_a_new_mask_each_step(target):
    rate = 0.25
    x = gc.input("dx", (None, 400), "float64")
    w = gc.param("dw", (400,), init="ones", dtype="float64")
    y = gc.dropout(x * w, rate, seed=5)
    step = gc.compile(gc.sum(y), optimizer=gc.optim.SGD(0.0), outputs={"y": y}, target=target)
    X = np.random.default_rng(0).uniform(1, 2, (30, 400))
    outs = [step(dx=X)["y"] for _ in range(3)]
    for o in outs:
        kept = o != 0
        assert abs(kept.mean() - (1 - rate)) < 0.02
        np.testing.assert_allclose(o[kept], X[kept] / (1 - rate), rtol=1e-12)  # kept: x / (1 - rate)
    assert (outs[0] != outs[1]).any() and (outs[1] != outs[2]).any()  # the step counter keys the draw
    # the backward pass uses the forward pass's mask: dL/dw = sum over the batch of mask * x / (1 - rate)
    g, = gc.grad(gc.sum(y), [w])
    f = gc.compile({"y": y, "g": g}, target=target, params=step)
    r = f(dx=X)  # the step counter is now 3: the mask of a fourth step
    np.testing.assert_allclose(r["g"], (r["y"] != 0).astype(float).__mul__(X / (1 - rate)).sum(0), rtol=1e-12)


def test_same_seed_and_step_reproduce_the_mask_and_errors():
    x = gc.input("sx", (8, 8), "float32")
    y = gc.dropout(x, 0.5, seed=9)
    a = gc.compile(y, target="cpu")(sx=np.ones((8, 8), "float32"))
    b = gc.compile(gc.dropout(gc.input("sx2", (8, 8), "float32"), 0.5, seed=9), target="cpu")(
        sx2=np.ones((8, 8), "float32"))
    np.testing.assert_array_equal(a, b)
    assert gc.dropout(x, 0.0) is x
    with pytest.raises(ValueError, match="dropout: rate must be in \\[0, 1\\)"):
        gc.dropout(x, 1.0)
    with pytest.raises(TypeError, match="seed must be an int"):
        gc.dropout(x, 0.5, seed="a")
    with pytest.raises(gc.DTypeError, match="floating-point"):
        gc.dropout(gc.input("ix", (3,), "int64"), 0.5)
