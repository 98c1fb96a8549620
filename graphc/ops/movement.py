"""Movement ops: transpose, reshape, broadcast_to, broadcast_like. Backends treat them as views."""
from __future__ import annotations

import numpy as np

from .. import dsl as F
from ..errors import ShapeError
from .base import OpDef, broadcast_shapes, register


def _transpose_infer(inputs, attrs):
    (x,) = inputs
    axes = attrs["axes"]
    if sorted(axes) != list(range(x.ndim)):
        raise ShapeError(f"axes {axes} are not a permutation of {x.ndim} axes")
    return tuple(x.shape[a] for a in axes), x.dtype


register(OpDef("transpose", "movement", _transpose_infer,
               lambda a, attrs, node: np.transpose(a[0], attrs["axes"]),
               lambda y, g: [F.transpose(g, tuple(np.argsort(y.attrs["axes"])))]))


def _reshape_infer(inputs, attrs):
    (x,) = inputs
    shape = attrs["shape"]
    if sum(d == -1 for d in shape) > 1:
        raise ShapeError(f"at most one -1 in the target shape {shape}")
    if sum(d is None for d in shape) > (1 if None in x.shape else 0):
        raise ShapeError(f"the target shape {shape} has a None (batch) dim but the operand has none")
    known_in = int(np.prod([d for d in x.shape if d is not None]))
    known_out = int(np.prod([d for d in shape if d is not None and d != -1]))
    if None in x.shape and None in shape and -1 not in shape:
        shape = tuple(-1 if d is None else d for d in shape)  # None: whatever the run-time size leaves
    if None in x.shape and None not in shape:
        if -1 not in shape:
            raise ShapeError(f"cannot reshape a tensor with a batch dim to the fixed shape {shape}")
        # the -1 dim takes the run-time size: the batch itself, or the batch folded with other
        # dims ((None, 4, 4, 8) -> (-1, 8): rows of an im2col GEMM). Its size is known once the
        # batch is (specialize re-infers every shape, and checks divisibility then).
        if known_out == 0 or (known_in % known_out and known_out % known_in):
            raise ShapeError(f"cannot reshape {x.shape} into {shape}: the fixed dims do not divide each other")
        return tuple(None if d == -1 else d for d in shape), x.dtype
    if -1 in shape:
        if known_out == 0 or known_in % known_out:
            raise ShapeError(f"cannot reshape {known_in} elements into {shape}")
        shape = tuple(known_in // known_out if d == -1 else d for d in shape)
    elif known_in != known_out:
        raise ShapeError(f"cannot reshape {known_in} elements into {shape}")
    return shape, x.dtype


register(OpDef("reshape", "movement", _reshape_infer,
               lambda a, attrs, node: np.reshape(a[0], tuple(-1 if d is None else d for d in node.shape)),
               lambda y, g: [F.reshape(g, y.inputs[0].shape)]))


def _broadcast_to_infer(inputs, attrs):
    (x,) = inputs
    shape = attrs["shape"]
    if len(shape) < x.ndim or broadcast_shapes(x.shape, shape) != tuple(shape):
        raise ShapeError(f"cannot broadcast to {shape}")
    return shape, x.dtype


register(OpDef("broadcast_to", "movement", _broadcast_to_infer,
               lambda a, attrs, node: np.broadcast_to(a[0], attrs["shape"]),
               lambda y, g: [F.sum_to(g, y.inputs[0].shape)]))


def _broadcast_like_infer(inputs, attrs):
    x, ref = inputs
    if len(ref.shape) < x.ndim or broadcast_shapes(x.shape, ref.shape) != tuple(ref.shape):
        raise ShapeError(f"cannot broadcast to {ref.shape}")
    return ref.shape, x.dtype


register(OpDef("broadcast_like", "movement", _broadcast_like_infer,
               lambda a, attrs, node: np.broadcast_to(a[0], a[1].shape),
               lambda y, g: [F.sum_to(g, y.inputs[0].shape), None],
               doc="broadcast x to the (run-time) shape of ref; becomes broadcast_to once shapes are concrete"))
