"""Reverse-mode autodiff as a graph -> graph transform.

``grad(y, xs)`` walks the nodes between ``xs`` and ``y`` in reverse topological order,
asks each op's VJP rule for its inputs' cotangents and sums them. The result is ordinary
nodes, so gradients can be evaluated, compiled, and differentiated again.
"""
from __future__ import annotations

from typing import Sequence

from . import dsl as F
from .errors import DTypeError, ShapeError, user_location
from .ir import Node, topo_order
from .ops.control import out_types, vjp_multi


def grad(y: Node, xs: Node | Sequence[Node]) -> list[Node] | Node:
    """Symbolic gradients of the scalar ``y`` with respect to each of ``xs``.

    Integer and boolean values carry no gradient: differentiating with respect to one is a
    DTypeError, and paths through comparisons, casts to integers or ``stop_gradient``
    contribute zero. An ``x`` that ``y`` does not depend on gets a zero gradient.
    """
    single = isinstance(xs, Node)
    xs = [xs] if single else list(xs)
    if not isinstance(y, Node):
        raise TypeError("grad: y must be a graphc tensor")
    if y.shape != ():
        raise ShapeError(f"grad: y must be a scalar, got shape {y.shape} (reduce it first, e.g. gc.mean) at {user_location()}")
    if y.dtype.kind != "f":
        raise DTypeError(f"grad: y must be floating point, got {y.dtype} at {user_location()}")
    for x in xs:
        if not isinstance(x, Node):
            raise TypeError(f"grad: {x!r} is not a graphc tensor")
        if x.dtype.kind != "f":
            raise DTypeError(f"grad: cannot differentiate with respect to {x!r}: dtype {x.dtype} is not floating point (at {user_location()})")

    order = topo_order([y])
    # only nodes that depend on some x need a cotangent
    wanted = {id(x) for x in xs}
    live: set[int] = set()
    for n in order:
        if id(n) in wanted or any(id(i) in live for i in n.inputs):
            live.add(id(n))

    adj: dict[int, Node] = {id(y): F.ones_like(y)}
    # a scan is one node with several results (read by scan_out nodes): the cotangents of
    # its results are gathered here and its VJP takes them all at once
    multi: dict[int, list] = {}
    for n in reversed(order):
        if n.op == "scan_out":
            g = adj.get(id(n))
            if g is not None and id(n) in live and n.dtype.kind == "f":
                gs = multi.setdefault(id(n.inputs[0]), [None] * len(out_types(n.inputs[0])))
                i = n.attrs["index"]
                gs[i] = g if gs[i] is None else gs[i] + g
            continue
        if n.op == "scan":
            if id(n) not in live or id(n) not in multi:
                continue
            contribs = vjp_multi(n, multi.pop(id(n)))
        else:
            g = adj.get(id(n))
            if g is None or id(n) not in live or not n.inputs or n.dtype.kind != "f":
                continue
            rule = n.opdef.vjp
            if rule is None:
                raise NotImplementedError(f"grad: op {n.op!r} has no VJP rule (node created at {n.src})")
            contribs = rule(n, g)
        for x, c in zip(n.inputs, contribs):
            if c is None or id(x) not in live or x.dtype.kind != "f":
                continue
            if c.shape != x.shape:
                raise AssertionError(f"VJP of {n.op} gave shape {c.shape} for an operand of shape {x.shape}")
            if c.dtype != x.dtype:
                c = F.cast(c, x.dtype)
            prev = adj.get(id(x))
            adj[id(x)] = c if prev is None else prev + c
    out = [adj.get(id(x)) if id(x) in adj else F.zeros_like(x) for x in xs]
    return out[0] if single else out
