"""Size-1 dimensions on target="cuda" (issue 9, item 3): a one-element constant that is a GEMM
operand (it appears in gradients of 1x1 matmuls) must live in device memory, not be inlined
as a literal; 1x1 weights and batch size 1 train like on the numpy target."""
from __future__ import annotations

import numpy as np

import graphc as gc
from helpers import assert_close, check_cuda


def test_size1_gemm_operands_reductions_and_broadcasts():
    x1 = gc.input("c1_x1", (1, 1), dtype="float64")
    col = gc.input("c1_col", (3, 1), dtype="float64")
    row = gc.input("c1_row", (1, 3), dtype="float64")
    v1 = gc.input("c1_v1", (1,), dtype="float64")
    outs = [x1 @ x1, row @ col, col @ row, col @ x1, x1 @ row, row.T @ x1, gc.tanh(col @ x1 + v1),
            gc.sum(col, axis=1), gc.mean(row, axis=0, keepdims=True), gc.max(x1, axis=0),
            gc.reshape(row, (3, 1)) * col]
    check_cuda(outs, [x1, col, row, v1])


def test_one_feature_regression_at_batch_size_1():
    def build():
        x = gc.input("x", (None, 1))
        t = gc.input("t", (None, 1))
        W = gc.param("W", (1, 1), init="glorot_uniform")
        b = gc.param("b", (1,), init="ones")
        return gc.mse(x @ W + b, t)

    ref = gc.compile(build(), optimizer=gc.optim.Adam(0.05), target="numpy")
    step = gc.compile(build(), optimizer=gc.optim.Adam(0.05), target="cuda")
    rng = np.random.default_rng(0)
    for n in (1, 4, 1):
        feeds = {"x": rng.standard_normal((n, 1)).astype("float32"),
                 "t": rng.standard_normal((n, 1)).astype("float32")}
        assert_close(step(**feeds)["loss"], ref(**feeds)["loss"], 1e-5, f"loss at batch {n}")
    for k, v in ref.params.items():
        assert_close(step.params[k], v, 1e-5, k)
