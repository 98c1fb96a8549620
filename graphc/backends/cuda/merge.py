"""Fewer launches on the cuda target: where the schedule's work runs once launches are merged.

Small steps are launch-bound on a GPU, so the emitter merges the schedule's launches (``MERGES``;
``GRAPHC_CUDA_MERGE=none`` or a subset turns them off, the reference the tests compare against):

- ``epilogue``: on the fallback GEMM, a loop's elementwise epilogue runs on each thread's output
  tile, reading the accumulator (the GEMM's result is never stored; a convolution's loop reads
  it through the GEMM's reshape, Kernel.gemm_views). On both paths, elementwise loops over a
  block reduction's sums (a mean's division, batch normalization's statistics) that write
  scratch run in the reduction's kernel, by the thread that wrote the sums, and one over a
  pooling (gradient) output (the relu gradient after max pooling's) in that kernel's thread,
  on the element just stored (``plan_red_epilogues``, ``plan_struct_epilogues``);
- ``colsum``: a bias gradient ``sum(g, 0)`` whose ``g`` a later fallback GEMM reads as B
  (``dW = h^T @ g``) is summed by that GEMM's first row of tiles, a thread per column, in K
  order (``g`` may be a convolution's (N, H, W, C) output gradient read as (N*H*W, C): then the
  sum over N, H, W); else, when ``g`` is the softmax-CE gradient, by the (one-block) softmax-CE
  kernel after a barrier. The bias update that is its only reader runs on the sum in the same
  thread (``plan_colsums``);
- ``multi``: launches of one elementwise function with no memory dependence between them
  (every parameter's optimizer update) are one launch at the place of the last: an int64
  table in the scratch arena holds per chunk the original launch's integer arguments and
  the chunk's bounds, a block per chunk (``multi_tensor``). The scratch operands of in-place
  update loops (the gradients) get regions of their own, so the plan's reuse of dead buffers
  does not pin an update to its gradient (``relocate_update_operands``);
- ``fold``: a one-element kernel (the step counter ``t + 1``) runs, guarded to thread 0 of
  block 0, inside the first launch that reads it if that is the softmax-CE kernel (a barrier
  follows), else inside the last launch before that one (``fold_tiny``).

Every move is checked on element ranges (``clash``): work moved past a launch must not write
what that launch reads or writes, nor read what it writes; work merged into one launch must be
independent the same way (except the column sum feeding its update, in one thread).

The ``plan_*`` functions decide, before lowering, which scheduled kernel's work runs inside
which other kernel's launch and return that decision; ``multi_tensor`` and ``fold_tiny`` are
passes over the lowered launch list (launches in, launches out; the text of a merged launch
comes from the ``combine``/``fold`` the caller passes). ``em`` is the emitter: where a node
lives (``em.where``, ``em.ranges``, ``em.footprint``) and the device scratch layout.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable

import numpy as np

from ...errors import CompileError
from ...schedule.fusion import Kernel
from ..base import numel
from .kernels.loops import LoopText
from .launch import Fn, Launch

# the launch merges (above): GEMM epilogues and bias gradients into the fallback GEMM,
# multi-tensor apply of identical elementwise launches, one-element kernels folded
MERGES = frozenset({"epilogue", "colsum", "multi", "fold"})

# kernels of a thread per output element whose loop body ends with that element's store and
# that take an elementwise epilogue: pooling and its gradient (im2col and col2im could too,
# but they keep one generated function per program, shared by every layer)
STRUCT_EPILOGUE_KINDS = ("pool2d", "pool2d_grad")


def merge_option(value: str | None = None) -> frozenset:
    """The merges to make: ``value`` (default: the GRAPHC_CUDA_MERGE environment variable) is
    "all" (the default), "none" (one launch per scheduled kernel and GEMM, as before merging
    existed: a reference to compare against) or a comma-separated subset of MERGES."""
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


def clash(a: tuple, b: tuple) -> bool:
    """Whether work with footprint ``a`` (reads, writes: lists of (arena, first, end) element
    ranges) and work ``b`` depend on each other through memory (so neither may move past the
    other, nor may both run in one launch)."""
    def hit(xs, ys):
        return any(x[0] == y[0] and x[1] < y[2] and y[1] < x[2] for x in xs for y in ys)
    return hit(a[1], b[0] + b[1]) or hit(a[0], b[1])


# ---- passes over the launch list ------------------------------------------------------------------

def _multi_key(ln: Launch):
    """Launches with equal keys run one generated elementwise function on the same arenas
    (their integer arguments, offsets and extents, may differ: the table holds them)."""
    if ln.ew is None or ln.kind != "kernel":
        return None
    return ln.function, tuple(a for a in ln.args if a[0] != "int")


def multi_tensor(launches: list[Launch], combine: Callable[[list[Launch]], Launch]) -> list[Launch]:
    """Launches of the same generated elementwise function that may run together (no memory
    dependence between them, nor with any launch they are moved past) become one launch at
    the place of the last (multi-tensor apply: every parameter's optimizer update in one
    launch). ``combine(group)`` gives the merged launch's function and configuration; this
    names it after the group and gives it the group's footprint. ``launches`` is not changed."""
    out = list(launches)
    i = 0
    while i < len(out):
        kx = _multi_key(out[i])
        if kx is None:
            i += 1
            continue
        members, acc = [i], (list(out[i].reads), list(out[i].writes))
        for j in range(i + 1, len(out)):
            y = out[j]
            if clash(acc, (y.reads, y.writes)):
                break
            if _multi_key(y) == kx:
                members.append(j)
                acc[0].extend(y.reads)
                acc[1].extend(y.writes)
        if len(members) == 1:
            i += 1
            continue
        group = [out[m] for m in members]
        ln = combine(group)
        ln.name = "+".join(x.name for x in group)
        ln.merged = tuple(x for g in group for x in (g.merged or (g.name,)))
        ln.reads = [r for x in group for r in x.reads]
        ln.writes = [w for x in group for w in x.writes]
        ln.anchor = group[-1].anchor
        ln.covers = set().union(*(x.covers for x in group))
        out[members[-1]] = ln
        out = [u for idx, u in enumerate(out) if idx not in members[:-1]]
    return out


