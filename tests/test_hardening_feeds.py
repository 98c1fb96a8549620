"""Feeds a step must accept however the array was made (pickled, big-endian, Fortran-order,
strided: converted as the checked Python path converts them, bit for bit the plain array's
result), and positional feeds in the order the inputs were declared."""
import pickle

import numpy as np
import pytest

import graphc as gc
from graphc.errors import FeedError

TARGETS = ["numpy", "cpu", "parallel", "cpu-numba-driver"]
RNG = np.random.default_rng(7)
XB = RNG.standard_normal((6, 5)).astype("f4")
YB = RNG.integers(0, 3, 6)  # int64


def _variants():
    """(name, x, y) feeds equal in value to (XB, YB) but not plain C-contiguous native arrays."""
    wide = np.zeros((6, 10), "f4")
    wide[:, ::2] = XB
    tall = np.zeros((12, 5), "f4")
    tall[::2] = XB
    return [
        ("pickled x", pickle.loads(pickle.dumps(XB)), YB),
        ("pickled y", XB, pickle.loads(pickle.dumps(YB))),
        ("pickled both", pickle.loads(pickle.dumps(XB)), pickle.loads(pickle.dumps(YB))),
        ("<f4 built", np.asarray(XB, dtype=np.dtype("<f4")), np.asarray(YB, dtype=np.dtype("<i8"))),
        ("big-endian x", XB.astype(">f4"), YB),
        ("big-endian y", XB, YB.astype(">i8")),
        ("pickled big-endian", pickle.loads(pickle.dumps(XB.astype(">f4"))),
         pickle.loads(pickle.dumps(YB.astype(">i8")))),
        ("fortran x", np.asfortranarray(XB), YB),
        ("strided cols", wide[:, ::2], YB),
        ("strided rows", tall[::2], YB[::-1].copy()[::-1]),
        ("strided y", XB, np.repeat(YB, 2)[::2]),
    ]


_STEPS: dict = {}


def _step(target, monkeypatch):
    """One compiled step per target (shared by the tests: no new compiles per test)."""
    if target not in _STEPS:
        native = target != "cpu-numba-driver"
        monkeypatch.setenv("GRAPHC_NATIVE_DRIVER", "1" if native else "0")
        x = gc.input("hfx", (None, 5))
        y = gc.input("hfy", (None,), dtype="int64")
        W = gc.param("hfW", (5, 4), init="he_normal")
        b = gc.param("hfb", (4,))
        W2 = gc.param("hfW2", (4, 3), init="he_normal")
        loss = gc.softmax_cross_entropy(gc.relu(x @ W + b) @ W2, y)
        step = gc.compile(loss, optimizer=gc.optim.Adam(0.01), target=target.split("-")[0], seed=3)
        step(hfx=XB, hfy=YB)  # built; on cpu/parallel the bound call is armed by the next
        if target != "numpy":
            prog = step.program_for(6)
            assert prog.native == native
        _STEPS[target] = (step, step.state_dict())
    return _STEPS[target]


def _one(step, sd0, x, y):
    step.load_state_dict(sd0)
    out = step(hfx=x, hfy=y)
    return float(out["loss"]), step.params


@pytest.mark.parametrize("target", TARGETS)
def test_feeds_of_any_layout_give_the_plain_arrays_result_bit_for_bit(target, monkeypatch):
    step, sd0 = _step(target, monkeypatch)
    for name, x, y in _variants():
        np.testing.assert_array_equal(x, XB)
        np.testing.assert_array_equal(y, YB)
        for _ in range(2):  # after a plain call (the bound call armed), and after itself
            loss0, p0 = _one(step, sd0, XB, YB)
            loss, p = _one(step, sd0, x, y)
            assert loss == loss0, (target, name)
            for k in p0:
                np.testing.assert_array_equal(p[k], p0[k], err_msg=f"{target}: {name}: {k}")
        loss2, _ = _one(step, sd0, x, y)  # the same variant twice in a row
        assert loss2 == loss0, (target, name)


