"""Losses by name (Keras' names) or object, built as DSL graphs.

Each loss knows what labels it takes (``prepare`` checks and converts ``y`` before any
training starts, naming the argument in its errors) and builds a scalar loss node from the
labels, the model's output and the output layer's pre-activation ``(pre, activation)``.

``from_logits``: as in Keras, ``from_logits=True`` means the model's output is logits.
With ``from_logits=False`` and an output layer ending in ``softmax`` (categorical losses)
or ``sigmoid`` (binary cross-entropy), the loss is computed from the pre-activation logits,
which is numerically stable and what Keras effectively does; for other outputs the
probabilities are clipped to ``[eps, 1-eps]`` first.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from .. import dsl as F

EPSILON = 1e-7


def _as_array(y, arg: str) -> np.ndarray:
    try:
        a = np.asarray(y)
    except Exception as e:  # pragma: no cover - exotic objects
        raise ValueError(f"{arg}: could not be read as an array ({e})") from None
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise ValueError(f"{arg}: labels must be numeric, got dtype {a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{arg}: expected one label per sample, got a scalar")
    return a


def _match_output(y: np.ndarray, out_shape: tuple, arg: str, loss_name: str) -> np.ndarray:
    """Float labels with the output's per-sample shape; ``(n,)`` for a single output unit
    becomes ``(n, 1)`` (Keras expands such labels too, instead of broadcasting)."""
    if y.ndim == 1 and out_shape == (1,):
        y = y[:, None]
    if tuple(y.shape[1:]) != tuple(out_shape):
        raise ValueError(f"{arg}: labels have per-sample shape {tuple(y.shape[1:])}, but the model's output is "
                         f"{(None,) + tuple(out_shape)} (loss {loss_name!r})")
    return np.ascontiguousarray(y, dtype=np.float32)


class Loss:
    """Base class: ``name``, ``prepare(y, out_shape, arg)``, ``label_spec(out_shape)``, ``build``."""

    name = "loss"

    def __init__(self, from_logits: bool = False):
        self.from_logits = bool(from_logits)

    def label_spec(self, out_shape: tuple) -> tuple[tuple, str]:
        return tuple(out_shape), "float32"

    def prepare(self, y, out_shape: tuple, arg: str = "y") -> np.ndarray:
        return _match_output(_as_array(y, arg), out_shape, arg, self.name)

    def build(self, y, out, pre, act):
        raise NotImplementedError

    def per_sample(self, y, out, pre, act):
        """The loss of each sample, shape ``(batch,)`` (a mean over the other axes, as Keras
        reduces each sample's values): ``sample_weight`` multiplies it before the batch mean."""
        raise NotImplementedError(f"{self.name}: per-sample values (needed by sample_weight/class_weight) "
                                  "are not defined for this loss")

    def __call__(self, y_true, y_pred):
        """The loss of ``y_pred`` taken as the model's output (no activation to see through)."""
        return self.build(y_true, y_pred, y_pred, "linear")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(from_logits={self.from_logits})"


def _per_sample_mean(v):
    """Mean over every axis but the batch axis: ``(batch, ...) -> (batch,)``."""
    return F.mean(v, tuple(range(1, v.ndim))) if v.ndim > 1 else v


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def build(self, y, out, pre, act):
        return F.mse(out, y)

    def per_sample(self, y, out, pre, act):
        return _per_sample_mean(F.square(out - y))


class MeanAbsoluteError(Loss):
    name = "mean_absolute_error"

    def build(self, y, out, pre, act):
        return F.mae(out, y)

    def per_sample(self, y, out, pre, act):
        return _per_sample_mean(F.abs(out - y))


def _logits(loss: Loss, out, pre, act, want: str):
    """The logits to compute a cross-entropy from, or None when the output is probabilities."""
    if loss.from_logits:
        if act == want:
            warnings.warn(f"{loss.name} received from_logits=True, but the model's output comes from a {want} "
                          "activation and so is not logits", stacklevel=4)
        return out
    return pre if act == want else None


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"

    def prepare(self, y, out_shape, arg="y"):
        y = super().prepare(y, out_shape, arg)
        if y.size and (np.nanmin(y) < 0 or np.nanmax(y) > 1):
            raise ValueError(f"{arg}: binary_crossentropy needs labels in [0, 1], got values in "
                             f"[{np.nanmin(y):g}, {np.nanmax(y):g}]")
        return y

    def build(self, y, out, pre, act):
        z = _logits(self, out, pre, act, "sigmoid")
        if z is not None:
            return F.binary_cross_entropy_with_logits(z, y)
        p = F.clip(out, EPSILON, 1.0 - EPSILON)
        return -F.mean(y * F.log(p) + (1.0 - y) * F.log(1.0 - p))

    def per_sample(self, y, out, pre, act):
        z = _logits(self, out, pre, act, "sigmoid")
        if z is not None:  # max(z, 0) - z*y + log(1 + exp(-|z|)), the stable form
            return _per_sample_mean(F.relu(z) - z * y + F.softplus(-F.abs(z)))
        p = F.clip(out, EPSILON, 1.0 - EPSILON)
        return _per_sample_mean(-(y * F.log(p) + (1.0 - y) * F.log(1.0 - p)))


def _categorical_from_probs(y_onehot, out):
    p = out / F.sum(out, -1, keepdims=True)
    p = F.clip(p, EPSILON, 1.0 - EPSILON)
    return -F.mean(F.sum(y_onehot * F.log(p), -1))


def _categorical_from_probs_each(y_onehot, out):
    p = out / F.sum(out, -1, keepdims=True)
    p = F.clip(p, EPSILON, 1.0 - EPSILON)
    return -F.sum(y_onehot * F.log(p), -1)


class CategoricalCrossentropy(Loss):
    """Labels one-hot (or any distribution), shape ``(n, classes)``."""

    name = "categorical_crossentropy"

    def prepare(self, y, out_shape, arg="y"):
        a = _as_array(y, arg)
        if len(out_shape) == 1 and out_shape[0] > 1 and (a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1)):
            raise ValueError(f"{arg}: categorical_crossentropy needs one-hot labels of shape (n, {out_shape[0]}), "
                             f"got shape {a.shape} (class indices?); use loss='sparse_categorical_crossentropy' "
                             "for integer labels")
        y = _match_output(a, out_shape, arg, self.name)
        if y.size and np.nanmin(y) < 0:
            raise ValueError(f"{arg}: categorical_crossentropy needs non-negative (one-hot) labels")
        return y

    def build(self, y, out, pre, act):
        z = _logits(self, out, pre, act, "softmax")
        if z is not None:
            return -F.mean(F.sum(y * F.log_softmax(z, -1), -1))
        return _categorical_from_probs(y, out)

    def per_sample(self, y, out, pre, act):
        z = _logits(self, out, pre, act, "softmax")
        if z is not None:
            return _per_sample_mean(-F.sum(y * F.log_softmax(z, -1), -1))
        return _per_sample_mean(_categorical_from_probs_each(y, out))


