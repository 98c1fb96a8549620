"""The base of graphc.nn: ``Layer``, the functional API's symbolic tensors (``KerasTensor``,
``CallNode``, ``Input``/``InputLayer``) and the private helpers every layer module shares
(argument checks, initializer names, shape formatting, per-layer seeds). A module that defines
layers imports from here and from nowhere else in graphc.nn (except activations and
regularizers), so the layer modules never import each other.

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


# Keras 3's initializer classes for graphc's initializer names, with Keras' default arguments
# (graphc's "uniform"/"normal" are Keras' RandomUniform/RandomNormal defaults: +-0.05, 0.05)
_KERAS_INITIALIZERS = {
    "zeros": ("Zeros", {}), "ones": ("Ones", {}),
    "uniform": ("RandomUniform", {"seed": None, "minval": -0.05, "maxval": 0.05}),
    "normal": ("RandomNormal", {"seed": None, "mean": 0.0, "stddev": 0.05}),
    "glorot_uniform": ("GlorotUniform", {"seed": None}), "glorot_normal": ("GlorotNormal", {"seed": None}),
    "he_uniform": ("HeUniform", {"seed": None}), "he_normal": ("HeNormal", {"seed": None}),
    "orthogonal": ("Orthogonal", {"seed": None, "gain": 1.0}),
}
_DTYPE_POLICY = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


def _keras_object(module: str, class_name: str, config: dict) -> dict:
    """An object as Keras 3's ``serialize_keras_object`` writes it in a config."""
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def _serialize_initializer(init) -> dict:
    """A layer's initializer (a graphc name) as Keras writes it in ``get_config``. An array
    initializer has no Keras form: it is written as Zeros (a loaded model's weights come from
    the saved file, so only a model rebuilt from the config alone would differ)."""
    if isinstance(init, str) and init in _KERAS_INITIALIZERS:
        cls, cfg = _KERAS_INITIALIZERS[init]
        return _keras_object("keras.initializers", cls, dict(cfg))
    return _keras_object("keras.initializers", "Zeros", {})


def _initializer_from_keras(init: dict, what: str, lenient: bool = False) -> str:
    """A serialized Keras initializer (``{"class_name": ..., "config": ...}``) as a graphc
    name. Arguments other than Keras' defaults are refused (graphc's initializers take none),
    unless ``lenient`` (loading a saved model, whose weights replace the initial values)."""
    cls = init.get("class_name")
    by_class = {c: n for n, (c, _) in _KERAS_INITIALIZERS.items()}
    name = by_class.get(cls) or _INIT_ALIASES.get(_camel_to_snake(str(cls)), _camel_to_snake(str(cls)))
    if name not in _KERAS_INITIALIZERS:
        raise ValueError(f"{what}: the Keras initializer {cls!r} is not supported; graphc has "
                         f"{sorted(by_class)}")
    defaults = _KERAS_INITIALIZERS[name][1]
    given = {k: v for k, v in (init.get("config") or {}).items() if k != "seed" and v is not None}
    bad = {k: v for k, v in given.items() if k in defaults and v != defaults[k]}
    if bad and not lenient:
        raise NotImplementedError(f"{what}: {cls}({', '.join(f'{k}={v!r}' for k, v in bad.items())}) is not "
                                  f"supported: graphc's {name!r} uses Keras' defaults {defaults}")
    return name


