"""Optimizers that compute their own gradients (examples/custom_optimizer.py: SAM, the
Hutchinson-diagonal AdaHessian-style rule, gradient-centralized Adam) on cuda: 5 steps of a
2-layer MLP in float64 match target="numpy" (which tests/test_custom_gradients.py holds to
independent NumPy references)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import graphc as gc

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("custom_optimizer_example_cuda", ROOT / "examples" / "custom_optimizer.py")
ex = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ex)


def _mlp():
    x = gc.input("cg_x", (None, 5), "float64")
    y = gc.input("cg_y", (None, 2), "float64")
    W1 = gc.param("cg_W1", (5, 6), init="glorot_uniform", dtype="float64")
    b1 = gc.param("cg_b1", (6,), init="uniform", dtype="float64")
    W2 = gc.param("cg_W2", (6, 2), init="glorot_uniform", dtype="float64")
    return gc.mse(gc.tanh(x @ W1 + b1) @ W2, y), [W1, b1, W2]


@pytest.mark.parametrize("make", [lambda: ex.SAM(gc.optim.SGD(0.1, momentum=0.9), rho=0.05),
                                  lambda: ex.CentralizedAdam(0.01, global_clipnorm=0.5),
                                  lambda: ex.AdaHessian(0.05)], ids=["sam", "centralized_adam", "adahessian"])
def test_matches_the_numpy_target(make):
    loss, params = _mlp()
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((8, 5)), rng.standard_normal((8, 2))
    steps = {t: gc.compile(loss, optimizer=make(), target=t, seed=2) for t in ("numpy", "cuda")}
    for i in range(5):
        probes = {f"probe:{p.name}": np.random.default_rng(10 + i).choice([-1.0, 1.0], p.shape) for p in params}
        needed = {k: v for k, v in probes.items() if any(n.op == "input" and n.name == k for n in steps["numpy"].graph.nodes)}
        got = {t: float(s(cg_x=X, cg_y=Y, **needed)["loss"]) for t, s in steps.items()}
        np.testing.assert_allclose(got["cuda"], got["numpy"], rtol=1e-9)
    for k, v in steps["numpy"].params.items():
        np.testing.assert_allclose(steps["cuda"].params[k], v, rtol=1e-9, atol=1e-12, err_msg=k)
