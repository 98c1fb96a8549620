"""einsum, tensordot, outer, diagonal and trace against NumPy on the numpy and cpu targets;
GEMM-shaped subscripts run as GEMMs; gradients against finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

# (subscripts, operand shapes): explicit and implicit outputs, transposes, traces and
# diagonals, batched and plain GEMMs, outer products, '...' broadcasting, size-1 and
# zero-size dims
CASES = [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("ij,jk", [(2, 3), (3, 4)]),
    ("ik,jk->ij", [(2, 3), (4, 3)]),
    ("ji,jk->ik", [(3, 2), (3, 4)]),
    ("ij,kj->ki", [(2, 3), (4, 3)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 4)]),
    ("bij,bkj->bik", [(2, 2, 3), (2, 4, 3)]),
    ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("bqd,dk->bqk", [(2, 3, 4), (4, 5)]),
    ("i,i->", [(5,), (5,)]),
    ("i,i", [(5,), (5,)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij,ij->ij", [(2, 3), (2, 3)]),
    ("ij,ij->", [(2, 3), (2, 3)]),
    ("ij,j->i", [(2, 3), (3,)]),
    ("i,ij->j", [(2,), (2, 3)]),
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),
    ("ii->", [(4, 4)]),
    ("iij->ij", [(3, 3, 2)]),
    ("ij->ji", [(2, 3)]),
    ("ij->", [(2, 3)]),
    ("ij->j", [(2, 3)]),
    ("ijk->kji", [(2, 3, 4)]),
    ("ba", [(2, 3)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 5)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (3, 4, 2)]),
    ("...i,...i->...", [(2, 3, 4), (3, 4)]),
    ("i...->...", [(3, 2, 2)]),
    ("...ii->...i", [(2, 3, 3)]),
    ("ij...,jk...->ik...", [(2, 3, 2), (3, 4, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("ijk,jl,kl->il", [(2, 3, 4), (3, 5), (4, 5)]),
    ("ij,ij,ij->i", [(2, 3), (2, 3), (2, 3)]),
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 3), (2, 3)]),
    ("ij,jk->ik", [(2, 1), (3, 4)]),           # a size-1 contracted dim broadcasts (NumPy's)
    ("ij,jk->ik", [(2, 0), (0, 4)]),           # an empty contraction: zeros
    ("ij,jk->ik", [(0, 3), (3, 4)]),
    ("i,i->i", [(1,), (3,)]),
    ("ijkl->", [(1, 2, 1, 3)]),
]


def _feeds(rng):
    xs, feeds, want = [], {}, []
    for i, (sub, shapes) in enumerate(CASES):
        ops = []
        vals = []
        for j, s in enumerate(shapes):
            name = f"e{i}_{j}"
            ops.append(gc.input(name, s, dtype="float64"))
            feeds[name] = rng.standard_normal(s)
            vals.append(feeds[name])
        xs.append(gc.einsum(sub, *ops))
        want.append(np.einsum(sub, *vals))
    return xs, feeds, want


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_einsum_matches_numpy_einsum(target):
    xs, feeds, want = _feeds(np.random.default_rng(0))
    got = gc.compile(xs, target=target)(**feeds)
    for (sub, shapes), g, w in zip(CASES, got, want):
        assert g.shape == w.shape, (sub, shapes, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=f"{sub} {shapes}")


def test_einsum_random_subscripts_match_numpy():
    """Random subscripts (1-3 operands, labels from 'abcd', random outputs) on the numpy target."""
    rng = np.random.default_rng(5)
    size = {"a": 2, "b": 3, "c": 1, "d": 4}
    xs, feeds, want, subs = [], {}, [], []
    for i in range(60):
        terms = ["".join(rng.choice(list("abcd"), size=rng.integers(0, 4))) for _ in range(rng.integers(1, 4))]
        used = sorted(set("".join(terms)))
        out = "".join(rng.permutation([c for c in used if rng.random() < 0.5]))
        sub = ",".join(terms) + ("->" + out if rng.random() < 0.7 else "")
        vals = [rng.standard_normal(tuple(size[c] for c in t)) for t in terms]
        ops = []
        for j, v in enumerate(vals):
            feeds[f"r{i}_{j}"] = v
            ops.append(gc.input(f"r{i}_{j}", v.shape, dtype="float64"))
        xs.append(gc.einsum(sub, *ops))
        want.append(np.einsum(sub, *vals))
        subs.append(sub)
    got = gc.compile(xs, target="numpy")(**feeds)
    for sub, g, w in zip(subs, got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=sub)


def test_gemm_shaped_einsums_run_as_gemms():
    a, b = gc.input("ga", (4, 5), "float32"), gc.input("gb", (5, 6), "float32")
    q, k = gc.input("gq", (2, 3, 4, 8), "float32"), gc.input("gk", (2, 3, 5, 8), "float32")
    outs = [gc.einsum("ij,jk->ik", a, b), gc.einsum("ji,jk->ik", gc.transpose(a), b),
            gc.einsum("bhqd,bhkd->bhqk", q, k), gc.tensordot(a, b, 1)]
    kinds = [n.op for n in gc.Graph(outs).nodes]
    # (the tensordot is the first einsum's very node: graphs share identical nodes)
    assert kinds.count("matmul") == 2 and kinds.count("batch_matmul") == 1, kinds
    assert not {"mul", "sum", "broadcast_to"} & set(kinds), kinds
    f = gc.compile(outs, target="cpu")
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((4, 5)).astype("f4"), rng.standard_normal((5, 6)).astype("f4")
    Q, K = rng.standard_normal((2, 3, 4, 8)).astype("f4"), rng.standard_normal((2, 3, 5, 8)).astype("f4")
    got = f(ga=A, gb=B, gq=Q, gk=K)
    np.testing.assert_allclose(got[2], np.einsum("bhqd,bhkd->bhqk", Q, K), rtol=1e-5, atol=1e-5)
    listing = f.kernels()
    assert " matmul " in listing and " bmm " in listing, listing
    # integer operands take the multiply-and-sum path (no GEMM for integers)
    ia, ib = gc.input("ia", (2, 3), "int64"), gc.input("ib", (3, 2), "int64")
    y = gc.einsum("ij,jk->ik", ia, ib)
    assert "matmul" not in [n.op for n in gc.Graph([y]).nodes]
    I, J = np.arange(6).reshape(2, 3), np.arange(6).reshape(3, 2)
    np.testing.assert_array_equal(gc.compile(y, target="cpu")(ia=I, ib=J), I @ J)


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_tensordot_outer_diagonal_trace_match_numpy(target):
    rng = np.random.default_rng(2)
    A, B, C = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 4, 5)), rng.standard_normal((4, 3, 2))
    a, b, c = (gc.input(n, v.shape, "float64") for n, v in (("ta", A), ("tb", B), ("tc", C)))
    outs = [gc.tensordot(a, b), gc.tensordot(a, b, 2), gc.tensordot(a, c, ([1, 2], [1, 0])),
            gc.tensordot(a, c, 0), gc.tensordot(a, b, ([1], [0])),
            gc.outer(a, c), gc.diagonal(a), gc.diagonal(a, 1), gc.diagonal(a, -1, 1, 2), gc.diagonal(a, 2, 2, 0),
            gc.diagonal(a, 5), gc.trace(a), gc.trace(a, 1, 1, 2), gc.trace(b, -2, 0, 2)]
    want = [np.tensordot(A, B), np.tensordot(A, B, 2), np.tensordot(A, C, ([1, 2], [1, 0])), np.tensordot(A, C, 0),
            np.tensordot(A, B, ([1], [0])), np.outer(A, C), np.diagonal(A), np.diagonal(A, 1),
            np.diagonal(A, -1, 1, 2), np.diagonal(A, 2, 2, 0), np.diagonal(A, 5), np.trace(A), np.trace(A, 1, 1, 2),
            np.trace(B, -2, 0, 2)]
    got = gc.compile(outs, target=target)(ta=A, tb=B, tc=C)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, (i, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=str(i))


def test_einsum_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    p = {n: gc.param(n, s, init=rng.standard_normal(s), dtype="float64")
         for n, s in (("x", (2, 3)), ("y", (3, 4)), ("z", (2, 3, 3)), ("w", (3,)))}
    x, y, z, w = p["x"], p["y"], p["z"], p["w"]
    loss = (gc.sum(gc.tanh(gc.einsum("ij,jk->ik", x, y))) + gc.sum(gc.einsum("bii->b", z) ** 2)
            + gc.sum(gc.sin(gc.einsum("bij,bjk->bik", z, z))) + gc.sum(gc.einsum("i,j->ij", w, w) * 0.5)
            + gc.sum(gc.einsum("...ij,j->...i", z, w) ** 2) + gc.trace(gc.tensordot(x, y, 1), 0, 0, 1)
            + gc.sum(gc.diagonal(z, 1, 1, 2) ** 3))
    rep = gc.check_grads(loss, list(p.values()), rtol=1e-6)
    assert max(rep.values()) < 1e-6


def test_einsum_errors_name_the_problem():
    a, b = gc.input("xa", (2, 3)), gc.input("xb", (4, 5))
    with pytest.raises(gc.ShapeError, match=r"einsum: label 'j' has sizes 3 and 4.*test_ops_linalg"):
        gc.einsum("ij,jk->ik", a, b)
    with pytest.raises(gc.ShapeError, match="einsum: subscripts 'ijk' name 3 dims for an operand of rank 2"):
        gc.einsum("ijk->i", a)
    with pytest.raises(ValueError, match="name 2 operands, 1 were given"):
        gc.einsum("ij,jk", a)
    with pytest.raises(ValueError, match="appear in no operand"):
        gc.einsum("ij->iz", a)
    with pytest.raises(ValueError, match="repeat a label"):
        gc.einsum("ij->ii", a)
    with pytest.raises(ValueError, match="must name them with '...'"):
        gc.einsum("...j->j", gc.input("xc", (2, 3, 4)))
    with pytest.raises(gc.ShapeError, match="tensordot: shape mismatch"):
        gc.tensordot(a, b, 1)
    with pytest.raises(gc.ShapeError, match="diagonal: axis1 and axis2 cannot be the same"):
        gc.diagonal(a, 0, 1, 1)


def test_einsum_over_the_batch_dimension():
    x, w = gc.input("bx", (None, 3, 4), "float64"), gc.input("bw", (4, 5), "float64")
    ys = [gc.einsum("bti,ij->btj", x, w), gc.einsum("bti,btj->bij", x, x), gc.einsum("bti->b", x)]
    assert [y.shape for y in ys] == [(None, 3, 5), (None, 4, 4), (None,)]
    X, W = np.random.default_rng(4).standard_normal((2, 3, 4)), np.random.default_rng(5).standard_normal((4, 5))
    got = gc.compile(ys, target="cpu")(bx=X, bw=W)
    for g, sub, ops in zip(got, ("bti,ij->btj", "bti,btj->bij", "bti->b"), ((X, W), (X, X), (X,))):
        np.testing.assert_allclose(g, np.einsum(sub, *ops), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_dot_matches_numpy_dot(target):
    """np.dot's cases: inner product, matrix-vector, matrix product, N-D with 1-D and M-D
    (the last axis of a against the second-to-last of b), and a scalar operand."""
    rng = np.random.default_rng(3)
    shapes = [((4,), (4,)), ((3, 4), (4,)), ((4,), (4, 5)), ((3, 4), (4, 5)), ((2, 3, 4), (4,)),
              ((2, 3, 4), (5, 4, 6)), ((2, 3, 4), (4, 6)), ((), (2, 3))]
    vals, outs, want, feeds = [], [], [], {}
    for i, (sa, sb) in enumerate(shapes):
        A, B = rng.standard_normal(sa), rng.standard_normal(sb)
        a, b = gc.input(f"da{i}", sa, "float64"), gc.input(f"db{i}", sb, "float64")
        feeds.update({f"da{i}": A, f"db{i}": B})
        outs.append(gc.dot(a, b))
        want.append(np.dot(A, B))
    got = gc.compile(outs, target=target)(**feeds)
    for i, (g, w) in enumerate(zip(got, want)):
        assert np.shape(g) == np.shape(w), (i, np.shape(g), np.shape(w))
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=str(i))
