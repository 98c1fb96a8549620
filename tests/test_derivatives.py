"""gc.jacobian, gc.hessian and gc.jvp against float64 finite differences and, where JAX is
importable, jax.jacrev / jax.hessian / jax.jvp of the same expressions."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

rng = np.random.default_rng(0)
A = rng.standard_normal((4, 6))
B = rng.standard_normal((4, 4))
X0 = rng.standard_normal((2, 3))
V0 = rng.standard_normal((2, 3))
Z0 = rng.standard_normal(4)



def _build():
    x = gc.input("dx", (2, 3), "float64")
    z = gc.input("dz", (4,), "float64")
    v = gc.input("dv", (2, 3), "float64")
    y = gc.tanh(gc.einsum("ij,j->i", gc.const(A), gc.reshape(x, (6,)))) + gc.sum(x ** 2) * gc.sin(x[0, 0])
    f = gc.sum(gc.sin(z) * z ** 2) + gc.einsum("i,ij,j", z, gc.const(B), z) + gc.sum(gc.exp(z[:2]) * z[2:])
    fm = gc.sum(gc.cos(x) * x) * gc.sum(x)  # a Hessian over a matrix operand: (2, 3, 2, 3)
    return x, z, v, y, f, fm


def _np_y(x):
    return np.tanh(A @ x.reshape(-1)) + np.sum(x ** 2) * np.sin(x[0, 0])


def _np_f(z):
    return np.sum(np.sin(z) * z ** 2) + z @ B @ z + np.sum(np.exp(z[:2]) * z[2:])


def _np_fm(x):
    return np.sum(np.cos(x) * x) * np.sum(x)


def _fd(fun, x, h=1e-5):
    """Central differences: d fun / d x, shape fun(x).shape + x.shape."""
    out = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        e = e.reshape(x.shape)
        out.append((fun(x + e) - fun(x - e)) / (2 * h))
    return np.moveaxis(np.array(out).reshape(x.shape + np.shape(fun(x))), list(range(x.ndim)),
                       list(range(-x.ndim, 0)))


@pytest.fixture(scope="module")
def results():
    x, z, v, y, f, fm = _build()
    outs = [gc.jacobian(y, x), gc.hessian(f, z), gc.hessian(fm, x), gc.jvp(y, x, v)]
    got = {t: gc.compile(outs, target=t)(dx=X0, dz=Z0, dv=V0) for t in ("numpy", "cpu")}
    return got


def test_shapes_and_targets_agree(results):
    J, H, Hm, T = results["numpy"]
    assert J.shape == (4, 2, 3) and H.shape == (4, 4) and Hm.shape == (2, 3, 2, 3) and T.shape == (4,)
    for a, b in zip(results["numpy"], results["cpu"]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_against_finite_differences(results):
    J, H, Hm, T = results["numpy"]
    np.testing.assert_allclose(J, _fd(_np_y, X0), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(H, _fd(lambda z: _fd(_np_f, z, 1e-4), Z0, 1e-4), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(H, H.T, rtol=1e-12)
    np.testing.assert_allclose(Hm, _fd(lambda x: _fd(_np_fm, x, 1e-4), X0, 1e-4), rtol=1e-5, atol=1e-6)
    h = 1e-5
    np.testing.assert_allclose(T, (_np_y(X0 + h * V0) - _np_y(X0 - h * V0)) / (2 * h), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(T, np.tensordot(J, V0, 2), rtol=1e-12, atol=1e-12)


def test_against_jax(results):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def jy(x):
        return jnp.tanh(jnp.asarray(A) @ x.reshape(-1)) + jnp.sum(x ** 2) * jnp.sin(x[0, 0])

    def jf(z):
        return jnp.sum(jnp.sin(z) * z ** 2) + z @ jnp.asarray(B) @ z + jnp.sum(jnp.exp(z[:2]) * z[2:])

    def jfm(x):
        return jnp.sum(jnp.cos(x) * x) * jnp.sum(x)

    J, H, Hm, T = results["numpy"]
    jit = jax.jit  # one XLA compile each (eager JAX compiles every primitive: seconds)
    np.testing.assert_allclose(J, jit(jax.jacrev(jy))(jnp.asarray(X0)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H, jit(jax.hessian(jf))(jnp.asarray(Z0)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Hm, jit(jax.hessian(jfm))(jnp.asarray(X0)), rtol=1e-12, atol=1e-12)
    _, t = jit(lambda x, v: jax.jvp(jy, (x,), (v,)))(jnp.asarray(X0), jnp.asarray(V0))
    np.testing.assert_allclose(T, t, rtol=1e-12, atol=1e-12)


def test_jvp_over_the_batch_dimension_and_jacobian_of_several():
    x = gc.input("jb_x", (None, 3), "float64")
    W = gc.param("jb_w", (3, 2), init=rng.standard_normal((3, 2)), dtype="float64")
    v = gc.input("jb_v", (None, 3), "float64")
    y = gc.tanh(x @ W)
    t = gc.jvp(y, x, v)
    assert t.shape == (None, 2)
    Xb, Vb = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    f = gc.compile(t, target="cpu")
    Wv = f.params["jb_w"]
    want = (1 - np.tanh(Xb @ Wv) ** 2) * (Vb @ Wv)
    np.testing.assert_allclose(f(jb_x=Xb, jb_v=Vb), want, rtol=1e-12)
    # a list of operands gives a list of Jacobians
    a, b = gc.input("jl_a", (2,), "float64"), gc.input("jl_b", (3,), "float64")
    ja, jb = gc.jacobian(gc.sum(a) * b, [a, b])
    A2, B2 = np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0])
    Ja, Jb = gc.compile([ja, jb], target="numpy")(jl_a=A2, jl_b=B2)
    np.testing.assert_allclose(Ja, np.repeat(B2[:, None], 2, 1))
    np.testing.assert_allclose(Jb, np.eye(3) * A2.sum())


def test_errors():
    x = gc.input("je_x", (None, 3), "float64")
    with pytest.raises(gc.ShapeError, match=r"jacobian: y has the batch dimension.*test_derivatives"):
        gc.jacobian(gc.tanh(x), x)
    z = gc.input("je_z", (3,), "float64")
    with pytest.raises(gc.ShapeError, match="hessian: f must be a scalar, got shape"):
        gc.hessian(z * 2.0, z)
    with pytest.raises(gc.DTypeError, match="jacobian: x must be floating point, got int64"):
        gc.jacobian(gc.sum(z), gc.input("je_i", (2,), "int64"))
    with pytest.raises(gc.ShapeError, match=r"jvp: the tangent v has shape \(2,\), x has \(3,\)"):
        gc.jvp(z * 2.0, z, np.ones(2))
