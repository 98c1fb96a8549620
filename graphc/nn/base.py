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

import inspect
import itertools
import numbers
import re
import zlib
from typing import Any

import numpy as np

from .. import dsl as F
from ..ir import Node
from . import initializers as I
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
    if isinstance(init, I.Initializer):
        return I.serialize(init)
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
    """A layer argument's initializer: a graphc name, a graphc.nn.initializers object (one
    with arguments, or a Keras name graphc has no built-in for: ``truncated_normal``,
    ``lecun_normal``, ...), or an array."""
    if isinstance(init, I.Initializer):
        return init._as_graphc_name() or init
    if isinstance(init, dict):
        return _initializer_from_keras(init, what)
    if isinstance(init, str):
        name = _INIT_ALIASES.get(init.lower(), init.lower())
        if name not in F.INITIALIZERS:
            return _initializer(I.get(init, what), what)
        return name
    return np.asarray(init)


def _weight_args(layer: "Layer", what: str, **weights: tuple) -> None:
    """Sets ``<w>_initializer`` and ``<w>_regularizer`` for each weight ``w`` from its
    ``(initializer, regularizer)`` constructor arguments (every initializer is checked first)."""
    for w, (init, _) in weights.items():
        setattr(layer, f"{w}_initializer", _initializer(init, f"{what}({w}_initializer=...)"))
    for w, (_, reg) in weights.items():
        setattr(layer, f"{w}_regularizer", R.get(reg, f"{what}({w}_regularizer=...)"))


def _weight_config(layer: "Layer", what: str, *weights: str) -> dict:
    """``get_config``'s entries for the weights ``_weight_args`` set, in Keras' order: their
    initializers, their regularizers, ``activity_regularizer``, their constraints (graphc
    supports neither of the last two, so both are written as None)."""
    cfg = {f"{w}_initializer": _serialize_initializer(getattr(layer, f"{w}_initializer")) for w in weights}
    cfg.update({f"{w}_regularizer": R.serialize(getattr(layer, f"{w}_regularizer"), f"{what}({w}_regularizer=...)")
                for w in weights})
    return {**cfg, "activity_regularizer": None, **{f"{w}_constraint": None for w in weights}}


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


# ---- calling a layer's ``call`` as Keras does ---------------------------------------------------------
# Keras passes ``training`` (and ``mask``) to ``call`` by keyword, and only when its signature
# names them; a layer called inside another layer's (or a subclassed Model's) ``call`` without
# ``training`` inherits the outer call's value. ``_CONTEXT`` holds the calls being traced.

class _CallContext:
    def __init__(self) -> None:
        self.training: list[bool] = []  # the training flag of each call being traced, innermost last
        self.layers: list = []  # the layers whose call is being traced, innermost last
        self.probing = 0  # > 0 while call is traced only to read its output shape
        # id(output) -> (layer, x, training, kwargs), recorded while a subclassed Model's call is
        # traced (None otherwise): its losses take logits from the output layer's call_split
        self.splits: dict[int, tuple] | None = None


_CONTEXT = _CallContext()
_SIGNATURES: dict = {}


def _call_takes(layer) -> tuple[bool, bool]:
    """(takes ``training``, takes ``mask``) by name, as Keras reads ``call``'s signature."""
    fn = type(layer).call
    got = _SIGNATURES.get(fn)
    if got is None:
        ps = inspect.signature(fn).parameters
        got = _SIGNATURES[fn] = ("training" in ps, "mask" in ps)
    return got


def current_training() -> bool:
    """The training flag of the innermost call being traced (False outside any)."""
    return _CONTEXT.training[-1] if _CONTEXT.training else False


def call_layer(layer, x, training: bool = False, **kwargs: Any):
    """``layer.call(x, ...)`` with ``training`` and ``mask`` passed by keyword when ``call``
    takes them (a ``call(self, inputs)`` gets neither), under the call context that nested
    calls inherit ``training`` from and that ``state.assign(...)`` records updates in."""
    takes_training, takes_mask = _call_takes(layer)
    given = dict(kwargs)
    if takes_training:
        kwargs["training"] = bool(training)
    if not takes_mask or kwargs.get("mask", 0) is None:
        kwargs.pop("mask", None)
    _CONTEXT.training.append(bool(training))
    _CONTEXT.layers.append(layer)
    try:
        out = layer.call(x, **kwargs)
    finally:
        _CONTEXT.training.pop()
        _CONTEXT.layers.pop()
    if _CONTEXT.splits is not None and isinstance(out, Node) and isinstance(layer, Layer) and _own_split(layer):
        given.pop("mask", None) if not takes_mask else None
        _CONTEXT.splits[id(out)] = (layer, x, training, given)
    return out


