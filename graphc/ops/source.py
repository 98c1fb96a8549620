"""Sources: input (fed each call), param (trainable, initialized at compile), const."""
from __future__ import annotations

from .base import OpDef, register


def _from_attrs(inputs, attrs):
    return attrs["shape"], attrs["dtype"]


def _no_eval(args, attrs, node):
    raise RuntimeError(f"{node.op} {node.name!r} is read from feeds/params, not evaluated")


register(OpDef("input", "source", _from_attrs, _no_eval))
register(OpDef("param", "source", _from_attrs, _no_eval))
register(OpDef("const", "source", lambda i, attrs: (attrs["value"].array.shape, attrs["value"].array.dtype),
               lambda args, attrs, node: attrs["value"].array))
register(OpDef("state", "source", _from_attrs, _no_eval,
               doc="optimizer state (or any non-trainable persistent value): read and written each step"))
