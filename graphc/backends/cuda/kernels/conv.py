"""im2col, col2im, pool2d and pool2d_grad (ops/conv.py): NHWC images, a thread per element."""
from __future__ import annotations

import numpy as np

from ....ir import Node
from ....schedule.fusion import Kernel
from ...base import numel
from ...expr import literal
from ..launch import Fn, Hosted, Launch, dtname
from .common import dense
from .loops import LoopText


def geometry(fn: Fn, n: Node, image: tuple, out: tuple) -> dict:
    """Window geometry and extents as kernel arguments (named by their role), so one
    generated function serves every image size, batch and window of a kind."""
    from ....ops.conv import geometry
    kh, kw, sh, sw, dh, dw, pt, _, pl, _ = geometry(n.attrs)
    vals = dict(kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=pt, pl=pl, H=image[1], W=image[2],
                C=image[3], OH=out[1], OW=out[2])
    return {k: fn.int(v) for k, v in vals.items()}


def pixel(g: dict, what: str) -> list[str]:
    """(b, y, z, c) of the image pixel ``e`` (what="image") or (b, i, j, c) of the output
    position ``e`` (what="out"), C innermost."""
    H, W = (g["H"], g["W"]) if what == "image" else (g["OH"], g["OW"])
    r, s = ("y", "z") if what == "image" else ("i", "j")
    return [f"        q = e // {g['C']}", f"        c = e - q * {g['C']}", f"        {s} = q % {W}",
            f"        q = q // {W}", f"        {r} = q % {H}", f"        b = q // {H}"]


def covering(g: dict, ind: str) -> list[str]:
    """Loops over the output positions (i, j) whose window covers image pixel (y, z), with
    the window offset (u, v) that lands on it, in row-major (i, j) order: the order in
    which the cpu kernel accumulates, so the sums are deterministic and equal to its."""
    return [f"{ind}for uu in range({g['kh']}):",
            f"{ind}    u = {g['kh']} - 1 - uu  # u descending: i ascending",
            f"{ind}    ty = y + {g['pt']} - u * {g['dh']}",
            f"{ind}    if ty >= 0:",
            f"{ind}        i = ty // {g['sh']}",
            f"{ind}        if i * {g['sh']} == ty and i < {g['OH']}:",
            f"{ind}            for vv in range({g['kw']}):",
            f"{ind}                v = {g['kw']} - 1 - vv",
            f"{ind}                tz = z + {g['pl']} - v * {g['dw']}",
            f"{ind}                if tz >= 0:",
            f"{ind}                    j = tz // {g['sw']}",
            f"{ind}                    if j * {g['sw']} == tz and j < {g['OW']}:"]


def window_pixels(g: dict, ind: str, s: str = "") -> list[str]:
    """Loops over window (i, j)'s pixels (y<s>, z<s>) inside the image, row-major."""
    return [f"{ind}for u{s} in range({g['kh']}):",
            f"{ind}    y{s} = i * {g['sh']} - {g['pt']} + u{s} * {g['dh']}",
            f"{ind}    if y{s} >= 0 and y{s} < {g['H']}:",
            f"{ind}        for v{s} in range({g['kw']}):",
            f"{ind}            z{s} = j * {g['sw']} - {g['pl']} + v{s} * {g['dw']}",
            f"{ind}            if z{s} >= 0 and z{s} < {g['W']}:"]


def img(g: dict, y: str, z: str) -> str:
    """Element offset of pixel (b, y, z, c) in an NHWC image."""
    return f"((b * {g['H']} + {y}) * {g['W']} + {z}) * {g['C']} + c"


def recip(count: str, dt) -> str:
    """1 / count in the kernel's float dtype (float32 arithmetic stays float32)."""
    return f"(1.0 / {count})" if np.dtype(dt) == np.float64 else f"np.{dtname(dt)}(1.0 / {count})"


def window_loop(em, fn: Fn, n: Node, size: int) -> tuple[str, str, list[str]]:
    w = em.where(n)
    O, oo = fn.arr(w[1]), fn.int(w[2])
    return O, oo, [f"    for e in range(cuda.grid(1), {fn.int(size)}, cuda.gridsize(1)):"]


