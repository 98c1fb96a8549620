"""Data checks and batching for fit/evaluate/predict: every array is checked (numeric, one
row per sample, the per-sample shape the model expects, finite under ``nan_policy``) and
cast to its feed's dtype before anything runs, and bad data is a ValueError naming the
argument (``x``, ``y[1]``, ``validation_data[0]['tokens']``). These functions know a model
only by what it declares (input and output names, shapes, dtypes, losses)."""
from __future__ import annotations

import numbers
import warnings

import numpy as np

NAN_POLICIES = ("raise", "warn", "ignore")
RAN_OUT = ("Your input ran out of data; interrupting training. Make sure that your dataset or generator can "
           "generate at least `steps_per_epoch * epochs` batches.")


def positive_int(v, arg: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise ValueError(f"{arg}: expected a positive int, got {v!r}")
    return int(v)


def verbose_arg(v) -> int:
    if v == "auto":
        return 1
    if v not in (0, 1, 2):
        raise ValueError(f"verbose: expected 0, 1, 2 or 'auto', got {v!r}")
    return int(v)


def check_finite(a: np.ndarray, arg: str, policy: str) -> None:
    if policy == "ignore" or a.dtype.kind != "f":
        return
    bad = ~np.isfinite(a)
    if bad.any():
        rows = np.nonzero(bad.reshape(len(a), -1).any(axis=1))[0]
        msg = (f"{arg}: contains {int(bad.sum())} NaN or infinite value(s) in {len(rows)} sample(s) "
               f"(first at sample {rows[0]}); clean the data, or pass nan_policy='warn' or 'ignore'")
        if policy == "raise":
            raise ValueError(msg)
        warnings.warn(msg, stacklevel=4)


def as_numeric(x, arg: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except Exception as e:
        raise ValueError(f"{arg}: could not be read as an array ({e})") from None
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise ValueError(f"{arg}: expected numeric data, got dtype {a.dtype}")
    return a


def conform(a: np.ndarray, arg: str, want: tuple, dtype: str, nan_policy: str, what: str) -> np.ndarray:
    """``a`` (numeric, one row per sample) checked against the per-sample shape ``want`` and
    cast to the feed's dtype; ``what`` says which input it is, for the messages."""
    if a.ndim == 0 or len(a) == 0:
        raise ValueError(f"{arg}: expected a batch of samples, got shape {a.shape}")
    if a.ndim == 1 and want == (1,):
        a = a[:, None]
    if tuple(a.shape[1:]) != tuple(want):
        if a.ndim == 1:
            raise ValueError(f"{arg}: expected samples of shape {want}, got a 1-D array of shape {a.shape}; "
                             "reshape it to (n, features)")
        raise ValueError(f"{arg}: the model expects samples of shape {tuple(want)} ({what}), got samples of "
                         f"shape {tuple(a.shape[1:])}")
    if np.dtype(dtype).kind in "iu":  # ids (an Embedding): whole numbers, as Keras casts them
        if a.dtype.kind == "f" and not (np.isfinite(a).all() and (a == np.round(a)).all()):
            raise ValueError(f"{arg}: the model's first layer takes integer ids, got non-integer values")
        return np.ascontiguousarray(a, dtype=dtype)
    a = np.ascontiguousarray(a, dtype=np.float32)
    check_finite(a, arg, nan_policy)
    return a


def by_output(value, names: list[str], arg: str, what: str) -> list:
    """One entry per output from a value for all outputs, a list or a dict keyed by name."""
    n = len(names)
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{arg}: unknown output name(s) {unknown}; the model's outputs are {names}")
        return [value.get(k) for k in names]
    if isinstance(value, (list, tuple)) and n > 1:
        if len(value) != n:
            raise ValueError(f"{arg}: the model has {n} outputs {names}, got a list of {len(value)} {what}")
        return list(value)
    return [value] * n


def unwrap_one(v):
    """``[array]`` for a model with one input (or output) is that array, as Keras reads it."""
    if isinstance(v, (list, tuple)) and len(v) == 1 and hasattr(v[0], "shape") and np.ndim(v[0]) >= 1:
        return v[0]
    return v


def check_inputs(x, arg: str, nan_policy: str, names: list[str], shapes: list[tuple],
                 dtypes: list[str]) -> list[np.ndarray]:
    """One checked array per input, from an array (one input), a list or a dict by name."""
    n = len(names)
    if isinstance(x, dict):
        missing, unknown = [k for k in names if k not in x], sorted(set(x) - set(names))
        if missing or unknown:
            raise ValueError(f"{arg}: the model's inputs are {names}; missing {missing}, unexpected {unknown}")
        items = [(x[k], f"{arg}[{k!r}]") for k in names]
    elif n == 1:
        items = [(unwrap_one(x), arg)]
    elif isinstance(x, (list, tuple)) and len(x) == n:
        items = [(a, f"{arg}[{i}]") for i, a in enumerate(x)]
    else:
        got = f"a list of {len(x)}" if isinstance(x, (list, tuple)) else type(x).__name__
        raise ValueError(f"{arg}: the model has {n} inputs {names}; pass a list of {n} arrays or a dict keyed by "
                         f"input name, got {got}")
    out = [conform(as_numeric(a, what), what, shapes[i], dtypes[i], nan_policy,
                    f"input {names[i]!r}") for i, (a, what) in enumerate(items)]
    same_length(out, [w for _, w in items])
    return out


def same_length(arrays, args) -> None:
    for a, w in zip(arrays[1:], args[1:]):
        if len(a) != len(arrays[0]):
            raise ValueError(f"{args[0]} and {w} have different numbers of samples: {args[0]} has "
                             f"{len(arrays[0])}, {w} has {len(a)}")


def check_labels(y, arg: str, nan_policy: str, n: int, xarg: str, names: list[str], losses: list,
                 shapes: list[tuple]) -> list[np.ndarray]:
    """One label array per output, each prepared by its loss (``loss.prepare``)."""
    if y is None:
        raise ValueError(f"{arg}: labels are required")
    if isinstance(y, dict):
        missing, unknown = [k for k in names if k not in y], sorted(set(y) - set(names))
        if missing or unknown:
            raise ValueError(f"{arg}: the model's outputs are {names}; missing {missing}, unexpected {unknown}")
        items = [(y[k], f"{arg}[{k!r}]") for k in names]
    elif len(names) == 1:
        items = [(unwrap_one(y), arg)]
    elif isinstance(y, (list, tuple)) and len(y) == len(names):
        items = [(a, f"{arg}[{i}]") for i, a in enumerate(y)]
    else:
        raise ValueError(f"{arg}: the model has {len(names)} outputs {names}; pass a list of {len(names)} label "
                         "arrays or a dict keyed by output name")
    out = []
    for (a, what), loss, shape in zip(items, losses, shapes):
        try:
            ya = np.asarray(a)
        except Exception as e:
            raise ValueError(f"{what}: could not be read as an array ({e})") from None
        if ya.ndim == 0:
            raise ValueError(f"{what}: expected one label per sample, got a scalar")
        if len(ya) != n:
            raise ValueError(f"{xarg} and {what} have different numbers of samples: {xarg} has {n}, "
                             f"{what} has {len(ya)}")
        if ya.dtype.kind == "f":
            check_finite(ya, what, nan_policy)
        out.append(loss.prepare(ya, shape, what))
    return out


def check_sample_weights(sw, arg: str, n: int, names: list[str]) -> list[np.ndarray]:
    """One float32 weight vector per output (ones where none is given)."""
    per = by_output(sw, names, arg, "arrays")
    out = []
    for i, w in enumerate(per):
        what = arg if len(per) == 1 or not isinstance(sw, (list, tuple, dict)) else f"{arg}[{names[i]!r}]"
        if w is None:
            out.append(np.ones(n, np.float32))
            continue
        a = as_numeric(w, what)
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 1 or len(a) != n:
            raise ValueError(f"{what}: expected one weight per sample, shape ({n},), got shape {a.shape}")
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"{what}: sample weights contain NaN or infinity")
        out.append(a)
    return out


def class_weight_to_sample_weight(class_weight, ys: list[np.ndarray]) -> np.ndarray:
    """Keras' rule: each sample weighs ``class_weight[its class]`` (1.0 when absent); the
    class is the label, the argmax of a one-hot label, or a rounded binary label."""
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight: expected a dict {{class index: weight}}, got {type(class_weight).__name__}")
    if len(ys) != 1:
        raise ValueError("class_weight: only supported for models with a single output; pass sample_weight "
                         "per output instead")
    for k, v in class_weight.items():
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
            raise ValueError(f"class_weight: keys must be non-negative class indices, got {k!r}")
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
            raise ValueError(f"class_weight: weight of class {k} must be a finite number, got {v!r}")
    y = ys[0]
    if y.ndim > 1:
        y = np.argmax(y, axis=-1) if y.shape[-1] != 1 else y[..., 0]
    y = np.round(y).astype(np.int64).reshape(len(y), -1)[:, 0]
    table = np.ones(int(max([*class_weight, int(y.max(initial=0))])) + 1, np.float32)
    for k, v in class_weight.items():
        table[int(k)] = v
    return table[y]


# ---- batching --------------------------------------------------------------------------------------------

def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(lo, hi)]`` of consecutive batches over ``n`` samples (the last one may be short)."""
    return [(lo, min(n, lo + batch_size)) for lo in range(0, n, batch_size)]


def pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` with zero rows appended up to ``rows``: predict pads its last batch so one compiled
    specialization (one batch size) serves every call."""
    if len(a) >= rows:
        return a
    return np.concatenate([a, np.zeros((rows - len(a),) + a.shape[1:], a.dtype)])


