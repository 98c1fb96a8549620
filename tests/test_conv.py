"""Convolution, pooling and batched matmul: values against loops written from the definitions
(TensorFlow/Keras NHWC + HWIO, "same" padding with ceil(n / stride) outputs and the odd pixel at
the end), gradients against finite differences in float64 (second order for the linear maps),
every CPU target against the interpreter, and the errors naming op, shapes and this file:line."""
from __future__ import annotations

import inspect
import os
import re

import numpy as np
import pytest

import graphc as gc
from graphc import DTypeError, ShapeError
from graphc.ops.conv import same_pads

THIS_FILE = os.path.basename(__file__)
rng = np.random.default_rng(0)


def here() -> int:
    return inspect.currentframe().f_back.f_lineno


def _pads(n, k, s, d, padding):
    return same_pads(n, k, s, d) if padding == "same" else (0, 0)


def ref_conv(x, w, s, padding, d):
    """y[b, i, j, o] = sum_{u, v, c} xpad[b, i*s + u*d, j*s + v*d, c] * w[u, v, c, o]."""
    n, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    (pt, pb), (pl, pr) = _pads(h, kh, s, d, padding), _pads(wd, kw, s, d, padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh, ow = (h + pt + pb - (kh - 1) * d - 1) // s + 1, (wd + pl + pr - (kw - 1) * d - 1) // s + 1
    y = np.zeros((n, oh, ow, o))
    for i in range(oh):
        for j in range(ow):
            for u in range(kh):
                for v in range(kw):
                    y[:, i, j, :] += xp[:, i * s + u * d, j * s + v * d, :] @ w[u, v]
    return y


def ref_pool(x, k, s, padding, mode):
    """Max / mean over the window's pixels inside the image (padding ignored, not counted)."""
    n, h, wd, c = x.shape
    (pt, pb), (pl, pr) = _pads(h, k, s, 1, padding), _pads(wd, k, s, 1, padding)
    oh, ow = (h + pt + pb - k) // s + 1, (wd + pl + pr - k) // s + 1
    y = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            win = x[:, max(i * s - pt, 0):i * s - pt + k, max(j * s - pl, 0):j * s - pl + k, :]
            y[:, i, j, :] = win.max(axis=(1, 2)) if mode == "max" else win.mean(axis=(1, 2))
    return y


# (height, width, channels, filters, kernel, stride, padding, dilation)
CASES = [(7, 6, 3, 4, 3, 1, "valid", 1), (7, 6, 3, 4, 3, 2, "same", 1), (8, 8, 2, 5, 3, 1, "same", 2),
         (5, 5, 1, 2, 1, 1, "valid", 1), (6, 7, 2, 3, 2, 3, "same", 1), (4, 4, 2, 2, 4, 1, "valid", 1)]


def _case_graph(i, case, dtype="float64"):
    h, w, c, o, k, s, p, d = case
    x = gc.input(f"cx{i}", (None, h, w, c), dtype)
    W = gc.param(f"cw{i}", (k, k, c, o), dtype=dtype)
    outs = [gc.conv2d(x, W, s, p, d), gc.max_pool2d(x, k, s, p), gc.avg_pool2d(x, k, s, p)]
    return x, W, outs


@pytest.fixture(scope="module")
def case_data():
    return [(rng.standard_normal((3,) + c[:3]), rng.standard_normal((c[4], c[4], c[2], c[3]))) for c in CASES]


def test_values_match_the_definitions_on_cpu(case_data):
    graphs = [_case_graph(i, c) for i, c in enumerate(CASES)]
    outs = [o for _, _, os_ in graphs for o in os_]
    params = {f"cw{i}": W for i, (_, W) in enumerate(case_data)}
    feeds = {f"cx{i}": X for i, (X, _) in enumerate(case_data)}
    expect = []
    for (X, W), (h, w, c, o, k, s, p, d) in zip(case_data, CASES):
        expect += [ref_conv(X, W, s, p, d), ref_pool(X, k, s, p, "max"), ref_pool(X, k, s, p, "avg")]
    # target "parallel" runs the same kernels with prange over the images: tests/test_parallel_large.py
    for target in ("numpy", "cpu"):
        got = gc.compile(outs, target=target, params=params)(**feeds)
        for g, e, n in zip(got, expect, outs):
            assert g.shape == e.shape, (target, n)
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12, err_msg=f"{target} {n}")


