"""DSL functions written from existing ops (no new kernels): logsumexp, var, std, argmax,
argmin, swapaxes, against NumPy on every CPU target, with finite-difference gradients."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


def _outs(x):
    return [gc.logsumexp(x, 1), gc.logsumexp(x, keepdims=True), gc.var(x, 1, keepdims=True), gc.std(x),
            gc.argmax(x, 1), gc.argmin(x, -1, keepdims=True), gc.swapaxes(x, 0, 1)]


def _expected(v):
    from scipy.special import logsumexp
    return [logsumexp(v, 1), logsumexp(v, keepdims=True), np.var(v, 1, keepdims=True), np.std(v),
            np.argmax(v, 1), np.argmin(v, -1, keepdims=True), np.swapaxes(v, 0, 1)]


@pytest.mark.parametrize("target", ["numpy", "cpu", "parallel"])
def test_composites_match_numpy(target):
    x = gc.input("x", (None, 5), dtype="float64")
    f = gc.compile(_outs(x), target=target)
    v = np.random.default_rng(0).normal(size=(4, 5)) * 30  # large: logsumexp must not overflow
    v[1, 2] = v[1, 4] = v[1].max() + 1.0  # a tie: argmax returns the first, as NumPy
    v[2, 0] = v[2, 3] = v[2].min() - 1.0
    for got, want in zip(f(x=v), _expected(v)):
        assert got.shape == want.shape and got.dtype.kind == want.dtype.kind
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_composite_gradients():
    x = gc.input("x", (3, 4), dtype="float64")
    v = np.random.default_rng(1).normal(size=(3, 4))
    for y in (gc.sum(gc.logsumexp(x, 0)), gc.sum(gc.var(x, 1)), gc.std(x), gc.sum(gc.swapaxes(x, 0, 1) * 2.0)):
        rep = gc.check_grads(y, [x], feeds={"x": v}, rtol=1e-6)
        assert max(rep.values()) < 1e-6
    (g,) = gc.grad(gc.sum(gc.cast(gc.argmax(x, 1), "float64")) + gc.sum(x), [x])
    np.testing.assert_array_equal(gc.evaluate([g], {"x": v}, {})[0], np.ones((3, 4)))  # argmax: no gradient


def test_argmax_errors_name_the_op_and_line():
    x = gc.input("x", (None, 5))
    with pytest.raises(gc.ShapeError, match=r"argmax: cannot run over the batch dimension.*test_composite_ops"):
        gc.argmax(x, 0)
    with pytest.raises(gc.ShapeError, match="argmin: takes one int axis"):
        gc.argmin(x, (0, 1))
    with pytest.raises(gc.ShapeError, match="argmin: cannot run over the batch dimension"):
        gc.argmin(x, None)  # NumPy's flattened index: the batch dim is part of it
    with pytest.raises(gc.ShapeError, match="logsumexp"):
        gc.logsumexp(x, 3)


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_layer_normalization_matches_the_keras_formula_and_differentiates(target):
    x = gc.input("x", (None, 6), dtype="float64")
    g = gc.param("g", (6,), init="ones", dtype="float64")
    b = gc.param("b", (6,), dtype="float64")
    W = gc.param("W", (6, 1), dtype="float64", init=np.linspace(-1, 1, 6).reshape(6, 1))
    y = gc.layer_normalization(x, g, b)
    v = np.random.default_rng(3).normal(size=(5, 6)) * 4 + 2
    f = gc.compile(y, target=target)
    mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
    np.testing.assert_allclose(f(x=v), (v - mu) / np.sqrt(var + 1e-7), rtol=1e-10)
    z = gc.layer_normalization(x, axis=(0, 1), epsilon=1e-3)
    np.testing.assert_allclose(gc.compile(z, target=target)(x=v), (v - v.mean()) / np.sqrt(v.var() + 1e-3),
                               rtol=1e-10)
    loss = gc.mean(gc.square(y @ W))
    rep = gc.check_grads(loss, [g, b, x], feeds={"x": v}, params={"g": np.full(6, 1.5), "b": np.zeros(6),
                                                                   "W": np.linspace(-1, 1, 6).reshape(6, 1)},
                         rtol=1e-6)
    assert max(rep.values()) < 1e-6
