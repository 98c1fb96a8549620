"""The DSL users write models in: sources (input/param/const), op functions, operators.

Every function here builds nodes through :func:`graphc.ir.make`, so shapes are checked as
the model is written. Composite functions (softmax, mse, one_hot, ...) are written with
primitive ops and so get their gradients for free.
"""
from __future__ import annotations

import builtins
import numbers
from typing import Any, Sequence

import numpy as np

from .errors import DTypeError, IndexOutOfBoundsError, ShapeError
from .ir import ArrayValue, Node, make

Tensor = Node
DEFAULT_FLOAT = np.dtype("float32")
INITIALIZERS = ("zeros", "ones", "normal", "uniform", "glorot_uniform", "glorot_normal",
                "he_uniform", "he_normal", "orthogonal")


# ---- sources ----------------------------------------------------------------------------

def _check_shape(shape, allow_none: bool, what: str = "input") -> tuple:
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    shape = tuple(shape)
    for d in shape:
        if d is None:
            if not allow_none:
                raise _fail(ShapeError, what, f"shape {shape}: None (the batch dimension) is allowed on inputs only")
        elif not isinstance(d, numbers.Integral) or d < 0:
            raise _fail(ShapeError, what, f"shape {shape}: dimensions must be non-negative ints")
    if builtins.sum(d is None for d in shape) > 1:
        raise _fail(ShapeError, what, f"shape {shape}: at most one None (batch) dimension")
    return tuple(None if d is None else int(d) for d in shape)


def input(name: str, shape: Sequence, dtype: Any = "float32") -> Node:
    """A value fed at each call, e.g. a batch. ``None`` in ``shape`` marks the batch dim."""
    return make("input", (), {"name": str(name), "shape": _check_shape(shape, True, f"input {name!r}"),
                              "dtype": np.dtype(dtype)})


def param(name: str, shape: Sequence, init: Any = None, dtype: Any = "float32") -> Node:
    """A trainable parameter. ``init`` is an initializer name or an array.

    The default initializer is ``glorot_uniform`` for tensors of rank >= 2 and ``zeros``
    otherwise (as Keras does for kernels and biases). Initial values are drawn at compile
    time from a generator seeded by (compile seed, parameter name), so they do not depend
    on the order parameters were declared in.
    """
    shape = _check_shape(shape, False, f"param {name!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise _fail(DTypeError, f"param {name!r}", f"parameters must be floating point, got {dtype}")
    if init is None:
        init = "glorot_uniform" if len(shape) >= 2 else "zeros"
    if isinstance(init, str):
        if init not in INITIALIZERS:
            raise ValueError(f"param {name!r}: unknown initializer {init!r}; choose from {INITIALIZERS}")
        if init == "orthogonal" and len(shape) < 2:
            raise ValueError(f"param {name!r}: the orthogonal initializer needs a shape of rank >= 2, got {shape}")
    else:
        arr = np.asarray(init)
        if arr.shape != shape:
            raise _fail(ShapeError, f"param {name!r}", f"initial value has shape {arr.shape}, expected {shape}")
        init = ArrayValue(arr.astype(dtype))
    return make("param", (), {"name": str(name), "shape": shape, "dtype": dtype, "init": init})


def const(value: Any, dtype: Any = None) -> Node:
    """A constant tensor (copied: later edits of ``value`` do not reach the graph)."""
    arr = np.asarray(value)
    if dtype is not None:
        arr = arr.astype(dtype)
    elif arr.dtype == np.float64 and not isinstance(value, np.ndarray):
        arr = arr.astype(DEFAULT_FLOAT)  # Python floats default to float32, like params
    return make("const", (), {"value": ArrayValue(arr)})


def _lift(v: Any, like: Node | None = None) -> Node:
    """A Python/NumPy value as a const node; Python scalars take ``like``'s dtype (weak typing)."""
    if isinstance(v, Node):
        return v
    if isinstance(v, (bool, numbers.Number)) and not isinstance(v, np.generic) and like is not None:
        if like.dtype.kind == "f" or (like.dtype.kind in "iu" and isinstance(v, numbers.Integral)):
            return const(np.asarray(v, dtype=like.dtype))
        if like.dtype.kind == "b" and isinstance(v, bool):
            return const(np.asarray(v))
        return const(np.asarray(v, dtype=DEFAULT_FLOAT))
    return const(v)


def _no_tensor(op: str, *values) -> DTypeError:
    kinds = ", ".join(type(v).__name__ for v in values)
    return _fail(DTypeError, op, f"at least one operand must be a graphc tensor, got {kinds} "
                 "(wrap a constant in gc.const)")


def _pair(a, b, op: str):
    if not isinstance(a, Node) and not isinstance(b, Node):
        raise _no_tensor(op, a, b)
    a2 = _lift(a, b if isinstance(b, Node) else None)
    b2 = _lift(b, a2)
    return a2, b2


# ---- elementwise ------------------------------------------------------------------------

def add(a, b) -> Node: return make("add", _pair(a, b, "add"))
def subtract(a, b) -> Node: return make("sub", _pair(a, b, "subtract"))
def multiply(a, b) -> Node: return make("mul", _pair(a, b, "multiply"))
def divide(a, b) -> Node: return make("div", _pair(a, b, "divide"))
def maximum(a, b) -> Node: return make("maximum", _pair(a, b, "maximum"))
def minimum(a, b) -> Node: return make("minimum", _pair(a, b, "minimum"))
def greater(a, b) -> Node: return make("greater", _pair(a, b, "greater"))
def greater_equal(a, b) -> Node: return make("greater_equal", _pair(a, b, "greater_equal"))
def less(a, b) -> Node: return make("less", _pair(a, b, "less"))
def less_equal(a, b) -> Node: return make("less_equal", _pair(a, b, "less_equal"))
def equal(a, b) -> Node: return make("equal", _pair(a, b, "equal"))
def not_equal(a, b) -> Node: return make("not_equal", _pair(a, b, "not_equal"))


sub, mul, div = subtract, multiply, divide


def negative(x) -> Node: return make("neg", (_lift(x),))


neg = negative


def power(x, p: float) -> Node:
    """``x ** p`` for a scalar (Python number) exponent."""
    x = _lift(x)
    if isinstance(p, Node) or np.ndim(p) != 0:
        raise _fail(ShapeError, "pow", "the exponent must be a Python scalar", x)
    return make("pow", (x,), {"p": float(p)})


def exp(x) -> Node: return make("exp", (_lift(x),))
def log(x) -> Node: return make("log", (_lift(x),))
def sqrt(x) -> Node: return make("sqrt", (_lift(x),))
def abs(x) -> Node: return make("abs", (_lift(x),))  # noqa: A001 (NumPy's name)
def sign(x) -> Node: return make("sign", (_lift(x),))
def square(x) -> Node: return make("square", (_lift(x),))
def relu(x) -> Node: return make("relu", (_lift(x),))
def sigmoid(x) -> Node: return make("sigmoid", (_lift(x),))
def tanh(x) -> Node: return make("tanh", (_lift(x),))
def log1p(x) -> Node: return make("log1p", (_lift(x),))
def softsign(x) -> Node: return make("softsign", (_lift(x),))
def softplus(x) -> Node: return make("softplus", (_lift(x),))
def leaky_relu(x, alpha: float = 0.01) -> Node: return make("leaky_relu", (_lift(x),), {"alpha": float(alpha)})
def elu(x, alpha: float = 1.0) -> Node: return make("elu", (_lift(x),), {"alpha": float(alpha)})


def gelu(x, approximate: bool = True) -> Node:
    """GELU. ``approximate=True`` (the default, as ``jax.nn.gelu``): the tanh approximation of
    BERT/GPT-2, one fused op; ``approximate=False``: the exact ``x * (1 + erf(x / sqrt(2))) / 2``
    (``torch.nn.functional.gelu``'s default, and Keras 3's ``"gelu"``)."""
    if approximate:
        return make("gelu", (_lift(x),))
    x = _lift(x)
    return 0.5 * x * (1.0 + erf(x * 0.7071067811865476))


def clip(x, lo: float, hi: float) -> Node:
    x = _lift(x)
    if not lo <= hi:
        raise _fail(ValueError, "clip", f"lo={lo} must not exceed hi={hi}", x)
    return make("clip", (x,), {"lo": float(lo), "hi": float(hi)})


def where(cond, a, b) -> Node:
    """Elementwise ``a if cond else b`` (cond is a boolean tensor). Either branch may be a
    Python scalar: beside a tensor it takes that tensor's dtype (as ``x + 1.0``); when both
    are scalars, as in ``where(m > 0, 1.0, -1.0)``, Python floats are float32 (graphc's
    default float, as JAX's), Python ints int64 (NumPy's), and an int beside a float takes
    the float's dtype."""
    if isinstance(a, Node) or isinstance(b, Node):
        a2, b2 = _pair(a, b, "where")
    elif not isinstance(cond, Node):
        raise _no_tensor("where", cond, a, b)
    elif isinstance(b, float) and not isinstance(a, float):
        b2 = _lift(b)  # the float first, so an int beside it is lifted to its dtype
        a2 = _lift(a, b2)
    else:
        a2 = _lift(a)
        b2 = _lift(b, a2)
    return make("where", (_lift(cond), a2, b2))


def cast(x, dtype) -> Node:
    """``x`` converted to ``dtype`` elementwise, as NumPy's ``astype``. Float to integer
    truncates toward zero and has one defined result on every target for every value: NaN,
    +-inf and values out of range give the minimum of the conversion's width (int32:
    -2**31, int64: -2**63; x86's "integer indefinite" value, NumPy's astype on x86); int8,
    int16, uint8 and uint16 convert through int32 and wrap (300.0 -> int8 44, NaN -> 0),
    uint32 through int64; uint64 is exact on [0, 2**64), else int64's result's bits. To
    bool: ``x != 0`` (NaN is True)."""
    x = _lift(x)
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    return make("cast", (x,), {"dtype": dtype})


def stop_gradient(x) -> Node:
    """The identity whose gradient is zero."""
    return make("stop_gradient", (_lift(x),))


# ---- linear algebra and movement --------------------------------------------------------

def matmul(a, b) -> Node:
    """Matrix product ``a @ b`` with NumPy's rules for operands of rank >= 2, always on BLAS /
    cuBLAS GEMMs: 2-D operands are one GEMM; ``(..., k) @ (k, n)`` (a dense layer over a
    sequence) is ONE GEMM over the rows of ``a`` (a reshape, no copy); stacks of matrices on
    both sides are a batched GEMM over their leading dims, which broadcast (a broadcast
    operand is materialized first). A transposed operand (``swapaxes(k, -1, -2)``, ``k.T``
    of a matrix) is read in place."""
    a, b = _lift(a), _lift(b)
    if a.ndim <= 2 and b.ndim <= 2:
        return make("matmul", (a, b))
    if a.ndim < 2 or b.ndim < 2:
        raise _fail(ShapeError, "matmul", "1-D operands are not supported with stacked matrices; "
                    "use expand_dims to make them matrices", a, b)
    if a.shape[-1] != b.shape[-2] or a.shape[-1] is None:
        raise _fail(ShapeError, "matmul", f"inner dims differ: {a.shape[-1]} vs {b.shape[-2]}", a, b)
    if a.dtype != b.dtype or a.dtype.kind != "f":
        raise _fail(DTypeError, "matmul", f"needs floating-point operands of one dtype, got {a.dtype} and {b.dtype}",
                    a, b)
    from .ops.base import broadcast_shapes
    try:
        lead = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ShapeError:
        raise _fail(ShapeError, "matmul", "the leading (batch) dims do not broadcast", a, b) from None
    out_lead = tuple(-1 if d is None else d for d in lead)
    if b.ndim == 2:  # rows of a through one GEMM
        y = make("matmul", (reshape(a, (-1, a.shape[-1])), b))
        return reshape(y, tuple(-1 if d is None else d for d in a.shape[:-1]) + (b.shape[-1],))
    from .ops.linalg import batch_matmul

    def stack(x, transposed, other):  # (..., r, c) -> (B, r, c), reading a swapaxes(-1, -2) in place
        base = x.inputs[0] if transposed else x
        if base.shape[:-2] != lead:
            if None in lead:  # the batch comes from the other operand: broadcast against its leading dims
                corner = _index(other, (Ellipsis, builtins.slice(0, 1), builtins.slice(0, 1)))
                base = base + zeros_like(corner)
            else:
                base = broadcast_to(base, lead + base.shape[-2:])
        return reshape(base, (-1,) + base.shape[-2:])

    def swapped(x):
        return x.op == "transpose" and x.ndim >= 2 and tuple(x.attrs["axes"]) == (
            tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2))

    ta, tb = swapped(a), swapped(b)
    y = batch_matmul(stack(a, ta, b), stack(b, tb, a), ta, tb)
    return reshape(y, out_lead + (a.shape[-2], b.shape[-1]))


