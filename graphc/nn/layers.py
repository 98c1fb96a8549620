"""Layers: each builds its part of the graph with the DSL.

A layer is built once its input shape is known (``build``), which declares its
parameters as ``gc.param`` nodes named ``<layer name>/<weight>`` (``dense_1/kernel``), and
``call(x, training)`` applies it to a tensor. Weights live in the owning model's compiled
store, so ``get_weights``/``set_weights`` go through the model.
"""
from __future__ import annotations

import numbers
import re
from typing import Any

import numpy as np

from .. import dsl as F
from . import activations

_INIT_ALIASES = {"random_normal": "normal", "random_uniform": "uniform", "zero": "zeros", "one": "ones"}


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _shape_arg(shape, what: str) -> tuple | None:
    if shape is None:
        return None
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"{what}: expected a tuple of ints, got {shape!r}") from None
    for d in shape:
        if not isinstance(d, numbers.Integral) or d <= 0:
            raise ValueError(f"{what}: dimensions must be positive ints (without the batch dim), got {shape!r}")
    return tuple(int(d) for d in shape)


def _initializer(init, what: str):
    if isinstance(init, str):
        name = _INIT_ALIASES.get(init.lower(), init.lower())
        if name not in F.INITIALIZERS:
            raise ValueError(f"{what}: unknown initializer {init!r}; choose from "
                             f"{sorted(set(F.INITIALIZERS) | set(_INIT_ALIASES))} or pass an array")
        return name
    return np.asarray(init)


