"""Metrics, built as extra outputs of the same compiled step as the loss (no second pass).

``'accuracy'`` (or ``'acc'``) resolves as Keras does: binary accuracy when the output has a
single unit, sparse categorical accuracy when the labels are class indices (rank below
the output's, or a last dim of 1 against several outputs), categorical accuracy otherwise.
"""
from __future__ import annotations

import numbers
from typing import Callable

from .. import dsl as F
from . import losses as L


class Metric:
    """``build(y, out, pre, act) -> scalar`` (a mean over the batch; epochs average batches
    weighted by their size)."""

    name = "metric"

    def build(self, y, out, pre, act):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<metric {self.name}>"


def _scores(out, pre, act):
    # argmax is unchanged by softmax, and the logits tie less often than saturated probabilities
    return pre if act == "softmax" else out


class BinaryAccuracy(Metric):
    def __init__(self, name="binary_accuracy", threshold=0.5):
        self.name, self.threshold = name, float(threshold)

    def build(self, y, out, pre, act):
        pred = F.cast(F.greater(out, self.threshold), y.dtype if y.dtype.kind == "f" else out.dtype)
        return F.mean(F.cast(F.equal(F.cast(y, pred.dtype), pred), out.dtype))


class SparseCategoricalAccuracy(Metric):
    def __init__(self, name="sparse_categorical_accuracy"):
        self.name = name

    def build(self, y, out, pre, act):
        s, labels = _rows(_scores(out, pre, act), y)  # sequence outputs: the mean over every position
        picked = F.sum(s * F.one_hot(labels, s.shape[-1], dtype=s.dtype), -1)
        # correct when the labelled class reaches the row's max (argmax up to ties)
        return F.mean(F.cast(F.greater_equal(picked, F.max(s, -1)), out.dtype))


class CategoricalAccuracy(Metric):
    def __init__(self, name="categorical_accuracy"):
        self.name = name

    def build(self, y, out, pre, act):
        s = _scores(out, pre, act)
        true_cls = F.greater_equal(y, F.max(y, -1, keepdims=True))
        picked = F.max(F.where(true_cls, s, -3.0e38), -1)
        return F.mean(F.cast(F.greater_equal(picked, F.max(s, -1)), out.dtype))


def _rows(s, y):
    """Scores ``(n, ..., classes)`` and integer labels ``(n, ...)`` (or ``(n, ..., 1)``) as
    rows ``(m, classes)`` and ``(m,)``."""
    labels = y if y.dtype.kind in "iu" else F.cast(y, "int64")
    if s.ndim == 2:
        return s, F.reshape(labels, (None,)) if labels.ndim == 2 else labels
    return F.reshape(s, (-1, s.shape[-1])), F.reshape(labels, (-1,))


def _in_top_k(s, picked, k: int, dtype):
    """1 where fewer than ``k`` classes score strictly above the labelled one (TF's
    ``in_top_k``: classes tied at the boundary all count as in the top k)."""
    above = F.sum(F.cast(F.greater(s, picked), s.dtype), -1)
    return F.mean(F.cast(F.less(above, float(k)), dtype))


def _k_arg(k, who: str) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k <= 0:
        raise ValueError(f"{who}: k must be a positive int, got {k!r}")
    return int(k)


class SparseTopKCategoricalAccuracy(Metric):
    """How often the integer label is among the ``k`` highest scores (Keras default k=5)."""

    def __init__(self, k: int = 5, name: str = "sparse_top_k_categorical_accuracy"):
        self.k, self.name = _k_arg(k, "SparseTopKCategoricalAccuracy"), name

    def build(self, y, out, pre, act):
        s, labels = _rows(_scores(out, pre, act), y)
        picked = F.sum(s * F.one_hot(labels, s.shape[-1], dtype=s.dtype), -1, keepdims=True)
        return _in_top_k(s, picked, self.k, out.dtype)


class TopKCategoricalAccuracy(Metric):
    """How often the one-hot label's class is among the ``k`` highest scores (default k=5)."""

    def __init__(self, k: int = 5, name: str = "top_k_categorical_accuracy"):
        self.k, self.name = _k_arg(k, "TopKCategoricalAccuracy"), name

    def build(self, y, out, pre, act):
        s = _scores(out, pre, act)
        true_cls = F.greater_equal(y, F.max(y, -1, keepdims=True))
        picked = F.max(F.where(true_cls, s, -3.0e38), -1, keepdims=True)
        return _in_top_k(s, picked, self.k, out.dtype)


class _FromLoss(Metric):
    def __init__(self, name, loss: L.Loss):
        self.name, self.loss = name, loss

    def build(self, y, out, pre, act):
        return self.loss.build(y, out, pre, act)


class MeanSquaredError(_FromLoss):
    """``mean((y_pred - y_true)**2)``."""

    def __init__(self, name: str = "mean_squared_error"):
        super().__init__(name, L.MeanSquaredError())


class MeanAbsoluteError(_FromLoss):
    """``mean(|y_pred - y_true|)``."""

    def __init__(self, name: str = "mean_absolute_error"):
        super().__init__(name, L.MeanAbsoluteError())


class MetricFunctionWrapper(Metric):
    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "metric")

    def build(self, y, out, pre, act):
        v = self.fn(y, out)
        return v if v.shape == () else F.mean(v)


def resolve_accuracy(name: str, out_shape: tuple, label_shape: tuple) -> Metric:
    """Keras' rule, on per-sample shapes (without the batch dim)."""
    y_rank, p_rank = len(label_shape) + 1, len(out_shape) + 1
    y_last = label_shape[-1] if label_shape else None
    p_last = out_shape[-1] if out_shape else None
    if p_last == 1:
        return BinaryAccuracy(name)
    if y_rank < p_rank or (y_last == 1 and p_last is not None and p_last > 1):
        return SparseCategoricalAccuracy(name)
    return CategoricalAccuracy(name)


_NAMED = {
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": lambda name: SparseTopKCategoricalAccuracy(name=name),
    "top_k_categorical_accuracy": lambda name: TopKCategoricalAccuracy(name=name),
}
_FROM_LOSS = {"mae": "mae", "mean_absolute_error": "mae", "mse": "mse", "mean_squared_error": "mse",
              "binary_crossentropy": "binary_crossentropy",
              "categorical_crossentropy": "categorical_crossentropy",
              "sparse_categorical_crossentropy": "sparse_categorical_crossentropy"}


def get(identifier, out_shape: tuple, label_shape: tuple) -> Metric:
    """A Metric from a name, a Metric or a function ``fn(y_true, y_pred)``."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in ("accuracy", "acc"):
            return resolve_accuracy(identifier, out_shape, label_shape)
        if key in _NAMED:
            return _NAMED[key](identifier)
        if key in _FROM_LOSS:
            return _FromLoss(identifier, L.get(_FROM_LOSS[key]))
        raise ValueError(f"compile(metrics=...): unknown metric {identifier!r}; choose from "
                         f"{sorted(['accuracy', 'acc', *_NAMED, *_FROM_LOSS])} or pass a function fn(y_true, y_pred)")
    if callable(identifier):
        return MetricFunctionWrapper(identifier)
    raise ValueError(f"compile(metrics=...): expected a metric name, a Metric or a function, got {identifier!r}")
