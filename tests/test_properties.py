"""Property tests: random graphs and random small training steps, compiled on "cpu" and
"parallel", agree with the NumPy interpreter (target="numpy"), forward values and
gc.grad outputs, parameters and optimizer state.

The graphs draw elementwise ops, broadcasting (size-1 dims included), reductions (sum, mean,
max over axes, keepdims), matmul (1x1 and (k,1)/(1,k) operands included), transpose,
reshape, expand_dims, broadcast_to and softmax, fed finite values or (a test of its own in the
quick suite, drawn in the slow run) NaN, infinities and signed zeros among them, whose positions
must match the interpreter's exactly; the training steps draw tiny Dense nets (batch size 1
included), losses and optimizers, with and without check_numerics.

Two runs:
- the quick suite (default ``python -m pytest``): a few derandomized examples, the same
  graphs every run, so the shared test cache makes them cheap;
- ``python -m pytest -q -m slow`` (.ci/run): NOT derandomized, up to a few hundred examples
  per test but bounded by a time budget (GRAPHC_PROPERTY_BUDGET_S seconds per test, default
  45: every new graph is a Numba compile of 1-3 s on 2 cores, so a run compiles a few dozen
  of them), so each CI run explores new graphs. A failure prints the falsifying example and
  a seed to reproduce it (``--hypothesis-seed=...``).
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc
from _helpers import broadcastable, random_feeds

NATIVE = ("cpu", "parallel")
BUDGET_S = float(os.environ.get("GRAPHC_PROPERTY_BUDGET_S", "45"))
SLOW = settings(max_examples=300, derandomize=False, deadline=None)


def _quick(n):
    return settings(max_examples=n, derandomize=True, deadline=None)


class _Budget:
    """Examples after the budget is spent pass without drawing a graph (hypothesis has no
    time limit of its own; this keeps the slow run under its few minutes)."""

    def __init__(self):
        self.start = None
        self.failed = False  # after a failure, shrinking must see every example run

    def spent(self) -> bool:
        now = time.monotonic()
        if self.start is None:
            self.start = now
        return not self.failed and now - self.start > BUDGET_S

    def run(self, check, *args) -> None:
        try:
            check(*args)
        except BaseException:
            self.failed = True
            raise


# ---- comparing -------------------------------------------------------------------------------

def _close(got, want, rtol, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    # NaN and infinities exactly where the interpreter has them; the rest close
    for special in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(special(got), special(want), err_msg=f"{what}: {special.__name__}")
    ok = np.isfinite(want)
    got, want = got[ok], want[ok]
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


def _feeds(nodes, batch, seed, specials=False):
    """Random feeds; with ``specials`` about a third of the float values are NaN, +-inf or
    +-0.0 (compiled with check_finite=False)."""
    feeds = random_feeds(nodes, batch, seed, high=3)
    if specials:
        rng = np.random.default_rng(seed + 7919)
        for k, v in feeds.items():
            if v.dtype.kind == "f":
                pick = rng.random(v.shape) < 0.35
                vals = rng.choice(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], v.dtype), v.shape)
                feeds[k] = np.where(pick, vals, v).astype(v.dtype)
    return feeds


# ---- random graphs ---------------------------------------------------------------------------

# dims from {1, 2, 3}: size-1 dims everywhere, and few distinct kernels (they are shape-generic)
SHAPES = [(3,), (1,), (2, 3), (3, 1), (1, 3), (1, 1), (2, 1), (3, 2), (2, 2), (1, 2, 3), (2, 1, 3)]




def _reshapes(size):
    """Shapes of ``size`` elements with dims <= 3 (size-1 dims included), rank <= 3."""
    out = []
    for r in (1, 2, 3):
        for s in np.ndindex(*(3,) * r):
            s = tuple(d + 1 for d in s)
            if int(np.prod(s)) == size:
                out.append(s)
    return out


UNARY = {
    "exp": lambda a: gc.exp(gc.tanh(a)), "log": lambda a: gc.log(a * a + 1.0),
    "sqrt": lambda a: gc.sqrt(a * a + 0.5), "tanh": gc.tanh, "sigmoid": gc.sigmoid, "relu": gc.relu,
    "abs": gc.abs, "neg": lambda a: -a, "square": gc.square, "softplus": gc.softplus, "gelu": gc.gelu,
    "pow3": lambda a: a ** 3, "recip": lambda a: 1.0 / (a * a + 1.0), "leaky": lambda a: gc.leaky_relu(a, 0.1),
    "elu": lambda a: gc.elu(a, 0.7), "clip": lambda a: gc.clip(a, -0.5, 0.3),
    "sign": lambda a: gc.sign(a) * a, "softsign": gc.softsign, "log1p": lambda a: gc.log1p(gc.abs(a)),
}
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1.0), "maximum": gc.maximum, "minimum": gc.minimum,
    "where": lambda a, b: gc.where(a > b, a, b * 0.5),
}


@st.composite
def random_graph(draw, dt="float64"):
    """(outputs, inputs): 2-7 random ops over 1-3 inputs of shapes from SHAPES."""
    shapes = draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=3))
    inputs = [gc.input(f"p{i}_{'x'.join(map(str, s))}", s, dtype=dt) for i, s in enumerate(shapes)]
    pool = list(inputs)
    for _ in range(draw(st.integers(2, 7))):
        a = draw(st.sampled_from(pool))
        kind = draw(st.sampled_from(["unary", "binary", "binary", "reduce", "reduce", "matmul", "matmul",
                                     "transpose", "reshape", "expand", "broadcast", "softmax"]))
        out = None
        if kind == "unary":
            out = UNARY[draw(st.sampled_from(sorted(UNARY)))](a)
        elif kind == "binary":
            b = draw(st.sampled_from(pool))
            if broadcastable(a.shape, b.shape):
                out = BINARY[draw(st.sampled_from(sorted(BINARY)))](a, b)
        elif kind == "reduce" and a.ndim >= 1:
            axes = draw(st.one_of(st.none(), st.lists(st.integers(0, a.ndim - 1), min_size=1, max_size=a.ndim,
                                                      unique=True).map(tuple)))
            if axes is not None and len(axes) == 1 and draw(st.booleans()):
                axes = axes[0] - a.ndim if draw(st.booleans()) else axes[0]  # an int axis, maybe negative
            f = draw(st.sampled_from([gc.sum, gc.mean, gc.max]))
            out = f(a, axis=axes, keepdims=draw(st.booleans()))
        elif kind == "matmul" and a.ndim == 2:
            cands = [b for b in pool if b.ndim == 2 and b.shape[0] == a.shape[1]]
            if cands:
                out = a @ draw(st.sampled_from(cands))
            else:
                out = draw(st.sampled_from([lambda: a @ a.T, lambda: a.T @ a]))()
        elif kind == "transpose" and a.ndim >= 2:
            perm = tuple(draw(st.permutations(range(a.ndim))))
            out = gc.transpose(a, perm)
        elif kind == "reshape":
            size = int(np.prod(a.shape)) if a.shape else 1
            opts = [s for s in _reshapes(size) if s != a.shape]
            if opts:
                out = gc.reshape(a, draw(st.sampled_from(opts)))
        elif kind == "expand" and a.ndim <= 2:
            out = gc.expand_dims(a, draw(st.integers(0, a.ndim)))
        elif kind == "broadcast" and a.ndim <= 2:
            target = (draw(st.sampled_from([1, 2])),) + tuple(3 if d == 1 and draw(st.booleans()) else d
                                                               for d in a.shape)
            out = gc.broadcast_to(a, target)
        elif kind == "softmax" and a.ndim >= 1:
            axis = draw(st.integers(-1, a.ndim - 1))
            out = (gc.softmax if draw(st.booleans()) else gc.log_softmax)(a, axis=axis)
        if out is not None:
            pool.append(out)
    derived = pool[len(inputs):] or [gc.tanh(inputs[0])]
    outs = list({id(x): x for x in derived[-3:]}.values())
    return outs, inputs


def check_graph(outs, wrt, target, seed=0, specials=False):
    """outs, a weighted sum y of them and gc.grad(y, wrt) on ``target`` vs the interpreter;
    with ``specials``, NaN, infinities and signed zeros among the feeds."""
    y = None
    for k, o in enumerate(outs):
        w = np.linspace(-1.0, 1.5, int(np.prod(o.shape)) if o.shape else 1).reshape(o.shape) + 0.1 * k
        t = gc.sum(o * gc.const(w.astype(o.dtype)))
        y = t if y is None else y + t
    everything = [*outs, y, *gc.grad(y, list(wrt))]
    ref = gc.compile(everything, target="numpy", check_finite=not specials)
    feeds = _feeds(ref._inputs, None, seed, specials)
    want = ref(**feeds)
    got = gc.compile(everything, target=target, check_finite=not specials)(**feeds)
    for i, (a, b) in enumerate(zip(got, want)):
        _close(a, b, 1e-9, f"{target} output {i} of {len(want)} ({everything[i]!r})")


# ---- random training steps --------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda: gc.optim.SGD(0.1), "momentum": lambda: gc.optim.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: gc.optim.Adam(0.05), "adamw": lambda: gc.optim.AdamW(0.05),
    "rmsprop": lambda: gc.optim.RMSprop(0.01), "adagrad": lambda: gc.optim.Adagrad(0.1),
    "lion": lambda: gc.optim.Lion(0.01), "clipped": lambda: gc.optim.Adam(0.05, global_clipnorm=0.5),
}
ACTIVATIONS = {"relu": gc.relu, "tanh": gc.tanh, "sigmoid": gc.sigmoid, "none": lambda h: h}


@st.composite
def random_net(draw):
    """A build function for a tiny Dense net + loss, its optimizer, batch sizes, options."""
    k = draw(st.integers(1, 3))
    widths = [k] + draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
    acts = [draw(st.sampled_from(sorted(ACTIVATIONS))) for _ in widths[1:-1]]
    loss = draw(st.sampled_from(["mse", "mae", "sce", "bce", "mean_square"]))
    opt = draw(st.sampled_from(sorted(OPTIMIZERS)))
    batches = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    numerics = draw(st.booleans())

    def build():
        x = gc.input("x", (None, k), dtype="float64")
        h = x
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            W = gc.param(f"W{i}", (a, b), dtype="float64", init="glorot_uniform")
            h = h @ W + gc.param(f"b{i}", (b,), dtype="float64", init="ones")
            if i < len(acts):
                h = ACTIVATIONS[acts[i]](h)
        c = widths[-1]
        if loss == "sce":
            return gc.softmax_cross_entropy(h, gc.input("y", (None,), dtype="int64"))
        t = gc.input("t", (None, c), dtype="float64")
        if loss == "mse":
            return gc.mse(h, t)
        if loss == "mae":
            return gc.mae(h, t)
        if loss == "bce":
            return gc.binary_cross_entropy_with_logits(h, gc.sigmoid(t))
        return gc.mean(gc.square(h - t))

    return build, opt, batches, numerics, (widths, acts, loss)


def check_training(build, opt, batches, numerics, target, steps=2):
    ref = gc.compile(build(), optimizer=OPTIMIZERS[opt](), target="numpy")
    step = gc.compile(build(), optimizer=OPTIMIZERS[opt](), target=target, check_numerics=numerics)
    classes = None
    for n in ref.graph.nodes:
        if n.op == "softmax_cross_entropy":
            classes = n.inputs[0].shape[1]
    for i in range(steps):
        for batch in batches:
            feeds = _feeds(ref._inputs, batch, 10 * i + batch)
            if "y" in feeds:
                feeds["y"] = np.random.default_rng(i).integers(0, classes, batch)
            _close(step(**feeds)["loss"], ref(**feeds)["loss"], 1e-9, f"{target} loss, batch {batch}, step {i}")
    want, got = ref.state_dict(), step.state_dict()
    for section in ("params", "state"):
        assert got[section].keys() == want[section].keys()
        for name, v in want[section].items():
            _close(got[section][name], v, 1e-8, f"{target} {section} {name!r}")


# ---- the quick, derandomized suite ------------------------------------------------------------

@pytest.mark.parametrize("target", NATIVE)
@_quick(4)
@given(random_graph())
def test_random_graphs(target, graph):
    check_graph(*graph, target)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's NumPy on NaN and infinities
@pytest.mark.parametrize("target", NATIVE)
@_quick(4)
@given(random_graph())
def test_random_graphs_with_nan_and_inf(target, graph):
    check_graph(*graph, target, specials=True)


@pytest.mark.parametrize("target", NATIVE)
@_quick(3)
@given(random_net())
def test_random_training_steps(target, net):
    build, opt, batches, numerics, _ = net
    check_training(build, opt, batches, numerics, target)


# ---- the slow, randomized run (-m slow) ----------------------------------------------------------
# Everything is drawn before the budget check: a test that stopped drawing early once its
# budget is spent would make hypothesis' data generation inconsistent between examples.

_graph_budget, _train_budget = _Budget(), _Budget()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@SLOW
@given(random_graph(), st.sampled_from(NATIVE), st.booleans())
def test_random_graphs_explore(graph, target, specials):
    if not _graph_budget.spent():
        _graph_budget.run(check_graph, *graph, target, 0, specials)


@pytest.mark.slow
@SLOW
@given(random_net(), st.sampled_from(NATIVE))
def test_random_training_steps_explore(net, target):
    if not _train_budget.spent():
        build, opt, batches, numerics, _ = net
        _train_budget.run(check_training, build, opt, batches, numerics, target)


# ---- regressions found while writing these tests ---------------------------------------------------

class _RememberPrevious(gc.optim.Optimizer):
    """SGD whose state 'prev' holds the parameter's value before the step: the update of one
    slot is the OLD value of another slot that the same step overwrites."""

    def __init__(self, learning_rate=0.1):
        super().__init__(learning_rate=learning_rate)

    def state_spec(self, param):
        return {"prev": "zeros"}

    def update(self, param, grad, state, step):
        # the 0 * prev term makes the step read the old 'prev' too (a write-after-read both ways)
        return param - self.hyper("learning_rate") * grad + 0.0 * state["prev"], {"prev": param}


@pytest.mark.parametrize("target,numerics", [("cpu", False), ("cpu", True), ("parallel", False)])
def test_state_updated_to_the_old_value_of_another_updated_slot(target, numerics):
    def build():
        x = gc.input("x", (None, 3))
        t = gc.input("t", (None, 1))
        W = gc.param("W", (3, 1), init="glorot_uniform")
        return gc.mse(x @ W + gc.param("b", (1,), init="ones"), t)

    ref = gc.compile(build(), optimizer=_RememberPrevious(), target="numpy")
    step = gc.compile(build(), optimizer=_RememberPrevious(), target=target, check_numerics=numerics)
    w0 = step.params["W"]
    for i in range(2):
        feeds = _feeds(ref._inputs, 4, i)
        w_before = step.params["W"]
        _close(step(**feeds)["loss"], ref(**feeds)["loss"], 1e-6, "loss")
        np.testing.assert_array_equal(step.state_dict()["state"]["W/prev"], w_before)
    assert not np.array_equal(step.params["W"], w0)
    for name, v in ref.state_dict()["state"].items():
        _close(step.state_dict()["state"][name], v, 1e-6, name)
