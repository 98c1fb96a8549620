"""The harness shared by bench_cnn.py and bench_transformer.py: every contender in a process
of its own, rounds alternating between them, plus a side-by-side run in one process; the
GEMM floor of a step; a per-kernel profile of graphc's compiled step.

A bench script supplies a ``Bench`` (its configs, how to build the graphc loss, the data, the
eager NumPy step, the PyTorch and JAX steps and the GEMM shapes of a step) and calls
``main``. The parent process writes the initial parameters and the data to a temporary
``.npz`` (so every contender starts from graphc's initialization, seed 0), starts one worker
per contender (``--worker``), lets each check its first losses against graphc's, then asks
them round by round (the starting contender rotates) for a few timed samples each. Idle
workers block on a pipe, so only one contender computes at a time.

Why processes of their own: in one process the libraries' thread pools (two OpenBLAS copies,
torch's OpenMP pool, XLA's Eigen pool, Numba's) live side by side on the same cores and the
contender timed after another pays for what that one left behind (benchmarks/README.md,
"Threads"). The side-by-side run (``--worker-all``) measures exactly that, labelled as such.

Every worker sets ``OPENBLAS_THREAD_TIMEOUT=4`` before NumPy loads (so an idle worker's
OpenBLAS threads sleep at once instead of spinning while the next contender runs) and uses
``--threads`` threads (default: all cores) in torch (``torch.set_num_threads``), Numba
(``target="parallel"``), OpenBLAS/MKL/OpenMP (their ``*_NUM_THREADS`` variables) and XLA (all
cores, or its single-threaded mode with ``--threads 1``). On a machine other jobs load, one
thread per contender is the steadier measurement: a parallel region waits for its slowest
thread, and a descheduled thread costs a whole time slice.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy loads OpenBLAS; see above

import argparse
import datetime
import json
import math
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-7  # graphc's Adam defaults (Keras' formulation)
CHECK_STEPS = 3
PEERS = ("torch eager", "torch.compile", "jax jit", "GEMM floor (torch)")
FLOORS = ("GEMM floor (numba)", "GEMM floor (numpy)", "Adam pass")
MULTI = ("graphc cpu K=8", "graphc cpu K=32")  # steps_per_execution=K: K steps per call, timed per step
ORDER = ("graphc cpu", "graphc parallel", *MULTI, "eager NumPy", *PEERS[:3], *FLOORS, PEERS[3], "graphc numpy")
# "graphc numpy" (the reference interpreter) and the K-steps-per-call contenders only where asked for
DEFAULT_CONTENDERS = tuple(n for n in ORDER[:-1] if n not in MULTI)
MSG = "@@ "  # protocol lines on a worker's stdout start with this


@dataclass
class Gemm:
    """One GEMM of a step: ``a @ b`` with ``a`` of shape (m, k) and ``b`` (k, n), each read
    transposed in place when ``ta``/``tb`` (as graphc and BLAS do), ``batch`` leading matrices."""
    m: int
    k: int
    n: int
    ta: bool = False
    tb: bool = False
    batch: int = 0
    what: str = ""

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * max(1, self.batch)


def linear_gemms(what: str, rows: int, fan_in: int, fan_out: int, input_grad: bool = True) -> list[Gemm]:
    """y = x @ W: the forward GEMM, dW = x^T @ dy and (if the input needs one) dx = dy @ W^T."""
    out = [Gemm(rows, fan_in, fan_out, what=f"{what} fwd"), Gemm(fan_in, rows, fan_out, ta=True, what=f"{what} dW")]
    if input_grad:
        out.append(Gemm(rows, fan_out, fan_in, tb=True, what=f"{what} dX"))
    return out


@dataclass
class Bench:
    """What a bench script supplies (see bench_cnn.py)."""
    name: str
    configs: dict  # name -> config dict (must have "batch")
    quick_configs: list
    default_configs: list
    describe: Callable[[dict], str]
    graphc_loss: Callable[[dict], Any]  # config -> the loss node
    make_data: Callable[[dict], dict]  # config -> feeds {name: array}
    numpy_step: Callable[[dict, dict, dict], Callable]  # (cfg, params, feeds) -> step() -> loss
    torch_step: Callable[[dict, dict, dict, bool, int], Callable]  # (..., compiled, threads)
    jax_step: Callable[[dict, dict, dict], Callable]
    gemms: Callable[[dict], list]  # config -> [Gemm]
    notes: list = field(default_factory=list)
    contenders: tuple = DEFAULT_CONTENDERS  # the default of --contenders


# ---------------------------------------------------------------------------------------------
# graphc, the floors
# ---------------------------------------------------------------------------------------------

def graphc_step(bench: Bench, cfg: dict, target: str, steps: int = 1):
    import graphc as gc
    return gc.compile(bench.graphc_loss(cfg), optimizer=gc.optim.Adam(LR), target=target, seed=0,
                      steps_per_execution=steps)


def _gemm_arrays(gemms: list[Gemm], rng) -> list[tuple]:
    """(a, b, out) per GEMM; a transposed operand is the transpose of a C-contiguous array."""
    out = []
    for g in gemms:
        lead = (g.batch,) if g.batch else ()
        a = rng.standard_normal(lead + ((g.k, g.m) if g.ta else (g.m, g.k))).astype(np.float32)
        b = rng.standard_normal(lead + ((g.n, g.k) if g.tb else (g.k, g.n))).astype(np.float32)
        a = np.swapaxes(a, -1, -2) if g.ta else a
        b = np.swapaxes(b, -1, -2) if g.tb else b
        out.append((a, b, np.empty(lead + (g.m, g.n), np.float32)))
    return out


def gemm_floor_numba(gemms: list[Gemm]) -> Callable:
    """The step's GEMMs from ONE @njit function: ``np.dot`` on (transposed) views, one per
    matrix of a batched GEMM, as graphc's generated code calls SciPy's BLAS."""
    from numba import njit
    arrs = _gemm_arrays(gemms, np.random.default_rng(1))
    lines = ["def floor(" + ", ".join(f"a{i}, b{i}, o{i}" for i in range(len(arrs))) + "):"]
    args = []
    for i, (g, (a, b, o)) in enumerate(zip(gemms, arrs)):
        ta, tb = (".T" if t else "" for t in (g.ta, g.tb))
        # pass the C-contiguous base and transpose inside, so Numba sees C/F layouts
        args += [np.swapaxes(a, -1, -2) if g.ta else a, np.swapaxes(b, -1, -2) if g.tb else b, o]
        if g.batch:
            lines += [f"    for j in range(o{i}.shape[0]):", f"        np.dot(a{i}[j]{ta}, b{i}[j]{tb}, o{i}[j])"]
        else:
            lines.append(f"    np.dot(a{i}{ta}, b{i}{tb}, o{i})")
    ns = {"np": np}
    exec("\n".join(lines), ns)
    f = njit(nogil=True)(ns["floor"])
    f(*args)
    return lambda: f(*args)


def gemm_floor_numpy(gemms: list[Gemm]) -> Callable:
    """The same GEMMs through NumPy: ``np.dot(out=)`` / ``np.matmul(out=)``."""
    arrs = _gemm_arrays(gemms, np.random.default_rng(1))

    def run():
        for a, b, o in arrs:
            if a.ndim == 3:
                np.matmul(a, b, out=o)
            else:
                np.dot(a, b, out=o)
    return run


def gemm_floor_torch(gemms: list[Gemm], threads: int) -> Callable:
    """The same GEMMs through PyTorch's ``torch.matmul(out=)`` (its BLAS: MKL/oneDNN in the
    x86 wheels): what the step would cost at PyTorch's GEMM rate (a diagnostic, not a peer)."""
    import torch
    torch.set_num_threads(threads)
    arrs = [tuple(torch.from_numpy(t) for t in g) for g in _gemm_arrays(gemms, np.random.default_rng(1))]

    def run():
        for a, b, o in arrs:
            torch.matmul(a, b, out=o)
    return run


