"""Layers: each builds its part of the graph with the DSL.

A layer is built once its input shape is known (``build``), which declares its
parameters as ``gc.param`` nodes named ``<layer name>/<weight>`` (``dense_1/kernel``), and
``call(x, training)`` applies it to a tensor. Weights live in the owning model's compiled
store, so ``get_weights``/``set_weights`` go through the model.

The functional API: ``Input(shape)`` makes a symbolic :class:`KerasTensor`; calling a layer
on KerasTensors records the call (a :class:`CallNode`) and returns a new KerasTensor whose
shape is checked and known at once, so shape errors surface on the line that made them.
``Model(inputs, outputs)`` (graphc/nn/model.py) walks these records back from the outputs.
A layer called twice shares its weights: both calls use the same param nodes.
"""
from __future__ import annotations

import itertools
import numbers
import re
import zlib
from typing import Any

import numpy as np

from .. import dsl as F
from . import activations
from . import regularizers as R

_INIT_ALIASES = {"random_normal": "normal", "random_uniform": "uniform", "zero": "zeros", "one": "ones"}
_NODE_IDS = itertools.count()


def _camel_to_snake(name: str) -> str:
    """Keras' default layer names: ``Conv2D`` -> ``conv2d``, ``MaxPooling2D`` -> ``max_pooling2d``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


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
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d <= 0:
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


def _fmt(shape) -> str:
    """A per-sample shape (or a list of them) as the user sees it, with the batch dim."""
    if isinstance(shape, list) or (isinstance(shape, tuple) and shape and isinstance(shape[0], tuple)):
        return "[" + ", ".join(_fmt(s) for s in shape) + "]"
    return str((None,) + tuple(shape))


def _norm_shape(shape):
    """Per-sample shape(s) as hashable tuples: a tuple, or a tuple of tuples for merge layers."""
    if isinstance(shape, list) or (isinstance(shape, tuple) and shape and isinstance(shape[0], (tuple, list))):
        return tuple(tuple(s) for s in shape)
    return tuple(shape)


# ---- symbolic tensors (the functional API) --------------------------------------------------------

class KerasTensor:
    """A symbolic tensor of the functional API: a shape (batch dim ``None``), a dtype and the
    layer call that produced it. Call layers on it; pass it to ``Model(inputs, outputs)``."""

    def __init__(self, shape: tuple, dtype: str, node: "CallNode", name: str | None = None):
        self.shape = (None,) + tuple(shape)
        self.dtype = str(np.dtype(dtype))
        self._node = node
        self._name = name

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> str:
        """The producing layer's name (an Input's name is its feed name in ``fit(x={...})``)."""
        layer = self._node.layer
        return self._name or layer.name or layer.default_name

    @property
    def _keras_history(self) -> tuple:
        """``(layer, node_index, tensor_index)`` as Keras records it."""
        return self._node.layer, self._node.layer._inbound_nodes.index(self._node), 0

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape} dtype={self.dtype} name={self.name!r}>"

    def __array__(self, *a, **k):
        raise TypeError(f"KerasTensor {self.name!r} is symbolic (the functional API): it has no values. Build a "
                        "graphc.nn.Model(inputs, outputs) and call fit/predict on data")


class CallNode:
    """One call of a layer on symbolic tensors: ``args`` (a KerasTensor or a list of them),
    the flat ``inputs``, the call's keyword options ``kwargs`` (passed on to ``call``, e.g.
    MultiHeadAttention's ``use_causal_mask``) and the ``output`` KerasTensor. Ids order
    calls topologically."""

    def __init__(self, layer: "Layer", args, inputs: list, out_shape: tuple, out_dtype: str,
                 kwargs: dict | None = None):
        self.id = next(_NODE_IDS)
        self.layer, self.args, self.inputs = layer, args, list(inputs)
        self.kwargs = dict(kwargs or {})
        self.output = KerasTensor(out_shape, out_dtype, self)

    def __repr__(self) -> str:
        return f"<CallNode {self.layer.name or self.layer.default_name} #{self.id}>"


def _symbolic_args(inputs, who: str):
    """``(args, flat list)`` when ``inputs`` holds KerasTensors, else None."""
    if isinstance(inputs, KerasTensor):
        return inputs, [inputs]
    if isinstance(inputs, (list, tuple)) and any(isinstance(t, KerasTensor) for t in inputs):
        bad = [t for t in inputs if not isinstance(t, KerasTensor)]
        if bad:
            raise TypeError(f"{who}: inputs mix symbolic tensors (graphc.nn.Input and layer outputs) with "
                            f"{type(bad[0]).__name__}; pass only symbolic tensors")
        return list(inputs), list(inputs)
    return None


# ---- layers ------------------------------------------------------------------------------------------

class Layer:
    """Base class. Subclasses implement ``compute_output_shape`` and ``call`` and, if they
    have weights, ``build`` (declaring them with ``self.add_weight``).

    ``ndim``/``min_ndim`` (ranks counting the batch dim, as Keras' InputSpec) are checked
    when the layer is built; ``merge = True`` layers take a list of tensors.

    Non-trainable weights (``add_weight(..., trainable=False)``: BatchNormalization's moving
    statistics) are ``gc.state`` tensors. A layer that changes them in training records the
    new value with ``add_update(state, value)`` during ``call``; the model collects the
    updates of one forward pass and compiles them into the training step
    (``gc.compile(..., updates=...)``), so they are written by the same native call."""

    ndim: int | None = None
    min_ndim: int | None = None
    merge = False
    output_dtype = "float32"

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
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError(f"{type(self).__name__}(name=...): expected a non-empty string without '/', got {name!r}")
        self._given_name = name
        self.name = name
        self.input_shape_arg = _shape_arg(input_shape, f"{type(self).__name__}(input_shape=...)")
        self.built = False
        self.input_shape: tuple | None = None
        self.output_shape: tuple | None = None
        self._weights: list[tuple[str, Any]] = []  # (short name, param node) in Keras order
        self._penalties: list[tuple[Any, Any]] = []  # (regularizer, param node)
        self._state_weights: list[tuple[str, Any]] = []  # (short name, state node): non-trainable
        self._updates: list[tuple[Any, Any]] = []  # (state node, new value) recorded by this forward pass
        self._built_name: str | None = None
        self._inbound_nodes: list[CallNode] = []
        self._model = None

    # ---- building ------------------------------------------------------------------------
    @property
    def default_name(self) -> str:
        return _camel_to_snake(type(self).__name__)

    @property
    def _label(self) -> str:
        return f"{type(self).__name__} {self.name or self.default_name!r}"

    def add_weight(self, short: str, shape: tuple, initializer, regularizer=None, trainable: bool = True) -> Any:
        """A weight named ``<layer>/<short>``: a ``gc.param`` the optimizer trains, or with
        ``trainable=False`` a ``gc.state`` (float32) that only ``add_update`` changes."""
        name = f"{self.name or self.default_name}/{short}"
        if not trainable:
            if regularizer is not None:
                raise ValueError(f"{self._label}: weight {short!r} is not trainable and cannot take a regularizer")
            init = initializer if isinstance(initializer, str) else np.asarray(initializer, np.float32)
            node = F.state(name, shape, init=init, dtype="float32")
            self._state_weights.append((short, node))
            return node
        node = F.param(name, shape, init=initializer)
        self._weights.append((short, node))
        if regularizer is not None:
            self._penalties.append((regularizer, node))
        return node

    def add_update(self, state, value) -> None:
        """Record ``state := value`` for the training step being built (in ``call`` with
        ``training=True``). A later update of the same state in the same pass (a layer
        called twice) should be computed from ``current_value(state)``, as Keras' second
        ``assign`` sees the first."""
        self._updates.append((state, value))

    def current_value(self, state):
        """The newest value of ``state`` in the forward pass being built: the last value
        recorded by ``add_update``, or the state itself."""
        for s, v in reversed(self._updates):
            if s is state:
                return v
        return state

    def _reset_updates(self) -> None:
        self._updates = []

    def _collected_updates(self) -> list[tuple[Any, Any]]:
        """``(state, final value)`` per updated state, in first-update order."""
        out: list[tuple[Any, Any]] = []
        for s, v in self._updates:
            for i, (s2, _) in enumerate(out):
                if s2 is s:
                    out[i] = (s, v)
                    break
            else:
                out.append((s, v))
        return out

    def build(self, input_shape: tuple) -> None:
        """Declare the weights for inputs of ``input_shape`` (without the batch dim)."""

    def _check_rank(self, input_shape) -> None:
        if self.merge:
            return
        nd = len(input_shape) + 1
        full = _fmt(input_shape)
        if self.ndim is not None and nd != self.ndim:
            raise ValueError(f"Input 0 of layer {self.name or self.default_name!r} ({type(self).__name__}) is "
                             f"incompatible with the layer: expected ndim={self.ndim}, found ndim={nd}. "
                             f"Full shape received: {full}")
        if self.min_ndim is not None and nd < self.min_ndim:
            raise ValueError(f"Input 0 of layer {self.name or self.default_name!r} ({type(self).__name__}) is "
                             f"incompatible with the layer: expected min_ndim={self.min_ndim}, found ndim={nd}. "
                             f"Full shape received: {full}")

    def _build(self, input_shape) -> tuple:
        input_shape = _norm_shape(input_shape)
        if self.built:
            if input_shape != self.input_shape:
                raise ValueError(f"layer {self.name or self.default_name!r} was built for inputs of shape "
                                 f"{_fmt(self.input_shape)}, got {_fmt(input_shape)}")
            return self.output_shape
        self._check_rank(input_shape)
        self.input_shape = input_shape
        self._weights, self._penalties, self._state_weights = [], [], []
        self._built_name = self.name or self.default_name
        self.build(self.input_shape)
        self.output_shape = tuple(self.compute_output_shape(self.input_shape))
        self.built = True
        return self.output_shape

    def _rebuild(self) -> None:
        """Build again under the current name (the functional Model names layers after the
        calls that built them): the weights get their final ``<name>/<weight>`` names."""
        if self.built and self._built_name != self.name:
            self.built = False
            self._build(self.input_shape)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    # ---- applying ------------------------------------------------------------------------
    def __call__(self, inputs, training: bool = False):
        """On symbolic tensors (``graphc.nn.Input`` or layer outputs): record the call and
        return the output KerasTensor. On graphc tensors: build if needed and apply."""
        return self._apply(inputs, training, {})

    def _build_shapes(self, shapes, kwargs: dict):
        """The shapes the layer is built from, given the call's input shapes (all of them by
        default; MultiHeadAttention leaves out an attention mask)."""
        return shapes

    def _apply(self, inputs, training: bool, kwargs: dict):
        sym = _symbolic_args(inputs, self._label)
        if sym is None:
            if isinstance(inputs, (list, tuple)):
                shapes = [tuple(t.shape[1:]) for t in inputs]
                xs = list(inputs)
            else:
                shapes, xs = tuple(inputs.shape[1:]), inputs
            self._check_arity(shapes)
            self._build(self._build_shapes(shapes, kwargs))
            return self.call(xs, training, **kwargs)
        args, flat = sym
        shapes = [tuple(t.shape[1:]) for t in flat] if isinstance(args, list) else tuple(args.shape[1:])
        self._check_arity(shapes)
        out_shape = self._build(self._build_shapes(shapes, kwargs))
        node = CallNode(self, args, flat, out_shape, self.output_dtype, kwargs)
        self._inbound_nodes.append(node)
        return node.output

    def _check_arity(self, shapes) -> None:
        if self.merge and not isinstance(shapes, list):
            raise ValueError(f"{self._label}: a merge layer should be called on a list of inputs, "
                             f"got one tensor of shape {_fmt(shapes)}")
        if not self.merge and isinstance(shapes, list):
            if len(shapes) != 1:
                raise ValueError(f"{self._label}: expects one input tensor, got a list of {len(shapes)}")
            raise ValueError(f"{self._label}: expects one input tensor, got a list; pass the tensor itself")

    def call(self, x, training: bool = False):
        raise NotImplementedError

    def call_split(self, x, training: bool = False, **kwargs: Any):
        """``(pre, activation name)`` such that the output is ``activation(pre)``. Losses use it
        to compute cross-entropies stably from logits; the default is ``(call(x), 'linear')``."""
        return self.call(x, training, **kwargs), "linear"

    def feeds(self, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Extra per-step inputs for training (random masks); none by default."""
        return {}

    def regularization_losses(self) -> list:
        """The scalar penalties of this layer's weight regularizers (added to the loss)."""
        out = []
        for reg, node in self._penalties:
            v = reg(node)
            if v is not None:
                out.append(v)
        return out

    # ---- weights -------------------------------------------------------------------------
    @property
    def weights(self) -> list:
        """The weight nodes of this layer (names ``<layer>/<weight>``): trainable first, then
        non-trainable, as Keras orders them."""
        return self.trainable_weights + self.non_trainable_weights

    @property
    def trainable_weights(self) -> list:
        return [n for _, n in self._weights]

    @property
    def non_trainable_weights(self) -> list:
        """Weights the optimizer does not update (moving statistics: ``gc.state`` tensors)."""
        return [n for _, n in self._state_weights]

    @property
    def weight_names(self) -> list[str]:
        return [n.name for n in self.weights]

    def count_params(self) -> int:
        return int(sum(int(np.prod(n.shape)) for n in self.weights))

    def get_weights(self) -> list[np.ndarray]:
        if self._model is None:
            raise ValueError(f"layer {self.name!r}: add it to a model and build the model before reading its weights")
        vals = self._model._weights_by_name()
        return [vals[n] for n in self.weight_names]

    def set_weights(self, weights) -> None:
        if self._model is None:
            raise ValueError(f"layer {self.name!r}: add it to a model and build the model before setting its weights")
        weights = list(weights)
        names = self.weight_names
        if len(weights) != len(names):
            raise ValueError(f"layer {self.name!r}: set_weights expects {len(names)} arrays, got {len(weights)}")
        self._model._set_weights_by_name(dict(zip(names, weights)))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