def fold_tiny(launches: list[Launch], fold: Callable[[Launch, Launch, bool], Launch]) -> list[Launch]:
    """A kernel over a single element (``Launch.tiny``: the step counter ``t + 1``) runs inside
    a later numba launch. Preferably the first launch that reads what it writes, when that
    launch is one block (softmax-CE): thread 0 does it first and a barrier orders it before
    every read. Otherwise the last launch before that one: nothing there reads or writes what
    it touches (checked), so thread 0 of block 0 does it, guarded, with no race. Late hosts
    keep the forward kernels a training step shares with inference functions as they are.
    ``fold(x, host, barrier)`` gives the host's new function; this names it and gives it both
    footprints. ``launches`` is not changed."""
    out = list(launches)
    i = 0
    while i < len(out):
        x = out[i]
        host, barrier = None, False
        if x.tiny is not None:
            for j in range(i + 1, len(out)):
                y = out[j]
                if clash((x.reads, x.writes), (y.reads, y.writes)):
                    # only y reading what x writes (a barrier resolves that in one block)
                    # (always one block whatever the batch: the text stays batch-independent)
                    if (y.kind == "kernel" and y.src is not None and y.src[2] == "sce"
                            and not clash((x.reads, x.writes), ([], y.writes))):
                        host, barrier = j, True
                    break
                if y.kind == "kernel" and y.src is not None:
                    host = j
        if host is None:
            i += 1
            continue
        y = out[host]
        ln = fold(x, y, barrier)
        ln.name = f"{x.name}+{y.name}"
        ln.merged = tuple(m for g in (x, y) for m in (g.merged or (g.name,)))
        ln.reads, ln.writes = x.reads + y.reads, x.writes + y.writes
        ln.anchor, ln.folds, ln.covers = y.anchor, y.folds + 1, x.covers | y.covers
        out[host] = ln
        del out[i]
    return out


# ---- where the schedule's work runs (decided before lowering) ------------------------------------

def epilogue_ok(em, k: Kernel, fp: tuple) -> bool:
    """A loop whose prologue GEMM it reads at the same element only, with no reductions, and
    writing nothing the GEMM reads, can run on the GEMM's output tiles."""
    t = LoopText(em, k, Fn())
    if t.mode != "ew" or any(v.base is k.matmul and not v.is_identity_for(k.matmul.shape)
                             for v in t.leaves.values()):
        return False
    return not clash((em.gemm_reads(k), []), (fp[0], fp[1]))


