"""The activation layers of ``keras.layers``: ``LeakyReLU``, ``PReLU``, ``ELU``, ``ReLU`` and
``Softmax``, with Keras 3's arguments, defaults, formulas, weight (PReLU's ``alpha``) and
``get_config``. Each is a composition of DSL ops, so its gradient is symbolic as any other."""
from __future__ import annotations

import numbers
from typing import Any

from .. import dsl as F
from . import regularizers as R
from .base import Layer, _fmt, _initializer, _serialize_initializer

__all__ = ["LeakyReLU", "PReLU", "ELU", "ReLU", "Softmax"]


def _number(v, what: str, allow_none: bool = False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or v < 0:
        raise ValueError(f"{what} must be a non-negative number, got {v!r}")
    return float(v)


class _Elementwise(Layer):
    supports_masking = True  # a mask passes through, as in Keras

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class LeakyReLU(_Elementwise):
    """``keras.layers.LeakyReLU``: ``x`` for ``x > 0``, ``negative_slope * x`` otherwise
    (Keras 3's default slope 0.3; Keras 2's ``alpha`` is accepted as its old name)."""

    def __init__(self, negative_slope: float = 0.3, name: str | None = None, **kwargs: Any):
        if "alpha" in kwargs:
            negative_slope = kwargs.pop("alpha")
        super().__init__(name=name, **kwargs)
        self.negative_slope = _number(negative_slope, "LeakyReLU(negative_slope=...)")

    def call(self, x, training=False):
        return F.leaky_relu(x, self.negative_slope)

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


class ELU(_Elementwise):
    """``keras.layers.ELU``: ``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise."""

    def __init__(self, alpha: float = 1.0, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
            raise ValueError(f"ELU(alpha=...) must be a number, got {alpha!r}")
        self.alpha = float(alpha)

    def call(self, x, training=False):
        return F.elu(x, self.alpha)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


class ReLU(_Elementwise):
    """``keras.layers.ReLU``: ``min(x, max_value)`` for ``x > threshold`` (0 if not above it),
    minus ``negative_slope * (threshold - x)`` below the threshold: Keras'
    ``activations.relu`` step for step (the threshold's own point maps to 0 there too)."""

    def __init__(self, max_value: float | None = None, negative_slope: float = 0.0, threshold: float = 0.0,
                 name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.max_value = _number(max_value, "ReLU(max_value=...)", allow_none=True)
        self.negative_slope = _number(negative_slope, "ReLU(negative_slope=...)")
        self.threshold = _number(threshold, "ReLU(threshold=...)")

    def call(self, x, training=False):
        slope, top, t = self.negative_slope, self.max_value, self.threshold
        if slope != 0.0 and top is None and t == 0.0:
            return F.leaky_relu(x, slope)
        y = F.where(x > t, x, 0.0) if t != 0.0 else F.relu(x)
        if top is not None:
            y = F.clip(y, 0.0, top)
        if slope != 0.0:
            y = y - slope * F.relu(t - x if t != 0.0 else -x)
        return y

    def get_config(self):
        return {**super().get_config(), "max_value": self.max_value, "negative_slope": self.negative_slope,
                "threshold": self.threshold}


class PReLU(_Elementwise):
    """``keras.layers.PReLU``: ``relu(x) - alpha * relu(-x)`` with a learned ``alpha`` of the
    input's per-sample shape, of size 1 along ``shared_axes`` (counted with the batch axis
    as 0, as Keras counts them: ``shared_axes=[1, 2]`` shares it over an image's height and
    width)."""

    def __init__(self, alpha_initializer="zeros", alpha_regularizer=None, alpha_constraint=None, shared_axes=None,
                 name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if alpha_constraint is not None:
            raise NotImplementedError(f"PReLU(alpha_constraint={alpha_constraint!r}): weight constraints are not "
                                      "supported by graphc")
        self.alpha_initializer = _initializer(alpha_initializer, "PReLU(alpha_initializer=...)")
        self.alpha_regularizer = R.get(alpha_regularizer, "PReLU(alpha_regularizer=...)")
        axes = None if shared_axes is None else (
            [shared_axes] if isinstance(shared_axes, numbers.Integral) else list(shared_axes))
        if axes is not None and not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in axes):
            raise ValueError(f"PReLU(shared_axes=...) must be an int or a list of ints, got {shared_axes!r}")
        self.shared_axes = None if axes is None else [int(a) for a in axes]
        self.alpha = None

    def build(self, input_shape):
        shape = list(input_shape)
        for a in self.shared_axes or []:
            if not 1 <= a <= len(shape):
                raise ValueError(f"{self._label}: shared_axes={self.shared_axes} must be in [1, {len(shape)}] for "
                                 f"inputs of shape {_fmt(input_shape)} (axis 0 is the batch)")
            shape[a - 1] = 1
        self.alpha = self.add_weight("alpha", tuple(shape), self.alpha_initializer, self.alpha_regularizer)

    def call(self, x, training=False):
        return F.relu(x) - self.alpha * F.relu(-x)

    def get_config(self):
        return {**super().get_config(), "alpha_initializer": _serialize_initializer(self.alpha_initializer),
                "alpha_regularizer": R.serialize(self.alpha_regularizer, "PReLU(alpha_regularizer=...)"),
                "alpha_constraint": None, "shared_axes": self.shared_axes}


class Softmax(_Elementwise):
    """``keras.layers.Softmax``: softmax over ``axis`` (an int or a list of axes, counted
    with the batch axis as 0). A ``mask`` (True: keep; a float mask is ``> 0.5``),
    broadcastable to the input from the right, sets the masked logits to -1e9 and the masked
    outputs to 0, as Keras."""

    def __init__(self, axis=-1, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        ok = lambda a: isinstance(a, numbers.Integral) and not isinstance(a, bool)  # noqa: E731
        if not (ok(axis) or (isinstance(axis, (list, tuple)) and axis and all(ok(a) for a in axis))):
            raise ValueError(f"Softmax(axis=...) must be an int or a list of ints, got {axis!r}")
        self.axis = int(axis) if ok(axis) else [int(a) for a in axis]

    def call(self, x, training=False, mask=None):
        if mask is not None:
            m = F._lift(mask)
            if m.ndim > x.ndim or any(a is not None and b is not None and a != 1 and a != b
                                      for a, b in zip(m.shape[::-1], x.shape[::-1])):
                raise ValueError(f"{self._label}: the mask must be broadcastable to the inputs: inputs "
                                 f"{tuple(x.shape)}, mask {tuple(m.shape)}")
            m = m if m.dtype == "bool" else m > 0.5
            x = F.where(m, x, -1e9)
        if isinstance(self.axis, list) and len(self.axis) > 1:
            axes = tuple(self.axis)
            s = x - F.stop_gradient(F.max(x, axes, keepdims=True))
            e = F.exp(s)
            y = e / F.sum(e, axes, keepdims=True)
        else:
            y = F.softmax(x, self.axis[0] if isinstance(self.axis, list) else self.axis)
        return y if mask is None else F.where(m, y, 0.0)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
