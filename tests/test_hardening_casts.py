"""Float -> integer casts of NaN, infinities and out-of-range values have one defined result
on every target (gc.cast's docstring states it): truncation toward zero where the value fits,
otherwise x86's "integer indefinite" value of the conversion width (what NumPy's astype
gives on x86), the same with graphc's kernel compiler, with Numba's, in parallel loops and on
the numpy target (without NumPy's "invalid value encountered in cast" warning).
"""
from __future__ import annotations

import math
import platform
import warnings

import numpy as np
import pytest

import graphc as gc

INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"]
VALUES = [np.nan, np.inf, -np.inf, 0.0, -0.0, 0.7, -0.7, 1.5, -2.5, 127.9, 128.0, 300.0, -300.0, 70000.5,
          -70000.5, 2.0 ** 31 - 128, 2.0 ** 31, -2.0 ** 31, -2.0 ** 31 - 4096, 3e9, -3e9, 1e10, 2.0 ** 63,
          -2.0 ** 63, 1.5e19, 2.0 ** 64, -1e19, 1e30, 3e38]


def rule(v: float, dtype: str):
    """The documented result, in Python integers: signed conversions of 32 or 64 bits; NaN,
    +-inf and values outside the width's range give its minimum; narrower types and uint32
    wrap the 32-/64-bit result; uint64 is exact on [0, 2**64)."""
    if dtype == "bool":
        return v != 0  # NaN is True
    def conv(bits):
        lim = 2 ** (bits - 1)
        return math.trunc(v) if math.isfinite(v) and -lim <= v < lim else -lim
    if dtype == "uint64" and math.isfinite(v) and 0 <= v < 2 ** 64:
        r = math.trunc(v)
    else:
        r = conv(64 if dtype in ("int64", "uint32", "uint64") else 32)
    bits = np.dtype(dtype).itemsize * 8
    return np.array(r % 2 ** bits, f"uint{bits}").view(dtype)[()]


def expected(x: np.ndarray, dtype: str) -> np.ndarray:
    return np.array([rule(float(v), dtype) for v in x], dtype)


def program():
    xs = {src: gc.input(f"cx_{src}", (None,), dtype=src) for src in ("float32", "float64")}
    outs = {f"{src}->{dt}": gc.cast(x, dt) for src, x in xs.items() for dt in INTS}
    outs["repro"] = gc.cast(xs["float32"] * 1e10, "int32")  # the scaled float32, then the cast
    return outs


def feeds():
    return {f"cx_{src}": np.array(VALUES, src) for src in ("float32", "float64")}


def check(got: dict, where: str):
    f = feeds()
    for name, v in got.items():
        if name == "repro":
            with np.errstate(over="ignore"):
                src, dt, x = "float32", "int32", f["cx_float32"] * np.float32(1e10)
        else:
            src, dt = name.split("->")
            x = f[f"cx_{src}"]
        assert v.dtype == np.dtype(dt), (where, name, v.dtype)
        np.testing.assert_array_equal(v, expected(x, dt), err_msg=f"{where}: {name} of {x.tolist()}")


def test_the_rule_is_numpys_on_x86():
    """Where NumPy is an oracle (x86; signed types and the ones narrower than 32 bits) the rule
    is what its astype gives."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("NumPy's out-of-range casts are the hardware's: x86 is the reference")
    for src in ("float32", "float64"):
        x = np.array(VALUES, src)
        for dt in ["int8", "int16", "int32", "int64", "uint8", "uint16", "bool"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                np.testing.assert_array_equal(x.astype(dt), expected(x, dt), err_msg=f"{src}->{dt}")


def test_numpy_target_gives_the_rule_without_a_warning():
    f = gc.compile(program(), target="numpy", check_finite=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "invalid value encountered in cast" must not reach users
        got = f(**feeds())
    check(got, "numpy")


@pytest.mark.parametrize("target, native_kernels", [("cpu", "1"), ("cpu", "0"), ("parallel", "1")])
def test_compiled_targets_give_the_rule(target, native_kernels, tmp_path, monkeypatch):
    import graphc.backends.cache as gcache
    if native_kernels == "0":  # Numba's kernels, compiled afresh (no image of graphc's loaded)
        monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
        monkeypatch.setattr(gcache, "_resolved", {})
    monkeypatch.setenv("GRAPHC_NATIVE_KERNELS", native_kernels)
    f = gc.compile(program(), target=target, check_finite=False)
    check(f(**feeds()), f"{target} (native kernels {native_kernels})")
