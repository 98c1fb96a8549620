"""``sort``, ``argsort`` and ``top_k`` as compositions of comparisons and masked sums: no new
op kind, so every target runs them (fused loops) and the gradient of the values is the
masks' (each element's cotangent goes back to the one position it was sorted from).

An element's place is its rank: the number of elements ordered before it, where ties are
ordered by index (a stable sort, NumPy's ``kind="stable"`` and ``jax.lax.top_k``'s ties) and
NaN after every number (NumPy's sort; ``top_k`` takes NaN as the largest, as JAX). The value
at place p is then ``max_i where(rank_i == p, x_i, -inf)`` (exact: one term is x_i, the sign
of zero and NaN included; integers: a sum with 0 elsewhere). Cost and memory O(n^2)
along the sorted axis (O(n k) for the values of ``top_k``): for short axes (a row of class
scores, a small sort), not for sorting a million elements.
"""
from __future__ import annotations

import numpy as np


def _F():
    from .. import dsl
    return dsl


def _ranks(xt, descending: bool):
    """Each element's place along the last axis of ``xt`` (int64)."""
    F = _F()
    if xt.dtype.kind == "b":
        xt = F.cast(xt, "int8")
    n = xt.shape[-1]
    xi = F.expand_dims(xt, -1)      # (..., i, 1)
    xj = F.expand_dims(xt, -2)      # (..., 1, j)
    earlier = F.const(np.tri(n, n, -1, dtype=bool))     # [i, j]: j < i
    if xt.dtype.kind == "f":
        ni, nj = F.isnan(xi), F.isnan(xj)
        eq = F.logical_or(F.equal(xj, xi), F.logical_and(ni, nj))
        if descending:   # NaN first, as the largest
            before = F.logical_or(F.greater(xj, xi), F.logical_and(nj, F.logical_not(ni)))
        else:            # NaN last
            before = F.logical_or(F.less(xj, xi), F.logical_and(ni, F.logical_not(nj)))
    else:
        eq = F.equal(xj, xi)
        before = F.greater(xj, xi) if descending else F.less(xj, xi)
    first = F.logical_or(before, F.logical_and(eq, earlier))
    return F.sum(F.cast(first, "int64"), -1)


def _place(xt, rank, places: int):
    """(values, indices) at places 0..places-1 along the last axis."""
    F = _F()
    n = xt.shape[-1]
    hit = F.equal(F.expand_dims(rank, -1), F.const(np.arange(places, dtype=np.int64)))   # (..., i, p)
    xi = F.expand_dims(xt, -1)
    if xt.dtype.kind == "f":    # a max, not a sum: a sum's +0.0 start would turn -0.0 into 0.0
        vals = F.max(F.where(hit, xi, -np.inf), -2)
    elif xt.dtype.kind == "b":
        vals = F.any(F.logical_and(hit, xi), -2)
    else:
        vals = F.sum(F.where(hit, xi, 0), -2)
    idx = F.sum(F.where(hit, F.const(np.arange(n, dtype=np.int64).reshape(n, 1)), 0), -2)
    return vals, idx


def _along_last(op: str, x, axis):
    F = _F()
    x = F._lift(x)
    if axis is None:
        x, axis = F.ravel(x), 0
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise F._fail(TypeError, op, f"axis must be an int or None, got {axis!r}", x)
    (ax,) = F._checked_axes(op, x, axis)
    if x.shape[ax] is None:
        raise F._fail(F.ShapeError, op, f"axis {ax} is the batch dimension (None): it cannot be sorted", x)
    return x, ax, F.moveaxis(x, ax, -1)


def sort(x, axis=-1):
    F = _F()
    x, ax, xt = _along_last("sort", x, axis)
    if xt.shape[-1] == 0:
        return x
    vals, _ = _place(xt, _ranks(xt, False), xt.shape[-1])
    return F.moveaxis(vals, -1, ax)


def argsort(x, axis=-1):
    F = _F()
    x, ax, xt = _along_last("argsort", x, axis)
    if xt.shape[-1] == 0:
        return F.cast(x, "int64")
    _, idx = _place(xt, _ranks(xt, False), xt.shape[-1])
    return F.moveaxis(idx, -1, ax)


def top_k(x, k: int, sorted: bool = True):  # noqa: A002 (jax.lax.top_k / keras.ops.top_k's name)
    F = _F()
    x = F._lift(x)
    if x.ndim == 0:
        raise F._fail(F.ShapeError, "top_k", "needs an operand of rank >= 1", x)
    n = x.shape[-1]
    if n is None:
        raise F._fail(F.ShapeError, "top_k", "the last axis is the batch dimension (None)", x)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise F._fail(ValueError, "top_k", f"k must be an int in [0, {n}] (the last axis' size), got {k!r}", x)
    if x.dtype.kind == "b":
        raise F._fail(F.DTypeError, "top_k", "needs a numeric operand; cast booleans first", x)
    if k == 0:
        shape = tuple(-1 if d is None else d for d in x.shape[:-1]) + (0,)
        return F.reshape(x[..., :0], shape), F.cast(F.reshape(x[..., :0], shape), "int32")
    vals, idx = _place(x, _ranks(x, True), int(k))
    return vals, F.cast(idx, "int32")
