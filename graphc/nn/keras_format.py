"""Keras 3's file formats for graphc.nn models: the ``.keras`` saved model and the
``.weights.h5`` weights file, written and read exactly as Keras 3 does (checked against
Keras 3.15), so a model moves between graphc and Keras in both directions.

A ``.keras`` file is a zip of ``metadata.json``, ``config.json`` (the model's class, its
layers' Keras class names and ``get_config()``, the functional graph as Keras' inbound
nodes, and ``compile_config``: optimizer, loss, metrics) and ``model.weights.h5``. The h5
file addresses a layer NOT by its name but by its position: ``layers/<snake-case class
name>[_<k>]/vars/<i>``, numbered along the model's layers in Keras' order (a functional
model's layers sorted by depth from the inputs, ties in the order a depth-first walk from the
outputs meets them: ``_keras_layer_order``). The compiled optimizer's variables sit under
``optimizer/vars``: ``iterations``, ``learning_rate``, then each slot per trainable weight in
the order the Keras optimizer creates them (``_SLOTS``). h5 needs h5py (the ``keras`` extra).
"""
from __future__ import annotations

import datetime
import inspect
import io
import json
import os
import zipfile
from typing import Any

import numpy as np

from ..atomic import write_atomic
from ..errors import GraphcError
from . import losses as L
from . import metrics as M
from . import optimizers as O
from .base import (
    CallNode, InputLayer, KerasTensor, Layer, _camel_to_snake, _initializer_from_keras, _keras_object,
)

KERAS_VERSION = "3.15.1"  # the Keras release whose files this module writes and was checked against


class KerasFormatError(GraphcError, ValueError):
    """A Keras file graphc cannot read or a model it cannot write in Keras' format (a layer
    class graphc lacks, an unsupported optimizer option, weights that do not fit)."""


def _h5py(what: str):
    try:
        import h5py
    except ImportError:
        raise ImportError(f"{what}: Keras' h5 weights need h5py; install it with pip install 'graphc[keras]' "
                          "(or pip install h5py)") from None
    return h5py


# ---- layers: the registry of Keras class names graphc has ---------------------------------------------

def _layer_classes() -> dict[str, type]:
    from . import layers as lay
    out = {}
    for name in dir(lay):
        obj = getattr(lay, name)
        if isinstance(obj, type) and issubclass(obj, Layer) and obj is not Layer and not name.startswith("_"):
            out[name] = obj
    return out


def _class_name(layer: Layer) -> str:
    return type(layer).__name__


def layer_entry(layer: Layer) -> dict:
    """A layer as Keras writes it in a model's ``layers`` list (without inbound nodes)."""
    cls = type(layer)
    entry = {"module": getattr(cls, "keras_module", "keras.layers" if cls in _layer_classes().values()
                               else cls.__module__),
             "class_name": _class_name(layer), "config": layer.get_config(),
             "registered_name": getattr(cls, "keras_registered_name", None)}
    if _is_attention(layer) and layer.input_shape is not None:  # Keras' build(query_shape, value_shape, key_shape)
        q, v, k = ([None, *s] for s in layer.input_shape)
        entry["build_config"] = {"shapes_dict": {"query_shape": q, "value_shape": v, **({"key_shape": k} if k != v
                                                                                         else {})}}
    elif not isinstance(layer, InputLayer) and layer.input_shape is not None:
        shape = layer.input_shape
        entry["build_config"] = {"input_shape": ([[None, *s] for s in shape] if shape and isinstance(shape[0], tuple)
                                                 else [None, *shape])}
    return entry


def _lenient_config(config: dict) -> dict:
    """A saved layer's config with initializer arguments graphc lacks mapped to the family:
    the saved weights replace the initial values, so only the weights matter."""
    out = dict(config)
    for k, v in config.items():
        if (k.endswith("initializer")) and isinstance(v, dict):
            out[k] = _initializer_from_keras(v, k, lenient=True)
    return out


def layer_from_entry(entry: dict, custom_objects: dict | None) -> Layer:
    """The graphc layer a Keras ``layers`` entry describes; a class graphc lacks is an error
    naming it."""
    name = entry.get("class_name")
    cls = (custom_objects or {}).get(name) or (custom_objects or {}).get(entry.get("registered_name") or "")
    if cls is None:
        cls = _layer_classes().get(name)
        if cls is not None and entry.get("registered_name") not in (None, name, getattr(cls, "keras_registered_name",
                                                                                       None)):
            cls = None  # a custom class that only shares a Keras name
    if cls is None:
        cfg = entry.get("config") or {}
        raise KerasFormatError(f"load_model: layer {cfg.get('name')!r} is a {name} (module {entry.get('module')!r}), "
                               f"which graphc.nn does not have; graphc has {sorted(_layer_classes())} (pass "
                               "custom_objects={name: class} for your own layers)")
    config = entry.get("config") or {}
    try:
        if "custom_objects" in inspect.signature(cls.from_config).parameters:  # Lambda's named functions
            return cls.from_config(_lenient_config(config), custom_objects=custom_objects)
        return cls.from_config(_lenient_config(config))
    except (ValueError, TypeError, NotImplementedError) as e:
        raise KerasFormatError(f"load_model: layer {config.get('name')!r} ({name}): {e}") from None


