"""The core layers (Dense, Activation, Dropout, Flatten, Reshape, Embedding,
PositionEmbedding, LayerNormalization, the merge layers) and, as ``keras.layers`` does, every
graphc.nn layer by name: ``graphc.nn.layers.Conv2D`` is ``graphc.nn.convolutional.Conv2D``.
``Layer``, ``KerasTensor`` and ``Input`` live in graphc/nn/base.py, which new layer modules
import from.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .. import dsl as F
from . import activations
from . import regularizers as R
from .attention import MultiHeadAttention  # noqa: F401
from .base import (  # noqa: F401 (Layer, Input, ...: keras.layers exports them too)
    CallNode, Input, InputLayer, KerasTensor, Layer, _Affine, _fmt, _initializer, _layer_seed, _serialize_initializer,
)
from .activation_layers import ELU, LeakyReLU, PReLU, ReLU, Softmax  # noqa: F401
from .convolutional import (  # noqa: F401
    AveragePooling2D, Conv2D, Conv2DTranspose, DepthwiseConv2D, GlobalAveragePooling2D, GlobalMaxPooling2D,
    MaxPooling2D, SeparableConv2D,
)
from .conv1d import (  # noqa: F401
    AveragePooling1D, Conv1D, GlobalAveragePooling1D, GlobalMaxPooling1D, MaxPooling1D,
)
from .normalization import BatchNormalization  # noqa: F401
from .preprocessing import Normalization, Rescaling  # noqa: F401
from .reshaping import Cropping2D, UpSampling2D, ZeroPadding2D  # noqa: F401
from .lambda_layer import Lambda  # noqa: F401
from .recurrent import GRU, LSTM, Bidirectional, SimpleRNN  # noqa: F401


class Dense(_Affine, Layer):
    """``activation(x @ kernel + bias)`` over the last axis of ``x`` (Keras: inputs of rank
    >= 2; ``(batch, ..., d)`` -> ``(batch, ..., units)`` is one GEMM over the rows).
    ``kernel_regularizer``/``bias_regularizer`` add ``l1*sum|w| + l2*sum w^2`` to the loss."""

    min_ndim = 2
    supports_masking = True  # a mask passes through, as in Keras

    def __init__(self, units: int, activation=None, use_bias: bool = True, input_shape=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, name: str | None = None, **kwargs: Any):
        if kwargs.get("activity_regularizer") is None:
            kwargs.pop("activity_regularizer", None)
        super().__init__(name=name, input_shape=input_shape, **kwargs)
        if not isinstance(units, numbers.Integral) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"Dense: units must be a positive int, got {units!r}")
        self.units = int(units)
        self.activation_name, self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializer(kernel_initializer, "Dense(kernel_initializer=...)")
        self.bias_initializer = _initializer(bias_initializer, "Dense(bias_initializer=...)")
        self.kernel_regularizer = R.get(kernel_regularizer, "Dense(kernel_regularizer=...)")
        self.bias_regularizer = R.get(bias_regularizer, "Dense(bias_regularizer=...)")
        self.kernel = self.bias = None

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", (input_shape[-1], self.units), self.kernel_initializer,
                                      self.kernel_regularizer)
        self.bias = (self.add_weight("bias", (self.units,), self.bias_initializer, self.bias_regularizer)
                     if self.use_bias else None)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation_name,
                "use_bias": self.use_bias, "kernel_initializer": _serialize_initializer(self.kernel_initializer),
                "bias_initializer": _serialize_initializer(self.bias_initializer),
                "kernel_regularizer": R.serialize(self.kernel_regularizer, "Dense(kernel_regularizer=...)"),
                "bias_regularizer": R.serialize(self.bias_regularizer, "Dense(bias_regularizer=...)"),
                "kernel_constraint": None, "bias_constraint": None, "quantization_config": None}

    def linear(self, x):
        return x @ self.kernel


class Activation(Layer):
    """Applies an activation (by name or callable)."""

    supports_masking = True

    def __init__(self, activation, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.activation_name, self.activation = activations.get(activation)

    def call_split(self, x, training=False):
        return x, self.activation_name

    def call(self, x, training=False):
        return self.activation(x)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation_name}


class Flatten(Layer):
    """Flattens each sample to one dimension: ``(batch, a, b, ...) -> (batch, a*b*...)``."""

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape, dtype=np.int64)),)

    def call(self, x, training=False):
        return F.reshape(x, (None, int(np.prod(x.shape[1:], dtype=np.int64))))

    def get_config(self):
        return {**super().get_config(), "data_format": "channels_last"}


class Reshape(Layer):
    """``keras.layers.Reshape(target_shape)``: each sample to ``target_shape`` (without the
    batch dim; one entry may be -1, inferred). The total size must not change."""

    def __init__(self, target_shape, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        try:
            ts = tuple(target_shape) if not isinstance(target_shape, numbers.Integral) else (target_shape,)
        except TypeError:
            raise ValueError(f"Reshape: target_shape must be a tuple of ints, got {target_shape!r}") from None
        if (not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and (d > 0 or d == -1) for d in ts)
                or sum(d == -1 for d in ts) > 1):
            raise ValueError(f"Reshape: target_shape must be positive ints with at most one -1, got {target_shape!r}")
        self.target_shape = tuple(int(d) for d in ts)

    def compute_output_shape(self, input_shape):
        total = int(np.prod(input_shape, dtype=np.int64))
        known = int(np.prod([d for d in self.target_shape if d != -1], dtype=np.int64))
        if -1 in self.target_shape:
            ok = known > 0 and total % known == 0
            out = tuple(total // known if d == -1 else d for d in self.target_shape) if ok else None
        else:
            ok, out = known == total, self.target_shape
        if not ok:
            raise ValueError(f"Reshape {self.name or self.default_name!r}: the total size of the tensor must be "
                             f"unchanged; got inputs of shape {_fmt(input_shape)} ({total} values per sample) and "
                             f"target_shape={self.target_shape}")
        return out

    def call(self, x, training=False):
        return F.reshape(x, (None,) + self.output_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


class Dropout(Layer):
    """Inverted dropout as ``keras.layers.Dropout``: in training, each unit is zeroed with
    probability ``rate`` and the rest scaled by ``1/(1-rate)``; the identity at evaluation
    and prediction.

    The mask is drawn inside the compiled step by ``gc.dropout`` (a counter-based generator
    keyed by the optimizer's step counter: a new mask every step, nothing fed), seeded from
    ``seed`` or the model's ``compile(seed=...)`` and the layer's name, so runs repeat
    exactly and resume exactly from a checkpoint saved with ``include_optimizer=True``. A
    Dropout layer called twice on tensors of one shape draws the same mask for both calls.
    """

    supports_masking = True

    def __init__(self, rate: float, noise_shape=None, seed: int | None = None, name: str | None = None,
                 **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout: rate must be a float in [0, 1), got {rate!r}")
        if noise_shape is not None:
            raise NotImplementedError("Dropout(noise_shape=...): masks shared along axes are not supported yet")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"Dropout: seed must be an int or None, got {seed!r}")
        self.rate = float(rate)
        self.seed = seed

    def call(self, x, training=False):
        if not training or self.rate == 0.0:
            return x
        return F.dropout(x, self.rate, seed=_layer_seed(self, self.seed))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed, "noise_shape": None}


class Embedding(Layer):
    """``keras.layers.Embedding``: integer ids ``(batch, ...)`` -> vectors ``(batch, ..., output_dim)``
    through ``gc.take`` (ids must lie in [0, input_dim): checked before each step runs; the
    gradient is a scatter-add in which repeated ids accumulate). Keras' default initializer
    is uniform in [-0.05, 0.05]. A model whose first layer is an Embedding is fed int64 ids.
    ``mask_zero=True``: id 0 is padding; the output carries the mask ``ids != 0`` to the layers
    after it (recurrent layers skip masked steps, GlobalAveragePooling1D averages the others),
    so ``input_dim`` should count id 0."""

    input_dtype = "int64"

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer="uniform", mask_zero: bool = False,
                 embeddings_regularizer=None, name: str | None = None, **kwargs: Any):
        kwargs.pop("input_length", None)  # deprecated in Keras 3; the input shape says it
        super().__init__(name=name, **kwargs)
        for what, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"Embedding: {what} must be a positive int, got {v!r}")
        self.mask_zero = self.supports_masking = bool(mask_zero)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = _initializer(embeddings_initializer, "Embedding(embeddings_initializer=...)")
        self.embeddings_regularizer = R.get(embeddings_regularizer, "Embedding(embeddings_regularizer=...)")
        self.embeddings = None

    def build(self, input_shape):
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer,
                                          self.embeddings_regularizer)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def call(self, x, training=False):
        return F.take(self.embeddings, x, axis=0)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": _serialize_initializer(self.embeddings_initializer),
                "embeddings_regularizer": R.serialize(self.embeddings_regularizer,
                                                      "Embedding(embeddings_regularizer=...)"),
                "activity_regularizer": None, "embeddings_constraint": None,
                "mask_zero": bool(getattr(self, "mask_zero", False)), "quantization_config": None}

    def compute_mask(self, x, mask):
        return F.not_equal(x, 0) if self.mask_zero else None


class Masking(Layer):
    """``keras.layers.Masking(mask_value=0.0)``: a step whose features all equal ``mask_value``
    is masked for the layers after it (recurrent layers, GlobalAveragePooling1D) and set to 0."""

    supports_masking = True

    def __init__(self, mask_value: float = 0.0, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if isinstance(mask_value, bool) or not isinstance(mask_value, numbers.Real):
            raise ValueError(f"Masking: mask_value must be a number, got {mask_value!r}")
        self.mask_value = float(mask_value)

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}

    def compute_mask(self, x, mask):
        keep = F.max(F.cast(F.not_equal(x, self.mask_value), "float32"), axis=-1)
        return F.greater(keep, 0.0)

    def call(self, x, training=False):
        keep = F.reshape(self.compute_mask(x, None), tuple(x.shape[:-1]) + (1,))
        return F.where(keep, x, 0.0)


class PositionEmbedding(Layer):
    """Learned position embeddings as ``keras_hub.layers.PositionEmbedding(sequence_length)``:
    for inputs ``(batch, length, dim)`` (length <= ``sequence_length``) it returns the first
    ``length`` rows of its ``(sequence_length, dim)`` weight, broadcast over the batch; add
    them to token embeddings with ``Add()([x, PositionEmbedding(n)(x)])``."""

    min_ndim = 3

    def __init__(self, sequence_length: int, initializer="glorot_uniform", name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if isinstance(sequence_length, bool) or not isinstance(sequence_length, numbers.Integral) or \
                sequence_length <= 0:
            raise ValueError(f"PositionEmbedding: sequence_length must be a positive int, got {sequence_length!r}")
        self.sequence_length = int(sequence_length)
        self.initializer = _initializer(initializer, "PositionEmbedding(initializer=...)")
        self.embeddings = None

    def build(self, input_shape):
        if input_shape[-2] > self.sequence_length:
            raise ValueError(f"{self._label}: inputs of length {input_shape[-2]} are longer than "
                             f"sequence_length={self.sequence_length}")
        self.embeddings = self.add_weight("embeddings", (self.sequence_length, input_shape[-1]), self.initializer)

    def call(self, x, training=False):
        n = x.shape[-2]
        pos = self.embeddings if n == self.sequence_length else self.embeddings[:n]
        return F.broadcast_like(pos, x)

    # keras_hub's class, as keras_hub registers it
    keras_module = "keras_hub.src.layers.modeling.position_embedding"
    keras_registered_name = "keras_hub>PositionEmbedding"

    def get_config(self):
        return {**super().get_config(), "sequence_length": self.sequence_length,
                "initializer": _serialize_initializer(self.initializer)}


class LayerNormalization(Layer):
    """``keras.layers.LayerNormalization``: normalize each sample over ``axis`` (mean and
    population variance), then scale by ``gamma`` and shift by ``beta``. Keras' defaults:
    ``epsilon=1e-3``, ``gamma`` ones, ``beta`` zeros, weights in the order [gamma, beta]."""

    supports_masking = True

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

    def get_config(self):
        return {**super().get_config(), "axis": list(self.axis), "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, "rms_scaling": False,
                "beta_initializer": _serialize_initializer(self.beta_initializer),
                "gamma_initializer": _serialize_initializer(self.gamma_initializer), "beta_regularizer": None,
                "gamma_regularizer": None, "beta_constraint": None, "gamma_constraint": None}


# ---- merge layers --------------------------------------------------------------------------------------

class _Merge(Layer):
    """Elementwise merge of a list of tensors. Per-sample shapes broadcast as Keras' merge
    layers do: aligned from the right, a size-1 dim stretches; a lower-rank input gets size-1
    axes after the batch axis. Anything else is a ValueError naming the shapes."""

    merge = True
    min_inputs = 1
    max_inputs: int | None = None
    supports_masking = True

    def compute_mask(self, xs, mask):
        """Keras' merge layers: the OR of the inputs' masks; None unless every input has one."""
        if mask is None or any(m is None for m in mask):
            return None
        out = mask[0]
        for m in mask[1:]:
            out = F.greater(F.maximum(F.cast(out, "float32"), F.cast(m, "float32")), 0.0)
        return out

    def _count(self, input_shape):
        n = len(input_shape)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = (f"exactly {self.min_inputs}" if self.max_inputs == self.min_inputs
                    else f"at least {self.min_inputs}")
            raise ValueError(f"{self._label}: inputs must be a list of {want} tensors, got {n}")

    def compute_output_shape(self, input_shape):
        self._count(input_shape)
        rank = max(len(s) for s in input_shape)
        out = [1] * rank
        for s in input_shape:
            for i, d in enumerate((1,) * (rank - len(s)) + tuple(s)):
                if d != 1 and out[i] not in (1, d):
                    raise ValueError(f"{self._label}: inputs have incompatible shapes {_fmt(list(input_shape))}; "
                                     "they must be equal (or broadcast: a size-1 dim stretches)")
                out[i] = d if d != 1 else out[i]
        return tuple(out)

    def _aligned(self, xs):
        rank = max(x.ndim for x in xs)
        return [x if x.ndim == rank else F.reshape(x, (None,) + (1,) * (rank - x.ndim) + tuple(x.shape[1:]))
                for x in xs]

    def call(self, xs, training=False):
        xs = self._aligned(list(xs))
        out = xs[0]
        for x in xs[1:]:
            out = self._combine(out, x)
        return self._finish(out, len(xs))

    def _combine(self, a, b):
        raise NotImplementedError

    def _finish(self, out, n):
        return out


class Add(_Merge):
    """``keras.layers.Add``: the sum of the inputs (residual connections: ``Add()([x, f(x)])``)."""

    def _combine(self, a, b):
        return a + b


class Subtract(_Merge):
    """``keras.layers.Subtract``: ``inputs[0] - inputs[1]`` (exactly two inputs)."""

    min_inputs = max_inputs = 2

    def _combine(self, a, b):
        return a - b


class Multiply(_Merge):
    """``keras.layers.Multiply``: the elementwise product of the inputs."""

    def _combine(self, a, b):
        return a * b


class Average(_Merge):
    """``keras.layers.Average``: the elementwise mean of the inputs."""

    def _combine(self, a, b):
        return a + b

    def _finish(self, out, n):
        return out * (1.0 / n) if n > 1 else out


class Maximum(_Merge):
    """``keras.layers.Maximum``: the elementwise maximum of the inputs."""

    def _combine(self, a, b):
        return F.maximum(a, b)


class Minimum(_Merge):
    """``keras.layers.Minimum``: the elementwise minimum of the inputs."""

    def _combine(self, a, b):
        return F.minimum(a, b)


class Concatenate(Layer):
    """``keras.layers.Concatenate(axis=-1)``: joins a list of tensors along ``axis``; their
    shapes must match on every other axis. The batch axis (0) cannot be joined."""

    merge = True
    supports_masking = True

    def compute_mask(self, xs, mask):
        """Keras' rule: the masks, broadcast to the inputs (an unmasked input all True), joined
        along ``axis``; a position is kept if any of its features is."""
        if mask is None or all(m is None for m in mask):
            return None
        parts = []
        for x, m in zip(xs, mask):
            if m is None:
                parts.append(F.ones_like(x))
                continue
            m = F.cast(m, x.dtype)
            while m.ndim < x.ndim:
                m = F.expand_dims(m, -1)
            parts.append(F.broadcast_like(m, x))
        return F.greater(F.max(F.concatenate(parts, axis=self.axis), axis=-1), 0.0)

    def __init__(self, axis: int = -1, name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ValueError(f"Concatenate: axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if not shapes:
            raise ValueError(f"{self._label}: inputs must be a list of at least 1 tensor, got 0")
        rank = len(shapes[0]) + 1
        if any(len(s) + 1 != rank for s in shapes):
            raise ValueError(f"{self._label}: inputs must all have the same rank, got shapes {_fmt(shapes)}")
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(f"{self._label}: axis={self.axis} is out of range for inputs of rank {rank} "
                             "(the batch axis 0 cannot be concatenated)")
        ax = self.axis % rank - 1
        rest = {s[:ax] + s[ax + 1:] for s in shapes}
        if len(rest) > 1:
            raise ValueError(f"{self._label}: a Concatenate layer requires inputs with matching shapes except for the "
                             f"concatenation axis {self.axis}; got inputs of shapes {_fmt(shapes)}")
        s0 = shapes[0]
        return s0[:ax] + (sum(s[ax] for s in shapes),) + s0[ax + 1:]

    def call(self, xs, training=False):
        xs = list(xs)
        return xs[0] if len(xs) == 1 else F.concatenate(xs, axis=self.axis % xs[0].ndim)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


def add(inputs, **kwargs):
    """``keras.layers.add``: ``Add(**kwargs)(inputs)``."""
    return Add(**kwargs)(inputs)


def subtract(inputs, **kwargs):
    """``keras.layers.subtract``: ``Subtract(**kwargs)(inputs)``."""
    return Subtract(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    """``keras.layers.multiply``: ``Multiply(**kwargs)(inputs)``."""
    return Multiply(**kwargs)(inputs)


def average(inputs, **kwargs):
    """``keras.layers.average``: ``Average(**kwargs)(inputs)``."""
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    """``keras.layers.maximum``: ``Maximum(**kwargs)(inputs)``."""
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    """``keras.layers.minimum``: ``Minimum(**kwargs)(inputs)``."""
    return Minimum(**kwargs)(inputs)


def concatenate(inputs, axis: int = -1, **kwargs):
    """``keras.layers.concatenate``: ``Concatenate(axis, **kwargs)(inputs)``."""
    return Concatenate(axis=axis, **kwargs)(inputs)
