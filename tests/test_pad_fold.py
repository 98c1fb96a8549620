"""Sums of disjoint pads fold into one concatenate (the gradient of a tensor split into gates),
and the pad kernel that remains copies the operand in place of a division per element."""
from __future__ import annotations

import re
import numpy as np
import pytest

import graphc as gc
from graphc.compiler import lower

B = 5


def _gates(order):
    """z = x @ W split into 4 gates of 3 columns, used in ``order``: the cotangent of z is a
    sum of 4 pads whose accumulation order follows the use order."""
    x = gc.input("gx", (None, 4))
    W = gc.param("gW", (4, 12), init="glorot_uniform")
    z = x @ W
    g = {k: z[:, 3 * k:3 * (k + 1)] for k in range(4)}
    acts = {0: gc.sigmoid, 1: gc.tanh, 2: gc.sigmoid, 3: gc.exp}
    terms = [acts[k](g[k]) * (k + 1.0) for k in order]
    y = terms[0]
    for t in terms[1:]:
        y = y * t + t
    return gc.sum(y), W


def _feeds(seed=0):
    return {"gx": np.random.default_rng(seed).standard_normal((B, 4)).astype(np.float32)}


def _lowered_ops(f):
    g, _, _ = lower(f._program, B)
    return [n.op for n in g.nodes]


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 0, 2, 1), (1, 3, 0, 2)])
def test_gate_cotangents_fold_into_one_concatenate(order):
    loss, W = _gates(order)
    outs = [loss] + gc.grad(loss, [W])
    f = gc.compile(outs, target="cpu")
    ops = _lowered_ops(f)
    assert "pad" not in ops, ops
    assert ops.count("concatenate") == 1, ops
    ref = gc.compile(outs, target="numpy")(**_feeds())
    for target in ("cpu", "parallel"):
        got = gc.compile(outs, target=target)(**_feeds())
        for a, b in zip(ref, got):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_gaps_and_overlaps():
    x = gc.input("ox", (None, 10))
    s = gc.sum(gc.tanh(x[:, 0:3]) * 2.0) + gc.sum(gc.exp(x[:, 6:8])) + gc.sum(gc.square(x[:, 7:10]))
    (gx,) = gc.grad(s, [x])  # 0:3 and 6:8 disjoint with a gap; 7:10 overlaps 6:8
    f = gc.compile([gx], target="cpu")
    feeds = {"ox": np.linspace(-2, 2, 5 * 10, dtype=np.float32).reshape(5, 10)}
    ref = gc.compile([gx], target="numpy")(**feeds)[0]
    np.testing.assert_allclose(f(**feeds)[0], ref, rtol=2e-6, atol=1e-6)
    ops = _lowered_ops(f)
    assert "pad" in ops  # the overlapping one stays a pad


def test_grad_of_split_matches_finite_differences():
    x = gc.input("dx", (3, 8), dtype="float64")
    parts = [x[:, 2 * k:2 * k + 2] for k in range(4)]
    s = gc.sum(gc.sin(parts[2]) * parts[0]) + gc.sum(gc.exp(parts[3])) + gc.sum(parts[1] ** 3)
    (gx,) = gc.grad(s, [x])
    f = gc.compile([s, gx], target="cpu")
    v = np.random.default_rng(1).standard_normal((3, 8))
    _, g = f(dx=v)
    eps = 1e-6
    num = np.zeros_like(v)
    for i in np.ndindex(v.shape):
        d = np.zeros_like(v)
        d[i] = eps
        num[i] = (f(dx=v + d)[0] - f(dx=v - d)[0]) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)
    assert "pad" not in _lowered_ops(f)


@pytest.mark.numba_kernels
@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_pad_kernel_values_fill_interior_and_nan(target):
    x = gc.input("px", (4, 5))
    a = gc.pad(x, ((1, 2), (3, 0)), constant_values=1.5)
    y = gc.input("py", (6, 7))
    b = gc.grad(gc.sum(gc.square(y[1::2, ::3])), [y])[0]  # interior pads (strided slice gradient)
    c = gc.pad(gc.transpose(x), 2)  # operand read through a view
    outs = [a, b, c]
    v = np.arange(20, dtype=np.float32).reshape(4, 5)
    v[1, 2] = np.nan
    v[3, 0] = -np.inf
    feeds = {"px": v, "py": np.arange(42, dtype=np.float32).reshape(6, 7) - 20}
    ref = gc.compile(outs, target="numpy", check_finite=False)(**feeds)
    got = gc.compile(outs, target=target, check_finite=False)(**feeds)
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(g, r)


