"""gc.cast of NaN, +-inf and out-of-range floats to integers on target="cuda": the result
gc.cast documents (truncation where the value fits, else the conversion width's minimum;
narrower types wrap it), not CUDA's saturating conversion (NaN -> 0) nor LLVM's undefined
one; under the simulator without NumPy's "invalid value encountered in cast" per thread."""
from __future__ import annotations

import math
import warnings

import numpy as np

import graphc as gc

INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"]
VALUES = [np.nan, np.inf, -np.inf, 0.0, -0.7, 1.5, 300.0, -300.0, 2.0 ** 31, -2.0 ** 31 - 4096, 3e9, -3e9,
          1e10, 2.0 ** 63, 1.5e19, 2.0 ** 64, -1e19, 1e30]


def rule(v: float, dtype: str):
    """gc.cast's documented result in Python integers (tests/test_hardening_casts.py holds it
    against NumPy on x86)."""
    if dtype == "bool":
        return v != 0
    bits = np.dtype(dtype).itemsize * 8
    if dtype == "uint64" and math.isfinite(v) and 0 <= v < 2 ** 64:
        r = math.trunc(v)
    else:
        lim = 2 ** (63 if dtype in ("int64", "uint32", "uint64") else 31)
        r = math.trunc(v) if math.isfinite(v) and -lim <= v < lim else -lim
    return np.array(r % 2 ** bits, f"uint{bits}").view(dtype)[()]


def test_float_to_int_casts_give_the_documented_result():
    xs = {src: gc.input(f"kx_{src}", (None,), dtype=src) for src in ("float32", "float64")}
    outs = [gc.cast(x, dt) for x in xs.values() for dt in INTS] + [gc.cast(xs["float32"] * 1e10, "int32")]
    feeds = {f"kx_{src}": np.array(VALUES, src) for src in xs}
    f = gc.compile(outs, target="cuda", check_finite=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)  # x * 1e10 is inf: meant
        warnings.filterwarnings("error", "invalid value encountered", RuntimeWarning)
        got = f(**feeds)
    with np.errstate(over="ignore"):
        srcs = [feeds[n] for n in feeds for _ in INTS] + [feeds["kx_float32"] * np.float32(1e10)]
    for o, g, x in zip(outs, got, srcs):
        np.testing.assert_array_equal(g, np.array([rule(float(v), o.dtype.name) for v in x], o.dtype),
                                      err_msg=f"{o!r} of {x.tolist()}")
    assert got[-1][0] == -2 ** 31  # the repro: NaN * 1e10 is int32's minimum, as every out-of-range value
