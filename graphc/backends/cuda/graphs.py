"""CUDA-graph replay of a cuda program's whole step (opt-in, unmeasured on hardware so far).

Why: on a GPU a small training step is launch-bound. One numba.cuda launch costs 28-53 µs of
host time (measured on an H100), so a 15-launch MLP step spends most of its
time in Python before the GPU does any work. A CUDA graph turns the step's launches into ONE
``cuGraphLaunch``.

How: a program compiled with ``gc.compile(..., target="cuda", cuda_graphs=True)`` (or run with
``GRAPHC_CUDA_GRAPHS=1``) binds its launchers to a dedicated stream (``disp[grid, block,
stream]``). Its first step runs them as plain launches, which loads every kernel module into
the context (a module load inside a capture is not allowed in every capture mode). From the
second step on, the bound launch list and the deferred store copies are captured once on that
stream (``cuStreamBeginCapture`` / ``cuStreamEndCapture`` / ``cuGraphInstantiate`` from
``cuda.bindings.driver``, the package numba-cuda itself is built on) and every step is: copy
the batch into the program's fixed device feed buffers, one ``cuGraphLaunch``, a stream
synchronize, read the outputs. The graph is captured again whenever the program re-binds
(``CudaProgram._bind`` builds a new launch list when the device store is reallocated or a
scalar feed such as the learning rate changes value), detected by the identity of that list.

Stream ordering: the replay stream is a *blocking* stream, so the feed copies and store pushes
that ``CudaProgram`` issues on the legacy default stream are ordered before the graph, and the
stream is synchronized after each launch, before any output is read. A per-thread default
stream (``NUMBA_CUDA_PER_THREAD_DEFAULT_STREAM=1``) breaks that implicit ordering, so replay
is refused there.

GEMMs: CuPy refuses to call cuBLAS while a stream is capturing (its ``setStream`` checks the
capture state), so a program that asks for graphs is emitted with the numba.cuda GEMM, which
is an ordinary kernel and captures like the others (~10x slower than cuBLAS on large layers).
A capture-safe cuBLAS needs a cuBLAS handle bound to the replay stream *before* the capture
begins and GEMM calls that do not touch the stream binding again, with a user workspace set
(``cublasSetWorkspace``) so that nothing is allocated during the capture: nvmath-python's
device-side matmul, or cuBLAS through ctypes. Neither is a dependency of graphc, so neither
is used here.

Fail soft: anything that stops a capture (the simulator, cuda-bindings absent, a capture or
instantiate error, a failed graph launch) makes the program run plain launches from then on;
the reason is kept and shown by ``step.kernels()``. A step whose capture failed still runs,
with plain launches, so its results are never lost.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping

import numpy as np

from ...errors import GraphcError
from .compat import simulator_active

ENV = "GRAPHC_CUDA_GRAPHS"


def requested(options: Mapping) -> bool:
    """True when the compile options or GRAPHC_CUDA_GRAPHS=1 ask for graph replay."""
    if options.get("cuda_graphs"):
        return True
    return os.environ.get(ENV, "0").strip().lower() in ("1", "true", "yes", "on")


def _driver():
    """``cuda.bindings.driver`` (cuda-bindings 12.x/13.x), or the older ``cuda.cuda`` of cuda-python."""
    try:
        from cuda.bindings import driver
    except ImportError:
        from cuda import cuda as driver  # cuda-python < 12.6
    return driver


def _unavailable(gemm: str) -> str | None:
    """Why replay cannot even be tried in this process, or None (checked once, at compile time)."""
    if simulator_active():
        return "the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) has no streams to capture"
    if gemm == "cublas":
        return "cuda_gemm='cublas' was forced, and CuPy refuses cuBLAS calls during a stream capture"
    for var in ("NUMBA_CUDA_PER_THREAD_DEFAULT_STREAM", "CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM"):
        if os.environ.get(var, "0").strip() not in ("", "0"):
            return f"{var} is set: the feed copies on the default stream would not be ordered before the graph"
    try:
        _driver()
    except Exception as e:  # noqa: BLE001 - absent, or built for another CUDA
        return f"cuda-bindings is not importable ({type(e).__name__}: {e})"
    return None


def _handle(cu, stream):
    """The driver handle (``CUstream``) of a numba stream."""
    return cu.CUstream(int(stream))


def _issue(calls: list, copies: list, stream: Any) -> None:
    """Issue one step's work: the bound launches, then the deferred store copies, on ``stream``
    (a module function so that the capture and the plain path issue exactly the same work)."""
    for f, args in calls:
        f(*args)
    for dst, src in copies:
        dst.copy_to_device(src, stream=stream)


class CaptureError(GraphcError, RuntimeError):
    """A driver call of the capture or the replay returned an error (raised to the caller only
    when the graph was already running: a device fault, not a capture problem)."""


class GraphReplay:
    """The replay state of one CudaProgram: its stream, the instantiated graph and why not."""

    def __init__(self, cuda, gemm: str):
        self.cuda = cuda
        self.reason: str | None = _unavailable(gemm)  # None while replay is possible
        self.stream = None
        self.cu = None
        self._h = None  # the stream as a CUstream
        self._graph = self._exec = None
        self._for = None  # the launch list the graph was captured from (identity)
        self._keep: list = []  # device sources of captured copies: alive as long as the graph
        self.nodes = 0
        self.captures = self.replays = self.plain_steps = 0
        if self.reason is None:
            try:
                self.cu = _driver()
                self.stream = cuda.stream()  # numba creates it blocking (CU_STREAM_DEFAULT flags)
                self._h = _handle(self.cu, self.stream)
            except Exception as e:  # noqa: BLE001
                self.reason = f"could not create the replay stream ({type(e).__name__}: {e})"
                self.stream = None

    @property
    def active(self) -> bool:
        """Replay is still possible (nothing has failed)."""
        return self.reason is None

    def configure(self, disp, grid, block):
        """A launcher for ``disp`` on the replay stream (plain ``disp[grid, block]`` once replay is off)."""
        if self.reason is None:
            try:
                return disp[grid, block, self.stream]
            except Exception as e:  # noqa: BLE001
                self._fail(f"numba.cuda refused a launch on the replay stream ({type(e).__name__}: {e})")
        return disp[grid, block]

    # ---- per step ---------------------------------------------------------------------------------
    def run(self, calls: list, copies: list) -> None:
        """One step's launches: the graph (captured first if ``calls`` is new), or plain launches.
        Always ends with the work of this step complete on the device, so outputs can be read."""
        if self.reason is None and self.plain_steps > 0:
            try:
                if self._for is not calls:
                    self._capture(calls, copies)
                self._check("cuGraphLaunch", self.cu.cuGraphLaunch(self._exec, self._h))
            except Exception as e:  # noqa: BLE001 - nothing of this step ran: plain launches from now on
                self._fail(f"{type(e).__name__}: {e}")
            else:
                # the graph is running: an error now is the device's (sticky), so it is raised,
                # never answered by running the step a second time
                self._check("cuStreamSynchronize after cuGraphLaunch", self.cu.cuStreamSynchronize(self._h))
                self.replays += 1
                return
        _issue(calls, copies, self.stream if self.stream is not None else 0)
        if self.stream is not None:
            self.stream.synchronize()
        self.plain_steps += 1

    def _capture(self, calls: list, copies: list) -> None:
        cu, cuda = self.cu, self.cuda
        self._destroy()
        # literal/scalar copy sources are host arrays: upload them now (no allocation or
        # host copy may happen inside the capture)
        keep = [(d, s if not isinstance(s, np.ndarray) else cuda.to_device(s)) for d, s in copies]
        cuda.current_context()  # the context numba launches in is current on this thread
        mode = cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED
        self._check("cuStreamBeginCapture", cu.cuStreamBeginCapture(self._h, mode))
        err = None
        try:
            _issue(calls, keep, self.stream)
        except Exception as e:  # noqa: BLE001 - end the capture before reporting
            err = e
        res = cu.cuStreamEndCapture(self._h)  # always: leaves the stream usable
        if len(res) > 1 and res[1] is not None and (err is not None or not self._ok(res[0])):
            try:
                cu.cuGraphDestroy(res[1])
            except Exception:  # noqa: BLE001
                pass
        if err is not None:
            raise CaptureError(f"a launch failed during the capture: {type(err).__name__}: {err}") from err
        self._check("cuStreamEndCapture", res)
        self._graph = res[1]
        self._exec = self._check("cuGraphInstantiate", cu.cuGraphInstantiate(self._graph, 0))[1]
        try:
            got = cu.cuGraphGetNodes(self._graph, 0)
            self.nodes = int(got[-1]) if self._ok(got[0]) else len(calls) + len(copies)
        except Exception:  # noqa: BLE001
            self.nodes = len(calls) + len(copies)
        self._keep = keep
        self._for = calls
        self.captures += 1

    # ---- errors and cleanup -------------------------------------------------------------------------
    def _ok(self, code) -> bool:
        return code == self.cu.CUresult.CUDA_SUCCESS

    def _check(self, what: str, res: tuple) -> tuple:
        if not self._ok(res[0]):
            name = ""
            try:
                name = self.cu.cuGetErrorName(res[0])[1].decode()
            except Exception:  # noqa: BLE001
                name = str(res[0])
            raise CaptureError(f"{what} returned {name}")
        return res

    def _fail(self, why: str) -> None:
        if self.reason is None:
            self.reason = f"graph capture/replay failed, plain launches since: {why}"
        self._destroy()

    def _destroy(self) -> None:
        cu, self._for = self.cu, None
        ex, g, self._exec, self._graph = self._exec, self._graph, None, None
        for f, h in (("cuGraphExecDestroy", ex), ("cuGraphDestroy", g)):
            if h is not None:
                try:
                    getattr(cu, f)(h)
                except Exception:  # noqa: BLE001 - the driver may be gone at exit
                    pass
        self._keep = []  # the captured copies' sources, once no graph reads them

    def __del__(self):
        if sys.is_finalizing():  # the context may be torn down already: leave it to the driver
            return
        try:
            self._destroy()
        except Exception:  # noqa: BLE001
            pass

    # ---- inspection ---------------------------------------------------------------------------------
    def describe(self) -> str:
        """Which path the steps take, for ``step.kernels()``."""
        if self.reason is not None:
            return f"plain launches ({self.reason})"
        if self._exec is None:
            return ("replay: CUDA graph pending (the first step runs plain launches and loads every kernel; "
                    "the next one captures)")
        return (f"replay: CUDA graph of {self.nodes} launches, one cuGraphLaunch per step (captured "
                f"{self.captures}x, replayed {self.replays}x; {self.plain_steps} plain steps)")


NOT_REQUESTED = "plain launches (CUDA graphs not requested: gc.compile(..., cuda_graphs=True) or GRAPHC_CUDA_GRAPHS=1)"


def describe(replay: GraphReplay | None) -> str:
    """The step path of a program whose replay state is ``replay`` (None: not requested)."""
    return NOT_REQUESTED if replay is None else replay.describe()
