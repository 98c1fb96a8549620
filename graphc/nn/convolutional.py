"""Convolution and pooling layers (``keras.layers.Conv2D``, ``MaxPooling2D``, ...) over
``gc.conv2d`` and the pooling ops: NHWC (``channels_last``) only, as graphc's ops are.

Shapes follow Keras/TensorFlow: ``padding="valid"`` gives ``floor((n - d*(k-1) - 1) / s) + 1``
outputs along a spatial axis, ``"same"`` gives ``ceil(n / s)``. A kernel or window larger
than its (padded) input is a ValueError when the layer is built, as in Keras.
"""
from __future__ import annotations

import numbers
from typing import Any

from .. import dsl as F
from . import activations
from .base import Layer, _Affine, _fmt, _weight_args, _weight_config

__all__ = ["Conv2D", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D",
           "GlobalAveragePooling2D", "GlobalMaxPooling2D"]


def _pair(v, what: str) -> tuple[int, int]:
    """An int or a pair of positive ints, as Keras' ``kernel_size``/``strides``/``pool_size``."""
    t = (v, v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else (
        tuple(v) if isinstance(v, (tuple, list)) else None)
    if t is None or len(t) != 2 or not all(isinstance(e, numbers.Integral) and not isinstance(e, bool) and e >= 1
                                           for e in t):
        raise ValueError(f"{what}: expected a positive int or a tuple of 2 positive ints, got {v!r}")
    return int(t[0]), int(t[1])


def _padding(v, what: str) -> str:
    p = v.lower() if isinstance(v, str) else v
    if p not in ("valid", "same"):
        raise ValueError(f"{what}: padding must be 'valid' or 'same', got {v!r}")
    return p


def _channels_last(data_format, what: str) -> None:
    if data_format in (None, "channels_last"):
        return
    if data_format == "channels_first":
        raise ValueError(f"{what}: data_format='channels_first' is not supported: graphc's convolutions and pooling "
                         "are NHWC (channels_last); transpose the images to (batch, height, width, channels), e.g. "
                         "x.transpose(0, 2, 3, 1)")
    raise ValueError(f"{what}: data_format must be 'channels_last' or 'channels_first', got {data_format!r}")


def _unsupported(what: str, **given: Any) -> None:
    bad = sorted(k for k, v in given.items() if v is not None)
    if bad:
        raise NotImplementedError(f"{what}: {', '.join(bad)} are not supported yet")


def _out_len(n: int, k: int, s: int, d: int, padding: str) -> int:
    if padding == "same":
        return -(-n // s)
    return (n - d * (k - 1) - 1) // s + 1


def _spatial_out(layer: Layer, input_shape: tuple, window: tuple, strides: tuple, dilation: tuple,
                 padding: str, what: str) -> tuple[int, int]:
    h, w = input_shape[0], input_shape[1]
    oh = _out_len(h, window[0], strides[0], dilation[0], padding)
    ow = _out_len(w, window[1], strides[1], dilation[1], padding)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{layer._label}: computed output size would be negative or zero: inputs of shape "
                         f"{_fmt(input_shape)}, {what}={window}, strides={strides}, dilation_rate={dilation}, "
                         f"padding={padding!r}; use a smaller {what} or padding='same'")
    return oh, ow


class Conv2D(_Affine, Layer):
    """``keras.layers.Conv2D``: ``activation(conv2d(x, kernel) + bias)`` on NHWC images
    ``(batch, height, width, channels)``; ``kernel`` is ``(kh, kw, channels, filters)``
    (HWIO, Keras' layout, so Keras weights load as they are). ``gc.conv2d`` is im2col plus
    ONE GEMM, so bias and activation fuse into that GEMM's epilogue."""

    ndim = 4

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid", data_format=None,
                 dilation_rate=(1, 1), groups: int = 1, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if isinstance(filters, bool) or not isinstance(filters, numbers.Integral) or filters <= 0:
            raise ValueError(f"Conv2D: filters must be a positive int, got {filters!r}")
        if groups != 1:
            raise NotImplementedError(f"Conv2D: groups={groups!r} (grouped convolution) is not supported yet")
        _conv_args(self, "Conv2D", kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias,
                   activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                   bias_constraint=bias_constraint)
        self.filters = int(filters)
        _weight_args(self, "Conv2D", kernel=(kernel_initializer, kernel_regularizer),
                     bias=(bias_initializer, bias_regularizer))
        self.kernel = self.bias = None

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", self.kernel_size + (input_shape[-1], self.filters),
                                      self.kernel_initializer, self.kernel_regularizer)
        self.bias = (self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)
                     if self.use_bias else None)

    def compute_output_shape(self, input_shape):
        oh, ow = _spatial_out(self, input_shape, self.kernel_size, self.strides, self.dilation_rate, self.padding,
                              "kernel_size")
        return (oh, ow, self.filters)

    def linear(self, x):  # then bias and activation (_Affine's call_split/call, as Dense)
        return F.conv2d(x, self.kernel, strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": list(self.dilation_rate), "groups": 1, "activation": self.activation_name,
                "use_bias": self.use_bias, **_weight_config(self, "Conv2D", "kernel", "bias")}


