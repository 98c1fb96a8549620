"""The on-disk cache of generated modules, and loading them.

A module's file name is a hash of its full source, so a file can never be stale: changed
code is a different file (Numba does not notice edits to callees in other files, and this
sidesteps that). Files are written atomically (temp file + rename), so two processes
compiling the same program at once both end up importing one complete file; an entry whose
content does not match its name is treated as a miss and rewritten, with a warning.
Numba's own ``cache=True`` files land in ``__pycache__`` beside each module.

Numba loads its cache files without checking them: flipped bytes in an ``.nbc`` run as
machine code, two swapped files run one function's code in place of another's. So graphc
records the SHA-256 of each Numba file of a module once a program using it has run (a
manifest per module, beside the files) and checks them before a program loads; a file
that does not match is cleared with its module's other files and rebuilt, with one
RuntimeWarning. A file no manifest lists (a run killed between Numba's write and the
first call's return, a cache from an older graphc) is removed, not trusted, and rebuilt.

Loading is process-wide serialized (``LOCK``): a second thread never sees a module that
is still executing, and the first call's verify/compile/record happen as one unit.
"""
from __future__ import annotations

import atexit
import collections
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable

from ..atomic import write_atomic
from ..errors import CompileError
from ..logs import log

# Imports of generated modules, first calls (verify, compile, first run, record) and
# releases: one at a time per process. Re-entrant: a driver's import imports its kernels.
LOCK = threading.RLock()

# ---- the directory -------------------------------------------------------------------------

_resolved: dict[str, Path] = {}
_private: list[Path] = []


def configured_cache_dir() -> Path:
    """``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else ``~/.cache/graphc``."""
    d = os.environ.get("GRAPHC_CACHE_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "graphc")
    return Path(d)


def cache_dir() -> Path:
    """The configured cache directory (see ``configured_cache_dir``), created if needed.

    If it cannot be used (it is a file, lies under a file, or cannot be written), graphc
    falls back to a private temporary directory for the rest of the process, removed at
    exit, with one RuntimeWarning: compiling still works, nothing is kept across runs.
    """
    d = configured_cache_dir()
    hit = _resolved.get(str(d))
    if hit is not None:
        try:
            hit.mkdir(parents=True, exist_ok=True)  # (again, if it was removed since)
            return hit
        except OSError:
            pass
    with LOCK:
        prev = _resolved.get(str(d))
        if prev is not None and prev != d:  # fell back already (another thread, or earlier): warned once
            return prev
        try:
            d.mkdir(parents=True, exist_ok=True)
            # write a file: the one test that also holds for root and for read-only mounts
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=d)
            os.close(fd)
            os.unlink(probe)
            hit = d
        except OSError as e:
            hit = _private_dir()
            warnings.warn(f"graphc: the cache directory {d} cannot be used ({type(e).__name__}: {e}); "
                          f"using a private temporary cache {hit} for this process (compiled code is "
                          f"not kept for later runs; set GRAPHC_CACHE_DIR to a writable directory)",
                          RuntimeWarning, stacklevel=2)
        _resolved[str(d)] = hit
        return hit


def _private_dir() -> Path:
    if not _private:
        p = Path(tempfile.mkdtemp(prefix="graphc-cache-"))
        atexit.register(shutil.rmtree, p, True)
        _private.append(p)
    return _private[0]


def module_name(source: str) -> str:
    return "graphc_" + hashlib.sha256(source.encode()).hexdigest()[:32]


def write_module(source: str) -> Path:
    """Write ``source`` under its hash name (if not already there intact); return the path."""
    d = cache_dir()
    path = d / f"{module_name(source)}.py"
    try:
        existing = path.read_text()
    except (OSError, UnicodeDecodeError):
        existing = None
    if existing == source:
        log("cache", f"hit  {path.name}")  # GRAPHC_LOG=cache
        return path
    if existing is not None:
        warnings.warn(f"graphc: cache entry {path} was corrupted; rebuilding it", RuntimeWarning, stacklevel=3)
        clear_numba_cache(path)
    log("cache", f"miss {path.name}: written ({len(source)} chars)")
    write_atomic(path, lambda f: f.write(source), binary=False)
    return path