# ---- the functional graph in Keras' order -------------------------------------------------------------

def _keras_layer_order(model) -> list[Layer]:
    """The functional model's layers in the order Keras' ``Functional.layers`` lists them
    (keras/src/ops/function.py ``map_graph``): by depth from the outputs, deepest (the inputs)
    first, ties by the order a depth-first walk from the outputs first meets each layer."""
    first_seen: dict[int, int] = {}
    finished: set[int] = set()
    post: list[CallNode] = []
    inputs = {id(t) for t in model._in_tensors}

    def visit(t: KerasTensor) -> None:
        node = t._node
        if node.id in finished:
            return
        if id(t) in inputs and node.inputs:
            finished.add(node.id)
            return
        first_seen.setdefault(id(node.layer), len(first_seen))
        for parent in node.inputs:
            visit(parent)
        finished.add(node.id)
        post.append(node)

    for t in model._out_tensors:
        visit(t)
    node_depth: dict[int, int] = {}
    layer_depth: dict[int, int] = {}
    for node in reversed(post):
        d = max(node_depth.setdefault(node.id, 0), layer_depth.get(id(node.layer), 0))
        layer_depth[id(node.layer)] = node_depth[node.id] = d
        for parent in node.inputs:
            pid = parent._node.id
            node_depth[pid] = max(d + 1, node_depth.get(pid, 0))
    layers = {id(n.layer): n.layer for n in post}
    return [layers[k] for k in sorted(layers, key=lambda k: (-layer_depth[k], first_seen[k]))]


def _model_layers(model) -> list[Layer]:
    """The layers whose weights Keras' h5 file lists, in Keras' order (a Sequential's
    InputLayer is not one of its layers in Keras)."""
    from .model import Sequential
    if isinstance(model, Sequential):
        model._ensure_built()
        return [l for l in model.layers if not isinstance(l, InputLayer)]
    return _keras_layer_order(model)


def _unique(name: str, used: dict[str, int]) -> str:
    """Keras' ``_get_unique_name``: ``dense``, ``dense_1``, ``dense_2``, ..."""
    if name not in used:
        used[name] = 0
        return name
    used[name] += 1
    return f"{name}_{used[name]}"


def _layer_paths(class_names: list[str]) -> list[str]:
    used: dict[str, int] = {}
    return [_unique(_camel_to_snake(c), used) for c in class_names]


# ---- model and compile configs --------------------------------------------------------------------------

def _tensor_ref(model_nodes: dict[int, list], t: KerasTensor) -> list:
    node = t._node
    index = 0 if t is node.output else 1 + [i for i, e in enumerate(node.extra_outputs) if e is t][0]
    return [node.layer.name, model_nodes[id(node.layer)].index(node), index]


def _kt(model_nodes, t: KerasTensor) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(t.shape), "dtype": t.dtype, "keras_history": _tensor_ref(model_nodes, t)}}


def _node_entry(model_nodes, node: CallNode) -> dict:
    kt = lambda t: _kt(model_nodes, t)  # noqa: E731
    if node.layer.merge and not _is_attention(node.layer):
        return {"args": [[kt(t) for t in node.args]], "kwargs": {}}
    if _is_attention(node.layer):
        xs, kw = list(node.args), node.kwargs
        kwargs = {}
        rest = xs[2:]
        if kw.get("has_key"):
            kwargs["key"] = kt(rest.pop(0))
        if kw.get("has_mask"):
            kwargs["attention_mask"] = kt(rest.pop(0))
        if kw.get("use_causal_mask"):
            kwargs["use_causal_mask"] = True
        return {"args": [kt(xs[0]), kt(xs[1])], "kwargs": kwargs}
    other = sorted(k for k, v in node.kwargs.items() if not (k == "mask" and isinstance(v, KerasTensor)))
    if other:
        raise KerasFormatError(f"save: layer {node.layer.name!r} was called with options {other} "
                               "that have no Keras form here")
    return {"args": [kt(node.args)], "kwargs": {k: kt(v) for k, v in node.kwargs.items()}}


def _is_attention(layer: Layer) -> bool:
    from .attention import MultiHeadAttention
    return isinstance(layer, MultiHeadAttention)


