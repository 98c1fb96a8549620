"""``graphc.nn.optimizers``: the graphc optimizers under Keras' module name."""
from ..optim import SGD, Adagrad, Adam, AdamW, Lion, Optimizer, RMSprop, get  # noqa: F401

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Lion", "Optimizer", "RMSprop", "get"]
