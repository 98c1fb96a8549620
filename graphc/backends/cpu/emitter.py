"""CPU code generation: one module per kernel (a ``cfunc`` native entry) plus a driver.

Kernels are shape-generic (loop extents are arguments), so identical kernels, e.g. the
optimizer update of every parameter, are emitted and compiled once. Each has an explicit C
signature (an address and dims per array, scalars by value) and is bound to a symbol when its
module is imported; the driver (``@njit``) calls those symbols in schedule order with the
arenas' addresses plus offsets, linking no kernel code: a step is one native call, and the
driver compiles in a fraction of the time of one that links its kernels. Every kernel line
names the op it computes; every driver call names the graph nodes (``%id op @ file:line``)
whose values each kernel variable holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import CompileError
from ...ir import Graph, Node, fmt_shape
from ...schedule.fusion import Kernel, View
from ...schedule.plan import Buffer, Plan
from ..base import (FunctionTable, KernelInfo, index_checks, local_names, out_bytes, site, site_comment,
                    with_provenance, without_provenance)
from ..cache import numba_version
from ..expr import leaf_index, literal, node_expr, reduce_init, reduce_step
from . import allreduce
from .entry import EntryDesc
from .intrinsics import DIALECT, import_line
from ...ops.indexing import around
from ...schedule.cost import gemm_flops, kernel_bytes, kernel_flops

# target "parallel": a kernel's outer loop is a prange only where the serial loop would run
# long enough for two threads to pay for waking and joining Numba's pool. Measured here
# (2 cores, shared): the pool costs ~3 us a loop on a quiet machine; a float32 multiply-add
# over 16384 items took 2.2 us serially and 5.4 us under prange, over 65536 items (0.8 MB)
# 10.5 and 9.1 us, over 262144 items 42 and 27 us; Adam's update of a 64x512 weight fused
# with its gradient GEMM (1.2 MB, 0.4 MFLOP outside BLAS) 60 us serially, 87 us under prange
# (BLAS's threads and the pool's on the same cores). The serial time is estimated from the
# cost model explain() reports (schedule/cost.py: bytes moved, FLOPs outside BLAS) at one
# core's rates; a kernel that stays serial is one graphc's kernel compiler can compile, and a
# program without parallel kernels gets graphc's native driver, as target "cpu" does.
# A loop fused behind a GEMM (an epilogue: bias + activation, or the optimizer's update after a
# weight gradient) starts while BLAS's workers, just done with the GEMM, still spin on the
# cores (OpenBLAS polls for new work for a while before it sleeps), so the prange's second
# thread shares its core with one: Adam's update of 784x256 (estimated 260 us) and 784x128
# (130 us) weights lost 1.05-1.07x of the whole step under prange (bench_step.py small/medium).
# Such a loop gets a prange only from GEMM_PARFOR_MIN_S: the update of a 1024x1024 weight
# (estimated 1.5 ms) still does, a 1024x1024 forward epilogue (0.5 ms) does not.
PARFOR_MIN_S = 50e-6  # estimated serial seconds from which a prange pays
GEMM_PARFOR_MIN_S = 1e-3  # the same for a loop in a kernel that calls BLAS first
SERIAL_BYTES_PER_S = 50e9  # one core streaming a loop's cache-resident operands
SERIAL_FLOPS_PER_S = 20e9  # one core's vectorized elementwise FLOPs


def parfor_pays(nbytes: int, flops: int, gemm: bool = False) -> bool:
    """Whether a kernel moving ``nbytes`` and computing ``flops`` (outside BLAS) is worth a prange;
    ``gemm``: the kernel calls BLAS before its loop (threshold GEMM_PARFOR_MIN_S)."""
    serial_s = nbytes / SERIAL_BYTES_PER_S + flops / SERIAL_FLOPS_PER_S
    return serial_s >= (GEMM_PARFOR_MIN_S if gemm else PARFOR_MIN_S)


# float32 math in loop bodies that LLVM vectorizes where libm's scalar call would not
# (intrinsics.exp32_ir, tanh32_ir): the elementwise templates' calls, renamed
VECTOR_MATH = {"math.exp(": "exp32", "math.tanh(": "tanh32"}


def vector_math(n, text: str) -> str:
    """``text`` (node ``n``'s expression) with float32 exp/tanh calls made vectorizable; a node
    whose operands or result are not all float32 keeps libm's."""
    if n.dtype != np.float32 or any(x.dtype != np.float32 for x in n.inputs):
        return text
    for call, fn in VECTOR_MATH.items():
        text = text.replace(call, f"{fn}(")
    return text


# what every kernel module imports (intrinsics.py; the others are imported where used)
HEADER_INTRINSICS = ("exp32", "fill", "view")


@dataclass
class Module:
    source: str  # the driver as written and compiled (its name is the hash of this text)
    args: list[tuple[str, object]]  # driver arguments: ("store"|"scratch", dtype) or ("feed"|"scalar", name)
    kernels: list[KernelInfo] = field(default_factory=list)
    functions: int = 0
    kernel_modules: dict = field(default_factory=dict)  # module name -> source, imported by the driver
    entries: dict = field(default_factory=dict)  # module name -> its entry's description (entry.EntryDesc)
    # check_numerics: status NUMERICS_STATUS + i means that a value of numerics[i] =
    # ([(label, output index, node), ...], kernel description) is not finite (the values of
    # one kernel share a check; checks run in the order the kernels computed the values)
    numerics: list = field(default_factory=list)
    annotated: str = ""  # the driver with the user's file:line in its comments (step.source())


def _dtname(dt) -> str:
    return np.dtype(dt).name


# ---- kernel operands: what the driver passes a kernel's native entry, and how the entry ---------
# rebuilds it (emitter.entry)

@dataclass(frozen=True)
class Arr:
    """An array operand: the memory at driver expression ``ptr`` (an address) read as a C-order
    array of ``shape``, then transposed by ``perm``."""
    ptr: str
    dtype: np.dtype
    shape: tuple
    perm: tuple | None = None


@dataclass(frozen=True)
class Val:
    """A scalar passed by value (a rank-0 feed, a literal)."""
    expr: str
    dtype: np.dtype


@dataclass(frozen=True)
class At:
    """A size-1 operand read as a scalar: the value at address ``ptr``."""
    ptr: str
    dtype: np.dtype


@dataclass(frozen=True)
class Full:
    """A rank-0 feed (passed to the driver by value) read as an array of ``shape``."""
    expr: str
    dtype: np.dtype
    shape: tuple


@dataclass(frozen=True)
class Template:
    """A kernel's parameters and body before its operands' types are known."""
    params: tuple
    body: tuple
    parallel: bool
    imports: str = ""  # lines its module needs (intrinsics imported from elsewhere than views.py)
    intrinsics: tuple = ()  # the dialect's intrinsics its body calls (intrinsics.DIALECT)
    raises: tuple = ()  # messages of its error path: the body returns -1 there and the driver raises


# an intrinsic's import line (as given to ``function`` instead of its name) -> its name
_IMPORTED = {import_line(n): (n,) for n in DIALECT}


def _literal_dtype(text: str) -> np.dtype:
    """The type of a literal as ``expr.literal`` (or ``str(int)``) writes it."""
    if text in ("True", "False"):
        return np.dtype(bool)
    if text.startswith("np.") and "(" in text:
        return np.dtype(text[3:text.index("(")])
    try:
        v = int(text)
    except ValueError:
        return np.dtype(np.float64)  # 0.5, np.nan, -np.inf
    return np.dtype(np.int64) if -2**63 <= v < 2**63 else np.dtype(np.uint64)


class _Emitter:
    def __init__(self, plan: Plan, graph: Graph, parallel: bool, store_layout: dict):
        self.plan = plan
        self.graph = graph
        self.parallel = parallel
        self.layout = store_layout
        self.functions = FunctionTable()
        self._exported: set[str] = set()
        self.entries: dict[str, EntryDesc] = {}  # function name -> its native entry's description
        self.lines: list[str] = []
        self.flat: dict[int, str] = {}  # id(node) -> driver expression of its flat 1-D buffer
        self.args: list[tuple[str, object]] = []
        self.infos: list[KernelInfo] = []
        self.local = local_names(graph)
        self._checked: set[int] = set()  # check_numerics: nodes to check (kept in scratch)
        self._counted: set[int] = set()  # those a loop kernel counted (it returns the count)

    def _site(self, n: Node) -> str:
        """``%k op @ file:line`` for generated-code comments (k: position in ``graph.dump()``);
        the file:line is marked as provenance: kept out of the written (hashed) text."""
        return site_comment(n, self.local)

    # ---- driver-side expressions -------------------------------------------------------------
    def buf(self, n: Node) -> Buffer:
        return self.plan.buffers[id(n)]

    def flat_expr(self, n: Node) -> "Arr":
        """Node n's storage as a flat 1-D array operand: its address (base pointer plus byte
        offset) is bound once to a driver local ``b<k>``."""
        e = self.flat.get(id(n))
        if e is None:
            b = self.buf(n)
            if b.kind == "feed":
                if b.name in self._scalar_feeds:  # passed to the driver by value: no address
                    raise AssertionError(f"rank-0 feed {b.name!r} used as an array")
                arena, off = f"f_{self._feed_index[b.name]}", 0
                where = arena
            elif b.kind in ("store", "scratch", "const"):
                arena = f"{'S' if b.kind == 'store' else 'T'}_{_dtname(b.dtype)}"
                off = self.layout[b.name][1] if b.kind == "store" else b.offset
                where = f"{arena}[{off}:{off + b.size}]"
            else:
                raise AssertionError(b.kind)
            src = f"p{arena} + {off * np.dtype(n.dtype).itemsize}" if off else f"p{arena}"
            name = f"b{self.local[id(n)]}"
            self.lines.append(f"    {name} = {src}  # {self._site(n)} {fmt_shape(n.shape)} {n.dtype} ({b.kind} {where})")
            self.flat[id(n)] = e = (name, np.dtype(n.dtype), b.size)
        name, dt, size = e
        return Arr(name, dt, (size,))

    def storage(self, n: Node):
        """Where n's value lives: equal keys mean the same memory (None: a feed or literal)."""
        b = self.plan.buffers.get(id(n))
        if b is None or b.kind in ("feed", "literal"):
            return None
        if b.kind == "store":
            return ("S", b.dtype, self.layout[b.name][1], b.size)
        if b.kind == "arg":  # a scan body's carry leaf or x slice (scan_loop binds its address)
            return ("A", id(n))
        return ("T", b.dtype, b.offset, b.size)

    def nd(self, n: Node, shape: tuple) -> "Arr":
        """Node n's storage as an array operand of ``shape`` (C order; () reads as 1-D)."""
        f = self.flat_expr(n)
        return Arr(f.ptr, f.dtype, tuple(shape)) if len(shape) > 1 else f

    def view_arg(self, v: View, scalar: bool = False):
        """A kernel operand read through view ``v``. ``scalar``: an elementwise loop
        broadcasts a size-1 operand, so it is passed as its value; every other operand (GEMM,
        softmax-CE, anything indexed) stays an array of its shape, size 1 included."""
        b = self.buf(v.base)
        if b.kind == "literal":
            return literal(b.value, b.dtype)
        if scalar and v.size == 1:
            if b.kind == "feed" and not v.base.shape:
                return Val(f"f_{self._feed_index[b.name]}", np.dtype(v.base.dtype))
            return At(self.flat_expr(v.base).ptr, np.dtype(v.base.dtype))
        e = self.nd(v.base, v.shape) if len(v.shape) > 1 else self.flat_expr(v.base)
        if v.perm is not None:
            e = Arr(e.ptr, e.dtype, e.shape, tuple(v.perm))
        return e

    # ---- kernel functions ------------------------------------------------------------------------
    def function(self, params: list[str], body: list[str], parallel: bool, imports: str = "",
                 intrinsics: tuple = (), raises: tuple = ()) -> "Template":
        """A kernel's text over its parameters (arrays of any layout, scalars); ``entry``
        makes it a native function for the operands of a call. ``intrinsics``: those its body
        calls (their import lines are written here); ``imports``: an intrinsic's import line
        given as text instead; ``raises``: the messages of the ``return -1`` lines of its body."""
        uses = tuple(intrinsics) + _IMPORTED.get(imports, ())
        if imports and not _IMPORTED.get(imports):
            raise AssertionError(f"imports {imports!r} are not an intrinsic's (intrinsics.DIALECT)")
        imports = imports or "".join(import_line(n) for n in uses if n not in HEADER_INTRINSICS)
        return Template(tuple(params), tuple(body), parallel, imports, tuple(sorted(set(uses))), tuple(raises))

    def entry(self, t: "Template", args: list, tag: str = "kernel") -> tuple[str, list[str]]:
        """The native entry of template ``t`` for operands ``args``: a ``cfunc`` with an
        explicit C signature (an address and the dims of each array, scalars by value)
        that rebuilds the arrays (``carray``) and runs the kernel. Its module binds it to
        the symbol ``graphc_<name>`` when imported, and the driver calls that symbol: the
        driver links no kernel code and builds no array views. Returns (name, the driver's
        arguments)."""
        if len(args) != len(t.params):
            raise AssertionError(f"{len(args)} operands for the parameters {t.params}")
        params, sig, prologue, call, dtypes = [], [], [], [], []
        for p, a in zip(t.params, args):
            if isinstance(a, str):  # a literal (loop extents, strides, fill values)
                a = Val(a, _literal_dtype(a))
            if isinstance(a, Arr):
                dims = [f"{p}_n{i}" for i in range(len(a.shape))]
                params += [f"{p}_ptr", *dims]
                sig += ["voidptr"] + ["int64"] * len(dims)
                dtypes.append((f"{p}_ptr", _dtname(a.dtype)))
                call += [a.ptr, *map(str, a.shape)]
                e = f"view({p}_ptr, ({', '.join(dims)},), np.{_dtname(a.dtype)})"
                if a.perm == (1, 0):
                    e += ".T"
                elif a.perm is not None:
                    e = f"np.transpose({e}, {a.perm!r})"
                prologue.append(f"    {p} = {e}")
            elif isinstance(a, At):
                params.append(f"{p}_ptr")
                sig.append("voidptr")
                dtypes.append((f"{p}_ptr", _dtname(a.dtype)))
                call.append(a.ptr)
                prologue.append(f"    {p} = view({p}_ptr, (1,), np.{_dtname(a.dtype)})[0]")
            elif isinstance(a, Full):
                if a.dtype.kind == "b":
                    params.append(f"{p}_v")
                    sig.append("int64")
                    call.append(f"int({a.expr})")
                    prologue.append(f"    {p} = np.full({a.shape!r}, {p}_v != 0)")
                else:
                    params.append(f"{p}_v")
                    sig.append(_dtname(a.dtype))
                    call.append(a.expr)
                    prologue.append(f"    {p} = np.full({a.shape!r}, {p}_v)")
            elif isinstance(a, Val):
                if a.dtype.kind == "b":  # a C bool is not Numba's: passed as an integer
                    params.append(f"{p}_v")
                    sig.append("int64")
                    call.append(f"int({a.expr})")
                    prologue.append(f"    {p} = {p}_v != 0")
                else:
                    params.append(p)
                    sig.append(_dtname(a.dtype))
                    call.append(a.expr)
            else:
                raise AssertionError(a)
        body = list(t.body)
        if not (body and body[-1].startswith("    return ")):
            body.append("    return 0")
        csig = f"'int64({', '.join(sig)})'"
        if t.parallel:
            # cfunc(parallel=True) compiles but does not run prange loops (Numba 0.68): the
            # parallel kernel stays an @njit function the entry calls (and links). The entry's
            # cache entry does not carry the parfor code's reload hook, so the module starts
            # Numba's threading runtime itself before anything can call that code.
            deco = (f"{t.imports}from graphc.threads import start_parallel_runtime\n"
                    f"start_parallel_runtime()  # for the parfor code below\n\n"
                    f"@njit(cache=True, nogil=True, error_model='numpy', no_cpython_wrapper=True, "
                    f"no_cfunc_wrapper=True, parallel=True)\n"
                    f"def _kernel({', '.join(t.params)}):\n" + "\n".join(body) + "\n\n\n"
                    f"@cfunc({csig}, cache=True, error_model='numpy')")
            text = prologue + [f"    return _kernel({', '.join(t.params)})"]
        else:
            deco = f"{t.imports}@cfunc({csig}, cache=True, error_model='numpy')"
            text = prologue + body
        name = self.functions.add(deco, params, text, tag)
        if name not in self._exported:
            self._exported.add(name)
            uses = tuple(sorted(set(t.intrinsics) | ({"view"} if dtypes else set())))
            self.entries[name] = EntryDesc(name, tuple(zip(params, sig)), "int64", tuple(dtypes), uses, t.raises)
            # the module binds the entry's address to its symbol; the driver imports the name
            # as the external function it calls
            self.functions.sources[name] += f"\n\n_cfunc = {name}\n{name} = export({name!r}, _cfunc)\n"
        return name, call

    def loop_kernel(self, k: Kernel) -> tuple[str, list[str], str, bool]:
        """Emit a fused loop kernel; return (function, driver args, value map comment, parallel)."""
        shape = tuple(k.shape)
        used = {id(x) for n in k.prelude + k.nodes + k.reductions for x in n.inputs}
        # not the GEMM-only operands, nor reshapes of the GEMM's result (read as the result)
        leaves = [(nid, v) for nid, v in k.leaves.items() if nid in used and nid not in k.gemm_views]
        identity = all(v.size == 1 or v.is_identity_for(shape) for _, v in leaves)
        reduce_all = all(set(r.attrs["axes"]) == set(range(len(shape))) for r in k.reductions)
        flat = len(shape) != 1 and identity and reduce_all and shape != ()
        lshape = (int(np.prod(shape)),) if flat else shape
        r = len(lshape)
        idx = [f"i{d}" for d in range(r)]
        params, args, body, vmap = [], [], [], []
        names: dict[int, str] = {}

        def fresh(n: Node) -> str:
            nm = f"v{len(names)}"
            names[id(n)] = nm
            vmap.append(f"{nm}={self._site(n)}")
            return nm

        outs = [o for o in k.outputs if o not in k.reductions]
        # An operand stored where an output goes (a parameter updated in place, a GEMM result
        # overwritten by its epilogue) is read through the output's own argument: with two
        # array arguments over the same memory LLVM must assume they overlap and gives up
        # vectorizing the loop (10x on Adam's update).
        mm = k.matmul
        out_p = {}
        slot_p: dict = {}
        for o in outs:
            if mm is not None and not flat and self.storage(o) == self.storage(mm):
                out_p[id(o)] = "mo"  # the epilogue writes over the GEMM result in place
                continue
            p = f"o{len(out_p)}"
            out_p[id(o)] = p
            slot_p.setdefault(self.storage(o), p)
            params.append(p)
            args.append(self.flat_expr(o) if (flat or r <= 1) else self.nd(o, shape))
        red_p = {}
        for red in k.reductions:
            p = f"r{len(red_p)}"
            red_p[id(red)] = p
            params.append(p)
            kshape = tuple(1 if i in red.attrs["axes"] else d for i, d in enumerate(shape))
            args.append(self.flat_expr(red) if (flat or len(kshape) <= 1) else self.nd(red, kshape))
        mm_read = None
        if mm is not None:
            params += ["ma", "mb", "mo"]
            args += [self.view_arg(k.leaves[id(mm.inputs[0])]), self.view_arg(k.leaves[id(mm.inputs[1])]),
                     self.nd(mm, mm.shape)]
            body.append("    gemm(ma, mb, mo)  # matmul prologue (BLAS)")
            if not flat:
                mm_read = "mo"
            elif self.storage(mm) in slot_p:
                mm_read = slot_p[self.storage(mm)]
            else:
                mm_read = "mflat"
                params.append("mflat")
                args.append(self.flat_expr(mm))
        leaf_p = {}
        for nid, v in leaves:
            b = self.buf(v.base)
            if b.kind == "literal":
                names[nid] = literal(b.value, b.dtype)
                continue
            same = slot_p.get(self.storage(v.base)) if (flat or v.is_identity_for(shape)) and v.size != 1 else None
            if same is not None:
                leaf_p[nid] = (same, v)  # read in place through the output's argument
                continue
            p = f"a{len(leaf_p)}"
            leaf_p[nid] = (p, v)
            params.append(p)
            args.append(self.view_arg(v, scalar=True) if not (flat and v.size != 1) else self.flat_expr(v.base))

        def load(x: Node) -> str:
            if id(x) in names:
                return names[id(x)]
            if mm is not None and (x is mm or id(x) in k.gemm_views):
                return f"{mm_read}[{', '.join(idx)}]"
            p, v = leaf_p[id(x)]
            if v.size == 1:
                return p
            if flat:
                return f"{p}[i0]"
            return p + leaf_index(v.view_shape, lshape, idx)

        # loop extents come from an argument's shape (a literal int would make Numba compile
        # one specialization per size, defeating kernel sharing)
        carrier = None
        if r:
            if outs:
                carrier = out_p[id(outs[0])]
            elif mm is not None:
                carrier = mm_read
            else:
                carrier = next((p for p, v in leaf_p.values() if v.size != 1 and (flat or v.is_identity_for(shape))), None)
        if carrier is not None:
            body.append(f"    {', '.join(f'd{d}' for d in range(r))}{',' if r == 1 else ''} = {carrier}.shape")
        else:
            for d in range(r):
                params.insert(d, f"d{d}")
                args.insert(d, str(lshape[d]))
        # prelude: scalar values computed once
        for n in k.prelude:
            ops = [load(x) for x in n.inputs]
            nm = fresh(n)
            body.append(f"    {nm} = {node_expr(n, ops)}  # {n.op}")
        # reductions: local accumulators when they reduce a suffix of the loop dims
        axes_sets = {tuple(sorted(rd.attrs["axes"])) for rd in k.reductions}
        suffix = None
        if k.reductions and len(axes_sets) == 1:
            ax = next(iter(axes_sets))
            if flat:
                suffix = 0
            elif ax == tuple(range(r - len(ax), r)):
                suffix = r - len(ax)
        par = r >= 1 and self.pays(k) and (
            not k.reductions or (suffix is not None and suffix >= 1))
        indent = "    "
        if k.reductions and suffix is None:
            for rd in k.reductions:
                body.append(f"{indent}fill({red_p[id(rd)]}, {reduce_init(rd.op, rd.dtype)})  # {rd.op} init")
        inner_lines: list[str] = []
        loop_start = len(body)
        for d in range(r):
            if suffix is not None and d == suffix:
                for rd in k.reductions:
                    body.append(f"{indent}acc_{red_p[id(rd)]} = {reduce_init(rd.op, rd.dtype)}  # {rd.op}")
            rng = "prange" if (par and d == 0) else "range"
            body.append(f"{indent}for {idx[d]} in {rng}(d{d}):")
            indent += "    "
        # per-element body
        for n in k.nodes:
            ops = [load(x) for x in n.inputs]
            nm = fresh(n)
            inner_lines.append(f"{indent}{nm} = {vector_math(n, node_expr(n, ops))}  # {n.op}")
        for rd in k.reductions:
            v = load(rd.inputs[0])
            if suffix is not None:
                acc = f"acc_{red_p[id(rd)]}"
                inner_lines.append(f"{indent}{acc} = {reduce_step(rd.op, acc, v)}  # {rd.op}")
            else:
                ridx = [("0" if i in rd.attrs["axes"] else idx[i]) for i in range(r)]
                tgt = f"{red_p[id(rd)]}[{', '.join(ridx) if ridx else '0'}]"
                inner_lines.append(f"{indent}{tgt} = {reduce_step(rd.op, tgt, v)}  # {rd.op}")
        # check_numerics: count the non-finite values among the checked outputs (x - x is
        # NaN exactly when x is NaN or infinite; an integer sum, so the loop still vectorizes
        # and prange treats it as a reduction); the kernel returns the count
        chk = [o for o in outs if id(o) in self._checked]
        if chk:
            body.insert(loop_start, "    bad = 0  # check_numerics")  # before the loop nest
            terms = " + ".join(f"({names[id(o)]} - {names[id(o)]})" for o in chk)
            inner_lines.append(f"{indent}bad += ({terms}) != {literal(0, chk[0].dtype)}  # check_numerics")
        self._counted.update(id(o) for o in chk)
        for o in outs:  # stores last: in-place outputs read their operand first
            tgt = f"{out_p[id(o)]}[{', '.join(idx) if idx else '0'}]"
            inner_lines.append(f"{indent}{tgt} = {names[id(o)]}  # store {o.op}")
        body += inner_lines
        if suffix is not None:
            ind = "    " * (suffix + 1)
            for rd in k.reductions:
                p = red_p[id(rd)]
                if flat or r == 0:
                    body.append(f"{ind}{p}[0] = acc_{p}")
                else:
                    ridx = [idx[i] if i < suffix else "0" for i in range(r)]
                    body.append(f"{ind}{p}[{', '.join(ridx)}] = acc_{p}")
        if len(body) == 0 or all(line.strip().startswith("#") for line in body):
            body.append("    pass")
        if chk:
            body.append("    return bad")
        uses = (("gemm",) if mm is not None else ()) + (("fill",) if k.reductions and suffix is None else ())
        uses += tuple(f for f in VECTOR_MATH.values() if any(f"{f}(" in line for line in inner_lines))
        fn = self.function(params, body, par, intrinsics=uses)
        return fn, args, " ".join(vmap), par

    def matmul_kernel(self, k: Kernel):
        mm = k.matmul
        a, b = (k.leaves[id(x)] for x in mm.inputs)
        fn = self.function(["ma", "mb", "mo"], ["    gemm(ma, mb, mo)  # matmul (BLAS)"], False, intrinsics=("gemm",))
        return fn, [self.view_arg(a), self.view_arg(b), self.nd(mm, mm.shape)], self._site(mm), False

    def sce_kernel(self, k: Kernel):
        z, y = k.nodes[0].inputs
        loss = next((n for n in k.nodes if n.op == "softmax_cross_entropy"), None)
        grad = next((n for n in k.nodes if n.op == "sce_grad"), None)
        dt = z.dtype
        zero = literal(0, dt)
        par = self.pays(k)
        rng = "prange" if par else "range"
        body = [
            "    n, c = z.shape",
            f"    total = {literal(0, np.float64)}",
            f"    inv = {literal(1, dt)} / n",
            f"    for i in {rng}(n):",
            "        m = z[i, 0]",
            "        for j in range(1, c):",
            "            zj = z[i, j]",  # (a conditional expression here breaks Numba's parfor lowering)
            "            if zj > m:",
            "                m = zj",
            f"        s = {zero}",
        ]
        exp = "exp32" if dt == np.float32 else "math.exp"  # views.py: float32 exp that vectorizes
        if grad is not None:  # keep exp(z - m) and scale it: one exp per element, then the sum
            body += ["        for j in range(c):",
                     f"            g[i, j] = {exp}(z[i, j] - m)",
                     "        for j in range(c):",
                     "            s += g[i, j]"]
        else:
            body += ["        for j in range(c):",
                     f"            s += {exp}(z[i, j] - m)"]
        body += ["        lse = math.log(s) + m", "        lab = y[i]"]
        if loss is not None:
            body.append("        total += lse - z[i, lab]  # softmax_cross_entropy")
        if grad is not None:
            body += ["        scale = inv / s",
                     "        for j in range(c):",
                     "            g[i, j] *= scale  # sce_grad: (softmax - onehot) / n",
                     "        g[i, lab] -= inv"]
        if loss is not None:
            body.append("    out[0] = total / n")
        params = ["z", "y"] + (["out"] if loss is not None else []) + (["g"] if grad is not None else [])
        args = [self.view_arg(k.leaves[id(z)]), self.view_arg(k.leaves[id(y)])]
        if loss is not None:
            args.append(self.flat_expr(loss))
        if grad is not None:
            args.append(self.nd(grad, grad.shape))
        fn = self.function(params, body, par, intrinsics=("exp32",) if exp == "exp32" else ())
        return fn, args, " ".join(self._site(n) for n in k.nodes), par

    # ---- take / scatter-add (ops/indexing.py): operands are row-major arrays ------------------------
    def _dense_arg(self, k: Kernel, x: Node, shape: tuple):
        """Operand ``x`` as an array of ``shape`` (a rank-0 feed, passed as a scalar, becomes a
        one-element array)."""
        b = self.buf(k.leaves[id(x)].base)
        if b.kind == "feed" and b.name in self._scalar_feeds:
            e = Full(f"f_{self._feed_index[b.name]}", np.dtype(x.dtype), (1,))
            return e if len(shape) == 1 else Full(e.expr, e.dtype, tuple(shape))
        e = self.flat_expr(k.leaves[id(x)].base)
        return e if len(shape) == 1 else Arr(e.ptr, e.dtype, tuple(shape))

    @staticmethod
    def _computed_index_check(op: str) -> tuple[list[str], tuple]:
        """Fed and constant indices were checked before the step; one computed in the step
        makes the entry return -1 here, before this kernel writes anything (outside any prange
        loop, which must have a single exit), and the driver raise the message (a native
        entry cannot raise). Returns (lines, the messages for ``function``'s ``raises``)."""
        return (["    for i in range(m):",
                 "        if y[i] < 0 or y[i] >= n:",
                 "            return -1"], (f"{op}: an index computed in the step is out of range",))

    def take_kernel(self, k: Kernel):
        """take: ``o[a, i] = p[a, y[i]]`` with params as (A, n, D) around the axis, the indices
        flat (m,) and the result (A, m, D); rows in parallel (prange) when large."""
        (t,) = k.nodes
        p, y = t.inputs
        A, n, D = around(p.shape, t.attrs["axis"])
        m = int(np.prod(y.shape, dtype=np.int64))
        par = A * m > 1 and self.pays(k)
        check, raises = self._computed_index_check("take")
        body = ["    A, n, D = p.shape",
                "    m = y.shape[0]"] + check + [
                f"    for q in {'prange' if par else 'range'}(A * m):",
                "        a = q // m",
                "        i = q - a * m",
                "        j = y[i]",
                "        for c in range(D):",
                "            o[a, i, c] = p[a, j, c]  # take"]
        args = [self._dense_arg(k, p, (A, n, D)), self._dense_arg(k, y, (m,)), self.nd(t, (A, m, D))]
        return self.function(["p", "y", "o"], body, par, raises=raises), args, self._site(t), par

    def scatter_add_kernel(self, k: Kernel):
        """take_grad: zero-fill, then ``o[a, y[i]] += g[a, i]`` in index order (duplicates
        accumulate; deterministic). Parallel only across the leading dims (A > 1)."""
        (t,) = k.nodes
        g, y = t.inputs
        A, n, D = around(t.shape, t.attrs["axis"])
        m = int(np.prod(y.shape, dtype=np.int64))
        par = A > 1 and self.pays(k)
        check, raises = self._computed_index_check("take_grad")
        body = ["    A, n, D = o.shape",
                "    m = y.shape[0]"] + check + [
                f"    for a in {'prange' if par else 'range'}(A):",
                "        for j in range(n):",
                "            for c in range(D):",
                f"                o[a, j, c] = {literal(0, t.dtype)}",
                "        for i in range(m):",
                "            j = y[i]",
                "            for c in range(D):",
                "                o[a, j, c] += g[a, i, c]  # take_grad: scatter-add in index order"]
        args = [self._dense_arg(k, g, (A, m, D)), self._dense_arg(k, y, (m,)), self.nd(t, (A, n, D))]
        return self.function(["g", "y", "o"], body, par, raises=raises), args, self._site(t), par

    # ---- slice / pad / concatenate (ops/slicing.py): one pass, operands read through views ---------
    def _view_operand(self, v: View):
        """Operand read through view ``v``: an array of the view's shape (size 1 along broadcast
        dims; a rank-0 feed, passed to the driver as a scalar, becomes such an array)."""
        b = self.buf(v.base)
        if b.kind == "feed" and not v.base.shape:
            return Full(f"f_{self._feed_index[b.name]}", np.dtype(v.base.dtype), tuple(v.view_shape))
        return self.view_arg(v)

    def pays(self, k: Kernel) -> bool:
        """Target "parallel" and kernel ``k`` worth a prange (parfor_pays, from its cost)."""
        blas = gemm_flops(k)
        return self.parallel and parfor_pays(kernel_bytes(k, self.plan), kernel_flops(k) - blas, gemm=blas > 0)

    def _par_dim(self, shape: tuple, k: Kernel) -> int | None:
        """The loop dim a structured kernel runs in parallel (prange): the first one longer
        than 1, when the parallel target is on and the kernel is large enough to pay."""
        if not self.pays(k):
            return None
        return next((d for d, e in enumerate(shape) if e > 1), None)

    def _dense_operand(self, k: Kernel, x: Node) -> bool:
        """Operand ``x`` of a structured kernel read as a C-ordered array of its own shape (no
        transpose, broadcast or scalar feed), so its rows can be moved by runs (copy_run)."""
        v = k.leaves[id(x)]
        b = self.buf(v.base)
        return (v.perm is None and tuple(v.view_shape) == tuple(x.shape) and b.kind != "literal"
                and not (b.kind == "feed" and not v.base.shape))

    def slice_kernel(self, k: Kernel):
        """slice: ``o[i] = a[start + i * step]`` per axis, a loop nest over the output (start
        and step are arguments, so every slice of one rank shares one compiled kernel)."""
        (n,) = k.nodes
        x = n.inputs[0]
        v = k.leaves[id(x)]
        r = n.ndim
        pd = self._par_dim(n.shape, k)
        starts, steps = [], []
        for e, d, vd in zip(n.attrs["slices"], x.shape, v.view_shape):
            s, t = (0, 1) if e is None else (e[0], e[2])
            starts.append(0 if vd == 1 else s)  # a broadcast (size-1) axis always reads index 0
            steps.append(0 if vd == 1 else t)
        body = [f"    {', '.join(f'd{d}' for d in range(r))}{',' if r == 1 else ''} = o.shape"]
        # unit steps along the last axis of a dense operand: each output row is one run
        runs = steps[-1] == 1 and self._dense_operand(k, x)
        if runs:
            pd = pd if pd is not None and pd < r - 1 else None
            body += ["    of = o.reshape((o.size,))", "    af = a.reshape((a.size,))"]
            body += [f"    m{d} = {' * '.join(f'a.shape[{e}]' for e in range(d + 1, r))}" for d in range(r - 1)]
        ind = "    "
        for d in range(r - 1 if runs else r):
            body.append(f"{ind}for i{d} in {'prange' if d == pd else 'range'}(d{d}):")
            ind += "    "
        if runs:
            ro = " + ".join(f"i{d}" if d == r - 2 else f"i{d} * {' * '.join(f'd{e}' for e in range(d + 1, r - 1))}"
                            for d in range(r - 1))
            ro = f"({ro}) * d{r - 1}" if r > 1 else "0"
            ra = " + ".join([f"(s{d} + i{d} * t{d}) * m{d}" for d in range(r - 1)] + [f"s{r - 1}"])
            body.append(f"{ind}copy_run(of, {ro}, af, {ra}, d{r - 1})  # slice")
        else:
            src = ", ".join(f"s{d} + i{d} * t{d}" for d in range(r))
            body.append(f"{ind}o[{', '.join(f'i{d}' for d in range(r))}] = a[{src}]  # slice")
        par = pd is not None
        params = ["a", "o"] + [f"{c}{d}" for d in range(r) for c in "st"]
        args = [self._view_operand(v), self.nd(n, n.shape)] + [str(q) for d in range(r) for q in (starts[d], steps[d])]
        return self.function(params, body, par, intrinsics=("copy_run",) if runs else ()), args, self._site(n), par

    def pad_kernel(self, k: Kernel):
        """pad: a loop nest over the output's outer axes (whether row i lies inside the operand,
        q = (i - before) / (interior + 1), is worked out once per row); each innermost row is
        then a fill of the border and a copy of the operand's row (a stride of interior + 1 for
        an interior pad): no division or per-element branch in the inner loop."""
        (n,) = k.nodes
        x = n.inputs[0]
        v = k.leaves[id(x)]
        r = n.ndim
        inter = n.attrs["interior"]
        pd = self._par_dim(n.shape, k)
        pd = pd if pd is not None and pd < r - 1 else None  # rows in parallel, never a row's parts
        par = pd is not None
        body = [f"    {', '.join(f'd{d}' for d in range(r))}{',' if r == 1 else ''} = o.shape"]
        ind = "    "
        for d in range(r - 1):
            body.append(f"{ind}for i{d} in {'prange' if d == pd else 'range'}(d{d}):")
            inside = f"k{d - 1} and " if d else ""
            if inter[d]:
                body += [f"{ind}    j{d} = i{d} - b{d}",
                         f"{ind}    q{d} = j{d} // s{d}",
                         f"{ind}    k{d} = {inside}j{d} >= 0 and q{d} * s{d} == j{d} and q{d} < n{d}"]
            else:
                body += [f"{ind}    q{d} = i{d} - b{d}",
                         f"{ind}    k{d} = {inside}q{d} >= 0 and q{d} < n{d}"]
            ind += "    "
        z = r - 1
        outer = [f"i{d}" for d in range(z)]
        src = ", ".join("0" if vd == 1 else f"q{d}" for d, vd in enumerate(v.view_shape))
        at = lambda i: f"o[{', '.join(outer + [i])}]"  # noqa: E731
        # the output is dense: its rows' border is filled by runs (flat offset ro); a dense
        # operand (no transpose or broadcast) is copied by a run as well (flat offset ra)
        dense = self._dense_operand(k, x)
        ro = " + ".join(f"i{d} * m{d}" for d in range(z)) or "0"
        ra = " + ".join(f"q{d} * p{d}" for d in range(z)) or "0"
        body[1:1] = ["    of = o.reshape((o.size,))"] + [f"    m{d} = {' * '.join(f'd{e}' for e in range(d + 1, r))}"
                                                         for d in range(z)]
        if dense:
            body[2:2] = ["    af = a.reshape((a.size,))"] + [f"    p{d} = {' * '.join(f'n{e}' for e in range(d + 1, r))}"
                                                             for d in range(z)]
        fill_row = [f"{ind}fill_run(of, {ro}, d{z}, fill)  # pad: the constant"]
        if inter[z]:
            row = fill_row + [f"{ind}for q{z} in range(n{z}):",
                              f"{ind}    {at(f'b{z} + q{z} * s{z}')} = a[{src}]  # pad: the operand"]
        else:
            copy = ([f"{ind}copy_run(of, {ro} + b{z}, af, {ra}, n{z})  # pad: the operand"] if dense else
                    [f"{ind}for q{z} in range(n{z}):", f"{ind}    {at(f'b{z} + q{z}')} = a[{src}]  # pad: the operand"])
            row = ([f"{ind}fill_run(of, {ro}, b{z}, fill)  # pad: the constant before"] + copy
                   + [f"{ind}fill_run(of, {ro} + b{z} + n{z}, d{z} - b{z} - n{z}, fill)  # pad: the constant after"])
        if z:
            body += [f"{ind}if k{z - 1}:"] + ["    " + ln for ln in row] + [f"{ind}else:"] + ["    " + ln for ln in fill_row]
        else:
            body += row
        params = ["a", "o", "fill"] + [f"{c}{d}" for d in range(r) for c in "bsn"]
        args = [self._view_operand(v), self.nd(n, n.shape), literal(n.attrs["value"], n.dtype)]
        for (b, _), i, d in zip(n.attrs["pad_width"], n.attrs["interior"], x.shape):
            args += [str(b), str(i + 1), str(d)]
        return self.function(params, body, par, intrinsics=("copy_run", "fill_run")), args, self._site(n), par

    def concat_kernel(self, k: Kernel):
        """concatenate: one loop nest over the output's axes before ``axis``; under each outer
        index a dense operand's block is one contiguous run of (c[j+1] - c[j]) * w values in
        both arrays (copy_run), any other operand is read by a loop nest through its view
        (each output element written once, each operand read once)."""
        (n,) = k.nodes
        ax, r, xs = n.attrs["axis"], n.ndim, n.inputs
        pd = self._par_dim(n.shape[:ax], k)  # a shared outer loop, else one per operand
        par = pd is not None
        dense = [self._dense_operand(k, x) for x in xs]
        body = [f"    {', '.join(f'd{d}' for d in range(r))}{',' if r == 1 else ''} = o.shape"]
        t = "0"  # the flat index over the outer axes
        for d in range(ax):
            t = "i0" if d == 0 else f"({t}) * d{d} + i{d}"
        if any(dense):
            body += ["    of = o.reshape((o.size,))", f"    w = {' * '.join(f'd{e}' for e in range(ax + 1, r)) or '1'}"]
            body += [f"    a{j}f = a{j}.reshape((a{j}.size,))" for j in range(len(xs)) if dense[j]]
        ind = "    "
        for d in range(ax):
            body.append(f"{ind}for i{d} in {'prange' if d == pd else 'range'}(d{d}):")
            ind += "    "
        for j, x in enumerate(xs):
            if dense[j]:
                body.append(f"{ind}copy_run(of, (({t}) * d{ax} + c{j}) * w, a{j}f, ({t}) * (c{j + 1} - c{j}) * w, "
                            f"(c{j + 1} - c{j}) * w)  # concatenate: operand {j}")
                continue
            vs = k.leaves[id(x)].view_shape
            pj = None if pd is not None else self._par_dim(x.shape[ax:], k)
            par = par or pj is not None
            inner = ind
            body.append(f"{inner}for i{ax} in {'prange' if pj == 0 else 'range'}(c{j}, c{j + 1}):")
            inner += "    "
            for d in range(ax + 1, r):
                body.append(f"{inner}for i{d} in {'prange' if pj == d - ax else 'range'}(d{d}):")
                inner += "    "
            src = ", ".join("0" if vs[d] == 1 else (f"i{d} - c{j}" if d == ax else f"i{d}") for d in range(r))
            body.append(f"{inner}o[{', '.join(f'i{d}' for d in range(r))}] = a{j}[{src}]  # concatenate: operand {j}")
        params = ["o"] + [f"a{j}" for j in range(len(xs))] + [f"c{j}" for j in range(len(xs) + 1)]
        bounds = np.cumsum([0] + [x.shape[ax] for x in xs]).tolist()
        args = ([self.nd(n, n.shape)] + [self._view_operand(k.leaves[id(x)]) for x in xs]
                + [str(c) for c in bounds])
        return self.function(params, body, par, intrinsics=("copy_run",) if any(dense) else ()), args, self._site(n), par

    # ---- batched GEMM, im2col / col2im, pooling (ops/linalg.py, ops/conv.py) ------------------------
    def bmm_kernel(self, k: Kernel):
        """batch_matmul: one BLAS GEMM per leading index, transposed operands read in place."""
        (n,) = k.nodes
        a, b = n.inputs
        ta, tb = (".T" if n.attrs[t] else "" for t in ("ta", "tb"))
        body = ["    for i in range(o.shape[0]):",
                f"        gemm(a[i]{ta}, b[i]{tb}, o[i])  # batch_matmul (BLAS)"]
        args = [self._dense_arg(k, a, a.shape), self._dense_arg(k, b, b.shape), self.nd(n, n.shape)]
        return self.function(["a", "b", "o"], body, False, intrinsics=("gemm",)), args, self._site(n), False

    def _window_loops(self, k: Kernel, what: str) -> tuple[list[str], bool]:
        """The loop nest shared by the window kernels: images in parallel (prange) where that
        pays (``pays``), then output rows, columns and the window's rows and columns."""
        n = k.nodes[0]
        par = n.shape[0] > 1 and self.pays(k)
        body = [f"    N, H, W, C = {what}.shape",
                "    OH, OW = o.shape[1], o.shape[2]" if what != "o" else "    OH, OW = g.shape[1], g.shape[2]",
                f"    for b in {'prange' if par else 'range'}(N):"]
        return body, par

    @staticmethod
    def _geometry_args(n: Node) -> list[str]:
        from ...ops.conv import geometry
        kh, kw, sh, sw, dh, dw, pt, _, pl, _ = geometry(n.attrs)
        return [str(v) for v in (kh, kw, sh, sw, dh, dw, pt, pl)]

    GEOMETRY = ["kh", "kw", "sh", "sw", "dh", "dw", "pt", "pl"]

    # im2col/col2im work on flat views, one window row (u) at a time: with dilation 1 its
    # columns inside the image, v0 <= v < v1, are ONE contiguous run of (v1 - v0) * C values in
    # both arrays and the padding columns either side are runs too, each moved by a run
    # intrinsic (views.py: unit-stride vector loops, no per-item index arithmetic or bounds
    # test); dilated windows move one pixel's C channels per run
    _WINDOW_ROWS = ["        for i in range(OH):",
                    "            for j in range(OW):",
                    "                ob = ((b * OH + i) * OW + j) * K",
                    "                zs = j * sw - pl",
                    "                v0 = 0",
                    "                v1 = kw",
                    "                if dw == 1:",
                    "                    v0 = min(max(-zs, 0), kw)",
                    "                    v1 = max(min(W - zs, kw), v0)",
                    "                for u in range(kh):",
                    "                    y = i * sh - pt + u * dh",
                    "                    q = ob + u * kwc"]

    def im2col_kernel(self, k: Kernel):
        """im2col: row (b, i, j) of the output is the (kh, kw, C) patch under output pixel (i, j),
        zeros where the patch hangs over the padding."""
        (n,) = k.nodes
        x = n.inputs[0]
        body, par = self._window_loops(k, "x")
        zero = literal(0, n.dtype)
        body[1:1] = ["    K = o.shape[3]", "    kwc = kw * C", "    xf = x.reshape((x.size,))",
                     "    of = o.reshape((o.size,))"]
        body += self._WINDOW_ROWS + [
            "                    if y < 0 or y >= H:",
            f"                        fill_run(of, q, kwc, {zero})  # im2col: padding row",
            "                    elif dw == 1:",
            f"                        fill_run(of, q, v0 * C, {zero})  # im2col: left padding",
            "                        copy_run(of, q + v0 * C, xf, ((b * H + y) * W + zs + v0) * C, (v1 - v0) * C)  # im2col",
            f"                        fill_run(of, q + v1 * C, (kw - v1) * C, {zero})  # im2col: right padding",
            "                    else:",
            "                        for v in range(kw):",
            "                            z = zs + v * dw",
            "                            if z >= 0 and z < W:",
            "                                copy_run(of, q + v * C, xf, ((b * H + y) * W + z) * C, C)  # im2col",
            "                            else:",
            f"                                fill_run(of, q + v * C, C, {zero})  # im2col: padding"]
        args = [self._dense_arg(k, x, x.shape), self.nd(n, n.shape)] + self._geometry_args(n)
        return (self.function(["x", "o"] + self.GEOMETRY, body, par, intrinsics=("copy_run", "fill_run")),
                args, self._site(n), par)

    def col2im_kernel(self, k: Kernel):
        """col2im: zero each image, then add every patch value back at its pixel, patches in
        order (deterministic; images in parallel)."""
        (n,) = k.nodes
        g = n.inputs[0]
        body, par = self._window_loops(k, "o")
        body[1:1] = ["    K = g.shape[3]", "    kwc = kw * C", "    gf = g.reshape((g.size,))",
                     "    xf = o.reshape((o.size,))"]
        body += [f"        fill_run(xf, b * H * W * C, H * W * C, {literal(0, n.dtype)})"]
        body += self._WINDOW_ROWS + [
            "                    if y < 0 or y >= H:",
            "                        continue",
            "                    if dw == 1:",
            "                        add_run(xf, ((b * H + y) * W + zs + v0) * C, gf, q + v0 * C, (v1 - v0) * C)  # col2im",
            "                    else:",
            "                        for v in range(kw):",
            "                            z = zs + v * dw",
            "                            if z >= 0 and z < W:",
            "                                add_run(xf, ((b * H + y) * W + z) * C, gf, q + v * C, C)  # col2im"]
        args = [self._dense_arg(k, g, g.shape), self.nd(n, n.shape)] + self._geometry_args(n)
        return (self.function(["g", "o"] + self.GEOMETRY, body, par, intrinsics=("add_run", "fill_run")),
                args, self._site(n), par)

    def pool2d_kernel(self, k: Kernel):
        """pool2d: the max (padding never wins) or the mean over the window's pixels inside the image."""
        (n,) = k.nodes
        x = n.inputs[0]
        mx = n.attrs["mode"] == "max"
        body, par = self._window_loops(k, "x")
        init = "-np.inf" if mx else literal(0, n.dtype)
        body += ["        for i in range(OH):",
                 "            for j in range(OW):",
                 "                for c in range(C):",
                 f"                    o[b, i, j, c] = {init}",
                 "                cnt = 0",
                 "                for u in range(kh):",
                 "                    y = i * sh - pt + u * dh",
                 "                    for v in range(kw):",
                 "                        z = j * sw - pl + v * dw",
                 "                        if y >= 0 and y < H and z >= 0 and z < W:",
                 "                            cnt += 1",
                 "                            for c in range(C):"]
        if mx:
            body += ["                                e = x[b, y, z, c]",
                     "                                if e > o[b, i, j, c] or e != e:  # max_pool2d (NaN wins)",
                     "                                    o[b, i, j, c] = e"]
        else:
            body += ["                                o[b, i, j, c] += x[b, y, z, c]  # avg_pool2d",
                     f"                inv = {literal(1, n.dtype)} / cnt",
                     "                for c in range(C):",
                     "                    o[b, i, j, c] *= inv"]
        args = [self._dense_arg(k, x, x.shape), self.nd(n, n.shape)] + self._geometry_args(n)
        return self.function(["x", "o"] + self.GEOMETRY, body, par), args, self._site(n), par

    def pool2d_grad_kernel(self, k: Kernel):
        """pool2d_grad: zero each image; each output's gradient goes to its window's first
        maximum (max) or is spread over the window's pixels inside the image (avg). Max pooling
        whose windows tile the image takes _tiled_max_pool_grad's branch-free kernel."""
        (n,) = k.nodes
        x, g = n.inputs
        mx = n.attrs["mode"] == "max"
        body, par = self._window_loops(k, "o")
        zero = literal(0, n.dtype)
        fill = ["        for y in range(y0, H):",
                "            for z in range(W):",
                "                for c in range(C):",
                f"                    o[b, y, z, c] = {zero}",
                "        for y in range(y0):",
                "            for z in range(z0, W):",
                "                for c in range(C):",
                f"                    o[b, y, z, c] = {zero}",
                "        for i in range(OH):",
                "            for j in range(OW):"]
        from ...ops.conv import geometry
        kh, kw, sh, sw, dh, dw, pt, _, pl, _ = geometry(n.attrs)
        if mx and (sh, sw, dh, dw, pt, pl) == (kh, kw, 1, 1, 0, 0):
            body[2:2] = ["    y0 = OH * kh  # only the rows and columns no window covers are zeroed first",
                         "    z0 = OW * kw"]
            body += self._tiled_max_pool_grad(n, fill)
        elif mx:  # channels innermost: the window is scanned once for all channels, contiguously
            body[2:2] = ["    y0 = 0", "    z0 = 0"]
            body += [f"        best = np.empty(C, dtype=np.{n.dtype.name})",
                     "        by = np.empty(C, dtype=np.int64)",
                     "        bz = np.empty(C, dtype=np.int64)"] + fill + [
                     "                for c in range(C):",
                     "                    best[c] = -np.inf",
                     "                    by[c] = -1",
                     "                for u in range(kh):",
                     "                    y = i * sh - pt + u * dh",
                     "                    if y < 0 or y >= H:",
                     "                        continue",
                     "                    for v in range(kw):",
                     "                        z = j * sw - pl + v * dw",
                     "                        if z < 0 or z >= W:",
                     "                            continue",
                     "                        for c in range(C):",
                     "                            e = x[b, y, z, c]",
                     "                            if by[c] < 0 or e > best[c] or (e != e and best[c] == best[c]):",
                     "                                best[c] = e",
                     "                                by[c] = y",
                     "                                bz[c] = z",
                     "                for c in range(C):",
                     "                    if by[c] >= 0:",
                     "                        o[b, by[c], bz[c], c] += g[b, i, j, c]  # max_pool2d grad: the first maximum"]
        else:
            body += ["        for y in range(H):",
                     "            for z in range(W):",
                     "                for c in range(C):",
                     f"                    o[b, y, z, c] = {zero}",
                     "        for i in range(OH):",
                     "            for j in range(OW):"]
            body += ["                cnt = 0",
                     "                for u in range(kh):",
                     "                    y = i * sh - pt + u * dh",
                     "                    for v in range(kw):",
                     "                        z = j * sw - pl + v * dw",
                     "                        if y >= 0 and y < H and z >= 0 and z < W:",
                     "                            cnt += 1",
                     f"                inv = {literal(1, n.dtype)} / cnt",
                     "                for u in range(kh):",
                     "                    y = i * sh - pt + u * dh",
                     "                    for v in range(kw):",
                     "                        z = j * sw - pl + v * dw",
                     "                        if y >= 0 and y < H and z >= 0 and z < W:",
                     "                            for c in range(C):",
                     "                                o[b, y, z, c] += g[b, i, j, c] * inv  # avg_pool2d grad"]
        args = [self._dense_arg(k, x, x.shape), self._dense_arg(k, g, g.shape), self.nd(n, n.shape)]
        args += self._geometry_args(n)
        return self.function(["x", "g", "o"] + self.GEOMETRY, body, par), args, self._site(n), par

    @staticmethod
    def _tiled_max_pool_grad(n: Node, fill: list[str]) -> list[str]:
        """Windows that tile the image (stride = pool size, no padding: every max_pool2d(x, 2)):
        each covered pixel is written once, its gradient or zero, and the rows and columns no
        window covers are zeroed. The channel loops are selects over contiguous runs (the
        window's first maximum; a NaN wins over a number, the first NaN over later ones, as the
        interpreter), no branch or scattered store, so LLVM vectorizes them."""
        zero = literal(0, n.dtype)
        return [f"        best = np.empty(C, dtype=np.{n.dtype.name})",
                "        bk = np.empty(C, dtype=np.int64)"] + fill + [
                "                y = i * kh",
                "                z = j * kw",
                "                for c in range(C):",
                "                    best[c] = x[b, y, z, c]",
                "                    bk[c] = 0",
                "                for q in range(1, kh * kw):",
                "                    u = q // kw",
                "                    v = q - u * kw",
                "                    for c in range(C):",
                "                        e = x[b, y + u, z + v, c]",
                "                        m = best[c]",
                "                        t = (e > m) | ((e != e) & (m == m))",
                "                        best[c] = e if t else m",
                "                        bk[c] = q if t else bk[c]",
                "                for q in range(kh * kw):",
                "                    u = q // kw",
                "                    v = q - u * kw",
                "                    for c in range(C):",
                f"                        o[b, y + u, z + v, c] = g[b, i, j, c] if bk[c] == q else {zero}  # max_pool2d grad: the first maximum"]

    def rng_kernel(self, k: Kernel):
        """random_uniform (ops/random.py): element i is SplitMix64's finalizer of the stream
        constant plus i times the golden ratio, its top bits scaled to [0, 1)."""
        from ...ops.random import kernel_lines
        (n,) = k.nodes
        par = self.pays(k)
        body = kernel_lines("key[0]", "seed", "i", "o[i] = {}", f"for i in {'prange' if par else 'range'}(o.shape[0]):",
                            n.dtype)
        args = [self._dense_arg(k, n.inputs[0], (1,)), self.flat_expr(n), str(n.attrs["seed"])]
        return self.function(["key", "o", "seed"], body, par), args, self._site(n), par

    def copy_kernel(self, k: Kernel):
        (n,) = k.nodes
        (v,) = k.leaves.values()
        shape = tuple(k.shape)
        r = len(shape)
        idx = [f"i{d}" for d in range(r)]
        body = ["    t = 0"]
        ind = "    "
        for d in range(r):
            body.append(f"{ind}for {idx[d]} in range(d{d}):")
            ind += "    "
        src = "a" if v.size == 1 else "a" + leaf_index(v.view_shape, shape, idx)
        body += [f"{ind}o[t] = {src}  # {n.op} (copy)", f"{ind}t += 1"]
        params = [f"d{d}" for d in range(r)] + ["o", "a"]
        args = [str(d) for d in shape] + [self.flat_expr(n), self.view_arg(v, scalar=True)]
        return self.function(params, body, False), args, self._site(n), False

    # ---- driver checks: generic native functions (shared by every program, cached once) ---------
    _BITS = {4: (np.int32, "0x7F800000"), 8: (np.int64, "0x7FF0000000000000")}

    def _nonfinite_fn(self, ptr: str, dtype, size: int) -> tuple[str, list[str]]:
        """(function, driver args) of the check ``any value of the float buffer at ptr is NaN
        or infinite``: its bit patterns (an all-ones exponent) as integers, a max-reduction
        that LLVM vectorizes (a fraction of a nanosecond per value)."""
        bits, mask = self._BITS[np.dtype(dtype).itemsize]
        t = self.function(["u"], ["    top = 0",
                                  "    for j in range(u.shape[0]):",
                                  f"        e = u[j] & {mask}",
                                  "        top = e if e > top else top",
                                  f"    return 1 if top == {mask} else 0  # an all-ones exponent: NaN or infinity"],
                          False)
        return self.entry(t, [Arr(ptr, np.dtype(bits), (size,))], "check")

    def finite_checks(self, feeds: list[Node]) -> None:
        """Driver prologue: return 1000 + i if float feed i holds NaN or infinity."""
        for i, n in enumerate(feeds):
            if n.dtype.kind != "f":
                continue
            f = f"f_{self._feed_index[n.name]}"
            if n.shape == ():
                self.lines += [f"    if not math.isfinite({f}):  # {n.name!r} must be finite",
                               f"        return {1000 + i}"]
                continue
            fn, args = self._nonfinite_fn(f"p{f}", n.dtype, int(np.prod(n.shape)))
            self.lines += [f"    if {fn}({', '.join(args)}):  # {n.name!r} must be finite",
                           f"        return {1000 + i}"]

    def numerics_checks(self, checked: list[tuple[str, int]], counters: dict) -> list:
        """check_numerics, after the last kernel and before the updates are copied into the
        store: return NUMERICS_STATUS + i at the first kernel whose checked values are not all
        finite, in schedule order. Loop kernels counted their elementwise outputs as they
        computed them (``counters``: kernel name -> driver variable); other values (a loss
        from a reduction or the softmax-CE kernel, a GEMM result) get a bit-pattern pass."""
        from ...numerics import NUMERICS_STATUS
        producer = {}
        for pos, info in enumerate(self.infos):
            for o in info.outputs:
                producer[id(o)] = pos
        groups: dict[int, list] = {}
        for label, index in checked:
            node = self.graph.outputs[index]
            if id(node) in self._checked and id(node) in producer:
                groups.setdefault(producer[id(node)], []).append((label, index, node))
        out = []
        for pos in sorted(groups):
            info, entries = self.infos[pos], groups[pos]
            status = NUMERICS_STATUS + len(out)
            counted = [label for label, _, node in entries if id(node) in self._counted]
            if counted:
                self.lines += [f"    if {counters[info.name]}:  # check_numerics: {', '.join(counted)}",
                               f"        return {status}"]
            for label, _, node in entries:
                if id(node) in self._counted:
                    continue
                f = self.flat_expr(node)
                fn, args = self._nonfinite_fn(f.ptr, node.dtype, int(f.shape[0]))
                self.lines += [f"    if {fn}({', '.join(args)}):  # check_numerics: {label} ({self._site(node)})",
                               f"        return {status}"]
            kernel = f"kernel {info.name} ({info.kind} {fmt_shape(info.shape)} [{', '.join(info.ops)}], {info.function})"
            out.append((entries, kernel))
        return out

    # ---- the driver ----------------------------------------------------------------------------
    def kernel_call(self, k: Kernel, counters: dict) -> None:
        """The driver's call of kernel ``k`` (its native entry emitted), and its KernelInfo."""
        before = len(self._counted)
        lowering = KERNELS.get(k.kind)
        if lowering is None:
            raise CompileError(f"the cpu backend has no lowering for kernel kind {k.kind!r} "
                               f"({', '.join(site(n, self.local) for n in k.nodes)})")
        t, args, vmap, par = lowering(self, k)
        raises = sorted(set(t.raises))
        fn, call = self.entry(t, args)
        fused = [n.op for n in k.all_nodes]
        self.lines.append(f"    # {k.name}: {k.kind} {fmt_shape(tuple(k.shape))} [{', '.join(fused)}]"
                          f" -> {', '.join('%' + str(self.local[id(o)]) for o in k.outputs)}")
        if len(self._counted) > before or raises:
            # the kernel returns its count of non-finite values (check_numerics), or -1
            # where it would raise (a native entry cannot raise: the driver does)
            counters[k.name] = f"bad_{k.name}"
            self.lines.append(f"    bad_{k.name} = {fn}({', '.join(call)})  # {vmap}")
            for msg in raises:
                self.lines += [f"    if bad_{k.name} < 0:", f"        raise ValueError({msg!r})"]
        else:
            self.lines.append(f"    {fn}({', '.join(call)})  # {vmap}")
        self.infos.append(KernelInfo(k.name, fn, k.kind, tuple(k.shape), fused, k.all_nodes, k.outputs,
                                     out_bytes(k.outputs), par))

    def _copy_call(self, dst: "Arr", src) -> str:
        """The driver's call that copies ``src`` (an Arr of dst's size, or a literal: a fill)
        into ``dst``."""
        if isinstance(src, Arr):
            t = self.function(["o", "a"], ["    for i in range(o.shape[0]):", "        o[i] = a[i]"], False)
        else:
            t = self.function(["o", "v"], ["    for i in range(o.shape[0]):", "        o[i] = v"], False)
        fn, call = self.entry(t, [dst, src], "copy")
        return f"{fn}({', '.join(call)})"

    def _operand(self, n: Node, buf: Buffer):
        """Node n (of buffer ``buf``) as a copy's source: a literal's value or its flat array."""
        return literal(buf.value, buf.dtype) if buf.kind == "literal" else self.flat_expr(n)

    def scan_loop(self, k: Kernel) -> None:
        """A scan as one loop of the driver, ``for t in range(T):`` around its body's kernel
        calls (the body lowered on its own: compiler.lower_body, its memory placed by
        plan.place_loops): x_t read in place at slot t of each xs operand (reverse: T-1-t).
        Each carry leaf has two buffers, read and written in turn (step t reads half t & 1,
        writes the other); the carry entering step t is copied to slot t of the saved-carries
        result where that is live. A body result computed by a body kernel is written in
        place (the step's carry half, y_t's slot); others (a placeholder, a constant, a node
        that is two results) are copied there after the body."""
        scan = k.nodes[0]
        body, T, rev = scan.attrs["body"], scan.attrs["length"], scan.attrs["reverse"]
        nc, nx = body.n_carry, body.n_x
        bg, bkernels, bplan, args = k.body
        name = k.name
        outer = [k.leaves[id(x)].base for x in scan.inputs]
        results = {o.attrs["index"]: o for o in k.outputs}
        tv = f"t_{name}"
        sub = _Emitter(bplan, bg, self.parallel, self.layout)
        sub.functions, sub._exported, sub.entries = self.functions, self._exported, self.entries
        sub._feed_index, sub._scalar_feeds = self._feed_index, self._scalar_feeds
        sub.local = {id(n): f"{name}_{i}" for i, n in enumerate(bg.nodes)}
        head = [f"    # {name}: scan {fmt_shape((T,))} [the loop over its body's kernels {name}_k*]"
                f" -> {', '.join('%' + str(self.local[id(o)]) for o in k.outputs)}"]  # driver lines before the loop
        self.lines, outer_lines = head, self.lines
        carries, halves = [], []  # per leaf: its first half (an Arr), the half's bytes
        for j in range(nc):
            c = self.plan.carries[(name, j)]
            dt = np.dtype(c.dtype)
            size = c.size // 2
            f = Arr(f"c{j}_{name}", dt, (size,))
            head.append(f"    {f.ptr} = pT_{_dtname(dt)} + {c.offset * dt.itemsize}  # {name}: carry {j} "
                        f"{fmt_shape(c.shape)} {dt}, two halves")
            carries.append(f)
            halves.append(size * dt.itemsize)
            src = outer[j]
            head.append(f"    {self._copy_call(f, self._operand(src, self.buf(src)))}  # {name}: carry {j} <- init")
        for i, a in enumerate(args):
            if a is not None and i >= nc + nx:  # a captured tensor: its outer storage
                x = outer[i]
                bplan.buffers[id(a)] = self.buf(x)
                if self.buf(x).kind not in ("literal",) and not (self.buf(x).kind == "feed" and not x.shape):
                    f = self.flat_expr(x)
                    sub.flat[id(a)] = (f.ptr, f.dtype, f.shape[0])
        for i in range(nc, nc + nx):
            self.flat_expr(outer[i])
        for o in k.outputs:  # outer addresses bound before the loop (read after it too)
            self.flat_expr(o)
        self.lines = outer_lines
        self.lines += head
        self.lines.append(f"    for {tv} in range({T}):  # {name}: scan over {T} steps{' (reverse)' if rev else ''}")
        inner: list[str] = []
        step = f"({T - 1} - {tv})" if rev else tv
        self.lines, outer_lines = inner, self.lines
        cur, nxt = [], []
        for j in range(nc):
            c = carries[j]
            cur.append(Arr(f"cur{j}_{name}", c.dtype, c.shape))
            nxt.append(Arr(f"nxt{j}_{name}", c.dtype, c.shape))
            inner += [f"    {cur[j].ptr} = {c.ptr} + ({tv} & 1) * {halves[j]}  # {name}: carry {j} in",
                      f"    {nxt[j].ptr} = {c.ptr} + {halves[j]} - ({tv} & 1) * {halves[j]}  # {name}: carry {j} out"]
            if args[j] is not None:
                sub.flat[id(args[j])] = (cur[j].ptr, cur[j].dtype, cur[j].shape[0])
        for i in range(nc, nc + nx):
            a = args[i]
            if a is None:
                continue
            f = self.flat_expr(outer[i])
            size = int(np.prod(a.shape)) if a.shape else 1
            xp = f"x{i - nc}_{name}"
            inner.append(f"    {xp} = {f.ptr} + {step} * {size * np.dtype(a.dtype).itemsize}  # {name}: x{i - nc}[t]")
            sub.flat[id(a)] = (xp, np.dtype(a.dtype), size)
        for j in range(nc):  # the carry entering step t, where the adjoint reads it
            o = results.get(nc + body.n_y + j)
            if o is not None:
                f = self.flat_expr(o)
                dst = Arr(f"{f.ptr} + {step} * {halves[j]}", f.dtype, cur[j].shape)
                inner.append(f"    {self._copy_call(dst, cur[j])}  # {name}: saved carry {j}[t]")
        outs = list(bg.outputs)
        # where each body result goes: the step's carry half, y_t's slot
        dests: list[tuple[int, Node, Arr, str]] = [(j, outs[j], nxt[j], f"carry {j} <- step") for j in range(nc)]
        for j in range(body.n_y):
            o = results.get(nc + j)
            if o is None:
                continue
            y = outs[nc + j]
            f = self.flat_expr(o)
            size = int(np.prod(y.shape)) if y.shape else 1
            yp = f"y{j}_{name}"
            inner.append(f"    {yp} = {f.ptr} + {step} * {size * f.dtype.itemsize}  # {name}: y{j}[t]")
            dests.append((nc + j, y, Arr(yp, f.dtype, (size,)), f"y{j}[t]"))
        in_place: set[int] = set()
        copies = []
        for _, y, dst, what in dests:
            b = bplan.buffers.get(id(y))
            if b is not None and b.kind == "scratch" and id(y) not in in_place:
                in_place.add(id(y))  # its kernel writes it there (it is read after the body only)
                bplan.buffers[id(y)] = Buffer("arg", b.dtype, b.shape)
                sub.flat[id(y)] = (dst.ptr, dst.dtype, dst.shape[0])
            else:
                copies.append((y, dst, what))
        sub.lines = inner
        counters: dict = {}
        for bk in bplan.kernels:
            bk.name = f"{name}_{bk.name}"
            sub.kernel_call(bk, counters)
        for y, dst, what in copies:
            inner.append(f"    {sub._copy_call(dst, sub._operand(y, sub.buf(y)))}  # {name}: {what}")
        self.lines = outer_lines
        self.lines += ["    " + line for line in inner]
        for j in range(nc):
            o = results.get(j)
            if o is not None:  # the carry out of the last step: the half step T reads
                last = Arr(f"{carries[j].ptr} + {(T & 1) * halves[j]}", carries[j].dtype, carries[j].shape)
                self.lines.append(f"    {self._copy_call(self.flat_expr(o), last)}  # {name}: final carry {j}")
        self.lines.append(f"    # {name}: end of loop x{T}")
        self.infos.append(KernelInfo(name, f"loop x{T}", "scan", (T,), ["scan"], [scan], k.outputs,
                                     out_bytes(k.outputs), False))
        self.infos += sub.infos

    def emit(self, feeds: list[Node], store_dtypes: list, copies, check_finite: bool = True,
             numerics: list | None = None) -> Module:
        self._feed_index = {n.name: i for i, n in enumerate(feeds)}
        self._scalar_feeds = {n.name for n in feeds if n.shape == ()}
        for dt in store_dtypes:
            self.args.append(("store", np.dtype(dt)))
        for dt in sorted(self.plan.arena_sizes, key=lambda d: np.dtype(d).name):
            self.args.append(("scratch", np.dtype(dt)))
        for n in feeds:
            self.args.append(("scalar" if n.shape == () else "feed", n.name))
        params = []
        for kind, key in self.args:
            if kind == "store":
                params.append(f"S_{_dtname(key)}")
            elif kind == "scratch":
                params.append(f"T_{_dtname(key)}")
            else:
                params.append(f"f_{self._feed_index[key]}")
        # kernels get addresses: each arena's and array feed's base, plus a byte offset
        for kind, p in zip((k for k, _ in self.args), params):
            if kind != "scalar":
                self.lines.append(f"    p{p} = np.int64({p}.ctypes.data)")
        # fed indices (class labels) are range-checked before any kernel runs (an index out of
        # range would read outside the logits); the driver returns 1 + the check's number
        for i, (name, classes, users) in enumerate(index_checks(self.graph)):
            f = f"f_{self._feed_index[name]}"
            if name in self._scalar_feeds:  # a rank-0 feed is passed as a scalar
                self.lines += [f"    if {f} < 0 or {f} >= {classes}:  # {name!r} indexes {users}",
                               f"        return {i + 1}"]
                continue
            node = next(n for n in feeds if n.name == name)
            t = self.function(["u", "c"], ["    for i in range(u.shape[0]):",
                                           "        if u[i] < 0 or u[i] >= c:",
                                           "            return 1",
                                           "    return 0"], False)
            fn, args = self.entry(t, [Arr(f"p{f}", np.dtype(node.dtype), (int(np.prod(node.shape)),)), str(classes)],
                                  "check")
            self.lines += [f"    if {fn}({', '.join(args)}):  # {name!r} indexes {users}: must lie in [0, {classes})",
                           f"        return {i + 1}"]
        if check_finite:
            self.finite_checks(feeds)
        counters: dict[str, str] = {}
        for _, i in numerics or ():  # computed by this step (not a source, literal or feed)
            b = self.plan.buffers.get(id(self.graph.outputs[i]))
            if b is not None and b.kind == "scratch":
                self._checked.add(id(self.graph.outputs[i]))
        for k in self.plan.kernels:
            if k.kind == "scan":
                self.scan_loop(k)
            else:
                self.kernel_call(k, counters)
        checks = self.numerics_checks(numerics, counters) if numerics else []
        for node, slot in copies:
            dt, off, shape = self.layout[slot]
            size = int(np.prod(shape)) if shape else 1
            b = self.buf(node)
            dst = Arr(f"pS_{_dtname(dt)} + {off * np.dtype(dt).itemsize}" if off else f"pS_{_dtname(dt)}",
                      np.dtype(dt), (size,))
            if b.kind == "literal":
                t = self.function(["o", "v"], ["    for i in range(o.shape[0]):", "        o[i] = v"], False)
                fn, call = self.entry(t, [dst, literal(b.value, b.dtype)], "copy")
            else:
                t = self.function(["o", "a"], ["    for i in range(o.shape[0]):", "        o[i] = a[i]"], False)
                fn, call = self.entry(t, [dst, self.flat_expr(node)], "copy")
            self.lines.append(f"    {fn}({', '.join(call)})  # update {slot!r} (S_{_dtname(dt)}[{off}:{off + size}]) "
                              f"<- {self._site(node)}")
        from ... import __version__
        header = [
            "# Generated by graphc. Do not edit: the file name is a hash of this text.",
            f"# graphc {__version__}, numba {numba_version()}, target {'parallel' if self.parallel else 'cpu'}",
            "import math",
            "import numpy as np",
            "from numba import cfunc, njit, prange",
            "from graphc.backends.cpu.program import export",
            import_line(*HEADER_INTRINSICS).rstrip("\n"),
            "",
        ]
        # each kernel is a module of its own, named by the hash of its text: programs that
        # differ only in shapes (another batch size) or share a kernel (training step and
        # inference function) import the same file and reuse its Numba cache; importing it
        # binds the kernel's symbol, which the driver calls
        kernel_modules, owner = self.functions.modules("\n".join(header) + "\n")
        imports = [f"from {m} import {f}" for f, m in owner.items()]
        # subnormals flushed while the step runs, the caller's control word restored at every
        # exit (fpenv.py says why)
        body = ["    fpcsr = flush_subnormals()"]
        for line in self.lines + ["    return 0"]:
            stmt = line.lstrip()
            if stmt.startswith(("return ", "raise ")):
                body.append(line[:len(line) - len(stmt)] + "restore_fpenv(fpcsr)")
            body.append(line)
        driver = ["@njit(cache=True, nogil=True, error_model='numpy')", f"def step({', '.join(params)}):"] + body
        dheader = header[:4] + ["from numba import njit", import_line("flush_subnormals", "restore_fpenv").rstrip("\n"), ""]
        annotated = "\n".join(dheader + imports) + "\n\n\n" + "\n".join(driver) + "\n"
        # the user's file:line stays out of the written text: editing their script above the
        # model changes neither the driver's name nor its Numba cache entry
        functions = len({info.function for info in self.infos})
        entries = {owner[name]: desc for name, desc in self.entries.items()}
        return Module(without_provenance(annotated), self.args, self.infos, functions, kernel_modules, entries,
                      checks, with_provenance(annotated))


# The cpu lowering of each kernel kind: ``(emitter, kernel) -> (template, operands, value map
# comment, parallel)``: the template from ``emitter.function`` (parameters and body), one operand
# per parameter (``Arr``/``At``/``Full``/``Val`` from ``flat_expr``, ``nd``, ``view_arg``, or a
# literal's text), from which ``emitter.entry`` makes the native entry the driver calls. A
# structured op's rule (ops/base.py ``Structured``) names its kind.
KERNELS = {
    "loop": _Emitter.loop_kernel,
    "matmul": _Emitter.matmul_kernel,
    "copy": _Emitter.copy_kernel,
    "slice": _Emitter.slice_kernel,  # slice (ops/slicing.py)
    "pad": _Emitter.pad_kernel,  # pad
    "concat": _Emitter.concat_kernel,  # concatenate
    "sce": _Emitter.sce_kernel,  # softmax_cross_entropy / sce_grad
    "take": _Emitter.take_kernel,  # take (ops/indexing.py)
    "scatter_add": _Emitter.scatter_add_kernel,  # take_grad
    "bmm": _Emitter.bmm_kernel,  # batch_matmul (ops/linalg.py)
    "im2col": _Emitter.im2col_kernel,  # im2col (ops/conv.py): conv2d's patches
    "col2im": _Emitter.col2im_kernel,  # col2im: their adjoint
    "pool2d": _Emitter.pool2d_kernel,  # pool2d (max / avg)
    "pool2d_grad": _Emitter.pool2d_grad_kernel,  # pool2d_grad
    "rng": _Emitter.rng_kernel,  # random_uniform (ops/random.py)
    "allreduce": allreduce.lower,  # allreduce_sum (graphc/distributed.py): MPI, allreduce.py
}


def emit_module(plan: Plan, graph: Graph, parallel: bool, store_layout: dict, feeds: list[Node],
                store_dtypes: list, check_finite: bool = True, numerics: list | None = None) -> Module:
    """``numerics``: (label, output index) pairs to check before the store is written
    (check_numerics; the plan must have been built with ``in_place=False``)."""
    return _Emitter(plan, graph, parallel, store_layout).emit(feeds, store_dtypes, plan.copies, check_finite,
                                                             numerics)
