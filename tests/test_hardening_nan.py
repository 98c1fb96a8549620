"""NaN propagates through relu/maximum/minimum/max/sign/clip/... on every target exactly as on
the NumPy target (the oracle): NaN positions bit for bit, the same infinities, the same sign
of zero for elementwise results, and the same gradients (the VJP graphs the NumPy target
evaluates). Targets: cpu (graphc's kernels), cpu with Numba's kernels
(GRAPHC_NATIVE_KERNELS=0, a private cache) and parallel; tests/cuda/test_cuda_nan.py runs the
same graphs on the cuda target."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

# log(x - 2): NaN (x < 2), -inf (x == 2), 0 (x == 3), finite
X = np.array([[1.0, 4.0, 3.0, 2.5], [4.0, 2.0, 6.0, 0.5], [2.25, 3.0, 9.0, 5.0]])
# fed as they are (check_finite=False): NaN, infinities, signed zeros, ties
S = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.0],
              [-0.0, 0.0, 1.0, np.nan, -np.inf, -2.0, np.nan]])
T = np.array([[0.0, np.nan, 1.0, -0.0, 0.0, np.inf, -2.0],
              [0.0, -0.0, np.nan, 1.0, -3.0, np.nan, -np.inf]])


def elementwise(a, b):
    """name -> elementwise op of a (and b, same shape), each able to meet a NaN."""
    return {
        "relu": gc.relu(a), "maximum(a, 0)": gc.maximum(a, 0.0), "maximum(0, a)": gc.maximum(0.0, a),
        "minimum(a, 0)": gc.minimum(a, 0.0), "minimum(0, a)": gc.minimum(0.0, a),
        "maximum(a, b)": gc.maximum(a, b), "maximum(b, a)": gc.maximum(b, a),
        "minimum(a, b)": gc.minimum(a, b), "minimum(b, a)": gc.minimum(b, a),
        "sign": gc.sign(a), "abs": gc.abs(a), "leaky_relu": gc.leaky_relu(a, 0.1), "elu": gc.elu(a, 0.7),
        "clip": gc.clip(a, -0.5, 0.3), "clip0": gc.clip(a, 0.0, 1.0), "softplus": gc.softplus(a),
        "where": gc.where(a > b, a, b), "square": gc.square(a), "neg": -a,
    }


REDUCTIONS = {"max(a, 1)", "max(a, 0)", "max(a)", "softmax", "log_softmax", "logsumexp", "sum", "sce",
              "max_pool2d", "global_max_pool2d"}


def reductions(a):
    rows, cols = a.shape
    img = gc.reshape(a, (1, rows, cols, 1))
    return {
        "max(a, 1)": gc.max(a, axis=1), "max(a, 0)": gc.max(a, axis=0, keepdims=True), "max(a)": gc.max(a),
        "softmax": gc.softmax(a, axis=1), "log_softmax": gc.log_softmax(a, axis=0),
        "logsumexp": gc.logsumexp(a, axis=1), "sum": gc.sum(a, axis=1),
        "sce": gc.softmax_cross_entropy(a, gc.const(np.arange(rows, dtype=np.int64) % cols)),
        "max_pool2d": gc.max_pool2d(img, 2, strides=1), "global_max_pool2d": gc.global_max_pool2d(img),
    }


def graph(dtype, tags=("log", "fed")):
    """(names, outputs, feeds): the ops over log(x - 2) and over the fed specials (``tags``
    picks them), and the gradient of a weighted sum of each op's output with respect to its
    input."""
    x = gc.input("x", X.shape, dtype=dtype)
    s, t = gc.input("s", S.shape, dtype=dtype), gc.input("t", T.shape, dtype=dtype)
    named = {}
    sources = {"log": lambda: (gc.log(x - 2.0), gc.log(x - 1.0)), "fed": lambda: (s, t)}
    for tag in tags:
        a, b = sources[tag]()
        for k, v in {**elementwise(a, b), **reductions(a)}.items():
            named[f"{k} [{tag}]"] = v
        # argmax/argmin: the first NaN's index where there is one, as np.argmax/np.argmin
        named[f"argmax [{tag}]"], named[f"argmin [{tag}]"] = gc.argmax(a, axis=1), gc.argmin(a, axis=0)
    names, outs = list(named), list(named.values())
    for k in list(named):
        if k.startswith(("where", "neg", "square", "arg")):
            continue
        o = named[k]
        w = np.linspace(-1.0, 1.5, int(np.prod(o.shape)) if o.shape else 1).reshape(o.shape)
        y = gc.sum(o * gc.const(w.astype(dtype)))
        wrt = [x] if k.endswith("[log]") else [s, t] if ("b)" in k or "(b" in k) else [s]
        for v, g in zip(wrt, gc.grad(y, wrt)):
            names.append(f"d/d{v.name} {k}")
            outs.append(g)
    feeds = {"x": X.astype(dtype), "s": S.astype(dtype), "t": T.astype(dtype)}
    return names, outs, {k: v for k, v in feeds.items() if k != "x" or "log" in tags}


def compare(got, want, names, what):
    assert len(got) == len(want) == len(names)
    bad = []
    for g, w, name in zip(got, want, names):
        g, w = np.asarray(g), np.asarray(w)
        try:
            assert g.shape == w.shape and g.dtype == w.dtype
            if w.dtype.kind != "f":
                np.testing.assert_array_equal(g, w)
                continue
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg="NaN positions")
            np.testing.assert_array_equal(np.isposinf(g), np.isposinf(w), err_msg="+inf positions")
            np.testing.assert_array_equal(np.isneginf(g), np.isneginf(w), err_msg="-inf positions")
            ok = np.isfinite(w)
            rtol = 1e-12 if w.dtype == np.float64 else 2e-6
            np.testing.assert_allclose(g[ok], w[ok], rtol=rtol, atol=rtol)
            if not name.startswith("d/d") and name.split(" [")[0] not in REDUCTIONS:
                # an elementwise result: the sign of zero too (relu(-0.0) is 0.0 as np.maximum(-0.0, 0))
                np.testing.assert_array_equal(np.signbit(g[ok]), np.signbit(w[ok]), err_msg="signs")
        except AssertionError as e:
            bad.append(f"{name}: {str(e).strip().splitlines()[0]}\n got {g!r}\nwant {w!r}")
    assert not bad, f"{what}: {len(bad)} of {len(names)} differ:\n" + "\n".join(bad)


@pytest.fixture(scope="module", params=["float64", "float32"])
def case(request):
    names, outs, feeds = graph(request.param)
    want = gc.compile(outs, target="numpy", check_finite=False)(**feeds)
    # the oracle itself: NaN where NumPy's own functions give one
    i = names.index("relu [log]")
    assert np.isnan(want[i][0, 0]) and np.isnan(want[names.index("max(a, 1) [log]")][0])
    assert np.isnan(want[names.index("sign [fed]")][0, 0])
    with np.errstate(all="ignore"):
        logs = np.log(X - 2.0)
    for tag, v in (("log", logs), ("fed", S)):
        np.testing.assert_array_equal(want[names.index(f"argmax [{tag}]")], np.argmax(v, axis=1))
        np.testing.assert_array_equal(want[names.index(f"argmin [{tag}]")], np.argmin(v, axis=0))
    return names, outs, feeds, want


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_nan_propagates_as_on_numpy(case, target):
    names, outs, feeds, want = case
    got = gc.compile(outs, target=target, check_finite=False)(**feeds)
    compare(got, want, names, target)


def test_nan_propagates_as_on_numpy_with_numbas_kernels(case, tmp_path):
    """The same on cpu with every kernel compiled by Numba (a private cache: no image of
    graphc's kernels starts the program)."""
    import graphc.backends.cache as gcache
    names, outs, feeds, want = case
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPHC_NATIVE_KERNELS", "0")
        mp.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
        mp.setattr(gcache, "_resolved", {})
        f = gc.compile(outs, target="cpu", check_finite=False)
        got = f(**feeds)
        progs = list(f._programs.values())
        assert progs and all(len(p._kernel_modules) == len(p.kernel_paths) > 0 for p in progs)
    compare(got, want, names, "cpu (Numba's kernels)")


@pytest.mark.parametrize("target", ["numpy", "cpu", "parallel"])
def test_check_numerics_stops_a_step_through_relu_of_nan(target):
    """sum(relu(log(x * w - 2))) at x = [1, 4]: relu(NaN) is NaN, so the loss is NaN and
    check_numerics refuses the step before w is written."""
    x = gc.input("nx", (2,), dtype="float64")
    w = gc.param("nw", (2,), init="ones", dtype="float64")
    loss = gc.sum(gc.relu(gc.log(x * w - 2.0)))
    step = gc.compile(loss, optimizer=gc.optim.SGD(0.1), target=target, check_numerics=True)
    with pytest.raises(gc.NumericsError):
        step(nx=np.array([1.0, 4.0]))
    np.testing.assert_array_equal(step.params["nw"], [1.0, 1.0])
    plain = gc.compile(loss, optimizer=gc.optim.SGD(0.1), target=target)
    assert np.isnan(plain(nx=np.array([1.0, 4.0]))["loss"])


def test_numpy_target_evaluates_nonfinite_values_without_warnings():
    """The numpy target, like the compiled ones, computes inf - inf or a sum over +-inf to NaN
    silently (NumPy would warn from inside graphc's interpreter); check_numerics reports them."""
    import warnings
    x = gc.input("x", (None, 4), dtype="float64")
    v = np.array([[np.inf, -np.inf, 1.0, np.nan], [0.0, -0.0, np.inf, 2.0]])
    outs = [gc.sum(x, 1), gc.prod(x, 1), gc.max(x, 1), gc.min(x, 1), x * 0.0, gc.log(x - 1.0), x / 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = gc.evaluate(outs, {"x": v}, {})
    with np.errstate(all="ignore"):
        want = [v.sum(1), v.prod(1), v.max(1), v.min(1), v * 0.0, np.log(v - 1.0), v / 0.0]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
