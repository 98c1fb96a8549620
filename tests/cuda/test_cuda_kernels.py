"""Every kernel kind of the CUDA backend against the interpreter, under the simulator
(tiny shapes: a few blocks) or on a real device."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from helpers import check_cuda


def _listing(f):
    return f.kernels()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_elementwise_flat_and_broadcast(dtype):
    x = gc.input(f"ew_x_{dtype}", (3, 5), dtype=dtype)
    b = gc.input(f"ew_b_{dtype}", (5,), dtype=dtype)
    c = gc.input(f"ew_c_{dtype}", (3, 1), dtype=dtype)
    s = gc.input(f"ew_s_{dtype}", (), dtype=dtype)  # a scalar feed: a kernel argument
    h = gc.tanh(x * 2.0 + b) - gc.sigmoid(c) * s   # broadcast leaves: indices decomposed
    e = gc.exp(x) / (1.0 + gc.square(x))            # identity leaves only: flat index
    f = check_cuda([h, e, gc.relu(h) + gc.maximum(e, 0.5)], wrt=[x, b, c])
    assert "ew_" in _listing(f)


def test_transposed_leaf_and_copy_kernel():
    x = gc.input("tr_x", (4, 3))
    y = gc.input("tr_y", (3, 4))
    t = gc.transpose(x)                 # read through a transposed view
    z = gc.exp(t) * y
    check_cuda([z, gc.transpose(y)], wrt=[x, y])   # a transpose as output: a copy kernel


@pytest.mark.parametrize("axes,keep", [(0, False), (1, True), (None, False), ((0, 2), False)])
def test_block_reductions(axes, keep):
    x = gc.input(f"red_x_{axes}_{keep}".replace(" ", ""), (3, 4, 5))
    e = gc.exp(x * 0.5)
    outs = [gc.sum(e, axes, keepdims=keep), gc.max(x, axes, keepdims=keep)]
    check_cuda(outs, wrt=[x])


def test_reductions_with_mixed_axes_use_the_serial_fallback():
    x = gc.input("mix_x", (4, 6))
    e = gc.exp(x)
    f = check_cuda([gc.sum(e, 0), gc.sum(e, 1)])
    assert "serial_" in _listing(f)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_matmul_kernels_and_prologue(ta, tb):
    a = gc.input(f"mm_a_{ta}{tb}", (7, 5) if ta else (5, 7))
    b = gc.input(f"mm_b_{ta}{tb}", (9, 7) if tb else (7, 9))
    A = gc.transpose(a) if ta else a
    B = gc.transpose(b) if tb else b
    bias = gc.input(f"mm_bias_{ta}{tb}", (9,))
    c = A @ B                              # an output: a matmul kernel
    d = gc.relu(A @ B + bias)              # a GEMM prologue with its epilogue
    f = check_cuda([c, d], wrt=[a, b, bias])
    assert "gemm" in _listing(f)


def test_softmax_cross_entropy_fused():
    z = gc.input("sce_z", (5, 4))
    y = gc.input("sce_y", (5,), dtype="int64")
    loss = gc.softmax_cross_entropy(z, y)
    feeds = {"sce_z": np.random.default_rng(1).standard_normal((5, 4)).astype("float32"),
             "sce_y": np.array([0, 3, 1, 2, 3])}
    f = check_cuda([loss], wrt=[z], feeds=feeds)
    assert "sce_" in _listing(f)


def test_bool_and_int_outputs():
    x = gc.input("bi_x", (6,))
    i = gc.input("bi_i", (6,), dtype="int64")
    check_cuda([x > 0.0, gc.cast(x * 3.0, "int64") + i, gc.where(x > 0.0, x, -x)])


def test_forward_function_is_repeatable():
    x = gc.input("rep_x", (8, 3))
    f = gc.compile(gc.sum(gc.exp(x), 0), target="cuda")
    v = np.random.default_rng(2).standard_normal((8, 3)).astype("float32")
    a, b = f(rep_x=v), f(rep_x=v)
    np.testing.assert_array_equal(a, b)  # deterministic reductions: no atomics
    np.testing.assert_allclose(a, np.exp(v).sum(0), rtol=1e-5)


def test_ops_added_by_the_how_to_add_an_op_recipe():
    """log1p and softsign (one OpDef + one DSL function each) run on cuda unchanged."""
    x = gc.input("new_x", (3, 4), dtype="float64")
    check_cuda([gc.softsign(x) + gc.log1p(gc.square(x))], wrt=[x])


def test_stacked_matmul_composite():
    """a @ b for rank-3 operands (a broadcast product reduced over the shared dim) on cuda."""
    a = gc.input("bm_a", (2, 3, 4), dtype="float64")
    b = gc.input("bm_b", (4, 2), dtype="float64")
    check_cuda([a @ b], wrt=[a, b])