class _Pooling2D(Layer):
    ndim = 4
    _fn = None

    def __init__(self, pool_size=(2, 2), strides=None, padding: str = "valid", data_format=None,
                 name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        what = type(self).__name__
        _channels_last(data_format, what)
        self.pool_size = _pair(pool_size, f"{what}(pool_size=...)")
        self.strides = self.pool_size if strides is None else _pair(strides, f"{what}(strides=...)")
        self.padding = _padding(padding, what)
        self.data_format = "channels_last"

    def compute_output_shape(self, input_shape):
        oh, ow = _spatial_out(self, input_shape, self.pool_size, self.strides, (1, 1), self.padding, "pool_size")
        return (oh, ow, input_shape[-1])

    def call(self, x, training=False):
        return type(self)._fn(x, self.pool_size, self.strides, self.padding)

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size), "padding": self.padding,
                "strides": list(self.strides), "data_format": self.data_format}


class MaxPooling2D(_Pooling2D):
    """``keras.layers.MaxPooling2D``: the maximum of each ``pool_size`` window, moved by
    ``strides`` (default: ``pool_size``); the gradient goes to each window's first maximum."""

    _fn = staticmethod(F.max_pool2d)


class AveragePooling2D(_Pooling2D):
    """``keras.layers.AveragePooling2D``: the mean of each window (with ``padding="same"``
    over the positions inside the image, as Keras/TensorFlow count them)."""

    _fn = staticmethod(F.avg_pool2d)