def launch_over(em, k: Kernel, hosted: Hosted, n: Node, fn: Fn, body: list[str], tag: str, size: int) -> Launch:
    vmap = []
    for q, e in enumerate(hosted.epi):  # an elementwise loop on the element just written (merge.plan_struct_epilogues)
        et = LoopText(em, e, fn, vp=f"e{q}v", idx="e")
        body = body + et.prelude("        ") + et.element("        ") + et.stores("        ")
        vmap += ["then:"] + et.vmap
    name = em.function(fn, body, tag)
    grid = max(1, min(-(-size // em.lp.block), em.lp.max_grid))
    return Launch(k.name, "kernel", name, grid, em.lp.block, fn.args(),
                  comment=" ".join([em.site(n)] + vmap), src=(fn, body, tag))


def im2col_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    """im2col: a thread per output element (b, i, j, (u, v, c)): the image pixel under
    window offset (u, v) of output position (i, j), or 0 in the padding."""
    (n,) = k.nodes
    x = n.inputs[0]
    fn = Fn()
    O, oo, body = window_loop(em, fn, n, numel(n.shape))
    X, ox = dense(em, fn, k, x)
    g = geometry(fn, n, x.shape, n.shape)
    kc = fn.int(n.shape[3])
    body += [f"        q = e // {kc}", f"        r = e - q * {kc}", f"        j = q % {g['OW']}",
             f"        q = q // {g['OW']}", f"        i = q % {g['OH']}", f"        b = q // {g['OH']}",
             f"        t = r // {g['C']}", f"        c = r - t * {g['C']}", f"        u = t // {g['kw']}",
             f"        v = t - u * {g['kw']}",
             f"        y = i * {g['sh']} - {g['pt']} + u * {g['dh']}",
             f"        z = j * {g['sw']} - {g['pl']} + v * {g['dw']}",
             f"        if y >= 0 and y < {g['H']} and z >= 0 and z < {g['W']}:",
             f"            {O}[{oo} + e] = {X}[{ox} + {img(g, 'y', 'z')}]  # im2col",
             "        else:",
             f"            {O}[{oo} + e] = {literal(0, n.dtype)}  # im2col: padding"]
    return launch_over(em, k, hosted, n, fn, body, "im2col", numel(n.shape))


def col2im_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    """col2im without atomics: a thread per image pixel gathers the patch values of the
    output positions whose window covers it (at most kh * kw of them)."""
    (n,) = k.nodes
    cols = n.inputs[0]
    fn = Fn()
    O, oo, body = window_loop(em, fn, n, numel(n.shape))
    G, og = dense(em, fn, k, cols)
    g = geometry(fn, n, n.shape, cols.shape)
    kc = fn.int(cols.shape[3])
    body += pixel(g, "image") + [f"        acc = {literal(0, n.dtype)}"]
    body += covering(g, "        ")
    body += [f"                                acc += {G}[{og} + ((b * {g['OH']} + i) * {g['OW']} + j) * {kc} "
             f"+ (u * {g['kw']} + v) * {g['C']} + c]  # col2im: gather",
             f"        {O}[{oo} + e] = acc"]
    return launch_over(em, k, hosted, n, fn, body, "col2im", numel(n.shape))


def pool2d_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    """pool2d: a thread per output element: the max (padding never wins; NaN does) or the
    mean over the window's pixels inside the image."""
    (n,) = k.nodes
    x = n.inputs[0]
    mx = n.attrs["mode"] == "max"
    fn = Fn()
    O, oo, body = window_loop(em, fn, n, numel(n.shape))
    X, ox = dense(em, fn, k, x)
    g = geometry(fn, n, x.shape, n.shape)
    body += pixel(g, "out") + [f"        acc = {literal(-np.inf if mx else 0, n.dtype)}", "        cnt = 0"]
    body += window_pixels(g, "        ")
    body += ["                        cnt += 1",
             f"                        xv = {X}[{ox} + {img(g, 'y', 'z')}]"]
    if mx:
        body += ["                        if xv > acc or xv != xv:  # max_pool2d (NaN wins)",
                 "                            acc = xv",
                 f"        {O}[{oo} + e] = acc"]
    else:
        body += ["                        acc += xv  # avg_pool2d",
                 f"        {O}[{oo} + e] = acc * {recip('cnt', n.dtype)}"]
    return launch_over(em, k, hosted, n, fn, body, "pool", numel(n.shape))


def pool2d_grad_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    """pool2d_grad without atomics: a thread per image pixel gathers the gradient of every
    output position whose window covers it: max pooling where the pixel is that window's
    first maximum (row-major; the window's maximum is searched again), average pooling
    times one over the window's pixel count inside the image."""
    (n,) = k.nodes
    x, gr = n.inputs
    mx = n.attrs["mode"] == "max"
    fn = Fn()
    O, oo, body = window_loop(em, fn, n, numel(n.shape))
    G, og = dense(em, fn, k, gr)
    g = geometry(fn, n, x.shape, gr.shape)
    body += pixel(g, "image") + [f"        acc = {literal(0, n.dtype)}"]
    body += covering(g, "        ")
    ind = " " * 32  # inside _covering's loops
    body.append(f"{ind}gv = {G}[{og} + ((b * {g['OH']} + i) * {g['OW']} + j) * {g['C']} + c]")
    if mx:
        X, ox = dense(em, fn, k, x)
        body += [f"{ind}best = {literal(-np.inf, n.dtype)}", f"{ind}by = -1", f"{ind}bz = -1"]
        body += window_pixels(g, ind, "2")
        body += [f"{ind}                xv = {X}[{ox} + {img(g, 'y2', 'z2')}]",
                 f"{ind}                if by < 0 or xv > best or (xv != xv and best == best):",
                 f"{ind}                    best = xv",
                 f"{ind}                    by = y2",
                 f"{ind}                    bz = z2",
                 f"{ind}if by == y and bz == z:",
                 f"{ind}    acc += gv  # max_pool2d grad: the first maximum"]
    else:
        body += [f"{ind}cy = 0", f"{ind}for u2 in range({g['kh']}):",
                 f"{ind}    y2 = i * {g['sh']} - {g['pt']} + u2 * {g['dh']}",
                 f"{ind}    if y2 >= 0 and y2 < {g['H']}:", f"{ind}        cy += 1",
                 f"{ind}cz = 0", f"{ind}for v2 in range({g['kw']}):",
                 f"{ind}    z2 = j * {g['sw']} - {g['pl']} + v2 * {g['dw']}",
                 f"{ind}    if z2 >= 0 and z2 < {g['W']}:", f"{ind}        cz += 1",
                 f"{ind}acc += gv * {recip('(cy * cz)', n.dtype)}  # avg_pool2d grad"]
    body.append(f"        {O}[{oo} + e] = acc")
    return launch_over(em, k, hosted, n, fn, body, "pool_grad", numel(n.shape))
