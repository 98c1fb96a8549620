"""Fusion: group the nodes of a specialized graph into kernels.

Rules (each kernel is described target-independently; every backend emits from the same
descriptions):

- Elementwise nodes of one shape form one loop nest. A node joins its consumers' kernel
  when all of its consumers are in that kernel; otherwise it is materialized. Afterwards a
  loop whose results other kernels also read merges into a loop of its shape that reads them
  elementwise, which writes them for the others (where the kernel graph stays acyclic); a
  GEMM whose readers then all sit in one loop becomes its prologue.
- Scalar elementwise nodes (hyper-parameter arithmetic, bias corrections) are recomputed
  in the prelude of every kernel that needs them instead of being materialized.
- A reduction joins the kernel that computes its operand (accumulated in the same loop).
- A matmul whose only consumer is one elementwise kernel of its shape becomes that
  kernel's prologue (bias-add and activation are its epilogue, run in place).
- A structured op (``OpDef.structured``) gets a kernel of its rule's kind; structured ops
  of one kind on the same operands and attrs share it (softmax-CE and its gradient: one
  pass). A rule with ``contiguous_operands`` gets transposed or broadcast operands copied.
- Movement ops are views (reshape of contiguous data, transpose, broadcast) read by index;
  a view that cannot be expressed that way gets a copy kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CompileError
from ..ir import Graph, Node


@dataclass(eq=False)
class View:
    """How a kernel reads ``base``'s storage: reshape to ``shape``, then transpose by
    ``perm``; broadcasting is implied by size-1 dims against the loop."""

    base: Node
    shape: tuple
    perm: tuple | None = None

    @property
    def view_shape(self) -> tuple:
        return self.shape if self.perm is None else tuple(self.shape[p] for p in self.perm)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def is_identity_for(self, shape: tuple) -> bool:
        return self.perm is None and tuple(self.shape) == tuple(shape)


@dataclass(eq=False)
class Kernel:
    kind: str  # "loop" (elementwise/reduction), "matmul", "copy", or a structured rule's kind ("sce")
    shape: tuple = ()  # loop iteration shape
    nodes: list = field(default_factory=list)  # computed per element of the loop, topo order
    prelude: list = field(default_factory=list)  # scalar nodes computed once before the loop
    reductions: list = field(default_factory=list)  # accumulated in the loop
    outputs: list = field(default_factory=list)  # nodes this kernel materializes
    matmul: Node | None = None  # prologue GEMM whose result the loop reads (in place)
    leaves: dict = field(default_factory=dict)  # id(node) -> View of materialized storage
    # reshapes of the prologue GEMM's result that the loop reads as that result (a dense
    # layer over a sequence, a convolution: the GEMM is 2-D, its consumers are not): the loop
    # then runs over the GEMM's 2-D shape; id(reshape node) -> the reshape node
    gemm_views: dict = field(default_factory=dict)
    row_views: dict = field(default_factory=dict)  # id(operand) -> its View over the GEMM's 2-D loop
    name: str = ""
    index: int = -1
    body: tuple | None = None  # kind "scan": its body lowered on its own (compiler.lower_body)

    @property
    def all_nodes(self) -> list:
        head = [self.matmul] if self.matmul is not None else []
        return head + self.prelude + self.nodes + self.reductions

    def reads(self) -> list[Node]:
        """Materialized nodes this kernel reads (each once)."""
        return list({id(v.base): v.base for v in self.leaves.values()}.values())


def contiguous_strides(shape):
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= d
    return tuple(reversed(st))


class Fuser:
    def __init__(self, graph: Graph):
        self.g = graph
        self.users = graph.consumers()
        self.is_output = {id(o) for o in graph.outputs}
        self.group: dict[int, Kernel] = {}  # id(node) -> kernel computing it
        self.kernels: list[Kernel] = []
        self.views: dict[int, View | None] = {}

    # ---- views ---------------------------------------------------------------------------
    def try_view(self, n: Node) -> View | None:
        """The view through which ``n`` reads the storage of a materialized base (itself,
        unless ``n`` is a movement op), or None when that is not a strided view."""
        if n.opdef.kind != "movement" or id(n) in self._force_copy:
            return View(n, n.shape)
        src = self.view_of(n.inputs[0])
        x = n.inputs[0]
        if n.op == "reshape":
            if src.perm is None and src.size == (int(np.prod(x.shape)) if x.shape else 1):
                return View(src.base, n.shape)
            return None
        if n.op == "transpose":
            axes = tuple(n.attrs["axes"])
            return View(src.base, src.shape, axes if src.perm is None else tuple(src.perm[a] for a in axes))
        if n.op == "broadcast_to":
            pad = len(n.shape) - len(src.shape)
            perm = None if src.perm is None else tuple(range(pad)) + tuple(p + pad for p in src.perm)
            return View(src.base, (1,) * pad + tuple(src.shape), perm)
        return None

    def view_of(self, n: Node) -> View:
        """As try_view, but a movement node that is no view gets a copy kernel (and is then
        its own base)."""
        v = self.views.get(id(n))
        if v is None:
            v = self.try_view(n)
            if v is None:
                self._force_copy.add(id(n))
                v = View(n, n.shape)
            self.views[id(n)] = v
        return v

    # ---- grouping ------------------------------------------------------------------------
    def run(self) -> list[Kernel]:
        self._force_copy: set[int] = set()
        nodes = self.g.nodes
        # movement nodes that are outputs are materialized by copy kernels
        for n in nodes:
            if n.opdef.kind == "movement" and id(n) in self.is_output:
                self._force_copy.add(id(n))
                self.views[id(n)] = View(n, n.shape)
        for n in reversed(nodes):
            kind = n.opdef.kind
            if kind == "source":
                continue
            if kind == "movement":
                if id(n) in self._force_copy:
                    self._new(Kernel("copy", n.shape, nodes=[n], outputs=[n]), n)
                continue
            if kind == "elementwise":
                self._place_elementwise(n)
            elif kind == "reduction":
                k = self._new(Kernel("loop", n.inputs[0].shape, reductions=[n], outputs=[n]), n)
            elif kind == "matmul":
                self._place_matmul(n)
            elif kind == "structured":
                self._place_structured(n)
            elif n.op == "scan_out":  # a result of its scan's kernel
                continue
            elif n.op == "scan":  # a loop kept as one node: one kernel, its body lowered on its own
                for x in n.inputs:  # the loop reads each operand contiguously, in place
                    if not self.view_of(x).is_identity_for(x.shape):
                        self._force_copy.add(id(x))
                        self.views[id(x)] = View(x, x.shape)
                self._new(Kernel("scan", (n.attrs["length"],), nodes=[n],
                                 outputs=[u for u in self._users(n) if u.op == "scan_out"]), n)
                for u in self._users(n):
                    self.group[id(u)] = self.group[id(n)]
            else:
                raise CompileError(f"no native emitter for op {n.op!r} (node created at {n.src})")
        self._merge_shared()
        self._flatten_epilogues()
        # scalar prelude nodes (recomputed per kernel) are placed after groups are known
        order = {id(n): i for i, n in enumerate(nodes)}
        for k in self.kernels:
            self._collect_prelude(k, order)
            for lst in (k.prelude, k.nodes, k.reductions):
                lst.sort(key=lambda n: order[id(n)])
            k.outputs = sorted(dict.fromkeys(k.outputs), key=lambda n: order[id(n)])
            self._collect_leaves(k)
        return self.kernels

    def _new(self, k: Kernel, n: Node) -> Kernel:
        self.kernels.append(k)
        self.group[id(n)] = k
        return k

    def _users(self, n: Node) -> list[Node]:
        return self.users[id(n)]

    def _is_scalar_ew(self, n: Node) -> bool:
        return n.opdef.kind == "elementwise" and n.shape == ()

    def _place_elementwise(self, n: Node) -> None:
        users = self._users(n)
        is_out = id(n) in self.is_output
        if self._is_scalar_ew(n) and not is_out and users and all(
                u.opdef.kind in ("elementwise",) or self._is_scalar_ew(u) for u in users):
            return  # inlined into the prelude of each consumer kernel (see _collect_prelude)
        groups = {id(self.group.get(id(u))): self.group.get(id(u)) for u in users}
        if len(groups) == 1:
            k = next(iter(groups.values()))
            if k is not None and k.kind == "loop" and tuple(k.shape) == tuple(n.shape):
                if all(self.group.get(id(u)) is k and (u.opdef.kind == "elementwise" or u in k.reductions)
                       for u in users):
                    k.nodes.append(n)
                    self.group[id(n)] = k
                    if is_out:
                        k.outputs.append(n)
                    return
        k = self._new(Kernel("loop", n.shape, nodes=[n], outputs=[n]), n)
        # reductions of n that sit alone in their own kernel join this loop
        for u in users:
            r = self.group.get(id(u))
            if (r is not None and r is not k and u.opdef.kind == "reduction" and r.reductions == [u]
                    and not r.nodes and r.matmul is None and tuple(r.shape) == tuple(n.shape)):
                k.reductions.append(u)
                k.outputs.append(u)
                self.group[id(u)] = k
                self.kernels.remove(r)

    def _place_matmul(self, n: Node) -> None:
        for x in n.inputs:
            v = self.view_of(x)
            if v.view_shape != x.shape or (v.perm not in (None, (1, 0))) or len(v.shape) != 2:
                # broadcast or oddly strided operand: BLAS needs it materialized
                self._force_copy.add(id(x))
                self.views[id(x)] = View(x, x.shape)
        users = self._users(n)
        ks = {id(self.group.get(id(u))): self.group.get(id(u)) for u in users}
        if len(ks) == 1 and id(n) not in self.is_output:
            k = next(iter(ks.values()))
            if (k is not None and k.kind == "loop" and k.matmul is None and tuple(k.shape) == tuple(n.shape)
                    and all(u in k.nodes for u in users)):
                k.matmul = n
                self.group[id(n)] = k
                return
        # the GEMM's only reader is a reshape of it (rows split into leading dims) whose readers
        # all sit in one loop of that shape: that loop becomes the GEMM's epilogue and runs over
        # the GEMM's 2-D shape (checked, and undone if its other operands cannot follow, in run)
        if len(users) == 1 and users[0].op == "reshape" and id(n) not in self.is_output:
            r = users[0]
            rk = {id(self.group.get(id(u))): self.group.get(id(u)) for u in self._users(r)}
            k = next(iter(rk.values())) if len(rk) == 1 else None
            if (k is not None and k.kind == "loop" and k.matmul is None and not k.reductions
                    and id(r) not in self.is_output and tuple(k.shape) == tuple(r.shape)
                    and r.shape and r.shape[-1] == n.shape[-1] and all(u in k.nodes for u in self._users(r))):
                k.matmul, k.gemm_views = n, {id(r): r}
                self.group[id(n)] = k
                return
        self._new(Kernel("matmul", n.shape, matmul=n, outputs=[n]), n)

    def _merge_shared(self) -> None:
        """Merge a loop whose results are also read by other kernels into the loop of its shape
        that reads them elementwise, which then writes them for the others; then a bare GEMM
        whose readers all sit in one loop becomes that loop's prologue. Greedy placement cannot
        see this (a value joins a loop only when every reader is in it): when K training steps
        are unrolled, an optimizer moment is read by the same step's update and by the next
        step's, which would otherwise split each update into several loops and a bare GEMM. A
        merge is made only where the kernel graph stays acyclic."""
        plain = self._mergeable
        succ = self._kernel_succ()
        pred: dict[int, set] = {id(k): set() for k in self.kernels}
        by_id = {id(k): k for k in self.kernels}
        pos = {id(k): i for i, k in enumerate(self.kernels)}  # program order, not address: the
        for k in self.kernels:                               # same merges in every process
            for s in succ[id(k)]:
                pred[s].add(id(k))
        merged = True
        while merged:  # a merge can enable another (the merged loop reads more)
            merged = False
            for a in list(self.kernels):
                if not plain(a) or a.matmul is not None or {id(o) for o in a.outputs} & self.is_output:
                    continue
                merged |= self._merge_into_reader(a, succ, pred, by_id, pos)
        for m in [k for k in self.kernels if k.kind == "matmul"]:
            n = m.matmul
            readers = self._users(n)
            ks = {id(self.group.get(id(u))): self.group.get(id(u)) for u in readers}
            if len(ks) != 1 or id(n) in self.is_output:
                continue
            k = next(iter(ks.values()))
            if (k is not None and plain(k) and k.matmul is None and tuple(k.shape) == tuple(n.shape)
                    and all(u in k.nodes for u in readers)):
                k.matmul = n
                self.group[id(n)] = k
                self.kernels.remove(m)

    @staticmethod
    def _mergeable(k: Kernel) -> bool:
        """A loop that may take part in a merge (a scalar loop's prelude may read what a merge
        would move into its body)."""
        return k.kind == "loop" and bool(k.shape) and not k.gemm_views and not k.reductions

    def _merge_into_reader(self, a: Kernel, succ: dict, pred: dict, by_id: dict, pos: dict) -> bool:
        """Merge loop ``a`` into one of its readers if one qualifies (see _merge_shared), trying
        them in program order (``pos``); ``succ``/``pred`` (the kernel graph by id) are updated
        in place."""
        for bid in sorted(succ[id(a)], key=pos.__getitem__):
            b = by_id[bid]
            if (not self._mergeable(b) or tuple(b.shape) != tuple(a.shape) or not self._reads_elementwise(b, a)
                    or self._path_avoiding(succ, id(a), bid)):
                continue
            b.nodes.extend(a.nodes)
            b.outputs.extend(a.outputs)
            for x in a.nodes:
                self.group[id(x)] = b
            self.kernels.remove(a)
            for s in succ.pop(id(a)):  # b inherits a's edges
                pred[s].discard(id(a))
                if s != bid:
                    succ[bid].add(s)
                    pred[s].add(bid)
            for p_ in pred.pop(id(a)):
                succ[p_].discard(id(a))
                succ[p_].add(bid)
                pred[bid].add(p_)
            return True
        return False

    def _kernel_succ(self) -> dict:
        """id(kernel) -> ids of the kernels reading something it computes."""
        succ: dict[int, set] = {}
        for k in self.kernels:
            outs: dict[int, Kernel] = {}
            stack = [u for x in k.all_nodes for u in self._users(x)]
            seen: set[int] = set()
            while stack:
                u = stack.pop()
                if id(u) in seen:
                    continue
                seen.add(id(u))
                r = self.group.get(id(u))
                if r is None:  # a view (or an inlined scalar): its readers read k's storage
                    stack.extend(self._users(u))
                elif r is not k:
                    outs[id(r)] = r
            succ[id(k)] = set(outs)
        return succ

    @staticmethod
    def _path_avoiding(succ: dict, a: int, b: int) -> bool:
        """Whether kernel ``b`` is reachable from kernel ``a`` through some other kernel
        (merging a into b would then make a cycle); kernels by id."""
        stack = [k for k in succ[a] if k != b]
        seen: set[int] = set()
        while stack:
            k = stack.pop()
            if k == b:
                return True
            if k in seen:
                continue
            seen.add(k)
            stack.extend(succ[k])
        return False

    def _reads_elementwise(self, k: Kernel, src: Kernel) -> bool:
        """Whether every read of ``src``'s results by ``k`` is by an elementwise node of k at
        the same shape through the identity view (what k computes in place once merged)."""
        inside = {id(x) for x in src.all_nodes}
        mine = {id(x) for x in k.all_nodes}
        nodes = {id(x) for x in k.nodes}
        for x in k.all_nodes:
            for i in x.inputs:
                if id(i) in mine or self.group.get(id(i)) is None and i.opdef.kind != "movement":
                    continue  # computed in k, or an inlined scalar
                base = i if id(i) in inside else self.view_of(i).base
                if id(base) not in inside:
                    continue
                if (i is not base or id(x) not in nodes or x.opdef.kind != "elementwise"
                        or tuple(i.shape) != tuple(k.shape)):
                    return False  # read through a view, by the GEMM, or at another shape
        return True

    def _rows_view(self, v: View, rows_shape: tuple, gemm_shape: tuple) -> View | None:
        """View ``v`` of an operand of a loop over ``rows_shape``, re-expressed for the same loop
        run over ``gemm_shape`` (the rows flattened), or None when it cannot be."""
        if v.perm is not None:
            return None
        if tuple(v.shape) == tuple(rows_shape):
            return View(v.base, gemm_shape)
        if v.size == 1:
            return v
        inner = tuple(v.shape)
        while inner and inner[0] == 1:
            inner = inner[1:]
        if len(inner) == 1 and inner[0] == gemm_shape[-1] and len(v.shape) <= len(rows_shape):
            return View(v.base, (1, inner[0]))  # broadcast along the rows: a bias
        return None

    def _flatten_epilogues(self) -> None:
        """Loops taken as the epilogue of a GEMM through a reshape run over the GEMM's shape;
        one whose operands cannot be read that way gives the GEMM back to a kernel of its own."""
        for k in list(self.kernels):
            if not k.gemm_views:
                continue
            mm = k.matmul
            inside = {id(n) for n in k.all_nodes} | set(k.gemm_views)
            srcs = {id(x): x for n in k.prelude + k.nodes for x in n.inputs if id(x) not in inside}
            views = {}
            for nid, x in srcs.items():
                if x.shape == ():
                    continue
                v = self._rows_view(self.view_of(x), tuple(k.shape), tuple(mm.shape))
                if v is None:
                    views = None
                    break
                views[nid] = v
            if views is None or len(k.nodes) == 0:
                k.matmul, k.gemm_views = None, {}
                self._new(Kernel("matmul", mm.shape, matmul=mm, outputs=[mm]), mm)
                continue
            k.shape = tuple(mm.shape)
            k.row_views = views

    def _place_structured(self, n: Node) -> None:
        rule = n.opdef.structured
        kind = rule.kernel
        if rule.contiguous_operands:  # a transposed or broadcast operand is materialized first
            for x in n.inputs:
                if not self.view_of(x).is_identity_for(x.shape):
                    self._force_copy.add(id(x))
                    self.views[id(x)] = View(x, x.shape)
        for k in self.kernels:
            if k.kind == kind and k.nodes[0].inputs == n.inputs and k.nodes[0].attrs == n.attrs:
                k.nodes.append(n)
                k.outputs.append(n)
                self.group[id(n)] = k
                return
        self._new(Kernel(kind, n.inputs[0].shape, nodes=[n], outputs=[n]), n)

    def _collect_prelude(self, k: Kernel, order) -> None:
        """Pull the inlined scalar elementwise ancestors of k's nodes into its prelude."""
        seen: set[int] = set()
        stack = [x for n in k.all_nodes for x in n.inputs]
        while stack:
            x = stack.pop()
            if id(x) in seen or id(x) in self.group or x.opdef.kind != "elementwise":
                continue
            seen.add(id(x))
            k.prelude.append(x)
            stack.extend(x.inputs)

    def _collect_leaves(self, k: Kernel) -> None:
        inside = {id(n) for n in k.all_nodes}
        if k.kind == "copy":
            (n,) = k.nodes
            x = n.inputs[0]
            if n.op == "reshape":
                k.shape = x.shape
                k.leaves[id(x)] = self.view_of(x)
            else:
                self._force_copy.discard(id(n))
                k.leaves[id(n)] = self.try_view(n)
                self._force_copy.add(id(n))
            return
        else:
            srcs = [x for n in k.all_nodes for x in n.inputs if id(x) not in inside]
        rows = k.row_views
        for x in srcs:
            if id(x) in k.gemm_views:  # the GEMM's result, read in place by the epilogue
                k.leaves[id(x)] = View(k.matmul, tuple(k.matmul.shape))
            elif id(x) not in k.leaves:
                k.leaves[id(x)] = rows.get(id(x)) or self.view_of(x)


def fuse(graph: Graph) -> list[Kernel]:
    """Group a specialized graph's nodes into kernels (unordered; see schedule.plan)."""
    f = Fuser(graph)
    f.run()
    # copy kernels created lazily by view resolution (movement chains that are not views)
    pending = [nid for nid in f._force_copy if nid not in f.group]
    by_id = {id(n): n for n in graph.nodes}
    while pending:
        for nid in pending:
            n = by_id[nid]
            k = Kernel("copy", n.shape, nodes=[n], outputs=[n])
            f.kernels.append(k)
            f.group[nid] = k
            f._collect_leaves(k)
        pending = [nid for nid in f._force_copy if nid not in f.group]
    from ..logs import log_fusion
    log_fusion(f.kernels)  # GRAPHC_LOG=fusion: one line per kernel made
    return f.kernels
