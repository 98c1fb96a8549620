"""NaN propagates through relu/maximum/minimum/max/sign/clip/pooling/argmax/... on the cuda
target exactly as on the NumPy target: the graphs and the comparison of
tests/test_hardening_nan.py (NaN and infinity positions bit for bit, the sign of zero of
elementwise results), with NaN and infinities fed (Python's math under the simulator raises
where log(-1) would give a NaN)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import graphc as gc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_hardening_nan import compare, graph  # noqa: E402


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the simulator computes 0/0 with NumPy scalars
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nan_propagates_as_on_numpy(dtype):
    # fed NaN and infinities only: the simulator runs Python's math, where log(-1) raises
    names, outs, feeds = graph(dtype, tags=("fed",))
    want = gc.compile(outs, target="numpy", check_finite=False)(**feeds)
    assert np.isnan(want[names.index("relu [fed]")][0, 0])
    got = gc.compile(outs, target="cuda", check_finite=False)(**feeds)
    compare(got, want, names, "cuda")
