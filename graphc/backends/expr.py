"""Scalar expression text shared by every backend: typed literals, op templates, leaf indexing."""
from __future__ import annotations

import math
import re

import numpy as np

from ..ir import Node

_FLOAT_LIT = re.compile(r"(?<![\w.])(\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)(?![\w.])")


def literal(value, dtype: np.dtype) -> str:
    """A literal of ``dtype`` in generated code (float32 values are wrapped so the
    arithmetic stays in float32)."""
    dtype = np.dtype(dtype)
    v = np.asarray(value).reshape(-1)[0]
    if dtype.kind == "b":
        return "True" if bool(v) else "False"
    if dtype.kind in "iu":
        return str(int(v))
    f = float(v)
    if math.isnan(f):
        text = "np.nan"
    elif math.isinf(f):
        text = "np.inf" if f > 0 else "-np.inf"
    else:
        text = repr(f)
    return text if dtype == np.float64 else f"np.{dtype.name}({text})"


def typed(text: str, dtype: np.dtype) -> str:
    """Wrap the float literals of a template's text in ``dtype`` (float32 stays float32)."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f" or dtype == np.float64:
        return text
    return _FLOAT_LIT.sub(lambda m: f"np.{dtype.name}({m.group(1)})", text)


def node_expr(n: Node, operands: list[str]) -> str:
    """The scalar expression computing elementwise node ``n`` from operand expressions."""
    tpl = n.opdef.template
    attrs = {k: (repr(float(v)) if isinstance(v, float) else v) for k, v in n.attrs.items()}
    if n.op == "cast":
        if n.inputs[0].dtype.kind == "f" and n.dtype.kind in "iu":
            return float_to_int(operands[0], n.dtype)
        attrs["cast"] = f"np.{n.dtype.name}"
    # literals are typed by the dtype the op computes in (its operands' for comparisons);
    # operands are typed already, so only the template's own text is rewritten
    work = n.inputs[0].dtype if n.dtype.kind == "b" and n.inputs else n.dtype
    marks = [f"__OPERAND{i}__" for i in range(len(operands))]
    text = typed(tpl.format(*marks, **attrs), work)
    for m, o in zip(marks, operands):
        text = text.replace(m, o)
    return text


def float_to_int(x: str, dtype: np.dtype) -> str:
    """Float ``x`` cast to integer ``dtype``, as gc.cast documents it on every target. Numba's
    ``np.int32(x)`` is LLVM's fptosi, which is poison for NaN, +-inf and values out of range
    (x86 gives INT_MIN, CUDA saturates, constant folding anything), so those values are
    selected away before it: they give x86's "integer indefinite" value of the conversion
    width, which is NumPy's astype on x86. Narrower types convert through int32 and wrap,
    uint32 through int64; uint64 is exact on [0, 2**64), the int64 result's bits elsewhere.
    (``x`` is an operand: a name or an item read, so repeating it costs nothing.)"""
    dtype = np.dtype(dtype)

    def signed(bits: int) -> str:
        lim = 2 ** (bits - 1)
        low = f"{-lim + 1} - 1" if bits == 64 else str(-lim)  # the literal 2**63 is beyond int64
        return f"(np.int{bits}({x}) if {x} >= {float(-lim)!r} and {x} < {float(lim)!r} else np.int{bits}({low}))"
    if dtype == np.uint64:
        return f"(np.uint64({x}) if {x} >= 0.0 and {x} < {float(2 ** 64)!r} else np.uint64({signed(64)}))"
    s = signed(64 if dtype.itemsize == 8 or dtype == np.uint32 else 32)
    return s if dtype in (np.int32, np.int64) else f"np.{dtype.name}({s})"


def reduce_init(op: str, dtype: np.dtype) -> str:
    if op in ("sum", "prod"):
        return literal(0 if op == "sum" else 1, dtype)
    if dtype.kind == "f":
        return literal(-np.inf if op == "max" else np.inf, dtype)
    return str(np.iinfo(dtype).min if op == "max" else np.iinfo(dtype).max)


def reduce_step(op: str, acc: str, v: str) -> str:
    # max/min: a NaN wins whichever side it is on (np.max/np.min propagate NaN); ties keep the
    # accumulator
    if op in ("sum", "prod"):
        return f"{acc} {'+' if op == 'sum' else '*'} {v}"
    return f"({v} if {acc} {'<' if op == 'max' else '>'} {v} or {v} != {v} else {acc})"


def leaf_index(view_shape: tuple, loop_shape: tuple, idx: list[str]) -> str:
    """Index text for a leaf whose (view) shape broadcasts against the loop shape."""
    r, k = len(loop_shape), len(view_shape)
    parts = []
    for j, d in enumerate(view_shape):
        parts.append("0" if d == 1 else idx[r - k + j])
    return "[" + ", ".join(parts) + "]" if parts else "[0]"
