"""The one place graphc imports ``numba.cuda`` from, and the device check of target="cuda".

Everything CUDA in graphc (the backend, the generated kernel modules, the tests) gets the
module through :func:`numba_cuda`, so the NumPy compatibility shim below is applied exactly
once, before ``numba.cuda`` is first imported.
"""
from __future__ import annotations

import warnings

import numpy as np

from ...errors import CompileError

SIMULATOR_HINT = ("To run target='cuda' without a GPU (slowly, for tests), set NUMBA_ENABLE_CUDASIM=1 in "
                  "the environment before Python starts, e.g. `NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda`.")


class CudaUnavailableError(CompileError):
    """target='cuda' was asked for, but no usable CUDA device (or numba.cuda) was found."""


def _shim_numpy() -> None:
    # numba-cuda 0.30.4 calls ``np.row_stack``, which NumPy 2.5 removed: with numpy 2.5 every
    # kernel compile fails ("module 'numpy' has no attribute 'row_stack'", seen on an H100 with
    # those versions). Restore the alias (row_stack was always vstack)
    # before numba.cuda is imported. Harmless where the attribute still exists.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if getattr(np, "row_stack", None) is None:
            np.row_stack = np.vstack


def numba_cuda():
    """``numba.cuda``, imported after the NumPy shim."""
    _shim_numpy()
    from numba import cuda
    return cuda


def simulator_active() -> bool:
    """True when Numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1 before numba was imported)."""
    from numba import config
    return bool(getattr(config, "ENABLE_CUDASIM", False))


def check_cuda_available() -> None:
    """Raise :class:`CudaUnavailableError` (a graphc CompileError) with a plain explanation
    unless a CUDA device (or the simulator) can run the generated kernels."""
    try:
        cuda = numba_cuda()
    except Exception as e:  # pragma: no cover - numba without its cuda package
        raise CudaUnavailableError(f"target='cuda' needs numba.cuda, which failed to import "
                                   f"({type(e).__name__}: {e}). {SIMULATOR_HINT}") from None
    if simulator_active():
        return
    try:
        ok = bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken driver must not surface as a traceback
        ok = False
    if not ok:
        raise CudaUnavailableError(
            "target='cuda': no CUDA device was found (numba.cuda.is_available() is False: no NVIDIA "
            "driver or GPU is visible to this process). Use target='cpu' or 'parallel' here. " + SIMULATOR_HINT)


def cupy_or_none():
    """CuPy when it is importable and a real device is in use (never under the simulator)."""
    if simulator_active():
        return None
    try:
        import cupy
    except Exception:  # noqa: BLE001 - absent, or installed for another CUDA version
        return None
    return cupy
