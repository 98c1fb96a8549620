"""Launches per training step on target="cuda" for the convolution, pooling, batch-norm, dropout
and attention ops (issue 14, "the same for the new ops"): the merges of test_cuda_launches.py
reach through a convolution's reshapes (a conv's bias + relu as its GEMM's epilogue, the bias
gradient summed over (N*H*W, C) by the weight-gradient GEMM, which then runs that bias's
update), an elementwise loop over a reduction's sums runs in the reduction's kernel (a mean's
division, batch normalization's statistics), and on the cuBLAS path every update is one
multi-tensor launch. Each model is trained for a few steps on the simulator with merging on and
off (GRAPHC_CUDA_MERGE=none) and on target="numpy"; the launch counts are asserted exactly."""
from __future__ import annotations


import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda.emitter import REAL, emit_for
from graphc.compiler import lowered
from helpers import use_cublas

BATCH = 2


def cnn(p: str, bn: bool = False, drop: bool = False):
    """conv3x3(same) + bias (with ``bn``: batch norm instead of the bias, which it would cancel,
    its moving statistics updated) -> relu -> maxpool2 -> conv3x3(same) + bias -> relu ->
    global average pool [-> dropout] -> dense -> softmax CE. Images are 4x4: the simulator runs
    every thread as a Python thread."""
    r = np.random.default_rng(1)
    x = gc.input(p + "x", (None, 4, 4, 2))
    y = gc.input(p + "y", (None,), dtype="int64")
    w1 = gc.param(p + "w1", (3, 3, 2, 3), init=(0.4 * r.standard_normal((3, 3, 2, 3))).astype("float32"))
    w2 = gc.param(p + "w2", (3, 3, 3, 4), init=(0.4 * r.standard_normal((3, 3, 3, 4))).astype("float32"))
    b2 = gc.param(p + "b2", (4,), init=np.full(4, 0.05, "float32"))
    v = gc.param(p + "v", (4, 3), init=(0.4 * r.standard_normal((4, 3))).astype("float32"))
    c = gc.param(p + "c", (3,), init=np.zeros(3, "float32"))
    ups = None
    h = gc.conv2d(x, w1, padding="same")
    if bn:
        gamma = gc.param(p + "gamma", (3,), init="ones")
        beta = gc.param(p + "beta", (3,))
        mm = gc.state(p + "mm", (3,), init="zeros")
        mv = gc.state(p + "mv", (3,), init="ones")
        mu, var = gc.moments(h, (0, 1, 2))
        h = gc.batch_normalization(h, mu, var, offset=beta, scale=gamma)
        ups = {mm: 0.9 * mm + 0.1 * mu, mv: 0.9 * mv + 0.1 * var}
    else:
        h = h + gc.param(p + "b1", (3,), init=np.full(3, 0.05, "float32"))
    h = gc.max_pool2d(gc.relu(h), 2)
    h = gc.global_average_pool2d(gc.relu(gc.conv2d(h, w2, padding="same") + b2))
    if drop:
        h = gc.dropout(h, 0.25, seed=3)
    return gc.softmax_cross_entropy(h @ v + c, y), ups


def attention(p: str):
    """One self-attention block over (None, 3, 4): q, k, v dense layers (k without a bias, whose
    gradient is zero: the softmax ignores a shift of a row), softmax(q k^T / 2) v through
    batched GEMMs, an output dense layer + relu + residual, mean over the sequence, a dense
    classifier."""
    T, D = 3, 4
    r = np.random.default_rng(2)
    x = gc.input(p + "x", (None, T, D))
    y = gc.input(p + "y", (None,), dtype="int64")

    def dense(nm, h, a, b, bias=True):
        W = gc.param(p + nm + "W", (a, b), init=(0.5 * r.standard_normal((a, b))).astype("float32"))
        return h @ W + gc.param(p + nm + "b", (b,), init=np.full(b, 0.05, "float32")) if bias else h @ W
    q, k, v = dense("q", x, D, D), dense("k", x, D, D, bias=False), dense("v", x, D, D)
    ctx = gc.softmax((q @ gc.swapaxes(k, -1, -2)) * 0.5, axis=-1) @ v
    o = gc.relu(dense("o", ctx, D, D)) + x
    return gc.softmax_cross_entropy(dense("h", gc.mean(o, 1), D, 3), y), None


