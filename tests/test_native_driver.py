"""graphc's own driver compiler (graphc/backends/cpu/driver.py): the generated ``step`` text
compiled with llvmlite and called as a builtin, checked against the Numba driver that
compiles the same text (GRAPHC_NATIVE_DRIVER=0) and against the NumPy interpreter."""
import threading

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cpu import driver
from graphc.errors import FeedError

RNG = np.random.default_rng(0)


def mlp(tag: str):
    x = gc.input(f"{tag}x", (None, 6))
    y = gc.input(f"{tag}y", (None,), dtype="int64")
    W1 = gc.param(f"{tag}W1", (6, 8), init="he_normal")
    b1 = gc.param(f"{tag}b1", (8,), init="zeros")
    W2 = gc.param(f"{tag}W2", (8, 3), init="he_normal")
    h = gc.relu(x @ W1 + b1)
    return gc.softmax_cross_entropy(h @ W2, y)


def train(loss, target, monkeypatch, native_driver: bool, steps=4, **feeds):
    monkeypatch.setenv("GRAPHC_NATIVE_DRIVER", "1" if native_driver else "0")
    step = gc.compile(loss, optimizer=gc.optim.Adam(0.01), target=target, seed=1)
    losses = [float(step(**feeds)["loss"]) for _ in range(steps)]
    prog = next(iter(step._programs.values())) if target != "numpy" else None
    return step, losses, prog


@pytest.mark.numba_kernels  # .ci/run: again with GRAPHC_NATIVE_KERNELS=0 (the driver over Numba's kernels)
@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_native_driver_trains_as_the_numba_driver_and_numpy(target, monkeypatch):
    feeds = {"nx": RNG.standard_normal((5, 6)).astype("f4"), "ny": RNG.integers(0, 3, 5)}
    nat, l_nat, p_nat = train(mlp("n"), target, monkeypatch, True, **feeds)
    nb, l_nb, p_nb = train(mlp("n"), target, monkeypatch, False, **feeds)
    ref, l_ref, _ = train(mlp("n"), "numpy", monkeypatch, True, **feeds)
    assert p_nat.native and type(p_nat._driver).__name__ == "builtin_function_or_method"
    assert not p_nb.native and hasattr(p_nb._driver, "overloads")  # a Numba dispatcher
    assert l_nat == l_nb  # the same kernels, in the same order: bit for bit
    np.testing.assert_allclose(l_nat, l_ref, rtol=1e-5)
    for k in ref.params:
        np.testing.assert_array_equal(nat.params[k], nb.params[k])
    assert nat.iterations == 4 and nat.fast_calls >= 3  # the bound call served the repeats


def test_scalar_feeds_of_every_kind_reach_the_kernels(monkeypatch):
    """float, int and bool rank-0 feeds are unboxed by the native driver (PyFloat_AsDouble,
    PyLong_AsLongLong, PyObject_IsTrue) and converted to the kernels' C types."""
    monkeypatch.setenv("GRAPHC_NATIVE_DRIVER", "1")
    x = gc.input("skx", (4,), dtype="float32")
    s = gc.input("sks", (), dtype="float32")
    d = gc.input("skd", (), dtype="float64")
    k = gc.input("skk", (), dtype="int64")
    flag = gc.input("skb", (), dtype="bool")
    W = gc.param("skW", (5, 4), init=np.arange(20.0).reshape(5, 4))
    outs = [x * s + d, gc.take(W, k), gc.where(flag, x, -x)]
    f = gc.compile(outs, target="cpu")
    ref = gc.compile(outs, target="numpy")
    xb = np.array([1, -2, 3, -4], "f4")
    for feeds in ({"sks": np.float32(2.5), "skd": -1.0, "skk": np.int64(3), "skb": np.bool_(True)},
                  {"sks": 0.5, "skd": np.float64(7.0), "skk": 4, "skb": False}):
        got, want = f(skx=xb, **feeds), ref(skx=xb, **feeds)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    assert f.program_for(None).native
    with pytest.raises(FeedError, match="skk"):  # an int feed indexing W is range-checked first
        f(skx=xb, sks=1.0, skd=1.0, skk=5, skb=True)


