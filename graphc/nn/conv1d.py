"""1-D convolution and pooling over sequences ``(batch, steps, channels)``
(``keras.layers.Conv1D``, ``MaxPooling1D``, ``AveragePooling1D``, ``GlobalAveragePooling1D``,
``GlobalMaxPooling1D``), channels_last only.

Conv1D and the windowed poolings run on the 2-D ops: ``(B, T, C)`` is viewed as the image
``(B, T, 1, C)`` (a reshape, no copy) and the kernel ``(k, C, filters)`` as ``(k, 1, C,
filters)``, so a Conv1D is graphc's im2col + ONE GEMM with bias and activation in its
epilogue. Output lengths follow Keras: ``valid`` ``floor((T - d*(k-1) - 1)/s) + 1``, ``same``
and ``causal`` ``ceil(T/s)`` (``causal`` left-pads ``d*(k-1)`` zeros, so step t sees only
steps <= t).
"""
from __future__ import annotations

import numbers
from typing import Any

from .. import dsl as F
from . import activations
from .base import Layer, _Affine, _fmt, _weight_args, _weight_config

__all__ = ["Conv1D", "MaxPooling1D", "AveragePooling1D", "GlobalAveragePooling1D", "GlobalMaxPooling1D"]


def _int1(v, what: str) -> int:
    """A positive int or a 1-tuple of one (Keras' ``kernel_size``/``strides``/``pool_size``)."""
    t = v[0] if isinstance(v, (tuple, list)) and len(v) == 1 else v
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 1:
        raise ValueError(f"{what}: expected a positive int or a tuple of 1 positive int, got {v!r}")
    return int(t)


def _padding(v, what: str, allowed=("valid", "same")) -> str:
    p = v.lower() if isinstance(v, str) else v
    if p not in allowed:
        raise ValueError(f"{what}: padding must be one of {allowed}, got {v!r}")
    return p


def _channels_last(data_format, what: str) -> None:
    if data_format in (None, "channels_last"):
        return
    if data_format == "channels_first":
        raise ValueError(f"{what}: data_format='channels_first' is not supported: graphc's 1-D layers take "
                         "(batch, steps, channels); transpose the data, e.g. x.transpose(0, 2, 1)")
    raise ValueError(f"{what}: data_format must be 'channels_last' or 'channels_first', got {data_format!r}")


def _out_len(layer: Layer, input_shape, k: int, s: int, d: int, padding: str, what: str) -> int:
    n = input_shape[0]
    out = -(-n // s) if padding in ("same", "causal") else (n - d * (k - 1) - 1) // s + 1
    if out <= 0:
        raise ValueError(f"{layer._label}: computed output size would be negative or zero: inputs of shape "
                         f"{_fmt(input_shape)}, {what}={k}, strides={s}, dilation_rate={d}, padding={padding!r}; "
                         f"use a smaller {what} or padding='same'")
    return out


def _as_image(x):
    return F.expand_dims(x, 2)


def _as_sequence(y):
    return F.reshape(y, (y.shape[0], y.shape[1], y.shape[3]))


class Conv1D(_Affine, Layer):
    """``keras.layers.Conv1D``: ``activation(conv1d(x, kernel) + bias)`` on ``(batch, steps,
    channels)``; ``kernel`` is ``(kernel_size, channels, filters)`` as in Keras. ``padding``:
    ``valid``, ``same`` or ``causal``."""

    ndim = 3

    def __init__(self, filters: int, kernel_size, strides=1, padding: str = "valid", data_format=None,
                 dilation_rate=1, groups: int = 1, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if isinstance(filters, bool) or not isinstance(filters, numbers.Integral) or filters <= 0:
            raise ValueError(f"Conv1D: filters must be a positive int, got {filters!r}")
        _channels_last(data_format, "Conv1D")
        if groups != 1:
            raise NotImplementedError(f"Conv1D: groups={groups!r} (grouped convolution) is not supported yet")
        bad = sorted(k for k, v in (("activity_regularizer", activity_regularizer),
                                    ("kernel_constraint", kernel_constraint),
                                    ("bias_constraint", bias_constraint)) if v is not None)
        if bad:
            raise NotImplementedError(f"Conv1D: {', '.join(bad)} are not supported yet")
        self.filters = int(filters)
        self.kernel_size = _int1(kernel_size, "Conv1D(kernel_size=...)")
        self.strides = _int1(strides, "Conv1D(strides=...)")
        self.dilation_rate = _int1(dilation_rate, "Conv1D(dilation_rate=...)")
        if self.strides > 1 and self.dilation_rate > 1:
            raise ValueError(f"Conv1D: strides > 1 not supported in conjunction with dilation_rate > 1; got "
                             f"strides={self.strides} and dilation_rate={self.dilation_rate}")
        self.padding = _padding(padding, "Conv1D", ("valid", "same", "causal"))
        self.data_format = "channels_last"
        self.activation_name, self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        _weight_args(self, "Conv1D", kernel=(kernel_initializer, kernel_regularizer),
                     bias=(bias_initializer, bias_regularizer))
        self.kernel = self.bias = None

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", (self.kernel_size, input_shape[-1], self.filters),
                                      self.kernel_initializer, self.kernel_regularizer)
        self.bias = (self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)
                     if self.use_bias else None)

    def compute_output_shape(self, input_shape):
        return (_out_len(self, input_shape, self.kernel_size, self.strides, self.dilation_rate, self.padding,
                         "kernel_size"), self.filters)

    def linear(self, x):  # then bias and activation (_Affine, as Dense and Conv2D)
        padding = self.padding
        if padding == "causal":
            x = F.pad(x, ((0, 0), (self.dilation_rate * (self.kernel_size - 1), 0), (0, 0)))
            padding = "valid"
        k = F.reshape(self.kernel, (self.kernel_size, 1) + tuple(self.kernel.shape[1:]))
        y = F.conv2d(_as_image(x), k, strides=(self.strides, 1), padding=padding,
                     dilation_rate=(self.dilation_rate, 1))
        return _as_sequence(y)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": [self.kernel_size],
                "strides": [self.strides], "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": [self.dilation_rate], "groups": 1, "activation": self.activation_name,
                "use_bias": self.use_bias, **_weight_config(self, "Conv1D", "kernel", "bias")}


