"""A scan's parameter gradients: a captured weight's per-step term A_t^T @ B_t is not summed in
the reverse scan's carry (T skinny GEMMs) but computed by ONE GEMM over the T*rows stacked rows
after it. Oracles: float64 finite differences (graphc.check_grads, first and second order), the
numpy target, jax.lax.scan + jax.grad where installed."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ir import topo_order

T, B, F, H = 4, 5, 2, 3
RNG = np.random.default_rng(11)
XV = RNG.standard_normal((T, B, F))
H0V = RNG.standard_normal((B, H))
PARAMS = {"W": RNG.standard_normal((F, H)) * 0.6, "U": RNG.standard_normal((H, H)) * 0.6,
          "b": RNG.standard_normal((H,)) * 0.1}
FEEDS = {"x": XV, "h0": H0V}


def rnn(dtype="float64", reverse=False, checkpoint=True, batch=B, squash=False):
    """tanh RNN; squash: the recurrent matmul reads tanh(h) (an A_t that is no carry or x)."""
    x = gc.input("x", (T, batch, F), dtype)
    h0 = gc.input("h0", (batch, H), dtype)
    p = {"W": gc.param("W", (F, H), dtype=dtype), "U": gc.param("U", (H, H), dtype=dtype),
         "b": gc.param("b", (H,), dtype=dtype)}

    def step(h, xt):
        a = gc.tanh(h) if squash else h
        h = gc.tanh(xt @ p["W"] + a @ p["U"] + p["b"])
        return h, h * h

    hT, ys = gc.scan(step, h0, x, reverse=reverse, checkpoint=checkpoint)
    loss = gc.sum(hT * hT) + gc.mean(ys * ys)
    return loss, p, x, h0


def _reverse_scans(nodes):
    return [n for n in topo_order(nodes) if n.op == "scan" and n.attrs["reverse"]]


def _weight_matmuls(nodes):
    """matmuls whose result has a weight's shape (F,H) or (H,H)."""
    return [n for n in nodes if n.op == "matmul" and n.shape in ((F, H), (H, H))]


@pytest.mark.parametrize("checkpoint", [True, False])
@pytest.mark.parametrize("squash", [False, True])
def test_adjoint_body_has_no_per_step_weight_gemm(checkpoint, squash):
    loss, p, x, h0 = rnn(checkpoint=checkpoint, squash=squash)
    gs = gc.grad(loss, [p["W"], p["U"], p["b"], x, h0])
    (bwd,) = _reverse_scans(gs)
    body = bwd.attrs["body"].order()
    assert not _weight_matmuls(body), [n.shape for n in _weight_matmuls(body)]
    # outside: one GEMM per weight over the T*B stacked rows
    outer = _weight_matmuls(topo_order(gs))
    assert sorted(n.shape for n in outer) == [(F, H), (H, H)]
    for n in outer:
        assert n.inputs[0].shape[1] == T * B and n.inputs[1].shape[0] == T * B


def test_unrolled_graph_has_one_gemm_per_weight():
    from graphc.passes.unroll import unroll_scans
    loss, p, x, h0 = rnn("float32")
    g = unroll_scans(gc.Graph(gc.grad(loss, [p["W"], p["U"]])))
    shapes = sorted(n.shape for n in _weight_matmuls(g.nodes))
    assert shapes == [(F, H), (H, H)], shapes  # was T of each, summed


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("checkpoint", [True, False])
def test_gradients_against_finite_differences(reverse, checkpoint):
    loss, p, x, h0 = rnn(reverse=reverse, checkpoint=checkpoint, squash=True)
    rep = gc.check_grads(loss, [p["W"], p["U"], p["b"], x, h0], FEEDS, PARAMS, order=2)
    assert {k[1] for k in rep} == {1, 2} and max(rep.values()) < 1e-6


def test_third_order_through_the_stacked_gemm():
    loss, p, x, h0 = rnn()
    (gU,) = gc.grad(loss, [p["U"]])
    (gg,) = gc.grad(gc.sum(gU * gU), [p["U"]])  # the adjoint's adjoint
    rep = gc.check_grads(gc.sum(gg * gg), [p["U"], p["W"]], FEEDS, PARAMS, order=1)
    assert max(rep.values()) < 1e-6


def test_weight_used_twice_and_a_nested_scan():
    x = gc.input("x", (3, 2, 4, 2), "float64")  # (outer, inner, rows, features)
    w = gc.param("w", (2, 2), dtype="float64")

    def outer(c, xt):
        def inner(a, r):
            return gc.tanh(a @ w + r @ w), None  # w's cotangent: two A^T B terms per step
        a, _ = gc.scan(inner, c, xt)
        return a, gc.sum(a * c)

    cT, ys = gc.scan(outer, gc.const(np.ones((4, 2)) * 0.3), x)
    gw = gc.grad(gc.sum(cT) + gc.sum(ys), [w])
    bodies, todo = [], list(_reverse_scans(gw))
    while todo:  # every reverse scan, also those inside other scans' bodies
        body = todo.pop().attrs["body"]
        bodies.append(body)
        todo += [n for n in body.order() if n.op == "scan" and n.attrs["reverse"]]
    assert len(bodies) >= 2
    for body in bodies:
        assert not [n for n in body.order() if n.op == "matmul" and n.shape == (2, 2)
                    and n.inputs[0].op == "transpose"]
        # a B_t serving two terms (a @ w and r @ w share it) is stacked once
        stacked = body.outputs[body.n_carry:]
        assert len({id(o) for o in stacked}) == len(stacked)
    rep = gc.check_grads(gc.sum(cT) + gc.sum(ys), [w, x], {"x": RNG.standard_normal((3, 2, 4, 2))},
                         {"w": RNG.standard_normal((2, 2)) * 0.5}, order=2)
    assert max(rep.values()) < 1e-6


def test_batch_dim_none_and_cpu_matches_numpy():
    loss, p, x, h0 = rnn("float32", batch=None, squash=True)
    outs = gc.grad(loss, [p["W"], p["U"], p["b"], x, h0])
    assert sorted(n.shape for n in _weight_matmuls(topo_order(outs))) == [(F, H), (H, H)]
    params = {k: v.astype("float32") for k, v in PARAMS.items()}
    feeds = {"x": XV.astype("float32"), "h0": H0V.astype("float32")}
    want = gc.compile(outs, target="numpy", params=params)(**feeds)
    got = gc.compile(outs, target="cpu", params=params)(**feeds)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_gradients_against_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    loss, p, x, h0 = rnn(reverse=True, squash=True, checkpoint=False)
    got = gc.evaluate(gc.grad(loss, [p["W"], p["U"], p["b"], x, h0]), FEEDS, PARAMS)

    def jloss(W, U, b, xs, h):
        def step(h, xt):
            h = jnp.tanh(xt @ W + jnp.tanh(h) @ U + b)
            return h, h * h
        hT, ys = jax.lax.scan(step, h, xs, reverse=True)
        return jnp.sum(hT * hT) + jnp.mean(ys * ys)

    want = jax.grad(jloss, argnums=(0, 1, 2, 3, 4))(PARAMS["W"], PARAMS["U"], PARAMS["b"], XV, H0V)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-10, atol=1e-12)
