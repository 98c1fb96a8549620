"""Indexing ops: ``take`` (NumPy's take along one axis; an embedding lookup) and its
gradient ``take_grad``, a scatter-add (duplicate indices accumulate).

Both are structured ops: each backend lowers kernel kind "take" / "scatter_add" from its
``KERNELS`` table. Every backend sees the operand around the axis as ``(A, n, D)`` (see
:func:`around`) and the indices flattened to ``(m,)``, so one kernel serves any axis and any
index rank. Indices must lie in [0, n): negative indices are rejected, as PyTorch's embedding
and Keras' Embedding do (NumPy would wrap them). Fed indices are checked before any kernel
runs (the rule's ``index_operands``); constant ones when the node is built.
"""
from __future__ import annotations

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir import make
from .base import OpDef, Structured, register


def around(shape, axis: int) -> tuple[int, int, int]:
    """``(A, n, D)``: the elements before ``axis``, its size, the elements after it."""
    return (int(np.prod(shape[:axis], dtype=np.int64)), int(shape[axis]),
            int(np.prod(shape[axis + 1:], dtype=np.int64)))


def _check_indices(op: str, indices, n: int) -> None:
    if indices.dtype.kind not in "iu":
        raise DTypeError(f"indices must be integers, got {indices.dtype}")
    if indices.op == "const":  # checked now; fed ones before each run, computed ones in the kernels
        v = indices.attrs["value"].array
        if v.size and (v.min() < 0 or v.max() >= n):
            neg = " (negative indices are rejected, as in PyTorch and Keras)" if v.min() < 0 else ""
            raise ShapeError(f"indices must lie in [0, {n}), got values in [{v.min()}, {v.max()}]{neg}")


def _range_check(op: str, idx: np.ndarray, n: int) -> None:
    """The interpreter's check (computed indices: fed ones were checked before the run)."""
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"{op}: indices must lie in [0, {n}), got values in [{idx.min()}, {idx.max()}]")


def _take_infer(inputs, attrs):
    params, indices = inputs
    axis = attrs["axis"]
    if params.ndim == 0:
        raise ShapeError("params must have rank >= 1, got a rank-0 operand (shape ())")
    if not 0 <= axis < params.ndim:
        raise ShapeError(f"axis {axis} is out of range for params of shape {params.shape}")
    n = params.shape[axis]
    if n is None:
        raise ShapeError(f"axis {axis} of params is the batch dimension; take along a fixed-size axis")
    _check_indices("take", indices, n)
    return params.shape[:axis] + indices.shape + params.shape[axis + 1:], params.dtype


def _take_grad_infer(inputs, attrs):
    g, indices = inputs
    axis, n = attrs["axis"], attrs["n"]
    k = indices.ndim
    if g.ndim < axis + k or g.shape[axis:axis + k] != indices.shape:
        raise ShapeError(f"g must have the indices' shape {indices.shape} at axis {axis}, got shape {g.shape}")
    if g.dtype.kind != "f":
        raise DTypeError(f"g must be floating point, got {g.dtype}")
    _check_indices("take_grad", indices, n)
    return g.shape[:axis] + (n,) + g.shape[axis + k:], g.dtype


def _take_eval(args, attrs, node):
    p, idx = args
    _range_check("take", idx, p.shape[attrs["axis"]])
    return np.take(p, idx.astype(np.intp), axis=attrs["axis"])


def _take_grad_eval(args, attrs, node):
    g, idx = args
    axis, n = attrs["axis"], attrs["n"]
    _range_check("take_grad", idx, n)
    A, _, D = around(node.shape, axis)
    out = np.zeros((A, n, D), dtype=node.dtype)
    np.add.at(out, (slice(None), idx.reshape(-1).astype(np.intp)), g.reshape(A, idx.size, D))  # in index order
    return out.reshape(node.shape)


def take_grad(g, indices, n: int, axis: int = 0):
    """``zeros`` with ``n`` at ``axis``, plus ``g`` scattered at ``indices`` (NumPy's
    ``np.add.at``): take's gradient w.r.t. its params."""
    return make("take_grad", (g, indices), {"n": int(n), "axis": int(axis)})


# fed indices are range-checked before any kernel runs; operands that are not plain
# row-major arrays (a transposed table, a broadcast gradient) are copied first
_TAKE = Structured("take", index_operands=lambda n: [(n.inputs[1], n.inputs[0].shape[n.attrs["axis"]])],
                   contiguous_operands=True)
_SCATTER = Structured("scatter_add", index_operands=lambda n: [(n.inputs[1], n.attrs["n"])],
                      contiguous_operands=True)
register(OpDef("take", "structured", _take_infer, _take_eval,
               lambda y, g: [take_grad(g, y.inputs[1], y.inputs[0].shape[y.attrs["axis"]], y.attrs["axis"]), None],
               doc="np.take(params, indices, axis) with indices in [0, params.shape[axis])", structured=_TAKE))
register(OpDef("take_grad", "structured", _take_grad_infer, _take_grad_eval,
               lambda y, g: [make("take", (g, y.inputs[1]), {"axis": y.attrs["axis"]}), None],
               doc="scatter-add: zeros with n at axis, g added at indices in index order (take's gradient)",
               structured=_SCATTER))
