"""Optimizers as DSL update rules: built-ins and the base class for custom ones."""
from . import schedules  # noqa: F401
from .base import Optimizer, StateSpec  # noqa: F401
from .builtin import SGD, Adafactor, Adagrad, Adam, Adamax, AdamW, Lion, Nadam, RMSprop  # noqa: F401
from .schedules import LearningRateSchedule  # noqa: F401

_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad, "lion": Lion,
            "nadam": Nadam, "adamax": Adamax, "adafactor": Adafactor}


def get(identifier) -> Optimizer:
    """An optimizer from a name ('adam', ...) or an Optimizer instance (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"unknown optimizer {identifier!r}; use one of {sorted(_BY_NAME)} or a graphc.optim.Optimizer")
