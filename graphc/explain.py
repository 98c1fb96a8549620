"""``step.explain()``: where every microsecond of a step goes, against what the machine allows.

graphc knows every kernel's FLOPs and bytes at compile time (the fusion's Kernel
descriptions), so it can place each one on the roofline of this machine (graphc/peaks.py):

- FLOPs come from one rule per kernel kind (``COSTS`` below; a new kind is one entry): a
  GEMM is ``2 m n k``, an elementwise op one FLOP per element (casts, selects and copies
  none), a reduction one per element reduced, softmax-CE 4 per logit (+1 with its gradient).
- Bytes moved: every distinct tensor a kernel reads, once, plus every tensor it writes; a
  GEMM prologue's result counts as written by BLAS and read back by the epilogue.
- Times come from a *profiling twin* of the driver (cpu and parallel targets): the same
  generated source, the same compiled kernels, with a monotonic clock read (``clock_gettime``
  through ctypes, ~20 ns) after each kernel call. It is compiled separately, uncached, on the
  first ``explain()`` of a program; the normal driver and its cache entry are untouched. The
  numpy target is timed per op group (the same fusion groups, evaluated by the interpreter);
  cuda says it is not supported yet.

Per kernel the report gives achieved GFLOP/s and GB/s, arithmetic intensity, the bound
(compute if the intensity is past the ridge ``peak GFLOP/s / GB/s``, else memory), the
percentage of that roof, and the share of the step's call. The totals compare the native
time with the step's floor (each kernel at its roof: GEMMs at BLAS peak, everything else at
streaming bandwidth) and split off the Python call overhead (the public call minus the native
driver). ``explain`` runs the step on the given (or random) feeds and puts every parameter,
optimizer state and step counter back afterwards. It prints the report (the interactive use:
``step.explain()`` at a prompt or after training) and returns it as an ``Explanation``;
``verbose=False`` only returns it (tests, scripts that format the fields themselves).
"""
from __future__ import annotations

import math
import re
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from numba import njit, objmode, types

from .errors import GraphcError
from .ir import Node, fmt_shape
from .peaks import Peaks


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


# ---- FLOPs per kernel kind ----------------------------------------------------------------------

FREE_OPS = frozenset({"cast", "stop_gradient", "where", "reshape", "transpose", "broadcast_to"})


def _ew_flops(nodes) -> int:
    """One FLOP per element per elementwise op (casts, selects and movement: none)."""
    return sum(_numel(n.shape) for n in nodes if n.op not in FREE_OPS)


def matmul_flops(n: Node) -> int:
    """``2 m n k`` for ``(m, k) @ (k, n)`` (leading dims of a stacked operand multiply m)."""
    a = n.inputs[0]
    return 2 * _numel(n.shape) * int(a.shape[-1])


def _loop(k) -> int:
    f = matmul_flops(k.matmul) if k.matmul is not None else 0
    f += _ew_flops(k.prelude) + _ew_flops(k.nodes)
    f += sum(_numel(r.inputs[0].shape) for r in k.reductions)  # one add/max per element reduced
    return f


def _bmm(k) -> int:
    total = 0
    for n in k.nodes:  # (B, m, n) = op(a) @ op(b): 2 B m n k
        a = n.inputs[0]
        inner = a.shape[1] if n.attrs.get("ta") else a.shape[2]
        total += 2 * _numel(n.shape) * int(inner)
    return total


def _sce(k) -> int:
    z = k.nodes[0].inputs[0]
    rows, logits = (z.shape[0], _numel(z.shape)) if z.shape else (1, 1)
    per = 4 + (1 if any(n.op == "sce_grad" for n in k.nodes) else 0)  # max, sub, exp, sum (+ scale)
    return per * logits + 3 * rows  # log, add, pick the label per row


def _window(n) -> int:
    kh, kw = n.attrs["kernel"]
    return int(kh) * int(kw)


def _pool(k) -> int:
    n = k.nodes[0]
    f = _numel(n.shape) * _window(n)  # a compare (max) or an add (avg) per window element
    return f + (_numel(n.shape) if n.attrs.get("mode") == "avg" else 0)  # avg: the scale


def _pool_grad(k) -> int:
    n = k.nodes[0]
    g = n.inputs[1]
    return _numel(g.shape) * (_window(n) + 1)  # max: compares to find the winner, + the add


