"""How long until the first training step has run: cold compile, warm start and "edited
script" start of graphc's step, against torch.compile and JAX jit, each in a fresh process.

    python benchmarks/bench_compile.py                               # every workload, peers if installed
    python benchmarks/bench_compile.py --workloads mlp-medium --runs 5
    python benchmarks/bench_compile.py --workloads mlp-tiny --runs 1 --no-peers   # smoke run

Workloads (one training step: forward + backward + Adam(1e-3), float32, target ``--target``):

- ``mlp-tiny`` / ``mlp-medium`` / ``mlp-large``: bench_step.py's ReLU MLPs (64-32-10 batch 32;
  784-256-256-10 batch 128; 784-1024-1024-10 batch 1024) with softmax cross-entropy;
- ``cnn``: examples/cnn.py's model as bench_cnn.py's "digits" config writes it (8x8x1, conv 32 ->
  pool -> conv 64 -> pool -> dense 128 -> 10, batch 32; no dropout, so that the peers compile
  the same function);
- ``transformer``: one pre-LN transformer block as bench_transformer.py writes it, at
  examples/transformer.py's default sizes (8 tokens of a 10-token vocabulary, d_model 64,
  4 heads, MLP 256, batch 64).

graphc, three starts per run, each a fresh ``python`` process running a generated user
script (the model's code is IN the script, copied from the bench module, so that the
provenance of every node is the script's file:line, as in a user's own script):

- cold: an empty GRAPHC_CACHE_DIR (Numba's cache files live there too);
- warm: the same script again, same cache;
- edited: a copy of the script with the model code moved down a few lines (comment lines
  inserted above it), same cache: nothing compiled changed, so nothing should recompile.

Peers (``--no-peers`` skips them; skipped with a note when not importable): torch.compile
(the whole step function: forward, backward and Adam, as bench_step.py) and JAX jit (the
whole step), each with cold (a fresh TORCHINDUCTOR_CACHE_DIR; JAX with its defaults, which
keep no persistent compilation cache, so every JAX start compiles) and warm (second process,
same cache). Their model code lives in benchmarks/_model_bench.py, bench_cnn.py and
bench_transformer.py (imported by the peer's process; those import only NumPy), so an
"edited script" start is not measured for them.

Each start reports: process wall (the parent's clock around the subprocess: interpreter
start included) and process CPU seconds (the child's rusage), and from inside the child the
import time (``import numpy, graphc`` / ``torch`` / ``jax``: wall and CPU) and compile + first
step (building the step, compiling it and running it once: wall and CPU); for graphc also
the compiler's split (passes, codegen, then "llvm s": compiling or loading the kernels and the
driver, by graphc's LLVM or by Numba: ``CompileStats.numba_s``), the kernels' cache
hits/misses (``cache_info()``: a miss is a kernel compiled in that process) and whether the
program started from a stored manifest. ``--runs`` runs (a fresh cache each), median of
each figure. Results: a table on stdout and JSON (default
benchmarks/results/bench_compile.json).
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

MLP = {"mlp-tiny": (32, [64, 32, 10]), "mlp-medium": (128, [784, 256, 256, 10]),
       "mlp-large": (1024, [784, 1024, 1024, 10])}
CNN = {"batch": 32, "hw": 8, "cin": 1, "filters": (32, 64), "dense": (128,), "classes": 10}
TRANSFORMER = {"batch": 64, "seq": 8, "d": 64, "heads": 4, "vocab": 10}
WORKLOADS = [*MLP, "cnn", "transformer"]
PEERS = ("torch.compile", "jax jit")
EDIT_LINES = 3  # comment lines inserted above the model for the "edited script" start
MSG = "@@RESULT "
FIGURES = ("process_wall_s", "process_cpu_s", "import_wall_s", "import_cpu_s", "compile_first_step_wall_s",
           "compile_first_step_cpu_s")


# ---------------------------------------------------------------------------------------------
# the workloads: the model's source for the user script, its data, the peers' step builders
# ---------------------------------------------------------------------------------------------

def workload(name: str) -> dict:
    """{"config", "model_src" (defines ``model()`` -> the loss), "feeds_src" (defines
    ``feeds``), "peer_module", "peer_config"}."""
    if name in MLP:
        batch, widths = MLP[name]
        import bench_step
        src = inspect.getsource(bench_step.graphc_model) + f"\n\ndef model():\n    return graphc_model({widths!r})\n"
        feeds = (f"rng = np.random.default_rng(0)\n"
                 f"feeds = {{'x': rng.standard_normal(({batch}, {widths[0]})).astype(np.float32),\n"
                 f"         'y': rng.integers(0, {widths[-1]}, {batch}).astype(np.int64)}}\n")
        return {"config": {"batch": batch, "widths": widths}, "model_src": src, "feeds_src": feeds,
                "peer_module": "_model_bench", "peer_torch": "mlp_torch_step", "peer_jax": "mlp_jax_step"}
    if name == "cnn":
        import bench_cnn
        src = (inspect.getsource(bench_cnn._layers) + "\n\n" + inspect.getsource(bench_cnn.graphc_loss)
               + f"\n\ndef model():\n    return graphc_loss({CNN!r})\n")
        c = CNN
        feeds = (f"rng = np.random.default_rng(0)\n"
                 f"feeds = {{'x': rng.standard_normal(({c['batch']}, {c['hw']}, {c['hw']}, {c['cin']}))"
                 f".astype(np.float32),\n"
                 f"         'y': rng.integers(0, {c['classes']}, {c['batch']}).astype(np.int64)}}\n")
        return {"config": dict(CNN), "model_src": src, "feeds_src": feeds, "peer_module": "bench_cnn",
                "peer_torch": "torch_step", "peer_jax": "jax_step"}
    if name == "transformer":
        import bench_transformer
        src = ("import math\n\nLN_EPS = 1e-5\n\n\n" + inspect.getsource(bench_transformer._dims) + "\n\n"
               + inspect.getsource(bench_transformer.graphc_loss)
               + f"\n\ndef model():\n    return graphc_loss({TRANSFORMER!r})\n")
        c = TRANSFORMER
        feeds = (f"rng = np.random.default_rng(0)\n"
                 f"ids = rng.integers(0, {c['vocab']}, ({c['batch']}, {c['seq']})).astype(np.int64)\n"
                 f"feeds = {{'ids': ids, 'y': ids[:, ::-1].copy()}}\n")
        return {"config": dict(TRANSFORMER), "model_src": src, "feeds_src": feeds,
                "peer_module": "bench_transformer", "peer_torch": "torch_step", "peer_jax": "jax_step"}
    raise ValueError(f"unknown workload {name!r}; choose from {WORKLOADS}")


_GRAPHC_SCRIPT = '''\
"""A user's training script (generated by benchmarks/bench_compile.py)."""
import time
_t0, _c0 = time.perf_counter(), time.process_time()
import json
import numpy as np
import graphc as gc
_t1, _c1 = time.perf_counter(), time.process_time()
{pad}
{model_src}

