"""The cpu and parallel targets' runnable program: emit (emitter.py), write to the cache,
load, verify and call the Numba driver."""
from __future__ import annotations

import time
import warnings
import weakref
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import CompileError
from ...ir import Node, fmt_shape
from ...numerics import NUMERICS_STATUS, checked_values, numerics_error
from ..base import Lowered, describe_modules, host_scratch, output_reader
from ..cache import write_program
from .emitter import emit_module


class CpuProgram:
    """A generated module (kernel modules + one driver) for one lowered program, and how
    to call it: ``run`` is one call of the Numba driver."""

    def __init__(self, lowered: Lowered, store, options: Mapping, parallel: bool = False):
        if parallel:
            from ...threads import prepare_parallel
            prepare_parallel()
        program = lowered.program
        self.program, self.batch = program, lowered.batch
        self.target = "parallel" if parallel else "cpu"
        self.graph, self.plan, self.stats = lowered.graph, lowered.plan, lowered.stats
        numerics = bool(options.get("check_numerics"))
        t1 = time.perf_counter()
        store_dtypes = sorted({np.dtype(dt) for dt, _, _ in store.layout.values()}, key=lambda d: d.name)
        feeds = sorted(self.graph.inputs, key=lambda n: n.name)
        self.module = emit_module(self.plan, self.graph, parallel, store.layout, feeds, store_dtypes,
                                  check_finite=options.get("check_finite", True),
                                  numerics=checked_values(program, self.graph) if numerics else None)
        self.path, self.kernel_paths = write_program(self.module.source, self.module.kernel_modules.values())
        self.stats.codegen_s = time.perf_counter() - t1
        self.scratch = host_scratch(self.plan, self.graph)
        self._driver = None
        self._release = None  # finalizer: the modules may be unloaded once this is dropped
        self._compiled = False
        k = len(program.user_names)
        self._readers = [self._reader(n) for n in self.graph.outputs[:k]]
        self._source_outputs = [n for n in self.graph.outputs[:k] if n.op in ("param", "state")]
        self._bound_version = None

    # ---- calling ---------------------------------------------------------------------------
    def _reader(self, n: Node) -> Callable:
        return output_reader(n, self.plan, host_scratch=self.scratch)

    def _load(self, fresh: bool = False):
        from ..cache import load_program, release_program
        mod, self._kernel_modules = load_program(self.path, self.kernel_paths, fresh=fresh,
                                                 retain=self._release is None)
        if self._release is None:
            self._release = weakref.finalize(self, release_program, self.path.stem)
            self._release.atexit = False  # nothing to free when the process ends
        self._driver = mod.step
        self._module = mod
        return mod

    def _bind(self, store) -> None:
        """Precompute the arena arguments (re-bound if the store reallocates)."""
        static = []
        for kind, key in self.module.args:
            if kind == "store":
                static.append(store.arenas[key])
            elif kind == "scratch":
                static.append(self.scratch[key])
        self._static = static
        self._feed_keys = [(key, kind == "scalar") for kind, key in self.module.args if kind in ("feed", "scalar")]
        self._bound_version = (id(store), store.version)

    def run(self, feeds: Mapping[str, np.ndarray], store) -> list[np.ndarray] | None:
        """One native call; returns the user outputs, or None if the driver rejected the
        feeds (labels out of range) before running any kernel."""
        # the store is the unit of locking: programs of other batch sizes, inference
        # functions and host reads share its arenas (and this program's scratch is shared too)
        with store.lock:
            if self._bound_version != (id(store), store.version):
                self._bind(store)
            args = list(self._static)
            for key, scalar in self._feed_keys:
                v = feeds[key]
                args.append(v[()] if scalar and isinstance(v, np.ndarray) else v)
            before = ({n.name: store.view(n.name).copy() for n in self._source_outputs}
                      if self._source_outputs else None)
            status = self._first_call(args) if not self._compiled else self._driver(*args)
            if status:
                if status >= NUMERICS_STATUS:  # check_numerics: a bad value, nothing written
                    raise self._numerics_error(status - NUMERICS_STATUS, feeds, store)
                return None
            return [r(feeds, before) for r in self._readers]

    def driver_args(self, feeds: Mapping[str, np.ndarray], store) -> list:
        """The driver's arguments for ``feeds`` as ``run`` passes them (for graphc/explain.py,
        which calls the driver and its profiling twin directly; hold ``store.lock``)."""
        if self._bound_version != (id(store), store.version):
            self._bind(store)
        args = list(self._static)
        for key, scalar in self._feed_keys:
            v = feeds[key]
            args.append(v[()] if scalar and isinstance(v, np.ndarray) else v)
        return args

    def _numerics_error(self, i: int, feeds, store):
        """The NumericsError for status NUMERICS_STATUS + i: the first non-finite value of the
        kernel that check i covers (the values are still in scratch)."""
        entries, kernel = self.module.numerics[i]
        for label, index, node in entries:
            b = self.plan.buffers[id(node)]
            value = self.scratch[b.dtype][b.offset:b.offset + b.size]
            if not np.isfinite(value).all() or (label, index, node) == entries[-1]:
                return numerics_error(self.program, label, index, node, value, feeds, store, kernel)

    def _first_call(self, args) -> int:
        """Load (verified), compile and run once; one thread of the process at a time, so no
        thread sees another's half-imported modules and Numba's files are checked, loaded
        and recorded as a unit (see backends/cache.py)."""
        from ..cache import LOCK, clear_numba_cache, record_numba_cache, verify_numba_cache
        t0 = time.perf_counter()
        paths = [*self.kernel_paths, self.path]
        with LOCK:
            problems = verify_numba_cache(paths)  # before Numba can load a damaged file
            if problems:
                warnings.warn(f"graphc: Numba cache for {self.path} was unusable (integrity check failed: "
                              f"{'; '.join(problems)}); recompiling", RuntimeWarning, stacklevel=4)
            if any(k.parallel for k in self.module.kernels):
                from ...threads import start_parallel_runtime
                start_parallel_runtime()  # the parfor code linked into the driver needs it
            for attempt in range(2):
                try:
                    if self._driver is None or attempt:
                        self._load(fresh=bool(attempt))
                    # compile explicitly before running: a compile failure leaves params untouched
                    self._driver.compile(tuple(_numba_typeof(a) for a in args))
                    break
                except CompileError:
                    raise
                except Exception as e:  # numba typing/lowering errors, or a corrupted cache entry
                    if attempt == 0 and sum(clear_numba_cache(p) for p in paths):
                        if not problems:
                            warnings.warn(f"graphc: Numba cache for {self.path} was unusable "
                                          f"({type(e).__name__}); recompiling", RuntimeWarning, stacklevel=4)
                        continue
                    raise CompileError(f"Numba failed to compile the generated step {self.path}: "
                                       f"{type(e).__name__}: {e}") from e
            self.stats.numba_s = time.perf_counter() - t0
            self._compiled = True
            status = self._driver(*args)
            record_numba_cache(paths)  # it ran: these files are known good from now on
        from ...logs import enabled, log
        if enabled("cache"):  # GRAPHC_LOG=cache
            log("cache", f"{self.path.name}: first call {self.stats.numba_s:.3f} s, Numba cache {self.cache_info()}")
        return status

    # ---- inspection --------------------------------------------------------------------------
    def describe(self) -> str:
        """The generated modules, each headed by its path, then the compiled graph."""
        return describe_modules(zip(self.kernel_paths, self.module.kernel_modules.values()), self.path,
                                self.module.source, self.graph)

    def kernel_listing(self) -> str:
        lines = [f"{len(self.module.kernels)} kernels ({self.module.functions} distinct functions) "
                 f"from {self.stats.nodes_after} nodes; scratch peak {self.plan.peak_bytes} B "
                 f"(without reuse {self.plan.no_reuse_bytes} B); target {self.target}, batch {self.batch}"]
        for k in self.module.kernels:
            par = " parallel" if k.parallel else ""
            lines.append(f"  {k.name:<4} {k.kind:<11}{par} {fmt_shape(k.shape):<14} {k.function}  "
                         f"[{', '.join(k.ops)}] -> {k.out_bytes} B")
        return "\n".join(lines)

    def cache_info(self) -> dict:
        """Numba cache hits/misses of the driver and kernels (timing-free evidence of reuse)."""
        hits = misses = 0
        if self._driver is None:
            return {"hits": 0, "misses": 0}
        for mod in [*self._kernel_modules, self._module]:
            for name in dir(mod):
                f = getattr(mod, name)
                st = getattr(f, "stats", None)
                if st is not None and hasattr(st, "cache_hits") and getattr(f, "__module__", None) == mod.__name__:
                    hits += sum(st.cache_hits.values())
                    misses += sum(st.cache_misses.values())
        return {"hits": hits, "misses": misses}


def _numba_typeof(a: Any):
    from numba import typeof
    return typeof(a)
