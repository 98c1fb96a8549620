"""Convolution and pooling over NHWC images: ``im2col``/``col2im`` and ``pool2d``/``pool2d_grad``.

A convolution is not an op of its own: ``gc.conv2d`` is ``im2col`` (the patches under every
output position, one row of ``kh * kw * C`` values each) followed by ONE 2-D GEMM against the
HWIO kernel reshaped to ``(kh * kw * C, filters)``. Both of its gradients are GEMMs as well
(``cols^T @ g`` for the kernel, ``g @ w^T`` then ``col2im`` for the image), so on the CPU
every FLOP of a convolution runs in BLAS, and bias and activation fuse as the epilogue of
that GEMM as in a dense layer. ``im2col`` and ``col2im`` are adjoint linear maps, each
other's VJP, so higher derivatives come for free.

Pooling is its own structured op (``pool2d``, mode ``"max"`` or ``"avg"``) with its own
gradient op: max pooling sends each output's gradient to the FIRST maximum of its window
(row-major order, as TensorFlow's and PyTorch's kernels do), average pooling spreads it
over the window's positions inside the image (padding is not counted, as in Keras/TF).

Geometry lives in the attrs, all static ints: ``kernel`` (kh, kw), ``strides`` (sh, sw),
``dilation`` (dh, dw), ``pads`` ((top, bottom), (left, right)). Output size per axis:
``(n + before + after - (k - 1) * d - 1) // s + 1``.
"""
from __future__ import annotations

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir import fmt_shape, make
from .base import OpDef, Structured, register


def out_size(n: int, k: int, s: int, d: int, before: int, after: int) -> int:
    return (n + before + after - (k - 1) * d - 1) // s + 1