# kind -> FLOPs of one kernel of that kind. Kinds that only move data count none.
COSTS: dict[str, Callable[[Any], int]] = {
    "loop": _loop,
    "matmul": lambda k: matmul_flops(k.matmul),
    "copy": lambda k: 0,
    "bmm": _bmm,
    "sce": _sce,
    "im2col": lambda k: 0,
    "col2im": lambda k: _numel(k.nodes[0].inputs[0].shape),  # every patch value added back
    "pool2d": _pool,
    "pool2d_grad": _pool_grad,
    "take": lambda k: 0,
    "scatter_add": lambda k: _numel(k.nodes[0].inputs[0].shape),  # one add per gradient value
    "slice": lambda k: 0,
    "pad": lambda k: 0,
    "concat": lambda k: 0,
    "allreduce": lambda k: 0,  # the sum happens in MPI, over the network
    "rng": lambda k: _numel(k.nodes[0].shape),  # the scale to [0, 1); SplitMix64's mixing is integer work
}

# kinds that read only part of an operand: bytes of what they touch, not of the whole tensor
_PARTIAL_READS = {
    "take": lambda k: 2 * _nbytes(k.nodes[0]) + _nbytes(k.nodes[0].inputs[1]),  # rows read + written, ids
    "slice": lambda k: 2 * sum(_nbytes(n) for n in k.nodes),
}


def _nbytes(n: Node) -> int:
    return _numel(n.shape) * n.dtype.itemsize


def kernel_flops(k) -> int:
    """FLOPs of one fused kernel (``COSTS[k.kind]``; an unknown kind counts none)."""
    rule = COSTS.get(k.kind)
    return int(rule(k)) if rule is not None else 0


def kernel_bytes(k, plan=None) -> int:
    """Bytes a kernel moves: each distinct tensor it reads (once) plus each it writes; a
    GEMM prologue's result is written by BLAS and read back by the epilogue. Literals (values
    in the code) move nothing. ``plan`` (optional) tells literals apart."""
    partial = _PARTIAL_READS.get(k.kind)
    if partial is not None:
        return int(partial(k))
    total = 0
    for x in k.reads():
        if plan is not None:
            b = plan.buffers.get(id(x))
            if b is not None and b.kind == "literal":
                continue
        total += _nbytes(x)
    total += sum(_nbytes(o) for o in dict.fromkeys(k.outputs))
    if k.matmul is not None and k.kind == "loop":
        total += 2 * _nbytes(k.matmul)
    return total


def gemm_flops(k) -> int:
    """The part of a kernel's FLOPs that runs in BLAS (its GEMMs)."""
    if k.kind == "bmm":
        return _bmm(k)
    if k.matmul is not None:
        return matmul_flops(k.matmul)
    return 0


# ---- the report ---------------------------------------------------------------------------------

@dataclass
class KernelReport:
    """One kernel's row: what it fuses, where that came from, its counts, time and roofline place."""

    name: str
    kind: str
    shape: tuple
    ops: list[str]
    sources: list[str]  # the user's file:line of its ops, in order, each once
    flops: int
    bytes: int
    time_s: float  # median over the runs
    dtype: str
    gflops: float = 0.0
    gbps: float = 0.0
    intensity: float = 0.0  # FLOP per byte
    bound: str = "memory"  # "compute" | "memory": the roof at this intensity
    roof_gflops: float = 0.0  # attainable GFLOP/s at this intensity (min(peak, intensity * bandwidth))
    pct_of_roof: float = 0.0  # achieved / attainable (bandwidth for a kernel without FLOPs), in %
    share: float = 0.0  # of the step's call time
    floor_s: float = 0.0  # the time at its roof: max(flops / peak, bytes / bandwidth)
    gemm_flops: int = 0
    times_s: list = field(default_factory=list, repr=False)  # every run, for the curious

    @property
    def ops_summary(self) -> str:
        return summarize_ops(self.ops)


