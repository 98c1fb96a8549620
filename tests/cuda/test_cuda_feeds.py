"""Feeds of any layout (unpickled, big-endian, Fortran-order, strided) and positional feeds
on the cuda target: converted by the checked path, bit for bit the plain array's result."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import graphc as gc
from graphc.errors import FeedError


def test_feeds_of_any_layout_and_positional_feeds_on_cuda():
    rng = np.random.default_rng(5)
    xb, yb = rng.standard_normal((4, 5)).astype("f4"), rng.integers(0, 3, 4)
    y = gc.input("cfy", (None,), dtype="int64")  # declared first: the first positional feed
    x = gc.input("cfx", (None, 5))
    W = gc.param("cfW", (5, 3), init="he_normal")
    step = gc.compile(gc.softmax_cross_entropy(x @ W, y), optimizer=gc.optim.SGD(0.1), target="cuda", seed=2)
    f = gc.compile(x @ W, params=step, target="cuda")
    assert step.input_names == ["cfy", "cfx"] and f.input_names == ["cfx"]
    sd0 = step.state_dict()

    def run(*args, **feeds):
        step.load_state_dict(sd0)
        return float(step(*args, **feeds)["loss"]), step.params["cfW"], f(feeds["cfx"] if "cfx" in feeds else args[-1])

    want = run(cfx=xb, cfy=yb)
    wide = np.zeros((4, 10), "f4")
    wide[:, ::2] = xb
    for args, feeds in [((), dict(cfx=pickle.loads(pickle.dumps(xb)), cfy=pickle.loads(pickle.dumps(yb)))),
                        ((), dict(cfx=xb.astype(">f4"), cfy=yb.astype(">i8"))),
                        ((), dict(cfx=np.asfortranarray(xb), cfy=yb)), ((), dict(cfx=wide[:, ::2], cfy=yb)),
                        ((yb, xb), {}), ((yb,), dict(cfx=xb))]:
        got = run(*args, **feeds)
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])
    with pytest.raises(FeedError, match=r"3 positional feeds.*\['cfy', 'cfx'\]"):
        step(yb, xb, xb)
