"""Convolution, pooling and batched matmul on cuda (kernel kinds im2col, col2im, pool2d,
pool2d_grad, bmm) against the interpreter: values and gradients of a small CNN graph (valid /
same padding, stride 2, dilation 2, max and average pooling), the first-maximum rule of max
pooling's gradient on ties, stacked matmul with transposed operands, and Adam steps of a tiny
conv net. The gradient kernels gather (no atomics), so they are deterministic."""
from __future__ import annotations

import os

import numpy as np
import pytest

import graphc as gc
from helpers import check_cuda

rng = np.random.default_rng(0)


def test_conv_and_pooling_values_and_gradients():
    """conv2d = im2col + GEMM, its gradients GEMMs + col2im; pool2d and pool2d_grad (max and avg),
    every geometry attribute exercised: padding, stride, dilation, overlapping windows."""
    x = gc.input("cc_x", (2, 5, 5, 2), "float64")
    w = gc.input("cc_w", (3, 3, 2, 3), "float64")
    outs = [gc.conv2d(x, w),  # valid
            gc.conv2d(x, w, strides=2, padding="same"),
            gc.conv2d(x, w, padding="same", dilation_rate=2),
            gc.max_pool2d(x, 2),  # valid, stride 2: the last row and column are dropped
            gc.max_pool2d(x, 3, strides=2, padding="same"),  # overlapping windows, padding never wins
            gc.avg_pool2d(x, 3, strides=1, padding="same"),  # divisor: the window's pixels in the image
            gc.avg_pool2d(x, (2, 3), strides=(1, 2))]
    f = check_cuda(outs, wrt=[x, w], feeds={"cc_x": rng.standard_normal((2, 5, 5, 2)),
                                            "cc_w": rng.standard_normal((3, 3, 2, 3))})
    listing = f.kernels()
    for kind in (" im2col ", " col2im ", " pool2d ", " pool2d_grad ", " matmul "):
        assert kind in listing, (kind, listing)
    # geometry and extents are kernel arguments: one generated function per kind (and mode)
    infos = f.program_for(None).module.infos
    assert len({i.function for i in infos if i.kind == "im2col"}) == 1, listing
    assert len({i.function for i in infos if i.kind == "col2im"}) == 1, listing


def test_max_pool_gradient_goes_to_the_first_maximum_of_a_tie():
    """As TensorFlow's and PyTorch's kernels: a window whose maximum occurs more than once
    passes its gradient to the first occurrence in row-major order, once; overlapping windows
    (stride 1) sharing that pixel add up."""
    x = gc.input("ct_x", (1, 3, 3, 1), "float64")
    g, = gc.grad(gc.sum(gc.max_pool2d(x, 2, strides=1)), [x])
    X = np.array([[1, 1, 0], [1, 1, 0], [0, 2, 2]], "float64").reshape(1, 3, 3, 1)
    # windows (row-major): [1 1; 1 1] -> (0,0); [1 0; 1 0] -> (0,1); [1 1; 0 2] -> (2,1); [1 0; 2 2] -> (2,1)
    want = np.array([[1, 1, 0], [0, 0, 0], [0, 2, 0]], "float64").reshape(1, 3, 3, 1)
    for target in ("numpy", "cuda"):
        np.testing.assert_array_equal(gc.compile(g, target=target)(ct_x=X), want, err_msg=target)
    check_cuda([gc.max_pool2d(x, 2, strides=1, padding="same")], wrt=[x], feeds={"ct_x": X})


def test_batched_matmul_with_transposed_operands():
    """Stacked ``@`` is one bmm kernel per product (op(a[i]) @ op(b[i])); a swapaxes operand is
    read in place (attrs ta / tb), and the gradients are bmm kernels with the other transposes."""
    a = gc.input("cb_a", (3, 4, 5))
    b = gc.input("cb_b", (3, 5, 2))
    c = gc.input("cb_c", (2, 3, 2, 4))
    outs = [a @ b, gc.swapaxes(a, 1, 2) @ a, a @ gc.swapaxes(a, 1, 2),
            gc.swapaxes(b, 1, 2) @ gc.swapaxes(a, 1, 2), c @ gc.swapaxes(c, -1, -2)]
    f = check_cuda(outs, wrt=[a, b, c])
    listing = f.kernels()
    infos = [i for i in f.program_for(None).module.infos if i.kind == "bmm"]
    ta_tb = {(n.attrs["ta"], n.attrs["tb"]) for i in infos for n in i.nodes}
    assert ta_tb == {(False, False), (True, False), (False, True), (True, True)}, listing
    assert all(ln.function.startswith("bgemm_") for i in infos for ln in i.launches), listing


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1",
                    reason="the stand-in CuPy wraps the simulator's arrays; on a GPU the real one runs")