def leading_axes(shape: tuple, kn: tuple) -> tuple | None:
    """The leading axes of ``shape`` that a row-major reshape to ``kn = (K, N)`` folds into
    K (so a sum over them is the column sum of the (K, N) view), or None."""
    for j in range(1, len(shape)):
        if numel(shape[:j]) == kn[0] and numel(shape[j:]) == kn[1]:
            return tuple(range(j))
    return None


def plan_colsums(em, ks: list, fp: dict) -> tuple[dict, dict, dict]:
    """Bias gradients folded into a kernel that has the operand at hand: a column sum
    ``rd = sum(x, axis=0)`` of a 2-D ``x`` is computed by a later fallback GEMM ``G`` that
    reads ``x`` as its B operand (``dW = h^T @ x``: its first row of tiles), or by the
    softmax-CE kernel that writes ``x`` (its gradient; after its rows, one thread per
    column), and the elementwise loop ``U`` that is rd's only reader (the bias update)
    runs there too, on the sum just computed. Each move is checked against the memory
    every launch in between reads and writes (the plan reuses dead buffers), and against
    the host's own work (they run in one launch). ``fp``: id(kernel) -> footprint, updated
    to where the work now runs. Returns {id(G): (rd, U, store)}, {id(kernel): ids of the
    reductions it loses}, {id(U): index of G}."""
    col, drop, absorbed, taken = {}, {}, {}, set()
    readers: dict[int, list[int]] = {}
    for i, k in enumerate(ks):
        for v in k.leaves.values():
            readers.setdefault(id(v.base), []).append(i)
    # GEMM hosts first: a bias update the dW GEMM runs keeps the step counter out of the
    # softmax-CE kernel (see fold_tiny), so forward kernels keep their text
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
        elif G.matmul is not None and G.kind in ("loop", "matmul") and not em.use_cublas:
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
        if em.where(x)[0] != "arena":
            continue
        N = KN[1]
        lead = leading_axes(tuple(x.shape), KN)
        for ei in hosts:
            E = ks[ei]
            if E.kind != "loop" or id(E) in absorbed:
                continue
            rd = next((r for r in E.reductions if r.op == "sum" and r.inputs[0] is x and id(r) not in taken
                       and tuple(sorted(r.attrs["axes"])) == lead and np.dtype(r.dtype) == np.dtype(x.dtype)
                       and np.dtype(r.dtype).kind == "f" and numel(r.shape) == N
                       and em.where(r)[0] == "arena"), None)
            if rd is None:
                continue
            # where rd's readers run: a loop already taken into a GEMM runs at that GEMM
            users = sorted({absorbed.get(id(ks[u]), u) for u in readers.get(id(rd), [])})
            U, ui = None, -1
            if len(users) == 1 and users[0] not in (gi, ei):
                cand = ks[users[0]]
                ct = LoopText(em, cand, Fn())
                if (cand.kind == "loop" and ct.mode == "ew" and cand.matmul is None and ct.flat_index
                        and numel(cand.shape) == N and id(cand) not in absorbed
                        and all(v.is_identity_for(tuple(cand.shape)) for v in cand.leaves.values()
                                if v.base is rd)):
                    U, ui = cand, users[0]
            kept = any(o is rd for o in em.graph.outputs) or any(c is rd for c, _ in em.plan.copies)

            def column_work(U, ui) -> tuple | None:
                """The footprint of the column work (rd, then U on it) in G, or None if it
                may not run there."""
                # rd is stored unless its only reader runs on it in G (then the sum stays in a register)
                rfp = (em.ranges([x]), em.ranges([rd]) if U is None or kept else [])
                if U is None and any(u <= gi for u in users):
                    return None  # rd is read before G could compute it
                if any(clash(rfp, fp[id(ks[j])]) for j in range(min(ei, gi) + 1, max(ei, gi)) if j != ui):
                    return None
                ufp = ([], [])
                if U is not None:
                    own = em.ranges([rd])
                    ufp = ([r for r in fp[id(U)][0] if r not in own], fp[id(U)][1])
                    if any(clash(ufp, fp[id(ks[j])]) for j in range(min(ui, gi) + 1, max(ui, gi))):
                        return None
                # the column work and G's own work run concurrently (the softmax-CE kernel is
                # one block: a barrier orders its rows before the sums)
                work = (rfp[0] + ufp[0], rfp[1] + ufp[1])
                inner = (ufp[0] if G.kind == "sce" else work[0], work[1])
                return None if clash(inner, fp[id(G)]) else work

            work = column_work(U, ui)
            if work is None:
                if U is None:
                    continue
                U, work = None, column_work(None, -1)
                if work is None:
                    continue
            store = U is None or kept
            taken.add(id(rd))
            col[id(G)] = (rd, U, store)
            drop.setdefault(id(E), set()).add(id(rd))
            # later decisions see G doing this work, and U no longer where it was
            fp[id(G)] = (fp[id(G)][0] + work[0], fp[id(G)][1] + work[1])
            if U is not None:
                absorbed[id(U)] = gi
                fp[id(U)] = ([], [])
            break
    return col, drop, absorbed


