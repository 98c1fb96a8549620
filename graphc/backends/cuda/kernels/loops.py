"""Elementwise loops and loops with reductions (kind "loop"), and copies (kind "copy")."""
from __future__ import annotations

from ....ir import Node
from ....schedule.fusion import Kernel, View, contiguous_strides
from ...base import numel
from ...expr import node_expr, reduce_init, reduce_step
from ..launch import Fn, Hosted, Launch, dtname
from .common import decompose, leaf_index


class LoopText:
    """The text of one loop kernel's element: value names, loads, stores. Parameters are taken
    from ``fn`` at first use, so two kernels of the same structure get the same text whatever
    the order of their leaves (every parameter's optimizer update is one function). ``subst``
    maps a node (by id) to the text that stands for its value at the current element (a GEMM
    epilogue reads the GEMM's accumulator, a bias update the column sum just computed);
    ``vp`` prefixes the value names and ``idx`` is the flat element index (two loops in one
    function)."""

    def __init__(self, em: "Emitter", k: Kernel, fn: "Fn", subst: dict | None = None, vp: str = "v",
                 idx: str = "i"):
        self.em, self.k, self.fn, self.subst, self.vp, self.idx = em, k, fn, dict(subst or {}), vp, idx
        L = tuple(k.shape)
        self.L, self.r = L, len(L)
        used = {id(x) for n in k.prelude + k.nodes + k.reductions for x in n.inputs}
        self.leaves = {nid: v for nid, v in k.leaves.items() if nid in used}
        if k.matmul is not None and id(k.matmul) in used:  # the prologue GEMM's result, read in place
            self.leaves[id(k.matmul)] = View(k.matmul, k.matmul.shape)
        flat = all(v.size == 1 or v.is_identity_for(L) for v in self.leaves.values())
        axes_sets = {tuple(sorted(rd.attrs["axes"])) for rd in k.reductions}
        if not k.reductions:
            self.mode = "ew"
        elif len(axes_sets) == 1 and self.r > 0:
            self.mode = "block"
        else:
            self.mode = "serial"
        self.red_axes = next(iter(axes_sets)) if self.mode == "block" else ()
        all_reduced = self.mode == "block" and set(self.red_axes) == set(range(self.r))
        self.flat_index = flat and (self.mode == "ew" or all_reduced)
        self.names: dict[int, str] = {}
        self.vmap: list[str] = []
        self._arena: dict[int, tuple[str, str]] = {}

    def _slot(self, n: Node) -> tuple[str, str]:
        if id(n) not in self._arena:
            w = self.em.where(n)
            self._arena[id(n)] = (self.fn.arr(w[1]), self.fn.int(w[2]))
        return self._arena[id(n)]

    def load(self, x: Node) -> str:
        nid = id(x)
        if nid in self.names:
            return self.names[nid]
        v = self.leaves[nid]
        if id(v.base) in self.subst:
            return self.subst[id(v.base)]
        w = self.em.where(v.base)
        if w[0] == "literal":
            self.names[nid] = w[1]
            return w[1]
        if w[0] == "scalar":
            self.names[nid] = self.fn.scalar(w[1], v.base.dtype)
            return self.names[nid]
        arr, off = self._slot(v.base)
        if v.size == 1:
            return f"{arr}[{off}]"
        return f"{arr}[{off} + {self.idx if self.flat_index else leaf_index(v, self.L)}]"

    def _fresh(self, n: Node) -> str:
        nm = f"{self.vp}{len(self.vmap)}"
        self.names[id(n)] = nm
        self.vmap.append(f"{nm}={self.em.site(n)}")
        return nm

    def prelude(self, ind: str) -> list[str]:
        lines = []
        for n in self.k.prelude:
            ops = [self.load(x) for x in n.inputs]
            lines.append(f"{ind}{self._fresh(n)} = {node_expr(n, ops)}  # {n.op} (prelude)")
        return lines

    def element(self, ind: str) -> list[str]:
        lines = []
        for n in self.k.nodes:
            ops = [self.load(x) for x in n.inputs]
            lines.append(f"{ind}{self._fresh(n)} = {node_expr(n, ops)}  # {n.op}")
        return lines

    def stores(self, ind: str) -> list[str]:
        """Last: an in-place output reads its operand first."""
        out = []
        for o in self.k.outputs:
            if o in self.k.reductions:
                continue
            arr, off = self._slot(o)
            out.append(f"{ind}{arr}[{off} + {self.idx}] = {self.names[id(o)]}  # store {o.op}")
        return out

    def reds(self) -> list[tuple[Node, str, str]]:
        return [(rd, *self._slot(rd)) for rd in self.k.reductions]


