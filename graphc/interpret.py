"""The reference interpreter: evaluates any graph op by op with NumPy.

It is the oracle every backend and pass is tested against, and the ``"numpy"`` target.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np

from .ir import Node, topo_order


def evaluate_each(outputs: Sequence[Node], feeds: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
                  values: dict | None = None) -> Iterator[tuple[Node, np.ndarray]]:
    """(node, value) for every ancestor of ``outputs`` in evaluation order; ``values``
    (id(node) -> value) is filled as it goes."""
    values = {} if values is None else values
    for n in topo_order(outputs):
        if n.op == "input":
            v = feeds[n.name]
        elif n.op in ("param", "state"):
            v = params[n.name]
        else:  # NaN/inf arise silently, as in the compiled targets (check_numerics reports them)
            with np.errstate(all="ignore"):
                v = n.opdef.evaluate([values[id(x)] for x in n.inputs], n.attrs, n)
        # a scan's value is the tuple of its results (ops/control.py), read by scan_out
        v = values[id(n)] = v if n.op == "scan" else np.asarray(v)
        yield n, v


def evaluate(outputs: Sequence[Node], feeds: Mapping[str, np.ndarray],
             params: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Values of ``outputs`` given input ``feeds`` and ``params`` (params and state, by name)."""
    values: dict[int, np.ndarray] = {}
    for _ in evaluate_each(outputs, feeds, params, values):
        pass
    return [values[id(o)] for o in outputs]