class _GlobalPooling2D(Layer):
    ndim = 4
    _fn = None

    def __init__(self, data_format=None, keepdims: bool = False, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        _channels_last(data_format, type(self).__name__)
        self.keepdims = bool(keepdims)
        self.data_format = "channels_last"

    def compute_output_shape(self, input_shape):
        return (1, 1, input_shape[-1]) if self.keepdims else (input_shape[-1],)

    def call(self, x, training=False):
        return type(self)._fn(x, keepdims=self.keepdims)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling2D(_GlobalPooling2D):
    """``keras.layers.GlobalAveragePooling2D``: the mean over height and width, ``(batch,
    channels)`` (``keepdims=True``: ``(batch, 1, 1, channels)``)."""

    _fn = staticmethod(F.global_average_pool2d)


class GlobalMaxPooling2D(_GlobalPooling2D):
    """``keras.layers.GlobalMaxPooling2D``: the maximum over height and width."""

    _fn = staticmethod(F.global_max_pool2d)


# ---- the convolution variants: transposed, depthwise, separable -------------------------------
# None is a new op: a transposed convolution is the gradient of Conv2D w.r.t. its input (one
# GEMM, then col2im), a depthwise one is im2col's patches weighted per channel and summed
# over the window (a multiply and a reduction), a separable one a depthwise then a 1x1 Conv2D.

def _conv_args(layer, name: str, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias,
               **unsupported) -> None:
    _channels_last(data_format, name)
    _unsupported(name, **unsupported)
    layer.kernel_size = _pair(kernel_size, f"{name}(kernel_size=...)")
    layer.strides = _pair(strides, f"{name}(strides=...)")
    layer.dilation_rate = _pair(dilation_rate, f"{name}(dilation_rate=...)")
    if max(layer.strides) > 1 and max(layer.dilation_rate) > 1:
        raise ValueError(f"{name}: strides > 1 not supported in conjunction with dilation_rate > 1; got "
                         f"strides={layer.strides} and dilation_rate={layer.dilation_rate}")
    layer.padding = _padding(padding, name)
    layer.data_format = "channels_last"
    layer.activation_name, layer.activation = activations.get(activation)
    layer.use_bias = bool(use_bias)


def _positive(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise ValueError(f"{what} must be a positive int, got {v!r}")
    return int(v)


def _transpose_geometry(n: int, k: int, s: int, d: int, padding: str, output_padding) -> tuple[int, int, int]:
    """``(pad before, pad after, output size)`` of a transposed convolution along one axis, as
    the gradient of a convolution over the output: Keras' padding for JAX's
    ``conv_transpose`` (keras/src/backend/common/backend_utils.py) turned into the forward
    convolution's pads; a negative pad is a row of zeros past the last window."""
    ke = (k - 1) * d + 1
    if padding == "valid":
        op = max(ke, s) - ke if output_padding is None else output_padding
        left, right = ke - 1, ke - 1 + op
    else:
        pad_len = s + ke - 2 if output_padding is None else ke + ke % 2 - 2 + output_padding
        left = min(pad_len // 2 + pad_len % 2, ke - 1)
        right = pad_len - left
    before, after = ke - 1 - left, ke - 1 - right
    return before, after, (n - 1) * s + ke - before - after


class Conv2DTranspose(_Affine, Layer):
    """``keras.layers.Conv2DTranspose``: the gradient of a ``Conv2D`` w.r.t. its input,
    ``(h, w, channels)`` -> ``(h * s, w * s, filters)`` for ``padding="same"`` and
    ``((h - 1) * s + max(k, s), ...)`` for ``"valid"`` (``output_padding`` sets the extra
    rows as Keras does). ``kernel`` is ``(kh, kw, filters, channels)``, Keras' layout: ONE GEMM
    ``x @ kernel^T`` then ``col2im`` scatters the patches, whose gradient is ``im2col``."""

    ndim = 4

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid", output_padding=None,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.filters = _positive(filters, "Conv2DTranspose(filters=...)")
        _conv_args(self, "Conv2DTranspose", kernel_size, strides, padding, data_format, dilation_rate, activation,
                   use_bias, activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                   bias_constraint=bias_constraint)
        if output_padding is None:
            self.output_padding = None
        else:
            op = (output_padding, output_padding) if isinstance(output_padding, numbers.Integral) else output_padding
            if (not isinstance(op, (tuple, list)) or len(op) != 2
                    or not all(isinstance(e, numbers.Integral) and not isinstance(e, bool) and e >= 0 for e in op)):
                raise ValueError(f"Conv2DTranspose(output_padding=...): expected a non-negative int or a pair of them, "
                                 f"got {output_padding!r}")
            self.output_padding = (int(op[0]), int(op[1]))
            if any(o >= s for o, s in zip(self.output_padding, self.strides)):
                raise ValueError(f"Conv2DTranspose: strides must be greater than output padding; got strides="
                                 f"{self.strides} and output_padding={self.output_padding}")
        _weight_args(self, "Conv2DTranspose", kernel=(kernel_initializer, kernel_regularizer),
                     bias=(bias_initializer, bias_regularizer))
        self.kernel = self.bias = None

    def _geometry(self, input_shape):
        ops = self.output_padding or (None, None)
        return [_transpose_geometry(input_shape[i], self.kernel_size[i], self.strides[i], self.dilation_rate[i],
                                    self.padding, ops[i]) for i in (0, 1)]

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", self.kernel_size + (self.filters, input_shape[-1]),
                                      self.kernel_initializer, self.kernel_regularizer)
        self.bias = (self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)
                     if self.use_bias else None)

    def compute_output_shape(self, input_shape):
        (_, _, oh), (_, _, ow) = self._geometry(input_shape)
        if oh <= 0 or ow <= 0:
            raise ValueError(f"{self._label}: computed output size would be negative or zero: inputs of shape "
                             f"{_fmt(input_shape)}, kernel_size={self.kernel_size}, strides={self.strides}, "
                             f"padding={self.padding!r}, output_padding={self.output_padding}")
        return (oh, ow, self.filters)

    def linear(self, x):
        from ..ops.conv import col2im
        h, w, c = x.shape[1:]
        kh, kw = self.kernel_size
        (bt, bb, oh), (bl, br, ow) = self._geometry((h, w))
        rows = F.reshape(x, (-1, c)) @ F.transpose(F.reshape(self.kernel, (kh * kw * self.filters, c)))
        cols = F.reshape(rows, (-1, h, w, kh * kw * self.filters))
        pads = ((max(bt, 0), max(bb, 0)), (max(bl, 0), max(br, 0)))
        image = (oh - max(-bt, 0) - max(-bb, 0), ow - max(-bl, 0) - max(-br, 0))
        y = col2im(cols, {"kernel": self.kernel_size, "strides": self.strides, "dilation": self.dilation_rate,
                          "pads": pads}, image)
        extra = ((max(-bt, 0), max(-bb, 0)), (max(-bl, 0), max(-br, 0)))
        return F.pad(y, ((0, 0),) + extra + ((0, 0),)) if any(any(e) for e in extra) else y

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "output_padding": None if self.output_padding is None else list(self.output_padding),
                "data_format": self.data_format, "dilation_rate": list(self.dilation_rate),
                "activation": self.activation_name, "use_bias": self.use_bias,
                **_weight_config(self, "Conv2DTranspose", "kernel", "bias")}


