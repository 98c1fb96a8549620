"""Models: ``Model(inputs, outputs)`` (the functional API) and ``Sequential``: the graph of
layers a model trains.

A model describes itself by its inputs (feed names, per-sample shapes, dtypes), its outputs
(names, shapes) and ``_forward``; everything that does not depend on how the graph was
described lives beside it: the trainer (compile, fit/evaluate/predict and the compiled
programs: graphc/nn/trainer.py, mixed in as Keras' Trainer is), data checks and batching
(data.py), checkpoints (saving.py) and the summary table (summary.py). The weights
themselves live in the compiled programs' store and are read and written here.
``Model(inputs, outputs)`` walks the layer calls recorded on KerasTensors; ``Sequential`` is
the special case of a chain, built lazily from the first data it sees. A subclass of
``Model`` that defines ``call`` (Keras' subclassing API) is built from the first data it
sees by tracing ``call`` on a symbolic input of the data's shape; its layers are the ones
it holds as attributes.
"""
from __future__ import annotations

import inspect
import warnings

import numpy as np

from .. import dsl as F
from . import saving
from .base import (_CONTEXT, CallNode, InputLayer, KerasTensor, Layer, _camel_to_snake, _tracked_layers, call_layer,
                   call_split_of)
from .data import as_numeric, check_inputs, conform
from .summary import summary
from .trainer import Trainer


def _takes_mask(layer: Layer) -> bool:
    """Whether ``layer.call`` has a ``mask`` parameter (Keras passes masks to such calls only)."""
    return "mask" in inspect.signature(layer.call).parameters


