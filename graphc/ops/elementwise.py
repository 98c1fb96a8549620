"""Elementwise ops: NumPy broadcasting, dtype promotion, one scalar template each.

Templates are Python expressions over ``{0}``, ``{1}``, ... (operand values, evaluated once
by the generated code) and ``{attr}`` names; they use only ``math`` and builtins so the same
text compiles under ``numba.njit`` and ``numba.cuda.jit``.
"""
from __future__ import annotations

import numpy as np

from .. import dsl as F
from ..errors import DTypeError
from .base import OpDef, broadcast_shapes, promote, register


def _unb(g, x):
    return None if g is None else F.sum_to(g, x.shape)


def _unary(name, np_fn, template, vjp, float_only=True, out_dtype=None, doc=""):
    def infer(inputs, attrs):
        (x,) = inputs
        if float_only and x.dtype.kind != "f":
            raise DTypeError(f"needs a floating-point operand, got {x.dtype}")
        if x.dtype.kind == "b" and name != "stop_gradient":
            raise DTypeError(f"arithmetic on booleans is not supported ({x.dtype}); cast first")
        return x.shape, (out_dtype or x.dtype)

    def evaluate(args, attrs, node):
        with np.errstate(all="ignore"):
            return np.asarray(np_fn(args[0], **attrs)).astype(node.dtype, copy=False)

    return register(OpDef(name, "elementwise", infer, evaluate, vjp, template, doc))


def _binary(name, np_fn, template, vjp, out_bool=False, float_only=False):
    def infer(inputs, attrs):
        a, b = inputs
        shape = broadcast_shapes(a.shape, b.shape)
        if out_bool:
            if (a.dtype.kind == "b") != (b.dtype.kind == "b"):
                raise DTypeError(f"cannot compare {a.dtype} with {b.dtype}")
            return shape, np.dtype(bool)
        if a.dtype.kind == "b" or b.dtype.kind == "b":
            raise DTypeError(f"arithmetic on booleans is not supported ({a.dtype}, {b.dtype}); cast first")
        dt = promote(a.dtype, b.dtype)
        if float_only and dt.kind != "f":
            raise DTypeError(f"needs floating-point operands, got {a.dtype} and {b.dtype}")
        return shape, dt

    def evaluate(args, attrs, node):
        with np.errstate(all="ignore"):
            return np.asarray(np_fn(args[0], args[1])).astype(node.dtype, copy=False)

    return register(OpDef(name, "elementwise", infer, evaluate, vjp, template))


# ---- arithmetic ---------------------------------------------------------------------------

_binary("add", np.add, "({0} + {1})", lambda y, g: [_unb(g, y.inputs[0]), _unb(g, y.inputs[1])])
_binary("sub", np.subtract, "({0} - {1})", lambda y, g: [_unb(g, y.inputs[0]), _unb(-g, y.inputs[1])])
_binary("mul", np.multiply, "({0} * {1})",
        lambda y, g: [_unb(g * y.inputs[1], y.inputs[0]), _unb(g * y.inputs[0], y.inputs[1])])
_binary("div", np.divide, "({0} / {1})",
        lambda y, g: [_unb(g / y.inputs[1], y.inputs[0]), _unb(-g * y / y.inputs[1], y.inputs[1])],
        float_only=True)
# NaN propagates from either operand, as np.maximum/np.minimum (and ties give the second operand,
# as NumPy's SIMD loops do: maximum(0.0, -0.0) is -0.0); two compares and one select, so loops
# still vectorize
_binary("maximum", np.maximum, "({0} if {0} > {1} or {0} != {0} else {1})",
        lambda y, g: [_unb(F.where(y.inputs[0] >= y.inputs[1], g, 0.0), y.inputs[0]),
                      _unb(F.where(y.inputs[0] >= y.inputs[1], 0.0, g), y.inputs[1])])
_binary("minimum", np.minimum, "({0} if {0} < {1} or {0} != {0} else {1})",
        lambda y, g: [_unb(F.where(y.inputs[0] <= y.inputs[1], g, 0.0), y.inputs[0]),
                      _unb(F.where(y.inputs[0] <= y.inputs[1], 0.0, g), y.inputs[1])])

_nograd2 = lambda y, g: [None, None]  # noqa: E731
for _name, _fn, _sym in (("greater", np.greater, ">"), ("greater_equal", np.greater_equal, ">="),
                         ("less", np.less, "<"), ("less_equal", np.less_equal, "<="),
                         ("equal", np.equal, "=="), ("not_equal", np.not_equal, "!=")):
    _binary(_name, _fn, "({0} %s {1})" % _sym, _nograd2, out_bool=True)


def _neg_infer_vjp(y, g):
    return [-g]


_unary("neg", np.negative, "(-{0})", _neg_infer_vjp, float_only=False)
_unary("pow", lambda x, p: np.power(x, x.dtype.type(p)), "({0} ** {p})",
       lambda y, g: [g * y.attrs["p"] * F.power(y.inputs[0], y.attrs["p"] - 1.0)])
_unary("exp", np.exp, "math.exp({0})", lambda y, g: [g * y])
_unary("log", np.log, "math.log({0})", lambda y, g: [g / y.inputs[0]])
_unary("sqrt", np.sqrt, "math.sqrt({0})", lambda y, g: [g / (2.0 * y)])
_unary("abs", np.abs, "abs({0})", lambda y, g: [g * F.sign(y.inputs[0])], float_only=False)
_unary("sign", np.sign, "(1.0 if {0} > 0 else (-1.0 if {0} < 0 else ({0} if {0} != {0} else 0.0)))",
       lambda y, g: [None])  # sign(NaN) is NaN, sign(-0.0) is 0.0, as np.sign
