"""Time ONE training step (forward + backward + Adam) of a float32 LSTM classifier: graphc's
compiled targets against PyTorch eager ``nn.LSTM`` and JAX ``lax.scan`` + jit, each in a process
of its own (rounds alternating between them), with the step's GEMM floor, graphc's cold compile
time and where graphc's step time goes (``step.explain``).

    python benchmarks/bench_rnn.py --threads 1 --budget 15 --no-side-by-side --profile-reps 0  # h64, h128, h512
    python benchmarks/bench_rnn.py --threads 2               # both cores per library (a quiet machine)
    python benchmarks/bench_rnn.py --configs h64 --threads 1
    python benchmarks/bench_rnn.py --quick --no-peers                           # smoke run

bench_rnn.py's own flags (the others are the harness's, see --help): ``--no-probe`` skips the
cold compile and explain process, ``--no-explain`` only the explain.

The model: x (batch 32, 32 time steps, 32 features) -> LSTM(hidden) (Keras' formulation: gates
i, f, c, o; sigmoid gates, tanh; last step's h) -> dense to 10 classes -> softmax cross-entropy
(mean over the batch); Adam(1e-3) in Keras' formulation. Configs h64 / h128 / h512 set the
hidden size; ``quick`` is a tiny one (batch 4, 3 steps, 4 features, hidden 8).

Contenders (see benchmarks/_model_bench.py for the harness):

- graphc cpu / parallel: the ``graphc.nn.LSTM`` layer called on a DSL input (its weights are
  ``gc.param``s named ``lstm/lstm_cell/{kernel,recurrent_kernel,bias}``), the dense head and the
  loss in the DSL, ``gc.compile(loss, optimizer=gc.optim.Adam(1e-3), target=...)``. The layer
  hoists the input projection (one GEMM over batch*time rows) and runs the recurrence with
  ``gc.scan`` (``checkpoint=False``: the forward loop saves what the reverse step reads),
  which the cpu target compiles as one loop over the body's kernels and the parallel target
  unrolls into 32 copies of the body.
- PyTorch eager: ``torch.nn.LSTM(batch_first=True)`` (its native CPU LSTM) with graphc's
  weights transposed into PyTorch's layout (same gate order); PyTorch's second bias
  ``bias_hh_l0`` is a zero constant (frozen), so the model is the same function with the same
  trainable parameters; ``nn.Linear`` head, ``F.cross_entropy``, fused Adam.
- JAX jit: the same cell in ``jax.numpy`` under ``lax.scan`` (input projection hoisted as in
  graphc), the whole step (value_and_grad + Adam) under one ``jax.jit``.
- GEMM floor (numba): the GEMMs a step cannot avoid, with the input projection and both weight
  gradients as single GEMMs over all steps (as oneDNN/cuDNN do): X @ W_x (B*T x F x 4H); per step
  t >= 1 h_{t-1} @ W_h (B x H x 4H) and in the reverse pass dz_t @ W_h^T (B x 4H x H), 31 each;
  dW_h = H_prev^T dZ over B*(T-1) rows; dW_x = X^T dZ over B*T rows; the head's forward, weight
  and input gradient. Adam pass: one fused loop over params, grads, m, v. floor = both.
- roofline floor (computed, not timed): the same GEMM FLOPs at graphc/peaks.py's measured GEMM
  rate plus one streaming pass over params, grads, m and v (read p, g, m, v, write p, m, v) at
  its measured triad bandwidth. Lower than the timed floor: small GEMMs do not reach BLAS's
  peak rate.

Before the timed rounds, per config: graphc cpu is compiled in a process of its own with an empty
cache (``GRAPHC_CACHE_DIR`` set to a fresh directory): the cold compile time; the same process
then runs ``step.explain(verbose=False)`` (per-kernel times) and reports the number of kernels
per step, by kind, and the share of kernels that work on one time step (shape (batch, n), n a
multiple of hidden). The timed rounds use that cache (graphc's workers start warm).

Every contender first runs 3 steps from graphc's initial parameters (seed 0) on the same batch;
the step-0 losses (the same weights) are compared with graphc cpu's (``step0_rel_diff``).
Results: a table on stdout and benchmarks/results/bench_rnn.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_bench import LR, Bench, Gemm, jax_adam_step, main  # noqa: E402

SCRIPT = Path(__file__).resolve()
HERE = SCRIPT.parent
CLASSES = 10
CONFIGS = {
    "h64": {"batch": 32, "seq": 32, "features": 32, "hidden": 64},
    "h128": {"batch": 32, "seq": 32, "features": 32, "hidden": 128},
    "h512": {"batch": 32, "seq": 32, "features": 32, "hidden": 512},
    "quick": {"batch": 4, "seq": 3, "features": 4, "hidden": 8},
}
K, RK, BIAS = "lstm/lstm_cell/kernel", "lstm/lstm_cell/recurrent_kernel", "lstm/lstm_cell/bias"
CONTENDERS = ("graphc cpu", "graphc parallel", "torch eager", "jax jit", "GEMM floor (numba)", "Adam pass")


def describe(c: dict) -> str:
    return (f"LSTM {c['hidden']}, batch {c['batch']}, {c['seq']} steps, {c['features']} features, "
            f"dense {CLASSES}, softmax CE, Adam")


def graphc_loss(c: dict):
    import graphc as gc
    from graphc import nn
    x = gc.input("x", (None, c["seq"], c["features"]))
    y = gc.input("y", (None,), dtype="int64")
    h = nn.LSTM(c["hidden"], name="lstm")(x)
    W = gc.param("Wd", (c["hidden"], CLASSES), init="glorot_uniform")
    b = gc.param("bd", (CLASSES,), init="zeros")
    return gc.softmax_cross_entropy(h @ W + b, y)


def make_data(c: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((c["batch"], c["seq"], c["features"])).astype(np.float32),
            "y": rng.integers(0, CLASSES, c["batch"]).astype(np.int64)}


def gemms(c: dict) -> list:
    B, T, F, H = c["batch"], c["seq"], c["features"], c["hidden"]
    out = [Gemm(B * T, F, 4 * H, what="input projection")]
    out += [Gemm(B, H, 4 * H, what=f"h @ W_h step {t}") for t in range(1, T)]
    out += [Gemm(B, 4 * H, H, tb=True, what=f"dz @ W_h^T step {t}") for t in range(1, T)]
    out += [Gemm(H, B * (T - 1), 4 * H, ta=True, what="dW_h"), Gemm(F, B * T, 4 * H, ta=True, what="dW_x")]
    out += [Gemm(B, H, CLASSES, what="head fwd"), Gemm(H, B, CLASSES, ta=True, what="head dW"),
            Gemm(B, CLASSES, H, tb=True, what="head dX")]
    return out


def numpy_step(c: dict, params: dict, feeds: dict):
    raise NotImplementedError("bench_rnn: no eager NumPy LSTM step (not a contender here)")


def torch_step(c: dict, params: dict, feeds: dict, compiled: bool, threads: int):
    import torch
    import torch.nn.functional as TF
    H, Fe = c["hidden"], c["features"]
    lstm = torch.nn.LSTM(Fe, H, batch_first=True)
    head = torch.nn.Linear(H, CLASSES)
    with torch.no_grad():  # Keras layout (F, 4H) -> PyTorch's (4H, F); gate order i, f, g(c), o in both
        lstm.weight_ih_l0.copy_(torch.from_numpy(np.ascontiguousarray(params[K].T)))
        lstm.weight_hh_l0.copy_(torch.from_numpy(np.ascontiguousarray(params[RK].T)))
        lstm.bias_ih_l0.copy_(torch.from_numpy(params[BIAS]))
        lstm.bias_hh_l0.zero_()
        head.weight.copy_(torch.from_numpy(np.ascontiguousarray(params["Wd"].T)))
        head.bias.copy_(torch.from_numpy(params["bd"]))
    lstm.bias_hh_l0.requires_grad_(False)  # Keras has one bias: the second stays zero
    ps = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, head.weight, head.bias]
    from _model_bench import B1, B2, EPS
    try:
        opt = torch.optim.Adam(ps, lr=LR, betas=(B1, B2), eps=EPS, fused=True)
    except Exception:
        opt = torch.optim.Adam(ps, lr=LR, betas=(B1, B2), eps=EPS, foreach=True)
    x, y = torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["y"])

    def step():
        opt.zero_grad(set_to_none=False)
        out, _ = lstm(x)
        loss = TF.cross_entropy(head(out[:, -1]), y)
        loss.backward()
        opt.step()
        return loss.detach()

    fn = torch.compile(step) if compiled else step
    return fn


def jax_step(c: dict, params: dict, feeds: dict):
    import jax
    import jax.numpy as jnp
    H = c["hidden"]

    def loss_fn(ps, x, y):
        xp = jnp.swapaxes(x @ ps[K] + ps[BIAS], 0, 1)  # (T, B, 4H): the input projection, hoisted
        h0 = jnp.zeros((x.shape[0], H), x.dtype)

        def cell(carry, xt):
            h, cc = carry
            z = xt + h @ ps[RK]
            i, f = jax.nn.sigmoid(z[:, :H]), jax.nn.sigmoid(z[:, H:2 * H])
            g, o = jnp.tanh(z[:, 2 * H:3 * H]), jax.nn.sigmoid(z[:, 3 * H:])
            cc = f * cc + i * g
            h = o * jnp.tanh(cc)
            return (h, cc), None

        (h, _), _ = jax.lax.scan(cell, (h0, h0), xp)
        z = h @ ps["Wd"] + ps["bd"]
        logz = jax.nn.logsumexp(z, axis=1)
        return jnp.mean(logz - jnp.take_along_axis(z, y[:, None], axis=1)[:, 0])

    return jax_adam_step(loss_fn, params, (feeds["x"], feeds["y"].astype(np.int32)))


BENCH = Bench(name="bench_rnn", configs=CONFIGS, quick_configs=["quick"], default_configs=["h64", "h128", "h512"],
              describe=describe, graphc_loss=graphc_loss, make_data=make_data, numpy_step=numpy_step,
              torch_step=torch_step, jax_step=jax_step, gemms=gemms, contenders=CONTENDERS,
              notes=["graphc: graphc.nn.LSTM on a DSL input; torch: nn.LSTM; jax: lax.scan",
                     "floor = GEMM floor (numba) + Adam pass; roofline floor = GEMM FLOPs at peaks.py's GEMM rate "
                     "+ one pass over p, g, m, v at its triad bandwidth"])


# ---------------------------------------------------------------------------------------------
# cold compile and where graphc's time goes: one process per config, empty cache
# ---------------------------------------------------------------------------------------------

def probe(spec: dict) -> int:
    """In a fresh process whose GRAPHC_CACHE_DIR is empty: compile graphc cpu (cold), then
    ``step.explain`` and the roofline floor from graphc/peaks.py."""
    t0 = time.perf_counter()
    import graphc as gc
    t_import = time.perf_counter() - t0
    c = CONFIGS[spec["config"]]
    feeds = make_data(c)
    t0 = time.perf_counter()
    loss = graphc_loss(c)
    st = gc.compile(loss, optimizer=gc.optim.Adam(LR), target="cpu", seed=0)
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    st(**feeds)  # the first call lowers and compiles (Numba/llvmlite) for this batch size
    t_first = time.perf_counter() - t0
    out = {"import_s": t_import, "compile_s": t_compile, "first_call_s": t_first,
           "cold_total_s": t_compile + t_first}
    n_params = sum(int(np.asarray(v).size) for v in st.params.values())
    from graphc.peaks import peaks
    pk = peaks()
    gflop = sum(g.flops for g in gemms(c)) / 1e9
    adam_bytes = 7 * 4 * n_params  # read p, g, m, v; write p, m, v (float32)
    bw = pk.stream(parallel=False, mix="triad", footprint=4 * 4 * n_params)
    out["roofline"] = {"gemm_gflops_peak": pk.gemm("float32"), "triad_gbps": bw, "gemm_gflop": gflop,
                       "gemm_us": 1e6 * gflop / pk.gemm("float32"), "adam_us": 1e-3 * adam_bytes / bw}
    out["roofline"]["floor_us"] = out["roofline"]["gemm_us"] + out["roofline"]["adam_us"]
    if spec.get("explain", True):
        e = st.explain(feeds, runs=spec.get("runs", 5), verbose=False)
        B, H = c["batch"], c["hidden"]

        def per_step(k):  # a scan's loop (timed whole), or a kernel over one time step's (batch, n*hidden) tile
            return k.kind == "scan" or len(k.shape) == 2 and k.shape[0] == B and k.shape[1] % H == 0 and k.shape[1] != CLASSES
        kinds: dict = {}
        for k in e.kernels:
            kinds[k.kind] = kinds.get(k.kind, 0) + 1
        ps_k = [k for k in e.kernels if per_step(k)]
        tot = e.kernels_s or 1e-12
        top = sorted(e.kernels, key=lambda k: -k.time_s)[:6]
        out["explain"] = {
            "kernels": len(e.kernels), "by_kind": kinds, "step_us": 1e6 * e.step_s, "native_us": 1e6 * e.native_s,
            "kernels_us": 1e6 * e.kernels_s, "per_step_kernels": len(ps_k),
            "per_step_kernels_us": 1e6 * sum(k.time_s for k in ps_k),
            "per_step_share": sum(k.time_s for k in ps_k) / tot,
            "per_step_median_kernel_us": 1e6 * float(np.median([k.time_s for k in ps_k])) if ps_k else None,
            "per_step_gemm_kernels": sum(1 for k in ps_k if k.gemm_flops),
            "top": [{"name": k.name, "kind": k.kind, "shape": list(k.shape), "us": 1e6 * k.time_s,
                     "ops": k.ops_summary[:80]} for k in top],
            "explain_floor_us": 1e6 * e.floor_s}
    print("@@ " + json.dumps(out, default=float), flush=True)
    return 0


def run_probe(cname: str, explain: bool, env: dict, cache: Path) -> dict:
    """The probe in a process of its own; ``cache`` must be a new, empty directory."""
    cache.mkdir(parents=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(SCRIPT), "--probe", json.dumps({"config": cname, "explain": explain})],
                       capture_output=True, text=True, env={**env, "GRAPHC_CACHE_DIR": str(cache)},
                       cwd=str(HERE.parent))
    wall = time.perf_counter() - t0
    for ln in r.stdout.splitlines():
        if ln.startswith("@@ "):
            res = json.loads(ln[3:])
            res["process_wall_s"] = wall
            return res
    return {"error": f"probe exited rc {r.returncode}: {r.stderr[-800:]}"}


def _thread_env(threads: int) -> dict:
    env = dict(os.environ)
    env["OPENBLAS_THREAD_TIMEOUT"] = env.get("OPENBLAS_THREAD_TIMEOUT", "4")
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def step0(loss_check: dict) -> dict:
    """Each contender's first loss (same weights, same batch) against graphc cpu's, relative."""
    ref = loss_check.get("graphc cpu", {}).get("losses")
    if not ref:
        return {}
    return {n: abs(c["losses"][0] - ref[0]) / max(1.0, abs(ref[0])) for n, c in loss_check.items()
            if n != "graphc cpu" and c.get("losses")}


def report(res: dict) -> str:
    lines = ["", "LSTM step: graphc cold compile, kernels, floors, step-0 losses"]
    for cname, r in res["configs"].items():
        p = r.get("probe", {})
        lines.append(f"  {cname}: {r.get('describe', '')}")
        if "error" in p:
            lines.append(f"    probe FAILED: {p['error'][:300]}")
        elif p:
            lines.append(f"    cold compile (empty cache): gc.compile {p['compile_s']:.1f} s + first call "
                         f"{p['first_call_s']:.1f} s = {p['cold_total_s']:.1f} s (import {p['import_s']:.1f} s)")
            rf = p["roofline"]
            lines.append(f"    roofline floor: GEMMs {rf['gemm_gflop'] * 1e3:.3g} MFLOP at {rf['gemm_gflops_peak']:.0f} "
                         f"GFLOP/s = {rf['gemm_us']:.3g} us + Adam pass at {rf['triad_gbps']:.0f} GB/s = "
                         f"{rf['adam_us']:.3g} us -> {rf['floor_us']:.3g} us")
            ex = p.get("explain")
            if ex:
                lines.append(f"    explain: {ex['kernels']} kernels per step {ex['by_kind']}; step {ex['step_us']:.0f} us, "
                             f"kernels {ex['kernels_us']:.0f} us; per-time-step kernels {ex['per_step_kernels']} "
                             f"({ex['per_step_gemm_kernels']} with a GEMM) = {100 * ex['per_step_share']:.0f}% of "
                             f"kernel time, median {ex['per_step_median_kernel_us'] or 0:.1f} us each")
                for k in ex["top"]:
                    lines.append(f"      {k['name']:<6} {k['kind']:<7} {str(tuple(k['shape'])):<16} {k['us']:9.1f} us  "
                                 f"[{k['ops']}]")
        own = r.get("own_process", {})
        if own.get("floor") and p.get("roofline"):
            best = {n: own[n]["median_us"] for n in ("graphc cpu", "graphc parallel") if n in own}
            if best:
                g = min(best.values())
                lines.append(f"    best graphc {g:.0f} us = {g / own['floor']['median_us']:.2f}x floor (timed), "
                             f"{g / p['roofline']['floor_us']:.2f}x roofline floor")
        for n, d in r.get("step0_rel_diff", {}).items():
            lines.append(f"    step-0 loss {n:<18} rel diff vs graphc cpu {d:.1e} -> {'ok' if d < 1e-5 else 'MISMATCH'}")
    text = "\n".join(lines)
    print(text)
    return text


def run(argv: list[str]) -> int:
    if argv and argv[0] == "--probe":
        return probe(json.loads(argv[1]))
    if any(a in ("--worker", "--worker-all", "-h", "--help") for a in argv):
        return main(BENCH, SCRIPT, argv)
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--configs")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_rnn.json"))
    ap.add_argument("--no-probe", action="store_true")  # bench_rnn's own: no cold compile / explain
    ap.add_argument("--no-explain", action="store_true")
    mine, rest = ap.parse_known_args(argv)
    configs = (mine.configs or ",".join(BENCH.quick_configs if mine.quick else BENCH.default_configs)).split(",")
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        ap.error(f"unknown config(s) {bad}; choose from {list(CONFIGS)}")
    env = _thread_env(mine.threads)
    merged: dict = {"configs": {}}
    loads = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="graphc_bench_rnn_") as tmp:
        for c in configs:
            probe_res = {}
            cache = Path(tmp) / f"cache_{c}"  # new and empty: the probe compiles cold into it
            if not mine.no_probe:
                print(f"... {c}: cold compile (empty cache) and explain in a fresh process", flush=True)
                probe_res = run_probe(c, not mine.no_explain, env, cache)
            loads.append(os.getloadavg())
            out_c = Path(tmp) / f"{c}.json"
            os.environ["GRAPHC_CACHE_DIR"] = str(cache)  # the harness's workers then start from the probe's cache
            rc = main(BENCH, SCRIPT, rest + ["--configs", c, "--threads", str(mine.threads), "--out", str(out_c)]
                      + (["--quick"] if mine.quick else []))
            if rc:
                return rc
            r = json.loads(out_c.read_text())
            for k in ("meta", "args", "notes"):
                merged.setdefault(k, r[k])
            merged.setdefault("tables", []).append(r["table"])
            rc_ = r["configs"][c]
            rc_["probe"] = probe_res
            rc_["step0_rel_diff"] = step0(rc_.get("loss_check", {}))
            merged["configs"][c] = rc_
            loads.append(os.getloadavg())
    merged["loadavg_samples"] = loads
    merged["report"] = report(merged)
    la = [x[0] for x in loads]
    print(f"  load average (1 min) sampled between phases: {min(la):.1f}-{max(la):.1f} on {os.cpu_count()} cores")
    out = Path(mine.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2, default=str))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
