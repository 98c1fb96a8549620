"""The GEMMs of the cuda target: cuBLAS through CuPy (``cupy.matmul(out=)`` on arena views)
when CuPy is importable, else a register-tiled numba.cuda GEMM (a FALLBACK, roughly 10x slower
than cuBLAS on large shapes), which can also run a loop's elementwise epilogue on its output
tiles and the column sums of its B operand (gemm_fused). Batched GEMMs (kind "bmm") are one
``cupy.matmul`` on 3-D views or the fallback with the batch on ``blockIdx.z``."""
from __future__ import annotations

import numpy as np

from ...errors import CompileError
from ...ir import Node
from ...schedule.fusion import Kernel, View
from ..expr import literal, reduce_init
from .kernels.common import view_strides
from .kernels.loops import LoopText
from .launch import Fn, Hosted, Launch, dtname


GEMM_ROLES = ("A", "B", "C", "oa", "sa0", "sa1", "ob", "sb0", "sb1", "oc", "M", "N", "K")


def gemm_text(em, dt: np.dtype, nm: dict | None = None) -> tuple[str, str]:
    """The fallback GEMM's text up to its accumulators (head: declarations; main: the k loop
    over shared-memory tiles), its operands and extents named by ``nm`` (role -> name)."""
    BM, BN, BK, TM, TN = em.lp.gemm
    TX, TY = BN // TN, BM // TM
    NT = TX * TY
    t = f"numba.{dtname(dt)}"
    zero = literal(0, dt)
    A, B, oa, sa0, sa1, ob, sb0, sb1, M, N, K = (
        (nm or {}).get(r, r) for r in ("A", "B", "oa", "sa0", "sa1", "ob", "sb0", "sb1", "M", "N", "K"))
    head = f"""\
    # register-tiled GEMM (FALLBACK when CuPy/cuBLAS is absent): C = A @ B, A and B strided
    As = cuda.shared.array(({BK}, {BM}), {t})
    Bs = cuda.shared.array(({BK}, {BN}), {t})
    acc = cuda.local.array(({TM}, {TN}), {t})
    ar = cuda.local.array({TM}, {t})
    br = cuda.local.array({TN}, {t})
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * {TX} + tx
    row0 = cuda.blockIdx.y * {BM}
    col0 = cuda.blockIdx.x * {BN}
"""
    main = f"""\
    for m in range({TM}):
        for n in range({TN}):
            acc[m, n] = {zero}
    for k0 in range(0, {K}, {BK}):
        for e in range(tid, {BM * BK}, {NT}):
            r = e // {BK}
            gr = row0 + r
            gk = k0 + e - r * {BK}
            As[e - r * {BK}, r] = {A}[{oa} + gr * {sa0} + gk * {sa1}] if (gr < {M} and gk < {K}) else {zero}
        for e in range(tid, {BK * BN}, {NT}):
            r = e // {BN}
            gk = k0 + r
            gc = col0 + e - r * {BN}
            Bs[r, e - r * {BN}] = {B}[{ob} + gk * {sb0} + gc * {sb1}] if (gk < {K} and gc < {N}) else {zero}
        cuda.syncthreads()
        for kk in range({BK}):
            for m in range({TM}):
                ar[m] = As[kk, ty + m * {TY}]
            for n in range({TN}):
                br[n] = Bs[kk, tx + n * {TX}]
            for m in range({TM}):
                for n in range({TN}):
                    acc[m, n] += ar[m] * br[n]
        cuda.syncthreads()
"""
    return head, main


def gemm_tile_loop(em, M: str, N: str) -> list[str]:
    """The loops over a thread's output elements (gr, gc) of its tile (body at 20 spaces)."""
    BM, BN, BK, TM, TN = em.lp.gemm
    TX, TY = BN // TN, BM // TM
    return [f"    for m in range({TM}):", f"        gr = row0 + ty + m * {TY}", f"        if gr < {M}:",
            f"            for n in range({TN}):", f"                gc = col0 + tx + n * {TX}",
            f"                if gc < {N}:"]


