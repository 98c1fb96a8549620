"""take and take_grad (ops/indexing.py; kinds "take", "scatter_add"): operands are row-major arrays."""
from __future__ import annotations

from ....ir import Node
from ....ops.indexing import around
from ....schedule.fusion import Kernel
from ...base import numel
from ...expr import literal
from ..launch import Fn, Hosted, Launch
from .common import dense


def index_of(em, fn: Fn, k: Kernel, y: Node) -> str:
    """Index ``i`` of the flattened indices as an int64 (a rank-0 feed is a kernel argument)."""
    w = em.where(k.leaves[id(y)].base)
    if w[0] == "scalar":
        return f"numba.int64({fn.scalar(w[1], y.dtype)})"
    Y, oy = dense(em, fn, k, y)
    return f"numba.int64({Y}[{oy} + i])"


def take_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    """take: a grid-stride loop over the result (A, m, D), params read as (A, n, D)."""
    (t,) = k.nodes
    p, y = t.inputs
    A, n, D = around(p.shape, t.attrs["axis"])
    m = numel(y.shape)
    fn = Fn()
    P, op = dense(em, fn, k, p)
    O, oo = dense(em, fn, k, t)
    j = index_of(em, fn, k, y)
    total, Dp, mp, nq = fn.int(A * m * D), fn.int(D), fn.int(m), fn.int(n)
    body = [f"    for e in range(cuda.grid(1), {total}, cuda.gridsize(1)):",
            f"        q = e // {Dp}",
            f"        c = e - q * {Dp}",
            f"        a = q // {mp}",
            f"        i = q - a * {mp}",
            f"        j = {j}",
            f"        if j >= 0 and j < {nq}:",
            f"            {O}[{oo} + e] = {P}[{op} + (a * {nq} + j) * {Dp} + c]  # take",
            "        else:  # a computed index out of range reads 0 (TensorFlow's gather on GPU does too)",
            f"            {O}[{oo} + e] = {literal(0, t.dtype)}"]
    name = em.function(fn, body, "take")
    grid = max(1, min(-(-(A * m * D) // em.lp.block), em.lp.max_grid))
    return Launch(k.name, "kernel", name, grid, em.lp.block, fn.args(), comment=em.site(t),
                  src=(fn, body, "take"))


def scatter_add_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    """take_grad without atomics: each thread owns one column ``c`` of a block of output rows,
    zero-fills it, then adds ``g`` for the indices in that block in index order, so the
    sums are deterministic (and equal to the cpu's). The rows are split into about n / m
    blocks (a thread then does about as much zero-filling as scanning), as far as threads allow."""
    (t,) = k.nodes
    g, y = t.inputs
    A, n, D = around(t.shape, t.attrs["axis"])
    m = numel(y.shape)
    lanes = A * D
    nb = max(1, min(-(-n // max(m, 1)), (em.lp.block * em.lp.max_grid) // max(lanes, 1)))
    rows = -(-n // nb)
    fn = Fn()
    G, og = dense(em, fn, k, g)
    O, oo = dense(em, fn, k, t)
    j = index_of(em, fn, k, y)
    total, lp, Dp, mp, nq, R = (fn.int(v) for v in (lanes * nb, lanes, D, m, n, rows))
    body = [f"    for e in range(cuda.grid(1), {total}, cuda.gridsize(1)):",
            f"        b = e // {lp}  # row block",
            f"        q = e - b * {lp}",
            f"        a = q // {Dp}",
            f"        c = q - a * {Dp}  # neighbouring threads: neighbouring columns",
            f"        j0 = b * {R}",
            f"        j1 = j0 + {R} if j0 + {R} < {nq} else {nq}",
            f"        ob = {oo} + a * {nq} * {Dp} + c",
            "        for r in range(j0, j1):",
            f"            {O}[ob + r * {Dp}] = {literal(0, t.dtype)}",
            f"        gb = {og} + a * {mp} * {Dp} + c",
            f"        for i in range({mp}):  # in index order",
            f"            j = {j}",
            "            if j >= j0 and j < j1:  # (a computed index out of range is skipped)",
            f"                {O}[ob + j * {Dp}] += {G}[gb + i * {Dp}]  # take_grad: scatter-add"]
    name = em.function(fn, body, "scatter")
    grid = max(1, min(-(-(lanes * nb) // em.lp.block), em.lp.max_grid))
    return Launch(k.name, "kernel", name, grid, em.lp.block, fn.args(), comment=em.site(t),
                  src=(fn, body, "scatter"))
