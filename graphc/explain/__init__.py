"""``step.explain()``: where every microsecond of a step goes, against what the machine allows.

graphc knows every kernel's FLOPs and bytes at compile time (the fusion's Kernel
descriptions), so it can place each one on the roofline of this machine (graphc/peaks.py):

- ``cost.py``, the cost model: FLOPs from one rule per kernel kind (``COSTS``; a new kind is
  one entry), bytes moved from what each kernel reads and writes.
- ``profile.py``, the profiler: times come from a *profiling twin* of the driver (targets
  whose backend offers one, ``Backend.profile == "twin"``: cpu, parallel): the same generated
  source calling the same compiled kernels, with a monotonic clock read (``clock_gettime``,
  ~20 ns) after each kernel call. It is built on the first ``explain()`` of a program; the
  normal driver and its cache entry are untouched. Where the driver is graphc's, so is the
  twin (no Numba); ``clock.py`` holds the clock a Numba-compiled twin calls. The numpy
  target is timed per op group (the same fusion groups, evaluated by the interpreter); cuda
  says it is not supported yet.
- ``report.py``, the report: rows, totals, the printed table and the roofline picture.

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

from typing import Any, Mapping

import numpy as np

from ..errors import GraphcError
from ..schedule.cost import COSTS, FREE_OPS, gemm_flops, kernel_bytes, kernel_flops, matmul_flops
from .profile import _PROFILERS, _time_cpu, _time_numpy, profile_source, profiler
from .report import Explanation, KernelReport, _report, format_report, plot_roofline, summarize_ops

__all__ = ["explain", "Explanation", "KernelReport", "example_feeds", "COSTS", "FREE_OPS", "kernel_flops",
           "kernel_bytes", "gemm_flops", "matmul_flops", "summarize_ops", "format_report", "plot_roofline",
           "profile_source", "profiler"]


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
    from .. import backends
    from ..peaks import peaks as get_peaks
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
