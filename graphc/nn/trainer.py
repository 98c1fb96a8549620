"""The trainer of graphc.nn models: ``compile`` (optimizer, losses, metrics, target, seed),
the compiled programs, and ``fit``/``evaluate``/``predict`` and their per-batch twins.

:class:`Trainer` is mixed into :class:`graphc.nn.Model` (as Keras' Trainer is into its
Model): it trains any model that describes itself by its inputs (``_in_feeds``,
``_in_names``, ``_in_shapes``, ``_in_dtypes``, ``_check_x``), its outputs (``_out_names``,
``_out_shapes``, ``_out_kind``), its label and sample-weight feed names (``_label_feeds``,
``_sw_feeds``), ``layers`` and ``_forward``, and reads and writes weights through the
model's ``_current_weights``/``weights``.

The first ``fit`` compiles the total loss (plus the metrics, as extra outputs of the same
step) with :func:`graphc.compile`. ``evaluate`` and ``predict`` use forward-only compiled
functions that share the training step's weights (``params=step``): no copies, always
current. All of them are kept in one memo, :class:`CompiledFunctions`, on the model.

Frozen weights (a layer with ``trainable=False`` when the model was compiled) are constants
of the programs: each is substituted by a ``gc.state`` of the same name, so the training
step neither differentiates nor updates it and the optimizer keeps no slots for it. As in
Keras, ``trainable`` is read at ``compile()``: changing it later takes effect at the next
``compile()`` (fit warns until then).

Sample weights (``sample_weight``/``class_weight``) follow Keras' default loss reduction
``sum_over_batch_size``: a batch's loss is ``sum_i w_i * loss_i / batch_size`` (NOT divided by
the sum of the weights). An output carrying a mask (a sequence after ``Embedding(mask_zero=True)``)
counts its unmasked steps only: ``sum(loss * mask) / sum(mask)`` per batch, as Keras 3's
``reduce_weighted_values``. Steps with and without weights are two compiled programs sharing
one store (weights and optimizer state), so unweighted training compiles exactly the
unweighted graph.
"""
from __future__ import annotations

import dataclasses
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
from ..ir import ArrayValue
from ..substitution import substitute
from . import losses as L
from . import metrics as M
from .base import Layer
from .callbacks import Callback, CallbackList, CSVLogger, History, ModelCheckpoint
from .data import (NAN_POLICIES, RAN_OUT, EpochBatches, batch_bounds, by_output, check_labels,
                   check_sample_weights, class_weight_to_sample_weight, pad_rows, positive_int, verbose_arg)
from .progress import Progbar
from .saving import load_optimizer_state


def _ranks(distributed) -> tuple[int, int]:
    """(ranks, this rank) for fit(distributed=...): None means "when under mpirun"."""
    if distributed is False:
        return 1, 0
    if distributed is None:
        if not any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")):
            return 1, 0
    from .. import distributed as D
    return D.size(), D.rank()


def _keras_result(logs: dict[str, float], return_dict: bool):
    """evaluate's return value as Keras': the dict, or the loss alone, or ``[loss, *metrics]``."""
    if return_dict:
        return logs
    vals = list(logs.values())
    return vals[0] if len(vals) == 1 else vals


@dataclasses.dataclass
class _FitOptions:
    """fit's arguments other than the data, checked."""
    batch_size: int
    epochs: int
    verbose: int
    shuffle: bool
    initial_epoch: int
    steps_per_epoch: int | None
    validation_batch_size: int
    validation_freq: int

    @classmethod
    def check(cls, batch_size, epochs, verbose, validation_split, shuffle, initial_epoch, steps_per_epoch,
              validation_batch_size, validation_freq, nan_policy) -> "_FitOptions":
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {NAN_POLICIES}, got {nan_policy!r}")
        verbose = verbose_arg(verbose)
        batch_size = 32 if batch_size is None else positive_int(batch_size, "batch_size")
        val_bs = batch_size if validation_batch_size is None else positive_int(validation_batch_size,
                                                                                "validation_batch_size")
        validation_freq = positive_int(validation_freq, "validation_freq")
        if steps_per_epoch is not None:
            steps_per_epoch = positive_int(steps_per_epoch, "steps_per_epoch")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise ValueError(f"shuffle: expected True or False, got {shuffle!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
            raise ValueError(f"epochs: expected a non-negative int, got {epochs!r}")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral) or initial_epoch < 0:
            raise ValueError(f"initial_epoch: expected a non-negative int, got {initial_epoch!r}")
        if not isinstance(validation_split, numbers.Real) or not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split: expected a float in [0, 1), got {validation_split!r}")
        return cls(batch_size, int(epochs), verbose, bool(shuffle), int(initial_epoch), steps_per_epoch, val_bs,
                   validation_freq)