MODELS = {"cnn": lambda p: cnn(p), "cnn_bn_dropout": lambda p: cnn(p, bn=True, drop=True),
          "attention": attention}
# launches per step at batch 4, numba.cuda kernels + cuBLAS GEMMs: merged, then GRAPHC_CUDA_MERGE=none
COUNTS = {
    ("cnn", "fallback"): ((16, 0), (29, 0)),
    ("cnn", "cublas"): ((13, 8), (21, 8)),
    ("cnn_bn_dropout", "fallback"): ((32, 0), (47, 0)),
    ("cnn_bn_dropout", "cublas"): ((26, 8), (39, 8)),
    ("attention", "fallback"): ((26, 0), (45, 0)),
    ("attention", "cublas"): ((15, 18), (27, 18)),
}


def feeds(p: str, model: str, i: int) -> dict:
    rng = np.random.default_rng(10 + i)
    shape = (BATCH, 3, 4) if model == "attention" else (BATCH, 4, 4, 2)
    return {p + "x": rng.standard_normal(shape).astype("float32"), p + "y": rng.integers(0, 3, BATCH)}


def train(model: str, target: str, monkeypatch, merge: str | None = None, steps: int = 2):
    p = f"{model[:3]}{target[:2]}{merge or 'all'}_"
    loss, ups = MODELS[model](p)
    if merge is not None:
        monkeypatch.setenv("GRAPHC_CUDA_MERGE", merge)
    step = gc.compile(loss, optimizer=gc.optim.Adam(2e-2), target=target, updates=ups, seed=0)
    losses = [float(step(**feeds(p, model, i))["loss"]) for i in range(steps)]
    monkeypatch.delenv("GRAPHC_CUDA_MERGE", raising=False)
    strip = lambda d: {k[len(p):]: np.asarray(v) for k, v in d.items()}  # noqa: E731
    return step, losses, strip(step.params), strip(step.state_dict()["state"])


def close(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=f"{what}: {k}")


def counts(step) -> tuple:
    c = step.program_for(BATCH).launches_per_step()
    return c["kernels"], c["cublas"]


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("path", ["fallback", "cublas"])
def test_merged_step_equals_numpy_and_the_unmerged_step(model, path, monkeypatch):
    if path == "cublas":
        use_cublas(monkeypatch)
    _, ref_losses, ref_params, ref_state = train(model, "numpy", monkeypatch)
    step, losses, params, state = train(model, "cuda", monkeypatch)
    plain, plain_losses, plain_params, plain_state = train(model, "cuda", monkeypatch, merge="none")
    assert step.program_for(BATCH).module.gemm == ("cublas" if path == "cublas" else "numba-fallback")
    merged_n, plain_n = COUNTS[(model, path)]
    assert counts(step) == merged_n, step.kernels()
    assert counts(plain) == plain_n, plain.kernels()
    assert sum(merged_n) < sum(plain_n)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-5)
    close(params, ref_params, "params vs numpy")
    close(params, plain_params, "params vs unmerged")
    close(state, ref_state, "state vs numpy")  # Adam's moments and the moving statistics
    close(state, plain_state, "state vs unmerged")
    assert losses[-1] != losses[0]


