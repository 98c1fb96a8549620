"""Metrics, built as extra outputs of the same compiled step as the loss (no second pass).

``'accuracy'`` (or ``'acc'``) resolves as Keras does: binary accuracy when the output has a
single unit, sparse categorical accuracy when the labels are class indices (rank below
the output's, or a last dim of 1 against several outputs), categorical accuracy otherwise.
"""
from __future__ import annotations

import numbers
from typing import Callable

import numpy as np

from .. import dsl as F
from . import losses as L

EPSILON = 1e-7  # keras.backend.epsilon()


class Metric:
    """``build(y, out, pre, act) -> scalar`` (a mean over the batch; epochs average batches
    weighted by their size).

    A metric that is not a mean of per-batch values (precision, AUC, F1) sets ``stateful``:
    its ``build`` returns a 1-d vector of statistics, each the batch mean of a per-sample
    count (so the epoch's size-weighted sum is the total count, accumulated like every other
    output), and ``result(totals)`` turns the totals into the value Keras' ``result()``
    gives after the same batches."""

    name = "metric"
    stateful = False

    def build(self, y, out, pre, act):
        raise NotImplementedError

    def result(self, totals: np.ndarray):
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


# ---- confusion-matrix metrics (Keras 3's Precision, Recall, AUC, F1Score) ----------------------

def _no_nan(a, b):
    """Keras' divide_no_nan: 0 where the denominator is 0."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float32), np.asarray(b, np.float32))
    out = np.zeros(a.shape, np.float32)
    np.divide(a, b, out=out, where=b != 0)
    return out


def _flat(y, out):
    """Labels as 0/1 (Keras casts them to bool) and predictions, both ``(batch, elements)``."""
    d = int(np.prod(out.shape[1:])) if out.ndim > 1 else 1
    p = F.reshape(out, (-1, d))
    t = F.cast(F.not_equal(F.reshape(y, (-1, d)), 0), out.dtype)
    return t, p


def _threshold_arg(who: str, t) -> float:
    if t is None:
        return 0.5
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0.0 <= t <= 1.0:
        raise ValueError(f"{who}: thresholds must be one number in [0, 1], got {t!r} (several thresholds, which "
                         "give a list, are not supported)")
    return float(t)


class _Confusion(Metric):
    """tp, fp, fn at one threshold (``y_pred > threshold``) over every element."""

    stateful = True

    def __init__(self, thresholds=None, name=None):
        self.thresholds = _threshold_arg(type(self).__name__, thresholds)
        self.name = name or self.name

    def build(self, y, out, pre, act):
        t, p = _flat(y, out)
        hit = F.cast(F.greater(p, self.thresholds), out.dtype)
        parts = [t * hit, (1.0 - t) * hit, t * (1.0 - hit)]  # tp, fp, fn
        return F.concatenate([F.reshape(F.mean(F.sum(v, 1)), (1,)) for v in parts], 0)


class Precision(_Confusion):
    """``keras.metrics.Precision``: tp / (tp + fp) over every batch so far (0 with none)."""

    name = "precision"

    def result(self, totals):
        tp, fp, _ = np.asarray(totals, np.float32)
        return float(_no_nan(tp, tp + fp))


class Recall(_Confusion):
    """``keras.metrics.Recall``: tp / (tp + fn) over every batch so far (0 with none)."""

    name = "recall"

    def result(self, totals):
        tp, _, fn = np.asarray(totals, np.float32)
        return float(_no_nan(tp, tp + fn))


class AUC(Metric):
    """``keras.metrics.AUC``: the area under the ROC or precision-recall curve from the
    confusion counts at ``num_thresholds`` evenly spread thresholds (0 - eps, 1/(n-1), ...,
    1 + eps), summed with Keras' ``summation_method``: 'interpolation' (trapezoids; for PR
    Davis & Goadrich's interpolation), 'minoring' or 'majoring'."""

    stateful = True

    def __init__(self, num_thresholds: int = 200, curve: str = "ROC", summation_method: str = "interpolation",
                 name: str = "auc", from_logits: bool = False):
        if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, numbers.Integral) or num_thresholds <= 1:
            raise ValueError(f"AUC: num_thresholds must be an int > 1, got {num_thresholds!r}")
        if not isinstance(curve, str) or curve.upper() not in ("ROC", "PR"):
            raise ValueError(f"AUC: curve must be 'ROC' or 'PR', got {curve!r}")
        if summation_method not in ("interpolation", "minoring", "majoring"):
            raise ValueError(f"AUC: summation_method must be 'interpolation', 'minoring' or 'majoring', "
                             f"got {summation_method!r}")
        self.num_thresholds, self.curve, self.summation_method = int(num_thresholds), curve.upper(), summation_method
        self.name, self.from_logits = name, bool(from_logits)
        inner = [(i + 1) * 1.0 / (self.num_thresholds - 1) for i in range(self.num_thresholds - 2)]
        self.thresholds = np.array([0.0 - EPSILON] + inner + [1.0 + EPSILON])

    def build(self, y, out, pre, act):
        t, p = _flat(y, out)
        if self.from_logits:
            p = F.sigmoid(p)
        above = F.cast(F.greater(F.expand_dims(p, -1), F.const(self.thresholds.astype(out.dtype))), out.dtype)
        te = F.expand_dims(t, -1)
        tp = F.mean(F.sum(te * above, 1), 0)  # (num_thresholds,)
        fp = F.mean(F.sum((1.0 - te) * above, 1), 0)
        pos = F.reshape(F.mean(F.sum(t, 1)), (1,))
        neg = F.reshape(F.mean(F.sum(1.0 - t, 1)), (1,))
        return F.concatenate([tp, fp, pos, neg], 0)

    def result(self, totals):
        n = self.num_thresholds
        a = np.asarray(totals, np.float32)
        tp, fp, pos, neg = a[:n], a[n:2 * n], a[2 * n], a[2 * n + 1]
        fn, tn = pos - tp, neg - fp
        if self.curve == "PR" and self.summation_method == "interpolation":
            dtp = tp[:-1] - tp[1:]
            p = tp + fp
            slope = _no_nan(dtp, np.maximum(p[:-1] - p[1:], 0))
            intercept = tp[1:] - slope * p[1:]
            ratio = np.where((p[:-1] > 0) & (p[1:] > 0), _no_nan(p[:-1], np.maximum(p[1:], 0)), 1.0)
            with np.errstate(divide="ignore"):
                inc = _no_nan(slope * (dtp + intercept * np.log(ratio)), np.maximum(tp[1:] + fn[1:], 0))
            return float(np.sum(inc, dtype=np.float32))
        recall = _no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, yv = _no_nan(fp, fp + tn), recall
        else:
            x, yv = recall, _no_nan(tp, tp + fp)
        if self.summation_method == "interpolation":
            h = (yv[:-1] + yv[1:]) / np.float32(2.0)
        elif self.summation_method == "minoring":
            h = np.minimum(yv[:-1], yv[1:])
        else:
            h = np.maximum(yv[:-1], yv[1:])
        return float(np.sum((x[:-1] - x[1:]) * h, dtype=np.float32))


