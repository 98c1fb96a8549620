"""The DSL and IR: hash-consing, immutability, dtype rules, the batch dim, initializers,
graph inspection, the interpreter against hand-written NumPy, compile(target="numpy")
output structures, and shared subexpressions in autodiff."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

import graphc as gc
from graphc.initializers import init_value
from graphc.ir import topo_order

INITS = ("zeros", "ones", "normal", "uniform", "glorot_uniform", "glorot_normal", "he_uniform", "he_normal")


# ---- hash-consing and immutability ------------------------------------------------------------------

def test_hash_consing_same_node_same_object():
    x = gc.input("hc_x", (None, 3))
    W = gc.param("hc_W", (3, 2))
    assert gc.input("hc_x", (None, 3)) is x
    assert (x @ W) is (x @ W)
    assert gc.relu(x @ W + 1.0) is gc.relu(x @ W + 1.0)
    assert gc.sum(x, axis=1) is gc.sum(x, axis=-1)  # axes normalized before hashing
    assert gc.const(np.arange(3.0)) is gc.const(np.arange(3.0))
    # different op, inputs or attrs: different nodes
    assert gc.leaky_relu(x, 0.1) is not gc.leaky_relu(x, 0.2)
    assert (x + 1.0) is not (1.0 + x)  # operand order is part of the key
    assert gc.const(1.0) is not gc.const(1)  # dtype is part of a const's identity
    assert gc.const(np.float32(1)) is not gc.const(np.float64(1), dtype="float64")
    assert gc.input("hc_x", (None, 3), dtype="float64") is not x


def test_cse_for_free_in_graph_size():
    x = gc.input("cse_x", (4, 3))
    a = gc.tanh(x * 2.0) + gc.tanh(x * 2.0)
    g = gc.Graph([a])
    assert [n.op for n in g.nodes].count("tanh") == 1
    assert [n.op for n in g.nodes].count("mul") == 1


def test_nodes_are_immutable():
    x = gc.input("im_x", (3,))
    y = x * 2.0
    with pytest.raises(AttributeError):
        y.shape = (4,)
    with pytest.raises(AttributeError):
        y.op = "add"
    with pytest.raises(AttributeError):
        y.foo = 1
    with pytest.raises(TypeError):
        bool(y)


def test_const_copies_its_value():
    v = np.array([1.0, 2.0, 3.0])
    c = gc.const(v)
    v[0] = 100.0
    (cv,) = gc.evaluate([c], {}, {})
    np.testing.assert_array_equal(cv, [1.0, 2.0, 3.0])
    assert not c.attrs["value"].array.flags.writeable
    init = np.ones((2, 2), np.float32)
    p = gc.param("cc_p", (2, 2), init=init)
    init[0, 0] = 5.0
    np.testing.assert_array_equal(init_value(p), np.ones((2, 2)))


# ---- dtypes --------------------------------------------------------------------------------------

def test_python_scalars_are_weakly_typed():
    x32 = gc.input("wt_x32", (None, 4))
    x64 = gc.input("wt_x64", (None, 4), dtype="float64")
    i = gc.input("wt_i", (3,), dtype="int64")
    for e in (x32 * 2.0, 2.0 * x32, x32 / 3, x32 + 1, 1 - x32, x32 ** 2, gc.maximum(x32, 0),
              gc.where(x32 > 0, x32, 0), gc.clip(x32, -1, 1), -x32, abs(x32)):
        assert e.dtype == np.float32, e
    for e in (x64 * 2.0, 1.0 - x64, x64 / 7):
        assert e.dtype == np.float64, e
    assert (i + 1).dtype == np.int64 and (i * 2).dtype == np.int64
    assert (x32 > 0.5).dtype == np.bool_
    # tensors promote like NumPy
    assert (x32 + x64).dtype == np.float64
    assert (gc.cast(i, "float32") + 1.0).dtype == np.float32
    assert gc.const(1.0).dtype == np.float32  # Python floats default to float32, like params
    assert gc.const(np.ones(2)).dtype == np.float64  # arrays keep their dtype


def test_float64_everywhere():
    """A float64 model: every float node of the forward and backward graph is float64."""
    x = gc.input("f64_x", (None, 4), dtype="float64")
    y = gc.input("f64_y", (None,), dtype="int64")
    W1 = gc.param("f64_W1", (4, 8), dtype="float64")
    b1 = gc.param("f64_b1", (8,), dtype="float64")
    W2 = gc.param("f64_W2", (8, 3), dtype="float64")
    h = gc.gelu(x @ W1 + b1)
    h = gc.elu(h) + gc.leaky_relu(h) + gc.softplus(h) + gc.sigmoid(h) * gc.tanh(h) + gc.clip(h, -1, 1)
    logits = gc.log_softmax(h @ W2)
    loss = (gc.softmax_cross_entropy(logits, y) + gc.mse(gc.softmax(logits), 0.3)
            + gc.binary_cross_entropy_with_logits(logits, 0.5) + gc.mean(gc.sqrt(gc.square(h) + 1.0))
            + gc.max(gc.abs(h)) * 1e-3 + gc.mean(gc.exp(-h * h) / (1.0 + gc.log(1.0 + h * h))))
    grads = gc.grad(loss, [W1, b1, W2])
    for n in topo_order([loss, *grads]):
        if n.dtype.kind == "f":
            assert n.dtype == np.float64, n
    assert all(g.dtype == np.float64 for g in grads)
    rng = np.random.default_rng(0)
    feeds = {x.name: rng.standard_normal((5, 4)), y.name: rng.integers(0, 3, 5)}
    vals = gc.evaluate([loss, *grads], feeds, {p.name: init_value(p) for p in (W1, b1, W2)})
    assert all(v.dtype == np.float64 and np.all(np.isfinite(v)) for v in vals)
    f = gc.compile([loss, *grads], target="numpy")
    out = f(**feeds)
    assert all(v.dtype == np.float64 for v in out)
    np.testing.assert_allclose(out[0], vals[0], rtol=1e-12)


def test_float32_grads_stay_float32():
    x = gc.input("f32_x", (None, 4))
    W = gc.param("f32_W", (4, 2))
    loss = gc.mean(gc.tanh(x @ W) * 0.5)
    (g,) = gc.grad(loss, [W])
    assert g.dtype == np.float32
    assert all(n.dtype != np.float64 for n in topo_order([g]))


# ---- the batch dim ---------------------------------------------------------------------------------

def test_none_batch_dim_flows_through_ops():
    x = gc.input("nb_x", (None, 4))
    W = gc.param("nb_W", (4, 6))
    h = gc.relu(x @ W + 1.0)
    assert h.shape == (None, 6)
    assert gc.sum(h, axis=1).shape == (None,)
    assert gc.mean(h, axis=0).shape == (6,)
    assert gc.max(h, axis=1, keepdims=True).shape == (None, 1)
    assert gc.softmax(h).shape == (None, 6)
    r = gc.reshape(h, (None, 2, 3))
    assert r.shape == (None, 2, 3)
    assert gc.reshape(h, (-1, 3, 2)).shape == (None, 3, 2)
    assert gc.transpose(r, (1, 0, 2)).shape == (2, None, 3)
    assert gc.expand_dims(h, 1).shape == (None, 1, 6)
    assert (h * gc.input("nb_m", (None, 1))).shape == (None, 6)
    assert gc.sum(h).shape == ()
    assert h.T.shape == (6, None)
    assert (h.T @ h).shape == (6, 6)
    loss = gc.mean(gc.square(r)) + gc.mean(gc.sum(h, axis=0))
    (gW, gx) = gc.grad(loss, [W, x])
    assert gW.shape == (4, 6) and gx.shape == (None, 4)

    Wv = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    for batch in (1, 5, 7):
        xv = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
        lv, gwv, gxv = gc.evaluate([loss, gW, gx], {x.name: xv}, {W.name: Wv})
        hv = np.maximum(xv @ Wv + 1, 0)
        np.testing.assert_allclose(lv, np.mean(hv ** 2) + np.mean(hv.sum(0)), rtol=1e-5)
        assert gwv.shape == (4, 6) and gxv.shape == (batch, 4)


# ---- initializers -------------------------------------------------------------------------------

@pytest.mark.parametrize("init", INITS)
def test_initializer_shape_dtype_reproducible(init):
    for dtype in ("float32", "float64"):
        p = gc.param(f"init_{init}_{dtype}", (30, 20), init=init, dtype=dtype)
        v = init_value(p, seed=3)
        assert v.shape == (30, 20) and v.dtype == np.dtype(dtype)
        assert v.flags.writeable
        np.testing.assert_array_equal(v, init_value(p, seed=3))
        if init not in ("zeros", "ones"):
            q = gc.param(f"init_{init}_{dtype}_other", (30, 20), init=init, dtype=dtype)
            assert not np.array_equal(v, init_value(q, seed=3)), "different names must differ"
            assert not np.array_equal(v, init_value(p, seed=4)), "different seeds must differ"


def test_initializer_scales():
    fan_in, fan_out = 200, 100
    shape = (fan_in, fan_out)

    def v(init):
        return init_value(gc.param(f"scale_{init}", shape, init=init, dtype="float64"), seed=0)

    np.testing.assert_array_equal(v("zeros"), 0.0)
    np.testing.assert_array_equal(v("ones"), 1.0)
    u = v("uniform")
    assert np.abs(u).max() <= 0.05 and np.abs(u).max() > 0.045
    assert abs(v("normal").std() - 0.05) < 0.005
    lim = np.sqrt(6 / (fan_in + fan_out))
    gu = v("glorot_uniform")
    assert np.abs(gu).max() <= lim and np.abs(gu).max() > 0.95 * lim
    assert abs(gu.std() - lim / np.sqrt(3)) < 0.05 * lim
    assert abs(v("glorot_normal").std() - np.sqrt(2 / (fan_in + fan_out))) < 0.05 * np.sqrt(2 / (fan_in + fan_out))
    hlim = np.sqrt(6 / fan_in)
    hu = v("he_uniform")
    assert np.abs(hu).max() <= hlim and np.abs(hu).max() > 0.95 * hlim
    assert abs(v("he_normal").std() - np.sqrt(2 / fan_in)) < 0.05 * np.sqrt(2 / fan_in)
    # as Keras draws them: truncated at two (pre-correction) standard deviations,
    # stddev = sqrt(scale / n) / 0.87962566103423978, so the variance is scale / n
    for init, n in (("he_normal", fan_in / 2), ("glorot_normal", (fan_in + fan_out) / 2)):
        cut = 2 * np.sqrt(1 / n) / 0.87962566103423978
        assert np.abs(v(init)).max() <= cut and np.abs(v(init)).max() > 0.95 * cut, init
    for init in ("normal", "uniform", "glorot_uniform", "glorot_normal", "he_uniform", "he_normal"):
        assert abs(v(init).mean()) < 0.01


def test_default_initializers_and_arrays():
    w = gc.param("def_w", (3, 4))
    b = gc.param("def_b", (4,))
    assert w.attrs["init"] == "glorot_uniform" and b.attrs["init"] == "zeros"
    arr = np.arange(6.0).reshape(2, 3)
    p = gc.param("def_arr", (2, 3), init=arr)
    np.testing.assert_array_equal(init_value(p), arr)
    assert init_value(p).dtype == np.float32


def test_compile_initializes_params_by_seed_and_name():
    x = gc.input("cs_x", (None, 3))
    W = gc.param("cs_W", (3, 2), init="he_normal")
    V = gc.param("cs_V", (3, 2), init="he_normal")
    out = x @ W + x @ V
    f0, f0b, f1 = (gc.compile(out, target="numpy", seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(f0.params["cs_W"], f0b.params["cs_W"])
    assert not np.array_equal(f0.params["cs_W"], f1.params["cs_W"])
    assert not np.array_equal(f0.params["cs_W"], f0.params["cs_V"])
    np.testing.assert_array_equal(f0.params["cs_W"], init_value(W, seed=0))


# ---- inspection ----------------------------------------------------------------------------------

def _mlp(prefix="ins"):
    x = gc.input(f"{prefix}_x", (None, 3))
    W = gc.param(f"{prefix}_W", (3, 4))
    b = gc.param(f"{prefix}_b", (4,))
    h = gc.relu(x @ W + b)
    return x, W, b, h, gc.sum(h * h, axis=1)


def test_graph_dump_one_line_per_node():
    x, W, b, h, y = _mlp("dump")
    g = gc.Graph({"y": y, "h": h})
    text = g.dump()
    lines = text.splitlines()
    assert len(lines) == len(g.nodes) == len(g)
    pos = {id(n): k for k, n in enumerate(g.nodes)}  # nodes are numbered by position in the dump
    for n, line in zip(g.nodes, lines):
        assert line.startswith(f"%{pos[id(n)]} ") and n.op in line and "test_core_dsl.py:" in line
        shape = "(" + ", ".join("None" if d is None else str(d) for d in n.shape) + ("," if n.ndim == 1 else "") + ")"
        assert shape in line and str(n.dtype) in line
        for i in n.inputs:
            assert f"%{pos[id(i)]}" in line
    assert any(line.endswith("-> y") for line in lines) and any(line.endswith("-> h") for line in lines)
    assert "'dump_W'" in text and "matmul" in text and "relu" in text
    assert str(g) == text


def test_graph_to_networkx():
    x, W, b, h, y = _mlp("nx")
    sq = h * h  # the same input twice: one edge
    g = gc.Graph([y, sq])
    d = g.to_networkx()
    assert isinstance(d, nx.DiGraph)
    assert d.number_of_nodes() == len(g.nodes)
    pairs = {(i.id, n.id) for n in g.nodes for i in n.inputs}
    assert d.number_of_edges() == len(pairs)
    assert set(d.edges) == pairs
    assert nx.is_directed_acyclic_graph(d)
    order = list(nx.topological_sort(d))
    pos = {nid: k for k, nid in enumerate(order)}
    assert all(pos[a] < pos[bb] for a, bb in pairs)
    assert d.nodes[W.id]["op"] == "param" and d.nodes[y.id]["shape"] == (None,)
    assert d.nodes[y.id]["node"] is y


def test_graph_inputs_params_and_fingerprint():
    x, W, b, h, y = _mlp("fp")
    g = gc.Graph([y])
    assert g.inputs == [x] and set(g.params) == {W, b}
    assert g.fingerprint() == gc.Graph([y]).fingerprint()
    assert g.fingerprint() != gc.Graph([h]).fingerprint()


# ---- interpreter and compile(target="numpy") ------------------------------------------------------------

def test_interpreter_matches_numpy_mlp():
    rng = np.random.default_rng(0)
    x = gc.input("mlp_x", (None, 5), dtype="float64")
    y = gc.input("mlp_y", (None,), dtype="int64")
    W1, b1 = gc.param("mlp_W1", (5, 7), dtype="float64"), gc.param("mlp_b1", (7,), dtype="float64")
    W2, b2 = gc.param("mlp_W2", (7, 3), dtype="float64"), gc.param("mlp_b2", (3,), dtype="float64")
    logits = gc.tanh(x @ W1 + b1) @ W2 + b2
    loss = gc.softmax_cross_entropy(logits, y)
    probs = gc.softmax(logits)
    gW1, gb2 = gc.grad(loss, [W1, b2])
    P = {n: rng.standard_normal(s) for n, s in (("mlp_W1", (5, 7)), ("mlp_b1", (7,)), ("mlp_W2", (7, 3)), ("mlp_b2", (3,)))}
    xv, yv = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    lv, pv, gW1v, gb2v = gc.evaluate([loss, probs, gW1, gb2], {"mlp_x": xv, "mlp_y": yv}, P)

    hid = np.tanh(xv @ P["mlp_W1"] + P["mlp_b1"])
    z = hid @ P["mlp_W2"] + P["mlp_b2"]
    e = np.exp(z - z.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    np.testing.assert_allclose(pv, p, rtol=1e-12)
    np.testing.assert_allclose(lv, -np.mean(np.log(p[np.arange(6), yv])), rtol=1e-12)
    dz = p.copy()
    dz[np.arange(6), yv] -= 1
    dz /= 6
    np.testing.assert_allclose(gb2v, dz.sum(0), rtol=1e-10)
    dh = dz @ P["mlp_W2"].T * (1 - hid ** 2)
    np.testing.assert_allclose(gW1v, xv.T @ dh, rtol=1e-10)


def test_compile_numpy_returns_the_same_structure():
    x = gc.input("st_x", (None, 2))
    a, b = x * 2.0, gc.sum(x)
    xv = np.arange(6, dtype=np.float32).reshape(3, 2)

    out = gc.compile(a, target="numpy")(st_x=xv)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, xv * 2)

    out = gc.compile([a, b], target="numpy")(st_x=xv)
    assert isinstance(out, list) and len(out) == 2
    np.testing.assert_array_equal(out[1], xv.sum())

    out = gc.compile((a, b, a), target="numpy")(st_x=xv)
    assert isinstance(out, tuple) and len(out) == 3
    np.testing.assert_array_equal(out[2], xv * 2)

    out = gc.compile({"double": a, "total": b}, target="numpy")(st_x=xv)
    assert isinstance(out, dict) and list(out) == ["double", "total"]
    assert out["total"].shape == () and out["total"].dtype == np.float32
    np.testing.assert_array_equal(out["double"], xv * 2)

    with pytest.raises(TypeError):
        gc.compile([a, 3.0], target="numpy")


def test_compile_numpy_params_dict_and_state_dict():
    x = gc.input("pd_x", (None, 2))
    W = gc.param("pd_W", (2, 2))
    f = gc.compile(x @ W, target="numpy", params={"pd_W": np.eye(2)})
    xv = np.array([[1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(f(pd_x=xv), xv)
    f.set_params({"pd_W": 2 * np.eye(2)})
    np.testing.assert_array_equal(f(pd_x=xv), 2 * xv)


# ---- shared subexpressions in autodiff --------------------------------------------------------------------

def test_shared_subexpression_differentiated_once():
    x = gc.input("sh_x", (None, 3), dtype="float64")
    W = gc.param("sh_W", (3, 4), dtype="float64")
    g = gc.tanh(x @ W)
    y = gc.sum(g * (g + 1.0))  # g has two consumers (mul and add)
    (gW,) = gc.grad(y, [W])
    ops = [n.op for n in topo_order([gW])]
    assert ops.count("matmul") == 2, ops  # x @ W forward, x.T @ dG backward: once
    assert ops.count("tanh") == 1
    rng = np.random.default_rng(0)
    xv, Wv = rng.standard_normal((5, 3)), rng.standard_normal((3, 4))
    (gWv,) = gc.evaluate([gW], {x.name: xv}, {W.name: Wv})
    t = np.tanh(xv @ Wv)
    np.testing.assert_allclose(gWv, xv.T @ ((2 * t + 1) * (1 - t ** 2)), rtol=1e-12)


def test_grad_of_g_times_g():
    x = gc.input("gg_x", (4,), dtype="float64")
    g = gc.sigmoid(x * 3.0)
    y = gc.sum(g * g)
    dx = gc.grad(y, x)
    xv = np.linspace(-1, 1, 4)
    (v,) = gc.evaluate([dx], {x.name: xv}, {})
    s = 1 / (1 + np.exp(-3 * xv))
    np.testing.assert_allclose(v, 2 * s * s * (1 - s) * 3, rtol=1e-12)
    assert [n.op for n in topo_order([dx])].count("sigmoid") == 1
    gc.check_grads(y, [x], feeds={x.name: xv}, order=2)


def test_grad_returns_single_or_list_and_is_differentiable_again():
    x = gc.input("gl_x", (), dtype="float64")
    y = x * x * x
    d1 = gc.grad(y, x)
    assert isinstance(d1, gc.Tensor)
    assert isinstance(gc.grad(y, [x]), list)
    d3 = gc.grad(gc.grad(d1, x), x)
    (v,) = gc.evaluate([d3], {x.name: np.array(2.0)}, {})
    assert v == 6.0


def test_scalar_inputs_and_params_keep_their_0d_shape():
    s = gc.input("zd_s", (), dtype="float64")
    p = gc.param("zd_p", (), init="ones", dtype="float64")
    assert init_value(p).shape == ()
    f = gc.compile({"a": s * 2.0, "b": s * p}, target="numpy")
    out = f(zd_s=np.float64(3.0))
    assert out["a"].shape == () and out["b"].shape == ()
    assert float(out["b"]) == 3.0
    out = f(zd_s=3)  # a Python int for a float input
    assert out["a"].shape == () and float(out["a"]) == 6.0