def _functional_config(model) -> dict:
    order = _keras_layer_order(model)
    in_model = {id(n) for n in model._nodes}
    model_nodes = {id(l): [n for n in l._inbound_nodes if id(n) in in_model or (isinstance(l, InputLayer))]
                   for l in order}
    entries = []
    for i, layer in enumerate(order):
        e = layer_entry(layer)
        if isinstance(layer, InputLayer):
            t = next(t for t in model._in_tensors if t._node.layer is layer)
            e["config"]["dtype"] = model._in_dtypes[model._in_tensors.index(t)]
        e["name"] = layer.name
        e["inbound_nodes"] = [] if isinstance(layer, InputLayer) else [_node_entry(model_nodes, n)
                                                                        for n in model_nodes[id(layer)]]
        entries.append(e)
    ins = [_tensor_ref(model_nodes, t) for t in model._in_tensors]
    outs = [_tensor_ref(model_nodes, t) for t in model._out_tensors]
    if model._out_kind == "dict":
        outs = dict(zip(model._out_names, outs))
    elif model._out_kind == "single":
        outs = outs[0]
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "config": {"name": model.name, "trainable": True, "layers": entries,
                       "input_layers": ins[0] if len(ins) == 1 else ins, "output_layers": outs},
            "registered_name": "Functional", "build_config": {"input_shape": None}}


def _sequential_config(model) -> dict:
    from .base import _DTYPE_POLICY
    model._ensure_built()
    layers = list(model._graph_layers)  # with the InputLayer of a graphc.nn.Input first entry
    entries = []
    if isinstance(layers[0], InputLayer):
        first = layer_entry(layers.pop(0))
    else:
        taken = {l.name for l in layers}
        name = next(n for n in ("input_layer", *(f"input_layer_{k}" for k in range(1, len(taken) + 2)))
                    if n not in taken)
        first = {"module": "keras.layers", "class_name": "InputLayer",
                 "config": {"batch_shape": [None, *model._input_shape], "dtype": "float32", "sparse": False,
                            "ragged": False, "name": name, "optional": False}, "registered_name": None}
    first["config"]["dtype"] = model._in_dtypes[0]
    entries.append(first)
    entries += [layer_entry(l) for l in layers]
    shape = [None, *model._input_shape]
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": model.name, "trainable": True, "dtype": dict(_DTYPE_POLICY), "layers": entries,
                       "build_input_shape": shape},
            "registered_name": None, "build_config": {"input_shape": shape}}


# optimizers: graphc class -> Keras config keys beyond the common ones, and the slots Keras
# creates in order: each inner list is one add_optimizer_variables call (slots interleaved
# per trainable variable); graphc's state keys
def _slots(opt) -> list[list[str]]:
    name = type(opt).__name__
    h = opt.hyperparameters
    if name in ("Adam", "AdamW"):
        return [["m", "v"]]
    if name == "SGD":
        return [["velocity"]] if h["momentum"] != 0.0 else []
    if name == "RMSprop":
        return ([["velocity"]] + ([["momentum"]] if h["momentum"] > 0 else [])
                + ([["average_grad"]] if opt.centered else []))
    if name == "Adagrad":
        return [["accumulator"]]
    if name == "Lion":
        return [["m"]]
    if name == "Nadam":  # then Keras' one u_product scalar (_extra_vars)
        return [["m", "v"]]
    if name == "Adamax":
        return [["m", "u"]]
    if name == "Adafactor":  # Keras keeps a full velocity beside the factored r, c of each matrix
        raise KerasFormatError(f"save: {opt!r}'s state is not written in the Keras format (its variable layout "
                               "differs); save the weights only (include_optimizer=False) or use .npz")
    raise KerasFormatError(f"save: the optimizer {opt!r} has no Keras counterpart")


def _extra_vars(opt) -> list[str]:
    """State keys Keras holds once per optimizer (after the slots); graphc keeps a copy per
    weight, each updated identically."""
    return ["u_product"] if type(opt).__name__ == "Nadam" else []


def _n_head(opt) -> int:
    """Variables before the slots: iterations, and learning_rate unless it is a schedule
    (Keras tracks no variable for a schedule)."""
    return 1 if "learning_rate" in opt.schedules else 2


_OPT_EXTRA = {"Adam": ("beta_1", "beta_2", "epsilon"), "AdamW": ("beta_1", "beta_2", "epsilon"),
              "SGD": ("momentum",), "RMSprop": ("rho", "momentum", "epsilon"), "Adagrad": ("epsilon",),
              "Lion": ("beta_1", "beta_2"), "Nadam": ("beta_1", "beta_2", "epsilon"),
              "Adamax": ("beta_1", "beta_2", "epsilon")}