def write_program(driver: str, kernels) -> tuple[Path, list[Path]]:
    """Write a program's kernel modules (sources, in order) and its driver; return the
    driver's path and the kernels' paths (as ``load_program`` takes them)."""
    kernel_paths = [write_module(src) for src in kernels]
    return write_module(driver), kernel_paths


def clear_numba_cache(path: Path) -> int:
    """Remove Numba's cache files of one generated module (and graphc's manifest of them);
    returns how many Numba files."""
    n = 0
    pyc = path.parent / "__pycache__"
    if pyc.is_dir():
        for f in pyc.glob(path.stem + ".*"):
            try:
                f.unlink()
                n += f.suffix in (".nbi", ".nbc")
            except OSError:
                pass
    return n


def clear() -> None:
    """Delete the whole cache directory."""
    shutil.rmtree(cache_dir(), ignore_errors=True)


# ---- program manifests: a warm start without passes, fusion or code generation -------------------

MANIFEST_FORMAT = 1
_stamp: list[str] = []


@functools.lru_cache(maxsize=None)
def numba_version() -> str:
    """Numba's version, read from its package metadata: neither a warm start from a native
    image nor a cold start whose kernels graphc compiles itself imports Numba (~0.15 s)."""
    import importlib.metadata
    try:
        return importlib.metadata.version("numba")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a dependency
        return "?"


def code_stamp() -> str:
    """graphc's, Numba's, NumPy's and Python's versions plus the size and mtime of every
    graphc source file: a program manifest written by other compiler code is never used
    (one stat per file, once per process)."""
    if not _stamp:
        import numpy
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        from .. import __version__
        h.update(f"{__version__} {numba_version()} {numpy.__version__} {sys.version_info[:3]}".encode())
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for fn in sorted(filenames):
                if fn.endswith(".py"):
                    st = os.stat(os.path.join(dirpath, fn))
                    h.update(f"{os.path.relpath(os.path.join(dirpath, fn), root)} {st.st_size} {st.st_mtime_ns};".encode())
        _stamp.append(h.hexdigest())
    return _stamp[0]


def _manifest_file(key: str) -> Path:
    return cache_dir() / "programs" / f"{key[:48]}.json"


def read_program_manifest(key: str) -> dict | None:
    """The manifest body stored under ``key`` (see ``write_program_manifest``), or None if
    there is none; a damaged one (unparsable, wrong key, digest mismatch) is None too, with
    a RuntimeWarning: the program is then compiled in full and the manifest rewritten."""
    path = _manifest_file(key)
    try:
        text = path.read_text()
    except FileNotFoundError:
        log("cache", f"miss manifest {path.name}")
        return None
    except (OSError, UnicodeDecodeError):
        text = None
    try:
        m = json.loads(text)
        body = m["body"]
        ok = (m["format"] == MANIFEST_FORMAT and m["key"] == key
              and m["digest"] == hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest())
    except (TypeError, ValueError, KeyError):
        ok = False
    if not ok:
        warnings.warn(f"graphc: program manifest {path} was damaged; compiling the program again",
                      RuntimeWarning, stacklevel=4)
        return None
    log("cache", f"hit  manifest {path.name}")
    return body


def write_program_manifest(key: str, body: dict) -> None:
    """Store what running a compiled program needs (module names, argument layout, scratch
    sizes and constants, output readers) under ``key``: atomically, with a digest of the
    body; a cache that cannot be written is ignored (the next start compiles in full)."""
    text = json.dumps({"format": MANIFEST_FORMAT, "key": key, "body": body,
                       "digest": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()})
    path = _manifest_file(key)
    try:
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, lambda f: f.write(text), binary=False)
    except OSError:
        return
    log("cache", f"wrote manifest {path.name}")


def intact_modules(paths) -> bool:
    """Whether every generated module at ``paths`` exists with the text its name is the hash of."""
    for path in paths:
        try:
            if module_name(path.read_text()) != path.stem:
                return False
        except (OSError, UnicodeDecodeError):
            return False
    return True


# ---- integrity of Numba's files ----------------------------------------------------------------

_KEEP_DIGESTS = 4  # per file: two processes compiling one module at once write different bytes


