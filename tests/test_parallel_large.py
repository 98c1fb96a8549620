"""target="parallel" on kernels large enough for prange (emitter.parfor_pays), against the
interpreter: the softmax-CE kernel's row loop (its running max once broke Numba's parfor
lowering: "unexpected cycle in lookup()"), and the new structured kernels; and small kernels
staying serial loops."""
from __future__ import annotations

import re

import numpy as np

import graphc as gc
from graphc.backends.cpu.emitter import parfor_pays


def test_softmax_ce_and_window_kernels_in_parallel_match_the_interpreter():
    rows = 16411
    assert parfor_pays(rows * 16 * 4 * 2, rows * 16 * 5)  # the softmax-CE kernel: logits read, gradient written
    z = gc.input("pz", (None, 16), "float32")
    y = gc.input("py", (None,), "int64")
    w = gc.param("pw", (16,), init="ones")
    x = gc.input("px", (40, 12, 12, 8), "float32")  # a fixed batch of its own
    k = gc.param("pk", (3, 3, 8, 8), init="glorot_uniform")
    img = gc.max_pool2d(gc.relu(gc.conv2d(x, k, padding="same")), 2)
    loss = gc.softmax_cross_entropy(z * w, y) + gc.mean(gc.square(img))
    rng = np.random.default_rng(0)
    feeds = dict(pz=rng.standard_normal((rows, 16)).astype("float32"), py=rng.integers(0, 16, rows),
                 px=rng.standard_normal((40, 12, 12, 8)).astype("float32"))
    par = gc.compile(loss, optimizer=gc.optim.SGD(0.1), target="parallel", seed=1)
    ref = gc.compile(loss, optimizer=gc.optim.SGD(0.1), target="numpy", seed=1)
    for _ in range(2):
        np.testing.assert_allclose(par(**feeds)["loss"], ref(**feeds)["loss"], rtol=1e-5)
    for name, v in ref.params.items():
        np.testing.assert_allclose(par.params[name], v, rtol=1e-4, atol=1e-6)
    assert re.search(r"in prange\(", par.source())
    assert re.search(r"\bsce\s+parallel", par.kernels(rows)), par.kernels(rows)


def test_a_gemm_kernel_needs_a_longer_loop_for_prange():
    """A loop fused behind a GEMM (BLAS's workers spin for a while after it, on the same cores as
    the prange's) pays for a prange only from GEMM_PARFOR_MIN_S; an elementwise loop from PARFOR_MIN_S."""
    from graphc.backends.cpu.emitter import GEMM_PARFOR_MIN_S, PARFOR_MIN_S, SERIAL_BYTES_PER_S
    assert GEMM_PARFOR_MIN_S > PARFOR_MIN_S
    nbytes = 784 * 256 * 4 * 7  # Adam's update of a 784x256 weight: gradient, w, m, v read, w, m, v written
    assert parfor_pays(nbytes, 0) and not parfor_pays(nbytes, 0, gemm=True)
    big = int(GEMM_PARFOR_MIN_S * SERIAL_BYTES_PER_S) + 1
    assert parfor_pays(big, 0, gemm=True) and not parfor_pays(int(PARFOR_MIN_S * SERIAL_BYTES_PER_S) - 1, 0)


def test_parallel_runs_prange_only_where_it_pays():
    """A step whose loops are 32768 float32 items (Adam's update of 64x512 weights: 1.2 MB,
    60 us serially, 87 us under prange here) runs serial loops on target "parallel", which graphc's kernel compiler
    and native driver compile as on target "cpu"; so does one 4 times wider, whose Adam update
    (~170 us estimated) follows its gradient GEMM in the same kernel, where BLAS's threads still
    hold the cores; the same model 32 times wider runs its large loops under prange. Values as
    the interpreter's either way."""
    def mlp(tag, width):
        x = gc.input(f"{tag}x", (None, 64), "float32")
        y = gc.input(f"{tag}y", (None,), "int64")
        w1 = gc.param(f"{tag}w1", (64, width), init="glorot_uniform")
        w2 = gc.param(f"{tag}w2", (width, 10), init="glorot_uniform")
        return gc.softmax_cross_entropy(gc.relu(x @ w1) @ w2, y)

    rng = np.random.default_rng(0)
    feeds = lambda tag: {f"{tag}x": rng.standard_normal((64, 64)).astype("float32"),  # noqa: E731
                         f"{tag}y": rng.integers(0, 10, 64)}
    for tag, width, parallel in (("ps", 512, False), ("pm", 2048, False), ("pl", 16384, True)):
        f = feeds(tag)
        par = gc.compile(mlp(tag, width), optimizer=gc.optim.Adam(1e-3), target="parallel", seed=0)
        ref = gc.compile(mlp(tag, width), optimizer=gc.optim.Adam(1e-3), target="numpy", seed=0)
        for _ in range(2):
            np.testing.assert_allclose(par(**f)["loss"], ref(**f)["loss"], rtol=1e-5)
        np.testing.assert_allclose(par.params[f"{tag}w1"], ref.params[f"{tag}w1"], rtol=1e-4, atol=1e-6)
        assert bool(re.search(r"in prange\(", par.source())) == parallel, (tag, par.kernels(64))
        assert ("parallel" in par.kernels(64).split("\n", 1)[1]) == parallel, par.kernels(64)
        prog = par.program_for(64)
        assert prog.native and bool(prog._kernel_modules) == parallel  # serial kernels: all compiled by graphc
