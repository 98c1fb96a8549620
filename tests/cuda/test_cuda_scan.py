"""gc.scan on cuda against the interpreter: the loop is unrolled before specialization, so the
body's kernels run once per step; forward, gradients through the reverse scan, and a short
training run of a scan-based RNN with Adam."""
from __future__ import annotations

import numpy as np

import graphc as gc
from helpers import check_cuda

T, F, H = 3, 2, 3


def test_scan_forward_and_gradients():
    x = gc.input("cs_x", (T, 4, F))
    h0 = gc.input("cs_h0", (4, H))
    W = gc.input("cs_W", (F, H))
    U = gc.input("cs_U", (H, H))

    def step(h, xt):
        h = gc.tanh(xt @ W + h @ U)
        return h, h * 2.0

    hT, ys = gc.scan(step, h0, x, reverse=True)
    f = check_cuda([hT, ys], wrt=[x, h0, W, U])
    assert "scan @ test_cuda_scan.py:" in f.source()


def test_scan_rnn_trains_as_on_numpy():
    x = gc.input("cr_x", (T, None, F))
    lab = gc.input("cr_lab", (None,), "int32")
    r = np.random.default_rng(0)
    W = gc.param("cr_W", (F, H), init=r.standard_normal((F, H)).astype("float32"))
    U = gc.param("cr_U", (H, H), init=r.standard_normal((H, H)).astype("float32") * 0.5)
    V = gc.param("cr_V", (H, 2), init=r.standard_normal((H, 2)).astype("float32"))
    hT, _ = gc.scan(lambda h, xt: (gc.tanh(xt @ W + h @ U), None), gc.zeros_like(x[0] @ W), x)
    loss = gc.softmax_cross_entropy(hT @ V, lab)
    xb = r.standard_normal((T, 5, F)).astype("float32")
    yb = r.integers(0, 2, 5).astype("int32")
    got = {}
    for target in ("numpy", "cuda"):
        step = gc.compile(loss, optimizer=gc.optim.Adam(0.05), target=target, seed=0)
        got[target] = [float(step(cr_x=xb, cr_lab=yb)["loss"]) for _ in range(3)]
    assert got["numpy"][-1] < got["numpy"][0]
    np.testing.assert_allclose(got["cuda"], got["numpy"], rtol=1e-5)
