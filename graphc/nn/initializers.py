"""Keras 3's initializers (``keras.initializers``): the classes with their arguments, and
``get`` for names, configs and objects.

An initializer that equals one of graphc's named initializers (``RandomNormal()`` with Keras'
defaults is graphc's ``"normal"``, ``GlorotUniform()`` is ``"glorot_uniform"``, ...) and has
no seed resolves to that name, so its values are drawn when the program is compiled, from
``compile(seed=...)`` and the weight's name, as for built-in layers. Any other (arguments
of its own, a seed, a distribution graphc has no name for) is evaluated when the weight is
declared, into an array: seeded by its ``seed``, else by the weight's name, so a rebuilt
model draws the same values.
"""
from __future__ import annotations

import numbers
import zlib

import numpy as np

from ..initializers import TRUNCATED_STDDEV_CORRECTION, truncated_normal

__all__ = ["Initializer", "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform", "TruncatedNormal",
           "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform",
           "LecunNormal", "Orthogonal", "Identity", "get", "serialize", "resolve"]


def _fans(shape: tuple) -> tuple[float, float]:
    """Keras' fan-in/fan-out: kernels ``(..., in, out)`` count the receptive field."""
    if len(shape) < 1:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    field = float(np.prod(shape[:-2]))
    return shape[-2] * field, shape[-1] * field


class Initializer:
    """Base class: ``init(shape, dtype)`` returns an array; ``get_config`` its arguments."""

    graphc_name: str | None = None  # the graphc initializer this is at its defaults (seed None)

    def __call__(self, shape, dtype=None, seed: int | None = None) -> np.ndarray:
        rng = np.random.default_rng(self._seed(seed))
        return np.asarray(self.draw(rng, tuple(int(d) for d in shape)), dtype=np.dtype(dtype or "float32"))

    def _seed(self, seed):
        s = getattr(self, "seed", None)
        return s if s is not None else (seed if seed is not None else 0)

    def draw(self, rng: np.random.Generator, shape: tuple) -> np.ndarray:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "Initializer":
        return cls(**config)

    def _as_graphc_name(self) -> str | None:
        """The graphc initializer name this equals, or None (evaluated into an array)."""
        if self.graphc_name is None or getattr(self, "seed", None) is not None:
            return None
        return self.graphc_name if self.get_config() == type(self)().get_config() else None

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check_seed(seed, what: str):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"{what}(seed=...): expected a non-negative int or None, got {seed!r}")
    return None if seed is None else int(seed)