{feeds_src}
step = gc.compile(model(), optimizer=gc.optim.Adam(1e-3), target={target!r})
loss = float(step(**feeds)["loss"])
_t2, _c2 = time.perf_counter(), time.process_time()
prog = step.program_for(next(iter(feeds.values())).shape[0])
s = prog.stats
info = getattr(prog, "cache_info", lambda: {{}})()
print({msg!r} + json.dumps({{
    "import_wall_s": _t1 - _t0, "import_cpu_s": _c1 - _c0,
    "compile_first_step_wall_s": _t2 - _t1, "compile_first_step_cpu_s": _c2 - _c1, "loss": loss,
    "passes_s": s.passes_s, "codegen_s": s.codegen_s, "numba_s": s.numba_s,
    "from_manifest": bool(getattr(s, "from_manifest", False)),
    "numba_cache_hits": info.get("hits"), "numba_cache_misses": info.get("misses")}}))
'''

_PEER_SCRIPT = '''\
"""{peer}: the same step (generated by benchmarks/bench_compile.py)."""
import time
_t0, _c0 = time.perf_counter(), time.process_time()
import json
import sys
import numpy as np
import {lib}
_t1, _c1 = time.perf_counter(), time.process_time()
sys.path.insert(0, {here!r})
import {module} as M
z = np.load({data!r})
params = {{k[2:]: z[k] for k in z.files if k.startswith("p:")}}
feeds = {{k[2:]: z[k] for k in z.files if k.startswith("f:")}}
{build}
loss = float(step())
_t2, _c2 = time.perf_counter(), time.process_time()
print({msg!r} + json.dumps({{
    "import_wall_s": _t1 - _t0, "import_cpu_s": _c1 - _c0,
    "compile_first_step_wall_s": _t2 - _t1, "compile_first_step_cpu_s": _c2 - _c1, "loss": loss}}))
