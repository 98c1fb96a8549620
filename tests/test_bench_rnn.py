"""Smoke test of benchmarks/bench_rnn.py: a ``--quick`` run (tiny LSTM) in a subprocess must
write the timings, graphc's cold compile time and kernel profile, the floors, and step-0 losses
of the peers (same weights, same batch) equal to graphc's."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = [p for p, mod in (("torch eager", "torch"), ("jax jit", "jax")) if importlib.util.find_spec(mod)]


def test_quick_lstm_run_writes_results(tmp_path):
    out = tmp_path / "r.json"
    contenders = ",".join(["graphc cpu", "GEMM floor (numba)", "Adam pass", *PEERS])
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_rnn.py"), "--quick", "--no-side-by-side",
                        "--profile-reps", "0", "--contenders", contenders, "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    q = res["configs"]["quick"]
    own = q["own_process"]
    for name in contenders.split(","):
        assert 0 < own[name]["min_us"] <= own[name]["median_us"], (name, own[name])
    assert own["floor"]["median_us"] == pytest.approx(own["GEMM floor (numba)"]["median_us"]
                                                      + own["Adam pass"]["median_us"])
    p = q["probe"]
    assert p["cold_total_s"] == pytest.approx(p["compile_s"] + p["first_call_s"]) and p["first_call_s"] > 0
    assert p["roofline"]["floor_us"] == pytest.approx(p["roofline"]["gemm_us"] + p["roofline"]["adam_us"])
    ex = p["explain"]
    # the forward and backward scans are one loop each (kind "scan", timed whole: explain lists
    # the loop, step.kernels() its body too), not kernels once per time step
    assert ex["kernels"] == sum(ex["by_kind"].values()) and ex["by_kind"]["scan"] == 2
    assert ex["per_step_kernels"] < 3 * 2
    assert 0 < ex["per_step_share"] <= 1
    for peer in PEERS:  # the same function on the same weights: the same first loss
        assert q["step0_rel_diff"][peer] < 1e-5, (peer, q["loss_check"][peer])
    assert "cold compile (empty cache)" in res["report"] and len(res["loadavg_samples"]) >= 2
