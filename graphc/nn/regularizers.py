"""Weight regularizers (Keras' ``keras.regularizers``): penalties added to the training loss.

``L1(l1)``: ``l1 * sum(|w|)``; ``L2(l2)``: ``l2 * sum(w**2)``; ``L1L2(l1, l2)``: both. A layer
given ``kernel_regularizer=...`` adds the penalty of its kernel to the loss the model
minimizes and reports (in fit and evaluate, as Keras does); it is built into the same
compiled step, so its gradient costs one fused elementwise term per weight.

Strings resolve as Keras documents them: ``'l1'`` and ``'l2'`` with factor 0.01,
``'l1_l2'`` with ``l1=0.01, l2=0.01``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

from .. import dsl as F


def _factor(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)) or float(v) < 0:
        raise ValueError(f"{what}: expected a non-negative finite float, got {v!r}")
    return float(v)


class Regularizer:
    """Base class: ``__call__(weight) -> scalar tensor`` (the penalty)."""

    def __call__(self, x):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}


class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x**2)`` (Keras' class defaults: both 0)."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1 = _factor(l1, "L1L2(l1=...)")
        self.l2 = _factor(l2, "L1L2(l2=...)")

    def __call__(self, x):
        terms = []
        if self.l1:
            terms.append(self.l1 * F.sum(F.abs(x)))
        if self.l2:
            terms.append(self.l2 * F.sum(F.square(x)))
        if not terms:
            return None
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v:g}' for k, v in self.get_config().items())})"


class L1(L1L2):
    """``l1 * sum(|x|)`` (default factor 0.01)."""

    def __init__(self, l1: float = 0.01):
        super().__init__(l1=_factor(l1, "L1(l1=...)"))

    def get_config(self) -> dict:
        return {"l1": self.l1}


class L2(L1L2):
    """``l2 * sum(x**2)`` (default factor 0.01; no 1/2 in front, as Keras)."""

    def __init__(self, l2: float = 0.01):
        super().__init__(l2=_factor(l2, "L2(l2=...)"))

    def get_config(self) -> dict:
        return {"l2": self.l2}


def l1(l1: float = 0.01) -> L1:  # noqa: D103 (Keras' function alias)
    return L1(l1)


def l2(l2: float = 0.01) -> L2:  # noqa: D103
    return L2(l2)


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:  # noqa: D103
    return L1L2(l1=l1, l2=l2)


_BY_NAME: dict[str, Callable[[], Regularizer]] = {"l1": L1, "l2": L2, "l1_l2": l1_l2, "l1l2": l1_l2}


_KERAS_CLASSES = {"L1": L1, "L2": L2, "L1L2": L1L2}


def serialize(reg: Any, what: str = "regularizer") -> dict | None:
    """A regularizer as Keras 3 writes it in a layer config (``{"class_name": "L2", ...}``)."""
    if reg is None:
        return None
    if type(reg) not in _KERAS_CLASSES.values():
        raise ValueError(f"{what}: {reg!r} has no Keras form (only L1, L2 and L1L2 can be saved)")
    return {"module": "keras.regularizers", "class_name": type(reg).__name__, "config": reg.get_config(),
            "registered_name": None}


def get(identifier: Any, what: str = "regularizer") -> Callable | None:
    """A regularizer from None, a name, a Regularizer, a function ``fn(weight) -> scalar``
    or a Keras config (``{"class_name": "L2", "config": {"l2": 0.01}}``)."""
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        cls = _KERAS_CLASSES.get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"{what}: the Keras regularizer {identifier.get('class_name')!r} is not supported; "
                             f"graphc has {sorted(_KERAS_CLASSES)}")
        return cls(**(identifier.get("config") or {}))
    if isinstance(identifier, str):
        make = _BY_NAME.get(identifier.lower())
        if make is None:
            raise ValueError(f"{what}: unknown regularizer {identifier!r}; choose from {sorted(_BY_NAME)}, "
                             "a graphc.nn.regularizers.Regularizer or a function fn(weight) -> scalar")
        return make()
    if callable(identifier):
        return identifier
    raise ValueError(f"{what}: expected a regularizer name, a Regularizer or a function, got {identifier!r}")
