"""Array views over raw addresses, and filling them, as Numba intrinsics for the kernels'
native entries (emitter.py).

``view(ptr, (n0, n1, ...), np.float32)`` is what ``numba.carray`` computes for a C-ordered
array (no owner, no parent), and ``fill(a, v)`` what ``a.fill(v)`` does for one
(``copy_run``/``add_run``/``fill_run``: a slice assignment of a flat run, intrinsics.run_ir).
They are emitted inline: ``carray`` and ``ndarray.fill`` are Numba overloads compiled as functions of
their own the first time each (ndim, dtype) is used in a process (25-45 ms each, never
cached), and ``fill``'s carries Numba's exception machinery into the kernel's object code.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array


@intrinsic
def view(typingctx, ptr, shape, dtype):
    """A C-ordered array of ``shape`` (a tuple of integers) and ``dtype`` at ``ptr``."""
    if not (isinstance(shape, types.UniTuple) and isinstance(shape.dtype, types.Integer)
            and isinstance(dtype, types.NumberClass) and isinstance(ptr, (types.RawPointer, types.CPointer))):
        return None
    nd = shape.count
    arrty = types.Array(dtype.dtype, nd, "C")

    def codegen(context, builder, sig, args):
        p, shp, _ = args
        intp = context.get_value_type(types.intp)
        ary = make_array(arrty)(context, builder)
        itemsize = context.get_abi_sizeof(context.get_data_type(arrty.dtype))
        dims = [context.cast(builder, d, shape.dtype, types.intp) for d in cgutils.unpack_tuple(builder, shp, nd)]
        strides, s = [], ir.Constant(intp, itemsize)
        for d in reversed(dims):
            strides.insert(0, s)
            s = builder.mul(s, d)
        populate_array(ary, data=builder.bitcast(p, ary.data.type), shape=dims, strides=strides,
                       itemsize=ir.Constant(intp, itemsize), meminfo=None)
        return ary._getvalue()

    return arrty(ptr, shape, dtype), codegen


@intrinsic
def fill(typingctx, arr, value):
    """``arr[...] = value`` for a C-contiguous array (a loop over its items)."""
    if not (isinstance(arr, types.Array) and arr.layout == "C" and isinstance(value, (types.Number, types.Boolean))):
        return None

    def codegen(context, builder, sig, args):
        a, v = args
        ary = make_array(arr)(context, builder, a)
        v = context.cast(builder, v, value, arr.dtype)
        with cgutils.for_range(builder, ary.nitems) as loop:
            builder.store(v, builder.gep(ary.data, [loop.index]))
        return context.get_dummy_value()

    return types.none(arr, value), codegen


def _at(context, builder, arrty, a, off, offty):
    """The element pointer at flat offset ``off`` of C-contiguous array ``a``."""
    data = make_array(arrty)(context, builder, a).data
    return builder.gep(data, [context.cast(builder, off, offty, types.intp)], inbounds=True)


def _run_typer(op: str, dst, d, src, s, n):
    """The signature and codegen of copy_run/add_run: C-contiguous arrays of one dtype
    (floats for add_run), integer offsets and count; the IR is intrinsics.run_ir's, as
    kernels.py emits it."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array) and dst.layout == src.layout == "C"
            and dst.dtype == src.dtype and all(isinstance(t, types.Integer) for t in (d, s, n))
            and (op == "copy_run" or isinstance(dst.dtype, types.Float))):
        return None

    def codegen(context, builder, sig, args):
        from .intrinsics import run_ir
        run_ir(builder, op, _at(context, builder, dst, args[0], args[1], d),
               _at(context, builder, src, args[2], args[3], s), context.cast(builder, args[4], n, types.intp))
        return context.get_dummy_value()

    return types.none(dst, d, src, s, n), codegen


@intrinsic
def copy_run(typingctx, dst, d, src, s, n):
    """``dst.flat[d:d + n] = src.flat[s:s + n]`` (offsets in bounds: no wraparound)."""
    return _run_typer("copy_run", dst, d, src, s, n)


@intrinsic
def add_run(typingctx, dst, d, src, s, n):
    """``dst.flat[d:d + n] += src.flat[s:s + n]``, one rounding per item."""
    return _run_typer("add_run", dst, d, src, s, n)


@intrinsic
def fill_run(typingctx, dst, d, n, value):
    """``dst.flat[d:d + n] = value``."""
    if not (isinstance(dst, types.Array) and dst.layout == "C" and not isinstance(dst.dtype, types.Boolean)
            and isinstance(d, types.Integer) and isinstance(n, types.Integer) and isinstance(value, (types.Number, types.Boolean))):
        return None

    def codegen(context, builder, sig, args):
        from .intrinsics import run_ir
        run_ir(builder, "fill_run", _at(context, builder, dst, args[0], args[1], d),
               context.cast(builder, args[3], value, dst.dtype), context.cast(builder, args[2], n, types.intp))
        return context.get_dummy_value()

    return types.none(dst, d, n, value), codegen


# exp for float32 in arithmetic LLVM vectorizes (Numba's math.exp is a call of the C
# library's expf, which loops cannot vectorize without a vector math library; Numba has none
# but Intel's SVML). Cephes' expf: n = round(x / ln 2), r = x - n ln 2 in two parts, a degree-6
# polynomial, times 2^n as two exact powers of two (so that n = 128 and gradual underflow need
# no special case); +inf above log(FLT_MAX), 0 below the smallest subnormal's log, NaN kept.
# Relative error below 2e-7 against NumPy's float32 exp (tests/test_native_driver.py). The
# instructions are intrinsics.exp32_ir's, which graphc's own kernel compiler emits too.


@intrinsic
def exp32(typingctx, x):
    """``math.exp(x)`` for a float32 ``x``, inline and vectorizable."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        from .intrinsics import exp32_ir
        return exp32_ir(builder, args[0])

    return types.float32(x), codegen


@intrinsic
def tanh32(typingctx, x):
    """``math.tanh(x)`` for a float32 ``x``, inline and vectorizable (intrinsics.tanh32_ir)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        from .intrinsics import tanh32_ir
        return tanh32_ir(builder, args[0])

    return types.float32(x), codegen
