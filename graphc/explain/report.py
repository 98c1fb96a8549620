"""The report: per-kernel rows placed on this machine's roofline (graphc/peaks.py), the step's
totals, the printed table and the roofline picture."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..ir import fmt_shape
from ..schedule.cost import gemm_flops, kernel_bytes, kernel_flops

if TYPE_CHECKING:  # (graphc/peak_probes.py, which peaks() imports to measure, imports Numba)
    from ..peaks import Peaks


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


# ---- from timings to the report -------------------------------------------------------------

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
