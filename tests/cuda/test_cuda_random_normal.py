"""Normal, truncated normal and Bernoulli draws on cuda: the interpreter's bits."""
from __future__ import annotations

import numpy as np

import graphc as gc


def test_normal_truncated_and_bernoulli_draws_match_the_interpreter_bit_for_bit():
    key = gc.input("crn_k", (), "int64")
    ys = [gc.random_normal((3, 40), seed=1, key=key), gc.random_normal((50,), 1.0, 2.0, "float64", seed=2, key=key),
          gc.truncated_normal((60,), seed=3, key=key), gc.random_bernoulli(0.4, (45,), seed=4, key=key)]
    a = gc.compile(ys, target="cuda")(crn_k=np.int64(5))
    b = gc.compile(ys, target="numpy")(crn_k=np.int64(5))
    for x, y in zip(a, b):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
