"""Atomic file writes: a temp file in the target's directory, fsync, then rename over it.

Used for generated modules and checkpoints: a crash or a concurrent writer never leaves a
half-written file where a reader would find it.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, IO


def write_atomic(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = True) -> None:
    """Call ``write(f)`` on a temp file beside ``path``, then atomically replace ``path``."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=d)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
