"""step.explain() (graphc/explain/), machine peaks (graphc/peaks.py), graphc.to_dot
(graphc/graphviz.py) and GRAPHC_LOG (graphc/log.py).

FLOP and byte counts are checked against hand-computed values from the formulas in
graphc/schedule/cost.py (a GEMM (m, k) @ (k, n) is 2 m n k FLOPs, as every roofline tool counts it;
one FLOP per element per elementwise op; bytes = each tensor read once + each written)."""
from __future__ import annotations

import re
import shutil
import sys
import types

import numpy as np
import pytest

import graphc as gc
from graphc import explain as E
from graphc.compiler import lower
from graphc.training import forward_program, training_program

B, F, H, C = 64, 48, 64, 10  # batch, features, hidden, classes (kernels well above Numba's ~1 us dispatch)


def _mlp():
    x = gc.input("x", (None, F))
    y = gc.input("y", (None,), dtype="int64")
    W1 = gc.param("W1", (F, H), init="he_normal")
    b1 = gc.param("b1", (H,))
    W2 = gc.param("W2", (H, C), init="he_normal")
    b2 = gc.param("b2", (C,))
    logits = gc.relu(x @ W1 + b1) @ W2 + b2
    return logits, gc.softmax_cross_entropy(logits, y)


def _feeds(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((B, F)).astype(np.float32), "y": rng.integers(0, C, B)}


@pytest.fixture(scope="module")
def mlp():
    """One compiled Adam step and its explanation, shared by the tests below."""
    _, loss = _mlp()
    step = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cpu")
    feeds = _feeds()
    step(**feeds)
    source = step.source()
    before = step.state_dict()
    rep = step.explain(runs=40, verbose=False, **feeds)
    return step, feeds, rep, source, before


def _kernels(outputs, batch=None):
    """The fused, planned kernels of a forward function (no Numba compile)."""
    program = forward_program(outputs if isinstance(outputs, dict) else {"out": outputs})
    _, kernels, plan = lower(program, batch)
    return plan.kernels, plan


# ---- counts ------------------------------------------------------------------------------------

def test_gemm_flops_are_2mnk_and_bytes_are_operands_plus_output():
    m, k, n = 7, 5, 3
    x = gc.input("x", (m, k))
    W = gc.param("W", (k, n))
    (kern,), plan = _kernels(x @ W)
    assert kern.kind == "matmul"
    assert E.kernel_flops(kern) == 2 * m * n * k
    assert E.kernel_bytes(kern, plan) == 4 * (m * k + k * n + m * n)


def test_gemm_with_epilogue_elementwise_reduction_and_free_ops():
    m, k, n = 6, 4, 3
    x = gc.input("x", (m, k))
    W = gc.param("W", (k, n))
    b = gc.param("b", (n,))
    (kern,), plan = _kernels(gc.relu(x @ W + b))  # GEMM prologue + add + relu epilogue
    assert kern.kind == "loop" and kern.matmul is not None
    assert E.kernel_flops(kern) == 2 * m * n * k + 2 * m * n
    # x, W, b read; the GEMM result written by BLAS and read back; the relu written
    assert E.kernel_bytes(kern, plan) == 4 * (m * k + k * n + n + 2 * m * n + m * n)

    v = gc.input("v", (10, 4))
    (kern,), plan = _kernels(gc.exp(v) * 2.0 + 1.0)  # 3 elementwise ops, literals move nothing
    assert (kern.kind, E.kernel_flops(kern), E.kernel_bytes(kern, plan)) == ("loop", 3 * 40, 4 * 40 * 2)
    (kern,), plan = _kernels(gc.sum(v * v))  # a multiply and an add per element
    assert (E.kernel_flops(kern), E.kernel_bytes(kern, plan)) == (2 * 40, 4 * 40 + 4)
    (kern,), plan = _kernels(gc.cast(v, "float64") + 1.0)  # the cast is free
    assert E.kernel_flops(kern) == 40


def test_softmax_ce_and_update_kernels():
    _, loss = _mlp()
    program = training_program(loss, gc.optim.SGD(0.1))
    _, _, plan = lower(program, B)
    by_kind = {}
    for k in plan.kernels:
        by_kind.setdefault(k.kind, []).append(k)
    (sce,) = by_kind["sce"]  # loss and gradient in one pass: 5 per logit + 3 per row
    assert E.kernel_flops(sce) == 5 * B * C + 3 * B
    # z and labels read, the scalar loss and the (B, C) gradient written
    assert E.kernel_bytes(sce, plan) == 4 * B * C + 8 * B + 4 + 4 * B * C
    # SGD on the bias b2: new = b2 - lr * g, a multiply and a subtract per element
    upd = [k for k in by_kind["loop"] if tuple(k.shape) == (C,) and k.matmul is None]
    assert [E.kernel_flops(k) for k in upd] == [2 * C]


