"""Data-parallel training over MPI (graphc/distributed.py): weak scaling from 1 to N ranks.

    python benchmarks/bench_distributed.py                      # 1 and 2 ranks, small/medium/large
    python benchmarks/bench_distributed.py --configs small --ranks 1,2 --reps 30

It launches itself under ``mpirun -n N --oversubscribe`` (one job per rank count; as root the
OMPI_ALLOW_RUN_AS_ROOT variables are set for it). Every rank runs with ONE BLAS and one Numba
thread (OPENBLAS_NUM_THREADS / NUMBA_NUM_THREADS = 1) so that N ranks use N cores: weak
scaling, each rank a fixed per-rank batch (the configs of bench_step.py), the global batch N
times that. Per config, ranks interleave in rounds (a barrier before each burst):

- ``dp step``: ``gc.compile(loss, optimizer=Adam, data_parallel=True)``, one call = one
  global step (forward + backward on the shard, one all-reduce of all gradients + the loss,
  the Adam update).
- ``local step``: the same step without the all-reduce (each rank alone).
- ``allreduce``: ``MPI_Allreduce`` alone of a buffer of the same size (params + 1 floats),
  through mpi4py; effective bytes/s = the ring all-reduce's traffic per rank,
  2 (N-1)/N x bytes, over its time ("bus bandwidth"), and bytes / time ("algorithm").
- ``agree``: the check every data-parallel step makes before its update (one
  ``MPI_Allreduce(MPI_MAX)`` of a few doubles: hyper-parameters equal on every rank, no
  rank wrote its store), alone; part of ``dp step``.
- ``overlap``: does a non-blocking all-reduce overlap with compute here? ``Iallreduce`` of
  the gradient-sized buffer started, the local step run, then ``Wait``; against the two in
  sequence. Equal times mean no overlap.

Results: a table on stdout and benchmarks/results/bench_distributed.json. The analysis and a
latency + bandwidth model for 8 and 64 machines are in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CONFIGS = {  # name: (per-rank batch, layer widths incl. input and classes), as bench_step.py
    "small": (64, [784, 128, 10]),
    "medium": (128, [784, 256, 256, 10]),
    "large": (1024, [784, 1024, 1024, 10]),
}


def build(widths):
    import graphc as gc
    x = gc.input("x", (None, widths[0]))
    y = gc.input("y", (None,), dtype="int64")
    h = x
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        h = h @ gc.param(f"W{i}", (a, b), init="he_normal") + gc.param(f"b{i}", (b,), init="zeros")
        if i < len(widths) - 2:
            h = gc.relu(h)
    return gc.softmax_cross_entropy(h, y)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def worker(args) -> None:
    import numpy as np
    from mpi4py import MPI

    import graphc as gc
    comm = MPI.COMM_WORLD
    r, n = comm.Get_rank(), comm.Get_size()
    out = {}
    for name in args.configs.split(","):
        batch, widths = CONFIGS[name]
        loss = build(widths)
        dp = gc.compile(loss, optimizer=gc.optim.Adam(1e-3), data_parallel=True)
        local = gc.compile(loss, optimizer=gc.optim.Adam(1e-3))
        rng = np.random.default_rng(r)
        feeds = {"x": rng.normal(size=(batch, widths[0])).astype(np.float32),
                 "y": rng.integers(0, widths[-1], batch)}
        nparams = sum(v.size for v in dp.params.values())
        buf = np.ones(nparams + 1, np.float32)
        req_buf = np.ones_like(buf)
        for _ in range(3):  # compile / load, warm caches
            dp(**feeds)
            local(**feeds)
            comm.Allreduce(MPI.IN_PLACE, buf)

        def overlap():
            req = comm.Iallreduce(MPI.IN_PLACE, req_buf)
            local(**feeds)
            req.Wait()

        def sequential():
            local(**feeds)
            comm.Allreduce(MPI.IN_PLACE, req_buf)

        tiny = np.ones(2, np.float32)  # 8 bytes: the latency term
        tasks = {"dp step": lambda: dp(**feeds), "local step": lambda: local(**feeds),
                 "allreduce": lambda: comm.Allreduce(MPI.IN_PLACE, buf),
                 "allreduce 8 B": lambda: comm.Allreduce(MPI.IN_PLACE, tiny), "agree": dp._agree,
                 "overlap": overlap, "sequential": sequential}
        times = {k: [] for k in tasks}
        for _ in range(args.reps):
            for k, f in tasks.items():
                comm.Barrier()
                t0 = time.perf_counter()
                f()
                dt = time.perf_counter() - t0
                times[k].append(comm.allreduce(dt, op=MPI.MAX))  # the slowest rank's time
        med = {k: median(v) for k, v in times.items()}
        nbytes = 4 * (nparams + 1)
        out[name] = {"batch_per_rank": batch, "params": nparams, "bytes": nbytes,
                     "us": {k: 1e6 * v for k, v in med.items()},
                     "min_us": {k: 1e6 * min(v) for k, v in times.items()},
                     "iqr_us": {k: 1e6 * (sorted(v)[3 * len(v) // 4] - sorted(v)[len(v) // 4]) for k, v in times.items()},
                     "bus_GBps": (2 * (n - 1) / n * nbytes / med["allreduce"] / 1e9) if n > 1 else None,
                     "alg_GBps": (nbytes / med["allreduce"] / 1e9) if n > 1 else None}
    if r == 0:
        print("RESULT " + json.dumps({"ranks": n, "configs": out}), flush=True)


# the model's link parameters: (name, per-message latency alpha in s, bandwidth beta in bytes/s);
# assumed, typical of TCP over 10 GbE and of a 100 Gbit/s RDMA-capable fabric
LINKS = [("10 Gbit/s", 20e-6, 10e9 / 8), ("100 Gbit/s", 5e-6, 100e9 / 8)]


def ring_allreduce_s(n: int, nbytes: float, alpha: float, beta: float) -> float:
    """Ring all-reduce (reduce-scatter + all-gather): 2(n-1) messages of nbytes/n per rank."""
    return 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes / beta


def model(runs: list) -> list:
    """Predicted global step time on N machines, one rank each: the measured one-rank
    data-parallel step (compute + the flatten/cut copies) + a ring all-reduce over the link
    (no overlap: measured not to pay here). ``dominates``: the smallest N where the
    all-reduce takes longer than the compute (None: not below 100000)."""
    one = next(r for r in runs if r["ranks"] == 1)
    rows = []
    for name, c in one["configs"].items():
        compute = c["min_us"]["dp step"] * 1e-6
        for link, alpha, beta in LINKS:
            pred = {n: compute + ring_allreduce_s(n, c["bytes"], alpha, beta) for n in (8, 64)}
            dom = next((n for n in range(2, 100001) if ring_allreduce_s(n, c["bytes"], alpha, beta) > compute), None)
            rows.append({"config": name, "link": link, "compute_ms": 1e3 * compute,
                         "step_ms": {n: 1e3 * t for n, t in pred.items()},
                         "comm_fraction": {n: 1 - compute / t for n, t in pred.items()}, "dominates_at": dom})
    return rows


def launch(n: int, args) -> dict:
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
    if mpirun is None:
        sys.exit("bench_distributed.py needs mpirun: pip install -e '.[distributed]'")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [mpirun, "-n", str(n), "--oversubscribe", sys.executable, __file__, "--worker",
           "--configs", args.configs, "--reps", str(args.reps)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    sys.exit(f"mpirun -n {n} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="small,medium,large")
    ap.add_argument("--ranks", default="1,2", help="rank counts to run, comma-separated (default 1,2)")
    ap.add_argument("--reps", type=int, default=40, help="timed rounds per config (default 40)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_distributed.json"))
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    runs = [launch(int(n), args) for n in args.ranks.split(",")]
    print(f"weak scaling, per-rank batch fixed, 1 BLAS thread per rank; median us over {args.reps} rounds "
          f"(the slowest rank's time per round)")
    print(f"{'config':8} {'ranks':>5} {'params':>8} {'dp step':>9} {'local':>9} {'allreduce':>9} "
          f"{'ar/step':>7} {'bus GB/s':>8} {'overlap':>9} {'sequent.':>9}   min: dp step / local / allreduce / agree")
    for name in args.configs.split(","):
        for run in runs:
            c = run["configs"][name]
            us = c["us"]
            bw = f"{c['bus_GBps']:.2f}" if c["bus_GBps"] else "-"
            print(f"{name:8} {run['ranks']:5d} {c['params']:8d} {us['dp step']:9.0f} {us['local step']:9.0f} "
                  f"{us['allreduce']:9.0f} {us['allreduce'] / us['dp step']:7.0%} {bw:>8} "
                  f"{us['overlap']:9.0f} {us['sequential']:9.0f}   "
                  f"{c['min_us']['dp step']:.0f} / {c['min_us']['local step']:.0f} / {c['min_us']['allreduce']:.0f}"
                  f" / {c['min_us']['agree']:.1f}")
    rows = model(runs) if any(r["ranks"] == 1 for r in runs) else []
    if rows:
        print("model: N machines, one rank each, ring all-reduce (latency, bandwidth assumed per link); "
              "compute = the measured 1-rank dp step (min)")
        for m in rows:
            print(f"{m['config']:8} {m['link']:>10}: compute {m['compute_ms']:8.2f} ms  step on 8: "
                  f"{m['step_ms'][8]:8.2f} ms ({m['comm_fraction'][8]:4.0%} comm)  on 64: {m['step_ms'][64]:8.2f} ms "
                  f"({m['comm_fraction'][64]:4.0%} comm)  comm > compute from N = {m['dominates_at']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"runs": runs, "reps": args.reps, "model": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