@pytest.mark.parametrize("model", list(MODELS))
def test_device_free_launch_counts(model):
    """The launch lists a GPU runs (REAL launch parameters), with and without merging, on both
    GEMM paths: the same counts as the simulator's."""
    loss, ups = MODELS[model](f"df{model[:3]}_")
    cpu = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cpu", updates=ups)
    low = lowered(cpu._program, BATCH, {})
    for path in ("fallback", "cublas"):
        for merge, want in zip(("all", "none"), COUNTS[(model, path)]):
            mod = emit_for(low, cpu._store.layout, use_cublas=path == "cublas", lp=REAL, merge=merge)
            kinds = [ln.kind for ln in mod.launches]
            names = [ln.name for ln in mod.launches]
            assert (kinds.count("kernel"), kinds.count("cublas")) == want, (path, merge, names)
            covered = {m.split(".")[0] for ln in mod.launches for m in (ln.merged or (ln.name,))}
            assert covered == {k.name for k in low.plan.kernels
                               if k.nodes or k.reductions or k.matmul is not None}, (path, merge)


def _cnn_modules():
    loss, _ = cnn("dfs_")
    cpu = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cpu")
    low = lowered(cpu._program, BATCH, {})
    return low, {path: emit_for(low, cpu._store.layout, use_cublas=path == "cublas", lp=REAL, merge="all")
                 for path in ("fallback", "cublas")}


def test_conv_merges_reach_through_the_reshapes():
    """Fallback GEMM: the first conv's bias + relu are its GEMM's epilogue (read through the
    (N*H*W, C) reshape); each conv's weight-gradient GEMM sums the bias gradient over N*H*W
    (the relu-gradient loop keeps only its elementwise part, which then runs in max pooling's
    gradient kernel, on each pixel just written) and runs the bias's Adam update, and its own
    weight's; the pooled mean's division runs in the pooling sum's kernel."""
    low, mods = _cnn_modules()
    ks = {k.name: k for k in low.plan.kernels}
    names = [ln.name for ln in mods["fallback"].launches]
    conv_dw = [n for n in names if ".sum+" in n]
    assert len(conv_dw) == 2, names  # both convolutions' bias gradients, summed by their dW GEMM
    for n in conv_dw:
        gemm, _, red, upd = n.split("+")
        assert ks[gemm.split(".")[0]].gemm_views, n  # a (27, 4) / (18, 3) GEMM read through a reshape
        assert sorted(ks[red.split(".")[0]].reductions[0].attrs["axes"]) == [0, 1, 2], n
        assert ks[upd].shape in ((3,), (4,)) and ks[upd].kind == "loop", n
    assert not any(ln.function.startswith("multi_") for ln in mods["fallback"].launches), names
    epi = [ln for ln in mods["fallback"].launches if ln.function.startswith("block_") and "+" in ln.name]
    assert len(epi) == 1 and "then:" in epi[0].comment, names  # global average pool: sum, then / 4
    (pg,) = [ln for ln in mods["fallback"].launches if ln.function.startswith("pool_grad_")]
    assert len(pg.merged) == 2 and "then:" in pg.comment and "where" in pg.comment, names
    relu_grad = ks[pg.merged[1]]
    assert any(f"{relu_grad.name}.sum" in n for n in conv_dw), names  # its bias-gradient sum: in the dW GEMM
    # cuBLAS: all five parameters' updates (two conv kernels, their biases, the dense weight) are
    # one multi-tensor launch; the dense bias's update runs in the softmax-CE kernel
    (multi,) = [ln for ln in mods["cublas"].launches if ln.function.startswith("multi_")]
    assert len(multi.merged) == 5, [ln.name for ln in mods["cublas"].launches]
    (dt, off, tab), = mods["cublas"].tables
    ints = [a[1] for a in multi.args if a[0] == "int"]
    rows = tab.reshape(ints[1], -1)
    assert int((rows[:, -1] - rows[:, -2]).sum()) == 3 * 3 * 2 * 3 + 3 + 3 * 3 * 3 * 4 + 4 + 4 * 3


