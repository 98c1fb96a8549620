"""The probes graphc/peaks.py times (Numba, as the generated kernels are): a GEMM through
``np.dot`` and the read/copy/triad streaming loops, serial and under ``prange``. A module of
their own so that importing graphc/peaks.py (and a cached ``peaks()``) never imports Numba."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_OPTS = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_OPTS)
def _gemm(a, b, c):
    np.dot(a, b, c)


@njit(fastmath=True, **_OPTS)  # fastmath: a reassociated (vectorized) sum, so it is read-bound
def _read(a):
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i]
    return s


@njit(**_OPTS)
def _copy(a, b):
    for i in range(a.shape[0]):
        a[i] = b[i]


@njit(**_OPTS)
def _triad(a, b, c, s):
    for i in range(a.shape[0]):
        a[i] = b[i] + s * c[i]


@njit(fastmath=True, parallel=True, **_OPTS)
def _pread(a):
    s = 0.0
    for i in prange(a.shape[0]):
        s += a[i]
    return s


@njit(parallel=True, **_OPTS)
def _pcopy(a, b):
    for i in prange(a.shape[0]):
        a[i] = b[i]


@njit(parallel=True, **_OPTS)
def _ptriad(a, b, c, s):
    for i in prange(a.shape[0]):
        a[i] = b[i] + s * c[i]
