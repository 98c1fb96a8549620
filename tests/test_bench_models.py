"""Smoke tests of benchmarks/bench_cnn.py and bench_transformer.py: a ``--quick --no-peers``
run in a subprocess (tiny configs, every contender in a worker process of its own, then side
by side) must write a JSON whose numbers are there and whose eager NumPy step agrees with
graphc's losses (same init, same data)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = "graphc cpu,eager NumPy,GEMM floor (numba),Adam pass"


@pytest.mark.parametrize("script", ["bench_cnn.py", "bench_transformer.py"])
def test_quick_run_writes_results(tmp_path, script):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--no-peers",
                        "--contenders", CONTENDERS, "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert list(res["configs"]) == ["quick"]
    q = res["configs"]["quick"]
    own = q["own_process"]
    for name in CONTENDERS.split(","):
        s = own[name]
        assert s["n"] >= 3 and 0 < s["min_us"] <= s["median_us"], (name, s)
        assert len(s["loadavg_1m"]) >= 3  # the machine's load recorded with every round
    assert own["graphc cpu"]["ratio_to_graphc_cpu"] == 1.0
    # floor = the GEMMs (through Numba) + one Adam pass; graphc's ratio to it is reported
    fl = own["floor"]
    assert fl["median_us"] == pytest.approx(own["GEMM floor (numba)"]["median_us"] + own["Adam pass"]["median_us"])
    assert own["graphc cpu"]["x_floor"] == pytest.approx(own["graphc cpu"]["median_us"] / fl["median_us"])
    # every peer skipped, and said why
    for peer in ("torch eager", "torch.compile", "jax jit"):
        assert q["skipped"][peer] == "--no-peers"
    # eager NumPy computes the same losses as graphc from the same init (3 Adam steps)
    chk = q["loss_check"]["eager NumPy"]
    assert chk["ok"] and chk["max_rel_diff_vs_graphc_cpu"] < 1e-4, chk
    # the side-by-side run (one process) is there, separately labelled
    assert set(q["side_by_side"]) >= set(CONTENDERS.split(","))
    assert "SIDE BY SIDE" in res["table"] and "own process each" in res["table"]
    # the per-kernel profile of graphc's step names its kernels
    prof = q["graphc_profile"]
    assert isinstance(prof, list) and prof and all(p["kernel"].startswith("k") and p["us"] > 0 for p in prof)
    assert res["meta"]["threads"] == 1 and len(res["meta"]["loadavg_start"]) == 3
