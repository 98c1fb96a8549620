"""gc.scan compiled as one loop on the cpu target: the body's kernels are emitted once and the
driver runs them in ``for t in range(T)`` (x_t read at offset t of each xs buffer, y_t and the
saved carry written at slot t). Oracles: the numpy target (the interpreter), and the two cpu
compilers (graphc's own and Numba's, GRAPHC_NATIVE_DRIVER/KERNELS=0) bit-identical."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

import numpy as np
import pytest

import graphc as gc

B, F, H = 3, 2, 4
RNG = np.random.default_rng(11)


@contextmanager
def _numba_path():
    old = {k: os.environ.get(k) for k in ("GRAPHC_NATIVE_DRIVER", "GRAPHC_NATIVE_KERNELS")}
    os.environ.update(GRAPHC_NATIVE_DRIVER="0", GRAPHC_NATIVE_KERNELS="0")
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def lstm_graph(T, reverse=False, checkpoint=True):
    """An LSTM-like scan (carry (h, c), captured weights, xs and ys of two leaves) and the
    gradients of a loss through it: (outputs, feeds, params)."""
    x = gc.input("x", (T, B, F))
    m = gc.input("m", (T, B, 1))
    h0 = gc.input("h0", (B, H))
    W = gc.param("W", (F, 4 * H))
    U = gc.param("U", (H, 4 * H))
    b = gc.param("b", (4 * H,))

    def cell(carry, xt):
        h, c = carry
        z = xt["x"] @ W + h @ U + b
        i, f, g, o = gc.sigmoid(z[:, :H]), gc.sigmoid(z[:, H:2 * H]), gc.tanh(z[:, 2 * H:3 * H]), gc.sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * gc.tanh(c) * xt["m"] + h * (1.0 - xt["m"])
        return (h, c), (h, gc.sum(c, axis=1))

    (hT, cT), (ys, cs) = gc.scan(cell, (h0, gc.zeros_like(h0)), {"x": x, "m": m},
                                 reverse=reverse, checkpoint=checkpoint)
    loss = gc.sum(hT * hT) + gc.mean(ys * ys) + gc.sum(cs * gc.sum(cT, axis=1))
    outs = [loss, hT, cT, ys, cs] + gc.grad(loss, [W, U, b, x, h0])
    feeds = {"x": RNG.standard_normal((T, B, F)).astype("float32"),
             "m": (RNG.random((T, B, 1)) > 0.2).astype("float32"),
             "h0": RNG.standard_normal((B, H)).astype("float32")}
    params = {"W": RNG.standard_normal((F, 4 * H)).astype("float32") * 0.5,
              "U": RNG.standard_normal((H, 4 * H)).astype("float32") * 0.5,
              "b": RNG.standard_normal((4 * H,)).astype("float32") * 0.1}
    return outs, feeds, params


@pytest.mark.parametrize("reverse,checkpoint", [(False, True), (True, False), (False, False)])
def test_loop_equals_interpreter_and_numba(reverse, checkpoint):
    outs, feeds, params = lstm_graph(5, reverse, checkpoint)
    want = gc.compile(outs, target="numpy", params=params)(**feeds)
    step = gc.compile(outs, target="cpu", params=params)
    got = step(**feeds)
    assert "loop x5" in step.kernels()  # compiled as one loop over the 5 steps, not unrolled
    for a, w in zip(got, want):
        np.testing.assert_allclose(a, w, rtol=2e-5, atol=1e-6)
    with _numba_path():
        ref = gc.compile(outs, target="cpu", params=params)(**feeds)
    for a, r in zip(got, ref):
        np.testing.assert_array_equal(a, r)  # bit-identical, NaN included


def _n_kernels(listing: str) -> int:
    return int(listing.split(" kernels", 1)[0])


def test_kernel_count_does_not_grow_with_T_and_listing_shows_the_body():
    counts, cold = {}, {}
    for T in (4, 32):
        outs, feeds, params = lstm_graph(T)
        t0 = time.perf_counter()
        step = gc.compile(outs, target="cpu", params=params)
        step(**feeds)
        cold[T] = time.perf_counter() - t0
        listing = step.kernels()
        counts[T] = _n_kernels(listing)
        assert f"loop x{T}" in listing and "tanh" in listing  # the loop and its body's kernels
    # not T copies of the body (unrolled, T=32 gave 719 kernels); the outer graph's fusion may
    # differ by a kernel between the two lengths
    assert abs(counts[32] - counts[4]) <= 3 and counts[32] < 100, counts
    assert cold[32] < 2.0 * cold[4] + 0.5, cold  # compile time no longer grows with T


def test_checkpoint_false_forward_is_one_loop_with_its_residuals():
    """The adjoint's forward scan that also returns the residuals (checkpoint=False) and the
    user's forward scan are one loop (passes/unroll.py merge_scans): two loops in all."""
    outs, feeds, params = lstm_graph(3, checkpoint=False)
    step = gc.compile(outs, target="cpu", params=params)
    want = gc.compile(outs, target="numpy", params=params)(**feeds)
    for a, w in zip(step(**feeds), want):
        np.testing.assert_allclose(a, w, rtol=2e-5, atol=1e-6)
    assert step.kernels().count("loop x3") == 2, step.kernels()
