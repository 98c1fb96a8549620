"""gc.scan: a loop in the graph with jax.lax.scan's semantics and a symbolic adjoint.

Oracles: the same loop written in Python over NumPy arrays (forward), float64 finite
differences (first and second derivatives, graphc.check_grads), jax.lax.scan + jax.grad
when JAX is installed, and the numpy target for the compiled targets (which unroll the loop).
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.errors import DTypeError, ShapeError

T, B, F, H = 4, 3, 2, 3
RNG = np.random.default_rng(7)
XV = RNG.standard_normal((T, B, F))
H0V = RNG.standard_normal((B, H))
WV = RNG.standard_normal((F, H)) * 0.6
UV = RNG.standard_normal((H, H)) * 0.6
BV = RNG.standard_normal((H,)) * 0.1


def rnn(dtype="float64", batch=B, reverse=False, checkpoint=True):
    """A tanh RNN over x (T, batch, F) from h0: (loss, hT, ys, params by name, x, h0)."""
    x = gc.input("x", (T, batch, F), dtype)
    h0 = gc.input("h0", (batch, H), dtype)
    p = {"W": gc.param("W", (F, H), dtype=dtype), "U": gc.param("U", (H, H), dtype=dtype),
         "b": gc.param("b", (H,), dtype=dtype)}

    def step(h, xt):
        h = gc.tanh(xt @ p["W"] + h @ p["U"] + p["b"])
        return h, h * h

    hT, ys = gc.scan(step, h0, x, reverse=reverse, checkpoint=checkpoint)
    loss = gc.sum(hT * hT) + gc.mean(ys * ys)
    return loss, hT, ys, p, x, h0


def numpy_rnn(reverse=False):
    h, ys = H0V, [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h = np.tanh(XV[t] @ WV + h @ UV + BV)
        ys[t] = h * h
    return h, np.stack(ys)


PARAMS = {"W": WV, "U": UV, "b": BV}
FEEDS = {"x": XV, "h0": H0V}


# ---- forward -----------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
def test_forward_matches_a_python_loop(reverse):
    _, hT, ys, _, _, _ = rnn(reverse=reverse)
    got_h, got_y = gc.evaluate([hT, ys], FEEDS, PARAMS)
    want_h, want_y = numpy_rnn(reverse)
    np.testing.assert_allclose(got_h, want_h, rtol=1e-12)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-12)  # reverse: ys in the original order


def test_nested_carry_dict_xs_and_ys():
    a0 = gc.input("a0", (2,), "float64")
    n0 = gc.input("n0", (), "int64")
    xs = {"u": gc.input("u", (5, 2), "float64"), "v": gc.input("v", (5,), "float64")}

    def f(carry, x):
        (a, n), [acc] = carry
        a2 = a * x["v"] + x["u"]
        return ((a2, n + 1), [acc + gc.sum(a2)]), {"a": a2, "s": x["v"] * 2.0}

    ((a, n), [acc]), ys = gc.scan(f, ((a0, n0), [gc.const(0.0, "float64")]), xs)
    u, v = RNG.standard_normal((5, 2)), RNG.standard_normal(5)
    vals = gc.evaluate([a, n, acc, ys["a"], ys["s"]], {"a0": np.ones(2), "n0": np.asarray(3), "u": u, "v": v}, {})
    aa, tot, rows = np.ones(2), 0.0, []
    for t in range(5):
        aa = aa * v[t] + u[t]
        tot += aa.sum()
        rows.append(aa)
    np.testing.assert_allclose(vals[0], aa)
    assert vals[1] == 8 and vals[1].dtype == np.int64
    np.testing.assert_allclose(vals[2], tot)
    np.testing.assert_allclose(vals[3], np.stack(rows))
    np.testing.assert_allclose(vals[4], 2 * v)


def test_xs_none_with_length_and_y_none():
    c0 = gc.input("c0", (2,), "float64")
    cT, ys = gc.scan(lambda c, _: (c * 2.0 + 1.0, None), c0, None, length=3)
    assert ys is None
    (got,) = gc.evaluate([cT], {"c0": np.array([0.0, 1.0])}, {})
    np.testing.assert_allclose(got, [7.0, 15.0])


def test_batch_dimension_none():
    loss, hT, ys, _, _, _ = rnn(batch=None)
    assert hT.shape == (None, H) and ys.shape == (T, None, H)
    got_h, got_y = gc.evaluate([hT, ys], FEEDS, PARAMS)
    want_h, want_y = numpy_rnn()
    np.testing.assert_allclose(got_h, want_h, rtol=1e-12)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-12)


def test_same_loop_built_twice_is_one_node():
    # bodies compare by structure (placeholders by position), so a rebuilt model is the same
    # graph and the compile cache finds it
    a, b = rnn()[0], rnn()[0]
    assert a is b


# ---- errors at graph build time -------------------------------------------------------------

def test_carry_shape_mismatch_names_the_leaf_and_the_line():
    h0 = gc.input("h0", (B, H))
    x = gc.input("x", (T, B, F))
    with pytest.raises(ShapeError) as e:
        gc.scan(lambda c, xt: ((c[0], xt), None), (h0, h0), x)  # the line named below
    msg = str(e.value)
    assert "carry[1]" in msg and "(3, 3)" in msg and "(3, 2)" in msg
    line = next(i for i, s in enumerate(open(__file__).read().splitlines(), 1) if "the line named below" in s)
    assert msg.endswith(f"test_scan.py:{line}")


def test_carry_dtype_and_structure_mismatch():
    h0 = gc.input("h0", (B, H))
    x = gc.input("x", (T, B, F))
    with pytest.raises(DTypeError, match=r"carry\[0\].*float32.*float64"):
        gc.scan(lambda c, xt: ((gc.cast(c[0], "float64"),), None), (h0,), x)
    with pytest.raises(ShapeError, match=r"structure \(\*, \*\).*structure \(\*,\)"):
        gc.scan(lambda c, xt: ((c[0], c[0]), None), (h0,), x)


def test_xs_leading_dims_and_length_must_agree():
    x = gc.input("x", (T, B, F))
    x2 = gc.input("x2", (T + 1, B))
    h0 = gc.input("h0", (B, H))
    with pytest.raises(ShapeError, match=r"xs\[1\].*\(5, 3\).*leading dim 5"):
        gc.scan(lambda c, xt: (c, None), h0, (x, x2))
    with pytest.raises(ShapeError, match=r"length=7"):
        gc.scan(lambda c, xt: (c, None), h0, x, length=7)
    with pytest.raises(ShapeError, match="length"):
        gc.scan(lambda c, xt: (c, None), h0, None)
    with pytest.raises(ShapeError, match="batch dimension"):
        gc.scan(lambda c, xt: (c, None), h0, gc.input("xb", (None, F)))


# ---- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_against_finite_differences(reverse):
    loss, _, _, p, x, h0 = rnn("float32", reverse=reverse)  # checked in float64 by check_grads
    rep = gc.check_grads(loss, [p["W"], p["U"], p["b"], x, h0], FEEDS, PARAMS, order=1)
    assert max(rep.values()) < 1e-6


def test_second_derivatives_through_scan():
    loss, _, _, p, x, h0 = rnn()
    rep = gc.check_grads(loss, [p["U"], p["W"], h0], FEEDS, PARAMS, order=2)
    assert {k[1] for k in rep} == {1, 2} and max(rep.values()) < 1e-6


def _reverse_scans(nodes):
    from graphc.ir import topo_order
    return [n for n in topo_order(nodes) if n.op == "scan" and n.attrs["reverse"]]


def test_checkpoint_false_saves_residuals_instead_of_recomputing():
    grads = {}
    for ckpt in (True, False):
        loss, _, _, p, x, h0 = rnn(checkpoint=ckpt)
        gs = gc.grad(loss, [p["W"], p["U"], p["b"], x, h0])
        (bwd,) = _reverse_scans(gs)
        ops = {n.op for n in bwd.attrs["body"].order()}
        # recompute: the reverse body runs the forward's tanh again; saved: it only reads it
        assert ("tanh" in ops) == ckpt, ops
        grads[ckpt] = gc.evaluate(gs, FEEDS, PARAMS)
        if not ckpt:
            rep = gc.check_grads(loss, [p["U"], x, h0], FEEDS, PARAMS, order=2)
            assert max(rep.values()) < 1e-6
    for a, b in zip(grads[True], grads[False]):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_gradients_of_a_nested_scan():
    x = gc.input("x", (3, 2, 2), "float64")
    w = gc.param("w", (2,), dtype="float64")

    def outer(c, xt):
        inner, _ = gc.scan(lambda a, r: (gc.tanh(a * w + r), None), c, xt)
        return inner, gc.sum(inner * c)

    cT, ys = gc.scan(outer, gc.const(np.ones(2)), x)
    loss = gc.sum(cT) + gc.sum(ys)
    gc.check_grads(loss, [w, x], {"x": RNG.standard_normal((3, 2, 2))}, {"w": np.array([0.5, -0.3])}, order=2)


def test_gradients_against_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    loss, _, _, p, x, h0 = rnn(reverse=True)
    got = gc.evaluate(gc.grad(loss, [p["W"], p["U"], p["b"], x, h0]), FEEDS, PARAMS)

    def jloss(W, U, b, xs, h):
        def step(h, xt):
            h = jnp.tanh(xt @ W + h @ U + b)
            return h, h * h
        hT, ys = jax.lax.scan(step, h, xs, reverse=True)
        return jnp.sum(hT * hT) + jnp.mean(ys * ys)

    want = jax.grad(jloss, argnums=(0, 1, 2, 3, 4))(WV, UV, BV, XV, H0V)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-10, atol=1e-12)


# ---- compiled targets: the loop unrolled before specialization ----------------------------------

C = 2


def rnn_classifier():
    """A scan-based simple RNN with a dense head, batch dim None: (loss, x, labels)."""
    x = gc.input("sx", (T, None, F))
    lab = gc.input("slab", (None,), "int32")
    r = np.random.default_rng(3)
    W = gc.param("sW", (F, H), init=r.standard_normal((F, H)).astype("float32") * 0.5)
    U = gc.param("sU", (H, H), init=r.standard_normal((H, H)).astype("float32") * 0.5)
    b = gc.param("sb", (H,))
    V = gc.param("sV", (H, C), init=r.standard_normal((H, C)).astype("float32"))

    def step(h, xt):
        h = gc.tanh(xt @ W + h @ U + b)
        return h, gc.sum(h, axis=1)

    hT, ys = gc.scan(step, gc.zeros_like(x[0] @ W), x)
    return gc.softmax_cross_entropy(hT @ V, lab) + 0.01 * gc.mean(ys * ys), x, lab


def test_training_step_same_losses_on_numpy_cpu_and_parallel():
    loss, _, _ = rnn_classifier()
    r = np.random.default_rng(5)
    batches = [(r.standard_normal((T, 6, F)).astype("float32"), r.integers(0, C, 6).astype("int32"))
               for _ in range(4)]
    losses = {}
    for target in ("numpy", "cpu", "parallel"):
        step = gc.compile(loss, optimizer=gc.optim.Adam(0.05), target=target, seed=0)
        losses[target] = [float(step(sx=xb, slab=yb)["loss"]) for xb, yb in batches]
        if target == "parallel":  # unrolled there (Backend.loops False)
            src = step.source()
            assert "(scan @ test_scan.py:" in src and ", step 3)" in src  # where each copy came from
        elif target == "cpu":  # one loop over the body's kernels
            assert f"loop x{T}" in step.kernels() and "(scan @ " not in step.source()
    assert losses["numpy"][-1] < losses["numpy"][0]  # it trains
    np.testing.assert_allclose(losses["cpu"], losses["numpy"], rtol=2e-5)
    np.testing.assert_allclose(losses["parallel"], losses["numpy"], rtol=2e-5)


def test_unrolled_gradients_and_reverse_scan_on_cpu():
    loss, hT, ys, p, x, h0 = rnn("float32", reverse=True)
    outs = [hT, ys] + gc.grad(loss, [p["W"], p["U"], x, h0])
    feeds = {"x": XV.astype("float32"), "h0": H0V.astype("float32")}
    want = gc.compile(outs, target="numpy", params={k: v.astype("float32") for k, v in PARAMS.items()})(**feeds)
    f = gc.compile(outs, target="cpu", params={k: v.astype("float32") for k, v in PARAMS.items()})
    for a, b in zip(f(**feeds), want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unroll_pass_leaves_no_scan_and_body_copies_fuse_alike():
    from graphc.passes.unroll import unroll_scans
    _, hT, ys, _, _, _ = rnn("float32")
    g = unroll_scans(gc.Graph([hT, ys]))
    assert not any(n.op in ("scan", "scan_out", "scan_arg") for n in g.nodes)
    tanhs = [n for n in g.nodes if n.op == "tanh"]
    assert len(tanhs) == T and all("scan @ test_scan.py:" in n.src for n in tanhs)
