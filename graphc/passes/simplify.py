"""Algebraic simplification, constant folding, CSE and DCE: each a pure Graph -> Graph."""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, make, rebuild

FOLD_LIMIT = 4096  # fold constant subgraphs whose result has at most this many elements


def _rewrite(graph: Graph, rule) -> Graph:
    """Rebuild ``graph`` bottom-up, letting ``rule(node, new_inputs)`` replace each node."""
    new: dict[int, Node] = {}
    for n in graph.nodes:
        ins = [new[id(x)] for x in n.inputs]
        m = rebuild(n, ins)
        r = rule(m)
        new[id(n)] = m if r is None else r
    return Graph([new[id(o)] for o in graph.outputs], graph.names)


def _const_value(n: Node):
    return n.attrs["value"].array if n.op == "const" else None


def _is_scalar_const(n: Node, value) -> bool:
    v = _const_value(n)
    return v is not None and v.size == 1 and v.ndim <= n.ndim + 8 and float(v.reshape(-1)[0]) == value


def _same(n: Node, x: Node) -> Node | None:
    """x stands in for n when it has n's shape and dtype."""
    return x if (x.shape == n.shape and x.dtype == n.dtype) else None


def _simplify_rule(n: Node) -> Node | None:
    op, ins = n.op, n.inputs
    if op == "add":
        a, b = ins
        if _is_scalar_const(b, 0):
            return _same(n, a)
        if _is_scalar_const(a, 0):
            return _same(n, b)
    elif op == "sub":
        a, b = ins
        if _is_scalar_const(b, 0):
            return _same(n, a)
    elif op == "mul":
        a, b = ins
        if _is_scalar_const(b, 1):
            return _same(n, a)
        if _is_scalar_const(a, 1):
            return _same(n, b)
    elif op == "div":
        a, b = ins
        if _is_scalar_const(b, 1):
            return _same(n, a)
    elif op == "neg" and ins[0].op == "neg":
        return ins[0].inputs[0]
    elif op == "pow":
        p = n.attrs["p"]
        if p == 1.0:
            return ins[0]
        if p == 2.0:
            return make("square", ins, src=n.src)
    elif op == "stop_gradient":
        return ins[0]  # only autodiff cares; the compiled graph is already differentiated
    elif op == "cast" and ins[0].dtype == n.dtype:
        return ins[0]
    elif op == "transpose":
        x = ins[0]
        if x.op == "transpose":
            inner, outer = x.attrs["axes"], n.attrs["axes"]
            axes = tuple(inner[a] for a in outer)
            if axes == tuple(range(len(axes))):
                return x.inputs[0]
            return make("transpose", (x.inputs[0],), {"axes": axes}, src=n.src)
    elif op == "reshape":
        x = ins[0]
        if x.shape == n.shape:
            return x
        if x.op == "reshape":
            return make("reshape", (x.inputs[0],), {"shape": n.shape}, src=n.src)
    elif op in ("broadcast_to",):
        if ins[0].shape == n.shape:
            return ins[0]
        if ins[0].op == "broadcast_to":
            return make("broadcast_to", (ins[0].inputs[0],), {"shape": n.shape}, src=n.src)
    elif op == "sum" and not n.attrs["axes"]:
        return ins[0] if not n.attrs["keepdims"] or ins[0].shape == n.shape else None
    return None


def simplify(graph: Graph) -> Graph:
    """x*1, x+0, x-0, x/1, --x, x**1, x**2 -> square, stop_gradient, no-op casts, double
    transposes, reshape of reshape, no-op reshapes and broadcasts. Repeats to a fixed point."""
    for _ in range(10):
        out = _rewrite(graph, _simplify_rule)
        if [id(o) for o in out.outputs] == [id(o) for o in graph.outputs]:
            return out
        graph = out
    return graph


def _fold_rule(n: Node) -> Node | None:
    if n.opdef.kind == "source" or not n.inputs or any(x.op != "const" for x in n.inputs):
        return None
    size = int(np.prod(n.shape)) if n.shape else 1
    if size > FOLD_LIMIT or n.op == "broadcast_to":
        return None  # keep broadcasts of constants symbolic: kernels read them as scalars
    v = n.opdef.evaluate([x.attrs["value"].array for x in n.inputs], n.attrs, n)
    return make("const", (), {"value": np.asarray(v, dtype=n.dtype)}, src=n.src)


def fold_constants(graph: Graph) -> Graph:
    """Evaluate (with the interpreter's NumPy rules) every small node whose inputs are constants."""
    return _rewrite(graph, _fold_rule)


def cse(graph: Graph) -> Graph:
    """Common-subexpression elimination. Nodes are hash-consed, so rebuilding the graph
    merges every (op, inputs, attrs) duplicate, constants included (they hash by value)."""
    return _rewrite(graph, lambda n: None)


def dce(graph: Graph) -> Graph:
    """Dead-code elimination: keep only what the outputs reach (a fresh topological walk)."""
    return Graph(list(graph.outputs), graph.names)
