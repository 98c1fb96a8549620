"""The intrinsics of the cpu kernels' dialect, defined once: their names, the module the
generated text imports each from (the Numba path), and the C prototypes of the symbols they
call, with the IR both compilers emit for them.

Three compilers meet here: Numba compiles a kernel module's text (``views.py``, ``blas.py``
and ``fpenv.py`` hold the Numba implementations), graphc's kernel compiler translates the
same text (kernels.py) and graphc's driver translator the driver (driver.py). Each symbol
below is declared from its ``Proto`` (``declare``) and each shared sequence of instructions
is one function here, so the three cannot drift apart.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass

X86 = platform.machine().lower() in ("x86_64", "amd64")
FTZ_DAZ = 0x8040  # MXCSR bit 15 (flush to zero) | bit 6 (denormals are zero): see fpenv.py

# ---- C prototypes ---------------------------------------------------------------------------------

_IR = {"void": lambda ir: ir.VoidType(), "i1": lambda ir: ir.IntType(1), "i8": lambda ir: ir.IntType(8),
       "i32": lambda ir: ir.IntType(32), "i64": lambda ir: ir.IntType(64), "f32": lambda ir: ir.FloatType(),
       "f64": lambda ir: ir.DoubleType(), "i8*": lambda ir: ir.IntType(8).as_pointer()}


@dataclass(frozen=True)
class Proto:
    """The C prototype of a symbol generated code calls: LLVM type names (``i64``, ``i8*``...)."""
    symbol: str
    ret: str
    args: tuple

    def fnty(self):
        from llvmlite import ir
        return ir.FunctionType(_IR[self.ret](ir), [_IR[a](ir) for a in self.args])

    def declare(self, module):
        """The symbol's declaration in llvmlite ``module`` (added once)."""
        from llvmlite import ir
        g = module.globals.get(self.symbol)
        return g if g is not None else ir.Function(module, self.fnty(), self.symbol)

    def define(self, module, name: str):
        """A function ``name`` of this prototype in ``module``: an implementation that
        ``llvmlite.binding.add_symbol`` then binds to ``symbol``."""
        from llvmlite import ir
        return ir.Function(module, self.fnty(), name)


# ``numba_xxgemm(kind, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)``: Numba's
# BLAS GEMM wrapper (numba/_helpermod.c), column-major, ``kind`` one of 's' 'd' 'c' 'z';
# ``blas.gemm`` calls it through Numba's ``call_xxgemm``, kernels.py directly, and jit.py binds
# it to SciPy's OpenBLAS for a process that does not import Numba.
XXGEMM = Proto("numba_xxgemm", "i32", ("i8", "i8", "i8", "i64", "i64", "i64", "i8*", "i8*", "i64", "i8*", "i64",
                                       "i8*", "i8*", "i64"))
# ``graphc_mpi_allreduce(send address, receive address, count, 0 float32 | 1 float64)``: MPI's
# all-reduce (sum over every rank) with this process's MPI handles, bound at run time; returns
# MPI's status.
ALLREDUCE = Proto("graphc_mpi_allreduce", "i32", ("i64", "i64", "i64", "i32"))
# the x86 control/status register's store and load (its address as an i8*)
STMXCSR = Proto("llvm.x86.sse.stmxcsr", "void", ("i8*",))
LDMXCSR = Proto("llvm.x86.sse.ldmxcsr", "void", ("i8*",))


# ---- the dialect: what a kernel may call -------------------------------------------------------------

@dataclass(frozen=True)
class Intrinsic:
    name: str  # as the generated text calls it
    module: str  # where the text imports it from (its Numba implementation)
    calls: Proto | None = None  # the external symbol it calls, if any


DIALECT = {i.name: i for i in (
    Intrinsic("view", "graphc.backends.cpu.views"),  # view(address, dims, dtype): a C-ordered array
    Intrinsic("fill", "graphc.backends.cpu.views"),  # fill(array, value): every item
    Intrinsic("exp32", "graphc.backends.cpu.views"),  # exp of a float32, vectorizable (exp32_ir)
    Intrinsic("tanh32", "graphc.backends.cpu.views"),  # tanh of a float32, vectorizable (tanh32_ir)
    # contiguous runs (run_ir): the patch kernels' window rows, copied, added or filled as
    # unit-stride vector loops (an indexed loop wraps negative indices around: gathers)
    Intrinsic("copy_run", "graphc.backends.cpu.views"),  # copy_run(dst, d, src, s, n): dst.flat[d:d+n] = src.flat[s:s+n]
    Intrinsic("add_run", "graphc.backends.cpu.views"),  # add_run(dst, d, src, s, n): dst.flat[d:d+n] += src.flat[s:s+n]
    Intrinsic("fill_run", "graphc.backends.cpu.views"),  # fill_run(dst, d, n, v): dst.flat[d:d+n] = v
    Intrinsic("gemm", "graphc.backends.cpu.blas", XXGEMM),  # gemm(a, b, out): out = a @ b
    Intrinsic("mpi_allreduce_sum", "graphc.backends.cpu.allreduce", ALLREDUCE),  # mpi_allreduce_sum(a, out)
    Intrinsic("flush_subnormals", "graphc.backends.cpu.fpenv"),  # the driver's fp environment
    Intrinsic("restore_fpenv", "graphc.backends.cpu.fpenv"),
)}


