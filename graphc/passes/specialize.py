"""specialize: substitute the concrete batch size for None, so every shape is known.

Run first in the native pipeline: ``dim_size`` becomes a constant and ``broadcast_like``
a ``broadcast_to`` of a fixed shape, so later passes and the backends never see None.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, make


def specialize(graph: Graph, batch: int | None) -> Graph:
    new: dict[int, Node] = {}

    def fix(shape):
        return tuple(batch if d is None else d for d in shape)

    for n in graph.nodes:
        ins = [new[id(x)] for x in n.inputs]
        attrs = dict(n.attrs)
        if n.op in ("input", "scan_arg"):
            attrs["shape"] = fix(attrs["shape"])
        elif n.op == "scan":  # a loop kept as one node (a backend with loops): its body too
            attrs["body"] = attrs["body"].mapped(
                lambda nodes: list(specialize(Graph(nodes, [str(i) for i in range(len(nodes))]), batch).outputs))
        elif n.op == "reshape":
            # a None in the target is the batch only beside a -1; alone it is "what the run-time
            # size leaves" (a dim folded with the batch, (None, 8) -> (None, 4, 4, 8)), as in infer
            shape = attrs["shape"]
            attrs["shape"] = fix(shape) if -1 in shape else tuple(-1 if d is None else d for d in shape)
        elif n.op == "dim_size":
            size = int(np.prod([ins[0].shape[a] for a in attrs["axes"]]))
            new[id(n)] = make("const", (), {"value": np.asarray(size, dtype=attrs["dtype"])}, src=n.src)
            continue
        elif n.op == "random_uniform" and len(ins) == 2:  # the shape is known now: drop the `like` operand
            new[id(n)] = make(n.op, ins[:1], {**attrs, "shape": ins[1].shape}, src=n.src)
            continue
        elif n.op == "broadcast_like":
            x, ref = ins
            new[id(n)] = x if x.shape == ref.shape else make("broadcast_to", (x,), {"shape": ref.shape}, src=n.src)
            continue
        new[id(n)] = make(n.op, ins, attrs, src=n.src)
    out = Graph([new[id(o)] for o in graph.outputs], graph.names)
    for n in out.nodes:
        assert None not in n.shape, n
    return out
