"""Activations by name (Keras' names), each a function of one DSL tensor.

``get(name_or_callable)`` returns ``(name, fn)``; the name matters to the losses, which
compute categorical/binary cross-entropy from the pre-activation logits when the output
layer ends in ``softmax``/``sigmoid`` (what Keras effectively does).
"""
from __future__ import annotations

from typing import Callable

from .. import dsl as F

def linear(x):
    return x


def relu(x):
    return F.relu(x)


def sigmoid(x):
    return F.sigmoid(x)


def tanh(x):
    return F.tanh(x)


def softmax(x):
    return F.softmax(x, -1)


def gelu(x, approximate: bool = False):
    """GELU as Keras 3's ``keras.activations.gelu``: the exact erf form by default (the name
    ``"gelu"`` means this), the tanh approximation with ``approximate=True``."""
    return F.gelu(x, approximate=approximate)


def elu(x):
    return F.elu(x, 1.0)


def selu(x):
    return F.selu(x)


def leaky_relu(x):
    """Leaky ReLU with Keras' default negative slope 0.2."""
    return F.leaky_relu(x, 0.2)


def softplus(x):
    return F.softplus(x)


def swish(x):
    return F.silu(x)


def relu6(x):
    return F.relu6(x)


def hard_sigmoid(x):
    """``relu6(x + 3) / 6`` (Keras 3's; Keras 2's was ``0.2 * x + 0.5`` clipped)."""
    return F.hard_sigmoid(x)


def hard_silu(x):
    return F.hard_swish(x)


def mish(x):
    return F.mish(x)


def log_sigmoid(x):
    return F.log_sigmoid(x)


ACTIVATIONS: dict[str, Callable] = {
    "linear": linear, "relu": relu, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax,
    "gelu": gelu, "elu": elu, "selu": selu, "leaky_relu": leaky_relu, "softplus": softplus,
    "swish": swish, "silu": swish, "relu6": relu6, "hard_sigmoid": hard_sigmoid, "hard_silu": hard_silu,
    "hard_swish": hard_silu, "mish": mish, "log_sigmoid": log_sigmoid,
}


def get(identifier) -> tuple[str, Callable]:
    """(name, function) for an activation given by name, None (linear) or a callable."""
    if identifier is None:
        return "linear", linear
    if isinstance(identifier, str):
        fn = ACTIVATIONS.get(identifier.lower())
        if fn is None:
            raise ValueError(f"activation: unknown activation {identifier!r}; choose from {sorted(ACTIVATIONS)} "
                             "or pass a function of a graphc tensor")
        return identifier.lower(), fn
    if callable(identifier):
        for k, v in ACTIVATIONS.items():
            if v is identifier:
                return k, v
        return getattr(identifier, "__name__", "custom"), identifier
    raise ValueError(f"activation: expected a name or a callable, got {identifier!r}")
