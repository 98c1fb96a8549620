"""The user-facing scripts run end to end: examples/mlp.py trains and reports accuracies,
benchmarks/bench_step.py's smoke runs (own process each, and --interleaved) and
bench_compile.py's write the JSON they document.

All run as subprocesses (as a user runs them) with the suite's shared GRAPHC_CACHE_DIR
(set by conftest.py), so after a first run they load cached programs instead of compiling.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args, timeout=300):
    env = dict(os.environ)  # carries GRAPHC_CACHE_DIR from conftest.py
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.numba_kernels  # .ci/run: again with GRAPHC_NATIVE_KERNELS=0
def test_mlp_example_trains_and_reports_accuracy():
    pytest.importorskip("sklearn")
    p = _run(["examples/mlp.py", "--epochs", "2"])
    assert p.returncode == 0, p.stderr[-3000:]
    epochs = re.findall(r"epoch\s+\d+/2\s+loss ([\d.]+)\s+train acc ([\d.]+)\s+test acc ([\d.]+)", p.stdout)
    assert len(epochs) == 2, p.stdout
    losses = [float(e[0]) for e in epochs]
    assert losses[1] < losses[0]
    m = re.search(r"final test accuracy: ([\d.]+)", p.stdout)
    assert m and 0.8 < float(m.group(1)) <= 1.0, p.stdout
    assert "steps/second" in p.stdout


def test_mlp_example_help():
    p = _run(["examples/mlp.py", "--help"])
    assert p.returncode == 0
    for flag in ("--target", "--epochs", "--batch-size", "--hidden", "--lr", "--seed", "--check"):
        assert flag in p.stdout


def test_bench_step_quick_writes_json(tmp_path):
    """The default mode: each contender in a worker process of its own, both floors reported."""
    out = tmp_path / "bench.json"
    contenders = "graphc cpu,eager NumPy,GEMM floor (numba),Adam pass"
    p = _run(["benchmarks/bench_step.py", "--quick", "--configs", "tiny", "--no-peers", "--no-side-by-side",
              "--contenders", contenders, "--threads", "1", "--out", str(out)])
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert {"meta", "configs", "notes", "table"} <= set(res)
    assert {"commit", "date", "threads", "loadavg_start"} <= set(res["meta"])
    tiny = res["configs"]["tiny"]
    own = tiny["own_process"]
    for name in contenders.split(","):
        s = own[name]
        assert {"median_us", "min_us", "iqr_us", "n", "ratio_to_graphc_cpu", "x_gemm_floor", "x_floor"} <= set(s)
        assert 0 < s["min_us"] <= s["median_us"], (name, s)
    # the two floors: the GEMMs alone, and the GEMMs + one streaming (Adam) pass
    fl = own["floor"]
    assert fl["median_us"] == pytest.approx(own["GEMM floor (numba)"]["median_us"] + own["Adam pass"]["median_us"])
    g = own["graphc cpu"]
    assert g["x_floor"] == pytest.approx(g["median_us"] / fl["median_us"])
    assert g["x_gemm_floor"] == pytest.approx(g["median_us"] / own["GEMM floor (numba)"]["median_us"])
    assert tiny["loss_check"]["eager NumPy"]["ok"]
    assert tiny["skipped"]["torch eager"] == "--no-peers" and "side_by_side" not in tiny
    assert "own process each" in p.stdout and "x floor" in p.stdout


def test_bench_step_interleaved_mode_still_runs(tmp_path):
    """--interleaved: the older single-process mode, kept as an option."""
    out = tmp_path / "bench.json"
    p = _run(["benchmarks/bench_step.py", "--interleaved", "--quick", "--configs", "tiny", "--no-peers",
              "--no-compile-times", "--out", str(out)])
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert {"meta", "configs", "notes", "compile", "table"} <= set(res)
    assert {"numba_threads", "blas", "commit", "date"} <= set(res["meta"])
    tiny = res["configs"]["tiny"]
    assert {"contenders", "skipped", "graphc_cpu_x_blas_floor", "speedup_vs_eager_numpy", "parallel_over_cpu",
            "peak_step_bytes", "eager_numpy_check", "graphc_cpu_x_floor"} <= set(tiny)
    assert tiny["eager_numpy_check"]["ok"]
    for name in ("graphc cpu", "graphc parallel", "eager NumPy", "graphc numpy", "BLAS floor", "Adam pass"):
        s = tiny["contenders"][name]
        assert {"median_us", "iqr_us", "reps", "ratio_to_graphc_cpu", "x_blas_floor", "x_floor"} <= set(s)
        assert s["median_us"] > 0
    assert set(tiny["skipped"]) == {"torch eager", "torch.compile", "jax jit"}
    assert res["compile"] == {}  # --no-compile-times (bench_compile.py measures starts)
    assert "graphc cpu" in p.stdout and "BLAS floor" in p.stdout


def test_bench_compile_smoke_writes_every_figure(tmp_path):
    """benchmarks/bench_compile.py on the tiny MLP, one run, graphc only, with the suite's
    shared cache (so it takes seconds): cold, warm and edited starts each in a fresh process,
    every figure in the JSON, and the edited script recompiles nothing."""
    out = tmp_path / "compile.json"
    p = _run(["benchmarks/bench_compile.py", "--workloads", "mlp-tiny", "--runs", "1", "--no-peers",
              "--cache-dir", os.environ["GRAPHC_CACHE_DIR"], "--out", str(out)])
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert {"meta", "args", "workloads", "table", "edit_lines", "cache_dir_reused"} <= set(res)
    w = res["workloads"]["mlp-tiny"]
    assert w["config"] == {"batch": 32, "widths": [64, 32, 10]}
    assert w["skipped"] == {"torch.compile": "--no-peers", "jax jit": "--no-peers"}
    g = w["contenders"]["graphc cpu"]
    for phase in ("cold", "warm", "edited"):
        m = g[phase]
        assert m["ok"] == m["runs"] == 1, m
        for k in ("process_wall_s", "process_cpu_s", "import_wall_s", "import_cpu_s", "compile_first_step_wall_s",
                  "compile_first_step_cpu_s", "numba_s", "numba_cache_misses"):
            assert m[k] >= 0, (phase, k, m)
        assert m["process_wall_s"] > m["import_wall_s"] + m["compile_first_step_wall_s"] * 0.99 > 0
    assert g["edited"]["numba_cache_misses"] == 0 and g["edited"]["from_manifest"] == [True]
    losses = {r["loss"] for phase in ("cold", "warm", "edited") for r in g["per_run"][phase]}
    assert len(losses) == 1  # the same first step every time
    assert "graphc cpu" in res["table"] and "edited" in res["table"]


@pytest.mark.numba_kernels  # .ci/run: again with GRAPHC_NATIVE_KERNELS=0
def test_cnn_example_trains_and_checks_against_the_interpreter():
    """examples/cnn.py on small settings: the loss falls, the accuracy is printed, and --check
    (numpy interpreter vs cpu, lock step, dropout masks included) agrees within float32 rounding."""
    pytest.importorskip("sklearn")
    p = _run(["examples/cnn.py", "--epochs", "2", "--filters", "8,16", "--dense", "32", "--lr", "5e-3"])
    assert p.returncode == 0, p.stderr[-3000:]
    losses = [float(v) for v in re.findall(r"epoch\s+\d+/2\s+loss ([\d.]+)", p.stdout)]
    assert len(losses) == 2 and losses[1] < losses[0], p.stdout
    m = re.search(r"final test accuracy: ([\d.]+)", p.stdout)
    assert m and 0.7 < float(m.group(1)) <= 1.0, p.stdout
    p = _run(["examples/cnn.py", "--check", "--filters", "4,8", "--dense", "16", "--batch-size", "256"])
    assert p.returncode == 0 and "same loss curve" in p.stdout, p.stdout + p.stderr[-2000:]


@pytest.mark.numba_kernels  # .ci/run: again with GRAPHC_NATIVE_KERNELS=0
def test_transformer_example_learns_to_sort():
    """examples/transformer.py on small settings: attention through batched GEMMs learns to sort
    6-digit sequences far above what position statistics alone give (about 0.3)."""
    p = _run(["examples/transformer.py", "--steps", "150", "--d-model", "32", "--length", "6", "--held-out", "500"])
    assert p.returncode == 0, p.stderr[-3000:]
    m = re.search(r"final held-out per-token accuracy: ([\d.]+)", p.stdout)
    assert m and float(m.group(1)) > 0.8, p.stdout


@pytest.mark.numba_kernels  # .ci/run: again with GRAPHC_NATIVE_KERNELS=0
def test_rnn_example_digits_and_masked_text():
    """examples/rnn.py on small settings: the digits LSTM's loss falls; the text task (padded
    sentences, Embedding(mask_zero=True) + LSTM) learns and its predictions do not depend on
    the padding id's embedding (the mask at work)."""
    pytest.importorskip("sklearn")
    p = _run(["examples/rnn.py", "--epochs", "2", "--units", "16"])
    assert p.returncode == 0, p.stderr[-3000:]
    losses = [float(v) for v in re.findall(r"- loss: ([\d.]+)", p.stdout)]
    assert len(losses) == 2 and losses[1] < losses[0], p.stdout
    m = re.search(r"final test accuracy: ([\d.]+)", p.stdout)
    assert m and 0.5 < float(m.group(1)) <= 1.0, p.stdout
    p = _run(["examples/rnn.py", "--task", "text", "--epochs", "3", "--samples", "600", "--max-len", "6",
              "--units", "16"])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    m = re.search(r"final test accuracy: ([\d.]+)", p.stdout)
    assert m and float(m.group(1)) > 0.8, p.stdout
    assert "predictions unchanged when the padding embedding changes: True" in p.stdout, p.stdout