def _numba_files(path: Path) -> list[Path]:
    pyc = path.parent / "__pycache__"
    try:
        return sorted(f for f in pyc.glob(path.stem + ".*") if f.suffix in (".nbi", ".nbc"))
    except OSError:
        return []


def _manifest_path(path: Path) -> Path:
    return path.parent / "__pycache__" / f"{path.stem}.graphc-manifest.json"


def _read_manifest(path: Path) -> dict | None:
    """{file name: [known-good sha256, ...]}; {} if there is none, None if it is unreadable."""
    try:
        text = _manifest_path(path).read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError):
        return None
    try:
        m = json.loads(text)
        files = m["files"]
        if isinstance(files, dict) and all(isinstance(v, list) for v in files.values()):
            return files
    except (ValueError, KeyError, TypeError):
        pass
    return None


_seen: dict[str, tuple] = {}  # file -> (size, mtime_ns, digest) hashed in this first call (LOCK)


def _digest(f: Path, reuse: bool = False) -> str | None:
    """SHA-256 of a file; ``reuse``: the digest hashed earlier in this process if its size
    and mtime are unchanged (record right after verify: a warm start hashes once)."""
    try:
        st = f.stat()
        key = (st.st_size, st.st_mtime_ns)
        hit = _seen.get(str(f))
        if reuse and hit is not None and hit[:2] == key:
            return hit[2]
        d = hashlib.sha256(f.read_bytes()).hexdigest()
    except OSError:
        return None
    _seen[str(f)] = (*key, d)
    return d


def verify_numba_cache(paths) -> list[str]:
    """Check the Numba files of the modules at ``paths`` against their manifests before
    Numba may load them. A module with a file that does not match (or an unreadable
    manifest) has all its Numba files cleared; files no manifest lists are removed. Returns
    one line per cleared module (what was wrong), for the caller's one warning."""
    _seen.clear()  # digests are reused from here to the ``record_numba_cache`` that follows
    problems = []
    for path in paths:
        files = _numba_files(path)
        if not files:
            continue
        known = _read_manifest(path)
        if known is None:
            clear_numba_cache(path)
            problems.append(f"{_manifest_path(path).name} is unreadable")
            continue
        unlisted, bad = [], None
        for f in files:
            good = known.get(f.name)
            if not good:
                unlisted.append(f)
                continue
            d = _digest(f)
            if d is not None and d not in good:
                bad = f.name
                break
        if bad is not None:
            clear_numba_cache(path)
            problems.append(f"{bad} changed since it last ran")
            continue
        for f in unlisted:
            try:
                f.unlink()
            except OSError:
                pass
    return problems


def record_numba_cache(paths) -> None:
    """After a program's first call returned: add the digests of its modules' Numba files
    to their manifests (nothing is written when they are all known already)."""
    for path in paths:
        files = _numba_files(path)
        if not files:
            continue
        current = {f.name: d for f in files if (d := _digest(f, reuse=True)) is not None}
        known = _read_manifest(path) or {}
        if all(d in known.get(name, ()) for name, d in current.items()):
            continue
        try:
            with _manifest_lock(path.parent / "__pycache__"):
                known = _read_manifest(path) or {}
                for name, d in current.items():
                    known[name] = ([d] + [x for x in known.get(name, []) if x != d])[:_KEEP_DIGESTS]
                text = json.dumps({"files": known}, indent=0, sort_keys=True)
                write_atomic(_manifest_path(path), lambda f: f.write(text), binary=False)
        except OSError:  # a cache we cannot write to: its files get rebuilt next time
            pass


class _manifest_lock:
    """An advisory lock (flock) on the cache's manifest lock file: concurrent processes
    merge their digests instead of overwriting each other's (a no-op without fcntl)."""

    def __init__(self, pyc: Path):
        self.path = pyc / ".graphc-manifest.lock"
        self.fd = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
        return False


# ---- loading and releasing generated modules ---------------------------------------------------

RETIRED_MODULES = 8  # drivers kept loaded after their last program is dropped (re-created soon)

