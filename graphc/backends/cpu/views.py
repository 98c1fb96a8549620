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
# Relative error below 2e-7 against NumPy's float32 exp (tests/test_native_driver.py).
_EXP_HI, _EXP_LO = 88.72283935546875, -103.97208404541016
_LOG2E, _C1, _C2 = 1.44269504088896341, 0.693359375, -2.12194440e-4
_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)


@intrinsic
def exp32(typingctx, x):
    """``math.exp(x)`` for a float32 ``x``, inline and vectorizable."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        (v,) = args
        f32, i32 = ir.FloatType(), ir.IntType(32)
        c = lambda a: ir.Constant(f32, a)  # noqa: E731
        xc = builder.select(builder.fcmp_ordered(">", v, c(_EXP_HI)), c(_EXP_HI), v)
        xc = builder.select(builder.fcmp_ordered("<", xc, c(_EXP_LO)), c(_EXP_LO), xc)
        floor = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32]), "llvm.floor.f32")
        fx = builder.call(floor, [builder.fadd(builder.fmul(xc, c(_LOG2E)), c(0.5))])
        r = builder.fsub(builder.fsub(xc, builder.fmul(fx, c(_C1))), builder.fmul(fx, c(_C2)))
        p = c(_P[0])
        for coef in _P[1:]:
            p = builder.fadd(builder.fmul(p, r), c(coef))
        y = builder.fadd(builder.fadd(builder.fmul(p, builder.fmul(r, r)), r), c(1.0))
        n = builder.fptosi(fx, i32)
        n1 = builder.ashr(n, ir.Constant(i32, 1))
        n2 = builder.sub(n, n1)
        def pow2(k):
            return builder.bitcast(builder.shl(builder.add(k, ir.Constant(i32, 127)), ir.Constant(i32, 23)), f32)
        out = builder.fmul(builder.fmul(y, pow2(n1)), pow2(n2))
        out = builder.select(builder.fcmp_ordered(">", v, c(_EXP_HI)), c(float("inf")), out)
        return builder.select(builder.fcmp_ordered("<", v, c(_EXP_LO)), c(0.0), out)

    return types.float32(x), codegen
