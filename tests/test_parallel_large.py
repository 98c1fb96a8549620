"""target="parallel" on kernels large enough for prange (>= PRANGE_MIN elements), against the
interpreter: the softmax-CE kernel's row loop (its running max once broke Numba's parfor
lowering: "unexpected cycle in lookup()"), and the new structured kernels."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.backends.cpu.emitter import PRANGE_MIN


def test_softmax_ce_and_window_kernels_in_parallel_match_the_interpreter():
    rows = PRANGE_MIN // 16 + 7
    z = gc.input("pz", (None, 16), "float32")
    y = gc.input("py", (None,), "int64")
    w = gc.param("pw", (16,), init="ones")
    x = gc.input("px", (40, 12, 12, 8), "float32")  # a fixed batch of its own
    k = gc.param("pk", (3, 3, 8, 8), init="glorot_uniform")
    img = gc.max_pool2d(gc.relu(gc.conv2d(x, k, padding="same")), 2)
    loss = gc.softmax_cross_entropy(z * w, y) + gc.mean(gc.square(img))
    rng = np.random.default_rng(0)
    feeds = dict(pz=rng.standard_normal((rows, 16)).astype("float32"), py=rng.integers(0, 16, rows),
                 px=rng.standard_normal((40, 12, 12, 8)).astype("float32"))
    par = gc.compile(loss, optimizer=gc.optim.SGD(0.1), target="parallel", seed=1)
    ref = gc.compile(loss, optimizer=gc.optim.SGD(0.1), target="numpy", seed=1)
    for _ in range(2):
        np.testing.assert_allclose(par(**feeds)["loss"], ref(**feeds)["loss"], rtol=1e-5)
    for name, v in ref.params.items():
        np.testing.assert_allclose(par.params[name], v, rtol=1e-4, atol=1e-6)
    assert "prange" in par.source()
