"""slice / pad / concatenate kernels (ops/slicing.py) on cuda against the interpreter: values and
gradients, operands read through transposed and broadcast views and from a scalar feed."""
from __future__ import annotations

import numpy as np

import graphc as gc
from helpers import check_cuda


def test_slicing_padding_concatenation_and_their_gradients():
    x = gc.input("sl_x", (2, 4, 5), dtype="float64")
    outs = [x[:, 1:3], x[:, ::-2, 3:0:-2], x[..., -1], x[:, None, 0, ::3],
            gc.pad(x, ((0, 0), (1, 0), (2, 1)), constant_values=-1.5),
            gc.concatenate([x, x[:, :2] * 2.0], 1), gc.concatenate([x[..., :1], x, x[..., ::-3]], -1),
            gc.stack([x[:, 0], x[:, 1]], -1), *gc.split(x, [1, -1], axis=2)]
    f = check_cuda(outs, wrt=[x], feeds={"sl_x": np.random.default_rng(0).normal(size=(2, 4, 5))})
    listing = f.kernels()
    for kind in ("slice", "pad", "concat"):
        assert f" {kind} " in listing, listing
    # starts, steps and extents are arguments: every rank-3 slice is one generated function
    rank3 = {i.function for i in f.program_for(None).module.infos if i.kind == "slice" and i.outputs[0].ndim == 3}
    assert len(rank3) == 1, listing


def test_operands_read_through_views_and_scalar_feeds():
    w = gc.input("sl_w", (5, 4))
    s = gc.input("sl_s", ())
    outs = [gc.transpose(w)[1:, ::2], gc.concatenate([gc.transpose(w), gc.broadcast_to(s, (4, 2))], 1),
            gc.pad(gc.transpose(w), 1), gc.broadcast_to(s, (2, 3))[:, 1:],
            gc.pad(gc.broadcast_to(w[0, :1], (3,)), (2, 1))]
    check_cuda(outs, wrt=[w, s], feeds={"sl_w": np.random.default_rng(1).normal(size=(5, 4)).astype("f4"),
                                        "sl_s": np.float32(0.7)})


PTX = """
import sys, numba
import graphc as gc
from graphc.backends.cuda.compat import numba_cuda
from graphc.backends.cuda.emitter import REAL, emit_for, compile_ptx
from graphc.compiler import lowered
try:
    numba_cuda().compile_ptx(lambda a: None, (numba.float32[:],), cc=(9, 0))
except Exception as e:
    print("NO-NVVM", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    sys.exit(0)
x = gc.input("x", (None, 4, 5)); s = gc.input("s", ()); i = gc.input("i", (3, 4), dtype="int64")
outs = [x[:, ::-2, 1:], gc.pad(x, ((0, 0), (1, 2), (0, 1))), gc.concatenate([x, x[:, :1] * 2.0], 1),
        gc.broadcast_to(s, (2, 3))[:, 1:], gc.pad(gc.transpose(i), 1, constant_values=3), gc.stack([i, i])]
outs += gc.grad(gc.sum(outs[0]) + gc.sum(outs[1] * outs[1]) + gc.sum(outs[2]), [x])
f = gc.compile(outs, target="cpu")
mod = emit_for(lowered(f._program, 2, {}), f._store.layout, lp=REAL)
ptx = compile_ptx(mod, cc=(9, 0))
print("PTX", sorted({k.split("_")[0] for k in ptx}))
"""


def test_slicing_kernels_compile_to_ptx():
    """The simulator runs kernels as Python; NVVM types them as a GPU would (no device needed)."""
    from test_cuda_toolchain import run_ptx
    out = run_ptx(PTX)
    for kind in ("slice", "pad", "concat"):
        assert f"'{kind}'" in out, out


def test_split_cotangents_fold_into_one_concatenate():
    """A tensor split into 4 column blocks used in another order: the sum of the blocks'
    pad cotangents is one concatenate (passes/simplify.py) on cuda as well."""
    x = gc.input("sl_g", (3, 8))
    g = [x[:, 2 * k:2 * k + 2] for k in range(4)]
    y = gc.sigmoid(g[2]) * gc.tanh(g[0]) + gc.exp(g[3]) * g[1]
    f = check_cuda([y], wrt=[x], feeds={"sl_g": np.random.default_rng(2).normal(size=(3, 8)).astype("f4")})
    listing = f.kernels()
    assert " concat " in listing and " pad " not in listing, listing
