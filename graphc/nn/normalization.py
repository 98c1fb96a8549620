"""``keras.layers.BatchNormalization``: batch statistics in training, moving statistics in
inference, the moving statistics updated inside the compiled training step.

Keras 3's formulas (keras/src/layers/normalization/batch_normalization.py), which this
layer follows exactly:

- training (``fit``, ``train_on_batch``): ``mean, var = moments(x)`` over every axis but
  ``axis`` (``var`` is the population variance), the output is
  ``gamma * (x - mean) / sqrt(var + epsilon) + beta`` and, in the same step,
  ``moving_mean = moving_mean * momentum + mean * (1 - momentum)`` and
  ``moving_variance = moving_variance * momentum + var * (1 - momentum)``;
- inference (``predict``, ``evaluate`` and validation, as Keras' ``test_step`` calls the
  model with ``training=False``): ``gamma * (x - moving_mean) / sqrt(moving_variance +
  epsilon) + beta``; nothing is updated.

The weights, in Keras' order, are ``[gamma, beta, moving_mean, moving_variance]``; the
moving statistics are non-trainable (``gc.state`` tensors written through
``gc.compile(..., updates=...)``) and are part of ``get_weights``/``save_weights``.
"""
from __future__ import annotations

import numbers
from typing import Any

from .. import dsl as F
from . import regularizers as R
from .base import Layer, _fmt, _initializer, _serialize_initializer

__all__ = ["BatchNormalization"]


class BatchNormalization(Layer):
    """``keras.layers.BatchNormalization`` (Keras 3 defaults: ``momentum=0.99``,
    ``epsilon=1e-3``); see the module docstring for the formulas."""

    min_ndim = 2

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None, synchronized: bool = False,
                 name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if isinstance(axis, (list, tuple)) and len(axis) == 1:
            axis = axis[0]
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ValueError(f"BatchNormalization: axis must be an int (the channels axis), got {axis!r}")
        for what, v, lo, hi in (("momentum", momentum, 0.0, 1.0), ("epsilon", epsilon, 0.0, float("inf"))):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not lo <= float(v) <= hi:
                raise ValueError(f"BatchNormalization: {what} must be a float in [{lo}, {hi}], got {v!r}")
        if beta_constraint is not None or gamma_constraint is not None:
            raise NotImplementedError("BatchNormalization: beta_constraint/gamma_constraint are not supported yet")
        if synchronized:
            raise NotImplementedError("BatchNormalization(synchronized=True): cross-replica statistics are not "
                                      "supported yet")
        self.axis, self.momentum, self.epsilon = int(axis), float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = _initializer(beta_initializer, "BatchNormalization(beta_initializer=...)")
        self.gamma_initializer = _initializer(gamma_initializer, "BatchNormalization(gamma_initializer=...)")
        self.moving_mean_initializer = _initializer(moving_mean_initializer,
                                                    "BatchNormalization(moving_mean_initializer=...)")
        self.moving_variance_initializer = _initializer(moving_variance_initializer,
                                                        "BatchNormalization(moving_variance_initializer=...)")
        self.beta_regularizer = R.get(beta_regularizer, "BatchNormalization(beta_regularizer=...)")
        self.gamma_regularizer = R.get(gamma_regularizer, "BatchNormalization(gamma_regularizer=...)")
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None
        self._traced: list = []

    def _reset_updates(self) -> None:
        super()._reset_updates()
        self._traced = []

    def build(self, input_shape):
        rank = len(input_shape) + 1  # with the batch dim
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(f"{self._label}: axis={self.axis} is out of range for inputs of shape "
                             f"{_fmt(input_shape)} (the batch axis 0 cannot be the channels axis)")
        self._ax = self.axis % rank
        self._reduce = tuple(a for a in range(rank) if a != self._ax)
        c = (input_shape[self._ax - 1],)
        self.gamma = self.add_weight("gamma", c, self.gamma_initializer, self.gamma_regularizer) if self.scale else None
        self.beta = self.add_weight("beta", c, self.beta_initializer, self.beta_regularizer) if self.center else None
        self.moving_mean = self.add_weight("moving_mean", c, self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", c, self.moving_variance_initializer,
                                               trainable=False)

    def call(self, x, training=False):
        if training and self.trainable:  # a frozen BatchNormalization runs in inference mode (Keras 3)
            mean, var = F.moments(x, self._reduce)
            # the model may apply its output layer twice to the same tensor (call, call_split):
            # that is one call, so one update; a second call on another tensor chains on the first
            if not any(seen is x for seen in self._traced):
                self._traced.append(x)
                m = self.momentum
                for state, stat in ((self.moving_mean, mean), (self.moving_variance, var)):
                    self.add_update(state, self.current_value(state) * m + stat * (1.0 - m))
        else:
            mean, var = self.moving_mean, self.moving_variance
        return F.batch_normalization(x, mean, var, axis=self._ax, offset=self.beta, scale=self.gamma,
                                     epsilon=self.epsilon)

    def get_config(self):
        init = _serialize_initializer
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale, "beta_initializer": init(self.beta_initializer),
                "gamma_initializer": init(self.gamma_initializer),
                "moving_mean_initializer": init(self.moving_mean_initializer),
                "moving_variance_initializer": init(self.moving_variance_initializer),
                "beta_regularizer": R.serialize(self.beta_regularizer, "BatchNormalization(beta_regularizer=...)"),
                "gamma_regularizer": R.serialize(self.gamma_regularizer, "BatchNormalization(gamma_regularizer=...)"),
                "beta_constraint": None, "gamma_constraint": None, "synchronized": False, "renorm": False,
                "renorm_clipping": None, "renorm_momentum": 0.99}
