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
from . import regularizers as R
from .base import Layer, _Affine, _fmt, _initializer, _serialize_initializer

__all__ = ["Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D"]


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
        _channels_last(data_format, "Conv2D")
        if groups != 1:
            raise NotImplementedError(f"Conv2D: groups={groups!r} (grouped convolution) is not supported yet")
        _unsupported("Conv2D", activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                     bias_constraint=bias_constraint)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "Conv2D(kernel_size=...)")
        self.strides = _pair(strides, "Conv2D(strides=...)")
        self.dilation_rate = _pair(dilation_rate, "Conv2D(dilation_rate=...)")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"Conv2D: strides > 1 not supported in conjunction with dilation_rate > 1; got "
                             f"strides={self.strides} and dilation_rate={self.dilation_rate}")
        self.padding = _padding(padding, "Conv2D")
        self.data_format = "channels_last"
        self.activation_name, self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializer(kernel_initializer, "Conv2D(kernel_initializer=...)")
        self.bias_initializer = _initializer(bias_initializer, "Conv2D(bias_initializer=...)")
        self.kernel_regularizer = R.get(kernel_regularizer, "Conv2D(kernel_regularizer=...)")
        self.bias_regularizer = R.get(bias_regularizer, "Conv2D(bias_regularizer=...)")
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
                "use_bias": self.use_bias, "kernel_initializer": _serialize_initializer(self.kernel_initializer),
                "bias_initializer": _serialize_initializer(self.bias_initializer),
                "kernel_regularizer": R.serialize(self.kernel_regularizer, "Conv2D(kernel_regularizer=...)"),
                "bias_regularizer": R.serialize(self.bias_regularizer, "Conv2D(bias_regularizer=...)"),
                "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None}


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
