""""How to add an op" (docs/ARCHITECTURE.md), proven: log1p and softsign were added as one
OpDef each (graphc/ops/elementwise.py) plus one DSL function each (graphc/dsl.py), and
nothing else; they work on every target and differentiate like any other op."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

F64 = "float64"


def _graph():
    x = gc.input("x", (None, 3), dtype=F64)
    W = gc.param("W", (3, 2), dtype=F64, init=np.array([[0.5, -1.0], [0.25, 2.0], [-0.75, 0.1]]))
    h = gc.softsign(x @ W) + gc.log1p(gc.square(x @ W))
    return x, W, h


def _expected(xv, Wv):
    z = xv @ Wv
    return z / (1 + np.abs(z)) + np.log1p(z * z)


@pytest.mark.parametrize("target", ["numpy", "cpu", "parallel"])
def test_new_elementwise_ops_forward_on_every_target(target):
    x, W, h = _graph()
    f = gc.compile(h, target=target)
    xv = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_allclose(f(x=xv), _expected(xv, f.params["W"]), rtol=1e-12)


def test_new_elementwise_ops_gradients_against_finite_differences():
    x, W, h = _graph()
    xv = np.random.default_rng(1).normal(size=(4, 3))
    rep = gc.check_grads(gc.sum(h), [W, x], feeds={"x": xv}, rtol=1e-6)
    assert max(rep.values()) < 1e-6


def test_new_elementwise_ops_in_a_compiled_training_step_match_the_interpreter():
    x, W, h = _graph()
    loss = gc.mean(h)
    xv = np.random.default_rng(2).normal(size=(5, 3))
    results = {}
    for target in ("numpy", "cpu"):
        step = gc.compile(loss, optimizer=gc.optim.Adam(0.1), target=target)
        for _ in range(3):
            step(x=xv)
        results[target] = step.params["W"]
    np.testing.assert_allclose(results["cpu"], results["numpy"], rtol=1e-12)


def test_softsign_matches_keras_formula_and_log1p_is_accurate_near_zero():
    x = gc.input("x", (3,), dtype=F64)
    f = gc.compile([gc.softsign(x), gc.log1p(x)], target="cpu")
    v = np.array([-3.0, 1e-12, 2.0])
    s, l1 = f(x=v)
    np.testing.assert_allclose(s, v / (np.abs(v) + 1), rtol=1e-15)
    assert l1[1] == pytest.approx(1e-12, rel=1e-9)  # log(1 + 1e-12) computed naively loses digits