def adam_pass(n: int) -> Callable:
    """One streaming pass over params, grads and Adam's m and v: ONE fused, vectorized loop
    reading p, g, m, v and writing p, m, v in place (the least an Adam update can cost)."""
    from numba import njit

    @njit(nogil=True, error_model="numpy", fastmath=False)
    def adam(p, g, m, v, alpha, b1, b2, eps):
        c1, c2 = np.float32(1.0) - b1, np.float32(1.0) - b2
        for i in range(p.size):
            mi = b1 * m[i] + c1 * g[i]
            vi = b2 * v[i] + c2 * g[i] * g[i]
            m[i] = mi
            v[i] = vi
            p[i] -= alpha * mi / (math.sqrt(vi) + eps)

    rng = np.random.default_rng(2)
    p, g = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    f32 = np.float32
    args = (p, g, m, v, f32(1e-3), f32(B1), f32(B2), f32(EPS))
    adam(*args)
    return lambda: adam(*args)


# ---------------------------------------------------------------------------------------------
# the peers' training steps, shared: a loss function in, a step with Adam out
# ---------------------------------------------------------------------------------------------

class NumpyAdam:
    """Adam (Keras' formulation, as graphc) for eager NumPy: in-place ufunc chains over each
    parameter with one preallocated temporary, as benchmarks/bench_step.py's eager step."""

    def __init__(self, params: list[np.ndarray], lr=LR, b1=B1, b2=B2, eps=EPS):
        self.params, self.t = params, 0
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.tmp = [np.empty_like(p) for p in params]

    def update(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        f32 = np.float32
        alpha = f32(self.lr * np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t))
        c1, c2, b1, b2 = f32(1 - self.b1), f32(1 - self.b2), f32(self.b1), f32(self.b2)
        eps = f32(self.eps)
        for p, g, m, v, tmp in zip(self.params, grads, self.m, self.v, self.tmp):
            m *= b1
            np.multiply(g, c1, out=tmp)
            m += tmp
            v *= b2
            np.multiply(g, g, out=tmp)
            tmp *= c2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp += eps
            np.divide(m, tmp, out=tmp)
            tmp *= alpha
            p -= tmp