def _depthwise(layer, x, kernel):
    """``keras.ops.depthwise_conv``: channel ``c`` convolved with ``kernel[:, :, c, m]`` for
    each ``m``, output channel ``c * depth_multiplier + m`` (TensorFlow's order)."""
    from ..ops.conv import im2col
    kh, kw, c, m = kernel.shape
    attrs = F._window_attrs(layer._label, x, (kh, kw), layer.strides, layer.padding, layer.dilation_rate)
    cols = x if (kh, kw) == (1, 1) and layer.strides == (1, 1) else im2col(x, attrs)
    oh, ow = cols.shape[1:3]
    y = F.sum(F.reshape(cols, (-1, kh * kw, c, 1)) * F.reshape(kernel, (kh * kw, c, m)), 1)
    return F.reshape(y, (-1, oh, ow, c * m))


class DepthwiseConv2D(_Affine, Layer):
    """``keras.layers.DepthwiseConv2D``: each input channel convolved with its own
    ``depth_multiplier`` filters, ``(h, w, c)`` -> ``(oh, ow, c * depth_multiplier)``;
    ``kernel`` is ``(kh, kw, c, depth_multiplier)`` (Keras' layout)."""

    ndim = 4

    def __init__(self, kernel_size, strides=(1, 1), padding: str = "valid", depth_multiplier: int = 1,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias: bool = True,
                 depthwise_initializer="glorot_uniform", bias_initializer="zeros", depthwise_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, depthwise_constraint=None, bias_constraint=None,
                 name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.depth_multiplier = _positive(depth_multiplier, "DepthwiseConv2D(depth_multiplier=...)")
        _conv_args(self, "DepthwiseConv2D", kernel_size, strides, padding, data_format, dilation_rate, activation,
                   use_bias, activity_regularizer=activity_regularizer, depthwise_constraint=depthwise_constraint,
                   bias_constraint=bias_constraint)
        _weight_args(self, "DepthwiseConv2D", depthwise=(depthwise_initializer, depthwise_regularizer),
                     bias=(bias_initializer, bias_regularizer))
        self.kernel = self.bias = None

    def build(self, input_shape):
        c = input_shape[-1]
        self.kernel = self.add_weight("kernel", self.kernel_size + (c, self.depth_multiplier),
                                      self.depthwise_initializer, self.depthwise_regularizer)
        self.bias = (self.add_weight("bias", (c * self.depth_multiplier,), self.bias_initializer,
                                     self.bias_regularizer) if self.use_bias else None)

    def compute_output_shape(self, input_shape):
        oh, ow = _spatial_out(self, input_shape, self.kernel_size, self.strides, self.dilation_rate, self.padding,
                              "kernel_size")
        return (oh, ow, input_shape[-1] * self.depth_multiplier)

    def linear(self, x):
        return _depthwise(self, x, self.kernel)

    def get_config(self):
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier,
                "kernel_size": list(self.kernel_size), "strides": list(self.strides), "padding": self.padding,
                "data_format": self.data_format, "dilation_rate": list(self.dilation_rate),
                "activation": self.activation_name, "use_bias": self.use_bias,
                **_weight_config(self, "DepthwiseConv2D", "depthwise", "bias")}


