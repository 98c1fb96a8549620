"""gc.take (NumPy's take / an embedding lookup) and its scatter-add gradient: values against
np.take on every CPU target, gradients against finite differences (duplicate indices
accumulate), an embedding + dense model trained with Adam against the interpreter, fed indices
range-checked before anything runs (negative ones too: rejected, as PyTorch and Keras do), and
build-time errors naming the op and this file's line."""
from __future__ import annotations

import inspect
import os
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.core.errors import NumbaPerformanceWarning

import graphc as gc
from graphc import DTypeError, FeedError, ShapeError

THIS_FILE = os.path.basename(__file__)
rng = np.random.default_rng(0)


def here() -> int:
    return inspect.currentframe().f_back.f_lineno


def assert_located(excinfo, line: int, op: str, *fragments: str) -> str:
    msg = str(excinfo.value)
    assert msg.startswith(f"{op}:"), msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    m = re.search(r"at (\S+):(\d+)", msg)
    assert m and os.path.basename(m.group(1)) == THIS_FILE and int(m.group(2)) == line, msg
    return msg


# ---- forward and gradients on every CPU target: one program per target ------------------------

P2 = rng.standard_normal((7, 3))
P3 = rng.standard_normal((5, 2, 3))
PA = rng.standard_normal((3, 6, 2))
BIG = rng.standard_normal((50, 64))
PC = rng.standard_normal((5, 2))


def gather_graph():
    """Several takes in one program: a batch of ids (duplicates), 2-D int32 ids into a 3-D
    table, axis=1 with uint8 ids, a scalar id, constant ids, and one big enough for prange;
    plus the gradient of a weighted sum of all of them w.r.t. every table."""
    ids = gc.input("tk_ids", (None,), dtype="int64")
    ids2 = gc.input("tk_ids2", (2, 3), dtype="int32")
    ids8 = gc.input("tk_ids8", (4,), dtype="uint8")
    one = gc.input("tk_one", (), dtype="int16")
    many = gc.input("tk_many", (5000,), dtype="int64")  # 2.6 MB moved: worth a prange
    W2 = gc.param("tk_W2", P2.shape, init=P2)
    W3 = gc.param("tk_W3", P3.shape, init=P3)
    WA = gc.param("tk_WA", PA.shape, init=PA)
    WB = gc.param("tk_WB", BIG.shape, init=BIG)
    outs = [gc.take(W2, ids), gc.take(W3, ids2), gc.take(WA, ids8, axis=1), gc.take(W2, one),
            gc.take(W2, [4, 0, 4]), gc.take(WB, many), gc.take(WA, ids8, axis=-2),
            gc.take(gc.transpose(W2), [2, 0, 2]),  # a transposed table: copied, then taken
            gc.take(W2, 5)]  # a Python int: a one-element constant, still an array operand
    y = None
    for k, o in enumerate(outs):
        w = np.linspace(-1.0, 1.0, int(np.prod(o.shape[1:] if o.shape[:1] == (None,) else o.shape)))
        w = w.reshape(o.shape[1:] if o.shape[:1] == (None,) else o.shape).astype("float32")
        t = gc.sum(gc.square(o) * w) * (k + 1)
        y = t if y is None else y + t
    WC = gc.param("tk_WC", (5, 2), init=PC)
    s = gc.param("tk_s", (), init=np.float32(1.5))
    y = y + gc.sum(gc.take(WC, ids2)) * s  # its gradient is s broadcast: copied, then scattered
    return outs + list(gc.grad(y, [W2, W3, WA, WB, WC]))


def gather_feeds():
    return {"tk_ids": np.array([3, 0, 3, 6, 3]), "tk_ids2": np.array([[4, 4, 0], [1, 4, 2]], "int32"),
            "tk_ids8": np.array([5, 0, 5, 2], "uint8"), "tk_one": np.array(6, "int16"),
            "tk_many": rng.integers(0, 50, 5000)}


def expected(feeds):
    f = feeds
    return [np.take(P2, f["tk_ids"], 0), np.take(P3, f["tk_ids2"], 0), np.take(PA, f["tk_ids8"], 1),
            np.take(P2, f["tk_one"], 0), np.take(P2, [4, 0, 4], 0), np.take(BIG, f["tk_many"], 0),
            np.take(PA, f["tk_ids8"], -2), np.take(P2.T, [2, 0, 2], 0), np.take(P2, 5, 0)]


GATHER = gather_graph()


@pytest.fixture(scope="module")
def gather_ref():
    feeds = gather_feeds()
    return feeds, gc.compile(GATHER, target="numpy")(**feeds)