def plan_red_epilogues(em, ks: list, fp: dict, drop: dict, absorbed: dict) -> tuple[dict, dict]:
    """Elementwise loops over a block reduction's results (a mean's division by the count,
    batch normalization's statistics, the dropout mask applied to a pooled mean) run in the
    reduction's kernel: the thread that writes a block's sums goes on to compute the loops'
    element there, reading them back. Such a loop ``E`` (no reductions, no GEMM, read and
    written at the flat index, as many elements as the host has outputs, reading at least
    one of its sums or a loop's output moved in before it) writes only scratch (optimizer
    updates stay for the multi-tensor launch), moves past nothing it depends on, and shares
    no memory with its host's other work but those sums and the outputs of the loops moved
    in before it, all read at the same element (it may overwrite one of them in place: its
    own thread's element; a later loop then no longer reads it). Returns {id(E): host index}
    and {id(host): [(E, E), ...]} in schedule order (each loop and what of it runs there)."""
    moved: dict[int, int] = {}
    hosted: dict[int, list] = {}
    for hi, H in enumerate(ks):
        if H.kind != "loop" or H.matmul is not None or id(H) in absorbed or id(H) in moved:
            continue
        reds = [r for r in H.reductions if id(r) not in drop.get(id(H), ())]
        if not reds:
            continue
        ht = LoopText(em, H, Fn())
        if ht.mode != "block":
            continue
        nk = numel([d for i, d in enumerate(H.shape) if i not in ht.red_axes])
        own = em.ranges(reds)  # what a moved loop reads at its own element
        avail = {id(r) for r in reds}  # the sums and the outputs of loops moved in
        for ei in range(hi + 1, len(ks)):
            E = ks[ei]
            if (E.kind != "loop" or E.matmul is not None or E.reductions or id(E) in absorbed
                    or id(E) in drop or id(E) in moved or numel(E.shape) != nk
                    or not any(id(v.base) in avail for v in E.leaves.values())
                    or any(em.plan.buffers[id(o)].kind != "scratch" for o in E.outputs)):
                continue
            et = LoopText(em, E, Fn())
            if et.mode != "ew" or not et.flat_index:
                continue
            inplace = [w for w in fp[id(E)][1] if any(w[0] == o[0] and w[1] == o[1] and w[2] <= o[2]
                                                      for o in own)]
            efp = ([r for r in fp[id(E)][0] if r not in own], [w for w in fp[id(E)][1] if w not in inplace])
            if clash(efp, fp[id(H)]):
                continue
            if any(clash(fp[id(E)], fp[id(ks[j])]) for j in range(hi + 1, ei)):
                continue
            hosted.setdefault(id(H), []).append((E, E))
            moved[id(E)] = hi
            fp[id(H)] = (fp[id(H)][0] + fp[id(E)][0], fp[id(H)][1] + fp[id(E)][1])
            fp[id(E)] = ([], [])
            own = [o for o in own if not any(w[0] == o[0] and w[1] < o[2] and o[1] < w[2] for w in inplace)]
            own += [w for w in em.ranges(E.outputs) if w not in inplace]
            avail |= {id(o) for o in E.outputs}
    return moved, hosted


