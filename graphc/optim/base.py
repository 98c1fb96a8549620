"""The optimizer interface: per-parameter state plus an update rule written in the DSL.

An optimizer is a pure (init_state, update) pair in the shape of optax: ``state_spec``
says which state tensors each parameter needs, ``update`` builds the new parameter and
state from DSL ops. Hyper-parameters are scalar inputs fed at every step (so a schedule
never recompiles); the step counter lives in the compiled state.

A custom optimizer subclasses :class:`Optimizer`::

    class SignSGD(gc.optim.Optimizer):
        def __init__(self, learning_rate=0.01):
            super().__init__(learning_rate=learning_rate)

        def update(self, param, grad, state, step):
            return param - self.hyper("learning_rate") * gc.sign(grad), {}

An optimizer may also compute its own gradients: ``gradients(loss, params)`` (default
``gc.grad`` plus ``global_clipnorm`` clipping) may build any graph from the loss, e.g.
sharpness-aware minimization's gradient at perturbed weights::

    def gradients(self, loss, params):
        g = gc.grad(loss, params)
        norm = gc.sqrt(sum(gc.sum(gc.square(gi)) for gi in g))
        eps = [gc.stop_gradient(self.hyper("rho") * gi / (norm + 1e-12)) for gi in g]
        return self.clip_gradients(gc.grad(gc.substitute(loss, {p: p + e for p, e in zip(params, eps)}), params))

Hyper-parameters with a range declare it in ``domains`` (interval notation; a subclass's
entries add to its bases'), checked whenever a value is set::

    class SignSGD(gc.optim.Optimizer):
        domains = {"learning_rate": "[0, inf)"}

State need not have the parameter's shape: a factored second moment (Adafactor) keeps a
row and a column accumulator for a matrix::

    def state_spec(self, param):
        if len(param.shape) != 2:
            return {"v": "zeros"}                                  # the param's shape
        rows, cols = param.shape
        return {"vr": gc.optim.StateSpec((rows,)), "vc": gc.optim.StateSpec((cols,))}
"""
from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .. import dsl as F
from ..autodiff import grad
from ..errors import HyperParameterError, ShapeError, StateError
from ..ir import Node
from .schedules import LearningRateSchedule

HYPER_PREFIX = "hyper:"


@dataclass(frozen=True)
class StateSpec:
    """One optimizer state tensor declared with its own shape (returned by ``state_spec``).

    ``shape``: a tuple of ints, e.g. ``(rows,)`` for a factored accumulator or ``()`` for a
    per-parameter scalar. ``init``: an initializer name (``"zeros"``, ``"ones"``, ...), a
    number (every element), or an array of exactly ``shape``. ``dtype``: the parameter's
    when None.
    """

    shape: tuple
    init: Any = "zeros"
    dtype: Any = None