def test_gradients_on_cpu_match_the_interpreter(case_data):
    """The gradient graph (im2col/col2im, GEMMs, pool2d_grad) of every case, compiled."""
    losses, wrt = [], []
    for i, c in enumerate(CASES):
        x, W, (y, mp, ap) = _case_graph(100 + i, c)
        loss = gc.sum(gc.tanh(y)) + gc.sum(gc.square(mp)) + gc.sum(ap * ap * ap)
        losses.append(loss)
        wrt += [x, W]
    total = losses[0]
    for l_ in losses[1:]:
        total = total + l_
    grads = gc.grad(total, wrt)
    params = {f"cw{100 + i}": W for i, (_, W) in enumerate(case_data)}
    feeds = {f"cx{100 + i}": X for i, (X, _) in enumerate(case_data)}
    ref = gc.compile(grads, target="numpy", params=params)(**feeds)
    got = gc.compile(grads, target="cpu", params=params)(**feeds)
    for g, e in zip(got, ref):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


def test_patch_kernels_move_contiguous_runs_not_items():
    """im2col and col2im move each window row's pixels inside the image as ONE run and its
    padding columns as runs (views.copy_run/add_run/fill_run): no item is indexed in their
    loops, where a wrapped negative index made LLVM gather and scatter item by item."""
    x = gc.param("px", (2, 5, 6, 3), dtype="float32")
    W = gc.param("pw", (3, 3, 3, 4), dtype="float32")
    step = gc.compile(gc.sum(gc.square(gc.conv2d(x, W, 1, "same"))), optimizer=gc.optim.SGD(0.1), target="cpu")
    step()
    (prog,) = step._programs.values()
    srcs = {op: src for src in prog.module.kernel_modules.values() for op in ("im2col", "col2im") if f"# {op}" in src}
    assert set(srcs) == {"im2col", "col2im"}
    for op, src in srcs.items():
        loops = src[src.index("    for b in"):]
        assert not re.search(r"\b(of|xf|gf)\[", loops), (op, loops)
        assert ("copy_run(" if op == "im2col" else "add_run(") in loops and "fill_run(" in loops, op


@pytest.mark.parametrize("case", CASES[:5])
def test_conv_and_pool_gradients_against_finite_differences(case):
    h, w, c, o, k, s, p, d = case
    X = rng.standard_normal((2, h, w, c))
    x = gc.param("fx", X.shape, init=X, dtype="float64")
    W = gc.param("fw", (k, k, c, o), init=rng.standard_normal((k, k, c, o)), dtype="float64")
    y = gc.conv2d(x, W, s, p, d)
    gc.check_grads(gc.sum(gc.tanh(y)), [x, W])
    # order 2: the conv is bilinear, so its Hessian blocks are im2col/col2im and GEMMs again
    gc.check_grads(gc.sum(gc.square(y)), [x, W], order=2)
    gc.check_grads(gc.sum(gc.square(gc.avg_pool2d(x, k, s, p))), [x], order=2)
    # max pooling: distinct values, so the maximum of each window is unique and differentiable
    Xd = (rng.permutation(X.size).reshape(X.shape) / X.size).astype("float64")
    xd = gc.param("fxd", X.shape, init=Xd, dtype="float64")
    gc.check_grads(gc.sum(gc.square(gc.max_pool2d(xd, k, s, p))), [xd], eps=1e-6)


