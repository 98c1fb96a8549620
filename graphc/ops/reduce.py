"""Reductions over axes: sum, max, min and prod (mean is sum / dim_size in the DSL; any, all,
norm, cumsum and cumprod are built from these in the DSL)."""
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


def _prod_vjp(y, g):
    # exact with zeros among the factors (no division by them): each element's gradient is
    # the product of the others, i.e. p / x without zeros, the product of the non-zero factors
    # at the only zero, and 0 where there are two zeros or more
    x = y.inputs[0]
    axes = y.attrs["axes"]
    zero = F.equal(x, 0.0)
    nz = F.broadcast_like(F.sum(F.cast(zero, x.dtype), axes, keepdims=True), x)
    p_nz = F.broadcast_like(F.prod(F.where(zero, 1.0, x), axes, keepdims=True), x)
    others = F.where(F.equal(nz, 0.0), p_nz / F.where(zero, 1.0, x),
                     F.where(F.logical_and(zero, F.equal(nz, 1.0)), p_nz, 0.0))
    return [F.broadcast_like(_keep(y, g), x) * others]


register(OpDef("min", "reduction", _infer,
               lambda a, attrs, node: np.min(a[0], axis=attrs["axes"], keepdims=attrs["keepdims"]).astype(node.dtype, copy=False),
               _max_vjp, template="min"))
register(OpDef("prod", "reduction", _infer,
               lambda a, attrs, node: np.prod(a[0], axis=attrs["axes"], keepdims=attrs["keepdims"]).astype(node.dtype, copy=False),
               _prod_vjp, template="*"))
