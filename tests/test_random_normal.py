"""Normal, truncated normal and Bernoulli draws of the in-step generator: bit-identical on the
numpy, cpu and parallel targets; statistics of many draws; the inverse CDF against SciPy's."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ops.distributions import log_exact, ndtri

N = 20000


def _draws():
    key = gc.input("rn_k", (), "int64")
    return key, [gc.random_normal((N,), seed=1, dtype="float64", key=key),
                 gc.random_normal((40, 50), mean=2.0, stddev=3.0, seed=1, key=key),
                 gc.truncated_normal((N,), seed=2, dtype="float64", key=key),
                 gc.truncated_normal((N,), mean=-1.0, stddev=0.5, seed=2, key=key),
                 gc.random_bernoulli(0.3, (N,), seed=3, key=key)]


def test_draws_are_bit_identical_on_every_cpu_target():
    key, ys = _draws()
    got = {t: gc.compile(ys, target=t)(rn_k=np.int64(7)) for t in ("numpy", "cpu", "parallel")}
    for t in ("cpu", "parallel"):
        for a, b in zip(got["numpy"], got[t]):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
    # another key draws anew
    other = gc.compile(ys, target="cpu")(rn_k=np.int64(8))
    assert (other[0] != got["cpu"][0]).mean() > 0.99


def test_statistics_of_many_draws():
    key, ys = _draws()
    z, z2, t, t2, b = gc.compile(ys, target="cpu")(rn_k=np.int64(3))
    assert z.dtype == np.float64 and z2.dtype == np.float32 and t2.dtype == np.float32 and b.dtype == np.bool_
    se = 1.0 / np.sqrt(N)
    assert abs(z.mean()) < 5 * se and abs(z.std() - 1.0) < 5 * se
    assert abs(z2.mean() - 2.0) < 5 * 3.0 / np.sqrt(z2.size) and abs(z2.std() / 3.0 - 1.0) < 0.05
    # a standard normal's third and fourth moments, and its quantiles
    assert abs(np.mean(z ** 3)) < 0.1 and abs(np.mean(z ** 4) - 3.0) < 0.15
    assert abs(np.mean(z < -1.959964) - 0.025) < 0.005 and abs(np.mean(z > 1.959964) - 0.025) < 0.005
    # truncated at two standard deviations: the bound holds, the moments are the truncated law's
    assert np.abs(t).max() <= 2.0 and t2.min() >= -2.0 and t2.max() <= 0.0
    assert abs(t.mean()) < 5 * se and abs(t.std() - 0.879626) < 0.01
    assert abs(t2.mean() + 1.0) < 0.02 and abs(t2.std() - 0.5 * 0.879626) < 0.01
    assert np.abs(t).max() > 1.95  # the range is covered up to the bound
    assert abs(b.mean() - 0.3) < 5 * np.sqrt(0.21 / N)


def test_the_inverse_cdf_and_log_against_scipy_and_numpy():
    special = pytest.importorskip("scipy.special")
    u = np.concatenate([np.linspace(2.0 ** -54, 1 - 2.0 ** -53, 5001), 2.0 ** -np.arange(1.0, 55.0),
                        [0.02425, 0.02425 + 1e-12, 0.97575, 0.5]])
    x = gc.input("rn_u", u.shape, "float64")
    logu, z = gc.compile([log_exact(x), ndtri(x)], target="numpy")(rn_u=u)
    np.testing.assert_allclose(logu, np.log(u), rtol=4e-16, atol=0)
    np.testing.assert_allclose(z, special.ndtri(u), rtol=1.2e-9, atol=1e-12)


def test_bernoulli_with_a_tensor_p_and_errors():
    p = gc.input("rn_p", (4, 1000), "float32")
    b = gc.random_bernoulli(p, seed=4, key=gc.const(np.int64(0)))
    P = np.broadcast_to(np.array([[0.0], [0.2], [0.9], [1.0]], "float32"), (4, 1000))
    got = gc.compile(b, target="cpu")(rn_p=np.ascontiguousarray(P))
    assert got.shape == (4, 1000) and not got[0].any() and got[3].all()
    assert abs(got[1].mean() - 0.2) < 0.06 and abs(got[2].mean() - 0.9) < 0.05
    with pytest.raises(ValueError, match=r"random_bernoulli: p must be a number in \[0, 1\], got 1.5"):
        gc.random_bernoulli(1.5, (3,))
    with pytest.raises(gc.DTypeError, match="random_normal: dtype must be floating point, got int32"):
        gc.random_normal((3,), dtype="int32")
    with pytest.raises(ValueError, match="truncated_normal: stddev must be >= 0"):
        gc.truncated_normal((3,), stddev=-1.0)


def test_a_noise_injection_step_draws_anew_each_step_and_differentiates():
    """The reparameterization trick: mu + sigma * eps with eps ~ N(0, 1) drawn in the step."""
    x = gc.input("rn_x", (None, 3), "float32")
    mu = gc.param("rn_mu", (3,), init=np.zeros(3))
    ls = gc.param("rn_ls", (3,), init=np.zeros(3))
    eps = gc.random_normal(x, seed=5)
    y = mu + gc.exp(ls) * eps
    loss = gc.mean(gc.square(y - x))
    step = gc.compile(loss, optimizer=gc.optim.SGD(0.0), outputs={"eps": eps}, target="cpu")
    X = np.ones((4, 3), "float32")
    e1, e2 = step(rn_x=X)["eps"], step(rn_x=X)["eps"]
    assert e1.shape == (4, 3) and (e1 != e2).all()
    # gradients flow through mean and stddev (the draw itself is a constant), as in a VAE
    key = gc.const(np.int64(2))
    eps = gc.random_normal((2, 3), seed=6, dtype="float64", key=key)
    m = gc.param("rn_m", (3,), init=np.array([0.1, -0.2, 0.3]), dtype="float64")
    s = gc.param("rn_s", (3,), init=np.array([0.0, 0.5, -0.5]), dtype="float64")
    rep = gc.check_grads(gc.sum(gc.tanh(m + gc.exp(s) * eps)), [m, s], rtol=1e-6)
    assert max(rep.values()) < 1e-6