def test_every_cpu_kernel_kind_has_a_cost_rule():
    from graphc.backends.cpu.emitter import KERNELS
    assert set(KERNELS) <= set(E.COSTS)


def test_conv_net_kinds():
    x = gc.input("x", (4, 6, 6, 2))
    K = gc.param("K", (3, 3, 2, 3))
    out = gc.max_pool2d(gc.relu(gc.conv2d(x, K, padding="same")), 2)
    kernels, plan = _kernels(out)
    kinds = {k.kind: k for k in kernels}
    assert {"im2col", "pool2d"} <= set(kinds)
    assert E.kernel_flops(kinds["im2col"]) == 0  # data movement
    assert E.kernel_flops(kinds["pool2d"]) == (4 * 3 * 3 * 3) * 4  # a compare per window element
    gemm = next(k for k in kernels if k.matmul is not None)
    assert E.gemm_flops(gemm) == 2 * (4 * 6 * 6) * 3 * (3 * 3 * 2)


# ---- the report --------------------------------------------------------------------------------

def test_report_rows_match_the_kernels(mlp):
    step, feeds, rep, _, _ = mlp
    prog = step.program_for(B)
    assert [k.name for k in rep.kernels] == [k.name for k in prog.plan.kernels]
    assert [k.kind for k in rep.kernels] == [k.kind for k in prog.plan.kernels]
    assert all(k.time_s > 0 and len(k.times_s) == rep.runs == 40 for k in rep.kernels)
    assert all(k.bound in ("compute", "memory") and k.pct_of_roof >= 0 for k in rep.kernels)
    assert any("test_explain.py:" in s for k in rep.kernels for s in k.sources)
    gemm = next(k for k in rep.kernels if k.ops[:3] == ["matmul", "add", "relu"])
    assert gemm.flops == 2 * B * H * F + 2 * B * H
    assert gemm.gflops == pytest.approx(gemm.flops / gemm.time_s / 1e9)
    assert rep.peak_bytes == prog.plan.peak_bytes and rep.no_reuse_bytes == prog.plan.no_reuse_bytes
    assert 0 < rep.floor_s and rep.step_s > rep.native_s > 0
    text = str(rep)
    for needle in ("GFLOP/s", "%roof", "Python call", "floor", "scratch peak", gemm.name):
        assert needle in text


def test_times_add_up(mlp):
    _, _, rep, _, _ = mlp
    parts = rep.kernels_s + rep.prologue_s + rep.epilogue_s
    assert parts == pytest.approx(rep.native_s, rel=0.2)  # medians of the parts vs of the sums
    # the unmodified driver, timed alone, takes what its kernels take (+ Numba's dispatch)
    assert 0.8 * rep.driver_call_s <= parts <= 1.2 * rep.driver_call_s
    shares = sum(k.share for k in rep.kernels) + (rep.prologue_s + rep.epilogue_s + rep.overhead_s) / rep.step_s
    assert shares == pytest.approx(1.0, abs=0.2)


def test_explain_changes_nothing(mlp):
    step, feeds, rep, source, before = mlp
    assert step.source() == source  # the normal driver is the same module
    after = step.state_dict()
    assert after["state"]["step"] == before["state"]["step"]
    for k, v in before["params"].items():
        np.testing.assert_array_equal(after["params"][k], v)
    prog = step.program_for(B)
    twin = E._PROFILERS[prog][0]
    assert twin is not prog._driver and "_tick(_ticks" not in prog.module.source


