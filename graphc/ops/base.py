"""OpDef: everything about one op in one place, and the registry backends look ops up in.

Kinds drive the backends: ``elementwise`` ops carry a scalar ``template`` (a Python
expression over ``{0}``, ``{1}``... and attrs) from which every backend generates code;
``reduction``, ``matmul``, ``movement`` and ``source`` ops are handled by every backend's
fusion and emitters; a ``structured`` op carries a :class:`Structured` rule naming the kernel
kind the backends lower it with; ``other`` ops never reach a backend (resolved by passes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import ShapeError

KINDS = ("source", "elementwise", "reduction", "matmul", "movement", "structured", "other")


@dataclass(frozen=True)
class Structured:
    """How a structured op is lowered: the fusion rule puts it in a kernel of kind ``kernel``
    (ops of one ``kernel`` kind on the same operands share that kernel, e.g. softmax-CE and
    its gradient in one pass), and each backend emits that kind from its own table of
    lowerings (``KERNELS`` in backends/cpu/emitter.py and backends/cuda/emitter.py).

    - ``index_operands(node) -> [(indices node, bound)]``: operands holding indices that
      must lie in [0, bound); when fed, every backend checks them before any kernel runs.
    - ``array_operands``: the operands are read as arrays (never inlined as literals).
    - ``contiguous_operands``: the operands are read as row-major arrays of their own shape;
      fusion copies an operand that is a transposed or broadcast view first.
    """

    kernel: str
    index_operands: Optional[Callable] = None
    array_operands: bool = True
    contiguous_operands: bool = False


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: str
    infer: Callable  # (inputs, attrs) -> (shape, dtype); raises ShapeError / DTypeError
    evaluate: Callable  # (arrays, attrs, node) -> np.ndarray
    vjp: Optional[Callable] = None  # (node, g) -> list[Node | None], one per input
    template: Optional[str] = None  # elementwise scalar expression
    doc: str = ""
    structured: Optional[Structured] = None  # kind "structured": its lowering rule


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    assert opdef.kind in KINDS, opdef.kind
    assert (opdef.kind == "structured") == (opdef.structured is not None), opdef.name
    if opdef.name in _REGISTRY:
        raise ValueError(f"op {opdef.name!r} registered twice")
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown graphc op {name!r}") from None


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


# ---- shape and dtype helpers shared by the op rules -------------------------------------

def broadcast_shapes(*shapes: Sequence) -> tuple:
    """NumPy broadcasting, with None (the batch dim) matching None or 1 only."""
    nd = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(nd):
        dims = [s[len(s) - nd + i] for s in shapes if len(s) - nd + i >= 0]
        d = 1
        for x in dims:
            if x == 1:
                continue
            if d == 1:
                d = x
            elif x != d:
                raise ShapeError("shapes do not broadcast: " + " vs ".join(
                    "(" + ", ".join(map(str, s)) + ")" for s in shapes))
        out.append(d)
    return tuple(out)


def promote(*dtypes) -> np.dtype:
    return np.result_type(*[np.dtype(d) for d in dtypes])


def norm_axes(axes, ndim: int) -> tuple:
    """Axes as a sorted tuple of non-negative ints (None -> all axes)."""
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, int):
        axes = (axes,)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of range for a {ndim}-d operand")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axis in {tuple(axes)}")
    return tuple(sorted(out))


def reduced_shape(shape, axes, keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)