class SparseCategoricalCrossentropy(Loss):
    """Labels are integer class indices: shape ``(n,)`` (or ``(n, 1)``) for outputs ``(n,
    classes)``; for sequence outputs ``(n, ..., classes)`` one index per position, ``(n, ...)``.
    As Keras (reduction ``sum_over_batch_size``), the loss is the mean over every position."""

    name = "sparse_categorical_crossentropy"

    def label_spec(self, out_shape):
        return tuple(out_shape[:-1]), "int64"

    def prepare(self, y, out_shape, arg="y"):
        a = _as_array(y, arg)
        if len(out_shape) < 1:
            raise ValueError(f"sparse_categorical_crossentropy needs a model output of shape (None, ..., classes), "
                             f"got {(None,) + tuple(out_shape)}")
        classes, want = out_shape[-1], tuple(out_shape[:-1])
        if a.ndim == len(want) + 2 and a.shape[-1] == 1:
            a = a[..., 0]
        if tuple(a.shape[1:]) != want:
            hint = (" (one-hot?); use loss='categorical_crossentropy' for one-hot labels"
                    if tuple(a.shape[1:]) == tuple(out_shape) else "")
            raise ValueError(f"{arg}: sparse_categorical_crossentropy needs integer class indices of shape "
                             f"{('n',) + want}, got shape {a.shape}{hint}")
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{arg}: class labels contain NaN or infinity")
            if np.any(a != np.round(a)):
                raise ValueError(f"{arg}: sparse_categorical_crossentropy needs integer class indices, got "
                                 "non-integer floats (regression targets?)")
        elif a.dtype.kind == "b":
            a = a.astype(np.int64)
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() >= classes):
            raise ValueError(f"{arg}: class labels must lie in [0, {classes}) for a model with {classes} outputs, "
                             f"got values in [{a.min()}, {a.max()}]")
        return np.ascontiguousarray(a)

    @staticmethod
    def _rows(y, z):
        """Sequence outputs as rows: ``(n, ..., classes) -> (n*..., classes)``, labels likewise."""
        if z.ndim == 2:
            return y, z
        return F.reshape(y, (-1,)), F.reshape(z, (-1, z.shape[-1]))

    def build(self, y, out, pre, act):
        z = _logits(self, out, pre, act, "softmax")
        if z is not None:
            return F.softmax_cross_entropy(*reversed(self._rows(y, z)))
        y2, p2 = self._rows(y, out)
        return _categorical_from_probs(F.one_hot(y2, out.shape[-1], dtype=out.dtype), p2)

    def per_sample(self, y, out, pre, act):
        z = _logits(self, out, pre, act, "softmax")
        onehot = F.one_hot(y, out.shape[-1], dtype=out.dtype)
        if z is not None:
            return _per_sample_mean(-F.sum(onehot * F.log_softmax(z, -1), -1))
        return _per_sample_mean(_categorical_from_probs_each(onehot, out))


