"""Static slicing, padding, concatenation, stacking and splitting (ops/slicing.py): NumPy
basic indexing on tensors, gc.pad / concatenate / stack / split, against NumPy on every CPU
target, with finite-difference gradients (first and second order), a training step, and the
errors a user meets."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import graphc as gc

RNG = np.random.default_rng(0)
V = RNG.normal(size=(3, 5, 6))
W = RNG.normal(size=(6, 5))


def _cases(x, w, lib):
    """The same expressions on a tensor (lib=gc) or on arrays (lib=np)."""
    T = (lambda a: gc.transpose(a)) if lib is gc else (lambda a: a.T)
    B = gc.broadcast_to if lib is gc else np.broadcast_to
    return [
        x[:, 1:4], x[:, ::2, -1:], x[..., -1], x[:, None, 4, ::-2], x[:, 3:1:-1, 5:1:-2], x[:, -7:9, -2],
        x[..., None, :], x[:, 2:2], x[:, ::-1, ::-1],
        lib.pad(x, ((0, 0), (1, 2), (0, 3)), constant_values=2.5), lib.pad(x[:, :, 0], ((0, 0), (2, 0))),
        lib.concatenate([x, x[:, :2] * 2.0], 1), lib.concatenate([x[..., :1], x, x[..., ::-3]], axis=-1),
        lib.stack([x[:, 0], x[:, 1]], -1), lib.stack([x[:, 0], x[:, 4]]),
        *lib.split(x, [2, -1], axis=2), *lib.split(x, 5, axis=1), *lib.split(x, [4, 1, 9], axis=1),
        T(w)[1:, ::2], lib.concatenate([T(w), B(w[0:1, :5], (3, 5)).T], 1), lib.pad(T(w), 1),  # views read in place
        T(w)[::-2, 3], B(w[:, 2], (2, 6))[:, 1::3], lib.pad(B(w[0, :1], (4,)), (1, 2)),
    ]


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_forward_and_gradients_match_numpy(target):
    x = gc.input("x", (None, 5, 6), dtype="float64")
    w = gc.input("w", (6, 5), dtype="float64")
    outs = _cases(x, w, gc)
    y = None
    for k, o in enumerate(outs):  # a weighted sum: every output's cotangent differs
        shape = tuple(1 if d is None else d for d in o.shape)
        t = gc.sum(o * gc.const(np.cos(np.arange(int(np.prod(shape))) + k).reshape(shape)))
        y = t if y is None else y + t
    grads = gc.grad(y, [x, w])
    f = gc.compile(outs + grads, target=target)
    got = f(x=V, w=W)
    want = _cases(V, W, np)
    for i, (g, e) in enumerate(zip(got, want)):
        assert g.shape == e.shape and g.dtype == e.dtype, (i, g.shape, e.shape)
        np.testing.assert_array_equal(g, e, err_msg=f"output {i}")
    ref = gc.compile(outs + grads, target="numpy")(x=V, w=W)
    for g, e in zip(got[len(outs):], ref[len(outs):]):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
    assert np.abs(got[-2]).sum() > 0 and np.abs(got[-1]).sum() > 0


def test_parallel_kernels_match_numpy():
    """Large enough for prange (emitter.parfor_pays: ~2.6 MB moved per kernel): over the first
    dim longer than 1, also below a leading dim of 1 (a stacked or expanded operand) and per
    operand of a concatenation."""
    x = gc.input("px", (None, 128))
    v = np.random.default_rng(3).normal(size=(2600, 128)).astype("f4")

    def cases(x, lib):
        return [x[:, ::-1], lib.pad(x, ((0, 0), (2, 1))), lib.concatenate([x, x * 2.0], 1),
                lib.concatenate([x[:, 1:], x[:, :1]], 1), lib.stack([x, -x]), lib.pad(x[None], ((0, 0), (0, 0), (1, 0))),
                x[None][:, :, 1:], lib.concatenate([x[None], x[None, :, ::2].T.T], 2)]

    f = gc.compile(cases(x, gc), target="parallel")
    listing = f.kernels(2600)
    for got, want in zip(f(px=v), cases(v, np)):
        np.testing.assert_array_equal(got, want)
    for kind in ("slice", "pad", "concat"):
        assert len(re.findall(rf"\b{kind}\s+parallel", listing)) >= 2, listing
    assert re.search(r"slice\s+parallel \(1, 2600, 128\)", listing), listing  # prange below a dim of 1


def test_slices_of_one_rank_share_one_compiled_kernel():
    """Starts, steps and extents are kernel arguments: every rank-3 slice is one of two
    functions (rows copied as runs where the last axis has a unit step, else a loop nest)."""
    x = gc.input("x", (None, 5, 6))
    f = gc.compile([x[:, 1:4], x[:, ::-2, 5:1:-3], x[:, :, 2:], gc.pad(x, ((0, 0), (1, 1), (2, 0))),
                    gc.pad(x[:, 1:], ((0, 0), (0, 3), (1, 0)))], target="cpu")
    f(x=V.astype("float32"))
    fns = {}
    for info in f.program_for(3).module.kernels:
        fns.setdefault(info.kind, set()).add(info.function)
    assert len(fns["slice"]) == 2 and len(fns["pad"]) == 1, fns


def _index_key(draw, shape):
    items = []
    for d in shape:
        kind = draw(st.sampled_from(["slice", "slice", "int", "newaxis"]))
        if kind == "int":
            items.append(draw(st.integers(-d, d - 1)))
        elif kind == "newaxis":
            items.extend([None, slice(None)])
        else:
            bound = st.none() | st.integers(-d - 2, d + 2)
            step = st.none() | st.integers(-3, 3).filter(lambda s: s != 0)
            items.append(slice(draw(bound), draw(bound), draw(step)))
    if draw(st.booleans()) and items:  # an Ellipsis standing for trailing full slices
        cut = draw(st.integers(0, len(items)))
        if all(isinstance(k, slice) and k == slice(None) for k in items[cut:]):
            items = items[:cut] + [Ellipsis]
    return tuple(items)


@st.composite
def _indexing(draw, min_dim=1):
    shape = tuple(draw(st.lists(st.integers(min_dim, 6), min_size=1, max_size=3)))
    return shape, _index_key(draw, shape)


@settings(max_examples=60, derandomize=True)
@given(_indexing())
def test_indexing_semantics_are_numpys(case):
    """The canonical slice entries reproduce NumPy basic indexing (interpreter), and the
    gradient scatters back into exactly the positions read (pad with interior fill)."""
    shape, key = case
    v = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) + 1
    x = gc.input("x", shape, dtype="float64")
    y = x[key]
    want = v[key]
    assert y.shape == want.shape
    (g,) = gc.grad(gc.sum(y * y), [x])
    got, gv = gc.evaluate([y, g], {"x": v}, {})
    np.testing.assert_array_equal(got, want)
    expect = np.zeros_like(v)
    np.add.at(expect, key, 2 * want)  # basic indexing reads each position at most once
    np.testing.assert_array_equal(gv, expect)


@settings(max_examples=6, derandomize=True)
@given(_indexing(min_dim=3))
def test_compiled_slices_and_their_gradients_match_the_interpreter(case):
    shape, key = case
    x = gc.input("x", shape, dtype="float64")
    y = x[key]
    # an empty result is covered by test_forward_and_gradients_match_numpy; elementwise loops
    # over zero-size tensors do not compile on cpu (a loop-kernel limitation, not slicing's)
    assume(0 not in y.shape)
    outs = [y, *gc.grad(gc.sum(gc.tanh(y) * 3.0), [x])]
    v = np.random.default_rng(1).normal(size=shape)
    for got, want in zip(gc.compile(outs, target="cpu")(x=v), gc.compile(outs, target="numpy")(x=v)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_gradients_first_and_second_order():
    x = gc.input("x", (3, 5), dtype="float64")
    z = gc.input("z", (3, 2), dtype="float64")
    v, u = RNG.normal(size=(3, 5)), RNG.normal(size=(3, 2))
    c = gc.concatenate([gc.tanh(x[:, ::-2]), z * z, gc.pad(x[1:, 1:4], ((1, 0), (0, 0)), constant_values=0.3)], 1)
    a, b = gc.split(c, [3], axis=1)
    s = gc.stack([a, gc.tanh(b[:, :3])], axis=1)
    loss = gc.sum(gc.square(s)) + gc.sum(gc.tanh(c[::2, 1:]) * x[0, 0])
    rep = gc.check_grads(loss, [x, z], feeds={"x": v, "z": u}, order=2, rtol=1e-6)
    assert max(rep.values()) < 1e-6


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_training_step_with_concatenate_and_slicing_matches_numpy(target):
    x = gc.input("sx", (None, 6))
    t = gc.input("st", (None, 2))
    w1 = gc.param("sw1", (3, 4))
    w2 = gc.param("sw2", (3, 4))
    w3 = gc.param("sw3", (8, 2))
    h = gc.concatenate([gc.relu(x[:, :3] @ w1), gc.tanh(x[:, 3:] @ w2)], axis=1)  # (None, 8)
    h = gc.pad(h[:, 1:], ((0, 0), (0, 1)))                                          # shift left, zero-fill
    a, b = gc.split(h, 2, axis=1)
    z = gc.reshape(gc.stack([a, b[:, ::-1]], axis=-1), (None, 8))
    loss = gc.mse(z @ w3, t)
    ref = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="numpy")
    nat = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target=target)
    rng = np.random.default_rng(2)
    xb, tb = rng.normal(size=(7, 6)).astype("f4"), rng.normal(size=(7, 2)).astype("f4")
    first = None
    for i in range(4):
        lr, ln = ref(sx=xb, st=tb)["loss"], nat(sx=xb, st=tb)["loss"]
        np.testing.assert_allclose(ln, lr, rtol=1e-5, err_msg=f"loss at step {i}")
        first = lr if first is None else first
    assert lr < first  # it trains
    for k, v in ref.params.items():
        np.testing.assert_allclose(nat.params[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
        assert not np.array_equal(v, gc.compile(loss, target="numpy").params[k])  # every param moved


# ---- errors --------------------------------------------------------------------------------------

def test_batch_dimension_cannot_be_sliced_padded_or_joined_along():
    x = gc.input("x", (None, 4))
    for bad in (lambda: x[1:], lambda: x[::2, 0], lambda: x[0], lambda: x[::-1]):
        with pytest.raises(gc.ShapeError, match=r"batch dimension.*test_slicing\.py:\d+"):
            bad()
    assert x[:].shape == (None, 4) and x[0:].shape == (None, 4) and x[::1, 1:].shape == (None, 3)
    with pytest.raises(gc.ShapeError, match=r"pad: axis 0 is the batch dimension.*test_slicing\.py"):
        gc.pad(x, 1)
    with pytest.raises(gc.ShapeError, match=r"concatenate: axis 0 is the batch dimension.*\(None, 4\).*test_slicing"):
        gc.concatenate([x, x])
    with pytest.raises(gc.ShapeError, match=r"split: axis 0 is the batch dimension"):
        gc.split(x, 2)
    assert gc.pad(x, ((0, 0), (1, 2))).shape == (None, 7) and gc.stack([x, x]).shape == (2, None, 4)


def test_index_errors_name_the_index_and_the_line():
    x = gc.input("x", (3, 4))
    with pytest.raises(gc.ShapeError, match=r"x\[1, 4\]: index 4 is out of bounds for axis 1 with size 4 "
                                           r"\(operands: \(3, 4\) float32\) at .*test_slicing\.py:\d+"):
        x[1, 4]
    with pytest.raises(gc.ShapeError, match="too many indices: the tensor is 2-dimensional, but 3 were indexed"):
        x[0, 0, 0]
    with pytest.raises(gc.ShapeError, match="single ellipsis"):
        x[..., 0, ...]
    with pytest.raises(gc.ShapeError, match="step cannot be zero"):
        x[::0]
    for key in ([0, 1], np.array([1, 2]), x, 1.5, True, (slice(0, 2), [1])):
        with pytest.raises(TypeError, match=r"gc\.take.*test_slicing\.py"):
            x[key]
    with pytest.raises(TypeError, match="static ints"):
        x[:gc.input("k", (), dtype="int64")]
    with pytest.raises(TypeError, match="not iterable"):
        list(x)


def test_pad_concatenate_stack_split_errors():
    x = gc.input("x", (3, 4))
    y = gc.input("y", (3, 5))
    with pytest.raises(gc.ShapeError, match=r"pad: pad widths must be non-negative"):
        gc.pad(x, ((0, -1), (0, 0)))
    with pytest.raises(gc.ShapeError, match=r"pad_width of shape \(3, 2\)"):
        gc.pad(x, [(1, 1)] * 3)
    with pytest.raises(ValueError, match="only mode='constant'"):
        gc.pad(x, 1, mode="reflect")
    with pytest.raises(TypeError, match="pad_width must be integers"):
        gc.pad(x, 1.5)
    with pytest.raises(gc.ShapeError, match=r"concatenate: operands differ at axis 1 \(\(3, 4\) vs \(3, 5\)\).*"
                                           r"\(operands: \(3, 4\) float32, \(3, 5\) float32\) at .*test_slicing"):
        gc.concatenate([x, y], axis=0)
    assert gc.concatenate([x, y], axis=1).shape == (3, 9)
    with pytest.raises(gc.ShapeError, match="concatenate: all tensors must have the same rank"):
        gc.concatenate([x, x[0]])
    with pytest.raises(gc.ShapeError, match="concatenate: axis 2 is out of range"):
        gc.concatenate([x, x], axis=2)
    with pytest.raises(TypeError, match="concatenate: takes a list or tuple"):
        gc.concatenate(x)
    with pytest.raises(gc.ShapeError, match="stack: all tensors must have the same shape"):
        gc.stack([x, y])
    with pytest.raises(gc.ShapeError, match=r"split: array split does not result in an equal division: 4 elements "
                                           r"along axis 1 into 3 sections.*test_slicing"):
        gc.split(x, 3, axis=1)
    with pytest.raises(TypeError, match="split: indices_or_sections"):
        gc.split(x, [1.5])


def test_dtypes_are_promoted_and_kept():
    x = gc.input("x", (2, 3), dtype="float32")
    i = gc.input("i", (2, 3), dtype="int64")
    c = gc.concatenate([x, i], axis=1)
    assert c.dtype == np.concatenate([np.zeros((2, 3), "f4"), np.zeros((2, 3), "i8")], 1).dtype
    p = gc.pad(i, 1, constant_values=7)
    assert p.dtype == np.int64
    s = gc.input("s", (), dtype="float32")  # a rank-0 feed reaches the driver as a scalar
    sb = gc.broadcast_to(s, (2, 3))
    xv, iv = np.ones((2, 3), "f4"), np.arange(6).reshape(2, 3)
    outs = [c, p, i[:, ::-1], sb[:, 1:], gc.pad(sb, (1, 0)), gc.concatenate([sb, x], 0)]
    got = gc.compile(outs, target="cpu")(x=xv, i=iv, s=np.float32(2.5))
    np.testing.assert_array_equal(got[1], np.pad(iv, 1, constant_values=7))
    np.testing.assert_array_equal(got[0], np.concatenate([xv, iv], 1))
    np.testing.assert_array_equal(got[2], iv[:, ::-1])
    sv = np.full((2, 3), 2.5, "f4")
    for g, e in zip(got[3:], [sv[:, 1:], np.pad(sv, (1, 0)), np.concatenate([sv, xv], 0)]):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)


def test_out_of_bounds_indices_are_index_errors_as_in_numpy():
    x = gc.input("oob_x", (3, 4))
    for key in (5, (0, 4), (0, 0, 0)):
        with pytest.raises(IndexError):
            x[key]
        with pytest.raises(gc.ShapeError, match="test_slicing"):
            x[key]