class Model(Trainer):
    """``keras.Model(inputs, outputs)``: a graph of layers between ``graphc.nn.Input`` tensors
    and output tensors (single tensors, lists or dicts of them), trained by one compiled
    graphc step per batch. A layer called several times shares its weights."""

    def __init__(self, inputs=None, outputs=None, name: str | None = None, trainable: bool = True, **kwargs):
        if inputs is None and outputs is None and type(self) is not Model:  # Keras' subclassing API
            if kwargs:
                raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kwargs)}")
            self._subclassed = True
            self.name = name or _camel_to_snake(type(self).__name__)
            self._init_trainer()
            self._built = False
            self._nodes = []
            self._trainable = bool(trainable)
            return
        if inputs is None or outputs is None:
            raise TypeError("Model: pass inputs= and outputs= (symbolic tensors from graphc.nn.Input and layer "
                            "calls), or subclass Model and define call(self, inputs, training=None)")
        if kwargs:
            raise TypeError(f"Model: unexpected keyword argument(s) {sorted(kwargs)}")
        self.name = name or "functional"
        self.layers: list[Layer] = []
        self._init_trainer()
        self._trainable = True
        self._init_graph(inputs, outputs)
        if not trainable:
            self.trainable = False

    _subclassed = False

    @property
    def layers(self) -> list[Layer]:
        """The model's layers: the graph's, InputLayers included (functional), the stack
        without its InputLayer (Sequential, as Keras lists it), or the layers a subclassed
        model holds as attributes, in the order they were set."""
        return self._graph_layers

    @property
    def _graph_layers(self) -> list[Layer]:
        """Every layer the model runs, a Sequential's InputLayer included (what naming,
        building and saving walk)."""
        if self._subclassed:
            return _tracked_layers(self)
        return self._layer_list

    @layers.setter
    def layers(self, value: list[Layer]) -> None:
        self._layer_list = value

    @property
    def trainable(self) -> bool:
        """Setting it sets every layer's ``trainable`` (Keras); it takes effect at the next
        ``compile()``, as in Keras."""
        return getattr(self, "_trainable", True)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)
        for layer in self.layers:
            layer.trainable = value

    # ---- the functional graph -------------------------------------------------------------------
    @staticmethod
    def _structure(value, arg: str):
        """(kind, flat KerasTensors, dict keys or None)."""
        if isinstance(value, KerasTensor):
            return "single", [value], None
        if isinstance(value, dict):
            keys, flat = list(value), list(value.values())
            kind = "dict"
        elif isinstance(value, (list, tuple)):
            keys, flat, kind = None, list(value), "list"
        else:
            raise TypeError(f"Model({arg}=...): expected a symbolic tensor (graphc.nn.Input or a layer's output), "
                            f"a list or a dict of them, got {type(value).__name__}")
        if not flat:
            raise ValueError(f"Model({arg}=...): no tensors given")
        for t in flat:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"Model({arg}=...): expected symbolic tensors (graphc.nn.Input or a layer's output), "
                                f"got {type(t).__name__}")
        if len({id(t) for t in flat}) != len(flat):
            raise ValueError(f"Model({arg}=...): a tensor is listed twice")
        return kind, flat, keys

    def _init_graph(self, inputs, outputs) -> None:
        _, in_flat, in_keys = self._structure(inputs, "inputs")
        self._out_kind, out_flat, out_keys = self._structure(outputs, "outputs")
        for i, t in enumerate(in_flat):
            if not isinstance(t._node.layer, InputLayer) or t._node.inputs:
                raise ValueError(f"Model(inputs=...): entry {i} ({t.name!r}) is the output of layer {t.name!r}, "
                                 "not a tensor made by graphc.nn.Input")
        given = {id(t): t for t in in_flat}
        nodes: dict[int, CallNode] = {}
        reached: set[int] = set()
        for oi, out in enumerate(out_flat):
            stack = [out]
            while stack:
                t = stack.pop()
                if id(t) in given:
                    reached.add(id(t))
                    continue
                node = t._node
                if node.id in nodes:
                    continue
                if not node.inputs:
                    what = f"output {out_keys[oi]!r}" if out_keys else f"output {oi} ({out.name!r})"
                    raise ValueError(f"Model(inputs=...): graph disconnected: {what} depends on input {t.name!r} "
                                     f"(shape {t.shape}), which is not in inputs={[x.name for x in in_flat]}; "
                                     "add it to inputs")
                nodes[node.id] = node
                stack.extend(node.inputs)
        unused = [t.name for t in in_flat if id(t) not in reached]
        if unused:
            raise ValueError(f"Model(inputs=...): input(s) {unused} are not connected to any output; remove them "
                             "from inputs or use them")
        self._nodes = [nodes[k] for k in sorted(nodes)]
        layers: list[Layer] = [t._node.layer for t in in_flat]
        for node in self._nodes:
            if not any(node.layer is l for l in layers):
                layers.append(node.layer)
        for layer in layers:
            if layer._model is not None and layer._model is not self:
                raise ValueError(f"Model: layer {layer.name!r} already belongs to model {layer._model.name!r}; "
                                 "graphc models do not share layers (each model keeps its weights in its own store)")
        self.layers = layers
        try:
            self._describe(in_flat, out_flat, in_keys, out_keys)
        except BaseException:
            for layer in layers:  # a failed Model leaves its layers free for another one
                if layer._model is self:
                    layer._model = None
            raise

    def _describe(self, in_flat, out_flat, in_keys, out_keys) -> None:
        """Name the layers (weights get their final names) and record the feeds and outputs."""
        self._assign_names()
        for layer in self._flat_layers():
            layer._model = self
            layer._rebuild()
        self.inputs, self.outputs = in_flat, out_flat
        self._in_tensors, self._out_tensors = in_flat, out_flat
        self._in_feeds = [t._node.layer.name for t in in_flat]
        self._in_names = list(in_keys) if in_keys else list(self._in_feeds)
        self._in_shapes = [tuple(t.shape[1:]) for t in in_flat]
        self._in_dtypes = [self._input_feed_dtype(t) for t in in_flat]
        if out_keys:
            self._out_names = list(out_keys)
        else:
            # a multi-output layer's later outputs (return_state) are named <layer>_1, <layer>_2, ...
            self._out_names = [t._node.layer.name + "".join(f"_{i + 1}" for i, e in enumerate(t._node.extra_outputs)
                                                            if e is t) for t in out_flat]
            dup = sorted({n for n in self._out_names if self._out_names.count(n) > 1})
            if dup:
                raise ValueError(f"Model(outputs=...): outputs {dup} come from the same layer; pass outputs as a dict "
                                 "to name them")
        self._out_shapes = [tuple(t.shape[1:]) for t in out_flat]
        reserved = set(self._label_feeds()) | set(self._sw_feeds())
        clash = sorted(set(self._in_feeds) & reserved)
        if clash:
            raise ValueError(f"Model(inputs=...): input name(s) {clash} are reserved for labels and sample weights; "
                             "give the Input another name")

    def _input_feed_dtype(self, t: KerasTensor) -> str:
        """An Input's dtype if given; int64 when unset and it feeds only id-taking layers."""
        layer = t._node.layer
        if layer.dtype is not None:
            return layer.dtype
        users = [n.layer for n in self._nodes if any(i is t for i in n.inputs)]
        if users and all(np.dtype(getattr(u, "input_dtype", "float32")).kind in "iu" for u in users):
            return "int64"
        return "float32"

    def _forward(self, feeds: list, training: bool) -> list:
        """``[(out, pre, activation)]`` per output, applying the recorded calls in order."""
        if self._subclassed:
            return self._subclassed_forward(feeds, training)
        values = {id(t): f for t, f in zip(self._in_tensors, feeds)}

        def arg_of(node):
            def v(t):
                x = values[id(t)]
                want = getattr(node.layer, "input_dtype", "float32")
                if x.dtype.kind in "iu" and np.dtype(want).kind == "f":
                    x = F.cast(x, want)  # Keras casts inputs to the layer's compute dtype
                return x
            return [v(t) for t in node.args] if isinstance(node.args, list) else v(node.args)

        masks: dict[int, object] = {}  # Keras' masks: id(KerasTensor) -> boolean (batch, time) tensor

        def in_mask(node):
            """The mask of the call's input; a list (one per input) for a merge layer."""
            if not node.inputs:
                return None
            if not isinstance(node.args, list):
                return masks.get(id(node.args))
            ms = [masks.get(id(t)) for t in node.args]
            return ms if any(m is not None for m in ms) else None

        def value_of(v):
            if isinstance(v, KerasTensor):
                return values[id(v)]
            if isinstance(v, (list, tuple)) and any(isinstance(t, KerasTensor) for t in v):
                return [value_of(t) for t in v]
            return v

        def call_kwargs(node):
            """The call's keyword arguments with tensors' values; an explicit ``mask=`` wins
            over the mask propagated from the input (Keras)."""
            kw = {k: value_of(v) for k, v in node.kwargs.items()}
            if kw.get("mask") is None:
                kw.pop("mask", None)
                m = in_mask(node)
                if m is not None and _takes_mask(node.layer):
                    kw["mask"] = m
            return kw

        for node in self._nodes:
            x = arg_of(node)
            kw = call_kwargs(node)
            out = call_layer(node.layer, x, training, **kw)
            if node.extra_outputs:  # a layer returning several tensors (return_state)
                for t, v in zip([node.output] + node.extra_outputs, out):
                    values[id(t)] = v
            else:
                values[id(node.output)] = out
            m = kw["mask"] if kw.get("mask") is not None else in_mask(node)
            m = node.layer.compute_mask(x, m) if m is not None or node.layer.supports_masking else None
            if m is not None and not node.extra_outputs:
                masks[id(node.output)] = m
        self._traced_out_masks = [masks.get(id(t)) for t in self._out_tensors]  # the losses apply them (Keras)
        outs = []
        for t in self._out_tensors:
            node = t._node
            if id(t) in {id(i) for i in self._in_tensors} or node.extra_outputs:
                outs.append((values[id(t)], values[id(t)], "linear"))
                continue
            pre, act = call_split_of(node.layer, arg_of(node), training, **call_kwargs(node))
            outs.append((values[id(t)], pre, act))
        return outs

    def _ensure_built(self, feature_shape: tuple | None = None, arg: str = "x") -> None:
        """A functional model is built when it is made; a subclassed one from the first data's
        shape; Sequential overrides this."""
        if not self._subclassed:
            return
        if self._built:
            if feature_shape is not None and tuple(feature_shape) != self._in_shapes[0]:
                raise ValueError(f"{arg}: the model was built for samples of shape {self._in_shapes[0]}, got samples "
                                 f"of shape {tuple(feature_shape)}")
            return
        if feature_shape is None:
            raise ValueError(f"{type(self).__name__} is not built: call build((None, ...)), or fit/predict with data "
                             "first")
        self._build_subclassed(tuple(feature_shape))

    def build(self, input_shape=None) -> None:
        """Build for inputs of ``input_shape`` (with the batch dim, as Keras: ``(None, 10)``)."""
        if input_shape is not None:
            self._ensure_built(tuple(input_shape)[1:])

    @property
    def built(self) -> bool:
        return self._built if self._subclassed else True

    # ---- the subclassing API --------------------------------------------------------------------
    def _build_subclassed(self, shape: tuple, dtype: str = "float32") -> None:
        """Trace ``call`` on a symbolic input of ``shape``: this builds the layers it calls and
        gives the outputs' structure and shapes."""
        if not callable(getattr(self, "call", None)):
            raise NotImplementedError(f"{type(self).__name__}: a subclassed Model must define call(self, inputs, "
                                      "training=None)")
        layers = self._flat_layers()
        for layer in layers:
            if layer._model is not None and layer._model is not self:
                raise ValueError(f"{type(self).__name__}: layer {layer.name!r} already belongs to model "
                                 f"{layer._model.name!r}; graphc models do not share layers")
        self._assign_names()
        for layer in layers:
            layer._model = self
        self._in_feeds, self._in_names, self._in_shapes, self._in_dtypes = ["x"], ["x"], [shape], [dtype]
        saved = [(lay, lay._updates) for lay in layers]
        _CONTEXT.probing += 1
        try:
            out = call_layer(self, F.input("x", (None,) + shape, dtype=dtype), False)
        finally:
            _CONTEXT.probing -= 1
            for lay, ups in saved:
                lay._updates = ups
        kind = "dict" if isinstance(out, dict) else "list" if isinstance(out, (list, tuple)) else "single"
        flat = list(out.values()) if kind == "dict" else list(out) if kind == "list" else [out]
        for i, o in enumerate(flat):
            if not hasattr(o, "shape") or not o.shape or o.shape[0] is not None:
                raise ValueError(f"{type(self).__name__}.call: output {i} is {o!r}, not a tensor whose first dim is "
                                 "the batch")
        self._out_kind = kind
        self._out_names = list(out) if kind == "dict" else [f"output_{i + 1}" for i in range(len(flat))]
        self._out_shapes = [tuple(o.shape[1:]) for o in flat]
        self._built = True

    def _subclassed_forward(self, feeds: list, training: bool) -> list:
        _CONTEXT.splits = {}
        try:
            out = call_layer(self, feeds[0], training)
            flat = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (list, tuple)) \
                else [out]
            res = []
            for o in flat:  # an output layer's call_split gives the losses its logits
                rec = _CONTEXT.splits.get(id(o))
                pre, act = rec[0].call_split(rec[1], rec[2], **rec[3]) if rec is not None else (o, "linear")
                res.append((o, pre, act))
        finally:
            _CONTEXT.splits = None
        return res

    def _assign_names(self) -> None:
        """Unique layer names within the model (sublayers of custom layers included)."""
        given = [l._given_name for l in self._flat_layers() if l._given_name]
        if len(set(given)) != len(given):
            dup = sorted({n for n in given if given.count(n) > 1})
            raise ValueError(f"{type(self).__name__}: layer names must be unique, {dup} repeat")
        taken = set(given)
        counters: dict[str, int] = {}
        for layer in self._flat_layers():
            if layer._given_name:
                layer.name = layer._given_name
                continue
            base = layer.default_name
            while True:
                k = counters.get(base, 0)
                counters[base] = k + 1
                cand = base if k == 0 else f"{base}_{k}"
                if cand not in taken:
                    break
            taken.add(cand)
            layer.name = cand

    @property
    def input_shape(self):
        self._ensure_built()
        shapes = [(None,) + s for s in self._in_shapes]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        self._ensure_built()
        shapes = [(None,) + s for s in self._out_shapes]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def input_names(self) -> list[str]:
        self._ensure_built()
        return list(self._in_names)

    @property
    def output_names(self) -> list[str]:
        self._ensure_built()
        return list(self._out_names)

    def __call__(self, inputs, training: bool = False):
        """Apply the model to graphc tensors (one, or a list in input order)."""
        if any(isinstance(t, KerasTensor) for t in (inputs if isinstance(inputs, (list, tuple)) else [inputs])):
            raise NotImplementedError(f"{type(self).__name__}: calling a model on symbolic tensors (nesting models) "
                                      "is not supported; call its layers instead")
        xs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(xs) == 1:
            self._ensure_built(tuple(xs[0].shape[1:]))
        if len(xs) != len(self._in_feeds):
            raise ValueError(f"{self.name}: expected {len(self._in_feeds)} input tensors, got {len(xs)}")
        outs = [o for o, _, _ in self._forward(xs, training)]
        return outs[0] if len(outs) == 1 else outs

    # ---- feed names ------------------------------------------------------------------------------
    def _label_feeds(self) -> list[str]:
        return ["y"] if len(self._out_names) == 1 else [f"y/{n}" for n in self._out_names]

    def _sw_feeds(self) -> list[str]:
        return ["sample_weight"] if len(self._out_names) == 1 else [f"sample_weight/{n}" for n in self._out_names]

    # ---- data checks (graphc/nn/data.py) -----------------------------------------------------------
    def _check_x(self, x, arg: str, nan_policy: str) -> list[np.ndarray]:
        """One checked array per input, from an array (one input), a list or a dict by name."""
        if self._subclassed and not self._built:
            if isinstance(x, (list, tuple, dict)):
                raise NotImplementedError(f"{arg}: a subclassed graphc Model takes one input array")
            a = as_numeric(x, arg)
            if a.ndim < 2 or len(a) == 0:
                raise ValueError(f"{arg}: expected a batch of samples of shape (n, features...), got shape {a.shape}")
            self._build_subclassed(tuple(a.shape[1:]), "int64" if a.dtype.kind in "iu" else "float32")
        return check_inputs(x, arg, nan_policy, self._in_names, self._in_shapes, self._in_dtypes)

    # ---- weights -----------------------------------------------------------------------------------
    def _weight_names(self) -> list[str]:
        self._ensure_built()
        return [n for layer in self.layers for n in layer.weight_names]

    def _state_names(self) -> list[str]:
        """The weights that are ``gc.state`` tensors in the model's programs: moving statistics
        and the weights of the layers frozen when it was compiled."""
        frozen = self._frozen_names()
        return [n.name for n in self.weights if n.op == "state" or n.name in frozen]

    def _current_weights(self) -> dict[str, np.ndarray]:
        """Copies of every weight by name: the params and the model's state (moving
        statistics, frozen weights), read in one consistent snapshot. Optimizer state is
        not included."""
        owner = self._store_owner()
        kinds = owner._store.kinds
        names = [n for n in self._weight_names() if kinds.get(n) == "state"]
        if not names:
            return owner.params
        sd = owner.state_dict()
        vals = sd["params"]
        vals.update({k: sd["state"][k] for k in names})
        return vals

    def _weights_by_name(self) -> dict[str, np.ndarray]:
        return self._current_weights()

    def _set_weights_by_name(self, values: dict, allow_nonfinite: bool = False) -> None:
        owner = self._store_owner()
        current = self._current_weights()
        checked = {}
        for k, v in values.items():
            if k not in current:
                raise ValueError(f"set_weights: unknown weight {k!r}; the model has {sorted(current)}")
            a = np.asarray(v)
            if a.shape != current[k].shape:
                raise ValueError(f"set_weights: weight {k!r} has shape {current[k].shape}, got an array of shape {a.shape}")
            if a.dtype.kind not in "biuf":
                raise ValueError(f"set_weights: weight {k!r} must be numeric, got dtype {a.dtype}")
            checked[k] = a if a.dtype.kind == current[k].dtype.kind else a.astype(current[k].dtype)
        states = {k for k in checked if owner._store.kinds.get(k) == "state"}
        if not states & set(checked):
            owner.set_params(checked, allow_nonfinite=allow_nonfinite)  # casts, then checks the values
            return
        # params and model state in one all-or-nothing write (every value checked first)
        owner._load({"params": {k: v for k, v in checked.items() if k not in states},
                     "state": {k: v for k, v in checked.items() if k in states}},
                    partial=True, what="set_weights", allow_nonfinite=allow_nonfinite)

    @property
    def weights(self) -> list:
        """The weight nodes, in layer order (kernel, bias, ...); a shared layer's once."""
        self._ensure_built()
        return [n for layer in self.layers for n in layer.weights]

    @property
    def trainable_weights(self) -> list:
        self._ensure_built()
        if not self.trainable:
            return []
        return [n for layer in self.layers for n in layer.trainable_weights]

    @property
    def non_trainable_weights(self) -> list:
        self._ensure_built()
        train = {id(n) for n in self.trainable_weights}
        return [n for n in self.weights if id(n) not in train]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights, in layer order (as Keras: kernel, bias, kernel, bias, ...)."""
        vals = self._current_weights()
        return [vals[n] for n in self._weight_names()]

    def set_weights(self, weights) -> None:
        names = self._weight_names()
        weights = list(weights)
        if len(weights) != len(names):
            raise ValueError(f"set_weights: the model has {len(names)} weights ({names}), got {len(weights)} arrays")
        self._set_weights_by_name(dict(zip(names, weights)))

    def count_params(self) -> int:
        self._ensure_built()
        return sum(layer.count_params() for layer in self.layers)

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        if index is not None:
            return self.layers[index]
        self._ensure_built()
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"get_layer: no layer named {name!r}; layers are {[l.name for l in self.layers]}")

    # ---- checkpoints ---------------------------------------------------------------------------------
    def save_weights(self, filepath, include_optimizer: bool = False, overwrite: bool = True,
                     allow_nonfinite: bool = False) -> str:
        """Write the weights (and, with ``include_optimizer``, the optimizer's state, step count,
        hyper-parameters and the epoch counter) to an .npz file, atomically: a crash mid-save
        leaves any previous file intact. Weights or state holding NaN/infinity are refused (a
        StateError, the old file kept) unless ``allow_nonfinite``. Returns the path written
        (``.npz`` is appended if missing). A ``.weights.h5`` (``.h5``) name writes Keras 3's h5
        layout instead (h5py), which ``keras.Model.load_weights`` reads; with
        ``include_optimizer`` the optimizer's variables go under ``optimizer/`` as Keras puts them."""
        return saving.save_weights(self, filepath, include_optimizer, overwrite, allow_nonfinite)

    def save(self, filepath, overwrite: bool = True, zipped=None, **kwargs) -> str:
        """Write the whole model to a ``.keras`` file in Keras 3's format (config.json with the
        layers' Keras configs and the compile config, metadata.json, model.weights.h5 with the
        weights and the compiled optimizer's state): ``keras.models.load_model`` and
        ``graphc.nn.models.load_model`` read it. Returns the path written."""
        if zipped is False or kwargs:
            raise ValueError(f"save: only zipped .keras files are written (got zipped={zipped!r}, "
                             f"options {sorted(kwargs)})")
        return saving.save_model(self, filepath, overwrite)

    def load_weights(self, filepath, allow_nonfinite: bool = False) -> None:
        """Load what ``save_weights`` wrote (``filepath`` as given to it: ``ckpt`` finds
        ``ckpt.npz``). Everything is checked before anything changes: the file, the weight
        names and shapes, and, for a checkpoint with optimizer state in a compiled model, that
        state against this model's optimizer (an Adam checkpoint does not load into an SGD
        model). Values holding NaN/infinity are refused unless ``allow_nonfinite``. In a model
        not compiled yet, the optimizer state is restored when the training step is built.
        ``.weights.h5``/``.h5`` files (and ``.keras`` files) are read in Keras 3's h5 layout."""
        saving.load_weights(self, filepath, allow_nonfinite)

    # ---- summary -------------------------------------------------------------------------------------
    def summary(self, line_length: int | None = None, print_fn=None, show_trainable: bool = False) -> None:
        """Print the layers (name and type), output shapes, parameter counts and, for
        functional models, what each layer is connected to; then the totals (Keras' table)."""
        summary(self, line_length, print_fn, functional=not isinstance(self, Sequential) and not self._subclassed)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} layers={[l.name or l.default_name for l in self.layers]}>"


