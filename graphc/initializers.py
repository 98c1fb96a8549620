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


# Keras' VarianceScaling(distribution="truncated_normal") (he_normal, glorot_normal): a normal
# truncated at two standard deviations, its scale raised so the result has variance scale / n
TRUNCATED_STDDEV_CORRECTION = 0.87962566103423978


def truncated_normal(rng: np.random.Generator, stddev: float, shape: tuple) -> np.ndarray:
    """Normal values of ``stddev`` with those beyond two standard deviations drawn again (as
    keras.random.truncated_normal)."""
    v = rng.normal(0.0, stddev, shape)
    bad = np.abs(v) > 2 * stddev
    while bad.any():
        v[bad] = rng.normal(0.0, stddev, int(bad.sum()))
        bad = np.abs(v) > 2 * stddev
    return v


def orthogonal(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Keras' Orthogonal(gain=1): the Q of a normal matrix's QR (signs fixed by R's diagonal,
    so Q is uniform over orthogonal matrices), over the rows ``prod(shape[:-1])`` and columns
    ``shape[-1]`` (transposed when there are fewer rows, so the smaller side is orthonormal)."""
    if len(shape) < 2:
        raise ValueError(f"the orthogonal initializer needs a shape of rank >= 2, got {shape}")
    rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
    q, r = np.linalg.qr(rng.normal(0.0, 1.0, (max(rows, cols), min(rows, cols))))
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    return (q.T if rows < cols else q).reshape(shape)


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
        v = truncated_normal(rng, np.sqrt(2.0 / (fan_in + fan_out)) / TRUNCATED_STDDEV_CORRECTION, shape)
    elif init == "he_uniform":
        lim = np.sqrt(6.0 / fan_in)
        v = rng.uniform(-lim, lim, shape)
    elif init == "he_normal":
        v = truncated_normal(rng, np.sqrt(2.0 / fan_in) / TRUNCATED_STDDEV_CORRECTION, shape)
    elif init == "orthogonal":
        v = orthogonal(rng, shape)
    else:  # pragma: no cover - rejected by gc.param
        raise ValueError(f"unknown initializer {init!r}")
    return np.array(v, dtype=dtype, order="C")  # a fresh array; keeps 0-d shapes (ascontiguousarray does not)
