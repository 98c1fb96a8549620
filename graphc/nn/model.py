"""Sequential: a Keras-style model whose every fit() batch is ONE compiled graphc step.

The layers build a DSL graph; ``compile`` picks the optimizer, loss and metrics, and the
first ``fit`` compiles ``loss`` (plus the metrics, as extra outputs of the same step) with
:func:`graphc.compile`. ``evaluate`` and ``predict`` use forward-only compiled functions
that share the training step's weights (``params=step``): no copies, always current.
"""
from __future__ import annotations

import numbers
import os
import sys
import warnings
from typing import Any

import numpy as np

from .. import dsl as F
from .. import optim
from .. import backends
from ..api import compile as gc_compile
from ..errors import GraphcError, StateError
from ..runtime import (check_savable, checkpoint_path, flatten_state, nonfinite_entries, read_checkpoint,
                       save_npz_atomic, unflatten_state)
from . import losses as L
from . import metrics as M
from .callbacks import Callback, CallbackList, History
from .layers import InputLayer, Layer
from .progress import Progbar

_NAN_POLICIES = ("raise", "warn", "ignore")
_META = "nn::"


def _positive_int(v, arg: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise ValueError(f"{arg}: expected a positive int, got {v!r}")
    return int(v)


def _verbose(v) -> int:
    if v == "auto":
        return 1
    if v not in (0, 1, 2):
        raise ValueError(f"verbose: expected 0, 1, 2 or 'auto', got {v!r}")
    return int(v)


def _check_finite(a: np.ndarray, arg: str, policy: str) -> None:
    if policy == "ignore" or a.dtype.kind != "f":
        return
    bad = ~np.isfinite(a)
    if bad.any():
        rows = np.nonzero(bad.reshape(len(a), -1).any(axis=1))[0]
        msg = (f"{arg}: contains {int(bad.sum())} NaN or infinite value(s) in {len(rows)} sample(s) "
               f"(first at sample {rows[0]}); clean the data, or pass nan_policy='warn' or 'ignore'")
        if policy == "raise":
            raise ValueError(msg)
        warnings.warn(msg, stacklevel=4)


class Sequential:
    """A linear stack of layers, trained by one compiled graphc step per batch."""

    def __init__(self, layers=None, name: str | None = None):
        self.name = name or "sequential"
        self.layers: list[Layer] = []
        self._built = False
        self._input_shape: tuple | None = None
        self._output_shape: tuple | None = None
        self.optimizer = None
        self.loss = None
        self._metric_ids: list = []
        self._metrics: list = []
        self.compiled = False
        self._target = "cpu"
        self._seed = 0
        self._train_fn = self._test_fn = self._predict_fn = None
        self._initial_weights: dict | None = None
        self._pending_opt_state: dict | None = None
        self._epochs_seen = 0
        self.stop_training = False
        self._stop_now = False
        self.history: History | None = None
        for layer in layers or []:
            self.add(layer)

    # ---- structure ---------------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a graphc.nn layer, got {layer!r}")
        if any(layer is l for l in self.layers) or (layer._model is not None and layer._model is not self):
            raise ValueError(f"Sequential.add: layer {layer.name or layer.default_name!r} already belongs to a model")
        if self._built:
            self._unbuild()
        if self.layers and layer.input_shape_arg is not None:
            warnings.warn(f"input_shape given to layer {len(self.layers)} ({type(layer).__name__}) is ignored: "
                          "only the first layer's counts", stacklevel=2)
        self.layers.append(layer)
        layer._model = self

    def pop(self) -> Layer:
        if not self.layers:
            raise ValueError("Sequential.pop: the model has no layers")
        if self._built:
            self._unbuild()
        layer = self.layers.pop()
        layer._model = None
        return layer

    def _unbuild(self) -> None:
        weights = self._current_weights() if self._owner() is not None else None
        for layer in self.layers:
            layer.built = False
        self._built = False
        self._reset_functions()
        if weights:
            self._initial_weights = weights

    def _reset_functions(self) -> None:
        self._train_fn = self._test_fn = self._predict_fn = None

    def _assign_names(self) -> None:
        taken = {l._given_name for l in self.layers if l._given_name}
        if len(taken) != len([l for l in self.layers if l._given_name]):
            names = [l._given_name for l in self.layers if l._given_name]
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"Sequential: layer names must be unique, {dup} repeat")
        counters: dict[str, int] = {}
        for layer in self.layers:
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

    def build(self, input_shape=None) -> None:
        """Build for inputs of ``input_shape`` (with the batch dim, as Keras: ``(None, 10)``)."""
        if input_shape is not None:
            input_shape = tuple(input_shape)[1:]
        self._ensure_built(input_shape)

    def _ensure_built(self, feature_shape: tuple | None = None, arg: str = "x") -> None:
        if self._built:
            if feature_shape is not None and tuple(feature_shape) != self._input_shape:
                raise ValueError(f"{arg}: the model expects samples of shape {self._input_shape} "
                                 f"(input of layer {self.layers[0].name!r}), got samples of shape {tuple(feature_shape)}")
            return
        if not self.layers:
            raise ValueError("Sequential: the model has no layers; add some first")
        declared = self.layers[0].input_shape_arg
        if declared is not None and feature_shape is not None and tuple(feature_shape) != declared:
            raise ValueError(f"{arg}: the model expects samples of shape {declared} (input_shape of the first layer), "
                             f"got samples of shape {tuple(feature_shape)}")
        shape = declared if declared is not None else feature_shape
        if shape is None:
            raise ValueError("the model is not built: give the first layer input_shape=..., call build((None, ...)), "
                             "or call fit/predict with data first")
        self._assign_names()
        s = tuple(shape)
        for layer in self.layers:
            s = layer._build(s)
        self._input_shape, self._output_shape = tuple(shape), s
        self._built = True

    @property
    def built(self) -> bool:
        return self._built

    @property
    def input_shape(self) -> tuple:
        self._ensure_built()
        return (None,) + self._input_shape

    @property
    def output_shape(self) -> tuple:
        self._ensure_built()
        return (None,) + self._output_shape

    def _forward(self, x, training: bool):
        h = x
        for layer in self.layers[:-1]:
            h = layer.call(h, training)
        last = self.layers[-1]
        pre, act = last.call_split(h, training)
        return last.call(h, training), pre, act

    def __call__(self, x, training: bool = False):
        """Apply the model to a graphc tensor (builds the model from its shape if needed)."""
        self._ensure_built(tuple(x.shape[1:]))
        return self._forward(x, training)[0]

    # ---- compile -----------------------------------------------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics=None, target: str = "cpu",
                seed: int = 0) -> None:
        """Choose optimizer (name or graphc.optim.Optimizer), loss (name, Loss or function),
        metrics, the graphc ``target`` and the ``seed`` of weight initialization, shuffling
        and dropout masks. Recompiling keeps the current weights and resets optimizer state."""
        if target not in backends.targets():
            raise ValueError(f"compile(target=...): unknown target {target!r}; choose from {backends.targets()}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"compile(seed=...): expected a non-negative int, got {seed!r}")
        if isinstance(optimizer, type) and issubclass(optimizer, optim.Optimizer):
            optimizer = optimizer()
        try:
            opt = optim.get(optimizer)
        except ValueError as e:
            raise ValueError(f"compile(optimizer=...): {e}") from None
        loss_obj = L.get(loss) if loss is not None else None
        if metrics is None:
            metrics = []
        elif isinstance(metrics, (str, M.Metric)) or callable(metrics):
            metrics = [metrics]
        elif isinstance(metrics, dict):
            raise ValueError("compile(metrics=...): a dict of metrics is for multi-output models; pass a list")
        metrics = list(metrics)
        for m in metrics:  # names are checked now; resolution waits for the output shape
            if isinstance(m, str):
                M.get(m, (2,), ())
        had_step = self._train_fn is not None
        if self._owner() is not None:
            self._initial_weights = self._current_weights()
        if had_step:
            self._pending_opt_state = None
        self._reset_functions()
        self.optimizer, self.loss, self._metric_ids = opt, loss_obj, metrics
        self._target, self._seed = target, int(seed)
        self._metrics = []
        self.compiled = True

    def _resolve_metrics(self) -> list:
        label_shape, _ = self.loss.label_spec(self._output_shape) if self.loss else (self._output_shape, None)
        out, seen = [], {"loss"}
        for ident in self._metric_ids:
            m = M.get(ident, self._output_shape, label_shape)
            name, k = m.name, 1
            while m.name in seen:
                k += 1
                m.name = f"{name}_{k}"
            seen.add(m.name)
            out.append(m)
        return out

    @property
    def metrics_names(self) -> list[str]:
        self._require_compiled()
        self._ensure_built()
        return ["loss"] + [m.name for m in self._resolve_metrics()]

    def _require_compiled(self, what: str = "train") -> None:
        if not self.compiled:
            raise RuntimeError(f"You must compile your model before {what}ing it. Use model.compile(optimizer, loss).")
        if self.loss is None:
            raise ValueError("compile(loss=...): no loss was given; recompile with a loss to train or evaluate")

    # ---- the compiled programs -----------------------------------------------------------------
    def _owner(self):
        return self._train_fn or self._test_fn or self._predict_fn

    def _params_arg(self):
        owner = self._owner()
        if owner is not None:
            return owner
        init = self._initial_weights
        if init:  # after pop()/add() a weight may be gone or reshaped: it starts fresh, as in Keras
            shapes = {w.name: w.shape for w in self.weights}
            init = {k: v for k, v in init.items() if shapes.get(k) == np.shape(v)}
        return init

    def _inputs(self):
        x = F.input("x", (None,) + self._input_shape, dtype=self._input_dtype())
        shape, dtype = self.loss.label_spec(self._output_shape)
        y = F.input("y", (None,) + tuple(shape), dtype=dtype)
        return x, y

    @property
    def train_function(self):
        """The compiled training step (forward, backward, update, metrics) run by each fit() batch."""
        if self._train_fn is None:
            self._require_compiled()
            self._ensure_built()
            x, y = self._inputs()
            out, pre, act = self._forward(x, training=True)
            loss = self.loss.build(y, out, pre, act)
            self._metrics = self._resolve_metrics()
            extras = {m.name: m.build(y, out, pre, act) for m in self._metrics}
            self._train_fn = gc_compile(loss, optimizer=self.optimizer, target=self._target, outputs=extras or None,
                                        params=self._params_arg(), seed=self._seed,
                                        check_finite=False)  # fit() applies nan_policy to the data once
            self._initial_weights = None
            if self._pending_opt_state is not None:
                pending, self._pending_opt_state = self._pending_opt_state, None
                self._load_opt_state(pending)
        return self._train_fn

    @property
    def test_function(self):
        """Forward-only loss and metrics (dropout off), sharing the training step's weights."""
        if self._test_fn is None:
            self._require_compiled("evaluat")
            self._ensure_built()
            x, y = self._inputs()
            out, pre, act = self._forward(x, training=False)
            metrics = self._resolve_metrics()
            outs = {"loss": self.loss.build(y, out, pre, act), **{m.name: m.build(y, out, pre, act) for m in metrics}}
            self._test_fn = gc_compile(outs, target=self._target, params=self._params_arg(), seed=self._seed,
                                       check_finite=False)
            self._initial_weights = None
        return self._test_fn

    @property
    def predict_function(self):
        """Forward-only model output (dropout off), sharing the training step's weights."""
        if self._predict_fn is None:
            self._ensure_built()
            x = F.input("x", (None,) + self._input_shape, dtype=self._input_dtype())
            out, _, _ = self._forward(x, training=False)
            self._predict_fn = gc_compile(out, target=self._target, params=self._params_arg(), seed=self._seed,
                                          check_finite=False)
            self._initial_weights = None
        return self._predict_fn

    def _store_owner(self):
        self._ensure_built()
        owner = self._owner()
        return owner if owner is not None else self.predict_function

    # ---- data checks ---------------------------------------------------------------------------
    def _check_x(self, x, arg: str, nan_policy: str) -> np.ndarray:
        try:
            a = np.asarray(x)
        except Exception as e:
            raise ValueError(f"{arg}: could not be read as an array ({e})") from None
        if a.dtype == object or a.dtype.kind not in "biuf":
            raise ValueError(f"{arg}: expected numeric data, got dtype {a.dtype}")
        if a.ndim == 0 or len(a) == 0:
            raise ValueError(f"{arg}: expected a batch of samples, got shape {a.shape}")
        want = self._input_shape if self._built else self.layers[0].input_shape_arg if self.layers else None
        if a.ndim == 1:
            if want == (1,):
                a = a[:, None]
            else:
                raise ValueError(f"{arg}: expected samples of shape {want or '(features,)'}, got a 1-D array of shape "
                                 f"{a.shape}; reshape it to (n, features)")
        self._ensure_built(tuple(a.shape[1:]), arg)
        dtype = self._input_dtype()
        if np.dtype(dtype).kind in "iu":  # ids (an Embedding first): whole numbers, as Keras casts them
            if a.dtype.kind == "f" and not (np.isfinite(a).all() and (a == np.round(a)).all()):
                raise ValueError(f"{arg}: the model's first layer takes integer ids, got non-integer values")
            return np.ascontiguousarray(a, dtype=dtype)
        a = np.ascontiguousarray(a, dtype=np.float32)
        _check_finite(a, arg, nan_policy)
        return a

    def _input_dtype(self) -> str:
        """What the model is fed: float32, or int64 ids when the first layer says so."""
        first = next((lay for lay in self.layers if not isinstance(lay, InputLayer)), None)
        return getattr(first, "input_dtype", "float32")

    def _check_xy(self, x, y, xarg: str, yarg: str, nan_policy: str):
        xa = self._check_x(x, xarg, nan_policy)
        if y is None:
            raise ValueError(f"{yarg}: labels are required")
        try:
            ya = np.asarray(y)
        except Exception as e:
            raise ValueError(f"{yarg}: could not be read as an array ({e})") from None
        if ya.ndim == 0:
            raise ValueError(f"{yarg}: expected one label per sample, got a scalar")
        if len(ya) != len(xa):
            raise ValueError(f"{xarg} and {yarg} have different numbers of samples: {xarg} has {len(xa)}, "
                             f"{yarg} has {len(ya)}")
        if ya.dtype.kind == "f":
            _check_finite(ya, yarg, nan_policy)
        ya = self.loss.prepare(ya, self._output_shape, yarg)
        return xa, ya

    # ---- training ------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size: int | None = None, epochs: int = 1, verbose="auto", callbacks=None,
            validation_split: float = 0.0, validation_data=None, shuffle: bool = True, initial_epoch: int = 0,
            nan_policy: str = "raise"):
        """Train for ``epochs`` (from ``initial_epoch``); returns a History.

        Every argument is checked before training starts; bad data raises ValueError naming
        the argument. ``nan_policy``: what NaN/inf in the data does ('raise', 'warn', 'ignore').
        Shuffling and dropout masks come from generators seeded by (compile seed, number of
        epochs this model has trained), so runs repeat exactly, and resume exactly after
        ``load_weights`` of a checkpoint saved with ``include_optimizer=True``.
        """
        self._require_compiled()
        if nan_policy not in _NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {_NAN_POLICIES}, got {nan_policy!r}")
        verbose = _verbose(verbose)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
            raise ValueError(f"epochs: expected a non-negative int, got {epochs!r}")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral) or initial_epoch < 0:
            raise ValueError(f"initial_epoch: expected a non-negative int, got {initial_epoch!r}")
        if not isinstance(validation_split, numbers.Real) or not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split: expected a float in [0, 1), got {validation_split!r}")
        if x is None:
            raise ValueError("x: training data is required")
        xa, ya = self._check_xy(x, y, "x", "y", nan_policy)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data: expected a tuple (x_val, y_val)")
            if len(validation_data) == 3 and validation_data[2] is not None:
                raise ValueError("validation_data: sample weights are not supported; pass (x_val, y_val)")
            val = self._check_xy(validation_data[0], validation_data[1], "validation_data[0]", "validation_data[1]",
                                 nan_policy)
        elif validation_split > 0:
            split_at = int(np.floor(len(xa) * (1.0 - validation_split)))
            if split_at == 0 or split_at == len(xa):
                raise ValueError(f"validation_split: {validation_split} of {len(xa)} samples leaves an empty "
                                 "training or validation set")
            val = (xa[split_at:], ya[split_at:])
            xa, ya = xa[:split_at], ya[:split_at]
        user_cbs = list(callbacks or [])
        for c in user_cbs:
            if not isinstance(c, Callback):
                raise ValueError(f"callbacks: expected graphc.nn.callbacks.Callback objects, got {c!r}")

        step = self.train_function
        n = len(xa)
        steps = -(-n // batch_size)
        history = History()
        cbs = CallbackList(user_cbs + [history], self,
                           {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size})
        self.history = history
        self.stop_training = self._stop_now = False
        dropout_layers = [l for l in self.layers if type(l).feeds is not Layer.feeds]
        names = ["loss"] + [m.name for m in self._metrics]
        out = sys.stdout
        cbs.on_train_begin({})
        for epoch in range(initial_epoch, epochs):
            if verbose:
                out.write(f"Epoch {epoch + 1}/{epochs}\n")
            bar = Progbar(steps, verbose, stream=out)
            cbs.on_epoch_begin(epoch, {})
            key = self._epochs_seen
            order = np.random.default_rng([self._seed, 1, key]).permutation(n) if shuffle else None
            drop_rng = np.random.default_rng([self._seed, 2, key])
            sums = dict.fromkeys(names, 0.0)
            seen = 0
            for b in range(steps):
                lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
                if order is None:
                    xb, yb = xa[lo:hi], ya[lo:hi]
                else:
                    idx = order[lo:hi]
                    xb, yb = xa[idx], ya[idx]
                feeds = {"x": xb, "y": yb}
                for layer in dropout_layers:
                    feeds.update(layer.feeds(hi - lo, drop_rng))
                cbs.on_train_batch_begin(b, {})
                res = step(**feeds)
                batch_logs = {k: float(res[k]) for k in names}
                for k in names:
                    sums[k] += batch_logs[k] * (hi - lo)
                seen += hi - lo
                cbs.on_train_batch_end(b, batch_logs)
                bar.update(b + 1, {k: sums[k] / seen for k in names})
                if self._stop_now:
                    break
            self._epochs_seen += 1
            logs = {k: sums[k] / max(seen, 1) for k in names}
            if val is not None:
                for k, v in self._evaluate_arrays(val[0], val[1], batch_size).items():
                    logs["val_" + k] = v
            bar.update(seen and b + 1, logs, finalize=True)
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cbs.on_train_end({})
        return history

    # ---- evaluation and prediction ---------------------------------------------------------------
    def _evaluate_arrays(self, xa, ya, batch_size, bar: Progbar | None = None) -> dict[str, float]:
        fn = self.test_function
        sums: dict[str, float] = {}
        n = len(xa)
        steps = -(-n // batch_size)
        for b in range(steps):
            lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
            res = fn(x=xa[lo:hi], y=ya[lo:hi])
            for k, v in res.items():
                sums[k] = sums.get(k, 0.0) + float(v) * (hi - lo)
            if bar is not None:
                bar.update(b + 1, {k: v / hi for k, v in sums.items()})
        logs = {k: v / n for k, v in sums.items()}
        if bar is not None:
            bar.update(steps, logs, finalize=True)
        return logs

    def evaluate(self, x=None, y=None, batch_size: int | None = None, verbose="auto", return_dict: bool = False,
                 nan_policy: str = "raise"):
        """Loss (and metrics) over ``x, y`` with dropout off: a float, or ``[loss, *metrics]``,
        or a dict with ``return_dict=True``."""
        self._require_compiled("evaluat")
        if nan_policy not in _NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {_NAN_POLICIES}, got {nan_policy!r}")
        verbose = _verbose(verbose)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
        xa, ya = self._check_xy(x, y, "x", "y", nan_policy)
        bar = Progbar(-(-len(xa) // batch_size), verbose) if verbose else None
        logs = self._evaluate_arrays(xa, ya, batch_size, bar)
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    def predict(self, x, batch_size: int | None = None, verbose=0, nan_policy: str = "raise") -> np.ndarray:
        """The model's outputs for ``x`` (dropout off). Batches are padded to ``batch_size`` so
        one compiled specialization serves every call."""
        if nan_policy not in _NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {_NAN_POLICIES}, got {nan_policy!r}")
        verbose = _verbose(verbose)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
        xa = self._check_x(x, "x", nan_policy)
        fn = self.predict_function
        n = len(xa)
        steps = -(-n // batch_size)
        bar = Progbar(steps, verbose) if verbose else None
        outs = []
        for b in range(steps):
            xb = xa[b * batch_size:(b + 1) * batch_size]
            m = len(xb)
            if m < batch_size and steps > 1:
                xb = np.concatenate([xb, np.zeros((batch_size - m,) + xb.shape[1:], xb.dtype)])
            outs.append(np.asarray(fn(x=xb))[:m])
            if bar is not None:
                bar.update(b + 1, finalize=b + 1 == steps)
        return np.concatenate(outs)

    def predict_on_batch(self, x) -> np.ndarray:
        return np.asarray(self.predict_function(x=self._check_x(x, "x", "ignore")))

    def train_on_batch(self, x, y) -> float | list[float]:
        """One training step on one batch (dropout masks from the model's generator)."""
        self._require_compiled()
        xa, ya = self._check_xy(x, y, "x", "y", "raise")
        step = self.train_function
        feeds = {"x": xa, "y": ya}
        rng = np.random.default_rng([self._seed, 3, step.iterations])
        for layer in self.layers:
            feeds.update(layer.feeds(len(xa), rng))
        res = step(**feeds)
        vals = [float(res["loss"])] + [float(res[m.name]) for m in self._metrics]
        return vals[0] if len(vals) == 1 else vals

    # ---- weights -----------------------------------------------------------------------------------
    def _weight_names(self) -> list[str]:
        self._ensure_built()
        return [n for layer in self.layers for n in layer.weight_names]

    def _current_weights(self) -> dict[str, np.ndarray]:
        return self._store_owner().params

    def _weights_by_name(self) -> dict[str, np.ndarray]:
        return self._current_weights()

    def _set_weights_by_name(self, values: dict, allow_nonfinite: bool = False) -> None:
        owner = self._store_owner()
        current = owner.params
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
        owner.set_params(checked, allow_nonfinite=allow_nonfinite)  # casts, then checks the values

    @property
    def weights(self) -> list:
        """The parameter nodes, in layer order (kernel, bias, ...)."""
        self._ensure_built()
        return [n for layer in self.layers for n in layer.weights]

    trainable_weights = weights

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
        (``.npz`` is appended if missing)."""
        path = checkpoint_path(filepath)
        if not overwrite and os.path.exists(path):
            raise FileExistsError(f"save_weights: {path} exists and overwrite=False")
        if include_optimizer:
            self._require_compiled()
            sd = self.train_function.state_dict()
        else:
            sd = {"params": self._current_weights()}
        if not allow_nonfinite:
            check_savable(sd, f"save_weights: {path}")
        flat = flatten_state(sd)
        if include_optimizer:
            flat[_META + "epochs_seen"] = np.asarray(self._epochs_seen, dtype=np.int64)
        return save_npz_atomic(path, flat)

    def load_weights(self, filepath, allow_nonfinite: bool = False) -> None:
        """Load what ``save_weights`` wrote (``filepath`` as given to it: ``ckpt`` finds
        ``ckpt.npz``). Everything is checked before anything changes: the file, the weight
        names and shapes, and, for a checkpoint with optimizer state in a compiled model, that
        state against this model's optimizer (an Adam checkpoint does not load into an SGD
        model). Values holding NaN/infinity are refused unless ``allow_nonfinite``. In a model
        not compiled yet, the optimizer state is restored when the training step is built."""
        path, flat = read_checkpoint(filepath, "load_weights")
        where = f"load_weights: {path}"
        meta = {k[len(_META):]: v for k, v in flat.items() if k.startswith(_META)}
        d = unflatten_state({k: v for k, v in flat.items() if not k.startswith(_META)}, where)
        names = self._weight_names()
        given = d["params"]
        missing, unknown = sorted(set(names) - set(given)), sorted(set(given) - set(names))
        if missing or unknown:
            raise ValueError(f"{where} does not match this model: missing {missing}, unexpected {unknown}")
        current = self._current_weights()
        for k in names:
            if np.shape(given[k]) != current[k].shape:
                raise ValueError(f"{where} does not match this model: weight {k!r} has shape {np.shape(given[k])}, "
                                 f"the model's has {current[k].shape}")
        bad = [] if allow_nonfinite else nonfinite_entries(d)
        if bad:
            raise StateError(f"{where}: {bad} hold NaN or infinity (pass allow_nonfinite=True to load them anyway)")
        if "state" not in d:
            self._set_weights_by_name(given, allow_nonfinite)
            return
        if "epochs_seen" in meta:
            d["epochs_seen"] = int(meta["epochs_seen"])
        d["allow_nonfinite"] = allow_nonfinite
        if self.compiled and self.loss is not None:
            self.train_function  # noqa: B018 - built now (no native compile) so everything is checked at once
        if self._train_fn is not None:
            self._load_opt_state(d)  # weights, state and hyper-parameters in one all-or-nothing load
        else:
            self._set_weights_by_name(given, allow_nonfinite)
            self._pending_opt_state = d

    def _load_opt_state(self, d: dict) -> None:
        try:
            self._train_fn.load_state_dict({k: d[k] for k in ("params", "state", "hyper") if k in d},
                                           allow_nonfinite=d.get("allow_nonfinite", False))
        except GraphcError as e:
            raise ValueError(f"load_weights: the saved optimizer state does not fit this model's optimizer "
                             f"{self.optimizer!r} ({e})") from None
        if "epochs_seen" in d:
            self._epochs_seen = d["epochs_seen"]

    # ---- summary -------------------------------------------------------------------------------------
    def summary(self, print_fn=None, line_length: int = 65) -> None:
        """Print the layers, their output shapes and parameter counts (Keras' table)."""
        self._ensure_built()
        print_fn = print_fn or print
        cols = [int(line_length * 0.45), int(line_length * 0.30)]
        lines = [f'Model: "{self.name}"', "_" * line_length,
                 " Layer (type)".ljust(cols[0]) + "Output Shape".ljust(cols[1]) + "Param #",
                 "=" * line_length]
        shown = [l for l in self.layers if not isinstance(l, InputLayer)]  # Keras lists no InputLayer
        for i, layer in enumerate(shown):
            desc = f" {layer.name} ({type(layer).__name__})"
            lines.append(desc.ljust(cols[0]) + str((None,) + layer.output_shape).ljust(cols[1])
                         + f"{layer.count_params():,}")
            lines.append(("_" if i < len(shown) - 1 else "=") * line_length)
        total = self.count_params()
        lines += [f"Total params: {total:,}", f"Trainable params: {total:,}", "Non-trainable params: 0",
                  "_" * line_length]
        for line in lines:
            print_fn(line)

    def __repr__(self) -> str:
        return f"<Sequential name={self.name!r} layers={[l.name or l.default_name for l in self.layers]}>"