def test_max_pool_gradient_goes_to_the_first_maximum_of_a_tie():
    """As TensorFlow's and PyTorch's kernels: a window of equal values passes its gradient to
    its first pixel in row-major order, not to all of them."""
    x = gc.input("tie", (1, 2, 2, 1), "float64")
    g, = gc.grad(gc.sum(gc.max_pool2d(x, 2)), [x])
    for target in ("numpy", "cpu"):
        out = gc.compile(g, target=target)(tie=np.ones((1, 2, 2, 1)))
        np.testing.assert_array_equal(out.reshape(-1), [1.0, 0.0, 0.0, 0.0])


def test_conv_trains_with_bias_and_activation_fused_into_the_gemm():
    """relu(conv2d(x, w) + b) -> global average pooling -> dense: Adam steps on cpu match the
    interpreter, and the kernel listing shows im2col, the GEMMs and col2im."""
    X = rng.standard_normal((8, 6, 6, 2)).astype("float32")
    Y = rng.integers(0, 3, 8)
    x = gc.input("tx", (None, 6, 6, 2))
    y = gc.input("ty", (None,), dtype="int64")
    W = gc.param("tw", (3, 3, 2, 4), init="glorot_uniform")
    b = gc.param("tb", (4,))
    V = gc.param("tv", (4, 3), init="glorot_uniform")
    h = gc.relu(gc.conv2d(x, W, padding="same") + b)
    h = gc.max_pool2d(h, 2)
    loss = gc.softmax_cross_entropy(gc.global_average_pool2d(h) @ V, y)
    steps = {t: gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target=t, seed=3) for t in ("numpy", "cpu")}
    losses = {t: [float(s(tx=X, ty=Y)["loss"]) for _ in range(5)] for t, s in steps.items()}
    np.testing.assert_allclose(losses["cpu"], losses["numpy"], rtol=2e-4)
    assert losses["cpu"][-1] < losses["cpu"][0]
    for name, v in steps["numpy"].params.items():
        np.testing.assert_allclose(steps["cpu"].params[name], v, rtol=1e-3, atol=1e-5)
    listing = steps["cpu"].kernels()
    for kind in ("im2col", "matmul", "pool2d", "pool2d_grad"):  # no col2im: x is an input
        assert kind in listing, kind


# ---- batched matmul ---------------------------------------------------------------------------

def test_stacked_matmul_is_a_batched_gemm_with_gradients():
    a = gc.input("ba", (None, 3, 4, 5), "float64")
    b = gc.input("bb", (3, 5, 2), "float64")
    w = gc.input("bw", (5, 6), "float64")
    outs = [a @ b, a @ w, a @ gc.swapaxes(a, -1, -2), gc.swapaxes(a, -1, -2) @ a]
    A, B, Wv = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((3, 5, 2)), rng.standard_normal((5, 6))
    expect = [A @ B, A @ Wv, A @ np.swapaxes(A, -1, -2), np.swapaxes(A, -1, -2) @ A]
    assert any(n.op == "batch_matmul" for n in gc.Graph(outs).nodes)
    for target in ("numpy", "cpu"):
        got = gc.compile(outs, target=target)(ba=A, bb=B, bw=Wv)
        for g, e in zip(got, expect):
            np.testing.assert_allclose(g, e, rtol=1e-12)
    pa = gc.param("pa", (2, 3, 4), init=rng.standard_normal((2, 3, 4)), dtype="float64")
    pb = gc.param("pb", (2, 4, 3), init=rng.standard_normal((2, 4, 3)), dtype="float64")
    for y, wrt in ((pa @ pb, [pa, pb]), (gc.swapaxes(pa, 1, 2) @ gc.swapaxes(pb, 1, 2), [pa, pb]),
                   (pa @ gc.swapaxes(pa, 1, 2), [pa]), (gc.swapaxes(pb, 1, 2) @ pb, [pb])):
        gc.check_grads(gc.sum(gc.tanh(y)), wrt, order=2)
    f = gc.compile(outs, target="cpu")
    f(ba=A, bb=B, bw=Wv)
    listing = f.kernels()
    # the transposed operands are read in place: the only copies are the four outputs' reshapes
    assert listing.count(" bmm ") == 3 and listing.count(" copy ") == 4, listing