@dataclasses.dataclass
class _FitRun:
    """What one fit() call's epochs share."""
    opts: _FitOptions
    step: Any  # the compiled training step
    data: dict
    val: dict | None
    batches: EpochBatches
    cbs: CallbackList
    ranks: int
    out: Any  # the stream the progress bar writes to
    names: list[str]  # the step's outputs in the logs: loss, per-output losses, metrics
    fed_layers: list  # layers with a feeds() hook (extra per-step inputs)
    multi: Any = None  # the step compiled with steps_per_execution=K (K > 1), else None
    k: int = 1  # batches per call of ``multi``


def _groups(batches, k: int):
    """fit's batches in groups of ``k`` (the calls of a ``steps_per_execution=k`` step); a group
    ends early at the data's end, where the batch iterator yields ``(b, None)``, which stays
    in the group (the caller warns that the data ran out)."""
    group: list = []
    for b, idx in batches:
        group.append((b, idx))
        if idx is None:
            group.pop()
            yield group + [(b, None)]
            return
        if len(group) == k:
            yield group
            group = []
    if group:
        yield group


class CompiledFunctions:
    """The memo of a model's compiled programs, each built on first use and kept until the model
    changes (``compile``, a Sequential's ``add``/``pop``): the training step (``"train"``,
    without and with sample weights, each also data-parallel for fit under mpirun), the
    forward-only loss and metrics (``"test"``, without and with sample weights) and the
    outputs (``"predict"``). Every program after the first is compiled with ``params=`` the
    first, so all of them share one store: weights and optimizer state are never copied, and
    any of them (``owner``) reads and writes the model's weights. ``"train_k"`` is the training
    step compiled with ``steps_per_execution=K`` (built after ``"train"``, which runs the
    groups of fewer than K batches)."""

    KINDS = ("train", "test", "predict", "train_k")

    def __init__(self) -> None:
        self._fns: dict[tuple[str, bool, bool], Any] = {}

    def _key(self, kind: str, weighted: bool, distributed: bool) -> tuple[str, bool, bool]:
        if kind not in self.KINDS:
            raise ValueError(f"CompiledFunctions: unknown program {kind!r}; choose from {self.KINDS}")
        if distributed and kind != "train":
            raise ValueError(f"CompiledFunctions: only the training step is data-parallel, not {kind!r}")
        if weighted and kind == "predict":
            raise ValueError("CompiledFunctions: the predict function takes no sample weights")
        return kind, bool(weighted), bool(distributed)

    def get(self, kind: str, weighted: bool = False, distributed: bool = False):
        """The program built for these arguments, or None."""
        return self._fns.get(self._key(kind, weighted, distributed))

    def put(self, kind: str, weighted: bool, distributed: bool, fn):
        """Record ``fn`` (just compiled) and return it; a program is built once."""
        key = self._key(kind, weighted, distributed)
        if key in self._fns:
            raise ValueError(f"CompiledFunctions: {key} is already built; clear() first")
        self._fns[key] = fn
        return fn

    def owner(self):
        """A program holding the shared store (a training step first), or None before any is built."""
        order = sorted(self._fns, key=lambda k: (self.KINDS.index(k[0]), k[2], k[1]))
        return self._fns[order[0]] if order else None

    def training_step(self):
        """The one-process training step (unweighted first), or None: the program whose
        optimizer state checkpoints save and load."""
        return self.get("train") or self.get("train", weighted=True)

    def clear(self) -> None:
        self._fns.clear()

    def __len__(self) -> int:
        return len(self._fns)


