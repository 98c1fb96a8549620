"""Built-in optimizers, each an update rule in the DSL (Keras' formulas and defaults).

Their ``domains`` are the ranges Keras 3 and torch.optim document or enforce: outside them a
step is NaN (Adam's epsilon = 0 on a zero gradient, beta_1 = 1 zeroes its bias correction) or
diverges (momentum > 1, rho > 1)."""
from __future__ import annotations

import numpy as np

from .. import dsl as F
from .base import Optimizer, StateSpec


# shared ranges (interval notation, see Optimizer's docstring)
_RATE = {"learning_rate": "[0, inf)", "weight_decay": "[0, inf)"}
_EPSILON = {"epsilon": "(0, inf)"}  # torch allows 0: 0 / (sqrt(0) + 0) is NaN on a zero gradient
_MOMENTUM = {"momentum": "[0, 1]"}  # Keras' SGD refuses values outside [0, 1]; torch documents >= 0


def _flag(opt, name: str, value) -> bool:
    """A boolean option, refusing what only looks like one (``"no"`` is truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{type(opt).__name__}: {name} must be True or False, got {value!r}")
    return bool(value)


def _pow(base, step):
    """base ** step for a scalar tensor step (exp/log keeps it a graph op)."""
    return F.exp(step * F.log(base))


def _decay(opt, param, lr):
    """Decoupled weight decay term lr * wd * param (zero when weight_decay is 0 at build time)."""
    if opt._hyper.get("weight_decay", 0.0) == 0.0:
        return None
    return lr * opt.hyper("weight_decay") * param


def _apply(param, delta, decay):
    new = param - delta
    return new if decay is None else new - decay


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and decoupled
    weight decay. With ``momentum=0`` at compile time the step keeps no velocity state."""

    structural_hyperparameters = ("momentum", "weight_decay")
    domains = {**_RATE, **_MOMENTUM}

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, global_clipnorm: float | None = None):
        super().__init__(global_clipnorm, learning_rate=learning_rate, momentum=momentum,
                         weight_decay=weight_decay)
        self.nesterov = _flag(self, "nesterov", nesterov)

    def state_spec(self, param):
        return {"velocity": "zeros"} if self._hyper["momentum"] != 0.0 else {}

    def update(self, param, grad, state, step):
        lr = self.hyper("learning_rate")
        decay = _decay(self, param, lr)
        if not state:
            return _apply(param, lr * grad, decay), {}
        mom = self.hyper("momentum")
        v = mom * state["velocity"] - lr * grad
        delta = -(mom * v - lr * grad) if self.nesterov else -v
        return _apply(param, delta, decay), {"velocity": v}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction folded into the step size, as Keras does."""

    structural_hyperparameters = ("weight_decay",)
    domains = {**_RATE, **_EPSILON, "beta_1": "[0, 1)", "beta_2": "[0, 1)"}  # torch's checks

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, weight_decay: float = 0.0, global_clipnorm: float | None = None):
        super().__init__(global_clipnorm, learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, weight_decay=weight_decay)

    def state_spec(self, param):
        return {"m": "zeros", "v": "zeros"}

    def update(self, param, grad, state, step):
        lr, b1, b2 = self.hyper("learning_rate"), self.hyper("beta_1"), self.hyper("beta_2")
        m = b1 * state["m"] + (1.0 - b1) * grad
        v = b2 * state["v"] + (1.0 - b2) * F.square(grad)
        alpha = lr * F.sqrt(1.0 - _pow(b2, step)) / (1.0 - _pow(b1, step))  # scalar: once per step
        delta = alpha * m / (F.sqrt(v) + self.hyper("epsilon"))
        return _apply(param, delta, _decay(self, param, lr)), {"m": m, "v": v}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter); Keras' default decay 0.004."""

    def __init__(self, learning_rate: float = 0.001, weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, global_clipnorm: float | None = None):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay, global_clipnorm)


