"""A whole 2-layer MLP training step (fwd + bwd + Adam) on cuda against the numpy target, and
the store's host/device coherence: params, state_dict round trips, set_params, a cpu function
sharing the weights, hyper-parameter changes, a second batch size."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.errors import FeedError

FEAT, HID, CLS, BATCH = 6, 5, 3, 4


def mlp(tag):
    x = gc.input("x", (None, FEAT))
    y = gc.input("y", (None,), dtype="int64")
    W1 = gc.param("W1", (FEAT, HID), init="he_normal"); b1 = gc.param("b1", (HID,))
    W2 = gc.param("W2", (HID, CLS), init="he_normal"); b2 = gc.param("b2", (CLS,))
    logits = gc.relu(x @ W1 + b1) @ W2 + b2
    return logits, gc.softmax_cross_entropy(logits, y)


def batch(seed, n=BATCH):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, FEAT)).astype("float32"), rng.integers(0, CLS, n)


def _close(a, b, rtol=2e-5):
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=rtol, err_msg=k)


def test_mlp_adam_step_matches_numpy_and_coheres():
    logits, loss = mlp("a")
    ref = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="numpy")
    step = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cuda")
    for i in range(3):
        xb, yb = batch(i)
        a, b = step(x=xb, y=yb)["loss"], ref(x=xb, y=yb)["loss"]
        assert a.dtype == b.dtype and a.shape == ()
        np.testing.assert_allclose(a, b, rtol=2e-5)
    _close(step.params, ref.params)
    sd, rd = step.state_dict(), ref.state_dict()
    _close(sd["state"], rd["state"])

    prog = step.program_for(BATCH)
    counts = prog.launches_per_step()
    assert counts["h2d"] == 2 and counts["d2h"] == 1  # only the batch in, only the loss out
    listing = step.kernels()
    assert "launches per step: 6" in listing, listing  # fallback GEMM path (tests/cuda/test_cuda_launches.py)

    # a cpu function sharing the store sees the device's latest weights
    predict = gc.compile(logits, params=step, target="cpu")
    xb, _ = batch(9)
    np.testing.assert_allclose(predict(x=xb), gc.compile(logits, params=ref, target="numpy")(x=xb),
                               rtol=1e-5, atol=1e-6)

    # set_params pushes to the device before the next step
    new = {k: np.full_like(v, 0.01) for k, v in step.params.items()}
    step.set_params(new); ref.set_params(new)
    xb, yb = batch(5)
    np.testing.assert_allclose(step(x=xb, y=yb)["loss"], ref(x=xb, y=yb)["loss"], rtol=2e-5)
    _close(step.params, ref.params)

    # a hyper-parameter change reaches the kernels (scalar arguments re-bound)
    step.optimizer.lr = 0.1; ref.optimizer.lr = 0.1
    xb, yb = batch(6)
    np.testing.assert_allclose(step(x=xb, y=yb)["loss"], ref(x=xb, y=yb)["loss"], rtol=2e-5)
    _close(step.params, ref.params, rtol=5e-5)

    # a second batch size: another program on the same device store
    xb, yb = batch(7, n=3)
    np.testing.assert_allclose(step(x=xb, y=yb)["loss"], ref(x=xb, y=yb)["loss"], rtol=5e-5)
    _close(step.params, ref.params, rtol=1e-4)


def test_state_dict_round_trips_between_cpu_and_cuda():
    _, loss = mlp("b")
    cpu = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cpu", seed=3)
    for i in range(2):
        cpu(x=batch(i)[0], y=batch(i)[1])
    dev = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cuda", seed=4)
    dev.load_state_dict(cpu.state_dict())
    xb, yb = batch(2)
    np.testing.assert_allclose(dev(x=xb, y=yb)["loss"], cpu(x=xb, y=yb)["loss"], rtol=2e-5)
    back = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cpu", seed=5)
    back.load_state_dict(dev.state_dict())
    _close(back.params, cpu.params)
    _close(back.state_dict()["state"], cpu.state_dict()["state"])


def test_bad_labels_are_rejected_before_any_kernel():
    _, loss = mlp("c")
    step = gc.compile(loss, optimizer="sgd", target="cuda")
    xb, yb = batch(0)
    step(x=xb, y=yb)
    before = step.params
    with pytest.raises(FeedError):
        step(x=xb, y=np.array([0, 1, CLS, 0]))
    _close(step.params, before, rtol=0)
