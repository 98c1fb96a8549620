"""What this machine can do at best: the roofs ``step.explain()`` measures kernels against.

Two numbers bound every kernel of a CPU step (the roofline model): the GEMM rate of the BLAS
the generated code calls (``np.dot`` inside Numba, which hands it to SciPy's BLAS, with
BLAS's own threads), per dtype, and the streaming bandwidth of a Numba loop, serial
(target ``cpu``) and over Numba's thread pool (target ``parallel``). Bandwidth is measured
for three read/write mixes, as STREAM does: ``read`` (a sum), ``copy`` (1 read : 1 write)
and ``triad`` (``a = b + s * c``, 2 : 1, the mix of a typical fused elementwise kernel and
the memory roof used). The arrays are 48 MiB each, beyond any core's private caches. A
training step's working set is often far smaller and lives in a cache, so the triad is also
timed on working sets of 192 KiB, 1.5 MiB and 12 MiB; ``explain`` uses the rate of the
smallest that holds the step's footprint (params, optimizer state, scratch, feeds), so that
its floor stays a lower bound (a hierarchical roofline).

Measuring takes a few hundred milliseconds (plus a one-time Numba compile of the probes);
the result is cached as JSON beside the compile cache (``peaks.json`` in
``$GRAPHC_CACHE_DIR``), keyed by a fingerprint of the machine and the thread settings, and
re-measured by ``peaks(refresh=True)`` (``explain(refresh_peaks=True)``).
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field

import numpy as np

GEMM_N = 512  # largest square GEMM timed (also n/8, n/4, n/2): BLAS's steady rate in a few ms
STREAM_BYTES = 48 << 20  # per array
CACHE_SIZES = (64 << 10, 512 << 10, 4 << 20)  # per array: triad working sets of 192 KiB, 1.5 MiB, 12 MiB
BUDGET_S = 0.04  # per measurement: repeat until this much time has passed (best run kept)
VERSION = 3  # of the JSON layout and the method


@dataclass
class Peaks:
    """Measured roofs. ``gemm_gflops``: dtype name -> GFLOP/s; ``bandwidth``: ``"1 core"`` /
    ``"all cores"`` -> {``"read"``, ``"copy"``, ``"triad"``} -> GB/s (1e9 bytes/s)."""

    gemm_gflops: dict
    bandwidth: dict
    cores: int
    triad_by_size: dict = field(default_factory=dict)  # "1 core"/"all cores" -> [[bytes of the 3 arrays, GB/s]]
    blas_threads: int | None = None
    gemm_n: int = GEMM_N
    stream_mib: float = STREAM_BYTES / 2**20
    measured_s: float = 0.0  # how long measuring took
    when: float = field(default_factory=time.time)
    machine: str = ""

    def gemm(self, dtype) -> float:
        """GFLOP/s of a GEMM in ``dtype`` (float32's rate for anything not float64)."""
        name = np.dtype(dtype).name if dtype is not None else "float32"
        return float(self.gemm_gflops.get(name, self.gemm_gflops["float32"]))

    def stream(self, parallel: bool = False, mix: str = "triad", footprint: int | None = None) -> float:
        """GB/s of streaming ``mix`` on one core (``parallel=False``) or the better of one and
        all cores. ``footprint`` (bytes a step touches): the triad rate of the smallest
        measured working set that holds it (a step that fits in a cache streams from that
        cache), never below the streaming rate of the largest."""
        where = ["1 core", "all cores"] if parallel else ["1 core"]
        best = max(float(self.bandwidth[w][mix]) for w in where)
        if footprint is None or mix != "triad":
            return best
        for w in where:
            levels = sorted(self.triad_by_size.get(w, []))
            fits = [gbps for size, gbps in levels if size >= footprint]
            if fits:
                best = max(best, max(fits))
        return best

    def __str__(self) -> str:
        g = ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.gemm_gflops.items()))
        bw = "; ".join(f"{where}: " + ", ".join(f"{m} {v:.1f}" for m, v in mixes.items())
                       for where, mixes in self.bandwidth.items())
        return (f"peaks ({self.machine}): GEMM GFLOP/s {g} (n={self.gemm_n}, BLAS threads "
                f"{self.blas_threads or '?'}); streaming GB/s {bw} ({self.stream_mib:.0f} MiB arrays)")


def _best(f, *args, budget: float = BUDGET_S, min_runs: int = 3) -> float:
    """The fastest of repeated calls (after one warm-up call) within ``budget`` seconds."""
    f(*args)
    best, start, runs = float("inf"), time.perf_counter(), 0
    while runs < min_runs or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        f(*args)
        best = min(best, time.perf_counter() - t0)
        runs += 1
        if runs >= 200:
            break
    return best