class _Pooling1D(Layer):
    ndim = 3
    _fn = None

    def __init__(self, pool_size=2, strides=None, padding: str = "valid", data_format=None,
                 name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        what = type(self).__name__
        _channels_last(data_format, what)
        self.pool_size = _int1(pool_size, f"{what}(pool_size=...)")
        self.strides = self.pool_size if strides is None else _int1(strides, f"{what}(strides=...)")
        self.padding = _padding(padding, what)
        self.data_format = "channels_last"

    def compute_output_shape(self, input_shape):
        return (_out_len(self, input_shape, self.pool_size, self.strides, 1, self.padding, "pool_size"),
                input_shape[-1])

    def call(self, x, training=False):
        y = type(self)._fn(_as_image(x), (self.pool_size, 1), (self.strides, 1), self.padding)
        return _as_sequence(y)

    def get_config(self):
        return {**super().get_config(), "pool_size": [self.pool_size], "padding": self.padding,
                "strides": [self.strides], "data_format": self.data_format}


class MaxPooling1D(_Pooling1D):
    """``keras.layers.MaxPooling1D``: the maximum of each ``pool_size`` window of steps, moved by
    ``strides`` (default: ``pool_size``)."""

    _fn = staticmethod(F.max_pool2d)


class AveragePooling1D(_Pooling1D):
    """``keras.layers.AveragePooling1D``: the mean of each window (``padding="same"``: over the
    steps inside the sequence, as Keras counts them)."""

    _fn = staticmethod(F.avg_pool2d)

    def __init__(self, pool_size, strides=None, padding: str = "valid", data_format=None, name: str | None = None,
                 **kwargs: Any):
        super().__init__(pool_size, strides, padding, data_format, name=name, **kwargs)


class _GlobalPooling1D(Layer):
    ndim = 3

    def __init__(self, data_format=None, keepdims: bool = False, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        _channels_last(data_format, type(self).__name__)
        self.keepdims = bool(keepdims)
        self.data_format = "channels_last"

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}

    def compute_output_shape(self, input_shape):
        return (1, input_shape[-1]) if self.keepdims else (input_shape[-1],)


class GlobalAveragePooling1D(_GlobalPooling1D):
    """``keras.layers.GlobalAveragePooling1D``: the mean over the steps, ``(batch, channels)``;
    with a mask (``Embedding(mask_zero=True)``, ``Masking``) over the unmasked steps only, as
    Keras (a sequence with every step masked gives 0/0, NaN, as in Keras)."""

    supports_masking = True

    def compute_mask(self, x, mask):
        return None

    def call(self, x, training=False, mask=None):
        if mask is None:
            return F.mean(x, axis=1, keepdims=self.keepdims)
        m = F.expand_dims(mask, -1)
        total = F.sum(F.where(m, x, 0.0), axis=1, keepdims=self.keepdims)
        return total / F.sum(F.cast(m, x.dtype), axis=1, keepdims=self.keepdims)


class GlobalMaxPooling1D(_GlobalPooling1D):
    """``keras.layers.GlobalMaxPooling1D``: the maximum over the steps (a mask is not applied,
    as in Keras)."""

    def call(self, x, training=False):
        return F.max(x, axis=1, keepdims=self.keepdims)
