"""Shared test setup.

Numba compiles are slow (seconds each on 2 cores), so the whole test session shares ONE
graphc cache directory: identical kernels/programs compiled by different tests (or by a
previous run) are loaded instead of recompiled. It must be set before graphc compiles
anything, hence at conftest import time, before any test module is collected.

Override with GRAPHC_TEST_CACHE_DIR (e.g. a fresh directory to measure cold compiles).
"""
from __future__ import annotations

import os
import sys
import tempfile

import pytest

_default = os.path.join(tempfile.gettempdir(), f"graphc-test-cache-{os.getuid() if hasattr(os, 'getuid') else 0}")
CACHE_DIR = os.environ.get("GRAPHC_TEST_CACHE_DIR") or _default
os.makedirs(CACHE_DIR, exist_ok=True)
os.environ["GRAPHC_CACHE_DIR"] = CACHE_DIR

try:  # keep property tests short and deadline-free: every new graph is a Numba compile
    from hypothesis import HealthCheck, settings

    settings.register_profile("graphc", deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("graphc")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def keras_run(tmp_path_factory):
    """Real Keras 3 in ONE worker subprocess for the session (see _keras_worker.py)."""
    from _keras_worker import KerasWorker

    with open(tmp_path_factory.mktemp("keras") / "stderr.txt", "w") as log:
        k = KerasWorker(log)
        yield k
        k.close()


@pytest.fixture(scope="session")
def keras():
    """Keras 3 imported in this process (numpy backend unless one was already chosen);
    skips where it is not installed."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "numpy"  # predict without TensorFlow, JAX or torch
    return pytest.importorskip("keras")