class LossFunctionWrapper(Loss):
    """A user function ``fn(y_true, y_pred) -> tensor`` (scalar, or per-sample and averaged)."""

    def __init__(self, fn: Callable, name: str | None = None):
        super().__init__(False)
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom_loss")

    def build(self, y, out, pre, act):
        v = self.fn(y, out)
        return v if v.shape == () else F.mean(v)

    def per_sample(self, y, out, pre, act):
        v = self.fn(y, out)
        if v.shape == () or v.shape[0] is not None:
            raise ValueError(f"sample_weight/class_weight: the loss function {self.name!r} returns a value of shape "
                             f"{v.shape}, not one value per sample; return per-sample losses (batch, ...) to weight them")
        return _per_sample_mean(v)


# ---- Keras 3's regression / probabilistic / margin losses: one value per sample (the mean
# over the last axis, or its sum for KL and cosine), then the batch mean (sum_over_batch_size)

def _float(y, like):
    return y if y.dtype == like.dtype else F.cast(y, like.dtype)


def huber(y_true, y_pred, delta: float = 1.0):
    """``keras.losses.huber``: 0.5 * e**2 where |e| <= delta, else delta * |e| - 0.5 * delta**2."""
    err = y_pred - _float(y_true, y_pred)
    a = F.abs(err)
    return F.mean(F.where(F.less_equal(a, delta), 0.5 * F.square(err), delta * a - 0.5 * delta * delta), -1)


def log_cosh(y_true, y_pred):
    """``keras.losses.log_cosh``: log(cosh(e)) as e + softplus(-2e) - log 2 (no overflow)."""
    x = y_pred - _float(y_true, y_pred)
    return F.mean(x + F.softplus(x * -2.0) - float(np.log(2.0)), -1)


def kl_divergence(y_true, y_pred):
    """``keras.losses.kl_divergence``: sum(y_true * log(y_true / y_pred)), both clipped to [eps, 1]."""
    t = F.clip(_float(y_true, y_pred), EPSILON, 1.0)
    p = F.clip(y_pred, EPSILON, 1.0)
    return F.sum(t * F.log(t / p), -1)


def _hinge_labels(y):
    """Keras' convert_binary_labels_to_hinge: labels all in {0, 1} become {-1, 1}."""
    binary = F.all(F.logical_or(F.equal(y, 0.0), F.equal(y, 1.0)))
    return F.where(binary, 2.0 * y - 1.0, y)


def hinge(y_true, y_pred):
    """``keras.losses.hinge``: mean(max(1 - y_true * y_pred, 0)) with labels in {-1, 1} (or {0, 1})."""
    t = _hinge_labels(_float(y_true, y_pred))
    return F.mean(F.maximum(1.0 - t * y_pred, 0.0), -1)


def squared_hinge(y_true, y_pred):
    """``keras.losses.squared_hinge``: mean(max(1 - y_true * y_pred, 0) ** 2)."""
    t = _hinge_labels(_float(y_true, y_pred))
    return F.mean(F.square(F.maximum(1.0 - t * y_pred, 0.0)), -1)


def poisson(y_true, y_pred):
    """``keras.losses.poisson``: mean(y_pred - y_true * log(y_pred + eps))."""
    return F.mean(y_pred - _float(y_true, y_pred) * F.log(y_pred + EPSILON), -1)


def _l2_normalize(x, axis):
    # Keras' ops.normalize: x * min(rsqrt(sum(x**2)), 1/eps), so a zero vector stays zero
    return x * F.minimum(F.rsqrt(F.sum(F.square(x), axis, keepdims=True)), 1.0 / EPSILON)


