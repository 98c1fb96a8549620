"""target="cuda" on a real GPU against PyTorch and JAX on the same GPU, in the same run:
correctness against target="cpu" and microseconds per training step (forward + backward +
Adam, float32 ReLU MLP, the configs of bench_step.py), with launches per step and the host
cost of one launch (the numbers that decide small models on a GPU).

    python benchmarks/bench_cuda.py                        # all configs; needs a CUDA device
    python benchmarks/bench_cuda.py --configs tiny --reps 200
    python benchmarks/bench_cuda.py --selftest             # the table code on made-up numbers (no GPU)
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/bench_cuda.py --configs tiny --reps 3 --warmup 1 \\
        --budget 1 --no-cpu            # smoke run of the whole script, no GPU (~6 min on 2 cores)

Run by benchmarks/gpu_check.sh on a machine with a CUDA GPU. Contenders, one process,
interleaved round by round, median over rounds after warm-up. Every contender does the same work per call: the
batch copied from host memory to the device, forward + backward + Adam, the loss back on the
host (so every timing includes the device synchronization):

- graphc cuda: plain launches, GEMMs through cuBLAS/CuPy when importable;
- graphc cuda (fallback GEMM): the same with the numba.cuda GEMM (GRAPHC_CUDA_GEMM=numba);
- graphc cuda (graph replay): ``cuda_graphs=True``: the step captured once as a CUDA graph and
  replayed (numba.cuda GEMM, the capturable one; see graphc/backends/cuda/graphs.py);
- graphc cpu, for scale (``--no-cpu`` leaves it out);
- peers: PyTorch eager (fused Adam); PyTorch with CUDA graphs (the standard whole-step
  recipe: static input tensors, warm-up on a side stream, forward + backward + fused
  ``capturable`` Adam captured in one ``torch.cuda.CUDAGraph``, replayed per step); JAX
  ``jit`` of ``value_and_grad`` + an Adam update with donated parameter/state buffers,
  ``block_until_ready`` on the loss. A peer that is not importable or has no GPU is skipped
  with the reason printed and recorded.

The table gives µs/step, the host-side launches per step and the ratio to the best peer (> 1:
the peer is faster). Earlier reference on an H100 (µs/step tiny/small/medium/large): PyTorch
with CUDA graphs 95/156/207/537, JAX jit 187/84/109/151 (batch resident on the device there);
The backend's targets: within 1.5x of the best peer at every size, ahead of all at tiny and small.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# JAX must not grab 75% of the GPU before numba, CuPy and PyTorch allocate (set before any import)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_step import CONFIGS, LR, B1, B2, EPS, graphc_model, init_params, make_data  # noqa: E402

import numpy as np  # noqa: E402

import graphc as gc  # noqa: E402
from graphc.backends.cuda.compat import cupy_or_none, numba_cuda, simulator_active  # noqa: E402

cuda = numba_cuda()  # a module global: the simulator rewrites kernels' global `cuda` only

REFERENCE_H100 = {"torch+cudagraphs": {"tiny": 95, "small": 156, "medium": 207, "large": 537},
                  "jax jit": {"tiny": 187, "small": 84, "medium": 109, "large": 151}}
PEERS = ("torch eager", "torch+cudagraphs", "jax jit")
GRAPHC = ("graphc cuda", "graphc cuda (fallback GEMM)", "graphc cuda (graph replay)", "graphc cpu")


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


# ---- peers ------------------------------------------------------------------------------------------

def _torch_cuda():
    """(torch, None) when PyTorch can run on the GPU, else (None, why)."""
    if simulator_active():
        return None, "NUMBA_ENABLE_CUDASIM=1: no GPU in this run"
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        return None, f"PyTorch not importable ({type(e).__name__}: {e})"
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} sees no CUDA device"
    return torch, None


def _torch_model(torch, params, dev):
    ps = [torch.tensor(p.copy(), device=dev, requires_grad=True) for p in params]
    L = len(ps) // 2

    def fwd(xb, yb):
        h = xb
        for i in range(L):
            h = torch.addmm(ps[2 * i + 1], h, ps[2 * i])
            if i < L - 1:
                h = torch.relu(h)
        return torch.nn.functional.cross_entropy(h, yb)
    return ps, fwd


def torch_eager(params, x, y):
    """PyTorch eager on the GPU with fused Adam: returns (step, None) or (None, why)."""
    torch, why = _torch_cuda()
    if torch is None:
        return None, why
    dev = torch.device("cuda")
    ps, fwd = _torch_model(torch, params, dev)
    opt = torch.optim.Adam(ps, lr=LR, betas=(B1, B2), eps=EPS, fused=True)

    def step():
        xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
        opt.zero_grad(set_to_none=False)
        loss = fwd(xt, yt)
        loss.backward()
        opt.step()
        return loss.item()
    return step, None


def torch_graphs(params, x, y):
    """PyTorch with the whole step (fwd + bwd + fused capturable Adam) in one CUDA graph:
    returns (step, None) or (None, why)."""
    torch, why = _torch_cuda()
    if torch is None:
        return None, why
    try:
        dev = torch.device("cuda")
        ps, fwd = _torch_model(torch, params, dev)
        opt = torch.optim.Adam(ps, lr=LR, betas=(B1, B2), eps=EPS, fused=True, capturable=True)
        sx, sy = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)  # the static inputs
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: allocator pools, Adam's state, cuBLAS workspaces
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                fwd(sx, sy).backward()
                opt.step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            sloss = fwd(sx, sy)
            sloss.backward()
            opt.step()
        xh, yh = torch.from_numpy(x), torch.from_numpy(y)

        def step():
            sx.copy_(xh)
            sy.copy_(yh)
            graph.replay()
            return sloss.item()
        loss = step()
        if not np.isfinite(loss):
            return None, f"the captured step returned loss {loss}"
        return step, None
    except Exception as e:  # noqa: BLE001 - a peer that fails is skipped, with the reason
        return None, f"capture failed: {type(e).__name__}: {str(e)[:300]}"


def jax_jit(params, x, y):
    """JAX jit of value_and_grad + Adam on the GPU, donated buffers: (step, None) or (None, why)."""
    if simulator_active():
        return None, "NUMBA_ENABLE_CUDASIM=1: no GPU in this run"
    try:
        import jax
        import jax.numpy as jnp
    except Exception as e:  # noqa: BLE001
        return None, f"JAX not importable ({type(e).__name__}: {e})"
    try:
        gpus = jax.devices("gpu")
    except Exception as e:  # noqa: BLE001
        return None, f"jax {jax.__version__} has no GPU backend ({type(e).__name__}: {str(e)[:200]})"
    dev = gpus[0]
    L = len(params) // 2

    def loss_fn(ps, xb, yb):
        h = xb
        for i in range(L):
            h = h @ ps[2 * i] + ps[2 * i + 1]
            if i < L - 1:
                h = jax.nn.relu(h)
        logz = jax.nn.logsumexp(h, axis=1)
        return jnp.mean(logz - jnp.take_along_axis(h, yb[:, None], axis=1)[:, 0])

    def step(ps, m, v, t, xb, yb):  # graphc's (Keras') Adam formulation
        loss, g = jax.value_and_grad(loss_fn)(ps, xb, yb)
        t = t + 1
        alpha = LR * jnp.sqrt(1 - B2 ** t) / (1 - B1 ** t)
        m = [B1 * mi + (1 - B1) * gi for mi, gi in zip(m, g)]
        v = [B2 * vi + (1 - B2) * gi * gi for vi, gi in zip(v, g)]
        ps = [p - alpha * mi / (jnp.sqrt(vi) + EPS) for p, mi, vi in zip(ps, m, v)]
        return ps, m, v, t, loss

    try:
        jstep = jax.jit(step, donate_argnums=(0, 1, 2))
        put = lambda a: jax.device_put(a, dev)  # noqa: E731
        s = {"ps": [put(p) for p in params], "m": [put(np.zeros_like(p)) for p in params],
             "v": [put(np.zeros_like(p)) for p in params], "t": put(np.float32(0.0))}
        y32 = y.astype(np.int32)

        def run():
            xb, yb = put(x), put(y32)  # the batch from the host, like every other contender
            s["ps"], s["m"], s["v"], s["t"], loss = jstep(s["ps"], s["m"], s["v"], s["t"], xb, yb)
            return float(loss.block_until_ready())
        loss = run()
        if not np.isfinite(loss):
            return None, f"the jitted step returned loss {loss}"
        return run, None
    except Exception as e:  # noqa: BLE001
        return None, f"jit failed: {type(e).__name__}: {str(e)[:300]}"


# ---- graphc -----------------------------------------------------------------------------------------

def graphc_cuda(widths, **kw):
    return gc.compile(graphc_model(widths), optimizer=gc.optim.Adam(LR), target="cuda", **kw)


def check(widths, batch, steps=3) -> dict:
    """graphc cuda (plain and graph replay) against graphc cpu after ``steps`` steps."""
    x, y = make_data(batch, widths, seed=1)
    cpu = gc.compile(graphc_model(widths), optimizer=gc.optim.Adam(LR), target="cpu", seed=0)
    devs = {"plain": graphc_cuda(widths, seed=0), "graph replay": graphc_cuda(widths, seed=0, cuda_graphs=True)}
    diffs = {k: [] for k in devs}
    for _ in range(steps):
        want = float(cpu(x=x, y=y)["loss"])
        for k, d in devs.items():
            diffs[k].append(abs(want - float(d(x=x, y=y)["loss"])))
    out = {}
    pc = cpu.params
    for k, d in devs.items():
        pd = d.params
        dp = max(float(np.max(np.abs(pc[n] - pd[n]))) for n in pc)
        out[k] = {"max_loss_diff": max(diffs[k]), "max_param_diff": dp, "ok": max(diffs[k]) < 1e-3 and dp < 1e-3}
    out["ok"] = all(v["ok"] for v in out.values())
    return out


def host_launches(prog) -> dict:
    """What the host issues per step: kernel launches (or one graph launch) and copies."""
    c = prog.launches_per_step()
    r = getattr(prog, "_replay", None)
    inner = c.get("kernels", 0) + c.get("cublas", 0) + c.get("memcpy_d2d", 0)
    io = {"h2d": c.get("h2d"), "d2h": c.get("d2h"), "counts": c}
    if r is not None and r.replays:
        return {"launches": 1, "graph_nodes": r.nodes, "path": "graph replay", **io}
    return {"launches": inner, "path": "plain launches", **io}


# ---- timing and the table ---------------------------------------------------------------------------

def interleaved(contenders: dict, reps: int, warmup: int, budget_s: float) -> dict:
    """Median µs per call of each contender, round-robin; stops once ``budget_s`` is spent
    (after at least 3 rounds)."""
    for f in contenders.values():
        for _ in range(warmup):
            f()
    times = {k: [] for k in contenders}
    t_end = time.perf_counter() + budget_s
    for r in range(reps):
        for k, f in contenders.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
        if r >= 2 and time.perf_counter() > t_end:
            break
    return {k: float(np.median(v) * 1e6) for k, v in times.items()}


def ratios(us: dict) -> dict:
    """Each contender's µs/step divided by the best peer's (None where no peer ran)."""
    best = min((us[p] for p in PEERS if p in us), default=None)
    return {k: (v / best if best else None) for k, v in us.items()}


def table(res: dict) -> str:
    """The µs/step table (ratio to the best peer in parentheses) and launches per step."""
    names = list(res["configs"])
    rows = [k for k in GRAPHC + PEERS if any(k in res["configs"][n]["us_per_step"] for n in names)]
    head = f"{'µs/step (x best peer)':<30}" + "".join(f"{n:>20}" for n in names)
    lines = [head, "-" * len(head)]
    for k in rows:
        cells = []
        for n in names:
            c = res["configs"][n]
            v, q = c["us_per_step"].get(k), c["ratio_to_best_peer"].get(k)
            cells.append("skipped" if v is None else f"{v:.1f}" + (f" ({q:.2f}x)" if q else ""))
        lines.append(f"{k:<30}" + "".join(f"{s:>20}" for s in cells))
    lines.append("")
    lines.append(f"{'host launches/step':<30}" + "".join(f"{n:>20}" for n in names))
    for k in ("graphc cuda", "graphc cuda (fallback GEMM)", "graphc cuda (graph replay)"):
        cells = []
        for n in names:
            h = res["configs"][n].get("launches", {}).get(k)
            cells.append("-" if h is None else (f"1 graph ({h['graph_nodes']} nodes)" if h["path"] == "graph replay"
                                                 else f"{h['launches']}"))
        lines.append(f"{k:<30}" + "".join(f"{s:>20}" for s in cells))
    if "torch+cudagraphs" in rows:
        lines.append(f"{'torch+cudagraphs':<30}" + "".join(
            f"{'1 graph' if 'torch+cudagraphs' in res['configs'][n]['us_per_step'] else '-':>20}" for n in names))
    best = {n: min(((c, v) for c, v in res["configs"][n]["us_per_step"].items() if c in PEERS),
                   key=lambda t: t[1], default=(None, None)) for n in names}
    lines.append("")
    lines.append("best peer: " + "; ".join(f"{n} {b[0]} {b[1]:.1f} us" if b[0] else f"{n} none ran"
                                           for n, b in best.items()))
    if res.get("skipped"):
        lines.append("skipped: " + "; ".join(f"{k}: {v}" for k, v in res["skipped"].items()))
    return "\n".join(lines)


def versions() -> dict:
    v = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("numba", "numba_cuda", "cuda.bindings", "cupy", "torch", "jax"):
        try:
            m = __import__(mod, fromlist=["_"])
            v[mod] = getattr(m, "__version__", "?")
        except Exception as e:  # noqa: BLE001
            v[mod] = f"absent ({type(e).__name__})"
    return v


def selftest() -> int:
    """The table and ratio code on made-up numbers: runs anywhere, checks itself."""
    res = {"configs": {}, "skipped": {"jax jit": "made up"}}
    for i, n in enumerate(("tiny", "small")):
        us = {"graphc cuda": 400.0 + i, "graphc cuda (graph replay)": 60.0, "torch eager": 1600.0,
              "torch+cudagraphs": 100.0}
        res["configs"][n] = {"us_per_step": us, "ratio_to_best_peer": ratios(us),
                             "launches": {"graphc cuda": {"launches": 18, "h2d": 2, "d2h": 1, "path": "plain launches"},
                                          "graphc cuda (graph replay)": {"launches": 1, "graph_nodes": 18, "h2d": 2,
                                                                         "d2h": 1, "path": "graph replay"}}}
    text = table(res)
    print(text)
    r = res["configs"]["tiny"]["ratio_to_best_peer"]
    assert abs(r["graphc cuda (graph replay)"] - 0.6) < 1e-12 and abs(r["torch+cudagraphs"] - 1.0) < 1e-12
    assert ratios({"graphc cuda": 5.0}) == {"graphc cuda": None}
    assert "1 graph (18 nodes)" in text and "best peer: tiny torch+cudagraphs 100.0 us" in text
    assert "jax jit" not in text.split("skipped:")[0] and "jax jit: made up" in text
    print("selftest ok")
    return 0


# ---- main ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {list(CONFIGS)}")
    ap.add_argument("--reps", type=int, default=500, help="max timed rounds per config")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls per contender first")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds of timed rounds per config")
    ap.add_argument("--no-cpu", action="store_true", help="leave graphc cpu out")
    ap.add_argument("--no-peers", action="store_true", help="leave PyTorch and JAX out")
    ap.add_argument("--selftest", action="store_true", help="check the table code on made-up numbers and exit")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_cuda.json"))
    args = ap.parse_args(argv)
    if args.selftest:
        return selftest()
    if not cuda.is_available():
        print("bench_cuda: no CUDA device (set NUMBA_ENABLE_CUDASIM=1 for a slow smoke run)", file=sys.stderr)
        return 2
    sim = simulator_active()
    res = {"device": "simulator" if sim else str(cuda.get_current_device().name), "versions": versions(),
           "cupy": cupy_or_none() is not None, "configs": {}, "skipped": {}}
    if isinstance(res["device"], bytes):
        res["device"] = res["device"].decode()
    res["launch_us"] = launch_cost(20 if sim else 2000)
    print(f"device {res['device']}; CuPy {'yes' if res['cupy'] else 'NO (fallback GEMM)'}; "
          f"one empty numba.cuda launch: {res['launch_us']:.1f} us\nversions: {res['versions']}")
    for name in args.configs.split(","):
        batch, widths = CONFIGS[name]
        x, y = make_data(batch, widths)
        r = {"batch": batch, "widths": widths, "check": check(widths, batch), "launches": {}, "skipped": {}}
        contenders = {}
        t0 = time.perf_counter()
        st = graphc_cuda(widths)
        st(x=x, y=y)
        r["first_call_s"] = time.perf_counter() - t0
        contenders["graphc cuda"] = lambda st=st: st(x=x, y=y)
        os.environ["GRAPHC_CUDA_GEMM"] = "numba"
        try:
            fb = graphc_cuda(widths)
            fb(x=x, y=y)
            contenders["graphc cuda (fallback GEMM)"] = lambda fb=fb: fb(x=x, y=y)
        finally:
            del os.environ["GRAPHC_CUDA_GEMM"]
        gr = graphc_cuda(widths, cuda_graphs=True)
        gr(x=x, y=y)
        gr(x=x, y=y)  # the first step runs plain launches, the second captures
        contenders["graphc cuda (graph replay)"] = lambda gr=gr: gr(x=x, y=y)
        if not args.no_cpu:
            cpu = gc.compile(graphc_model(widths), optimizer=gc.optim.Adam(LR), target="cpu")
            contenders["graphc cpu"] = lambda cpu=cpu: cpu(x=x, y=y)
        if not args.no_peers:
            params = init_params(widths)
            for k, make in (("torch eager", torch_eager), ("torch+cudagraphs", torch_graphs), ("jax jit", jax_jit)):
                f, why = make(params, x, y)
                if f is None:
                    r["skipped"][k] = why
                    res["skipped"].setdefault(k, why)
                    print(f"   {name}: {k} skipped: {why}")
                else:
                    contenders[k] = f
        r["us_per_step"] = interleaved(contenders, args.reps, args.warmup, args.budget)
        r["ratio_to_best_peer"] = ratios(r["us_per_step"])
        for k, s in (("graphc cuda", st), ("graphc cuda (fallback GEMM)", fb), ("graphc cuda (graph replay)", gr)):
            r["launches"][k] = host_launches(s.program_for(batch))
        r["listing"] = st.kernels()
        r["listing_replay"] = gr.kernels()
        r["step_path_replay"] = next(ln for ln in r["listing_replay"].splitlines() if ln.startswith("step path:"))
        r["ratio_to_h100_reference"] = r["us_per_step"]["graphc cuda"] / min(REFERENCE_H100[k][name] for k in REFERENCE_H100)
        res["configs"][name] = r
        print(f"\n== {name}: batch {batch}, widths {widths}; check vs cpu: {r['check']}")
        print(f"   first call (compile + run): {r['first_call_s']:.2f} s; graph replay: {r['step_path_replay']}")
        for k, v in r["us_per_step"].items():
            q = r["ratio_to_best_peer"][k]
            print(f"   {k:<28} {v:9.1f} us/step" + (f"  ({q:.2f}x best peer)" if q else ""))
        # after every config: a run cut short by its time limit keeps what it measured
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1, default=str))
    print("\n" + table(res))
    first = next(iter(res["configs"].values()))
    print("\n" + first["listing"] + "\n\n" + first["listing_replay"])
    print(f"\nwrote {args.out}")
    ok = all(c["check"]["ok"] for c in res["configs"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
