"""tests/cuda runs in its own pytest invocation (the main run ignores this directory, see
pyproject.toml), either under Numba's CUDA simulator:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests/cuda

or for real on a machine with a GPU (benchmarks/gpu_check.sh). The simulator must be switched
on in the environment before numba is imported, hence the separate invocation. Without either,
this run stops with that explanation instead of silently skipping.
"""
from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return
    from graphc.backends.cuda.compat import numba_cuda
    try:
        ok = numba_cuda().is_available()
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        pytest.exit("tests/cuda needs a CUDA device or the simulator: "
                    "NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests/cuda", returncode=4)
