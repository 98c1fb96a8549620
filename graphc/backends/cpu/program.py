"""The cpu and parallel targets' runnable program: emit (emitter.py), write to the cache,
load, verify and call the driver (graphc's own, driver.py, or Numba's where it does not
translate)."""
from __future__ import annotations

import base64
import hashlib
import json
import time
import warnings
import weakref
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import CompileError
from ...ir import fmt_shape
from ...numerics import NUMERICS_STATUS, checked_values, numerics_error
from ..base import CompileStats, Lowered, describe_modules
from ..cache import on_unload
from .entry import EntryDesc
from .driver import RAISED_STATUS
from .lowering import Unsupported


# ---- native kernel entries: bound to symbols the drivers call ----------------------------------

_EXPORTED: dict[str, list] = {}  # symbol -> the cfuncs of its loaded kernel modules (see unexport)


def export(name: str, cf) -> Any:
    """Bind the symbol ``graphc_<name>`` to the address of ``cf`` (a kernel's ``cfunc``
    entry, compiled or loaded from Numba's cache as its module is imported) and return the
    external function a driver calls by that name. Generated code holds only the name (no
    address), so drivers stay cacheable; the symbol must be bound before a driver calling
    it is compiled or loaded, which importing the kernel's module (the driver's first
    lines) does. The same mechanism binds ``graphc_mpi_allreduce`` (allreduce.py)."""
    import llvmlite.binding as ll
    from numba import types
    sym = f"graphc_{name}"
    ll.add_symbol(sym, cf.address)
    _EXPORTED.setdefault(sym, []).append(cf)
    args = [types.int64 if a == types.voidptr else a for a in cf._sig.args]  # the driver passes int64 addresses
    return types.ExternalFunction(sym, cf._sig.return_type(*args))


def unexport(module: str) -> int:
    """Forget the cfuncs that kernel module ``module`` exported (called when it is unloaded,
    backends/cache.py): each holds its Numba code library, which holds the libraries it
    linked (the parfor gufuncs of a parallel kernel) with their LLVM module copies (with the
    target context's entries, cache._forget_numba_functions: ~1 MB per dropped parallel
    Adam step of a small MLP, 0.3 MB for one fused kernel). The machine code a bound symbol
    points into stays: Numba's JIT never removes a module. Returns how many were dropped."""
    n = 0
    for sym in list(_EXPORTED):
        keep = [cf for cf in _EXPORTED[sym] if getattr(cf.__wrapped__, "__module__", None) != module]
        n += len(_EXPORTED[sym]) - len(keep)
        if keep:
            _EXPORTED[sym] = keep
        else:
            del _EXPORTED[sym]
    return n


on_unload(unexport)


