"""SAM (sharpness-aware minimization) as ONE compiled graphc step vs a plain step, and vs the
usual PyTorch SAM loop (closure-free form: two forward/backward passes and two optimizer
calls per step), each contender in a process of its own, rounds alternating, medians.

    python benchmarks/bench_sam.py                 # configs small, medium; --rounds, --steps, --threads
    python benchmarks/bench_sam.py --quick         # smoke run

The model: a ReLU MLP with softmax cross-entropy; SGD with momentum 0.9 as the base rule,
rho 0.05. graphc's SAM is examples/custom_optimizer.py's (a gradients() override: the loss is
re-evaluated at w + rho g/||g|| through gc.substitute, differentiated again, applied at w).
What to expect: about two plain steps (two forward/backward passes), no more.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"small": (32, [64, 32, 10]), "medium": (128, [784, 256, 10])}


def worker(contender: str, config: str, steps: int, rounds: int) -> dict:
    batch, sizes = CONFIGS[config]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    Y = rng.integers(0, sizes[-1], batch)
    if contender.startswith("graphc"):
        import importlib.util
        import graphc as gc
        spec = importlib.util.spec_from_file_location("custom_optimizer", ROOT / "examples" / "custom_optimizer.py")
        ex = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ex)
        x = gc.input("x", (None, sizes[0]))
        y = gc.input("y", (None,), dtype="int64")
        h = x
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            h = h @ gc.param(f"W{i}", (a, b), init="he_normal") + gc.param(f"b{i}", (b,))
            if i < len(sizes) - 2:
                h = gc.relu(h)
        base = gc.optim.SGD(0.01, momentum=0.9)
        opt = ex.SAM(base, rho=0.05) if contender == "graphc-sam" else base
        step = gc.compile(gc.softmax_cross_entropy(h, y), optimizer=opt)

        def one():
            step(x=X, y=Y)
    else:
        import torch
        torch.manual_seed(0)
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*layers)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        xt, yt = torch.from_numpy(X), torch.from_numpy(Y)
        lossf = torch.nn.CrossEntropyLoss()
        params = list(model.parameters())

        def one():
            if contender == "torch-sgd":
                opt.zero_grad()
                lossf(model(xt), yt).backward()
                opt.step()
                return
            opt.zero_grad()  # SAM: ascend, gradient there, back, base step with that gradient
            lossf(model(xt), yt).backward()
            with torch.no_grad():
                norm = torch.norm(torch.stack([p.grad.norm() for p in params]))
                eps = [0.05 * p.grad / (norm + 1e-12) for p in params]
                for p, e in zip(params, eps):
                    p.add_(e)
            opt.zero_grad()
            lossf(model(xt), yt).backward()
            with torch.no_grad():
                for p, e in zip(params, eps):
                    p.sub_(e)
            opt.step()
    for _ in range(20):
        one()
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(steps):
            one()
        samples.append((time.perf_counter() - t) / steps * 1e6)
    return {"median_us": float(np.median(samples)), "min_us": float(np.min(samples))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="small,medium")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="BLAS/torch threads per contender (default 1)")
    ap.add_argument("--quick", action="store_true", help="small config, few rounds, no torch")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.steps, args.rounds)))
        return 0
    configs = ["small"] if args.quick else args.configs.split(",")
    contenders = ["graphc-sgd", "graphc-sam"] + ([] if args.quick else ["torch-sgd", "torch-sam"])
    rounds, steps = (3, 10) if args.quick else (args.rounds, args.steps)
    env = dict(os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                             "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")})
    results = {}
    for cfg in configs:
        res = {}
        for rep in range(2):  # two passes over the contenders, alternating order; the better median counts
            for c in (contenders if rep == 0 else contenders[::-1]):
                p = subprocess.run([sys.executable, __file__, "--worker", c, cfg, "--rounds", str(rounds),
                                    "--steps", str(steps)], capture_output=True, text=True, env=env, cwd=ROOT)
                if p.returncode != 0:
                    raise SystemExit(f"{c} on {cfg} failed:\n{p.stderr[-2000:]}")
                r = json.loads(p.stdout.strip().splitlines()[-1])
                if c not in res or r["median_us"] < res[c]["median_us"]:
                    res[c] = r
        results[cfg] = res
        sam, sgd = res["graphc-sam"]["median_us"], res["graphc-sgd"]["median_us"]
        line = (f"{cfg:7s} graphc SGD {sgd:9.1f} us   graphc SAM {sam:9.1f} us  (SAM / plain {sam / sgd:.2f}x)")
        if "torch-sam" in res:
            line += (f"   torch SGD {res['torch-sgd']['median_us']:9.1f} us   torch SAM {res['torch-sam']['median_us']:9.1f}"
                     f" us  (torch SAM / graphc SAM {res['torch-sam']['median_us'] / sam:.2f}x)")
        print(line, flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_sam.json").write_text(json.dumps({"load": os.getloadavg(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
