"""The cuda target's runnable program: one (lowered program, batch size) on the device.

Memory, kernels and launches are described in emitter.py; this writes the kernel modules and
the driver to the cache, binds the launches to the device arenas once and replays them per
step.
"""
from __future__ import annotations

import functools
import os
import time
import weakref
from typing import Mapping

import numpy as np

from ...errors import CompileError
from ...ir import Node, fmt_shape
from ..base import Lowered, describe_modules, host_scratch, output_reader
from ..cache import load_program, release_program, write_program
from .compat import check_cuda_available, cupy_or_none, numba_cuda, simulator_active
from .device import DeviceStore
from .graphs import GraphReplay, describe as describe_replay, requested as graphs_requested
from ..base import numel as _size
from .emitter import emit_for
from .launch import dtname as _dt


def _sim_launch(disp, grid, block, *args) -> None:
    """A launch under the simulator, whose ``kernel[grid, block]`` sets the configuration on the
    kernel object itself (the last binding would win for every launch of a shared function)."""
    disp[grid, block](*args)


class CudaProgram:
    """One (program, batch size) on the device: see the module docstring."""

    target = "cuda"

    def __init__(self, lowered: Lowered, store, options: Mapping):
        check_cuda_available()
        self.cuda = numba_cuda()
        program = lowered.program
        self.program, self.batch = program, lowered.batch
        self.graph, self.plan, self.stats = lowered.graph, lowered.plan, lowered.stats
        t0 = time.perf_counter()
        # "auto": cuBLAS through CuPy when importable, else the fallback; GRAPHC_CUDA_GEMM=numba
        # forces the fallback (to test it on a real device), =cublas insists on CuPy
        gemm = options.get("cuda_gemm") or os.environ.get("GRAPHC_CUDA_GEMM", "auto")
        if gemm not in ("auto", "cublas", "numba"):
            raise CompileError(f"GRAPHC_CUDA_GEMM must be auto, cublas or numba, got {gemm!r}")
        self.cp = cupy_or_none() if gemm in ("auto", "cublas") else None
        if gemm == "cublas" and self.cp is None:
            raise CompileError("cuda_gemm='cublas' needs CuPy on a real device (pip install graphc[cuda])")
        # CUDA-graph replay (opt-in, graphs.py); CuPy's cuBLAS cannot be captured, so a program
        # that may be captured uses the numba.cuda GEMM
        self._replay = GraphReplay(numba_cuda(), gemm) if graphs_requested(options) else None
        self._gemm_why = "CuPy absent" if gemm == "auto" else "GRAPHC_CUDA_GEMM=numba"
        if self._replay is not None and self._replay.active:
            self.cp, self._gemm_why = None, "capturable; CuPy's cuBLAS refuses stream capture"
        self.module = emit_for(lowered, store.layout, use_cublas=self.cp is not None)
        self.stats.codegen_s = time.perf_counter() - t0
        # one module per kernel (shared with other batch sizes and functions) plus the driver
        self.path, self.kernel_paths = write_program(self.module.source, self.module.kernel_modules.values())
        self._mod, _ = load_program(self.path, self.kernel_paths)
        self._release = weakref.finalize(self, release_program, self.path.stem)  # modules may unload once dropped
        self._release.atexit = False
        self.mirror = store.mirror("cuda", DeviceStore)
        # device scratch arena per dtype: plan buffers, constants, batch feeds
        cuda = self.cuda
        host = host_scratch(self.plan, self.graph, self.module.scratch_sizes)
        for dt, off, vals in self.module.tables:  # multi-tensor launches' segment tables (emitter.py)
            host[dt][off:off + len(vals)] = vals
        self.scratch = {dt: cuda.to_device(a) for dt, a in host.items()}
        self._feed_views = [(name, self.scratch[dt][off:off + size], size)
                            for name, (dt, off, size) in self.module.feed_offsets.items()]
        k = len(program.user_names)
        self._outs = list(self.graph.outputs[:k])
        self._source_outputs = [n for n in self._outs if n.op in ("param", "state")]
        scalar_types = {a[1]: np.dtype(a[2]).type for ln in self.module.launches for a in ln.args if a[0] == "scalar"}
        scalar_types.update({c[4][1]: c[3].type for c in self.module.copies if c[4][0] == "scalar"})
        self._scalar_keys = sorted(scalar_types)
        self._scalar_types = [scalar_types[k] for k in self._scalar_keys]  # typed as the kernels were emitted
        self._scalar_vals = None
        self._bound = None
        self._compiled = False

    # ---- binding -------------------------------------------------------------------------------
    def kernel(self, function: str):
        """The numba.cuda dispatcher of a generated kernel function (from its own module)."""
        return getattr(self._mod, function)

    def _arena(self, key: str):
        where, dt = key.split("_", 1)
        return (self.mirror.arenas if where == "S" else self.scratch)[np.dtype(dt)]

    def _view(self, key: str, off: int, size: int):
        return self._arena(key)[off:off + size]

    def _bind(self, scalars: dict) -> None:
        """Launchers and argument tuples, built once (again only when the device store is
        reallocated or a scalar feed changes value)."""
        cp = self.cp
        calls = []
        wrapped = {}
        for ln in self.module.launches:
            if ln.kind == "cublas":
                ops = []
                for key, off, shape, perm in ln.gemm:
                    if key not in wrapped:  # wrap each arena once: zero-copy via __cuda_array_interface__
                        wrapped[key] = cp.asarray(self._arena(key))
                    a = wrapped[key][off:off + _size(shape)].reshape(shape)
                    ops.append(a.transpose(perm) if perm is not None else a)  # (1, 0); bmm: (0, 2, 1)
                calls.append((functools.partial(cp.matmul, ops[0], ops[1], out=ops[2]), ()))
                continue
            disp = self.kernel(ln.function)
            args = []
            for a in ln.args:
                if a[0] == "arena":
                    args.append(self._arena(a[1]))
                elif a[0] == "int":
                    args.append(a[1])
                else:
                    args.append(scalars[a[1]])
            if simulator_active():  # its kernel[grid, block] reconfigures one shared object: configure per call
                calls.append((functools.partial(_sim_launch, disp, ln.grid, ln.block), tuple(args)))
            else:
                launcher = self._replay.configure(disp, ln.grid, ln.block) if self._replay else disp[ln.grid, ln.block]
                calls.append((launcher, tuple(args)))
        self._calls = calls
        self._copies = []
        for key, off, size, dt, src in self.module.copies:  # deferred store writes
            dst = self._view(key, off, size)
            if src[0] == "literal":
                self._copies.append((dst, np.full(size, src[1], dtype=dt)))
            elif src[0] == "scalar":
                self._copies.append((dst, np.full(size, scalars[src[1]], dtype=dt)))
            else:
                self._copies.append((dst, self._view(src[1], src[2], size)))
        self._readers = [self._reader(n) for n in self._outs]
        self._bound = self.mirror.generation

    def _reader(self, n: Node):
        return output_reader(n, self.plan, lambda b: self._view(f"T_{_dt(b.dtype)}", b.offset, b.size).copy_to_host())

    # ---- calling ----------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray], store) -> list[np.ndarray]:
        """One step. Fed indices were range-checked by the runtime before this is called (the
        backend is registered without native checks), so nothing is checked twice."""
        with store.lock:  # the store (and this program's device scratch) is shared: one call at a time
            return self._run_locked(feeds, store)

    def _run_locked(self, feeds, store) -> list[np.ndarray]:
        store.acquire(self.mirror)
        if self._scalar_keys:
            vals = tuple(feeds[k] for k in self._scalar_keys)
            if vals != self._scalar_vals:
                self._scalar_vals = vals
                self._bound = None
        if self._bound != self.mirror.generation:
            self._bind({k: t(v[()] if isinstance(v, np.ndarray) else v)
                        for k, t, v in zip(self._scalar_keys, self._scalar_types, self._scalar_vals or ())})
        for name, view, size in self._feed_views:  # copy in only the batch
            view.copy_to_device(np.ascontiguousarray(feeds[name]).reshape(size))
        before = None
        if self._source_outputs:
            before = {}
            for n in self._source_outputs:
                dt, off, shape = store.layout[n.name]
                before[n.name] = self.mirror.arenas[np.dtype(dt)][off:off + _size(shape)].copy_to_host().reshape(shape)
        if not self._compiled:
            self._compile()
        if self._replay is not None:  # one graph launch (captured again after a re-bind), or plain launches
            self._replay.run(self._calls, self._copies)
            return [r(feeds, before) for r in self._readers]
        for f, args in self._calls:
            f(*args)
        for dst, src in self._copies:
            dst.copy_to_device(src)
        return [r(feeds, before) for r in self._readers]

    def _compile(self) -> None:
        """Compile every distinct kernel for its argument types before the first launch, so
        a compile failure leaves the parameters untouched and names the generated file."""
        t0 = time.perf_counter()
        if not simulator_active():
            from numba import typeof
            seen = set()
            for (f, args), ln in zip(self._calls, self.module.launches):
                if ln.kind != "kernel" or ln.function in seen:
                    continue
                seen.add(ln.function)
                try:
                    self.kernel(ln.function).compile(tuple(typeof(a) for a in args))
                except Exception as e:  # noqa: BLE001
                    path = self.path.with_name(self.module.function_modules[ln.function] + ".py")
                    raise CompileError(f"numba.cuda failed to compile {ln.function} of {path}: "
                                       f"{type(e).__name__}: {e}") from e
        self.stats.numba_s = time.perf_counter() - t0
        self._compiled = True

    # ---- inspection ---------------------------------------------------------------------------------
    def launches_per_step(self) -> dict:
        ls = self.module.launches
        return {"kernels": sum(1 for x in ls if x.kind == "kernel"),
                "cublas": sum(1 for x in ls if x.kind == "cublas"),
                "memcpy_d2d": len(self.module.copies),
                "h2d": len(self.module.feed_offsets),
                "d2h": sum(1 for n in self._outs if self.plan.buffers[id(n)].kind == "scratch")}

    def describe(self) -> str:
        """The kernel modules and the driver, each headed by its path, then the compiled graph."""
        return describe_modules(zip(self.kernel_paths, self.module.kernel_modules.values()), self.path,
                                self.module.source, self.graph)

    def kernel_listing(self) -> str:
        c = self.launches_per_step()
        total = c["kernels"] + c["cublas"]
        gemm = "cuBLAS via CuPy" if self.module.gemm == "cublas" else f"numba.cuda fallback GEMM ({self._gemm_why})"
        lines = [f"{len(self.module.infos)} kernels ({len(self.module.functions)} distinct functions) from "
                 f"{self.stats.nodes_after} nodes; scratch peak {self.plan.peak_bytes} B; target cuda, batch "
                 f"{self.batch}; GEMMs: {gemm}",
                 f"launches per step: {total} ({c['kernels']} numba.cuda kernels + {c['cublas']} cuBLAS GEMMs)"
                 f" + {c['memcpy_d2d']} device copies; {c['h2d']} host->device feed copies, {c['d2h']} "
                 f"device->host output copies",
                 f"merged launches: {self.module.merge_note}",
                 f"step path: {describe_replay(self._replay)}"]
        width = max((len(ln.name) for info in self.module.infos for ln in info.launches), default=8)
        for info in self.module.infos:
            for ln in info.launches:
                cfg = "cuBLAS" if ln.kind == "cublas" else f"grid {ln.grid} block {ln.block}"
                lines.append(f"  {ln.name:<{width}} {info.kind:<11} {fmt_shape(info.shape):<14} {ln.function:<22} {cfg:<24} "
                             f"[{', '.join(info.ops)}] -> {info.out_bytes} B")
        return "\n".join(lines)

    def cache_info(self) -> dict:
        return {"hits": 0, "misses": 0}
