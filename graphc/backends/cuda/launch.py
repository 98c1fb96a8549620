"""Launch descriptions of the cuda target, device-free (also what the PTX check compiles):
launch parameters, one launch of a generated kernel or of cuBLAS, the module a program is
built from, and the parameter list of one generated kernel."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .compat import simulator_active


@dataclass(frozen=True)
class LaunchParams:
    block: int  # threads per block of loop / reduction / sce kernels (a power of two)
    max_grid: int  # blocks of a grid-stride loop
    gemm: tuple  # fallback GEMM tile: (BM, BN, BK, TM, TN)
    chunk: int = 2048  # elements per block-sized piece of a multi-tensor launch (a table row)


REAL = LaunchParams(block=256, max_grid=2048, gemm=(64, 64, 16, 4, 4), chunk=2048)
# the simulator runs every thread as a Python thread: tiny blocks keep the tests fast (and
# small chunks let small tensors span several)
SIM = LaunchParams(block=16, max_grid=4, gemm=(8, 8, 4, 2, 2), chunk=32)


def launch_params() -> LaunchParams:
    return SIM if simulator_active() else REAL


def dtname(dt) -> str:
    return np.dtype(dt).name


@dataclass
class Launch:
    name: str  # the schedule's kernel name (k0, k1 ...); a GEMM prologue adds ".gemm"
    kind: str  # "kernel" | "cublas"
    function: str  # generated function name (kernel), or "cupy.matmul"
    grid: Any
    block: Any
    args: list  # ("arena", "S_float32") | ("int", v) | ("scalar", feed name, dtype)
    gemm: tuple | None = None  # cublas: ((arena, off, shape, perm) for A, B, C)
    comment: str = ""
    merged: tuple = ()  # the schedule's launches this one does the work of, when more than its own
    # bookkeeping for merging launches (merge.py; not part of the launch itself): what it reads
    # and writes as (arena, first, end) element ranges, the kernel it is listed under, and the
    # text it was generated from ((Fn, body lines, tag); ``ew``: an elementwise loop's pieces)
    reads: list = field(default_factory=list, repr=False, compare=False)
    writes: list = field(default_factory=list, repr=False, compare=False)
    anchor: int = field(default=-1, repr=False, compare=False)
    src: Any = field(default=None, repr=False, compare=False)
    ew: Any = field(default=None, repr=False, compare=False)
    folds: int = field(default=0, repr=False, compare=False)
    covers: set = field(default_factory=set, repr=False, compare=False)  # indices of the kernels it runs
    tiny: Any = field(default=None, repr=False, compare=False)  # a one-element loop's Kernel (foldable)


@dataclass
class CudaModule:
    source: str  # the driver: imports the kernels, lists the launches (replayed from Python)
    launches: list
    infos: list
    functions: dict  # name -> parameter count
    feed_offsets: dict  # feed name -> (dtype, offset, size)
    scratch_sizes: dict  # dtype -> elements of the device scratch arena (plan + consts + feeds)
    params: LaunchParams
    gemm: str  # "cublas" | "numba-fallback"
    copies: list  # deferred store writes: (arena key, offset, size, dtype, source)
    kernel_modules: dict  # module name -> source: one generated kernel each, imported by the driver
    function_modules: dict  # kernel function name -> its module name
    tables: list = field(default_factory=list)  # (dtype, offset, values): constant tables in device scratch
    merge_note: str = ""  # what merging did, for kernel_listing()


class Fn:
    """Parameters of one generated kernel, in first-use order (so identical kernels get
    identical text and are emitted once)."""

    def __init__(self, ip: str = "o", sp: str = "s"):
        self.ip, self.sp = ip, sp  # parameter name prefixes (a kernel folded into another gets its own)
        self.arrays: list[str] = []
        self.ints: list[tuple[str, int]] = []
        self.scalars: list[tuple[str, str, np.dtype]] = []

    def arr(self, key: str) -> str:
        if key not in self.arrays:
            self.arrays.append(key)
        return key

    def int(self, value: int) -> str:
        p = f"{self.ip}{len(self.ints)}"
        self.ints.append((p, int(value)))
        return p

    def scalar(self, name: str, dtype) -> str:
        for p, nm, _ in self.scalars:
            if nm == name:
                return p
        p = f"{self.sp}{len(self.scalars)}"
        self.scalars.append((p, name, np.dtype(dtype)))
        return p

    def params(self) -> list[str]:
        return self.arrays + [p for p, _ in self.ints] + [p for p, _, _ in self.scalars]

    def args(self) -> list:
        return ([("arena", a) for a in self.arrays] + [("int", v) for _, v in self.ints]
                + [("scalar", nm, dt) for _, nm, dt in self.scalars])



@dataclass
class Hosted:
    """Work of other scheduled kernels that a kernel's launch runs (planned by merge.py):
    ``col``: the column sums of the softmax-CE gradient and the loop on them ``(rd, U, store)``
    (see gemm.gemm_fused); ``epi``: elementwise loops run on each element the kernel has just
    written (a reduction's sums, a pooling output), as they run there."""
    col: tuple | None = None
    epi: list = field(default_factory=list)
