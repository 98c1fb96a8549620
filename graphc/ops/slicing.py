"""Static slicing, padding and concatenation: ``slice``, ``pad`` and ``concatenate``.

Three structured ops, each with its own kernel kind ("slice", "pad", "concat") that every
backend lowers from its ``KERNELS`` table: one pass over the output (slice, pad) or over the
operands (concatenate), reading operands through their views (transposed or broadcast
operands are not copied first). All geometry is static (ints in the attrs); the batch
dimension (None) may be neither sliced, padded nor concatenated along.

- ``slice``: attr ``slices``, one entry per axis: None (the whole axis) or ``(start, stop,
  step)`` with **range semantics**: the axis keeps positions ``range(start, stop, step)``
  (step may be negative; canonical: stop is one past the last position kept, so ``stop`` may
  be -1 for a negative step). The DSL (``x[...]``) normalizes NumPy slices to this form.
- ``pad``: attrs ``pad_width`` ((before, after) per axis), ``interior`` (per axis: zeros
  inserted between neighbours, as XLA's pad; the gradient of a strided slice) and ``value``
  (the constant fill). Output length: ``before + n + (n - 1) * interior + after``.
- ``concatenate``: attr ``axis``; operands of one dtype and rank, equal except along it.

The VJPs close over each other: slice <-> pad (a negative-step slice's gradient reverses g
first: a slice with step -1), concatenate -> one slice per operand.
"""
from __future__ import annotations

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir import fmt_shape, make
from .base import OpDef, Structured, register


def count(entry, dim) -> int:
    """Positions an axis keeps under slice entry ``entry`` (None: the whole axis of ``dim``)."""
    return dim if entry is None else len(range(*entry))


def _slice_infer(inputs, attrs):
    (x,) = inputs
    sl = attrs["slices"]
    if len(sl) != x.ndim:
        raise ShapeError(f"{len(sl)} slice entries for an operand of rank {x.ndim} (shape {fmt_shape(x.shape)})")
    out = []
    for ax, (e, d) in enumerate(zip(sl, x.shape)):
        if e is None:
            out.append(d)
            continue
        if d is None:
            raise ShapeError(f"axis {ax} is the batch dimension (None): it cannot be sliced")
        start, stop, step = e
        if not all(isinstance(v, int) for v in e) or step == 0:
            raise ShapeError(f"axis {ax}: slice entry {e} must be three ints with a non-zero step")
        n = len(range(start, stop, step))
        last = start + (n - 1) * step
        if n and not (0 <= start < d and 0 <= last < d):
            raise ShapeError(f"axis {ax}: range({start}, {stop}, {step}) leaves the axis of size {d}")
        out.append(n)
    return tuple(out), x.dtype


def _slice_key(entry):
    if entry is None:
        return slice(None)
    start, stop, step = entry
    return slice(start, stop if stop >= 0 else None, step)


def _slice_eval(args, attrs, node):
    return args[0][tuple(_slice_key(e) for e in attrs["slices"])]


def slice_node(x, slices):
    """``x`` restricted to ``slices`` (canonical entries, see the module doc); the identity
    when every entry is None."""
    slices = tuple(slices)
    if all(e is None for e in slices):
        return x
    return make("slice", (x,), {"slices": slices})


def pad_node(x, pad_width, interior=None, value=0):
    """``x`` with ``pad_width[d] = (before, after)`` fill values around axis d and
    ``interior[d]`` between neighbours; the identity when nothing is added."""
    pad_width = tuple((int(b), int(a)) for b, a in pad_width)
    interior = tuple(int(i) for i in interior) if interior is not None else (0,) * len(pad_width)
    if all(b == a == 0 for b, a in pad_width) and not any(interior):
        return x
    return make("pad", (x,), {"pad_width": pad_width, "interior": interior, "value": value})


def _slice_vjp(y, g):
    """A slice's gradient: g reversed along negative-step axes, then padded with zeros into
    the operand's shape (``interior = |step| - 1`` between the kept positions)."""
    x = y.inputs[0]
    rev, widths, interior = [], [], []
    for e, d, n in zip(y.attrs["slices"], x.shape, y.shape):
        if e is None:
            rev.append(None), widths.append((0, 0)), interior.append(0)
            continue
        start, _, step = e
        if n == 0:
            rev.append(None), widths.append((d, 0)), interior.append(0)
            continue
        last = start + (n - 1) * step
        lo, hi = (start, last) if step > 0 else (last, start)
        rev.append((n - 1, -1, -1) if step < 0 and n > 1 else None)
        widths.append((lo, d - 1 - hi))
        interior.append(abs(step) - 1)
    return [pad_node(slice_node(g, rev), widths, interior, 0)]


