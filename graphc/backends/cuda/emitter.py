"""CUDA code generation (target="cuda"): numba.cuda kernels from the same Kernel descriptions
the CPU backend uses (graphc/schedule/fusion.py), run on device-resident buffers.

Memory. Parameters and optimizer state live in a device mirror of the Store's arenas (one
device array per dtype, shared by every program on that store: :class:`DeviceStore`); the
Store's host arenas are refreshed only when something on the host reads them (``params``,
``state_dict``, a cpu program sharing the store) and pushed back before the next device step
if the host may have written them. Each program owns one device scratch arena per dtype laid
out exactly as the buffer plan says, with the constants after it and a region per batch feed
after those. A step copies in only the batch feeds and copies out only the user outputs.

Kernels. Every kernel takes whole arenas (``S_<dtype>`` store, ``T_<dtype>`` scratch) plus
integer offsets and loop extents, so identical kernels (e.g. the optimizer update of every
parameter) are one function, compiled once. Each function is a module of its own, named by the
hash of its text (which names no node; the driver's comments name nodes by graph position), so
another batch size or a forward function sharing the weights imports the same modules and, on
a GPU, reuses their compiled code (Numba's cache across processes):

- elementwise loops: a grid-stride loop over the flat iteration space; the loop indices are
  decomposed from the flat index only when a leaf is broadcast or transposed;
- loops with reductions (all reducing the same axes): one block per output element
  (grid-stride over outputs), threads stride over the reduced elements, then a shared-memory
  tree. Deterministic: no atomics, the summation order depends only on the launch
  configuration, which is fixed per program. Mixed reduction axes in one kernel fall back to
  a single-thread loop (correct, slow, rare);
- softmax-cross-entropy + its gradient: one block, a thread per row, the mean loss by a tree;
- GEMMs (matmul kernels and loop prologues): cuBLAS through CuPy (``cupy.matmul(out=)`` on
  arrays wrapped once, zero-copy through ``__cuda_array_interface__``) when CuPy is
  importable. Without CuPy a register-tiled numba.cuda GEMM is used: a FALLBACK, roughly 10x
  slower than cuBLAS on large shapes (a 32x32 tiled numba SGEMM ran at 4.6 TFLOP/s vs
  cuBLAS 51.6 on an H100); install the ``cuda`` extra for real use. A batched GEMM (kind
  ``bmm``) is one ``cupy.matmul`` on 3-D views (a transposed operand is a swapaxes view), or
  the fallback with the batch on ``blockIdx.z``;
- im2col and pooling: a thread per output element; their adjoints (col2im, pool2d_grad): a
  thread per input pixel gathering from the output positions whose window covers it, in the
  cpu kernel's order (no atomics: deterministic). Window geometry and extents are arguments.

Launches. Launch configurations and argument tuples are bound once per program (re-bound only
if the device store is reallocated or a scalar feed such as a hyper-parameter changes); a
step is a Python loop over prepared ``(launcher, args)`` pairs. ``kernel_listing()`` reports
the launches per step, each named after the scheduled kernels it runs (``k8.gemm+k8+k4+k5``).

Fewer launches. Small steps are launch-bound on a GPU, so the schedule's launches are merged
(``MERGES``; ``GRAPHC_CUDA_MERGE=none`` or a subset turns them off, the reference the tests
compare against):

- ``epilogue``: on the fallback GEMM, a loop's elementwise epilogue runs on each thread's output
  tile, reading the accumulator (the GEMM's result is never stored; a convolution's loop reads
  it through the GEMM's reshape, Kernel.gemm_views). On both paths, elementwise loops over a
  block reduction's sums (a mean's division, batch normalization's statistics) that write
  scratch run in the reduction's kernel, by the thread that wrote the sums, and one over a
  pooling (gradient) output (the relu gradient after max pooling's) in that kernel's thread,
  on the element just stored;
- ``colsum``: a bias gradient ``sum(g, 0)`` whose ``g`` a later fallback GEMM reads as B
  (``dW = h^T @ g``) is summed by that GEMM's first row of tiles, a thread per column, in K
  order (``g`` may be a convolution's (N, H, W, C) output gradient read as (N*H*W, C): then the
  sum over N, H, W); else, when ``g`` is the softmax-CE gradient, by the (one-block) softmax-CE
  kernel after a barrier. The bias update that is its only reader runs on the sum in the same thread;
- ``multi``: launches of one elementwise function with no memory dependence between them
  (every parameter's optimizer update) are one launch at the place of the last: an int64
  table in the scratch arena holds per chunk the original launch's integer arguments and
  the chunk's bounds, a block per chunk. The scratch operands of in-place update loops (the
  gradients) get regions of their own, so the plan's reuse of dead buffers does not pin an
  update to its gradient;
- ``fold``: a one-element kernel (the step counter ``t + 1``) runs, guarded to thread 0 of
  block 0, inside the first launch that reads it if that is the softmax-CE kernel (a barrier
  follows), else inside the last launch before that one.

Every move is checked on element ranges: work moved past a launch must not write what that
launch reads or writes, nor read what it writes; work merged into one launch must be
independent the same way (except the column sum feeding its update, in one thread). A 2-layer
MLP step (Adam) is 6 launches on the fallback GEMM (15 unmerged) and 10 with cuBLAS (5 GEMMs,
which take no epilogue, + 5 kernels); a two-conv CNN step 16 (29) and 21 (29), with batch norm
and dropout 36 (51) and 38 (51), a one-block attention step 26 (45) and 33 (45)
(tests/cuda/test_cuda_launches_conv.py). Generated locals never look like parameters (``o<k>``,
``s<k>``, ``v<k>``...): work from another kernel may run inside a function.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np

from ...errors import CompileError
from ...ir import Graph, Node
from ...schedule.fusion import Kernel
from ...schedule.plan import Plan
from ...store import aligned
from ..base import FunctionTable, KernelInfo, local_names, numel as _size, out_bytes, site
from ..expr import literal
from . import gemm
from .compat import numba_cuda, simulator_active
from .kernels import conv, indexing, loops, rng, sce, slicing
from .kernels.loops import LoopText
from .launch import REAL, SIM, CudaModule, Fn, Hosted, Launch, LaunchParams, dtname, launch_params

__all__ = ["REAL", "SIM", "CudaModule", "Launch", "LaunchParams", "launch_params", "KERNELS", "MERGES",
           "merge_option", "emit_module", "emit_for", "compile_ptx"]



class _Emitter:
    def __init__(self, plan: Plan, graph: Graph, layout: dict, feeds: list[Node], lp: LaunchParams,
                 use_cublas: bool, merge: frozenset = frozenset()):
        self.plan, self.graph, self.layout, self.lp = plan, graph, layout, lp
        self.use_cublas = use_cublas
        self.merge = merge  # which launch merges to make (MERGES)
        self.tables: list = []
        self.relocated: dict[int, int] = {}  # id(node) -> its own offset in the scratch arena (_relocate)
        self._col_fp: tuple = ([], [])
        # id(reduction kernel) -> the loops it runs on its sums (_plan_red_epilogues)
        self._red_epi: dict[int, list] = {}
        self._epi_as: dict[int, Kernel] = {}  # id(such a loop) -> what of it runs there (its sums moved away)
        self.functions = FunctionTable()
        self.local = local_names(graph)  # nodes named by graph position: one text in every process
        self.launches: list[Launch] = []
        self.infos: list[KernelInfo] = []
        self.deco = "@cuda.jit" if simulator_active() else "@cuda.jit(cache=True)"
        # device scratch arena: plan arena (scratch + consts), then one region per batch feed
        self.scratch_sizes = {np.dtype(dt): int(n) for dt, n in plan.arena_sizes.items()}
        self.feed_offsets: dict[str, tuple] = {}
        for n in feeds:
            if n.shape == ():
                continue
            dt = np.dtype(n.dtype)
            off = aligned(self.scratch_sizes.get(dt, 0), dt)
            self.feed_offsets[n.name] = (dt, off, _size(n.shape))
            self.scratch_sizes[dt] = off + _size(n.shape)

    # ---- where a node lives ------------------------------------------------------------------
    def where(self, n: Node):
        """("arena", key, offset) | ("literal", text) | ("scalar", feed name)."""
        b = self.plan.buffers[id(n)]
        if b.kind == "literal":
            return ("literal", literal(b.value, b.dtype))
        if b.kind == "feed":
            if n.shape == ():
                return ("scalar", b.name)
            dt, off, _ = self.feed_offsets[b.name]
            return ("arena", f"T_{dtname(dt)}", off)
        if b.kind == "store":
            dt, off, _ = self.layout[b.name]
            return ("arena", f"S_{dtname(dt)}", off)
        if b.kind == "scratch" and id(n) in self.relocated:
            return ("arena", f"T_{dtname(b.dtype)}", self.relocated[id(n)])
        if b.kind in ("scratch", "const"):
            return ("arena", f"T_{dtname(b.dtype)}", b.offset)
        raise AssertionError(b.kind)

    def function(self, fn: Fn, body: list[str], tag: str) -> str:
        name = self.functions.add(self.deco, fn.params(), body, tag)
        return name

    def site(self, n: Node) -> str:
        return site(n, self.local)

    # ---- fewer launches --------------------------------------------------------------------------------
    def _ranges(self, nodes) -> list:
        """(arena, first, end) element ranges of the materialized ``nodes`` in device memory."""
        out = []
        for n in nodes:
            if id(n) not in self.plan.buffers:
                continue
            w = self.where(n)
            if w[0] == "arena":
                out.append((w[1], w[2], w[2] + _size(n.shape)))
        return out

    def _footprint(self, k: Kernel) -> tuple[list, list]:
        """What kernel ``k`` reads (every operand's whole storage) and writes."""
        return self._ranges({id(v.base): v.base for v in k.leaves.values()}.values()), self._ranges(k.outputs)

    def _gemm_reads(self, k: Kernel) -> list:
        """The storage k's prologue GEMM reads (its operands may be views: their bases)."""
        return self._ranges([k.leaves[id(x)].base for x in k.matmul.inputs])

    @staticmethod
    def _clash(a: tuple, b: tuple) -> bool:
        """Whether work with footprint ``a`` (reads, writes) and work ``b`` depend on each other
        through memory (so neither may move past the other, nor may both run in one launch)."""
        def hit(xs, ys):
            return any(x[0] == y[0] and x[1] < y[2] and y[1] < x[2] for x in xs for y in ys)
        return hit(a[1], b[0] + b[1]) or hit(a[0], b[1])

    def _epilogue_ok(self, k: Kernel, fp: tuple) -> bool:
        """A loop whose prologue GEMM it reads at the same element only, with no reductions, and
        writing nothing the GEMM reads, can run on the GEMM's output tiles."""
        t = LoopText(self, k, Fn())
        if t.mode != "ew" or any(v.base is k.matmul and not v.is_identity_for(k.matmul.shape)
                                 for v in t.leaves.values()):
            return False
        return not self._clash((self._gemm_reads(k), []), (fp[0], fp[1]))

    @staticmethod
    def _leading_axes(shape: tuple, kn: tuple) -> tuple | None:
        """The leading axes of ``shape`` that a row-major reshape to ``kn = (K, N)`` folds into
        K (so a sum over them is the column sum of the (K, N) view), or None."""
        for j in range(1, len(shape)):
            if _size(shape[:j]) == kn[0] and _size(shape[j:]) == kn[1]:
                return tuple(range(j))
        return None

    def _plan_colsums(self, ks: list, fp: dict) -> tuple[dict, dict, dict]:
        """Bias gradients folded into a kernel that has the operand at hand: a column sum
        ``rd = sum(x, axis=0)`` of a 2-D ``x`` is computed by a later fallback GEMM ``G`` that
        reads ``x`` as its B operand (``dW = h^T @ x``: its first row of tiles), or by the
        softmax-CE kernel that writes ``x`` (its gradient; after its rows, one thread per
        column), and the elementwise loop ``U`` that is rd's only reader (the bias update)
        runs there too, on the sum just computed. Each move is checked against the memory
        every launch in between reads and writes (the plan reuses dead buffers), and against
        the host's own work (they run in one launch). Returns {id(G): (rd, U, store)},
        {id(kernel): ids of the reductions it loses}, {id(U): index of G}."""
        col, drop, absorbed, taken = {}, {}, {}, set()
        readers: dict[int, list[int]] = {}
        for i, k in enumerate(ks):
            for v in k.leaves.values():
                readers.setdefault(id(v.base), []).append(i)
        # GEMM hosts first: a bias update the dW GEMM runs keeps the step counter out of the
        # softmax-CE kernel (see _fold_tiny), so forward kernels keep their text
        order = [i for i, k in enumerate(ks) if k.kind != "sce"] + [i for i, k in enumerate(ks) if k.kind == "sce"]
        for gi in order:
            G = ks[gi]
            if id(G) in absorbed:
                continue
            if G.kind == "sce":  # sums its own gradient output, after all of its rows
                x = next((n for n in G.nodes if n.op == "sce_grad"), None)
                if x is None or len(x.shape) != 2:
                    continue
                KN = tuple(x.shape)
                hosts = range(gi + 1, len(ks))
            elif G.matmul is not None and G.kind in ("loop", "matmul") and not self.use_cublas:
                b = G.matmul.inputs[1]
                vb = G.leaves.get(id(b))
                if vb is None or vb.perm is not None or tuple(vb.shape) != tuple(b.shape) or len(b.shape) != 2:
                    continue
                # B may be a reshape of x (a convolution's output gradient (N, H, W, C) read as
                # (N*H*W, C)): the column sums are then x's sums over its leading axes
                x, KN = vb.base, tuple(b.shape)
                hosts = range(gi)
            else:
                continue
            if self.where(x)[0] != "arena":
                continue
            N = KN[1]
            lead = self._leading_axes(tuple(x.shape), KN)
            for ei in hosts:
                E = ks[ei]
                if E.kind != "loop" or id(E) in absorbed:
                    continue
                rd = next((r for r in E.reductions if r.op == "sum" and r.inputs[0] is x and id(r) not in taken
                           and tuple(sorted(r.attrs["axes"])) == lead and np.dtype(r.dtype) == np.dtype(x.dtype)
                           and np.dtype(r.dtype).kind == "f" and _size(r.shape) == N
                           and self.where(r)[0] == "arena"), None)
                if rd is None:
                    continue
                # where rd's readers run: a loop already taken into a GEMM runs at that GEMM
                users = sorted({absorbed.get(id(ks[u]), u) for u in readers.get(id(rd), [])})
                U, ui = None, -1
                if len(users) == 1 and users[0] not in (gi, ei):
                    cand = ks[users[0]]
                    ct = LoopText(self, cand, Fn())
                    if (cand.kind == "loop" and ct.mode == "ew" and cand.matmul is None and ct.flat_index
                            and _size(cand.shape) == N and id(cand) not in absorbed
                            and all(v.is_identity_for(tuple(cand.shape)) for v in cand.leaves.values()
                                    if v.base is rd)):
                        U, ui = cand, users[0]
                kept = any(o is rd for o in self.graph.outputs) or any(c is rd for c, _ in self.plan.copies)

                def legal(U, ui) -> bool:
                    # rd is stored unless its only reader runs on it in G (then the sum stays in a register)
                    rfp = (self._ranges([x]), self._ranges([rd]) if U is None or kept else [])
                    if U is None and any(u <= gi for u in users):
                        return False  # rd is read before G could compute it
                    if any(self._clash(rfp, fp[id(ks[j])]) for j in range(min(ei, gi) + 1, max(ei, gi))
                           if j != ui):
                        return False
                    self._col_fp = (rfp[0], rfp[1])
                    ufp = ([], [])
                    if U is not None:
                        own = self._ranges([rd])
                        ufp = ([r for r in fp[id(U)][0] if r not in own], fp[id(U)][1])
                        if any(self._clash(ufp, fp[id(ks[j])]) for j in range(min(ui, gi) + 1, max(ui, gi))):
                            return False
                    # the column work (rd, then U on it) and G's own work run concurrently (the
                    # softmax-CE kernel is one block: a barrier orders its rows before the sums)
                    self._col_fp = (rfp[0] + ufp[0], rfp[1] + ufp[1])
                    inner = (ufp[0] if G.kind == "sce" else self._col_fp[0], self._col_fp[1])
                    return not self._clash(inner, fp[id(G)])

                if not legal(U, ui):
                    if U is None or not legal(None, -1):
                        continue
                    U = None
                store = U is None or kept
                taken.add(id(rd))
                col[id(G)] = (rd, U, store)
                drop.setdefault(id(E), set()).add(id(rd))
                # later decisions see G doing this work, and U no longer where it was
                fp[id(G)] = (fp[id(G)][0] + self._col_fp[0], fp[id(G)][1] + self._col_fp[1])
                if U is not None:
                    absorbed[id(U)] = gi
                    fp[id(U)] = ([], [])
                break
        return col, drop, absorbed

    def _plan_red_epilogues(self, ks: list, fp: dict, drop: dict, absorbed: dict) -> dict:
        """Elementwise loops over a block reduction's results (a mean's division by the count,
        batch normalization's statistics, the dropout mask applied to a pooled mean) run in the
        reduction's kernel: the thread that writes a block's sums goes on to compute the loops'
        element there, reading them back. Such a loop ``E`` (no reductions, no GEMM, read and
        written at the flat index, as many elements as the host has outputs, reading at least
        one of its sums or a loop's output moved in before it) writes only scratch (optimizer
        updates stay for the multi-tensor launch), moves past nothing it depends on, and shares
        no memory with its host's other work but those sums and the outputs of the loops moved
        in before it, all read at the same element (it may overwrite one of them in place: its
        own thread's element; a later loop then no longer reads it). Returns {id(E): host index}; ``self._red_epi``
        maps id(host) -> [E, ...] in schedule order."""
        moved: dict[int, int] = {}
        for hi, H in enumerate(ks):
            if H.kind != "loop" or H.matmul is not None or id(H) in absorbed or id(H) in moved:
                continue
            reds = [r for r in H.reductions if id(r) not in drop.get(id(H), ())]
            if not reds:
                continue
            ht = LoopText(self, H, Fn())
            if ht.mode != "block":
                continue
            nk = _size([d for i, d in enumerate(H.shape) if i not in ht.red_axes])
            own = self._ranges(reds)  # what a moved loop reads at its own element
            avail = {id(r) for r in reds}  # the sums and the outputs of loops moved in
            for ei in range(hi + 1, len(ks)):
                E = ks[ei]
                if (E.kind != "loop" or E.matmul is not None or E.reductions or id(E) in absorbed
                        or id(E) in drop or id(E) in moved or _size(E.shape) != nk
                        or not any(id(v.base) in avail for v in E.leaves.values())
                        or any(self.plan.buffers[id(o)].kind != "scratch" for o in E.outputs)):
                    continue
                et = LoopText(self, E, Fn())
                if et.mode != "ew" or not et.flat_index:
                    continue
                inplace = [w for w in fp[id(E)][1] if any(w[0] == o[0] and w[1] == o[1] and w[2] <= o[2]
                                                          for o in own)]
                efp = ([r for r in fp[id(E)][0] if r not in own], [w for w in fp[id(E)][1] if w not in inplace])
                if self._clash(efp, fp[id(H)]):
                    continue
                if any(self._clash(fp[id(E)], fp[id(ks[j])]) for j in range(hi + 1, ei)):
                    continue
                self._red_epi.setdefault(id(H), []).append(E)
                moved[id(E)] = hi
                fp[id(H)] = (fp[id(H)][0] + fp[id(E)][0], fp[id(H)][1] + fp[id(E)][1])
                fp[id(E)] = ([], [])
                own = [o for o in own if not any(w[0] == o[0] and w[1] < o[2] and o[1] < w[2] for w in inplace)]
                own += [w for w in self._ranges(E.outputs) if w not in inplace]
                avail |= {id(o) for o in E.outputs}
        return moved

    # kernels of a thread per output element whose loop body ends with that element's store and
    # that take an elementwise epilogue: pooling and its gradient (im2col and col2im could too,
    # but they keep one generated function per program, shared by every layer)
    _STRUCT_EPI = ("pool2d", "pool2d_grad")

    def _plan_struct_epilogues(self, ks: list, fp: dict, drop: dict, absorbed: dict) -> dict:
        """An elementwise loop over the output of a pooling or pooling-gradient kernel (a thread
        per output element), reading it at the same element (the relu
        gradient after max pooling's gradient) runs in that kernel's thread right after the
        element is stored, reading it back. Its reductions must have moved elsewhere (the bias
        gradient into the weight-gradient GEMM, ``colsum``); the same checks as for
        _plan_red_epilogues. When the only obstacle is that E's output was planned over memory
        the kernel reads (a dead buffer reused), that output gets a region of its own: one
        activation-gradient's worth of scratch for a launch. Moving a buffer to fresh memory
        only removes overlaps, so every earlier check still holds. Returns {id(E): host index}."""
        moved: dict[int, int] = {}
        for si, S in enumerate(ks):
            if S.kind not in self._STRUCT_EPI or len(S.outputs) != 1 or id(S) in absorbed:
                continue
            (n,) = S.outputs
            own = self._ranges([n])
            if not own:
                continue
            for ei in range(si + 1, len(ks)):
                E = ks[ei]
                if (E.kind != "loop" or E.matmul is not None or id(E) in absorbed or id(E) in moved
                        or id(E) in self._red_epi or _size(E.shape) != _size(n.shape)
                        or any(id(r) not in drop.get(id(E), ()) for r in E.reductions)):
                    continue
                kk = E
                if E.reductions:
                    kk = replace(E, reductions=[], outputs=[o for o in E.outputs if id(o) not in drop[id(E)]])
                et = LoopText(self, kk, Fn())
                if (et.mode != "ew" or not et.flat_index or not kk.nodes
                        or not any(v.base is n for v in et.leaves.values())
                        or any(self.plan.buffers[id(o)].kind != "scratch" for o in kk.outputs)):
                    continue
                def check() -> tuple | None:
                    kfp = self._footprint(kk)
                    inplace = [w for w in kfp[1] if any(w[0] == o[0] and w[1] == o[1] and w[2] <= o[2]
                                                        for o in own)]
                    efp = ([r for r in kfp[0] if r not in own], [w for w in kfp[1] if w not in inplace])
                    if self._clash(efp, fp[id(S)]) or any(self._clash(kfp, fp[id(ks[j])])
                                                          for j in range(si + 1, ei)):
                        return None
                    return kfp

                kfp = check()
                if kfp is None:
                    # the plan often puts E's output over an operand of S that dies with E (the
                    # relu output max pooling's gradient reads): give it a region of its own
                    sizes = dict(self.scratch_sizes)
                    outs = [o for o in kk.outputs if id(o) not in self.relocated
                            and not any(o is x for x in self.graph.outputs)
                            and not any(c is o for c, _ in self.plan.copies)]
                    for o in outs:
                        b = self.plan.buffers[id(o)]
                        off = aligned(self.scratch_sizes.get(b.dtype, 0), b.dtype)
                        self.scratch_sizes[b.dtype] = off + b.size
                        self.relocated[id(o)] = off
                    kfp = check() if outs else None
                    if kfp is None:
                        for o in outs:
                            del self.relocated[id(o)]
                        self.scratch_sizes = sizes
                        continue
                self._red_epi[id(S)] = [E]
                self._epi_as[id(E)] = kk
                moved[id(E)] = si
                fp[id(S)] = (fp[id(S)][0] + kfp[0], fp[id(S)][1] + kfp[1])
                fp[id(E)] = ([], [])
                break
        return moved

    def _lower(self, k: Kernel, col, fp: tuple) -> list:
        """The launches of kernel ``k`` (``col``: the column work it takes over, see gemm_fused)."""
        fallback = not self.use_cublas
        launches = []
        epi = (fallback and "epilogue" in self.merge and k.kind == "loop" and k.matmul is not None
               and self._epilogue_ok(k, fp))
        if k.matmul is not None:
            if fallback and (epi or col is not None):
                ln = gemm.gemm_fused(self, k, epi, col)
                ln.reads, ln.writes = list(fp[0]), list(fp[1]) + ([] if epi else self._ranges([k.matmul]))
                if col is not None:
                    self._add_col_footprint(ln, col)
            else:
                ln = gemm.gemm(self, k, k.matmul)
                ln.reads, ln.writes = self._gemm_reads(k), self._ranges([k.matmul])
            launches.append(ln)
        if k.kind != "matmul" and not epi:
            lowering = KERNELS.get(k.kind)
            if lowering is None:
                raise CompileError(f"the cuda backend has no lowering for kernel kind {k.kind!r} "
                                   f"({', '.join(self.site(n) for n in k.nodes)})")
            epi = self._red_epi.get(id(k), []) if k.kind in ("loop",) + self._STRUCT_EPI else []
            hosted = Hosted(col=col if k.kind == "sce" else None, epi=[self._epi_as.get(id(e), e) for e in epi])
            ln = lowering(self, k, hosted)
            ln.reads, ln.writes = list(fp[0]), list(fp[1])
            if k.matmul is not None and k.kind == "loop":  # the GEMM's operands are its launch's reads only
                used = LoopText(self, k, Fn()).leaves.values()
                ln.reads = self._ranges({id(v.base): v.base for v in used}.values())
            if col is not None and k.kind == "sce":
                self._add_col_footprint(ln, col)
            for e in self._red_epi.get(id(k), []):
                ef = self._footprint(self._epi_as.get(id(e), e))
                ln.reads, ln.writes = ln.reads + ef[0], ln.writes + ef[1]
            launches.append(ln)
        return launches

    def _add_col_footprint(self, ln: Launch, col: tuple) -> None:
        rd, U, store = col
        own = self._ranges([rd])
        ln.writes += own if store else []
        if U is not None:
            uf = self._footprint(U)
            ln.reads += [r for r in uf[0] if store or r not in own]
            ln.writes += uf[1]

    def _relocate(self, ks: list, absorbed: dict) -> None:
        """Give the scratch operands of every in-place update loop (the gradients an optimizer
        update reads) a region of their own after the plan's arena, so the plan's reuse of
        dead buffers does not pin each update right after its gradient: they can then wait
        for the last gradient and run as one multi-tensor launch: a gradient arena, bought
        with one gradient's worth of scratch per parameter (the updates
        a fallback GEMM runs as its epilogue read the accumulator: nothing is moved for them)."""
        keep = {id(o) for o in self.graph.outputs} | {id(c) for c, _ in self.plan.copies}
        fused = not self.use_cublas and "epilogue" in self.merge
        for k in ks:
            if k.kind != "loop" or k.reductions or id(k) in absorbed:
                continue
            if not any(self.plan.buffers[id(o)].kind == "store" for o in k.outputs):
                continue
            used = [v.base for v in LoopText(self, k, Fn()).leaves.values()]
            for x in used:
                b = self.plan.buffers.get(id(x))
                if (b is None or b.kind != "scratch" or id(x) in keep or id(x) in self.relocated
                        or (fused and x is k.matmul)):
                    continue
                off = aligned(self.scratch_sizes.get(b.dtype, 0), b.dtype)
                self.scratch_sizes[b.dtype] = off + b.size
                self.relocated[id(x)] = off

    def _table(self, values: list) -> int:
        """A constant int64 table in the device scratch arena (filled when the program is
        built); returns its element offset."""
        dt = np.dtype(np.int64)
        off = aligned(self.scratch_sizes.get(dt, 0), dt)
        self.scratch_sizes[dt] = off + len(values)
        self.tables.append((dt, off, np.asarray(values, dtype=dt)))
        return off

    def _multi_tensor(self, units: list) -> list:
        """Launches of the same generated elementwise function that may run together (no
        memory dependence between them, nor with any launch they are moved past) become one
        launch at the place of the last (multi-tensor apply: every parameter's optimizer
        update in one launch)."""
        def key(ln):
            if ln.ew is None or ln.kind != "kernel":
                return None
            return ln.function, tuple(a for a in ln.args if a[0] != "int")

        out = list(units)
        i = 0
        while i < len(out):
            kx = key(out[i])
            if kx is None:
                i += 1
                continue
            members, acc = [i], (list(out[i].reads), list(out[i].writes))
            for j in range(i + 1, len(out)):
                y = out[j]
                if self._clash(acc, (y.reads, y.writes)):
                    break
                if key(y) == kx:
                    members.append(j)
                    acc[0].extend(y.reads)
                    acc[1].extend(y.writes)
            if len(members) == 1:
                i += 1
                continue
            merged = self._mt_launch([out[m] for m in members])
            last = members[-1]
            out[last] = merged
            out = [u for idx, u in enumerate(out) if idx not in members[:-1]]
        return out

    def _mt_launch(self, group: list) -> Launch:
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
        ch = self.lp.chunk
        rows = []
        for ln in group:
            vals = [a[1] for a in ln.args if a[0] == "int"]
            for lo in range(0, vals[ti], ch):
                rows += vals + [lo, min(lo + ch, vals[ti])]
        nrows = len(rows) // (n + 2)
        fn = Fn(ip="m")
        fn.arrays = list(fn0.arrays) + ([] if "T_int64" in fn0.arrays else ["T_int64"])
        tab, nch = fn.int(self._table(rows)), fn.int(nrows)
        fn.scalars = list(fn0.scalars)
        body = [f"    for c in range(cuda.blockIdx.x, {nch}, cuda.gridDim.x):  # one chunk of one launch per block",
                f"        r = {tab} + c * {n + 2}"]
        body += [f"        {p} = T_int64[r + {j}]" for j, p in enumerate(names)]
        body += [f"        lo = T_int64[r + {n}]", f"        hi = T_int64[r + {n + 1}]"]
        body += ["    " + ln for ln in pre]
        body += ["        for i in range(lo + cuda.threadIdx.x, hi, cuda.blockDim.x):"]
        body += ["    " + ln for ln in inner]
        name = self.function(fn, body, "multi")
        merged = tuple(x for ln in group for x in (ln.merged or (ln.name,)))
        ln = Launch("+".join(x.name for x in group), "kernel", name, max(1, min(nrows, self.lp.max_grid)),
                    self.lp.block, fn.args(), comment=f"multi-tensor apply of {len(group)} launches of "
                    f"{group[0].function} ({nrows} chunks): " + group[0].comment, merged=merged)
        ln.reads = [r for x in group for r in x.reads]
        ln.writes = [w for x in group for w in x.writes]
        ln.anchor, ln.src = group[-1].anchor, (fn, body, "multi")
        ln.covers = set().union(*(x.covers for x in group))
        return ln

    def _fold_tiny(self, units: list) -> list:
        """A kernel over a single element (the step counter ``t + 1``) runs inside a later numba
        launch. Preferably the first launch that reads what it writes, when that launch is one
        block (softmax-CE): thread 0 does it first and a barrier orders it before every read.
        Otherwise the last launch before that one: nothing there reads or writes what it
        touches (checked), so thread 0 of block 0 does it, guarded, with no race. Late hosts
        keep the forward kernels a training step shares with inference functions as they are."""
        out = list(units)
        i = 0
        while i < len(out):
            x = out[i]
            host, barrier = None, False
            if x.tiny is not None:
                for j in range(i + 1, len(out)):
                    y = out[j]
                    if self._clash((x.reads, x.writes), (y.reads, y.writes)):
                        # only y reading what x writes (a barrier resolves that in one block)
                        # (always one block whatever the batch: the text stays batch-independent)
                        if (y.kind == "kernel" and y.src is not None and y.src[2] == "sce"
                                and not self._clash((x.reads, x.writes), ([], y.writes))):
                            host, barrier = j, True
                        break
                    if y.kind == "kernel" and y.src is not None:
                        host = j
            if host is None:
                i += 1
                continue
            out[host] = self._fold(x, out[host], barrier)
            del out[i]
        return out

    def _fold(self, x: Launch, y: Launch, barrier: bool = False) -> Launch:
        f = y.folds
        xfn = Fn(ip=f"f{f}o", sp=f"f{f}s")  # its own parameter and value names inside y's function
        t = LoopText(self, x.tiny, xfn, vp=f"f{f}v", idx="0")
        lines = t.prelude("        ") + t.element("        ") + t.stores("        ")
        yfn, ybody, tag = y.src
        fn = Fn()
        fn.arrays = yfn.arrays + [a for a in xfn.arrays if a not in yfn.arrays]
        fn.ints, fn.scalars = yfn.ints + xfn.ints, yfn.scalars + xfn.scalars
        guard = ("    if (cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0 and cuda.blockIdx.x == 0 and "
                 f"cuda.blockIdx.y == 0 and cuda.blockIdx.z == 0):  # folded in: {x.name}")
        body = [guard] + lines + (["    cuda.syncthreads()  # before anything reads it"] if barrier else []) + ybody
        name = self.function(fn, body, tag)
        merged = tuple(m for ln in (x, y) for m in (ln.merged or (ln.name,)))
        ln = Launch(f"{x.name}+{y.name}", "kernel", name, y.grid, y.block, fn.args(),
                    comment=f"{y.comment} | folded in: {x.comment}", merged=merged)
        ln.reads, ln.writes = x.reads + y.reads, x.writes + y.writes
        ln.anchor, ln.src, ln.folds, ln.covers = y.anchor, (fn, body, tag), f + 1, x.covers | y.covers
        return ln

    # ---- module -------------------------------------------------------------------------------------------
    def emit(self) -> CudaModule:
        ks = list(self.plan.kernels)
        fp = {id(k): self._footprint(k) for k in ks}
        col, drop, absorbed = ({}, {}, {})
        if "colsum" in self.merge:
            col, drop, absorbed = self._plan_colsums(ks, fp)
        moved = {}
        if "epilogue" in self.merge:
            moved = self._plan_red_epilogues(ks, fp, drop, absorbed)
            absorbed = {**absorbed, **moved}
            more = self._plan_struct_epilogues(ks, fp, drop, absorbed)
            moved, absorbed = {**moved, **more}, {**absorbed, **more}
        if "multi" in self.merge:
            self._relocate(ks, absorbed)
        units: list[Launch] = []
        for i, k in enumerate(ks):
            kk = k
            if id(k) in drop:  # its column sums are computed by a later GEMM
                kk = replace(k, reductions=[r for r in k.reductions if id(r) not in drop[id(k)]],
                             outputs=[o for o in k.outputs if id(o) not in drop[id(k)]])
                if id(k) in self._red_epi:  # it still runs the loops on its remaining sums
                    self._red_epi[id(kk)] = self._red_epi[id(k)]
            launches = []
            if id(k) not in absorbed and (kk.nodes or kk.reductions or kk.matmul is not None):
                launches = self._lower(kk, col.get(id(k)), self._footprint(kk))
            c = col.get(id(k))
            for ln in launches:
                ln.anchor, ln.covers = i, {i}
                if (kk.kind == "loop" and kk.shape == () and kk.matmul is None and ln.ew is not None
                        and "fold" in self.merge):
                    ln.tiny = kk
            if c is not None:  # the kernels whose work the GEMM took over
                e = next(j for j, q in enumerate(ks) if id(q) in drop and id(c[0]) in drop[id(q)])
                extra = [e] + ([next(j for j, q in enumerate(ks) if q is c[1])] if c[1] is not None else [])
                ln = launches[0]
                ln.covers |= set(extra)
                own = ln.name.split("+")
                whole = not (ks[e].nodes or len(ks[e].reductions) > 1 or ks[e].matmul)  # all of it moved
                red = ks[e].name if whole else f"{ks[e].name}.sum"
                ln.merged = tuple(own + [red] + ([c[1].name] if c[1] is not None else []))
                ln.name = "+".join(ln.merged)
            for e in self._red_epi.get(id(k), []) if launches else []:  # the loops it runs on its sums
                ln = launches[-1]
                ln.covers.add(next(j for j, q in enumerate(ks) if q is e))
                ln.merged = tuple((ln.merged or (ln.name,)) + (e.name,))
                ln.name = "+".join(ln.merged)
            units += launches
            self.infos.append(KernelInfo(k.name, "", k.kind, tuple(k.shape), [n.op for n in k.all_nodes],
                                         k.all_nodes, k.outputs, out_bytes(k.outputs)))
        if "multi" in self.merge:
            units = self._multi_tensor(units)
        if "fold" in self.merge:
            units = self._fold_tiny(units)
        self.launches = units
        unmerged = sum((k.matmul is not None) + (k.kind != "matmul") for k in ks)
        merges = ",".join(sorted(self.merge)) or "none"
        note = (f"{len(units)} launches for the schedule's {unmerged} (GRAPHC_CUDA_MERGE: {merges}); "
                "a name joined by '+' runs those kernels' work in one launch")
        for idx, info in enumerate(self.infos):
            info.launches = [ln for ln in units if ln.anchor == idx]
            info.function = next((ln.function for ln in reversed(units) if idx in ln.covers), "")
        # each kernel is a module of its own, named by the hash of its text (which names no
        # node): another batch size or a forward function imports the same files. The driver
        # only imports them and lists the launches: the program replays those from Python
        # (binding device arenas and launch configurations), so there is no driver function
        header = ("# Generated by graphc (target='cuda'). Do not edit: the file name is a hash of this text.\n"
                  "import math\nimport numpy as np\nimport numba\n"
                  "from graphc.backends.cuda.compat import numba_cuda\n\n"
                  "cuda = numba_cuda()  # numba.cuda, after the numpy compatibility shim\n\n")
        used = {ln.function for ln in self.launches if ln.kind == "kernel"}
        for f in [f for f in self.functions.sources if f not in used]:  # superseded by a merged launch
            del self.functions.sources[f], self.functions.nparams[f]
        kernel_modules, owner = self.functions.modules(header)
        lines = ["# Generated by graphc (target='cuda'): the kernels of one program and its launches.",
                 *(f"from {m} import {f}" for f, m in owner.items()), "", "# launches in step order:"]
        for ln in self.launches:
            cfg = "cuBLAS" if ln.kind == "cublas" else f"[{ln.grid}, {ln.block}]"
            lines.append(f"#   {ln.name:<8} {ln.function} {cfg}  # {ln.comment[:200]}")
        return CudaModule("\n".join(lines) + "\n", self.launches, self.infos, dict(self.functions.nparams),
                          self.feed_offsets, self.scratch_sizes, self.lp,
                          "cublas" if self.use_cublas else "numba-fallback", self._copies(), kernel_modules, owner,
                          self.tables, note)


    def _copies(self) -> list:
        """Deferred store writes as (slot arena, offset, size, dtype, source)."""
        out = []
        for node, slot in self.plan.copies:
            dt, off, shape = self.layout[slot]
            b = self.plan.buffers[id(node)]
            src = ("literal", b.value.reshape(-1)[0]) if b.kind == "literal" else self.where(node)
            out.append((f"S_{dtname(dt)}", off, _size(shape), np.dtype(dt), src))
        return out


# the launch merges (module docstring, "Launches"): GEMM epilogues and bias gradients into the
# fallback GEMM, multi-tensor apply of identical elementwise launches, one-element kernels folded
MERGES = frozenset({"epilogue", "colsum", "multi", "fold"})


def merge_option(value: str | None = None) -> frozenset:
    """The merges to make: ``value`` (default: the GRAPHC_CUDA_MERGE environment variable) is
    "all" (the default), "none" (one launch per scheduled kernel and GEMM, as before merging
    existed: a reference to compare against) or a comma-separated subset of MERGES."""
    import os
    value = os.environ.get("GRAPHC_CUDA_MERGE", "all") if value is None else value
    value = value.strip().lower()
    if value in ("", "all"):
        return MERGES
    if value == "none":
        return frozenset()
    got = frozenset(v.strip() for v in value.split(",") if v.strip())
    if not got <= MERGES:
        raise CompileError(f"GRAPHC_CUDA_MERGE must be all, none or a comma-separated subset of "
                           f"{', '.join(sorted(MERGES))}; got {value!r}")
    return got


def emit_module(plan: Plan, graph: Graph, store_layout: dict, feeds: list[Node], use_cublas: bool,
                lp: LaunchParams | None = None, merge: frozenset | None = None) -> CudaModule:
    return _Emitter(plan, graph, store_layout, feeds, lp or launch_params(), use_cublas,
                    merge_option() if merge is None else frozenset(merge)).emit()


def _numba_type(spec, dtypes: dict):
    from numba import types
    from numba.np import numpy_support
    if spec[0] == "arena":
        return types.Array(numpy_support.from_dtype(dtypes[spec[1]]), 1, "C")
    if spec[0] == "int":
        return types.int64
    return numpy_support.from_dtype(np.dtype(spec[2]))


def emit_for(lowered, store_layout: Mapping, use_cublas: bool = False, lp: LaunchParams | None = None,
             merge: frozenset | str | None = None) -> CudaModule:
    """The CudaModule of a lowered program (graphc.compiler.lowered), without touching a device.
    ``merge``: the launch merges to make (a subset of MERGES, or a string as merge_option
    reads it; default GRAPHC_CUDA_MERGE, else all)."""
    feeds = sorted(lowered.graph.inputs, key=lambda n: n.name)
    if isinstance(merge, str):
        merge = merge_option(merge)
    return emit_module(lowered.plan, lowered.graph, dict(store_layout), feeds, use_cublas, lp, merge)


def compile_ptx(module: CudaModule, cc=(9, 0)) -> dict[str, str]:
    """PTX of every generated kernel for the argument types the launches use (needs NVVM,
    not a GPU; run without the simulator). Catches typing and lowering errors."""
    from ..cache import load_program, write_program
    cuda = numba_cuda()
    mod, _ = load_program(*write_program(module.source, module.kernel_modules.values()), retain=False)
    dtypes = {}
    for ln in module.launches:
        for a in ln.args:
            if a[0] == "arena":
                dtypes[a[1]] = np.dtype(a[1].split("_", 1)[1])
    out = {}
    for ln in module.launches:
        if ln.kind != "kernel" or ln.function in out:
            continue
        sig = tuple(_numba_type(a, dtypes) for a in ln.args)
        disp = getattr(mod, ln.function)
        ptx, _ = cuda.compile_ptx(disp.py_func, sig, cc=cc)
        out[ln.function] = ptx
    return out


# The cuda lowering of each kernel kind, a rule table:
# ``(emitter, kernel, hosted) -> Launch``, ``hosted`` the work of other kernels it runs
# (launch.Hosted); GEMMs (matmul kernels and loop prologues) are launched by gemm.py's ``gemm``/``gemm_fused``. A
# structured op's rule (ops/base.py ``Structured``) names its kind.
KERNELS = {
    "loop": loops.loop_kernel,
    "copy": loops.copy_kernel,
    "slice": slicing.slice_kernel,  # slice (ops/slicing.py)
    "pad": slicing.pad_kernel,  # pad
    "concat": slicing.concat_kernel,  # concatenate
    "sce": sce.sce_kernel,  # softmax_cross_entropy / sce_grad
    "take": indexing.take_kernel,  # take (ops/indexing.py)
    "scatter_add": indexing.scatter_add_kernel,  # take_grad
    "bmm": gemm.bmm_kernel,  # batch_matmul (ops/linalg.py)
    "im2col": conv.im2col_kernel,  # im2col (ops/conv.py): conv2d's patches
    "col2im": conv.col2im_kernel,  # col2im: their adjoint (gather, no atomics)
    "pool2d": conv.pool2d_kernel,  # pool2d (max / avg)
    "pool2d_grad": conv.pool2d_grad_kernel,  # pool2d_grad (gather, no atomics)
    "rng": rng.rng_kernel,  # random_uniform (ops/random.py)
}
