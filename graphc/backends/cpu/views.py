"""Array views over raw addresses, and filling them, as Numba intrinsics for the kernels'
native entries (emitter.py).

``view(ptr, (n0, n1, ...), np.float32)`` is what ``numba.carray`` computes for a C-ordered
array (no owner, no parent), and ``fill(a, v)`` what ``a.fill(v)`` does for one. Both are
emitted inline: ``carray`` and ``ndarray.fill`` are Numba overloads compiled as functions of
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
