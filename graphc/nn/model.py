"""Models: ``Model(inputs, outputs)`` (the functional API) and ``Sequential``, trained by ONE
compiled graphc step per batch.

The layers build a DSL graph; ``compile`` picks the optimizer, loss(es) and metrics, and the
first ``fit`` compiles the total loss (plus the metrics, as extra outputs of the same step)
with :func:`graphc.compile`. ``evaluate`` and ``predict`` use forward-only compiled functions
that share the training step's weights (``params=step``): no copies, always current.

:class:`Model` holds everything that does not depend on how the graph was described (data
checks, fit/evaluate/predict, weights, checkpoints, summary); a model describes itself by its
inputs (feed names, per-sample shapes, dtypes), its outputs (names, shapes) and ``_forward``.
``Model(inputs, outputs)`` walks the layer calls recorded on KerasTensors; ``Sequential`` is
the special case of a chain, built lazily from the first data it sees.

Sample weights (``sample_weight``/``class_weight``) follow Keras' default loss reduction
``sum_over_batch_size``: a batch's loss is ``sum_i w_i * loss_i / batch_size`` (NOT divided by
the sum of the weights). Steps with and without weights are two compiled programs sharing
one store (weights and optimizer state), so unweighted training compiles exactly the
unweighted graph.
"""
from __future__ import annotations

import numbers
import os
import sys
import warnings
from typing import Any

import numpy as np

from .. import backends
from .. import dsl as F
from .. import optim
from ..api import compile as gc_compile
from ..errors import GraphcError, StateError
from ..runtime import (check_counter, check_savable, checkpoint_path, flatten_state, nonfinite_entries,
                       read_checkpoint, save_npz_atomic, unflatten_state)
from . import losses as L
from . import metrics as M
from .callbacks import Callback, CallbackList, History
from .base import CallNode, InputLayer, KerasTensor, Layer
from .progress import Progbar

_NAN_POLICIES = ("raise", "warn", "ignore")
_META = "nn::"
_RAN_OUT = ("Your input ran out of data; interrupting training. Make sure that your dataset or generator can "
            "generate at least `steps_per_epoch * epochs` batches.")