def numpy_softmax_ce(z: np.ndarray, y: np.ndarray, rows: np.ndarray, mx: np.ndarray, lse: np.ndarray) -> float:
    """Mean softmax cross-entropy of logits ``z`` (n, c); ``z`` becomes its gradient in place."""
    n = z.shape[0]
    np.max(z, axis=1, keepdims=True, out=mx)
    z -= mx
    picked = z[rows, y]
    np.exp(z, out=z)
    np.sum(z, axis=1, keepdims=True, out=lse)
    z /= lse
    np.log(lse, out=lse)
    loss = float(np.mean(lse[:, 0] - picked))
    z[rows, y] -= 1.0
    z *= np.float32(1.0 / n)
    return loss


def torch_adam_step(loss_fn: Callable, tensors: dict, inputs: tuple, compiled: bool) -> Callable:
    """``loss_fn(params, *inputs)`` -> scalar tensor; PyTorch's Adam (fused, else foreach)
    with graphc's hyper-parameters; ``torch.compile`` compiles the whole step (forward,
    backward, Adam) when ``compiled``."""
    import torch
    ps = {k: torch.tensor(np.array(v), requires_grad=True) for k, v in tensors.items()}
    try:
        opt = torch.optim.Adam(list(ps.values()), lr=LR, betas=(B1, B2), eps=EPS, fused=True)
    except Exception:  # older torch without fused CPU Adam
        opt = torch.optim.Adam(list(ps.values()), lr=LR, betas=(B1, B2), eps=EPS, foreach=True)

    def step(*xs):
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(ps, *xs)
        loss.backward()
        opt.step()
        return loss.detach()

    fn = torch.compile(step) if compiled else step
    return lambda: fn(*inputs)


def jax_adam_step(loss_fn: Callable, params: dict, inputs: tuple) -> Callable:
    """``loss_fn(params, *inputs)``; the whole step (value_and_grad + Adam in Keras'
    formulation, as graphc) under one ``jax.jit``, buffers donated, block_until_ready."""
    import jax
    import jax.numpy as jnp

    def step(ps, m, v, t, *xs):
        loss, g = jax.value_and_grad(loss_fn)(ps, *xs)
        t = t + 1
        alpha = LR * jnp.sqrt(1 - B2 ** t) / (1 - B1 ** t)
        m = jax.tree_util.tree_map(lambda mi, gi: B1 * mi + (1 - B1) * gi, m, g)
        v = jax.tree_util.tree_map(lambda vi, gi: B2 * vi + (1 - B2) * gi * gi, v, g)
        ps = jax.tree_util.tree_map(lambda p, mi, vi: p - alpha * mi / (jnp.sqrt(vi) + EPS), ps, m, v)
        return ps, m, v, t, loss

    jstep = jax.jit(step, donate_argnums=(0, 1, 2))
    s = {"ps": {k: jnp.asarray(v) for k, v in params.items()}}
    s["m"] = {k: jnp.zeros_like(v) for k, v in s["ps"].items()}
    s["v"] = {k: jnp.zeros_like(v) for k, v in s["ps"].items()}
    s["t"] = jnp.asarray(0.0, jnp.float32)
    xs = tuple(jnp.asarray(x) for x in inputs)

    def run():
        s["ps"], s["m"], s["v"], s["t"], loss = jstep(s["ps"], s["m"], s["v"], s["t"], *xs)
        return loss.block_until_ready()
    return run


def mlp_torch_step(c: dict, params: dict, feeds: dict, compiled: bool, threads: int) -> Callable:
    """bench_step.py's ReLU MLP (``c["widths"]``, params W1, b1, ...) in PyTorch: addmm, relu,
    cross_entropy; here (numpy-only imports) so that bench_compile.py's peer processes need
    not import graphc."""
    import torch
    L = len(c["widths"]) - 1

    def loss_fn(ps, xb, yb):
        h = xb
        for i in range(1, L + 1):
            h = torch.addmm(ps[f"b{i}"], h, ps[f"W{i}"])
            if i < L:
                h = torch.relu(h)
        return torch.nn.functional.cross_entropy(h, yb)

    return torch_adam_step(loss_fn, params, (torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["y"])), compiled)


def mlp_jax_step(c: dict, params: dict, feeds: dict) -> Callable:
    """The same MLP step under one ``jax.jit`` (see ``jax_adam_step``)."""
    import jax
    import jax.numpy as jnp
    L = len(c["widths"]) - 1

    def loss_fn(ps, x, y):
        h = x
        for i in range(1, L + 1):
            h = h @ ps[f"W{i}"] + ps[f"b{i}"]
            if i < L:
                h = jax.nn.relu(h)
        logz = jax.nn.logsumexp(h, axis=1)
        return jnp.mean(logz - jnp.take_along_axis(h, y[:, None], axis=1)[:, 0])

    return jax_adam_step(loss_fn, params, (feeds["x"], feeds["y"].astype(np.int32)))


