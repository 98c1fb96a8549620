"""The backends behind ``compile(target=...)``, and the one registry that maps a target name
to its backend. Nothing else in graphc reads a target string.

A backend is a folder (``numpy.py`` for the interpreter, ``cpu/``, ``cuda/``) whose
``build`` turns a lowered program (graph, kernels, plan: see graphc/compiler.py) into a
runnable program with ``run(feeds, store)``; what every runnable program needs (stats,
output readers, constant fill, node naming, kernel de-duplication) is in ``base.py``.
A structured op names a kernel kind (its ``Structured`` rule, ops/base.py); each native
backend's emitter maps a kind to its lowering (``KERNELS`` in cpu/emitter.py, cuda/emitter.py).

Adding a backend: write its folder, then ``register(Backend("name", build, ...))`` below.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Backend:
    """One compile target.

    - ``build(program, batch, store, options)`` returns the runnable program for one batch
      size (``lowered=False``), or ``build(lowered, store, options)`` for backends that run
      the compiler's pipeline first (``lowered=True``).
    - ``native_checks``: the generated driver range-checks labels and finiteness itself, so a
      call whose feeds pass the cheap attribute checks skips the Python-side value checks.
    - ``options``: the optional compile features it implements (e.g. ``"check_numerics"``).
    - ``available``: raises a GraphcError saying why the target cannot run here.
    - ``warm(program, batch, store, options, relower)``: the runnable program from a stored
      manifest without lowering (``relower()`` lowers it, for inspection), or None.

    Capabilities that the layers above ask for instead of reading target names:

    - ``allreduce``: the target lowers ``allreduce_sum`` (data-parallel training,
      graphc/distributed.py); calling it prepares this process (binds the MPI symbol the
      kernels call). None: no ``data_parallel`` on this target.
    - ``profile``: how ``explain`` times a step's kernels: ``"twin"`` (a profiling twin of the
      native driver, a clock read after each kernel), ``"interpreter"`` (the native targets'
      fusion groups evaluated one by one), None (not supported).
    - ``all_cores``: kernels spread over every core, so the memory roof ``explain`` uses is the
      all-cores streaming bandwidth (otherwise one core's).
    - ``loops``: a ``scan`` is compiled as one loop over its body's kernels (the driver's
      ``for t in range(T)``); otherwise the compiler unrolls it into T copies of its body.
    """

    name: str
    build: Callable[..., Any]
    lowered: bool = True
    native_checks: bool = False
    options: frozenset = field(default_factory=frozenset)
    available: Callable[[], None] | None = None
    doc: str = ""
    warm: Callable[..., Any] | None = None
    allreduce: Callable[[], None] | None = None
    profile: str | None = None
    all_cores: bool = False
    loops: bool = False


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    if backend.name in _REGISTRY:
        raise ValueError(f"backend {backend.name!r} registered twice")
    _REGISTRY[backend.name] = backend
    return backend


def get(target: str) -> Backend:
    """The backend of ``target``, or a ValueError listing the known ones."""
    b = _REGISTRY.get(target)
    if b is None:
        raise ValueError(f"unknown target {target!r}; choose from {targets()}")
    return b


def targets() -> tuple[str, ...]:
    return tuple(_REGISTRY)


# ---- the built-in backends (imported lazily: `import graphc` does not load Numba) ----------

def _numpy(program, batch, store, options):
    from .numpy import NumpyProgram
    return NumpyProgram(program, batch, check_numerics=bool(options.get("check_numerics")))


def _cpu(parallel: bool):
    def build(lowered, store, options):
        from .cpu.program import build
        return build(lowered, store, options, parallel)
    return build


def _cpu_warm(parallel: bool):
    def warm(program, batch, store, options, relower):
        from .cpu.program import warm
        return warm(program, batch, store, options, parallel, relower)
    return warm


def _cpu_allreduce():
    from .cpu.allreduce import enable
    enable()


def _interpreted_allreduce():
    """The interpreter evaluates ``allreduce_sum`` with mpi4py: nothing to prepare."""


def _cuda(lowered, store, options):
    from .cuda.program import CudaProgram
    return CudaProgram(lowered, store, options)


def _cuda_available():
    from .cuda.compat import check_cuda_available
    check_cuda_available()


register(Backend("numpy", _numpy, lowered=False, options=frozenset({"check_numerics"}),
                 doc="the reference interpreter (graphc/interpret.py): every test's oracle",
                 allreduce=_interpreted_allreduce, profile="interpreter"))
register(Backend("cpu", _cpu(False), native_checks=True, options=frozenset({"check_numerics"}),
                 doc="serial loops: kernels and driver compiled by graphc through LLVM (Numba where they do not translate)", warm=_cpu_warm(False),
                 allreduce=_cpu_allreduce, profile="twin", loops=True))
register(Backend("parallel", _cpu(True), native_checks=True, options=frozenset({"check_numerics"}),
                 doc="Numba parallel=True: prange over the outer loop of large fused loops",
                 warm=_cpu_warm(True), allreduce=_cpu_allreduce, profile="twin", all_cores=True))
register(Backend("cuda", _cuda, available=_cuda_available, options=frozenset({"cuda_graphs"}),
                 doc="numba.cuda kernels, cuBLAS GEMMs through CuPy, a device-resident store"))
