"""Structured neural-network ops: softmax cross-entropy (forward and its gradient as separate
ops so the backends fuse both into one pass, through the "sce" lowering rule) and dim_size."""
from __future__ import annotations

import numpy as np

from .. import dsl as F
from ..errors import DTypeError, ShapeError
from .base import OpDef, Structured, register


def _sce_check(inputs):
    logits, labels = inputs
    if logits.ndim != 2:
        raise ShapeError(f"logits must be 2-D (batch, classes), got rank {logits.ndim}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ShapeError(f"labels must be 1-D with the logits' batch size {logits.shape[0]}, got shape {labels.shape}")
    if logits.dtype.kind != "f":
        raise DTypeError(f"logits must be floating point, got {logits.dtype}")
    if labels.dtype.kind not in "iu":
        raise DTypeError(f"labels must be integer class indices, got {labels.dtype}")


def _check_labels(labels, classes):
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"softmax_cross_entropy: labels must lie in [0, {classes}), "
                         f"got values in [{labels.min()}, {labels.max()}]")


def _lse(z):
    m = np.max(z, axis=1, keepdims=True)
    return np.log(np.sum(np.exp(z - m), axis=1, keepdims=True)) + m


def _sce_eval(args, attrs, node):
    z, y = args
    _check_labels(y, z.shape[1])
    picked = np.take_along_axis(z, y.astype(np.intp)[:, None], axis=1)
    return np.asarray(np.mean(_lse(z) - picked), dtype=node.dtype)


def _sce_grad_eval(args, attrs, node):
    z, y = args
    _check_labels(y, z.shape[1])
    p = np.exp(z - _lse(z))
    p[np.arange(z.shape[0]), y] -= 1
    return (p / z.shape[0]).astype(node.dtype, copy=False)


def _sce_infer(inputs, attrs):
    _sce_check(inputs)
    return (), inputs[0].dtype


def _sce_grad_infer(inputs, attrs):
    _sce_check(inputs)
    return inputs[0].shape, inputs[0].dtype


def _sce_grad_vjp(y, v):
    # d/dz of (softmax(z) - onehot)/N applied to v: (p*v - p*sum(p*v))/N
    z = y.inputs[0]
    p = F.softmax(z, -1)
    pv = p * v
    return [(pv - p * F.sum(pv, -1, keepdims=True)) / F.dim_size(z, 0, dtype=z.dtype), None]


# one pass over the logits computes the loss and/or its gradient (kernel kind "sce"); the
# labels index the classes, so they are range-checked before any kernel runs
_SCE = Structured("sce", index_operands=lambda n: [(n.inputs[1], n.inputs[0].shape[1])])
register(OpDef("softmax_cross_entropy", "structured", _sce_infer, _sce_eval,
               lambda y, g: [g * F.make_sce_grad(y.inputs[0], y.inputs[1]), None], structured=_SCE))
register(OpDef("sce_grad", "structured", _sce_grad_infer, _sce_grad_eval, _sce_grad_vjp,
               doc="(softmax(logits) - one_hot(labels)) / batch: the gradient of softmax_cross_entropy",
               structured=_SCE))


def _dim_size_infer(inputs, attrs):
    return (), attrs["dtype"]


register(OpDef("dim_size", "other", _dim_size_infer,
               lambda args, attrs, node: np.asarray(np.prod([args[0].shape[a] for a in attrs["axes"]]), dtype=attrs["dtype"]),
               lambda y, g: [None]))