def test_pad_kernel_rows_are_fills_and_copies():
    """The innermost rows are runs: a fill of the border and a copy of the operand's row
    (copy_run for a dense operand, interior 0), with no division (``//``) or branch per
    element; an interior pad divides once per row and copies with a stride."""
    x = gc.input("rx", (3, 4, 5))
    y = gc.input("ry", (6, 7))
    outs = [gc.pad(x, ((1, 0), (0, 2), (3, 1))), gc.grad(gc.sum(gc.square(y[:, ::3])), [y])[0]]
    src = gc.compile(outs, target="cpu").source()
    kernels = [blk for blk in src.split("@cfunc") if "# pad: the operand" in blk]
    assert len(kernels) == 2, src
    plain = next(blk for blk in kernels if "n2" in blk)
    assert "//" not in plain and "copy_run(of," in plain and "fill_run(of," in plain, plain
    for blk in kernels:
        lines = blk.splitlines()
        (i,) = [j for j, ln in enumerate(lines) if "# pad: the operand" in ln]
        depth = len(lines[i]) - len(lines[i].lstrip())
        row = [ln for ln in lines[i - 3:i + 3] if len(ln) - len(ln.lstrip()) >= depth - 4 * ("for q" in lines[i - 1])]
        assert not any("//" in ln or ln.lstrip().startswith("if ") for ln in row), blk


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_concatenate_moves_dense_blocks_by_runs(target):
    """A dense operand's block under each outer index is one copy_run; transposed and
    broadcast operands are still read through their views; values equal NumPy's."""
    x = gc.input("kx", (3, 4, 5))
    z = gc.input("kz", (5, 3, 2))
    outs = [gc.concatenate([x, gc.transpose(z, (1, 2, 0)), gc.broadcast_to(x[:, :1], (3, 3, 5))], axis=1),
            gc.concatenate([x * 2.0, x], axis=0), gc.concatenate([x, -x], axis=2)]
    f = gc.compile(outs, target=target)
    if target == "cpu":
        assert len(re.findall(r"copy_run\(of,.*# concatenate", f.source())) == 5
    feeds = {"kx": np.random.default_rng(2).standard_normal((3, 4, 5)).astype(np.float32),
             "kz": np.random.default_rng(3).standard_normal((5, 3, 2)).astype(np.float32)}
    feeds["kx"][0, 1, 2] = np.nan
    ref = gc.compile(outs, target="numpy", check_finite=False)(**feeds)
    got = gc.compile(outs, target=target, check_finite=False)(**feeds)
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_slice_rows_are_runs(target):
    """A unit-step slice of a dense operand along its last axis copies each output row as one
    run (any steps on the outer axes, reversed included); values equal NumPy's, NaN too."""
    x = gc.input("lx", (4, 5, 6))
    outs = [x[1:3, ::-2, 2:5], x[:, 1:4, :][..., 1:], gc.transpose(x, (0, 2, 1))[:, 1:3, 1:4]]
    f = gc.compile(outs, target=target, check_finite=False)
    if target == "cpu":
        src = f.source()  # the two unit-step slices share one kernel text; the transposed read loops
        assert src.count("copy_run(of,") == 1 and "= a[s0 + i0 * t0, s1 + i1 * t1, s2 + i2 * t2]  # slice" in src
    v = np.random.default_rng(4).standard_normal((4, 5, 6)).astype(np.float32)
    v[1, 4, 3] = np.nan
    ref = gc.compile(outs, target="numpy", check_finite=False)(lx=v)
    for r, g in zip(ref, f(lx=v)):
        np.testing.assert_array_equal(g, r)


def test_fold_keeps_nan_and_only_a_zero_sign_may_differ():
    """The folded cotangent holds each block's own value: a NaN stays where it was, and a
    block's -0.0 stays -0.0 where the unfolded sum (the interpreter) gives -0.0 + 0.0 = +0.0.
    The compiled targets compile the same folded graph, so they agree bit for bit."""
    x = gc.input("zx", (2, 4))
    s = gc.sum(x[:, :2] * -0.0) + gc.sum(gc.exp(x[:, 2:]))
    (g,) = gc.grad(s, [x])
    v = np.ones((2, 4), np.float32)
    v[0, 3] = np.nan
    ref = gc.compile([g], target="numpy", check_finite=False)(zx=v)[0]
    cpu, par = (gc.compile([g], target=t, check_finite=False)(zx=v)[0] for t in ("cpu", "parallel"))
    np.testing.assert_allclose(cpu, ref, rtol=1e-6)  # NaN where the interpreter has it
    assert cpu.tobytes() == par.tobytes()
    assert np.signbit(cpu[:, :2]).all() and not np.signbit(ref[:, :2]).any()
