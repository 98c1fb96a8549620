"""Learning-rate schedules evaluated inside the compiled step (``keras.optimizers.schedules``).

A schedule passed as an optimizer's ``learning_rate`` becomes a DSL expression of the step
counter (the int64 state ``"step"``: how many steps have run, read before this step
increments it, as Keras evaluates ``schedule(optimizer.iterations)``), so the learning rate
changes every step with no recompile and no Python work per step::

    opt = gc.optim.Adam(learning_rate=gc.optim.schedules.ExponentialDecay(0.1, 100, 0.96))

Each formula is written once over an ``ops`` namespace: NumPy (float32, as Keras' default
dtype) for ``schedule(step)`` in Python, the DSL for the compiled step. The numbers a
schedule holds are constants of the compiled graph, so a schedule is immutable once made.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .. import dsl as F
from ..ir import Node


class _NumpyOps:
    """The NumPy side of a formula (float32 scalars, as Keras' schedules compute)."""

    dtype = np.float32

    def c(self, v):
        return np.asarray(v, dtype=self.dtype)

    floor, ceil, cos, minimum = staticmethod(np.floor), staticmethod(np.ceil), staticmethod(np.cos), staticmethod(np.minimum)

    where, equal, less, less_equal = (staticmethod(np.where), staticmethod(np.equal), staticmethod(np.less),
                                      staticmethod(np.less_equal))

    def pow_const_base(self, base: float, p):
        return np.power(self.c(base), p).astype(self.dtype)

    def pow_const_exp(self, x, p: float):
        return np.power(x, self.c(p)).astype(self.dtype)


class _GraphOps:
    """The DSL side: the same formula as graph ops of the compiled step."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def c(self, v):
        return F.const(np.asarray(v, dtype=self.dtype))

    floor, ceil, cos, minimum, where = (staticmethod(F.floor), staticmethod(F.ceil), staticmethod(F.cos),
                                        staticmethod(F.minimum), staticmethod(F.where))
    equal, less, less_equal = staticmethod(F.equal), staticmethod(F.less), staticmethod(F.less_equal)

    def pow_const_base(self, base: float, p):
        if base == 0.0:  # 0 ** 0 = 1 (exp(0 * log 0) would be NaN)
            return F.where(F.equal(p, 0.0), 1.0, 0.0) * self.c(1.0)
        return F.exp(p * math.log(base))

    @staticmethod
    def pow_const_exp(x, p: float):
        return F.power(x, p)


def _number(cls: str, name: str, v: Any, *, positive: bool = False, integral: bool = False) -> Any:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise TypeError(f"{cls}: {name} must be a finite number, got {v!r}")
    if positive and not v > 0:
        raise ValueError(f"{cls}: Argument `{name}` must be > 0. Received: {name}={v}")
    if integral and float(v) != int(v):
        raise ValueError(f"{cls}: {name} must be a whole number of steps, got {v!r}")
    return v


def _flag(cls: str, name: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{cls}: {name} must be True or False, got {v!r}")
    return bool(v)


class LearningRateSchedule:
    """Base class: a subclass implements ``formula(step, ops)`` once (``ops``: the NumPy or
    DSL namespace above, ``step`` a float scalar of it) and ``get_config``.

    ``schedule(step)`` is the value in Python (a float32 NumPy scalar, as Keras'); inside a
    compiled step the optimizer calls ``graph(step)`` on the step counter."""

    _frozen = False

    def formula(self, step, ops):
        raise NotImplementedError(f"learning rate schedule {type(self).__name__!r} must implement formula(step, ops)")

    def __call__(self, step) -> np.ndarray:
        ops = _NumpyOps()
        return ops.c(self.formula(ops.c(step), ops))[()]

    def graph(self, step: Node, dtype: Any = "float32") -> Node:
        """The learning rate at ``step`` (a scalar tensor, e.g. the step counter) as a
        ``dtype`` scalar tensor of the graph."""
        ops = _GraphOps(dtype)
        out = self.formula(F.cast(step, ops.dtype), ops)
        return F.cast(out, ops.dtype)

    def get_config(self) -> dict:
        raise NotImplementedError(f"learning rate schedule {type(self).__name__!r} must implement get_config()")

    @classmethod
    def from_config(cls, config: dict) -> "LearningRateSchedule":
        return cls(**config)

    def __setattr__(self, name, value):
        if self._frozen:  # its numbers are constants of every step compiled with it
            raise AttributeError(f"{type(self).__name__} is immutable (its values are compiled into the step); "
                                 f"make a new schedule instead of setting {name!r}")
        object.__setattr__(self, name, value)

    def _freeze(self):
        object.__setattr__(self, "_frozen", True)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class _RateDecay(LearningRateSchedule):
    """The arguments and the progress ``step / decay_steps`` (floored with ``staircase``) that
    ExponentialDecay and InverseTimeDecay share."""

    _negative_rate = True  # whether decay_rate may be < 0

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase, name):
        c = type(self).__name__
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number(c, "decay_steps", decay_steps, positive=True)
        self.decay_rate = _number(c, "decay_rate", decay_rate)
        if decay_rate < 0 and not self._negative_rate:
            raise ValueError(f"{c}: decay_rate must be >= 0 (a negative base has no real power), got {decay_rate}")
        self.staircase, self.name = _flag(c, "staircase", staircase), name
        self._freeze()

    def _progress(self, step, ops):
        p = step / ops.c(self.decay_steps)
        return ops.floor(p) if self.staircase else p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class ExponentialDecay(_RateDecay):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (the exponent floored
    with ``staircase``)."""

    _negative_rate = False

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        super().__init__(initial_learning_rate, decay_steps, decay_rate, staircase, name)

    def formula(self, step, ops):
        return ops.c(self.initial_learning_rate) * ops.pow_const_base(self.decay_rate, self._progress(step, ops))


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while ``boundaries[i-1] <
    step <= boundaries[i]``, ``values[-1]`` after the last boundary."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        c = type(self).__name__
        if not isinstance(boundaries, (list, tuple)) or not isinstance(values, (list, tuple)):
            raise TypeError(f"{c}: boundaries and values must be lists, got {boundaries!r} and {values!r}")
        if len(boundaries) != len(values) - 1:
            raise ValueError(f"{c}: the length of boundaries should be 1 less than the length of values, got "
                             f"{len(boundaries)} boundaries and {len(values)} values")
        self.boundaries = [_number(c, f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
        self.values = [_number(c, f"values[{i}]", v) for i, v in enumerate(values)]
        self.name = name
        self._freeze()

    def formula(self, step, ops):
        vals = [ops.c(v) for v in self.values]
        out = vals[-1]
        # from the last interval down: each earlier bound that holds replaces the value
        for b, v in zip(reversed(self.boundaries), reversed(vals[:-1])):
            out = ops.where(ops.less_equal(step, ops.c(b)), v, out)
        return out

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}


class PolynomialDecay(LearningRateSchedule):
    """``(initial - end) * (1 - step / decay_steps) ** power + end`` with step capped at
    ``decay_steps``; with ``cycle`` decay_steps grows to the next multiple above step."""

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0, cycle=False,
                 name="PolynomialDecay"):
        c = type(self).__name__
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number(c, "decay_steps", decay_steps, positive=True)
        self.end_learning_rate = _number(c, "end_learning_rate", end_learning_rate)
        self.power = _number(c, "power", power)
        self.cycle, self.name = _flag(c, "cycle", cycle), name
        self._freeze()

    def formula(self, step, ops):
        init, end = ops.c(self.initial_learning_rate), ops.c(self.end_learning_rate)
        decay_steps = ops.c(self.decay_steps)
        if self.cycle:
            mult = ops.where(ops.equal(step, ops.c(0.0)), ops.c(1.0), ops.ceil(step / decay_steps))
            decay_steps = decay_steps * mult
        else:
            step = ops.minimum(step, decay_steps)
        p = step / decay_steps
        return (init - end) * ops.pow_const_exp(ops.c(1.0) - p, self.power) + end

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "end_learning_rate": self.end_learning_rate, "power": self.power, "cycle": self.cycle,
                "name": self.name}


class InverseTimeDecay(_RateDecay):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)`` (the ratio floored
    with ``staircase``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="InverseTimeDecay"):
        super().__init__(initial_learning_rate, decay_steps, decay_rate, staircase, name)

    def formula(self, step, ops):
        return ops.c(self.initial_learning_rate) / (ops.c(1.0) + ops.c(self.decay_rate) * self._progress(step, ops))