def test_plot_writes_a_png(mlp, tmp_path):
    _, _, rep, _, _ = mlp
    path = rep.plot(tmp_path / "roofline.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_what_to_install(mlp, tmp_path, monkeypatch):
    _, _, rep, _, _ = mlp
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install"):
        rep.plot(tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


def test_random_feeds_and_bad_feeds(mlp):
    step, feeds, _, _, _ = mlp
    rep = step.explain(runs=3, verbose=False)  # random feeds of the batch compiled last
    assert rep.batch == B and len(rep.kernels) == len(step.program_for(B).plan.kernels)
    with pytest.raises(gc.FeedError, match="x"):
        step.explain({"x": feeds["x"][:, :3], "y": feeds["y"]}, verbose=False)
    with pytest.raises(ValueError, match="runs"):
        step.explain(runs=0, verbose=False, **feeds)


def test_numpy_target_times_op_groups():
    logits, _ = _mlp()
    f = gc.compile(logits, target="numpy")
    rep = f.explain(batch=8, runs=3, verbose=False)
    assert rep.target == "numpy" and rep.kernels and all(k.time_s > 0 for k in rep.kernels)
    assert "interpreter" in str(rep)


def test_cuda_says_not_yet():
    with pytest.raises(NotImplementedError, match="cuda"):
        E.explain(types.SimpleNamespace(target="cuda"))


def test_profile_source_finds_every_call():
    src = ("from numba import njit\n\n\n@njit(cache=True, nogil=True, error_model='numpy')\n"
           "def step(a, b):\n    if a[0] < 0:\n        return 1\n    b1 = a[0:2]\n    # k0: loop\n"
           "    kernel_x(b1)  # v\n    # k1: loop\n    bad_k1 = kernel_y(b1)\n    return 0\n")
    out = E.profile_source(src, [("k0", "kernel_x"), ("k1", "kernel_y")])
    assert "def step(a, b, _ticks):" in out and "from graphc.explain.clock import clock_tick as _tick" in out
    order = [int(m) for m in re.findall(r"_tick\(_ticks, (\d+)\)", out)]
    assert order == [0, 1, 2, 3, 4]
    assert out.index("_tick(_ticks, 1)") < out.index("b1 = a[0:2]")
    with pytest.raises(gc.GraphcError, match="kernel_z"):
        E.profile_source(src, [("k0", "kernel_x"), ("k1", "kernel_z")])


def test_the_twin_of_a_real_driver_has_its_clock_reads_where_they_belong(mlp):
    """profile_source reads the driver's text (see its docstring for why): this fails when the
    emitter's driver format drifts from what it expects. On the generated driver of a real
    step: every feed check lies between clock reads 0 and 1, no kernel work does; each kernel
    call is one line, followed by its own clock read, in schedule order."""
    step, feeds = mlp[0], mlp[1]
    prog = step.program_for(B)
    infos = prog.module.kernels
    assert len(infos) >= 5
    twin = E.profile_source(prog.module.source, [(k.name, k.function) for k in infos]).split("\n")
    at = {int(m.group(1)): i for i, line in enumerate(twin)
          if (m := re.fullmatch(r"    _tick\(_ticks, (\d+)\)", line))}
    assert sorted(at) == list(range(len(infos) + 3)) and sorted(at.values()) == [at[i] for i in sorted(at)]
    prologue, first_kernel = twin[at[0] + 1:at[1]], twin[at[1] + 1:at[2]]
    checks = [line for line in prologue if line.strip().startswith("return ")]
    assert len(checks) >= 2 and all(not line.strip().startswith(("if ", "return ", "restore_fpenv"))
                                    for line in first_kernel)
    assert not [line for line in prologue if line.lstrip().startswith(("# k", "kernel_", "bad_k"))]
    for j, k in enumerate(infos):
        call = twin[at[j + 2] - 1].split("  #")[0]
        assert k.function + "(" in call and call.count("(") == call.count(")"), (k.name, call)


def test_explain_imports_no_numba_until_numba_compiles_a_twin():
    """The cost model, the report and the profiler (whose twin is graphc's where the driver
    is) load without Numba; only clock.py, the clock of a Numba-compiled twin, imports it."""
    import subprocess
    code = ("import sys, graphc.explain as E\n"
            "src = 'from numba import njit\\n\\n\\n@njit(cache=True)\\ndef step(a):\\n    return 0\\n'\n"
            "assert '_tick(_ticks, 2)' in E.profile_source(src, [])\n"
            "assert 'numba' not in sys.modules, sorted(m for m in sys.modules if 'numba' in m)[:5]\n"
            "import graphc.explain.clock\n"
            "assert 'numba' in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---- peaks -------------------------------------------------------------------------------------

def test_peaks_are_cached_beside_the_compile_cache(monkeypatch):
    from graphc import peaks as P
    first = P.peaks()
    assert P.cache_path().exists() and P.cache_path().parent == __import__(
        "graphc.backends.cache", fromlist=["x"]).cache_dir()
    assert first.gemm("float32") > 0 and first.stream(False) > 0 and first.stream(True) > 0
    calls = []
    monkeypatch.setattr(P, "measure", lambda: calls.append(1) or first)
    assert P.peaks() == first and not calls  # from the JSON file
    P.peaks(refresh=True)
    assert calls == [1]


def test_a_cached_peaks_imports_no_numba():
    """Importing Numba costs ~0.5 s: graphc/peaks.py imports its Numba probes only to measure,
    so a process reading the cached roofs (and ``import graphc``) never pays for it."""
    import subprocess
    from graphc import peaks as P
    P.peaks()  # the JSON entry for this machine exists (GRAPHC_CACHE_DIR is inherited)
    code = ("import sys\nimport graphc\nassert 'numba' not in sys.modules\n"
            "from graphc.peaks import peaks\np = peaks()\nassert p.gemm('float32') > 0\n"
            "assert 'numba' not in sys.modules, sorted(m for m in sys.modules if 'numba' in m)[:5]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---- to_dot ------------------------------------------------------------------------------------

_STMT = re.compile(r'^(\w+ \[.*\];|\w+ -> \w+;|subgraph \w+ \{|\}|(rankdir|label|node|edge|style)\b.*;)$')


def _parse_dot(text):
    """A small DOT reader: statements one per line, balanced braces; returns (nodes, edges,
    clusters)."""
    lines = [s.strip() for s in text.strip().splitlines()]
    assert lines[0] == "digraph graphc {" and lines[-1] == "}"
    depth, nodes, edges, clusters = 0, set(), [], []
    for s in lines[1:-1]:
        assert _STMT.match(s), s
        depth += s.endswith("{") - (s == "}")
        assert depth >= 0
        if s.startswith("subgraph"):
            clusters.append(s.split()[1])
        elif re.match(r"^\w+ -> \w+;$", s):
            edges.append(tuple(s.rstrip(";").split(" -> ")))
        elif re.match(r"^\w+ \[", s):
            nodes.add(s.split()[0])
    assert depth == 0
    assert all(a in nodes and b in nodes for a, b in edges)
    return nodes, edges, clusters


def test_to_dot_of_a_step_has_a_cluster_per_kernel(mlp, tmp_path):
    step, _, _, _, _ = mlp
    text = gc.to_dot(step, tmp_path / "step.dot")
    assert (tmp_path / "step.dot").read_text() == text
    nodes, edges, clusters = _parse_dot(text)
    prog = step.program_for(B)
    assert {f"cluster_{k.name}" for k in prog.plan.kernels} <= set(clusters)
    for role in ("forward", "backward", "update"):
        assert f"fillcolor=\"{gc.graphviz.COLORS[role]}\"" in text, role
    roles = gc.graphviz.classify(prog.graph, 1)
    by_op = {n.op: roles[id(n)] for n in prog.graph.nodes}
    assert by_op["softmax_cross_entropy"] == "forward" and by_op["sce_grad"] == "backward"
    assert by_op["sqrt"] == "update"  # Adam's sqrt(v)


def test_to_dot_of_a_graph_and_rendering(tmp_path):
    logits, _ = _mlp()
    nodes, edges, clusters = _parse_dot(gc.to_dot(logits))
    assert clusters == ["cluster_legend"] and len(edges) > 5
    if shutil.which("dot") is None:
        with pytest.raises(gc.GraphcError, match="Graphviz"):
            gc.to_dot(logits, tmp_path / "g.svg")
        assert not (tmp_path / "g.svg").exists()
    else:  # pragma: no cover - depends on the machine
        gc.to_dot(logits, tmp_path / "g.svg")
        assert (tmp_path / "g.svg").read_text().lstrip().startswith("<")
    with pytest.raises(TypeError, match="to_dot"):
        gc.to_dot(3)


# ---- GRAPHC_LOG --------------------------------------------------------------------------------

def _fresh_function():
    a = gc.input("a", (6, 4))
    w = gc.param("w_log", (4, 3))
    return gc.compile({"y": gc.tanh(a @ w) * 1.0 + 0.0}, target="cpu")  # 1.0 * and + 0 simplify away


def test_log_channels_print_to_stderr(capsys, monkeypatch):
    monkeypatch.setenv("GRAPHC_LOG", "passes,fusion,cache")
    f = _fresh_function()
    f(a=np.ones((6, 4), np.float32))
    err = capsys.readouterr().err
    assert re.search(r"\[graphc:passes\] simplify \(round 1\): \d+ -> \d+ nodes \(-", err), err
    assert re.search(r"\[graphc:fusion\] #0 loop \(6, 3\) \[matmul, tanh\]", err), err
    assert re.search(r"\[graphc:cache\] (hit |miss) graphc_\w+\.py", err), err
    assert "Numba cache {'hits'" in err


def test_log_silent_when_unset(capsys, monkeypatch):
    monkeypatch.delenv("GRAPHC_LOG", raising=False)
    f = _fresh_function()
    f(a=np.ones((6, 4), np.float32))
    assert "[graphc:" not in capsys.readouterr().err


def test_log_channel_parsing():
    from graphc import logs as log
    assert log.channels("passes, Fusion") == {"passes", "fusion"}
    assert log.channels("all") == set(log.CHANNELS)
    with pytest.warns(RuntimeWarning, match="unknown channel"):
        assert log.channels("passes,nope") == {"passes"}
