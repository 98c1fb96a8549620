"""target="cuda" on a real GPU: correctness against target="cpu" and microseconds per training
step (forward + backward + Adam, float32 ReLU MLP, the configs of bench_step.py), with the
numbers that decide small models: launches per step and the host cost of one launch.

    python benchmarks/bench_cuda.py                   # all configs; needs a CUDA device
    python benchmarks/bench_cuda.py --configs tiny --reps 200

Run by benchmarks/gpu_check.sh on a lent machine. Contenders (one process, interleaved round
by round, median over rounds after warm-up; each call ends with the loss on the host, so
every timing includes the device synchronization):

- graphc cuda (GEMMs through cuBLAS/CuPy when importable) and graphc cuda with the fallback
  numba.cuda GEMM (GRAPHC_CUDA_GEMM=numba), graphc cpu for scale;
- PyTorch eager on the GPU (fused Adam) when importable.
Reference (measured earlier on an H100, µs/step tiny/small/medium/large): PyTorch with CUDA
graphs 95/156/207/537, JAX jit 187/84/109/151; the issue's target is within 1.5x of the best
at medium and large.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_step import CONFIGS, LR, B1, B2, EPS, graphc_model, init_params, make_data  # noqa: E402

import numpy as np  # noqa: E402

import graphc as gc  # noqa: E402
from graphc.backends.cuda.compat import cupy_or_none, numba_cuda  # noqa: E402

cuda = numba_cuda()  # a module global: the simulator rewrites kernels' global `cuda` only

REFERENCE = {"torch+cudagraphs": {"tiny": 95, "small": 156, "medium": 207, "large": 537},
             "jax jit": {"tiny": 187, "small": 84, "medium": 109, "large": 151}}


def launch_cost(n=2000) -> float:
    """Host microseconds of one launch of an empty numba.cuda kernel (synchronized at the end)."""
    @cuda.jit
    def empty(a, i):
        if cuda.grid(1) == 0 and i < 0:
            a[0] = 1.0
    a = cuda.device_array(4, dtype=np.float32)
    f = empty[1, 32]
    f(a, 1)
    cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        f(a, 1)
    cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def torch_step(widths, params, x, y):
    try:
        import torch
        if not torch.cuda.is_available():
            return None
    except ImportError:
        return None
    dev = torch.device("cuda")
    ps = [torch.tensor(p.copy(), device=dev, requires_grad=True) for p in params]
    opt = torch.optim.Adam(ps, lr=LR, betas=(B1, B2), eps=EPS, fused=True)
    L = len(ps) // 2

    def step():
        xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
        opt.zero_grad(set_to_none=False)
        h = xt
        for i in range(L):
            h = torch.addmm(ps[2 * i + 1], h, ps[2 * i])
            if i < L - 1:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, yt)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def check(widths, batch, steps=3) -> dict:
    x, y = make_data(batch, widths, seed=1)
    cpu = gc.compile(graphc_model(widths), optimizer=gc.optim.Adam(LR), target="cpu", seed=0)
    dev = gc.compile(graphc_model(widths), optimizer=gc.optim.Adam(LR), target="cuda", seed=0)
    dl = [abs(float(cpu(x=x, y=y)["loss"]) - float(dev(x=x, y=y)["loss"])) for _ in range(steps)]
    pc, pd = cpu.params, dev.params
    dp = max(float(np.max(np.abs(pc[k] - pd[k]))) for k in pc)
    return {"max_loss_diff": max(dl), "max_param_diff": dp, "ok": max(dl) < 1e-3 and dp < 1e-3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds of timed rounds per config")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_cuda.json"))
    args = ap.parse_args(argv)
    if not cuda.is_available():
        print("bench_cuda: no CUDA device", file=sys.stderr)
        return 2
    res = {"device": str(cuda.get_current_device().name) if hasattr(cuda, "get_current_device") else "simulator", "cupy": cupy_or_none() is not None, "configs": {}}
    res["launch_us"] = launch_cost(20 if not hasattr(cuda, "get_current_device") else 2000)
    print(f"device {res['device']}; CuPy {'yes' if res['cupy'] else 'NO (fallback GEMM)'}; "
          f"one empty numba.cuda launch: {res['launch_us']:.1f} us")
    for name in args.configs.split(","):
        batch, widths = CONFIGS[name]
        x, y = make_data(batch, widths)
        r = {"check": check(widths, batch)}
        contenders = {}
        t0 = time.perf_counter()
        st = gc.compile(graphc_model(widths), optimizer=gc.optim.Adam(LR), target="cuda")
        st(x=x, y=y)
        r["first_call_s"] = time.perf_counter() - t0
        prog = st.program_for(batch)
        r["launches"] = prog.launches_per_step()
        r["listing"] = st.kernels()
        contenders["graphc cuda"] = lambda st=st: st(x=x, y=y)
        os.environ["GRAPHC_CUDA_GEMM"] = "numba"
        try:
            fb = gc.compile(graphc_model(widths), optimizer=gc.optim.Adam(LR), target="cuda")
            fb(x=x, y=y)
            contenders["graphc cuda (fallback GEMM)"] = lambda fb=fb: fb(x=x, y=y)
        finally:
            del os.environ["GRAPHC_CUDA_GEMM"]
        cpu = gc.compile(graphc_model(widths), optimizer=gc.optim.Adam(LR), target="cpu")
        contenders["graphc cpu"] = lambda cpu=cpu: cpu(x=x, y=y)
        ts = torch_step(widths, init_params(widths), x, y)
        if ts is not None:
            contenders["torch eager cuda"] = ts
        times = {k: [] for k in contenders}
        for f in contenders.values():
            for _ in range(args.warmup):
                f()
        t_end = time.perf_counter() + args.budget
        for _ in range(args.reps):
            for k, f in contenders.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
            if time.perf_counter() > t_end:
                break
        r["us_per_step"] = {k: float(np.median(v) * 1e6) for k, v in times.items()}
        best_ref = min(REFERENCE[k][name] for k in REFERENCE)
        r["ratio_to_best_reference"] = r["us_per_step"]["graphc cuda"] / best_ref
        res["configs"][name] = r
        print(f"\n== {name}: batch {batch}, widths {widths}; check vs cpu: {r['check']}")
        print(f"   first call (compile + run): {r['first_call_s']:.2f} s; launches/step {r['launches']}")
        for k, v in r["us_per_step"].items():
            print(f"   {k:<28} {v:9.1f} us/step")
        print(f"   graphc cuda / best reference ({best_ref} us): {r['ratio_to_best_reference']:.2f}x")
    print("\n" + res["configs"][next(iter(res["configs"]))]["listing"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1, default=str))
    ok = all(c["check"]["ok"] for c in res["configs"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
