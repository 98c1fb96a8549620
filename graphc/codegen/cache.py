"""The on-disk cache of generated modules.

A module's file name is a hash of its full source, so a file can never be stale: changed
code is a different file (Numba does not notice edits to callees in other files, and this
sidesteps that). Files are written atomically (temp file + rename), so two processes
compiling the same program at once both end up importing one complete file; an entry whose
content does not match its name is treated as a miss and rewritten, with a warning.
Numba's own ``cache=True`` files land in ``__pycache__`` beside each module.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType

from ..atomic import write_atomic
from ..errors import CompileError


def cache_dir() -> Path:
    """``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else ``~/.cache/graphc``."""
    d = os.environ.get("GRAPHC_CACHE_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "graphc")
    p = Path(d)
    p.mkdir(parents=True, exist_ok=True)
    return p


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
        return path
    if existing is not None:
        warnings.warn(f"graphc: cache entry {path} was corrupted; rebuilding it", RuntimeWarning, stacklevel=3)
        clear_numba_cache(path)
    write_atomic(path, lambda f: f.write(source), binary=False)
    return path


def clear_numba_cache(path: Path) -> int:
    """Remove Numba's cache files of one generated module; returns how many."""
    n = 0
    pyc = path.parent / "__pycache__"
    if pyc.is_dir():
        for f in pyc.glob(path.stem + ".*"):
            try:
                f.unlink()
                n += 1
            except OSError:
                pass
    return n


def load_module(path: Path, fresh: bool = False) -> ModuleType:
    """Import a generated module by path (registered in sys.modules, as Numba's cache needs)."""
    name = path.stem
    if not fresh and name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:
        del sys.modules[name]
        raise CompileError(f"generated module {path} failed to import: {type(e).__name__}: {e}") from e
    return mod


def clear() -> None:
    """Delete the whole cache directory."""
    shutil.rmtree(cache_dir(), ignore_errors=True)