# ---- metrics and normalization ------------------------------------------------------------------

def test_in_top_k_counts_ties_as_keras():
    """keras.ops.in_top_k: the target is in when fewer than k scores are strictly larger."""
    p = gc.input("tp", (None, 4), "float32")
    t = gc.input("tt", (None,), "int64")
    P = np.array([[0.1, 0.5, 0.5, 0.2], [3, 2, 1, 0], [0, 0, 0, 0], [1, 2, 3, 4]], "float32")
    T = np.array([2, 2, 3, 0])
    for k, want in ((1, [True, False, True, False]), (2, [True, False, True, False]),
                    (3, [True, True, True, False])):
        for target in ("numpy", "cpu"):
            got = gc.compile(gc.in_top_k(t, p, k), target=target)(tp=P, tt=T)
            np.testing.assert_array_equal(got, want)


def test_batch_normalization_formula_and_moments():
    """(x - mean) / sqrt(var + eps) * scale + offset over the channel axis; moments give the
    population variance."""
    X = rng.standard_normal((5, 3, 3, 4))
    x = gc.input("bn_x", (None, 3, 3, 4), "float64")
    mu, var = gc.moments(x, (0, 1, 2))
    g = gc.const(np.linspace(0.5, 2, 4))
    o = gc.const(np.linspace(-1, 1, 4))
    y = gc.batch_normalization(x, mu, var, axis=-1, offset=o, scale=g, epsilon=1e-3)
    for target in ("numpy", "cpu"):
        m, v, out = gc.compile([mu, var, y], target=target)(bn_x=X)
        np.testing.assert_allclose(m, X.mean((0, 1, 2)), rtol=1e-12)
        np.testing.assert_allclose(v, X.var((0, 1, 2)), rtol=1e-12)
        want = (X - X.mean((0, 1, 2))) / np.sqrt(X.var((0, 1, 2)) + 1e-3) * np.linspace(0.5, 2, 4) + np.linspace(-1, 1, 4)
        np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)


# ---- errors -----------------------------------------------------------------------------------------

def _located(excinfo, line, op, *fragments):
    msg = str(excinfo.value)
    assert msg.startswith(f"{op}:"), msg
    for f in fragments:
        assert f in msg, (f, msg)
    m = re.search(r"at (\S+):(\d+)", msg)
    assert m and os.path.basename(m.group(1)) == THIS_FILE and int(m.group(2)) == line, msg


def test_errors_name_the_op_shapes_and_line():
    x = gc.input("ex", (None, 8, 8, 3))
    w = gc.param("ew", (3, 3, 2, 4))
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.conv2d(x, w)  # noqa: E702
    _located(ei, line, "conv2d", "in_channels 2", "channels 3", "(None, 8, 8, 3)")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.conv2d(gc.input("e3", (None, 8, 3)), gc.param("ew3", (3, 3, 3, 4)))  # noqa: E702
    _located(ei, line, "conv2d", "4-D", "rank 3")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.conv2d(x, gc.param("big", (9, 9, 3, 2)))  # noqa: E702
    _located(ei, line, "conv2d", "9x9", "8x8")
    with pytest.raises(ValueError) as ei:
        line = here(); gc.max_pool2d(x, 2, padding="full")  # noqa: E702
    _located(ei, line, "max_pool2d", "'valid' or 'same'")
    with pytest.raises(ValueError) as ei:
        line = here(); gc.avg_pool2d(x, (2, 0))  # noqa: E702
    _located(ei, line, "avg_pool2d", "pool_size")
    with pytest.raises(DTypeError) as ei:
        line = here(); gc.conv2d(x, gc.param("e64", (3, 3, 3, 4), dtype="float64"))  # noqa: E702
    _located(ei, line, "conv2d", "float32", "float64")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.input("m1", (2, 3, 4)) @ gc.input("m2", (2, 5, 4))  # noqa: E702
    _located(ei, line, "matmul", "inner dims")