def import_line(*names: str) -> str:
    """``from <module> import <names>`` for intrinsics of one module, as generated text imports them."""
    (module,) = {DIALECT[n].module for n in names}
    return f"from {module} import {', '.join(names)}\n"


# ---- IR shared by Numba's implementations and graphc's compilers ------------------------------------

def mxcsr_flush(b):
    """IR: set FTZ | DAZ in this thread's MXCSR; returns the i32 slot holding the previous
    word (for ``mxcsr_restore``). The native driver and fpenv.flush_subnormals emit it."""
    from llvmlite import ir
    i32 = ir.IntType(32)
    old, new = b.alloca(i32), b.alloca(i32)
    _mxcsr(b, STMXCSR, old)
    b.store(b.or_(b.load(old), ir.Constant(i32, FTZ_DAZ)), new)
    _mxcsr(b, LDMXCSR, new)
    return old


def mxcsr_restore(b, slot) -> None:
    """IR: load MXCSR from ``slot`` (an i32 slot, e.g. ``mxcsr_flush``'s)."""
    _mxcsr(b, LDMXCSR, slot)


def _mxcsr(b, proto: Proto, slot) -> None:
    from llvmlite import ir
    b.call(proto.declare(b.module), [b.bitcast(slot, ir.IntType(8).as_pointer())])


def exp32_ir(b, v):
    """Cephes' expf in arithmetic LLVM vectorizes (views.exp32 documents it): shared by the
    Numba intrinsic and graphc's kernel compiler, so that both compile the same instructions."""
    from llvmlite import ir
    f32, i32 = ir.FloatType(), ir.IntType(32)
    c = lambda a: ir.Constant(f32, a)  # noqa: E731
    hi, lo = 88.72283935546875, -103.97208404541016
    log2e, c1, c2 = 1.44269504088896341, 0.693359375, -2.12194440e-4
    poly = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
    xc = b.select(b.fcmp_ordered(">", v, c(hi)), c(hi), v)
    xc = b.select(b.fcmp_ordered("<", xc, c(lo)), c(lo), xc)
    mod = b.module
    floor = mod.globals.get("llvm.floor.f32") or ir.Function(mod, ir.FunctionType(f32, [f32]), "llvm.floor.f32")
    fx = b.call(floor, [b.fadd(b.fmul(xc, c(log2e)), c(0.5))])
    r = b.fsub(b.fsub(xc, b.fmul(fx, c(c1))), b.fmul(fx, c(c2)))
    p = c(poly[0])
    for coef in poly[1:]:
        p = b.fadd(b.fmul(p, r), c(coef))
    y = b.fadd(b.fadd(b.fmul(p, b.fmul(r, r)), r), c(1.0))
    n = b.fptosi(fx, i32)
    n1 = b.ashr(n, ir.Constant(i32, 1))
    n2 = b.sub(n, n1)

    def pow2(k):
        return b.bitcast(b.shl(b.add(k, ir.Constant(i32, 127)), ir.Constant(i32, 23)), f32)

    out = b.fmul(b.fmul(y, pow2(n1)), pow2(n2))
    out = b.select(b.fcmp_ordered(">", v, c(hi)), c(float("inf")), out)
    return b.select(b.fcmp_ordered("<", v, c(lo)), c(0.0), out)


# tanh(x) = x + x**3 P(x**2) for |x| < 0.75 (P fitted to tanh's relative error in float64, a
# weighted least-squares fit iterated towards minimax), 1 - 2 / (exp(2|x|) + 1) above, sign
# copied back
TANH32_SPLIT = 0.75
TANH32_P = (-0.3333306908607483, 0.13326525688171387, -0.05339055880904198, 0.019665606319904327,
            -0.004770039115101099)


