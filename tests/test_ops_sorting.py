"""sort, argsort (stable, NaN last: NumPy's) and top_k (jax.lax.top_k's ties and NaN) on the
numpy, cpu and parallel targets, and the gradient through the values."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


def _np_top_k(x, k):
    """jax.lax.top_k: largest first, NaN largest, ties by index."""
    key = np.where(np.isnan(x), -np.inf, -x)
    order = np.argsort(key, axis=-1, kind="stable")
    nan_first = np.argsort(~np.isnan(x), axis=-1, kind="stable")  # NaNs (in index order) first
    n_nan = np.isnan(x).sum(-1, keepdims=True)
    rank = np.arange(x.shape[-1])
    # NaNs first, then the finite order without the NaNs
    non_nan = np.take_along_axis(order, np.argsort(np.isnan(np.take_along_axis(x, order, -1)), -1, kind="stable"), -1)
    idx = np.where(rank < n_nan, nan_first, np.take_along_axis(non_nan, np.maximum(rank - n_nan, 0), -1))
    idx = idx[..., :k]
    return np.take_along_axis(x, idx, -1), idx


def _cases(rng):
    ties = rng.integers(-2, 3, size=(3, 6)).astype("float64")      # many ties
    spec = np.array([[1.0, np.nan, 3.0, 3.0, -np.inf, np.inf, -0.0, 0.0, np.nan, -1.0]])
    return {"t": ties, "s": spec, "r": rng.standard_normal((2, 3, 4)), "i": rng.integers(-3, 3, (4, 5)),
            "b": rng.random((2, 5)) < 0.5, "z": np.zeros((2, 0))}


@pytest.mark.parametrize("target", ["numpy", "cpu", "parallel"])
def test_sort_argsort_top_k_match_numpy_and_jax_semantics(target):
    vals = _cases(np.random.default_rng(0))
    if target == "parallel":  # a subset: each case is a few kernels to compile
        vals = {k: vals[k] for k in ("s", "i", "z")}
    ins = {k: gc.input(f"so_{k}", v.shape, v.dtype) for k, v in vals.items()}
    outs, want = [], []
    for k in [k for k in ("t", "s", "r", "i", "b") if k in vals]:
        for axis in ((-1, 0, None) if k != "r" else (-1, 1, 0, None))[:1 if target == "parallel" else 4]:
            outs += [gc.sort(ins[k], axis), gc.argsort(ins[k], axis)]
            want += [np.sort(vals[k], axis), np.argsort(vals[k], axis, kind="stable")]
    for k, kk in [c for c in (("t", 4), ("s", 10), ("s", 3), ("r", 2), ("i", 5)) if c[0] in vals]:
        v, i = gc.top_k(ins[k], kk)
        outs += [v, i]
        want += list(_np_top_k(vals[k].astype("float64"), kk))
        want[-2] = want[-2].astype(vals[k].dtype)
    outs += [gc.sort(ins["z"]), gc.argsort(ins["z"])]
    want += [np.sort(vals["z"]), np.argsort(vals["z"])]
    got = gc.compile(outs, target=target, check_finite=False)(**{f"so_{k}": v for k, v in vals.items()})
    for j, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, (j, g.shape, w.shape)
        if w.dtype.kind in "iu":
            assert g.dtype.kind in "iu"
        else:
            assert g.dtype == w.dtype, (j, g.dtype, w.dtype)
        np.testing.assert_array_equal(g, w, err_msg=str(j))
        if w.dtype.kind == "f":
            np.testing.assert_array_equal(np.signbit(g), np.signbit(w), err_msg=f"{j}: the sign of zero")


def test_top_k_indices_are_int32_and_over_the_batch_dim():
    x = gc.input("tk_x", (None, 5), "float32")
    v, i = gc.top_k(x, 2)
    assert v.shape == (None, 2) and i.shape == (None, 2) and i.dtype == np.int32
    X = np.array([[0.1, 0.9, 0.5, 0.9, 0.0], [3.0, 2.0, 1.0, 0.0, -1.0]], "float32")
    gv, gi = gc.compile([v, i], target="cpu")(tk_x=X)
    np.testing.assert_array_equal(gi, [[1, 3], [0, 1]])
    np.testing.assert_array_equal(gv, np.array([[0.9, 0.9], [3.0, 2.0]], "float32"))


def test_gradients_flow_through_the_values():
    rng = np.random.default_rng(1)
    x = gc.param("sg_x", (3, 5), init=rng.standard_normal((3, 5)), dtype="float64")
    w = gc.const(rng.standard_normal((3, 5)))
    v, _ = gc.top_k(x, 3)
    loss = gc.sum(gc.sort(x, 0) * w) + gc.sum(gc.sin(v) * w[:, :3]) + gc.sum(gc.sort(x, None)[:4] ** 2)
    rep = gc.check_grads(loss, [x], rtol=1e-6)
    assert max(rep.values()) < 1e-6
    # the cotangent of top_k's values lands on the positions they came from
    g = gc.compile(gc.grad(gc.sum(v * gc.const(np.array([1.0, 10.0, 100.0]))), x), target="numpy")()
    X = np.asarray(gc.compile(x, target="numpy")())
    want = np.zeros_like(X)
    for r in range(3):
        for c, wgt in zip(np.argsort(-X[r], kind="stable")[:3], (1.0, 10.0, 100.0)):
            want[r, c] = wgt
    np.testing.assert_array_equal(g, want)


def test_errors():
    x = gc.input("se_x", (None, 4))
    with pytest.raises(gc.ShapeError, match=r"sort: axis 0 is the batch dimension.*test_ops_sorting"):
        gc.sort(x, 0)
    with pytest.raises(ValueError, match=r"top_k: k must be an int in \[0, 4\].*got 5"):
        gc.top_k(x, 5)
    with pytest.raises(gc.ShapeError, match="argsort"):
        gc.argsort(x, 2)