def _optimizer_config(opt, hyper: dict) -> dict:
    name = type(opt).__name__
    _slots(opt)  # refuses optimizers Keras lacks
    cfg = {"name": name.lower(),  # Keras' default optimizer names: adam, adamw, sgd, rmsprop, ...
           "learning_rate": (O.schedules.serialize(opt.schedules["learning_rate"]) if "learning_rate" in opt.schedules
                             else float(hyper["learning_rate"])),
           "weight_decay": float(hyper["weight_decay"]) if hyper.get("weight_decay") else None,
           "clipnorm": None, "global_clipnorm": opt.global_clipnorm, "clipvalue": None, "use_ema": False,
           "ema_momentum": 0.99, "ema_overwrite_frequency": None, "loss_scale_factor": None,
           "gradient_accumulation_steps": None}
    cfg.update({k: float(hyper[k]) for k in _OPT_EXTRA[name]})
    if name in ("Adam", "AdamW"):
        cfg["amsgrad"] = False
    elif name == "SGD":
        cfg["nesterov"] = opt.nesterov
    elif name == "RMSprop":
        cfg["centered"] = opt.centered
    elif name == "Adagrad":
        cfg["initial_accumulator_value"] = opt.initial_accumulator_value
    return _keras_object("keras.optimizers", name, cfg)


def _optimizer_from_config(d: dict):
    name, cfg = d.get("class_name"), dict(d.get("config") or {})
    cls = getattr(O, name, None) if name in _OPT_EXTRA else None
    if cls is None:
        raise KerasFormatError(f"load_model: the optimizer {name!r} is not supported; graphc has {sorted(_OPT_EXTRA)}")
    lr = cfg.get("learning_rate", 0.001)
    if isinstance(lr, dict):
        try:
            lr = O.schedules.deserialize(lr)
        except (TypeError, ValueError) as e:
            raise KerasFormatError(f"load_model: the optimizer's learning_rate schedule: {e}") from None
    for k, off in (("clipnorm", None), ("clipvalue", None), ("use_ema", False), ("amsgrad", False),
                   ("gradient_accumulation_steps", None), ("loss_scale_factor", None)):
        if cfg.get(k, off) not in (off, None):
            raise KerasFormatError(f"load_model: {name}({k}={cfg[k]!r}) is not supported by graphc")
    kwargs = {"learning_rate": lr if isinstance(lr, O.schedules.LearningRateSchedule) else float(lr)}
    kwargs.update({k: float(cfg[k]) for k in _OPT_EXTRA[name] if k in cfg})
    if cfg.get("weight_decay") is not None:
        kwargs["weight_decay"] = float(cfg["weight_decay"])
    if cfg.get("global_clipnorm") is not None:
        kwargs["global_clipnorm"] = float(cfg["global_clipnorm"])
    for k in ("nesterov", "centered"):
        if k in cfg:
            kwargs[k] = bool(cfg[k])
    if name == "Adagrad" and "initial_accumulator_value" in cfg:
        kwargs["initial_accumulator_value"] = float(cfg["initial_accumulator_value"])
    return cls(**kwargs)


_LOSS_CLASSES = {"MeanSquaredError": "mean_squared_error", "MeanAbsoluteError": "mean_absolute_error",
                 "BinaryCrossentropy": "binary_crossentropy", "CategoricalCrossentropy": "categorical_crossentropy",
                 "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy"}


def _loss_config(loss):
    if loss is None or isinstance(loss, str):
        return loss
    if isinstance(loss, dict):
        return {k: _loss_config(v) for k, v in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [_loss_config(v) for v in loss]
    name = type(loss).__name__
    if isinstance(loss, L._Elementwise):  # Huber(delta), CosineSimilarity(axis), ...: their config
        return _keras_object("keras.losses", name, loss.get_config())
    if name in _LOSS_CLASSES and getattr(loss, "from_logits", False):
        return _keras_object("keras.losses", name, {"name": _LOSS_CLASSES[name], "reduction": "sum_over_batch_size",
                                                   "from_logits": True})
    return getattr(loss, "name", None) or getattr(loss, "__name__", str(loss))


def _loss_from_config(v):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, list):
        return [_loss_from_config(x) for x in v]
    if isinstance(v, dict) and "class_name" not in v:
        return {k: _loss_from_config(x) for k, x in v.items()}
    name, cfg = v.get("class_name"), v.get("config") or {}
    cls = getattr(L, name, None)
    if isinstance(cls, type) and issubclass(cls, L._Elementwise):
        return cls(**{k: cfg[k] for k in cls.options if k in cfg})
    cls = cls if name in _LOSS_CLASSES else None
    if cls is None:
        raise KerasFormatError(f"load_model: the loss {name!r} is not supported; graphc has {sorted(_LOSS_CLASSES)}")
    return cls(from_logits=bool(cfg.get("from_logits", False))) if "from_logits" in cfg else cls()


# Keras' get_config of each built-in metric beyond name and dtype: {key: graphc attribute, or
# (None, the value graphc always has)}; a loaded config with another value is refused
_METRIC_OPTIONS: dict[str, dict] = {
    "BinaryAccuracy": {"threshold": "threshold"},
    "SparseCategoricalAccuracy": {}, "CategoricalAccuracy": {}, "MeanSquaredError": {}, "MeanAbsoluteError": {},
    "SparseTopKCategoricalAccuracy": {"k": "k"}, "TopKCategoricalAccuracy": {"k": "k"},
    "Precision": {"thresholds": "thresholds", "top_k": (None, None), "class_id": (None, None)},
    "Recall": {"thresholds": "thresholds", "top_k": (None, None), "class_id": (None, None)},
    "AUC": {"num_thresholds": "num_thresholds", "curve": "curve", "summation_method": "summation_method",
            "multi_label": (None, False), "num_labels": (None, None), "label_weights": (None, None),
            "from_logits": "from_logits"},
    "F1Score": {"average": "average", "threshold": "threshold"},
}