_unary("square", np.square, "({0} * {0})", lambda y, g: [g * (2.0 * y.inputs[0])], float_only=False)

# ---- activations (their VJPs use the output y where that saves keeping the input) ---------

# relu(NaN) is NaN as np.maximum(x, 0) (an unordered "not <=" keeps it: still one select),
# relu(-0.0) is 0.0
_unary("relu", lambda x: np.maximum(x, 0), "({0} if not ({0} <= 0) else 0.0)",
       lambda y, g: [F.where(y > 0.0, g, 0.0)])
_unary("leaky_relu", lambda x, alpha: np.where(x > 0, x, x * x.dtype.type(alpha)),
       "({0} if {0} > 0 else {0} * {alpha})",
       lambda y, g: [F.where(y.inputs[0] > 0.0, g, g * y.attrs["alpha"])])
_unary("elu", lambda x, alpha: np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(np.minimum(x, 0))),
       "({0} if {0} > 0 else {alpha} * (math.exp({0}) - 1.0))",
       lambda y, g: [F.where(y.inputs[0] > 0.0, g, g * (y + y.attrs["alpha"]))])
_unary("sigmoid", lambda x: 0.5 * (np.tanh(0.5 * x) + 1), "(1.0 / (1.0 + math.exp(-{0})))",
       lambda y, g: [g * y * (1.0 - y)])
_unary("tanh", np.tanh, "math.tanh({0})", lambda y, g: [g * (1.0 - y * y)])
_unary("log1p", np.log1p, "math.log1p({0})", lambda y, g: [g / (1.0 + y.inputs[0])],
       doc="log(1 + x), accurate for small x")
_unary("softsign", lambda x: x / (1 + np.abs(x)), "({0} / (1.0 + abs({0})))",
       lambda y, g: [g / F.square(1.0 + F.abs(y.inputs[0]))], doc="x / (1 + |x|), as Keras' softsign")
_unary("softplus", lambda x: np.logaddexp(x, 0), "(max({0}, 0.0) + math.log1p(math.exp(-abs({0}))))",
       lambda y, g: [g * F.sigmoid(y.inputs[0])])

_GELU_C = 0.7978845608028654  # sqrt(2/pi)
_GELU_A = 0.044715


def _gelu_np(x):
    t = x.dtype.type
    return t(0.5) * x * (t(1) + np.tanh(t(_GELU_C) * (x + t(_GELU_A) * x * x * x)))


def _gelu_vjp(y, g):
    x = y.inputs[0]
    t = F.tanh(_GELU_C * (x + _GELU_A * x * x * x))
    d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * (_GELU_C * (1.0 + 3.0 * _GELU_A * x * x))
    return [g * d]


_unary("gelu", _gelu_np,
       f"(0.5 * {{0}} * (1.0 + math.tanh({_GELU_C} * ({{0}} + {_GELU_A} * {{0}} * {{0}} * {{0}}))))",
       _gelu_vjp)


def _clip_vjp(y, g):
    x, lo, hi = y.inputs[0], y.attrs["lo"], y.attrs["hi"]
    return [F.where(x >= lo, F.where(x <= hi, g, 0.0), 0.0)]


_unary("clip", lambda x, lo, hi: np.clip(x, x.dtype.type(lo), x.dtype.type(hi)),
       "min(max({0}, {lo}), {hi})", _clip_vjp, float_only=False)
_unary("stop_gradient", lambda x: x, "{0}", lambda y, g: [None], float_only=False)


# ---- where and cast -----------------------------------------------------------------------

def _where_infer(inputs, attrs):
    c, a, b = inputs
    if c.dtype.kind != "b":
        raise DTypeError(f"the condition must be boolean, got {c.dtype}")
    return broadcast_shapes(c.shape, a.shape, b.shape), promote(a.dtype, b.dtype)


register(OpDef(
    "where", "elementwise", _where_infer,
    lambda args, attrs, node: np.where(args[0], args[1], args[2]).astype(node.dtype, copy=False),
    lambda y, g: [None, _unb(F.where(y.inputs[0], g, 0.0), y.inputs[1]),
                  _unb(F.where(y.inputs[0], 0.0, g), y.inputs[2])],
    "({1} if {0} else {2})"))


def _cast_vjp(y, g):
    x = y.inputs[0]
    return [F.cast(g, x.dtype) if x.dtype.kind == "f" else None]


def _float_to_int(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """backends/expr.float_to_int's result in NumPy, on any machine and without astype's
    "invalid value encountered in cast" warning: NaN, +-inf and out-of-range values give the
    conversion width's minimum (NumPy's astype on x86), narrower types wrap it."""
    v = x if x.dtype.itemsize >= 8 else x.astype(np.float64)  # exact comparisons with 2**63

    def signed(bits: int) -> np.ndarray:
        it, lim = np.dtype(f"int{bits}"), 2.0 ** (bits - 1)
        ok = (v >= -lim) & (v < lim)
        return np.where(ok, np.where(ok, v, 0.0).astype(it), it.type(np.iinfo(it).min))
    if dtype == np.uint64:
        ok = (v >= 0.0) & (v < 2.0 ** 64)
        return np.where(ok, np.where(ok, v, 0.0).astype(dtype), signed(64).astype(dtype))
    return signed(64 if dtype.itemsize == 8 or dtype == np.uint32 else 32).astype(dtype)


def _cast_eval(args, attrs, node):
    x, dtype = np.asarray(args[0]), np.dtype(attrs["dtype"])
    if x.dtype.kind == "f" and dtype.kind in "iu":
        return _float_to_int(x, dtype)
    return x.astype(dtype)


register(OpDef(
    "cast", "elementwise", lambda inputs, attrs: (inputs[0].shape, attrs["dtype"]),
    _cast_eval, _cast_vjp, "{cast}({0})"))