@dataclass
class Explanation:
    """What ``step.explain()`` returns (and prints): per-kernel rows and the step's totals.
    Times are medians in seconds; ``str()`` is the printed table; ``plot(path)`` draws the
    roofline."""

    what: str  # "CompiledStep" / "Function"
    target: str
    batch: int | None
    runs: int
    kernels: list[KernelReport]
    peaks: Peaks
    peak_gflops: float  # the compute roof used (GEMM, the step's main float dtype)
    bandwidth_gbps: float  # the memory roof used (streaming triad, 1 core or all cores)
    step_s: float  # the public call, Python included
    native_s: float  # inside the driver: first clock read to last
    driver_call_s: float  # the unmodified driver called from Python (Numba's dispatch included)
    prologue_s: float  # driver: feed checks before the first kernel
    epilogue_s: float  # driver: checks and store copies after the last kernel
    floor_s: float
    gemm_floor_s: float  # GEMM FLOPs at peak
    stream_floor_s: float  # the rest's bytes at bandwidth
    peak_bytes: int
    no_reuse_bytes: int
    dtype: str = "float32"
    notes: list[str] = field(default_factory=list)
    footprint_bytes: int = 0  # params, state, scratch peak and feeds: picks the bandwidth roof
    all_cores: bool = False  # the target's kernels use every core: the all-cores bandwidth roof

    # ---- derived totals -----------------------------------------------------------------------
    @property
    def kernels_s(self) -> float:
        return float(sum(k.time_s for k in self.kernels))

    @property
    def overhead_s(self) -> float:
        """The Python call overhead: the public call minus the time inside the native driver."""
        return max(self.step_s - self.native_s, 0.0)

    @property
    def dispatch_s(self) -> float:
        """Of that overhead, entering the compiled driver (Numba's argument dispatch)."""
        return max(self.driver_call_s - self.native_s, 0.0)

    @property
    def flops(self) -> int:
        return int(sum(k.flops for k in self.kernels))

    @property
    def bytes(self) -> int:
        return int(sum(k.bytes for k in self.kernels))

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the compute and memory roofs meet."""
        return self.peak_gflops / self.bandwidth_gbps if self.bandwidth_gbps else math.inf

    def worst(self, n: int = 3) -> list[KernelReport]:
        """The kernels with the most time above their floor: where to look first."""
        return sorted(self.kernels, key=lambda k: k.time_s - k.floor_s, reverse=True)[:n]

    def __repr__(self) -> str:
        return (f"<Explanation {self.what} target={self.target!r} batch={self.batch} kernels={len(self.kernels)} "
                f"step={_us(self.step_s)} native={_us(self.native_s)} floor={_us(self.floor_s)}>")

    def __str__(self) -> str:
        return format_report(self)

    def plot(self, path, title: str | None = None) -> str:
        """Draw the kernels on this machine's roofline and save it to ``path`` (PNG, SVG,
        PDF: matplotlib decides by the suffix). Needs matplotlib (``pip install graphc[plot]``)."""
        return plot_roofline(self, path, title)


def _us(s: float) -> str:
    return f"{s * 1e6:.1f} us"


def _si(x: float, unit: str) -> str:
    for scale, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {p}{unit}"
    return f"{x:.3g} {unit}"


def summarize_ops(ops: list[str], width: int = 44) -> str:
    """``matmul, mul x8, sub x5, ...``: the fused ops with counts, in first-seen order."""
    c = Counter(ops)
    parts = [op + (f" x{c[op]}" if c[op] > 1 else "") for op in dict.fromkeys(ops)]
    text = ", ".join(parts)
    if len(text) <= width:
        return text
    out = parts[0]
    for i, p in enumerate(parts[1:], start=1):
        more = f", +{len(parts) - i} more"
        if len(out) + len(p) + 2 + len(more) > width:
            return out + more
        out += ", " + p
    return out


def format_report(e: Explanation) -> str:
    step = e.step_s or 1e-30
    lines = [f"{e.what} on target {e.target!r}, batch {e.batch}: {len(e.kernels)} kernels, "
             f"median of {e.runs} runs",
             f"roofs: GEMM {e.peak_gflops:.1f} GFLOP/s ({e.dtype}), streaming {e.bandwidth_gbps:.1f} GB/s "
             f"({'all cores' if e.all_cores else '1 core'}, a {_si(e.footprint_bytes, 'B')} working set); "
             f"ridge {e.ridge:.1f} FLOP/B  [{e.peaks.machine}]"]
    hdr = (f"{'':<4} {'kind':<11} {'shape':<14} {'time':>9} {'share':>6} {'GFLOP/s':>8} {'GB/s':>7} "
           f"{'FLOP/B':>7} {'bound':<7} {'%roof':>6} {'FLOPs':>8} {'bytes':>8}  ops @ source")
    lines += ["", hdr]
    for k in e.kernels:
        src = ", ".join(k.sources[:2]) + (f", +{len(k.sources) - 2}" if len(k.sources) > 2 else "")
        lines.append(f"{k.name:<4} {k.kind:<11} {fmt_shape(k.shape):<14} {_us(k.time_s):>9} {k.share:>6.1%} "
                     f"{k.gflops:>8.2f} {k.gbps:>7.2f} {k.intensity:>7.2f} {k.bound:<7} {k.pct_of_roof:>5.1f}% "
                     f"{_si(k.flops, ''):>8} {_si(k.bytes, 'B'):>8}  [{k.ops_summary}] @ {src}")
    ratio = (lambda t: f"{t / e.floor_s:.1f}x its floor" if e.floor_s > 0 else "")
    lines += [
        "",
        f"kernels        {_us(e.kernels_s):>10}  {e.kernels_s / step:6.1%}  {_si(e.flops, 'FLOP')}, "
        f"{_si(e.bytes, 'B')} moved; {ratio(e.kernels_s)}",
        f"driver checks  {_us(e.prologue_s):>10}  {e.prologue_s / step:6.1%}  feeds range/finite-checked "
        f"before the first kernel",
        f"driver tail    {_us(e.epilogue_s):>10}  {e.epilogue_s / step:6.1%}  after the last kernel "
        f"(store copies, numerics checks)",
        f"native driver  {_us(e.native_s):>10}  {e.native_s / step:6.1%}  {ratio(e.native_s)}",
        f"Python call    {_us(e.overhead_s):>10}  {e.overhead_s / step:6.1%}  overhead: the call minus the "
        f"native driver ({_us(e.dispatch_s)} of it entering the compiled driver)",
        f"step call      {_us(e.step_s):>10}  100.0%  {ratio(e.step_s)}",
        f"floor          {_us(e.floor_s):>10}          every kernel at its roof: compute-bound GEMMs at "
        f"peak {_us(e.gemm_floor_s)} + the rest at streaming bandwidth {_us(e.stream_floor_s)}",
    ]
    if e.no_reuse_bytes:
        lines.append(f"memory         scratch peak {_si(e.peak_bytes, 'B')} with buffer reuse, "
                     f"{_si(e.no_reuse_bytes, 'B')} without ({e.no_reuse_bytes / max(e.peak_bytes, 1):.1f}x)")
    worst = [k for k in e.worst(3) if k.time_s > k.floor_s]
    if worst:
        lines.append("most time above floor: " + "; ".join(
            f"{k.name} {k.kind} [{summarize_ops(k.ops, 24)}] {_us(k.time_s - k.floor_s)} "
            f"({k.bound}-bound, {k.pct_of_roof:.0f}% of roof)" for k in worst))
    lines += e.notes
    return "\n".join(lines)


# ---- roofline picture ---------------------------------------------------------------------------

def plot_roofline(e: Explanation, path, title: str | None = None) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("Explanation.plot needs matplotlib: pip install 'graphc[plot]' "
                          "(or pip install matplotlib)") from exc
    import os
    path = os.fspath(path)
    pts = [k for k in e.kernels if k.flops > 0 and k.bytes > 0 and k.time_s > 0]
    flat = [k for k in e.kernels if k.flops == 0]
    P, B = e.peak_gflops, e.bandwidth_gbps
    xs = [k.intensity for k in pts] or [e.ridge]
    lo = min(min(xs), e.ridge) / 8
    hi = max(max(xs), e.ridge) * 8
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=90)
    grid = np.geomspace(lo, hi, 200)
    ax.loglog(grid, np.minimum(P, grid * B), color="black", lw=2,
              label=f"roof: {P:.0f} GFLOP/s GEMM, {B:.0f} GB/s ({_si(e.footprint_bytes, 'B')} working set)")
    other = e.peaks.stream(parallel=e.all_cores)  # without the footprint: from memory
    if abs(other - B) / B > 0.05:
        ax.loglog(grid, np.minimum(P, grid * other), color="gray", lw=1, ls="--",
                  label=f"{other:.0f} GB/s: streaming {e.peaks.stream_mib:.0f} MiB arrays")
    ax.axvline(e.ridge, color="gray", lw=0.6, ls=":")
    if pts:
        share = np.array([k.share for k in pts])
        sizes = 30 + 900 * share / max(share.max(), 1e-12)
        colors = ["tab:red" if k.gemm_flops else "tab:blue" for k in pts]
        ax.scatter([k.intensity for k in pts], [k.gflops for k in pts], s=sizes, c=colors, alpha=0.6,
                   edgecolors="black", linewidths=0.5, zorder=3)
        for k in pts:
            ax.annotate(f"{k.name} {k.share:.0%}", (k.intensity, k.gflops), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.scatter([], [], c="tab:red", label="kernel with a GEMM (size: share of step)")
    ax.scatter([], [], c="tab:blue", label="other kernel")
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_xlim(lo, hi)
    ymin = min([k.gflops for k in pts] + [P]) / 10
    ax.set_ylim(max(ymin, 1e-4), P * 3)
    note = f"; {len(flat)} data-movement kernels (0 FLOPs) not shown" if flat else ""
    ax.set_title(title or f"{e.what} ({e.target}, batch {e.batch}): native {_us(e.native_s)}, "
                          f"floor {_us(e.floor_s)}{note}", fontsize=9)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---- timing: the profiling twin of a cpu driver -------------------------------------------------

_clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, types.voidptr))
_MONOTONIC = int(getattr(time, "CLOCK_MONOTONIC", 1))


@njit(cache=True, nogil=True)
def clock_tick(t, i):
    """``t[i]`` = a monotonic clock in ns (clock_gettime, resolved by the linker: ~20 ns, and
    cacheable because no address is baked in); ``t``'s last two slots are its timespec."""
    m = t.shape[0] - 2
    _clock_gettime(_MONOTONIC, t[m:].ctypes.data)
    t[i] = t[m] * 1000000000 + t[m + 1]