def _own_split(layer) -> bool:
    """Whether ``layer.call_split`` describes its ``call``: defined by the class that defines
    ``call`` or a subclass of it (a user class overriding Dense's ``call`` inherits a
    ``call_split`` that does not)."""
    mro = type(layer).__mro__
    owner_call = next(k for k in mro if "call" in vars(k))
    owner_split = next(k for k in mro if "call_split" in vars(k))
    return owner_split is not Layer and issubclass(owner_split, owner_call)


def call_split_of(layer, x, training: bool = False, **kwargs: Any):
    """``(pre, activation name)`` of an output layer, for losses from logits: its
    ``call_split`` when that describes its ``call``, else ``(call(x), "linear")``."""
    if _own_split(layer):
        return layer.call_split(x, training, **kwargs)
    return call_layer(layer, x, training, **kwargs), "linear"


def _assign(op: str):
    def method(self: Node, value):
        """Keras' ``variable.{op}(value)`` on a non-trainable weight inside a layer's ``call``:
        records the new value as the layer's update, written at the end of the training
        step (reads of the weight within the step see the value it started with). Returns
        the new value."""
        owner = next((lay for lay in reversed(_CONTEXT.layers) if isinstance(lay, Layer)
                      and any(n is self for lay2 in lay._flat_layers() for _, n in lay2._state_weights)), None)
        if owner is None:
            raise ValueError(f"{op}: {self!r} is not a non-trainable weight (add_weight(..., trainable=False)) of a "
                             "layer whose call is running; graphc tensors are values, only such weights take "
                             f"{op} (trainable weights change through the optimizer)")
        owner = next(lay2 for lay2 in owner._flat_layers() if any(n is self for _, n in lay2._state_weights))
        v = F._lift(value, self)
        new = v if op == "assign" else owner.current_value(self) + v if op == "assign_add" \
            else owner.current_value(self) - v
        if new.shape != self.shape:
            raise ValueError(f"{owner._label}: {op} of weight {self.name!r} of shape {self.shape} with a value of "
                             f"shape {v.shape}")
        new = F.cast(new, self.dtype) if new.dtype != self.dtype else new
        if not _CONTEXT.probing:
            owner.add_update(self, new)
        return new
    method.__name__ = op
    return method


for _op in ("assign", "assign_add", "assign_sub"):
    type.__setattr__(Node, _op, _assign(_op))


def _unique_layer_name(base: str) -> str:
    """A process-wide unique name, as Keras names layers when they are made (used for a
    layer that creates weights in ``__init__``, before any model names it)."""
    k = _NAME_COUNTS.get(base, 0)
    _NAME_COUNTS[base] = k + 1
    return base if k == 0 else f"{base}_{k}"


_NAME_COUNTS: dict[str, int] = {}


