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
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .. import dsl as F
from ..ir import Node

HYPER_PREFIX = "hyper:"


class Optimizer:
    """Base class. Subclasses pass their hyper-parameters to ``__init__`` and implement
    ``update``; those with state also implement ``state_spec``.

    ``global_clipnorm`` rescales all gradients together so that their global L2 norm is
    at most that value (as Keras' argument of the same name).
    """

    def __init__(self, global_clipnorm: float | None = None, **hyper: float):
        object.__setattr__(self, "_hyper", {k: float(v) for k, v in hyper.items()})
        object.__setattr__(self, "global_clipnorm", None if global_clipnorm is None else float(global_clipnorm))
        object.__setattr__(self, "_dtype", np.dtype("float32"))
        object.__setattr__(self, "_version", 0)  # bumped on every hyper-parameter change

    # ---- hyper-parameters: attributes users may change between steps ---------------------
    def __getattr__(self, name: str) -> Any:
        hyper = self.__dict__.get("_hyper", {})
        if name in hyper:
            return hyper[name]
        if name == "lr" and "learning_rate" in hyper:
            return hyper["learning_rate"]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "lr" and "learning_rate" in self._hyper:
            name = "learning_rate"
        if name in self._hyper:
            self._hyper[name] = float(value)
            object.__setattr__(self, "_version", self._version + 1)
        else:
            object.__setattr__(self, name, value)

    @property
    def hyperparameters(self) -> dict[str, float]:
        """Current values of the hyper-parameters fed to the compiled step."""
        return dict(self._hyper)

    def hyper(self, name: str) -> Node:
        """The scalar input that carries hyper-parameter ``name`` into the compiled step."""
        if name not in self._hyper:
            raise KeyError(f"{type(self).__name__} has no hyper-parameter {name!r}")
        return F.input(HYPER_PREFIX + name, (), dtype=self._dtype)

    # ---- the rule ------------------------------------------------------------------------
    def state_spec(self, param: Node) -> Mapping[str, str]:
        """Per-parameter state: {state name: initializer name}, same shape/dtype as param."""
        return {}

    def update(self, param: Node, grad: Node, state: Mapping[str, Node], step: Node) -> tuple[Node, Mapping[str, Node]]:
        """Return (new param, {state name: new value}); ``step`` is the 1-based step count (float)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self._hyper.items())
        return f"{type(self).__name__}({args})"
