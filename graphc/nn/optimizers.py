"""``graphc.nn.optimizers``: the graphc optimizers under Keras' module name, with
``graphc.nn.optimizers.schedules`` (Keras' learning-rate schedules, evaluated inside the
compiled step)."""
import sys as _sys

from ..optim import (SGD, Adafactor, Adagrad, Adam, Adamax, AdamW, Lion, Nadam, Optimizer, RMSprop,  # noqa: F401
                     get, schedules)

_sys.modules[__name__ + ".schedules"] = schedules  # `from graphc.nn.optimizers.schedules import ...`

__all__ = ["SGD", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "Lion", "Nadam", "Optimizer", "RMSprop", "get",
           "schedules"]
