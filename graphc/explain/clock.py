"""The clock the Numba profiling twin calls (profile.py): imported only where Numba compiles
the twin (a driver Numba compiled), never where the twin is graphc's (the native driver
translator reads the same clock itself)."""
from __future__ import annotations

import time

import numpy as np
from numba import njit, objmode, types

_clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, types.voidptr))
_MONOTONIC = int(getattr(time, "CLOCK_MONOTONIC", 1))


@njit(cache=True, nogil=True)
def clock_tick(t, i):
    """``t[i]`` = a monotonic clock in ns (clock_gettime, resolved by the linker: ~20 ns, and
    cacheable because no address is baked in); ``t``'s last two slots are its timespec."""
    m = t.shape[0] - 2
    _clock_gettime(_MONOTONIC, t[m:].ctypes.data)
    t[i] = t[m] * 1000000000 + t[m + 1]


@njit(nogil=True)
def objmode_tick(t, i):
    """The fallback where there is no clock_gettime: object mode around perf_counter_ns (~0.5 us)."""
    with objmode(v="int64"):
        v = time.perf_counter_ns()
    t[i] = v


_TICK: list = []


def tick_name() -> str:
    """Which clock the profiling drivers import (clock_tick where it compiles and runs)."""
    if not _TICK:
        try:
            z = np.zeros(3, np.int64)
            clock_tick(z, 0)
            _TICK.append("clock_tick" if z[0] > 0 else "objmode_tick")
        except Exception:  # no clock_gettime symbol (Windows), or a 32-bit timespec
            _TICK.append("objmode_tick")
    return _TICK[0]