@pytest.mark.parametrize("target", ["numpy", "cpu", "parallel"])
def test_take_matches_np_take_and_interpreter(target, gather_ref):
    feeds, ref = gather_ref
    f = gc.compile(GATHER, target=target)
    with warnings.catch_warnings():  # a prange loop that Numba could not parallelize warns
        warnings.simplefilter("error", NumbaPerformanceWarning)
        got = f(**feeds)
    for i, (g, want) in enumerate(zip(got[:9], expected(feeds))):
        assert g.dtype == np.float32 and g.shape == want.shape, i
        np.testing.assert_array_equal(g, want.astype(np.float32), err_msg=f"take output {i}")
    for i, (g, want) in enumerate(zip(got[9:], ref[9:])):  # scatter-add gradients
        assert g.shape == want.shape and g.dtype == want.dtype
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5, err_msg=f"gradient {i}")
    # d/dWC of s * sum(take(WC, ids2)): s times how often each row was taken (duplicates add up)
    counts = np.bincount(feeds["tk_ids2"].ravel(), minlength=5).astype(np.float32)
    np.testing.assert_array_equal(got[-1], np.repeat(1.5 * counts[:, None], 2, axis=1))
    if target == "parallel":
        assert any(k.parallel for k in f.program_for(5).module.kernels if k.kind == "take")
        assert "for q in prange(A * m):" in f.source()
    if target != "numpy":
        listing = f.kernels()
        assert " take " in listing and " scatter_add " in listing, listing


def test_take_grad_finite_differences_with_duplicates():
    ids = gc.input("fd_ids", (6,), dtype="int32")
    ids2 = gc.input("fd_ids2", (2, 2), dtype="int64")
    W = gc.param("fd_W", (4, 3))
    V = gc.param("fd_V", (2, 5, 3))
    e = gc.take(W, ids)  # (6, 3), rows 1 and 3 used twice
    f = gc.take(V, ids2, axis=1)  # (2, 2, 2, 3)
    y = gc.sum(gc.tanh(e) * e) + gc.sum(gc.square(f) * f)
    feeds = {"fd_ids": np.array([1, 3, 1, 0, 3, 2], "int32"), "fd_ids2": np.array([[4, 4], [0, 4]])}
    params = {"fd_W": rng.standard_normal((4, 3)), "fd_V": rng.standard_normal((2, 5, 3))}
    err = gc.check_grads(y, [W, V], feeds, params, order=2)
    assert max(err.values()) < 1e-6, err
    # an unused row gets an exact zero gradient
    g = gc.evaluate(gc.grad(y, [V]), feeds, params)[0]
    np.testing.assert_array_equal(g[:, [1, 2, 3]], 0.0)


@settings(max_examples=25, derandomize=True, deadline=None)
@given(st.data())
def test_take_grads_on_drawn_shapes(data):
    """Any table rank, axis and index rank (0 to 2), indices drawn with repeats: first and
    second order against finite differences (the interpreter: no compile per example)."""
    shape = tuple(data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3), label="shape"))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    ishape = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2), label="index shape"))
    n = shape[axis]
    ids = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=int(np.prod(ishape)),
                                      max_size=int(np.prod(ishape))), label="ids")).reshape(ishape)
    W = gc.param("hy_W", shape)
    i = gc.input("hy_i", ishape, dtype="int32")
    t = gc.take(W, i, axis=axis)
    assert t.shape == np.take(np.zeros(shape), ids, axis=axis).shape
    w = np.linspace(-1, 1, int(np.prod(t.shape))).reshape(t.shape)
    y = gc.sum(gc.tanh(t) * t * w)
    params = {"hy_W": np.random.default_rng(len(shape)).standard_normal(shape)}
    err = gc.check_grads(y, [W], {"hy_i": ids.astype("int32")}, params, order=2)
    assert max(err.values()) < 1e-6, err


# ---- an embedding + dense model trained with Adam -----------------------------------------------

VOCAB, DIM, SEQ, CLS = 9, 3, 4, 3
E0 = rng.standard_normal((VOCAB, DIM)).astype("float32")
W0 = rng.standard_normal((SEQ * DIM, CLS)).astype("float32") * 0.5


def embedding_model():
    tok = gc.input("em_tok", (None, SEQ), dtype="int32")
    lab = gc.input("em_lab", (None,), dtype="int64")
    E = gc.param("em_E", (VOCAB, DIM), init=E0)
    W = gc.param("em_W", (SEQ * DIM, CLS), init=W0)
    b = gc.param("em_b", (CLS,))
    h = gc.reshape(gc.take(E, tok), (None, SEQ * DIM))
    return gc.softmax_cross_entropy(gc.tanh(h) @ W + b, lab)


def em_batch(seed, n=5):
    r = np.random.default_rng(seed)
    tok = r.integers(0, VOCAB, (n, SEQ)).astype("int32")
    tok[0, :2] = tok[1, 3] = 2  # duplicate ids within and across rows
    return {"em_tok": tok, "em_lab": r.integers(0, CLS, n)}


LOSS = embedding_model()


@pytest.fixture(scope="module")
def em_ref():
    ref = gc.compile(LOSS, optimizer=gc.optim.Adam(0.05), target="numpy")
    losses = [float(ref(**em_batch(s))["loss"]) for s in range(3)]
    return ref, losses