def gemm_function(em, dt: np.dtype, batched: bool = False) -> str:
    """The fallback GEMM of dtype ``dt``; ``batched``: a stack of them, ``blockIdx.z``
    striding over the batch (operand offsets advance by the batch strides)."""
    head, main = gemm_text(em, dt)
    store = " " * 20 + "C[oc + gr * N + gc] = acc[m, n]"
    body = main + "\n".join(gemm_tile_loop(em, "M", "N") + [store])
    params = list(GEMM_ROLES)
    if batched:  # every block walks the batch (syncthreads stay uniform: z is the block's)
        for x in "abc":
            body = body.replace(f"[o{x} + ", f"[z{x} + ")
        body = "\n".join(("    " + ln) if ln else ln for ln in body.split("\n"))
        body = ("    for z in range(cuda.blockIdx.z, NB, cuda.gridDim.z):\n        za = oa + z * sab\n"
                "        zb = ob + z * sbb\n        zc = oc + z * M * N\n" + body)
        params += ["NB", "sab", "sbb"]
    name = f"{'bgemm' if batched else 'gemm'}_{dtname(dt)}"
    body = head + body
    if name not in em.functions.sources:
        em.functions.sources[name] = f"{em.deco}\ndef {name}({', '.join(params)}):\n{body}\n"
        em.functions.nparams[name] = len(params)
    return name


def gemm_operands(em, k: Kernel, mm: Node) -> list:
    a, b = mm.inputs
    parts = []
    for v in (k.leaves[id(a)], k.leaves[id(b)], View(mm, mm.shape)):
        w = em.where(v.base)
        if w[0] != "arena":
            raise CompileError(f"cuda: matmul operand {em.site(v.base)} is not an array in device memory")
        parts.append((w[1], w[2], tuple(v.shape), v.perm))
    return parts


