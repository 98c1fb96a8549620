"""Matrix product (2-D). Backends send it to BLAS / cuBLAS."""
from __future__ import annotations

import numpy as np

from ..errors import DTypeError, ShapeError
from .base import OpDef, promote, register


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
