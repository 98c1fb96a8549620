"""Subnormals are flushed inside a cpu step and only there (graphc/backends/cpu/fpenv.py)."""
import numpy as np
import pytest

import graphc as gc
from graphc.backends.cpu.fpenv import X86
from graphc.errors import FeedError

SUB = np.float32(1e-39)  # a float32 subnormal

pytestmark = pytest.mark.skipif(not X86, reason="FTZ/DAZ are set through x86-64's MXCSR only")


def numpy_keeps_subnormals() -> bool:
    return bool(np.array([SUB], np.float32)[0] * np.float32(1.0) != 0)


def test_a_subnormal_input_reads_as_zero_inside_the_step_and_numpy_is_untouched():
    assert numpy_keeps_subnormals()
    x = gc.input("x", (None, 3))
    f = gc.compile(x * 2.0, target="cpu")
    ref = gc.compile(x * 2.0, target="numpy")
    feed = np.array([[SUB, 1.0, -SUB]], np.float32)
    assert ref(x=feed)[0, 0] != 0  # the IEEE result the interpreter gives
    np.testing.assert_array_equal(f(x=feed), [[0.0, 2.0, 0.0]])  # DAZ: read as zero
    assert numpy_keeps_subnormals()  # the caller's control word is back


def test_the_control_word_is_restored_when_the_step_rejects_its_feeds():
    x = gc.input("x", (None, 2))
    y = gc.input("y", (None,), dtype="int64")
    w = gc.param("w", (2, 3), init="ones")
    step = gc.compile(gc.softmax_cross_entropy(x @ w, y), optimizer="sgd", target="cpu")
    xs = np.ones((4, 2), np.float32)
    step(x=xs, y=np.zeros(4, np.int64))
    with pytest.raises(FeedError):
        step(x=xs, y=np.full(4, 7, np.int64))  # out of range: the driver returns a status
    assert numpy_keeps_subnormals()
    with pytest.raises(FeedError):
        step(x=np.full((4, 2), np.nan, np.float32), y=np.zeros(4, np.int64))
    assert numpy_keeps_subnormals()
