"""Each pass (specialize, simplify, fold_constants, cse, dce, and the whole pipeline) is a
pure Graph -> Graph function: it leaves its input untouched and its output evaluates, in the
interpreter, to the same values. And the rewrite rules actually fire.

Interpreter only: nothing here compiles native code.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.ir import Graph
from graphc.passes import PIPELINE, cse, dce, fold_constants, run_pipeline, simplify, specialize
from graphc.passes.simplify import FOLD_LIMIT

from test_compile_targets import GRAPHS, _feeds, random_graph, scalarize

PASSES = {**PIPELINE, "pipeline": run_pipeline}


def _snapshot(g: Graph):
    return [id(n) for n in g.nodes], g.dump(), g.fingerprint(), tuple(id(o) for o in g.outputs)


def _eval(g: Graph, feeds):
    return gc.evaluate(list(g.outputs), feeds, {})


def check_pass(fn, g: Graph, seed=0):
    before = _snapshot(g)
    out = fn(g)
    assert isinstance(out, Graph)
    assert _snapshot(g) == before, "the pass mutated its input graph"
    assert out.names == g.names
    assert len(out.nodes) <= len(g.nodes)
    feeds = _feeds(g.inputs, seed)
    for a, b, nm in zip(_eval(out, feeds), _eval(g, feeds), g.names):
        assert a.shape == b.shape and a.dtype == b.dtype, nm
        if b.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=nm)
        else:
            np.testing.assert_array_equal(a, b, err_msg=nm)
    assert fn(g).fingerprint() == out.fingerprint()  # deterministic
    return out


def _with_grads(outs, wrt):
    y = scalarize(outs)
    return Graph([*outs, y, *gc.grad(y, list(wrt))])


@pytest.mark.parametrize("name", list(PASSES))
@pytest.mark.parametrize("build", GRAPHS, ids=lambda f: f.__name__[2:])
def test_pass_is_pure_and_preserves_values(build, name):
    check_pass(PASSES[name], _with_grads(*build("float64")))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_pipeline_preserves_values_on_random_graphs(data):
    g = _with_grads(*data.draw(random_graph("float64")))
    for fn in PASSES.values():
        check_pass(fn, g)


def test_training_graph_through_pipeline():
    """The optimizer's training graph (hyper-parameter inputs, state, step counter)."""
    x = gc.input("sx", (5, 3), dtype="float64")
    W = gc.param("sW", (3, 2), dtype="float64")
    step = gc.compile(gc.mean(gc.square(gc.tanh(x @ W))), optimizer=gc.optim.Adam(1e-2), target="numpy")
    g = step._program.graph
    feeds = {"sx": np.random.default_rng(0).standard_normal((5, 3))}
    for k, v in step.optimizer.hyperparameters.items():
        feeds["hyper:" + k] = np.asarray(v, dtype="float64")
    values = {n: step._store.view(n) for n in step._store.layout}
    out = run_pipeline(g)
    for a, b in zip(gc.evaluate(list(out.outputs), feeds, values), gc.evaluate(list(g.outputs), feeds, values)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


# ---- the rewrite rules fire ---------------------------------------------------------------------

X = gc.input("rx", (3, 4), dtype="float64")
T3 = gc.input("rt", (2, 3, 4), dtype="float64")


def _simpl(node):
    (out,) = simplify(Graph([node])).outputs
    return out


@pytest.mark.parametrize("expr", [
    lambda: X * 1.0, lambda: 1.0 * X, lambda: X + 0.0, lambda: 0.0 + X, lambda: X - 0.0, lambda: X / 1.0,
    lambda: -(-X), lambda: X ** 1, lambda: X.T.T, lambda: gc.stop_gradient(X),
    lambda: gc.reshape(gc.reshape(X, (12,)), (3, 4)), lambda: gc.cast(gc.cast(X, "float64"), "float64"),
    lambda: gc.transpose(gc.transpose(T3, (1, 0, 2)), (1, 0, 2)).reshape((3, 4, 2)).reshape((2, 3, 4)),
    lambda: ((X * 1.0 + 0.0) / 1.0).T.T,
], ids=["x*1", "1*x", "x+0", "0+x", "x-0", "x/1", "--x", "x**1", "double_transpose", "stop_gradient",
        "reshape_roundtrip", "noop_cast", "transpose_and_reshape_chain", "nested"])
def test_identity_rewrites_fire(expr):
    assert _simpl(expr()) is (T3 if "T3" in expr.__code__.co_names else X)


def test_pow2_becomes_square():
    y = _simpl(X ** 2)
    assert y.op == "square" and y.inputs == (X,)
    y = _simpl(gc.exp(X) ** 2.0 + 1.0)
    assert [n.op for n in Graph([y]).nodes if n.opdef.kind != "source"] == ["exp", "square", "add"]


def test_reshape_of_reshape_is_one_reshape():
    y = _simpl(gc.reshape(gc.reshape(X, (12,)), (2, 6)))
    assert y.op == "reshape" and y.inputs == (X,) and y.shape == (2, 6)


def test_transposes_compose():
    y = _simpl(gc.transpose(gc.transpose(T3, (1, 0, 2)), (0, 2, 1)))
    assert y.op == "transpose" and y.inputs == (T3,)
    want = np.transpose(np.transpose(np.zeros((2, 3, 4)), (1, 0, 2)), (0, 2, 1)).shape
    assert y.shape == want
    v = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(gc.evaluate([y], {"rt": v}, {})[0],
                                  np.transpose(np.transpose(v, (1, 0, 2)), (0, 2, 1)))


def test_broadcast_of_broadcast_is_one():
    v = gc.input("rv", (4,), dtype="float64")
    y = _simpl(gc.broadcast_to(gc.broadcast_to(v, (3, 4)), (2, 3, 4)))
    assert y.op == "broadcast_to" and y.inputs == (v,)


def test_x_plus_broadcasting_zero_is_kept():
    """x + zeros((2, 3, 4)) broadcasts x: dropping the add would change the shape."""
    y = _simpl(X + gc.const(np.zeros((2, 3, 4))))
    assert y.shape == (2, 3, 4)
    np.testing.assert_array_equal(gc.evaluate([y], {"rx": np.ones((3, 4))}, {})[0], np.ones((2, 3, 4)))


def test_fold_constants():
    a = gc.const(np.arange(6.0).reshape(2, 3))
    y = fold_constants(Graph([gc.exp(a) * 2.0 + gc.sum(a)]))
    (o,) = y.outputs
    assert o.op == "const"
    np.testing.assert_allclose(o.attrs["value"].array, np.exp(np.arange(6.0).reshape(2, 3)) * 2 + 15)
    # partially constant: only the constant part folds
    (o,) = fold_constants(Graph([X * (gc.const(2.0, "float64") + 3.0)])).outputs
    assert o.op == "mul" and o.inputs[0] is X and o.inputs[1].op == "const"
    assert float(o.inputs[1].attrs["value"].array) == 5.0
    # large constant results are not materialized at compile time
    big = gc.const(np.ones(FOLD_LIMIT + 1))
    (o,) = fold_constants(Graph([gc.exp(big)])).outputs
    assert o.op == "exp"


def test_cse_merges_what_simplify_exposes():
    a = gc.exp(X * 1.0)
    b = gc.exp(X)
    assert a is not b
    g = Graph([a + b])
    out = cse(simplify(g))
    keys = [(n.op, tuple(id(x) for x in n.inputs), repr(sorted(n.attrs.items()))) for n in out.nodes]
    assert len(keys) == len(set(keys))
    assert [n.op for n in out.nodes if n.opdef.kind != "source"] == ["exp", "add"]


def test_dce_drops_unreachable_nodes():
    g = Graph([X * 1.0 + gc.sum(X * 0.0) * 0.0])
    out = dce(fold_constants(simplify(g)))
    assert len(out.nodes) < len(g.nodes)
    assert all(n.op != "mul" or n.inputs[1].op != "const" or float(n.inputs[1].attrs["value"].array) != 1.0
               for n in out.nodes)


def test_run_pipeline_names():
    g = Graph([X * 1.0])
    assert run_pipeline(g, []).outputs == g.outputs
    assert run_pipeline(g, ["simplify"]).outputs == (X,)
    with pytest.raises(ValueError, match="unknown pass"):
        run_pipeline(g, ["no_such_pass"])


# ---- specialize ---------------------------------------------------------------------------------

def test_specialize_batch_dim():
    x = gc.input("spx", (None, 6), dtype="float64")
    y = gc.input("spy", (None,), dtype="int64")
    h = gc.reshape(x, (None, 2, 3))
    outs = [gc.mean(x), gc.mean(x, axis=0), gc.zeros_like(x) + 1.0, gc.sum(h, axis=2),
            gc.reshape(h, (None, 3, -1)), gc.softmax_cross_entropy(x, y), gc.one_hot(y, 6, "float64") * x]
    g = Graph(outs + gc.grad(gc.mean(x * x) + outs[5], [x]))
    assert any(None in n.shape for n in g.nodes)
    for batch in (1, 5):
        before = _snapshot(g)
        s = specialize(g, batch)
        assert _snapshot(g) == before
        assert all(None not in n.shape for n in s.nodes)
        assert not any(n.op in ("dim_size", "broadcast_like") for n in s.nodes)
        rng = np.random.default_rng(batch)
        feeds = {"spx": rng.standard_normal((batch, 6)), "spy": rng.integers(0, 6, batch)}
        for a, b in zip(_eval(s, feeds), _eval(g, feeds)):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-12)
        check_pass(run_pipeline, s)
