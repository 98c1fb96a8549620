"""snapshot_sources: an update that is the OLD value of another store slot gets a copy node.

A training graph's outputs named ``update:<slot>`` are written into the store. When such an
output is a bare param/state node of another slot (an optimizer keeping the previous weights,
``{"prev": param}``), the backends would copy the slot after the step's kernels, by which
time an in-place kernel has overwritten it with its new value. An identity transpose makes
the value a kernel output (a copy kernel) that reads the slot like any other reader, so the
schedule's write-after-read edges order it before the overwrite.
"""
from __future__ import annotations

from ..ir import Graph, make

UPDATE_PREFIX = "update:"  # training.training_program names its store updates so


def snapshot_sources(graph: Graph) -> Graph:
    outs = list(graph.outputs)
    changed = False
    for i, (name, n) in enumerate(zip(graph.names, outs)):
        if (name.startswith(UPDATE_PREFIX) and n.op in ("param", "state")
                and n.name != name[len(UPDATE_PREFIX):]):
            # not removed by simplify (which only merges transposes of transposes)
            outs[i] = make("transpose", (n,), {"axes": tuple(range(n.ndim))}, src=n.src)
            changed = True
    return Graph(outs, graph.names) if changed else graph