class Dense(Layer):
    """``activation(x @ kernel + bias)`` over the last axis of ``x`` (Keras: inputs of rank
    >= 2; ``(batch, ..., d)`` -> ``(batch, ..., units)`` is one GEMM over the rows).
    ``kernel_regularizer``/``bias_regularizer`` add ``l1*sum|w| + l2*sum w^2`` to the loss."""

    min_ndim = 2

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

    def linear(self, x):
        return x @ self.kernel

    def call_split(self, x, training=False):
        z = self.linear(x)
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


def _layer_seed(layer: "Layer", seed: int | None) -> int:
    """A random layer's generator seed: from its ``seed`` argument, or else from the model's
    ``compile(seed=...)``, mixed with the layer's name so two layers draw differently and a
    rebuilt model (same names, same seed) draws the same numbers."""
    base = seed if seed is not None else (layer._model._seed if layer._model is not None else 0)
    return zlib.crc32(f"{base}:{layer.name or layer.default_name}".encode())


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


class Embedding(Layer):
    """``keras.layers.Embedding``: integer ids ``(batch, ...)`` -> vectors ``(batch, ..., output_dim)``
    through ``gc.take`` (ids must lie in [0, input_dim): checked before each step runs; the
    gradient is a scatter-add in which repeated ids accumulate). Keras' default initializer
    is uniform in [-0.05, 0.05]. A model whose first layer is an Embedding is fed int64 ids."""

    input_dtype = "int64"

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer="uniform", mask_zero: bool = False,
                 embeddings_regularizer=None, name: str | None = None, **kwargs: Any):
        kwargs.pop("input_length", None)  # deprecated in Keras 3; the input shape says it
        super().__init__(name=name, **kwargs)
        for what, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"Embedding: {what} must be a positive int, got {v!r}")
        if mask_zero:
            raise NotImplementedError("Embedding(mask_zero=True): masking is not supported yet")
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


