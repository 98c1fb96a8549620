"""Every native target agrees with the interpreter (target="numpy") on the same graphs,
forward values and gradients (gc.grad outputs compiled forward-only with the values).

Hand-written graphs cover each op kind; hypothesis generates random graphs over the op
set. Every distinct graph is a Numba compile (~1-3 s on 2 cores), so example counts are
small and shapes are drawn from a fixed pool (kernels are shape-generic and shared).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc
from _helpers import broadcastable

NATIVE = ("cpu", "parallel")
TOL = {"float64": 1e-9, "float32": 1e-4}


# ---- helpers ---------------------------------------------------------------------------------

def _inputs(dtype, shapes, prefix="x"):
    return [gc.input(f"{prefix}{i}_{'x'.join(map(str, s))}_{dtype}", s, dtype=dtype) for i, s in enumerate(shapes)]


def _feeds(nodes, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for n in nodes:
        if n.dtype.kind == "f":
            out[n.name] = rng.standard_normal(n.shape).astype(n.dtype)
        else:
            out[n.name] = rng.integers(0, 3, n.shape).astype(n.dtype)
    return out


def _weights(n: gc.Node, k: int) -> gc.Node:
    """A fixed, non-uniform weighting so every element's gradient differs."""
    size = int(np.prod(n.shape)) if n.shape else 1
    w = np.linspace(-1.0, 1.5, size).reshape(n.shape) + 0.1 * k
    return gc.const(w.astype(n.dtype))


def scalarize(outs) -> gc.Node:
    y = None
    for k, o in enumerate(outs):
        if o.dtype.kind != "f":
            o = gc.cast(o, "float64")
        t = gc.sum(o * _weights(o, k))
        y = t if y is None else y + gc.cast(t, y.dtype)
    return y