class CpuProgram:
    """A generated module (kernel modules + one driver) for one lowered program, and how
    to call it: ``run`` is one call of the driver.

    What a call needs (module names, argument layout, scratch sizes and constants, output
    readers) is a small JSON-able ``layout``; after a program's first successful call it is
    stored as a manifest keyed by the program's structure (``program_key``), so a later
    process starts from it (``from_manifest``) without passes, fusion or code generation.
    The graph, plan and generated text of such a program are rebuilt only when inspected."""

    def __init__(self, lowered: Lowered, store, options: Mapping, parallel: bool = False,
                 key: str | None = None):
        self._setup(lowered.program, lowered.batch, store, options, parallel, lowered.stats, key)
        t1 = time.perf_counter()
        self._graph, self._plan = lowered.graph, lowered.plan
        self._emitted = self._emit(lowered)
        from ..cache import write_program
        path, kernel_paths = write_program(self._emitted.source, self._emitted.kernel_modules.values())
        layout = runtime_layout(self._emitted, lowered, path, kernel_paths)
        self.stats.codegen_s = time.perf_counter() - t1
        self._start(layout)

    @classmethod
    def from_manifest(cls, program, batch, store, options: Mapping, parallel: bool, key: str,
                      layout: dict, relower: Callable[[], Lowered]) -> "CpuProgram":
        """The program of a stored manifest (nothing lowered or generated: ``relower`` does
        that if the graph, plan or source is asked for)."""
        self = cls.__new__(cls)
        t0 = time.perf_counter()
        self._setup(program, batch, store, options, parallel,
                    CompileStats(nodes_before=len(program.graph), nodes_after=layout["nodes"], from_manifest=True),
                    None)
        self._image_key = key  # a manifest without a native image gets one after the first call
        self._relower = relower
        self._start(layout)
        self.stats.codegen_s = time.perf_counter() - t0
        return self

    def _setup(self, program, batch, store, options, parallel, stats, key) -> None:
        if parallel:
            from ...threads import prepare_parallel
            prepare_parallel()
        self.program, self.batch = program, batch
        self.target = "parallel" if parallel else "cpu"
        self.stats = stats
        self._parallel, self._options, self._key = parallel, options, key
        self._image_key = None
        self._layout_of_store = dict(store.layout)  # as emitted (a shared store may grow later)
        self._graph = self._plan = self._emitted = None

    def _emit(self, lowered: Lowered):
        from .emitter import emit_module
        numerics = bool(self._options.get("check_numerics"))
        layout = self._layout_of_store
        store_dtypes = sorted({np.dtype(dt) for dt, _, _ in layout.values()}, key=lambda d: d.name)
        feeds = sorted(lowered.graph.inputs, key=lambda n: n.name)
        return emit_module(lowered.plan, lowered.graph, self._parallel, layout, feeds, store_dtypes,
                           check_finite=self._options.get("check_finite", True),
                           numerics=checked_values(self.program, lowered.graph) if numerics else None)

    def _start(self, layout: dict) -> None:
        """Everything a call needs, from the layout alone."""
        from ..cache import cache_dir
        d = cache_dir()
        self._layout = layout
        self.path = d / f"{layout['driver']}.py"
        self.kernel_paths = [d / f"{k}.py" for k in layout["kernels"]]
        # each kernel module's entry as the emitter described it (signature, operand dtypes,
        # intrinsics): what graphc's compilers take instead of reading them from the text
        self.entries = {m: EntryDesc.from_json(e) for m, e in layout["entries"].items()}
        self._args = [(kind, np.dtype(key) if kind in ("store", "scratch") else key) for kind, key in layout["args"]]
        self._any_parallel = layout["parallel"]
        self.scratch = {np.dtype(dt): np.zeros(max(int(n), 1), dtype=dt) for dt, n in layout["scratch"].items()}
        for dt, off, data in layout["consts"]:
            v = _decode(dt, data)
            self.scratch[np.dtype(dt)][off:off + v.size] = v
        self._readers = [_reader(spec, self.scratch) for spec in layout["outputs"]]
        self._source_outputs = layout["sources"]
        self._driver = None
        self._release = None  # finalizer: the modules may be unloaded once this is dropped
        self._compiled = False
        self._bound_version = None
        self.native = False  # the driver compiled by graphc (driver.py; else by Numba)
        self.natively_checked: set = set()  # feeds whose dtype/shape/layout that driver checks
        self._raised: list[str] = []
        self._kernel_modules: list = []
        self._module = None  # the Numba driver's module
        self._objects: dict = {}  # kernel module -> (symbol, native name, object code) compiled by graphc
        self._translated = (0, 0)  # kernels graphc compiled in this call, and found compiled already

    # ---- what only inspection needs: rebuilt on demand for a program from a manifest -------------
    def _materialize(self) -> None:
        low = self._relower()
        self.stats.passes_s, self.stats.nodes_after = low.stats.passes_s, low.stats.nodes_after
        emitted = self._emit(low)
        from ..cache import module_name
        if module_name(emitted.source) != self.path.stem:  # pragma: no cover - a stale manifest
            warnings.warn(f"graphc: the program manifest of {self.path.name} does not match the program as "
                          f"compiled now (driver {module_name(emitted.source)}); inspection shows the latter",
                          RuntimeWarning, stacklevel=3)
        self._graph, self._plan, self._emitted = low.graph, low.plan, emitted

    @property
    def graph(self):
        """The compiled graph (specialized and optimized)."""
        if self._graph is None:
            self._materialize()
        return self._graph

    @property
    def plan(self):
        """The buffer plan (kernels in order, a Buffer per node)."""
        if self._plan is None:
            self._materialize()
        return self._plan

    @property
    def module(self):
        """The generated code (emitter.Module): driver text, kernel modules, kernel infos."""
        if self._emitted is None:
            self._materialize()
        return self._emitted

    # ---- calling ---------------------------------------------------------------------------
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
        for kind, key in self._args:
            if kind == "store":
                static.append(store.arenas[key])
            elif kind == "scratch":
                static.append(self.scratch[key])
        self._static = static
        self._feed_keys = [(key, kind == "scalar") for kind, key in self._args if kind in ("feed", "scalar")]
        self._feed_names = tuple(key for key, _ in self._feed_keys)
        # positions of rank-0 feeds in the argument list: a 0-d array is passed as its value
        self._scalar_pos = tuple(len(static) + i for i, (_, scalar) in enumerate(self._feed_keys) if scalar)
        self._bound_version = (id(store), store.version)

    def bound_call(self, store, optimizer, specs, user_names, options):
        """The driver call for feeds shaped as ``specs``, generated once (bound.py), or None
        where this program needs ``run`` (check_numerics, params read as outputs)."""
        from .bound import BoundCall
        return BoundCall.build(self, store, optimizer, specs, user_names, options)

    def run(self, feeds: Mapping[str, np.ndarray], store) -> list[np.ndarray] | None:
        """One native call; returns the user outputs, or None if the driver rejected the
        feeds (labels out of range) before running any kernel."""
        # the store is the unit of locking: programs of other batch sizes, inference
        # functions and host reads share its arenas (and this program's scratch is shared too)
        with store.lock:
            if self._bound_version != (id(store), store.version):
                self._bind(store)
            args = [*self._static, *map(feeds.__getitem__, self._feed_names)]
            for i in self._scalar_pos:
                if type(args[i]) is np.ndarray:
                    args[i] = args[i][()]
            before = ({name: store.view(name).copy() for name in self._source_outputs}
                      if self._source_outputs else None)
            status = self._first_call(args) if not self._compiled else self._driver(*args)
            if status:
                if status >= RAISED_STATUS:
                    self.raise_status(status)
                if status >= NUMERICS_STATUS:  # check_numerics: a bad value, nothing written
                    raise self._numerics_error(status - NUMERICS_STATUS, feeds, store)
                return None
            return [r(feeds, before) for r in self._readers]

    def native_kinds(self) -> tuple[list[str], list]:
        """The native driver's ``kinds`` and ``expect`` (driver.native_driver) for this
        program's arguments: array feeds' dtype, shape and contiguity are checked by the
        driver itself."""
        from .driver import expect_of
        kinds, expect = [], []
        shapes = self._layout.get("feeds", {})
        for kind, key in self._args:
            kinds.append(self._layout.get("scalars", {}).get(key, "?") if kind == "scalar" else "p")
            spec = shapes.get(key) if kind == "feed" else None
            expect.append(expect_of(spec[0], spec[1]) if spec else None)
        return kinds, expect

    def entry_names(self) -> dict:
        """The kernel entries the driver calls, by name (driver.native_driver's ``entries``)."""
        return {e.name: e for e in self.entries.values()}

    def native_twin(self, text: str):
        """Driver text ``text`` with one more parameter (an int64 array: graphc/explain's
        profiling twin, which writes its clock reads there) compiled by graphc's translator
        over this program's kernel entries; None where it is not translated."""
        from .driver import native_driver
        kinds, expect = self.native_kinds()
        try:
            return native_driver(text, [*kinds, "p"], self.entry_names(), [*expect, None])[0]
        except Unsupported:
            return None

    def _native_driver(self) -> bool:
        """Compile the driver text with graphc's own translator (driver.py) instead of Numba;
        False (the Numba driver is used) where it meets a form it does not translate."""
        from . import driver
        if not driver.enabled():
            return False
        kinds, expect = self.native_kinds()
        try:
            self._driver, self._raised = driver.native_driver(self.path.read_text(), kinds, self.entry_names(), expect)
        except Unsupported as e:
            from ...logs import enabled, log
            if enabled("cache"):
                log("cache", f"{self.path.name}: Numba driver ({e})")
            return False
        except Exception as e:  # noqa: BLE001 - a translator or LLVM error: graphc's bug, not the user's
            warnings.warn(f"graphc: the native driver of {self.path.name} could not be compiled "
                          f"({type(e).__name__}: {e}); using Numba's driver", RuntimeWarning, stacklevel=5)
            return False
        self.native = True
        self.natively_checked = {key for (kind, key), e in zip(self._args, expect) if e is not None}
        return True

    def _from_kernels(self) -> bool:
        """Compile the kernels with graphc's own translator (kernels.py) into graphc's JIT;
        a kernel it does not translate is imported through Numba (which compiles or loads
        it), then the native driver is compiled over them. False where nothing was
        translated or the driver needs Numba: the caller compiles everything through Numba."""
        from . import driver, image, kernels
        if self._any_parallel or not driver.enabled() or not kernels.enabled():
            return False
        from ...logs import enabled, log
        compiled, through_numba, fresh = {}, [], 0
        for p in self.kernel_paths:
            try:
                compiled[p.stem] = kernels.compile_kernel(p.stem, p.read_text(), self.entries[p.stem])
                fresh += compiled[p.stem][3]
            except Unsupported as e:
                if enabled("cache"):
                    log("cache", f"{p.name}: compiled by Numba ({e})")
                through_numba.append(p)
            except Exception as e:  # noqa: BLE001 - graphc's translator or LLVM failed: Numba compiles it
                warnings.warn(f"graphc: graphc's compiler failed on {p.name} ({type(e).__name__}: {e}); "
                              f"compiling it with Numba", RuntimeWarning, stacklevel=6)
                through_numba.append(p)
        if not compiled:
            return False
        why = image.load_images([(sym, nn, hashlib.sha256(obj).hexdigest(), obj)
                                  for sym, nn, obj, _ in compiled.values()])
        if why is not None:
            warnings.warn(f"graphc: graphc's compiled kernels could not be loaded ({why}); compiling them with "
                          f"Numba", RuntimeWarning, stacklevel=6)
            return False
        from ..cache import load_module
        mods = [load_module(p) for p in through_numba]  # their ``export`` binds their symbols
        if not self._native_driver():
            return False
        self._kernel_modules, self._module = mods, None
        self._objects = {stem: got[:3] for stem, got in compiled.items()}
        self._translated = (fresh, len(compiled) - fresh)
        return True

    def _write_images(self) -> None:
        """Store each kernel entry's object code for later processes (image.py, "the native
        image"); its digest goes into the manifest. Only for a native driver over cpu
        kernels; nothing is stored if any kernel has no image."""
        from . import image
        if not self.native or self._any_parallel or not self.kernel_paths:
            return
        from ...atomic import write_atomic
        from ..cache import cache_dir
        try:
            tag = image.host_tag()
            images = []
            mods = {m.__name__: m for m in self._kernel_modules}
            for kp in self.kernel_paths:
                got = self._objects.get(kp.stem) or (image.image_of(mods[kp.stem]) if kp.stem in mods else None)
                if got is None:
                    return
                sym, native_name, obj = got
                if obj[:4] != b"\x7fELF":  # the loader reads ELF symbol tables only (not macOS, Windows)
                    return
                digest = hashlib.sha256(obj).hexdigest()
                # named by its digest too: two processes compiling one program write different
                # object code (Numba's symbol names count the functions a process compiled), and
                # each manifest must find the file it names
                path = cache_dir() / _image_name(kp.stem, tag, digest)
                if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                    write_atomic(path, lambda f, obj=obj: f.write(obj))
                images.append([kp.stem, sym, native_name, digest])
        except OSError:  # an unwritable cache: later processes compile again
            return
        self._layout = dict(self._layout, images=images, host=tag)

    def _from_images(self) -> bool:
        """Start from the native image named in the manifest: kernels' object code into
        graphc's JIT, the native driver over them; no Numba. False (and nothing changed) if
        there is none or it cannot be used: the caller starts through Numba."""
        from . import driver, image
        images = self._layout.get("images")
        if not images or self._any_parallel or not driver.enabled():
            return False
        from ..cache import cache_dir
        d = cache_dir()
        try:
            tag = image.host_tag()
            if self._layout.get("host") != tag:  # written on another machine sharing this cache
                why = "another host's"
            else:
                loaded = [(sym, nn, digest, (d / _image_name(m, tag, digest)).read_bytes())
                          for m, sym, nn, digest in images]
                why = image.load_images(loaded)
        except (OSError, ValueError, TypeError) as e:
            why = f"unreadable ({type(e).__name__}: {e})"
        if why is not None:
            # start through Numba; the first call writes the image again (see _first_call)
            self._layout = {k: v for k, v in self._layout.items() if k not in ("images", "host")}
            if why != "another host's":
                warnings.warn(f"graphc: the native image of {self.path.name} was unusable ({why}); "
                              f"compiling its kernels again and rebuilding it", RuntimeWarning, stacklevel=5)
            return False
        if not self._native_driver():
            return False
        self._kernel_modules, self._module = [], None
        self.stats.from_image = True
        return True

    def raise_status(self, status: int) -> None:
        """Raise what a kernel of the native driver would have raised (status RAISED_STATUS + i)."""
        raise ValueError(self._raised[status - RAISED_STATUS])

    def driver_args(self, feeds: Mapping[str, np.ndarray], store) -> list:
        """The driver's arguments for ``feeds`` as ``run`` passes them (for graphc/explain/,
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
            if not self._compiled and self._from_images():
                self.stats.numba_s = time.perf_counter() - t0
                self._compiled = True
                from ...logs import enabled, log
                if enabled("cache"):  # GRAPHC_LOG=cache
                    log("cache", f"{self.path.name}: started from its native image in {self.stats.numba_s:.3f} s "
                                 f"({len(self._layout['images'])} kernel entries, no Numba)")
                return self._driver(*args)
            problems = verify_numba_cache(paths)  # before Numba can load a damaged file
            if problems:
                warnings.warn(f"graphc: Numba cache for {self.path} was unusable (integrity check failed: "
                              f"{'; '.join(problems)}); recompiling", RuntimeWarning, stacklevel=4)
            if self._any_parallel:
                from ...threads import start_parallel_runtime
                start_parallel_runtime()  # the parallel kernels' parfor code needs it
            for attempt in range(2):
                try:
                    # graphc's own kernel compiler first (kernels.py), Numba for what it does not translate
                    if attempt == 0 and self._from_kernels():
                        break
                    # importing the kernel modules compiles (or loads) their native entries
                    if self._driver is None or attempt:
                        self._load(fresh=bool(attempt))
                    # compile explicitly before running: a compile failure leaves params untouched
                    if not self._native_driver():
                        self._driver.compile(tuple(_numba_typeof(a) for a in args))
                    break
                except Exception as e:  # numba typing/lowering errors, or a corrupted cache entry
                    if isinstance(e, CompileError) and e.__cause__ is None:  # graphc's own, not a module's import
                        raise
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
            # a later process may start from here (see from_manifest): a new program's manifest, or
            # one that was stored without a native image (or with an unusable one) gets one now
            imageless = self._image_key is not None and self.native and "images" not in self._layout
            key = self._key if self._key is not None else self._image_key if imageless else None
            if key is not None:
                from ..cache import write_program_manifest
                self._write_images()
                if self._key is not None or "images" in self._layout:
                    write_program_manifest(key, self._layout)
            self._key = self._image_key = None
        from ...logs import enabled, log
        if enabled("cache"):  # GRAPHC_LOG=cache
            log("cache", f"{self.path.name}: first call {self.stats.numba_s:.3f} s, Numba cache {self.cache_info()}")
        return status

    # ---- inspection --------------------------------------------------------------------------
    def describe(self) -> str:
        """The generated modules, each headed by its path, then the compiled graph."""
        return describe_modules(zip(self.kernel_paths, self.module.kernel_modules.values()), self.path,
                                self.module.annotated, self.graph)

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
        """Cache hits/misses of the driver and kernels (timing-free evidence of reuse): Numba's,
        and graphc's compiled kernels (a miss when compiled by this program)."""
        if self.stats.from_image:  # every kernel loaded from its native image: hits, no compile
            return {"hits": len(self._layout.get("images", ())), "misses": 0}
        if self._driver is None:
            return {"hits": 0, "misses": 0}
        misses, hits = self._translated  # kernels compiled by graphc (kernels.py)
        for mod in self._kernel_modules:  # a native entry compiles once, when its module is imported
            cf = getattr(mod, "_cfunc", None)
            if cf is not None:
                hits += cf.cache_hits
                misses += not cf.cache_hits
        for mod in [*self._kernel_modules, *([self._module] if self._module is not None else [])]:
            for name in dir(mod):
                f = getattr(mod, name)
                st = getattr(f, "stats", None)
                if st is not None and hasattr(st, "cache_hits") and getattr(f, "__module__", None) == mod.__name__:
                    hits += sum(st.cache_hits.values())
                    misses += sum(st.cache_misses.values())
        return {"hits": hits, "misses": misses}