class EpochBatches:
    """fit's batches: index arrays of ``batch_size`` samples out of ``n``, one pass over the data
    in one order. Without ``steps_per_epoch`` an epoch is one pass. With it, an epoch takes that
    many batches and the next epoch continues the same pass; a new pass (a new order) begins at
    the start of an epoch once the data has run out, and an epoch that reaches the end of the
    data mid-way gets ``None`` in place of its next batch (Keras' "ran out of data")."""

    def __init__(self, n: int, batch_size: int, steps_per_epoch: int | None = None):
        self.n, self.batch_size = n, batch_size
        self.per_pass = -(-n // batch_size)
        self.steps = steps_per_epoch or self.per_pass
        self._continues = steps_per_epoch is not None
        self._order: np.ndarray | None = None
        self._pos = self.per_pass  # the next batch of the current pass

    def epoch(self, new_order):
        """Yield ``(batch index, sample indices or None)`` for one epoch. ``new_order()`` gives
        the order of a new pass (a permutation of ``range(n)``, or None for the data's order);
        it is called only when a pass begins."""
        if not self._continues or self._pos >= self.per_pass:
            self._order, self._pos = new_order(), 0
        for b in range(self.steps):
            if self._pos >= self.per_pass:
                yield b, None
                return
            lo, hi = self._pos * self.batch_size, min(self.n, (self._pos + 1) * self.batch_size)
            self._pos += 1
            yield b, (np.arange(lo, hi) if self._order is None else self._order[lo:hi])
