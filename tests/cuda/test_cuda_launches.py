"""Launches per training step on target="cuda" (issue 14, "fewer launches"): GEMM epilogues and
bias gradients run inside the fallback GEMM, identical elementwise launches (every parameter's
optimizer update) are one multi-tensor launch, and the step counter is folded into another
launch. Every merged program is checked against target="numpy" and against the same program
with merging switched off (GRAPHC_CUDA_MERGE=none: one launch per scheduled kernel and GEMM)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda.emitter import REAL, emit_for, merge_option
from graphc.compiler import lowered
from helpers import use_cublas
from graphc.errors import CompileError

FEAT, HID, HID2, CLS, BATCH = 6, 5, 4, 3, 4


def mlp(layers: int = 2, dtype: str = "float32"):
    x = gc.input("x", (None, FEAT), dtype=dtype)
    y = gc.input("y", (None,), dtype="int64")
    widths = [FEAT, HID, CLS] if layers == 2 else [FEAT, HID, HID2, CLS]
    h = x
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        W = gc.param(f"W{i}", (a, b), init="he_normal", dtype=dtype)
        bias = gc.param(f"b{i}", (b,), dtype=dtype)
        h = h @ W + bias
        if i < len(widths) - 2:
            h = gc.relu(h)
    return gc.softmax_cross_entropy(h, y)


def batch(seed, n=BATCH, dtype="float32"):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, FEAT)).astype(dtype), "y": rng.integers(0, CLS, n)}


def train(loss, target, opt, steps=3, merge=None, monkeypatch=None, feeds=batch, seed=0):
    if merge is not None:
        monkeypatch.setenv("GRAPHC_CUDA_MERGE", merge)
    step = gc.compile(loss, optimizer=opt(), target=target, seed=seed)
    losses = [step(**feeds(i))["loss"] for i in range(steps)]
    if merge is not None:
        monkeypatch.delenv("GRAPHC_CUDA_MERGE")
    return step, losses


def close(a, b, rtol=5e-5):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=rtol, err_msg=k)


def covered(module) -> set:
    """The schedule's kernel names that the launch list does the work of."""
    return {m.split(".")[0] for ln in module.launches for m in (ln.merged or (ln.name,))}


def test_two_layer_mlp_step_is_six_launches_on_the_fallback_gemm(monkeypatch):
    loss = mlp()
    adam = lambda: gc.optim.Adam(1e-2)  # noqa: E731
    ref, ref_losses = train(loss, "numpy", adam)
    step, losses = train(loss, "cuda", adam)
    unmerged, un_losses = train(loss, "cuda", adam, merge="none", monkeypatch=monkeypatch)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    np.testing.assert_allclose(losses, un_losses, rtol=2e-5)
    close(step.params, ref.params)
    close(step.params, unmerged.params)
    close(step.state_dict()["state"], ref.state_dict()["state"])

    prog, base = step.program_for(BATCH), unmerged.program_for(BATCH)
    c, c0 = prog.launches_per_step(), base.launches_per_step()
    assert (c["kernels"], c["cublas"]) == (6, 0), prog.kernel_listing()
    assert (c0["kernels"], c0["cublas"]) == (15, 0), base.kernel_listing()
    listing = step.kernels()
    assert "launches per step: 6 (6 numba.cuda kernels + 0 cuBLAS GEMMs)" in listing, listing
    assert "merged launches: 6 launches for the schedule's 15" in listing, listing
    assert "merged launches: 15 launches for the schedule's 15" in unmerged.kernels()
    # the listing says which scheduled kernels each launch does: all ten are somewhere
    names = [ln.name for ln in prog.module.launches]
    assert covered(prog.module) == {f"k{i}" for i in range(10)}, names
    assert all(ln.name in listing for ln in prog.module.launches), listing
    # epilogues in the GEMM, the bias gradient + its update in the dW GEMM, t+1 folded
    assert sum("gemm" in n for n in names) == 5 and sum(n.count("+") >= 3 for n in names) == 2, names
    assert any(n.startswith("k0+") for n in names), names
    # both weight updates (GEMM + bias column sums + both Adam updates) are one function
    fused = [ln.function for ln in prog.module.launches if ln.name.count("+") >= 3]
    assert len(set(fused)) == 1, names