# ---------------------------------------------------------------------------------------------
# building one contender (in a worker)
# ---------------------------------------------------------------------------------------------

def build(bench: Bench, cfg: dict, name: str, params: dict, feeds: dict, threads: int) -> tuple[Callable, Callable]:
    """(step, loss_of): ``step()`` runs one training step; ``loss_of(step())`` is its loss
    as a float (None for the floors, which compute no loss)."""
    if name in MULTI:  # K copies of the batch stacked: one call runs K steps; timed per step
        k = int(name.rpartition("=")[2])
        st = graphc_step(bench, cfg, "cpu", k)
        stacked = {n: np.ascontiguousarray(np.broadcast_to(v, (k,) + v.shape)) for n, v in feeds.items()}

        def run():
            return st(**stacked)
        run.steps = k
        return run, (lambda r: [float(v) for v in r["loss"]])
    if name.startswith("graphc"):
        st = graphc_step(bench, cfg, name.split()[1])
        return (lambda: st(**feeds)), (lambda r: float(r["loss"]))
    if name == "eager NumPy":
        return bench.numpy_step(cfg, {k: v.copy() for k, v in params.items()}, feeds), float
    if name in ("torch eager", "torch.compile"):
        import torch
        torch.set_num_threads(threads)
        return bench.torch_step(cfg, params, feeds, name == "torch.compile", threads), (lambda r: float(r))
    if name == "jax jit":
        return bench.jax_step(cfg, params, feeds), (lambda r: float(r))
    if name == "GEMM floor (numba)":
        return gemm_floor_numba(bench.gemms(cfg)), (lambda r: None)
    if name == "GEMM floor (numpy)":
        return gemm_floor_numpy(bench.gemms(cfg)), (lambda r: None)
    if name == "GEMM floor (torch)":
        return gemm_floor_torch(bench.gemms(cfg), threads), (lambda r: None)
    if name == "Adam pass":
        return adam_pass(sum(int(v.size) for v in params.values())), (lambda r: None)
    raise ValueError(f"unknown contender {name!r}")


def _burst(fn: Callable, warmup: int, burst_s: float = 2e-3) -> tuple[int, float]:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    t = time.perf_counter() - t0
    return max(1, min(16, int(burst_s / max(t, 1e-9)))), t


def _samples(fn: Callable, n: int, burst: int) -> list[float]:
    out = []
    pc = time.perf_counter
    for _ in range(n):
        t0 = pc()
        for _ in range(burst):
            fn()
        out.append((pc() - t0) / burst)
    return out


def _send(obj: dict) -> None:
    sys.stdout.write(MSG + json.dumps(obj, default=float) + "\n")
    sys.stdout.flush()


def _load_spec(path: str):
    z = np.load(path)
    params = {k[2:]: z[k] for k in z.files if k.startswith("p:")}
    feeds = {k[2:]: z[k] for k in z.files if k.startswith("f:")}
    return params, feeds


def worker(bench: Bench, spec: dict) -> int:
    """One contender: build, check the first losses, then serve ``run N`` / ``profile`` /
    ``quit`` commands on stdin."""
    cfg = bench.configs[spec["config"]]
    params, feeds = _load_spec(spec["data"])
    name = spec["contender"]
    try:
        t0 = time.perf_counter()
        fn, loss_of = build(bench, cfg, name, params, feeds, spec["threads"])
        steps = getattr(fn, "steps", 1)  # training steps per call: samples are reported per step
        losses: list = []
        while len(losses) < CHECK_STEPS:
            r = loss_of(fn())
            losses += r if isinstance(r, list) else [r]
        losses = losses[:CHECK_STEPS]
        setup = time.perf_counter() - t0
        burst, t1 = _burst(fn, spec["warmup"])
    except Exception as e:  # a peer that fails to build is skipped, with the reason
        _send({"error": f"{type(e).__name__}: {str(e)[:400]}"})
        return 1
    _send({"ready": True, "losses": losses, "setup_s": setup, "burst": burst, "t_call": t1, "pid": os.getpid()})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "run":
            s = [t / steps for t in _samples(fn, int(cmd[1]), burst)]
            _send({"samples": s, "load": os.getloadavg()})
        elif cmd[0] == "profile":
            try:
                _send({"profile": profile_step(bench, cfg, feeds, int(cmd[1]))})
            except Exception as e:
                _send({"profile_error": f"{type(e).__name__}: {e}"})
    return 0


