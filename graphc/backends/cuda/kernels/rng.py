"""random_uniform (ops/random.py; kind "rng")."""
from __future__ import annotations

import numpy as np

from ....schedule.fusion import Kernel
from ...base import numel
from ..launch import Fn, Hosted, Launch
from .common import dense
from .conv import launch_over


# ---- the random generator's uint64 arithmetic ---------------------------------------------
# ops/random.kernel_lines' hash multiplies and adds uint64 values that wrap modulo 2**64. A
# compiled kernel wraps them silently, but the simulator runs the kernel's Python on NumPy
# scalars, which warn "overflow encountered in scalar multiply" once per thread. So on this
# target every product and sum is done in 32-bit halves, whose partial products and sums fit
# in 64 bits: exact on the device and in the simulator alike, the same bits, no warning.

_M32, _S32 = f"np.uint64({0xFFFFFFFF})", "np.uint64(32)"


def _wrap_mul(ind: str, z: str, c: int) -> list[str]:
    """``z = z * c`` modulo 2**64 for a constant ``c``: the low halves' product, plus the two
    cross products' low halves shifted up (the high halves' product is a multiple of 2**64)."""
    lo, hi = c & 0xFFFFFFFF, c >> 32
    return [f"{ind}w_t = ({z} & {_M32}) * np.uint64({lo})",
            f"{ind}w_u = ((({z} >> {_S32}) * np.uint64({lo})) & {_M32}) + ((({z} & {_M32}) * np.uint64({hi})) & {_M32})"
            f" + (w_t >> {_S32})",
            f"{ind}{z} = ((w_u & {_M32}) << {_S32}) | (w_t & {_M32})"]


def _wrap_add(ind: str, z: str, a: str, b: str) -> list[str]:
    """``z = a + b`` modulo 2**64 (a carry from the low halves into the high ones)."""
    return [f"{ind}w_t = ({a} & {_M32}) + ({b} & {_M32})",
            f"{ind}{z} = (((({a} >> {_S32}) + ({b} >> {_S32}) + (w_t >> {_S32})) & {_M32}) << {_S32}) | (w_t & {_M32})"]


def _rng_lines(key: str, seed: str, index: str, store: str, loop: str, dtype) -> list[str]:
    """ops/random.kernel_lines (the same hash, the same arguments) with wrapping products and
    sums: the stream constant ``mix(seed + GOLDEN * (mix(key) + 1))``, then per element
    ``mix(stream + index * GOLDEN)``."""
    from ....ops.random import GOLDEN, M1, M2

    def mix(ind):
        return ([f"{ind}z = z ^ (z >> np.uint64(30))"] + _wrap_mul(ind, "z", M1)
                + [f"{ind}z = z ^ (z >> np.uint64(27))"] + _wrap_mul(ind, "z", M2)
                + [f"{ind}z = z ^ (z >> np.uint64(31))"])
    value = ("np.float32(z >> np.uint64(40)) * np.float32(5.960464477539063e-08)"  # 2**-24
             if np.dtype(dtype) == np.float32 else "np.float64(z >> np.uint64(11)) * 1.1102230246251565e-16")  # 2**-53
    return ([f"    z = np.uint64({key})"] + mix("    ")
            + _wrap_add("    ", "z", "z", "np.uint64(1)") + _wrap_mul("    ", "z", GOLDEN)
            + _wrap_add("    ", "z", f"np.uint64({seed})", "z") + mix("    ")
            + ["    base = z", f"    {loop}", f"        z = np.uint64({index})"] + _wrap_mul("        ", "z", GOLDEN)
            + _wrap_add("        ", "z", "base", "z") + mix("        ")
            + [f"        {store.format(value)}  # random_uniform"])


def rng_kernel(em, k: Kernel, hosted: Hosted) -> Launch:
    """random_uniform (ops/random.py): the CPU's counter-based hash, a thread per element,
    so the draw is bit-identical to the other targets' (its products and sums written to
    wrap by construction: ``_rng_lines``)."""
    (n,) = k.nodes
    size = numel(n.shape)
    fn = Fn()
    O, oo = dense(em, fn, k, n)
    w = em.where(k.leaves[id(n.inputs[0])].base)
    key = fn.scalar(w[1], n.inputs[0].dtype) if w[0] == "scalar" else "{}[{}]".format(*dense(em, fn, k, n.inputs[0]))
    seed = fn.int(n.attrs["seed"])
    body = _rng_lines(key, seed, "e", f"{O}[{oo} + e] = {{}}",
                      f"for e in range(cuda.grid(1), {fn.int(size)}, cuda.gridsize(1)):", n.dtype)
    return launch_over(em, k, hosted, n, fn, body, "rng", size)
