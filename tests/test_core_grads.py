"""Every differentiable op's VJP against central finite differences (gc.check_grads, float64,
relative error < 1e-6), on shapes and values drawn by hypothesis, broadcasting included.

Each op's output is turned into a scalar as sum(op(...) * W) with a fixed random W, so every
output element contributes to the checked gradient. Values are kept away from the points
where an op is not differentiable (relu/abs at 0, ties of maximum/minimum/max, clip bounds,
log/sqrt of non-positive numbers).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import graphc as gc

RTOL = 1e-6
F64 = "float64"
_names = itertools.count()

SETTINGS = settings(max_examples=20, deadline=None)

seeds = st.integers(0, 2**32 - 1)
shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)
nonempty_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
pairs = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=4)


# ---- helpers ------------------------------------------------------------------------------

def inp(shape, dtype=F64):
    return gc.input(f"x{next(_names)}", shape, dtype=dtype)


def scalarize(out: gc.Tensor, rng) -> gc.Tensor:
    """sum(out * W) for a fixed random W of out's shape: every element of out matters."""
    w = gc.const(rng.standard_normal(out.shape).astype(out.dtype), dtype=out.dtype)
    return gc.sum(out * w)


def check(out, wrt, feeds, rng, order=1):
    loss = scalarize(out, rng)
    report = gc.check_grads(loss, wrt, feeds=feeds, order=order, rtol=RTOL)
    assert all(err < RTOL for err in report.values()), report
    return report


def smooth(rng, shape, lo=-2.0, hi=2.0):
    return rng.uniform(lo, hi, shape)


def away_from_zero(rng, shape, lo=0.2, hi=2.0):
    """Values with |v| in [lo, hi] and a random sign."""
    return rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


def positive(rng, shape, lo=0.5, hi=3.0):
    return rng.uniform(lo, hi, shape)


def distinct(rng, shape, step=0.25):
    """Pairwise distinct values (no ties for max), at least ``step`` apart, centred on 0."""
    n = int(np.prod(shape)) if shape else 1
    v = (rng.permutation(n) - n / 2.0) * step + 0.05
    return v.reshape(shape)


# ---- binary elementwise ops, with broadcasting ---------------------------------------------

BINARY = {
    "add": (gc.add, smooth, smooth),
    "sub": (gc.sub, smooth, smooth),
    "mul": (gc.mul, smooth, smooth),
    "div": (gc.div, smooth, away_from_zero),
    "operators": (lambda a, b: (a + b) * a - b / (a * a + 1.0), smooth, smooth),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@SETTINGS
@given(shp=pairs, seed=seeds)
def test_binary_broadcasting(name, shp, seed):
    fn, va, vb = BINARY[name]
    rng = np.random.default_rng(seed)
    sa, sb = shp.input_shapes
    a, b = inp(sa), inp(sb)
    out = fn(a, b)
    assert out.shape == shp.result_shape
    check(out, [a, b], {a.name: va(rng, sa), b.name: vb(rng, sb)}, rng)


def test_binary_broadcasting_example_3x1_with_4():
    rng = np.random.default_rng(0)
    a, b = inp((3, 1)), inp((4,))
    for fn in (gc.add, gc.sub, gc.mul, gc.div, gc.maximum, gc.minimum):
        out = fn(a, b)
        assert out.shape == (3, 4)
        check(out, [a, b], {a.name: np.array([[0.5], [1.5], [-2.5]]),
                            b.name: np.array([1.0, -1.0, 2.0, 0.75])}, rng)


@pytest.mark.parametrize("fn", [gc.maximum, gc.minimum], ids=["maximum", "minimum"])
@SETTINGS
@given(shp=pairs, seed=seeds)
def test_maximum_minimum(fn, shp, seed):
    rng = np.random.default_rng(seed)
    sa, sb = shp.input_shapes
    a, b = inp(sa), inp(sb)
    # a on the grid k + 0.25, b on the grid k + 0.75: never tied, always >= 0.5 apart
    fa = rng.integers(-3, 3, sa) + 0.25
    fb = rng.integers(-3, 3, sb) + 0.75
    check(fn(a, b), [a, b], {a.name: fa, b.name: fb}, rng)


@SETTINGS
@given(shp=mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3), seed=seeds)
def test_where(shp, seed):
    rng = np.random.default_rng(seed)
    sc, sa, sb = shp.input_shapes
    c = gc.input(f"c{next(_names)}", sc, dtype=bool)
    a, b = inp(sa), inp(sb)
    out = gc.where(c, a, b)
    feeds = {c.name: rng.random(sc) < 0.5, a.name: smooth(rng, sa), b.name: smooth(rng, sb)}
    check(out, [a, b], feeds, rng)


