"""Scheduling and the buffer plan.

The kernels become a ``networkx.DiGraph`` (edges: data dependencies, plus write-after-read
edges where a kernel updates a parameter or state slot in place). It is ordered
topologically, preferring among ready kernels the one that frees the most memory; then
liveness intervals are computed and scratch buffers are packed into one arena per dtype
(greedy by size, reusing the space of dead tensors; an elementwise kernel may write over an
operand that dies there). Parameters and optimizer state are updated in place.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from ..errors import CompileError
from ..ir import Graph, Node
from .fusion import Kernel

from ..store import aligned


@dataclass(eq=False)
class Buffer:
    """Where a materialized node lives."""

    kind: str  # "feed" | "store" | "scratch" | "const" | "literal" | "arg" (a scan body's placeholder)
    dtype: np.dtype
    shape: tuple
    name: str = ""  # feed / store name
    offset: int = 0  # element offset in the arena (scratch, const)
    start: int = 0  # liveness: first kernel index (scratch)
    end: int = 0  # last kernel index that reads it
    value: np.ndarray | None = None  # const data

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclass
class Plan:
    kernels: list[Kernel]
    buffers: dict[int, Buffer]  # id(node) -> Buffer
    arena_sizes: dict[np.dtype, int]  # scratch elements per dtype
    copies: list[tuple[Node, str]] = field(default_factory=list)  # store writes done after the kernels
    peak_bytes: int = 0
    no_reuse_bytes: int = 0
    kernel_graph: nx.DiGraph | None = None
    loop_consts: list = field(default_factory=list)  # scan bodies' const Buffers (in these arenas)
    carries: dict = field(default_factory=dict)  # (scan kernel name, carry leaf) -> its step Buffer

    def buffer(self, n: Node) -> Buffer:
        return self.buffers[id(n)]


def _order(kernels: list[Kernel], dag: nx.DiGraph, sizes: dict[int, int]) -> list[Kernel]:
    """Kahn's algorithm; among ready kernels take the one with the smallest net allocation
    (bytes it materializes minus bytes of operands it is the last reader of), ties by the
    original (program) order."""
    indeg = {k: dag.in_degree(k) for k in dag.nodes}
    remaining_readers: dict[int, int] = {}
    for k in kernels:
        for b in k.reads():
            remaining_readers[id(b)] = remaining_readers.get(id(b), 0) + 1

    def score(i):
        k = kernels[i]
        alloc = sum(sizes.get(id(o), 0) for o in k.outputs)
        freed = sum(sizes.get(id(b), 0) for b in k.reads() if remaining_readers.get(id(b)) == 1)
        return (alloc - freed, i)

    ready = [score(i) for i in dag.nodes if indeg[i] == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, i = heapq.heappop(ready)
        out.append(kernels[i])
        for b in kernels[i].reads():
            remaining_readers[id(b)] -= 1
        for j in dag.successors(i):
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(ready, score(j))
        # scores of ready kernels may have changed; re-score (ready lists are short)
        ready = [score(i2) for _, i2 in ready]
        heapq.heapify(ready)
    if len(out) != len(kernels):
        raise CompileError("internal: the kernel graph has a cycle")
    return out


def build_plan(graph: Graph, kernels: list[Kernel], updates: list[tuple[Node, str]],
               keep: list[Node] = (), in_place: bool = True) -> Plan:
    """Order ``kernels`` and assign every materialized node a Buffer.

    ``updates`` lists (node, store slot) pairs: the node's value must end up in the slot.
    ``keep`` are nodes read after the step (user outputs): never written into the store.
    ``in_place=False`` keeps every update in scratch and copies it into the store after the
    last kernel (check_numerics: the driver checks the new values before any is written).
    """
    producer: dict[int, int] = {}
    for i, k in enumerate(kernels):
        for o in k.outputs:
            producer[id(o)] = i
        if k.matmul is not None:
            producer[id(k.matmul)] = i

    # ---- storage of sources and kernel outputs ----------------------------------------
    buffers: dict[int, Buffer] = {}
    # a one-element constant is inlined as a literal where loops read it; a GEMM operand or
    # a structured op's array operand (softmax-CE's) must be an array, so those keep storage
    as_array: set[int] = set()
    for k in kernels:
        operands = list(k.matmul.inputs) if k.matmul is not None else []
        for n in k.nodes:
            rule = n.opdef.structured
            if rule is not None and rule.array_operands:
                operands += list(n.inputs)
        as_array.update(id(k.leaves[id(x)].base) for x in operands if id(x) in k.leaves)
    for n in graph.nodes:
        if n.op == "input":
            buffers[id(n)] = Buffer("feed", n.dtype, n.shape, name=n.name)
        elif n.op in ("param", "state"):
            buffers[id(n)] = Buffer("store", n.dtype, n.shape, name=n.name)
        elif n.op == "scan_arg":  # its address is the compiled loop's (emitter)
            buffers[id(n)] = Buffer("arg", n.dtype, n.shape)
        elif n.op == "const":
            v = n.attrs["value"].array
            lit = v.size == 1 and id(n) not in as_array
            buffers[id(n)] = Buffer("literal" if lit else "const", n.dtype, n.shape, value=v)
    store_reads: dict[str, set[int]] = {}  # slot -> kernels reading its old value
    for i, k in enumerate(kernels):
        for b in k.reads():
            if b.op in ("param", "state"):
                store_reads.setdefault(b.name, set()).add(i)

    copies: list[tuple[Node, str]] = []
    direct: dict[int, str] = {}
    kept = {id(n) for n in keep}
    for node, slot in updates:
        nid = id(node)
        i = producer.get(nid)
        if (not in_place or i is None or nid in direct or nid in kept
                or kernels[i].kind not in ("loop", "copy")):
            copies.append((node, slot))  # a source, a GEMM result, or a second slot of one node
        else:
            direct[nid] = slot

    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(kernels)))
    for i, k in enumerate(kernels):
        for b in k.reads():
            j = producer.get(id(b))
            if j is not None and j != i:
                dag.add_edge(j, i)
    # write-after-read: a kernel that updates slot S in place runs after every other reader of S
    for nid, slot in list(direct.items()):
        w = producer[nid]
        trial = [(r, w) for r in store_reads.get(slot, ()) if r != w]
        # the writer itself may read S only element-for-element (same index it writes)
        k = kernels[w]
        own = [v for v in k.leaves.values() if v.base.op in ("param", "state") and v.base.name == slot]
        node = next(n for n, _ in updates if id(n) == nid)
        if any(not v.is_identity_for(k.shape) for v in own) or any(
                id(r) in {id(x) for x in k.reductions} for r in [node]):
            ok = False
        else:
            dag.add_edges_from(trial)
            ok = nx.is_directed_acyclic_graph(dag)
            if not ok:
                dag.remove_edges_from(trial)
        if not ok:
            del direct[nid]
            copies.append((node, slot))

    sizes = {}
    for k in kernels:
        for o in k.outputs:
            sizes[id(o)] = int(np.prod(o.shape) if o.shape else 1) * o.dtype.itemsize
    ordered = _order(kernels, dag, sizes)
    for i, k in enumerate(ordered):
        k.index = i
        k.name = f"k{i}"
    relabel = {old: kernels[old].index for old in range(len(kernels))}
    dag = nx.relabel_nodes(dag, relabel)
    end = len(ordered)

    for k in ordered:
        for o in k.outputs + ([k.matmul] if k.matmul is not None and k.matmul not in k.outputs else []):
            if id(o) in buffers:
                continue
            slot = direct.get(id(o))
            if slot is not None:
                buffers[id(o)] = Buffer("store", o.dtype, o.shape, name=slot)
            else:
                buffers[id(o)] = Buffer("scratch", o.dtype, o.shape, start=k.index, end=k.index)

    # ---- liveness -------------------------------------------------------------------------
    for k in ordered:
        for b in k.reads():
            buf = buffers[id(b)]
            if buf.kind == "scratch":
                buf.end = max(buf.end, k.index)
    for o in graph.outputs:  # user outputs and deferred copies are read after the last kernel
        buf = buffers.get(id(o))
        if buf is not None and buf.kind == "scratch":
            buf.end = end

    # ---- in place: an elementwise loop may write over an operand that dies in it ---------
    alias: dict[int, int] = {}  # id(output node) -> id(node whose buffer it reuses)
    for k in ordered:
        if k.kind != "loop":
            continue
        taken: set[int] = set()
        cands = []
        if k.matmul is not None:
            cands.append(k.matmul)
        cands += [v.base for v in k.leaves.values() if v.is_identity_for(k.shape)]
        for o in k.nodes:
            if o not in k.outputs or buffers[id(o)].kind != "scratch":
                continue
            ob = buffers[id(o)]
            for c in cands:
                cb = buffers.get(id(c))
                if (cb is None or cb.kind != "scratch" or id(c) in taken or cb.end != k.index
                        or cb.dtype != ob.dtype or cb.size != ob.size or id(c) in alias.values()):
                    continue
                # every read of c in this kernel must be the identity view (same index)
                if any(v.base is c and not v.is_identity_for(k.shape) for v in k.leaves.values()):
                    continue
                alias[id(o)] = id(c)
                taken.add(id(c))
                cb.end = max(cb.end, ob.end)
                break

    # ---- pack scratch buffers: greedy by size over liveness intervals --------------------
    def root(nid):
        while nid in alias:
            nid = alias[nid]
        return nid

    groups: dict[int, list[int]] = {}
    for nid, b in buffers.items():
        if b.kind == "scratch":
            groups.setdefault(root(nid), []).append(nid)
    arena_sizes: dict[np.dtype, int] = {}
    placed: dict[np.dtype, list[tuple[int, int, int, int]]] = {}  # (off, size, start, end)
    no_reuse = 0
    items = []
    for r, members in groups.items():
        b = buffers[r]
        start = min(buffers[m].start for m in members)
        stop = max(buffers[m].end for m in members)
        items.append((b.size, r, start, stop, b.dtype))
        no_reuse += sum(buffers[m].nbytes for m in members)
    items.sort(key=lambda t: (-t[0], t[2]))
    for size, r, start, stop, dt in items:
        lst = placed.setdefault(dt, [])
        off = 0
        for o2, s2, a2, e2 in sorted(lst):
            if a2 <= stop and start <= e2:  # lifetimes overlap
                if off + size > o2 and o2 + s2 > off:
                    off = aligned(o2 + s2, dt)
        lst.append((off, size, start, stop))
        for m in groups[r]:
            buffers[m].offset = off
        arena_sizes[dt] = max(arena_sizes.get(dt, 0), off + size)
    # constants live at the end of their dtype's arena for the whole program
    for nid, b in buffers.items():
        if b.kind == "const":
            off = aligned(arena_sizes.get(b.dtype, 0), b.dtype)
            b.offset = off
            arena_sizes[b.dtype] = off + b.size
    peak = sum(n * np.dtype(dt).itemsize for dt, n in arena_sizes.items())
    return Plan(ordered, buffers, arena_sizes, copies, peak, no_reuse, dag)


def place_loops(plan: Plan) -> None:
    """Give each scan kernel's body (compiler.lower_body) its memory in ``plan``'s arenas, after
    the outer buffers (never reused: a region for the program's lifetime): the body's own arena
    (its scratch and constants, offsets shifted into the region) and two buffers per carry leaf
    (the carry a step reads, the one it writes)."""
    for k in plan.kernels:
        if k.kind != "scan":
            continue
        bg, _, bplan, args = k.body
        base = {}
        for dt, size in bplan.arena_sizes.items():
            base[dt] = aligned(plan.arena_sizes.get(dt, 0), dt)
            plan.arena_sizes[dt] = base[dt] + size
        for b in bplan.buffers.values():
            if b.kind in ("scratch", "const"):
                b.offset += base[b.dtype]
                if b.kind == "const":
                    plan.loop_consts.append(b)
        body = k.nodes[0].attrs["body"]
        for j, a in enumerate(body.args[:body.n_carry]):
            off = aligned(plan.arena_sizes.get(a.dtype, 0), a.dtype)
            c = Buffer("scratch", a.dtype, (2,) + tuple(a.shape), offset=off)  # read/written in turn
            plan.arena_sizes[a.dtype] = off + c.size
            plan.carries[(k.name, j)] = c
    plan.peak_bytes = sum(n * np.dtype(dt).itemsize for dt, n in plan.arena_sizes.items())
