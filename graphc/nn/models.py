"""``graphc.nn.models``, as ``keras.models``: the model classes and ``load_model``."""
from .model import Model, Sequential  # noqa: F401
from .saving import load_model  # noqa: F401

__all__ = ["Model", "Sequential", "load_model"]
