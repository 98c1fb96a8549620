"""Thread settings of the native targets, and a report of them.

The ``parallel`` target runs fused loops on Numba's thread pool while GEMMs run on
OpenBLAS's own pool. Both pools busy-wait between tasks by default, and on a small machine
two spinning pools next to each other made a step 10-100x slower (measured here). Before
the first parallel program runs, graphc therefore asks OpenMP workers to sleep rather than
spin (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a policy; BLAS keeps its threads
for the GEMMs, which dominate a training step.
"""
from __future__ import annotations

import os


def prepare_parallel() -> None:
    """Called before a ``parallel`` program is compiled; only acts before Numba's thread
    pool starts (the OpenMP runtime reads its environment once)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def start_parallel_runtime() -> None:
    """Start Numba's threading runtime (once; later calls return at once). Called before a
    driver that links parfor kernels is loaded: that code calls into the runtime, which
    Numba only starts when a parallel function is compiled or its own cache entry loads,
    not when a caller that inlined it is loaded."""
    import numba

    numba.get_num_threads()  # launches the threading layer if it has not started


def info() -> dict:
    """Numba's thread count and layer, and the BLAS libraries with their thread counts."""
    import numba

    out = {"numba_threads": numba.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    try:
        out["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        out["numba_threading_layer"] = None
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = [{"library": os.path.basename(i.get("filepath", "")), "api": i.get("internal_api"),
                        "threads": i.get("num_threads"), "architecture": i.get("architecture")}
                       for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        out["blas"] = "install threadpoolctl to see BLAS threads"
    return out