class Layer:
    """Base class. Subclasses implement ``compute_output_shape`` and ``call`` and, if they
    have weights, ``build`` (declaring them with ``self.add_weight``)."""

    def __init__(self, name: str | None = None, input_shape=None, trainable: bool = True, **kwargs: Any):
        if "input_dim" in kwargs:
            input_dim = kwargs.pop("input_dim")
            if input_shape is None and input_dim is not None:
                input_shape = (input_dim,)
        if "batch_input_shape" in kwargs:
            bis = kwargs.pop("batch_input_shape")
            if input_shape is None and bis is not None:
                input_shape = tuple(bis)[1:]
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kwargs)}")
        if not trainable:
            raise NotImplementedError(f"{type(self).__name__}: trainable=False (frozen layers) is not supported yet")
        self._given_name = name
        self.name = name
        self.input_shape_arg = _shape_arg(input_shape, f"{type(self).__name__}(input_shape=...)")
        self.built = False
        self.input_shape: tuple | None = None
        self.output_shape: tuple | None = None
        self._weights: list[tuple[str, Any]] = []  # (short name, param node) in Keras order
        self._model = None

    # ---- building ------------------------------------------------------------------------
    @property
    def default_name(self) -> str:
        return _camel_to_snake(type(self).__name__)

    def add_weight(self, short: str, shape: tuple, initializer) -> Any:
        node = F.param(f"{self.name}/{short}", shape, init=initializer)
        self._weights.append((short, node))
        return node

    def build(self, input_shape: tuple) -> None:
        """Declare the weights for inputs of ``input_shape`` (without the batch dim)."""

    def _build(self, input_shape: tuple) -> tuple:
        if self.built:
            if tuple(input_shape) != self.input_shape:
                raise ValueError(f"layer {self.name!r} was built for inputs of shape {(None,) + self.input_shape}, "
                                 f"got {(None,) + tuple(input_shape)}")
            return self.output_shape
        self.input_shape = tuple(input_shape)
        self._weights = []
        self.build(self.input_shape)
        self.output_shape = tuple(self.compute_output_shape(self.input_shape))
        self.built = True
        return self.output_shape

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    # ---- applying ------------------------------------------------------------------------
    def call(self, x, training: bool = False):
        raise NotImplementedError

    def call_split(self, x, training: bool = False):
        """``(pre, activation name)`` such that the output is ``activation(pre)``. Losses use it
        to compute cross-entropies stably from logits; the default is ``(call(x), 'linear')``."""
        return self.call(x, training), "linear"

    def feeds(self, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Extra per-step inputs for training (random masks); none by default."""
        return {}

    # ---- weights -------------------------------------------------------------------------
    @property
    def weights(self) -> list:
        """The parameter nodes of this layer (names ``<layer>/<weight>``)."""
        return [n for _, n in self._weights]

    @property
    def weight_names(self) -> list[str]:
        return [n.name for _, n in self._weights]

    def count_params(self) -> int:
        return int(sum(int(np.prod(n.shape)) for _, n in self._weights))

    def get_weights(self) -> list[np.ndarray]:
        if self._model is None:
            raise ValueError(f"layer {self.name!r}: add it to a model and build the model before reading its weights")
        vals = self._model._weights_by_name()
        return [vals[n] for n in self.weight_names]

    def set_weights(self, weights) -> None:
        if self._model is None:
            raise ValueError(f"layer {self.name!r}: add it to a model and build the model before setting its weights")
        weights = list(weights)
        if len(weights) != len(self._weights):
            raise ValueError(f"layer {self.name!r}: set_weights expects {len(self._weights)} arrays, got {len(weights)}")
        self._model._set_weights_by_name(dict(zip(self.weight_names, weights)))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


class Dense(Layer):
    """``activation(x @ kernel + bias)`` for 2-D inputs ``(batch, features)``."""

    def __init__(self, units: int, activation=None, use_bias: bool = True, input_shape=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", name: str | None = None,
                 **kwargs: Any):
        super().__init__(name=name, input_shape=input_shape, **kwargs)
        if not isinstance(units, numbers.Integral) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"Dense: units must be a positive int, got {units!r}")
        self.units = int(units)
        self.activation_name, self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializer(kernel_initializer, "Dense(kernel_initializer=...)")
        self.bias_initializer = _initializer(bias_initializer, "Dense(bias_initializer=...)")
        self.kernel = self.bias = None

    def build(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"Dense {self.name!r}: expects 2-D inputs (batch, features), got shape "
                             f"{(None,) + tuple(input_shape)}; put a Flatten() layer before it")
        self.kernel = self.add_weight("kernel", (input_shape[0], self.units), self.kernel_initializer)
        self.bias = self.add_weight("bias", (self.units,), self.bias_initializer) if self.use_bias else None

    def compute_output_shape(self, input_shape):
        return (self.units,)

    def call_split(self, x, training=False):
        z = x @ self.kernel
        if self.bias is not None:
            z = z + self.bias
        return z, self.activation_name

    def call(self, x, training=False):
        z, _ = self.call_split(x, training)
        return self.activation(z)


class Activation(Layer):
    """Applies an activation (by name or callable)."""

    def __init__(self, activation, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.activation_name, self.activation = activations.get(activation)

    def call_split(self, x, training=False):
        return x, self.activation_name

    def call(self, x, training=False):
        return self.activation(x)


class Flatten(Layer):
    """Flattens each sample to one dimension: ``(batch, a, b, ...) -> (batch, a*b*...)``."""

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape, dtype=np.int64)),)

    def call(self, x, training=False):
        return F.reshape(x, (None, int(np.prod(x.shape[1:], dtype=np.int64))))


class Dropout(Layer):
    """Inverted dropout: in training, each unit is zeroed with probability ``rate`` and the
    rest scaled by ``1/(1-rate)``; the identity at evaluation and prediction.

    The mask is an input of the compiled step (``<name>/mask``), drawn each batch from the
    model's seeded NumPy generator, so runs are reproducible and resumable.
    """

    def __init__(self, rate: float, name: str | None = None, seed: int | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if not isinstance(rate, numbers.Real) or not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout: rate must be a float in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self._mask = None

    def build(self, input_shape):
        self._mask = F.input(f"{self.name}/mask", (None,) + tuple(input_shape)) if self.rate > 0 else None

    def call(self, x, training=False):
        if not training or self._mask is None:
            return x
        return x * self._mask

    def feeds(self, batch, rng):
        if self._mask is None:
            return {}
        keep = rng.random((batch,) + self.input_shape) >= self.rate
        return {self._mask.name: keep.astype(np.float32) / np.float32(1.0 - self.rate)}


class Embedding(Layer):
    """``keras.layers.Embedding``: integer ids ``(batch, ...)`` -> vectors ``(batch, ..., output_dim)``
    through ``gc.take`` (ids must lie in [0, input_dim): checked before each step runs; the
    gradient is a scatter-add in which repeated ids accumulate). Keras' default initializer
    is uniform in [-0.05, 0.05]. A model whose first layer is an Embedding is fed int64 ids."""

    input_dtype = "int64"

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer="uniform", mask_zero: bool = False,
                 name: str | None = None, **kwargs: Any):
        kwargs.pop("input_length", None)  # deprecated in Keras 3; the input shape says it
        super().__init__(name=name, **kwargs)
        for what, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"Embedding: {what} must be a positive int, got {v!r}")
        if mask_zero:
            raise NotImplementedError("Embedding(mask_zero=True): masking is not supported yet")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = _initializer(embeddings_initializer, "Embedding(embeddings_initializer=...)")
        self.embeddings = None

    def build(self, input_shape):
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def call(self, x, training=False):
        return F.take(self.embeddings, x, axis=0)


class LayerNormalization(Layer):
    """``keras.layers.LayerNormalization``: normalize each sample over ``axis`` (mean and
    population variance), then scale by ``gamma`` and shift by ``beta``. Keras' defaults:
    ``epsilon=1e-3``, ``gamma`` ones, ``beta`` zeros, weights in the order [gamma, beta]."""

    def __init__(self, axis=-1, epsilon: float = 1e-3, center: bool = True, scale: bool = True,
                 beta_initializer="zeros", gamma_initializer="ones", name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
        if not axes or not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in axes):
            raise ValueError(f"LayerNormalization: axis must be an int or a tuple of ints, got {axis!r}")
        if not isinstance(epsilon, numbers.Real) or isinstance(epsilon, bool) or not float(epsilon) >= 0.0:
            raise ValueError(f"LayerNormalization: epsilon must be a non-negative float, got {epsilon!r}")
        self.axis, self.epsilon = tuple(int(a) for a in axes), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = _initializer(beta_initializer, "LayerNormalization(beta_initializer=...)")
        self.gamma_initializer = _initializer(gamma_initializer, "LayerNormalization(gamma_initializer=...)")
        self.gamma = self.beta = None

    def build(self, input_shape):
        rank = len(input_shape) + 1  # with the batch dim
        axes = []
        for a in self.axis:
            if not -rank <= a < rank or a % rank == 0:
                raise ValueError(f"LayerNormalization {self.name!r}: axis {a} is out of range for inputs of shape "
                                 f"{(None,) + tuple(input_shape)} (the batch axis 0 cannot be normalized over)")
            axes.append(a % rank)
        self._axes = tuple(sorted(axes))
        shape = tuple(input_shape[a - 1] for a in self._axes)  # gamma/beta span the normalized axes
        self.gamma = self.add_weight("gamma", shape, self.gamma_initializer) if self.scale else None
        self.beta = self.add_weight("beta", shape, self.beta_initializer) if self.center else None

    def _param(self, p):
        if p is None:
            return None
        full = [1] * (len(self.input_shape) + 1)
        for a, d in zip(self._axes, p.shape):
            full[a] = d
        return F.reshape(p, tuple(full[1:])) if tuple(full[1:]) != p.shape else p

    def call(self, x, training=False):
        return F.layer_normalization(x, self._param(self.gamma), self._param(self.beta), self._axes, self.epsilon)


class InputLayer(Layer):
    """Declares the input shape only (``Sequential([InputLayer((784,)), Dense(...)])``)."""

    def __init__(self, input_shape=None, name: str | None = None, shape=None, **kwargs: Any):
        super().__init__(name=name, input_shape=input_shape if input_shape is not None else shape, **kwargs)

    def call(self, x, training=False):
        return x


def Input(shape, name: str | None = None) -> InputLayer:  # noqa: N802 (Keras' name)
    """``keras.Input(shape=...)`` as the first entry of a Sequential."""
    return InputLayer(input_shape=shape, name=name)
