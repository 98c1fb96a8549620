"""slice, pad and concatenate (ops/slicing.py): a grid-stride loop over the output."""
from __future__ import annotations

from ....ir import Node
from ....schedule.fusion import Kernel, View
from ...base import numel
from ...expr import literal
from ..launch import Fn, Hosted, Launch
from .common import view_strides


def strided(em, fn: Fn, v: View, shape: tuple):
    """How a kernel reads operand view ``v`` of logical ``shape``: (arena param, element
    offset, element strides per axis, 0 where broadcast), or (None, text, None) for a scalar
    feed (a kernel argument) or a literal."""
    w = em.where(v.base)
    if w[0] == "literal":
        return None, w[1], None
    if w[0] == "scalar":
        return None, fn.scalar(w[1], v.base.dtype), None
    return fn.arr(w[1]), w[2], view_strides(v, tuple(shape))


def coords(fn: Fn, shape: tuple, ind: str) -> list[str]:
    """Output coordinates c<d> from the flat index ``i`` (extents are arguments)."""
    lines, q = [], "i"
    for d in range(len(shape) - 1, 0, -1):
        e = fn.int(shape[d])
        lines += [f"{ind}c{d} = {q} % {e}", f"{ind}q = {q} // {e}"]
        q = "q"
    return lines + [f"{ind}c0 = {q}"]


def grid_loop(em, fn: Fn, n: Node) -> tuple[str, str, list[str]]:
    w = em.where(n)
    O, oo = fn.arr(w[1]), fn.int(w[2])
    body = [f"    for i in range(cuda.grid(1), {fn.int(numel(n.shape))}, cuda.gridsize(1)):"]
    return O, oo, body + coords(fn, n.shape, "        ")


def launch(em, k: Kernel, n: Node, fn: Fn, body: list[str], tag: str) -> Launch:
    name = em.function(fn, body, tag)
    grid = max(1, min(-(-numel(n.shape) // em.lp.block), em.lp.max_grid))
    return Launch(k.name, "kernel", name, grid, em.lp.block, fn.args(), comment=em.site(n),
                  src=(fn, body, tag))


def slice_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    """slice: output coordinate c reads the operand at ``start + c * step`` per axis, i.e. at
    element ``base + sum(c_d * step_d * stride_d)`` (negative steps need nothing else)."""
    (n,) = k.nodes
    x = n.inputs[0]
    fn = Fn()
    O, oo, body = grid_loop(em, fn, n)
    A, base, st = strided(em, fn, k.leaves[id(x)], x.shape)
    if A is None:
        src = base
    else:
        ents = [(0, 1) if e is None else (e[0], e[2]) for e in n.attrs["slices"]]
        b = fn.int(base + sum(s * t for (s, _), t in zip(ents, st)))
        terms = [f"c{d} * {fn.int(step * t)}" for d, ((_, step), t) in enumerate(zip(ents, st))]
        src = f"{A}[{b} + {' + '.join(terms)}]"
    body.append(f"        {O}[{oo} + i] = {src}  # slice")
    return launch(em, k, n, fn, body, "slice")


def pad_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    """pad: output coordinate c reads the operand at ``(c - before) / (interior + 1)`` per
    axis where that is a whole number inside it, else the fill value."""
    (n,) = k.nodes
    x = n.inputs[0]
    fn = Fn()
    O, oo, body = grid_loop(em, fn, n)
    A, base, st = strided(em, fn, k.leaves[id(x)], x.shape)
    conds, terms = [], []
    for d, ((b, _), inner, size) in enumerate(zip(n.attrs["pad_width"], n.attrs["interior"], x.shape)):
        bp, sp, npar = fn.int(b), fn.int(inner + 1), fn.int(size)
        body += [f"        j{d} = c{d} - {bp}", f"        p{d} = j{d} // {sp}"]
        conds.append(f"j{d} >= 0 and p{d} * {sp} == j{d} and p{d} < {npar}")
        if A is not None:
            terms.append(f"p{d} * {fn.int(st[d])}")
    src = base if A is None else f"{A}[{fn.int(base)} + {' + '.join(terms)}]"
    body += [f"        if {' and '.join(conds)}:",
             f"            {O}[{oo} + i] = {src}  # pad: the operand",
             "        else:",
             f"            {O}[{oo} + i] = {literal(n.attrs['value'], n.dtype)}  # pad: the constant"]
    return launch(em, k, n, fn, body, "pad")


def concat_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    """concatenate: the output coordinate along the axis picks the operand (an if-chain over
    the operands' boundaries), which is read at that coordinate less its start."""
    (n,) = k.nodes
    ax = n.attrs["axis"]
    fn = Fn()
    O, oo, body = grid_loop(em, fn, n)
    start = 0
    for j, x in enumerate(n.inputs):
        A, base, st = strided(em, fn, k.leaves[id(x)], x.shape)
        if A is None:
            src = base
        else:
            coord = [f"c{d}" if d != ax or start == 0 else f"(c{d} - {fn.int(start)})" for d in range(n.ndim)]
            src = f"{A}[{fn.int(base)} + {' + '.join(f'{c} * {fn.int(s)}' for c, s in zip(coord, st))}]"
        start += x.shape[ax]
        last = j == len(n.inputs) - 1
        if last:
            head = "if True:" if j == 0 else "else:"
        else:
            head = f"{'if' if j == 0 else 'elif'} c{ax} < {fn.int(start)}:"
        body += [f"        {head}", f"            {O}[{oo} + i] = {src}  # concatenate: operand {j}"]
    return launch(em, k, n, fn, body, "concat")
