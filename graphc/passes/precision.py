"""Rebuild a graph with every floating-point value in another precision (e.g. float64 for
gradient checks)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..ir import ArrayValue, Node, make, topo_order


def with_float_dtype(outputs: Sequence[Node], dtype="float64") -> list[Node]:
    """The same computation with float sources, consts and casts in ``dtype``."""
    dtype = np.dtype(dtype)
    new: dict[int, Node] = {}
    for n in topo_order(outputs):
        ins = [new[id(x)] for x in n.inputs]
        attrs = dict(n.attrs)
        if n.op in ("input", "param", "scan_arg") and n.dtype.kind == "f":
            attrs["dtype"] = dtype
            if isinstance(attrs.get("init"), ArrayValue):
                attrs["init"] = ArrayValue(attrs["init"].array.astype(dtype))
        elif n.op == "const" and n.dtype.kind == "f":
            attrs["value"] = ArrayValue(attrs["value"].array.astype(dtype))
        elif n.op in ("cast", "dim_size") and attrs["dtype"].kind == "f":
            attrs["dtype"] = dtype
        elif n.op == "scan":  # the loop body too (ops/control.py)
            attrs["body"] = attrs["body"].mapped(lambda nodes: with_float_dtype(nodes, dtype))
        if n.op == "cast" and ins[0].dtype == attrs["dtype"]:
            new[id(n)] = ins[0]
            continue
        new[id(n)] = make(n.op, ins, attrs, src=n.src)
    return [new[id(o)] for o in outputs]