# ---- merge layers --------------------------------------------------------------------------------------

class _Merge(Layer):
    """Elementwise merge of a list of tensors. Per-sample shapes broadcast as Keras' merge
    layers do: aligned from the right, a size-1 dim stretches; a lower-rank input gets size-1
    axes after the batch axis. Anything else is a ValueError naming the shapes."""

    merge = True
    min_inputs = 1
    max_inputs: int | None = None

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


# ---- inputs ---------------------------------------------------------------------------------------------

def _dtype_arg(dtype, what: str) -> str | None:
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"{what}: unknown dtype {dtype!r}") from None
    if dt.kind not in "iuf":
        raise ValueError(f"{what}: expected a float or integer dtype, got {dt}")
    return str(dt)


class InputLayer(Layer):
    """Declares the input shape (and dtype): ``Sequential([InputLayer((784,)), Dense(...)])``;
    ``graphc.nn.Input`` makes one for the functional API."""

    def __init__(self, input_shape=None, name: str | None = None, shape=None, dtype=None, batch_shape=None,
                 **kwargs: Any):
        if input_shape is None and shape is None and batch_shape is not None:
            shape = tuple(batch_shape)[1:]
        super().__init__(name=name, input_shape=input_shape if input_shape is not None else shape, **kwargs)
        self.dtype = _dtype_arg(dtype, "Input(dtype=...)")
        self.output_dtype = self.dtype or "float32"

    def call(self, x, training=False):
        return x


