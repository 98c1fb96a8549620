"""softmax_cross_entropy and sce_grad (kind "sce"): one block, a thread per row."""
from __future__ import annotations

import numpy as np

from ....errors import CompileError
from ....schedule.fusion import Kernel
from ...expr import literal, reduce_init
from ..launch import Fn, Hosted, Launch
from .common import view_strides
from .loops import LoopText


def sce_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    z, y = k.nodes[0].inputs
    loss = next((n for n in k.nodes if n.op == "softmax_cross_entropy"), None)
    grad = next((n for n in k.nodes if n.op == "sce_grad"), None)
    nrow, ncls = z.shape
    fn = Fn()
    vz, vy = k.leaves[id(z)], k.leaves[id(y)]
    wz, wy = em.where(vz.base), em.where(vy.base)
    if wz[0] != "arena" or wy[0] != "arena":
        raise CompileError(f"cuda: softmax_cross_entropy operands must be arrays ({em.site(k.nodes[0])})")
    Z, oz = fn.arr(wz[1]), fn.int(wz[2])
    zs0, zs1 = (fn.int(s) for s in view_strides(vz, tuple(z.shape)))
    Y, oy = fn.arr(wy[1]), fn.int(wy[2])
    (ys,) = (fn.int(s) for s in view_strides(vy, tuple(y.shape)))
    if loss is not None:
        wl = em.where(loss)
        LA, ol = fn.arr(wl[1]), fn.int(wl[2])
    if grad is not None:
        wg = em.where(grad)
        G, og = fn.arr(wg[1]), fn.int(wg[2])
    n, c = fn.int(nrow), fn.int(ncls)
    dt = z.dtype
    B = em.lp.block
    body = [
        f"    sh = cuda.shared.array({B}, numba.float64)",
        "    t = cuda.threadIdx.x",
        f"    total = {literal(0, np.float64)}",
        f"    inv = {literal(1, dt)} / {n}",
        f"    for i in range(t, {n}, {B}):",
        f"        zb = {oz} + i * {zs0}",
        f"        m = {Z}[zb]",
        f"        for j in range(1, {c}):",
        f"            zj = {Z}[zb + j * {zs1}]",
        "            m = zj if zj > m else m",
        f"        s = {literal(0, dt)}",
        f"        for j in range({c}):",
        f"            s += math.exp({Z}[zb + j * {zs1}] - m)",
        "        lse = math.log(s) + m",
        f"        lab = {Y}[{oy} + i * {ys}]",
    ]
    if loss is not None:
        body.append(f"        total += lse - {Z}[zb + lab * {zs1}]  # softmax_cross_entropy")
    if grad is not None:
        body += [f"        for j in range({c}):",
                 f"            {G}[{og} + i * {c} + j] = math.exp({Z}[zb + j * {zs1}] - lse) * inv  # sce_grad",
                 f"        {G}[{og} + i * {c} + lab] -= inv"]
    if loss is not None:
        # (locals never look like parameters, o<k> / s<k>: a bias update may run in here)
        body += ["    sh[t] = total", "    cuda.syncthreads()", f"    half = {B // 2}", "    while half > 0:",
                 "        if t < half:", "            sh[t] = sh[t] + sh[t + half]",
                 "        cuda.syncthreads()", "        half //= 2",
                 "    if t == 0:", f"        {LA}[{ol}] = sh[0] / {n}  # mean loss (tree)"]
    comment = " ".join(em.site(x) for x in k.nodes)
    if hosted.col is not None:  # column sums of the gradient (the bias gradient), then its update
        rd, U, store = hosted.col
        body += ["    cuda.syncthreads()  # every row of the gradient is written",
                 f"    for j in range(t, {c}, {B}):", f"        cs = {reduce_init('sum', rd.dtype)}",
                 f"        for i in range({n}):", f"            cs += {G}[{og} + i * {c} + j]"]
        if store:
            w = em.where(rd)
            body.append(f"        {fn.arr(w[1])}[{fn.int(w[2])} + j] = cs  # sum over rows: {em.site(rd)}")
        comment += f" column sums: {em.site(rd)}"
        if U is not None:
            u = LoopText(em, U, fn, subst={id(rd): "cs"}, vp="u")
            body = u.prelude("    ") + body + ["        i = j", "        i0 = j"]
            body += u.element("        ") + u.stores("        ")
            comment += " then: " + " ".join(u.vmap)
    name = em.function(fn, body, "sce")
    return Launch(k.name, "kernel", name, 1, B, fn.args(), comment=comment, src=(fn, body, "sce"))