@dataclass(frozen=True)
class Interval:
    """A hyper-parameter's domain, written in interval notation: ``"[0, 1)"``, ``"(0, inf)"``."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, spec: Any) -> "Interval":
        """``spec`` ("[low, high]" with ``[``/``(`` and ``]``/``)``, ``inf`` for no bound) parsed,
        or a TypeError/ValueError saying what is wrong with it."""
        if not isinstance(spec, str):
            raise TypeError(f"a domain is a string in interval notation such as '[0, 1)', got {_short(spec)}")
        text = spec.strip()
        parts = text[1:-1].split(",")
        if len(text) < 5 or text[0] not in "[(" or text[-1] not in "])" or len(parts) != 2:
            raise ValueError(f"domain {spec!r} is not in interval notation such as '[0, 1)' or '(0, inf)'")
        try:
            low, high = (float(x) for x in parts)
        except ValueError:
            raise ValueError(f"domain {spec!r}: the bounds must be numbers or inf") from None
        if math.isnan(low) or math.isnan(high) or not low < high:
            raise ValueError(f"domain {spec!r}: the lower bound must be below the upper one")
        return cls(low, high, text[0] == "[" and math.isfinite(low), text[-1] == "]" and math.isfinite(high))

    def __contains__(self, v: float) -> bool:
        return ((self.low <= v if self.low_closed else self.low < v)
                and (v <= self.high if self.high_closed else v < self.high))

    def __str__(self) -> str:
        def num(x: float) -> str:
            return ("-inf" if x < 0 else "inf") if math.isinf(x) else f"{x:g}"
        return f"{'[' if self.low_closed else '('}{num(self.low)}, {num(self.high)}{']' if self.high_closed else ')'}"


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def resolve_state_spec(opt: "Optimizer", param: Node, key: Any, entry: Any) -> tuple[tuple, np.dtype, Any]:
    """One ``state_spec`` entry -> (shape, dtype, init name or initial array), or a StateError
    (ShapeError for an initial array of the wrong shape) naming optimizer, param and entry."""
    where = f"{type(opt).__name__}.state_spec for param {param.name!r}"
    if not isinstance(key, str) or not key:
        raise StateError(f"{where}: state names must be non-empty strings, got {_short(key)}")
    where += f", state {key!r}"
    kinds = ("an initializer name (one of " + ", ".join(F.INITIALIZERS) + "), a number (the param's shape), "
             "a NumPy array (its own shape) or gc.optim.StateSpec(shape, init)")
    shape, dtype, init = param.shape, param.dtype, entry
    if isinstance(entry, StateSpec):
        shape, init = entry.shape, entry.init
        if (not isinstance(shape, (tuple, list))
                or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise StateError(f"{where}: StateSpec shape must be a tuple of non-negative ints, got {_short(shape)}")
        shape = tuple(int(d) for d in shape)
        if entry.dtype is not None:
            try:
                dtype = np.dtype(entry.dtype)
            except TypeError as e:
                raise StateError(f"{where}: StateSpec dtype {entry.dtype!r} is not a dtype ({e})") from None
            if dtype.kind not in "iuf":
                raise StateError(f"{where}: StateSpec dtype must be a float or int type, got {dtype}")
        if isinstance(init, np.ndarray) and init.shape != shape:
            if init.ndim != 0:
                raise ShapeError(f"{where}: the initial array has shape {init.shape}, but the StateSpec declares "
                                 f"{shape}")
            init = init.item()
        if isinstance(init, StateSpec):
            raise StateError(f"{where}: StateSpec init must be an initializer name, a number or an array, "
                             "not another StateSpec")
    if isinstance(init, str):
        if init not in F.INITIALIZERS:
            close = difflib.get_close_matches(init, F.INITIALIZERS, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StateError(f"{where}: unknown initializer {init!r}{hint}; choose from {list(F.INITIALIZERS)}")
        return shape, dtype, init
    if isinstance(init, numbers.Real) and not isinstance(init, (bool, np.bool_)):
        value = np.full(shape, init, dtype=dtype)
    elif isinstance(init, np.ndarray):
        if init.dtype.kind not in "iuf":
            raise StateError(f"{where}: the initial array must be numeric, got dtype {init.dtype}")
        shape = init.shape
        with np.errstate(over="ignore", invalid="ignore"):
            value = init.astype(dtype)
    else:
        raise StateError(f"{where}: got {_short(entry)} ({type(entry).__name__}); expected {kinds}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise StateError(f"{where}: the initial value holds NaN or infinity (as {dtype})")
    return shape, dtype, value


class _OptimizerType(type):
    """Marks an optimizer as constructed once the outermost ``__init__`` has returned: from
    then on a new public attribute is refused (a typo such as ``opt.learnig_rate = 0.1``
    would otherwise be accepted and change nothing)."""

    def __call__(cls, *args, **kwargs):
        obj = super().__call__(*args, **kwargs)
        object.__setattr__(obj, "_frozen", True)
        return obj


class Optimizer(metaclass=_OptimizerType):
    """Base class. Subclasses pass their hyper-parameters to ``__init__`` and implement
    ``update``; those with state also implement ``state_spec``.

    Hyper-parameters are finite real numbers, checked whenever they are set (in
    ``__init__``, as attributes, from a state dict, and again at compile): a string, a bool,
    None, NaN, infinity or an array of more than one element is a TypeError/ValueError
    naming the optimizer and the hyper-parameter.

    ``domains`` declares the range of each hyper-parameter that has one, in interval
    notation: ``{"learning_rate": "[0, inf)", "beta_1": "[0, 1)", "epsilon": "(0, inf)"}``.
    A value outside is a :class:`~graphc.errors.HyperParameterError` (a ValueError) naming
    the optimizer, the hyper-parameter, the value and the range. A subclass's ``domains``
    add to (or replace) its bases' entries; ``__init__(..., domains={...})`` adds entries
    for one instance (a wrapper that takes another optimizer's hyper-parameters passes its
    ``hyperparameter_domains``). Undeclared hyper-parameters need only be finite. The
    built-ins declare the ranges Keras 3 and torch.optim document or enforce: learning
    rate and weight decay >= 0, betas in [0, 1), epsilon > 0, momentum in [0, 1] (Keras'
    SGD check; above 1 the velocity grows without bound), rho in [0, 1). A plain numeric
    option named in ``domains`` (Adagrad's ``initial_accumulator_value``) is checked too.

    After ``__init__`` an optimizer accepts new attributes only with a leading underscore:
    assigning to an unknown public name (a typo of a hyper-parameter) raises AttributeError
    listing the real ones. Subclasses set their own plain attributes
    (``self.nesterov = ...``) in ``__init__`` as usual.

    ``global_clipnorm`` rescales all gradients together so that their global L2 norm is
    at most that value (as Keras' argument of the same name).
    """

    # {hyper-parameter name: interval}, merged along the MRO (see the class docstring)
    domains: Mapping[str, str] = {}

    def __init__(self, global_clipnorm: float | None = None, *, domains: Mapping[str, str] | None = None,
                 **hyper: float):
        object.__setattr__(self, "_dtype", np.dtype("float32"))
        object.__setattr__(self, "_version", 0)  # bumped on every hyper-parameter change
        object.__setattr__(self, "_domains", self._declared_domains(domains, hyper))
        object.__setattr__(self, "_hyper", {})
        object.__setattr__(self, "_schedules", {})  # {hyper-parameter: LearningRateSchedule}
        object.__setattr__(self, "_built", False)  # set once a rule was built (a compiled step reads it)
        object.__setattr__(self, "global_clipnorm", self._checked_clipnorm(global_clipnorm))
        for k, v in hyper.items():
            if isinstance(v, LearningRateSchedule):
                self._schedules[k] = self._checked_schedule(k, v)
            else:
                self._hyper[k] = self.check_hyperparameter(k, v)

    def _declared_domains(self, extra: Mapping[str, str] | None, hyper: Mapping) -> dict[str, Interval]:
        """The class's ``domains`` merged along the MRO, plus ``extra``; each parsed, or a
        TypeError/ValueError naming the optimizer and the entry."""
        name = type(self).__name__
        if extra is not None and not isinstance(extra, Mapping):
            raise TypeError(f"{name}: domains must be a dict {{hyper-parameter: interval}}, got {_short(extra)}")
        merged: dict[str, Any] = {}
        for cls in reversed(type(self).__mro__):
            merged.update(cls.__dict__.get("domains") or {})
        for k in extra or {}:
            if k not in hyper:
                close = difflib.get_close_matches(str(k), list(hyper), 1)
                raise ValueError(f"{name}: domain for {k!r}, which is not a hyper-parameter"
                                 f"{f' (did you mean {close[0]!r}?)' if close else ''}; it has {sorted(hyper)}")
        merged.update(extra or {})
        out = {}
        for k, spec in merged.items():
            try:
                out[k] = Interval.parse(spec)
            except (TypeError, ValueError) as e:
                raise type(e)(f"{name}: the domain of hyper-parameter {k!r}: {e}") from None
        return out

    def _checked_schedule(self, name: str, value: Any) -> Any:
        """A schedule for ``name``: only the learning rate takes one (as in Keras)."""
        if name != "learning_rate":
            raise TypeError(f"{type(self).__name__}: hyper-parameter {name!r} must be a finite real number, got the "
                            f"schedule {_short(value)}; only learning_rate takes a LearningRateSchedule")
        return value

    @property
    def schedules(self) -> dict[str, Any]:
        """{hyper-parameter name: LearningRateSchedule} for those given a schedule (their value
        is computed inside the compiled step from the step counter, so they are not fed and not
        in ``hyperparameters``)."""
        return dict(self._schedules)

    @property
    def hyperparameter_domains(self) -> dict[str, str]:
        """{hyper-parameter name: its range in interval notation} for those that have one."""
        return {k: str(v) for k, v in self._domains.items()}

    # ---- hyper-parameters: attributes users may change between steps ---------------------
    def check_hyperparameter(self, name: str, value: Any) -> float:
        """``value`` as a float if it is a valid value of hyper-parameter ``name`` (a finite
        real number, finite in ``dtype``, inside its declared domain), else a TypeError or
        ValueError (HyperParameterError for a number outside its range) naming both."""
        what = f"{type(self).__name__}: hyper-parameter {name!r}"
        v = value
        if isinstance(v, np.ndarray) and v.size == 1 and v.dtype.kind in "iuf":
            v = v.reshape(()).item()
        elif isinstance(v, np.generic) and v.dtype.kind in "iuf":
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{what} must be a finite real number, got {_short(value)} ({type(value).__name__})")
        try:
            v = float(v)
        except OverflowError:
            v = math.inf
        if not math.isfinite(v):
            raise HyperParameterError(f"{what} must be finite, got {v}")
        dtype = self.__dict__.get("_dtype", np.dtype("float32"))
        with np.errstate(over="ignore"):
            if not np.isfinite(dtype.type(v)):
                raise HyperParameterError(f"{what}: {v} overflows {dtype}, the dtype it is fed in")
        domain = self.__dict__.get("_domains", {}).get(name)
        if domain is not None and v not in domain:
            raise HyperParameterError(f"{what} is {v}, outside its domain {domain}")
        return v

    def _checked_clipnorm(self, value: Any) -> float | None:
        if value is None:
            return None
        v = self.check_hyperparameter("global_clipnorm", value)
        if v <= 0.0:
            raise ValueError(f"{type(self).__name__}: global_clipnorm must be positive (or None), got {v}")
        return v

    def _unknown(self, name: str) -> AttributeError:
        hyper = sorted([*self.__dict__.get("_hyper", {}), *self.__dict__.get("_schedules", {})])
        close = difflib.get_close_matches(name, hyper + ["lr"] * ("learning_rate" in hyper), 1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return AttributeError(f"{type(self).__name__} has no attribute {name!r}{hint} "
                              f"(its hyper-parameters are {hyper})")

    def __getattr__(self, name: str) -> Any:
        hyper = {**self.__dict__.get("_hyper", {}), **self.__dict__.get("_schedules", {})}
        if name in hyper:
            return hyper[name]
        if name == "lr" and "learning_rate" in hyper:
            return hyper["learning_rate"]
        if name.startswith("__") or "_hyper" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        raise self._unknown(name)

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        hyper = d.get("_hyper")
        if hyper is not None:
            scheduled = d["_schedules"]
            if name == "lr" and ("learning_rate" in hyper or "learning_rate" in scheduled):
                name = "learning_rate"
            if name in scheduled or (name in hyper and isinstance(value, LearningRateSchedule)):
                self._switch_schedule(name, value)
                return
            if name in hyper:
                hyper[name] = self.check_hyperparameter(name, value)
                object.__setattr__(self, "_version", self._version + 1)
                return
            if name == "global_clipnorm":
                value = self._checked_clipnorm(value)
            elif name in d.get("_domains", {}):  # a plain numeric option with a range (Adagrad's initial value)
                value = self.check_hyperparameter(name, value)
            elif d.get("_frozen") and not name.startswith("_") and name not in d and not hasattr(type(self), name):
                raise self._unknown(name)
        object.__setattr__(self, name, value)

    def _switch_schedule(self, name: str, value: Any) -> None:
        """A number replaced by a schedule or the reverse: the graph of the step changes, so it
        is refused once a step was compiled with this optimizer (Keras refuses to set a
        scheduled learning rate at all)."""
        cls = type(self).__name__
        if self._built:
            raise TypeError(f"{cls}.{name} {'is the schedule ' + repr(self._schedules[name]) if name in self._schedules else 'is a number'}, "
                            f"compiled into this optimizer's steps; it cannot become {_short(value)} now. Create "
                            f"a new optimizer with {name}={_short(value)} (and compile a new step)")
        if isinstance(value, LearningRateSchedule):
            self._schedules[name] = self._checked_schedule(name, value)
            self._hyper.pop(name, None)
        else:
            v = self.check_hyperparameter(name, value)
            del self._schedules[name]
            self._hyper[name] = v
        object.__setattr__(self, "_version", self._version + 1)

    # ---- what a compiled step reads (the documented exchange with the runtime) -------------
    # hyper-parameters whose value at compile time decides the graph's structure when it is
    # zero (no velocity state without momentum, no decay term without weight decay): a
    # compiled step refuses to run after one of them moves between zero and non-zero
    structural_hyperparameters: tuple = ()

    @property
    def hyperparameters(self) -> dict[str, float]:
        """Current values of the hyper-parameters fed to the compiled step."""
        return dict(self._hyper)

    @property
    def version(self) -> int:
        """A counter bumped by every hyper-parameter change: a compiled step re-reads
        ``hyperparameters`` only when it has moved (a call costs no dict building)."""
        return self._version

    @property
    def dtype(self) -> np.dtype:
        """The float dtype hyper-parameters are fed in: the params' dtype (``compile`` sets it
        before ``update`` builds the rule)."""
        return self._dtype

    @dtype.setter
    def dtype(self, value: Any) -> None:
        dt = np.dtype(value)
        if dt.kind != "f":
            raise TypeError(f"{type(self).__name__}.dtype must be a float dtype, got {dt}")
        object.__setattr__(self, "_dtype", dt)
        for k, v in self._hyper.items():  # still finite in the new dtype
            self.check_hyperparameter(k, v)

    def hyper_feeds(self) -> dict[str, str]:
        """{name of the scalar input that ``hyper(name)`` creates: hyper-parameter name}; the
        compiled step feeds each such input from ``hyperparameters`` at every call."""
        return {HYPER_PREFIX + k: k for k in self._hyper}

    def hyper(self, name: str) -> Node:
        """The scalar input that carries hyper-parameter ``name`` into the compiled step, or
        for a scheduled one the schedule's value at the step counter (the number of steps
        run before this one, as Keras evaluates ``schedule(iterations)``)."""
        object.__setattr__(self, "_built", True)
        if name in self._schedules:
            return self._schedules[name].graph(F.step_counter(), self._dtype)
        if name not in self._hyper:
            raise KeyError(f"{type(self).__name__} has no hyper-parameter {name!r}")
        return F.input(HYPER_PREFIX + name, (), dtype=self._dtype)

    # ---- the gradient stage ----------------------------------------------------------------
    def gradients(self, loss: Node, params: list[Node]) -> list[Node]:
        """The gradient each param's ``update`` receives, one node per param (in ``params``'
        order, each of its param's shape and dtype).

        The default is ``gc.grad(loss, params)`` then :meth:`clip_gradients`. Override it to
        compute gradients another way: any graph built from ``loss`` and ``params`` compiles
        into the same single step, e.g. transformed gradients (centralization, sign), the
        gradient at another point (``gc.substitute(loss, {p: p + e})``, as SAM does) or
        second derivatives (``gc.grad`` of ``sum(g * v)``: Hessian-vector products).
        Hyper-parameters (``self.hyper``) and extra fed inputs (``gc.input``) may be used
        here as in ``update``. Call ``self.clip_gradients`` on the result to keep honouring
        ``global_clipnorm``. ``params`` are the loss's params sorted by name.
        """
        return self.clip_gradients(grad(loss, params))

    def clip_gradients(self, grads: list[Node]) -> list[Node]:
        """``grads`` rescaled together so that their global L2 norm is at most
        ``global_clipnorm`` (Keras' ``global_clipnorm``: g * c / max(||g||, c)); unchanged
        when it is None."""
        grads = list(grads)
        if self.global_clipnorm is None:
            return grads
        total = None
        for g in grads:
            s = F.sum(F.square(g))
            total = s if total is None else total + F.cast(s, total.dtype)
        c = self.global_clipnorm
        scale = c / F.maximum(F.sqrt(total), c)
        return [g * F.cast(scale, g.dtype) for g in grads]

    # ---- the rule ------------------------------------------------------------------------
    def state_spec(self, param: Node) -> Mapping[str, Any]:
        """Per-parameter state: ``{state name: entry}``. An entry is

        - an initializer name (``"zeros"``, ``"ones"``, ...) or a number: a tensor of the
          param's shape and dtype, so initialized;
        - a NumPy array: a tensor of that array's shape (any shape), starting from it;
        - :class:`StateSpec` ``(shape, init, dtype)``: a tensor of any declared shape.

        ``update`` receives each state tensor with its declared shape and must return its
        new value with exactly that shape (a ShapeError names the entry otherwise).
        """
        return {}

    def update(self, param: Node, grad: Node, state: Mapping[str, Node], step: Node) -> tuple[Node, Mapping[str, Node]]:
        """Return (new param, {state name: new value}); ``step`` is the 1-based step count (float).
        The new param has the param's shape, each new state value its declared shape."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join([f"{k}={v:g}" for k, v in self._hyper.items()]
                         + [f"{k}={v!r}" for k, v in self._schedules.items()])
        return f"{type(self).__name__}({args})"
