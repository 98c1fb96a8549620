"""Callbacks (Keras' interface): History, EarlyStopping, LearningRateScheduler, ...

Hooks receive ``logs`` dicts of floats. ``self.model`` is the model being trained; setting
``model.stop_training = True`` ends training after the current epoch.
"""
from __future__ import annotations

import csv
import math
import numbers
import os
import warnings
from typing import Callable, Sequence

import numpy as np


class Callback:
    def __init__(self):
        self.model = None
        self.params: dict = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass


class CallbackList:
    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            if not isinstance(c, Callback):
                raise ValueError(f"fit(callbacks=...): expected graphc.nn.callbacks.Callback objects, got {c!r}")
            c.set_model(model)
            c.set_params(params)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args):
            for c in self.callbacks:
                getattr(c, hook)(*args)
        return call


class History(Callback):
    """Records ``logs`` of every epoch: ``history.history['loss']`` is the list of epoch losses;
    ``plot()`` draws them."""

    def __init__(self):
        super().__init__()
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}
        self._epochs_of: dict[str, list[int]] = {}

    def on_train_begin(self, logs=None):
        self.epoch = []
        self.history = {}
        self._epochs_of = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)
            self._epochs_of.setdefault(k, []).append(epoch)

    def plot(self, path: str | os.PathLike | None = None, metrics: str | Sequence[str] | None = None,
             title: str | None = None):
        """Training curves, one panel per metric (``loss`` and every logged metric by default;
        ``metrics`` picks some), each with its ``val_`` curve when there is one. Returns the
        matplotlib Figure; with ``path`` it is also saved there as a PNG (written atomically).
        Needs matplotlib (an optional dependency); only its object API is used, so no window
        opens and the pyplot backend is left alone."""
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError("History.plot needs matplotlib, an optional dependency of graphc: "
                              "pip install matplotlib (or pip install 'graphc[plot]')") from None
        if not self.history:
            raise ValueError("History.plot: nothing to plot; the history is empty (train with fit first)")
        if metrics is None:
            names = [k for k in self.history if not k.startswith("val_") and k != "learning_rate"]
            names = names or list(self.history)
        else:
            names = [metrics] if isinstance(metrics, str) else list(metrics)
            unknown = [k for k in names if k not in self.history]
            if unknown or not names:
                raise ValueError(f"History.plot(metrics=...): {unknown or 'no metrics'} not logged; the history has "
                                 f"{sorted(self.history)}")
        fig = Figure(figsize=(4.5 * len(names), 3.5))
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        for ax, name in zip(axes, names):
            for key in (name, "val_" + name) if not name.startswith("val_") else (name,):
                if key in self.history:
                    vals = self.history[key]
                    epochs = self._epochs_of.get(key) or list(range(len(vals)))  # a History filled by hand
                    ax.plot([e + 1 for e in epochs], vals, marker="o", ms=3, label=key)
            ax.set_xlabel("epoch")
            ax.set_title(name)
            ax.grid(alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        if path is not None:
            from ..atomic import write_atomic
            write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
        return fig


def _mode_op(mode: str, monitor: str):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
    return (np.less, np.inf) if mode == "min" else (np.greater, -np.inf)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0):
        super().__init__()
        self.monitor, self.patience, self.verbose = monitor, int(patience), verbose
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = int(start_from_epoch)
        self.monitor_op, self._init_best = _mode_op(mode, monitor)
        self.min_delta = abs(min_delta) if self.monitor_op is np.greater else -abs(min_delta)
        self.stopped_epoch = 0
        self.best_epoch = 0

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = self._init_best
        self.best_weights = None
        self.best_epoch = 0

    def _improved(self, current, reference):
        return bool(self.monitor_op(current - self.min_delta, reference))

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"EarlyStopping: monitor {self.monitor!r} is not among the logged values "
                          f"{sorted(logs or {})}", stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._improved(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improved(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None and self.model.stop_training:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


def _learning_rate(model, who: str) -> float:
    """The optimizer's current learning rate: its number, or its schedule at the step count
    (Keras' ``optimizer.learning_rate`` evaluates a schedule at ``iterations``)."""
    opt = model.optimizer
    sched = getattr(opt, "schedules", {}).get("learning_rate")
    if sched is not None:
        step = model._functions.training_step()
        return float(sched(step.iterations if step is not None else 0))
    if "learning_rate" not in opt.hyperparameters:
        raise ValueError(f"{who}: optimizer {opt!r} has no 'learning_rate' hyper-parameter")
    return float(opt.learning_rate)


def _set_learning_rate(model, value: float, who: str) -> None:
    """Set a number learning rate; a schedule is not settable (Keras raises TypeError)."""
    opt = model.optimizer
    sched = getattr(opt, "schedules", {}).get("learning_rate")
    if sched is not None:
        raise TypeError(f"{who}: the optimizer {type(opt).__name__} was created with the LearningRateSchedule "
                        f"{type(sched).__name__} as its learning_rate, hence its learning rate is not settable "
                        f"(to {value:g}). Give the optimizer a float learning_rate to use {who}, or drop {who} and "
                        "let the schedule drive the learning rate")
    opt.learning_rate = value


class LearningRateScheduler(Callback):
    """``schedule(epoch, lr) -> new lr`` (or ``schedule(epoch)``), applied at each epoch's start.

    The learning rate is a hyper-parameter fed to the compiled step at each call, so
    changing it never recompiles.
    """

    def __init__(self, schedule: Callable, verbose: int = 0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = _learning_rate(self.model, "LearningRateScheduler")
        try:
            new = self.schedule(epoch, lr)
        except TypeError:
            new = self.schedule(epoch)
        new = float(new)
        if not math.isfinite(new):
            raise ValueError(f"LearningRateScheduler: the schedule returned {new} for epoch {epoch}")
        _set_learning_rate(self.model, new, "LearningRateScheduler")
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {new:g}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = _learning_rate(self.model, "LearningRateScheduler")


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
        super().__init__()
        if factor >= 1.0:
            raise ValueError("ReduceLROnPlateau: factor must be < 1")
        self.monitor, self.factor, self.patience, self.verbose = monitor, float(factor), int(patience), verbose
        self.min_delta, self.cooldown, self.min_lr = float(min_delta), int(cooldown), float(min_lr)
        self.monitor_op, self._init_best = _mode_op(mode, monitor)
        self._delta = self.min_delta if self.monitor_op is np.greater else -self.min_delta

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.cooldown_counter = self._init_best, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.monitor_op(current - self._delta, self.best):
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = _learning_rate(self.model, "ReduceLROnPlateau")
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    _set_learning_rate(self.model, new, "ReduceLROnPlateau")
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new:g}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0
        if logs is not None:
            logs["learning_rate"] = _learning_rate(self.model, "ReduceLROnPlateau")


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True
            self.model._stop_now = True


class LambdaCallback(Callback):
    """Callbacks from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None):
        super().__init__()
        for k, v in dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end, on_train_begin=on_train_begin,
                         on_train_end=on_train_end, on_train_batch_begin=on_train_batch_begin,
                         on_train_batch_end=on_train_batch_end).items():
            if v is not None:
                setattr(self, k, v)


class ModelCheckpoint(Callback):
    """Save the model's weights after every epoch, or only when ``monitor`` improves
    (``save_best_only``), atomically: a crash mid-save leaves the previous file intact.

    ``filepath`` may hold ``{epoch}`` (1-based) and any logged value, as Keras formats it:
    ``"ckpt-{epoch:02d}-{val_loss:.3f}"``; a ``.keras`` name saves the whole model (``model.save``),
    ``.weights.h5`` Keras' h5 weights, anything else .npz (``.npz`` is appended if missing). With
    ``save_weights_only=False`` the optimizer state and epoch counter are saved too (what
    ``load_weights`` needs to resume training exactly). ``mode='auto'`` maximizes monitors
    holding "acc", minimizes the others. ``save_freq``: ``'epoch'`` or a number of batches.
    Weights holding NaN/infinity are not written (a warning; the last good file stays).
    """

    def __init__(self, filepath, monitor: str = "val_loss", verbose: int = 0, save_best_only: bool = False,
                 save_weights_only: bool = True, mode: str = "auto", save_freq="epoch",
                 initial_value_threshold: float | None = None):
        super().__init__()
        if not isinstance(filepath, (str, os.PathLike)) or not os.fspath(filepath):
            raise ValueError(f"ModelCheckpoint(filepath=...): expected a path, got {filepath!r}")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, numbers.Integral)
                                     or save_freq <= 0):
            raise ValueError(f"ModelCheckpoint(save_freq=...): expected 'epoch' or a positive int, got {save_freq!r}")
        self.filepath = os.fspath(filepath)
        self.monitor, self.verbose = monitor, verbose
        self.save_best_only, self.save_weights_only = bool(save_best_only), bool(save_weights_only)
        self.save_freq = save_freq
        self.monitor_op, self._init_best = _mode_op(mode, monitor)
        self.initial_value_threshold = initial_value_threshold
        self.best = self._init_best if initial_value_threshold is None else float(initial_value_threshold)
        self.saved: list[str] = []
        self._batches = 0
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self._batches = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq != "epoch":
            self._batches += 1
            if self._batches % self.save_freq == 0:
                self._save(self._epoch, dict(logs or {}), batch)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, dict(logs or {}))

    def _path(self, epoch: int, logs: dict, batch: int | None) -> str:
        try:
            fields = {k: v for k, v in logs.items()}
            if batch is not None:
                fields["batch"] = batch + 1
            return self.filepath.format(epoch=epoch + 1, **fields)
        except (KeyError, IndexError, ValueError) as e:
            raise KeyError(f'ModelCheckpoint: failed to format this callback filepath: "{self.filepath}". '
                           f"Reason: {e!r} (the logs have {sorted(logs)})") from None

    def _save(self, epoch: int, logs: dict, batch: int | None = None) -> None:
        path = self._path(epoch, logs, batch)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"ModelCheckpoint: can save best model only with {self.monitor} available, skipping "
                              f"(the logs have {sorted(logs)})", stacklevel=2)
                return
            if not self.monitor_op(current, self.best):
                if self.verbose > 0:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {current:.5f}, "
                      f"saving model to {path}")
            self.best = current
        elif self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        from ..errors import StateError
        try:
            if path.endswith(".keras"):  # the whole model in Keras 3's format, as Keras' callback writes it
                written = self.model.save(path)
            else:
                written = self.model.save_weights(path, include_optimizer=not self.save_weights_only)
        except StateError as e:
            warnings.warn(f"ModelCheckpoint: not saved: {e}", stacklevel=2)
            return
        self.saved.append(written)


class CSVLogger(Callback):
    """Stream each epoch's logs to a CSV file: an ``epoch`` column (0-based, as Keras) and
    the logged values in sorted order; values missing in an epoch are written as ``NA``.
    ``append=True`` continues an existing file (without a second header)."""

    def __init__(self, filename, separator: str = ",", append: bool = False):
        super().__init__()
        if not isinstance(filename, (str, os.PathLike)) or not os.fspath(filename):
            raise ValueError(f"CSVLogger(filename=...): expected a path, got {filename!r}")
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"CSVLogger(separator=...): expected one character, got {separator!r}")
        self.filename, self.sep, self.append = os.fspath(filename), separator, bool(append)
        self.keys: list[str] | None = None
        self._file = self._writer = None
        self._header = True

    def on_train_begin(self, logs=None):
        self._header = not (self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0)
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer, self.keys = None, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch"] + self.keys, delimiter=self.sep,
                                          extrasaction="ignore")
            if self._header:
                self._writer.writeheader()
        row = {"epoch": epoch}
        for k in self.keys:
            v = logs.get(k, "NA")
            row[k] = v if isinstance(v, str) else repr(float(v))
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file, self._writer = None, None