def _positive_int(v, arg: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise ValueError(f"{arg}: expected a positive int, got {v!r}")
    return int(v)


def _ranks(distributed) -> tuple[int, int]:
    """(ranks, this rank) for fit(distributed=...): None means "when under mpirun"."""
    if distributed is False:
        return 1, 0
    if distributed is None:
        import os
        if not any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")):
            return 1, 0
    from .. import distributed as D
    return D.size(), D.rank()


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


def _as_numeric(x, arg: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except Exception as e:
        raise ValueError(f"{arg}: could not be read as an array ({e})") from None
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise ValueError(f"{arg}: expected numeric data, got dtype {a.dtype}")
    return a


def _conform(a: np.ndarray, arg: str, want: tuple, dtype: str, nan_policy: str, what: str) -> np.ndarray:
    """``a`` (numeric, one row per sample) checked against the per-sample shape ``want`` and
    cast to the feed's dtype; ``what`` says which input it is, for the messages."""
    if a.ndim == 0 or len(a) == 0:
        raise ValueError(f"{arg}: expected a batch of samples, got shape {a.shape}")
    if a.ndim == 1 and want == (1,):
        a = a[:, None]
    if tuple(a.shape[1:]) != tuple(want):
        if a.ndim == 1:
            raise ValueError(f"{arg}: expected samples of shape {want}, got a 1-D array of shape {a.shape}; "
                             "reshape it to (n, features)")
        raise ValueError(f"{arg}: the model expects samples of shape {tuple(want)} ({what}), got samples of "
                         f"shape {tuple(a.shape[1:])}")
    if np.dtype(dtype).kind in "iu":  # ids (an Embedding): whole numbers, as Keras casts them
        if a.dtype.kind == "f" and not (np.isfinite(a).all() and (a == np.round(a)).all()):
            raise ValueError(f"{arg}: the model's first layer takes integer ids, got non-integer values")
        return np.ascontiguousarray(a, dtype=dtype)
    a = np.ascontiguousarray(a, dtype=np.float32)
    _check_finite(a, arg, nan_policy)
    return a


def _by_output(value, names: list[str], arg: str, what: str) -> list:
    """One entry per output from a value for all outputs, a list or a dict keyed by name."""
    n = len(names)
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{arg}: unknown output name(s) {unknown}; the model's outputs are {names}")
        return [value.get(k) for k in names]
    if isinstance(value, (list, tuple)) and n > 1:
        if len(value) != n:
            raise ValueError(f"{arg}: the model has {n} outputs {names}, got a list of {len(value)} {what}")
        return list(value)
    return [value] * n


def _unwrap_one(v):
    """``[array]`` for a model with one input (or output) is that array, as Keras reads it."""
    if isinstance(v, (list, tuple)) and len(v) == 1 and hasattr(v[0], "shape") and np.ndim(v[0]) >= 1:
        return v[0]
    return v


def _readable_size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1024 or unit == "TB":
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return ""  # pragma: no cover


class Model:
    """``keras.Model(inputs, outputs)``: a graph of layers between ``graphc.nn.Input`` tensors
    and output tensors (single tensors, lists or dicts of them), trained by one compiled
    graphc step per batch. A layer called several times shares its weights."""

    def __init__(self, inputs=None, outputs=None, name: str | None = None):
        if inputs is None or outputs is None:
            raise TypeError("Model: pass inputs= and outputs= (symbolic tensors from graphc.nn.Input and layer "
                            "calls); subclassed models are not supported")
        self._init_training_state(name or "functional")
        self._init_graph(inputs, outputs)

    def _init_training_state(self, name: str) -> None:
        self.name = name
        self.layers: list[Layer] = []
        self.optimizer = None
        self.loss = None
        self._loss_weights_arg = None
        self._metric_ids: Any = []
        self._metrics: list = []
        self._metric_out: list[int] = []
        self.compiled = False
        self._target = "cpu"
        self._seed = 0
        self._train_fn = self._train_fn_w = self._test_fn = self._test_fn_w = self._predict_fn = None
        self._train_fn_dp: dict = {}  # data-parallel training steps (fit under mpirun), by weighted
        self._initial_weights: dict | None = None
        self._pending_opt_state: dict | None = None
        self._epochs_seen = 0
        self.stop_training = False
        self._stop_now = False
        self.history: History | None = None

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
        self._in_kind, in_flat, in_keys = self._structure(inputs, "inputs")
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
        for layer in self.layers:
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
            self._out_names = [t._node.layer.name for t in out_flat]
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
        values = {id(t): f for t, f in zip(self._in_tensors, feeds)}

        def arg_of(node):
            def v(t):
                x = values[id(t)]
                want = getattr(node.layer, "input_dtype", "float32")
                if x.dtype.kind in "iu" and np.dtype(want).kind == "f":
                    x = F.cast(x, want)  # Keras casts inputs to the layer's compute dtype
                return x
            return [v(t) for t in node.args] if isinstance(node.args, list) else v(node.args)

        for node in self._nodes:
            values[id(node.output)] = node.layer.call(arg_of(node), training, **node.kwargs)
        outs = []
        for t in self._out_tensors:
            node = t._node
            if id(t) in {id(i) for i in self._in_tensors}:
                outs.append((values[id(t)], values[id(t)], "linear"))
                continue
            pre, act = node.layer.call_split(arg_of(node), training, **node.kwargs)
            outs.append((values[id(t)], pre, act))
        return outs

    def _ensure_built(self, feature_shape: tuple | None = None, arg: str = "x") -> None:
        """A functional model is built when it is made; Sequential overrides this."""

    @property
    def built(self) -> bool:
        return True

    def _assign_names(self) -> None:
        given = [l._given_name for l in self.layers if l._given_name]
        if len(set(given)) != len(given):
            dup = sorted({n for n in given if given.count(n) > 1})
            raise ValueError(f"{type(self).__name__}: layer names must be unique, {dup} repeat")
        taken = set(given)
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

    # ---- compile -----------------------------------------------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, loss_weights=None, metrics=None,
                target: str = "cpu", seed: int = 0) -> None:
        """Choose optimizer (name or graphc.optim.Optimizer), loss (name, Loss or function; for
        several outputs one for all, a list or a dict by output name), ``loss_weights`` (the
        total loss is ``sum_i loss_weights[i] * loss_i`` plus the weight regularizers),
        metrics (a list; for several outputs a list of lists or a dict by output name), the
        graphc ``target`` and the ``seed`` of weight initialization, shuffling and dropout
        masks. Recompiling keeps the current weights and resets optimizer state."""
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
        for item in (loss.values() if isinstance(loss, dict) else loss if isinstance(loss, (list, tuple))
                     else [loss] if loss is not None else []):
            L.get(item)  # names are checked now
        if loss_weights is not None:
            vals = (loss_weights.values() if isinstance(loss_weights, dict)
                    else loss_weights if isinstance(loss_weights, (list, tuple)) else [loss_weights])
            for v in vals:
                if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
                    raise ValueError(f"compile(loss_weights=...): expected finite numbers, got {loss_weights!r}")
        if metrics is None:
            metrics = []
        elif isinstance(metrics, (str, M.Metric)) or callable(metrics):
            metrics = [metrics]
        elif not isinstance(metrics, (list, tuple, dict)):
            raise ValueError(f"compile(metrics=...): expected a list of metrics, got {metrics!r}")
        for m in self._flat_metric_ids(metrics):  # names are checked now; resolution waits for the shapes
            if isinstance(m, str):
                M.get(m, (2,), ())
        new_loss = L.get(loss) if loss is not None and not isinstance(loss, (list, tuple, dict)) else loss
        if self.built and self.layers:  # a built model checks losses and metrics against its outputs now
            saved = self.loss, self._loss_weights_arg, self._metric_ids
            self.loss, self._loss_weights_arg, self._metric_ids = new_loss, loss_weights, metrics
            try:
                if loss is not None:
                    self._losses()
                self._loss_weights()
                self._resolve_metrics()
            finally:
                self.loss, self._loss_weights_arg, self._metric_ids = saved
        had_step = self._train_fn is not None or self._train_fn_w is not None
        if self._owner() is not None:
            self._initial_weights = self._current_weights()
        if had_step:
            self._pending_opt_state = None
        self._reset_functions()
        self.optimizer, self._metric_ids = opt, metrics
        self.loss = new_loss
        self._loss_weights_arg = loss_weights
        self._target, self._seed = target, int(seed)
        self._metrics, self._metric_out = [], []
        self.compiled = True

    @staticmethod
    def _flat_metric_ids(metrics) -> list:
        out = []
        for v in (metrics.values() if isinstance(metrics, dict) else metrics):
            if isinstance(v, (list, tuple)):
                out.extend(v)
            else:
                out.append(v)
        return out

    def _losses(self) -> list:
        """One Loss per output."""
        names = self._out_names
        given = _by_output(self.loss, names, "compile(loss=...)", "losses")
        out = []
        for name, lo in zip(names, given):
            if lo is None:
                raise ValueError(f"compile(loss=...): no loss for output {name!r}; give every output a loss")
            out.append(L.get(lo))
        return out

    def _loss_weights(self) -> list[float]:
        lw = self._loss_weights_arg
        if lw is None:
            return [1.0] * len(self._out_names)
        vals = _by_output(lw, self._out_names, "compile(loss_weights=...)", "weights")
        return [1.0 if v is None else float(v) for v in vals]

    def _resolve_metrics(self) -> list:
        losses = self._losses() if self.loss is not None else [None] * len(self._out_names)
        names, n = self._out_names, len(self._out_names)
        ids = self._metric_ids
        if n == 1:
            if isinstance(ids, dict):
                per = [_by_output(ids, names, "compile(metrics=...)", "metric lists")[0] or []]
            else:
                per = [list(ids)]
        elif isinstance(ids, dict):
            per = _by_output(ids, names, "compile(metrics=...)", "metric lists")
        elif not ids:
            per = [[] for _ in names]
        else:
            if len(ids) != n or not all(isinstance(v, (list, tuple)) or v is None for v in ids):
                raise ValueError(f"compile(metrics=...): the model has {n} outputs {names}; pass a list of {n} lists "
                                 f"of metrics, or a dict keyed by output name, got {ids!r}")
            per = list(ids)
        out, where, seen = [], [], {"loss"} | {f"{k}_loss" for k in names}
        for i, ms in enumerate(per):
            ms = [] if ms is None else [ms] if isinstance(ms, (str, M.Metric)) or callable(ms) else list(ms)
            shape = self._out_shapes[i]
            label_shape = losses[i].label_spec(shape)[0] if losses[i] is not None else shape
            for ident in ms:
                m = M.get(ident, shape, label_shape)
                if n > 1:
                    m.name = f"{names[i]}_{m.name}"
                base, k = m.name, 1
                while m.name in seen:
                    k += 1
                    m.name = f"{base}_{k}"
                seen.add(m.name)
                out.append(m)
                where.append(i)
        self._metric_out = where
        return out

    @property
    def metrics_names(self) -> list[str]:
        self._require_compiled()
        self._ensure_built()
        per_out = [f"{n}_loss" for n in self._out_names] if len(self._out_names) > 1 else []
        return ["loss"] + per_out + [m.name for m in self._resolve_metrics()]

    def _require_compiled(self, what: str = "train") -> None:
        if not self.compiled:
            raise RuntimeError(f"You must compile your model before {what}ing it. Use model.compile(optimizer, loss).")
        if self.loss is None:
            raise ValueError("compile(loss=...): no loss was given; recompile with a loss to train or evaluate")

    # ---- the compiled programs -----------------------------------------------------------------
    def _owner(self):
        return (self._train_fn or self._train_fn_w or next(iter(self._train_fn_dp.values()), None) or self._test_fn
                or self._test_fn_w or self._predict_fn)

    def _reset_functions(self) -> None:
        self._train_fn = self._train_fn_w = self._test_fn = self._test_fn_w = self._predict_fn = None
        self._train_fn_dp = {}

    def _params_arg(self):
        owner = self._owner()
        if owner is not None:
            return owner
        init = self._initial_weights
        if init:  # after pop()/add() a weight may be gone or reshaped: it starts fresh, as in Keras
            shapes = {w.name: w.shape for w in self.weights}
            init = {k: v for k, v in init.items() if shapes.get(k) == np.shape(v)}
        return init

    def _feed_nodes(self) -> list:
        return [F.input(n, (None,) + s, dtype=d) for n, s, d in zip(self._in_feeds, self._in_shapes, self._in_dtypes)]

    def _traced_forward(self, training: bool) -> tuple[list, dict]:
        """``_forward`` on the feed nodes, and the state updates its layers recorded
        (``{state: new value}``: BatchNormalization's moving statistics in training)."""
        for layer in self.layers:
            layer._reset_updates()
        try:
            outs = self._forward(self._feed_nodes(), training)
            updates = {s: v for layer in self.layers for s, v in layer._collected_updates()}
        finally:
            for layer in self.layers:
                layer._reset_updates()
        return outs, updates

    def _objective(self, training: bool, weighted: bool):
        """(total loss, {name: extra output}, {state: new value}) of the model's graph; the
        total is exactly ``loss.build(...)`` for one unweighted output without regularizers."""
        outs, updates = self._traced_forward(training)
        losses, lws = self._losses(), self._loss_weights()
        parts = []
        ys = []
        for i, ((out, pre, act), loss, feed) in enumerate(zip(outs, losses, self._label_feeds())):
            shape, dtype = loss.label_spec(self._out_shapes[i])
            y = F.input(feed, (None,) + tuple(shape), dtype=dtype)
            ys.append(y)
            if weighted:
                sw = F.input(self._sw_feeds()[i], (None,), dtype="float32")
                li = F.mean(loss.per_sample(y, out, pre, act) * sw)  # sum_i w_i l_i / batch (Keras)
            else:
                li = loss.build(y, out, pre, act)
            parts.append(li if lws[i] == 1.0 else li * lws[i])
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        for layer in self.layers:
            for r in layer.regularization_losses():
                total = total + r
        self._metrics = self._resolve_metrics()
        extras = {}
        if len(parts) > 1:
            extras.update({f"{n}_loss": p for n, p in zip(self._out_names, parts)})
        for m, i in zip(self._metrics, self._metric_out):
            extras[m.name] = m.build(ys[i], *outs[i])
        return total, extras, updates

    def _train_function(self, weighted: bool = False, distributed: bool = False):
        dp = self._train_fn_dp
        fn = dp.get(weighted) if distributed else (self._train_fn_w if weighted else self._train_fn)
        if fn is None:
            self._require_compiled()
            self._ensure_built()
            loss, extras, updates = self._objective(True, weighted)
            fn = gc_compile(loss, optimizer=self.optimizer, target=self._target, outputs=extras or None,
                            params=self._params_arg(), seed=self._seed, updates=updates or None,
                            check_finite=False,  # fit() applies nan_policy to the data once
                            data_parallel=distributed)
            if distributed:
                dp[weighted] = fn
            elif weighted:
                self._train_fn_w = fn
            else:
                self._train_fn = fn
            self._initial_weights = None
            if self._pending_opt_state is not None:
                pending, self._pending_opt_state = self._pending_opt_state, None
                self._load_opt_state(pending)
        return fn

    @property
    def train_function(self):
        """The compiled training step (forward, backward, update, metrics) run by each fit() batch."""
        return self._train_function(False)

    def _test_function(self, weighted: bool = False):
        fn = self._test_fn_w if weighted else self._test_fn
        if fn is None:
            self._require_compiled("evaluat")
            self._ensure_built()
            loss, extras, _ = self._objective(False, weighted)  # inference: no state updates
            fn = gc_compile({"loss": loss, **extras}, target=self._target, params=self._params_arg(),
                            seed=self._seed, check_finite=False)
            if weighted:
                self._test_fn_w = fn
            else:
                self._test_fn = fn
            self._initial_weights = None
        return fn

    @property
    def test_function(self):
        """Forward-only loss and metrics (dropout off), sharing the training step's weights."""
        return self._test_function(False)

    @property
    def predict_function(self):
        """Forward-only model outputs (dropout off), sharing the training step's weights."""
        if self._predict_fn is None:
            self._ensure_built()
            outs = [o for o, _, _ in self._traced_forward(False)[0]]
            self._predict_fn = gc_compile(outs[0] if len(outs) == 1 else outs, target=self._target,
                                          params=self._params_arg(), seed=self._seed, check_finite=False)
            self._initial_weights = None
        return self._predict_fn

    def _store_owner(self):
        self._ensure_built()
        owner = self._owner()
        return owner if owner is not None else self.predict_function

    # ---- data checks ---------------------------------------------------------------------------
    def _check_x(self, x, arg: str, nan_policy: str) -> list[np.ndarray]:
        """One checked array per input, from an array (one input), a list or a dict by name."""
        names = self._in_names
        n = len(names)
        if isinstance(x, dict):
            missing, unknown = [k for k in names if k not in x], sorted(set(x) - set(names))
            if missing or unknown:
                raise ValueError(f"{arg}: the model's inputs are {names}; missing {missing}, unexpected {unknown}")
            items = [(x[k], f"{arg}[{k!r}]") for k in names]
        elif n == 1:
            items = [(_unwrap_one(x), arg)]
        elif isinstance(x, (list, tuple)) and len(x) == n:
            items = [(a, f"{arg}[{i}]") for i, a in enumerate(x)]
        else:
            got = f"a list of {len(x)}" if isinstance(x, (list, tuple)) else type(x).__name__
            raise ValueError(f"{arg}: the model has {n} inputs {names}; pass a list of {n} arrays or a dict keyed by "
                             f"input name, got {got}")
        out = [_conform(_as_numeric(a, what), what, self._in_shapes[i], self._in_dtypes[i], nan_policy,
                        f"input {self._in_names[i]!r}") for i, (a, what) in enumerate(items)]
        self._same_length(out, [w for _, w in items])
        return out

    @staticmethod
    def _same_length(arrays, args) -> None:
        for a, w in zip(arrays[1:], args[1:]):
            if len(a) != len(arrays[0]):
                raise ValueError(f"{args[0]} and {w} have different numbers of samples: {args[0]} has "
                                 f"{len(arrays[0])}, {w} has {len(a)}")

    def _check_y(self, y, arg: str, nan_policy: str, n: int, xarg: str) -> list[np.ndarray]:
        names = self._out_names
        if y is None:
            raise ValueError(f"{arg}: labels are required")
        if isinstance(y, dict):
            missing, unknown = [k for k in names if k not in y], sorted(set(y) - set(names))
            if missing or unknown:
                raise ValueError(f"{arg}: the model's outputs are {names}; missing {missing}, unexpected {unknown}")
            items = [(y[k], f"{arg}[{k!r}]") for k in names]
        elif len(names) == 1:
            items = [(_unwrap_one(y), arg)]
        elif isinstance(y, (list, tuple)) and len(y) == len(names):
            items = [(a, f"{arg}[{i}]") for i, a in enumerate(y)]
        else:
            raise ValueError(f"{arg}: the model has {len(names)} outputs {names}; pass a list of {len(names)} label "
                             "arrays or a dict keyed by output name")
        out = []
        for (a, what), loss, shape in zip(items, self._losses(), self._out_shapes):
            try:
                ya = np.asarray(a)
            except Exception as e:
                raise ValueError(f"{what}: could not be read as an array ({e})") from None
            if ya.ndim == 0:
                raise ValueError(f"{what}: expected one label per sample, got a scalar")
            if len(ya) != n:
                raise ValueError(f"{xarg} and {what} have different numbers of samples: {xarg} has {n}, "
                                 f"{what} has {len(ya)}")
            if ya.dtype.kind == "f":
                _check_finite(ya, what, nan_policy)
            out.append(loss.prepare(ya, shape, what))
        return out

    def _check_sample_weight(self, sw, arg: str, n: int) -> list[np.ndarray]:
        per = _by_output(sw, self._out_names, arg, "arrays")
        out = []
        for i, w in enumerate(per):
            what = arg if len(per) == 1 or not isinstance(sw, (list, tuple, dict)) else f"{arg}[{self._out_names[i]!r}]"
            if w is None:
                out.append(np.ones(n, np.float32))
                continue
            a = _as_numeric(w, what)
            if a.ndim == 2 and a.shape[1] == 1:
                a = a[:, 0]
            if a.ndim != 1 or len(a) != n:
                raise ValueError(f"{what}: expected one weight per sample, shape ({n},), got shape {a.shape}")
            a = np.ascontiguousarray(a, dtype=np.float32)
            if not np.isfinite(a).all():
                raise ValueError(f"{what}: sample weights contain NaN or infinity")
            out.append(a)
        return out

    def _class_weight_to_sample_weight(self, class_weight, ys: list[np.ndarray]) -> np.ndarray:
        """Keras' rule: each sample weighs ``class_weight[its class]`` (1.0 when absent); the
        class is the label, the argmax of a one-hot label, or a rounded binary label."""
        if not isinstance(class_weight, dict):
            raise ValueError(f"class_weight: expected a dict {{class index: weight}}, got {type(class_weight).__name__}")
        if len(ys) != 1:
            raise ValueError("class_weight: only supported for models with a single output; pass sample_weight "
                             "per output instead")
        for k, v in class_weight.items():
            if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
                raise ValueError(f"class_weight: keys must be non-negative class indices, got {k!r}")
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
                raise ValueError(f"class_weight: weight of class {k} must be a finite number, got {v!r}")
        y = ys[0]
        if y.ndim > 1:
            y = np.argmax(y, axis=-1) if y.shape[-1] != 1 else y[..., 0]
        y = np.round(y).astype(np.int64).reshape(len(y), -1)[:, 0]
        table = np.ones(int(max([*class_weight, int(y.max(initial=0))])) + 1, np.float32)
        for k, v in class_weight.items():
            table[int(k)] = v
        return table[y]

    def _data(self, x, y, sample_weight, class_weight, xarg, yarg, swarg, nan_policy) -> dict[str, np.ndarray]:
        """Every feed of a weighted or unweighted step, checked: {feed name: array}."""
        xs = self._check_x(x, xarg, nan_policy)
        n = len(xs[0])
        ys = self._check_y(y, yarg, nan_policy, n, xarg if len(xs) == 1 else f"{xarg}[0]")
        data = dict(zip(self._in_feeds, xs))
        data.update(zip(self._label_feeds(), ys))
        if sample_weight is not None and class_weight is not None:
            raise ValueError("You cannot use class_weight and sample_weight at the same time")
        if class_weight is not None:
            data[self._sw_feeds()[0]] = self._class_weight_to_sample_weight(class_weight, ys)
        elif sample_weight is not None:
            data.update(zip(self._sw_feeds(), self._check_sample_weight(sample_weight, swarg, n)))
        return data

    def _weighted(self, data: dict) -> bool:
        return any(k in data for k in self._sw_feeds())

    # ---- training ------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size: int | None = None, epochs: int = 1, verbose="auto", callbacks=None,
            validation_split: float = 0.0, validation_data=None, shuffle: bool = True, class_weight=None,
            sample_weight=None, initial_epoch: int = 0, steps_per_epoch: int | None = None,
            validation_batch_size: int | None = None, validation_freq: int = 1, nan_policy: str = "raise",
            distributed: bool | None = None):
        """Train for ``epochs`` (from ``initial_epoch``); returns a History.

        ``distributed``: data-parallel over MPI (run under ``mpirun -n N``; default: True when
        the job has more than one rank and graphc.distributed is usable). Every rank passes the
        same data; each global batch of ``batch_size`` is split between the ranks (the same
        shuffled order on every rank), gradients and loss are averaged inside the compiled
        step, epoch metrics are averaged over the ranks, only rank 0 prints, and
        ModelCheckpoint/CSVLogger write from rank 0 only.

        Every argument is checked before training starts; bad data raises ValueError naming
        the argument. ``x``/``y``: arrays, or for several inputs/outputs lists or dicts keyed
        by input/output name. ``sample_weight`` (one weight per sample) or ``class_weight``
        ({class: weight}) weigh each sample's loss: a batch's loss is ``sum_i w_i * l_i / n``
        (Keras' ``sum_over_batch_size``). ``steps_per_epoch`` batches make an epoch; the
        next epoch continues where it stopped, a new (reshuffled) pass begins when the data
        runs out, and an epoch that reaches the end of the data ends there with Keras'
        "ran out of data" warning. ``nan_policy``: what NaN/inf in the data does ('raise',
        'warn', 'ignore'). Shuffling comes from a generator seeded by (compile seed, number of
        epochs this model has trained), dropout masks from the in-step generator (seeded by
        the compile seed and the layer's name, keyed by the step counter), so runs repeat
        exactly, and resume exactly after ``load_weights`` of a checkpoint saved with
        ``include_optimizer=True``. Layers with a ``feeds`` hook get their extra inputs from
        a generator seeded the same way as the shuffling.
        """
        self._require_compiled()
        if nan_policy not in _NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {_NAN_POLICIES}, got {nan_policy!r}")
        verbose = _verbose(verbose)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
        val_bs = batch_size if validation_batch_size is None else _positive_int(validation_batch_size,
                                                                                "validation_batch_size")
        validation_freq = _positive_int(validation_freq, "validation_freq")
        if steps_per_epoch is not None:
            steps_per_epoch = _positive_int(steps_per_epoch, "steps_per_epoch")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise ValueError(f"shuffle: expected True or False, got {shuffle!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
            raise ValueError(f"epochs: expected a non-negative int, got {epochs!r}")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral) or initial_epoch < 0:
            raise ValueError(f"initial_epoch: expected a non-negative int, got {initial_epoch!r}")
        if not isinstance(validation_split, numbers.Real) or not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split: expected a float in [0, 1), got {validation_split!r}")
        if x is None:
            raise ValueError("x: training data is required")
        data = self._data(x, y, sample_weight, class_weight, "x", "y", "sample_weight", nan_policy)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data: expected a tuple (x_val, y_val) or (x_val, y_val, sample_weight)")
            vsw = validation_data[2] if len(validation_data) == 3 else None
            val = self._data(validation_data[0], validation_data[1], vsw, None, "validation_data[0]",
                             "validation_data[1]", "validation_data[2]", nan_policy)
        elif validation_split > 0:
            total = len(next(iter(data.values())))
            split_at = int(np.floor(total * (1.0 - validation_split)))
            if split_at == 0 or split_at == total:
                raise ValueError(f"validation_split: {validation_split} of {total} samples leaves an empty "
                                 "training or validation set")
            val = {k: v[split_at:] for k, v in data.items()}
            data = {k: v[:split_at] for k, v in data.items()}
        user_cbs = list(callbacks or [])
        for c in user_cbs:
            if not isinstance(c, Callback):
                raise ValueError(f"callbacks: expected graphc.nn.callbacks.Callback objects, got {c!r}")

        ranks, me = _ranks(distributed)
        if ranks > 1 or distributed:
            verbose = verbose if me == 0 else 0
            if me != 0:
                from .callbacks import CSVLogger, ModelCheckpoint
                user_cbs = [c for c in user_cbs if not isinstance(c, (ModelCheckpoint, CSVLogger))]
        step = self._train_function(self._weighted(data), distributed=bool(ranks > 1 or distributed))
        n = len(next(iter(data.values())))
        per_pass = -(-n // batch_size)
        steps = steps_per_epoch or per_pass
        history = History()
        cbs = CallbackList(user_cbs + [history], self,
                           {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size})
        self.history = history
        self.stop_training = self._stop_now = False
        fed_layers = [l for l in self.layers if type(l).feeds is not Layer.feeds]  # custom layers' extra inputs
        names = ["loss"] + ([f"{k}_loss" for k in self._out_names] if len(self._out_names) > 1 else []) \
            + [m.name for m in self._metrics]
        out = sys.stdout
        order, pos = None, per_pass  # the current pass over the data: its order and next batch
        cbs.on_train_begin({})
        for epoch in range(initial_epoch, epochs):
            if verbose:
                out.write(f"Epoch {epoch + 1}/{epochs}\n")
            bar = Progbar(steps, verbose, stream=out)
            cbs.on_epoch_begin(epoch, {})
            key = self._epochs_seen
            drop_rng = np.random.default_rng([self._seed, 2, key])
            sums = dict.fromkeys(names, 0.0)
            seen = 0
            b = 0
            if steps_per_epoch is None or pos >= per_pass:
                order = np.random.default_rng([self._seed, 1, key]).permutation(n) if shuffle else None
                pos = 0
            for b in range(steps):
                if pos >= per_pass:
                    warnings.warn(_RAN_OUT, stacklevel=2)
                    break
                lo, hi = pos * batch_size, min(n, (pos + 1) * batch_size)
                pos += 1
                idx = np.arange(lo, hi) if order is None else order[lo:hi]
                if ranks > 1:  # this rank's share of the global batch
                    from ..distributed import shard
                    idx = idx[shard(len(idx))]
                feeds = {k: v[idx] for k, v in data.items()}
                for layer in fed_layers:
                    feeds.update(layer.feeds(len(idx), drop_rng))
                cbs.on_train_batch_begin(b, {})
                res = step(**feeds)
                batch_logs = {k: float(res[k]) for k in names}
                for k in names:
                    sums[k] += batch_logs[k] * len(idx)
                seen += len(idx)
                cbs.on_train_batch_end(b, batch_logs)
                bar.update(b + 1, {k: sums[k] / seen for k in names})
                if self._stop_now:
                    break
            self._epochs_seen += 1
            if ranks > 1:  # the epoch's metrics over every rank's samples
                from ..distributed import world
                tot = world().allreduce(np.array([sums[k] for k in names] + [seen], dtype=np.float64))
                sums, seen = dict(zip(names, tot[:-1])), int(tot[-1])
            logs = {k: sums[k] / max(seen, 1) for k in names}
            if val is not None and (epoch + 1) % validation_freq == 0:
                for k, v in self._evaluate_arrays(val, val_bs).items():
                    logs["val_" + k] = v
            bar.update(b + 1 if seen else 0, logs, finalize=True)
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cbs.on_train_end({})
        return history

    # ---- evaluation and prediction ---------------------------------------------------------------
    def _evaluate_arrays(self, data: dict, batch_size: int, bar: Progbar | None = None) -> dict[str, float]:
        fn = self._test_function(self._weighted(data))
        sums: dict[str, float] = {}
        n = len(next(iter(data.values())))
        steps = -(-n // batch_size)
        for b in range(steps):
            lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
            res = fn(**{k: v[lo:hi] for k, v in data.items()})
            for k, v in res.items():
                sums[k] = sums.get(k, 0.0) + float(v) * (hi - lo)
            if bar is not None:
                bar.update(b + 1, {k: v / hi for k, v in sums.items()})
        logs = {k: v / n for k, v in sums.items()}
        if bar is not None:
            bar.update(steps, logs, finalize=True)
        return logs

    def evaluate(self, x=None, y=None, batch_size: int | None = None, verbose="auto", sample_weight=None,
                 return_dict: bool = False, nan_policy: str = "raise"):
        """Loss (and metrics) over ``x, y`` with dropout off: a float, or ``[loss, *metrics]``,
        or a dict with ``return_dict=True``. ``sample_weight`` weighs the loss as in fit."""
        self._require_compiled("evaluat")
        if nan_policy not in _NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {_NAN_POLICIES}, got {nan_policy!r}")
        verbose = _verbose(verbose)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
        data = self._data(x, y, sample_weight, None, "x", "y", "sample_weight", nan_policy)
        n = len(next(iter(data.values())))
        bar = Progbar(-(-n // batch_size), verbose) if verbose else None
        logs = self._evaluate_arrays(data, batch_size, bar)
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    def _structure_outputs(self, arrays: list):
        if self._out_kind == "dict":
            return dict(zip(self._out_names, arrays))
        if self._out_kind == "list":
            return list(arrays)
        return arrays[0]

    def predict(self, x, batch_size: int | None = None, verbose=0, nan_policy: str = "raise"):
        """The model's outputs for ``x`` (dropout off): an array, or for several outputs the
        structure ``outputs`` was given in (list or dict). Batches are padded to
        ``batch_size`` so one compiled specialization serves every call."""
        if nan_policy not in _NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {_NAN_POLICIES}, got {nan_policy!r}")
        verbose = _verbose(verbose)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
        xs = self._check_x(x, "x", nan_policy)
        fn = self.predict_function
        n = len(xs[0])
        steps = -(-n // batch_size)
        bar = Progbar(steps, verbose) if verbose else None
        chunks: list[list] = [[] for _ in self._out_names]
        for b in range(steps):
            feeds = {}
            m = 0
            for name, a in zip(self._in_feeds, xs):
                xb = a[b * batch_size:(b + 1) * batch_size]
                m = len(xb)
                if m < batch_size and steps > 1:
                    xb = np.concatenate([xb, np.zeros((batch_size - m,) + xb.shape[1:], xb.dtype)])
                feeds[name] = xb
            res = fn(**feeds)
            res = [res] if len(self._out_names) == 1 else list(res)
            for i, r in enumerate(res):
                chunks[i].append(np.asarray(r)[:m])
            if bar is not None:
                bar.update(b + 1, finalize=b + 1 == steps)
        return self._structure_outputs([np.concatenate(c) for c in chunks])

    def predict_on_batch(self, x):
        xs = self._check_x(x, "x", "ignore")
        res = self.predict_function(**dict(zip(self._in_feeds, xs)))
        res = [res] if len(self._out_names) == 1 else list(res)
        return self._structure_outputs([np.asarray(r) for r in res])

    def train_on_batch(self, x, y, sample_weight=None, class_weight=None, return_dict: bool = False):
        """One training step on one batch (dropout masks drawn inside the step)."""
        self._require_compiled()
        data = self._data(x, y, sample_weight, class_weight, "x", "y", "sample_weight", "raise")
        step = self._train_function(self._weighted(data))
        n = len(next(iter(data.values())))
        feeds = dict(data)
        rng = np.random.default_rng([self._seed, 3, step.iterations])
        for layer in self.layers:
            feeds.update(layer.feeds(n, rng))
        res = step(**feeds)
        logs = {"loss": float(res["loss"])}
        logs.update({k: float(v) for k, v in res.items() if k != "loss"})
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    def test_on_batch(self, x, y, sample_weight=None, return_dict: bool = False):
        """Loss (and metrics) on one batch, dropout off."""
        self._require_compiled("evaluat")
        data = self._data(x, y, sample_weight, None, "x", "y", "sample_weight", "raise")
        n = len(next(iter(data.values())))
        logs = self._evaluate_arrays(data, n)
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    # ---- weights -----------------------------------------------------------------------------------
    def _weight_names(self) -> list[str]:
        self._ensure_built()
        return [n for layer in self.layers for n in layer.weight_names]

    def _state_names(self) -> list[str]:
        """The model's non-trainable weights (``gc.state`` tensors such as moving statistics)."""
        return [n.name for layer in self.layers for n in layer.non_trainable_weights]

    def _current_weights(self) -> dict[str, np.ndarray]:
        """Copies of every weight by name: the params and the model's state (moving
        statistics), read in one consistent snapshot. Optimizer state is not included."""
        owner = self._store_owner()
        names = self._state_names()
        if not names:
            return owner.params
        sd = owner.state_dict()
        vals = sd["params"]
        vals.update({k: sd["state"][k] for k in names if k in sd["state"]})
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
        states = set(self._state_names())
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
        return [n for layer in self.layers for n in layer.trainable_weights]

    @property
    def non_trainable_weights(self) -> list:
        self._ensure_built()
        return [n for layer in self.layers for n in layer.non_trainable_weights]

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
            fn = self._train_fn or self._train_fn_w or self.train_function
            sd = fn.state_dict()
        else:
            sd = {"params": self._current_weights()}
        if not allow_nonfinite:
            check_savable(sd, f"save_weights: {path}")
        flat = flatten_state(sd)
        if include_optimizer:
            flat[_META + "epochs_seen"] = np.asarray(self._epochs_seen, dtype=np.int64)
        return save_npz_atomic(path, flat, "save_weights")

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
        # counters first: a bad one must not reach the weights written below (nor a pending state)
        epochs_seen = check_counter(where, "epochs_seen", meta["epochs_seen"]) if "epochs_seen" in meta else None
        if "step" in d.get("state", {}):
            check_counter(where, "step", d["state"]["step"])
        names = self._weight_names()
        given = dict(d["params"])
        if "state" in d:  # saved with the optimizer: the model's moving statistics are in the state section
            given.update({k: v for k, v in d["state"].items() if k in set(self._state_names())})
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
        if epochs_seen is not None:
            d["epochs_seen"] = epochs_seen
        d["allow_nonfinite"] = allow_nonfinite
        if self.compiled and self.loss is not None and self._train_fn_w is None:
            self.train_function  # noqa: B018 - built now (no native compile) so everything is checked at once
        if self._train_fn is not None or self._train_fn_w is not None:
            self._load_opt_state(d)  # weights, state and hyper-parameters in one all-or-nothing load
        else:
            self._set_weights_by_name(given, allow_nonfinite)
            self._pending_opt_state = d

    def _load_opt_state(self, d: dict) -> None:
        fn = self._train_fn or self._train_fn_w
        try:
            fn.load_state_dict({k: d[k] for k in ("params", "state", "hyper") if k in d},
                               allow_nonfinite=d.get("allow_nonfinite", False))
        except GraphcError as e:
            raise ValueError(f"load_weights: the saved optimizer state does not fit this model's optimizer "
                             f"{self.optimizer!r} ({e})") from None
        if "epochs_seen" in d:
            self._epochs_seen = d["epochs_seen"]

    # ---- summary -------------------------------------------------------------------------------------
    def _connections(self, layer: Layer) -> list[str]:
        """Keras' "Connected to" entries: ``<layer>[<call index>][0]`` per input of each call."""
        out = []
        for node in layer._inbound_nodes:
            if node.id not in {n.id for n in self._nodes}:
                continue
            for t in node.inputs:
                src = t._node
                out.append(f"{src.layer.name}[{src.layer._inbound_nodes.index(src)}][0]")
        return out

    def summary(self, line_length: int | None = None, print_fn=None, show_trainable: bool = False) -> None:
        """Print the layers (name and type), output shapes, parameter counts and, for
        functional models, what each layer is connected to; then the totals (Keras' table)."""
        self._ensure_built()
        print_fn = print_fn or print
        functional = not isinstance(self, Sequential)
        line_length = line_length or (100 if functional else 65)
        if functional:
            cols = [int(line_length * 0.33), int(line_length * 0.25), int(line_length * 0.12)]
        else:
            cols = [int(line_length * 0.45), int(line_length * 0.30)]
        shown = self.layers if functional else [l for l in self.layers if not isinstance(l, InputLayer)]
        table = []
        for layer in shown:
            desc = f" {layer.name} ({type(layer).__name__})"
            shapes = ([n.output.shape for n in layer._inbound_nodes if n.id in {m.id for m in self._nodes}]
                      or [(None,) + tuple(layer.output_shape)]) if functional else [(None,) + layer.output_shape]
            table.append((layer, desc, str(shapes[0]) if len({str(s) for s in shapes}) == 1 else "multiple"))
        # long names (global_average_pooling2d (GlobalAveragePooling2D)) widen their column
        for c, width in ((0, max((len(d) + 2 for _, d, _ in table), default=0)),
                         (1, max((len(sh) + 2 for _, _, sh in table), default=0))):
            if width > cols[c]:
                line_length += width - cols[c]
                cols[c] = width
        head = " Layer (type)".ljust(cols[0]) + "Output Shape".ljust(cols[1])
        head += ("Param #".ljust(cols[2]) + "Connected to") if functional else "Param #"
        lines = [f'Model: "{self.name}"', "_" * line_length, head, "=" * line_length]
        for i, (layer, desc, shape) in enumerate(table):
            row = desc.ljust(cols[0]) + shape.ljust(cols[1])
            if functional:
                conn = self._connections(layer) or ["-"]
                row = row.ljust(cols[0] + cols[1]) + f"{layer.count_params():,}".ljust(cols[2]) + conn[0]
                lines.append(row)
                lines.extend(" " * (cols[0] + cols[1] + cols[2]) + c for c in conn[1:])
            else:
                lines.append(row + f"{layer.count_params():,}")
            lines.append(("_" if i < len(shown) - 1 else "=") * line_length)
        total = self.count_params()
        frozen = sum(int(np.prod(w.shape)) for l in self.layers for w in l.non_trainable_weights)
        lines += [f"Total params: {total:,} ({_readable_size(total * 4)})",
                  f"Trainable params: {total - frozen:,} ({_readable_size((total - frozen) * 4)})",
                  f"Non-trainable params: {frozen:,} ({_readable_size(frozen * 4)})",
                  "_" * line_length]
        for line in lines:
            print_fn(line)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} layers={[l.name or l.default_name for l in self.layers]}>"


class Sequential(Model):
    """A linear stack of layers (the special case of a Model that is a chain), built from
    the first layer's ``input_shape`` or, lazily, from the first data it sees."""

    def __init__(self, layers=None, name: str | None = None):
        self._init_training_state(name or "sequential")
        self._built = False
        self._input_shape: tuple | None = None
        self._output_shape: tuple | None = None
        self._nodes = []
        self._in_kind = self._out_kind = "single"
        for layer in layers or []:
            self.add(layer)

    # ---- structure ---------------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        if isinstance(layer, KerasTensor) and isinstance(layer._node.layer, InputLayer):
            if self.layers:
                raise ValueError("Sequential.add: an Input can only be the first entry")
            layer = layer._node.layer  # keras.Input(...) as the first entry, as Keras allows
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a graphc.nn layer, got {layer!r}")
        if any(layer is l for l in self.layers) or (layer._model is not None and layer._model is not self):
            raise ValueError(f"Sequential.add: layer {layer.name or layer.default_name!r} already belongs to a model")
        if layer.merge:
            raise ValueError(f"Sequential.add: {type(layer).__name__} takes several inputs; use the functional API "
                             "(graphc.nn.Model(inputs, outputs))")
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
        return [self.layers[-1].name]

    @property
    def _out_shapes(self) -> list[tuple]:
        self._ensure_built()
        return [self._output_shape]

    def _forward(self, feeds: list, training: bool) -> list:
        h = feeds[0]
        for layer in self.layers[:-1]:
            h = layer.call(h, training)
        last = self.layers[-1]
        pre, act = last.call_split(h, training)
        return [(last.call(h, training), pre, act)]

    def _input_dtype(self) -> str:
        """What the model is fed: float32, an InputLayer's dtype, or int64 ids when the first
        layer takes ids (an Embedding)."""
        if self.layers and isinstance(self.layers[0], InputLayer) and self.layers[0].dtype is not None:
            return self.layers[0].dtype
        first = next((lay for lay in self.layers if not isinstance(lay, InputLayer)), None)
        return getattr(first, "input_dtype", "float32")

    def _check_x(self, x, arg: str, nan_policy: str) -> list[np.ndarray]:
        if isinstance(x, dict):
            if set(x) != {"x"} and len(x) != 1:
                raise ValueError(f"{arg}: a Sequential model has one input; pass an array")
            x = next(iter(x.values()))
        a = _as_numeric(x, arg)
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
        return [_conform(a, arg, self._input_shape, self._input_dtype(), nan_policy,
                         f"input of layer {self.layers[0].name!r}")]