def Input(shape=None, dtype=None, name: str | None = None, batch_shape=None) -> KerasTensor:  # noqa: N802 (Keras)
    """``keras.Input``: a symbolic input of per-sample ``shape`` (without the batch dim) for
    the functional API, or the first entry of a Sequential. ``dtype`` defaults to float32
    (int64 when the tensor feeds an Embedding directly); ``name`` is its key in ``fit(x={...})``."""
    if batch_shape is not None:
        if shape is not None:
            raise ValueError("Input: pass shape or batch_shape, not both")
        shape = tuple(batch_shape)[1:]
    if shape is None:
        raise ValueError("Input: shape is required (the per-sample shape, without the batch dim), e.g. Input((784,))")
    layer = InputLayer(shape=_shape_arg(shape, "Input(shape=...)"), name=name, dtype=dtype)
    layer._build(layer.input_shape_arg)
    node = CallNode(layer, None, [], layer.input_shape_arg, layer.output_dtype)
    layer._inbound_nodes.append(node)
    return node.output


# ---- layers defined in their own modules, importable from here as keras.layers.* are ---------------------
from .attention import MultiHeadAttention  # noqa: E402,F401 (these modules import Layer from this one)
from .convolutional import (  # noqa: E402,F401
    AveragePooling2D, Conv2D, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D,
)
from .normalization import BatchNormalization  # noqa: E402,F401