'''


def graphc_script(w: dict, target: str, pad: int) -> str:
    pad_src = "\n".join(f"# an edit above the model ({i + 1})" for i in range(pad))
    return _GRAPHC_SCRIPT.format(pad=pad_src, model_src=w["model_src"], feeds_src=w["feeds_src"], target=target,
                                 msg=MSG)


def peer_script(w: dict, peer: str, data: Path) -> str:
    fn = w["peer_torch"] if peer == "torch.compile" else w["peer_jax"]
    cfg = w["config"]
    build = (f"step = M.{fn}({cfg!r}, params, feeds, True, torch.get_num_threads())" if peer == "torch.compile"
             else f"step = M.{fn}({cfg!r}, params, feeds)")
    return _PEER_SCRIPT.format(peer=peer, lib="torch" if peer == "torch.compile" else "jax", here=str(HERE),
                               module=w["peer_module"], data=str(data), build=build, msg=MSG)


def write_peer_data(w: dict, path: Path) -> None:
    """graphc's initial parameters (names and shapes the peers' steps expect) and the feeds."""
    import numpy as np
    import graphc as gc
    ns: dict = {"gc": gc, "np": np}
    exec(compile(w["model_src"] + "\n" + w["feeds_src"], "<workload>", "exec"), ns)
    st = gc.compile(ns["model"](), optimizer=gc.optim.Adam(1e-3), target="numpy", seed=0)
    params = {k: np.asarray(v) for k, v in st.params.items()}
    np.savez(path, **{f"p:{k}": v for k, v in params.items()}, **{f"f:{k}": v for k, v in ns["feeds"].items()})


# ---------------------------------------------------------------------------------------------
# running one start
# ---------------------------------------------------------------------------------------------

def run_script(path: Path, env: dict, timeout: float) -> dict:
    """Run ``python path`` in a fresh process: its own figures plus the parent's wall clock
    and the child's CPU seconds (rusage of the waited-for child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, str(path)], env=env, cwd=str(path.parent), capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(MSG)]
    if p.returncode != 0 or not lines:
        return {"error": f"rc {p.returncode}: {p.stderr[-1500:]}"}
    r = json.loads(lines[-1][len(MSG):])
    r["process_wall_s"] = wall
    r["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return r


def median_of(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    out: dict = {"runs": len(runs), "ok": len(ok)}
    if not ok:
        out["error"] = runs[-1].get("error") if runs else "no runs"
        return out
    for k in (*FIGURES, "passes_s", "codegen_s", "numba_s", "numba_cache_hits", "numba_cache_misses"):
        vals = [r[k] for r in ok if r.get(k) is not None]
        if vals:
            out[k] = statistics.median(vals)
    if "from_manifest" in ok[0]:
        out["from_manifest"] = [r["from_manifest"] for r in ok]
    out["min_process_wall_s"] = min(r["process_wall_s"] for r in ok)
    return out


def peer_available(peer: str) -> str | None:
    """None if ``peer``'s library is installed, else why it is skipped (without importing it)."""
    import importlib.util
    lib = "torch" if peer == "torch.compile" else "jax"
    return None if importlib.util.find_spec(lib) is not None else f"{lib} not installed"


def bench_workload(name: str, args, tmp: Path, base_env: dict) -> dict:
    w = workload(name)
    res: dict = {"config": w["config"], "contenders": {}, "skipped": {}}
    runs: dict = {"cold": [], "warm": [], "edited": []}
    key = f"graphc {args.target}"
    for i in range(args.runs):
        cache = Path(args.cache_dir) if args.cache_dir else tmp / f"{name}-graphc-{i}"
        env = dict(base_env, GRAPHC_CACHE_DIR=str(cache))
        d = tmp / f"{name}-scripts-{i}"
        d.mkdir(parents=True, exist_ok=True)
        script, edited = d / "train.py", d / "train_edited.py"
        script.write_text(graphc_script(w, args.target, 0))
        edited.write_text(graphc_script(w, args.target, EDIT_LINES))
        for phase, path in (("cold", script), ("warm", script), ("edited", edited)):
            r = run_script(path, env, args.timeout)
            runs[phase].append(r)
            print(f"    {key:<16} run {i + 1}/{args.runs} {phase:<6} " + _brief(r), flush=True)
    res["contenders"][key] = {ph: median_of(rs) for ph, rs in runs.items()}
    res["contenders"][key]["per_run"] = runs
    peers = [] if args.no_peers else [p for p in PEERS if p in args.peers]
    for peer in PEERS:
        if peer not in peers:
            res["skipped"][peer] = "--no-peers" if args.no_peers else "not selected"
            continue
        why = peer_available(peer)
        if why:
            res["skipped"][peer] = why
            continue
        data = tmp / f"{name}-data.npz"
        if not data.exists():
            write_peer_data(w, data)
        script = tmp / f"{name}-{peer.split()[0].split('.')[0]}.py"
        script.write_text(peer_script(w, peer, data))
        pr: dict = {"cold": [], "warm": []}
        for i in range(args.runs):
            env = dict(base_env, TORCHINDUCTOR_CACHE_DIR=str(tmp / f"{name}-inductor-{i}"))
            for phase in ("cold", "warm"):
                r = run_script(script, env, args.timeout)
                pr[phase].append(r)
                print(f"    {peer:<16} run {i + 1}/{args.runs} {phase:<6} " + _brief(r), flush=True)
        res["contenders"][peer] = {ph: median_of(rs) for ph, rs in pr.items()}
        res["contenders"][peer]["per_run"] = pr
    return res


def _brief(r: dict) -> str:
    if "error" in r:
        return "FAILED " + r["error"][-300:].replace("\n", " | ")
    s = (f"wall {r['process_wall_s']:.2f} s, cpu {r['process_cpu_s']:.2f} s (import {r['import_wall_s']:.2f} s, "
         f"compile + first step {r['compile_first_step_wall_s']:.2f} s / cpu {r['compile_first_step_cpu_s']:.2f} s)")
    if r.get("numba_cache_misses") is not None:
        s += f"; numba misses {r['numba_cache_misses']}, manifest {r.get('from_manifest')}"
    return s


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

def table(results: dict) -> str:
    lines = ["", "medians over runs; wall = the whole process (interpreter start included), cpu = its CPU seconds; "
             "import / compile+1st = inside the process (wall / cpu)"]
    hdr = (f"  {'contender':<16} {'start':<7} {'wall s':>7} {'cpu s':>7} {'import s':>13} {'compile+1st s':>14} "
           f"{'llvm s':>8} {'misses':>7}")
    for name, r in results["workloads"].items():
        lines.append(f"\n{name}: {r['config']}")
        lines.append(hdr)
        for who, phases in r["contenders"].items():
            for ph in ("cold", "warm", "edited"):
                m = phases.get(ph)
                if m is None:
                    continue
                if "error" in m:
                    lines.append(f"  {who:<16} {ph:<7} FAILED {m['error'][-200:]}")
                    continue
                ns = f"{m['numba_s']:8.2f}" if "numba_s" in m else f"{'':8}"
                mi = f"{m['numba_cache_misses']:7.0f}" if "numba_cache_misses" in m else f"{'':7}"
                lines.append(f"  {who:<16} {ph:<7} {m['process_wall_s']:7.2f} {m['process_cpu_s']:7.2f} "
                             f"{m['import_wall_s']:6.2f}/{m['import_cpu_s']:<6.2f} "
                             f"{m['compile_first_step_wall_s']:6.2f}/{m['compile_first_step_cpu_s']:<7.2f} {ns} {mi}")
        for who, why in r["skipped"].items():
            if why != "not selected":
                lines.append(f"  {who:<16} skipped: {why}")
    text = "\n".join(lines)
    print(text)
    return text


def environment() -> dict:
    import numpy as np
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
            "numpy": np.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "loadavg_start": os.getloadavg()}
    from _model_bench import versions_and_commit  # imports NumPy only: no Numba in this process
    meta.update(versions_and_commit(("numba", "torch", "jax")))
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated subset of {WORKLOADS}")
    ap.add_argument("--runs", type=int, default=3, help="runs per start, a fresh cache each; medians (default 3)")
    ap.add_argument("--target", default="cpu", choices=("cpu", "parallel"), help="graphc's target (default cpu)")
    ap.add_argument("--no-peers", action="store_true", help="graphc only (no torch.compile, no JAX)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {list(PEERS)}")
    ap.add_argument("--cache-dir", default=None,
                    help="use this GRAPHC_CACHE_DIR for every graphc start instead of a fresh one per run "
                         "(then 'cold' is whatever that cache holds; for smoke runs)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per start before it counts as failed")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_compile.json"), help="JSON output path")
    args = ap.parse_args(argv)
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in names if w not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload(s) {bad}; choose from {WORKLOADS}")
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    meta = environment()
    print(f"graphc bench_compile  {meta['date']}  commit {meta.get('commit')}"
          f"{' (dirty)' if meta.get('worktree_dirty') else ''}; {meta['cpu_count']} cores, "
          f"load average {meta['loadavg_start']}", flush=True)
    base_env = dict(os.environ)
    base_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), base_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    results = {"meta": meta, "args": vars(args), "edit_lines": EDIT_LINES, "workloads": {},
               "cache_dir_reused": bool(args.cache_dir)}
    with tempfile.TemporaryDirectory(prefix="graphc_bench_compile_") as tmp:
        for name in names:
            print(f"... {name}", flush=True)
            results["workloads"][name] = bench_workload(name, args, Path(tmp), base_env)
    meta["loadavg_end"] = os.getloadavg()
    results["table"] = table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