@pytest.mark.parametrize("target", ["cpu", "parallel", "cpu-numba-driver"])
def test_ordinary_arrays_still_take_the_bound_call(target, monkeypatch):
    step, sd0 = _step(target, monkeypatch)
    _one(step, sd0, pickle.loads(pickle.dumps(XB)), YB.astype(">i8"))  # a converted call first
    step(hfx=XB, hfy=YB)  # re-arms
    assert step._bound is not None

    def checked(feeds):  # pragma: no cover - the assertion's failure
        raise AssertionError("the bound call did not serve an ordinary call")

    monkeypatch.setattr(step, "_run_checked", checked)
    n = step.fast_calls
    for _ in range(3):
        step(hfx=XB, hfy=YB)
    assert step.fast_calls == n + 3
    # an unpickled array's equal dtype is served by the bound call too (no conversion)
    step(hfx=pickle.loads(pickle.dumps(XB)), hfy=pickle.loads(pickle.dumps(YB)))
    assert step.fast_calls == n + 4


def test_a_feed_mismatch_from_the_driver_falls_back_to_the_checked_path(monkeypatch):
    """A layout the native driver does not take (FEED_MISMATCH) after the Python fast check
    accepted the feeds runs through the full check's arrays instead of raising."""
    from graphc.backends.cpu.driver import FEED_MISMATCH
    shared, sd0 = _step("cpu", monkeypatch)
    loss0, p0 = _one(shared, sd0, XB, YB)
    # a step of its own (the same texts: its kernels and driver come from the caches)
    step = gc.compile(shared.graph.outputs[0], optimizer=gc.optim.Adam(0.01), target="cpu", seed=3)
    step(hfx=XB, hfy=YB)
    prog = step.program_for(6)
    assert step._bound is None  # the next call takes the fast check + prog.run
    real, calls = prog._driver, []

    def refuses_once(*args):
        calls.append(len(calls))
        return FEED_MISMATCH if len(calls) == 1 else real(*args)

    prog._driver = refuses_once
    loss, p = _one(step, sd0, XB, YB)
    assert len(calls) == 2 and loss == loss0
    for k in p0:
        np.testing.assert_array_equal(p[k], p0[k])


@pytest.mark.parametrize("target", TARGETS)
def test_bad_feeds_are_still_refused_by_name(target, monkeypatch):
    step, sd0 = _step(target, monkeypatch)
    step.load_state_dict(sd0)
    it = step.iterations
    with pytest.raises(FeedError, match="'hfy'.*indices must lie in"):
        step(hfx=pickle.loads(pickle.dumps(XB)), hfy=(YB + 3).astype(">i8"))
    with pytest.raises(FeedError, match="'hfx'.*expects dtype"):
        step(hfx=XB.astype("c8"), hfy=YB)
    with pytest.raises(FeedError, match="'hfx'.*NaN"):
        step(hfx=np.full((6, 5), np.nan, ">f4"), hfy=YB)
    assert step.iterations == it


# ---- positional feeds ------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_positional_feeds_follow_the_declaration_order(target, monkeypatch):
    step, sd0 = _step(target, monkeypatch)
    assert step.input_names == ["hfx", "hfy"]
    loss0, p0 = _one(step, sd0, XB, YB)
    for call in (lambda: step(XB, YB), lambda: step(XB, hfy=YB)):
        step.load_state_dict(sd0)
        assert float(call()["loss"]) == loss0
        for k, v in step.params.items():
            np.testing.assert_array_equal(v, p0[k])
    with pytest.raises(FeedError, match=r"'hfx' given twice.*\['hfx', 'hfy'\]"):
        step(XB, hfx=XB, hfy=YB)
    with pytest.raises(FeedError, match=r"3 positional feeds.*2 inputs.*\['hfx', 'hfy'\]"):
        step(XB, YB, YB)
    with pytest.raises(FeedError, match="missing input"):
        step(XB)


@pytest.mark.parametrize("target", ["numpy", "cpu", "parallel"])
def test_positional_feeds_of_a_function_and_a_label_declared_first(target):
    t = gc.input("pft", (None,), dtype="int64")  # declared first, used last in the graph
    x = gc.input("pfx", (None, 5))
    W = gc.param("pfW", (5, 3), init="he_normal")
    logits = x @ W
    f = gc.compile({"ce": gc.softmax_cross_entropy(logits, t), "logits": logits}, target=target, seed=1)
    assert f.input_names == ["pft", "pfx"]
    want = f(pfx=XB, pft=YB)
    for got in (f(YB, XB), f(YB, pfx=XB), f(pft=YB, pfx=XB)):
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    g = gc.compile(logits, params=f, target=target)
    assert g.input_names == ["pfx"]
    np.testing.assert_array_equal(g(XB), want["logits"])
    with pytest.raises(FeedError, match=r"2 positional feeds.*1 input.*\['pfx'\]"):
        g(XB, XB)