@njit(nogil=True)
def objmode_tick(t, i):
    """The fallback where there is no clock_gettime: object mode around perf_counter_ns (~0.5 us)."""
    with objmode(v="int64"):
        v = time.perf_counter_ns()
    t[i] = v


_TICK: list = []


def tick_name() -> str:
    """Which clock the profiling drivers import (clock_tick where it compiles and runs)."""
    if not _TICK:
        try:
            z = np.zeros(3, np.int64)
            clock_tick(z, 0)
            _TICK.append("clock_tick" if z[0] > 0 else "objmode_tick")
        except Exception:  # no clock_gettime symbol (Windows), or a 32-bit timespec
            _TICK.append("objmode_tick")
    return _TICK[0]


_PROFILERS: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()
_SECTION = re.compile(r"^    (b\d+ = |# k\d+: )")


def profile_source(source: str, functions: list[tuple[str, str]], tick: str = "clock_tick") -> str:
    """The driver ``source`` with a clock read (``_tick(_ticks, i)``) at its entry (0), after
    the feed checks (1), after each kernel call (2 + j; ``functions``: (kernel name, generated
    function) in schedule order) and before its final return (2 + len(functions)). Raises
    GraphcError if a kernel's call is not where the emitter puts it."""
    lines = source.split("\n")
    i_def = next((i for i, line in enumerate(lines) if line.startswith("def step(")), None)
    if i_def is None or not lines[i_def - 1].startswith("@njit("):
        raise GraphcError("explain: the generated driver has no 'def step(' after an @njit line")
    params = lines[i_def][len("def step("):lines[i_def].rindex(")")]
    lines[i_def] = f"def step({params + ', ' if params.strip() else ''}_ticks):"
    if tick == "objmode_tick":  # object mode cannot be cached
        lines[i_def - 1] = lines[i_def - 1].replace("cache=True, ", "")
    end = max(i for i, line in enumerate(lines) if line.strip())
    if lines[end] != "    return 0":
        raise GraphcError("explain: the generated driver does not end with 'return 0'")
    i_imp = next((i for i, line in enumerate(lines) if line.startswith("from numba import")), 0)
    # the clock's source hash is part of the text, so a changed clock is a new cache entry
    # (Numba's cache never notices edits to a callee in another file)
    head = lines[:i_imp + 1] + [f"from graphc.explain import {tick} as _tick  # profiling twin; clock {_clock_hash()}"]
    out = head + lines[i_imp + 1:i_def + 1] + ["    _tick(_ticks, 0)"]
    j = 0
    prologue_done = False
    n = len(functions)
    for line in lines[i_def + 1:end]:
        if not prologue_done and (_SECTION.match(line) or (j < n and _is_call(line, *functions[j]))):
            out.append("    _tick(_ticks, 1)")
            prologue_done = True
        out.append(line)
        if j < n and _is_call(line, *functions[j]):
            out.append(f"    _tick(_ticks, {j + 2})")
            j += 1
    if j != n:
        raise GraphcError(f"explain: found {j} of the driver's {n} kernel calls "
                          f"(the call of {functions[j][0]}, {functions[j][1]}, is missing)")
    if not prologue_done:
        out.append("    _tick(_ticks, 1)")
    out.append(f"    _tick(_ticks, {n + 2})")
    out += lines[end:]
    return "\n".join(out)


