"""CUDA code generation (target="cuda"): numba.cuda kernels from the same Kernel descriptions
the CPU backend uses (graphc/schedule/fusion.py), run on device-resident buffers. This module
assembles a program's CudaModule: it lowers each scheduled kernel through ``KERNELS`` (with the
work merge.py has it host), merges the launch list and writes the driver.

Memory. Parameters and optimizer state live in a device mirror of the Store's arenas (one
device array per dtype, shared by every program on that store: :class:`DeviceStore`); the
Store's host arenas are refreshed only when something on the host reads them (``params``,
``state_dict``, a cpu program sharing the store) and pushed back before the next device step
if the host may have written them. Each program owns one device scratch arena per dtype laid
out exactly as the buffer plan says, with the constants after it and a region per batch feed
after those. A step copies in only the batch feeds and copies out only the user outputs.

Kernels. Every kernel takes whole arenas (``S_<dtype>`` store, ``T_<dtype>`` scratch) plus
integer offsets and loop extents, so identical kernels (e.g. the optimizer update of every
parameter) are one function, compiled once. Each function is a module of its own, named by the
hash of its text (which names no node; the driver's comments name nodes by graph position), so
another batch size or a forward function sharing the weights imports the same modules and, on
a GPU, reuses their compiled code (Numba's cache across processes). The text of each kernel
kind is written by its own module (``KERNELS`` below maps a kind to its lowering):

- kernels/loops.py: elementwise loops, a grid-stride loop over the flat iteration space (the
  loop indices are decomposed from the flat index only when a leaf is broadcast or
  transposed); loops with reductions (all reducing the same axes), one block per output
  element (grid-stride over outputs), threads stride over the reduced elements, then a
  shared-memory tree. Deterministic: no atomics, the summation order depends only on the
  launch configuration, which is fixed per program. Mixed reduction axes in one kernel fall
  back to a single-thread loop (correct, slow, rare);
- kernels/sce.py: softmax-cross-entropy + its gradient: one block, a thread per row, the mean
  loss by a tree;
- gemm.py: GEMMs (matmul kernels and loop prologues): cuBLAS through CuPy
  (``cupy.matmul(out=)`` on arrays wrapped once, zero-copy through
  ``__cuda_array_interface__``) when CuPy is importable. Without CuPy a register-tiled
  numba.cuda GEMM is used: a FALLBACK, roughly 10x slower than cuBLAS on large shapes (a 32x32
  tiled numba SGEMM ran at 4.6 TFLOP/s vs cuBLAS 51.6 on an H100); install the ``cuda`` extra
  for real use. A batched GEMM (kind ``bmm``) is one ``cupy.matmul`` on 3-D views (a
  transposed operand is a swapaxes view), or the fallback with the batch on ``blockIdx.z``;
- kernels/conv.py: im2col and pooling, a thread per output element; their adjoints (col2im,
  pool2d_grad), a thread per input pixel gathering from the output positions whose window
  covers it, in the cpu kernel's order (no atomics: deterministic). Window geometry and
  extents are arguments;
- kernels/indexing.py (take, scatter-add), kernels/slicing.py (slice, pad, concatenate),
  kernels/rng.py (random_uniform, bit-identical to the other targets).

Launches (launch.py). Launch configurations and argument tuples are bound once per program
(re-bound only if the device store is reallocated or a scalar feed such as a hyper-parameter
changes); a step is a Python loop over prepared ``(launcher, args)`` pairs.
``kernel_listing()`` reports the launches per step, each named after the scheduled kernels it
runs (``k8.gemm+k8+k4+k5``).

Fewer launches (merge.py). Small steps are launch-bound on a GPU, so the schedule's launches
are merged (``MERGES``: GEMM epilogues, bias gradients summed where their operand is at hand,
multi-tensor apply, one-element kernels folded; ``GRAPHC_CUDA_MERGE=none`` or a subset turns
them off). merge.py decides before lowering which kernel's work runs in which launch, and
merges the lowered launch list; this module lowers each kernel with the work it hosts and
assembles the module. A 2-layer MLP step (Adam) is 6 launches on the fallback GEMM (15
unmerged) and 10 with cuBLAS (5 GEMMs, which take no epilogue, + 5 kernels); a two-conv CNN
step 16 (29) and 21 (29), with batch norm and dropout 36 (51) and 38 (51), a one-block
attention step 26 (45) and 33 (45) (tests/cuda/test_cuda_launches_conv.py). Generated locals
never look like parameters (``o<k>``, ``s<k>``, ``v<k>``...): work from another kernel may run
inside a function.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np

from ...errors import CompileError
from ...ir import Graph, Node
from ...schedule.fusion import Kernel
from ...schedule.plan import Plan
from ...store import aligned
from ..base import FunctionTable, KernelInfo, local_names, numel as _size, out_bytes, site
from ..expr import literal
from . import gemm, merge as merge_pass
from .compat import numba_cuda, simulator_active
from .kernels import conv, indexing, loops, rng, sce, slicing
from .kernels.loops import LoopText
from .launch import REAL, SIM, CudaModule, Fn, Hosted, Launch, LaunchParams, dtname, launch_params
from .merge import MERGES, merge_option

__all__ = ["REAL", "SIM", "CudaModule", "Launch", "LaunchParams", "launch_params", "KERNELS", "MERGES",
           "merge_option", "emit_module", "emit_for", "compile_ptx"]


class _Emitter:
    def __init__(self, plan: Plan, graph: Graph, layout: dict, feeds: list[Node], lp: LaunchParams,
                 use_cublas: bool, merge: frozenset = frozenset()):
        self.plan, self.graph, self.layout, self.lp = plan, graph, layout, lp
        self.use_cublas = use_cublas
        self.merge = merge  # which launch merges to make (MERGES)
        self.tables: list = []
        self.relocated: dict[int, int] = {}  # id(node) -> its own offset in the scratch arena (relocate)
        self.functions = FunctionTable()
        self.local = local_names(graph)  # nodes named by graph position: one text in every process
        self.launches: list[Launch] = []
        self.infos: list[KernelInfo] = []
        self.deco = "@cuda.jit" if simulator_active() else "@cuda.jit(cache=True)"
        # device scratch arena: plan arena (scratch + consts), then one region per batch feed
        self.scratch_sizes = {np.dtype(dt): int(n) for dt, n in plan.arena_sizes.items()}
        self.feed_offsets: dict[str, tuple] = {}
        for n in feeds:
            if n.shape == ():
                continue
            dt = np.dtype(n.dtype)
            off = aligned(self.scratch_sizes.get(dt, 0), dt)
            self.feed_offsets[n.name] = (dt, off, _size(n.shape))
            self.scratch_sizes[dt] = off + _size(n.shape)

    # ---- where a node lives ------------------------------------------------------------------
    def where(self, n: Node):
        """("arena", key, offset) | ("literal", text) | ("scalar", feed name)."""
        b = self.plan.buffers[id(n)]
        if b.kind == "literal":
            return ("literal", literal(b.value, b.dtype))
        if b.kind == "feed":
            if n.shape == ():
                return ("scalar", b.name)
            dt, off, _ = self.feed_offsets[b.name]
            return ("arena", f"T_{dtname(dt)}", off)
        if b.kind == "store":
            dt, off, _ = self.layout[b.name]
            return ("arena", f"S_{dtname(dt)}", off)
        if b.kind == "scratch" and id(n) in self.relocated:
            return ("arena", f"T_{dtname(b.dtype)}", self.relocated[id(n)])
        if b.kind in ("scratch", "const"):
            return ("arena", f"T_{dtname(b.dtype)}", b.offset)
        raise AssertionError(b.kind)

    def function(self, fn: Fn, body: list[str], tag: str) -> str:
        name = self.functions.add(self.deco, fn.params(), body, tag)
        return name

    def site(self, n: Node) -> str:
        return site(n, self.local)

    # ---- fewer launches --------------------------------------------------------------------------------
    def ranges(self, nodes) -> list:
        """(arena, first, end) element ranges of the materialized ``nodes`` in device memory."""
        out = []
        for n in nodes:
            if id(n) not in self.plan.buffers:
                continue
            w = self.where(n)
            if w[0] == "arena":
                out.append((w[1], w[2], w[2] + _size(n.shape)))
        return out

    def footprint(self, k: Kernel) -> tuple[list, list]:
        """What kernel ``k`` reads (every operand's whole storage) and writes."""
        return self.ranges({id(v.base): v.base for v in k.leaves.values()}.values()), self.ranges(k.outputs)

    def relocate(self, n: Node) -> None:
        """Give scratch node ``n`` a region of its own after the device scratch arena (merge.py:
        so that a merged launch does not share memory the plan reused)."""
        b = self.plan.buffers[id(n)]
        off = aligned(self.scratch_sizes.get(b.dtype, 0), b.dtype)
        self.scratch_sizes[b.dtype] = off + b.size
        self.relocated[id(n)] = off

    def gemm_reads(self, k: Kernel) -> list:
        """The storage k's prologue GEMM reads (its operands may be views: their bases)."""
        return self.ranges([k.leaves[id(x)].base for x in k.matmul.inputs])

    def _lower(self, k: Kernel, col, fp: tuple, epis: list) -> list:
        """The launches of kernel ``k`` (``col``: the column work it takes over, see gemm_fused;
        ``epis``: [(loop, what of it runs here)], the loops it runs on the elements it writes)."""
        fallback = not self.use_cublas
        launches = []
        epi = (fallback and "epilogue" in self.merge and k.kind == "loop" and k.matmul is not None
               and merge_pass.epilogue_ok(self, k, fp))
        if k.matmul is not None:
            if fallback and (epi or col is not None):
                ln = gemm.gemm_fused(self, k, epi, col)
                ln.reads, ln.writes = list(fp[0]), list(fp[1]) + ([] if epi else self.ranges([k.matmul]))
                if col is not None:
                    self._add_col_footprint(ln, col)
            else:
                ln = gemm.gemm(self, k, k.matmul)
                ln.reads, ln.writes = self.gemm_reads(k), self.ranges([k.matmul])
            launches.append(ln)
        if k.kind != "matmul" and not epi:
            lowering = KERNELS.get(k.kind)
            if lowering is None:
                raise CompileError(f"the cuda backend has no lowering for kernel kind {k.kind!r} "
                                   f"({', '.join(self.site(n) for n in k.nodes)})")
            hosted = Hosted(col=col if k.kind == "sce" else None, epi=[run for _, run in epis])
            ln = lowering(self, k, hosted)
            ln.reads, ln.writes = list(fp[0]), list(fp[1])
            if k.matmul is not None and k.kind == "loop":  # the GEMM's operands are its launch's reads only
                used = LoopText(self, k, Fn()).leaves.values()
                ln.reads = self.ranges({id(v.base): v.base for v in used}.values())
            if col is not None and k.kind == "sce":
                self._add_col_footprint(ln, col)
            for _, run in epis:
                ef = self.footprint(run)
                ln.reads, ln.writes = ln.reads + ef[0], ln.writes + ef[1]
            launches.append(ln)
        return launches

    def _add_col_footprint(self, ln: Launch, col: tuple) -> None:
        rd, U, store = col
        own = self.ranges([rd])
        ln.writes += own if store else []
        if U is not None:
            uf = self.footprint(U)
            ln.reads += [r for r in uf[0] if store or r not in own]
            ln.writes += uf[1]

    def table(self, values: list) -> int:
        """A constant int64 table in the device scratch arena (filled when the program is
        built); returns its element offset."""
        dt = np.dtype(np.int64)
        off = aligned(self.scratch_sizes.get(dt, 0), dt)
        self.scratch_sizes[dt] = off + len(values)
        self.tables.append((dt, off, np.asarray(values, dtype=dt)))
        return off

    def emit(self) -> CudaModule:
        ks = list(self.plan.kernels)
        fp = {id(k): self.footprint(k) for k in ks}
        col, drop, absorbed, hosted = {}, {}, {}, {}
        if "colsum" in self.merge:
            col, drop, absorbed = merge_pass.plan_colsums(self, ks, fp)
        if "epilogue" in self.merge:
            moved, hosted = merge_pass.plan_red_epilogues(self, ks, fp, drop, absorbed)
            absorbed = {**absorbed, **moved}
            moved, more = merge_pass.plan_struct_epilogues(self, ks, fp, drop, absorbed, hosted)
            absorbed, hosted = {**absorbed, **moved}, {**hosted, **more}
        if "multi" in self.merge:
            fused = not self.use_cublas and "epilogue" in self.merge
            merge_pass.relocate_update_operands(self, ks, absorbed, fused)
        units: list[Launch] = []
        for i, k in enumerate(ks):
            kk = k
            if id(k) in drop:  # its column sums are computed by a later GEMM
                kk = replace(k, reductions=[r for r in k.reductions if id(r) not in drop[id(k)]],
                             outputs=[o for o in k.outputs if id(o) not in drop[id(k)]])
            launches = []
            if id(k) not in absorbed and (kk.nodes or kk.reductions or kk.matmul is not None):
                launches = self._lower(kk, col.get(id(k)), self.footprint(kk), hosted.get(id(k), []))
            c = col.get(id(k))
            for ln in launches:
                ln.anchor, ln.covers = i, {i}
                if (kk.kind == "loop" and kk.shape == () and kk.matmul is None and ln.ew is not None
                        and "fold" in self.merge):
                    ln.tiny = kk
            if c is not None:  # the kernels whose work the GEMM took over
                e = next(j for j, q in enumerate(ks) if id(q) in drop and id(c[0]) in drop[id(q)])
                extra = [e] + ([next(j for j, q in enumerate(ks) if q is c[1])] if c[1] is not None else [])
                ln = launches[0]
                ln.covers |= set(extra)
                own = ln.name.split("+")
                whole = not (ks[e].nodes or len(ks[e].reductions) > 1 or ks[e].matmul)  # all of it moved
                red = ks[e].name if whole else f"{ks[e].name}.sum"
                ln.merged = tuple(own + [red] + ([c[1].name] if c[1] is not None else []))
                ln.name = "+".join(ln.merged)
            for e, _ in hosted.get(id(k), []) if launches else []:  # the loops it runs on its sums
                ln = launches[-1]
                ln.covers.add(next(j for j, q in enumerate(ks) if q is e))
                ln.merged = tuple((ln.merged or (ln.name,)) + (e.name,))
                ln.name = "+".join(ln.merged)
            units += launches
            self.infos.append(KernelInfo(k.name, "", k.kind, tuple(k.shape), [n.op for n in k.all_nodes],
                                         k.all_nodes, k.outputs, out_bytes(k.outputs)))
        if "multi" in self.merge:
            units = merge_pass.multi_tensor(units, lambda group: loops.multi_tensor_launch(self, group))
        if "fold" in self.merge:
            units = merge_pass.fold_tiny(units, lambda x, y, barrier: loops.fold_launch(self, x, y, barrier))
        self.launches = units
        unmerged = sum((k.matmul is not None) + (k.kind != "matmul") for k in ks)
        merges = ",".join(sorted(self.merge)) or "none"
        note = (f"{len(units)} launches for the schedule's {unmerged} (GRAPHC_CUDA_MERGE: {merges}); "
                "a name joined by '+' runs those kernels' work in one launch")
        for idx, info in enumerate(self.infos):
            info.launches = [ln for ln in units if ln.anchor == idx]
            info.function = next((ln.function for ln in reversed(units) if idx in ln.covers), "")
        # each kernel is a module of its own, named by the hash of its text (which names no
        # node): another batch size or a forward function imports the same files. The driver
        # only imports them and lists the launches: the program replays those from Python
        # (binding device arenas and launch configurations), so there is no driver function
        header = ("# Generated by graphc (target='cuda'). Do not edit: the file name is a hash of this text.\n"
                  "import math\nimport numpy as np\nimport numba\n"
                  "from graphc.backends.cuda.compat import numba_cuda\n\n"
                  "cuda = numba_cuda()  # numba.cuda, after the numpy compatibility shim\n\n")
        used = {ln.function for ln in self.launches if ln.kind == "kernel"}
        for f in [f for f in self.functions.sources if f not in used]:  # superseded by a merged launch
            del self.functions.sources[f], self.functions.nparams[f]
        kernel_modules, owner = self.functions.modules(header)
        lines = ["# Generated by graphc (target='cuda'): the kernels of one program and its launches.",
                 *(f"from {m} import {f}" for f, m in owner.items()), "", "# launches in step order:"]
        for ln in self.launches:
            cfg = "cuBLAS" if ln.kind == "cublas" else f"[{ln.grid}, {ln.block}]"
            lines.append(f"#   {ln.name:<8} {ln.function} {cfg}  # {ln.comment[:200]}")
        return CudaModule("\n".join(lines) + "\n", self.launches, self.infos, dict(self.functions.nparams),
                          self.feed_offsets, self.scratch_sizes, self.lp,
                          "cublas" if self.use_cublas else "numba-fallback", self._copies(), kernel_modules, owner,
                          self.tables, note)


    def _copies(self) -> list:
        """Deferred store writes as (slot arena, offset, size, dtype, source)."""
        out = []
        for node, slot in self.plan.copies:
            dt, off, shape = self.layout[slot]
            b = self.plan.buffers[id(node)]
            src = ("literal", b.value.reshape(-1)[0]) if b.kind == "literal" else self.where(node)
            out.append((f"S_{dtname(dt)}", off, _size(shape), np.dtype(dt), src))
        return out


def emit_module(plan: Plan, graph: Graph, store_layout: dict, feeds: list[Node], use_cublas: bool,
                lp: LaunchParams | None = None, merge: frozenset | None = None) -> CudaModule:
    return _Emitter(plan, graph, store_layout, feeds, lp or launch_params(), use_cublas,
                    merge_option() if merge is None else frozenset(merge)).emit()


def _numba_type(spec, dtypes: dict):
    from numba import types
    from numba.np import numpy_support
    if spec[0] == "arena":
        return types.Array(numpy_support.from_dtype(dtypes[spec[1]]), 1, "C")
    if spec[0] == "int":
        return types.int64
    return numpy_support.from_dtype(np.dtype(spec[2]))


def emit_for(lowered, store_layout: Mapping, use_cublas: bool = False, lp: LaunchParams | None = None,
             merge: frozenset | str | None = None) -> CudaModule:
    """The CudaModule of a lowered program (graphc.compiler.lowered), without touching a device.
    ``merge``: the launch merges to make (a subset of MERGES, or a string as merge_option
    reads it; default GRAPHC_CUDA_MERGE, else all)."""
    feeds = sorted(lowered.graph.inputs, key=lambda n: n.name)
    if isinstance(merge, str):
        merge = merge_option(merge)
    return emit_module(lowered.plan, lowered.graph, dict(store_layout), feeds, use_cublas, lp, merge)


def compile_ptx(module: CudaModule, cc=(9, 0)) -> dict[str, str]:
    """PTX of every generated kernel for the argument types the launches use (needs NVVM,
    not a GPU; run without the simulator). Catches typing and lowering errors."""
    from ..cache import load_program, write_program
    cuda = numba_cuda()
    mod, _ = load_program(*write_program(module.source, module.kernel_modules.values()), retain=False)
    dtypes = {}
    for ln in module.launches:
        for a in ln.args:
            if a[0] == "arena":
                dtypes[a[1]] = np.dtype(a[1].split("_", 1)[1])
    out = {}
    for ln in module.launches:
        if ln.kind != "kernel" or ln.function in out:
            continue
        sig = tuple(_numba_type(a, dtypes) for a in ln.args)
        disp = getattr(mod, ln.function)
        ptx, _ = cuda.compile_ptx(disp.py_func, sig, cc=cc)
        out[ln.function] = ptx
    return out


# The cuda lowering of each kernel kind, a rule table: ``(emitter, kernel, hosted) -> Launch``,
# ``hosted`` the work of other kernels it runs (launch.Hosted); GEMMs (matmul kernels and loop
# prologues) are launched by gemm.py's ``gemm``/``gemm_fused``. A structured op's rule
# (ops/base.py ``Structured``) names its kind.
KERNELS = {
    "loop": loops.loop_kernel,
    "copy": loops.copy_kernel,
    "slice": slicing.slice_kernel,  # slice (ops/slicing.py)
    "pad": slicing.pad_kernel,  # pad
    "concat": slicing.concat_kernel,  # concatenate
    "sce": sce.sce_kernel,  # softmax_cross_entropy / sce_grad
    "take": indexing.take_kernel,  # take (ops/indexing.py)
    "scatter_add": indexing.scatter_add_kernel,  # take_grad
    "bmm": gemm.bmm_kernel,  # batch_matmul (ops/linalg.py)
    "im2col": conv.im2col_kernel,  # im2col (ops/conv.py): conv2d's patches
    "col2im": conv.col2im_kernel,  # col2im: their adjoint (gather, no atomics)
    "pool2d": conv.pool2d_kernel,  # pool2d (max / avg)
    "pool2d_grad": conv.pool2d_grad_kernel,  # pool2d_grad (gather, no atomics)
    "rng": rng.rng_kernel,  # random_uniform (ops/random.py)
}