def worker_all(bench: Bench, spec: dict) -> int:
    """Side by side: every contender in THIS process, interleaved round by round."""
    cfg = bench.configs[spec["config"]]
    params, feeds = _load_spec(spec["data"])
    fns, bursts, losses, errors = {}, {}, {}, {}
    for name in spec["contenders"]:
        try:
            fn, loss_of = build(bench, cfg, name, params, feeds, spec["threads"])
            ls = [loss_of(fn()) for _ in range(CHECK_STEPS)]
            losses[name] = ls[0][:CHECK_STEPS] if isinstance(ls[0], list) else ls
            fns[name] = fn
        except Exception as e:
            errors[name] = f"{type(e).__name__}: {str(e)[:300]}"
    for name, fn in fns.items():
        bursts[name], _ = _burst(fn, spec["warmup"])
    times = {k: [] for k in fns}
    loads = []
    t_end = time.perf_counter() + spec["budget"]
    names = list(fns)
    for r in range(spec["rounds"]):
        for j in range(len(names)):
            k = names[(r + j) % len(names)]
            times[k] += [t / getattr(fns[k], "steps", 1) for t in _samples(fns[k], spec["per_round"].get(k, 1),
                                                                               bursts[k])]
        loads.append(os.getloadavg()[0])
        if r >= 2 and time.perf_counter() > t_end:
            break
    _send({"times": times, "bursts": bursts, "losses": losses, "errors": errors, "load": loads})
    return 0


# ---------------------------------------------------------------------------------------------
# where graphc's time goes: each kernel of the compiled step timed on its own
# ---------------------------------------------------------------------------------------------

_KCALL = re.compile(r"^(\s*)(kernel_[0-9a-f]+)\((.*)\)(\s*#.*)?$")


def profile_step(bench: Bench, cfg: dict, feeds: dict, reps: int = 10) -> list[dict]:
    """Per-kernel times of graphc's cpu step: the generated driver (``step.program_for(b)
    .module.source``) re-run as plain Python, each kernel call timed around it, the kernels'
    native entries called through ctypes. The median over ``reps``
    steps per kernel; Python's call overhead (~1-3 us per kernel) is included."""
    st = graphc_step(bench, cfg, "cpu")
    st(**feeds)
    batch = next(iter(feeds.values())).shape[0]
    prog = st.program_for(batch)
    mod = prog.module
    # the Python re-run cannot set the FPU's control word: the subnormal flush is a no-op here
    ns: dict = {"np": np, "math": math, "flush_subnormals": lambda: 0, "restore_fpenv": lambda saved: None}
    from graphc.backends.cache import load_module
    # loaded by the step's first call, or not at all when it started from its native image
    for kmod in prog._kernel_modules or [load_module(p) for p in prog.kernel_paths]:
        # each kernel (and driver check) is a native entry with a C signature: callable from
        # Python through ctypes, with the driver's numpy integers as plain ints
        cf = kmod._cfunc
        ns[cf._pyfunc.__name__] = (lambda *a, f=cf.ctypes: f(*(x.item() if isinstance(x, np.generic) else x
                                                                for x in a)))
    lines = mod.source.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("def step("))
    body, label, labels = [], None, []
    infos = {k.name: k for k in mod.kernels}
    for ln in lines[start + 1:]:
        if ln and not ln.startswith(" "):
            break
        m = re.match(r"\s*# (k\d+): (\S+) (.*)$", ln)
        if m:
            label = m.group(1)
        km = _KCALL.match(ln)
        if km and label is not None:
            i = len(labels)
            labels.append(label)
            ind = km.group(1)
            body += [f"{ind}_t0 = _pc()", f"{ind}{km.group(2)}({km.group(3)})", f"{ind}_T[{i}] += _pc() - _t0"]
            label = None
        else:
            body.append(ln)
    src = "def pstep(" + lines[start][len("def step("):] + "\n" + "\n".join(body)
    ns["_pc"] = time.perf_counter
    exec(compile(src, "<graphc driver, profiled>", "exec"), ns)
    args = prog.driver_args(st._feeds(feeds)[0], st._store)
    ns["_T"] = [0.0] * len(labels)
    ns["pstep"](*args)  # warm up
    per = [[] for _ in labels]
    for _ in range(reps):
        ns["_T"] = T = [0.0] * len(labels)
        ns["pstep"](*args)
        for i, t in enumerate(T):
            per[i].append(t)
    out = []
    for i, lab in enumerate(labels):
        k = infos.get(lab)
        out.append({"kernel": lab, "kind": k.kind if k else "?", "shape": list(k.shape) if k else None,
                    "ops": ",".join(dict.fromkeys(k.ops)) if k else "", "us": 1e6 * float(np.median(per[i]))})
    return out


# ---------------------------------------------------------------------------------------------
# the parent: workers, rounds, results
# ---------------------------------------------------------------------------------------------

