"""Stacked matmul (rank >= 3, broadcast leading dims) with NumPy's semantics on every CPU
target, with finite-difference gradients."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

CASES = [((2, 3, 4), (2, 4, 5)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((1, 3, 4), (2, 4, 2)),
         ((2, 1, 3, 4), (3, 4, 2))]


@pytest.mark.parametrize("target", ["numpy", "cpu", "parallel"])
def test_batched_matmul_matches_np_matmul(target):
    rng = np.random.default_rng(0)
    outs, feeds, want = [], {}, []
    for i, (sa, sb) in enumerate(CASES):
        a, b = gc.input(f"a{i}", sa, dtype="float64"), gc.input(f"b{i}", sb, dtype="float64")
        outs.append(a @ b)
        feeds[a.name], feeds[b.name] = rng.normal(size=sa), rng.normal(size=sb)
        want.append(np.matmul(feeds[a.name], feeds[b.name]))
    got = gc.compile(outs, target=target)(**feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_batched_matmul_with_a_batch_dim_and_gradients():
    x = gc.input("x", (None, 3, 4), dtype="float64")
    W = gc.param("W", (4, 2), dtype="float64")
    q = x @ W                                   # (B, 3, 2)
    att = q @ gc.transpose(q, (0, 2, 1))        # (B, 3, 3): the attention-score pattern
    v = np.random.default_rng(1).normal(size=(2, 3, 4))
    f = gc.compile(att, target="cpu")
    qv = v @ f.params["W"]
    np.testing.assert_allclose(f(x=v), qv @ np.swapaxes(qv, 1, 2), rtol=1e-12)
    rep = gc.check_grads(gc.sum(gc.tanh(att)), [W, x], feeds={"x": v}, rtol=1e-6)
    assert max(rep.values()) < 1e-6


def test_batched_matmul_shape_errors_name_the_op_and_line():
    with pytest.raises(gc.ShapeError, match=r"matmul: inner dims differ.*test_batched_matmul"):
        gc.input("p", (2, 3, 4)) @ gc.input("q", (2, 5, 4))
    with pytest.raises(gc.ShapeError, match="leading"):
        gc.input("p2", (2, 3, 4)) @ gc.input("q2", (3, 4, 4))