def test_cublas_path_launch_list_is_ten():
    """Device-free: the launch list a GPU with CuPy runs. cuBLAS takes no epilogues, so the five
    GEMMs stay launches of their own (their bias/activation loops too); the softmax-CE kernel
    also sums its gradient's columns (db2) and runs b2's update, t+1 is folded into it ahead
    of a barrier, and the other three optimizer updates are ONE multi-tensor launch."""
    loss = mlp()
    cpu = gc.compile(loss, optimizer=gc.optim.Adam(1e-3), target="cpu")
    low = lowered(cpu._program, 8, {})
    merged = emit_for(low, cpu._store.layout, use_cublas=True, lp=REAL, merge="all")
    plain = emit_for(low, cpu._store.layout, use_cublas=True, lp=REAL, merge="none")
    names = [ln.name for ln in merged.launches]
    kinds = [ln.kind for ln in merged.launches]
    assert (kinds.count("cublas"), kinds.count("kernel")) == (5, 5), names
    assert len(plain.launches) == 15
    assert "k0+k3+k4+k5" in names, names  # step counter, softmax-CE, db2, b2's update
    (multi,) = [ln for ln in merged.launches if ln.function.startswith("multi_")]
    assert len(multi.merged) == 3 and len(set(multi.merged)) == 3, multi.name  # b1, W2, W1 updates
    assert covered(merged) == covered(plain) == {f"k{i}" for i in range(10)}
    # its table: a row per chunk of each update (that launch's integer arguments, lo, hi)
    (dt, off, tab), = merged.tables
    ints = [a[1] for a in multi.args if a[0] == "int"]
    assert dt == np.int64 and ints[0] == off and tab.size % ints[1] == 0
    rows = tab.reshape(ints[1], -1)
    assert int((rows[:, -1] - rows[:, -2]).sum()) == sum(v.size for k, v in cpu.params.items() if k != "b1")


def test_cublas_path_multi_tensor_update_matches_numpy(monkeypatch):
    loss = mlp()
    adam = lambda: gc.optim.Adam(1e-2)  # noqa: E731
    ref, ref_losses = train(loss, "numpy", adam)
    use_cublas(monkeypatch)
    step, losses = train(loss, "cuda", adam)
    unmerged, _ = train(loss, "cuda", adam, merge="none", monkeypatch=monkeypatch)
    prog = step.program_for(BATCH)
    assert prog.module.gemm == "cublas"
    c = prog.launches_per_step()
    assert (c["kernels"], c["cublas"]) == (5, 5), prog.kernel_listing()
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    close(step.params, ref.params)
    close(step.params, unmerged.params)
    close(step.state_dict()["state"], ref.state_dict()["state"])


def test_multi_tensor_update_equals_per_parameter_updates(monkeypatch):
    """Parameters that meet no GEMM (so nothing absorbs their updates): the updates of ``a`` and
    ``b`` are the same function, merged into one launch over a chunk table (40 elements span 2
    of the simulator's 32-element chunks), equal to the per-parameter launches and to numpy.
    The scalar ``c``'s update, a one-element kernel, is folded into that launch."""
    x = gc.input("x", (None, 40))
    a = gc.param("a", (40,), init=np.linspace(-1, 1, 40).astype("float32"))
    b = gc.param("b", (40,), init=np.full(40, 0.1, "float32"))
    c = gc.param("c", (), init=np.float32(0.5))
    loss = gc.mean(gc.square(gc.tanh(x * a + b) * c - 0.3))
    feeds = lambda i: {"x": np.random.default_rng(i).standard_normal((2, 40)).astype("float32")}  # noqa: E731
    adam = lambda: gc.optim.Adam(5e-2)  # noqa: E731
    ref, ref_losses = train(loss, "numpy", adam, feeds=feeds, steps=2)
    step, losses = train(loss, "cuda", adam, feeds=feeds, steps=2)
    unmerged, un_losses = train(loss, "cuda", adam, merge="none", monkeypatch=monkeypatch, feeds=feeds, steps=2)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    close(step.params, ref.params)
    close(step.params, unmerged.params, rtol=1e-6)
    close(step.state_dict()["state"], unmerged.state_dict()["state"], rtol=1e-6)
    module, plain = step.program_for(2).module, unmerged.program_for(2).module
    (multi,) = [ln for ln in module.launches if ln.function.startswith("multi_")]
    per_param = Counter(ln.function for ln in plain.launches if ln.name in multi.merged)
    assert max(per_param.values()) == 2, (multi.name, unmerged.kernels())  # a's and b's update launches
    ints = [a[1] for a in multi.args if a[0] == "int"]  # table offset, rows, then the folded kernels'
    assert ints[1] == 4  # 2 chunks each of a's and b's update
    assert len(module.launches) < len(plain.launches), (step.kernels(), unmerged.kernels())


def test_fallback_updates_as_one_multi_tensor_launch(monkeypatch):
    """With the GEMM merges off, the fallback path keeps the updates as loops of their own: then
    they are one multi-tensor launch (the cuBLAS path's shape, run through the fallback)."""
    loss = mlp()
    adam = lambda: gc.optim.Adam(1e-2)  # noqa: E731
    ref, _ = train(loss, "numpy", adam)
    step, _ = train(loss, "cuda", adam, merge="multi,fold", monkeypatch=monkeypatch)
    module = step.program_for(BATCH).module
    multi = [ln for ln in module.launches if ln.function.startswith("multi_")]
    assert len(multi) == 1 and len(multi[0].merged) == 4, step.kernels()
    close(step.params, ref.params)


