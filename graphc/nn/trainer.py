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
current.

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
from . import losses as L
from . import metrics as M
from .base import Layer
from .callbacks import Callback, CallbackList, History
from .data import (NAN_POLICIES, RAN_OUT, by_output, check_labels, check_sample_weights,
                   class_weight_to_sample_weight, positive_int, verbose_arg)
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
        self._train_fn = self._train_fn_w = self._test_fn = self._test_fn_w = self._predict_fn = None
        self._train_fn_dp: dict = {}  # data-parallel training steps (fit under mpirun), by weighted
        self._initial_weights: dict | None = None
        self._pending_opt_state: dict | None = None
        self._epochs_seen = 0
        self.stop_training = False
        self._stop_now = False
        self.history: History | None = None

    # ---- compile ----------------------------------------------------------------------------------------
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
                load_optimizer_state(self, pending)
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
                    warnings.warn(RAN_OUT, stacklevel=2)
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
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {NAN_POLICIES}, got {nan_policy!r}")
        verbose = verbose_arg(verbose)
        batch_size = 32 if batch_size is None else positive_int(batch_size, "batch_size")
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
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {NAN_POLICIES}, got {nan_policy!r}")
        verbose = verbose_arg(verbose)
        batch_size = 32 if batch_size is None else positive_int(batch_size, "batch_size")
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