def _metrics_config(m):
    """Metrics as Keras' compile_config holds them: names as given, a built-in metric object
    as its serialized config (its options: thresholds, k, curve, average, ...)."""
    if m is None or isinstance(m, str):
        return m
    if isinstance(m, dict):
        return {k: _metrics_config(v) for k, v in m.items()}
    if isinstance(m, (list, tuple)):
        return [_metrics_config(v) for v in m]
    cls = type(m).__name__
    if isinstance(m, M.Metric) and getattr(M, cls, None) is type(m) and cls in _METRIC_OPTIONS:
        cfg = {"name": m.name, "dtype": "float32"}
        for key, attr in _METRIC_OPTIONS[cls].items():
            cfg[key] = attr[1] if isinstance(attr, tuple) else getattr(m, attr)
        return _keras_object("keras.metrics", cls, cfg)
    return getattr(m, "name", None) or getattr(m, "__name__", str(m))


def _metrics_from_config(m):
    if m is None or isinstance(m, str):
        return m
    if isinstance(m, list):
        return [_metrics_from_config(v) for v in m]
    if isinstance(m, dict) and "class_name" not in m:
        return {k: _metrics_from_config(v) for k, v in m.items()}
    name = m.get("class_name")
    cls = getattr(M, name, None)
    if not (isinstance(cls, type) and issubclass(cls, M.Metric)) or name not in _METRIC_OPTIONS:
        raise KerasFormatError(f"load_model: the metric {name!r} is not supported by graphc.nn")
    cfg, kwargs = m.get("config") or {}, {}
    for key, attr in _METRIC_OPTIONS[name].items():
        if key not in cfg:
            continue
        if isinstance(attr, tuple):
            if cfg[key] != attr[1]:
                raise KerasFormatError(f"load_model: metric {name}({key}={cfg[key]!r}) is not supported by "
                                       f"graphc.nn (only {key}={attr[1]!r})")
        else:
            kwargs[attr] = cfg[key]
    if name == "AUC" and cfg.get("thresholds") is not None:
        raise KerasFormatError("load_model: metric AUC(thresholds=[...]) is not supported by graphc.nn (only "
                               "num_thresholds evenly spread ones)")
    if "name" in cfg:
        kwargs["name"] = cfg["name"]
    return cls(**kwargs)


def _training_state(model) -> dict | None:
    """The compiled step's state dict, or a loaded one waiting for the step to be built."""
    fn = model._functions.training_step()
    if fn is not None:
        return fn.state_dict()
    return model._pending_opt_state


