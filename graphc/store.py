"""The parameter/state store: named persistent tensors in one flat arena per dtype.

A native step takes a handful of arguments (the arenas), and every batch-size
specialization of a step, and any inference function compiled to share its weights, reads
the same memory. The store is also the unit of locking (see ``Store.lock``) and, for device
targets, the owner of host/device coherence (``acquire``/``sync_host``).
"""
from __future__ import annotations

import threading
from typing import Any, Mapping

import numpy as np

from .errors import GraphcError, StateError
from .initializers import init_value
from .ir import Node, fmt_shape
from .training import STEP

ALIGN_BYTES = 64  # each tensor (in the store and in scratch arenas) starts on a cache line


def aligned(offset: int, dtype) -> int:
    """The first element offset >= ``offset`` at which a ``dtype`` tensor starts on a cache line."""
    align = max(1, ALIGN_BYTES // np.dtype(dtype).itemsize)
    return -(-offset // align) * align


class Store:
    """Named persistent tensors (params and state) packed into one arena per dtype."""

    def __init__(self, nodes: list[Node], seed: int = 0, initial: Mapping[str, np.ndarray] | None = None):
        self.seed = seed
        # every program reading or writing these arenas holds this lock while it runs, and so
        # do host reads and loads: a step never loses another thread's update, a reader never
        # sees half a step (re-entrant: a load may read the store while it holds the lock)
        self.lock = threading.RLock()
        self.layout: dict[str, tuple[np.dtype, int, tuple]] = {}  # name -> (dtype, offset, shape)
        self.kinds: dict[str, str] = {}
        self._arenas: dict[np.dtype, np.ndarray] = {}
        self._version = 0  # bumped when an arena is reallocated (programs re-bind their arguments)
        # host writes of values (set_params, load_state_dict, load): a data-parallel step
        # compares the stores' contents across ranks after any rank wrote (distributed.py)
        self.writes = 0
        # device mirrors (target="cuda"): {key: mirror}; ``_owner`` is the mirror holding newer
        # values than the host arenas (None: the host is current)
        self._mirrors: dict[str, object] = {}
        self._owner = None
        self._add(nodes, checked_initial(nodes, initial))

    # ---- host/device coherence ------------------------------------------------------------------
    # The host arenas are the store's truth unless a device program ran last. Every host access
    # (``arenas``, ``version``, ``view``) first pulls the device values back; a device program
    # calls ``acquire`` before it runs, which pushes the host values to the device when the
    # host may have been written since (any host access counts as a possible write).

    @property
    def arenas(self) -> dict[np.dtype, np.ndarray]:
        self.sync_host()
        return self._arenas

    @property
    def version(self) -> int:
        self.sync_host()
        return self._version

    def mirror(self, key: str, factory):
        """The device mirror ``key`` of this store, created by ``factory(store)`` on first use."""
        m = self._mirrors.get(key)
        if m is None:
            m = self._mirrors[key] = factory(self)
        return m

    def sync_host(self) -> None:
        """Make the host arenas current (pull from the device mirror that ran last)."""
        owner = self._owner
        if owner is not None:
            owner.pull(self)
            self._owner = None

    def acquire(self, mirror) -> None:
        """Make ``mirror`` current before a device step runs (push the host values if needed);
        until the host next touches the store, the device holds its newest values."""
        if self._owner is mirror:
            return
        self.sync_host()
        mirror.push(self)
        self._owner = mirror

    def _add(self, nodes, initial):
        self.sync_host()
        sizes: dict[np.dtype, int] = {dt: a.size for dt, a in self._arenas.items()}
        new = []
        for n in nodes:
            if n.name in self.layout:
                dt, _, shape = self.layout[n.name]
                if dt != n.dtype or shape != n.shape:
                    raise GraphcError(f"{n.op} {n.name!r}: declared as {fmt_shape(n.shape)} {n.dtype} "
                                      f"but the shared store holds {fmt_shape(shape)} {dt}")
                continue
            dt = n.dtype
            off = aligned(sizes.get(dt, 0), dt)
            size = int(np.prod(n.shape, dtype=np.int64))
            self.layout[n.name] = (dt, off, n.shape)
            self.kinds[n.name] = n.op
            sizes[dt] = off + max(size, 1)
            new.append(n)
        for dt, total in sizes.items():
            old = self._arenas.get(dt)
            if old is None or old.size < total:
                arena = np.zeros(-(-total // 16) * 16, dtype=dt)
                if old is not None:
                    arena[:old.size] = old
                self._arenas[dt] = arena
                self._version += 1
        for n in new:
            v = initial.get(n.name)  # validated and cast by checked_initial
            self.view(n.name)[...] = init_value(n, self.seed) if v is None else v

    def ensure(self, nodes: list[Node]) -> None:
        """Add (and initialize) any of ``nodes`` not yet in the store.

        Growing an arena reallocates it; compiled programs look arenas up at each call.
        """
        self._add(nodes, {})

    def view(self, name: str) -> np.ndarray:
        dt, off, shape = self.layout[name]
        size = int(np.prod(shape, dtype=np.int64))
        return self.arenas[dt][off:off + size].reshape(shape)

    def names(self, kind: str | None = None) -> list[str]:
        return [k for k in self.layout if kind is None or self.kinds[k] == kind]


def checked_array(what: str, name: str, v: Any, dtype: np.dtype, shape: tuple,
                  allow_nonfinite: bool = False) -> np.ndarray:
    """``v`` as a fresh array of the store's ``dtype``, or a StateError naming ``what`` (the
    method the user called) and ``name``. Values are checked AFTER the cast: float64 1e300
    is a finite number that becomes infinity in float32."""
    if v is None or isinstance(v, (str, bytes)):
        raise StateError(f"{what}: {name!r} must be a numeric array, got {type(v).__name__} {v!r:.40}")
    try:
        a = np.asarray(v)
    except Exception as e:  # ragged lists and the like
        raise StateError(f"{what}: {name!r} could not be read as an array ({e})") from None
    if a.dtype.kind not in "biuf":
        raise StateError(f"{what}: {name!r} must be numeric, got dtype {a.dtype}")
    if a.shape != tuple(shape):
        raise StateError(f"{what}: {name!r} has shape {a.shape}, expected {tuple(shape)}")
    if not np.can_cast(a.dtype, dtype, "same_kind"):
        raise StateError(f"{what}: {name!r} has dtype {a.dtype}, expected {dtype} (or one that casts to it "
                         f"without changing kind)")
    with np.errstate(over="ignore", invalid="ignore"):
        c = a.astype(dtype)
    if dtype.kind == "f":
        bad = ~np.isfinite(c)
        if bad.any():
            src = a[bad]
            if src.dtype.kind != "f" or np.isfinite(src).any():
                raise StateError(f"{what}: {name!r} holds values too large for {dtype} (largest magnitude "
                                 f"{np.max(np.abs(src[np.isfinite(src)] if src.dtype.kind == 'f' else src)):.3g}); "
                                 f"they would become infinity")
            if not allow_nonfinite:
                raise StateError(f"{what}: {name!r} holds NaN or infinity (pass allow_nonfinite=True to accept it)")
    elif not np.array_equal(c, a):
        raise StateError(f"{what}: {name!r} holds values out of the range of {dtype}")
    return c


# Step counters (the optimizer's ``step``, graphc.nn's epoch count) load only from [0, MAX_STEP):
# the compiled step computes t = step + 1 in int64 and casts it to the params' float dtype, so
# a negative count makes Adam's bias correction 1 - beta**t zero or negative (every param NaN
# on the next step) and 2**63 - 1 wraps. Below 2**53 every count is exact in float64 and the
# increment is nowhere near int64's limit; no training run reaches it (2**53 steps at 1 us each
# take 285 years), so a larger value is a damaged or hand-edited checkpoint.
MAX_STEP = 2**53


def check_counter(what: str, name: str, value: Any) -> int:
    """``value`` as an int if it is a valid step/epoch counter, else a StateError naming
    ``what`` (the method the user called), the entry and the value."""
    a = np.asarray(value)
    if a.shape != () or a.dtype.kind not in "iu":
        raise StateError(f"{what}: counter {name!r} must be an integer scalar, got {a.dtype} of shape {a.shape}")
    v = int(a)
    if not 0 <= v < MAX_STEP:
        raise StateError(f"{what}: counter {name!r} is {v}, outside [0, 2**53): a negative count makes the "
                         f"optimizer's bias corrections divide by zero (every param NaN on the next step), and no "
                         f"run counts to 2**53; the checkpoint is damaged or was edited")
    return v


def checked_initial(nodes: list[Node], initial: Mapping | None, what: str = "compile(params=...)") -> dict:
    """Initial values given by name for ``nodes`` (params and state of a program), checked
    and cast; an unknown name or a wrong shape is a StateError, never silently ignored."""
    if not initial:
        return {}
    if not isinstance(initial, Mapping):
        raise TypeError(f"{what}: expected a dict of arrays by name, got {type(initial).__name__}")
    known = {n.name: n for n in nodes}
    keys = set(initial)
    if keys <= {"params", "state", "hyper"} and not keys & set(known) \
            and all(isinstance(v, Mapping) for v in initial.values()):
        raise StateError(f"{what}: got a state_dict; pass its ['params'] (or the compiled step itself, to share "
                         f"its store), then restore the rest with load_state_dict")
    unknown = sorted((k for k in initial if k not in known), key=str)
    if unknown:
        raise StateError(f"{what}: unknown names {unknown}; this program's params and state are {sorted(known)}")
    out = {k: checked_array(what, k, v, known[k].dtype, known[k].shape) for k, v in initial.items()}
    if STEP in out and known[STEP].op == "state":  # the optimizer's step counter
        check_counter(what, STEP, out[STEP])
    return out