def tanh32_ir(b, v):
    """tanh of a float32 in arithmetic LLVM vectorizes (libm's tanhf is a scalar call): within
    1 ulp of the correctly rounded tanh on every finite float32 (measured over all 2**31 - 2**23
    finite magnitudes, the sign being copied: 0.48% are 1 ulp off, none more; unflushed, a
    subnormal maps to itself; tests/test_fast_tanh.py checks a dense sample), tanh(+-0) = +-0,
    tanh(+-inf) = +-1, NaN stays NaN. Shared by the Numba intrinsic and graphc's kernel
    compiler, so that both compile the same instructions."""
    from llvmlite import ir
    f32, i32 = ir.FloatType(), ir.IntType(32)
    c = lambda a: ir.Constant(f32, a)  # noqa: E731
    sign = ir.Constant(i32, 0x80000000 - 2 ** 32)
    bits = b.bitcast(v, i32)
    a = b.bitcast(b.and_(bits, ir.Constant(i32, 0x7FFFFFFF)), f32)
    s = b.fmul(a, a)
    p = c(TANH32_P[-1])
    for coef in TANH32_P[-2::-1]:
        p = b.fadd(b.fmul(p, s), c(coef))
    small = b.fadd(a, b.fmul(b.fmul(a, s), p))
    e = exp32_ir(b, b.fadd(a, a))
    big = b.fsub(c(1.0), b.fdiv(c(2.0), b.fadd(e, c(1.0))))
    r = b.select(b.fcmp_ordered("<", a, c(TANH32_SPLIT)), small, big)
    return b.bitcast(b.or_(b.bitcast(r, i32), b.and_(bits, sign)), f32)


RUNS = ("copy_run", "add_run", "fill_run")


def run_ir(b, op: str, dst, src, n) -> None:
    """IR: ``for i in range(n)`` over element pointers ``dst`` and ``src`` (a value for
    ``fill_run``): ``dst[i] = src[i]`` (copy_run), ``dst[i] = dst[i] + src[i]`` (add_run, one
    rounding per item as ``a[i] += b[i]``) or ``dst[i] = src`` (fill_run). The offsets are the
    caller's (non-negative, in bounds: no wraparound). Written as 32-byte vector loads and
    stores, then a scalar tail: a run is often short (a 3x3 window row of 3 channels is 9
    floats), where LLVM's own vectorized loop (runtime alias checks, 64 items a trip on
    AVX-512) would run the scalar remainder only. Shared by the Numba intrinsics (views.py)
    and kernels.py."""
    from llvmlite import ir
    i64 = ir.IntType(64)
    ety = dst.type.pointee
    size = ety.width // 8 if isinstance(ety, ir.IntType) else 4 if isinstance(ety, ir.FloatType) else 8
    width = max(1, 32 // size)
    vty = ir.VectorType(ety, width)

    def step(i, ty, fill):
        """One item (ty = ety) or one vector of ``width`` items at i, item-aligned."""
        def at(base):
            p = b.gep(base, [i], inbounds=True)
            return p if ty is ety else b.bitcast(p, ty.as_pointer())
        d = at(dst)
        v = fill if op == "fill_run" else b.load(at(src), align=size)
        if op == "add_run":
            v = b.fadd(b.load(d, align=size), v)
        b.store(v, d, align=size)

    pre = b.block
    splat = None
    if op == "fill_run":
        splat = b.insert_element(ir.Constant(vty, ir.Undefined), src, ir.Constant(ir.IntType(32), 0))
        splat = b.shuffle_vector(splat, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), width), None))
    last = b.sub(n, ir.Constant(i64, width - 1))  # a vector trip while i < n - (width - 1)
    vhead, vbody, shead, sbody, done = (b.append_basic_block(f"{op}.{x}") for x in ("vhead", "vbody", "shead", "sbody", "done"))
    b.branch(vhead)
    b.position_at_end(vhead)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), pre)
    b.cbranch(b.icmp_signed("<", i, last), vbody, shead)
    b.position_at_end(vbody)
    step(i, vty, splat)
    i.add_incoming(b.add(i, ir.Constant(i64, width)), b.block)
    b.branch(vhead)
    b.position_at_end(shead)
    j = b.phi(i64)
    j.add_incoming(i, vhead)
    b.cbranch(b.icmp_signed("<", j, n), sbody, done)
    b.position_at_end(sbody)
    step(j, ety, src)
    j.add_incoming(b.add(j, ir.Constant(i64, 1)), b.block)
    b.branch(shead)
    b.position_at_end(done)
