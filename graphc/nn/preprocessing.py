"""The numeric preprocessing layers of ``keras.layers``: ``Rescaling`` and ``Normalization``
(with ``adapt``), with Keras 3's arguments, formulas, weights and ``get_config``.

``Normalization`` computes ``(x - mean) / max(sqrt(variance), 1e-7)`` (Keras'
``backend.epsilon()`` guard) over the kept ``axis`` (counted with the batch axis as 0).
Adapted statistics are non-trainable weights ``mean``, ``variance`` and ``count`` (Keras'
three, in its order, so a ``.keras`` file moves both ways); ``mean``/``variance`` given to
the constructor are constants and the layer has no weights, as in Keras."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .. import dsl as F
from .base import Layer, _fmt

__all__ = ["Rescaling", "Normalization"]

_EPSILON = 1e-7  # keras.backend.epsilon()


def _scalar_or_list(v, what: str):
    if isinstance(v, dict) and v.get("class_name") == "__numpy__":  # Keras' serialized array
        v = v.get("config", {}).get("value")
    a = np.asarray(v, dtype=np.float64) if not isinstance(v, bool) else None
    if a is None or a.dtype.kind != "f" or a.ndim > 1:
        raise ValueError(f"{what}: expected a number or a list of numbers (one per channel), got {v!r}")
    return float(a) if a.ndim == 0 else [float(e) for e in a]


class Rescaling(Layer):
    """``keras.layers.Rescaling``: ``x * scale + offset`` (a number, or one per channel)."""

    supports_masking = True

    def __init__(self, scale, offset=0.0, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.scale = _scalar_or_list(scale, "Rescaling(scale=...)")
        self.offset = _scalar_or_list(offset, "Rescaling(offset=...)")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def call(self, x, training=False):
        const = lambda v: v if isinstance(v, float) else F.const(np.asarray(v, np.float32))  # noqa: E731
        x = x if x.dtype == "float32" else F.cast(x, "float32")
        return x * const(self.scale) + const(self.offset)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


class Normalization(Layer):
    """``keras.layers.Normalization``: ``(x - mean) / max(sqrt(variance), 1e-7)`` per index of
    the kept ``axis`` (``invert=True``: ``mean + x * max(sqrt(variance), 1e-7)``). The
    statistics come from ``mean``/``variance`` or from ``adapt(data)`` (NumPy's mean and
    population variance over the other axes); never trained."""

    supports_masking = True

    def __init__(self, axis=-1, mean=None, variance=None, invert: bool = False, name: str | None = None,
                 **kwargs: Any):
        super().__init__(name=name, **kwargs)
        axes = () if axis is None else (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
        if not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in axes):
            raise ValueError(f"Normalization(axis=...) must be None, an int or a tuple of ints, got {axis!r}")
        self.axis = tuple(int(a) for a in axes)
        if (mean is None) != (variance is None):
            raise ValueError(f"Normalization: when setting values directly, both `mean` and `variance` must be set. "
                             f"Received: mean={mean} and variance={variance}")
        self.input_mean = None if mean is None else np.asarray(mean, np.float32)
        self.input_variance = None if variance is None else np.asarray(variance, np.float32)
        if mean is not None:
            if self.input_mean.shape != self.input_variance.shape:
                raise ValueError(f"Normalization: `mean` and `variance` must have the same shape, got "
                                 f"{self.input_mean.shape} and {self.input_variance.shape}")
            if self.input_mean.ndim > len(self.axis):
                raise ValueError(f"Normalization: the rank of `mean` ({self.input_mean.ndim}) must not exceed the "
                                 f"number of axes ({len(self.axis)}), axis={self.axis}")
        self.invert = bool(invert)
        self._adapted: tuple[np.ndarray, np.ndarray] | None = None
        self.adapt_mean = self.adapt_variance = self.count = None

    # ---- geometry: axes counted with the batch axis ----------------------------------------
    def _keep(self, input_shape) -> tuple[int, ...]:
        nd = len(input_shape) + 1
        bad = [a for a in self.axis if not -nd <= a < nd]
        keep = tuple(sorted(a % nd for a in self.axis))
        if bad or 0 in keep:
            raise ValueError(f"{self._label}: axis={self.axis} must name axes in [-{nd}, {nd}) other than the batch "
                             f"axis 0, for inputs of shape {_fmt(tuple(input_shape))}")
        return keep

    def _stat_shape(self, input_shape) -> tuple[int, ...]:
        return tuple(input_shape[a - 1] for a in self._keep(input_shape))

    def _broadcast_shape(self, input_shape) -> tuple[int, ...]:
        keep = self._keep(input_shape)
        return (1,) + tuple(d if i + 1 in keep else 1 for i, d in enumerate(input_shape))

    def build(self, input_shape):
        shape = self._stat_shape(input_shape)
        if self.input_mean is not None:
            return
        if self._adapted is not None and self._adapted[0].shape != shape:
            raise ValueError(f"{self._label}: adapted to statistics of shape {self._adapted[0].shape}, built for "
                             f"inputs of shape {_fmt(input_shape)} (statistics of shape {shape})")
        mean, var = self._adapted if self._adapted is not None else ("zeros", "ones")
        self.adapt_mean = self.add_weight("mean", shape, mean, trainable=False)
        self.adapt_variance = self.add_weight("variance", shape, var, trainable=False)
        self.count = self.add_weight("count", (), "zeros", trainable=False)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _stats(self, x):
        shape = self._broadcast_shape(tuple(x.shape[1:]))
        if self.input_mean is None:
            return F.reshape(self.adapt_mean, shape), F.reshape(self.adapt_variance, shape)
        keep = self._keep(tuple(x.shape[1:]))
        out = []
        for a in (self.input_mean, self.input_variance):
            expanded = [1] * len(shape)  # Keras: the given values' trailing axes are the last kept axes
            for i in range(1, a.ndim + 1):
                expanded[keep[-i]] = a.shape[-i]
            out.append(F.const(np.ascontiguousarray(np.broadcast_to(a.reshape(expanded), shape), np.float32)))
        return out[0], out[1]

    def call(self, x, training=False):
        x = x if x.dtype == "float32" else F.cast(x, "float32")
        mean, var = self._stats(x)
        scale = F.maximum(F.sqrt(var), _EPSILON)
        return mean + x * scale if self.invert else (x - mean) / scale

    def adapt(self, data) -> None:
        """Set ``mean`` and ``variance`` from ``data`` (an array of inputs with their batch
        axis, or an iterable of such batches: combined as Keras combines them): NumPy's mean
        and population variance over every axis but the kept ones. A layer already in a
        built model has its weights set there."""
        if self.input_mean is not None:
            raise ValueError(f"{self._label}.adapt: the layer was given `mean` and `variance`; adapt would not change "
                             "them")
        batches = [np.asarray(data)] if hasattr(data, "shape") else [np.asarray(b[0] if isinstance(b, tuple) else b)
                                                                    for b in data]
        if not batches or any(b.ndim < 1 or b.dtype.kind not in "biuf" for b in batches):
            raise TypeError(f"{self._label}.adapt expects a numeric array or a non-empty iterable of arrays")
        per_sample = batches[0].shape[1:]
        if self.input_shape is not None and tuple(per_sample) != tuple(self.input_shape):
            raise ValueError(f"{self._label}.adapt: the layer was built for inputs of shape {_fmt(self.input_shape)}, "
                             f"the data's samples have shape {_fmt(tuple(per_sample))}")
        keep = self._keep(per_sample)
        reduce = tuple(a for a in range(batches[0].ndim) if a not in keep)
        mean = var = None
        count = 0
        for b in batches:
            if b.shape[1:] != per_sample:
                raise ValueError(f"{self._label}.adapt: batches of different sample shapes {_fmt(tuple(per_sample))} "
                                 f"and {_fmt(tuple(b.shape[1:]))}")
            b = b.astype(np.float64)
            bm, bv = b.mean(axis=reduce), b.var(axis=reduce)
            n = int(np.prod([b.shape[a] for a in reduce])) if reduce else 1
            if mean is None:
                mean, var, count = bm, bv, n
                continue
            count += n
            wb = n / count
            new = mean * (1 - wb) + bm * wb
            var = (var + (mean - new) ** 2) * (1 - wb) + (bv + (bm - new) ** 2) * wb
            mean = new
        self._adapted = (mean.astype(np.float32), var.astype(np.float32))
        if self.built and self.adapt_mean is not None:
            self._rebuild_with_adapted()

    def _rebuild_with_adapted(self) -> None:
        """After ``adapt`` on a built layer: the new values become its model's weights."""
        if self._model is None:
            raise ValueError(f"{self._label}.adapt: the layer was already called on a symbolic input but is not in "
                             "a model yet; adapt it before calling it, or after making the Model")
        self._model._set_weights_by_name({self.adapt_mean.name: self._adapted[0],
                                          self.adapt_variance.name: self._adapted[1]})

    def get_config(self):
        tolist = lambda a: None if a is None else a.tolist()  # noqa: E731
        return {**super().get_config(), "axis": list(self.axis), "invert": self.invert,
                "mean": tolist(self.input_mean), "variance": tolist(self.input_variance)}