def same_pads(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow/Keras ``padding="same"``: ``ceil(n / s)`` outputs, the odd pixel at the end."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def geometry(attrs) -> tuple:
    (kh, kw), (sh, sw), (dh, dw), ((pt, pb), (pl, pr)) = (attrs["kernel"], attrs["strides"], attrs["dilation"],
                                                          attrs["pads"])
    return kh, kw, sh, sw, dh, dw, pt, pb, pl, pr


def _out_hw(attrs, h: int, w: int) -> tuple[int, int]:
    kh, kw, sh, sw, dh, dw, pt, pb, pl, pr = geometry(attrs)
    return out_size(h, kh, sh, dh, pt, pb), out_size(w, kw, sw, dw, pl, pr)


def _check_image(x, what: str = "x") -> None:
    if x.ndim != 4:
        raise ShapeError(f"{what} must be 4-D (batch, height, width, channels) in NHWC, got shape {fmt_shape(x.shape)}")
    if x.dtype.kind != "f":
        raise DTypeError(f"{what} must be floating point, got {x.dtype}")
    if None in x.shape[1:]:
        raise ShapeError(f"{what}: only the batch dim may be None, got shape {fmt_shape(x.shape)}")


def _check_out(attrs, h: int, w: int) -> tuple[int, int]:
    oh, ow = _out_hw(attrs, h, w)
    if oh < 1 or ow < 1:
        kh, kw, sh, sw, dh, dw, *_ = geometry(attrs)
        raise ShapeError(f"a {kh}x{kw} window (dilation {dh}x{dw}) does not fit in a {h}x{w} image "
                         f"with pads {attrs['pads']}: no output position")
    return oh, ow


def _windows(attrs, h: int, w: int):
    """For every window offset (a, b): the slices of the padded image it reads, in order."""
    kh, kw, sh, sw, dh, dw, pt, pb, pl, pr = geometry(attrs)
    oh, ow = _out_hw(attrs, h, w)
    for a in range(kh):
        for b in range(kw):
            yield a, b, (slice(a * dh, a * dh + (oh - 1) * sh + 1, sh), slice(b * dw, b * dw + (ow - 1) * sw + 1, sw))


def _padded(x: np.ndarray, attrs, value) -> np.ndarray:
    (pt, pb), (pl, pr) = attrs["pads"]
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


# ---- im2col / col2im ------------------------------------------------------------------------

def _im2col_infer(inputs, attrs):
    (x,) = inputs
    _check_image(x)
    oh, ow = _check_out(attrs, x.shape[1], x.shape[2])
    kh, kw = attrs["kernel"]
    return (x.shape[0], oh, ow, kh * kw * x.shape[3]), x.dtype


def _im2col_eval(args, attrs, node):
    (x,) = args
    n, h, w, c = x.shape
    xp = _padded(x, attrs, 0)
    out = np.empty((n,) + node.shape[1:], dtype=node.dtype)
    kw = attrs["kernel"][1]
    for a, b, (ys, xs) in _windows(attrs, h, w):
        q = (a * kw + b) * c
        out[..., q:q + c] = xp[:, ys, xs, :]
    return out


def _col2im_infer(inputs, attrs):
    (cols,) = inputs
    h, w = attrs["image"]
    kh, kw = attrs["kernel"]
    if cols.ndim != 4 or cols.shape[3] % (kh * kw):
        raise ShapeError(f"cols must be (batch, out_h, out_w, {kh}*{kw}*channels), got {fmt_shape(cols.shape)}")
    if tuple(cols.shape[1:3]) != _out_hw(attrs, h, w):
        raise ShapeError(f"cols of shape {fmt_shape(cols.shape)} do not match a {h}x{w} image's "
                         f"{_out_hw(attrs, h, w)} output positions")
    return (cols.shape[0], h, w, cols.shape[3] // (kh * kw)), cols.dtype


def _col2im_eval(args, attrs, node):
    (cols,) = args
    n, h, w, c = cols.shape[0], *attrs["image"], node.shape[3]
    (pt, pb), (pl, pr) = attrs["pads"]
    xp = np.zeros((n, h + pt + pb, w + pl + pr, c), dtype=node.dtype)
    kw = attrs["kernel"][1]
    for a, b, (ys, xs) in _windows(attrs, h, w):
        q = (a * kw + b) * c
        xp[:, ys, xs, :] += cols[..., q:q + c]  # one window offset touches each pixel at most once
    return np.ascontiguousarray(xp[:, pt:pt + h, pl:pl + w, :])


def im2col(x, attrs: dict):
    return make("im2col", (x,), dict(attrs))


def col2im(cols, attrs: dict, image: tuple):
    return make("col2im", (cols,), {**attrs, "image": tuple(int(d) for d in image)})


def _geom(attrs: dict) -> dict:
    return {k: attrs[k] for k in ("kernel", "strides", "dilation", "pads")}


_IM2COL = Structured("im2col", contiguous_operands=True)
_COL2IM = Structured("col2im", contiguous_operands=True)
register(OpDef("im2col", "structured", _im2col_infer, _im2col_eval,
               lambda y, g: [col2im(g, _geom(y.attrs), y.inputs[0].shape[1:3])],
               doc="the (kh*kw*C) patch under every output position of a convolution (zeros outside)",
               structured=_IM2COL))
register(OpDef("col2im", "structured", _col2im_infer, _col2im_eval,
               lambda y, g: [im2col(g, _geom(y.attrs))],
               doc="im2col's adjoint: every patch value added back at its pixel", structured=_COL2IM))


# ---- pooling --------------------------------------------------------------------------------

def _pool_infer(inputs, attrs):
    x = inputs[0]
    _check_image(x)
    oh, ow = _check_out(attrs, x.shape[1], x.shape[2])
    if attrs["mode"] not in ("max", "avg"):
        raise ShapeError(f"mode must be 'max' or 'avg', got {attrs['mode']!r}")
    return (x.shape[0], oh, ow, x.shape[3]), x.dtype


def _counts(attrs, h: int, w: int, dtype) -> np.ndarray:
    """Window positions inside the image per output position (the average's divisor)."""
    ones = _padded(np.ones((1, h, w, 1), dtype=dtype), attrs, 0)
    return sum(ones[:, ys, xs, :] for _, _, (ys, xs) in _windows(attrs, h, w))


def _pool_eval(args, attrs, node):
    x = args[0]
    h, w = x.shape[1:3]
    if attrs["mode"] == "max":
        xp = _padded(x, attrs, -np.inf)
        return np.maximum.reduce([xp[:, ys, xs, :] for _, _, (ys, xs) in _windows(attrs, h, w)]).astype(node.dtype)
    xp = _padded(x, attrs, 0)
    s = sum(xp[:, ys, xs, :] for _, _, (ys, xs) in _windows(attrs, h, w))
    return (s / _counts(attrs, h, w, x.dtype)).astype(node.dtype)


def _pool_grad_infer(inputs, attrs):
    x, g = inputs
    shape, dtype = _pool_infer([x], attrs)
    if len(g.shape) != 4 or tuple(g.shape[1:]) != tuple(shape[1:]):
        raise ShapeError(f"g must have the pooled shape {fmt_shape(shape)}, got {fmt_shape(g.shape)}")
    return x.shape, x.dtype


def _pool_grad_eval(args, attrs, node):
    x, g = args
    h, w = x.shape[1:3]
    (pt, pb), (pl, pr) = attrs["pads"]
    out = np.zeros((x.shape[0], h + pt + pb, w + pl + pr, x.shape[3]), dtype=node.dtype)
    if attrs["mode"] == "max":
        xp = _padded(x, attrs, -np.inf)
        m = _pool_eval([x], attrs, node)
        taken = np.zeros(g.shape, dtype=bool)
        for _, _, (ys, xs) in _windows(attrs, h, w):
            win = xp[:, ys, xs, :]
            # the first maximum of each window; a NaN is the maximum (max_pool2d propagates it)
            hit = ((win == m) | (np.isnan(win) & np.isnan(m))) & ~taken
            out[:, ys, xs, :] += np.where(hit, g, 0)
            taken |= hit
    else:
        share = g / _counts(attrs, h, w, g.dtype)
        for _, _, (ys, xs) in _windows(attrs, h, w):
            out[:, ys, xs, :] += share
    return np.ascontiguousarray(out[:, pt:pt + h, pl:pl + w, :])


def pool2d(x, attrs: dict):
    return make("pool2d", (x,), dict(attrs))


def _pool_vjp(y, g):
    return [make("pool2d_grad", (y.inputs[0], g), dict(y.attrs))]


def _pool_grad_vjp(y, v):
    if y.attrs["mode"] == "max":
        from ..errors import GraphcError
        raise GraphcError("the second derivative of max pooling is not supported (its first derivative is "
                          "piecewise constant in x, but the gradient w.r.t. the incoming gradient needs a "
                          "gather at the window maxima that graphc does not have yet)")
    # average pooling's gradient is linear in g and constant in x: its adjoint is the pooling
    return [None, pool2d(v, y.attrs)]


_POOL = Structured("pool2d", contiguous_operands=True)
_POOL_GRAD = Structured("pool2d_grad", contiguous_operands=True)
register(OpDef("pool2d", "structured", _pool_infer, _pool_eval, _pool_vjp,
               doc="max or average over each window (padding ignored: -inf for max, not counted for avg)",
               structured=_POOL))
register(OpDef("pool2d_grad", "structured", _pool_grad_infer, _pool_grad_eval, _pool_grad_vjp,
               doc="pooling's gradient: to each window's first maximum (max) or spread over it (avg)",
               structured=_POOL_GRAD))