def _clock_hash() -> str:
    import hashlib
    import inspect
    text = inspect.getsource(clock_tick) + inspect.getsource(objmode_tick) + str(_MONOTONIC)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _is_call(line: str, name: str, fn: str) -> bool:
    s = line.strip()
    return s.startswith(fn + "(") or s.startswith(f"bad_{name} = {fn}(")


def profiler(prog, args: list) -> tuple[Callable, int]:
    """The profiling twin of a cpu/parallel program's driver, built once per program and
    called once with ``args`` (that call compiles it, or loads it from the compile cache:
    the twin is a generated module like any other, named by the hash of its text).
    Returns ``(twin(*args, ticks), number of kernels)``."""
    hit = _PROFILERS.get(prog)
    if hit is not None:
        return hit
    from .backends.cache import LOCK, load_module, record_numba_cache, verify_numba_cache, write_module
    infos = prog.module.kernels
    n = len(infos)
    if getattr(prog, "native", False):  # graphc's own driver: its twin calls the very kernels that run
        from .backends.cpu import native
        text = profile_source(prog.module.source, [(k.name, k.function) for k in infos], "clock_tick")
        kinds, expect = prog.native_kinds()
        sigs = native.entry_signatures([p.read_text() for p in prog.kernel_paths])
        try:
            twin, _ = native.native_driver(text, [*kinds, "p"], sigs, [*expect, None])
        except native.Unsupported:
            twin = None
        if twin is not None:
            status = twin(*args, np.zeros(n + 5, np.int64))
            if status:
                raise GraphcError(f"explain: the profiling driver rejected the feeds (status {status})")
            _PROFILERS[prog] = hit = (twin, n)
            return hit
    tick = tick_name()
    path = write_module(profile_source(prog.module.source, [(k.name, k.function) for k in infos], tick))
    with LOCK:  # as a program's first call: verify, load, compile, run, record
        problems = verify_numba_cache([path])
        if problems:
            import warnings
            warnings.warn(f"graphc: Numba cache for {path} was unusable ({'; '.join(problems)}); recompiling",
                          RuntimeWarning, stacklevel=3)
        for kp in prog.kernel_paths:  # the twin imports the kernel modules (graphc may have compiled them itself)
            load_module(kp)
        twin = load_module(path).step
        status = twin(*args, np.zeros(n + 5, np.int64))
        record_numba_cache([path])
    if status:
        raise GraphcError(f"explain: the profiling driver rejected the feeds (status {status})")
    _PROFILERS[prog] = hit = (twin, n)
    return hit


