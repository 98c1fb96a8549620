"""Parameter initializers, seeded by (seed, parameter name) so values do not depend on
declaration order."""
from __future__ import annotations

import zlib

import numpy as np

from .ir import ArrayValue, Node


def _fans(shape: tuple) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def init_value(node: Node, seed: int = 0) -> np.ndarray:
    """The initial value of a param node (a fresh, writable array)."""
    init, shape, dtype = node.attrs["init"], node.shape, node.dtype
    if isinstance(init, ArrayValue):
        return np.array(init.array, dtype=dtype)
    rng = np.random.default_rng([int(seed), zlib.crc32(node.name.encode())])
    fan_in, fan_out = _fans(shape)
    if init == "zeros":
        v = np.zeros(shape)
    elif init == "ones":
        v = np.ones(shape)
    elif init == "normal":
        v = rng.normal(0.0, 0.05, shape)
    elif init == "uniform":
        v = rng.uniform(-0.05, 0.05, shape)
    elif init == "glorot_uniform":
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        v = rng.uniform(-lim, lim, shape)
    elif init == "glorot_normal":
        v = rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), shape)
    elif init == "he_uniform":
        lim = np.sqrt(6.0 / fan_in)
        v = rng.uniform(-lim, lim, shape)
    elif init == "he_normal":
        v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    else:  # pragma: no cover - rejected by gc.param
        raise ValueError(f"unknown initializer {init!r}")
    return np.array(v, dtype=dtype, order="C")  # a fresh array; keeps 0-d shapes (ascontiguousarray does not)