class CosineDecay(LearningRateSchedule):
    """Cosine decay from ``initial_learning_rate`` (or, after a linear warmup of
    ``warmup_steps`` to ``warmup_target``, from ``warmup_target``) to ``alpha`` times it over
    ``decay_steps``."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None,
                 warmup_steps=0):
        c = type(self).__name__
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number(c, "decay_steps", decay_steps, positive=True)
        self.alpha = _number(c, "alpha", alpha)
        self.name = name
        self.warmup_target = None if warmup_target is None else _number(c, "warmup_target", warmup_target)
        self.warmup_steps = _number(c, "warmup_steps", warmup_steps)
        if warmup_steps < 0:
            raise ValueError(f"{c}: warmup_steps must be >= 0, got {warmup_steps}")
        self._freeze()

    def _decay(self, step, decay_steps, decay_from, ops):
        cosine = ops.c(0.5) * (ops.c(1.0) + ops.cos(ops.c(math.pi) * (step / decay_steps)))
        return decay_from * ((ops.c(1.0) - ops.c(self.alpha)) * cosine + ops.c(self.alpha))

    def formula(self, step, ops):
        init, decay_steps = ops.c(self.initial_learning_rate), ops.c(self.decay_steps)
        if self.warmup_target is None:
            return self._decay(ops.minimum(step, decay_steps), decay_steps, init, ops)
        target, warmup = ops.c(self.warmup_target), ops.c(self.warmup_steps)
        step = ops.minimum(step, decay_steps + warmup)
        warm = (target - init) * (step / warmup) + init if self.warmup_steps > 0 else init
        return ops.where(ops.less(step, warmup), warm, self._decay(step - warmup, decay_steps, target, ops))

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


_BY_NAME = {c.__name__: c for c in (ExponentialDecay, PiecewiseConstantDecay, PolynomialDecay, InverseTimeDecay,
                                     CosineDecay)}


def serialize(schedule: LearningRateSchedule) -> dict:
    """Keras' serialized form: ``{"module", "class_name", "config", "registered_name"}``."""
    return {"module": "keras.optimizers.schedules", "class_name": type(schedule).__name__,
            "config": schedule.get_config(), "registered_name": None}


def deserialize(config: dict, custom_objects: dict | None = None) -> LearningRateSchedule:
    """A schedule from ``serialize``'s dict (Keras' or graphc's)."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"a serialized schedule is a dict with 'class_name' and 'config', got {config!r}")
    known = {**_BY_NAME, **(custom_objects or {})}
    cls = known.get(config["class_name"])
    if cls is None:
        raise ValueError(f"unknown learning rate schedule {config['class_name']!r}; graphc has {sorted(_BY_NAME)}")
    return cls.from_config(dict(config.get("config", {})))