def test_reduction_epilogues_equal_numpy_and_wait_for_their_operands(monkeypatch):
    """A mean's division and the moments' divisions run in their sums' kernels (one launch
    each instead of two); a loop reading the sums of two reductions runs in the later one's
    kernel, never moved ahead of the other's result, and a one-element loop's scalar prelude
    that reads the sums runs after them; with the ``epilogue`` merge off nothing moves. Values
    equal numpy and the unmerged program."""
    x = gc.input("re_x", (None, 5))
    z = gc.input("re_z", (None, 4))
    mu, var = gc.moments(x, (0,))
    ratio = gc.sum(x, 1) / gc.max(z, 1)  # reads two reductions' results
    # a one-element loop whose scalar prelude reads the sums (they must be written first)
    total = gc.sum(gc.square(x)) * 0.5 + gc.max(gc.abs(z)) * 2.0
    outs = [gc.mean(x, 1), mu, var, ratio, total]
    rng = np.random.default_rng(3)
    feed = {"re_x": rng.standard_normal((3, 5)).astype("float32"),
            "re_z": (rng.random((3, 4)) + 0.5).astype("float32")}
    want = gc.compile(outs, target="numpy")(**feed)
    got = {}
    for merge in ("all", "none", "multi,fold,colsum"):
        monkeypatch.setenv("GRAPHC_CUDA_MERGE", merge)
        f = gc.compile(outs, target="cuda")
        got[merge] = (f(**feed), f.program_for(3).module)
        for a, b in zip(got[merge][0], want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=merge)
    monkeypatch.delenv("GRAPHC_CUDA_MERGE")
    merged, plain, off = (got[m][1] for m in ("all", "none", "multi,fold,colsum"))
    assert not any(ln.function.startswith("block_") and "+" in ln.name for ln in off.launches), \
        [ln.name for ln in off.launches]  # (the other merges still run)
    names = [ln.name for ln in merged.launches]
    assert len(merged.launches) == len(plain.launches) - 5, names  # mean, ratio, total, the moments' two
    assert sum(ln.function.startswith("block_") and "+" in ln.name for ln in merged.launches) == 4, names
    # the ratio's and the total's loops sit in whichever of their two reductions runs second
    ks = f.program_for(3).plan.kernels
    order = [ln.name for ln in plain.launches]
    checked = 0
    for rk in [k for k in ks if k.kind == "loop" and not k.reductions]:
        reads = {id(x) for n in rk.prelude + rk.nodes for x in n.inputs}
        producers = [k for k in ks if any(id(r) in reads for r in k.reductions)]
        if len(producers) < 2:
            continue
        later = max(producers, key=lambda k: order.index(k.name))
        (host,) = [ln for ln in merged.launches if rk.name in ln.merged]
        assert host.merged[0] == later.name, (names, rk.name, later.name)
        assert "then:" in host.comment, host.comment
        checked += 1
    assert checked == 2, names  # the ratio and the total


PTX = """
import sys
import graphc as gc
from graphc.backends.cuda.emitter import REAL, emit_for, compile_ptx
from graphc.compiler import lowered
sys.path.insert(0, "tests/cuda")
from test_cuda_launches_conv import MODELS
for name, build in MODELS.items():
    loss, ups = build("ptx" + name[:3] + "_")
    step = gc.compile(loss, optimizer="adam", target="cpu", updates=ups)
    low = lowered(step._program, 8, {})
    for cublas in (False, True):
        mod = emit_for(low, step._store.layout, use_cublas=cublas, lp=REAL, merge="all")
        ptx = compile_ptx(mod, cc=(9, 0))
        assert ptx and all(".entry" in p or ".visible" in p for p in ptx.values())
        merged = sum("+" in ln.name for ln in mod.launches if ln.kind == "kernel")
        print("PTX", name, cublas, len(ptx), merged)
"""


def test_merged_conv_and_attention_kernels_compile_to_ptx():
    """NVVM types every merged kernel of the three models as a GPU would (a reduction kernel
    running loops on its sums, a fallback GEMM summing a reshaped B's columns, the multi-tensor
    update): the simulator runs them as Python and would miss typing errors. No device needed."""
    from test_cuda_toolchain import _run, require_nvvm
    require_nvvm()
    r = _run(PTX)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("PTX")]
    assert len(lines) == 6, r.stdout
    assert all(int(ln[-1]) >= 3 for ln in lines), r.stdout  # merged launches in every module