# ---- unary elementwise ops -------------------------------------------------------------------

UNARY = {
    "neg": (gc.neg, smooth),
    "operator_neg": (lambda x: -x, smooth),
    "exp": (gc.exp, smooth),
    "log": (gc.log, positive),
    "sqrt": (gc.sqrt, positive),
    "abs": (gc.abs, away_from_zero),
    "square": (gc.square, smooth),
    "relu": (gc.relu, away_from_zero),
    "leaky_relu": (lambda x: gc.leaky_relu(x, 0.2), away_from_zero),
    "elu": (gc.elu, away_from_zero),
    "elu_alpha": (lambda x: gc.elu(x, 0.7), away_from_zero),
    "sigmoid": (gc.sigmoid, lambda r, s: smooth(r, s, -5, 5)),
    "tanh": (gc.tanh, smooth),
    "gelu": (gc.gelu, lambda r, s: smooth(r, s, -4, 4)),
    "softplus": (gc.softplus, lambda r, s: smooth(r, s, -5, 5)),
    # clip bounds at +-1; values kept >= 0.1 away from them
    "clip": (lambda x: gc.clip(x, -1.0, 1.0),
             lambda r, s: np.where(r.random(s) < 0.5, r.uniform(-0.9, 0.9, s),
                                   r.uniform(1.1, 2.0, s) * r.choice([-1.0, 1.0], s))),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@SETTINGS
@given(shape=shapes, seed=seeds)
def test_unary(name, shape, seed):
    fn, values = UNARY[name]
    rng = np.random.default_rng(seed)
    x = inp(shape)
    check(fn(x), [x], {x.name: values(rng, shape)}, rng)


@SETTINGS
@given(shape=shapes, seed=seeds, p=st.sampled_from([-2.0, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0, 3.0]))
def test_pow(shape, seed, p):
    rng = np.random.default_rng(seed)
    x = inp(shape)
    check(gc.power(x, p), [x], {x.name: positive(rng, shape)}, rng)
    check(x ** p, [x], {x.name: positive(rng, shape)}, rng)


def test_pow_integer_exponent_of_negative_values():
    rng = np.random.default_rng(1)
    x = inp((5,))
    check(x ** 3, [x], {x.name: away_from_zero(rng, (5,))}, rng)


# ---- casts between float dtypes ---------------------------------------------------------------

@pytest.mark.parametrize("src,dst", [("float32", "float64"), ("float64", "float32")])
def test_cast_gradient_dtype_and_value(src, dst):
    """check_grads works in float64 (so casts between floats vanish there): check the cast's
    VJP directly. Its gradient comes back in the operand's dtype with the cotangent's value."""
    rng = np.random.default_rng(0)
    x = gc.input(f"xc{next(_names)}", (3, 4), dtype=src)
    c = gc.cast(x, dst)
    assert c.dtype == np.dtype(dst)
    w = rng.standard_normal((3, 4))
    y = gc.sum(c * gc.const(w, dtype=dst))
    g = gc.grad(y, x)
    assert g.dtype == np.dtype(src) and g.shape == (3, 4)
    (gv,) = gc.evaluate([g], {x.name: rng.standard_normal((3, 4)).astype(src)}, {})
    assert gv.dtype == np.dtype(src)
    np.testing.assert_allclose(gv, w.astype(dst).astype(src), rtol=1e-6)


@SETTINGS
@given(shape=shapes, seed=seeds)
def test_cast_chain_gradcheck(shape, seed):
    """A cast chain inside a graph (float32 <-> float64) is checked by finite differences."""
    rng = np.random.default_rng(seed)
    x = inp(shape, dtype="float32")
    out = gc.cast(gc.tanh(gc.cast(x, "float64")) * 2.0, "float32") + x
    check(out, [x], {x.name: smooth(rng, shape)}, rng)


# ---- matmul and movement ---------------------------------------------------------------------

@SETTINGS
@given(m=st.integers(1, 4), k=st.integers(1, 4), n=st.integers(1, 4), seed=seeds)
def test_matmul(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a, b = inp((m, k)), inp((k, n))
    feeds = {a.name: smooth(rng, (m, k)), b.name: smooth(rng, (k, n))}
    check(gc.matmul(a, b), [a, b], feeds, rng)
    check(a @ b, [a, b], feeds, rng)
    check(b.T @ a.T, [a, b], feeds, rng)


@SETTINGS
@given(shape=nonempty_shapes, seed=seeds, data=st.data())
def test_transpose(shape, seed, data):
    rng = np.random.default_rng(seed)
    axes = tuple(data.draw(st.permutations(range(len(shape)))))
    x = inp(shape)
    out = gc.transpose(x, axes)
    assert out.shape == tuple(shape[a] for a in axes)
    check(out, [x], {x.name: smooth(rng, shape)}, rng)


@SETTINGS
@given(shape=nonempty_shapes, seed=seeds, data=st.data())
def test_reshape(shape, seed, data):
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    targets = [(size,), (-1,), tuple(reversed(shape)), (1, size), (size, 1, 1)]
    if size % 2 == 0:
        targets += [(2, -1), (-1, 2, 1)]
    target = data.draw(st.sampled_from(targets))
    x = inp(shape)
    out = gc.reshape(x, target)
    assert int(np.prod(out.shape)) == size
    check(out * out, [x], {x.name: smooth(rng, shape)}, rng)


@SETTINGS
@given(shp=pairs, seed=seeds)
def test_broadcast_to(shp, seed):
    rng = np.random.default_rng(seed)
    sx = shp.input_shapes[0]
    x = inp(sx)
    out = gc.broadcast_to(x, shp.result_shape)
    assert out.shape == shp.result_shape
    check(out, [x], {x.name: smooth(rng, sx)}, rng)


# ---- reductions ---------------------------------------------------------------------------------

@st.composite
def shape_and_axes(draw):
    shape = draw(nonempty_shapes)
    nd = len(shape)
    kind = draw(st.sampled_from(["none", "int", "neg", "tuple"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(0, nd - 1))
    elif kind == "neg":
        axis = draw(st.integers(-nd, -1))
    else:
        axis = tuple(draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True)))
    return shape, axis, draw(st.booleans())


@pytest.mark.parametrize("red", ["sum", "mean", "max"])
@SETTINGS
@given(sak=shape_and_axes(), seed=seeds)
def test_reductions(red, sak, seed):
    shape, axis, keepdims = sak
    rng = np.random.default_rng(seed)
    x = inp(shape)
    out = getattr(gc, red)(x, axis=axis, keepdims=keepdims)
    ref = getattr(np, red)(np.zeros(shape), axis=axis, keepdims=keepdims)
    assert out.shape == ref.shape
    values = distinct(rng, shape) if red == "max" else smooth(rng, shape)
    (ov,) = gc.evaluate([out], {x.name: values}, {})
    np.testing.assert_allclose(ov, getattr(np, red)(values, axis=axis, keepdims=keepdims), rtol=1e-12)
    check(out, [x], {x.name: values}, rng)


def test_max_gradient_splits_ties_equally():
    x = inp((2, 3))
    g = gc.grad(gc.sum(gc.max(x, axis=1)), x)
    (gv,) = gc.evaluate([g], {x.name: np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])}, {})
    np.testing.assert_allclose(gv, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


# ---- softmax family and losses --------------------------------------------------------------------

@pytest.mark.parametrize("fn", [gc.softmax, gc.log_softmax], ids=["softmax", "log_softmax"])
@SETTINGS
@given(shape=nonempty_shapes, seed=seeds, data=st.data())
def test_softmax_family(fn, shape, seed, data):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = inp(shape)
    values = smooth(rng, shape, -3, 3)
    out = fn(x, axis=axis)
    (ov,) = gc.evaluate([out], {x.name: values}, {})
    e = np.exp(values - values.max(axis=axis, keepdims=True))
    ref = e / e.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(ov, ref if fn is gc.softmax else np.log(ref), rtol=1e-12, atol=1e-14)
    check(out, [x], {x.name: values}, rng)


@SETTINGS
@given(b=st.integers(1, 5), c=st.integers(1, 5), seed=seeds, scale=st.sampled_from([1.0, 4.0]))
def test_softmax_cross_entropy(b, c, seed, scale):
    rng = np.random.default_rng(seed)
    z = inp((b, c))
    lab = gc.input(f"lab{next(_names)}", (b,), dtype="int64")
    loss = gc.softmax_cross_entropy(z, lab)
    zv, lv = smooth(rng, (b, c)) * scale, rng.integers(0, c, b)
    (ov,) = gc.evaluate([loss], {z.name: zv, lab.name: lv}, {})
    lse = np.log(np.exp(zv - zv.max(1, keepdims=True)).sum(1)) + zv.max(1)
    np.testing.assert_allclose(ov, np.mean(lse - zv[np.arange(b), lv]), rtol=1e-12)
    rep = gc.check_grads(loss * 3.0, [z], feeds={z.name: zv, lab.name: lv}, order=2, rtol=RTOL)
    assert max(rep.values()) < RTOL


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    z = inp((2, 3))
    lab = gc.input("lab_stable", (2,), dtype="int64")
    loss = gc.softmax_cross_entropy(z, lab)
    g = gc.grad(loss, z)
    zv = np.array([[1000.0, 0.0, -1000.0], [-5000.0, 5000.0, 0.0]])
    lv, gv = gc.evaluate([loss, g], {z.name: zv, lab.name: np.array([0, 0])}, {})
    assert np.isfinite(lv) and np.all(np.isfinite(gv))
    np.testing.assert_allclose(lv, 5000.0, rtol=1e-12)  # (0 + 10000) / 2
    np.testing.assert_allclose(gv, [[0, 0, 0], [-0.5, 0.5, 0]], atol=1e-12)


@SETTINGS
@given(shape=shapes, seed=seeds)
def test_mse(shape, seed):  # losses take operands of one shape (no broadcasting: issue 9)
    rng = np.random.default_rng(seed)
    sa = sb = shape
    a, b = inp(sa), inp(sb)
    loss = gc.mse(a, b)
    av, bv = smooth(rng, sa), smooth(rng, sb)
    (ov,) = gc.evaluate([loss], {a.name: av, b.name: bv}, {})
    np.testing.assert_allclose(ov, np.mean((av - bv) ** 2), rtol=1e-12)
    rep = gc.check_grads(loss, [a, b], feeds={a.name: av, b.name: bv}, rtol=RTOL)
    assert max(rep.values()) < RTOL


@SETTINGS
@given(shape=shapes, seed=seeds)
def test_binary_cross_entropy_with_logits(shape, seed):
    rng = np.random.default_rng(seed)
    sa = sb = shape
    z, t = inp(sa), inp(sb)
    loss = gc.binary_cross_entropy_with_logits(z, t)
    zv, tv = smooth(rng, sa, -4, 4), rng.uniform(0, 1, sb)
    (ov,) = gc.evaluate([loss], {z.name: zv, t.name: tv}, {})
    p = 1 / (1 + np.exp(-zv))
    np.testing.assert_allclose(ov, np.mean(-(tv * np.log(p) + (1 - tv) * np.log(1 - p))), rtol=1e-10)
    rep = gc.check_grads(loss, [z, t], feeds={z.name: zv, t.name: tv}, rtol=RTOL)
    assert max(rep.values()) < RTOL


# ---- batch (None) dimension ------------------------------------------------------------------------

def test_gradcheck_with_batch_dim_inputs():
    rng = np.random.default_rng(3)
    x = gc.input("xb_batch", (None, 3), dtype=F64)
    w = gc.param("Wb_batch", (3, 2), dtype=F64)
    h = gc.softplus(x @ w) - gc.sum(x, axis=1, keepdims=True) * 0.5  # (None, 2)
    loss = gc.sum(h * gc.const(rng.standard_normal(2))) + gc.mean(h * h) + gc.sum(gc.mean(x, axis=0) ** 2)
    rep = gc.check_grads(loss, [x, w], feeds={x.name: smooth(rng, (5, 3))}, order=2, rtol=RTOL)
    assert set(rep) == {(x.name, 1), (w.name, 1), (x.name, 2), (w.name, 2)}


# ---- second order ------------------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["tanh", "softplus"])
def test_hessian_vector_product_two_layer_net(act):
    rng = np.random.default_rng(7)
    x = gc.input(f"x_hvp_{act}", (None, 4), dtype=F64)
    y = gc.input(f"y_hvp_{act}", (None,), dtype="int64")
    W1 = gc.param(f"W1_hvp_{act}", (4, 5), init="glorot_normal", dtype=F64)
    b1 = gc.param(f"b1_hvp_{act}", (5,), init="normal", dtype=F64)
    W2 = gc.param(f"W2_hvp_{act}", (5, 3), init="glorot_normal", dtype=F64)
    b2 = gc.param(f"b2_hvp_{act}", (3,), init="normal", dtype=F64)
    h = getattr(gc, act)(x @ W1 + b1)
    loss = gc.softmax_cross_entropy(h @ W2 + b2, y)
    feeds = {x.name: rng.standard_normal((6, 4)), y.name: rng.integers(0, 3, 6)}
    rep = gc.check_grads(loss, [W1, b1, W2, b2], feeds=feeds, order=2, rtol=RTOL)
    assert {k[1] for k in rep} == {1, 2}
    assert max(rep.values()) < RTOL

    # and explicitly: grad(<grad, v>) equals finite differences of the gradient along v
    params = [W1, b1, W2, b2]
    pv = {p.name: rng.standard_normal(p.shape) for p in params}
    vs = [rng.standard_normal(p.shape) for p in params]
    grads = gc.grad(loss, params)
    inner = None
    for g, v in zip(grads, vs):
        t = gc.sum(g * gc.const(v))
        inner = t if inner is None else inner + t
    hvp = gc.evaluate(gc.grad(inner, params), feeds, pv)
    h_eps = 1e-5
    plus = {k: pv[k] + h_eps * v for k, v in zip(pv, vs)}
    minus = {k: pv[k] - h_eps * v for k, v in zip(pv, vs)}
    gp, gm = gc.evaluate(grads, feeds, plus), gc.evaluate(grads, feeds, minus)
    for hv, a, b in zip(hvp, gp, gm):
        np.testing.assert_allclose(hv, (a - b) / (2 * h_eps), rtol=1e-6, atol=1e-8)


SECOND = {
    # f, f'' (analytic), domain
    "tanh": (gc.tanh, lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2), (-2, 2)),
    "sigmoid": (gc.sigmoid, lambda x: (s := 1 / (1 + np.exp(-x))) * (1 - s) * (1 - 2 * s), (-3, 3)),
    "softplus": (gc.softplus, lambda x: (s := 1 / (1 + np.exp(-x))) * (1 - s), (-3, 3)),
    "exp_x3": (lambda x: gc.exp(x) * x ** 3, lambda x: np.exp(x) * (x ** 3 + 6 * x ** 2 + 6 * x), (-2, 2)),
    "log_sqrt": (lambda x: gc.log(x) * gc.sqrt(x), lambda x: (-np.log(x) / 4) * x ** -1.5, (0.5, 3)),
    "div": (lambda x: 1.0 / (1.0 + x * x), lambda x: (6 * x ** 2 - 2) / (1 + x ** 2) ** 3, (-2, 2)),
    "gelu": (gc.gelu, None, (-3, 3)),
    "elu_neg": (gc.elu, lambda x: np.exp(x), (-3, -0.1)),
}


@pytest.mark.parametrize("name", sorted(SECOND))
@settings(max_examples=15, deadline=None)
@given(x0=st.floats(0, 1))
def test_grad_of_grad_scalar(name, x0):
    f, f2, (lo, hi) = SECOND[name]
    xv = lo + (hi - lo) * x0
    x = inp(())
    d1 = gc.grad(f(x), x)
    d2 = gc.grad(d1, x)
    assert d2.shape == () and d2.dtype == np.float64
    (v2,) = gc.evaluate([d2], {x.name: np.array(xv)}, {})
    if f2 is None:  # compare with central differences of the first derivative
        h = 1e-5
        a, = gc.evaluate([d1], {x.name: np.array(xv + h)}, {})
        b, = gc.evaluate([d1], {x.name: np.array(xv - h)}, {})
        np.testing.assert_allclose(v2, (a - b) / (2 * h), rtol=1e-7, atol=1e-9)
    else:
        np.testing.assert_allclose(v2, f2(xv), rtol=1e-10, atol=1e-12)
    rep = gc.check_grads(f(x), [x], feeds={x.name: np.array(xv)}, order=2, rtol=RTOL)
    assert max(rep.values()) < RTOL
