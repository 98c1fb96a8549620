"""NumPy's elementwise math beyond arithmetic: trigonometry, exponentials and logarithms,
rounding, modulo, erf, the float predicates, logic, and Keras' piecewise activations.

Each op is one elementwise OpDef as in elementwise.py. Templates use only arithmetic,
comparisons, selects and ``math.*`` functions that both Numba (cpu fallback, parallel, cuda)
and graphc's own cpu kernel compiler know. Rounding is arithmetic, not ``math.floor`` (which
returns an int in Numba's cpu target, overflowing on inf/NaN): adding and subtracting
``1.5 * 2**(mantissa bits)`` rounds half to even in the operand's own precision, which is
``np.round``; floor/ceil/trunc correct that by one, and ``x * 0.0`` restores the sign of a
zero result (``np.ceil(-0.5)`` is ``-0.0``). NaN and inf pass through unchanged.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dsl as F
from .base import OpDef, broadcast_shapes, register
from .elementwise import _binary, _unary, _unb

_LN2 = math.log(2.0)
_LN10 = math.log(10.0)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

# ---- trigonometric and hyperbolic ------------------------------------------------------------

_unary("sin", np.sin, "math.sin({0})", lambda y, g: [g * F.cos(y.inputs[0])])
_unary("cos", np.cos, "math.cos({0})", lambda y, g: [-(g * F.sin(y.inputs[0]))])
_unary("tan", np.tan, "math.tan({0})", lambda y, g: [g * (1.0 + y * y)])
_unary("arcsin", np.arcsin, "math.asin({0})",
       lambda y, g: [g / F.sqrt(1.0 - F.square(y.inputs[0]))])
_unary("arccos", np.arccos, "math.acos({0})",
       lambda y, g: [-(g / F.sqrt(1.0 - F.square(y.inputs[0])))])
_unary("arctan", np.arctan, "math.atan({0})", lambda y, g: [g / (1.0 + F.square(y.inputs[0]))])
_unary("sinh", np.sinh, "math.sinh({0})", lambda y, g: [g * F.cosh(y.inputs[0])])
_unary("cosh", np.cosh, "math.cosh({0})", lambda y, g: [g * F.sinh(y.inputs[0])])
_unary("arcsinh", np.arcsinh, "math.asinh({0})",
       lambda y, g: [g / F.sqrt(F.square(y.inputs[0]) + 1.0)])
_unary("arccosh", np.arccosh, "math.acosh({0})",
       lambda y, g: [g / F.sqrt(F.square(y.inputs[0]) - 1.0)])
_unary("arctanh", np.arctanh, "math.atanh({0})", lambda y, g: [g / (1.0 - F.square(y.inputs[0]))])


def _atan2_vjp(y, g):
    a, b = y.inputs
    den = F.square(a) + F.square(b)
    return [_unb(g * b / den, a), _unb(-(g * a) / den, b)]


_binary("arctan2", np.arctan2, "math.atan2({0}, {1})", _atan2_vjp, float_only=True)

# ---- exponentials and logarithms ------------------------------------------------------------

_unary("exp2", np.exp2, "(2.0 ** {0})", lambda y, g: [g * y * _LN2])
_unary("expm1", np.expm1, "math.expm1({0})", lambda y, g: [g * (y + 1.0)])
_unary("log2", np.log2, "math.log2({0})", lambda y, g: [g / (y.inputs[0] * _LN2)])
_unary("log10", np.log10, "math.log10({0})", lambda y, g: [g / (y.inputs[0] * _LN10)])
_unary("reciprocal", np.reciprocal, "(1.0 / {0})", lambda y, g: [-(g * y * y)])
_unary("rsqrt", lambda x: 1 / np.sqrt(x), "(1.0 / math.sqrt({0}))", lambda y, g: [g * -0.5 * y * y * y],
       doc="1 / sqrt(x) (jax.lax.rsqrt)")


def _erf_np(fn):
    vec = np.vectorize(fn, otypes=[np.float64])
    return lambda x: vec(x)


_unary("erf", _erf_np(math.erf), "math.erf({0})",
       lambda y, g: [g * _TWO_OVER_SQRT_PI * F.exp(-F.square(y.inputs[0]))])
_unary("erfc", _erf_np(math.erfc), "math.erfc({0})",
       lambda y, g: [-(g * _TWO_OVER_SQRT_PI * F.exp(-F.square(y.inputs[0])))])

# ---- rounding (zero gradient, as JAX defines it) --------------------------------------------

_RINT = "(({0} + {magic}) - {magic})"  # round half to even for |x| < 2**mantissa_bits
_BIG = "(abs({0}) < {big})"  # else x is integral (or inf/NaN) already


def _rounding(body: str) -> str:
    r = body.format(r=_RINT)
    return f"({{0}} if not {_BIG} else (({r}) if ({r}) != 0.0 else {{0}} * 0.0))"


def _rounding_attrs(dtype) -> dict:
    bits = np.finfo(dtype).nmant
    return {"magic": 1.5 * 2.0 ** bits, "big": 2.0 ** bits}


_nograd = lambda y, g: [None]  # noqa: E731
_unary("round", lambda x, magic, big: np.round(x), _rounding("{r}"), _nograd,
       doc="round half to even (np.round with decimals=0)")
_unary("floor", lambda x, magic, big: np.floor(x), _rounding("{r} - (1.0 if {r} > {{0}} else 0.0)"), _nograd)
_unary("ceil", lambda x, magic, big: np.ceil(x), _rounding("{r} + (1.0 if {r} < {{0}} else 0.0)"), _nograd)
_unary("trunc", lambda x, magic, big: np.trunc(x),
       _rounding("({r} - (1.0 if {r} > {{0}} else 0.0) if {{0}} >= 0.0 else {r} + (1.0 if {r} < {{0}} else 0.0))"),
       _nograd)


# ---- modulo and floor division -------------------------------------------------------------

def _mod_vjp(y, g):
    a, b = y.inputs
    if y.dtype.kind != "f":
        return [None, None]
    return [_unb(g, a), _unb(-(g * F.floor(a / b)), b)]  # JAX's: d/db = -floor(a / b)


# Python's and NumPy's remainder: the sign of the divisor; x % 0 is NaN for floats, 0 for ints
_binary("mod", np.remainder, "({0} % {1})", _mod_vjp)
_binary("floor_divide", np.floor_divide, "({0} // {1})", lambda y, g: [None, None])


# ---- float predicates and logic (boolean results, no gradient) -----------------------------

def _predicate(name, np_fn, template):
    def infer(inputs, attrs):
        return inputs[0].shape, np.dtype(bool)

    def evaluate(args, attrs, node):
        with np.errstate(all="ignore"):
            return np.asarray(np_fn(args[0]), dtype=bool)

    register(OpDef(name, "elementwise", infer, evaluate, lambda y, g: [None], template))


_predicate("isnan", np.isnan, "math.isnan({0})")
_predicate("isinf", np.isinf, "math.isinf({0})")
_predicate("isfinite", np.isfinite, "math.isfinite({0})")
_predicate("logical_not", np.logical_not, "({0} == 0)")


def _logic(name, np_fn, template):
    def infer(inputs, attrs):
        return broadcast_shapes(inputs[0].shape, inputs[1].shape), np.dtype(bool)

    def evaluate(args, attrs, node):
        return np.asarray(np_fn(args[0], args[1]), dtype=bool)

    register(OpDef(name, "elementwise", infer, evaluate, lambda y, g: [None, None], template))


# ``!= 0`` makes booleans of numbers (NaN is true, as in NumPy); ``&``/``|`` do not branch
_logic("logical_and", np.logical_and, "(({0} != 0) & ({1} != 0))")
_logic("logical_or", np.logical_or, "(({0} != 0) | ({1} != 0))")
_logic("logical_xor", np.logical_xor, "(({0} != 0) != ({1} != 0))")


# ---- Keras 3 activations (keras.activations; gradients as jax.nn defines them) --------------

def _sig(x):
    return 0.5 * (np.tanh(0.5 * x) + 1)


def _softplus_np(x):
    return np.logaddexp(x, 0)


def _silu_vjp(y, g):
    x = y.inputs[0]
    s = F.sigmoid(x)
    return [g * (s + x * s * (1.0 - s))]


_unary("silu", lambda x: x * _sig(x), "({0} / (1.0 + math.exp(-{0})))", _silu_vjp, doc="x * sigmoid(x)")

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _selu_np(x):
    t = x.dtype.type
    return t(SELU_SCALE) * np.where(x > 0, x, t(SELU_ALPHA) * np.expm1(np.minimum(x, 0)))


_unary("selu", _selu_np,
       f"({SELU_SCALE!r} * ({{0}} if {{0}} > 0 else {SELU_ALPHA!r} * (math.exp({{0}}) - 1.0)))",
       lambda y, g: [F.where(y.inputs[0] > 0.0, g * SELU_SCALE, g * (y + SELU_SCALE * SELU_ALPHA))])

# relu6(NaN) is NaN (the unordered compare keeps it, as relu's template); the gradient is 1 on
# the open interval (0, 6) only, as jax.nn.relu6's
_RELU6 = "(6.0 if {a} > 6.0 else ({a} if not ({a} <= 0) else 0.0))"
_unary("relu6", lambda x: np.minimum(np.maximum(x, 0), 6), _RELU6.format(a="{0}"),
       lambda y, g: [F.where(F.logical_and(y.inputs[0] > 0.0, y.inputs[0] < 6.0), g, 0.0)])


def _hsig_np(x):
    t = x.dtype.type
    return np.minimum(np.maximum(x + t(3), 0), 6) / t(6)


def _inside3(x):
    return F.logical_and(x > -3.0, x < 3.0)


_unary("hard_sigmoid", _hsig_np, "(" + _RELU6.format(a="({0} + 3.0)") + " / 6.0)",
       lambda y, g: [F.where(_inside3(y.inputs[0]), g * (1.0 / 6.0), 0.0)],
       doc="relu6(x + 3) / 6 (Keras 3 and jax.nn)")
_unary("hard_swish", lambda x: x * _hsig_np(x), "({0} * (" + _RELU6.format(a="({0} + 3.0)") + " / 6.0))",
       lambda y, g: [g * (F.hard_sigmoid(y.inputs[0])
                          + F.where(_inside3(y.inputs[0]), y.inputs[0] * (1.0 / 6.0), 0.0))],
       doc="x * relu6(x + 3) / 6 (Keras' hard_silu / hard_swish)")

_SOFTPLUS = "(max({0}, 0.0) + math.log1p(math.exp(-abs({0}))))"


def _mish_vjp(y, g):
    x = y.inputs[0]
    t = F.tanh(F.softplus(x))
    return [g * (t + x * (1.0 - t * t) * F.sigmoid(x))]


_unary("mish", lambda x: x * np.tanh(_softplus_np(x)), "({0} * math.tanh(" + _SOFTPLUS + "))", _mish_vjp,
       doc="x * tanh(softplus(x))")
_unary("log_sigmoid", lambda x: -_softplus_np(-x), "(-(max(-{0}, 0.0) + math.log1p(math.exp(-abs({0})))))",
       lambda y, g: [g * F.sigmoid(-y.inputs[0])], doc="-softplus(-x), stable for any x")
