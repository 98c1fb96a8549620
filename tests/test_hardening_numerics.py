"""The opt-in numerics guard, compile(..., check_numerics=True) (issue 9, item 10).

Without it a diverging step (SGD with a huge learning rate, Adam with epsilon=0 on a zero
gradient) fills the parameters with NaN silently. With it, the first non-finite loss or
parameter/state update stops the step before anything is written: params, optimizer state
and the step counter are unchanged, and the NumericsError names the value, the kernel that
computed it and the user's line of the op where the first non-finite value appeared.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

HERE = __file__.rsplit("/", 1)[-1]


class RawAdam(gc.optim.Adam):
    """Adam admitting epsilon = 0 (the built-in's domain is (0, inf)): 0 / 0 on a zero
    gradient, the simplest way to a NaN update."""

    domains = {"epsilon": "[0, inf)"}


def _regression(k=3):
    x = gc.input("x", (None, k))
    t = gc.input("t", (None, 1))
    W = gc.param("W", (k, 1), init="glorot_uniform")
    b = gc.param("b", (1,), init="ones")
    return gc.mse(x @ W + b, t)


def _snapshot(step):
    sd = step.state_dict()
    return {**{f"p:{k}": v for k, v in sd["params"].items()}, **{f"s:{k}": v for k, v in sd["state"].items()}}


def _assert_unchanged(step, before):
    after = _snapshot(step)
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=f"{k} changed although the step was refused")


@pytest.mark.parametrize("target", ["numpy", "cpu", "parallel"])
def test_adam_epsilon_zero_on_a_zero_gradient_is_stopped_before_any_write(target):
    loss = _regression()
    step = gc.compile(loss, optimizer=RawAdam(0.1, epsilon=0.0), target=target, check_numerics=True)
    feeds = {"x": np.zeros((4, 3), "float32"), "t": np.full((4, 1), 2.0, "float32")}  # dL/dW = 0, dL/db != 0
    before = _snapshot(step)
    with pytest.raises(gc.NumericsError) as ei:
        step(**feeds)
    assert isinstance(ei.value, FloatingPointError) and isinstance(ei.value, gc.GraphcError)
    msg = str(ei.value)
    assert "'W'" in msg and "update" in msg and "NaN" in msg, msg
    assert f"{HERE}:" in msg, msg  # the user's file:line
    if target != "numpy":
        assert "kernel k" in msg, msg
    _assert_unchanged(step, before)  # b's finite update was not written either
    assert step.iterations == 0
    # the guard does not get in the way once the cause is gone
    step.optimizer.epsilon = 1e-7
    out = step(**feeds)
    assert np.isfinite(out["loss"]) and step.iterations == 1
    assert np.all(np.isfinite(step.params["W"])) and not np.array_equal(step.params["b"], before["p:b"])


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_diverging_sgd_stops_at_the_first_nonfinite_value(target):
    step = gc.compile(_regression(), optimizer=gc.optim.SGD(1e6), target=target, check_numerics=True)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((8, 3)).astype("float32"),
             "t": rng.standard_normal((8, 1)).astype("float32")}
    for i in range(50):
        before, it = _snapshot(step), step.iterations
        try:
            out = step(**feeds)
        except gc.NumericsError as e:
            msg = str(e)
            break
        assert np.isfinite(out["loss"])
    else:
        pytest.fail("SGD with lr=1e6 should diverge within 50 steps")
    assert i >= 1  # some steps ran before it diverged
    assert ("loss" in msg or "update of param" in msg) and f"{HERE}:" in msg, msg
    _assert_unchanged(step, before)
    assert step.iterations == it
    assert all(np.all(np.isfinite(v)) for v in step.params.values())


def test_without_the_guard_divergence_is_silent():
    """The default stays unguarded (and as fast as before): the NaN reaches the params."""
    step = gc.compile(_regression(), optimizer=RawAdam(0.1, epsilon=0.0))
    step(x=np.zeros((4, 3), "float32"), t=np.ones((4, 1), "float32"))
    assert np.isnan(step.params["W"]).all() and step.iterations == 1
    assert "check_numerics" not in step.source()


def test_guarded_steps_train_exactly_like_the_interpreter():
    """With the guard the updates go through scratch and are copied after the checks: the
    results must not change. A two-layer net, Adam, batches of two sizes."""
    def build():
        x = gc.input("x", (None, 5))
        y = gc.input("y", (None,), dtype="int64")
        W1 = gc.param("W1", (5, 8), init="he_normal"); b1 = gc.param("b1", (8,))  # noqa: E702
        W2 = gc.param("W2", (8, 3), init="he_normal"); b2 = gc.param("b2", (3,))  # noqa: E702
        return gc.softmax_cross_entropy(gc.relu(x @ W1 + b1) @ W2 + b2, y)

    ref = gc.compile(build(), optimizer=gc.optim.Adam(0.01), target="numpy", check_numerics=True)
    step = gc.compile(build(), optimizer=gc.optim.Adam(0.01), target="cpu", check_numerics=True)
    rng = np.random.default_rng(1)
    for n in (6, 6, 3):
        feeds = {"x": rng.standard_normal((n, 5)).astype("float32"), "y": rng.integers(0, 3, n)}
        np.testing.assert_allclose(step(**feeds)["loss"], ref(**feeds)["loss"], rtol=1e-5)
    for k, v in ref.params.items():
        np.testing.assert_allclose(step.params[k], v, rtol=1e-4, atol=1e-6, err_msg=k)
    assert step.iterations == ref.iterations == 3
    assert "check_numerics" in step.source(6)


def test_function_outputs_are_checked():
    x = gc.input("x", (None, 2))
    f = gc.compile({"y": gc.log(x)}, check_numerics=True)
    np.testing.assert_allclose(f(x=np.ones((2, 2)).astype("float32"))["y"], 0.0)
    with pytest.raises(gc.NumericsError, match=r"output 'y'.*log"):
        f(x=-np.ones((2, 2)).astype("float32"))


def test_cuda_target_refuses_the_option_clearly():
    with pytest.raises(gc.GraphcError, match="check_numerics"):
        gc.compile(_regression(), optimizer="sgd", target="cuda", check_numerics=True)


def test_parallel_loops_count_nonfinite_values_in_every_chunk():
    """Large update loops run under prange on target="parallel", the count of non-finite
    values is a parallel reduction: a NaN in the last rows only (the last thread's chunk)
    must still stop the step."""
    x = gc.input("x", (None, 512))
    W = gc.param("W", (512, 2048), init="glorot_uniform")  # Adam's update behind its GEMM: ~2 ms, a prange
    loss = gc.mean(gc.square(x @ W))
    step = gc.compile(loss, optimizer=RawAdam(0.1, epsilon=0.0), target="parallel", check_numerics=True)
    assert any(k.parallel for k in step.program_for(2).module.kernels)
    xb = np.random.default_rng(0).standard_normal((2, 512)).astype("float32")
    xb[:, -1] = 0.0  # dL/dW[-1, :] = 0: only W's last row becomes 0/0
    before = step.params["W"]
    with pytest.raises(gc.NumericsError, match=r"update of param 'W' holds 2048 NaN of 1048576 values"):
        step(x=xb)
    np.testing.assert_array_equal(step.params["W"], before)
    xb[:, -1] = 1.0
    step(x=xb)
    assert np.isfinite(step.params["W"]).all() and step.iterations == 1


@pytest.mark.filterwarnings("ignore:overflow encountered")  # the interpreter's NumPy sum
@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_a_reduction_fused_with_a_counted_output_is_checked_too(target):
    """exp(x) is finite, its sum overflows float32: the sum is a reduction in the kernel
    whose elementwise output is counted; it must be checked on its own."""
    x = gc.input("x", (4,))
    e = gc.exp(x)
    f = gc.compile({"e": e, "s": gc.sum(e)}, target=target, check_numerics=True)
    if target == "cpu":
        f(x=np.zeros(4, "float32"))
        assert len(f.program_for(None).module.kernels) == 1  # e and s come from one loop
    with pytest.raises(gc.NumericsError, match=r"output 's' holds infinity"):
        f(x=np.full(4, 88.0, "float32"))
