"""``graphc.nn.utils``: Keras' ``to_categorical`` and ``set_random_seed``."""
from __future__ import annotations

import numbers
import random

import numpy as np

__all__ = ["to_categorical", "set_random_seed"]


def to_categorical(x, num_classes: int | None = None) -> np.ndarray:
    """Class indices as one-hot rows, as ``keras.utils.to_categorical``: shape ``x.shape +
    (num_classes,)`` (a trailing axis of 1 is dropped first), float64 as Keras' NumPy path;
    ``num_classes`` defaults to ``max(x) + 1``."""
    a = np.asarray(x)
    if a.dtype.kind not in "biuf" or (a.dtype.kind == "f" and (not np.all(np.isfinite(a)) or np.any(a != np.round(a)))):
        raise ValueError(f"to_categorical: x must hold integer class indices, got dtype {a.dtype}")
    a = a.astype(np.int64)
    shape = a.shape
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    a = a.reshape(-1)
    if num_classes is None:
        num_classes = int(a.max()) + 1 if a.size else 0
    elif isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"to_categorical: num_classes must be a positive int, got {num_classes!r}")
    if a.size and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(f"to_categorical: class indices must lie in [0, {num_classes}) for num_classes="
                         f"{num_classes}, got values in [{a.min()}, {a.max()}]")
    out = np.zeros((a.size, int(num_classes)))
    out[np.arange(a.size), a] = 1
    return out.reshape(shape + (int(num_classes),))


def set_random_seed(seed: int) -> None:
    """Seeds Python's ``random`` and NumPy's global generator, as ``keras.utils.set_random_seed``.
    graphc.nn's own randomness (weight initialization, shuffling, dropout) is already
    reproducible: it derives from ``compile(seed=...)`` (0 by default)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"set_random_seed: expected `seed` argument to be an integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