def assert_close(got, want, rtol, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if want.dtype.kind == "b" or want.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


def check_targets(outs, wrt, targets=NATIVE, seed=0, rtol=None):
    """Compile outs + y + grad(y, wrt) for the interpreter and each target and compare."""
    y = scalarize(outs)
    grads = gc.grad(y, list(wrt))
    everything = [*outs, y, *grads]
    ref = gc.compile(everything, target="numpy")
    feeds = _feeds(ref._inputs, seed)
    want = ref(**feeds)
    dt = np.dtype(y.dtype).name if rtol is None else None
    for target in targets:
        f = gc.compile(everything, target=target)
        got = f(**feeds)
        for i, (a, b) in enumerate(zip(got, want)):
            r = rtol if rtol is not None else TOL[np.dtype(b.dtype).name if b.dtype.kind == "f" else dt]
            assert_close(a, b, r, f"{target} output {i} of {len(want)} ({everything[i]!r})")


# ---- hand-written graphs, one per op kind --------------------------------------------------

def g_unary(dt):
    (x,) = _inputs(dt, [(3, 4)])
    pos = x * x + 0.5
    outs = [gc.exp(gc.tanh(x)), gc.log(pos), gc.sqrt(pos), gc.abs(x), gc.sign(x) * x, gc.square(x),
            gc.relu(x), gc.leaky_relu(x, 0.1), gc.elu(x, 0.7), gc.sigmoid(x), gc.tanh(x), gc.softplus(x),
            gc.gelu(x), gc.clip(x, -0.5, 0.3), -x, x ** 3, pos ** -0.5, gc.stop_gradient(x) * x]
    return outs, [x]


def g_binary_broadcast(dt):
    a, b, c, s = _inputs(dt, [(3, 4), (4,), (3, 1), (1,)])
    s = gc.reshape(s, ())  # a scalar operand (scalar inputs: see test_scalar_input_feed)
    den = b * b + 1.0
    outs = [a + b, a - c, a * s, c / den, gc.maximum(a, c), gc.minimum(b, s), a * b + c - s,
            2.0 - a, 1.0 / (a * a + 2.0), (a + 1.0) * (c - 2.0) / den]
    return outs, [a, b, c]


def g_reductions(dt):
    x, v = _inputs(dt, [(2, 3, 4), (3, 4)])
    outs = [gc.sum(x), gc.sum(x, axis=0), gc.sum(x, axis=(0, 2), keepdims=True), gc.mean(x, axis=1),
            gc.mean(v, axis=-1, keepdims=True), gc.max(v, axis=0), gc.max(x, axis=(1, 2), keepdims=True),
            gc.max(v), gc.sum(gc.exp(v), axis=1) * 2.0, v - gc.mean(v, axis=0, keepdims=True)]
    return outs, [x, v]


def g_linalg_movement(dt):
    a, b, c, t = _inputs(dt, [(3, 4), (4, 5), (5,), (2, 3, 4)])
    h = gc.relu(a @ b + c)
    outs = [h, gc.matmul(a.T, a), gc.transpose(t, (2, 0, 1)) * 1.5, gc.reshape(t, (6, 4)) @ b,
            gc.reshape(a, (2, 6)), gc.reshape(gc.transpose(a), (12,)), gc.expand_dims(c, 0) + h,
            gc.broadcast_to(c, (3, 5)) * h, (a @ b).T @ a, gc.tanh(gc.reshape(h, (5, 3)).T)]
    return outs, [a, b, c, t]


def g_softmax(dt):
    z, w = _inputs(dt, [(4, 5), (5, 5)])
    outs = [gc.softmax(z), gc.log_softmax(z), gc.softmax(z, axis=0), gc.log_softmax(z @ w, axis=0),
            gc.softmax(gc.tanh(z) * 3.0)]
    return outs, [z, w]


def g_where_compare(dt):
    a, b = _inputs(dt, [(3, 4), (4,)])
    lab = gc.input("lab3", (4,), dtype="int64")
    outs = [gc.where(a > b, a, b * 2.0), gc.where(a <= 0.0, -a, a * a), a >= b, a < 0.2,
            gc.equal(lab, 1), gc.not_equal(lab, 2), gc.cast(a > b, dt) * a,
            gc.where(gc.equal(lab, 1), b, 0.0), gc.one_hot(lab, 3, dtype=dt)]
    return outs, [a, b]


def g_softmax_ce(dt):
    z, w = _inputs(dt, [(6, 5), (5, 3)])
    lab = gc.input("lab6", (6,), dtype="int64")
    logits = gc.tanh(z) @ w
    return [gc.softmax_cross_entropy(logits, lab), gc.mse(logits, 0.5), gc.mae(z, 0.1),
            gc.binary_cross_entropy_with_logits(z, gc.sigmoid(z))], [z, w]


GRAPHS = [g_unary, g_binary_broadcast, g_reductions, g_linalg_movement, g_softmax, g_where_compare,
          g_softmax_ce]


# every graph on "cpu" in float64; float32 and "parallel" on the graphs where they differ
# most (precision of transcendental ops, reductions and GEMMs under prange). Each case is a
# cold Numba compile of a few seconds, so the grid is deliberately not the full product.
CASES = ([(g, "cpu", "float64") for g in GRAPHS]
         + [(g, "cpu", "float32") for g in (g_unary, g_softmax_ce)]
         + [(g, "parallel", "float32") for g in (g_reductions, g_linalg_movement, g_softmax, g_where_compare)])


@pytest.mark.parametrize("build,target,dt", CASES,
                         ids=[f"{g.__name__[2:]}-{t}-{d}" for g, t, d in CASES])
def test_hand_written_graph(build, target, dt):
    outs, wrt = build(dt)
    check_targets(outs, wrt, targets=(target,))


def test_parallel_large_loops_agree():
    """Loops above the prange threshold really run in parallel and still agree."""
    x, b = _inputs("float64", [(128, 64), (64,)], prefix="big")
    w = gc.input("bigw", (64, 64), dtype="float64")
    h = gc.relu(x @ w + b)
    outs = [h, gc.sum(h, axis=0), gc.softmax(h), gc.mean(gc.square(h - gc.mean(h, axis=1, keepdims=True)))]
    check_targets(outs, [x, w, b], targets=("parallel",))


# ---- random graphs -----------------------------------------------------------------------------

SHAPES = [(3, 4), (4,), (3, 1), (1,), (4, 3), (2, 6)]
RESHAPES = {12: [(3, 4), (4, 3), (2, 6), (12,)], 4: [(4,), (2, 2), (1, 4)], 3: [(3,), (3, 1), (1, 3)]}




@st.composite
def random_graph(draw, dt):
    n_in = draw(st.integers(1, 3))
    shapes = [draw(st.sampled_from(SHAPES)) for _ in range(n_in)]
    inputs = _inputs(dt, shapes, prefix="r")
    inputs = list({id(x): x for x in inputs}.values())
    pool = list(inputs)
    n_ops = draw(st.integers(2, 7))
    pick = lambda: draw(st.sampled_from(pool))  # noqa: E731
    for _ in range(n_ops):
        kind = draw(st.sampled_from(["unary", "binary", "binary", "reduce", "matmul", "transpose",
                                     "reshape", "softmax", "where"]))
        a = pick()
        out = None
        if kind == "unary":
            f = draw(st.sampled_from(["exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs", "neg",
                                      "square", "softplus", "gelu", "pow3", "div1"]))
            out = {"exp": lambda: gc.exp(gc.tanh(a)), "log": lambda: gc.log(a * a + 1.0),
                   "sqrt": lambda: gc.sqrt(a * a + 0.5), "tanh": lambda: gc.tanh(a),
                   "sigmoid": lambda: gc.sigmoid(a), "relu": lambda: gc.relu(a), "abs": lambda: gc.abs(a),
                   "neg": lambda: -a, "square": lambda: gc.square(a), "softplus": lambda: gc.softplus(a),
                   "gelu": lambda: gc.gelu(a), "pow3": lambda: a ** 3,
                   "div1": lambda: 1.0 / (a * a + 1.0)}[f]()
        elif kind == "binary":
            b = pick()
            if broadcastable(a.shape, b.shape):
                f = draw(st.sampled_from(["add", "sub", "mul", "div", "maximum", "minimum"]))
                out = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
                       "div": lambda: a / (b * b + 1.0), "maximum": lambda: gc.maximum(a, b),
                       "minimum": lambda: gc.minimum(a, b)}[f]()
        elif kind == "reduce" and a.ndim >= 1:
            axis = draw(st.one_of(st.none(), st.integers(0, a.ndim - 1)))
            keep = draw(st.booleans())
            f = draw(st.sampled_from([gc.sum, gc.mean, gc.max]))
            out = f(a, axis=axis, keepdims=keep)
        elif kind == "matmul" and a.ndim == 2:
            cands = [b for b in pool if b.ndim == 2 and b.shape[0] == a.shape[1]]
            if cands:
                out = a @ draw(st.sampled_from(cands))
            else:
                out = a @ a.T
        elif kind == "transpose" and a.ndim >= 2:
            out = a.T
        elif kind == "reshape" and a.ndim >= 1:
            size = int(np.prod(a.shape))
            opts = [s for s in RESHAPES.get(size, []) if s != a.shape]
            if opts:
                out = gc.reshape(a, draw(st.sampled_from(opts)))
        elif kind == "softmax" and a.ndim >= 1:
            axis = draw(st.integers(-1, a.ndim - 1))
            out = (gc.softmax if draw(st.booleans()) else gc.log_softmax)(a, axis=axis)
        elif kind == "where":
            b, c = pick(), pick()
            if broadcastable(a.shape, b.shape, c.shape):
                cmp = draw(st.sampled_from([gc.greater, gc.less_equal, gc.greater_equal, gc.less]))
                out = gc.where(cmp(a, b), c, b * 0.5)
        if out is not None and out.dtype.kind == "f":
            pool.append(out)
    derived = pool[len(inputs):] or [gc.tanh(inputs[0])]
    outs = list({id(x): x for x in derived[-3:]}.values())
    return outs, inputs


