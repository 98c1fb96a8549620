"""The profiler: the profiling twin of a cpu driver and the timing harness.

The twin is the same generated driver source with a monotonic clock read (``clock_gettime``,
~20 ns) at its entry, after the feed checks, after each kernel call and before its return,
calling the same compiled kernels. Where the program's driver is graphc's own, graphc's
driver translator translates the twin too (no Numba); where it is Numba's, Numba compiles it
(the clock is clock.py's). It is built on the first ``explain()`` of a program; the normal
driver and its cache entry are untouched. The numpy target is timed per op group (the same
fusion groups, evaluated by the interpreter).
"""
from __future__ import annotations

import math
import re
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import GraphcError


def tick_name() -> str:
    """Which clock of clock.py the Numba twin imports (imports Numba)."""
    from .clock import tick_name as name
    return name()


_PROFILERS: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()
# Why the twin reads the driver's text: the twin must be the driver itself plus clock reads,
# compiled by whichever compiler built the driver (graphc's translator or Numba), from the
# exact text ``step.source()`` shows; the emitter keeps no line map of that text. The kernel
# calls are located from the structured list (prog.module.kernels: name and generated
# function, in schedule order); only the end of the feed checks is found by this pattern (the
# first buffer binding or kernel section comment). tests/test_explain.py checks a real driver
# (test_the_twin_of_a_real_driver_has_its_clock_reads_where_they_belong): a format drift fails there.
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
    head = lines[:i_imp + 1] + [f"from graphc.explain.clock import {tick} as _tick  # profiling twin; clock {_clock_hash()}"]
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
            if functions[j][1].startswith("loop x"):  # a scan: timed whole; its body's kernels
                body = functions[j][0] + "_"           # (listed after it) get no time of their own
                while j + 1 < n and functions[j + 1][0].startswith(body):
                    j += 1
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
    text = Path(__file__).with_name("clock.py").read_text()  # (its source, without importing Numba)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _is_call(line: str, name: str, fn: str) -> bool:
    s = line.strip()
    if fn.startswith("loop x"):  # a scan's loop (cpu emitter's scan_loop): the line after it
        return s == f"# {name}: end of {fn}"
    return s.startswith(fn + "(") or s.startswith(f"bad_{name} = {fn}(")


def profiler(prog, args: list) -> tuple[Callable, int]:
    """The profiling twin of a cpu/parallel program's driver, built once per program and
    called once with ``args`` (that call compiles it, or loads it from the compile cache:
    the twin is a generated module like any other, named by the hash of its text).
    Returns ``(twin(*args, ticks), number of kernels)``."""
    hit = _PROFILERS.get(prog)
    if hit is not None:
        return hit
    from ..backends.cache import LOCK, load_module, record_numba_cache, verify_numba_cache, write_module
    infos = prog.module.kernels
    n = len(infos)
    if getattr(prog, "native", False):  # graphc's own driver: its twin calls the very kernels that run
        text = profile_source(prog.module.source, [(k.name, k.function) for k in infos], "clock_tick")
        twin = prog.native_twin(text)
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


# ---- timing --------------------------------------------------------------------------------------

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
    # a scan's loop is timed whole: its body's kernels (listed after it, no time of their own)
    # are not the plan's kernels
    outer = {k.name for k in prog.plan.kernels}
    keep = [j for j, info in enumerate(prog.module.kernels) if info.name in outer]
    return dict(kernels=prog.plan.kernels, plan=prog.plan, runs=runs,
                times=[d[:, 1 + j] for j in keep],
                step_s=float(np.median(step_t)) * 1e-9, driver_call_s=float(np.median(call_t)) * 1e-9,
                native_s=float(np.median(total)), prologue_s=float(np.median(d[:, 0])),
                epilogue_s=float(np.median(d[:, n + 1])), names=[prog.module.kernels[j].name for j in keep],
                notes=[])


def _time_numpy(fn, prog, feeds, arrays, batch, runs) -> dict:
    """The numpy target: the interpreter evaluates the same fusion groups in schedule order
    (the lowered graph of the native targets), each group timed."""
    from ..compiler import lower
    from ..ir import topo_order
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