def cosine_similarity(y_true, y_pred, axis: int = -1):
    """``keras.losses.cosine_similarity``: -sum(l2_normalize(y_true) * l2_normalize(y_pred))."""
    return -F.sum(_l2_normalize(_float(y_true, y_pred), axis) * _l2_normalize(y_pred, axis), axis)


class _Elementwise(Loss):
    """A Keras 3 loss class over its function: ``fn(y_true, y_pred, **options)`` gives each
    sample's value (over the last axis); the loss is their mean (``sum_over_batch_size``)."""

    fn: Callable = None
    options: tuple = ()

    def __init__(self, name: str | None = None, **options):
        super().__init__(False)
        if name is not None:
            self.name = name
        for k, v in options.items():
            setattr(self, k, v)

    def _values(self, y, out):
        return type(self).fn(y, out, **{k: getattr(self, k) for k in self.options})

    def build(self, y, out, pre, act):
        return F.mean(self._values(y, out))

    def per_sample(self, y, out, pre, act):
        return _per_sample_mean(self._values(y, out))

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": "sum_over_batch_size",
                **{k: getattr(self, k) for k in self.options}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.options)
        return f"{type(self).__name__}({args})"


def _real(cls: str, name: str, v, positive: bool = False) -> float:
    import numbers
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{cls}: {name} must be a finite {'positive ' if positive else ''}number, got {v!r}")
    return float(v)


class Huber(_Elementwise):
    """``keras.losses.Huber(delta=1.0)``: quadratic for errors up to ``delta``, linear beyond."""

    name, fn, options = "huber_loss", staticmethod(huber), ("delta",)

    def __init__(self, delta: float = 1.0, name: str = "huber_loss"):
        super().__init__(name, delta=_real("Huber", "delta", delta, positive=True))


class LogCosh(_Elementwise):
    """``keras.losses.LogCosh``: log(cosh(y_pred - y_true)), averaged."""

    name, fn = "log_cosh", staticmethod(log_cosh)

    def __init__(self, name: str = "log_cosh"):
        super().__init__(name)


class KLDivergence(_Elementwise):
    """``keras.losses.KLDivergence``: y_true * log(y_true / y_pred) summed over the last axis."""

    name, fn = "kl_divergence", staticmethod(kl_divergence)

    def __init__(self, name: str = "kl_divergence"):
        super().__init__(name)


class Hinge(_Elementwise):
    """``keras.losses.Hinge``: labels -1/1 (0/1 are converted)."""

    name, fn = "hinge", staticmethod(hinge)

    def __init__(self, name: str = "hinge"):
        super().__init__(name)


class SquaredHinge(_Elementwise):
    """``keras.losses.SquaredHinge``: labels -1/1 (0/1 are converted)."""

    name, fn = "squared_hinge", staticmethod(squared_hinge)

    def __init__(self, name: str = "squared_hinge"):
        super().__init__(name)


class Poisson(_Elementwise):
    """``keras.losses.Poisson``: y_pred - y_true * log(y_pred), averaged."""

    name, fn = "poisson", staticmethod(poisson)

    def __init__(self, name: str = "poisson"):
        super().__init__(name)


class CosineSimilarity(_Elementwise):
    """``keras.losses.CosineSimilarity(axis=-1)``: minus the cosine of the angle between
    labels and predictions along ``axis`` (-1 when they point the same way)."""

    name, fn, options = "cosine_similarity", staticmethod(cosine_similarity), ("axis",)

    def __init__(self, axis: int = -1, name: str = "cosine_similarity"):
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"CosineSimilarity: axis must be an int, got {axis!r}")
        super().__init__(name, axis=axis)


_BY_NAME = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "huber": Huber, "huber_loss": Huber, "log_cosh": LogCosh, "logcosh": LogCosh,
    "kl_divergence": KLDivergence, "kld": KLDivergence, "kullback_leibler_divergence": KLDivergence,
    "hinge": Hinge, "squared_hinge": SquaredHinge, "poisson": Poisson, "cosine_similarity": CosineSimilarity,
}


def get(identifier) -> Loss:
    """A Loss from a name, a Loss object or a function ``fn(y_true, y_pred)``."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is None:
            raise ValueError(f"compile(loss=...): unknown loss {identifier!r}; choose from {sorted(_BY_NAME)}, "
                             "a graphc.nn.losses.Loss or a function fn(y_true, y_pred)")
        return cls()
    if callable(identifier):
        return LossFunctionWrapper(identifier)
    raise ValueError(f"compile(loss=...): expected a loss name, a Loss or a function, got {identifier!r}")
