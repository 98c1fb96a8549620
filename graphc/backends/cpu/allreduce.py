"""The cpu lowering of the ``allreduce`` kernel kind (the ``allreduce_sum`` op of data-parallel
training, graphc/distributed.py) and the MPI symbol it calls.

The kernel calls ``MPI_Allreduce`` through an external symbol, ``graphc_mpi_allreduce``
(intrinsics.ALLREDUCE): generated code stays cacheable (it holds no process-specific
address), and the symbol is bound per process to a few lines of LLVM IR that hold this
process's MPI handles (``bind``). Numba compiles the kernel text's ``mpi_allreduce_sum`` with
the intrinsic below, graphc's kernel compiler (kernels.py) translates the same call.
(numba-mpi's ``allreduce`` is not used: it bakes addresses into the code, so nothing calling
it could be cached, and it has no float32.)

The backend registry (graphc/backends/__init__.py) hands ``enable`` to graphc/distributed.py
as the cpu and parallel targets' all-reduce capability; mpi4py is imported only there.
"""
from __future__ import annotations

import ctypes
import threading

from ...errors import GraphcError


def _mpi():
    from mpi4py import MPI  # present: graphc/distributed.py checked before enabling
    return MPI


def _libmpi():
    """The MPI library mpi4py loaded (its ``MPI_Allreduce`` is what the symbol calls)."""
    import ctypes.util
    _mpi()
    try:
        with open("/proc/self/maps") as f:
            paths = [line.split()[-1] for line in f if ".so" in line]
    except OSError:  # not Linux
        paths = []
    for p in paths:
        base = p.rsplit("/", 1)[-1]
        if base.startswith(("libmpi.", "libmpich.", "libmpi_")) and ".so" in base:
            return ctypes.CDLL(p)
    for name in ("mpi", "mpich"):
        found = ctypes.util.find_library(name)
        if found:
            return ctypes.CDLL(found)
    raise GraphcError("data_parallel=True: cannot find the MPI library mpi4py uses (libmpi / libmpich)")


_lock = threading.Lock()
_bound = None


def bind() -> None:
    """Bind the symbol ``graphc_mpi_allreduce`` (called by generated kernels) to a few lines
    of LLVM IR holding this process's MPI handles, compiled in graphc's JIT (not cached: the
    handles are addresses; no Numba either); must run before a kernel calling it is compiled
    or loaded."""
    global _bound
    if _bound is not None:
        return
    with _lock:
        if _bound is not None:
            return
        from llvmlite import ir

        from .intrinsics import ALLREDUCE
        from .jit import jit
        ll, _, engine = jit()
        MPI = _mpi()
        lib = _libmpi()
        wide = MPI._sizeof(MPI.Comm) == ctypes.sizeof(ctypes.c_size_t)  # handles are pointers (Open MPI) or ints
        i32, i64 = ir.IntType(32), ir.IntType(64)
        handle = i64 if wide else i32
        comm = MPI._handleof(MPI.COMM_WORLD)
        f32, f64, op = MPI._handleof(MPI.FLOAT), MPI._handleof(MPI.DOUBLE), MPI._handleof(MPI.SUM)
        m = ir.Module(name="graphc_mpi_allreduce")
        m.triple = ll.get_process_triple()
        f = ALLREDUCE.define(m, "graphc_mpi_allreduce_impl")
        send, recv, n, code = f.args
        b = ir.IRBuilder(f.append_basic_block("entry"))
        fnty = ir.FunctionType(i32, [i64, i64, i32, handle, handle, handle])
        ll.add_symbol("graphc_MPI_Allreduce", ctypes.cast(lib.MPI_Allreduce, ctypes.c_void_p).value)
        target = ir.Function(m, fnty, "graphc_MPI_Allreduce")
        dtype = b.select(b.icmp_signed("==", code, ir.Constant(i32, 0)), ir.Constant(handle, f32),
                         ir.Constant(handle, f64))
        b.ret(b.call(target, [send, recv, b.trunc(n, i32), dtype, ir.Constant(handle, op), ir.Constant(handle, comm)]))
        mod = ll.parse_assembly(str(m))
        mod.verify()
        engine.add_module(mod)
        engine.finalize_object()
        ll.add_symbol(ALLREDUCE.symbol, engine.get_function_address("graphc_mpi_allreduce_impl"))
        _bound = mod  # keeps the module (and its machine code) alive


def enable() -> None:
    """The cpu and parallel targets' all-reduce capability (backends/__init__.py): bind the
    MPI symbol before any data-parallel program's kernels are compiled or loaded."""
    bind()


def _define_intrinsic():
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    from .intrinsics import ALLREDUCE

    @intrinsic
    def mpi_allreduce_sum(typingctx, a, o):
        """``MPI_Allreduce(a, o, a.size, dtype, MPI_SUM, MPI_COMM_WORLD)`` for contiguous
        float32/float64 arrays; returns MPI's status (0: success)."""
        if not (isinstance(a, types.Array) and a == o and a.dtype in (types.float32, types.float64)):
            return None
        sig = types.int32(a, o)

        def codegen(context, builder, sig, args):
            bind()
            x = context.make_array(sig.args[0])(context, builder, args[0])
            y = context.make_array(sig.args[1])(context, builder, args[1])
            i64 = ir.IntType(64)
            f = ALLREDUCE.declare(builder.module)
            code = ir.Constant(ir.IntType(32), 0 if sig.args[0].dtype == types.float32 else 1)
            return builder.call(f, [builder.ptrtoint(x.data, i64), builder.ptrtoint(y.data, i64), x.nitems, code])

        return sig, codegen

    return mpi_allreduce_sum


def __getattr__(name: str):
    # the intrinsic is built on first use (generated kernel modules import it): importing the
    # backend does not import Numba's extension API
    if name == "mpi_allreduce_sum":
        f = _define_intrinsic()
        globals()[name] = f
        return f
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def lower(em, k):
    """The emitter's lowering of an ``allreduce`` kernel (emitter.KERNELS): one call of the
    intrinsic over the flat operand and result."""
    from .intrinsics import import_line
    (n,) = k.nodes
    t = em.function(["a", "o"], ["    return mpi_allreduce_sum(a, o)  # MPI_Allreduce(MPI_SUM) over every rank"],
                    False, imports=import_line("mpi_allreduce_sum"))
    return t, [em.flat_expr(n.inputs[0]), em.flat_expr(n)], em._site(n), False