_users: dict[str, int] = {}  # driver: live programs; kernel: loaded drivers importing it
_deps: dict[str, list[str]] = {}  # loaded driver -> its kernel modules
_retired: "collections.OrderedDict[str, ModuleType]" = collections.OrderedDict()
_pending: "collections.deque[str]" = collections.deque()  # drivers released while LOCK was busy
_busy = [0]  # > 0 while a load runs: a release triggered by GC inside it waits
# called with a kernel module's name when it is unloaded; a backend registers what it holds
# per module (the cpu backend: the cfuncs it exported, cpu/program.py's unexport), so this
# module, shared by every backend, imports none of them
_UNLOAD_HOOKS: list[Callable[[str], object]] = []


def on_unload(hook: Callable[[str], object]) -> None:
    """Register ``hook(module_name)``, called when a kernel module (one with an exported
    ``_cfunc``) is unloaded."""
    if hook not in _UNLOAD_HOOKS:
        _UNLOAD_HOOKS.append(hook)


def load_module(path: Path, fresh: bool = False) -> ModuleType:
    """Import a generated module by path (registered in sys.modules, as Numba's cache needs).

    Thread-safe: the module is registered and executed under ``LOCK``, so no other thread
    can see it half-initialized (an ``ImportError: cannot import name 'kernel_...'``).
    """
    name = path.stem
    with LOCK:
        mod = sys.modules.get(name)
        if not fresh and mod is not None:
            return mod
        _fix_numba_reload_init()
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as e:
            if sys.modules.get(name) is mod:
                del sys.modules[name]
            raise CompileError(f"generated module {path} failed to import: {type(e).__name__}: {e}") from e
        return mod


def load_program(driver: Path, kernels: list[Path], fresh: bool = False,
                 retain: bool = True) -> tuple[ModuleType, list[ModuleType]]:
    """Load a driver and its kernel modules; with ``retain``, count one more live program
    of the driver (undone by ``release_program``)."""
    with LOCK:
        _busy[0] += 1
        try:
            kmods = [load_module(p, fresh=fresh) for p in kernels]
            mod = load_module(driver, fresh=fresh)
            name = driver.stem
            if name not in _deps:
                _deps[name] = [p.stem for p in kernels]
                for k in _deps[name]:
                    _users[k] = _users.get(k, 0) + 1
            if retain:
                _users[name] = _users.get(name, 0) + 1
                _retired.pop(name, None)
        finally:
            _busy[0] -= 1
        _drain()
        return mod, kmods


def release_program(driver_name: str) -> None:
    """A program of ``driver_name`` was dropped (called by its finalizer, from any thread)."""
    _pending.append(driver_name)
    if LOCK.acquire(blocking=False):
        try:
            if not _busy[0]:
                _drain()
        finally:
            LOCK.release()


def _drain() -> None:
    """Under LOCK: retire drivers whose last program was dropped; unload the oldest retired
    ones beyond RETIRED_MODULES, and kernel modules no loaded driver imports any more."""
    while _pending:
        name = _pending.popleft()
        n = _users.get(name, 0) - 1
        if n > 0:
            _users[name] = n
            continue
        _users.pop(name, None)
        if name in _deps:
            _retired[name] = sys.modules.get(name)
            _retired.move_to_end(name)
    while len(_retired) > max(RETIRED_MODULES, 0):
        name, mod = _retired.popitem(last=False)
        _unload(name, mod)
        for k in _deps.pop(name, []):
            n = _users.get(k, 0) - 1
            if n > 0:
                _users[k] = n
            else:
                _users.pop(k, None)
                _unload(k, sys.modules.get(k))


def _unload(name: str, mod: ModuleType | None) -> None:
    """Drop a generated module and free its Numba dispatchers' compiled overloads.

    Numba keeps every dispatcher alive: its compile results' environments hold the module's
    globals (which hold the dispatcher), and the target context's registry and the
    dispatcher's own finalizer hold the compile results. Running that finalizer's work
    (unregister) and clearing the overloads, as ``Dispatcher.recompile`` does, breaks both
    paths. The machine code stays: Numba never removes code from its LLVM JIT."""
    if mod is None:
        return
    if sys.modules.get(name) is mod:
        del sys.modules[name]
    cf = vars(mod).get("_cfunc")
    libraries = [getattr(cf, "_library", None)]
    if cf is not None:  # a kernel module: its exported entry is no longer called
        for hook in _UNLOAD_HOOKS:
            hook(name)
    for v in list(vars(mod).values()):
        if getattr(v, "__module__", None) == name and hasattr(v, "_reset_overloads"):
            try:
                libraries += [cres.library for cres in v.overloads.values()]
                v._make_finalizer()()
                v._reset_overloads()
            except Exception:  # pragma: no cover - another Numba version: leave it loaded
                pass
    _forget_numba_functions(name, [lib for lib in libraries if lib is not None])