@pytest.fixture(scope="module")
def em_cpu():
    return gc.compile(LOSS, optimizer=gc.optim.Adam(0.05), target="cpu")


def _same_params(a, b, rtol=2e-5):
    pa, pb = a.params, b.params
    assert set(pa) == set(pb)
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=rtol, atol=rtol, err_msg=k)


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_embedding_dense_adam_matches_numpy(target, em_ref, em_cpu):
    ref, losses = em_ref
    step = em_cpu if target == "cpu" else gc.compile(LOSS, optimizer=gc.optim.Adam(0.05), target=target)
    got = [float(step(**em_batch(s))["loss"]) for s in range(3)]
    np.testing.assert_allclose(got, losses, rtol=2e-5)
    _same_params(step, ref)
    assert step.iterations == 3
    # the embedding really trained, only in the rows the batches used
    used = np.unique(np.concatenate([em_batch(s)["em_tok"].ravel() for s in range(3)]))
    moved = np.any(step.params["em_E"] != E0, axis=1)
    assert moved[used].all() and not moved[np.setdiff1d(np.arange(VOCAB), used)].any()
    if target == "cpu":  # later tests reuse this step: put it back to the reference's state
        step.load_state_dict(ref.state_dict())


@pytest.mark.parametrize("target", ["numpy", "cpu"])
@pytest.mark.parametrize("bad", [VOCAB, -1, 1000])
def test_out_of_range_ids_are_a_feed_error_before_anything_is_written(target, bad, em_ref, em_cpu):
    ref, _ = em_ref
    step = em_cpu if target == "cpu" else ref
    feeds = em_batch(7)
    step(**feeds)  # a good call first: the native driver's own check is what runs next
    before = step.state_dict()
    tok = feeds["em_tok"].copy()
    tok[-1, -1] = bad  # the very last element of a 2-D feed
    with pytest.raises(FeedError) as ei:
        step(em_tok=tok, em_lab=feeds["em_lab"])
    msg = str(ei.value)
    assert "'em_tok'" in msg and f"[0, {VOCAB})" in msg and "take" in msg, msg
    after = step.state_dict()
    assert step.iterations == int(before["state"]["step"])
    for section in ("params", "state"):
        for k in before[section]:
            np.testing.assert_array_equal(after[section][k], before[section][k], err_msg=k)


def test_out_of_range_on_a_fresh_cpu_step_compiles_nothing():
    step = gc.compile(LOSS, optimizer=gc.optim.Adam(0.05), target="cpu")
    feeds = em_batch(3)
    feeds["em_tok"][2, 1] = -3
    with pytest.raises(FeedError, match=r"'em_tok'.*\[0, 9\)"):
        step(**feeds)
    assert step._programs == {} and step.iterations == 0


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_computed_ids_out_of_range_raise(target):
    """Indices computed in the step cannot be checked before it: the kernel raises (on cpu
    before it writes anything; TensorFlow's gather does the same on CPU)."""
    ids = gc.input("cmp_ids", (3,), dtype="int64")
    W = gc.param("cmp_W", (4, 2), init=np.arange(8.0).reshape(4, 2))
    f = gc.compile(gc.take(W, ids + 2), target=target)
    np.testing.assert_array_equal(f(cmp_ids=np.array([0, 1, 1])), [[4, 5], [6, 7], [6, 7]])
    with pytest.raises(ValueError, match=r"take: .*(indices must lie in \[0, 4\)|out of range)"):
        f(cmp_ids=np.array([0, 2, 1]))


# ---- build-time errors -----------------------------------------------------------------------------

def test_float_indices_are_a_dtype_error():
    W = gc.param("err_W", (4, 2))
    x = gc.input("err_x", (3,))
    with pytest.raises(DTypeError) as ei:
        line = here(); gc.take(W, x)  # noqa: E702
    assert_located(ei, line, "take", "integer", "float32", "(3,)")


def test_rank0_params_and_bad_axis_are_shape_errors():
    s = gc.param("err_s", ())
    ids = gc.input("err_ids", (3,), dtype="int64")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.take(s, ids)  # noqa: E702
    assert_located(ei, line, "take", "rank", "()")
    W = gc.param("err_W2", (4, 2))
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.take(W, ids, axis=2)  # noqa: E702
    assert_located(ei, line, "take", "axis 2", "(4, 2)")


def test_constant_indices_are_range_checked_when_built():
    W = gc.param("err_W3", (4, 2))
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.take(W, [0, 4])  # noqa: E702
    assert_located(ei, line, "take", "[0, 4)")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.take(W, np.array([-1, 0]))  # noqa: E702
    assert_located(ei, line, "take", "[0, 4)", "negative")


def test_batch_dim_on_the_taken_axis_is_a_shape_error():
    x = gc.input("err_xb", (None, 3))
    ids = gc.input("err_ids2", (2,), dtype="int64")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.take(x, ids)  # noqa: E702
    assert_located(ei, line, "take", "batch")
    assert gc.take(x, ids, axis=1).shape == (None, 2)  # another axis of a batched operand is fine
