"""Time ONE training step (forward + backward + Adam) of a float32 ReLU MLP with softmax
cross-entropy: graphc's compiled targets against the alternatives a user would pick.

    python benchmarks/bench_step.py                          # all configs, each contender in its own process
    python benchmarks/bench_step.py --configs tiny,small --budget 20
    python benchmarks/bench_step.py --quick --configs tiny --no-peers   # smoke run (seconds)
    python benchmarks/bench_step.py --interleaved            # the older mode: all in ONE process
    python benchmarks/bench_step.py --call-overhead [tiny]   # Python cost of a call, no-op driver

For numbers comparable with the README, run with the OpenBLAS overrides unset in that
command alone (they select an older, slower kernel on this machine):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_step.py

Default mode (benchmarks/_model_bench.py's harness, as bench_cnn.py): every contender runs in
a process of its own, built one after another; then rounds alternate between them (the
starting contender rotates, idle workers block on a pipe), each round ~0.15 s of samples per
contender; median, minimum and IQR over all rounds; then a side-by-side run with every
contender in one process (``--no-side-by-side`` skips it). Users run one framework per
process, and in one process the libraries' thread pools interfere (see "Threads" below).
Flags of this mode: ``--configs --contenders --quick --no-peers --rounds --budget --round-s
--gap --warmup --threads --profile-reps --out`` (``--help``).

``--interleaved`` keeps the older single-process mode: contenders interleaved round by round
in ONE process, each round timing a short burst of back-to-back calls per contender (see
``interleaved``), plus cold/warm start subprocesses; its flags: ``--interleaved --help``.
Cold, warm and "edited script" starts are measured in full by benchmarks/bench_compile.py.

Contenders:

- graphc cpu / parallel: ``gc.compile(loss, optimizer=gc.optim.Adam(...), target=...)``;
  one call is one step.
- eager NumPy: the hand-written, vectorized step a competent person writes (below), with
  preallocated buffers and in-place Adam; checked against graphc (same init, same data).
- graphc numpy: graphc's reference interpreter (slow; default mode: few samples per round).
- PyTorch eager (fused Adam), torch.compile (the same step function compiled) and JAX jit
  (the whole step incl. Adam): when importable, else skipped with a note.
- Two floors. The GEMM floor: only the 3L-1 GEMMs of a step (L forward, L weight gradients,
  L-1 input gradients) into preallocated outputs, from one @njit function ("GEMM floor
  (numba)": the BLAS graphc's generated code calls, SciPy's) and through ``np.dot(out=)``
  ("GEMM floor (numpy)"; "BLAS floor" in ``--interleaved``). floor = GEMM floor (numba) + one
  streaming pass over parameters, gradients and Adam's m and v: "Adam pass", MEASURED as one
  fused, vectorized Numba loop over float32 arrays of the params' total size reading p, g, m,
  v and writing p, m, v. Every contender is reported against both ("x GEMMs", "x floor").

Default mode results: a table on stdout and JSON (default benchmarks/results/bench_step.json);
``--interleaved``: the same plus a PNG bar chart when matplotlib is installed.

Threads (``--interleaved``): the contenders share one process, so NumPy's and SciPy's OpenBLAS
pools (and torch's, and Numba's) all live side by side. OpenBLAS workers busy-wait after each
GEMM by default; with two such pools on two cores, a step ran 10-100x slower than in a process
of its own. This script therefore sets OPENBLAS_THREAD_TIMEOUT=4 (workers sleep almost at
once) before NumPy loads, unless it is already set, and keeps the libraries' thread counts
(``--blas-threads 1`` limits them instead). A graphc-only process needs neither: with the
defaults there, the medium step ran 507 us with 2 BLAS threads vs 790 us with 1.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy loads OpenBLAS; see above

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import graphc as gc  # noqa: E402

CONFIGS = {  # name: (batch, layer widths incl. input and classes)
    "tiny": (32, [64, 32, 10]),
    "small": (64, [784, 128, 10]),
    "medium": (128, [784, 256, 256, 10]),
    "large": (1024, [784, 1024, 1024, 10]),
}
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-7  # graphc's Adam defaults (Keras' formulation)


# ---------------------------------------------------------------------------------------------
# data and the graphc model
# ---------------------------------------------------------------------------------------------

def make_data(batch: int, widths: list[int], seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, widths[0])).astype(np.float32)
    y = rng.integers(0, widths[-1], batch).astype(np.int64)
    return x, y


def graphc_model(widths: list[int]):
    x = gc.input("x", (None, widths[0]))
    y = gc.input("y", (None,), dtype="int64")
    h = x
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        W = gc.param(f"W{i}", (a, b), init="he_normal")
        bias = gc.param(f"b{i}", (b,), init="zeros")
        h = h @ W + bias
        if i < len(widths) - 1:
            h = gc.relu(h)
    return gc.softmax_cross_entropy(h, y)


def graphc_step(widths, target, seed=0):
    return gc.compile(graphc_model(widths), optimizer=gc.optim.Adam(LR), target=target, seed=seed)


def init_params(widths, seed=0):
    """graphc's initialization (he_normal weights, zero biases), as a list [W1, b1, ...]."""
    st = graphc_step(widths, "numpy", seed)
    p = st.params
    L = len(widths) - 1
    out = []
    for i in range(1, L + 1):
        out += [p[f"W{i}"].copy(), p[f"b{i}"].copy()]
    return out


