"""The 2-D reshaping layers of ``keras.layers``: ``ZeroPadding2D``, ``Cropping2D`` and
``UpSampling2D`` on NHWC images (``channels_last``, as graphc's convolutions), with Keras 3's
arguments and ``get_config``. Padding is ``gc.pad``, cropping a slice, nearest upsampling
``gc.repeat`` along height and width, bilinear upsampling one constant interpolation matrix
per axis (a GEMM): all differentiable DSL compositions."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .. import dsl as F
from .base import Layer, _fmt
from .convolutional import _channels_last, _pair

__all__ = ["ZeroPadding2D", "Cropping2D", "UpSampling2D"]


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0


def _two_pairs(v, what: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras' ``padding``/``cropping``: an int, ``(symmetric_height, symmetric_width)`` or
    ``((top, bottom), (left, right))``, all non-negative."""
    if _int(v):
        return (int(v), int(v)), (int(v), int(v))
    if isinstance(v, (list, tuple)) and len(v) == 2:
        out = []
        for e in v:
            if _int(e):
                out.append((int(e), int(e)))
            elif isinstance(e, (list, tuple)) and len(e) == 2 and all(_int(i) for i in e):
                out.append((int(e[0]), int(e[1])))
            else:
                break
        else:
            return out[0], out[1]
    raise ValueError(f"{what}: expected a non-negative int, a tuple of 2 ints (symmetric height, width) or a tuple "
                     f"of 2 tuples of 2 ints ((top, bottom), (left, right)), got {v!r}")


class ZeroPadding2D(Layer):
    """``keras.layers.ZeroPadding2D``: zero rows above/below and columns left/right."""

    ndim = 4

    def __init__(self, padding=(1, 1), data_format=None, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        _channels_last(data_format, "ZeroPadding2D")
        self.padding = _two_pairs(padding, "ZeroPadding2D(padding=...)")
        self.data_format = "channels_last"

    def compute_output_shape(self, input_shape):
        (t, b), (l, r) = self.padding
        return (input_shape[0] + t + b, input_shape[1] + l + r, input_shape[2])

    def call(self, x, training=False):
        return F.pad(x, ((0, 0),) + self.padding + ((0, 0),))

    def get_config(self):
        return {**super().get_config(), "padding": [list(p) for p in self.padding], "data_format": self.data_format}


class Cropping2D(Layer):
    """``keras.layers.Cropping2D``: rows cut off the top/bottom and columns off the sides;
    cropping a whole axis away is a ValueError when the layer is built, as in Keras."""

    ndim = 4

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        _channels_last(data_format, "Cropping2D")
        self.cropping = _two_pairs(cropping, "Cropping2D(cropping=...)")
        self.data_format = "channels_last"

    def compute_output_shape(self, input_shape):
        (t, b), (l, r) = self.cropping
        if t + b >= input_shape[0] or l + r >= input_shape[1]:
            raise ValueError(f"{self._label}: values in `cropping` argument should be smaller than the corresponding "
                             f"spatial dimension of the input: inputs of shape {_fmt(input_shape)}, "
                             f"cropping={self.cropping}")
        return (input_shape[0] - t - b, input_shape[1] - l - r, input_shape[2])

    def call(self, x, training=False):
        (t, b), (l, r) = self.cropping
        h, w = x.shape[1], x.shape[2]
        return x[:, t:h - b, l:w - r, :]

    def get_config(self):
        return {**super().get_config(), "cropping": [list(p) for p in self.cropping], "data_format": self.data_format}


def _bilinear_matrix(n: int, s: int) -> np.ndarray:
    """``(n * s, n)``: bilinear upsampling by ``s`` along one axis with half-pixel centres
    and the edge pixels repeated (``keras.ops.image.resize(..., "bilinear")`` upsampling:
    the triangle kernel's weights renormalised over the pixels inside the image)."""
    src = (np.arange(n * s) + 0.5) / s - 0.5
    w = np.maximum(0.0, 1.0 - np.abs(src[:, None] - np.arange(n)[None, :]))
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


class UpSampling2D(Layer):
    """``keras.layers.UpSampling2D``: every pixel repeated ``size`` times along height and
    width (``interpolation="nearest"``), or bilinear upsampling (``"bilinear"``: Keras'
    ``image.resize``, half-pixel centres, no antialiasing). Other interpolations are not
    supported."""

    ndim = 4
    _MODES = ("nearest", "bilinear")

    def __init__(self, size=(2, 2), data_format=None, interpolation: str = "nearest", name: str | None = None,
                 **kwargs: Any):
        super().__init__(name=name, **kwargs)
        _channels_last(data_format, "UpSampling2D")
        self.size = _pair(size, "UpSampling2D(size=...)")
        mode = interpolation.lower() if isinstance(interpolation, str) else interpolation
        if mode not in self._MODES:
            raise NotImplementedError(f"UpSampling2D(interpolation={interpolation!r}) is not supported by graphc: "
                                      f"only {list(self._MODES)}")
        self.interpolation = mode
        self.data_format = "channels_last"

    def compute_output_shape(self, input_shape):
        return (input_shape[0] * self.size[0], input_shape[1] * self.size[1], input_shape[2])

    def call(self, x, training=False):
        sh, sw = self.size
        if self.interpolation == "nearest":
            return F.repeat(F.repeat(x, sh, axis=1), sw, axis=2)
        h, w, c = x.shape[1:]
        ah, aw = F.const(_bilinear_matrix(h, sh)), F.const(_bilinear_matrix(w, sw))
        y = F.transpose(x, (0, 2, 3, 1))                            # (n, w, c, h)
        y = F.reshape(F.reshape(y, (-1, h)) @ F.transpose(ah), (-1, w, c, h * sh))
        y = F.transpose(y, (0, 3, 2, 1))                            # (n, H, c, w)
        y = F.reshape(F.reshape(y, (-1, w)) @ F.transpose(aw), (-1, h * sh, c, w * sw))
        return F.transpose(y, (0, 1, 3, 2))                         # (n, H, W, c)

    def get_config(self):
        return {**super().get_config(), "size": list(self.size), "data_format": self.data_format,
                "interpolation": self.interpolation}
