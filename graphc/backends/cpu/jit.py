"""graphc's LLVM JIT, one per process: the execution engine that graphc's compiled kernels
(kernels.py), the native images' objects (image.py), the native drivers (driver.py) and the
all-reduce's symbol (allreduce.py) are added to, and the binding of the symbols their code
calls in Numba's C runtime (``bind_runtime``)."""
from __future__ import annotations

import ctypes
import os
import threading

from .intrinsics import XXGEMM

LOCK = threading.RLock()
_JIT: list = []


def jit():
    """(llvmlite.binding, the target machine, the execution engine), created on first use."""
    if not _JIT:
        import llvmlite.binding as ll
        ll.initialize_native_target()
        ll.initialize_native_asmprinter()
        tm = ll.Target.from_default_triple().create_target_machine(
            cpu=ll.get_host_cpu_name(), features=ll.get_host_cpu_features().flatten(), opt=2, jit=True)
        engine = ll.create_mcjit_compiler(ll.parse_assembly(""), tm)
        _JIT.extend([ll, tm, engine])
    return _JIT


def add_ir(ir_text: str, name: str):
    """Compile LLVM IR ``ir_text`` into the JIT; returns (the address of its function
    ``name``, the module, which must be kept alive while that code may run)."""
    ll, _, engine = jit()
    mod = ll.parse_assembly(ir_text)
    mod.verify()
    engine.add_module(mod)
    engine.finalize_object()
    return engine.get_function_address(name), mod


def add_objects(objects: list[tuple[str, bytes]]) -> list[int]:
    """Add object files ``(entry name, object code)`` to the JIT (their undefined symbols
    must all be bound: LLVM aborts the process on one that is not); returns each entry's address."""
    ll, _, engine = jit()
    for _, obj in objects:
        engine.add_object_file(ll.ObjectFileRef.from_data(obj))
    if objects:
        engine.finalize_object()
    return [engine.get_function_address(name) for name, _ in objects]


_BOUND: list = []  # the runtime symbols are bound once


def _load_extension(name: str, pattern: str):
    """One of Numba's C extension modules, without importing the ``numba`` package (the
    import would initialize all of Numba: ~0.15 s, and its target ~0.3 s more on first use).
    Registered in ``sys.modules`` as the regular import would, so a later ``import numba``
    uses the same module."""
    import sys
    if name in sys.modules:
        return sys.modules[name]
    import glob
    import importlib.machinery
    import importlib.util
    top = name.split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{top} is not installed")
    paths = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], pattern)))
    if not paths:
        raise ImportError(f"{name} not found")
    loader = importlib.machinery.ExtensionFileLoader(name, paths[0])
    mod = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, paths[0], loader=loader))
    sys.modules[name] = mod
    try:
        loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def bind_runtime(ll) -> None:
    """The symbols Numba binds for its compiled code (numba/core/base.py
    ``_load_global_helpers``, the NRT's registration, the math functions of externals.py),
    bound to the same addresses."""
    if _BOUND:
        return
    import builtins
    helper = _load_extension("numba._helperlib", "_helperlib*.so")
    dynfunc = _load_extension("numba._dynfunc", "_dynfunc*.so")
    nrt = _load_extension("numba.core.runtime._nrt_python", os.path.join("core", "runtime", "_nrt_python*.so"))
    ll.add_symbol("_Py_NoneStruct", id(None))
    for helpers in (helper.c_helpers, dynfunc.c_helpers):
        for name, addr in helpers.items():
            ll.add_symbol("numba_" + name, addr)
    for name, addr in nrt.c_helpers.items():
        ll.add_symbol(name if name.startswith("_") else "NRT_" + name, addr)
    for obj in builtins.__dict__.values():
        if isinstance(obj, type) and issubclass(obj, BaseException):
            ll.add_symbol(f"PyExc_{obj.__name__}", id(obj))
    for name in _MATH:  # Numba's own bindings of the C math functions (externals.py)
        if name in helper.c_helpers:
            ll.add_symbol(name, helper.c_helpers[name])
    _bind_gemm(ll)
    _BOUND.append(True)