def test_cublas_launches_bind_transposed_3d_views(monkeypatch):
    """The cuBLAS path (CuPy present): each bmm is one ``cupy.matmul(op(a), op(b), out=c)`` on 3-D
    views of the device arenas, a transposed operand a swapaxes view. Run here with a stand-in
    CuPy that is NumPy on the simulator's device memory (its arrays wrap NumPy arrays), so the
    views, transposes and ``out=`` are those a GPU run binds."""
    import types

    from graphc.backends.cuda import program
    fake = types.SimpleNamespace(asarray=lambda d: d._ary, matmul=np.matmul)
    monkeypatch.setattr(program, "cupy_or_none", lambda: fake)
    a = gc.input("cu_a", (2, 3, 4), "float64")
    x = gc.input("cu_x", (1, 4, 4, 2), "float64")
    w = gc.input("cu_w", (2, 2, 2, 3), "float64")
    outs = [a @ gc.swapaxes(a, 1, 2), gc.swapaxes(a, 1, 2) @ a, gc.conv2d(x, w, padding="same")]
    f = check_cuda(outs, wrt=[a, x, w])
    module = f.program_for(None).module
    assert module.gemm == "cublas"
    bmm = [ln for i in module.infos if i.kind == "bmm" for ln in i.launches]
    assert bmm and all(ln.kind == "cublas" for ln in bmm), f.kernels()
    assert any(part[3] == (0, 2, 1) for ln in bmm for part in ln.gemm[:2]), [ln.gemm for ln in bmm]


def _tiny_cnn():
    r = np.random.default_rng(1)
    x = gc.input("cn_x", (None, 6, 6, 2))
    y = gc.input("cn_y", (None,), dtype="int64")
    w1 = gc.param("cn_w1", (3, 3, 2, 3), init=(0.4 * r.standard_normal((3, 3, 2, 3))).astype("float32"))
    b1 = gc.param("cn_b1", (3,), init=np.zeros(3, "float32"))
    w2 = gc.param("cn_w2", (2, 2, 3, 2), init=(0.4 * r.standard_normal((2, 2, 3, 2))).astype("float32"))
    v = gc.param("cn_v", (2, 3), init=(0.4 * r.standard_normal((2, 3))).astype("float32"))
    h = gc.relu(gc.conv2d(x, w1, padding="same") + b1)
    h = gc.max_pool2d(h, 2)  # (3, 3)
    h = gc.tanh(gc.conv2d(h, w2, strides=2, padding="same"))  # (2, 2): im2col's gradient is a col2im
    h = gc.avg_pool2d(h, 2, strides=1, padding="same")
    return gc.softmax_cross_entropy(gc.global_average_pool2d(h) @ v, y)


def test_tiny_conv_net_trains_as_on_numpy():
    loss = _tiny_cnn()
    ref = gc.compile(loss, optimizer=gc.optim.Adam(0.05), target="numpy")
    step = gc.compile(loss, optimizer=gc.optim.Adam(0.05), target="cuda")
    X = rng.standard_normal((3, 6, 6, 2)).astype("float32")
    Y = np.array([0, 2, 1])
    got = [float(step(cn_x=X, cn_y=Y)["loss"]) for _ in range(3)]
    want = [float(ref(cn_x=X, cn_y=Y)["loss"]) for _ in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert got[-1] < got[0], got
    for k, v in ref.params.items():
        np.testing.assert_allclose(step.params[k], v, rtol=1e-3, atol=1e-5, err_msg=k)
    listing = step.kernels()
    for kind in (" im2col ", " col2im ", " pool2d ", " pool2d_grad "):
        assert kind in listing, (kind, listing)


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
outs, wrt = [], []
for dt in ("float32", "float64"):
    x = gc.input("x" + dt, (None, 5, 5, 2), dt); w = gc.param("w" + dt, (3, 3, 2, 3), dtype=dt)
    a = gc.input("a" + dt, (None, 3, 4), dt)
    outs += [gc.conv2d(x, w, 2, "same"), gc.max_pool2d(x, 2), gc.avg_pool2d(x, 3, 1, "same"),
             a @ gc.swapaxes(a, 1, 2)]
    wrt += [x, w, a]
y = sum(gc.sum(gc.square(o)) for o in outs)
f = gc.compile(outs + gc.grad(y, wrt), target="cpu")
mod = emit_for(lowered(f._program, 2, {}), f._store.layout, lp=REAL)
ptx = compile_ptx(mod, cc=(9, 0))
print("PTX", sorted(k.rsplit("_", 1)[0] for k in ptx))
"""


def test_conv_kernels_compile_to_ptx():
    """NVVM types the real kernels (float32 and float64) as a GPU would: what the simulator,
    running kernels as Python, cannot catch. No device needed."""
    from test_cuda_toolchain import run_ptx
    (line,) = [ln for ln in run_ptx(PTX).splitlines() if ln.startswith("PTX")]
    for kind in ("im2col", "col2im", "pool", "pool_grad", "bgemm"):
        assert line.count(f"'{kind}'") >= 2, (kind, line)