def transpose(x, axes: Sequence[int] | None = None) -> Node:
    x = _lift(x)
    if axes is None:
        axes = tuple(reversed(range(x.ndim)))
    axes = tuple(int(a) for a in axes)
    if axes == tuple(range(x.ndim)):
        return x
    return make("transpose", (x,), {"axes": axes})


def reshape(x, shape: Sequence) -> Node:
    """Reshape; one entry may be -1, and None stands for the batch dim."""
    x = _lift(x)
    shape = tuple(shape) if not isinstance(shape, numbers.Integral) else (int(shape),)
    shape = tuple(d if d is None else int(d) for d in shape)
    if shape == x.shape:
        return x
    return make("reshape", (x,), {"shape": shape})


def broadcast_to(x, shape: Sequence) -> Node:
    x = _lift(x)
    shape = tuple(shape)
    if shape == x.shape:
        return x
    return make("broadcast_to", (x,), {"shape": shape})


def broadcast_like(x, ref: Node) -> Node:
    """Broadcast ``x`` to ``ref``'s shape (works when that shape holds the batch dim)."""
    x = _lift(x)
    if x.shape == ref.shape:
        return x
    if None not in ref.shape:
        return broadcast_to(x, ref.shape)
    return make("broadcast_like", (x, ref))


def sum_to(x: Node, shape: Sequence) -> Node:
    """Sum ``x`` down to ``shape`` (the inverse of broadcasting: how gradients are unbroadcast)."""
    shape = tuple(shape)
    if x.shape == shape:
        return x
    lead = x.ndim - len(shape)
    if lead < 0:
        raise _fail(ShapeError, "sum_to", f"cannot sum to the larger rank of {shape}", x)
    axes = list(range(lead))
    for i, d in enumerate(shape):
        if d == 1 and x.shape[lead + i] != 1:
            axes.append(lead + i)
    y = sum(x, axis=tuple(axes), keepdims=True) if axes else x
    return reshape(y, shape)


def expand_dims(x, axis: int) -> Node:
    x = _lift(x)
    if not -(x.ndim + 1) <= axis <= x.ndim:
        raise _fail(ShapeError, "expand_dims", f"axis {axis} is out of range for a {x.ndim}-d operand", x)
    axis = axis % (x.ndim + 1)
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def dim_size(x: Node, axes=None, dtype=None) -> Node:
    """The number of elements of ``x`` along ``axes`` as a scalar (resolved at run time for the batch dim)."""
    from .ops.base import norm_axes

    axes = norm_axes(axes, x.ndim)
    dtype = np.dtype(dtype) if dtype is not None else (x.dtype if x.dtype.kind == "f" else DEFAULT_FLOAT)
    dims = [x.shape[a] for a in axes]
    if None not in dims:
        return const(np.asarray(int(np.prod(dims)), dtype=dtype))
    return make("dim_size", (x,), {"axes": axes, "dtype": dtype})


# ---- reductions -------------------------------------------------------------------------

def _located(op: str, e: Exception, *inputs: Node) -> Exception:
    return _fail(type(e), op, str(e), *inputs)


def _fail(cls, op: str, msg: str, *inputs: Node) -> Exception:
    """An exception of type ``cls`` naming the op, the operands and the user's file:line."""
    from .errors import user_location
    from .ir import describe_operands
    ops = f" (operands: {describe_operands(inputs)})" if inputs else ""
    return cls(f"{op}: {msg}{ops} at {user_location()}")


def _checked_axes(op: str, x: Node, axis) -> tuple:
    from .ops.base import norm_axes
    try:
        return norm_axes(_axes(axis), x.ndim)
    except ShapeError as e:
        raise _located(op, e, x) from None


def _axes(axis):
    if axis is None:
        return None
    if isinstance(axis, numbers.Integral):
        return (int(axis),)
    return tuple(int(a) for a in axis)


def sum(x, axis=None, keepdims: bool = False) -> Node:  # noqa: A001 (NumPy's name)
    x = _lift(x)
    axes = _checked_axes("sum", x, axis)
    if not axes and not keepdims:
        return x
    return make("sum", (x,), {"axes": axes, "keepdims": bool(keepdims)})


def max(x, axis=None, keepdims: bool = False) -> Node:  # noqa: A001 (NumPy's name)
    x = _lift(x)
    axes = _checked_axes("max", x, axis)
    _no_empty("max", x, axes)  # np.max raises too (the compiled targets would give -inf)
    return make("max", (x,), {"axes": axes, "keepdims": bool(keepdims)})


def mean(x, axis=None, keepdims: bool = False) -> Node:
    x = _lift(x)
    _checked_axes("mean", x, axis)
    s = sum(x, axis, keepdims)
    return s / dim_size(x, _axes(axis), dtype=s.dtype if s.dtype.kind == "f" else None)


def logsumexp(x, axis=None, keepdims: bool = False) -> Node:
    """log(sum(exp(x))) over ``axis``, stable for any x (NumPy/SciPy and Keras semantics)."""
    x = _lift(x)
    _checked_axes("logsumexp", x, axis)
    m = stop_gradient(max(x, axis, keepdims=True))
    out = log(sum(exp(x - m), axis, keepdims=True)) + m
    return out if keepdims else sum(out, axis, keepdims=False)  # drop the kept axes (a no-op sum)


def var(x, axis=None, keepdims: bool = False) -> Node:
    """Population variance (``ddof=0``, as NumPy and Keras) over ``axis``."""
    x = _lift(x)
    _checked_axes("var", x, axis)
    d = x - mean(x, axis, keepdims=True)
    return mean(square(d), axis, keepdims)


def std(x, axis=None, keepdims: bool = False) -> Node:
    """Population standard deviation (``ddof=0``) over ``axis``."""
    return sqrt(var(x, axis, keepdims))


def _arg_extreme(op: str, x, axis: int, keepdims: bool, sign: float) -> Node:
    x = _lift(x)
    if axis is None:  # NumPy's: the index into the flattened x
        if keepdims:
            return reshape(_arg_extreme(op, reshape(x, (-1,)), 0, False, sign), (1,) * x.ndim)
        x, axis = reshape(x, (-1,)), 0
    if isinstance(axis, (tuple, list)):
        raise _fail(ShapeError, op, "takes one int axis (or None: the index into the flattened x)", x)
    (ax,) = _checked_axes(op, x, axis)
    n = x.shape[ax]
    if n is None:
        raise _fail(ShapeError, op, "cannot run over the batch dimension", x)
    if x.dtype.kind == "b":
        raise _fail(DTypeError, op, "needs a numeric operand; cast booleans first", x)
    ft = x.dtype if x.dtype.kind == "f" else np.dtype("float64")
    v = stop_gradient(cast(x, ft) * sign)
    shape = [1] * x.ndim
    shape[ax] = n
    pos = const(np.arange(n, dtype=ft).reshape(shape))
    # the first position of the extreme, or of the first NaN (the max is NaN then), as NumPy's
    first = where(equal(v, max(v, ax, keepdims=True)), pos, where(not_equal(v, v), pos, float(n)))
    idx = -max(-first, ax, keepdims=keepdims)
    return cast(idx, "int64")


def argmax(x, axis: int = -1, keepdims: bool = False) -> Node:
    """Index of the first largest value along ``axis`` (int64, no gradient), as NumPy's."""
    return _arg_extreme("argmax", x, axis, keepdims, 1.0)


def argmin(x, axis: int = -1, keepdims: bool = False) -> Node:
    """Index of the first smallest value along ``axis`` (int64, no gradient), as NumPy's."""
    return _arg_extreme("argmin", x, axis, keepdims, -1.0)