class Sequential(Model):
    """A linear stack of layers (the special case of a Model that is a chain), built from
    the first layer's ``input_shape`` or, lazily, from the first data it sees."""

    def __init__(self, layers=None, name: str | None = None, trainable: bool = True):
        self.name = name or "sequential"
        self._layer_list: list[Layer] = []
        self._trainable = bool(trainable)
        self._init_trainer()
        self._built = False
        self._input_shape: tuple | None = None
        self._output_shape: tuple | None = None
        self._nodes = []
        self._out_kind = "single"
        for layer in layers or []:
            self.add(layer)

    # ---- structure ---------------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        if isinstance(layer, KerasTensor) and isinstance(layer._node.layer, InputLayer):
            if self._layer_list:
                raise ValueError("Sequential.add: an Input can only be the first entry")
            layer = layer._node.layer  # keras.Input(...) as the first entry, as Keras allows
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a graphc.nn layer, got {layer!r}")
        if any(layer is l for l in self._layer_list) or (layer._model is not None and layer._model is not self):
            raise ValueError(f"Sequential.add: layer {layer.name or layer.default_name!r} already belongs to a model")
        if layer.merge:
            raise ValueError(f"Sequential.add: {type(layer).__name__} takes several inputs; use the functional API "
                             "(graphc.nn.Model(inputs, outputs))")
        if self._built:
            self._unbuild()
        if self._layer_list and layer.input_shape_arg is not None:
            warnings.warn(f"input_shape given to layer {len(self._layer_list)} ({type(layer).__name__}) is ignored: "
                          "only the first layer's counts", stacklevel=2)
        self._layer_list.append(layer)
        layer._model = self

    @property
    def layers(self) -> list[Layer]:
        """The stack's layers, without the InputLayer a ``graphc.nn.Input`` first entry adds
        (Keras' ``Sequential.layers``); a copy, as in Keras: change the stack with add/pop."""
        return [l for l in self._layer_list if not isinstance(l, InputLayer)]

    def pop(self) -> Layer:
        if not self.layers:
            raise ValueError("Sequential.pop: the model has no layers")
        if self._built:
            self._unbuild()
        layer = self._layer_list.pop()
        layer._model = None
        return layer

    def _unbuild(self) -> None:
        weights = self._current_weights() if self._functions.owner() is not None else None
        for layer in self._layer_list:
            layer.built = False
        self._built = False
        self._reset_functions()
        if weights:
            self._initial_weights = weights

    def build(self, input_shape=None) -> None:
        """Build for inputs of ``input_shape`` (with the batch dim, as Keras: ``(None, 10)``)."""
        if input_shape is not None:
            input_shape = tuple(input_shape)[1:]
        self._ensure_built(input_shape)

    def _ensure_built(self, feature_shape: tuple | None = None, arg: str = "x") -> None:
        if self._built:
            if feature_shape is not None and tuple(feature_shape) != self._input_shape:
                raise ValueError(f"{arg}: the model expects samples of shape {self._input_shape} "
                                 f"(input of layer {self._layer_list[0].name!r}), got samples of shape "
                                 f"{tuple(feature_shape)}")
            return
        if not self._layer_list:
            raise ValueError("Sequential: the model has no layers; add some first")
        declared = self._layer_list[0].input_shape_arg
        if declared is not None and feature_shape is not None and tuple(feature_shape) != declared:
            raise ValueError(f"{arg}: the model expects samples of shape {declared} (input_shape of the first layer), "
                             f"got samples of shape {tuple(feature_shape)}")
        shape = declared if declared is not None else feature_shape
        if shape is None:
            raise ValueError("the model is not built: give the first layer input_shape=..., call build((None, ...)), "
                             "or call fit/predict with data first")
        self._assign_names()
        for layer in self._flat_layers():
            layer._model = self
        s = tuple(shape)
        for layer in self._layer_list:
            s = layer._build(s)
            layer._check_batched_output()
        self._input_shape, self._output_shape = tuple(shape), s
        self._built = True

    @property
    def built(self) -> bool:
        return self._built

    # the description the base class trains from: one input "x", one output
    @property
    def _in_feeds(self) -> list[str]:
        return ["x"]

    @property
    def _in_names(self) -> list[str]:
        return ["x"]

    @property
    def _in_shapes(self) -> list[tuple]:
        self._ensure_built()
        return [self._input_shape]

    @property
    def _in_dtypes(self) -> list[str]:
        return [self._input_dtype()]

    @property
    def _out_names(self) -> list[str]:
        self._ensure_built()
        return [self._layer_list[-1].name]

    @property
    def _out_shapes(self) -> list[tuple]:
        self._ensure_built()
        return [self._output_shape]

    def _forward(self, feeds: list, training: bool) -> list:
        h, mask = feeds[0], None
        for layer in self._layer_list:
            if layer._extra_output_shapes():
                raise ValueError(f"Sequential: layer {layer.name!r} ({type(layer).__name__}) returns several tensors "
                                 "(return_state=True or merge_mode=None); use the functional API "
                                 "(graphc.nn.Model(inputs, outputs))")
        for layer in self._layer_list[:-1]:
            kw = {"mask": mask} if mask is not None and _takes_mask(layer) else {}
            x, h = h, call_layer(layer, h, training, **kw)
            mask = layer.compute_mask(x, mask) if mask is not None or layer.supports_masking else None
        last = self._layer_list[-1]
        kw = {"mask": mask} if mask is not None and _takes_mask(last) else {}
        pre, act = call_split_of(last, h, training, **kw)
        self._traced_out_masks = [last.compute_mask(h, mask) if mask is not None or last.supports_masking else None]
        return [(call_layer(last, h, training, **kw), pre, act)]

    def _input_dtype(self) -> str:
        """What the model is fed: float32, an InputLayer's dtype, or int64 ids when the first
        layer takes ids (an Embedding)."""
        if self._layer_list and isinstance(self._layer_list[0], InputLayer) and self._layer_list[0].dtype is not None:
            return self._layer_list[0].dtype
        first = next((lay for lay in self._layer_list if not isinstance(lay, InputLayer)), None)
        return getattr(first, "input_dtype", "float32")

    def _check_x(self, x, arg: str, nan_policy: str) -> list[np.ndarray]:
        if isinstance(x, dict):
            if set(x) != {"x"} and len(x) != 1:
                raise ValueError(f"{arg}: a Sequential model has one input; pass an array")
            x = next(iter(x.values()))
        a = as_numeric(x, arg)
        if a.ndim == 0 or len(a) == 0:
            raise ValueError(f"{arg}: expected a batch of samples, got shape {a.shape}")
        want = self._input_shape if self._built else self._layer_list[0].input_shape_arg if self._layer_list else None
        if a.ndim == 1:
            if want == (1,):
                a = a[:, None]
            else:
                raise ValueError(f"{arg}: expected samples of shape {want or '(features,)'}, got a 1-D array of shape "
                                 f"{a.shape}; reshape it to (n, features)")
        self._ensure_built(tuple(a.shape[1:]), arg)
        return [conform(a, arg, self._input_shape, self._input_dtype(), nan_policy,
                        f"input of layer {self._layer_list[0].name!r}")]