@settings(max_examples=7, derandomize=True, deadline=None)
@given(st.data())
def test_random_graphs_cpu_float64(data):
    outs, wrt = data.draw(random_graph("float64"))
    check_targets(outs, wrt, targets=("cpu",))


@settings(max_examples=4, derandomize=True, deadline=None)
@given(st.data())
def test_random_graphs_float32_both_targets(data):
    outs, wrt = data.draw(random_graph("float32"))
    check_targets(outs, wrt, targets=NATIVE)


def test_grad_outputs_are_graphs_and_compile():
    """Second-order: the gradient of a gradient compiles and agrees (grads are graphs)."""
    (x,) = _inputs("float64", [(3, 4)], prefix="h")
    y = gc.sum(gc.tanh(x) * x)
    (g,) = gc.grad(y, [x])
    gg = gc.grad(gc.sum(g * g), [x])
    check_targets([g, *gg], [x], targets=("cpu",))


def test_scalar_input_feed():
    s = gc.input("scalar_in", (), dtype="float64")
    (v,) = _inputs("float64", [(4,)], prefix="sc")
    outs = [s * 2.0, v * s]
    for target in ("numpy", "cpu"):
        got = gc.compile(outs, target=target)(scalar_in=np.float64(3.0), **{v.name: np.ones(4)})
        assert got[0].shape == () and got[1].shape == (4,), target
        np.testing.assert_allclose(got[1], 3.0)