def loop_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    lp = em.lp
    fn = Fn()
    t = LoopText(em, k, fn)
    L, r, mode, red_axes = t.L, t.r, t.mode, t.red_axes
    n_total = numel(L)
    body = t.prelude("    ")  # scalars: recomputed by every thread

    Lst = contiguous_strides(L)

    def flat_of(dims) -> str:
        terms = [f"i{d}" if Lst[d] == 1 else f"i{d} * {Lst[d]}" for d in dims if L[d] != 1]
        return " + ".join(terms) or "0"

    # loop extents are arguments (o<k>), never literals: with the batch dimension leading
    # (the usual case) the text of a kernel does not depend on the batch size, so another
    # batch size imports the same kernel modules (strides and index moduli stay literals:
    # they involve only the trailing dims, and a division by a constant is cheaper)
    ew = None
    if mode == "ew":
        ntot = fn.int(n_total)
        head = f"    for i in range(cuda.grid(1), {ntot}, cuda.gridsize(1)):"
        inner = [] if t.flat_index else decompose("i", list(range(r)), L, "        ")
        inner += t.element("        ") + t.stores("        ")
        ew = (list(body), ntot, inner)  # what a multi-tensor launch of this function re-uses
        body += [head] + inner
        grid = max(1, min(-(-n_total // lp.block), lp.max_grid))
        block = lp.block
    elif mode == "block":
        kept = [d for d in range(r) if d not in red_axes]
        nk, nr = numel([L[d] for d in kept]), numel([L[d] for d in red_axes])
        for j, rd in enumerate(k.reductions):
            body.insert(0, f"    sh{j} = cuda.shared.array({lp.block}, numba.{dtname(rd.dtype)})")
        body += ["    t = cuda.threadIdx.x",
                 f"    for b in range(cuda.blockIdx.x, {fn.int(nk)}, cuda.gridDim.x):"]
        if not t.flat_index:
            body += decompose("b", kept, L, "        ")
        for j, rd in enumerate(k.reductions):
            body.append(f"        acc{j} = {reduce_init(rd.op, rd.dtype)}  # {rd.op}")
        body.append(f"        for {'i' if t.flat_index else 'j'} in range(t, {fn.int(nr)}, {lp.block}):")
        if not t.flat_index:
            body += decompose("j", list(red_axes), L, "            ")
            body.append(f"            i = {flat_of(range(r))}")
        body += t.element("            ")
        for j, rd in enumerate(k.reductions):
            body.append(f"            acc{j} = {reduce_step(rd.op, f'acc{j}', t.load(rd.inputs[0]))}  # {rd.op}")
        body += t.stores("            ")
        for j, _ in enumerate(k.reductions):
            body.append(f"        sh{j}[t] = acc{j}")
        body += ["        cuda.syncthreads()", f"        s = {lp.block // 2}", "        while s > 0:",
                 "            if t < s:"]
        for j, rd in enumerate(k.reductions):
            body.append(f"                sh{j}[t] = {reduce_step(rd.op, f'sh{j}[t]', f'sh{j}[t + s]')}")
        body += ["            cuda.syncthreads()", "            s //= 2", "        if t == 0:"]
        for j, (rd, arr, off) in enumerate(t.reds()):
            body.append(f"            {arr}[{off} + b] = sh{j}[0]  # {rd.op} (tree)")
        for q, e in enumerate(hosted.epi):  # elementwise loops over the sums, by the thread that wrote them
            et = LoopText(em, e, fn, vp=f"e{q}v", idx="b")
            # its scalar prelude here too: it may read the sums (a loop over one element)
            body += et.prelude("            ") + et.element("            ") + et.stores("            ")
            t.vmap += ["then:"] + et.vmap
        body.append("        cuda.syncthreads()")
        grid, block = max(1, min(nk, lp.max_grid)), lp.block
    else:  # serial fallback: one thread, reductions accumulate in place (CPU order)
        body.append("    if cuda.grid(1) == 0:")
        ind = "        "
        for rd, arr, off in t.reds():
            body += [f"{ind}for q in range({fn.int(numel(rd.shape))}):",
                     f"{ind}    {arr}[{off} + q] = {reduce_init(rd.op, rd.dtype)}  # {rd.op} init"]
        for d in range(r):
            body.append(f"{ind}for i{d} in range({fn.int(L[d])}):")
            ind += "    "
        body.append(f"{ind}i = {flat_of(range(r))}")
        body += t.element(ind)
        for rd, arr, off in t.reds():
            kept = [d for d in range(r) if d not in rd.attrs["axes"]]
            kst = contiguous_strides(tuple(L[d] for d in kept))
            terms = [f"i{d} * {s}" for d, s in zip(kept, kst) if L[d] != 1]
            tgt = f"{arr}[{off} + {' + '.join(terms) or '0'}]"
            body.append(f"{ind}{tgt} = {reduce_step(rd.op, tgt, t.load(rd.inputs[0]))}  # {rd.op}")
        body += t.stores(ind)
        grid, block = 1, 1
    name = em.function(fn, body, f"{mode}")
    ln = Launch(k.name, "kernel", name, grid, block, fn.args(), comment=" ".join(t.vmap))
    ln.src = (fn, body, mode)
    ln.ew = ew
    return ln


def copy_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    (n,) = k.nodes
    (v,) = k.leaves.values()
    L = tuple(k.shape)
    fn = Fn()
    wo = em.where(n)
    oarr, ooff = fn.arr(wo[1]), fn.int(wo[2])
    wi = em.where(v.base)
    flat = v.is_identity_for(L) or v.size == 1
    if wi[0] == "literal":
        src = wi[1]
    elif wi[0] == "scalar":
        src = fn.scalar(wi[1], v.base.dtype)
    else:
        iarr, ioff = fn.arr(wi[1]), fn.int(wi[2])
        src = f"{iarr}[{ioff}]" if v.size == 1 else f"{iarr}[{ioff} + {'i' if flat else leaf_index(v, L)}]"
    total = numel(L)
    body = [f"    for i in range(cuda.grid(1), {fn.int(total)}, cuda.gridsize(1)):"]
    if not flat:
        body += decompose("i", list(range(len(L))), L, "        ")
    body.append(f"        {oarr}[{ooff} + i] = {src}  # {n.op} (copy)")
    name = em.function(fn, body, "copy")
    grid = max(1, min(-(-total // em.lp.block), em.lp.max_grid))
    return Launch(k.name, "kernel", name, grid, em.lp.block, fn.args(), comment=em.site(n),
                  src=(fn, body, "copy"))


# ---- the text of merged launches (merge.multi_tensor, merge.fold_tiny name them) ----------------

def multi_tensor_launch(em, group: list) -> Launch:
    """One launch of ``group``'s common elementwise function over all their elements: a
    device table holds, per chunk of at most ``lp.chunk`` elements of one launch's loop,
    that launch's integer arguments (offsets, extents) and the chunk's bounds; a block
    strides over the chunks. Offsets are read from the table rather than the store being
    re-laid out into one arena in parameter order, so the store, checkpoints and every
    other program on it stay as they are."""
    fn0, _, _ = group[0].src
    pre, ntot, inner = group[0].ew
    names = [p for p, _ in fn0.ints]
    n, ti = len(names), names.index(ntot)
    ch = em.lp.chunk
    rows = []
    for ln in group:
        vals = [a[1] for a in ln.args if a[0] == "int"]
        for lo in range(0, vals[ti], ch):
            rows += vals + [lo, min(lo + ch, vals[ti])]
    nrows = len(rows) // (n + 2)
    fn = Fn(ip="m")
    fn.arrays = list(fn0.arrays) + ([] if "T_int64" in fn0.arrays else ["T_int64"])
    tab, nch = fn.int(em.table(rows)), fn.int(nrows)
    fn.scalars = list(fn0.scalars)
    body = [f"    for c in range(cuda.blockIdx.x, {nch}, cuda.gridDim.x):  # one chunk of one launch per block",
            f"        r = {tab} + c * {n + 2}"]
    body += [f"        {p} = T_int64[r + {j}]" for j, p in enumerate(names)]
    body += [f"        lo = T_int64[r + {n}]", f"        hi = T_int64[r + {n + 1}]"]
    body += ["    " + ln for ln in pre]
    body += ["        for i in range(lo + cuda.threadIdx.x, hi, cuda.blockDim.x):"]
    body += ["    " + ln for ln in inner]
    name = em.function(fn, body, "multi")
    return Launch("", "kernel", name, max(1, min(nrows, em.lp.max_grid)), em.lp.block, fn.args(),
                  comment=f"multi-tensor apply of {len(group)} launches of {group[0].function} "
                  f"({nrows} chunks): " + group[0].comment, src=(fn, body, "multi"))


def fold_launch(em, x: Launch, y: Launch, barrier: bool = False) -> Launch:
    """Launch ``y`` with one-element loop ``x.tiny`` run first by thread 0 of block 0, under
    names of its own (``barrier``: then a barrier, before anything in ``y`` reads it)."""
    f = y.folds
    xfn = Fn(ip=f"f{f}o", sp=f"f{f}s")  # its own parameter and value names inside y's function
    t = LoopText(em, x.tiny, xfn, vp=f"f{f}v", idx="0")
    lines = t.prelude("        ") + t.element("        ") + t.stores("        ")
    yfn, ybody, tag = y.src
    fn = Fn()
    fn.arrays = yfn.arrays + [a for a in xfn.arrays if a not in yfn.arrays]
    fn.ints, fn.scalars = yfn.ints + xfn.ints, yfn.scalars + xfn.scalars
    guard = ("    if (cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0 and cuda.blockIdx.x == 0 and "
             f"cuda.blockIdx.y == 0 and cuda.blockIdx.z == 0):  # folded in: {x.name}")
    body = [guard] + lines + (["    cuda.syncthreads()  # before anything reads it"] if barrier else []) + ybody
    name = em.function(fn, body, tag)
    return Launch("", "kernel", name, y.grid, y.block, fn.args(),
                  comment=f"{y.comment} | folded in: {x.comment}", src=(fn, body, tag))