def measure(gemm_n: int = GEMM_N, stream_bytes: int = STREAM_BYTES, budget: float = BUDGET_S) -> Peaks:
    """Measure the roofs now (no cache)."""
    from .threads import prepare_parallel
    prepare_parallel()  # before Numba's pool starts: workers sleep rather than spin
    from .peak_probes import _copy, _gemm, _pcopy, _pread, _ptriad, _read, _triad  # Numba: imported here
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    gemm = {}
    for dt in ("float32", "float64"):  # the best rate over sizes: BLAS runs small GEMMs on one
        gemm[dt] = 0.0                 # thread, large ones on all (which a busy machine can spoil)
        for m in sorted({max(gemm_n // 8, 16), max(gemm_n // 4, 16), max(gemm_n // 2, 16), gemm_n}):
            a = rng.standard_normal((m, m)).astype(dt)
            b = rng.standard_normal((m, m)).astype(dt)
            c = np.empty((m, m), dt)
            gemm[dt] = max(gemm[dt], 2.0 * m ** 3 / _best(_gemm, a, b, c, budget=budget / 2) / 1e9)
    n = max(stream_bytes // 8, 1024)
    x, y, z = np.ones(n), np.ones(n), np.ones(n)  # touched: no page faults in the timings
    nb = n * 8
    bw = {}
    cores = os.cpu_count() or 1
    for where, (rd, cp, tr) in (("1 core", (_read, _copy, _triad)), ("all cores", (_pread, _pcopy, _ptriad))):
        bw[where] = {"read": nb / _best(rd, x, budget=budget) / 1e9,
                     "copy": 2 * nb / _best(cp, x, y, budget=budget) / 1e9,
                     "triad": 3 * nb / _best(tr, x, y, z, 0.5, budget=budget) / 1e9}
    if cores == 1:  # one core: "all cores" is the same machine, keep the better of each
        bw["all cores"] = {m: max(v, bw["all cores"][m]) for m, v in bw["1 core"].items()}
        bw["1 core"] = dict(bw["all cores"])
    by_size = {"1 core": [], "all cores": []}
    for per in CACHE_SIZES:  # working sets that fit in a core's caches or the shared one
        m = per // 8
        a, b, c = x[:m], y[:m], z[:m]
        by_size["1 core"].append([3 * per, 3 * per / _best(_triad, a, b, c, 0.5, budget=budget / 4) / 1e9])
        by_size["all cores"].append([3 * per, 3 * per / _best(_ptriad, a, b, c, 0.5, budget=budget / 4) / 1e9])
    for w in by_size:
        by_size[w].append([3 * nb, bw[w]["triad"]])
    return Peaks(gemm, bw, cores, by_size, _blas_threads(), gemm_n, stream_bytes / 2**20,
                 measured_s=time.perf_counter() - t0, machine=machine())


def _blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for i in threadpool_info():
        if i.get("user_api") == "blas":
            return i.get("num_threads")
    return None


def machine() -> str:
    """A short description of the CPU (model name, cores) for the report and the cache key."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _fingerprint() -> str:
    """What the roofs depend on: the CPU, thread settings, and the Numba/NumPy/SciPy builds."""
    from importlib.metadata import version  # not ``import numba``: a cached hit needs no Numba
    env = ",".join(f"{k}={os.environ.get(k, '')}" for k in
                   ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"))
    return (f"v{VERSION}|{machine()}|{platform.machine()}|numba {version('numba')}|numpy {np.__version__}"
            f"|scipy {version('scipy')}|{env}")


def cache_path():
    """``peaks.json`` in the compile cache directory (graphc/backends/cache.py)."""
    from .backends.cache import cache_dir
    return cache_dir() / "peaks.json"


def peaks(refresh: bool = False) -> Peaks:
    """This machine's roofs: from ``peaks.json`` beside the compile cache when it holds a
    measurement for this machine and these thread settings, else measured now (a few hundred
    ms) and stored there. ``refresh=True`` measures again."""
    key = _fingerprint()
    path = cache_path()
    entries = {}
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    hit = entries.get(key)
    if hit is not None and not refresh:
        try:
            return Peaks(**hit)
        except TypeError:  # another layout: measure again
            pass
    p = measure()
    entries[key] = asdict(p)
    try:
        from .atomic import write_atomic
        text = json.dumps(entries, indent=1, sort_keys=True)
        write_atomic(path, lambda f: f.write(text), binary=False)
    except OSError:  # an unwritable cache: measured again next process
        pass
    return p