def _forget_numba_functions(name: str, libraries: list) -> None:
    """Remove from Numba's target context the functions compiled for module ``name`` that
    no dispatcher's finalizer removes: the parfor gufuncs of its parallel kernels (each
    compiled once, linked into its kernel alone) and its cfunc entry. Their registrations
    hold their type-annotated IR and their code libraries, which hold copies of their LLVM
    modules (with the exported cfuncs, ``program.unexport``: ~1 MB per dropped parallel
    Adam step of a small MLP, measured). Only functions reached
    from ``libraries`` (this module's compiled code) are touched, never a shared helper's
    (views.py's, which later kernels call)."""
    seen, todo = set(), list(libraries)
    while todo:  # the libraries linked into this module's code, transitively
        lib = todo.pop()
        if id(lib) not in seen:
            seen.add(id(lib))
            todo += getattr(lib, "_linking_libraries", ())
    try:
        from numba.core.compiler_lock import global_compiler_lock
        from numba.core.registry import cpu_target
        with global_compiler_lock:  # not while another thread's compile reads them
            defns = cpu_target.target_context._defns
            for key, selector in list(defns.items()):
                impls = [impl for _, impl in selector.versions]
                if impls and all(_compiled_for(impl, name, seen) for impl in impls):
                    del defns[key]
    except Exception:  # pragma: no cover - another Numba version: they stay registered
        pass


def _compiled_for(impl, name: str, libraries: set) -> bool:
    """Whether a target context entry (``imputils.user_function``) is a function of module
    ``name`` or a parfor gufunc, compiled into one of ``libraries``."""
    libs = getattr(impl, "libs", None)
    if not libs or not all(id(lib) in libraries for lib in libs) or not impl.__closure__:
        return False
    fndesc = dict(zip(impl.__code__.co_freevars, (c.cell_contents for c in impl.__closure__))).get("fndesc")
    return fndesc is not None and (fndesc.modname == name or fndesc.qualname.startswith("__numba_parfor_gufunc"))


# ---- Numba: parfor reload hooks of callers of cached functions --------------------------------

_fixed = [False]


def _fix_numba_reload_init() -> None:
    """Make a function loaded from Numba's cache pass its reload hooks on to callers.

    A parallel (parfor) function needs Numba's threading runtime started before its code
    runs; its cache entry carries a reload hook (``_reload_parfors``) that starts it. A
    caller inherits its callees' hooks when it is compiled (``CodeLibrary._reload_init``),
    but a callee loaded from the cache comes back with an empty ``_reload_init``
    (``CompileResult._rebuild`` runs the hooks, never stores them). So a driver compiled
    in a process whose parfor kernels came from the cache was cached without the hook, and
    a later process loading that driver called into a threading runtime that was never
    started: a jump to address 0. This restores the hooks on the loaded library."""
    if _fixed[0]:
        return
    _fixed[0] = True
    try:
        from numba.core.compiler import CompileResult
        rebuild = CompileResult.__dict__["_rebuild"].__func__
    except (ImportError, KeyError, AttributeError):  # pragma: no cover - another Numba
        return
    if getattr(rebuild, "_graphc_reload_init", False):
        return

    def _rebuild(cls, *args, **kwargs):
        cr = rebuild(cls, *args, **kwargs)
        hooks = getattr(cr, "reload_init", None)
        lib = getattr(cr, "library", None)
        if hooks and lib is not None and isinstance(getattr(lib, "_reload_init", None), set):
            lib._reload_init.update(hooks)
        return cr

    _rebuild._graphc_reload_init = True
    _rebuild.__wrapped__ = rebuild
    CompileResult._rebuild = classmethod(_rebuild)