def gemm(em, k: Kernel, mm: Node) -> Launch:
    a, b = mm.inputs
    va, vb = k.leaves[id(a)], k.leaves[id(b)]
    M, K = a.shape
    N = b.shape[1]
    parts = gemm_operands(em, k, mm)
    site = f"{em.site(mm)} ({M}x{K} @ {K}x{N})"
    if em.use_cublas:
        return Launch(f"{k.name}.gemm" if k.kind == "loop" else k.name, "cublas", "cupy.matmul", None, None,
                      [], gemm=tuple(parts), comment=site)
    name = gemm_function(em, mm.dtype)
    BM, BN, BK, TM, TN = em.lp.gemm
    (sa0, sa1), (sb0, sb1) = view_strides(va, (M, K)), view_strides(vb, (K, N))
    args = [("arena", parts[0][0]), ("arena", parts[1][0]), ("arena", parts[2][0]),
            ("int", parts[0][1]), ("int", sa0), ("int", sa1), ("int", parts[1][1]), ("int", sb0),
            ("int", sb1), ("int", parts[2][1]), ("int", M), ("int", N), ("int", K)]
    return Launch(f"{k.name}.gemm" if k.kind == "loop" else k.name, "kernel", name,
                  (-(-N // BN), -(-M // BM)), (BN // TN, BM // TM), args, comment=site)


def gemm_fused(em, k: Kernel, epilogue: bool, col: tuple | None) -> Launch:
    """The fallback GEMM of kernel ``k`` with work that would otherwise be launches of their
    own. ``epilogue``: k's elementwise loop runs on each thread's output tile, reading the
    accumulator instead of the GEMM's result (which is then never stored). ``col``:
    ``(rd, U, store)``, ``rd`` a column sum of the GEMM's B operand over its K axis (the bias
    gradient next to ``dW = h^T @ g``: ``db = sum(g, 0)``), computed by the blocks of the
    first row of tiles, a thread per column (sequentially over K: deterministic), and ``U``
    None or an elementwise loop over those columns that reads ``rd`` (the bias update), run
    by the same thread on the sum it just computed (``store``: rd is also written to its
    buffer; not when U is its only reader)."""
    mm = k.matmul
    a, b = mm.inputs
    va, vb = k.leaves[id(a)], k.leaves[id(b)]
    M, K = a.shape
    N = b.shape[1]
    parts = gemm_operands(em, k, mm)
    fn = Fn()
    (sa0, sa1), (sb0, sb1) = view_strides(va, (M, K)), view_strides(vb, (K, N))
    nm = {"A": fn.arr(parts[0][0]), "oa": fn.int(parts[0][1]), "sa0": fn.int(sa0), "sa1": fn.int(sa1),
          "B": fn.arr(parts[1][0]), "ob": fn.int(parts[1][1]), "sb0": fn.int(sb0), "sb1": fn.int(sb1),
          "M": fn.int(M), "N": fn.int(N), "K": fn.int(K)}
    head, main = gemm_text(em, mm.dtype, nm)
    pre: list[str] = []
    tail = gemm_tile_loop(em, nm["M"], nm["N"])
    ind = " " * 20
    comment = f"{em.site(mm)} ({M}x{K} @ {K}x{N})"
    if epilogue:
        t = LoopText(em, k, fn, subst={id(mm): "acc[m, n]"})
        pre += t.prelude("    ")
        tail += [f"{ind}i0 = gr", f"{ind}i1 = gc", f"{ind}i = gr * {nm['N']} + gc"]
        tail += t.element(ind) + t.stores(ind)
        comment += " epilogue: " + " ".join(t.vmap)
    else:
        C, oc = fn.arr(parts[2][0]), fn.int(parts[2][1])
        tail.append(f"{ind}{C}[{oc} + gr * {nm['N']} + gc] = acc[m, n]")
    if col is not None:
        rd, U, store = col
        BN, NT = em.lp.gemm[1], (em.lp.gemm[1] // em.lp.gemm[4]) * (em.lp.gemm[0] // em.lp.gemm[3])
        ind = " " * 16
        tail += ["    if cuda.blockIdx.y == 0:  # column sums of B (the first row of tiles)",
                 f"        for e in range(tid, {BN}, {NT}):", "            gc = col0 + e",
                 f"            if gc < {nm['N']}:", f"{ind}cs = {reduce_init('sum', rd.dtype)}",
                 f"{ind}for kk in range({nm['K']}):",
                 f"{ind}    cs += {nm['B']}[{nm['ob']} + kk * {nm['sb0']} + gc * {nm['sb1']}]"]
        if store:
            w = em.where(rd)
            R, orr = fn.arr(w[1]), fn.int(w[2])
            tail.append(f"{ind}{R}[{orr} + gc] = cs  # sum over K: {em.site(rd)}")
        comment += f" column sums: {em.site(rd)}"
        if U is not None:
            u = LoopText(em, U, fn, subst={id(rd): "cs"}, vp="u")
            pre += u.prelude("    ")
            tail += [f"{ind}i = gc", f"{ind}i0 = gc"] + u.element(ind) + u.stores(ind)
            comment += " then: " + " ".join(u.vmap)
    body = head.rstrip("\n").split("\n") + pre + main.rstrip("\n").split("\n") + tail
    name = em.function(fn, body, "gemm_fused")
    BM, BN, BK, TM, TN = em.lp.gemm
    ln = Launch(f"{k.name}.gemm+{k.name}" if epilogue else f"{k.name}.gemm" if k.kind == "loop" else k.name,
                "kernel", name, (-(-N // BN), -(-M // BM)), (BN // TN, BM // TM), fn.args(), comment=comment)
    ln.src = (fn, body, "gemm_fused")
    return ln


def bmm_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    """batch_matmul: ``op(a[z]) @ op(b[z])`` for every z. cuBLAS: ``cupy.matmul`` on 3-D
    views (a transposed operand is a swapaxes view, read in place). Fallback: the tiled
    GEMM with the batch over ``blockIdx.z``."""
    (n,) = k.nodes
    a, b = n.inputs
    ta, tb = n.attrs["ta"], n.attrs["tb"]
    NB, M, N = n.shape
    K = a.shape[1] if ta else a.shape[2]
    parts = []
    for x, t in ((a, ta), (b, tb), (n, False)):
        w = em.where(k.leaves[id(x)].base if id(x) in k.leaves else x)
        if w[0] != "arena":
            raise CompileError(f"cuda: batch_matmul operand {em.site(x)} is not an array in device memory")
        parts.append((w[1], w[2], tuple(x.shape), (0, 2, 1) if t else None))
    site = f"{em.site(n)} ({NB} x {M}x{K} @ {K}x{N})"
    if em.use_cublas:
        return Launch(k.name, "cublas", "cupy.matmul", None, None, [], gemm=tuple(parts), comment=site)
    name = gemm_function(em, n.dtype, batched=True)
    BM, BN, BK, TM, TN = em.lp.gemm
    sa0, sa1 = (1, M) if ta else (K, 1)  # element (m, k) of op(a[z]) at a[z] + m * sa0 + k * sa1
    sb0, sb1 = (1, K) if tb else (N, 1)
    args = [("arena", parts[0][0]), ("arena", parts[1][0]), ("arena", parts[2][0]),
            ("int", parts[0][1]), ("int", sa0), ("int", sa1), ("int", parts[1][1]), ("int", sb0),
            ("int", sb1), ("int", parts[2][1]), ("int", M), ("int", N), ("int", K),
            ("int", NB), ("int", M * K), ("int", K * N)]
    return Launch(k.name, "kernel", name, (-(-N // BN), -(-M // BM), max(1, min(NB, 65535))),
                  (BN // TN, BM // TM), args, comment=site)