# ---- the layout a call needs, and the manifest key ------------------------------------------------

def _image_name(module: str, host: str, digest: str) -> str:
    """A kernel module's object code for one host (image.py, "the native image")."""
    return f"{module}-{host}-{digest[:16]}.o"


def runtime_layout(module, lowered: Lowered, path, kernel_paths) -> dict:
    """What ``CpuProgram._start`` needs, as JSON-able values (the manifest body)."""
    plan, graph = lowered.plan, lowered.graph
    consts = [[np.dtype(b.dtype).str, b.offset, _encode(b.value, b.dtype)]
              for n in graph.nodes if (b := plan.buffers.get(id(n))) is not None and b.kind == "const"]
    consts += [[np.dtype(b.dtype).str, b.offset, _encode(b.value, b.dtype)] for b in plan.loop_consts]
    k = len(lowered.program.user_names)
    inputs = {n.name: n for n in graph.inputs}
    # what the native driver unboxes each rank-0 feed as, and each array feed's dtype and shape
    unbox = {"b": "b", "i": "i", "u": "i"}
    scalars = {key: unbox.get(np.dtype(inputs[key].dtype).kind, "d")
               for kind, key in module.args if kind == "scalar"}
    feeds = {key: [np.dtype(inputs[key].dtype).str, [int(d) for d in inputs[key].shape]]
             for kind, key in module.args if kind == "feed" and key in inputs
             and all(isinstance(d, (int, np.integer)) for d in inputs[key].shape)}
    outputs = [_reader_spec(n, plan) for n in graph.outputs[:k]]
    return {"driver": path.stem, "kernels": [p.stem for p in kernel_paths],
            "entries": {m: e.to_json() for m, e in module.entries.items()},
            "args": [[kind, np.dtype(key).str if kind in ("store", "scratch") else key] for kind, key in module.args],
            "scratch": {np.dtype(dt).str: int(n) for dt, n in plan.arena_sizes.items()},
            "consts": consts, "outputs": outputs, "scalars": scalars, "feeds": feeds,
            "sources": [n.name for n in graph.outputs[:k] if n.op in ("param", "state")],
            "parallel": any(info.parallel for info in module.kernels), "nodes": len(graph)}