def _tracked_layers(obj, skip: tuple = ()) -> list:
    """The layers held in ``obj``'s attributes (directly, or in lists, tuples and dicts), in
    the order they were set: Keras' tracked sublayers."""
    out: list = []
    for k, v in vars(obj).items():
        if k in skip:
            continue
        items = v.values() if isinstance(v, dict) else v if isinstance(v, (list, tuple)) else [v]
        for item in items:
            if isinstance(item, Layer) and not any(item is o for o in out):
                out.append(item)
    return out


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

    def __init__(self, name: str | None = None, input_shape=None, trainable: bool = True, dtype=None,
                 **kwargs: Any):
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
        policy = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
        if policy not in (None, "float32"):
            raise NotImplementedError(f"{type(self).__name__}(dtype={dtype!r}): graphc.nn layers compute in float32")
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
        self._added_losses: list = []  # add_loss values recorded by this forward pass
        self._built_name: str | None = None
        self._inbound_nodes: list[CallNode] = []
        self._model = None
        self._trainable = bool(trainable)
        self._building = False
        self._early: tuple[list, list, list] = ([], [], [])  # weights made outside build (in __init__)
        self._output_batchless = False  # call returned a tensor without the batch dim

    # ---- building ------------------------------------------------------------------------
    @property
    def default_name(self) -> str:
        return _camel_to_snake(type(self).__name__)

    @property
    def _label(self) -> str:
        return f"{type(self).__name__} {self.name or self.default_name!r}"

    def add_weight(self, *args, shape=None, initializer=None, dtype=None, trainable: bool = True, autocast=True,
                   regularizer=None, constraint=None, aggregation="none", overwrite_with_gradient=False,
                   name: str | None = None) -> Any:
        """Keras 3's ``add_weight``: a weight of ``shape`` drawn by ``initializer`` (a Keras
        name, a graphc.nn.initializers object or an array; default ``glorot_uniform``), named
        ``<layer>/<name>`` (``variable``, ``variable_1``, ... when not given). Trainable, it is
        a ``gc.param``; with ``trainable=False`` a ``gc.state`` that changes only through
        ``add_update`` or ``weight.assign(...)`` in ``call``. Shape, initializer and dtype may
        also come positionally (Keras 2's order). Arguments graphc cannot honour (a
        ``constraint``, a non-float32 dtype, an aggregation) are errors naming the layer.
        graphc's own layers call it as ``add_weight(short name, shape, initializer,
        regularizer, trainable=...)``."""
        if args and isinstance(args[0], str):  # graphc's layers: (short, shape, initializer[, regularizer])
            return self._add_weight(*args, trainable=trainable, **({"regularizer": regularizer} if regularizer
                                                                     is not None else {}))
        what = f"{self._label}.add_weight"
        if len(args) > 3:
            raise TypeError(f"{what}: takes at most 3 positional arguments (shape, initializer, dtype), "
                            f"got {len(args)}")
        for given, (arg, cur) in zip(args, (("shape", shape), ("initializer", initializer), ("dtype", dtype))):
            if cur is not None:
                raise ValueError(f"{what}: {arg} was passed both positionally and as a keyword argument")
        shape, initializer, dtype = (list(args) + [shape, initializer, dtype][len(args):])[:3]
        if constraint is not None:
            raise NotImplementedError(f"{what}(constraint={constraint!r}): weight constraints are not supported by "
                                      "graphc")
        if aggregation not in (None, "none", "mean", "sum", "only_first_replica") or overwrite_with_gradient:
            raise NotImplementedError(f"{what}: aggregation={aggregation!r}/overwrite_with_gradient="
                                      f"{overwrite_with_gradient!r} are not supported by graphc")
        if dtype is not None and str(np.dtype(dtype)) != "float32":
            raise NotImplementedError(f"{what}(dtype={dtype!r}): graphc.nn weights are float32")
        shape = () if shape is None else shape
        try:
            shape = tuple(int(d) for d in ((shape,) if isinstance(shape, numbers.Integral) else shape))
        except (TypeError, ValueError):
            raise ValueError(f"{what}(shape={shape!r}): expected a tuple of ints") from None
        if any(d <= 0 for d in shape):
            raise ValueError(f"{what}(shape={shape!r}): dimensions must be positive")
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError(f"{what}(name={name!r}): expected a non-empty string without '/'")
        taken = {s for s, _ in self._weights} | {s for s, _ in self._state_weights}
        short, k = name or "variable", 0
        while short in taken:
            k += 1
            short = f"{name or 'variable'}_{k}"
        if not self._building and self.name is None:  # made in __init__: its name is fixed now (as Keras')
            self.name = self._given_name = _unique_layer_name(self.default_name)
        if regularizer is not None:
            from . import regularizers as R
            regularizer = R.get(regularizer, f"{what}(regularizer=...)")
        init = I.resolve("glorot_uniform" if initializer is None else initializer, shape, np.float32,
                         f"{self.name or self.default_name}/{short}", f"{what}(initializer=...)")
        return self._add_weight(short, shape, init, regularizer, trainable=trainable)

    def _add_weight(self, short: str, shape: tuple, initializer, regularizer=None, trainable: bool = True) -> Any:
        """A weight named ``<layer>/<short>``: a ``gc.param`` the optimizer trains, or with
        ``trainable=False`` a ``gc.state`` (float32) that only ``add_update`` changes."""
        name = f"{self.name or self.default_name}/{short}"
        if isinstance(initializer, I.Initializer):  # an initializer with arguments, drawn now
            initializer = I.resolve(initializer, shape, np.float32, name, f"{self._label}: weight {short!r}")
        early = not self._building
        if not trainable:
            if regularizer is not None:
                raise ValueError(f"{self._label}: weight {short!r} is not trainable and cannot take a regularizer")
            init = initializer if isinstance(initializer, str) else np.asarray(initializer, np.float32)
            node = F.state(name, shape, init=init, dtype="float32")
            self._state_weights.append((short, node))
            if early:
                self._early[2].append((short, node))
            return node
        node = F.param(name, shape, init=initializer)
        self._weights.append((short, node))
        if early:
            self._early[0].append((short, node))
        if regularizer is not None:
            self._penalties.append((regularizer, node))
            if early:
                self._early[1].append((regularizer, node))
        return node

    def add_loss(self, loss) -> None:
        """Keras' ``add_loss`` in ``call``: a scalar added to the model's total loss (in
        training and in evaluate), e.g. an activity penalty."""
        if _CONTEXT.probing:
            return
        v = F._lift(loss)
        if v.shape != () or v.dtype.kind != "f":
            raise ValueError(f"{self._label}.add_loss: expected a float scalar tensor, got shape {v.shape} dtype "
                             f"{v.dtype}")
        self._added_losses.append(v)

    @property
    def losses(self) -> list:
        """The losses ``add_loss`` recorded in the forward pass being traced."""
        return list(self._added_losses)

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
        self._added_losses = []

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
        self._weights, self._penalties, self._state_weights = (list(e) for e in self._early)
        self._built_name = self.name or self.default_name
        self._building = True
        try:
            self.build(self.input_shape)
        finally:
            self._building = False
        self._output_batchless = False
        out = self.compute_output_shape(self.input_shape)
        self.output_shape = tuple(out) if out is not None else None
        self.built = True
        return self.output_shape

    def _rebuild(self) -> None:
        """Build again under the current name (the functional Model names layers after the
        calls that built them): the weights get their final ``<name>/<weight>`` names."""
        if self.built and self._built_name != self.name:
            self.built = False
            self._build(self.input_shape)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """The per-sample output shape. Unless a layer defines it, it is read from ``call``
        traced on a symbolic input of ``input_shape`` (as Keras' ``compute_output_spec``):
        never assumed equal to the input's."""
        return self._traced_output_shape(input_shape)

    def _traced_output_shape(self, input_shape):
        dt = getattr(self, "input_dtype", "float32")
        if isinstance(input_shape, tuple) and input_shape and isinstance(input_shape[0], tuple):
            x = [F.input(f"{self._built_name}/probe_{i}", (None,) + tuple(s), dtype=dt) for i, s in
                 enumerate(input_shape)]
        else:
            x = F.input(f"{self._built_name}/probe", (None,) + tuple(input_shape), dtype=dt)
        saved = [(lay, lay._updates) for lay in self._flat_layers()]
        _CONTEXT.probing += 1
        try:
            out = call_layer(self, x, False)
        finally:
            _CONTEXT.probing -= 1
            for lay, ups in saved:
                lay._updates = ups
        if not isinstance(out, Node):
            self._output_batchless = True  # several tensors: only nested calls can use it
            return None
        if out.ndim == 0 or out.shape[0] is not None:
            self._output_batchless = True
            return tuple(out.shape)
        return tuple(out.shape[1:])

    def compute_mask(self, x, mask):
        """The output's mask given the input ``x`` and its ``mask`` (Keras' ``compute_mask``)."""
        return mask if self.supports_masking else None

    def _extra_output_shapes(self) -> list[tuple]:
        """Per-sample shapes of the outputs after the first, for a layer that returns several
        tensors (a recurrent layer's ``return_state``); its ``call`` then returns a list."""
        return []

    # ---- applying ------------------------------------------------------------------------
    def __call__(self, inputs, training: bool | None = None, **kwargs: Any):
        """On symbolic tensors (``graphc.nn.Input`` or layer outputs): record the call and
        return the output KerasTensor. On graphc tensors: build if needed and apply; without
        ``training``, a call inside another layer's (or a subclassed Model's) ``call``
        inherits its flag (as in Keras). Other keyword arguments go to ``call``."""
        return self._apply(inputs, current_training() if training is None else training, kwargs)

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
            return call_layer(self, xs, training, **kwargs)
        args, flat = sym
        shapes = [tuple(t.shape[1:]) for t in flat] if isinstance(args, list) else tuple(args.shape[1:])
        self._check_arity(shapes)
        out_shape = self._build(self._build_shapes(shapes, kwargs))
        self._check_batched_output()
        # tensors passed by keyword (``mask=m``) are inputs of the call too: the model's graph
        # reaches them and feeds their values to ``call`` (Keras' tensor keyword arguments)
        flat = flat + [t for v in kwargs.values() for t in (v if isinstance(v, (list, tuple)) else [v])
                       if isinstance(t, KerasTensor)]
        node = CallNode(self, args, flat, out_shape, self.output_dtype, kwargs)
        self._inbound_nodes.append(node)
        extra = self._extra_output_shapes()
        if extra:
            node.extra_outputs = [KerasTensor(s, self.output_dtype, node) for s in extra]
            return [node.output] + node.extra_outputs
        return node.output

    def _check_batched_output(self) -> None:
        if self._output_batchless:
            got = "several tensors" if self.output_shape is None else f"a tensor of shape {self.output_shape}"
            raise ValueError(f"{self._label}: call returns {got}, not one tensor whose first dim is the batch; the "
                             "functional API and Sequential need per-sample outputs (use this layer inside another "
                             "layer's call or a subclassed Model)")

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
        return call_layer(self, x, training, **kwargs), "linear"

    def feeds(self, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Extra per-step inputs for training (random masks); none by default."""
        return {}

    def regularization_losses(self) -> list:
        """The scalar penalties of this layer's own weight regularizers (added to the loss;
        a model adds its sublayers' too)."""
        out = []
        for reg, node in self._penalties:
            v = reg(node)
            if v is not None:
                out.append(v)
        return out

    # ---- weights -------------------------------------------------------------------------
    def _sublayers(self) -> list:
        """The layers this one holds as attributes (Keras' tracked sublayers: an MLP block's
        Dense layers), whose weights are this layer's too. graphc's own layers declare
        their sub-layers' weights themselves (Bidirectional), so only user-defined layer
        classes are searched."""
        if type(self).__module__.startswith("graphc."):
            return []
        return _tracked_layers(self, skip=("_model", "_inbound_nodes"))

    def _flat_layers(self) -> list:
        """This layer and its sublayers, depth first, each once (a layer held twice, or a
        cycle of references, is visited once)."""
        out: list = []

        def visit(layer):
            if any(layer is o for o in out):
                return
            out.append(layer)
            for lay in layer._sublayers():
                visit(lay)
        visit(self)
        return out

    @property
    def trainable(self) -> bool:
        """Whether the optimizer trains this layer's weights. Setting it sets it for the
        sublayers too; as in Keras it takes effect at the next ``compile()`` (the compiled
        step keeps what it was compiled with). A frozen layer's weights are constants of the
        training step; a frozen BatchNormalization runs in inference mode."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        for lay in self._flat_layers():
            lay._trainable = bool(value)

    @staticmethod
    def _dedup(nodes) -> list:
        out, seen = [], set()
        for n in nodes:
            if id(n) not in seen:
                seen.add(id(n))
                out.append(n)
        return out

    @property
    def weights(self) -> list:
        """The weight nodes of this layer (names ``<layer>/<weight>``): its own trainable ones,
        its own non-trainable ones, then its sublayers' (Keras' order, whatever is frozen)."""
        return self._dedup([n for lay in self._flat_layers() for n in
                            [n for _, n in lay._weights] + [n for _, n in lay._state_weights]])

    @property
    def trainable_weights(self) -> list:
        """The params of this layer and of its sublayers that are not frozen ([] if this one is)."""
        if not self.trainable:
            return []
        return self._dedup([n for lay in self._flat_layers() if lay.trainable for _, n in lay._weights])

    @property
    def non_trainable_weights(self) -> list:
        """Weights the optimizer does not update: moving statistics (``gc.state`` tensors) and
        the weights of frozen layers."""
        train = {id(n) for n in self.trainable_weights}
        return [n for n in self.weights if id(n) not in train]

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
        return {"name": self.name or self.default_name, "trainable": self.trainable, "dtype": dict(_DTYPE_POLICY)}

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
        shape = config.get("batch_shape") or config.get("batch_input_shape")  # Keras 3's name, then Keras 2's
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
