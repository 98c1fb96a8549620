"""The in-step random generator on cuda: the same counter-based draw as every other target, bit
for bit, and dropout masks that change with the step counter."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


def test_draw_and_dropout_match_the_interpreter_bit_for_bit():
    key = gc.input("cr_k", (), "int64")
    u32 = gc.random_uniform((3, 70), seed=2, key=key)
    u64 = gc.random_uniform((130,), seed=2, dtype="float64", key=key)
    a = gc.compile([u32, u64], target="cuda")(cr_k=np.int64(4))
    b = gc.compile([u32, u64], target="numpy")(cr_k=np.int64(4))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    x = gc.input("cr_x", (None, 50), "float32")
    w = gc.param("cr_w", (50,), init="ones")
    y = gc.dropout(x * w, 0.5, seed=3)
    X = np.ones((4, 50), "float32")
    outs = {}
    for t in ("cuda", "numpy"):
        step = gc.compile(gc.sum(y), optimizer=gc.optim.SGD(0.0), outputs={"y": y}, target=t)
        outs[t] = [step(cr_x=X)["y"] for _ in range(2)]
    for p, q in zip(outs["cuda"], outs["numpy"]):
        np.testing.assert_array_equal(p, q)
    assert (outs["cuda"][0] != outs["cuda"][1]).any()


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_the_draw_wraps_without_overflow_warnings():
    """The hash's uint64 products and sums wrap modulo 2**64. Under the simulator the kernel runs
    on NumPy scalars, which warn on overflow (a warning per thread, turned into errors here), so
    the generated code must wrap by construction; large seeds and keys, bit for bit as the
    interpreter."""
    key = gc.input("cw_k", (), "int64")
    draws = [gc.random_uniform((37,), seed=s, key=key) for s in (1, (1 << 63) - 1)]
    draws.append(gc.random_uniform((29,), seed=5, dtype="float64", key=key))
    f_cuda, f_np = gc.compile(draws, target="cuda"), gc.compile(draws, target="numpy")
    for k in (0, 3, (1 << 62) + 12345, (1 << 63) - 1):
        for x, y in zip(f_cuda(cw_k=np.int64(k)), f_np(cw_k=np.int64(k))):
            np.testing.assert_array_equal(x, y)