# ---------------------------------------------------------------------------------------------
# the honest eager NumPy step
# ---------------------------------------------------------------------------------------------

class NumpyMLP:
    """Forward, backward and Adam for a ReLU MLP + softmax cross-entropy, vectorized,
    in float32, with every per-step buffer allocated once up front."""

    def __init__(self, params: list[np.ndarray], batch: int, lr=LR, b1=B1, b2=B2, eps=EPS):
        self.W = [params[2 * i] for i in range(len(params) // 2)]
        self.b = [params[2 * i + 1] for i in range(len(params) // 2)]
        self.params = [p for pair in zip(self.W, self.b) for p in pair]
        from _model_bench import NumpyAdam, numpy_softmax_ce  # what the other benchmarks' eager steps use
        self.adam = NumpyAdam(self.params, lr, b1, b2, eps)
        self.softmax_ce = numpy_softmax_ce
        f32 = np.float32
        self.g = [np.zeros_like(p) for p in self.params]
        self.h = [np.empty((batch, W.shape[1]), f32) for W in self.W]  # pre-activations -> activations
        self.dh = [np.empty((batch, W.shape[0]), f32) for W in self.W[1:]]
        self.rows = np.arange(batch)
        self.mx = np.empty((batch, 1), f32)
        self.lse = np.empty((batch, 1), f32)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        W, b, h = self.W, self.b, self.h
        L = len(W)
        a = x
        for i in range(L):  # forward
            np.dot(a, W[i], out=h[i])
            h[i] += b[i]
            if i < L - 1:
                np.maximum(h[i], 0, out=h[i])
            a = h[i]
        dz = h[-1]  # logits -> softmax - onehot, in place
        loss = self.softmax_ce(dz, y, self.rows, self.mx, self.lse)
        g = self.g
        for i in range(L - 1, -1, -1):  # backward
            a_in = x if i == 0 else h[i - 1]
            np.dot(a_in.T, dz, out=g[2 * i])
            np.sum(dz, axis=0, out=g[2 * i + 1])
            if i > 0:
                da = self.dh[i - 1]
                np.dot(dz, W[i].T, out=da)
                da *= h[i - 1] > 0
                dz = da
        self.adam.update(g)  # Adam, bias correction folded into the step size (graphc/Keras)
        return loss


def check_numpy_against_graphc(widths, x, y, steps=3) -> dict:
    """Same init, same data: eager NumPy and graphc cpu must agree on losses and params."""
    params = init_params(widths)
    ref = NumpyMLP([p.copy() for p in params], x.shape[0])
    st = graphc_step(widths, "cpu")
    losses = []
    for _ in range(steps):
        a = ref.step(x, y)
        b = float(st(x=x, y=y)["loss"])
        losses.append(abs(a - b) / max(1.0, abs(a)))
    gp = st.params
    L = len(widths) - 1
    pdiff = 0.0
    for i in range(L):
        pdiff = max(pdiff, float(np.abs(gp[f"W{i + 1}"] - ref.W[i]).max()),
                    float(np.abs(gp[f"b{i + 1}"] - ref.b[i]).max()))
    ok = max(losses) < 1e-4 and pdiff < 1e-4
    return {"steps": steps, "max_rel_loss_diff": max(losses), "max_param_diff": pdiff, "ok": bool(ok)}


# ---------------------------------------------------------------------------------------------
# the BLAS floor: the 3L-1 GEMMs alone
# ---------------------------------------------------------------------------------------------

def gemm_list(widths, batch, rng):
    """(A, B, out) triples with the shapes and transposes of a step's GEMMs."""
    f32 = np.float32
    L = len(widths) - 1
    acts = [rng.standard_normal((batch, w)).astype(f32) for w in widths]
    Ws = [rng.standard_normal((a, b)).astype(f32) for a, b in zip(widths[:-1], widths[1:])]
    out = []
    for i in range(L):  # forward: act_i @ W_i
        out.append((acts[i], Ws[i], np.empty((batch, widths[i + 1]), f32)))
    for i in range(L - 1, -1, -1):  # backward: act_i^T @ d_{i+1}, d_{i+1} @ W_i^T
        out.append((acts[i].T, acts[i + 1], np.empty(Ws[i].shape, f32)))
        if i > 0:
            out.append((acts[i + 1], Ws[i].T, np.empty((batch, widths[i]), f32)))
    assert len(out) == 3 * L - 1
    return out


def blas_floor_numpy(gemms):
    def run():
        for a, b, o in gemms:
            np.dot(a, b, out=o)
    return run


def blas_floor_numba(gemms):
    from numba import njit

    n = len(gemms)
    lines = ["def floor(" + ", ".join(f"a{i}, b{i}, o{i}" for i in range(n)) + "):"]
    lines += [f"    np.dot(a{i}, b{i}, o{i})" for i in range(n)]
    ns = {"np": np}
    exec("\n".join(lines), ns)
    f = njit(nogil=True)(ns["floor"])
    args = [t for g in gemms for t in g]
    f(*args)
    return lambda: f(*args)


# ---------------------------------------------------------------------------------------------
# peers
# ---------------------------------------------------------------------------------------------

def torch_contenders(widths, params, x, y, notes, want_compile=True):
    try:
        import torch
    except ImportError:
        notes.append("PyTorch not importable: torch eager and torch.compile skipped")
        return {}
    out = {}

    def make(compiled: bool):
        ps = [torch.tensor(p.copy(), requires_grad=True) for p in params]
        try:
            opt = torch.optim.Adam(ps, lr=LR, betas=(B1, B2), eps=EPS, fused=True)
            fused = True
        except Exception:  # older torch without fused CPU Adam
            opt = torch.optim.Adam(ps, lr=LR, betas=(B1, B2), eps=EPS, foreach=True)
            fused = False
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        L = len(ps) // 2

        def fwd(xb, yb):
            h = xb
            for i in range(L):
                h = torch.addmm(ps[2 * i + 1], h, ps[2 * i])
                if i < L - 1:
                    h = torch.relu(h)
            return torch.nn.functional.cross_entropy(h, yb)

        def step(xb, yb):
            opt.zero_grad(set_to_none=False)
            loss = fwd(xb, yb)
            loss.backward()
            opt.step()
            return loss

        fn = torch.compile(step) if compiled else step
        return (lambda: fn(xt, yt)), fused

    f, fused = make(False)
    out["torch eager"] = f
    notes.append(f"torch {torch.__version__}: eager with Adam(fused={fused}), {torch.get_num_threads()} threads")
    if want_compile:
        try:
            t0 = time.perf_counter()
            fc, _ = make(True)
            for _ in range(3):
                fc()
            notes.append(f"torch.compile: the whole step function (forward, backward, Adam) compiled; "
                         f"first calls took {time.perf_counter() - t0:.1f} s")
            out["torch.compile"] = fc
        except Exception as e:  # pragma: no cover - depends on the environment
            notes.append(f"torch.compile failed, skipped: {type(e).__name__}: {str(e)[:200]}")
    return out


def jax_contender(widths, params, x, y, notes):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        notes.append("JAX not importable: jax jit skipped")
        return {}
    L = len(params) // 2

    def loss_fn(ps, xb, yb):
        h = xb
        for i in range(L):
            h = h @ ps[2 * i] + ps[2 * i + 1]
            if i < L - 1:
                h = jax.nn.relu(h)
        logz = jax.nn.logsumexp(h, axis=1)
        return jnp.mean(logz - jnp.take_along_axis(h, yb[:, None], axis=1)[:, 0])

    def step(ps, m, v, t, xb, yb):
        loss, g = jax.value_and_grad(loss_fn)(ps, xb, yb)
        t = t + 1
        alpha = LR * jnp.sqrt(1 - B2 ** t) / (1 - B1 ** t)
        m = [B1 * mi + (1 - B1) * gi for mi, gi in zip(m, g)]
        v = [B2 * vi + (1 - B2) * gi * gi for vi, gi in zip(v, g)]
        ps = [p - alpha * mi / (jnp.sqrt(vi) + EPS) for p, mi, vi in zip(ps, m, v)]
        return ps, m, v, t, loss

    jstep = jax.jit(step, donate_argnums=(0, 1, 2))
    state = {"ps": [jnp.asarray(p) for p in params], "m": [jnp.zeros_like(jnp.asarray(p)) for p in params],
             "v": [jnp.zeros_like(jnp.asarray(p)) for p in params], "t": jnp.asarray(0.0, jnp.float32)}
    xj, yj = jnp.asarray(x), jnp.asarray(y.astype(np.int32))

    def run():
        s = state
        s["ps"], s["m"], s["v"], s["t"], loss = jstep(s["ps"], s["m"], s["v"], s["t"], xj, yj)
        loss.block_until_ready()

    t0 = time.perf_counter()
    run()
    notes.append(f"jax {jax.__version__} jit ({jax.devices()[0].platform}): first call (compile) "
                 f"{time.perf_counter() - t0:.2f} s; donated buffers, block_until_ready per step")
    return {"jax jit": run}


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------

def interleaved(contenders: dict, reps: int, warmup: int, sparse: dict, budget_s: float,
                burst_s: float = 2e-3) -> dict:
    """Time each contender ``reps`` times, round-robin; ``sparse[name] = k`` runs one every
    k rounds. The rounds stop early once ``budget_s`` is spent (at least 10 rounds).

    Each timed sample is a short burst of back-to-back calls (as many as fit in about
    ``burst_s``, from 1 to 16, fixed per contender after warm-up), divided by its length:
    a training loop calls its step back to back, and a single call timed right after
    another library's call measures what that library left behind (cold caches, its thread
    pool) more than the call itself. Every contender is measured the same way."""
    pc = time.perf_counter
    burst = {}
    for name, f in contenders.items():
        n = warmup if name not in sparse else 1
        t0 = pc()
        for _ in range(max(n, 1)):
            f()
        per_call = (pc() - t0) / max(n, 1)
        burst[name] = 1 if name in sparse else int(min(16, max(1, burst_s // max(per_call, 1e-9))))
    times = {k: [] for k in contenders}
    t_end = pc() + budget_s
    for r in range(reps):
        for name, f in contenders.items():
            k = sparse.get(name)
            if k and r % k:
                continue
            b = burst[name]
            t0 = pc()
            for _ in range(b):
                f()
            times[name].append((pc() - t0) / b)
        if r >= 9 and pc() > t_end:
            break
    interleaved.last_burst = burst
    return times


def summarize(ts: list[float]) -> dict:
    a = np.asarray(ts) * 1e6
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median_us": float(med), "q1_us": float(q1), "q3_us": float(q3), "iqr_us": float(q3 - q1),
            "min_us": float(a.min()), "reps": int(a.size)}


def peak_bytes(f) -> int:
    """Peak bytes allocated (as seen by tracemalloc: NumPy's and Python's) during one call."""
    f()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    f()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return int(peak - base)


# ---------------------------------------------------------------------------------------------
# cold compile and warm start, each in a fresh process
# ---------------------------------------------------------------------------------------------

_CHILD = r"""
import time, json, sys
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
sys.path.insert(0, {here!r})
import numpy as np
import graphc as gc
from bench_step import graphc_step, make_data
t_import = time.perf_counter() - t0
x, y = make_data({batch}, {widths})
t1 = time.perf_counter()
st = graphc_step({widths}, {target!r})
st(x=x, y=y)
t_first = time.perf_counter() - t1
s = st.program_for({batch}).stats
info = getattr(st.program_for({batch}), "cache_info", lambda: {{}})()
print(json.dumps({{"import_s": t_import, "compile_and_first_step_s": t_first, "in_process_s": time.perf_counter() - t0,
                  "passes_s": s.passes_s, "codegen_s": s.codegen_s, "numba_s": s.numba_s, "numba_cache": info}}))
"""


def compile_times(config: str, target: str = "cpu") -> dict:
    batch, widths = CONFIGS[config]
    code = _CHILD.format(root=str(ROOT), here=str(HERE), batch=batch, widths=widths, target=target)
    res = {"config": config, "target": target}
    with tempfile.TemporaryDirectory(prefix="graphc-bench-cache-") as d:
        env = dict(os.environ, GRAPHC_CACHE_DIR=d)
        for phase in ("cold", "warm"):
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                res[phase] = {"error": p.stderr[-2000:]}
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r["process_wall_s"] = wall  # interpreter start + imports + compile/load + one step
            res[phase] = r
    return res


# ---------------------------------------------------------------------------------------------
# environment report
# ---------------------------------------------------------------------------------------------

def environment() -> dict:
    import numba

    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "graphc": gc.__version__,
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": numba.config.THREADING_LAYER,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT",
                                               "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_WAIT_POLICY",
                                               "NUMBA_THREADING_LAYER")},
    }
    try:
        meta["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        meta["worktree_dirty"] = bool(dirty)
    except OSError:
        meta["commit"] = None
    try:
        import cpuinfo  # type: ignore  # optional
        meta["cpu"] = cpuinfo.get_cpu_info().get("brand_raw")
    except Exception:
        try:
            with open("/proc/cpuinfo") as f:
                meta["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
        except OSError:
            meta["cpu"] = None
    return meta


def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed (pip install threadpoolctl)"}]
    return [{k: d.get(k) for k in ("internal_api", "prefix", "version", "architecture", "num_threads",
                                   "threading_layer", "filepath")} for d in threadpool_info()]


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

ORDER = ["graphc cpu", "graphc parallel", "BLAS floor", "BLAS floor (numba)", "Adam pass", "eager NumPy",
         "graphc numpy", "torch eager", "torch.compile", "jax jit"]


def bench_config(name: str, args, notes: list) -> dict:
    batch, widths = CONFIGS[name]
    x, y = make_data(batch, widths)
    params = init_params(widths)
    res: dict = {"batch": batch, "widths": widths, "skipped": {}}

    chk = check_numpy_against_graphc(widths, x, y)
    res["eager_numpy_check"] = chk
    if not chk["ok"]:
        notes.append(f"{name}: eager NumPy disagrees with graphc: {chk}")

    c: dict = {}
    t0 = time.perf_counter()
    for target in ("cpu", "parallel"):
        st = graphc_step(widths, target)
        st(x=x, y=y)
        c[f"graphc {target}"] = (lambda st=st: st(x=x, y=y))
    res["graphc_setup_s"] = time.perf_counter() - t0
    gemms = gemm_list(widths, batch, np.random.default_rng(1))
    c["BLAS floor"] = blas_floor_numpy(gemms)
    c["BLAS floor (numba)"] = blas_floor_numba(gemms)
    sys.path.insert(0, str(HERE))
    from _model_bench import adam_pass  # one fused streaming pass over arrays of the params' total size
    c["Adam pass"] = adam_pass(sum(int(p.size) for p in params))
    np_model = NumpyMLP([p.copy() for p in params], batch)
    c["eager NumPy"] = lambda: np_model.step(x, y)
    interp = graphc_step(widths, "numpy")
    c["graphc numpy"] = lambda: interp(x=x, y=y)
    if args.no_peers:
        res["skipped"].update({k: "--no-peers" for k in ("torch eager", "torch.compile", "jax jit")})
    else:
        peers = {}
        peers.update(torch_contenders(widths, params, x, y, notes, want_compile=not args.no_torch_compile))
        peers.update(jax_contender(widths, params, x, y, notes))
        for k in ("torch eager", "torch.compile", "jax jit"):
            if k not in peers:
                res["skipped"][k] = "not importable or failed (see notes)"
        c.update(peers)
    c = {k: c[k] for k in ORDER if k in c}

    times = interleaved(c, args.reps, args.warmup, sparse={"graphc numpy": 10}, budget_s=args.budget)
    stats = {k: summarize(v) for k, v in times.items()}
    for k in stats:
        stats[k]["burst"] = interleaved.last_burst[k]
    ref = stats["graphc cpu"]["median_us"]
    floor = stats["BLAS floor"]["median_us"]
    floor2 = stats["BLAS floor (numba)"]["median_us"] + stats["Adam pass"]["median_us"]
    for k, s in stats.items():
        s["ratio_to_graphc_cpu"] = s["median_us"] / ref
        s["x_blas_floor"] = s["median_us"] / floor
        s["x_floor"] = s["median_us"] / floor2
    res["contenders"] = stats
    res["floor_us"] = floor2  # BLAS floor (numba) + Adam pass: GEMMs + one streaming pass over p, g, m, v
    res["graphc_cpu_x_blas_floor"] = ref / floor
    res["graphc_cpu_x_floor"] = ref / floor2
    res["graphc_cpu_x_numba_blas_floor"] = ref / stats["BLAS floor (numba)"]["median_us"]
    res["speedup_vs_eager_numpy"] = stats["eager NumPy"]["median_us"] / ref
    res["parallel_over_cpu"] = stats["graphc parallel"]["median_us"] / ref

    # where graphc's time goes: its kernels, and the cost of the Python call path
    prog = graphc_step_prog = None
    try:
        st = graphc_step(widths, "cpu")
        st(x=x, y=y)
        prog = st.program_for(batch)
        graphc_step_prog = prog
        res["graphc_kernels"] = prog.kernel_listing()
        s = prog.stats
        res["graphc_compile_stats"] = {"passes_s": s.passes_s, "codegen_s": s.codegen_s, "numba_s": s.numba_s}
        drv_args = _driver_args(prog, st, x, y)
        if drv_args is not None:
            d = interleaved({"driver only": lambda: prog._driver(*drv_args), "full call": lambda: st(x=x, y=y)},
                            min(args.reps, 200), args.warmup, {}, budget_s=args.budget / 4)
            res["graphc_call_overhead"] = {k: summarize(v)["median_us"] for k, v in d.items()}
    except Exception as e:  # introspection only: never fail the benchmark on it
        notes.append(f"{name}: graphc introspection failed: {type(e).__name__}: {e}")
    del graphc_step_prog

    res["peak_step_bytes"] = {"graphc cpu": peak_bytes(c["graphc cpu"]), "eager NumPy": peak_bytes(c["eager NumPy"])}
    res["resident_buffer_bytes"] = {
        "graphc cpu scratch": int(sum(a.nbytes for a in prog.scratch.values())) if prog is not None else None,
        "eager NumPy buffers": int(sum(a.nbytes for a in np_model.h + np_model.dh + np_model.g + np_model.adam.tmp)),
    }
    return res


def _driver_args(prog, st, x, y):
    """The arguments CpuProgram.run passes to the driver (for timing the native call alone)."""
    try:
        feeds, _ = st._feeds({"x": x, "y": y})
        args = []
        for kind, key in prog.module.args:
            if kind == "store":
                args.append(st._store.arenas[key])
            elif kind == "scratch":
                args.append(prog.scratch[key])
            elif kind == "feed":
                args.append(feeds[key])
            else:
                args.append(feeds[key][()])
        return args
    except Exception:
        return None


def print_table(results: dict) -> str:
    lines = []
    for name, r in results["configs"].items():
        lines.append(f"\n{name}: batch {r['batch']}, MLP {'-'.join(map(str, r['widths']))}")
        lines.append(f"  {'contender':<20} {'median us':>11} {'IQR us':>9} {'reps':>5} {'/graphc cpu':>12} "
                     f"{'x BLAS':>8} {'x floor':>8}")
        for k, s in r["contenders"].items():
            lines.append(f"  {k:<20} {s['median_us']:11.1f} {s['iqr_us']:9.1f} {s['reps']:5d} "
                         f"{s['ratio_to_graphc_cpu']:12.2f} {s['x_blas_floor']:8.2f} {s['x_floor']:8.2f}")
        lines.append(f"  (x BLAS: / BLAS floor, the GEMMs through np.dot; x floor: / (BLAS floor (numba) + Adam pass) "
                     f"= {r['floor_us']:.1f} us, the Adam pass measured as one fused loop over the params' total size)")
        for k, why in r["skipped"].items():
            lines.append(f"  {k:<20} skipped: {why}")
        lines.append(f"  graphc cpu = {r['graphc_cpu_x_blas_floor']:.2f}x the BLAS floor "
                     f"({r['graphc_cpu_x_numba_blas_floor']:.2f}x the numba-called floor), "
                     f"{r['speedup_vs_eager_numpy']:.2f}x faster than eager NumPy; "
                     f"parallel/cpu = {r['parallel_over_cpu']:.2f}")
        ov = r.get("graphc_call_overhead")
        if ov:
            lines.append(f"  graphc cpu: native driver alone {ov['driver only']:.1f} us, full Python call "
                         f"{ov['full call']:.1f} us")
        chk = r["eager_numpy_check"]
        lines.append(f"  eager NumPy vs graphc after {chk['steps']} steps: loss rel diff {chk['max_rel_loss_diff']:.1e}, "
                     f"param diff {chk['max_param_diff']:.1e} -> {'ok' if chk['ok'] else 'MISMATCH'}")
        pk = r["peak_step_bytes"]
        lines.append(f"  peak allocation in one step (tracemalloc): graphc cpu {pk['graphc cpu']} B, "
                     f"eager NumPy {pk['eager NumPy']} B; resident buffers {r['resident_buffer_bytes']}")
    ct = results.get("compile")
    if ct:
        for phase in ("cold", "warm"):
            p = ct.get(phase, {})
            if "error" in p:
                lines.append(f"{phase} start ({ct['config']}, {ct['target']}): FAILED {p['error'][-300:]}")
            elif p:
                lines.append(f"{phase} start ({ct['config']}, {ct['target']}): process {p['process_wall_s']:.2f} s "
                             f"(imports {p['import_s']:.2f} s, compile/load + first step "
                             f"{p['compile_and_first_step_s']:.2f} s: passes {p['passes_s']:.2f}, codegen "
                             f"{p['codegen_s']:.2f}, numba {p['numba_s']:.2f}; numba cache {p.get('numba_cache')})")
    text = "\n".join(lines)
    print(text)
    return text


def plot(results: dict, path: Path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cfgs = list(results["configs"])
    names = [k for k in ORDER if any(k in results["configs"][c]["contenders"] for c in cfgs) and k != "graphc numpy"]
    fig, axes = plt.subplots(1, len(cfgs), figsize=(4.2 * len(cfgs), 4.5), squeeze=False)
    for ax, cfg in zip(axes[0], cfgs):
        st = results["configs"][cfg]["contenders"]
        ks = [k for k in names if k in st]
        vals = [st[k]["x_blas_floor"] for k in ks]
        err = [st[k]["iqr_us"] / results["configs"][cfg]["contenders"]["BLAS floor"]["median_us"] / 2 for k in ks]
        colors = ["tab:blue" if k.startswith("graphc") else "tab:gray" if "floor" in k else "tab:orange" for k in ks]
        ax.barh(ks, vals, xerr=err, color=colors)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.invert_yaxis()
        ax.set_title(f"{cfg} ({st['graphc cpu']['median_us']:.0f} us graphc cpu)")
        ax.set_xlabel("time / BLAS floor (lower is better)")
    fig.suptitle(f"one training step (fwd+bwd+Adam), {results['meta'].get('commit')} {results['meta']['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# ---------------------------------------------------------------------------------------------
# default mode: each contender in a process of its own (benchmarks/_model_bench.py)
# ---------------------------------------------------------------------------------------------

MODEL_CONFIGS = {name: {"batch": b, "widths": list(w)} for name, (b, w) in CONFIGS.items()}


def _describe(c: dict) -> str:
    return f"MLP {'-'.join(map(str, c['widths']))}, batch {c['batch']}"


def _params_list(c: dict, params: dict) -> list:
    return [params[f"{k}{i}"] for i in range(1, len(c["widths"])) for k in ("W", "b")]


def _numpy_step(c: dict, params: dict, feeds: dict):
    m = NumpyMLP(_params_list(c, params), c["batch"])
    x, y = feeds["x"], feeds["y"]
    return lambda: m.step(x, y)


def _gemms(c: dict) -> list:
    from _model_bench import linear_gemms
    w = c["widths"]
    return [g for i in range(len(w) - 1)
            for g in linear_gemms(f"dense{i + 1}", c["batch"], w[i], w[i + 1], input_grad=i > 0)]


def _torch_step(c: dict, params: dict, feeds: dict, compiled: bool, threads: int):
    from _model_bench import mlp_torch_step
    return mlp_torch_step(c, params, feeds, compiled, threads)


def _jax_step(c: dict, params: dict, feeds: dict):
    from _model_bench import mlp_jax_step
    return mlp_jax_step(c, params, feeds)


def model_bench():
    """The Bench of the default mode (imported lazily: _model_bench is a sibling module)."""
    sys.path.insert(0, str(HERE))
    from _model_bench import DEFAULT_CONTENDERS, Bench
    return Bench(name="bench_step", configs=MODEL_CONFIGS, quick_configs=["tiny"],
                 default_configs=list(MODEL_CONFIGS), describe=_describe,
                 graphc_loss=lambda c: graphc_model(c["widths"]),
                 make_data=lambda c: dict(zip(("x", "y"), make_data(c["batch"], c["widths"]))),
                 numpy_step=_numpy_step, torch_step=_torch_step, jax_step=_jax_step, gemms=_gemms,
                 contenders=(*DEFAULT_CONTENDERS, "graphc numpy"),
                 notes=["floor = GEMM floor (numba) + Adam pass (measured: one fused loop over float32 arrays "
                        "of the params' total size)"])


def call_overhead(config: str = "tiny", rounds: int = 25, calls: int = 5000) -> dict:
    """The Python cost of ``step(x=..., y=...)`` with the native driver replaced by a no-op
    (min over ``rounds`` of the mean over ``calls`` back-to-back calls, µs), through the bound
    call (the common case: same shapes and dtypes as last time) and, alternating with it,
    through the checked fast path (``_fast_feeds`` + ``prog.run``) it falls back to."""
    batch, widths = CONFIGS[config]
    x, y = make_data(batch, widths)
    st = graphc_step(widths, "cpu")
    st(x=x, y=y)
    prog = st.program_for(batch)
    prog._driver = lambda *a: 0  # noqa: E731  (the native step, gone)
    st._bound, st._bound_by_batch = None, {}
    st(x=x, y=y)
    st(x=x, y=y)  # armed with the no-op driver
    bound = st._bound
    if bound is None:
        raise RuntimeError("the step was not bound: graphc/runtime.py's _BoundCall did not apply")
    pc = time.perf_counter
    best = {"bound call": float("inf"), "checked fast path": float("inf")}
    for _ in range(rounds):
        for name in best:
            if name == "bound call":
                st._bound, st._bound_by_batch[batch] = bound, bound
            else:
                st._bound, st._bound_by_batch[batch] = None, None
            st(x=x, y=y)
            t0 = pc()
            for _ in range(calls):
                st(x=x, y=y)
            best[name] = min(best[name], (pc() - t0) / calls * 1e6)
    out = {"config": config, "rounds": rounds, "calls": calls, **{f"{k} us": v for k, v in best.items()}}
    print(f"Python cost of one {config} step call, no-op driver (min of {rounds} x {calls} calls): "
          + ", ".join(f"{k} {v:.2f} us" for k, v in best.items()))
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--call-overhead" in argv:  # python benchmarks/bench_step.py --call-overhead [config]
        i = argv.index("--call-overhead")
        call_overhead(argv[i + 1] if len(argv) > i + 1 and argv[i + 1] in CONFIGS else "tiny")
        return 0
    if "--interleaved" in argv:
        argv.remove("--interleaved")
        return main_interleaved(argv)
    bench = model_bench()
    from _model_bench import main as own_process_main
    return own_process_main(bench, Path(__file__).resolve(), argv)


def main_interleaved(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {list(CONFIGS)}")
    ap.add_argument("--reps", type=int, default=2000, help="max timed rounds per config (default 2000)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls per contender first (default 20)")
    ap.add_argument("--budget", type=float, default=40.0,
                    help="seconds of timed rounds per config; stops early once spent (default 40)")
    ap.add_argument("--quick", action="store_true", help="smoke run: few reps, short budget")
    ap.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX")
    ap.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile (slow to compile)")
    ap.add_argument("--no-compile-times", action="store_true", help="skip the cold/warm start subprocesses")
    ap.add_argument("--compile-config", default=None,
                    help="config for cold/warm start (default: medium, or the first of --configs with --quick)")
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="limit BLAS (all OpenBLAS copies) to N threads via threadpoolctl for the whole run; "
                         "0 (default) = the libraries' default (see 'Threads' above)")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_step.json"), help="JSON output path")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.warmup, args.budget = min(args.reps, 30), min(args.warmup, 3), min(args.budget, 3.0)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        ap.error(f"unknown config(s) {bad}; choose from {list(CONFIGS)}")

    meta = environment()
    print(f"graphc bench_step  {meta['date']}  commit {meta.get('commit')}{' (dirty)' if meta.get('worktree_dirty') else ''}")
    print(f"cpu: {meta.get('cpu')} ({meta['cpu_count']} cores); python {meta['python']}, numpy {meta['numpy']}, "
          f"numba {meta['numba']} ({meta['numba_threads']} threads, layer {meta['numba_threading_layer']})")
    print(f"env: {meta['env']}")
    if meta["env"]["OPENBLAS_CORETYPE"]:
        print("note: OPENBLAS_CORETYPE is set; for comparable numbers run with "
              "`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_step.py`")

    limiter = None
    if args.blas_threads > 0:
        try:
            from threadpoolctl import threadpool_limits
            import scipy.linalg.cython_blas  # noqa: F401  (load SciPy's BLAS now so the limit covers it)
            limiter = threadpool_limits(args.blas_threads, user_api="blas")
        except ImportError:
            print("note: threadpoolctl not installed; BLAS threads not limited")
    meta["blas_threads_limit"] = args.blas_threads if limiter is not None else None
    print(f"BLAS threads limited to: {meta['blas_threads_limit'] or 'library default'}")
    notes: list[str] = []
    results = {"meta": meta, "args": vars(args), "configs": {}, "notes": notes}
    for name in configs:
        t0 = time.perf_counter()
        print(f"... {name}", flush=True)
        results["configs"][name] = bench_config(name, args, notes)
        results["configs"][name]["bench_s"] = time.perf_counter() - t0
    # after the steps ran, SciPy's BLAS (called by Numba's np.dot) is loaded too: report both
    meta["blas"] = blas_info()
    try:
        import numba
        meta["numba_threading_layer_used"] = numba.threading_layer()
    except Exception:
        meta["numba_threading_layer_used"] = None
    if not args.no_compile_times:
        cc = args.compile_config or (configs[0] if args.quick else "medium")
        print(f"... cold/warm start ({cc})", flush=True)
        results["compile"] = compile_times(cc)
    else:
        results["compile"] = {}

    print("\nBLAS libraries (threadpoolctl):")
    for b in meta["blas"]:
        print(f"  {b}")
    print(f"numba threading layer used: {meta['numba_threading_layer_used']}")
    results["table"] = print_table(results)
    for n in notes:
        print(f"note: {n}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {out}")
    png = plot(results, out.with_suffix(".png"))
    print(f"wrote {png}" if png else "matplotlib not installed: no chart")
    return 0


if __name__ == "__main__":
    sys.exit(main())
