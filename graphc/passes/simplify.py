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
    transposes, reshape of reshape, no-op reshapes and broadcasts, repeated to a fixed point;
    then sums of disjoint zero pads -> one concatenate (fold_pad_sums)."""
    for _ in range(10):
        out = _rewrite(graph, _simplify_rule)
        if [id(o) for o in out.outputs] == [id(o) for o in graph.outputs]:
            break
        graph = out
    return fold_pad_sums(out)


def fold_pad_sums(graph: Graph) -> Graph:
    """A sum of zero pads whose operands land in disjoint ranges of one axis (the gradient of
    a tensor split into pieces, such as a recurrent cell's gates) -> the operands concatenated
    along that axis (zero gaps padded in), padded once: one copy instead of a full-size pad
    per piece and the adds between them. The add tree may be in any order; its inner adds
    must have no other reader. Values are each block's own, NaN included; only a block's -0.0
    differs: kept, where the unfolded sum gives -0.0 + 0.0 = +0.0 (accepted: equal under
    allclose, and every compiled target compiles the same folded graph)."""
    users = graph.consumers()
    outs = {id(o) for o in graph.outputs}
    inner_old = {id(n) for n in graph.nodes if n.op == "add" and id(n) not in outs
                 and len(users[id(n)]) == 1 and users[id(n)][0].op == "add"}
    new: dict[int, Node] = {}
    inner: set[int] = set()
    for n in graph.nodes:
        m = rebuild(n, [new[id(x)] for x in n.inputs])
        if id(n) in inner_old:
            inner.add(id(m))
        elif n.op == "add":
            r = _pads_to_concat(m, inner)
            m = m if r is None else r
        new[id(n)] = m
    return Graph([new[id(o)] for o in graph.outputs], graph.names)


def _pads_to_concat(n: Node, inner: set) -> Node | None:
    leaves, stack = [], [n]
    while stack:
        x = stack.pop()
        if x is n or id(x) in inner:
            if x.op != "add":
                return None
            stack.extend(reversed(x.inputs))
        elif (x.op == "pad" and x.attrs["value"] == 0 and not any(x.attrs["interior"])
              and x.shape == n.shape and x.dtype == n.dtype):
            leaves.append(x)
        else:
            return None
    if len(leaves) < 2 or any(d is None for d in n.shape):
        return None
    widths = [x.attrs["pad_width"] for x in leaves]
    axes = [a for a in range(n.ndim) if len({w[a] for w in widths}) > 1]
    if len(axes) != 1:
        return None
    (ax,) = axes
    spans = sorted(((w[ax][0], w[ax][0] + x.inputs[0].shape[ax], x.inputs[0]) for w, x in zip(widths, leaves)),
                   key=lambda t: t[0])
    if any(e > s for (_, e, _), (s, _, _) in zip(spans, spans[1:])):
        return None  # overlapping
    zero = tuple((0, 0) for _ in range(n.ndim))

    def along(before: int, after: int) -> tuple:
        return tuple((before, after) if a == ax else (0, 0) for a in range(n.ndim))

    pieces, end = [], 0
    for s, e, x in spans:
        pieces.append(x if s == end else make("pad", (x,), {"pad_width": along(s - end, 0),
                                                              "interior": (0,) * n.ndim, "value": 0}, src=n.src))
        end = e
    cat = make("concatenate", pieces, {"axis": ax}, src=n.src)
    pw = tuple((0, n.shape[ax] - end) if a == ax else widths[0][a] for a in range(n.ndim))
    if pw == zero:
        return cat
    return make("pad", (cat,), {"pad_width": pw, "interior": (0,) * n.ndim, "value": 0}, src=n.src)


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