class Worker:
    def __init__(self, script: Path, spec: dict, env: dict):
        self.name = spec.get("contender", "side by side")
        self.p = subprocess.Popen([sys.executable, str(script), "--worker" if "contender" in spec else "--worker-all",
                                   json.dumps(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))

    def recv(self) -> dict:
        for line in self.p.stdout:
            if line.startswith(MSG):
                return json.loads(line[len(MSG):])
        err = self.p.stderr.read()
        return {"error": f"worker exited (rc {self.p.wait()}): {err[-600:]}"}

    def ask(self, cmd: str) -> dict:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.recv()

    def close(self) -> None:
        try:
            if self.p.poll() is None:
                self.p.stdin.write("quit\n")
                self.p.stdin.close()
            self.p.wait(timeout=30)
        except Exception:
            self.p.kill()


def summarize(ts: list[float]) -> dict:
    a = np.asarray(ts) * 1e6
    q1, q3 = np.percentile(a, [25, 75])
    return {"median_us": float(np.median(a)), "min_us": float(a.min()), "iqr_us": float(q3 - q1), "n": int(a.size)}


def versions_and_commit(dists) -> dict:
    """The installed versions of ``dists`` (None where absent, without importing them) and
    the repository's commit and whether its tracked files are modified."""
    import importlib.metadata as md
    meta: dict = {}
    for dist in dists:
        try:
            meta[dist] = md.version(dist)
        except Exception:
            meta[dist] = None
    try:
        meta["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True).stdout.strip() or None
        meta["worktree_dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                                     cwd=ROOT, capture_output=True, text=True).stdout.strip())
    except OSError:
        meta["commit"] = None
    return meta


def environment(threads: int) -> dict:
    import numba
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "threads": threads, "loadavg_start": os.getloadavg(),
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                                   "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS",
                                                   "NUMBA_NUM_THREADS", "OMP_WAIT_POLICY")}}
    meta.update(versions_and_commit(("torch", "jax")))
    try:
        with open("/proc/cpuinfo") as f:
            meta["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        meta["cpu"] = None
    return meta


def _write_spec(bench: Bench, cfg: dict, path: Path) -> dict:
    """graphc's initial parameters (seed 0) and the data, for every contender."""
    import graphc as gc
    st = gc.compile(bench.graphc_loss(cfg), optimizer=gc.optim.Adam(LR), target="numpy", seed=0)
    params = {k: np.asarray(v).copy() for k, v in st.params.items()}
    feeds = bench.make_data(cfg)
    np.savez(path, **{f"p:{k}": v for k, v in params.items()}, **{f"f:{k}": v for k, v in feeds.items()})
    return params


def run_config(bench: Bench, script: Path, cname: str, args, tmp: Path, env: dict) -> dict:
    cfg = bench.configs[cname]
    data = tmp / f"{cname}.npz"
    params = _write_spec(bench, cfg, data)
    res: dict = {"config": cfg, "describe": bench.describe(cfg), "n_params": int(sum(v.size for v in params.values())),
                 "gemm_gflop": sum(g.flops for g in bench.gemms(cfg)) / 1e9, "skipped": {}, "own_process": {}}
    names = [n for n in ORDER if n in args.contenders and not (args.no_peers and n in PEERS)]
    for n in ORDER:
        if n not in names:
            res["skipped"][n] = "--no-peers" if n in PEERS and args.no_peers else "not selected"
    base = {"config": cname, "data": str(data), "threads": args.threads, "warmup": args.warmup}
    workers, ready = {}, {}
    for n in names:  # one at a time: a compiling worker does not slow another's setup
        w = Worker(script, {**base, "contender": n}, env)
        msg = w.recv()
        if "error" in msg:
            res["skipped"][n] = msg["error"]
            w.close()
            print(f"    {n}: skipped ({msg['error'][:200]})", flush=True)
            continue
        workers[n], ready[n] = w, msg
        print(f"    {n}: ready in {msg['setup_s']:.1f} s, one call {1e6 * msg['t_call']:.0f} us, "
              f"burst {msg['burst']}", flush=True)
    res["setup"] = {n: {k: m[k] for k in ("setup_s", "burst", "t_call")} for n, m in ready.items()}
    res["loss_check"] = loss_check(ready)
    # samples per contender per round: about round_s of work, 1..10 samples
    per = {n: max(1, min(10, int(args.round_s / max(m["t_call"] * m["burst"], 1e-9)))) for n, m in ready.items()}
    times = {n: [] for n in workers}
    loads: dict = {n: [] for n in workers}
    order = list(workers)
    t_end = time.perf_counter() + args.budget
    rounds = 0
    for r in range(args.rounds):
        for j in range(len(order)):
            n = order[(r + j) % len(order)]
            msg = workers[n].ask(f"run {per[n]}")
            if "samples" not in msg:
                res["skipped"][n] = msg.get("error", str(msg))
                continue
            times[n] += msg["samples"]
            loads[n].append(msg["load"][0])
            time.sleep(args.gap)
        rounds = r + 1
        if rounds >= 3 and time.perf_counter() > t_end:
            break
    res["rounds"] = rounds
    stats = {}
    for n in order:
        if times[n]:
            stats[n] = {**summarize(times[n]), "per_round": per[n], "burst": ready[n]["burst"],
                        "loadavg_1m_median": float(np.median(loads[n])), "loadavg_1m": loads[n]}
    res["own_process"] = stats
    if "graphc cpu" in workers and args.profile_reps > 0:
        msg = workers["graphc cpu"].ask(f"profile {args.profile_reps}")
        res["graphc_profile"] = msg.get("profile") or msg
    for w in workers.values():
        w.close()
    add_ratios(res["own_process"])
    if args.side_by_side and workers:
        print("    side by side (all contenders in one process) ...", flush=True)
        spec = {**base, "contenders": list(workers), "rounds": args.rounds, "budget": args.budget / 2,
                "per_round": {n: max(1, per[n] // 2) for n in workers}}
        w = Worker(script, spec, env)
        msg = w.recv()
        w.close()
        if "times" in msg:
            res["side_by_side"] = {n: {**summarize(t), "burst": msg["bursts"][n]} for n, t in msg["times"].items() if t}
            res["side_by_side_loadavg_1m_median"] = float(np.median(msg["load"])) if msg["load"] else None
            add_ratios(res["side_by_side"])
            if msg.get("errors"):
                res["side_by_side_errors"] = msg["errors"]
        else:
            res["side_by_side"] = {"error": msg.get("error", str(msg))}
    return res


def loss_check(ready: dict) -> dict:
    """Each contender's first CHECK_STEPS losses (same init, same data) against graphc cpu's."""
    ref = ready.get("graphc cpu", {}).get("losses")
    out = {}
    for n, m in ready.items():
        ls = m.get("losses") or []
        if not ls or ls[0] is None:
            continue
        d = None
        if ref:
            d = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(ls, ref))
        out[n] = {"losses": ls, "max_rel_diff_vs_graphc_cpu": d, "ok": d is None or d < 1e-3}
    return out


def add_ratios(stats: dict) -> None:
    """ratio to graphc cpu; both floors: the GEMMs alone (through Numba: ``x_gemm_floor``)
    and floor = those GEMMs + the Adam pass (one streaming pass over params, grads, m, v,
    measured: ``x_floor``)."""
    if "GEMM floor (numba)" in stats:
        g = stats["GEMM floor (numba)"]
        for s in stats.values():
            s["x_gemm_floor"] = s["median_us"] / g["median_us"]
            s["min_x_gemm_floor"] = s["min_us"] / g["min_us"]
    if "graphc cpu" not in stats:
        return
    ref = stats["graphc cpu"]
    for s in stats.values():
        s["ratio_to_graphc_cpu"] = s["median_us"] / ref["median_us"]
        s["min_ratio_to_graphc_cpu"] = s["min_us"] / ref["min_us"]
    if "GEMM floor (numba)" in stats and "Adam pass" in stats:
        fl = stats["GEMM floor (numba)"]["median_us"] + stats["Adam pass"]["median_us"]
        flmin = stats["GEMM floor (numba)"]["min_us"] + stats["Adam pass"]["min_us"]
        stats["floor"] = {"median_us": fl, "min_us": flmin, "what": "GEMM floor (numba) + Adam pass",
                          "x_gemm_floor": fl / stats["GEMM floor (numba)"]["median_us"],
                          "min_x_gemm_floor": flmin / stats["GEMM floor (numba)"]["min_us"]}
        for s in list(stats.values()):
            s["x_floor"] = s["median_us"] / fl
            s["min_x_floor"] = s["min_us"] / flmin


def table(results: dict) -> str:
    lines = []
    for cname, r in results["configs"].items():
        lines.append(f"\n{cname}: {r['describe']}; {r['n_params']} params, GEMMs {r['gemm_gflop']:.3f} GFLOP/step")
        for title, key in (("own process each, rounds alternating", "own_process"),
                           ("SIDE BY SIDE, all in one process", "side_by_side")):
            st = r.get(key)
            if not st or "error" in st:
                if st:
                    lines.append(f"  {title}: FAILED {st['error'][:300]}")
                continue
            lines.append(f"  [{title}]")
            lines.append(f"  {'contender':<20} {'median us':>11} {'min us':>10} {'IQR us':>9} {'n':>4} "
                         f"{'/graphc cpu':>11} {'min/min':>8} {'x GEMMs':>8} {'x floor':>8}")
            for n in [*ORDER, "floor"]:
                s = st.get(n)
                if s is None:
                    continue
                lines.append(f"  {n:<20} {s['median_us']:11.1f} {s['min_us']:10.1f} {s.get('iqr_us', 0):9.1f} "
                             f"{s.get('n', 0):4d} {s.get('ratio_to_graphc_cpu', float('nan')):11.2f} "
                             f"{s.get('min_ratio_to_graphc_cpu', float('nan')):8.2f} "
                             f"{s.get('x_gemm_floor', float('nan')):8.2f} {s.get('x_floor', float('nan')):8.2f}")
            lines.append("  (x GEMMs: / GEMM floor (numba); x floor: / (GEMM floor (numba) + Adam pass), the "
                         "Adam pass measured as one fused loop over arrays of the params' total size)")
            if key == "own_process":
                la = [s["loadavg_1m_median"] for s in st.values() if "loadavg_1m_median" in s]
                if la:
                    lines.append(f"  load average (1 min) during the rounds: median {np.median(la):.2f}, "
                                 f"range {min(la):.2f}-{max(la):.2f} on {os.cpu_count()} cores; {r['rounds']} rounds")
            elif r.get("side_by_side_loadavg_1m_median") is not None:
                lines.append(f"  load average (1 min): median {r['side_by_side_loadavg_1m_median']:.2f}")
        for n, why in r["skipped"].items():
            if why != "not selected":
                lines.append(f"  {n:<20} skipped: {why[:200]}")
        for n, c in r.get("loss_check", {}).items():
            if n != "graphc cpu":
                lines.append(f"  loss check {n:<16} max rel diff vs graphc cpu over {CHECK_STEPS} steps: "
                             f"{c['max_rel_diff_vs_graphc_cpu']:.1e} -> {'ok' if c['ok'] else 'MISMATCH'}")
        prof = r.get("graphc_profile")
        if isinstance(prof, list) and prof:
            tot = sum(p["us"] for p in prof)
            lines.append(f"  graphc cpu kernels (each timed alone, sum {tot:.0f} us), top 8:")
            for p in sorted(prof, key=lambda p: -p["us"])[:8]:
                lines.append(f"    {p['kernel']:<4} {p['kind']:<11} {str(tuple(p['shape'])):<18} "
                             f"{p['us']:9.1f} us {100 * p['us'] / tot:5.1f}%  [{p['ops'][:60]}]")
    text = "\n".join(lines)
    print(text)
    return text


def main(bench: Bench, script: Path, argv=None) -> int:
    ap = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-all", help=argparse.SUPPRESS)
    ap.add_argument("--configs", default=None, help=f"comma-separated subset of {list(bench.configs)}")
    ap.add_argument("--contenders", default=",".join(bench.contenders),
                    help=f"comma-separated subset of {list(ORDER)} (default: {', '.join(bench.contenders)})")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny configs, few rounds (seconds)")
    ap.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX")
    ap.add_argument("--no-side-by-side", dest="side_by_side", action="store_false",
                    help="skip the run with every contender in one process")
    ap.add_argument("--rounds", type=int, default=60, help="max rounds (default 60)")
    ap.add_argument("--budget", type=float, default=40.0, help="seconds of rounds per config (default 40)")
    ap.add_argument("--round-s", type=float, default=0.15, help="seconds of samples per contender per round")
    ap.add_argument("--gap", type=float, default=0.02, help="pause between contenders (s), lets pools sleep")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls per contender after the loss check")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of every library in every worker: torch.set_num_threads, OMP/OpenBLAS/"
                         "MKL/NUMBA_NUM_THREADS, XLA (single-threaded Eigen when 1); default: all cores")
    ap.add_argument("--profile-reps", type=int, default=10, help="steps for graphc's per-kernel profile (0: none)")
    ap.add_argument("--out", default=str(HERE / "results" / f"{bench.name}.json"), help="JSON output path")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(bench, json.loads(args.worker))
    if args.worker_all:
        return worker_all(bench, json.loads(args.worker_all))
    if args.quick:
        args.rounds, args.budget, args.round_s = min(args.rounds, 3), min(args.budget, 1.0), 0.02
        args.warmup, args.profile_reps, args.gap = min(args.warmup, 2), min(args.profile_reps, 2), 0.0
    configs = [c.strip() for c in (args.configs or ",".join(bench.quick_configs if args.quick
                                                            else bench.default_configs)).split(",") if c.strip()]
    bad = [c for c in configs if c not in bench.configs]
    if bad:
        ap.error(f"unknown config(s) {bad}; choose from {list(bench.configs)}")
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    bad = [c for c in args.contenders if c not in ORDER]
    if bad:
        ap.error(f"unknown contender(s) {bad}; choose from {list(ORDER)}")
    meta = environment(args.threads)
    print(f"graphc {bench.name}  {meta['date']}  commit {meta.get('commit')}"
          f"{' (dirty)' if meta.get('worktree_dirty') else ''}; cpu {meta.get('cpu')} ({meta['cpu_count']} cores), "
          f"load average {meta['loadavg_start']}", flush=True)
    env = dict(os.environ)
    env["OPENBLAS_THREAD_TIMEOUT"] = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "4")
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = str(args.threads)  # the same thread count for every library in every worker
    if args.threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1").strip()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    results = {"meta": meta, "args": {k: v for k, v in vars(args).items() if not k.startswith("worker")},
               "configs": {}, "notes": bench.notes}
    with tempfile.TemporaryDirectory(prefix=f"graphc_{bench.name}_") as tmp:
        for c in configs:
            print(f"... {c}: {bench.describe(bench.configs[c])}", flush=True)
            t0 = time.perf_counter()
            results["configs"][c] = run_config(bench, script, c, args, Path(tmp), env)
            results["configs"][c]["bench_s"] = time.perf_counter() - t0
    meta["loadavg_end"] = os.getloadavg()
    results["table"] = table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {out}")
    return 0
