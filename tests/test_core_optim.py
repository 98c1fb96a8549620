"""Built-in optimizers on target="numpy" against hand-written NumPy versions of Keras 3's
update rules (keras/src/optimizers/*.py), plus hyper-parameter changes without recompiling
and state_dict round trips."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import graphc as gc
from graphc.errors import GraphcError

_count = itertools.count()
A = np.array([0.5, 1.0, 2.0])
M0 = np.array([[0.3, -0.2, 0.1], [-1.0, 0.7, 0.05]])
W0 = np.array([1.0, -2.0, 0.5])
C = np.array([[1.0, 2.0, 0.5], [0.25, 1.5, 3.0]])


def problem(dtype="float64"):
    """loss = sum(A * (w - x)^2) + 0.5 * sum(C * M^2), x fed; grads 2A(w-x) and C*M."""
    k = next(_count)
    x = gc.input(f"opt_x{k}", (3,), dtype=dtype)
    w = gc.param(f"a_w{k}", (3,), init=W0, dtype=dtype)
    m = gc.param(f"b_M{k}", (2, 3), init=M0, dtype=dtype)
    loss = gc.sum(gc.const(A, dtype=dtype) * gc.square(w - x)) + 0.5 * gc.sum(gc.const(C, dtype=dtype) * m * m)
    return x, w, m, loss


def grads(p, x):
    w, m = p
    return [2 * A * (w - x), C * m]


XS = [np.array([0.1, 0.2, -0.3]), np.array([1.0, 0.0, 2.0]), np.array([-0.5, 0.5, 0.0])]


# ---- NumPy references (Keras 3 formulas) --------------------------------------------------------------

def ref_sgd(lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
    def step(p, g, s, t):
        if weight_decay:
            p = p - p * weight_decay * lr
        if momentum:
            v = s.get("v", np.zeros_like(p))
            v = v * momentum - g * lr
            s["v"] = v
            return p + (v * momentum - g * lr if nesterov else v)
        return p - g * lr
    return step


def ref_adam(lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0):
    def step(p, g, s, t):
        if weight_decay:
            p = p - p * weight_decay * lr
        m, v = s.get("m", np.zeros_like(p)), s.get("v", np.zeros_like(p))
        alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        s["m"], s["v"] = m, v
        return p - (m * alpha) / (np.sqrt(v) + epsilon)
    return step


def ref_rmsprop(lr=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
    def step(p, g, s, t):
        vel = rho * s.get("vel", np.zeros_like(p)) + (1 - rho) * g * g
        s["vel"] = vel
        if centered:
            ag = rho * s.get("ag", np.zeros_like(p)) + (1 - rho) * g
            s["ag"] = ag
            denom = vel - ag * ag + epsilon
        else:
            denom = vel + epsilon
        inc = lr * g / np.sqrt(denom)
        if momentum > 0:
            mom = s.get("mom", np.zeros_like(p)) * momentum + inc
            s["mom"] = mom
            return p - mom
        return p - inc
    return step


def ref_adagrad(lr=0.001, initial_accumulator_value=0.1, epsilon=1e-7):
    def step(p, g, s, t):
        acc = s.get("acc", np.full_like(p, initial_accumulator_value)) + g * g
        s["acc"] = acc
        return p - lr * g / np.sqrt(acc + epsilon)
    return step


def ref_lion(lr=0.001, beta_1=0.9, beta_2=0.99, weight_decay=0.0):
    def step(p, g, s, t):
        if weight_decay:
            p = p - p * weight_decay * lr
        m = s.get("m", np.zeros_like(p))
        p = p - lr * np.sign(m * beta_1 + g * (1 - beta_1))
        s["m"] = m * beta_2 + g * (1 - beta_2)
        return p
    return step


CASES = {
    "sgd": (lambda: gc.optim.SGD(0.1), ref_sgd(0.1)),
    "sgd_default": (lambda: gc.optim.SGD(), ref_sgd()),
    "sgd_momentum": (lambda: gc.optim.SGD(0.1, momentum=0.9), ref_sgd(0.1, 0.9)),
    "sgd_nesterov": (lambda: gc.optim.SGD(0.1, momentum=0.8, nesterov=True), ref_sgd(0.1, 0.8, True)),
    "sgd_weight_decay": (lambda: gc.optim.SGD(0.1, momentum=0.5, weight_decay=0.1), ref_sgd(0.1, 0.5, False, 0.1)),
    "adam": (lambda: gc.optim.Adam(0.05), ref_adam(0.05)),
    "adam_default": (lambda: gc.optim.Adam(), ref_adam()),
    "adam_betas": (lambda: gc.optim.Adam(0.02, beta_1=0.8, beta_2=0.9, epsilon=1e-3), ref_adam(0.02, 0.8, 0.9, 1e-3)),
    "adamw": (lambda: gc.optim.AdamW(0.05, weight_decay=0.1), ref_adam(0.05, weight_decay=0.1)),
    "adamw_default": (lambda: gc.optim.AdamW(), ref_adam(weight_decay=0.004)),
    "rmsprop": (lambda: gc.optim.RMSprop(0.01), ref_rmsprop(0.01)),
    "rmsprop_centered": (lambda: gc.optim.RMSprop(0.01, centered=True), ref_rmsprop(0.01, centered=True)),
    "rmsprop_momentum": (lambda: gc.optim.RMSprop(0.01, momentum=0.9), ref_rmsprop(0.01, momentum=0.9)),
    "rmsprop_centered_momentum": (lambda: gc.optim.RMSprop(0.01, rho=0.8, momentum=0.5, centered=True),
                                  ref_rmsprop(0.01, rho=0.8, momentum=0.5, centered=True)),
    "adagrad": (lambda: gc.optim.Adagrad(0.1), ref_adagrad(0.1)),
    "adagrad_init": (lambda: gc.optim.Adagrad(0.1, initial_accumulator_value=1.0), ref_adagrad(0.1, 1.0)),
    "lion": (lambda: gc.optim.Lion(0.01), ref_lion(0.01)),
    "lion_weight_decay": (lambda: gc.optim.Lion(0.01, beta_1=0.5, weight_decay=0.2), ref_lion(0.01, 0.5, 0.99, 0.2)),
}


def run_reference(ref, steps=3, lr_schedule=None):
    ps, states = [W0.copy(), M0.copy()], [{}, {}]
    losses = []
    for t in range(1, steps + 1):
        x = XS[(t - 1) % len(XS)]
        w, m = ps
        losses.append(np.sum(A * (w - x) ** 2) + 0.5 * np.sum(C * m * m))
        gs = grads(ps, x)
        ps = [ref(p, g, s, t) for p, g, s in zip(ps, gs, states)]
    return ps, losses


@pytest.mark.parametrize("name", sorted(CASES))
def test_optimizer_matches_keras_formulas(name):
    make_opt, ref = CASES[name]
    x, w, m, loss = problem()
    step = gc.compile(loss, optimizer=make_opt(), target="numpy")
    losses = []
    for t in range(3):
        losses.append(float(step(**{x.name: XS[t]})["loss"]))
    (rw, rm), rlosses = run_reference(ref)
    np.testing.assert_allclose(losses, rlosses, rtol=1e-12)
    np.testing.assert_allclose(step.params[w.name], rw, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(step.params[m.name], rm, rtol=1e-10, atol=1e-14)
    assert int(step.state_dict()["state"]["step"]) == 3
    assert not np.allclose(rw, W0)  # the update did something


@pytest.mark.parametrize("name", ["adam", "rmsprop_centered_momentum", "sgd_nesterov"])
def test_optimizer_float32(name):
    make_opt, ref = CASES[name]
    x, w, m, loss = problem("float32")
    step = gc.compile(loss, optimizer=make_opt(), target="numpy")
    for t in range(3):
        step(**{x.name: XS[t].astype(np.float32)})
    (rw, rm), _ = run_reference(ref)
    assert step.params[w.name].dtype == np.float32
    np.testing.assert_allclose(step.params[w.name], rw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(step.params[m.name], rm, rtol=1e-5, atol=1e-6)


def test_optimizer_by_name_has_keras_defaults():
    assert gc.optim.get("adam").hyperparameters == {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999,
                                                     "epsilon": 1e-7, "weight_decay": 0.0}
    assert gc.optim.get("sgd").learning_rate == 0.01
    assert gc.optim.get("rmsprop").rho == 0.9
    assert gc.optim.get("lion").beta_2 == 0.99
    assert gc.optim.get("adamw").weight_decay == 0.004
    with pytest.raises(ValueError):
        gc.optim.get("nope")


def test_global_clipnorm():
    x, w, m, loss = problem()
    step = gc.compile(loss, optimizer=gc.optim.SGD(0.1, global_clipnorm=0.5), target="numpy")
    step(**{x.name: XS[0]})
    gs = grads([W0, M0], XS[0])
    norm = np.sqrt(sum(np.sum(g * g) for g in gs))
    scale = 0.5 / max(norm, 0.5)
    np.testing.assert_allclose(step.params[w.name], W0 - 0.1 * gs[0] * scale, rtol=1e-12)
    np.testing.assert_allclose(step.params[m.name], M0 - 0.1 * gs[1] * scale, rtol=1e-12)


def test_learning_rate_change_takes_effect_without_recompiling():
    x, w, m, loss = problem()
    opt = gc.optim.SGD(0.1, momentum=0.5)
    step = gc.compile(loss, optimizer=opt, target="numpy")
    step(**{x.name: XS[0]})
    prog = step.program_for(None)
    step.optimizer.learning_rate = 0.02
    step(**{x.name: XS[1]})
    opt.lr = 0.3  # the alias
    assert opt.learning_rate == 0.3
    step(**{x.name: XS[2]})
    assert step.program_for(None) is prog and len(step._programs) == 1

    ps, states = [W0.copy(), M0.copy()], [{}, {}]
    for t, lr in zip(range(1, 4), (0.1, 0.02, 0.3)):
        ps = [ref_sgd(lr, 0.5)(p, g, s, t) for p, g, s in zip(ps, grads(ps, XS[t - 1]), states)]
    np.testing.assert_allclose(step.params[w.name], ps[0], rtol=1e-12)
    np.testing.assert_allclose(step.params[m.name], ps[1], rtol=1e-12)


def test_state_dict_round_trip():
    x, w, m, loss = problem()
    opt = gc.optim.Adam(0.05)
    step = gc.compile(loss, optimizer=opt, target="numpy")
    for t in range(2):
        step(**{x.name: XS[t]})
    sd = step.state_dict()
    assert set(sd) == {"params", "state", "hyper"}
    assert set(sd["params"]) == {w.name, m.name}
    assert {f"{w.name}/m", f"{w.name}/v", f"{m.name}/m", f"{m.name}/v", "step"} <= set(sd["state"])
    # state_dict holds copies
    sd["params"][w.name][0] = 123.0
    assert step.params[w.name][0] != 123.0
    sd = step.state_dict()

    def two_more(s):
        return [float(s(**{x.name: XS[t]})["loss"]) for t in (2, 0)]

    la = two_more(step)
    after = step.state_dict()
    opt.learning_rate = 0.5  # restored from the dict's hyper section below
    step.load_state_dict(sd)
    assert opt.learning_rate == 0.05
    for k, v in sd["params"].items():
        np.testing.assert_array_equal(step.params[k], v)
    lb = two_more(step)
    assert la == lb
    for sec in ("params", "state"):
        for k in after[sec]:
            np.testing.assert_array_equal(step.state_dict()[sec][k], after[sec][k])

    # into a fresh step compiled from the same graph
    step2 = gc.compile(loss, optimizer=gc.optim.Adam(0.05), target="numpy")
    step2.load_state_dict(sd)
    assert two_more(step2) == la


def test_load_state_dict_wrong_shape_raises_and_changes_nothing():
    x, w, m, loss = problem()
    step = gc.compile(loss, optimizer=gc.optim.RMSprop(0.01, momentum=0.9), target="numpy")
    step(**{x.name: XS[0]})
    before = step.state_dict()
    bad = step.state_dict()
    bad["params"][w.name] = bad["params"][w.name] + 1.0  # valid, but must not be written
    bad["params"][m.name] = np.zeros((3, 2))  # wrong shape
    with pytest.raises(GraphcError, match=m.name):
        step.load_state_dict(bad)
    bad2 = step.state_dict()
    bad2["params"][w.name] = bad2["params"][w.name] + 1.0
    bad2["state"][f"{m.name}/velocity"] = np.zeros((6,))
    with pytest.raises(GraphcError, match="velocity"):
        step.load_state_dict(bad2)
    after = step.state_dict()
    for sec in ("params", "state"):
        for k in before[sec]:
            np.testing.assert_array_equal(after[sec][k], before[sec][k])
    with pytest.raises(GraphcError, match="unknown"):
        step.load_state_dict({"params": {**before["params"], "nope": np.zeros(3)}})