def _masked_loss(loss, y, out, pre, act, mask, sw):
    """Keras 3's loss of an output carrying a mask (``(batch, time)`` for ``(batch, time,
    features)`` outputs): the loss of each step (each row of the last axis, as Keras' loss
    ``call`` reduces it), weighted by the mask and summed, over the number of unmasked steps
    (``reduce_weighted_values`` with ``sum_over_batch_size``: ``sum(loss * mask) / sum(mask)``,
    0 when every step is masked). Sample weights multiply each sample's steps."""
    rows = lambda v: F.reshape(v, (-1,) + tuple(v.shape[mask.ndim:]))  # noqa: E731
    per_step = loss.per_sample(rows(y), rows(out), rows(pre), act)
    m = F.cast(F.cast(mask, "bool"), "float32")
    valid = F.sum(m)
    w = m if sw is None else m * F.reshape(sw, (-1,) + (1,) * (mask.ndim - 1))
    return F.sum(per_step * F.reshape(w, (-1,))) / F.maximum(valid, 1.0)


class Trainer:
    """compile, fit/evaluate/predict and the compiled programs of a graphc.nn model (see the
    module docstring for what the model provides)."""

    def _init_trainer(self) -> None:
        self.optimizer = None
        self.loss = None
        self._loss_weights_arg = None
        self._metric_ids: Any = []
        self._metrics: list = []
        self._metric_out: list[int] = []
        self.compiled = False
        self._target = "cpu"
        self._seed = 0
        self._steps_per_execution = 1
        self._functions = CompiledFunctions()
        self._initial_weights: dict | None = None  # what the first program starts from (recompiled models)
        self._pending_opt_state: dict | None = None  # a checkpoint's optimizer state for the next training step
        self._epochs_seen = 0
        self._trainable_at_compile: dict[int, bool] | None = None  # id(layer) -> its trainable flag at compile()
        self.stop_training = False
        self._stop_now = False
        self.history: History | None = None

    # ---- compile ----------------------------------------------------------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, loss_weights=None, metrics=None,
                target: str = "cpu", seed: int = 0, steps_per_execution: int = 1) -> None:
        """Choose optimizer (name or graphc.optim.Optimizer), loss (name, Loss or function; for
        several outputs one for all, a list or a dict by output name), ``loss_weights`` (the
        total loss is ``sum_i loss_weights[i] * loss_i`` plus the weight regularizers),
        metrics (a list; for several outputs a list of lists or a dict by output name), the
        graphc ``target`` and the ``seed`` of weight initialization, shuffling and dropout
        masks. Recompiling keeps the current weights and resets optimizer state.
        ``steps_per_execution=K`` (Keras 3): fit runs K batches per compiled call (K training
        steps in one native call, bit-identical to K calls); callbacks' ``on_train_batch_begin``
        and ``on_train_batch_end`` run once per K batches, with the index of the first and of
        the last batch and the last batch's logs, as in Keras 3 (whose ``end`` index of a final
        short group is first + K - 1 even when fewer batches ran; here it is the last batch
        that ran). Batches that do not fill a group of K equal-sized batches (the end of an
        epoch, a short last batch) run one step per call. evaluate/predict are unchanged."""
        if target not in backends.targets():
            raise ValueError(f"compile(target=...): unknown target {target!r}; choose from {backends.targets()}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"compile(seed=...): expected a non-negative int, got {seed!r}")
        if (isinstance(steps_per_execution, bool) or not isinstance(steps_per_execution, numbers.Integral)
                or steps_per_execution < 1):
            raise ValueError(f"compile(steps_per_execution=...): expected a positive int, got {steps_per_execution!r}")
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
        had_step = self._functions.training_step() is not None
        if self._functions.owner() is not None:
            self._initial_weights = self._current_weights()
        if had_step:
            self._pending_opt_state = None
        self._reset_functions()
        self.optimizer, self._metric_ids = opt, metrics
        self.loss = new_loss
        self._loss_weights_arg = loss_weights
        self._target, self._seed = target, int(seed)
        self._steps_per_execution = int(steps_per_execution)
        self._metrics, self._metric_out = [], []
        self._trainable_at_compile = {id(layer): layer.trainable for layer in [self, *self._flat_layers()]}
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
        given = by_output(self.loss, names, "compile(loss=...)", "losses")
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
        vals = by_output(lw, self._out_names, "compile(loss_weights=...)", "weights")
        return [1.0 if v is None else float(v) for v in vals]

    def _resolve_metrics(self) -> list:
        losses = self._losses() if self.loss is not None else [None] * len(self._out_names)
        names, n = self._out_names, len(self._out_names)
        ids = self._metric_ids
        if n == 1:
            if isinstance(ids, dict):
                per = [by_output(ids, names, "compile(metrics=...)", "metric lists")[0] or []]
            else:
                per = [list(ids)]
        elif isinstance(ids, dict):
            per = by_output(ids, names, "compile(metrics=...)", "metric lists")
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

    # ---- the compiled programs --------------------------------------------------------------------------
    def _params_arg(self):
        """``params=`` of the next program: the shared store (any program already built), or the
        weights it starts from (kept across compile and a Sequential's add/pop), or None."""
        owner = self._functions.owner()
        if owner is not None:
            return owner
        init = self._initial_weights
        if init:  # after pop()/add() a weight may be gone or reshaped: it starts fresh, as in Keras
            shapes = {w.name: w.shape for w in self.weights}
            init = {k: v for k, v in init.items() if shapes.get(k) == np.shape(v)}
        return init

    def _reset_functions(self) -> None:
        self._functions.clear()

    # ---- layers and frozen weights ---------------------------------------------------------------------
    def _flat_layers(self) -> list:
        """Every layer: the model's and, depth first, the sublayers of custom layers."""
        out: list = []
        for layer in self._graph_layers:
            out.extend(x for x in layer._flat_layers() if not any(x is o for o in out))
        return out

    def _frozen_names(self) -> set[str]:
        """Names of the params of the layers frozen at compile() (before it: frozen now)."""
        snap = self._trainable_at_compile or {}
        everything = not snap.get(id(self), getattr(self, "trainable", True))  # Model(trainable=False)
        return {n.name for layer in self._flat_layers() if everything or not snap.get(id(layer), layer.trainable)
                for _, n in layer._weights}

    def _check_trainable_unchanged(self) -> None:
        snap = self._trainable_at_compile
        if snap is None:
            return
        changed = [layer.name or getattr(layer, "default_name", "model") for layer in [self, *self._flat_layers()]
                   if id(layer) in snap and snap[id(layer)] != layer.trainable]
        if changed:
            warnings.warn(f"the trainable attribute of layer(s) {changed} changed after compile(); the compiled step "
                          "keeps the setting it was compiled with: call compile() again to apply it (as in Keras)",
                          UserWarning, stacklevel=3)

    def _freeze(self, nodes: list) -> list:
        """``nodes`` with each frozen param replaced by a ``gc.state`` of the same name, shape
        and initializer: a constant of the program (not differentiated, not updated)."""
        frozen = self._frozen_names()
        if not frozen:
            return nodes
        repl = {}
        for layer in self._flat_layers():
            for _, p in layer._weights:
                if p.name in frozen:
                    init = p.attrs["init"]
                    repl[p] = F.state(p.name, p.shape, init=init.array if isinstance(init, ArrayValue) else init,
                                      dtype=p.dtype)
        return substitute(list(nodes), repl)

    def _feed_nodes(self) -> list:
        return [F.input(n, (None,) + s, dtype=d) for n, s, d in zip(self._in_feeds, self._in_shapes, self._in_dtypes)]

    def _traced_forward(self, training: bool) -> tuple[list, dict]:
        """``_forward`` on the feed nodes, and the state updates its layers recorded
        (``{state: new value}``: BatchNormalization's moving statistics in training)."""
        layers = self._flat_layers()
        for layer in layers:
            layer._reset_updates()
        try:
            outs = self._forward(self._feed_nodes(), training)
            updates = {s: v for layer in layers for s, v in layer._collected_updates()}
            # add_loss values (a layer applied twice to one tensor records one node twice)
            self._traced_losses = list({id(v): v for layer in layers for v in layer._added_losses}.values())
        finally:
            for layer in layers:
                layer._reset_updates()
        return outs, updates

    def _objective(self, training: bool, weighted: bool):
        """(total loss, {name: extra output}, {state: new value}) of the model's graph; the
        total is exactly ``loss.build(...)`` for one unweighted output without regularizers."""
        self._traced_out_masks = None
        outs, updates = self._traced_forward(training)
        out_masks = self._traced_out_masks or [None] * len(outs)
        losses, lws = self._losses(), self._loss_weights()
        parts = []
        ys = []
        for i, ((out, pre, act), loss, feed) in enumerate(zip(outs, losses, self._label_feeds())):
            shape, dtype = loss.label_spec(self._out_shapes[i])
            y = F.input(feed, (None,) + tuple(shape), dtype=dtype)
            ys.append(y)
            mask = out_masks[i]
            if mask is not None and out.ndim == mask.ndim + 1 and tuple(out.shape[1:mask.ndim]) == \
                    tuple(mask.shape[1:]):
                sw = F.input(self._sw_feeds()[i], (None,), dtype="float32") if weighted else None
                li = _masked_loss(loss, y, out, pre, act, mask, sw)
            elif weighted:
                sw = F.input(self._sw_feeds()[i], (None,), dtype="float32")
                li = F.mean(loss.per_sample(y, out, pre, act) * sw)  # sum_i w_i l_i / batch (Keras)
            else:
                li = loss.build(y, out, pre, act)
            parts.append(li if lws[i] == 1.0 else li * lws[i])
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        for layer in self._flat_layers():
            for r in layer.regularization_losses():
                total = total + r
        for extra in self._traced_losses:  # the layers' add_loss
            total = total + extra
        self._metrics = self._resolve_metrics()
        extras = {}
        if len(parts) > 1:
            extras.update({f"{n}_loss": p for n, p in zip(self._out_names, parts)})
        for m, i in zip(self._metrics, self._metric_out):
            extras[m.name] = m.build(ys[i], *outs[i])
        total, *vals = self._freeze([total, *extras.values(), *updates.values()])  # frozen weights: constants
        return total, dict(zip(extras, vals[:len(extras)])), dict(zip(updates, vals[len(extras):]))

    def _train_function(self, weighted: bool = False, distributed: bool = False, multi: bool = False):
        if multi:  # the K-step program, built after the one-step program (it owns the checkpoints)
            fn = self._functions.get("train_k", weighted)
            if fn is None:
                self._train_function(weighted)
                loss, extras, updates = self._objective(True, weighted)
                fn = self._functions.put("train_k", weighted, False, gc_compile(
                    loss, optimizer=self.optimizer, target=self._target, outputs=extras or None,
                    params=self._params_arg(), seed=self._seed, updates=updates or None, check_finite=False,
                    steps_per_execution=self._steps_per_execution))
            return fn
        fn = self._functions.get("train", weighted, distributed)
        if fn is None:
            self._require_compiled()
            self._ensure_built()
            loss, extras, updates = self._objective(True, weighted)
            fn = gc_compile(loss, optimizer=self.optimizer, target=self._target, outputs=extras or None,
                            params=self._params_arg(), seed=self._seed, updates=updates or None,
                            check_finite=False,  # fit() applies nan_policy to the data once
                            data_parallel=distributed)
            self._functions.put("train", weighted, distributed, fn)
            self._initial_weights = None
            if self._pending_opt_state is not None:
                pending, self._pending_opt_state = self._pending_opt_state, None
                load_optimizer_state(self, pending)
        return fn

    @property
    def train_function(self):
        """The compiled training step (forward, backward, update, metrics) run by each fit() batch."""
        return self._train_function(False)

    def _test_function(self, weighted: bool = False):
        fn = self._functions.get("test", weighted)
        if fn is None:
            self._require_compiled("evaluat")
            self._ensure_built()
            loss, extras, _ = self._objective(False, weighted)  # inference: no state updates
            fn = self._functions.put("test", weighted, False, gc_compile(
                {"loss": loss, **extras}, target=self._target, params=self._params_arg(), seed=self._seed,
                check_finite=False))
            self._initial_weights = None
        return fn

    @property
    def test_function(self):
        """Forward-only loss and metrics (dropout off), sharing the training step's weights."""
        return self._test_function(False)

    @property
    def predict_function(self):
        """Forward-only model outputs (dropout off), sharing the training step's weights."""
        fn = self._functions.get("predict")
        if fn is None:
            self._ensure_built()
            outs = self._freeze([o for o, _, _ in self._traced_forward(False)[0]])
            fn = self._functions.put("predict", False, False, gc_compile(
                outs[0] if len(outs) == 1 else outs, target=self._target, params=self._params_arg(),
                seed=self._seed, check_finite=False))
            self._initial_weights = None
        return fn

    def _store_owner(self):
        """A program holding the model's weights (building the predict function if none is)."""
        self._ensure_built()
        owner = self._functions.owner()
        owner = owner if owner is not None else self.predict_function
        owner._store.ensure(self._freeze(list(self.weights)))  # weights no program reads are in the store too
        return owner

    # ---- the checked feeds of a step (graphc/nn/data.py) ------------------------------------------------
    def _data(self, x, y, sample_weight, class_weight, xarg, yarg, swarg, nan_policy) -> dict[str, np.ndarray]:
        """Every feed of a weighted or unweighted step, checked: {feed name: array}."""
        xs = self._check_x(x, xarg, nan_policy)
        n = len(xs[0])
        ys = check_labels(y, yarg, nan_policy, n, xarg if len(xs) == 1 else f"{xarg}[0]", self._out_names,
                          self._losses(), self._out_shapes)
        data = dict(zip(self._in_feeds, xs))
        data.update(zip(self._label_feeds(), ys))
        if sample_weight is not None and class_weight is not None:
            raise ValueError("You cannot use class_weight and sample_weight at the same time")
        if class_weight is not None:
            data[self._sw_feeds()[0]] = class_weight_to_sample_weight(class_weight, ys)
        elif sample_weight is not None:
            data.update(zip(self._sw_feeds(), check_sample_weights(sample_weight, swarg, n, self._out_names)))
        return data

    def _weighted(self, data: dict) -> bool:
        return any(k in data for k in self._sw_feeds())

    # ---- fit, evaluate, predict -------------------------------------------------------------------------
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
        self._check_trainable_unchanged()
        opts = _FitOptions.check(batch_size, epochs, verbose, validation_split, shuffle, initial_epoch,
                                 steps_per_epoch, validation_batch_size, validation_freq, nan_policy)
        if x is None:
            raise ValueError("x: training data is required")
        data, val = self._fit_data(x, y, sample_weight, class_weight, validation_data, validation_split, nan_policy)
        user_cbs = list(callbacks or [])
        for c in user_cbs:
            if not isinstance(c, Callback):
                raise ValueError(f"callbacks: expected graphc.nn.callbacks.Callback objects, got {c!r}")
        ranks, me = _ranks(distributed)
        if ranks > 1 or distributed:
            opts.verbose = opts.verbose if me == 0 else 0
            if me != 0:  # only rank 0 writes files
                user_cbs = [c for c in user_cbs if not isinstance(c, (ModelCheckpoint, CSVLogger))]
        distributed = bool(ranks > 1 or distributed)
        if distributed and self._steps_per_execution > 1:
            raise ValueError(f"fit: steps_per_execution={self._steps_per_execution} is not available with "
                             f"distributed (data-parallel) training yet; compile with steps_per_execution=1")
        step = self._train_function(self._weighted(data), distributed=distributed)
        multi = (self._train_function(self._weighted(data), multi=True)
                 if self._steps_per_execution > 1 else None)
        batches = EpochBatches(len(next(iter(data.values()))), opts.batch_size, opts.steps_per_epoch)
        history = History()
        cbs = CallbackList(user_cbs + [history], self, {"epochs": opts.epochs, "steps": batches.steps,
                                                        "verbose": opts.verbose, "batch_size": opts.batch_size})
        self.history = history
        self.stop_training = self._stop_now = False
        run = _FitRun(opts, step, data, val, batches, cbs, ranks, sys.stdout,
                      names=["loss"] + ([f"{k}_loss" for k in self._out_names] if len(self._out_names) > 1 else [])
                      + [m.name for m in self._metrics],
                      fed_layers=[l for l in self._flat_layers() if type(l).feeds is not Layer.feeds],
                      multi=multi, k=self._steps_per_execution)
        cbs.on_train_begin({})
        for epoch in range(opts.initial_epoch, opts.epochs):
            logs = self._fit_epoch(run, epoch)
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cbs.on_train_end({})
        return history

    def _fit_data(self, x, y, sample_weight, class_weight, validation_data, validation_split: float,
                  nan_policy: str) -> tuple[dict, dict | None]:
        """The checked training feeds and validation feeds (from ``validation_data``, or the last
        ``validation_split`` of the samples, or None)."""
        data = self._data(x, y, sample_weight, class_weight, "x", "y", "sample_weight", nan_policy)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data: expected a tuple (x_val, y_val) or (x_val, y_val, sample_weight)")
            vsw = validation_data[2] if len(validation_data) == 3 else None
            val = self._data(validation_data[0], validation_data[1], vsw, None, "validation_data[0]",
                             "validation_data[1]", "validation_data[2]", nan_policy)
            return data, val
        if validation_split > 0:
            total = len(next(iter(data.values())))
            split_at = int(np.floor(total * (1.0 - validation_split)))
            if split_at == 0 or split_at == total:
                raise ValueError(f"validation_split: {validation_split} of {total} samples leaves an empty "
                                 "training or validation set")
            return {k: v[:split_at] for k, v in data.items()}, {k: v[split_at:] for k, v in data.items()}
        return data, None

    def _fit_epoch(self, run: _FitRun, epoch: int) -> dict[str, float]:
        """One epoch of fit: its batches through the training step, then the epoch's logs (the
        mean of each output over the samples, over every rank; validation when it is due)."""
        opts, names = run.opts, run.names
        if opts.verbose:
            run.out.write(f"Epoch {epoch + 1}/{opts.epochs}\n")
        bar = Progbar(run.batches.steps, opts.verbose, stream=run.out)
        run.cbs.on_epoch_begin(epoch, {})
        key = self._epochs_seen
        feeds_rng = np.random.default_rng([self._seed, 2, key])
        sums, seen, b = dict.fromkeys(names, 0.0), 0, 0
        new_order = (lambda: np.random.default_rng([self._seed, 1, key]).permutation(run.batches.n)) \
            if opts.shuffle else (lambda: None)
        for group in _groups(run.batches.epoch(new_order), run.k):
            feeds = []
            if (run.multi is not None and len(group) == run.k and group[-1][1] is not None
                    and len({len(i) for _, i in group}) == 1):
                # a full group: its K batches gathered at once, stacked along a new leading axis
                # (one process: fit refuses steps_per_execution with data-parallel training)
                n = len(group[0][1])
                idx = np.concatenate([i for _, i in group])
                stacked = {k: v[idx].reshape((run.k, n) + v.shape[1:]) for k, v in run.data.items()}
                if run.fed_layers:  # custom layers' extra inputs, drawn batch by batch as one step per call
                    extra = [{} for _ in group]
                    for e in extra:
                        for layer in run.fed_layers:
                            e.update(layer.feeds(n, feeds_rng))
                    stacked.update({k: np.stack([e[k] for e in extra]) for k in extra[0]})
                run.cbs.on_train_batch_begin(group[0][0], {})
                res = run.multi(**stacked)
                cols = {k: [M.batch_value(v) for v in res[k]] for k in names}
                per_batch = [{k: cols[k][i] for k in names} for i in range(run.k)]
                for k in names:  # batch by batch, as one step per call adds them
                    for v in cols[k]:
                        sums[k] += v * n
                seen += n * run.k
                b = group[-1][0]
                run.cbs.on_train_batch_end(b, M.batch_logs(self._metrics, per_batch[-1], n))
                bar.update(b + 1, M.log_values(self._metrics, sums, seen))
                if self._stop_now:
                    break
                continue
            for b, idx in group:
                if idx is None:  # the data ran out (the group's last entry)
                    break
                if run.ranks > 1:  # this rank's share of the global batch
                    from ..distributed import shard
                    idx = idx[shard(len(idx))]
                f = {k: v[idx] for k, v in run.data.items()}
                for layer in run.fed_layers:  # custom layers' extra inputs
                    f.update(layer.feeds(len(idx), feeds_rng))
                feeds.append((len(idx), f))
            if not feeds:  # the data ran out at the start of a group
                warnings.warn(RAN_OUT, stacklevel=3)  # at the user's fit() call
                break
            run.cbs.on_train_batch_begin(group[0][0], {})
            per_batch = []  # one step per call (K = 1, or a short group)
            for _, f in feeds:
                res = run.step(**f)
                per_batch.append({k: M.batch_value(res[k]) for k in names})
            for (n, _), batch_logs in zip(feeds, per_batch):
                for k in names:
                    sums[k] += batch_logs[k] * n
                seen += n
            b = group[len(feeds) - 1][0]
            run.cbs.on_train_batch_end(b, M.batch_logs(self._metrics, per_batch[-1], feeds[len(per_batch) - 1][0]))
            bar.update(b + 1, M.log_values(self._metrics, sums, seen))
            if len(feeds) < len(group):  # the data ran out within the group
                warnings.warn(RAN_OUT, stacklevel=3)
                b = group[-1][0]
                break
            if self._stop_now:
                break
        self._epochs_seen += 1
        if run.ranks > 1:  # the epoch's metrics over every rank's samples
            from ..distributed import world
            flat = [np.ravel(np.asarray(sums[k], dtype=np.float64)) for k in names]  # stateful metrics: vectors
            tot = world().allreduce(np.concatenate(flat + [np.array([seen], dtype=np.float64)]))
            ends = np.cumsum([len(f) for f in flat])
            sums = {k: (t.item() if np.ndim(sums[k]) == 0 else t)
                    for k, t in zip(names, np.split(tot[:-1], ends[:-1]))}
            seen = int(tot[-1])
        logs = M.log_values(self._metrics, {k: sums[k] for k in names}, seen)
        if run.val is not None and (epoch + 1) % opts.validation_freq == 0:
            for k, v in self._evaluate_arrays(run.val, opts.validation_batch_size).items():
                logs["val_" + k] = v
        bar.update(b + 1 if seen else 0, logs, finalize=True)
        return logs

    def _evaluate_arrays(self, data: dict, batch_size: int, bar: Progbar | None = None) -> dict[str, float]:
        fn = self._test_function(self._weighted(data))
        sums: dict[str, float] = {}
        n = len(next(iter(data.values())))
        bounds = batch_bounds(n, batch_size)
        for b, (lo, hi) in enumerate(bounds):
            res = fn(**{k: v[lo:hi] for k, v in data.items()})
            for k, v in res.items():
                sums[k] = sums.get(k, 0.0) + M.batch_value(v) * (hi - lo)
            if bar is not None:
                bar.update(b + 1, M.log_values(self._metrics, sums, hi))
        logs = M.log_values(self._metrics, sums, n)
        if bar is not None:
            bar.update(len(bounds), logs, finalize=True)
        return logs

    def evaluate(self, x=None, y=None, batch_size: int | None = None, verbose="auto", sample_weight=None,
                 return_dict: bool = False, nan_policy: str = "raise"):
        """Loss (and metrics) over ``x, y`` with dropout off: a float, or ``[loss, *metrics]``,
        or a dict with ``return_dict=True``. ``sample_weight`` weighs the loss as in fit."""
        self._require_compiled("evaluat")
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {NAN_POLICIES}, got {nan_policy!r}")
        verbose = verbose_arg(verbose)
        batch_size = 32 if batch_size is None else positive_int(batch_size, "batch_size")
        data = self._data(x, y, sample_weight, None, "x", "y", "sample_weight", nan_policy)
        n = len(next(iter(data.values())))
        bar = Progbar(-(-n // batch_size), verbose) if verbose else None
        logs = self._evaluate_arrays(data, batch_size, bar)
        return _keras_result(logs, return_dict)

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
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {NAN_POLICIES}, got {nan_policy!r}")
        verbose = verbose_arg(verbose)
        batch_size = 32 if batch_size is None else positive_int(batch_size, "batch_size")
        xs = self._check_x(x, "x", nan_policy)
        fn = self.predict_function
        bounds = batch_bounds(len(xs[0]), batch_size)
        bar = Progbar(len(bounds), verbose) if verbose else None
        chunks: list[list] = [[] for _ in self._out_names]
        for b, (lo, hi) in enumerate(bounds):
            rows = batch_size if len(bounds) > 1 else hi - lo  # one call: no padding needed
            res = fn(**{name: pad_rows(a[lo:hi], rows) for name, a in zip(self._in_feeds, xs)})
            res = [res] if len(self._out_names) == 1 else list(res)
            for i, r in enumerate(res):
                chunks[i].append(np.asarray(r)[:hi - lo])
            if bar is not None:
                bar.update(b + 1, finalize=b + 1 == len(bounds))
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
        for layer in self._flat_layers():
            feeds.update(layer.feeds(n, rng))
        res = step(**feeds)
        logs = {"loss": float(res["loss"])}
        logs.update(M.batch_logs(self._metrics, {k: M.batch_value(v) for k, v in res.items() if k != "loss"}, n))
        return _keras_result(logs, return_dict)

    def test_on_batch(self, x, y, sample_weight=None, return_dict: bool = False):
        """Loss (and metrics) on one batch, dropout off."""
        self._require_compiled("evaluat")
        data = self._data(x, y, sample_weight, None, "x", "y", "sample_weight", "raise")
        n = len(next(iter(data.values())))
        logs = self._evaluate_arrays(data, n)
        return _keras_result(logs, return_dict)
