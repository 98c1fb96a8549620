"""float32 tanh and exp in loop bodies: vectorizable arithmetic (intrinsics.tanh32_ir,
exp32_ir) in place of libm's scalar calls, accurate to 1-2 ulp, with IEEE edge cases, and the
same bits from graphc's kernel compiler (target cpu) and Numba (target parallel)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


def _sample() -> np.ndarray:
    """Every 1021st positive float32 bit pattern (all exponents), their negatives, edges."""
    pos = np.arange(0, 0x7F800000, 1021, dtype=np.uint32).view(np.float32)
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 0.75, np.nextafter(np.float32(0.75), np.float32(0)),
                      1e-45, 9.0, 9.1, 88.0, -88.0, 1e30], np.float32)
    return np.concatenate([pos, -pos, edges]).astype(np.float32)


def _ulps(got: np.ndarray, ref64: np.ndarray) -> np.ndarray:
    ref = ref64.astype(np.float32)
    a = got.view(np.int32).astype(np.int64)
    b = ref.view(np.int32).astype(np.int64)
    a = np.where(a < 0, -(a & 0x7FFFFFFF), a)  # sign-magnitude -> a monotone integer line
    b = np.where(b < 0, -(b & 0x7FFFFFFF), b)
    return np.abs(a - b)


@pytest.fixture(scope="module")
def results():
    xs = _sample()
    x = gc.input("x", xs.shape)
    outs = [gc.tanh(x), gc.exp(x * 0.0625), gc.sigmoid(x)]
    got = {t: gc.compile(outs, target=t, check_finite=False)(x=xs) for t in ("cpu", "parallel")}
    return xs, got


def test_tanh_within_one_ulp_and_ieee_edges(results):
    xs, got = results
    t = got["cpu"][0]
    fin = np.isfinite(xs)
    tiny = np.float32(np.finfo(np.float32).tiny)
    normal = fin & (np.abs(xs) >= tiny)  # the compiled step flushes subnormals (fpenv.py)
    assert _ulps(t[normal], np.tanh(xs[normal].astype(np.float64))).max() <= 1
    assert (t[fin & ~normal] == 0).all()
    assert np.array_equal(np.signbit(t[xs == 0]), np.signbit(xs[xs == 0]))  # tanh(-0) = -0
    assert t[xs == np.inf].tolist() == [1.0] and t[xs == -np.inf].tolist() == [-1.0]
    assert np.isnan(t[np.isnan(xs)]).all()
    assert (np.abs(t[fin]) <= 1).all()


def test_exp_and_sigmoid_accuracy(results):
    xs, got = results
    e, s = got["cpu"][1], got["cpu"][2]
    x16 = (xs * np.float32(0.0625)).astype(np.float64)
    with np.errstate(over="ignore"):  # exp of the large magnitudes, masked out by |x| < 80
        ok = np.isfinite(x16) & (np.abs(x16) < 80) & (np.exp(x16) >= np.finfo(np.float32).tiny)
    assert _ulps(e[ok], np.exp(x16[ok])).max() <= 2
    fin = np.isfinite(xs) & (np.abs(xs) < 80)
    ref = 1 / (1 + np.exp(-xs[fin].astype(np.float64)))
    np.testing.assert_allclose(s[fin], ref, rtol=5e-7, atol=1e-38)
    assert np.isnan(e[np.isnan(xs)]).all() and np.isnan(s[np.isnan(xs)]).all()


def test_graphc_and_numba_compile_the_same_bits(results):
    _, got = results
    for a, b in zip(got["cpu"], got["parallel"]):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_float64_tanh_keeps_libm():
    x = gc.input("x64", (5,), dtype="float64")
    v = np.array([-3.0, -0.2, 0.0, 1e-9, 2.5])
    got = gc.compile(gc.tanh(x), target="cpu")(x64=v)
    assert np.array_equal(got, np.tanh(v))
    src = gc.compile(gc.tanh(x), target="cpu").source()
    assert "math.tanh(" in src and "tanh32(" not in src


def test_float32_loops_call_the_vectorizable_forms():
    x = gc.input("x32", (5,))
    src = gc.compile([gc.tanh(x) * gc.exp(x), gc.sigmoid(x)], target="cpu").source()
    assert "tanh32(" in src and "exp32(" in src and "math.tanh(" not in src and "math.exp(" not in src