register(OpDef("slice", "structured", _slice_infer, _slice_eval, _slice_vjp,
               doc="static slice: per axis None (all) or positions range(start, stop, step)",
               structured=Structured("slice")))


def _pad_infer(inputs, attrs):
    (x,) = inputs
    pw, inner = attrs["pad_width"], attrs["interior"]
    if len(pw) != x.ndim or len(inner) != x.ndim:
        raise ShapeError(f"pad widths {pw} (interior {inner}) must have one entry per axis of the "
                         f"rank-{x.ndim} operand")
    out = []
    for ax, ((b, a), i, d) in enumerate(zip(pw, inner, x.shape)):
        if min(b, a, i) < 0:
            raise ShapeError(f"axis {ax}: pad widths ({b}, {a}) and interior {i} must be non-negative")
        if d is None:
            if b or a or i:
                raise ShapeError(f"axis {ax} is the batch dimension (None): it cannot be padded")
            out.append(None)
            continue
        out.append(b + a + (d + (d - 1) * i if d else 0))
    if x.dtype.kind not in "biuf":
        raise DTypeError(f"cannot pad a {x.dtype} operand")
    return tuple(out), x.dtype


def _inner_slices(attrs, shape):
    """Where the operand's elements land in the padded output (one Python slice per axis)."""
    return tuple(slice(b, b + (d - 1) * (i + 1) + 1 if d else b, i + 1)
                 for (b, _), i, d in zip(attrs["pad_width"], attrs["interior"], shape))


def _pad_eval(args, attrs, node):
    (x,) = args
    out = np.full(node_shape(node, x), attrs["value"], dtype=node.dtype)
    out[_inner_slices(attrs, x.shape)] = x
    return out


def node_shape(node, x):
    """The node's shape with the batch dim taken from the operand's value."""
    return tuple(x.shape[i] if d is None else d for i, d in enumerate(node.shape))


def _pad_vjp(y, g):
    x = y.inputs[0]
    sl = []
    for (b, a), i, d in zip(y.attrs["pad_width"], y.attrs["interior"], x.shape):
        if b == a == i == 0:
            sl.append(None)
        elif d == 0:
            sl.append((0, 0, 1))
        else:
            sl.append((b, b + (d - 1) * (i + 1) + 1, i + 1))
    return [slice_node(g, sl)]


register(OpDef("pad", "structured", _pad_infer, _pad_eval, _pad_vjp,
               doc="constant pad: (before, after) per axis plus interior fill between neighbours",
               structured=Structured("pad")))


def _concat_infer(inputs, attrs):
    axis = attrs["axis"]
    if not inputs:
        raise ShapeError("needs at least one operand")
    x0 = inputs[0]
    if not 0 <= axis < x0.ndim:
        raise ShapeError(f"axis {axis} is out of range for rank-{x0.ndim} operands")
    for x in inputs:
        if x.ndim != x0.ndim:
            raise ShapeError(f"all operands must have one rank, got {fmt_shape(x0.shape)} and {fmt_shape(x.shape)}")
        if x.dtype != x0.dtype:
            raise DTypeError(f"all operands must have one dtype, got {x0.dtype} and {x.dtype}")
        for ax, (d, e) in enumerate(zip(x0.shape, x.shape)):
            if ax != axis and d != e:
                raise ShapeError(f"operands differ at axis {ax} ({fmt_shape(x0.shape)} vs {fmt_shape(x.shape)}); "
                                 f"only the concatenation axis {axis} may differ")
    if any(x.shape[axis] is None for x in inputs):
        raise ShapeError(f"axis {axis} is the batch dimension (None): cannot concatenate along it")
    shape = list(x0.shape)
    shape[axis] = sum(x.shape[axis] for x in inputs)
    return tuple(shape), x0.dtype


def _concat_vjp(y, g):
    axis, off, out = y.attrs["axis"], 0, []
    for x in y.inputs:
        n = x.shape[axis]
        sl = [None] * x.ndim
        sl[axis] = (off, off + n, 1) if n else (0, 0, 1)
        if n == y.shape[axis]:
            sl[axis] = None
        out.append(slice_node(g, sl))
        off += n
    return out


register(OpDef("concatenate", "structured", _concat_infer,
               lambda args, attrs, node: np.concatenate(args, axis=attrs["axis"]), _concat_vjp,
               doc="operands of one dtype joined along a static axis", structured=Structured("concat")))