# ---- feeds --------------------------------------------------------------------------------------

def example_feeds(fn, batch: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for ``fn``'s inputs (batch dim = ``batch``): floats standard normal,
    indices in range (class labels, ids), other integers and booleans zero."""
    rng = np.random.default_rng(seed)
    bounds = {name: b for name, b, _ in fn._index_checks}
    out = {}
    for n in fn._inputs:
        if None in n.shape and batch is None:
            raise GraphcError(f"explain: input {n.name!r} has a batch dim; pass its feeds or batch=N "
                              f"(or call the step once first)")
        shape = tuple(batch if d is None else d for d in n.shape)
        if n.dtype.kind == "f":
            out[n.name] = rng.standard_normal(shape).astype(n.dtype)
        elif n.name in bounds:
            out[n.name] = rng.integers(0, bounds[n.name], size=shape).astype(n.dtype)
        else:
            out[n.name] = np.zeros(shape, n.dtype)
    return out


# ---- explain ------------------------------------------------------------------------------------

def explain(fn, feeds: Mapping[str, Any] | None = None, *, batch: int | None = None, runs: int | None = None,
            refresh_peaks: bool = False, verbose: bool = True) -> Explanation:
    """Profile one compiled step or function (see the module docstring); ``fn.explain()``
    calls this. ``feeds``: what a call takes (default: random feeds of ``batch`` rows, or of
    the batch size last compiled); ``runs``: timed runs (default: as many as fit in about
    half a second, 5 to 200). Prints the report when ``verbose``; returns it."""
    from . import backends
    from .peaks import peaks as get_peaks
    target = fn.target
    backend = backends.get(target)
    if backend.profile is None:
        able = ", ".join(t for t in backends.targets() if backends.get(t).profile is not None)
        raise NotImplementedError(f"explain() on target {target!r} is not supported yet "
                                  f"(per-kernel timing exists for {able})")
    if feeds is None:
        if batch is None and fn._programs:
            batch = next(reversed(fn._programs))
        feeds = example_feeds(fn, batch)
    if runs is not None and (not isinstance(runs, int) or runs < 1):
        raise ValueError(f"explain: runs must be a positive int, got {runs!r}")
    arrays, batch = fn._feeds(feeds)  # validated (FeedError), hyper-parameters added
    pk = get_peaks(refresh=refresh_peaks)
    store = fn._store
    with store.lock:
        saved = {dt: a.copy() for dt, a in store.arenas.items()}
    try:
        fn(**feeds)  # builds and compiles the program if needed
        prog = fn.program_for(batch)
        if backend.profile == "interpreter":
            timing = _time_numpy(fn, prog, feeds, arrays, batch, runs)
        else:
            timing = _time_cpu(fn, prog, feeds, arrays, runs)
    finally:
        with store.lock:  # every parameter, state and the step counter as they were
            for dt, a in saved.items():
                np.copyto(store.arenas[dt], a)
    feed_bytes = sum(np.asarray(a).nbytes for a in arrays.values())
    rep = _report(fn, target, batch, pk, feed_bytes=feed_bytes, all_cores=backend.all_cores, **timing)
    if verbose:
        print(rep)
    return rep


def _budget_runs(one_s: float, runs: int | None, per_iter: int) -> int:
    if runs is not None:
        return runs
    return int(min(200, max(5, 0.5 / max(per_iter * one_s, 1e-7))))


def _one_call(fn, feeds) -> float:
    """The fastest of three calls (one slow call must not shrink the run count)."""
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        fn(**feeds)
        best = min(best, time.perf_counter() - t0)
    return best


def _time_cpu(fn, prog, feeds, arrays, runs) -> dict:
    store = fn._store
    with store.lock:
        driver, n = profiler(prog, prog.driver_args(arrays, store))
    ticks = np.zeros(n + 5, np.int64)  # n + 3 clock reads + 2 slots of clock scratch
    runs = _budget_runs(_one_call(fn, feeds), runs, 3)
    step_t, call_t, rows = [], [], []
    for _ in range(runs):  # interleaved, so drift (other processes) hits all three alike
        a = time.perf_counter_ns()
        fn(**feeds)
        step_t.append(time.perf_counter_ns() - a)
        with store.lock:
            args = prog.driver_args(arrays, store)
            a = time.perf_counter_ns()
            prog._driver(*args)
            call_t.append(time.perf_counter_ns() - a)
            driver(*args, ticks)
        rows.append(np.diff(ticks[:n + 3]))
    d = np.array(rows, dtype=np.float64) * 1e-9  # (runs, n + 2): prologue, kernels..., tail
    total = (d.sum(axis=1))
    return dict(kernels=prog.plan.kernels, plan=prog.plan, runs=runs,
                times=[d[:, 1 + j] for j in range(n)],
                step_s=float(np.median(step_t)) * 1e-9, driver_call_s=float(np.median(call_t)) * 1e-9,
                native_s=float(np.median(total)), prologue_s=float(np.median(d[:, 0])),
                epilogue_s=float(np.median(d[:, n + 1])), names=[k.name for k in prog.module.kernels],
                notes=[])


def _time_numpy(fn, prog, feeds, arrays, batch, runs) -> dict:
    """The numpy target: the interpreter evaluates the same fusion groups in schedule order
    (the lowered graph of the native targets), each group timed."""
    from .compiler import lower
    from .ir import topo_order
    g, _, plan = lower(fn._program, batch, fn._options.get("passes"))
    store = fn._store
    kernels = plan.kernels
    for i, k in enumerate(kernels):
        if not k.name:
            k.name = f"k{i}"

    def run_once() -> tuple[list[float], float]:
        with store.lock:
            params = {nm: store.view(nm).copy() for nm in store.names()}
        values: dict[int, np.ndarray] = {}
        out = []
        t_all = time.perf_counter()
        for k in kernels:
            t0 = time.perf_counter()
            for n in topo_order(list(k.outputs) + list(k.all_nodes)):
                if id(n) in values:
                    continue
                if n.op == "input":
                    v = arrays[n.name]
                elif n.op in ("param", "state"):
                    v = params[n.name]
                else:
                    v = n.opdef.evaluate([values[id(x)] for x in n.inputs], n.attrs, n)
                values[id(n)] = np.asarray(v)
            out.append(time.perf_counter() - t0)
        return out, time.perf_counter() - t_all

    run_once()
    runs = _budget_runs(_one_call(fn, feeds), runs, 2)
    step_t, rows, totals = [], [], []
    for _ in range(runs):
        a = time.perf_counter()
        fn(**feeds)
        step_t.append(time.perf_counter() - a)
        r, tot = run_once()
        rows.append(r)
        totals.append(tot)
    d = np.array(rows)
    native = float(np.median(totals))
    return dict(kernels=kernels, plan=plan, runs=runs, times=[d[:, j] for j in range(len(kernels))],
                step_s=float(np.median(step_t)), driver_call_s=native, native_s=native,
                prologue_s=0.0, epilogue_s=0.0, names=[k.name for k in kernels],
                notes=["(numpy target: op groups of the native targets' fusion, evaluated by the interpreter "
                       "in schedule order; 'native driver' is their sum)"])


def _kernel_dtype(k) -> np.dtype:
    for n in ([k.matmul] if k.matmul is not None else []) + list(k.outputs) + list(k.nodes):
        if n is not None and n.dtype.kind == "f":
            return n.dtype
    return np.dtype("float32")


def _report(fn, target, batch, pk: Peaks, kernels, plan, runs, times, step_s, driver_call_s, native_s,
            prologue_s, epilogue_s, names, notes, feed_bytes: int = 0, all_cores: bool = False) -> Explanation:
    # the bytes the step touches: the memory roof is the bandwidth of the level that holds them
    store = fn._store
    footprint = plan.peak_bytes + sum(a.nbytes for a in store.arenas.values()) + feed_bytes
    B = pk.stream(parallel=all_cores, footprint=footprint)
    floats = Counter()
    rows = []
    for k, name, t in zip(kernels, names, times):
        dt = _kernel_dtype(k)
        P = pk.gemm(dt)
        fl, by = kernel_flops(k), kernel_bytes(k, plan)
        floats[dt.name] += fl + by
        med = float(np.median(t))
        srcs = list(dict.fromkeys(n.src.rsplit("/", 1)[-1] for n in k.all_nodes))
        inten = fl / by if by else (math.inf if fl else 0.0)
        roof = min(P, inten * B) if fl else 0.0
        bound = "compute" if fl and inten >= P / B else "memory"
        gf = fl / med / 1e9 if med > 0 else 0.0
        gb = by / med / 1e9 if med > 0 else 0.0
        pct = 100.0 * (gf / roof if fl and roof > 0 else gb / B if B > 0 else 0.0)
        floor = max(fl / (P * 1e9) if P else 0.0, by / (B * 1e9) if B else 0.0)
        rows.append(KernelReport(name, k.kind, tuple(k.shape), [n.op for n in k.all_nodes], srcs, fl, by, med,
                                 dt.name, gf, gb, inten, bound, roof, pct, med / step_s if step_s else 0.0,
                                 floor, gemm_flops(k), [float(x) for x in t]))
    main = floats.most_common(1)[0][0] if floats else "float32"
    gemm_floor = sum(k.floor_s for k in rows if k.gemm_flops and k.bound == "compute")
    floor = sum(k.floor_s for k in rows)
    what = type(fn).__name__
    return Explanation(what, target, batch, runs, rows, pk, pk.gemm(main), B, step_s, native_s, driver_call_s,
                       prologue_s, epilogue_s, floor, gemm_floor, floor - gemm_floor, plan.peak_bytes,
                       plan.no_reuse_bytes, main, list(notes), footprint, all_cores)
