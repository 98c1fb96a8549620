"""Reductions over axes: sum and max (mean is sum / dim_size in the DSL)."""
from __future__ import annotations

import numpy as np

from .. import dsl as F
from ..errors import DTypeError
from .base import OpDef, reduced_shape, register


def _infer(inputs, attrs):
    (x,) = inputs
    if x.dtype.kind == "b":
        raise DTypeError("cannot reduce booleans; cast first")
    return reduced_shape(x.shape, attrs["axes"], attrs["keepdims"]), x.dtype


def _keep(y, v):
    """``v`` (shaped like y) reshaped to y's keepdims shape, ready to broadcast against x."""
    x = y.inputs[0]
    return v if y.attrs["keepdims"] else F.reshape(v, reduced_shape(x.shape, y.attrs["axes"], True))


def _sum_vjp(y, g):
    return [F.broadcast_like(_keep(y, g), y.inputs[0])]


def _max_vjp(y, g):
    # the gradient is shared equally between tied maxima (as JAX does)
    x = y.inputs[0]
    mask = F.cast(F.equal(x, F.broadcast_like(_keep(y, y), x)), x.dtype)
    count = F.sum(mask, y.attrs["axes"], keepdims=True)
    return [F.broadcast_like(_keep(y, g), x) * mask / count]


register(OpDef("sum", "reduction", _infer,
               lambda a, attrs, node: np.sum(a[0], axis=attrs["axes"], keepdims=attrs["keepdims"]).astype(node.dtype, copy=False),
               _sum_vjp, template="+"))
register(OpDef("max", "reduction", _infer,
               lambda a, attrs, node: np.max(a[0], axis=attrs["axes"], keepdims=attrs["keepdims"]).astype(node.dtype, copy=False),
               _max_vjp, template="max"))
