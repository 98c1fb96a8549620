"""An in-step random generator: ``random_uniform``, counter-based, so masks need no feeding.

Element ``i`` of the draw is a pure function of ``(seed, key, i)``: SplitMix64's finalizer
applied to ``seed``, the key (the training step counter by default, so every step draws anew)
and the element index. Nothing is carried between calls and no state is advanced; a draw is
reproducible from its seed and step alone, identical on every target (the interpreter uses
the same integer arithmetic), and parallel loops split it any way they like. The top 24
(float32) or 53 (float64) bits become a uniform number in [0, 1).

Operands: ``key`` (an int64 scalar) and, before ``specialize``, a ``like`` tensor whose
run-time shape the draw takes (its batch dim); specialize drops it once shapes are known.
"""
from __future__ import annotations

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir import make
from .base import OpDef, Structured, register

M1, M2, GOLDEN = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1
SEED_MASK = (1 << 63) - 1  # seeds are int64 literals in the generated code


def mix(z):
    """SplitMix64's finalizer on uint64 values (NumPy arrays wrap on overflow, as Numba's do)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(M1)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(M2)
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, key: int) -> int:
    """The per-draw constant: mix(seed + GOLDEN * (mix(key) + 1)), as a Python int."""
    with np.errstate(over="ignore"):
        k = int(mix(np.uint64(key & MASK)))
        return int(mix(np.uint64((seed + GOLDEN * (k + 1)) & MASK)))


def kernel_lines(key: str, seed: str, index: str, store: str, loop: str, dtype) -> list[str]:
    """The draw as generated-code lines shared by the backends (uint64 all through: a mixed
    int64/uint64 expression would become float64 in Numba): the stream constant from ``key``
    and ``seed``, then ``loop`` (a for-line over ``index``) whose body stores each element
    with ``store`` (a format string taking the value expression)."""
    def mix(ind):
        return [f"{ind}z = z ^ (z >> np.uint64(30))", f"{ind}z = z * np.uint64({M1})",
                f"{ind}z = z ^ (z >> np.uint64(27))", f"{ind}z = z * np.uint64({M2})",
                f"{ind}z = z ^ (z >> np.uint64(31))"]
    value = ("np.float32(z >> np.uint64(40)) * np.float32(5.960464477539063e-08)"  # 2**-24
             if np.dtype(dtype) == np.float32 else "np.float64(z >> np.uint64(11)) * 1.1102230246251565e-16")  # 2**-53
    return ([f"    z = np.uint64({key})"] + mix("    ")
            + [f"    z = np.uint64({seed}) + np.uint64({GOLDEN}) * (z + np.uint64(1))"] + mix("    ")
            + ["    base = z", f"    {loop}", f"        z = base + np.uint64({index}) * np.uint64({GOLDEN})"]
            + mix("        ") + [f"        {store.format(value)}  # random_uniform"])


def bits_to_uniform(z: np.ndarray, dtype) -> np.ndarray:
    if np.dtype(dtype) == np.float32:
        return ((z >> np.uint64(40)).astype(np.float64) * 2.0 ** -24).astype(np.float32)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _infer(inputs, attrs):
    key = inputs[0]
    if key.shape != () or key.dtype.kind not in "iu":
        raise DTypeError(f"key must be an integer scalar, got {key.dtype} of shape {key.shape}")
    if np.dtype(attrs["dtype"]).kind != "f":
        raise DTypeError(f"dtype must be floating point, got {attrs['dtype']}")
    shape = inputs[1].shape if len(inputs) == 2 else attrs["shape"]
    if None in shape and len(inputs) == 1:
        raise ShapeError(f"a shape with a batch dim {shape} needs a tensor to take the run-time size from")
    return tuple(shape), np.dtype(attrs["dtype"])


def _eval(args, attrs, node):
    shape = args[1].shape if len(args) == 2 else node.shape
    size = int(np.prod(shape, dtype=np.int64))
    with np.errstate(over="ignore"):
        z = mix(np.uint64(stream_key(attrs["seed"], int(args[0]))) + np.arange(size, dtype=np.uint64)
                * np.uint64(GOLDEN))
    return bits_to_uniform(z, attrs["dtype"]).reshape(shape)


def random_uniform(key, shape, seed: int, dtype, like=None):
    ins = (key,) if like is None else (key, like)
    return make("random_uniform", ins, {"shape": tuple(shape), "seed": int(seed) & SEED_MASK, "dtype": np.dtype(dtype)})


# kernel kind "rng": one pass writing the draw (every backend's KERNELS table)
register(OpDef("random_uniform", "structured", _infer, _eval, lambda y, g: [None] * len(y.inputs),
               doc="uniform [0, 1) numbers, a pure function of (seed, key, element index)",
               structured=Structured("rng", array_operands=True)))