def compile_config(model) -> dict | None:
    if not model.compiled:
        return None
    sd = _training_state(model)
    hyper = dict(model.optimizer.hyperparameters)
    if sd is not None and "hyper" in sd:
        hyper.update({k: float(np.asarray(v)) for k, v in sd["hyper"].items()})
    return {"optimizer": _optimizer_config(model.optimizer, hyper), "loss": _loss_config(model.loss),
            "loss_weights": model._loss_weights_arg, "metrics": _metrics_config(model._metric_ids) or None,
            "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False}


def model_config(model) -> dict:
    from .model import Sequential
    cfg = _sequential_config(model) if isinstance(model, Sequential) else _functional_config(model)
    cc = compile_config(model)
    if cc is not None:
        cfg["compile_config"] = cc
    return cfg


# ---- the h5 weights ------------------------------------------------------------------------------------

def _weight_groups(model) -> list[tuple[str, str, list[str]]]:
    """``(h5 path of a vars group, the group's name attribute, weight names)`` of every layer."""
    layers = _model_layers(model)
    out = []
    for layer, path in zip(layers, _layer_paths([_class_name(l) for l in layers])):
        for sub, name, nodes in layer._keras_weight_groups():
            out.append((f"layers/{path}/{sub}/vars" if sub else f"layers/{path}/vars", name, [n.name for n in nodes]))
    return out


def _optimizer_arrays(model) -> tuple[str, list[np.ndarray]] | None:
    """(the optimizer's Keras name, its variables in Keras' order), or None if not compiled."""
    if not model.compiled:
        return None
    opt = model.optimizer
    sd = _training_state(model)
    hyper = dict(opt.hyperparameters)
    if sd is not None and "hyper" in sd:
        hyper.update({k: float(np.asarray(v)) for k, v in sd["hyper"].items()})
    step = int(np.asarray(sd["state"]["step"])) if sd is not None and "step" in sd.get("state", {}) else 0
    arrays = [np.asarray(step, np.int64)]
    if _n_head(opt) == 2:
        arrays.append(np.asarray(hyper["learning_rate"], np.float32))
    if sd is not None and "state" in sd:
        train = [w.name for w in _trainable(model)]
        for group in _slots(opt):
            for w in train:
                for key in group:
                    arrays.append(np.asarray(sd["state"][f"{w}/{key}"], np.float32))
        for key in _extra_vars(opt):
            arrays.append(np.asarray(sd["state"][f"{train[0]}/{key}"], np.float32))
    return _optimizer_config(opt, hyper)["config"]["name"], arrays


def _trainable(model) -> list:
    return [n for layer in _model_layers(model) for n in layer.trainable_weights]


def write_weights_h5(model, f, include_optimizer: bool) -> None:
    """Keras' h5 layout into the open (binary) file ``f``."""
    h5py = _h5py("save")
    values = model._current_weights()
    opt = _optimizer_arrays(model) if include_optimizer else None
    with h5py.File(f, "w") as h5:
        h5.create_group("layers")
        for path, name, names in _weight_groups(model):
            g = h5.require_group(path)
            g.attrs["name"] = name
            for i, w in enumerate(names):
                g.create_dataset(str(i), data=values[w])
        if opt is not None:
            g = h5.require_group("optimizer/vars")
            g.attrs["name"] = opt[0]
            for i, a in enumerate(opt[1]):
                g.create_dataset(str(i), data=a)
        h5.require_group("vars").attrs["name"] = model.name


def _read_group(h5, path: str) -> list[np.ndarray] | None:
    if path not in h5:
        return None
    g = h5[path]
    return [np.asarray(g[str(i)]) for i in range(len(g.keys()))]


def read_weights_h5(model, f, where: str) -> tuple[dict[str, np.ndarray], list[np.ndarray] | None]:
    """``({weight name: array}, optimizer variables or None)`` from Keras' h5 layout, checked
    against the model (every group present with the right count and shapes)."""
    h5py = _h5py(where)
    current = model._current_weights()
    out: dict[str, np.ndarray] = {}
    try:
        h5 = h5py.File(f, "r")
    except OSError as e:
        raise KerasFormatError(f"{where}: not an h5 file ({e})") from None
    with h5:
        for path, _, names in _weight_groups(model):
            arrays = _read_group(h5, path) if names else []
            if arrays is None or len(arrays) != len(names):
                got = "nothing" if arrays is None else f"{len(arrays)} arrays"
                raise KerasFormatError(f"{where} does not match this model: {path} should hold {len(names)} weights "
                                       f"({names}), the file has {got}")
            for w, a in zip(names, arrays):
                if a.shape != current[w].shape:
                    raise KerasFormatError(f"{where} does not match this model: weight {w!r} ({path}) has shape "
                                           f"{a.shape} in the file, the model's is {current[w].shape}")
                out[w] = a
        opt = _read_group(h5, "optimizer/vars")
    return out, opt


def optimizer_state(model, arrays: list[np.ndarray], weights: dict, where: str) -> dict | None:
    """A training-step state dict (params, state, hyper) from Keras' optimizer variables, or
    None when the Keras optimizer was never built (no slots: nothing to restore)."""
    opt = model.optimizer
    train = [w.name for w in _trainable(model)]
    slots, extra, head = _slots(opt), _extra_vars(opt), _n_head(opt)
    n_slots = sum(len(g) for g in slots) * len(train) + len(extra)
    if len(arrays) < head or np.asarray(arrays[0]).dtype.kind not in "iu":
        raise KerasFormatError(f"{where}: the saved optimizer variables do not start with the iteration count")
    if len(arrays) == head and n_slots and int(np.asarray(arrays[0])) == 0:
        return None  # compiled in Keras but never trained: no slots yet, nothing to restore
    if len(arrays) != head + n_slots:
        what = "iterations" + (", learning_rate" if head == 2 else " (its learning rate is a schedule)")
        raise KerasFormatError(f"{where}: the saved optimizer has {len(arrays)} variables; this model's {opt!r} "
                               f"has {head + n_slots} ({what} and {n_slots} slots)")
    state: dict[str, np.ndarray] = {"step": np.asarray(int(np.asarray(arrays[0])), np.int64)}
    i = head
    for group in slots:
        for w in train:
            for key in group:
                a = np.asarray(arrays[i], np.float32)
                if a.shape != np.shape(weights[w]):
                    raise KerasFormatError(f"{where}: optimizer variable {i} ({key} of {w!r}) has shape {a.shape}, "
                                           f"the weight's is {np.shape(weights[w])}")
                state[f"{w}/{key}"] = a
                i += 1
    for key in extra:  # one scalar in Keras, a copy per weight in graphc
        a = np.asarray(arrays[i], np.float32)
        if a.shape != ():
            raise KerasFormatError(f"{where}: optimizer variable {i} ({key}) has shape {a.shape}, expected a scalar")
        state.update({f"{w}/{key}": a.copy() for w in train})
        i += 1
    states = set(model._state_names())
    state.update({k: v for k, v in weights.items() if k in states})
    hyper = dict(opt.hyperparameters)
    if head == 2:
        hyper["learning_rate"] = float(np.asarray(arrays[1]))
    return {"params": {k: v for k, v in weights.items() if k not in states}, "state": state, "hyper": hyper}


def restore(model, weights: dict, opt_arrays, where: str, allow_nonfinite: bool = False) -> None:
    """Set the weights and, for a compiled model, the optimizer's state (restored into the
    training step now, or when it is built), all checked first."""
    d = None
    if opt_arrays is not None and model.compiled:
        d = optimizer_state(model, opt_arrays, weights, where)
    model._set_weights_by_name(weights, allow_nonfinite)
    if d is None:
        return
    from .saving import load_optimizer_state
    d["allow_nonfinite"] = allow_nonfinite
    if model._functions.training_step() is not None:
        load_optimizer_state(model, d)
    else:
        model._pending_opt_state = d


# ---- whole models ------------------------------------------------------------------------------------------

def save_model(model, filepath, overwrite: bool = True) -> str:
    path = os.fspath(filepath)
    if not path.endswith(".keras"):
        raise ValueError(f"save: the filepath must end in .keras (Keras 3's format), got {path!r}; use "
                         "save_weights for .weights.h5 or .npz files")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"save: {path} exists and overwrite=False")
    from ..runtime import check_savable
    check_savable({"params": model._current_weights()}, f"save: {path}")
    config = json.dumps(model_config(model))  # every check (layers, optimizer, loss) before writing
    h5 = io.BytesIO()
    write_weights_h5(model, h5, include_optimizer=True)
    metadata = json.dumps({"keras_version": KERAS_VERSION,
                           "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")})

    def write(f):
        with zipfile.ZipFile(f, "w") as z:
            z.writestr("metadata.json", metadata)
            z.writestr("config.json", config)
            z.writestr("model.weights.h5", h5.getvalue())
    write_atomic(path, write)
    return path