class F1Score(Metric):
    """``keras.metrics.F1Score``: per class 2 * precision * recall / (precision + recall),
    from the counts of every batch so far; ``average`` None (one value per class), 'micro'
    (over the pooled counts), 'macro' (the plain mean) or 'weighted' (by class support).
    Predictions are ``y_pred > threshold``, or with ``threshold=None`` the row's maximum."""

    stateful = True

    def __init__(self, average: str | None = None, threshold: float | None = None, name: str = "f1_score"):
        if average not in (None, "micro", "macro", "weighted"):
            raise ValueError(f"F1Score: average must be None, 'micro', 'macro' or 'weighted', got {average!r}")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
                                      or not 0.0 < threshold <= 1.0):
            raise ValueError(f"F1Score: threshold must be a float in (0, 1] or None, got {threshold!r}")
        self.average, self.threshold, self.name, self.beta = average, threshold, name, 1.0

    def build(self, y, out, pre, act):
        if out.ndim != 2:
            raise ValueError(f"F1Score expects 2D outputs (batch_size, classes), got {out.shape}")
        t = F.cast(y, out.dtype)
        if self.threshold is None:
            hit = F.logical_and(F.greater_equal(out, F.max(out, -1, keepdims=True)), F.greater(F.abs(out), 1e-9))
        else:
            hit = F.greater(out, float(self.threshold))
        h = F.cast(hit, out.dtype)
        return F.concatenate([F.mean(v, 0) for v in (h * t, h * (1.0 - t), (1.0 - h) * t, t)], 0)

    def result(self, totals):
        a = np.asarray(totals, np.float32).reshape(4, -1)
        tp, fp, fn, support = a
        if self.average == "micro":
            tp, fp, fn, support = tp.sum(), fp.sum(), fn.sum(), support.sum()
        eps, b2 = np.float32(EPSILON), np.float32(self.beta ** 2)
        precision = tp / (tp + fp + eps)
        recall = tp / (tp + fn + eps)
        f1 = precision * recall / (b2 * precision + recall + eps) * (1 + b2)
        if self.average == "weighted":
            return float(np.sum(f1 * (support / (np.sum(support) + eps))))
        if self.average is not None:
            return float(np.mean(f1))
        return f1.astype(np.float32)


def batch_value(v):
    """One output of a compiled step as a log value: a float, or for a stateful metric's
    statistics a float64 vector (summed over batches)."""
    return float(v) if np.ndim(v) == 0 else np.array(v, dtype=np.float64)


def log_values(metrics, sums: dict, seen: int) -> dict:
    """The logs from the size-weighted sums of a run's outputs: ``sum / seen`` (the sample
    mean), or a stateful metric's ``result`` of its totals."""
    stateful = {m.name: m for m in metrics if getattr(m, "stateful", False)}
    return {k: stateful[k].result(v) if k in stateful else v / max(seen, 1) for k, v in sums.items()}


def batch_logs(metrics, values: dict, n: int) -> dict:
    """One batch's logs from its outputs (``batch_value``s of a batch of ``n`` samples): a
    stateful metric's statistics become its ``result`` over that batch."""
    stateful = {m.name: m for m in metrics if getattr(m, "stateful", False)}
    return {k: stateful[k].result(v * n) if k in stateful else v for k, v in values.items()}


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
    "auc": lambda name: AUC(name=name), "precision": lambda name: Precision(name=name),
    "recall": lambda name: Recall(name=name), "f1_score": lambda name: F1Score(name=name),
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