def _initializer(init, what: str):
    if isinstance(init, dict):
        return _initializer_from_keras(init, what)
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
        self.extra_outputs: list[KerasTensor] = []  # a multi-output layer's outputs after the first

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
    # Keras' masking: a layer that supports it passes its input's mask on (``compute_mask``);
    # one that does not drops it. A ``call`` with a ``mask`` parameter receives the mask of
    # its (first) input, a boolean (batch, time) tensor (False: a padded step), or None.
    supports_masking = False

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

    def compute_mask(self, x, mask):
        """The output's mask given the input ``x`` and its ``mask`` (Keras' ``compute_mask``)."""
        return mask if self.supports_masking else None

    def _extra_output_shapes(self) -> list[tuple]:
        """Per-sample shapes of the outputs after the first, for a layer that returns several
        tensors (a recurrent layer's ``return_state``); its ``call`` then returns a list."""
        return []

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
        extra = self._extra_output_shapes()
        if extra:
            node.extra_outputs = [KerasTensor(s, self.output_dtype, node) for s in extra]
            return [node.output] + node.extra_outputs
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

    # ---- Keras config (graphc/nn/keras_format.py writes and reads it) ---------------------
    def get_config(self) -> dict:
        """The constructor arguments as Keras 3 names and serializes them (config.json of a
        .keras file): ``name``, ``trainable`` and ``dtype`` here, each layer adds its own."""
        return {"name": self.name or self.default_name, "trainable": True, "dtype": dict(_DTYPE_POLICY)}

    @classmethod
    def from_config(cls, config: dict) -> "Layer":
        """The layer ``get_config`` (or Keras 3) described. Keras-only arguments at their
        defaults (``kernel_constraint=None``, ``quantization_config=None``, ...) are dropped;
        any other value graphc cannot honour is an error naming the argument."""
        return cls(**_config_kwargs(cls, config))

    def _keras_weight_groups(self) -> list[tuple[str, str, list]]:
        """Where Keras' h5 layout keeps the weights: ``[(sub-path, group name, weight nodes)]``,
        one group at the layer's own path unless Keras builds the layer from sub-layers."""
        return [("", self.name or self.default_name, self.weights)]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


# Keras arguments graphc's layers do not take, dropped by from_config at these values
# (also at None/False, Keras' "off")
_KERAS_ONLY_DEFAULTS = {"data_format": "channels_last", "renorm_momentum": 0.99, "attention_axes": [1]}


def _init_params(cls) -> set[str]:
    import inspect
    out: set[str] = set()
    for k in cls.__mro__:
        if "__init__" in vars(k) and k is not object:
            out |= {n for n, p in inspect.signature(k.__init__).parameters.items()
                    if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"}
    return out


def _config_kwargs(cls, config: dict) -> dict:
    """``from_config``'s constructor arguments from a (Keras) layer config."""
    params = _init_params(cls)
    out = {}
    for k, v in config.items():
        if k == "dtype":
            name = v.get("config", {}).get("name") if isinstance(v, dict) else v
            if name not in (None, "float32"):
                raise NotImplementedError(f"{cls.__name__}: dtype policy {name!r} is not supported (graphc.nn layers "
                                          "compute in float32)")
            continue
        if k not in params:
            if v is None or v is False or _KERAS_ONLY_DEFAULTS.get(k, object()) == v:
                continue
            raise NotImplementedError(f"{cls.__name__}: the Keras argument {k}={v!r} is not supported by graphc")
        out[k] = v
    return out


def _layer_seed(layer: "Layer", seed: int | None) -> int:
    """A random layer's generator seed: from its ``seed`` argument, or else from the model's
    ``compile(seed=...)``, mixed with the layer's name so two layers draw differently and a
    rebuilt model (same names, same seed) draws the same numbers."""
    base = seed if seed is not None else (layer._model._seed if layer._model is not None else 0)
    return zlib.crc32(f"{base}:{layer.name or layer.default_name}".encode())


class _Affine:
    """``activation(linear(x) + bias)``, the output of Dense and Conv2D (mixed into a Layer
    that defines ``linear``, ``bias`` and ``activation_name``/``activation``). ``call_split``
    returns the pre-activation so losses compute cross-entropies stably from logits."""

    def call_split(self, x, training=False):
        z = self.linear(x)
        if self.bias is not None:
            z = z + self.bias
        return z, self.activation_name

    def call(self, x, training=False):
        z, _ = self.call_split(x, training)
        return self.activation(z)


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

    def get_config(self) -> dict:
        shape = self.input_shape_arg if self.input_shape_arg is not None else self.input_shape
        return {"batch_shape": [None, *shape], "dtype": self.dtype or "float32", "sparse": False, "ragged": False,
                "name": self.name or self.default_name, "optional": False}

    @classmethod
    def from_config(cls, config: dict) -> "InputLayer":
        bad = sorted(k for k in ("sparse", "ragged", "optional") if config.get(k))
        if bad:
            raise NotImplementedError(f"InputLayer: {', '.join(f'{k}=True' for k in bad)} is not supported by graphc")
        shape = config.get("batch_shape")
        shape = list(shape)[1:] if shape is not None else config.get("shape")
        return cls(shape=shape, dtype=config.get("dtype"), name=config.get("name"))


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