def test_a_kernel_raise_is_a_status_and_the_same_value_error(monkeypatch):
    """A kernel that would raise (an index computed in the step, out of range) returns a
    status; the native driver stops there and graphc raises the kernel's ValueError, on the
    checked path and on the bound call alike."""
    monkeypatch.setenv("GRAPHC_NATIVE_DRIVER", "1")
    ids = gc.input("nr_ids", (3,), dtype="int64")
    W = gc.param("nr_W", (4, 2), init=np.arange(8.0).reshape(4, 2))
    f = gc.compile(gc.take(W, ids + 2), target="cpu")
    good = np.array([0, 1, 1])
    for _ in range(3):  # armed: the bound call serves the later calls
        np.testing.assert_array_equal(f(nr_ids=good), [[4, 5], [6, 7], [6, 7]])
    prog = f.program_for(None)
    assert prog.native and prog._raised == ["take: an index computed in the step is out of range"]
    for _ in range(2):
        with pytest.raises(ValueError, match="take: an index computed in the step is out of range"):
            f(nr_ids=np.array([0, 2, 1]))
    np.testing.assert_array_equal(f(nr_ids=good), [[4, 5], [6, 7], [6, 7]])


def test_the_native_driver_refuses_wrong_arguments_instead_of_crashing(monkeypatch):
    monkeypatch.setenv("GRAPHC_NATIVE_DRIVER", "1")
    step = gc.compile(mlp("w"), optimizer=gc.optim.Adam(0.01), target="cpu")
    feeds = {"wx": RNG.standard_normal((5, 6)).astype("f4"), "wy": RNG.integers(0, 3, 5)}
    step(**feeds)
    prog = step.program_for(5)
    with step._store.lock:
        args = prog.driver_args({**feeds, **step._hyper_values()}, step._store)
    before = step.params
    with pytest.raises(TypeError, match="native driver"):
        prog._driver(*args[:-1])  # one argument short
    bad = list(args)
    bad[0] = list(range(10))  # not an array where an arena is expected
    with pytest.raises(TypeError, match="native driver"):
        prog._driver(*bad)
    hyper = next(i for i, (kind, _) in enumerate(prog._args) if kind == "scalar")
    bad = list(args)
    bad[hyper] = "0.1"  # not a number where a hyper-parameter is expected
    with pytest.raises(TypeError):
        prog._driver(*bad)
    for k, v in before.items():  # nothing ran
        np.testing.assert_array_equal(step.params[k], v)
    view = list(args)
    view[0] = args[0].view(np.ndarray)  # an ndarray subclass or view is fine: its data pointer
    assert prog._driver(*view) == 0


def test_an_untranslatable_driver_falls_back_to_numba(monkeypatch):
    """A statement outside the forms the emitter writes is ``Unsupported``; the program then
    runs the Numba driver over the same text and gives the same results."""
    with pytest.raises(driver.Unsupported, match="statement"):
        driver.native_driver("def step(a):\n    while a:\n        pass\n    return 0\n", ["i"], {})
    with pytest.raises(driver.Unsupported, match="call of"):
        driver.native_driver("def step(a):\n    unknown(a)\n    return 0\n", ["p"], {})

    def refuse(*a, **k):
        raise driver.Unsupported("refused by the test")

    feeds = {"fx": RNG.standard_normal((5, 6)).astype("f4"), "fy": RNG.integers(0, 3, 5)}
    nat, l_nat, _ = train(mlp("f"), "cpu", monkeypatch, True, **feeds)
    monkeypatch.setattr(driver, "native_driver", refuse)
    fb, l_fb, p_fb = train(mlp("f"), "cpu", monkeypatch, True, **feeds)
    assert not p_fb.native and l_fb == l_nat


def test_the_native_driver_runs_without_the_gil():
    """Two threads, each with its own step: both progress while the other is inside a call
    (the driver releases the GIL around its kernels, as the Numba driver's nogil did)."""
    steps = []
    for t in ("ga", "gb"):
        s = gc.compile(mlp(t), optimizer=gc.optim.SGD(0.01), target="cpu")
        feeds = {f"{t}x": RNG.standard_normal((64, 6)).astype("f4"), f"{t}y": RNG.integers(0, 3, 64)}
        s(**feeds)
        steps.append((s, feeds))
    assert all(s.program_for(64).native for s, _ in steps)
    errors = []

    def run(s, feeds):
        try:
            for _ in range(200):
                s(**feeds)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=sf) for sf in steps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and [s.iterations for s, _ in steps] == [201, 201]