# ---- hypothesis: any geometry ------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def geometries(draw):
    k = draw(st.integers(1, 3))
    d = draw(st.integers(1, 2))
    s = draw(st.integers(1, 3))
    span = (k - 1) * d + 1
    h = draw(st.integers(span, span + 4))
    w = draw(st.integers(span, span + 4))
    return h, w, draw(st.integers(1, 2)), draw(st.integers(1, 3)), k, s, draw(st.sampled_from(["valid", "same"])), d


@settings(max_examples=25, deadline=None)
@given(geometries(), st.integers(0, 2 ** 31 - 1))
def test_any_geometry_matches_the_definitions_and_finite_differences(g, seed):
    """Values against the loops above and gradients against float64 finite differences, on the
    interpreter (the oracle the compiled targets are held to), for drawn sizes, strides,
    dilations and paddings."""
    h, w, c, o, k, s, p, d = g
    r = np.random.default_rng(seed)
    X, Wv = r.standard_normal((2, h, w, c)), r.standard_normal((k, k, c, o))
    x = gc.param("hx", X.shape, init=X, dtype="float64")
    W = gc.param("hw", Wv.shape, init=Wv, dtype="float64")
    y = gc.conv2d(x, W, s, p, d)
    pk = min(k + 1, h, w)
    ap = gc.avg_pool2d(x, pk, s, p)
    got = gc.compile([y, ap], target="numpy", params={"hx": X, "hw": Wv})()
    np.testing.assert_allclose(got[0], ref_conv(X, Wv, s, p, d), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[1], ref_pool(X, pk, s, p, "avg"), rtol=1e-12, atol=1e-12)
    gc.check_grads(gc.sum(gc.tanh(y)) + gc.sum(gc.square(ap)), [x, W], max_elements=16)


@pytest.mark.numba_kernels  # .ci/run: again with GRAPHC_NATIVE_KERNELS=0
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tiled_max_pool_gradient_selects_per_channel_without_branches(dtype):
    """max_pool2d whose windows tile the image (stride = pool size, no padding) takes a kernel
    whose channel loops are selects (the window's first maximum, the first NaN winning, as
    the interpreter), so LLVM vectorizes them: values (and the forward max's) equal the
    interpreter's bit for bit with ties, NaN, -inf and rows/columns no window covers (odd
    sizes), on cpu and parallel."""
    X = rng.standard_normal((3, 7, 5, 6)).round(1).astype(dtype)  # rounding makes ties
    X[0, 0, 0, :] = np.nan
    X[1, 2:4, 2:4, 1] = np.nan
    X[1, 1, 1, 2] = np.nan
    X[2, :, :, 3] = -np.inf
    X[2, 0:2, 0:2, 4] = 1.0
    x = gc.input("tx", X.shape, dtype)
    outs = [gc.max_pool2d(x, 2), gc.max_pool2d(x, (2, 3), strides=(2, 3))]
    grads = gc.grad(sum(gc.sum(o * gc.const(np.linspace(-1, 2, int(np.prod(o.shape))).reshape(o.shape).astype(dtype)))
                        for o in outs), [x])
    ref = gc.compile(grads + outs, target="numpy", check_finite=False)(tx=X)
    assert np.isnan(ref[0]).sum() == 0 and (ref[0] != 0).sum() > 0 and np.isnan(ref[1]).sum() > 0
    for target in ("cpu", "parallel"):
        f = gc.compile(grads + outs, target=target, check_finite=False)
        for got, want in zip(f(tx=X), ref):
            np.testing.assert_array_equal(got, want, err_msg=target)
        if target == "cpu":
            (prog,) = f._programs.values()
            srcs = prog.module.kernel_modules.values()
            (src,) = [s for s in srcs if "# max_pool2d grad" in s]
            assert "if by[c]" not in src and " if t else " in src, src