def plan_struct_epilogues(em, ks: list, fp: dict, drop: dict, absorbed: dict,
                          hosted: dict) -> tuple[dict, dict]:
    """An elementwise loop over the output of a pooling or pooling-gradient kernel (a thread
    per output element, ``STRUCT_EPILOGUE_KINDS``), reading it at the same element (the relu
    gradient after max pooling's gradient) runs in that kernel's thread right after the
    element is stored, reading it back. Its reductions must have moved elsewhere (the bias
    gradient into the weight-gradient GEMM, ``colsum``); the same checks as for
    plan_red_epilogues (``hosted``: its result; a loop hosting others stays). When the only
    obstacle is that E's output was planned over memory the kernel reads (a dead buffer
    reused), that output gets a region of its own (``em.relocate``): one activation-gradient's
    worth of scratch for a launch. Moving a buffer to fresh memory only removes overlaps, so
    every earlier check still holds. Returns {id(E): host index} and {id(host): [(E, what of
    E runs there)]}."""
    moved: dict[int, int] = {}
    more: dict[int, list] = {}
    for si, S in enumerate(ks):
        if S.kind not in STRUCT_EPILOGUE_KINDS or len(S.outputs) != 1 or id(S) in absorbed:
            continue
        (n,) = S.outputs
        own = em.ranges([n])
        if not own:
            continue
        for ei in range(si + 1, len(ks)):
            E = ks[ei]
            if (E.kind != "loop" or E.matmul is not None or id(E) in absorbed or id(E) in moved
                    or id(E) in hosted or numel(E.shape) != numel(n.shape)
                    or any(id(r) not in drop.get(id(E), ()) for r in E.reductions)):
                continue
            kk = E
            if E.reductions:
                kk = replace(E, reductions=[], outputs=[o for o in E.outputs if id(o) not in drop[id(E)]])
            et = LoopText(em, kk, Fn())
            if (et.mode != "ew" or not et.flat_index or not kk.nodes
                    or not any(v.base is n for v in et.leaves.values())
                    or any(em.plan.buffers[id(o)].kind != "scratch" for o in kk.outputs)):
                continue

            def check() -> tuple | None:
                kfp = em.footprint(kk)
                inplace = [w for w in kfp[1] if any(w[0] == o[0] and w[1] == o[1] and w[2] <= o[2]
                                                    for o in own)]
                efp = ([r for r in kfp[0] if r not in own], [w for w in kfp[1] if w not in inplace])
                if clash(efp, fp[id(S)]) or any(clash(kfp, fp[id(ks[j])]) for j in range(si + 1, ei)):
                    return None
                return kfp

            kfp = check()
            if kfp is None:
                # the plan often puts E's output over an operand of S that dies with E (the
                # relu output max pooling's gradient reads): give it a region of its own
                sizes = dict(em.scratch_sizes)
                outs = [o for o in kk.outputs if id(o) not in em.relocated
                        and not any(o is x for x in em.graph.outputs)
                        and not any(c is o for c, _ in em.plan.copies)]
                for o in outs:
                    em.relocate(o)
                kfp = check() if outs else None
                if kfp is None:
                    for o in outs:
                        del em.relocated[id(o)]
                    em.scratch_sizes = sizes
                    continue
            more[id(S)] = [(E, kk)]
            moved[id(E)] = si
            fp[id(S)] = (fp[id(S)][0] + kfp[0], fp[id(S)][1] + kfp[1])
            fp[id(E)] = ([], [])
            break
    return moved, more


def relocate_update_operands(em, ks: list, absorbed: dict, fused: bool) -> None:
    """Give the scratch operands of every in-place update loop (the gradients an optimizer
    update reads) a region of their own after the plan's arena (``em.relocate``), so the
    plan's reuse of dead buffers does not pin each update right after its gradient: they can
    then wait for the last gradient and run as one multi-tensor launch: a gradient arena,
    bought with one gradient's worth of scratch per parameter (``fused``: the updates a
    fallback GEMM runs as its epilogue read the accumulator: nothing is moved for them)."""
    keep = {id(o) for o in em.graph.outputs} | {id(c) for c, _ in em.plan.copies}
    for k in ks:
        if k.kind != "loop" or k.reductions or id(k) in absorbed:
            continue
        if not any(em.plan.buffers[id(o)].kind == "store" for o in k.outputs):
            continue
        used = [v.base for v in LoopText(em, k, Fn()).leaves.values()]
        for x in used:
            b = em.plan.buffers.get(id(x))
            if (b is None or b.kind != "scratch" or id(x) in keep or id(x) in em.relocated
                    or (fused and x is k.matmul)):
                continue
            em.relocate(x)
