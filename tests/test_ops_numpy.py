"""The op set a NumPy user writes: elementwise math, logic, activations, reductions, tensor
methods, shape helpers and constants, each against NumPy (or Keras' formula) on the numpy,
cpu and parallel targets, and each gradient against float64 finite differences and jax.grad.

Compiling is the expensive part, so every target compiles ONE program holding all the ops of
a group (built once per module); hypothesis (derandomized, as tests/test_properties.py's quick
suite) then feeds it values with NaN, infinities and signed zeros among them.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc

TARGETS = ("numpy", "cpu", "parallel")
QUICK = settings(max_examples=4, derandomize=True, deadline=None)
SHAPE_X, SHAPE_Y = (3, 1, 4), (1, 2, 4)  # size-1 dims that broadcast against each other
_erf = np.vectorize(math.erf, otypes=[float])
_erfc = np.vectorize(math.erfc, otypes=[float])
SELU_A, SELU_S = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _relu6(x):
    return np.minimum(np.maximum(x, 0), 6)


def _softplus(x):
    return np.logaddexp(x, 0)


# name: (graphc function, NumPy / Keras reference, gradient-check domain (lo, hi))
UNARY = {
    "sin": (gc.sin, np.sin, (-3, 3)), "cos": (gc.cos, np.cos, (-3, 3)), "tan": (gc.tan, np.tan, (-1.2, 1.2)),
    "arcsin": (gc.arcsin, np.arcsin, (-0.9, 0.9)), "arccos": (gc.arccos, np.arccos, (-0.9, 0.9)),
    "arctan": (gc.arctan, np.arctan, (-3, 3)), "sinh": (gc.sinh, np.sinh, (-3, 3)),
    "cosh": (gc.cosh, np.cosh, (-3, 3)), "arcsinh": (gc.arcsinh, np.arcsinh, (-3, 3)),
    "arccosh": (gc.arccosh, np.arccosh, (1.1, 4)), "arctanh": (gc.arctanh, np.arctanh, (-0.9, 0.9)),
    "exp2": (gc.exp2, np.exp2, (-3, 3)), "expm1": (gc.expm1, np.expm1, (-3, 3)),
    "log2": (gc.log2, np.log2, (0.1, 4)), "log10": (gc.log10, np.log10, (0.1, 4)),
    "reciprocal": (gc.reciprocal, lambda x: 1 / x, (0.3, 3)),
    "rsqrt": (gc.rsqrt, lambda x: 1 / np.sqrt(x), (0.3, 3)),
    "erf": (gc.erf, _erf, (-2, 2)), "erfc": (gc.erfc, _erfc, (-2, 2)),
    "floor": (gc.floor, np.floor, None), "ceil": (gc.ceil, np.ceil, None),
    "round": (gc.round, np.round, None), "trunc": (gc.trunc, np.trunc, None),
    "silu": (gc.silu, lambda x: x / (1 + np.exp(-x)), (-4, 4)),
    "selu": (gc.selu, lambda x: SELU_S * np.where(x > 0, x, SELU_A * np.expm1(np.minimum(x, 0))), (-3, 3)),
    "relu6": (gc.relu6, _relu6, (-2, 8)),
    "hard_sigmoid": (gc.hard_sigmoid, lambda x: _relu6(x + 3) / 6, (-5, 5)),
    "hard_swish": (gc.hard_swish, lambda x: x * _relu6(x + 3) / 6, (-5, 5)),
    "mish": (gc.mish, lambda x: x * np.tanh(_softplus(x)), (-4, 4)),
    "log_sigmoid": (gc.log_sigmoid, lambda x: -_softplus(-x), (-4, 4)),
}
# boolean results
PREDICATES = {"isnan": (gc.isnan, np.isnan), "isinf": (gc.isinf, np.isinf),
              "isfinite": (gc.isfinite, np.isfinite), "logical_not": (gc.logical_not, np.logical_not)}
BINARY = {
    "arctan2": (gc.arctan2, np.arctan2, True), "mod": (gc.mod, np.mod, True),
    "remainder": (gc.remainder, np.remainder, False), "floor_divide": (gc.floor_divide, np.floor_divide, False),
    "logical_and": (gc.logical_and, np.logical_and, False), "logical_or": (gc.logical_or, np.logical_or, False),
    "logical_xor": (gc.logical_xor, np.logical_xor, False),
}
# jax.numpy / jax.nn names of the same functions, for the gradient comparison
JAX_NAMES = {"silu": "nn.silu", "selu": "nn.selu", "relu6": "nn.relu6", "hard_sigmoid": "nn.hard_sigmoid",
             "hard_swish": "nn.hard_swish", "mish": "nn.mish", "log_sigmoid": "nn.log_sigmoid",
             "erf": "scipy.special.erf", "erfc": "scipy.special.erfc", "rsqrt": "lax.rsqrt"}

_PROGRAMS: dict = {}


def _elementwise_program(target, dtype):
    key = ("elementwise", target, dtype)
    if key not in _PROGRAMS:
        x, y = gc.input("x", SHAPE_X, dtype=dtype), gc.input("y", SHAPE_Y, dtype=dtype)
        outs = [f(x) for f, _, _ in UNARY.values()] + [f(x) for f, _ in PREDICATES.values()]
        outs += [f(x, y) for f, _, _ in BINARY.values()]
        _PROGRAMS[key] = gc.compile(outs, target=target, check_finite=False)
    return _PROGRAMS[key]


def _values(draw_shape):
    special = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 3.0, -3.0, 6.0])
    finite = st.floats(-8, 8, allow_nan=False, width=32)
    n = int(np.prod(draw_shape))
    return st.lists(st.one_of(special, finite), min_size=n, max_size=n).map(
        lambda v: np.asarray(v, dtype=np.float64).reshape(draw_shape))


def _expected(xv, yv):
    with np.errstate(all="ignore"):
        out = [ref(xv) for _, ref, _ in UNARY.values()] + [ref(xv) for _, ref in PREDICATES.values()]
        out += [ref(xv, yv) for _, ref, _ in BINARY.values()]
    return out


NAMES = list(UNARY) + list(PREDICATES) + list(BINARY)


def _compare(got, want, dtype, names):
    tol = {"float64": 1e-12, "float32": 2e-6}[dtype]
    for name, g, w in zip(names, got, want):
        assert g.shape == np.shape(w), name
        if np.asarray(w).dtype == bool:
            assert g.dtype == bool and np.array_equal(g, w), name
            continue
        assert g.dtype == np.dtype(dtype), name
        np.testing.assert_allclose(g, np.asarray(w).astype(dtype), rtol=tol, atol=tol, equal_nan=True,
                                   err_msg=name)
        # infinities and NaN in the same places, exactly
        assert np.array_equal(np.isnan(g), np.isnan(np.asarray(w, dtype=dtype))), name


@pytest.mark.parametrize("target", TARGETS)
@QUICK
@given(xv=_values(SHAPE_X), yv=_values(SHAPE_Y))
def test_elementwise_math_matches_numpy_float64(target, xv, yv):
    got = _elementwise_program(target, "float64")(x=xv, y=yv)
    _compare(got, _expected(xv, yv), "float64", NAMES)


@pytest.mark.parametrize("target", ("cpu", "parallel"))
def test_elementwise_math_matches_numpy_float32(target):
    rng = np.random.default_rng(3)
    xv = rng.uniform(-5, 5, SHAPE_X).astype(np.float32)
    yv = rng.uniform(-5, 5, SHAPE_Y).astype(np.float32)
    xv.flat[:6] = [np.nan, np.inf, -np.inf, 2.5, -0.5, 0.5]
    got = _elementwise_program(target, "float32")(x=xv, y=yv)
    want = _elementwise_program("numpy", "float32")(x=xv, y=yv)
    _compare(got, want, "float32", NAMES)
    # the rounding trick's constants are float32's: half-to-even on float32 values
    np.testing.assert_array_equal(got[NAMES.index("round")], np.round(xv))


def test_rounding_edge_cases_are_numpy_s():
    x = gc.input("x", (10,), dtype="float64")
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -0.2, 2.0 ** 52 + 1, -(2.0 ** 53), 4.4e15 + 0.5, 1e300])
    f = gc.compile([gc.round(x), gc.floor(x), gc.ceil(x), gc.trunc(x)], target="cpu")
    for got, ref in zip(f(x=v), (np.round, np.floor, np.ceil, np.trunc)):
        np.testing.assert_array_equal(got, ref(v))
        np.testing.assert_array_equal(np.signbit(got), np.signbit(ref(v)))  # -0.0 where NumPy has it


def test_mod_and_floor_divide_follow_the_divisor_sign_and_int_rules():
    a, b = gc.input("a", (6,), dtype="int64"), gc.input("b", (6,), dtype="int64")
    f = gc.compile([gc.mod(a, b), gc.floor_divide(a, b), a % b, a // b, 7 % b, 7 // b], target="cpu")
    av, bv = np.array([7, -7, 7, -7, 0, 5]), np.array([3, 3, -3, -3, 2, 1])
    m, q, m2, q2, m3, q3 = f(a=av, b=bv)
    for got, want in ((m, np.mod(av, bv)), (q, av // bv), (m2, av % bv), (q2, av // bv), (m3, 7 % bv), (q3, 7 // bv)):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)


def test_float_only_ops_reject_integers_with_a_typed_error():
    i = gc.input("i", (3,), dtype="int32")
    with pytest.raises(gc.DTypeError, match=r"sin.*int32.*test_ops_numpy.py"):
        gc.sin(i)
    assert gc.floor(i) is i  # integers are integral: NumPy's floor keeps their values


@pytest.mark.parametrize("name", [n for n, v in UNARY.items() if v[2] is not None])
def test_unary_gradients_match_finite_differences(name):
    fn, _, (lo, hi) = UNARY[name]
    x = gc.input("x", (2, 3), dtype="float64")
    xv = np.random.default_rng(7).uniform(lo, hi, (2, 3))
    if name == "relu6":  # away from the kinks at 0 and 6
        xv = np.array([[-1.0, 0.5, 3.0], [5.5, 7.0, 2.0]])
    if name in ("hard_sigmoid", "hard_swish"):
        xv = np.array([[-4.0, -2.5, 0.3], [1.0, 2.5, 4.0]])
    rep = gc.check_grads(gc.sum(fn(x) * np.arange(1.0, 7.0).reshape(2, 3)), [x], feeds={"x": xv})
    assert max(rep.values()) < 1e-6


def test_binary_gradients_match_finite_differences():
    a, b = gc.input("a", (2, 3), dtype="float64"), gc.input("b", (1, 3), dtype="float64")
    rng = np.random.default_rng(8)
    av, bv = rng.uniform(-3, 3, (2, 3)), rng.uniform(0.7, 2, (1, 3)) * np.array([1, -1, 1])
    for fn in (gc.arctan2, gc.mod):
        rep = gc.check_grads(gc.sum(fn(a, b) * np.arange(1.0, 7.0).reshape(2, 3)), [a, b],
                             feeds={"a": av, "b": bv})
        assert max(rep.values()) < 1e-6, fn


def _gc_grad(fn, *vals):
    xs = [gc.input(f"x{i}", v.shape, dtype="float64") for i, v in enumerate(vals)]
    gs = gc.grad(gc.sum(fn(*xs)), xs)
    return gc.evaluate(gs, {f"x{i}": v for i, v in enumerate(vals)}, {})


def _jax_fn(name):
    import jax
    obj = jax.numpy
    for part in JAX_NAMES.get(name, name).split("."):
        obj = getattr(jax if part in ("nn", "scipy", "lax") and obj is jax.numpy else obj, part)
    return obj


def test_gradients_match_jax_grad_including_the_kinks():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    kinks = np.array([-3.0, -2.0, -0.5, 0.0, 0.5, 1.5, 2.5, 3.0, 6.0, 7.0, 0.7, -0.7])
    names = list(UNARY)
    vals = np.stack([np.linspace(*UNARY[n][2], 12) if n in ("tan", "arcsin", "arccos", "arccosh", "arctanh", "log2",
                                                            "log10", "reciprocal", "rsqrt") else kinks
                     for n in names])
    fns = [_jax_fn(n) for n in names]
    # one jax.grad over all the ops (row i of the operand feeds op i): one trace, not thirty
    want = np.asarray(jax.jit(jax.grad(lambda t: sum(jnp.sum(f(t[i])) for i, f in enumerate(fns))))(jnp.asarray(vals)))
    for i, name in enumerate(names):
        (got,) = _gc_grad(UNARY[name][0], vals[i])
        np.testing.assert_allclose(got, want[i], rtol=1e-10, atol=1e-12, err_msg=name)
    a, b = np.array([3.5, -3.5, 3.5, -3.5, 1.0]), np.array([2.0, 2.0, -2.0, -2.0, 0.3])
    for name in ("arctan2", "mod", "remainder"):
        jf = _jax_fn(name)
        want = jax.jit(jax.grad(lambda p, q: jnp.sum(jf(p, q)), argnums=(0, 1)))(jnp.asarray(a), jnp.asarray(b))
        got = _gc_grad(BINARY[name][0], a, b)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, np.asarray(w), rtol=1e-10, err_msg=name)


def test_activations_by_name_in_graphc_nn():
    from graphc.nn import activations
    x = gc.input("x", (5,), dtype="float64")
    v = np.array([-4.0, -1.0, 0.0, 1.0, 4.0])
    names = ["relu6", "hard_sigmoid", "hard_silu", "hard_swish", "mish", "log_sigmoid", "silu", "swish", "selu"]
    f = gc.compile([activations.get(n)[1](x) for n in names], target="numpy")
    ref = {"relu6": _relu6, "hard_sigmoid": lambda t: _relu6(t + 3) / 6, "hard_silu": lambda t: t * _relu6(t + 3) / 6,
           "mish": lambda t: t * np.tanh(_softplus(t)), "log_sigmoid": lambda t: -_softplus(-t),
           "silu": lambda t: t / (1 + np.exp(-t)), "selu": UNARY["selu"][1]}
    ref["hard_swish"], ref["swish"] = ref["hard_silu"], ref["silu"]
    for n, got in zip(names, f(x=v)):
        np.testing.assert_allclose(got, ref[n](v), rtol=1e-12, err_msg=n)


# ---- reductions, tensor methods, shape helpers and constants -------------------------------

def _reduction_cases(x, b):
    """(name, graphc value, NumPy reference of the fed values ``v``, ``bv``)."""
    return [
        ("min(1)", gc.min(x, 1), lambda v, bv: np.min(v, 1)),
        ("min keepdims", gc.min(x, (0, 2), keepdims=True), lambda v, bv: np.min(v, (0, 2), keepdims=True)),
        ("min all", x.min(), lambda v, bv: v.min()),
        ("max(axis)", x.max(axis=2), lambda v, bv: v.max(axis=2)),
        ("prod", gc.prod(x, -1), lambda v, bv: np.prod(v, -1)),
        ("prod all", x.prod(), lambda v, bv: v.prod()),
        ("any", gc.any(x, 1), lambda v, bv: np.any(v, 1)),
        ("any bool", gc.any(b, (0, 1), keepdims=True), lambda v, bv: np.any(bv, (0, 1), keepdims=True)),
        ("all", x.all(2), lambda v, bv: v.all(2)),
        ("all bool", gc.all(b), lambda v, bv: np.all(bv)),
        ("norm", gc.norm(x), lambda v, bv: np.linalg.norm(v)),
        ("norm 1", gc.norm(x, 1, axis=1), lambda v, bv: np.linalg.norm(v, 1, axis=1)),
        ("norm inf", gc.norm(x, np.inf, axis=-1, keepdims=True), lambda v, bv: np.linalg.norm(v, np.inf, -1, True)),
        ("norm 3", gc.norm(x, 3, axis=0), lambda v, bv: np.linalg.norm(v, 3, axis=0)),
        ("norm fro", gc.norm(x, "fro", axis=(1, 2)), lambda v, bv: np.linalg.norm(v, "fro", axis=(1, 2))),
        ("norm mat 1", gc.norm(x, 1, axis=(1, 2)), lambda v, bv: np.linalg.norm(v, 1, axis=(1, 2))),
        ("norm mat -inf", gc.norm(x, -np.inf, axis=(2, 1)), lambda v, bv: np.linalg.norm(v, -np.inf, axis=(2, 1))),
        ("cumsum", gc.cumsum(x, 1), lambda v, bv: np.cumsum(v, 1)),
        ("cumsum flat", x.cumsum(), lambda v, bv: v.cumsum()),
        ("cumsum reverse", gc.cumsum(x, -1, reverse=True), lambda v, bv: np.flip(np.cumsum(np.flip(v, -1), -1), -1)),
        ("cumsum bool", gc.cumsum(b, 0), lambda v, bv: np.cumsum(bv, 0)),
        ("cumprod", gc.cumprod(x, 2), lambda v, bv: np.cumprod(v, 2)),
        ("cumprod reverse", gc.cumprod(x, 0, reverse=True), lambda v, bv: np.flip(np.cumprod(np.flip(v, 0), 0), 0)),
        ("argmax flat", x.argmax(), lambda v, bv: v.argmax()),
        ("argmin", x.argmin(1), lambda v, bv: v.argmin(1)),
        ("argmax keepdims", gc.argmax(x, None, keepdims=True), lambda v, bv: np.argmax(v, None, keepdims=True)),
        ("sum", x.sum(), lambda v, bv: v.sum()),
        ("mean", x.mean(axis=(0, 1)), lambda v, bv: v.mean(axis=(0, 1))),
        ("astype", x.astype("float32"), lambda v, bv: v.astype(np.float32)),
        ("T", x.T, lambda v, bv: v.T),
        ("transpose method", x.transpose(1, 0, 2), lambda v, bv: v.transpose(1, 0, 2)),
        ("reshape", x.reshape(4, 6), lambda v, bv: v.reshape(4, 6)),
        ("squeeze", gc.squeeze(gc.expand_dims(x, 1)), lambda v, bv: np.squeeze(v[:, None])),
        ("squeeze axis", gc.expand_dims(x, 0).squeeze(0), lambda v, bv: v),
        ("flatten", x.flatten(), lambda v, bv: v.flatten()),
        ("ravel", gc.ravel(x), lambda v, bv: np.ravel(v)),
        ("flip", gc.flip(x, (0, 2)), lambda v, bv: np.flip(v, (0, 2))),
        ("flip all", gc.flip(x), lambda v, bv: np.flip(v)),
        ("tile", gc.tile(x, (2, 1, 3)), lambda v, bv: np.tile(v, (2, 1, 3))),
        ("tile short", gc.tile(x, 2), lambda v, bv: np.tile(v, 2)),
        ("tile long", gc.tile(x, (2, 1, 1, 1)), lambda v, bv: np.tile(v, (2, 1, 1, 1))),
        ("repeat", gc.repeat(x, 2, 1), lambda v, bv: np.repeat(v, 2, 1)),
        ("repeat list", gc.repeat(x, [1, 0, 2], 1), lambda v, bv: np.repeat(v, [1, 0, 2], 1)),
        ("repeat flat", gc.repeat(x, 2), lambda v, bv: np.repeat(v, 2)),
        ("roll", gc.roll(x, 1, 2), lambda v, bv: np.roll(v, 1, 2)),
        ("roll neg tuple", gc.roll(x, (-1, 5), (0, 1)), lambda v, bv: np.roll(v, (-1, 5), (0, 1))),
        ("roll flat", gc.roll(x, 7), lambda v, bv: np.roll(v, 7)),
        ("moveaxis", gc.moveaxis(x, 0, -1), lambda v, bv: np.moveaxis(v, 0, -1)),
        ("moveaxis pair", gc.moveaxis(x, (0, 1), (2, 0)), lambda v, bv: np.moveaxis(v, (0, 1), (2, 0))),
        ("tril", gc.tril(x), lambda v, bv: np.tril(v)),
        ("tril k", gc.tril(x, -1), lambda v, bv: np.tril(v, -1)),
        ("triu k", gc.triu(x, 2), lambda v, bv: np.triu(v, 2)),
        ("triu bool", gc.triu(b), lambda v, bv: np.triu(bv)),
        ("constants", gc.eye(3, 4, 1) + gc.arange(4.0) + gc.linspace(0, 1, 4) + gc.full((3, 4), 2.5) + gc.ones(4)
         - gc.zeros((1, 4)), lambda v, bv: np.eye(3, 4, 1) + np.arange(4.0) + np.linspace(0, 1, 4) + 2.5 + 1),
    ]


SHAPE_R = (2, 3, 4)


def _reduction_program(target):
    key = ("reductions", target)
    if key not in _PROGRAMS:
        x, b = gc.input("x", SHAPE_R, dtype="float64"), gc.input("b", SHAPE_R, dtype="bool")
        cases = _reduction_cases(x, b)
        _PROGRAMS[key] = (gc.compile([c[1] for c in cases], target=target, check_finite=False), cases)
    return _PROGRAMS[key]


@pytest.mark.parametrize("target", TARGETS)
@QUICK
@given(v=_values(SHAPE_R), bits=st.lists(st.booleans(), min_size=24, max_size=24))
def test_reductions_methods_and_shape_helpers_match_numpy(target, v, bits):
    bv = np.asarray(bits).reshape(SHAPE_R)
    f, cases = _reduction_program(target)
    for (name, node, ref), got in zip(cases, f(x=v, b=bv)):
        with np.errstate(all="ignore"):
            want = np.asarray(ref(v, bv))
        assert got.shape == want.shape, name
        # as NumPy's, but graphc's constants are float32 by default (as JAX's)
        assert got.dtype == (np.float32 if name in ("constants", "astype") else want.dtype), name
        tol = 1e-12 if got.dtype != np.float32 else 1e-6
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, equal_nan=True, err_msg=name)


def test_reduction_and_helper_gradients_match_finite_differences():
    x = gc.input("x", SHAPE_R, dtype="float64")
    v = np.random.default_rng(11).uniform(0.5, 2.0, SHAPE_R) * np.where(np.arange(24) % 3, 1, -1).reshape(SHAPE_R)
    w = np.random.default_rng(12)
    for name, node, _ in _reduction_cases(x, gc.input("b", SHAPE_R, dtype="bool")):
        if node.dtype.kind != "f" or "bool" in name or name in ("astype", "constants"):
            continue
        y = gc.sum(node * w.normal(size=node.shape))
        rep = gc.check_grads(y, [x], feeds={"x": v})
        assert max(rep.values()) < 1e-6, name


def test_prod_gradient_with_zeros_is_exact():
    x = gc.input("x", (3, 4), dtype="float64")
    v = np.array([[0.0, 2.0, 3.0, 4.0], [0.0, 0.0, 3.0, 4.0], [1.5, 2.0, 3.0, 4.0]])
    (g,) = gc.evaluate([gc.grad(gc.sum(gc.prod(x, 1)), x)], {"x": v}, {})
    want = np.array([[24.0, 0, 0, 0], [0, 0, 0, 0], [24.0, 18.0, 12.0, 9.0]])
    np.testing.assert_array_equal(g, want)
    (g2,) = gc.evaluate([gc.grad(gc.sum(gc.cumprod(x, 1)), x)], {"x": v}, {})
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    np.testing.assert_allclose(g2, jax.grad(lambda t: jax.numpy.sum(jax.numpy.cumprod(t, 1)))(v), rtol=1e-12)


def test_reduction_gradients_match_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    v = np.array([[1.0, 3.0, 3.0, -2.0], [0.5, -4.0, 2.0, -4.0]])  # ties in max and min
    pairs = [(lambda t: gc.min(t, 1), lambda t: jnp.min(t, 1)), (lambda t: gc.max(t, 1), lambda t: jnp.max(t, 1)),
             (lambda t: gc.norm(t, np.inf, 1), lambda t: jnp.linalg.norm(t, jnp.inf, 1)),
             (lambda t: gc.norm(t, 1, (0, 1)), lambda t: jnp.linalg.norm(t, 1, (0, 1))),
             (lambda t: gc.cumsum(t, 1, reverse=True), lambda t: jax.lax.cumsum(t, 1, reverse=True)),
             (lambda t: gc.prod(t, 0), lambda t: jnp.prod(t, 0)), (gc.norm, jnp.linalg.norm),
             (lambda t: gc.roll(t, 1, 1), lambda t: jnp.roll(t, 1, 1)), (gc.tril, jnp.tril)]
    for i, (gf, jf) in enumerate(pairs):
        (got,) = _gc_grad(lambda t: gf(t) * np.arange(1.0, 1.0 + np.prod(gf(t).shape)).reshape(gf(t).shape), v)
        want = jax.jit(jax.grad(lambda t: jnp.sum(jf(t) * jnp.arange(1.0, 1.0 + jf(t).size).reshape(jf(t).shape))))(v)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=str(i))


def test_min_max_nan_rules_and_bad_arguments():
    x = gc.input("x", (2, 0), dtype="float64")
    with pytest.raises(gc.ShapeError, match=r"min: zero-size.*test_ops_numpy.py"):
        gc.min(x, 1)
    with pytest.raises(gc.ShapeError, match=r"max: zero-size"):  # the numpy target raised, cpu gave -inf
        gc.max(x, 1)
    assert gc.compile(gc.prod(x, 1), target="numpy")(x=np.zeros((2, 0))).tolist() == [1.0, 1.0]
    y = gc.input("y", (3, 4), dtype="float32")
    with pytest.raises(gc.ShapeError, match=r"squeeze: cannot squeeze axis 0"):
        gc.squeeze(y, 0)
    with pytest.raises(ValueError, match=r"norm: matrix norm ord='nuc'"):
        gc.norm(y, "nuc")
    with pytest.raises(gc.ShapeError, match="tril: needs an operand of rank >= 2"):
        gc.tril(gc.input("z", (3,)))
    with pytest.raises(ValueError, match="repeat: repeats must be"):
        gc.repeat(y, -1)
    b = gc.input("b", (None, 3))
    with pytest.raises(gc.ShapeError, match="cumsum: axis 0 is the batch dimension"):
        gc.cumsum(b, 0)
    k = gc.input("k", (None, 3), dtype="int64")  # integer accumulators: min's init is int64's max
    f = gc.compile([gc.cumsum(b, 1), gc.squeeze(gc.expand_dims(b, -1)), gc.min(b, 0), b.argmax(1),
                    gc.min(k, 1), gc.prod(k, 0), gc.cumprod(k, 1), k.all(1)], target="cpu")
    bv = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    kv = np.array([[2 ** 62, -3, 5], [7, 0, 2 ** 40]])
    c, s, m, a, km, kp, kc, ka = f(b=bv, k=kv)
    for got, want in ((km, kv.min(1)), (kp, kv.prod(0)), (kc, kv.cumprod(1)), (ka, kv.all(1))):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(c, np.cumsum(bv, 1))
    np.testing.assert_array_equal(s, bv)
    np.testing.assert_array_equal(m, bv.min(0))
    np.testing.assert_array_equal(a, bv.argmax(1))


def test_readme_op_table_is_true():
    """Every name in the README's table against jax.numpy exists (as gc.f, or x.f for the
    methods row); the first list of the "Not in graphc" row does not."""
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [r for r in text[text.index("The op set against `jax.numpy`"):].split("\n\n")[1].splitlines()
            if r.strip().startswith("| ") and not r.strip().startswith("| Group")]
    assert len(rows) >= 9
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        spans = re.findall(r"`([^`]*)`", cells[1])
        absent = cells[0] == "Not in graphc"
        for word in (spans[0] if absent else " ".join(spans)).split():
            if not re.fullmatch(r"\.?[a-z_0-9]+", word):
                continue
            exists = hasattr(gc.Tensor, word[1:]) if word.startswith(".") else callable(getattr(gc, word, None))
            assert exists != absent, f"README op table, row {cells[0]!r}: {word}"


def test_zero_size_operands_give_numpy_s_identities():
    x = gc.input("x", (0, 3), dtype="float64")
    outs = [gc.sin(x), gc.any(x, 0), gc.all(x, 0), gc.cumsum(x, 0), gc.prod(x, 0), gc.round(x), gc.tril(x),
            gc.norm(x, axis=0)]
    got = gc.compile(outs, target="cpu")(x=np.zeros((0, 3)))
    v = np.zeros((0, 3))
    want = [np.sin(v), v.any(0), v.all(0), v.cumsum(0), v.prod(0), v.round(), np.tril(v), np.linalg.norm(v, axis=0)]
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def test_mask_operators_and_builtin_round():
    x = gc.input("x", (2, 3), dtype="float32")
    m = x > 0
    f = gc.compile([m & (x < 2), m | True, m ^ (x < 2), ~m, round(x)], target="numpy")
    v = np.array([[-1.0, 0.5, 2.5], [3.0, -0.0, 1.5]], np.float32)
    got = f(x=v)
    want = [(v > 0) & (v < 2), (v > 0) | True, (v > 0) ^ (v < 2), ~(v > 0), np.round(v)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    with pytest.raises(gc.DTypeError, match=r"operator &: takes boolean tensors"):
        gc.input("i", (3,), dtype="int32") & gc.input("j", (3,), dtype="int32")


def test_gelu_exact_and_approximate_as_jax_torch_and_keras():
    """gc.gelu(approximate=True) is jax.nn.gelu's default (tanh); approximate=False and
    graphc.nn's "gelu" are the erf form that torch's default and Keras 3's "gelu" compute."""
    from scipy.special import erf
    from graphc.nn import activations
    x = gc.input("x", (None, 7), dtype="float64")
    v = np.linspace(-5.0, 5.0, 21).reshape(3, 7)
    exact = 0.5 * v * (1.0 + erf(v / np.sqrt(2.0)))
    tanh = 0.5 * v * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (v + 0.044715 * v ** 3)))
    outs = gc.evaluate([gc.gelu(x, approximate=False), gc.gelu(x), activations.get("gelu")[1](x)], {"x": v}, {})
    np.testing.assert_allclose(outs[0], exact, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(outs[1], tanh, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(outs[2], exact, rtol=1e-14, atol=1e-15)
    assert np.abs(exact - tanh).max() > 1e-4  # the two forms are distinguishable
    (g,) = gc.grad(gc.sum(gc.gelu(x, approximate=False)), [x])
    pdf = np.exp(-v * v / 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(gc.evaluate([g], {"x": v}, {})[0], 0.5 * (1 + erf(v / np.sqrt(2))) + v * pdf,
                               rtol=1e-12, atol=1e-14)