class RMSprop(Optimizer):
    """RMSprop with optional momentum and centering (Keras' formulation)."""

    structural_hyperparameters = ("momentum", "weight_decay")
    domains = {**_RATE, **_EPSILON, **_MOMENTUM, "rho": "[0, 1)"}  # rho > 1: a negative velocity

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, weight_decay: float = 0.0,
                 global_clipnorm: float | None = None):
        super().__init__(global_clipnorm, learning_rate=learning_rate, rho=rho, momentum=momentum,
                         epsilon=epsilon, weight_decay=weight_decay)
        self.centered = _flag(self, "centered", centered)

    def state_spec(self, param):
        spec = {"velocity": "zeros"}
        if self.centered:
            spec["average_grad"] = "zeros"
        if self._hyper["momentum"] != 0.0:
            spec["momentum"] = "zeros"
        return spec

    def update(self, param, grad, state, step):
        lr, rho = self.hyper("learning_rate"), self.hyper("rho")
        new = {"velocity": rho * state["velocity"] + (1.0 - rho) * F.square(grad)}
        denom = new["velocity"] + self.hyper("epsilon")
        if self.centered:
            new["average_grad"] = rho * state["average_grad"] + (1.0 - rho) * grad
            denom = denom - F.square(new["average_grad"])
        inc = lr * grad / F.sqrt(denom)
        if "momentum" in state:
            new["momentum"] = self.hyper("momentum") * state["momentum"] + inc
            inc = new["momentum"]
        return _apply(param, inc, _decay(self, param, lr)), new


class Adagrad(Optimizer):
    """Adagrad: per-coordinate step sizes from the running sum of squared gradients."""

    structural_hyperparameters = ("weight_decay",)
    domains = {**_RATE, **_EPSILON, "initial_accumulator_value": "[0, inf)"}  # Keras: non-negative

    def __init__(self, learning_rate: float = 0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, weight_decay: float = 0.0, global_clipnorm: float | None = None):
        super().__init__(global_clipnorm, learning_rate=learning_rate, epsilon=epsilon,
                         weight_decay=weight_decay)
        self.initial_accumulator_value = self.check_hyperparameter("initial_accumulator_value", initial_accumulator_value)

    def state_spec(self, param):
        return {"accumulator": self.initial_accumulator_value}

    def update(self, param, grad, state, step):
        lr = self.hyper("learning_rate")
        acc = state["accumulator"] + F.square(grad)
        return _apply(param, lr * grad / F.sqrt(acc + self.hyper("epsilon")), _decay(self, param, lr)), {"accumulator": acc}


class Lion(Optimizer):
    """Lion (Chen et al. 2023): the sign of an interpolated momentum, with decoupled decay."""

    structural_hyperparameters = ("weight_decay",)
    # Keras' Lion refuses beta_1 outside (0, 1] (at 0 it is SignSGD); beta_2 is an EMA weight
    domains = {**_RATE, "beta_1": "(0, 1]", "beta_2": "[0, 1]"}

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.99,
                 weight_decay: float = 0.0, global_clipnorm: float | None = None):
        super().__init__(global_clipnorm, learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         weight_decay=weight_decay)

    def state_spec(self, param):
        return {"m": "zeros"}

    def update(self, param, grad, state, step):
        lr, b1, b2 = self.hyper("learning_rate"), self.hyper("beta_1"), self.hyper("beta_2")
        c = b1 * state["m"] + (1.0 - b1) * grad
        m = b2 * state["m"] + (1.0 - b2) * grad
        return _apply(param, lr * F.sign(c), _decay(self, param, lr)), {"m": m}


class Adamax(Optimizer):
    """Adamax (Kingma & Ba, section 7): Adam with the infinity norm, Keras' formulation
    ``u = max(beta_2 * u, |g|)``, ``param -= lr * m / ((1 - beta_1**t) * (u + epsilon))``."""

    structural_hyperparameters = ("weight_decay",)
    domains = {**_RATE, **_EPSILON, "beta_1": "[0, 1)", "beta_2": "[0, 1]"}

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, weight_decay: float = 0.0, global_clipnorm: float | None = None):
        super().__init__(global_clipnorm, learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, weight_decay=weight_decay)

    def state_spec(self, param):
        return {"m": "zeros", "u": "zeros"}  # Keras' "momentum" and "norm"

    def update(self, param, grad, state, step):
        lr, b1, b2 = self.hyper("learning_rate"), self.hyper("beta_1"), self.hyper("beta_2")
        m = b1 * state["m"] + (1.0 - b1) * grad
        u = F.maximum(b2 * state["u"], F.abs(grad))
        alpha = lr / (1.0 - _pow(b1, step))  # scalar: once per step
        delta = alpha * m / (u + self.hyper("epsilon"))
        return _apply(param, delta, _decay(self, param, lr)), {"m": m, "u": u}