def _encode(value, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(value, dtype=dtype).tobytes()).decode()


def _decode(dtype: str, data: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype))


def _reader_spec(n, plan) -> list:
    """How to read user output ``n`` after a run (see ``_reader``)."""
    b = plan.buffers[id(n)]
    shape = list(n.shape)
    if b.kind == "scratch":
        return ["scratch", np.dtype(b.dtype).str, b.offset, b.size, shape]
    if b.kind in ("literal", "const"):
        return ["value", np.dtype(n.dtype).str, shape, _encode(np.broadcast_to(b.value, n.shape), n.dtype)]
    if b.kind in ("feed", "store"):
        return [b.kind, n.name]
    raise AssertionError(b.kind)


def _reader(spec: list, scratch: dict) -> Callable:
    """``reader(feeds, before)`` -> a user output's value after a run: scratch values read in
    place and copied, feeds and literals as arrays, params/state read as outputs from
    ``before`` (their values before the update)."""
    kind = spec[0]
    if kind == "scratch":
        _, dt, off, size, shape = spec
        arena, shape = scratch[np.dtype(dt)], tuple(shape)
        if shape == ():
            return lambda feeds, before: np.array(arena[off])
        return lambda feeds, before: arena[off:off + size].reshape(shape).copy()
    if kind == "value":
        _, dt, shape, data = spec
        v = _decode(dt, data).reshape(tuple(shape))
        return lambda feeds, before: v.copy()
    name = spec[1]
    if kind == "feed":
        return lambda feeds, before: np.array(feeds[name])
    return lambda feeds, before: before[name]