def _bind_gemm(ll) -> None:
    """``numba_xxgemm`` (what the kernels' GEMMs call) straight into SciPy's OpenBLAS.

    Numba's own looks up ``sgemm`` in ``scipy.linalg.cython_blas`` on its first call, which
    imports all of ``scipy.linalg`` (~0.2 s, a third of a warm start). The same BLAS library
    (the one cython_blas wraps, with the same thread pool) is opened with ctypes and called
    from a few lines of IR with Numba's signature. Where SciPy ships no such library (a
    build against the system's BLAS), Numba's stays bound: correct, only slower to start."""
    import glob
    import importlib.util
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return
    root = os.path.dirname(spec.submodule_search_locations[0])
    libs = sorted(glob.glob(os.path.join(root, "scipy.libs", "libscipy_openblas*.so*")))
    try:
        lib = ctypes.CDLL(libs[0])
        fns = [ctypes.cast(getattr(lib, f"scipy_{t}gemm_"), ctypes.c_void_p).value for t in "sdcz"]
    except (IndexError, OSError, AttributeError):
        return
    from llvmlite import ir
    i8, i32 = ir.IntType(8), ir.IntType(32)
    p8, p32 = i8.as_pointer(), i32.as_pointer()
    m = ir.Module(name="graphc_xxgemm")
    m.triple = ll.get_process_triple()
    f = XXGEMM.define(m, "graphc_xxgemm")
    kind, ta, tb, mm, nn, kk, alpha, a, lda, bb, ldb, beta, c, ldc = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    blas = ir.FunctionType(ir.VoidType(), [p8, p8, p32, p32, p32, p8, p8, p32, p8, p32, p8, p8, p32])

    def slot(v, ty):
        x = b.alloca(ty)
        b.store(b.trunc(v, ty) if ty == i32 else v, x)
        return x

    args = [slot(ta, i8), slot(tb, i8), slot(mm, i32), slot(nn, i32), slot(kk, i32), alpha, a, slot(lda, i32),
            bb, slot(ldb, i32), beta, c, slot(ldc, i32)]
    for ch, addr in zip("sdcz", fns):  # Numba's kinds; other Numba code may call this too
        ll.add_symbol(f"graphc_blas_{ch}gemm", addr)
        yes, no = f.append_basic_block(ch), f.append_basic_block(ch + "_no")
        b.cbranch(b.icmp_unsigned("==", kind, ir.Constant(i8, ord(ch))), yes, no)
        b.position_at_end(yes)
        b.call(ir.Function(m, blas, f"graphc_blas_{ch}gemm"), args)
        b.ret(ir.Constant(i32, 0))
        b.position_at_end(no)
    b.ret(ir.Constant(i32, -1))  # not a BLAS kind (Numba's returns -1 too)
    addr, mod = add_ir(str(m), "graphc_xxgemm")
    _GEMM.append(mod)
    ll.add_symbol(XXGEMM.symbol, addr)


_GEMM: list = []  # the module of graphc_xxgemm (kept alive)


_MATH = ("fmod", "fmodf", "ldexp", "ldexpf", "log1p", "log1pf", "expm1", "expm1f", "exp", "expf", "exp2",
         "exp2f", "log", "logf", "log2", "log2f", "log10", "log10f", "sqrt", "sqrtf", "pow", "powf", "sin",
         "sinf", "cos", "cosf", "tan", "tanf", "asin", "asinf", "acos", "acosf", "atan", "atanf", "atan2",
         "atan2f", "sinh", "sinhf", "cosh", "coshf", "tanh", "tanhf", "asinh", "asinhf", "acosh", "acoshf",
         "atanh", "atanhf", "erf", "erff", "erfc", "erfcf", "gamma", "gammaf", "lgamma", "lgammaf",
         "round", "roundf", "trunc", "truncf", "floor", "floorf", "ceil", "ceilf", "fabs", "fabsf")


