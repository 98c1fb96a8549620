"""unroll_scans: every ``scan`` node (ops/control.py) replaced by T copies of its body.

Run first in the native pipeline, before ``specialize`` (the body's shapes may hold the
batch dim; the copies are ordinary nodes that specialize like any other), so fusion, the
schedule and every backend (cpu, parallel, cuda) compile a scan with no change: x[t] is a
``slice`` + ``reshape`` of each xs leaf, ys and the saved per-step carries are ``stack``ed
(``concatenate``), the carry is threaded from one copy to the next, and nested scans unroll
recursively. The T copies of a body fuse into textually identical kernels, which compile
once (generated text carries no file:line). Each copied node's source location names the
scan and the step: ``model.py:12 (scan @ model.py:20, step 3)``, which ``graph.dump()``,
``step.source()`` and ``step.kernels()`` show.

Compile time and the driver grow with T. Used by backends without ``Backend.loops``
(parallel, cuda), under check_numerics, and for scans nested in a body that the cpu target
compiles as a loop (compiler.lower_body); the cpu target otherwise keeps each scan as one
loop kernel (compiler.lower, the cpu emitter's ``scan_loop``).
"""
from __future__ import annotations

from ..ir import Graph, Node


def unroll_scans(graph: Graph) -> Graph:
    if not any(n.op == "scan" for n in graph.nodes):
        return graph
    from ..ops.control import replay
    return Graph(replay(list(graph.outputs), {}, expand=_expand), graph.names)


def _step(x: Node, t: int) -> Node:
    """x[t] along the leading (scanned) axis; from a stack this pass built (the saved carries
    an adjoint reads, the ys of an inner scan), the stacked tensor itself, not a copy."""
    from .. import dsl as F
    from ..ops.slicing import slice_node
    if (x.op == "concatenate" and x.attrs["axis"] == 0 and len(x.inputs) == x.shape[0]
            and all(p.shape[0] == 1 for p in x.inputs)):
        p = x.inputs[t]
        return p.inputs[0] if p.op == "reshape" and p.inputs[0].shape == x.shape[1:] else F.reshape(p, x.shape[1:])
    if x.shape[0] != 1:
        x = slice_node(x, [(t, t + 1, 1)] + [None] * (x.ndim - 1))
    return F.reshape(x, x.shape[1:])


def _expand(n: Node, ins: list):
    """A scan node -> the list of its results; a scan_out -> its entry of that list."""
    if n.op == "scan_out":
        return ins[0][n.attrs["index"]]
    from .. import dsl as F
    from ..ops.control import replay
    body, T, rev = n.attrs["body"], n.attrs["length"], n.attrs["reverse"]
    nc, nx = body.n_carry, body.n_x
    carry, xs, caps = list(ins[:nc]), ins[nc:nc + nx], list(ins[nc + nx:])
    saved: list = [None] * T
    ys: list = [None] * T
    where = n.src.rsplit("/", 1)[-1]
    for i in range(T):
        t = T - 1 - i if rev else i
        saved[t] = carry
        args = carry + [_step(x, t) for x in xs] + caps
        outs = replay(list(body.outputs), {id(a): v for a, v in zip(body.args, args)},
                      src_suffix=f" (scan @ {where}, step {t})", expand=_expand)
        carry, ys[t] = outs[:nc], outs[nc:]
    return (carry + [F.stack([ys[t][j] for t in range(T)]) for j in range(body.n_y)]
            + [F.stack([saved[t][j] for t in range(T)]) for j in range(nc)])


def merge_scans(graph: Graph) -> Graph:
    """A scan whose body is a prefix of another's (the same inputs, length and direction, the
    same carry and first ys: the forward scan that a ``checkpoint=False`` adjoint extends
    with its residuals) is read from the longer one: one loop computes both (cpu, where a
    scan is compiled as a loop; the unrolled copies merge by CSE anyway)."""
    scans = [n for n in graph.nodes if n.op == "scan"]
    if len(scans) < 2:
        return graph
    from ..ops.control import Body, result
    from ..substitution import substitute
    into: dict[int, Node] = {}
    for a in scans:
        ba = a.attrs["body"]
        for b in scans:
            bb = b.attrs["body"]
            if (b is a or id(b) in into or len(bb.outputs) <= len(ba.outputs) or bb.n_carry != ba.n_carry
                    or len(a.inputs) != len(b.inputs) or any(x is not y for x, y in zip(a.inputs, b.inputs))
                    or any(a.attrs[k] != b.attrs[k] for k in ("length", "reverse"))):
                continue
            if Body(bb.args, bb.outputs[:len(ba.outputs)], ba.n_carry, ba.n_x, ba.y_tree) == ba:
                into[id(a)] = b
                break
    if not into:
        return graph
    replace = {}
    for n in graph.nodes:
        if n.op == "scan_out" and id(n.inputs[0]) in into:
            a = n.inputs[0]
            b = into[id(a)]
            i, ny_a, nc = n.attrs["index"], a.attrs["body"].n_y, a.attrs["body"].n_carry
            replace[n] = result(b, i if i < nc + ny_a else i + b.attrs["body"].n_y - ny_a)
    return Graph(substitute(list(graph.outputs), replace), graph.names)