def _read_keras_zip(path: str, where: str) -> tuple[dict, bytes]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{where}: no file at {path}")
    if not zipfile.is_zipfile(path):
        raise KerasFormatError(f"{where}: {path} is not a .keras file (not a zip archive)")
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        if "config.json" not in names or "model.weights.h5" not in names:
            raise KerasFormatError(f"{where}: {path} lacks config.json or model.weights.h5 (files: {sorted(names)})")
        return json.loads(z.read("config.json")), z.read("model.weights.h5")


_MASK = object()  # the output of a mask op in a Keras graph (graphc computes masks itself)


def _is_mask_op(entry: dict) -> bool:
    """A ``not_equal(x, 0)`` op as Keras records an Embedding's ``mask_zero`` mask."""
    nodes = entry.get("inbound_nodes") or []
    return len(nodes) == 1 and len(nodes[0].get("args", [])) == 2 and nodes[0]["args"][1] == 0


def _only_masks(v) -> bool:
    if isinstance(v, list):
        return all(_only_masks(x) for x in v)
    return v is None or v is _MASK


def _build_functional(cfg: dict, custom_objects):
    from .base import Input
    from .model import Model
    c = cfg["config"]
    layers: dict[str, Layer] = {}
    produced: dict[tuple[str, int], list] = {}  # (layer, node index) -> output tensors
    todo = []
    for entry in c["layers"]:
        name = entry.get("name") or entry["config"].get("name")
        if entry["class_name"] == "NotEqual" and _is_mask_op(entry):
            # Embedding(mask_zero=True)'s mask (ids != 0), which graphc's layers propagate themselves
            produced[(name, 0)] = [_MASK]
            continue
        if entry["class_name"] == "InputLayer":
            lc = entry["config"]
            layer = InputLayer.from_config(lc)
            t = Input(shape=layer.input_shape_arg, dtype=lc.get("dtype"), name=name)
            layers[name] = t._node.layer
            produced[(name, 0)] = [t]
            continue
        layers[name] = layer_from_entry(entry, custom_objects)
        todo += [(name, k, n) for k, n in enumerate(entry.get("inbound_nodes", []))]

    def resolve(v):
        if isinstance(v, dict) and v.get("class_name") == "__keras_tensor__":
            lname, k, i = v["config"]["keras_history"]
            outs = produced.get((lname, k))
            if outs is None:
                raise LookupError
            return outs[i]
        if isinstance(v, list):
            return [resolve(x) for x in v]
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        return v

    while todo:
        progress = False
        for item in list(todo):
            name, k, node = item
            try:
                args = resolve(node.get("args", []))
                kwargs = resolve(node.get("kwargs", {}))
            except LookupError:
                continue
            kwargs = {key: v for key, v in kwargs.items()
                      if not (key in ("training", "mask") and (not v if key == "training" else _only_masks(v)))}
            if "training" in kwargs or ("mask" in kwargs and not isinstance(kwargs["mask"], KerasTensor)):
                raise KerasFormatError(f"load_model: layer {name!r} is called with {sorted(kwargs)}, which graphc "
                                       "does not support in a saved graph")
            out = layers[name](*args, **kwargs)
            produced[(name, k)] = out if isinstance(out, list) else [out]
            todo.remove(item)
            progress = True
        if not progress:
            raise KerasFormatError(f"load_model: the functional graph cannot be rebuilt: layers "
                                   f"{sorted({n for n, _, _ in todo})} wait for tensors no layer produces")

    def refs(v):
        if isinstance(v, dict):
            return {k: refs(x) for k, x in v.items()}
        if v and isinstance(v[0], list):
            return [refs(x) for x in v]
        return produced[(v[0], v[1])][v[2]]
    return Model(refs(c["input_layers"]), refs(c["output_layers"]), name=c.get("name"))