def _check_real(v, what: str, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{what}: expected a finite{' positive' if positive else ''} number, got {v!r}")
    return float(v)


class Zeros(Initializer):
    graphc_name = "zeros"

    def draw(self, rng, shape):
        return np.zeros(shape)


class Ones(Initializer):
    graphc_name = "ones"

    def draw(self, rng, shape):
        return np.ones(shape)


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = _check_real(value, "Constant(value=...)")

    def draw(self, rng, shape):
        return np.full(shape, self.value)

    def get_config(self):
        return {"value": self.value}


class RandomNormal(Initializer):
    graphc_name = "normal"

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = _check_real(mean, "RandomNormal(mean=...)")
        self.stddev = _check_real(stddev, "RandomNormal(stddev=...)", positive=True)
        self.seed = _check_seed(seed, "RandomNormal")

    def draw(self, rng, shape):
        return rng.normal(self.mean, self.stddev, shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(Initializer):
    graphc_name = "uniform"

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval = _check_real(minval, "RandomUniform(minval=...)")
        self.maxval = _check_real(maxval, "RandomUniform(maxval=...)")
        if self.maxval < self.minval:
            raise ValueError(f"RandomUniform: maxval={maxval!r} is below minval={minval!r}")
        self.seed = _check_seed(seed, "RandomUniform")

    def draw(self, rng, shape):
        return rng.uniform(self.minval, self.maxval, shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class TruncatedNormal(Initializer):
    """Normal values redrawn until within two standard deviations of the mean (as Keras)."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = _check_real(mean, "TruncatedNormal(mean=...)")
        self.stddev = _check_real(stddev, "TruncatedNormal(stddev=...)", positive=True)
        self.seed = _check_seed(seed, "TruncatedNormal")

    def draw(self, rng, shape):
        return self.mean + truncated_normal(rng, self.stddev, shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class VarianceScaling(Initializer):
    """Keras' VarianceScaling: variance ``scale / n`` with n the fan-in, fan-out or their mean,
    from a truncated normal, a normal or a uniform distribution."""

    _MODES = ("fan_in", "fan_out", "fan_avg")
    _DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        self.scale = _check_real(scale, f"{type(self).__name__}(scale=...)", positive=True)
        if mode not in self._MODES:
            raise ValueError(f"{type(self).__name__}(mode=...): expected one of {self._MODES}, got {mode!r}")
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in self._DISTRIBUTIONS:
            raise ValueError(f"{type(self).__name__}(distribution=...): expected one of {self._DISTRIBUTIONS}, "
                             f"got {distribution!r}")
        self.mode, self.distribution = mode, distribution
        self.seed = _check_seed(seed, type(self).__name__)

    def draw(self, rng, shape):
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        var = self.scale / max(1.0, n)
        if self.distribution == "truncated_normal":
            return truncated_normal(rng, np.sqrt(var) / TRUNCATED_STDDEV_CORRECTION, shape)
        if self.distribution == "untruncated_normal":
            return rng.normal(0.0, np.sqrt(var), shape)
        lim = np.sqrt(3.0 * var)
        return rng.uniform(-lim, lim, shape)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


def _scaling(name: str, scale: float, mode: str, distribution: str, graphc_name: str | None):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    def get_config(self):
        return {"seed": self.seed}

    return type(name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config,
                                           "graphc_name": graphc_name,
                                           "__doc__": f"Keras' {name}: VarianceScaling(scale={scale}, "
                                                      f"mode={mode!r}, distribution={distribution!r})."})


GlorotUniform = _scaling("GlorotUniform", 1.0, "fan_avg", "uniform", "glorot_uniform")
GlorotNormal = _scaling("GlorotNormal", 1.0, "fan_avg", "truncated_normal", "glorot_normal")
HeUniform = _scaling("HeUniform", 2.0, "fan_in", "uniform", "he_uniform")
HeNormal = _scaling("HeNormal", 2.0, "fan_in", "truncated_normal", "he_normal")
LecunUniform = _scaling("LecunUniform", 1.0, "fan_in", "uniform", None)
LecunNormal = _scaling("LecunNormal", 1.0, "fan_in", "truncated_normal", None)


class Orthogonal(Initializer):
    graphc_name = "orthogonal"

    def __init__(self, gain=1.0, seed=None):
        self.gain = _check_real(gain, "Orthogonal(gain=...)")
        self.seed = _check_seed(seed, "Orthogonal")

    def draw(self, rng, shape):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: needs a shape of rank >= 2, got {shape}")
        rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
        q, r = np.linalg.qr(rng.normal(0.0, 1.0, (max(rows, cols), min(rows, cols))))
        q = q * np.where(np.diag(r) < 0, -1.0, 1.0)  # uniform over orthogonal matrices
        return self.gain * (q.T if rows < cols else q).reshape(shape)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


class Identity(Initializer):
    def __init__(self, gain=1.0):
        self.gain = _check_real(gain, "Identity(gain=...)")

    def draw(self, rng, shape):
        if len(shape) != 2:
            raise ValueError(f"Identity: needs a 2-D shape, got {shape}")
        return self.gain * np.eye(*shape)

    def get_config(self):
        return {"gain": self.gain}


_CLASSES = {c.__name__: c for c in (Zeros, Ones, Constant, RandomNormal, RandomUniform, TruncatedNormal,
                                    VarianceScaling, GlorotUniform, GlorotNormal, HeUniform, HeNormal,
                                    LecunUniform, LecunNormal, Orthogonal, Identity)}
_NAMES = {"zeros": Zeros, "zero": Zeros, "ones": Ones, "one": Ones, "constant": Constant,
          "random_normal": RandomNormal, "normal": RandomNormal, "random_uniform": RandomUniform,
          "uniform": RandomUniform, "truncated_normal": TruncatedNormal, "variance_scaling": VarianceScaling,
          "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal, "he_uniform": HeUniform,
          "he_normal": HeNormal, "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal,
          "orthogonal": Orthogonal, "identity": Identity}


def get(identifier, what: str = "initializer") -> Initializer:
    """An Initializer from a Keras name (``"random_normal"``), a class name, a serialized
    config (``{"class_name": ..., "config": ...}``), a class or an instance; ``what`` (the
    layer and argument) starts the error for anything else."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if isinstance(identifier, str):
        cls = _NAMES.get(identifier.lower()) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(f"{what}: unknown initializer {identifier!r}; choose from {sorted(_NAMES)} or pass a "
                             "graphc.nn.initializers object")
        return cls()
    if isinstance(identifier, dict) and "class_name" in identifier:
        cls = _CLASSES.get(identifier["class_name"]) or _NAMES.get(str(identifier["class_name"]).lower())
        if cls is None:
            raise ValueError(f"{what}: unknown initializer class {identifier['class_name']!r}; graphc has "
                             f"{sorted(_CLASSES)}")
        return cls.from_config(dict(identifier.get("config") or {}))
    raise ValueError(f"{what}: expected an initializer name, a graphc.nn.initializers object or a config, got "
                     f"{identifier!r}")


def serialize(init: Initializer) -> dict:
    """As Keras' ``serialize_keras_object`` writes an initializer."""
    return {"module": "keras.initializers", "class_name": type(init).__name__, "config": init.get_config(),
            "registered_name": None}


def resolve(identifier, shape: tuple, dtype, weight_name: str, what: str):
    """What ``gc.param``/``gc.state`` take as ``init``: a graphc initializer name, or the
    array an initializer with arguments (or a seed) draws, seeded by its seed or else by
    ``weight_name``. Arrays (and array-likes) are returned as arrays."""
    if isinstance(identifier, (np.ndarray, list, tuple, numbers.Number)) and not isinstance(identifier, bool):
        return np.asarray(identifier, dtype=dtype)
    init = get(identifier, what)
    name = init._as_graphc_name()
    if name is not None:
        return name
    return init(shape, dtype, seed=zlib.crc32(weight_name.encode()))