def test_the_driver_checks_each_feeds_dtype_shape_and_layout_itself(monkeypatch):
    """The bound call leaves an array feed's dtype, shape and C-contiguity to the native
    driver, which returns FEED_MISMATCH before running anything; the step then takes the
    checked path (which converts, or raises the usual FeedError)."""
    monkeypatch.setenv("GRAPHC_NATIVE_DRIVER", "1")
    step = gc.compile(mlp("m"), optimizer=gc.optim.SGD(0.1), target="cpu", seed=2)
    ref = gc.compile(mlp("m"), optimizer=gc.optim.SGD(0.1), target="numpy", seed=2)
    xb, yb = RNG.standard_normal((5, 6)).astype("f4"), RNG.integers(0, 3, 5)
    for _ in range(2):
        step(mx=xb, my=yb), ref(mx=xb, my=yb)
    prog = step.program_for(5)
    assert prog.native and prog.natively_checked == {"mx", "my"}
    with step._store.lock:
        args = prog.driver_args({"mx": xb, "my": yb, **step._hyper_values()}, step._store)
    pos = len(args) - 2  # the feeds come last, in name order
    before = step.params
    for bad in (xb.astype("f8"), np.asfortranarray(np.tile(xb, (1, 1))), xb[:4], xb.reshape(1, 5, 6),
                np.zeros((5, 7), "f4"), xb[:, ::-1]):
        a = list(args)
        a[pos] = bad
        assert prog._driver(*a) == driver.FEED_MISMATCH
    for k, v in before.items():
        np.testing.assert_array_equal(step.params[k], v)
    # through the step: each of these takes the checked path and trains as the interpreter
    for x in (np.asfortranarray(xb), xb.astype("f8"), xb[:, ::-1].copy()[:, ::-1]):
        np.testing.assert_allclose(step(mx=x, my=yb)["loss"], ref(mx=x, my=yb)["loss"], rtol=1e-5)
    with pytest.raises(FeedError, match="mx"):
        step(mx=np.zeros((5, 7), "f4"), my=yb)
    fast = step.fast_calls
    for _ in range(3):  # and the usual feeds are served by the bound call again
        np.testing.assert_allclose(step(mx=xb, my=yb)["loss"], ref(mx=xb, my=yb)["loss"], rtol=1e-5)
    assert step.fast_calls >= fast + 2
    for k in ref.params:
        np.testing.assert_allclose(step.params[k], ref.params[k], rtol=1e-5, atol=1e-6)


def test_float32_exp_of_the_softmax_kernel_is_within_2_ulp_of_numpy():
    """views.exp32 (the vectorizable exp of float32 softmax cross-entropy) against NumPy over
    the whole float32 range: relative error < 3e-7, inf above log(FLT_MAX), 0 far below,
    NaN kept."""
    from numba import njit

    from graphc.backends.cpu.views import exp32

    @njit
    def run(x, o):
        for i in range(x.size):
            o[i] = exp32(x[i])

    x = np.concatenate([np.linspace(-110, 95, 400_001, dtype=np.float32),
                        np.array([np.nan, np.inf, -np.inf, 0.0, 88.72, 88.7229, -87.3, -104.0], np.float32)])
    got = np.empty_like(x)
    run(x, got)
    with np.errstate(over="ignore"):
        want = np.exp(x)
    normal = np.isfinite(want) & (want > np.finfo(np.float32).tiny)
    rel = np.abs(got[normal].astype(np.float64) - want[normal]) / want[normal]
    assert rel.max() < 3e-7
    assert np.array_equal(np.isinf(got), np.isinf(want)) and np.isnan(got[-8])
    assert got[-1] == 0.0 and got[-5] == 1.0


def test_a_translator_error_warns_and_falls_back_to_numba(monkeypatch):
    """An error inside graphc's own compiler (not an Unsupported form) is graphc's bug: the
    program says so once and runs the Numba driver, with the same results."""
    feeds = {"ex": RNG.standard_normal((5, 6)).astype("f4"), "ey": RNG.integers(0, 3, 5)}
    nat, l_nat, _ = train(mlp("e"), "cpu", monkeypatch, True, **feeds)

    def broken(*a, **k):
        raise RuntimeError("LLVM says no")

    monkeypatch.setattr(driver, "native_driver", broken)
    with pytest.warns(RuntimeWarning, match="native driver .* could not be compiled .*LLVM says no"):
        fb, l_fb, p_fb = train(mlp("e"), "cpu", monkeypatch, True, **feeds)
    assert not p_fb.native and l_fb == l_nat
