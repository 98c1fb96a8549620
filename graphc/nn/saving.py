"""Saving graphc.nn models. Whole models: ``save_model``/``load_model`` write and read Keras 3's
``.keras`` format (graphc/nn/keras_format.py), so Keras opens graphc's files and graphc
Keras'. Weights: ``save_weights``/``load_weights`` use Keras' h5 layout for ``.weights.h5``
(``.h5``) names and otherwise .npz files (the runtime's format: ``graphc.runtime`` flattens
the state dict), written atomically, with the optimizer's state, step count,
hyper-parameters and the epoch counter when asked. Loading checks everything (names, shapes,
finiteness, the optimizer's state layout) before it changes anything."""
from __future__ import annotations

import os

import numpy as np

from ..errors import GraphcError, StateError
from ..runtime import (check_counter, check_savable, checkpoint_path, flatten_state, nonfinite_entries,
                       read_checkpoint, save_npz_atomic, unflatten_state)

_META = "nn::"  # model-level entries (the epoch counter) beside the runtime's state dict


def _is_h5(filepath) -> bool:
    return os.fspath(filepath).endswith((".h5", ".hdf5"))


def save_model(model, filepath, overwrite: bool = True) -> str:
    """``Model.save``: the .keras file (config, weights and the compiled optimizer's state)."""
    from . import keras_format
    return keras_format.save_model(model, filepath, overwrite)


def load_model(filepath, custom_objects: dict | None = None, compile: bool = True, safe_mode: bool = True,
               target: str = "cpu"):
    """``keras.saving.load_model``: a graphc.nn model from a .keras file written by graphc or
    by Keras 3, compiled as saved (``compile_config``) for ``target`` with the optimizer's
    state restored, so training continues where it stopped. A layer class graphc lacks is a
    KerasFormatError naming it (pass ``custom_objects={"Name": cls}`` for your own layers)."""
    from . import keras_format
    return keras_format.load_model(filepath, custom_objects, compile, safe_mode, target)


def save_weights(model, filepath, include_optimizer: bool, overwrite: bool, allow_nonfinite: bool) -> str:
    """``Model.save_weights``."""
    if _is_h5(filepath):
        from . import keras_format
        return keras_format.save_weights_h5(model, os.fspath(filepath), include_optimizer, overwrite, allow_nonfinite)
    path = checkpoint_path(filepath)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"save_weights: {path} exists and overwrite=False")
    if include_optimizer:
        model._require_compiled()
        fn = model._functions.training_step() or model.train_function
        sd = fn.state_dict()
    else:
        sd = {"params": model._current_weights()}
    if not allow_nonfinite:
        check_savable(sd, f"save_weights: {path}")
    flat = flatten_state(sd)
    if include_optimizer:
        flat[_META + "epochs_seen"] = np.asarray(model._epochs_seen, dtype=np.int64)
    return save_npz_atomic(path, flat, "save_weights")


def load_weights(model, filepath, allow_nonfinite: bool) -> None:
    """``Model.load_weights``."""
    if _is_h5(filepath) or os.fspath(filepath).endswith(".keras"):
        from . import keras_format
        return keras_format.load_weights_h5(model, os.fspath(filepath), allow_nonfinite)
    path, flat = read_checkpoint(filepath, "load_weights")
    where = f"load_weights: {path}"
    meta = {k[len(_META):]: v for k, v in flat.items() if k.startswith(_META)}
    d = unflatten_state({k: v for k, v in flat.items() if not k.startswith(_META)}, where)
    # counters first: a bad one must not reach the weights written below (nor a pending state)
    epochs_seen = check_counter(where, "epochs_seen", meta["epochs_seen"]) if "epochs_seen" in meta else None
    if "step" in d.get("state", {}):
        check_counter(where, "step", d["state"]["step"])
    names = model._weight_names()
    given = dict(d["params"])
    if "state" in d:  # saved with the optimizer: the model's moving statistics are in the state section
        given.update({k: v for k, v in d["state"].items() if k in set(model._state_names())})
    missing, unknown = sorted(set(names) - set(given)), sorted(set(given) - set(names))
    if missing or unknown:
        raise ValueError(f"{where} does not match this model: missing {missing}, unexpected {unknown}")
    current = model._current_weights()
    for k in names:
        if np.shape(given[k]) != current[k].shape:
            raise ValueError(f"{where} does not match this model: weight {k!r} has shape {np.shape(given[k])}, "
                             f"the model's has {current[k].shape}")
    bad = [] if allow_nonfinite else nonfinite_entries(d)
    if bad:
        raise StateError(f"{where}: {bad} hold NaN or infinity (pass allow_nonfinite=True to load them anyway)")
    if "state" not in d:
        model._set_weights_by_name(given, allow_nonfinite)
        return
    if epochs_seen is not None:
        d["epochs_seen"] = epochs_seen
    d["allow_nonfinite"] = allow_nonfinite
    if model.compiled and model.loss is not None and model._functions.get("train", weighted=True) is None:
        model.train_function  # noqa: B018 - built now (no native compile) so everything is checked at once
    if model._functions.training_step() is not None:
        load_optimizer_state(model, d)  # weights, state and hyper-parameters in one all-or-nothing load
    else:
        model._set_weights_by_name(given, allow_nonfinite)
        model._pending_opt_state = d


def load_optimizer_state(model, d: dict) -> None:
    """Weights, state and hyper-parameters of a checkpoint into the training step, all or nothing."""
    fn = model._functions.training_step()
    try:
        fn.load_state_dict({k: d[k] for k in ("params", "state", "hyper") if k in d},
                           allow_nonfinite=d.get("allow_nonfinite", False))
    except GraphcError as e:
        raise ValueError(f"load_weights: the saved optimizer state does not fit this model's optimizer "
                         f"{model.optimizer!r} ({e})") from None
    if "epochs_seen" in d:
        model._epochs_seen = d["epochs_seen"]