def test_three_layer_mlp_is_nine_launches_and_matches_numpy(monkeypatch):
    loss = mlp(3)
    opt = lambda: gc.optim.Adam(1e-2)  # noqa: E731
    ref, ref_losses = train(loss, "numpy", opt)
    step, losses = train(loss, "cuda", opt)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    close(step.params, ref.params)
    c = step.program_for(BATCH).launches_per_step()
    assert c["kernels"] == 9, step.kernels()  # 3 forward GEMMs, sce, 2 backward GEMMs, 3 dW GEMMs


@pytest.mark.parametrize("opt", [lambda: gc.optim.SGD(0.05, momentum=0.9), lambda: gc.optim.RMSprop(1e-2),
                                 lambda: gc.optim.Lion(1e-3), lambda: gc.optim.AdamW(1e-2)],
                         ids=["sgd-momentum", "rmsprop", "lion", "adamw"])
def test_other_optimizers_match_numpy(opt):
    loss = mlp()
    ref, ref_losses = train(loss, "numpy", opt)
    step, losses = train(loss, "cuda", opt)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    close(step.params, ref.params)
    close(step.state_dict()["state"], ref.state_dict()["state"])


def test_float64_mixed_dtypes_and_a_parameter_without_gradient_match_numpy(monkeypatch):
    """A float64 network next to a float32 scale (two update functions: two merge groups),
    and a parameter the loss reads only through stop_gradient (its gradient is zero)."""
    x = gc.input("x", (None, FEAT), dtype="float64")
    y = gc.input("y", (None,), dtype="int64")
    W = gc.param("W", (FEAT, CLS), init="he_normal", dtype="float64")
    b = gc.param("b", (CLS,), dtype="float64")
    s = gc.param("s", (4,), init=np.full(4, 0.5, "float32"))
    frozen = gc.param("frozen", (CLS,), init=np.full(CLS, 0.2), dtype="float64")
    logits = x @ W + b + gc.stop_gradient(frozen)
    loss = gc.softmax_cross_entropy(logits, y) + gc.cast(gc.sum(gc.square(s - 1.0)), "float64")
    feeds = lambda i: batch(i, dtype="float64")  # noqa: E731
    adam = lambda: gc.optim.Adam(1e-2)  # noqa: E731
    ref, ref_losses = train(loss, "numpy", adam, feeds=feeds)
    for merge in ("all", "none", "multi,fold"):
        step, losses = train(loss, "cuda", adam, merge=merge, monkeypatch=monkeypatch, feeds=feeds)
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-9, err_msg=merge)
        close(step.params, ref.params, rtol=1e-6)
        close(step.state_dict()["state"], ref.state_dict()["state"], rtol=1e-6)
    np.testing.assert_allclose(step.params["frozen"], np.full(CLS, 0.2))  # Adam on a zero gradient: unchanged


def test_merge_option_is_checked():
    assert merge_option("all") == merge_option("") and merge_option("none") == frozenset()
    assert merge_option("multi, fold") == {"multi", "fold"}
    with pytest.raises(CompileError, match="GRAPHC_CUDA_MERGE"):
        merge_option("epilogues")


PTX = """
import sys
import numpy as np, graphc as gc
from graphc.backends.cuda.emitter import REAL, emit_for, compile_ptx
from graphc.compiler import lowered
sys.path.insert(0, "tests/cuda")
from test_cuda_launches import mlp
for layers in (2, 3):
    loss = mlp(layers)
    step = gc.compile(loss, optimizer="adam", target="cpu")
    low = lowered(step._program, 8, {})
    for cublas in (False, True):
        for merge in ("all", "multi,fold"):
            mod = emit_for(low, step._store.layout, use_cublas=cublas, lp=REAL, merge=merge)
            ptx = compile_ptx(mod, cc=(9, 0))
            assert ptx and all(".entry" in p or ".visible" in p for p in ptx.values())
            print("PTX", layers, cublas, merge, sorted(k.rsplit("_", 1)[0] for k in ptx))
"""


def test_merged_kernels_compile_to_ptx():
    """The fused GEMMs (epilogue, column sums + update, folded step counter) and the multi-tensor
    kernel compile to PTX (NVVM, no GPU): the simulator runs them as Python and would miss
    typing errors."""
    from test_cuda_toolchain import _run, require_nvvm
    require_nvvm()
    r = _run(PTX)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("PTX")]
    assert len(lines) == 8, r.stdout
    text = " ".join(lines)
    assert "gemm_fused" in text and "multi" in text, text