def _build_sequential(cfg: dict, custom_objects):
    from .model import Sequential
    c = cfg["config"]
    layers = []
    for entry in c["layers"]:
        if entry["class_name"] == "InputLayer":
            layers.append(InputLayer.from_config(entry["config"]))
        else:
            layers.append(layer_from_entry(entry, custom_objects))
    model = Sequential(layers, name=c.get("name"))
    shape = c.get("build_input_shape") or (cfg.get("build_config") or {}).get("input_shape")
    if shape is not None:
        model.build(tuple(shape))
    return model


def model_from_config(cfg: dict, custom_objects=None):
    kind = cfg.get("class_name")
    if kind == "Sequential":
        return _build_sequential(cfg, custom_objects)
    if kind in ("Functional", "Model") and "layers" in (cfg.get("config") or {}):
        return _build_functional(cfg, custom_objects)
    raise KerasFormatError(f"load_model: the model class {kind!r} (module {cfg.get('module')!r}) is not supported; "
                           "graphc loads Sequential and functional models")


def load_model(filepath, custom_objects: dict | None = None, compile: bool = True, safe_mode: bool = True,
               target: str = "cpu"):
    """``keras.models.load_model`` for .keras files (graphc's or Keras 3's). As in Keras,
    ``safe_mode`` refuses the one thing in a .keras file that would run code from it: a
    ``Lambda``'s Python lambda, saved as bytecode (``safe_mode=False`` loads it)."""
    path = os.fspath(filepath)
    where = f"load_model: {path}"
    if not path.endswith(".keras"):
        raise ValueError(f"load_model: expected a .keras file (Keras 3's format), got {path!r}")
    cfg, h5 = _read_keras_zip(path, "load_model")
    from .lambda_layer import safe_mode_scope
    with safe_mode_scope(safe_mode):
        model = model_from_config(cfg, custom_objects)
    cc = cfg.get("compile_config") if compile else None
    if cc:
        try:
            model.compile(optimizer=_optimizer_from_config(cc["optimizer"]), loss=_loss_from_config(cc.get("loss")),
                          loss_weights=cc.get("loss_weights"), metrics=_metrics_from_config(cc.get("metrics")),
                          target=target)
        except (KeyError, TypeError, ValueError) as e:
            raise KerasFormatError(f"{where}: the saved compile config cannot be restored ({e}); pass compile=False "
                                   "to load the model uncompiled") from None
    weights, opt = read_weights_h5(model, io.BytesIO(h5), where)
    restore(model, weights, opt, where)
    return model


def save_weights_h5(model, path: str, include_optimizer: bool, overwrite: bool, allow_nonfinite: bool) -> str:
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"save_weights: {path} exists and overwrite=False")
    if not allow_nonfinite:
        from ..runtime import check_savable
        check_savable({"params": model._current_weights()}, f"save_weights: {path}")
    buf = io.BytesIO()
    write_weights_h5(model, buf, include_optimizer)
    write_atomic(path, lambda f: f.write(buf.getvalue()))
    return path


def load_weights_h5(model, path: str, allow_nonfinite: bool) -> None:
    where = f"load_weights: {path}"
    if path.endswith(".keras"):
        _, data = _read_keras_zip(path, "load_weights")
        f: Any = io.BytesIO(data)
    elif not os.path.exists(path):
        raise FileNotFoundError(f"{where}: no such file")
    else:
        f = path
    weights, opt = read_weights_h5(model, f, where)
    from ..runtime import nonfinite_entries
    from ..errors import StateError
    bad = [] if allow_nonfinite else nonfinite_entries({"params": weights})
    if bad:
        raise StateError(f"{where}: {bad} hold NaN or infinity (pass allow_nonfinite=True to load them anyway)")
    restore(model, weights, opt, where, allow_nonfinite)
