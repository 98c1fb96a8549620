"""Matrix products: ``matmul`` (2-D) and ``batch_matmul`` (stacks). Backends send both to BLAS /
cuBLAS."""
from __future__ import annotations

import numpy as np

from ..errors import DTypeError, ShapeError
from .base import OpDef, Structured, promote, register


def _infer(inputs, attrs):
    a, b = inputs
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"matmul needs 2-D operands, got ranks {a.ndim} and {b.ndim}")
    if a.shape[1] != b.shape[0]:
        raise ShapeError(f"inner dimensions differ: {a.shape[1]} != {b.shape[0]}")
    if a.dtype.kind != "f" or b.dtype.kind != "f":
        raise DTypeError(f"needs floating-point operands, got {a.dtype} and {b.dtype}")
    if a.dtype != b.dtype:
        raise DTypeError(f"operand dtypes differ ({a.dtype} vs {b.dtype}); cast one")
    return (a.shape[0], b.shape[1]), promote(a.dtype, b.dtype)


register(OpDef("matmul", "matmul", _infer,
               lambda a, attrs, node: np.matmul(a[0], a[1]),
               lambda y, g: [g @ y.inputs[1].T, y.inputs[0].T @ g]))


# ---- batched matmul: a stack of GEMMs over a shared leading dim -----------------------------

def _bmm_infer(inputs, attrs):
    a, b = inputs
    if a.ndim != 3 or b.ndim != 3:
        raise ShapeError(f"batch_matmul needs 3-D operands (batch, rows, cols), got ranks {a.ndim} and {b.ndim}")
    if a.shape[0] != b.shape[0]:
        raise ShapeError(f"the batch dims differ: {a.shape[0]} != {b.shape[0]}")
    m, k = a.shape[1:][::-1] if attrs["ta"] else a.shape[1:]
    k2, n = b.shape[1:][::-1] if attrs["tb"] else b.shape[1:]
    if k != k2:
        raise ShapeError(f"inner dimensions differ: {k} != {k2}")
    if a.dtype.kind != "f" or a.dtype != b.dtype:
        raise DTypeError(f"needs floating-point operands of one dtype, got {a.dtype} and {b.dtype}")
    return (a.shape[0], m, n), a.dtype


def _bmm_eval(args, attrs, node):
    a, b = args
    a = np.swapaxes(a, 1, 2) if attrs["ta"] else a
    b = np.swapaxes(b, 1, 2) if attrs["tb"] else b
    return np.matmul(a, b).astype(node.dtype, copy=False)


def batch_matmul(a, b, ta: bool = False, tb: bool = False):
    """``op(a[i]) @ op(b[i])`` for every i, op transposing when ``ta``/``tb``: the transposes
    are read in place by the GEMMs, so neither the gradients nor ``q @ k^T`` copy anything."""
    from ..ir import make
    return make("batch_matmul", (a, b), {"ta": bool(ta), "tb": bool(tb)})


def _bmm_vjp(y, g):
    a, b = y.inputs
    ta, tb = y.attrs["ta"], y.attrs["tb"]
    ga = batch_matmul(b, g, tb, True) if ta else batch_matmul(g, b, False, not tb)
    gb = batch_matmul(g, a, True, ta) if tb else batch_matmul(a, g, not ta, False)
    return [ga, gb]


register(OpDef("batch_matmul", "structured", _bmm_infer, _bmm_eval, _bmm_vjp,
               doc="a GEMM per leading index, operands optionally transposed (attrs ta, tb)",
               structured=Structured("bmm", contiguous_operands=True)))