class SeparableConv2D(_Affine, Layer):
    """``keras.layers.SeparableConv2D``: a depthwise convolution (``depthwise_kernel``
    ``(kh, kw, c, depth_multiplier)``) then a 1x1 convolution (``pointwise_kernel``
    ``(1, 1, c * depth_multiplier, filters)``), then bias and activation."""

    ndim = 4

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid", data_format=None,
                 dilation_rate=(1, 1), depth_multiplier: int = 1, activation=None, use_bias: bool = True,
                 depthwise_initializer="glorot_uniform", pointwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, pointwise_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, depthwise_constraint=None,
                 pointwise_constraint=None, bias_constraint=None, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.filters = _positive(filters, "SeparableConv2D(filters=...)")
        self.depth_multiplier = _positive(depth_multiplier, "SeparableConv2D(depth_multiplier=...)")
        _conv_args(self, "SeparableConv2D", kernel_size, strides, padding, data_format, dilation_rate, activation,
                   use_bias, activity_regularizer=activity_regularizer, depthwise_constraint=depthwise_constraint,
                   pointwise_constraint=pointwise_constraint, bias_constraint=bias_constraint)
        _weight_args(self, "SeparableConv2D", depthwise=(depthwise_initializer, depthwise_regularizer),
                     pointwise=(pointwise_initializer, pointwise_regularizer),
                     bias=(bias_initializer, bias_regularizer))
        self.depthwise_kernel = self.pointwise_kernel = self.bias = None

    def build(self, input_shape):
        c, m = input_shape[-1], self.depth_multiplier
        self.depthwise_kernel = self.add_weight("depthwise_kernel", self.kernel_size + (c, m),
                                                self.depthwise_initializer, self.depthwise_regularizer)
        self.pointwise_kernel = self.add_weight("pointwise_kernel", (1, 1, c * m, self.filters),
                                                self.pointwise_initializer, self.pointwise_regularizer)
        self.bias = (self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)
                     if self.use_bias else None)

    def compute_output_shape(self, input_shape):
        oh, ow = _spatial_out(self, input_shape, self.kernel_size, self.strides, self.dilation_rate, self.padding,
                              "kernel_size")
        return (oh, ow, self.filters)

    def linear(self, x):
        return F.conv2d(_depthwise(self, x, self.depthwise_kernel), self.pointwise_kernel)

    def get_config(self):
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier, "filters": self.filters,
                "kernel_size": list(self.kernel_size), "strides": list(self.strides), "padding": self.padding,
                "data_format": self.data_format, "dilation_rate": list(self.dilation_rate),
                "activation": self.activation_name, "use_bias": self.use_bias,
                **_weight_config(self, "SeparableConv2D", "depthwise", "pointwise", "bias")}
