"""Atomic file writes: a temp file in the target's directory, fsync, then rename over it.

Used for generated modules and checkpoints: a crash or a concurrent writer never leaves a
half-written file where a reader would find it.

A writer killed mid-write (SIGKILL, power loss) cannot remove its temp file, so temp files
carry the target's name and their writer: ``.{target}.tmp-{host}-{pid}-{random}``. Each write
first removes the stale temp files of its own target: those whose writer (same host) is no
longer running, and any untouched for ``STALE_AFTER_S`` (a live writer streams into its file
and renames it as soon as it is done, so an old temp file is an orphan; its pid may have been
reused). Temp files of other targets and of live writers are left alone.

Files get the permissions any other new file gets (``0o666`` minus the umask, applied by the
kernel at ``open``), or keep those of the file they replace, as ``open(path, "w")`` would:
``tempfile.mkstemp`` would make every checkpoint ``0o600``.
"""
from __future__ import annotations

import errno
import hashlib
import os
import secrets
import socket
import stat
import time
from typing import IO, Callable

STALE_AFTER_S = 3600.0  # a temp file untouched this long has no live writer
_TMP = ".tmp-"


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_prefix(path: str) -> str:
    """The name prefix of every temp file written for ``path`` (a hidden file beside it)."""
    return "." + os.path.basename(path) + _TMP


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's; anything else: assume alive
        return True
    return True


def remove_stale_temps(path: str | os.PathLike, now: float | None = None) -> list[str]:
    """Remove the orphaned temp files of ``path`` (see the module docstring); returns them."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    prefix, host = temp_prefix(path), _host_tag()
    now = time.time() if now is None else now
    removed = []
    try:
        names = [n for n in os.listdir(d) if n.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        full = os.path.join(d, name)
        parts = name[len(prefix):].split("-")
        try:
            st = os.lstat(full)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        stale = now - st.st_mtime > STALE_AFTER_S
        if not stale and len(parts) == 3 and parts[0] == host and parts[1].isdigit():
            stale = not _pid_alive(int(parts[1]))
        if stale:
            try:
                os.unlink(full)
                removed.append(full)
            except OSError:
                pass
    return removed


def _open_temp(path: str) -> tuple[int, str]:
    d = os.path.dirname(os.path.abspath(path))
    base = os.path.join(d, f"{temp_prefix(path)}{_host_tag()}-{os.getpid()}-")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = base + secrets.token_hex(6)
        try:
            return os.open(tmp, flags, 0o666), tmp  # the kernel applies the umask
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "could not create a unique temp file", base + "*")


def _fsync_dir(d: str) -> None:
    """Make the rename itself durable (best effort: not every OS/filesystem allows it)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = True) -> None:
    """Call ``write(f)`` on a temp file beside ``path``, then atomically replace ``path``.

    Removes this target's orphaned temp files first; on any error (or interrupt) the temp
    file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    remove_stale_temps(path)
    fd, tmp = _open_temp(path)
    try:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            mode = None
        with os.fdopen(fd, "wb" if binary else "w") as f:
            if mode is not None:  # replacing a file keeps its permissions, as open(path, "w") would
                if hasattr(os, "fchmod"):
                    os.fchmod(f.fileno(), mode)
                else:  # pragma: no cover - Windows
                    os.chmod(tmp, mode)
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
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