def program_key(program, batch, target: str, store, options: Mapping) -> str | None:
    """The manifest key of a program: its graph's structural fingerprint (no file:line), its
    outputs and updates, the batch size, target, compile options, the store layout the driver
    addresses, and the versions (``cache.code_stamp``). None when an option is not plain
    data (passes given as functions): such programs are always compiled in full."""
    passes = options.get("passes")
    if passes is not None and not all(isinstance(x, str) for x in passes):
        return None
    from ..cache import code_stamp
    parts = [code_stamp(), target, batch, program.graph.fingerprint(), list(program.user_names),
             list(program.updates), sorted(program.hypers.items()),
             {k: options.get(k) for k in ("check_finite", "check_numerics")}, list(passes) if passes else None,
             sorted((name, np.dtype(dt).str, off, list(shape)) for name, (dt, off, shape) in store.layout.items())]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def build(lowered: Lowered, store, options: Mapping, parallel: bool) -> CpuProgram:
    """The backend's build: generate, write, and remember the manifest key."""
    key = program_key(lowered.program, lowered.batch, "parallel" if parallel else "cpu", store, options)
    return CpuProgram(lowered, store, options, parallel=parallel, key=key)


def warm(program, batch, store, options: Mapping, parallel: bool,
         relower: Callable[[], Lowered]) -> CpuProgram | None:
    """The program from its manifest, if one is stored and every module it names is intact;
    None otherwise (the caller compiles in full, which rewrites what was missing)."""
    from ..cache import cache_dir, intact_modules, read_program_manifest
    from ...logs import enabled
    if enabled("passes") or enabled("fusion"):  # GRAPHC_LOG asks what the passes and fusion decide
        return None
    key = program_key(program, batch, "parallel" if parallel else "cpu", store, options)
    if key is None:
        return None
    layout = read_program_manifest(key)
    if layout is None:
        return None
    d = cache_dir()
    try:
        if not intact_modules([d / f"{m}.py" for m in [*layout["kernels"], layout["driver"]]]):
            return None
        return CpuProgram.from_manifest(program, batch, store, options, parallel, key, layout, relower)
    except (KeyError, TypeError, ValueError, IndexError) as e:  # a manifest of another shape
        warnings.warn(f"graphc: program manifest {key[:48]}.json is unusable ({type(e).__name__}: {e}); "
                      f"compiling the program again", RuntimeWarning, stacklevel=3)
        return None


def _numba_typeof(a: Any):
    from numba import typeof
    return typeof(a)
