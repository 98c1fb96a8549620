"""Five steps of every built-in optimizer (and a custom one) compiled for target="cpu"
agree with the interpreter (target="numpy") on a small float32 MLP: params, optimizer
state and losses, to rel 1e-5 (atol scaled by each tensor's magnitude)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import optim

RTOL = 1e-5
BATCH = 16


def mlp():
    x = gc.input("ox", (None, 8))
    y = gc.input("oy", (None,), dtype="int64")
    W1 = gc.param("oW1", (8, 16), init="he_normal")
    b1 = gc.param("ob1", (16,), init="zeros")
    W2 = gc.param("oW2", (16, 4), init="glorot_uniform")
    b2 = gc.param("ob2", (4,), init="zeros")
    logits = gc.relu(x @ W1 + b1) @ W2 + b2
    return gc.softmax_cross_entropy(logits, y)


LOSS = mlp()


def batches(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((BATCH, 8)).astype("f4"), rng.integers(0, 4, BATCH)) for _ in range(n)]


def close(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(float(np.max(np.abs(b))), 1e-3) if b.size else 1.0
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def run_both(make_opt, steps=5, loss=LOSS):
    ref = gc.compile(loss, optimizer=make_opt(), target="numpy")
    nat = gc.compile(loss, optimizer=make_opt(), target="cpu")
    for k, v in ref.params.items():
        np.testing.assert_array_equal(nat.params[k], v)  # same seeded initialization
    for i, (xb, yb) in enumerate(batches(steps)):
        a, b = ref(ox=xb, oy=yb), nat(ox=xb, oy=yb)
        close(b["loss"], a["loss"], f"loss at step {i}")
    sa, sb = ref.state_dict(), nat.state_dict()
    for section in ("params", "state"):
        assert sorted(sa[section]) == sorted(sb[section])
        for k in sa[section]:
            close(sb[section][k], sa[section][k], f"{section} {k!r} after {steps} steps")
    assert int(sb["state"]["step"]) == steps
    return ref, nat


class ScaledSignMomentum(optim.Optimizer):
    """A custom rule: momentum on the gradient, a sign step whose size decays as 1/sqrt(t),
    plus a per-parameter running max of |g| (two state tensors)."""

    def __init__(self, learning_rate=0.01, beta=0.8):
        super().__init__(learning_rate=learning_rate, beta=beta)

    def state_spec(self, param):
        return {"mu": "zeros", "gmax": "zeros"}

    def update(self, param, grad, state, step):
        lr, beta = self.hyper("learning_rate"), self.hyper("beta")
        mu = beta * state["mu"] + (1.0 - beta) * grad
        gmax = gc.maximum(state["gmax"], gc.abs(grad))
        new = param - lr / gc.sqrt(step) * gc.tanh(mu / (gmax + 1e-3))
        return new, {"mu": mu, "gmax": gmax}


OPTIMIZERS = {
    "sgd": lambda: optim.SGD(0.1),
    "sgd_momentum": lambda: optim.SGD(0.1, momentum=0.9),
    "sgd_nesterov_wd": lambda: optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda: optim.Adam(1e-2),
    "adamw": lambda: optim.AdamW(1e-2, weight_decay=0.05),
    "rmsprop": lambda: optim.RMSprop(1e-2),
    "rmsprop_centered_momentum": lambda: optim.RMSprop(1e-2, momentum=0.5, centered=True),
    "adagrad": lambda: optim.Adagrad(0.1),
    "lion": lambda: optim.Lion(1e-3),
    "custom": lambda: ScaledSignMomentum(0.02),
    "adam_clipnorm": lambda: optim.Adam(1e-2, global_clipnorm=0.05),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_five_steps_agree(name):
    run_both(OPTIMIZERS[name])


def test_clipnorm_is_active():
    """The clipped run really clips (else the test above proves nothing about clipping)."""
    g = gc.grad(LOSS, sorted((n for n in gc.Graph([LOSS]).params), key=lambda n: n.name))
    norm = gc.sqrt(sum(gc.sum(gc.square(x)) for x in g))
    f = gc.compile(norm, target="numpy")
    xb, yb = batches(1)[0]
    assert float(f(ox=xb, oy=yb)) > 0.05 * 5


def test_hyperparameter_schedule_does_not_recompile():
    """lr is a fed scalar: changing it between steps reuses the same native program."""
    ref = gc.compile(LOSS, optimizer=optim.Adam(1e-2), target="numpy")
    nat = gc.compile(LOSS, optimizer=optim.Adam(1e-2), target="cpu")
    data = batches(3, seed=1)
    prog = None
    for i, (xb, yb) in enumerate(data):
        for s in (ref, nat):
            s.optimizer.lr = 1e-2 / (i + 1)
        close(nat(ox=xb, oy=yb)["loss"], ref(ox=xb, oy=yb)["loss"], f"step {i}")
        p = nat.program_for(BATCH)
        assert prog is None or p is prog
        prog = p
    assert len(nat._programs) == 1
    for k, v in ref.params.items():
        close(nat.params[k], v, k)


def test_tied_weights_in_place_update_hazards():
    """A param read transposed, reshaped and reduced by several kernels while its update is
    written in place: every reader must see the old value (write-after-read ordering)."""
    x = gc.input("tx", (None, 6))
    W = gc.param("tW", (6, 4))
    b = gc.param("tb", (4,))
    c = gc.param("tc", (6,))
    rec = gc.tanh(x @ W + b) @ W.T + c
    loss = (gc.mean(gc.square(rec - x)) + 0.01 * gc.sum(gc.reshape(W, (4, 6)) * gc.reshape(W.T, (4, 6)))
            + gc.mean(c * gc.max(W, axis=1)))
    ref = gc.compile(loss, optimizer=optim.Adam(1e-2), target="numpy")
    nat = gc.compile(loss, optimizer=optim.Adam(1e-2), target="cpu")
    xb = np.random.default_rng(5).standard_normal((BATCH, 6)).astype("f4")
    for i in range(4):
        close(nat(tx=xb)["loss"], ref(tx=xb)["loss"], f"step {i}")
    for k, v in ref.params.items():
        close(nat.params[k], v, k)
