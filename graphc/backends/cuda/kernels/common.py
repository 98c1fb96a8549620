"""Text helpers shared by the per-kind kernels: where an operand lives, its index
expression, loop indices from a flat index."""
from __future__ import annotations

from ....errors import CompileError
from ....ir import Node
from ....schedule.fusion import Kernel, View, contiguous_strides
from ..launch import Fn


def leaf_index(v: View, L: tuple) -> str:
    vs, r = v.view_shape, len(L)
    k = len(vs)
    st = contiguous_strides(tuple(v.shape))
    terms = []
    for j in range(k):
        if vs[j] == 1:
            continue
        s = st[v.perm[j] if v.perm is not None else j]
        terms.append(f"i{r - k + j}" if s == 1 else f"i{r - k + j} * {s}")
    return " + ".join(terms) or "0"


def decompose(var: str, dims: list[int], L: tuple, ind: str) -> list[str]:
    """Loop indices i<d> for ``dims`` (row-major) from the flat index ``var``."""
    lines, q = [], var
    for pos in range(len(dims) - 1, -1, -1):
        d = dims[pos]
        if pos == 0:
            lines.append(f"{ind}i{d} = {q}")
        elif L[d] == 1:
            lines.append(f"{ind}i{d} = 0")
        else:
            lines.append(f"{ind}i{d} = {q} % {L[d]}")
            lines.append(f"{ind}q = {q} // {L[d]}")
            q = "q"
    return lines


def view_strides(v: View, L: tuple) -> list[int]:
    """Element strides of view ``v`` along each loop dim of ``L`` (0 where broadcast)."""
    vs, r = v.view_shape, len(L)
    k = len(vs)
    st = contiguous_strides(tuple(v.shape))
    out = [0] * r
    for j in range(k):
        if vs[j] != 1:
            out[r - k + j] = st[v.perm[j] if v.perm is not None else j]
    return out


def dense(em, fn: Fn, k: Kernel, x: Node) -> tuple[str, str]:
    """(arena, offset) of operand or output ``x``."""
    w = em.where(k.leaves[id(x)].base if id(x) in k.leaves else x)
    if w[0] != "arena":
        raise CompileError(f"cuda: operand {em.site(x)} of {em.site(k.nodes[0])} "
                           "is not an array in device memory")
    return fn.arr(w[1]), fn.int(w[2])