class Nadam(Optimizer):
    """Nadam (Dozat 2016): Adam with Nesterov momentum and the momentum schedule
    ``u_t = beta_1 * (1 - 0.5 * 0.96**t)``, as Keras. The running product of the ``u_t``
    (Keras' one ``u_product`` variable) is a scalar state per parameter, each copy
    updated identically."""

    structural_hyperparameters = ("weight_decay",)
    domains = {**_RATE, **_EPSILON, "beta_1": "[0, 1)", "beta_2": "[0, 1)"}

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, weight_decay: float = 0.0, global_clipnorm: float | None = None):
        super().__init__(global_clipnorm, learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, weight_decay=weight_decay)

    def state_spec(self, param):
        return {"m": "zeros", "v": "zeros", "u_product": StateSpec((), 1.0)}

    def update(self, param, grad, state, step):
        lr, b1, b2 = self.hyper("learning_rate"), self.hyper("beta_1"), self.hyper("beta_2")
        decay = F.log(F.const(np.asarray(0.96, dtype=step.dtype)))
        u_t = b1 * (1.0 - 0.5 * F.exp(step * decay))
        u_t1 = b1 * (1.0 - 0.5 * F.exp((step + 1.0) * decay))
        u_prod = state["u_product"] * u_t  # Keras updates it before the parameters
        u_prod1 = u_prod * u_t1
        m = b1 * state["m"] + (1.0 - b1) * grad
        v = b2 * state["v"] + (1.0 - b2) * F.square(grad)
        m_hat = u_t1 * m / (1.0 - u_prod1) + (1.0 - u_t) * grad / (1.0 - u_prod)
        v_hat = v / (1.0 - _pow(b2, step))
        delta = m_hat * lr / (F.sqrt(v_hat) + self.hyper("epsilon"))
        return _apply(param, delta, _decay(self, param, lr)), {"m": m, "v": v, "u_product": u_prod}


class Adafactor(Optimizer):
    """Adafactor (Shazeer & Stern 2018) as Keras 3 writes it: for a parameter of rank >= 2 a
    factored second moment (row means ``r`` over the last axis, column means ``c`` over the
    one before), for lower ranks a full one ``v``; the step is ``max(epsilon_2, rms(param)) *
    min(lr, 1/sqrt(t))`` times the update clipped to rms ``clip_threshold``, with
    ``beta_2_t = 1 - t**beta_2_decay``."""

    structural_hyperparameters = ("weight_decay",)
    domains = {**_RATE, "beta_2_decay": "(-inf, 0]", "epsilon_1": "(0, inf)", "epsilon_2": "[0, inf)",
               "clip_threshold": "(0, inf)"}

    def __init__(self, learning_rate: float = 0.001, beta_2_decay: float = -0.8, epsilon_1: float = 1e-30,
                 epsilon_2: float = 1e-3, clip_threshold: float = 1.0, relative_step: bool = True,
                 weight_decay: float = 0.0, global_clipnorm: float | None = None):
        super().__init__(global_clipnorm, learning_rate=learning_rate, beta_2_decay=beta_2_decay,
                         epsilon_1=epsilon_1, epsilon_2=epsilon_2, clip_threshold=clip_threshold,
                         weight_decay=weight_decay)
        # Keras' relative_step caps lr at 1/sqrt(t), which its rho_t does anyway: kept for its config
        self.relative_step = _flag(self, "relative_step", relative_step)

    def state_spec(self, param):
        shape = tuple(param.shape)
        if len(shape) < 2:
            return {"v": "zeros"}
        return {"r": StateSpec(shape[:-1]), "c": StateSpec(shape[:-2] + shape[-1:])}

    @staticmethod
    def _rms(x):
        return F.sqrt(F.mean(F.square(x)))

    def update(self, param, grad, state, step):
        lr = self.hyper("learning_rate")
        decay = _decay(self, param, lr)
        base = param if decay is None else param - decay  # Keras decays first: rms of the decayed param
        rho = F.minimum(lr, F.rsqrt(step))
        alpha = F.maximum(self.hyper("epsilon_2"), self._rms(base)) * rho
        g2 = F.square(grad) + self.hyper("epsilon_1")
        beta = 1.0 - F.exp(self.hyper("beta_2_decay") * F.log(step))  # 1 - t ** decay
        if "v" in state:
            v = beta * state["v"] + (1.0 - beta) * g2
            new = {"v": v}
        else:
            r = beta * state["r"] + (1.0 - beta) * F.mean(g2, -1)
            c = beta * state["c"] + (1.0 - beta) * F.mean(g2, -2)
            v = F.expand_dims(r / F.mean(r, -1, keepdims=True), -1) * F.expand_dims(c, -2)
            new = {"r": r, "c": c}
        u = grad / F.sqrt(v)
        u_hat = u / F.maximum(1.0, self._rms(u) / self.hyper("clip_threshold"))
        return base - alpha * u_hat, new
