"""compile(..., updates={state: new value}): model state (batch normalization's moving
statistics) updated inside the same compiled call, checked before anything runs."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import GraphcError, ShapeError

rng = np.random.default_rng(0)


def bn_model(prefix: str, momentum: float = 0.99, eps: float = 1e-3):
    x = gc.input(f"{prefix}x", (None, 4, 4, 3), "float64")
    y = gc.input(f"{prefix}y", (None,), "int64")
    gamma = gc.param(f"{prefix}gamma", (3,), init="ones", dtype="float64")
    beta = gc.param(f"{prefix}beta", (3,), dtype="float64")
    W = gc.param(f"{prefix}W", (3, 2), init="glorot_uniform", dtype="float64")
    mm = gc.state(f"{prefix}moving_mean", (3,), init="zeros", dtype="float64")
    mv = gc.state(f"{prefix}moving_var", (3,), init="ones", dtype="float64")
    mu, var = gc.moments(x, (0, 1, 2))
    h = gc.batch_normalization(x, mu, var, offset=beta, scale=gamma, epsilon=eps)
    loss = gc.softmax_cross_entropy(gc.global_average_pool2d(gc.relu(h)) @ W, y)
    ups = {mm: momentum * mm + (1 - momentum) * mu, mv: momentum * mv + (1 - momentum) * var}
    infer = gc.global_average_pool2d(gc.relu(gc.batch_normalization(x, mm, mv, offset=beta, scale=gamma,
                                                                    epsilon=eps))) @ W
    return loss, ups, infer


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_moving_statistics_follow_the_keras_formula(target):
    """Keras BatchNormalization: moving = moving * momentum + batch_stat * (1 - momentum), with
    the batch's mean and population variance over every axis but the channels."""
    loss, ups, infer = bn_model(f"u{target}_")
    step = gc.compile(loss, optimizer=gc.optim.SGD(0.05), updates=ups, target=target)
    pre = f"u{target}_"
    mm, mv = np.zeros(3), np.ones(3)
    for _ in range(3):
        X = rng.standard_normal((6, 4, 4, 3)) * 2 + 1
        step(**{pre + "x": X, pre + "y": rng.integers(0, 2, 6)})
        mm = mm * 0.99 + X.mean((0, 1, 2)) * 0.01
        mv = mv * 0.99 + X.var((0, 1, 2)) * 0.01
    st = step.state_dict()["state"]
    np.testing.assert_allclose(st[pre + "moving_mean"], mm, rtol=1e-12)
    np.testing.assert_allclose(st[pre + "moving_var"], mv, rtol=1e-12)
    # inference reads the moving statistics, and a function without updates leaves them alone
    f = gc.compile(infer, params=step, target=target)
    X = rng.standard_normal((2, 4, 4, 3))
    p = step.params
    want = (np.maximum((X - mm) / np.sqrt(mv + 1e-3) * p[pre + "gamma"] + p[pre + "beta"], 0)
            .mean((1, 2)) @ p[pre + "W"])
    np.testing.assert_allclose(f(**{pre + "x": X}), want, rtol=1e-10)
    np.testing.assert_allclose(step.state_dict()["state"][pre + "moving_mean"], mm, rtol=1e-12)


def test_a_function_may_update_state_too():
    x = gc.input("cx", (None,), "float64")
    total = gc.state("c_total", (), dtype="float64")
    count = gc.state("c_count", (), dtype="int64")
    for target in ("numpy", "cpu"):
        f = gc.compile(gc.mean(x), updates={total: total + gc.sum(x), count: count + 1}, target=target)
        f(cx=np.arange(4.0))
        f(cx=np.ones(3))
        st = f.state_dict()["state"]
        assert st["c_total"] == 9.0 and st["c_count"] == 2


def test_bad_updates_are_refused_before_anything_runs():
    loss, ups, _ = bn_model("bad_")
    W = next(n for n in gc.Graph([loss]).nodes if n.op == "param" and n.name == "bad_W")
    with pytest.raises(GraphcError, match="gc.state tensors.*param 'bad_W'.*optimizer"):
        gc.compile(loss, optimizer="sgd", updates={W: W * 2})
    mm = next(iter(ups))
    with pytest.raises(ShapeError, match="'bad_moving_mean' has shape \\(2,\\), expected \\(3,\\)"):
        gc.compile(loss, optimizer="sgd", updates={mm: gc.const(np.zeros(2))})
    with pytest.raises(GraphcError, match="belongs to the optimizer"):
        gc.compile(loss, optimizer="sgd", updates={gc.state("step", (), dtype="int64"): 0})
    with pytest.raises(TypeError, match="must be a dict"):
        gc.compile(loss, optimizer="sgd", updates=[(mm, mm)])


def test_load_state_dict_partial_writes_only_what_it_is_given_all_or_nothing():
    loss, ups, _ = bn_model("part_")
    step = gc.compile(loss, optimizer=gc.optim.SGD(0.1), updates=ups, target="numpy")
    before = step.state_dict()
    step.load_state_dict({"params": {"part_beta": np.full(3, 2.0)}, "state": {"part_moving_mean": np.ones(3)}},
                         partial=True)
    after = step.state_dict()
    np.testing.assert_array_equal(after["params"]["part_beta"], 2.0)
    np.testing.assert_array_equal(after["state"]["part_moving_mean"], 1.0)
    np.testing.assert_array_equal(after["params"]["part_W"], before["params"]["part_W"])
    with pytest.raises(gc.StateError):  # one bad entry: nothing written
        step.load_state_dict({"params": {"part_beta": np.zeros(3)}, "state": {"part_moving_var": np.zeros(4)}},
                             partial=True)
    np.testing.assert_array_equal(step.state_dict()["params"]["part_beta"], 2.0)
    with pytest.raises(gc.StateError):  # without partial, a missing entry is an error
        step.load_state_dict({"params": {"part_beta": np.zeros(3)}})