def layer_normalization(x, gamma=None, beta=None, axis=-1, epsilon: float | None = None) -> Node:
    """Layer normalization (Ba et al. 2016) as ``keras.ops.layer_normalization``:
    ``(x - mean) / sqrt(var + epsilon) * gamma + beta`` with mean and population variance over
    ``axis`` (an int or a tuple); ``epsilon`` defaults to 1e-7 (Keras' backend epsilon; the
    Keras *layer* uses 1e-3). Built from ops that fuse into two loops (the moments, then the
    normalization with its scale and shift)."""
    x = _lift(x)
    _checked_axes("layer_normalization", x, axis)
    eps = 1e-7 if epsilon is None else float(epsilon)
    if not eps >= 0.0:
        raise _fail(ValueError, "layer_normalization", f"epsilon must be >= 0, got {epsilon}", x)
    mu = mean(x, axis, keepdims=True)
    d = x - mu
    y = d / sqrt(mean(square(d), axis, keepdims=True) + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def _pair_arg(op: str, name: str, v, x: Node) -> tuple[int, int]:
    """An int or a pair of positive ints (Keras' ``strides``, ``pool_size``, ``dilation_rate``)."""
    t = (v, v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else tuple(v) if isinstance(
        v, (tuple, list)) else None
    if t is None or len(t) != 2 or not builtins.all(isinstance(e, numbers.Integral) and not isinstance(e, bool) and e >= 1
                                           for e in t):
        raise _fail(ValueError, op, f"{name} must be a positive int or a pair of them, got {v!r}", x)
    return int(t[0]), int(t[1])


def _window_attrs(op: str, x: Node, kernel: tuple, strides, padding, dilation) -> dict:
    from .ops.conv import same_pads
    if x.ndim != 4:
        raise _fail(ShapeError, op, f"expects a 4-D input (batch, height, width, channels) in NHWC, "
                    f"got rank {x.ndim}", x)
    if x.dtype.kind != "f":
        raise _fail(DTypeError, op, f"expects a floating-point input, got {x.dtype}", x)
    pad = padding.lower() if isinstance(padding, str) else padding
    if pad not in ("valid", "same"):
        raise _fail(ValueError, op, f"padding must be 'valid' or 'same', got {padding!r}", x)
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilation
    h, w = x.shape[1:3]
    if h is None or w is None:
        raise _fail(ShapeError, op, "the height and width must be fixed (only the batch dim may be None)", x)
    pads = (same_pads(h, kh, sh, dh), same_pads(w, kw, sw, dw)) if pad == "same" else ((0, 0), (0, 0))
    return {"kernel": (kh, kw), "strides": (sh, sw), "dilation": (dh, dw), "pads": pads}


def conv2d(x, kernel, strides=1, padding: str = "valid", dilation_rate=1) -> Node:
    """2-D convolution as ``keras.ops.conv`` (cross-correlation, as every framework computes
    it): ``x`` NHWC ``(batch, height, width, in_channels)``, ``kernel`` HWIO ``(kh, kw,
    in_channels, filters)``, ``padding`` ``"valid"`` or ``"same"`` (TensorFlow's: ``ceil(n /
    stride)`` outputs, the odd padding pixel at the end). Computed as im2col followed by ONE
    GEMM (``graphc/ops/conv.py``), so bias and activation fuse into that GEMM's epilogue and
    both gradients are GEMMs too."""
    from .ops.conv import im2col
    x, kernel = _lift(x), _lift(kernel)
    if kernel.ndim != 4:
        raise _fail(ShapeError, "conv2d", f"kernel must be 4-D (kh, kw, in_channels, filters), got rank {kernel.ndim}",
                    x, kernel)
    if x.ndim == 4 and kernel.shape[2] != x.shape[3]:
        raise _fail(ShapeError, "conv2d", f"the kernel's in_channels {kernel.shape[2]} differ from the input's "
                    f"channels {x.shape[3]}", x, kernel)
    if x.dtype != kernel.dtype:
        raise _fail(DTypeError, "conv2d", f"operand dtypes differ ({x.dtype} vs {kernel.dtype}); cast one", x, kernel)
    kh, kw, c, o = kernel.shape
    attrs = _window_attrs("conv2d", x, (kh, kw), _pair_arg("conv2d", "strides", strides, x), padding,
                          _pair_arg("conv2d", "dilation_rate", dilation_rate, x))
    try:
        cols = x if (kh, kw) == (1, 1) and attrs["strides"] == (1, 1) else im2col(x, attrs)
    except ShapeError as e:
        raise _located("conv2d", e, x, kernel) from None
    y = make("matmul", (reshape(cols, (-1, kh * kw * c)), reshape(kernel, (kh * kw * c, o))))
    return reshape(y, (-1,) + cols.shape[1:3] + (o,))


def _pool(op: str, mode: str, x, pool_size, strides, padding) -> Node:
    from .ops.conv import pool2d
    x = _lift(x)
    size = _pair_arg(op, "pool_size", pool_size, x)
    stride = size if strides is None else _pair_arg(op, "strides", strides, x)
    attrs = _window_attrs(op, x, size, stride, padding, (1, 1))
    try:
        return pool2d(x, {**attrs, "mode": mode})
    except ShapeError as e:
        raise _located(op, e, x) from None


def max_pool2d(x, pool_size=2, strides=None, padding: str = "valid") -> Node:
    """Max pooling over NHWC windows as ``keras.ops.max_pool`` (``strides`` defaults to
    ``pool_size``; ``"same"`` padding never wins a maximum). The gradient goes to the first
    maximum of each window, as TensorFlow's and PyTorch's do."""
    return _pool("max_pool2d", "max", x, pool_size, strides, padding)


def avg_pool2d(x, pool_size=2, strides=None, padding: str = "valid") -> Node:
    """Average pooling as ``keras.ops.average_pool``: with ``"same"`` padding each window is
    averaged over its positions inside the image (padding is not counted, as in Keras/TF)."""
    return _pool("avg_pool2d", "avg", x, pool_size, strides, padding)


def global_average_pool2d(x, keepdims: bool = False) -> Node:
    """Mean over height and width of an NHWC tensor (Keras' GlobalAveragePooling2D)."""
    x = _lift(x)
    if x.ndim != 4:
        raise _fail(ShapeError, "global_average_pool2d", f"expects a 4-D NHWC input, got rank {x.ndim}", x)
    return mean(x, (1, 2), keepdims=keepdims)


def global_max_pool2d(x, keepdims: bool = False) -> Node:
    """Max over height and width of an NHWC tensor (Keras' GlobalMaxPooling2D)."""
    x = _lift(x)
    if x.ndim != 4:
        raise _fail(ShapeError, "global_max_pool2d", f"expects a 4-D NHWC input, got rank {x.ndim}", x)
    return max(x, (1, 2), keepdims=keepdims)


def moments(x, axes, keepdims: bool = False) -> tuple[Node, Node]:
    """``(mean, variance)`` over ``axes`` as ``keras.ops.moments`` (the population variance,
    which batch normalization normalizes with)."""
    x = _lift(x)
    axes = _checked_axes("moments", x, axes)
    mu = mean(x, axes, keepdims=True)
    v = mean(square(x - mu), axes, keepdims=True)
    if keepdims:
        return mu, v
    keep = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return reshape(mu, keep), reshape(v, keep)


def batch_normalization(x, mean, variance, axis: int = -1, offset=None, scale=None,
                        epsilon: float = 1e-3) -> Node:
    """``(x - mean) / sqrt(variance + epsilon) * scale + offset`` as
    ``keras.ops.batch_normalization``: ``mean``, ``variance``, ``offset`` and ``scale`` are
    1-D over ``axis`` (the channels). Training uses the batch's ``gc.moments`` and updates
    the moving statistics through ``compile(..., updates=...)``; inference passes the moving
    statistics (see graphc.nn.BatchNormalization)."""
    x = _lift(x)
    (ax,) = _checked_axes("batch_normalization", x, axis)
    c = x.shape[ax]
    shape = tuple(c if i == ax else 1 for i in range(x.ndim))
    vals = {"mean": mean, "variance": variance, "offset": offset, "scale": scale}
    for k, v in list(vals.items()):
        if v is None:
            continue
        v = _lift(v, x)
        if v.shape not in ((c,), shape):
            raise _fail(ShapeError, "batch_normalization", f"{k} must have shape ({c},) (the size of axis {axis}), "
                        f"got {v.shape}", x, v)
        vals[k] = reshape(v, shape)
    if not float(epsilon) >= 0.0:
        raise _fail(ValueError, "batch_normalization", f"epsilon must be >= 0, got {epsilon}", x)
    y = (x - vals["mean"]) / sqrt(vals["variance"] + float(epsilon))
    if vals["scale"] is not None:
        y = y * vals["scale"]
    if vals["offset"] is not None:
        y = y + vals["offset"]
    return y


def in_top_k(targets, predictions, k: int) -> Node:
    """Whether each target's score is among the ``k`` largest of its row, as
    ``keras.ops.in_top_k``: ties straddling the k-th place all count as in (the target is
    in when fewer than ``k`` scores are strictly larger). Boolean, one per row."""
    targets, predictions = _lift(targets), _lift(predictions)
    if predictions.ndim != 2 or targets.ndim != 1:
        raise _fail(ShapeError, "in_top_k", "expects predictions (batch, classes) and targets (batch,)",
                    targets, predictions)
    if targets.dtype.kind not in "iu":
        raise _fail(DTypeError, "in_top_k", f"targets must be integer class indices, got {targets.dtype}",
                    targets, predictions)
    if not isinstance(k, numbers.Integral) or k < 1:
        raise _fail(ValueError, "in_top_k", f"k must be a positive int, got {k!r}", targets, predictions)
    own = sum(one_hot(targets, predictions.shape[1], predictions.dtype) * predictions, axis=-1, keepdims=True)
    above = sum(cast(greater(predictions, own), "int32"), axis=-1)
    return less(above, int(k))


def swapaxes(x, axis1: int, axis2: int) -> Node:
    """``x`` with two axes exchanged (NumPy's ``swapaxes``)."""
    x = _lift(x)
    a, b = (_checked_axes("swapaxes", x, ax)[0] for ax in (axis1, axis2))
    perm = list(range(x.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm)


# ---- einsum and friends (compositions of matmul, batch_matmul, sums: ops/einsum.py) --------

def einsum(subscripts: str, *operands) -> Node:
    """``np.einsum(subscripts, *operands)``: explicit (``"ij,jk->ik"``) or implicit output,
    repeated labels for diagonals and traces, ``...`` broadcasting. Contracted pairs run as
    ONE GEMM or a batched GEMM (transposes and reshapes around ``matmul``), the rest as
    broadcasting multiplies and sums; differentiable through those ops."""
    from .ops.einsum import einsum as _einsum
    return _einsum(subscripts, *operands)


def tensordot(a, b, axes=2) -> Node:
    """``np.tensordot``: the last ``axes`` dims of ``a`` against the first of ``b`` (an int), or
    the listed axes (a pair of lists); one GEMM."""
    from .ops.einsum import tensordot as _tensordot
    return _tensordot(a, b, axes)


def dot(a, b) -> Node:
    """``np.dot``: scalars multiply; 1-D with 1-D is the inner product; otherwise a sum over
    the last axis of ``a`` and the second-to-last of ``b`` (the last, when ``b`` is 1-D), which
    for matrices is ``a @ b`` (one GEMM, as ``tensordot``)."""
    a, b = _lift(a), _lift(b)
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    return tensordot(a, b, ([a.ndim - 1], [builtins.max(b.ndim - 2, 0)]))


def outer(a, b) -> Node:
    """``np.outer``: ``ravel(a)[:, None] * ravel(b)[None, :]``."""
    from .ops.einsum import outer as _outer
    return _outer(a, b)


def diagonal(a, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Node:
    """``np.diagonal``: the ``offset``-th diagonal of the (``axis1``, ``axis2``) planes, as a
    new last axis (a strided slice; the gradient scatters back onto the diagonal)."""
    from .ops.einsum import diagonal as _diagonal
    return _diagonal(a, offset, axis1, axis2)


def trace(a, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype=None) -> Node:
    """``np.trace``: the sum of ``diagonal(a, offset, axis1, axis2)`` (booleans count as int64)."""
    from .ops.einsum import trace as _trace
    return _trace(a, offset, axis1, axis2, dtype)


# ---- sorting (comparisons and masked sums: ops/sorting.py) ---------------------------------

def sort(a, axis: int | None = -1) -> Node:
    """``np.sort`` (stable; NaN last), ``axis`` None sorting the flattened ``a``. Differentiable
    (each value's gradient goes back where it came from). O(n^2) along the axis: short axes."""
    from .ops.sorting import sort as _sort
    return _sort(a, axis)


def argsort(a, axis: int | None = -1) -> Node:
    """``np.argsort(a, axis, kind="stable")``: int64 indices, ties in index order, NaN last.
    O(n^2) along the axis."""
    from .ops.sorting import argsort as _argsort
    return _argsort(a, axis)


def top_k(x, k: int, sorted: bool = True) -> tuple:  # noqa: A002 (JAX's and Keras' name)
    """``jax.lax.top_k``: the ``k`` largest values along the last axis, largest first (ties in
    index order, NaN largest), and their int32 indices. The gradient flows through the values
    to the positions they were taken from. O(n k) along the axis (``sorted`` is accepted as in
    keras.ops.top_k; the values are always sorted)."""
    from .ops.sorting import top_k as _top_k
    return _top_k(x, k, sorted)


# ---- neural-network functions -----------------------------------------------------------

def softmax(x, axis: int = -1) -> Node:
    """Numerically stable softmax (the max shift carries no gradient, as it cancels)."""
    x = _lift(x)
    _checked_axes("softmax", x, axis)
    m = stop_gradient(max(x, axis, keepdims=True))
    e = exp(x - m)
    return e / sum(e, axis, keepdims=True)


def log_softmax(x, axis: int = -1) -> Node:
    x = _lift(x)
    _checked_axes("log_softmax", x, axis)
    s = x - stop_gradient(max(x, axis, keepdims=True))
    return s - log(sum(exp(s), axis, keepdims=True))


def softmax_cross_entropy(logits, labels) -> Node:
    """Mean over the batch of -log softmax(logits)[label]; integer labels, stable for any logits."""
    return make("softmax_cross_entropy", (_lift(logits), _lift(labels)))


def take(params, indices, axis: int = 0) -> Node:
    """``np.take(params, indices, axis)``: the slices of ``params`` at ``indices`` along
    ``axis`` (an embedding lookup with ``axis=0``); the result's shape is
    ``params.shape[:axis] + indices.shape + params.shape[axis + 1:]``. Indices are integers in
    [0, params.shape[axis]): negative ones are rejected, as PyTorch's embedding and Keras'
    Embedding do (NumPy would wrap them). Fed indices are checked before a step runs (a
    FeedError, nothing written). The gradient w.r.t. ``params`` is a scatter-add: rows taken
    more than once accumulate."""
    params, indices = _lift(params), _lift(indices)
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise _fail(ShapeError, "take", f"axis must be an int, got {axis!r} (flatten params first for axis=None)",
                    params, indices)
    if params.ndim:
        (axis,) = _checked_axes("take", params, int(axis))
    return make("take", (params, indices), {"axis": int(axis)})


def one_hot(labels, depth: int, dtype: Any = "float32") -> Node:
    labels = _lift(labels)
    if labels.dtype.kind not in "iu":
        raise _fail(DTypeError, "one_hot", f"labels must be integers, got {labels.dtype}", labels)
    classes = const(np.arange(int(depth), dtype=labels.dtype))
    return cast(equal(expand_dims(labels, -1), classes), dtype)


def _loss_operands(op: str, pred, target) -> tuple[Node, Node]:
    """A loss compares like with like: tensors of different shapes are an error, not a
    broadcast (``(B, 1)`` against ``(B,)`` would silently average a ``(B, B)`` matrix).
    A Python scalar target still broadcasts."""
    pred2, target2 = _pair(pred, target, op)
    if isinstance(pred, Node) and isinstance(target, Node) and pred.shape != target.shape:
        from .ir import fmt_shape
        raise _fail(ShapeError, op, f"prediction {fmt_shape(pred.shape)} and target {fmt_shape(target.shape)} "
                    "must have the same shape (reshape one of them; losses do not broadcast)", pred, target)
    return pred2, target2


def mse(pred, target) -> Node:
    """Mean squared error over all elements; ``pred`` and ``target`` must have one shape."""
    pred, target = _loss_operands("mse", pred, target)
    return mean(square(subtract(pred, target)))


def mae(pred, target) -> Node:
    """Mean absolute error over all elements; ``pred`` and ``target`` must have one shape."""
    pred, target = _loss_operands("mae", pred, target)
    return mean(abs(subtract(pred, target)))


def binary_cross_entropy_with_logits(logits, targets) -> Node:
    """Mean over all elements of the sigmoid cross-entropy, computed stably from logits
    (``logits`` and ``targets`` must have one shape)."""
    logits, targets = _loss_operands("binary_cross_entropy_with_logits", logits, targets)
    return mean(softplus(logits) - logits * targets)


def zeros_like(x: Node) -> Node:
    return broadcast_like(const(np.zeros((), x.dtype)), x)


def ones_like(x: Node) -> Node:
    return broadcast_like(const(np.ones((), x.dtype)), x)


# ---- NumPy's elementwise math, logic and Keras' activations (ops/numeric.py) ---------------

def _float_unary(op: str, x, attrs=None) -> Node:
    x = _lift(x)
    if x.dtype.kind != "f":
        raise _fail(DTypeError, op, f"needs a floating-point operand, got {x.dtype} (cast it first: "
                    "graphc does not promote integers to float64 as NumPy does)", x)
    return make(op, (x,), attrs or {})


def sin(x) -> Node: return _float_unary("sin", x)
def cos(x) -> Node: return _float_unary("cos", x)
def tan(x) -> Node: return _float_unary("tan", x)
def arcsin(x) -> Node: return _float_unary("arcsin", x)
def arccos(x) -> Node: return _float_unary("arccos", x)
def arctan(x) -> Node: return _float_unary("arctan", x)
def sinh(x) -> Node: return _float_unary("sinh", x)
def cosh(x) -> Node: return _float_unary("cosh", x)
def arcsinh(x) -> Node: return _float_unary("arcsinh", x)
def arccosh(x) -> Node: return _float_unary("arccosh", x)
def arctanh(x) -> Node: return _float_unary("arctanh", x)
def exp2(x) -> Node: return _float_unary("exp2", x)
def expm1(x) -> Node: return _float_unary("expm1", x)
def log2(x) -> Node: return _float_unary("log2", x)
def log10(x) -> Node: return _float_unary("log10", x)
def reciprocal(x) -> Node: return _float_unary("reciprocal", x)


def rsqrt(x) -> Node:
    """``1 / sqrt(x)`` (``jax.lax.rsqrt``; NumPy has no such function)."""
    return _float_unary("rsqrt", x)


def erf(x) -> Node:
    """The error function (``scipy.special.erf``, ``jax.scipy.special.erf``)."""
    return _float_unary("erf", x)


def erfc(x) -> Node:
    """``1 - erf(x)``, accurate where erf(x) is near 1."""
    return _float_unary("erfc", x)


def arctan2(x1, x2) -> Node:
    """The angle of the point ``(x2, x1)``, elementwise (``np.arctan2(y, x)``)."""
    a, b = _pair(x1, x2, "arctan2")
    return make("arctan2", (a, b))


def _rounding(op: str, x) -> Node:
    from .ops.numeric import _rounding_attrs
    x = _lift(x)
    if x.dtype.kind in "iu":
        return x  # integers are integral already (NumPy's round keeps the dtype)
    if x.dtype.kind != "f":
        raise _fail(DTypeError, op, f"needs a numeric operand, got {x.dtype}", x)
    return make(op, (x,), _rounding_attrs(x.dtype))


def round(x, decimals: int = 0) -> Node:  # noqa: A001 (NumPy's name)
    """``np.round``: half to even (2.5 -> 2.0, -0.5 -> -0.0). ``decimals`` other than 0 scales
    by ``10**decimals`` first, as NumPy does (so inexact as NumPy's). Zero gradient."""
    x = _lift(x)
    if not isinstance(decimals, numbers.Integral) or isinstance(decimals, bool):
        raise _fail(TypeError, "round", f"decimals must be an int, got {decimals!r}", x)
    if decimals == 0 or x.dtype.kind != "f":
        return _rounding("round", x)
    s = 10.0 ** int(decimals)
    return _rounding("round", x * s) / s


def floor(x) -> Node:
    """``np.floor`` (floats; integers are returned as they are). Zero gradient, as JAX's."""
    return _rounding("floor", x)


def ceil(x) -> Node:
    """``np.ceil`` (floats; integers are returned as they are). Zero gradient, as JAX's."""
    return _rounding("ceil", x)


def trunc(x) -> Node:
    """``np.trunc``: rounds toward zero. Zero gradient, as JAX's."""
    return _rounding("trunc", x)


def mod(x1, x2) -> Node:
    """``np.mod`` / ``np.remainder``: Python's ``%``, the result has the divisor's sign; a zero
    divisor gives NaN for floats and 0 for integers. Gradients as JAX's: 1 for ``x1``,
    ``-floor(x1 / x2)`` for ``x2``."""
    a, b = _pair(x1, x2, "mod")
    return make("mod", (a, b))


remainder = mod


def floor_divide(x1, x2) -> Node:
    """``np.floor_divide`` (Python's ``//``): ``floor(x1 / x2)`` computed as NumPy does for
    floats (with the remainder, so ``x1 == x2 * q + mod(x1, x2)``); zero gradient."""
    a, b = _pair(x1, x2, "floor_divide")
    return make("floor_divide", (a, b))


def isnan(x) -> Node: return make("isnan", (_lift(x),))
def isinf(x) -> Node: return make("isinf", (_lift(x),))
def isfinite(x) -> Node: return make("isfinite", (_lift(x),))


def logical_not(x) -> Node:
    """``np.logical_not``: a boolean tensor, True where ``x`` is zero/False."""
    return make("logical_not", (_lift(x),))


def _logical(op: str, a, b) -> Node:
    if not isinstance(a, Node) and not isinstance(b, Node):
        raise _no_tensor(op, a, b)
    a2 = _lift(a) if isinstance(a, Node) else const(np.asarray(a))
    b2 = _lift(b) if isinstance(b, Node) else const(np.asarray(b))
    return make(op, (a2, b2))


def logical_and(x1, x2) -> Node: return _logical("logical_and", x1, x2)
def logical_or(x1, x2) -> Node: return _logical("logical_or", x1, x2)
def logical_xor(x1, x2) -> Node: return _logical("logical_xor", x1, x2)


def silu(x) -> Node:
    """``x * sigmoid(x)`` (Keras' silu / swish)."""
    return _float_unary("silu", x)


swish = silu


def selu(x) -> Node:
    """``scale * elu(x, alpha)`` with Keras' (Klambauer et al.'s) alpha and scale."""
    return _float_unary("selu", x)


def relu6(x) -> Node:
    """``min(max(x, 0), 6)``; NaN propagates; gradient 1 on (0, 6) only (jax.nn.relu6)."""
    return _float_unary("relu6", x)


def hard_sigmoid(x) -> Node:
    """``relu6(x + 3) / 6`` (Keras 3's and jax.nn's hard_sigmoid)."""
    return _float_unary("hard_sigmoid", x)


def hard_swish(x) -> Node:
    """``x * relu6(x + 3) / 6`` (Keras' hard_silu / hard_swish)."""
    return _float_unary("hard_swish", x)


hard_silu = hard_swish


def mish(x) -> Node:
    """``x * tanh(softplus(x))`` (Keras' mish)."""
    return _float_unary("mish", x)


def log_sigmoid(x) -> Node:
    """``-softplus(-x)``, stable for any x (Keras' log_sigmoid)."""
    return _float_unary("log_sigmoid", x)


# ---- more reductions: min, prod, any, all, norm, cumsum, cumprod ----------------------------

def _no_empty(op: str, x: Node, axes: tuple) -> None:
    if builtins.any(x.shape[a] == 0 for a in axes):
        raise _fail(ShapeError, op, "zero-size array to a reduction that has no identity (as NumPy)", x)


def min(x, axis=None, keepdims: bool = False) -> Node:  # noqa: A001 (NumPy's name)
    """``np.min``: NaN propagates (the minimum is NaN if any element along ``axis`` is); the
    gradient is shared equally between tied minima (as JAX's)."""
    x = _lift(x)
    axes = _checked_axes("min", x, axis)
    _no_empty("min", x, axes)
    return make("min", (x,), {"axes": axes, "keepdims": bool(keepdims)})


def prod(x, axis=None, keepdims: bool = False) -> Node:
    """``np.prod`` over ``axis`` (1 for an empty axis); the gradient is exact with zeros among
    the factors (the product of the other factors, no division by zero)."""
    x = _lift(x)
    axes = _checked_axes("prod", x, axis)
    return make("prod", (x,), {"axes": axes, "keepdims": bool(keepdims)})


def _truth(x: Node) -> Node:
    return x if x.dtype.kind == "b" else not_equal(x, 0)  # NaN is true, as in NumPy


def any(x, axis=None, keepdims: bool = False) -> Node:  # noqa: A001 (NumPy's name)
    """``np.any``: whether any element along ``axis`` is non-zero (NaN counts); False over an
    empty axis. Boolean."""
    x = _lift(x)
    axes = _checked_axes("any", x, axis)
    return greater(sum(cast(_truth(x), "int64"), axes, keepdims), 0)


def all(x, axis=None, keepdims: bool = False) -> Node:  # noqa: A001 (NumPy's name)
    """``np.all``: whether every element along ``axis`` is non-zero (NaN counts); True over an
    empty axis. Boolean."""
    x = _lift(x)
    axes = _checked_axes("all", x, axis)
    return equal(sum(cast(logical_not(_truth(x)), "int64"), axes, keepdims), 0)


def norm(x, ord=None, axis=None, keepdims: bool = False) -> Node:  # noqa: A002 (NumPy's name)
    """``np.linalg.norm``. Vector norms (``axis`` an int, or ``x`` 1-D): ``ord`` None or 2
    (Euclidean), 1, ``inf``, ``-inf``, 0 (the count of non-zeros) or any other number p
    (``sum(|x|**p)**(1/p)``). Matrix norms (``axis`` a pair, or ``x`` 2-D): None or 'fro'
    (Frobenius), 1 / -1 (max / min column sum of |x|), ``inf`` / ``-inf`` (max / min row
    sum). With ``ord=None`` and ``axis=None`` the 2-norm of the flattened ``x``, whatever
    its rank. Spectral and nuclear norms (2, -2, 'nuc': an SVD) are not supported. Integer
    operands are computed in float64, as NumPy does."""
    x = _lift(x)
    if x.dtype.kind != "f":
        x = cast(x, "float64")
    if axis is None:
        if ord is None:
            y = sqrt(sum(square(x), None, keepdims=True))
            return y if keepdims else reshape(y, ())
        if x.ndim not in (1, 2):
            raise _fail(ShapeError, "norm", f"ord={ord!r} with axis=None needs a 1-D or 2-D operand, "
                        f"got rank {x.ndim}", x)
        axis = tuple(range(x.ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    if len(axes) not in (1, 2):
        raise _fail(ShapeError, "norm", f"axis must be an int or a pair of ints, got {axis!r}", x)
    norm_axes_ = _checked_axes("norm", x, axes)
    a = abs(x)
    if len(axes) == 1:
        if ord is None or ord == 2:
            y = sqrt(sum(square(x), axes, keepdims=True))
        elif ord == 1:
            y = sum(a, axes, keepdims=True)
        elif ord == np.inf:
            y = max(a, axes, keepdims=True)
        elif ord == -np.inf:
            y = min(a, axes, keepdims=True)
        elif ord == 0:
            y = sum(cast(not_equal(x, 0.0), x.dtype), axes, keepdims=True)
        elif isinstance(ord, numbers.Real) and not isinstance(ord, bool):
            y = power(sum(power(a, float(ord)), axes, keepdims=True), 1.0 / float(ord))
        else:
            raise _fail(ValueError, "norm", f"invalid ord {ord!r} for a vector norm", x)
    else:
        r, c = (a_ % x.ndim for a_ in axes)
        if r == c:
            raise _fail(ShapeError, "norm", f"duplicate axes {axis!r}", x)
        if ord is None or ord == "fro":
            y = sqrt(sum(square(x), norm_axes_, keepdims=True))
        elif ord in (1, -1):
            s = sum(a, r, keepdims=True)
            y = max(s, c, keepdims=True) if ord == 1 else min(s, c, keepdims=True)
        elif ord in (np.inf, -np.inf):
            s = sum(a, c, keepdims=True)
            y = max(s, r, keepdims=True) if ord > 0 else min(s, r, keepdims=True)
        else:
            raise _fail(ValueError, "norm", f"matrix norm ord={ord!r} is not supported (2, -2 and 'nuc' "
                        "need an SVD); use None/'fro', 1, -1, inf or -inf", x)
    if keepdims:
        return y
    return reshape(y, tuple(d for i, d in enumerate(y.shape) if i not in norm_axes_))


def _cumulative(op: str, x, axis, dtype, reverse: bool) -> Node:
    x = _lift(x)
    if axis is None:
        x = reshape(x, (-1,))
        axis = 0
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise _fail(TypeError, op, f"axis must be an int or None, got {axis!r}", x)
    (ax,) = _checked_axes(op, x, axis)
    n = x.shape[ax]
    if n is None:
        raise _fail(ShapeError, op, f"axis {ax} is the batch dimension (None): it cannot be scanned", x)
    if dtype is not None:
        x = cast(x, dtype)
    elif x.dtype.kind == "b":
        x = cast(x, "int64")  # NumPy's
    i = np.arange(n)
    mask = (i[None, :] >= i[:, None]) if reverse else (i[None, :] <= i[:, None])  # [out i, in j]
    mask = const(mask.reshape((n, n) + (1,) * (x.ndim - ax - 1)))
    xe = expand_dims(x, ax)
    if op == "cumsum":
        return sum(where(mask, xe, 0), ax + 1)
    return prod(where(mask, xe, 1), ax + 1)


def cumsum(x, axis: int | None = None, dtype=None, reverse: bool = False) -> Node:
    """``jnp.cumsum(x, axis, dtype)``: running sums along ``axis`` (None: over the flattened
    ``x``); ``reverse=True`` sums from the end (``jax.lax.cumsum``'s ``reverse``). Computed as a
    masked reduction (cost quadratic in the axis length, fused into one loop; no sequential
    dependence, so it runs on every target in parallel); differentiable."""
    return _cumulative("cumsum", x, axis, dtype, reverse)


def cumprod(x, axis: int | None = None, dtype=None, reverse: bool = False) -> Node:
    """``jnp.cumprod(x, axis, dtype)``: running products along ``axis`` (see cumsum); the
    gradient is exact with zeros among the factors."""
    return _cumulative("cumprod", x, axis, dtype, reverse)


# ---- shape helpers (reshapes, slices, broadcasts, gathers of the ops above) -----------------

def squeeze(x, axis=None) -> Node:
    """``np.squeeze``: drop the size-1 axes (``axis``: only those, each must have size 1).
    The batch dimension (None) is never dropped."""
    x = _lift(x)
    if axis is None:
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    else:
        axes = _checked_axes("squeeze", x, axis)
        bad = [a for a in axes if x.shape[a] != 1]
        if bad:
            raise _fail(ShapeError, "squeeze", f"cannot squeeze axis {bad[0]}: its size is {x.shape[bad[0]]}, "
                        "not 1", x)
    return reshape(x, tuple(-1 if d is None else d for i, d in enumerate(x.shape) if i not in axes))


def ravel(x) -> Node:
    """``np.ravel``: ``x`` as 1-D, in row-major order (``x.flatten()`` is the same here)."""
    x = _lift(x)
    return x if x.ndim == 1 else reshape(x, (-1,))


def flip(x, axis=None) -> Node:
    """``np.flip``: the order of the elements along ``axis`` (None: every axis) reversed."""
    x = _lift(x)
    axes = _checked_axes("flip", x, axis)
    return _index(x, tuple(builtins.slice(None, None, -1) if i in axes else builtins.slice(None)
                           for i in range(x.ndim)), "flip")


def _static_dims(op: str, x: Node) -> None:
    if None in x.shape:
        raise _fail(ShapeError, op, "the batch dimension (None) is not supported here; use a fixed shape", x)


def tile(x, reps) -> Node:
    """``np.tile``: ``x`` repeated ``reps`` times along each axis (``reps`` shorter than the
    rank applies to the last axes; longer adds leading axes). A broadcast and a reshape."""
    x = _lift(x)
    _static_dims("tile", x)
    reps = (int(reps),) if isinstance(reps, numbers.Integral) else tuple(int(r) for r in reps)
    if builtins.any(r < 0 for r in reps):
        raise _fail(ShapeError, "tile", f"reps must be non-negative, got {reps}", x)
    nd = builtins.max(x.ndim, len(reps))
    reps = (1,) * (nd - len(reps)) + reps
    shape = (1,) * (nd - x.ndim) + x.shape
    inter = tuple(v for d in shape for v in (1, d))
    big = tuple(v for r, d in zip(reps, shape) for v in (r, d))
    return reshape(broadcast_to(reshape(x, inter), big), tuple(r * d for r, d in zip(reps, shape)))


def repeat(x, repeats, axis: int | None = None) -> Node:
    """``np.repeat``: each element repeated ``repeats`` times along ``axis`` (None: of the
    flattened ``x``); ``repeats`` an int (a broadcast) or one int per element (a gather)."""
    x = _lift(x)
    if axis is None:
        x, axis = ravel(x), 0
    (ax,) = _checked_axes("repeat", x, axis)
    n = x.shape[ax]
    if n is None:
        raise _fail(ShapeError, "repeat", f"axis {ax} is the batch dimension (None)", x)
    r = np.asarray(repeats)
    if isinstance(repeats, Node) or r.dtype.kind not in "iu" or r.ndim > 1 or (r < 0).any():
        raise _fail(ValueError, "repeat", f"repeats must be a non-negative int or a list of them, got {repeats!r}", x)
    if r.ndim == 1 and r.size != n:
        raise _fail(ShapeError, "repeat", f"{r.size} repeats for an axis of size {n}", x)
    if r.ndim == 0:
        k = int(r)
        shape = tuple(-1 if d is None else d for d in x.shape)
        xe = expand_dims(x, ax + 1)
        big = shape[:ax + 1] + (k,) + shape[ax + 1:]
        if None in x.shape:
            return reshape(broadcast_like(xe, zeros_like(xe) + const(np.zeros((k,) + (1,) * (x.ndim - ax - 1),
                                                                                x.dtype))),
                           shape[:ax] + (n * k,) + shape[ax + 1:])
        return reshape(broadcast_to(xe, big), shape[:ax] + (n * k,) + shape[ax + 1:])
    return take(x, const(np.repeat(np.arange(n), r)), ax)


def roll(x, shift, axis=None) -> Node:
    """``np.roll``: elements shifted by ``shift`` along ``axis`` (ints or matching tuples; None:
    over the flattened ``x``), those leaving one end entering at the other."""
    x = _lift(x)
    if axis is None:
        return reshape(roll(ravel(x), shift, 0), x.shape if None not in x.shape else
                       tuple(-1 if d is None else d for d in x.shape))
    shifts = (shift,) if isinstance(shift, numbers.Integral) else tuple(shift)
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    if len(shifts) == 1 and len(axes) > 1:
        shifts = shifts * len(axes)
    if len(axes) == 1 and len(shifts) > 1:
        axes = axes * len(shifts)
    if len(shifts) != len(axes):
        raise _fail(ShapeError, "roll", f"shift {shift!r} and axis {axis!r} do not match", x)
    total: dict = {}
    for s, a in zip(shifts, axes):
        (ax,) = _checked_axes("roll", x, a)
        total[ax] = total.get(ax, 0) + int(s)
    for ax, s in total.items():
        n = x.shape[ax]
        if n is None:
            raise _fail(ShapeError, "roll", f"axis {ax} is the batch dimension (None)", x)
        s = s % n if n else 0
        if s:
            lead = (builtins.slice(None),) * ax
            x = concatenate([_index(x, lead + (builtins.slice(n - s, None),), "roll"),
                             _index(x, lead + (builtins.slice(0, n - s),), "roll")], ax)
    return x


def moveaxis(x, source, destination) -> Node:
    """``np.moveaxis``: axes ``source`` moved to positions ``destination`` (the others keep
    their order). A transpose."""
    x = _lift(x)
    src = (source,) if isinstance(source, numbers.Integral) else tuple(source)
    dst = (destination,) if isinstance(destination, numbers.Integral) else tuple(destination)
    if len(src) != len(dst):
        raise _fail(ShapeError, "moveaxis", "source and destination must have the same number of elements", x)
    src = tuple(_checked_axes("moveaxis", x, a)[0] for a in src)
    dst = tuple(_checked_axes("moveaxis", x, a)[0] for a in dst)
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise _fail(ShapeError, "moveaxis", "repeated axis", x)
    order = [a for a in range(x.ndim) if a not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(x, order)


def _triangle(op: str, x, k: int, lower: bool) -> Node:
    x = _lift(x)
    if x.ndim < 2:
        raise _fail(ShapeError, op, f"needs an operand of rank >= 2, got rank {x.ndim}", x)
    n, m = x.shape[-2:]
    if n is None or m is None:
        raise _fail(ShapeError, op, "the last two dims must be fixed (not the batch dimension)", x)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise _fail(TypeError, op, f"k must be an int, got {k!r}", x)
    mask = np.tri(n, m, int(k), dtype=bool) if lower else ~np.tri(n, m, int(k) - 1, dtype=bool)
    return where(const(mask), x, False if x.dtype.kind == "b" else 0)


def tril(x, k: int = 0) -> Node:
    """``np.tril``: zeros above the ``k``-th diagonal of the last two axes (a causal mask's
    shape); the gradient is masked the same way."""
    return _triangle("tril", x, k, True)


def triu(x, k: int = 0) -> Node:
    """``np.triu``: zeros below the ``k``-th diagonal of the last two axes."""
    return _triangle("triu", x, k, False)


# ---- constants (NumPy evaluates them when the graph is built; compile folds them) -----------

def _float_or(dtype, *values):
    """NumPy's dtype for Python scalars, except that floats default to float32 (graphc's and
    JAX's default float; params are float32)."""
    if dtype is not None:
        return np.dtype(dtype)
    dt = np.result_type(*[np.asarray(v) for v in values])
    return DEFAULT_FLOAT if dt == np.float64 and not builtins.any(
        isinstance(v, (np.ndarray, np.floating)) for v in values) else dt


def zeros(shape, dtype: Any = "float32") -> Node:
    """``np.zeros`` (float32 by default, as ``jnp.zeros``)."""
    return const(np.zeros(_check_shape(shape, False, "zeros"), dtype))


def ones(shape, dtype: Any = "float32") -> Node:
    """``np.ones`` (float32 by default, as ``jnp.ones``)."""
    return const(np.ones(_check_shape(shape, False, "ones"), dtype))


def full(shape, fill_value, dtype: Any = None) -> Node:
    """``np.full``; without ``dtype`` a Python float gives float32, an int int64, a bool bool."""
    return const(np.full(_check_shape(shape, False, "full"), fill_value, _float_or(dtype, fill_value)))


def eye(N: int, M: int | None = None, k: int = 0, dtype: Any = "float32") -> Node:
    """``np.eye``: ones on the ``k``-th diagonal of an ``N x M`` matrix."""
    return const(np.eye(int(N), None if M is None else int(M), int(k), dtype=dtype))


def arange(start, stop=None, step=None, dtype: Any = None) -> Node:
    """``np.arange``: ints give int64, floats float32 unless ``dtype`` says otherwise."""
    vals = [v for v in (start, stop, step) if v is not None]
    a = np.arange(start, stop, step) if step is not None else (np.arange(start, stop) if stop is not None
                                                               else np.arange(start))
    return const(a.astype(_float_or(dtype, *vals)))


def linspace(start, stop, num: int = 50, endpoint: bool = True, dtype: Any = None) -> Node:
    """``np.linspace`` (float32 unless ``dtype`` says otherwise; computed in float64 first)."""
    if int(num) < 0:
        raise _fail(ValueError, "linspace", f"num must be non-negative, got {num}")
    a = np.linspace(start, stop, int(num), endpoint=bool(endpoint))
    return const(a.astype(np.dtype(dtype) if dtype is not None else DEFAULT_FLOAT))


# ---- Python operators on tensors ----------------------------------------------------------

def _bool_op(sym: str, *xs) -> Node:
    """``&``, ``|``, ``^`` and ``~`` on boolean tensors (masks), as NumPy's; graphc has no
    bitwise ops on integers."""
    fn = {"&": logical_and, "|": logical_or, "^": logical_xor, "~": logical_not}[sym]
    nodes = [x for x in xs if isinstance(x, Node)]
    if builtins.any(x.dtype.kind != "b" for x in nodes) or builtins.any(
            not isinstance(x, (Node, bool, np.bool_)) for x in xs):
        raise _fail(DTypeError, f"operator {sym}", "takes boolean tensors (masks) only; graphc has no bitwise "
                    "integer ops (use logical_and/logical_or/logical_xor/logical_not for truth values)", *nodes)
    return fn(*xs)


def _install_operators() -> None:
    ops = {
        "__add__": lambda a, b: add(a, b), "__radd__": lambda a, b: add(b, a),
        "__sub__": lambda a, b: subtract(a, b), "__rsub__": lambda a, b: subtract(b, a),
        "__mul__": lambda a, b: multiply(a, b), "__rmul__": lambda a, b: multiply(b, a),
        "__truediv__": lambda a, b: divide(a, b), "__rtruediv__": lambda a, b: divide(b, a),
        "__matmul__": lambda a, b: matmul(a, b), "__rmatmul__": lambda a, b: matmul(b, a),
        "__pow__": lambda a, p: power(a, p),
        "__mod__": lambda a, b: mod(a, b), "__rmod__": lambda a, b: mod(b, a),
        "__floordiv__": lambda a, b: floor_divide(a, b), "__rfloordiv__": lambda a, b: floor_divide(b, a),
        "__and__": lambda a, b: _bool_op("&", a, b), "__rand__": lambda a, b: _bool_op("&", b, a),
        "__or__": lambda a, b: _bool_op("|", a, b), "__ror__": lambda a, b: _bool_op("|", b, a),
        "__xor__": lambda a, b: _bool_op("^", a, b), "__rxor__": lambda a, b: _bool_op("^", b, a),
        "__invert__": lambda a: _bool_op("~", a), "__round__": lambda a, ndigits=None: round(a, ndigits or 0),
        "__neg__": lambda a: negative(a), "__pos__": lambda a: a, "__abs__": lambda a: abs(a),
        "__gt__": lambda a, b: greater(a, b), "__ge__": lambda a, b: greater_equal(a, b),
        "__lt__": lambda a, b: less(a, b), "__le__": lambda a, b: less_equal(a, b),
        "T": property(lambda a: transpose(a)),
        "reshape": lambda a, *shape: reshape(a, shape[0] if len(shape) == 1 and not isinstance(shape[0], numbers.Integral) else shape),
        "sum": lambda a, axis=None, keepdims=False: sum(a, axis, keepdims),
        "mean": lambda a, axis=None, keepdims=False: mean(a, axis, keepdims),
        "max": lambda a, axis=None, keepdims=False: max(a, axis, keepdims),
        "astype": lambda a, dtype: cast(a, dtype),
        # NumPy's ndarray methods (graphc's functions of the same names)
        "min": lambda a, axis=None, keepdims=False: min(a, axis, keepdims),
        "prod": lambda a, axis=None, keepdims=False: prod(a, axis, keepdims),
        "any": lambda a, axis=None, keepdims=False: any(a, axis, keepdims),
        "all": lambda a, axis=None, keepdims=False: all(a, axis, keepdims),
        "argmax": lambda a, axis=None, keepdims=False: argmax(a, axis, keepdims),
        "argmin": lambda a, axis=None, keepdims=False: argmin(a, axis, keepdims),
        "cumsum": lambda a, axis=None, dtype=None: cumsum(a, axis, dtype),
        "cumprod": lambda a, axis=None, dtype=None: cumprod(a, axis, dtype),
        "var": lambda a, axis=None, keepdims=False: var(a, axis, keepdims),
        "std": lambda a, axis=None, keepdims=False: std(a, axis, keepdims),
        "clip": lambda a, lo, hi: clip(a, lo, hi),
        "round": lambda a, decimals=0: round(a, decimals),
        "squeeze": lambda a, axis=None: squeeze(a, axis),
        "flatten": lambda a: ravel(a),
        "ravel": lambda a: ravel(a),
        "transpose": lambda a, *axes: transpose(a, axes[0] if len(axes) == 1 and not isinstance(
            axes[0], numbers.Integral) else (axes or None)),
        "swapaxes": lambda a, axis1, axis2: swapaxes(a, axis1, axis2),
    }
    for k, v in ops.items():
        type.__setattr__(Node, k, v)


_install_operators()


def make_sce_grad(logits: Node, labels: Node) -> Node:
    """(softmax(logits) - one_hot(labels)) / batch: softmax_cross_entropy's gradient as one op."""
    return make("sce_grad", (logits, labels))


def state(name: str, shape: Sequence, init: Any = "zeros", dtype: Any = "float32") -> Node:
    """A persistent non-trainable value (optimizer state, counters): read at the start of a
    step, written at its end. Optimizers declare theirs through this."""
    shape = _check_shape(shape, False, f"state {name!r}")
    dtype = np.dtype(dtype)
    if not isinstance(init, str):
        init = ArrayValue(np.asarray(init, dtype=dtype).reshape(shape))
    elif init not in INITIALIZERS:
        raise ValueError(f"state {name!r}: unknown initializer {init!r}")
    return make("state", (), {"name": str(name), "shape": shape, "dtype": dtype, "init": init})


# ---- the in-step random generator (ops/random.py) ----------------------------------------

_NEXT_SEED = [0]


def _seed(op: str, seed, x=None) -> int:
    if seed is None:  # as Keras' seed=None, but reproducible: the n-th unseeded draw built in a process
        _NEXT_SEED[0] += 1
        return 0x5EED0000 + _NEXT_SEED[0]
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise _fail(TypeError, op, f"seed must be an int or None, got {seed!r}", *([x] if x is not None else []))
    return int(seed)


def step_counter() -> Node:
    """The training step's counter (int64 state ``"step"``, 0 before the first step): the
    default key of the in-step random generator, so each step draws new numbers."""
    return state("step", (), init="zeros", dtype="int64")


def random_uniform(shape, seed: int | None = None, dtype: Any = "float32", key: Node | None = None) -> Node:
    """Uniform numbers in [0, 1) drawn inside the compiled step (no feeding): element i is a
    hash of ``(seed, key, i)`` (counter-based, ops/random.py), so a draw is reproducible from
    its seed and key on every target. ``shape``: a tuple of ints, or a tensor whose
    (run-time) shape to take. ``key``: an int scalar tensor; by default the step counter, so
    every training step draws anew (a function without an optimizer draws the same numbers
    each call unless given a key)."""
    from .ops.random import random_uniform as _ru
    like = shape if isinstance(shape, Node) else None
    seed = _seed("random_uniform", seed, like)
    key = step_counter() if key is None else _lift(key)
    if like is not None:
        return _ru(key, like.shape, seed, dtype, like=like if None in like.shape else None)
    return _ru(key, _check_shape(shape, False, "random_uniform shape"), seed, dtype)


def dropout(x, rate: float, seed: int | None = None, key: Node | None = None) -> Node:
    """``keras.random.dropout``: each element zeroed with probability ``rate``, the others
    scaled by ``1 / (1 - rate)`` so the expectation is unchanged. The mask comes from the
    in-step generator (``random_uniform`` of x's shape), keyed by the step counter: a new mask
    every training step, the same one for the forward and backward pass."""
    x = _lift(x)
    if not isinstance(rate, numbers.Real) or not 0.0 <= float(rate) < 1.0:
        raise _fail(ValueError, "dropout", f"rate must be in [0, 1), got {rate!r}", x)
    if x.dtype.kind != "f":
        raise _fail(DTypeError, "dropout", f"expects a floating-point input, got {x.dtype}", x)
    if float(rate) == 0.0:
        return x
    u = random_uniform(x, _seed("dropout", seed, x), x.dtype, key)
    keep = greater_equal(u, float(rate))
    return where(keep, x * (1.0 / (1.0 - float(rate))), 0.0)


def _affine_draw(op: str, z: Node, mean, stddev, dtype) -> Node:
    for name, v in (("mean", mean), ("stddev", stddev)):
        if isinstance(v, Node) or isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise _fail(TypeError, op, f"{name} must be a Python number, got {v!r}")
    if not float(stddev) >= 0.0:
        raise _fail(ValueError, op, f"stddev must be >= 0, got {stddev!r}")
    z = cast(z, dtype)
    if float(stddev) != 1.0:
        z = z * float(stddev)
    return z + float(mean) if float(mean) != 0.0 else z


def _float_dtype(op: str, dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise _fail(DTypeError, op, f"dtype must be floating point, got {dt}")
    return dt


def random_normal(shape, mean: float = 0.0, stddev: float = 1.0, dtype: Any = "float32", seed: int | None = None,
                  key: Node | None = None) -> Node:
    """``keras.random.normal``: draws of N(mean, stddev**2) inside the step (``shape``, ``seed``
    and ``key`` as ``random_uniform``'s). Each element is the inverse normal CDF of one float64
    uniform of the in-step generator, computed with correctly rounded operations only
    (ops/distributions.py), so bit-identical on the CPU targets (a GPU may fuse multiply-adds)."""
    from .ops.distributions import standard_normal
    dt = _float_dtype("random_normal", dtype)
    return _affine_draw("random_normal", standard_normal(random_uniform(shape, _seed("random_normal", seed),
                                                                        "float64", key)), mean, stddev, dt)


def truncated_normal(shape, mean: float = 0.0, stddev: float = 1.0, dtype: Any = "float32", seed: int | None = None,
                     key: Node | None = None) -> Node:
    """``keras.random.truncated_normal``: N(mean, stddev**2) restricted to two standard
    deviations around the mean (Keras re-draws values outside; here one uniform maps onto the
    truncated range through the inverse CDF: the same distribution, no rejection loop)."""
    from .ops.distributions import truncated_standard_normal
    dt = _float_dtype("truncated_normal", dtype)
    u = random_uniform(shape, _seed("truncated_normal", seed), "float64", key)
    return _affine_draw("truncated_normal", truncated_standard_normal(u), mean, stddev, dt)


def random_bernoulli(p=0.5, shape=None, seed: int | None = None, key: Node | None = None) -> Node:
    """``jax.random.bernoulli``: booleans, True with probability ``p`` (a Python number in
    [0, 1] or a float tensor, broadcast against ``shape``; ``shape`` None takes ``p``'s).
    ``uniform < p`` on a float64 draw of the in-step generator."""
    if isinstance(p, Node):
        if p.dtype.kind != "f":
            raise _fail(DTypeError, "random_bernoulli", f"p must be floating point, got {p.dtype}", p)
        shape = p if shape is None else shape
        pv = cast(p, "float64")
    else:
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
            raise _fail(ValueError, "random_bernoulli", f"p must be a number in [0, 1], got {p!r}")
        if shape is None:
            raise _fail(ValueError, "random_bernoulli", "needs a shape when p is a number")
        pv = float(p)
    u = random_uniform(shape, _seed("random_bernoulli", seed), "float64", key)
    return less(u, pv)


# ---- static slicing, padding, concatenation (ops/slicing.py) ------------------------------

def _fmt_key(items) -> str:
    def one(k):
        if k is None:
            return "None"
        if k is Ellipsis:
            return "..."
        if isinstance(k, builtins.slice):
            parts = ["" if v is None else repr(v) for v in (k.start, k.stop, k.step)]
            return ":".join(parts[:2]) + (f":{parts[2]}" if k.step is not None else "")
        return repr(k) if not isinstance(k, Node) else "<tensor>"
    return "x[" + ", ".join(one(k) for k in items) + "]"


def _slice_entry(op: str, s: builtins.slice, d, ax: int, x: Node):
    """A NumPy slice of an axis of size ``d`` as a slice-op entry (None: the whole axis)."""
    if d is None:
        full = (s.start is None or (isinstance(s.start, numbers.Integral) and s.start == 0)) and s.stop is None and (
            s.step is None or (isinstance(s.step, numbers.Integral) and s.step == 1))
        if full:
            return None
        raise _fail(ShapeError, op, f"axis {ax} is the batch dimension (None): it cannot be sliced "
                    "(slice the batch in NumPy before feeding it)", x)
    for v in (s.start, s.stop, s.step):
        if v is not None and (not isinstance(v, numbers.Integral) or isinstance(v, bool)):
            raise _fail(TypeError, op, f"slice bounds must be static ints or None, got {v!r} "
                        "(for indices computed in the graph use gc.take)", x)
    if s.step is not None and int(s.step) == 0:
        raise _fail(ShapeError, op, "slice step cannot be zero", x)
    r = range(*s.indices(d))
    n = len(r)
    if n == 0:
        return (0, 0, 1)
    if n == d and r.step == 1:
        return None
    if n == 1:
        return (r.start, r.start + 1, 1)
    last = r.start + (n - 1) * r.step
    return (r.start, last + (1 if r.step > 0 else -1), r.step)


def _index(x: Node, key, op: str | None = None) -> Node:
    """NumPy basic indexing: static ints, slices (any non-zero step), None and one Ellipsis.
    One slice op, then a reshape for the axes that ints drop and None adds."""
    from .ops.slicing import count, slice_node
    items = key if isinstance(key, tuple) else (key,)
    op = op or _fmt_key(items)
    for k in items:
        if k is None or k is Ellipsis or isinstance(k, builtins.slice):
            continue
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
            what = "a tensor" if isinstance(k, Node) else f"a {type(k).__name__}"
            raise _fail(TypeError, op, f"only static ints, slices, None and ... can index a tensor, got {what}; "
                        "for integer-array or tensor indices use gc.take(x, indices, axis), "
                        "for boolean masks gc.where", x)
    if builtins.sum(k is Ellipsis for k in items) > 1:
        raise _fail(ShapeError, op, "an index can only have a single ellipsis ('...')", x)
    real = builtins.sum(k is not None and k is not Ellipsis for k in items)
    if real > x.ndim:
        raise _fail(IndexOutOfBoundsError, op,
                    f"too many indices: the tensor is {x.ndim}-dimensional, but {real} were indexed", x)
    fill = (builtins.slice(None),) * (x.ndim - real)
    e = next((i for i, k in enumerate(items) if k is Ellipsis), None)
    items = items + fill if e is None else items[:e] + fill + items[e + 1:]
    entries, shape, ax = [], [], 0
    for k in items:
        if k is None:
            shape.append(1)
            continue
        d = x.shape[ax]
        if isinstance(k, builtins.slice):
            ent = _slice_entry(op, k, d, ax, x)
            entries.append(ent)
            shape.append(count(ent, d))
        else:
            if d is None:
                raise _fail(ShapeError, op, f"axis {ax} is the batch dimension (None): it cannot be indexed", x)
            i = int(k)
            if not -d <= i < d:
                raise _fail(IndexOutOfBoundsError, op, f"index {i} is out of bounds for axis {ax} with size {d}", x)
            i %= d
            entries.append(None if d == 1 else (i, i + 1, 1))
        ax += 1
    y = slice_node(x, entries)
    return y if y.shape == tuple(shape) else reshape(y, shape)


def pad(x, pad_width, mode: str = "constant", constant_values=0) -> Node:
    """``np.pad`` in mode "constant": ``pad_width`` is an int, a ``(before, after)`` pair or
    one pair per axis (broadcast as NumPy does); ``constant_values`` a scalar. The batch
    dimension cannot be padded. The gradient slices the padding off."""
    from .ops.slicing import pad_node
    x = _lift(x)
    if mode != "constant":
        raise _fail(ValueError, "pad", f"mode {mode!r} is not supported: only mode='constant'", x)
    if isinstance(constant_values, Node) or np.ndim(constant_values) != 0:
        raise _fail(ValueError, "pad", "constant_values must be a Python or NumPy scalar "
                    "(per-axis values are not supported)", x)
    w = np.asarray(pad_width)
    if w.dtype.kind not in "iu" or isinstance(pad_width, bool):
        raise _fail(TypeError, "pad", f"pad_width must be integers, got {pad_width!r}", x)
    try:
        w = np.broadcast_to(w, (x.ndim, 2))
    except ValueError:
        raise _fail(ShapeError, "pad", f"pad_width of shape {w.shape} does not broadcast to one (before, after) "
                    f"pair per axis: ({x.ndim}, 2)", x) from None
    if (w < 0).any():
        raise _fail(ShapeError, "pad", f"pad widths must be non-negative, got {w.tolist()}", x)
    for ax, d in enumerate(x.shape):
        if d is None and w[ax].any():
            raise _fail(ShapeError, "pad", f"axis {ax} is the batch dimension (None): it cannot be padded", x)
    kind = x.dtype.kind
    value = bool(constant_values) if kind == "b" else int(constant_values) if kind in "iu" else float(constant_values)
    return pad_node(x, w.tolist(), None, value)


def _sequence(op: str, xs) -> list:
    if isinstance(xs, Node) or not isinstance(xs, (list, tuple)):
        raise _fail(TypeError, op, f"takes a list or tuple of tensors, got {type(xs).__name__}")
    if not xs:
        raise _fail(ShapeError, op, "needs at least one tensor")
    return [_lift(x) for x in xs]


def concatenate(xs: Sequence, axis: int | None = 0) -> Node:
    """``np.concatenate``: tensors of one rank joined along ``axis`` (None: flattened first);
    dtypes are promoted as NumPy does. Not along the batch dimension."""
    xs = _sequence("concatenate", xs)
    if axis is None:
        xs = [reshape(x, (-1,)) for x in xs]
        axis = 0
    if builtins.any(x.ndim == 0 for x in xs):
        raise _fail(ShapeError, "concatenate", "zero-dimensional tensors cannot be concatenated", *xs)
    if builtins.any(x.ndim != xs[0].ndim for x in xs):
        raise _fail(ShapeError, "concatenate", "all tensors must have the same rank", *xs)
    (ax,) = _checked_axes("concatenate", xs[0], axis)
    from .ops.base import promote
    dt = promote(*[x.dtype for x in xs])
    xs = [cast(x, dt) for x in xs]
    if len(xs) == 1:
        return xs[0]
    return make("concatenate", xs, {"axis": ax})


def stack(xs: Sequence, axis: int = 0) -> Node:
    """``np.stack``: tensors of one shape joined along a new axis ``axis``."""
    xs = _sequence("stack", xs)
    if builtins.any(x.shape != xs[0].shape for x in xs):
        raise _fail(ShapeError, "stack", "all tensors must have the same shape", *xs)
    nd = xs[0].ndim + 1
    if not isinstance(axis, numbers.Integral) or not -nd <= axis < nd:
        raise _fail(ShapeError, "stack", f"axis {axis!r} is out of range for the rank-{nd} result", *xs)
    axis = int(axis) % nd
    return concatenate([expand_dims(x, axis) for x in xs], axis)


def split(x, indices_or_sections, axis: int = 0) -> list:
    """``np.split``: an int ``N`` cuts ``axis`` into N equal parts (or raises, as NumPy);
    a list of ints gives the split points (Python slice semantics: clamped, negative from the
    end, empty parts allowed). Returns a list of tensors."""
    x = _lift(x)
    (ax,) = _checked_axes("split", x, axis)
    n = x.shape[ax]
    if n is None:
        raise _fail(ShapeError, "split", f"axis {ax} is the batch dimension (None): it cannot be split", x)
    s = indices_or_sections
    if isinstance(s, numbers.Integral) and not isinstance(s, bool):
        s = int(s)
        if s <= 0:
            raise _fail(ShapeError, "split", f"the number of sections must be positive, got {s}", x)
        if n % s:
            raise _fail(ShapeError, "split", f"array split does not result in an equal division: "
                        f"{n} elements along axis {ax} into {s} sections", x)
        points = [n // s * i for i in range(1, s)]
    else:
        if isinstance(s, Node) or not isinstance(s, (list, tuple, np.ndarray)) or builtins.any(
                not isinstance(p, numbers.Integral) or isinstance(p, bool) for p in s):
            raise _fail(TypeError, "split", "indices_or_sections must be an int or a list of static ints, "
                        f"got {s!r}", x)
        points = [int(p) for p in s]
    bounds = [0] + points + [n]
    lead = (builtins.slice(None),) * ax
    return [_index(x, lead + (builtins.slice(a, b),), "split") for a, b in zip(bounds[:-1], bounds[1:])]


def scan(fn, init, xs=None, length: int | None = None, reverse: bool = False, unroll: int | bool = 1,
         checkpoint: bool = True):
    """A loop in the graph with ``jax.lax.scan``'s semantics: ``fn(carry, x) -> (carry, y)``
    runs once per step over the leading axis of ``xs``; returns ``(final carry, ys)`` with the
    ys stacked along a new leading axis. ``init``, ``xs`` and ``y`` are tensors or nested
    tuples/lists/dicts of them (``xs`` or ``y`` may be None; with ``xs=None`` give ``length``).
    ``reverse=True`` scans from the last step but stores ``ys`` in the original order.

    ``fn`` is written with DSL ops and traced ONCE (on placeholder tensors): it must not branch
    on values; params and other tensors it closes over become inputs of the loop. The carry
    must keep its structure, shapes and dtypes (checked now: the mismatching leaf, its shapes
    and dtypes and your line are named). Shapes may hold the batch dim (None), but not the
    scanned axis.

    Differentiable to any order: the adjoint is a reverse scan. ``checkpoint=True`` (default)
    saves only the per-step carries and recomputes each step's forward in the reverse pass
    (memory T x |carry|); ``checkpoint=False`` saves what the reverse pass reads from the
    forward (memory T x |residuals|, no recomputation). The numpy target interprets the loop;
    the compiled targets (cpu, parallel, cuda) currently unroll it into the step (T copies
    of the body, whose identical kernels compile once), so compile time grows with T.
    ``unroll`` is accepted as in JAX and does not change results."""
    from .ops.control import scan as _scan
    return _scan(fn, init, xs, length, reverse, unroll, checkpoint)


def _not_iterable(x):
    raise TypeError(f"{x!r} is a symbolic graphc tensor and is not iterable: index it (x[i]) or use gc.split")


type.__setattr__(Node, "__getitem__", _index)
type.__setattr__(Node, "__iter__", _not_iterable)


# what ``import graphc as gc`` exposes as gc.*: every public function above (a new op's
# function needs no entry anywhere else)
__all__ = ["Tensor"] + [k for k, v in list(globals().items()) if callable(v) and not k.startswith("_")
                        and getattr(v, "__module__", None) == __name__ and k not in ("make_sce_grad",)]
