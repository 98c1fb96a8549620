"""The GEMM that generated cpu kernels call: ``gemm(a, b, out)`` computes ``out = a @ b``.

It is one call of the BLAS wrapper ``np.dot`` itself ends in (Numba's ``numba_xxgemm``, over
SciPy's BLAS), emitted directly: ``np.dot(a, b, out)`` costs ~0.17 s of Numba compile time
per kernel signature (it compiles its argument checks, C-int checks and vector special cases
as internal functions each time), this costs almost nothing. The checks ``np.dot`` makes at
run time are made by graphc when it builds the graph (shapes are static per program), and
the operand layouts are those the emitter produces: C-contiguous, or the transposed view of
a C-contiguous array (layout F), read by BLAS in place.
"""
from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numba.np.linalg import call_xxgemm, ensure_blas


@intrinsic
def gemm(typingctx, a, b, out):
    """``out[:] = a @ b`` for 2-D float32/float64 arrays: ``a`` and ``b`` C- or F-contiguous,
    ``out`` C-contiguous; an empty product fills ``out`` with zeros."""
    arrays = (a, b, out)
    if not all(isinstance(t, types.Array) and t.ndim == 2 for t in arrays):
        raise TypingError(f"gemm: 2-D arrays expected, got {arrays}")
    if not (a.dtype == b.dtype == out.dtype and a.dtype in (types.float32, types.float64)):
        raise TypingError(f"gemm: float32 or float64 operands of one dtype expected, got {arrays}")
    if a.layout not in "CF" or b.layout not in "CF" or out.layout != "C":
        raise TypingError(f"gemm: operands C/F-contiguous and the result C-contiguous expected, got {arrays}")

    def codegen(context, builder, sig, args):
        ensure_blas()
        x, y, o = (context.make_array(t)(context, builder, v) for t, v in zip(sig.args, args))
        xs, ys, os = (cgutils.unpack_tuple(builder, t.shape) for t in (x, y, o))
        zero = context.get_constant(types.intp, 0)
        empty = builder.or_(builder.icmp_signed("==", xs[1], zero),
                            builder.or_(builder.icmp_signed("==", xs[0], zero), builder.icmp_signed("==", ys[1], zero)))
        with builder.if_else(empty, likely=False) as (is_empty, nonempty):
            with is_empty:
                cgutils.memset(builder, o.data, builder.mul(o.itemsize, o.nitems), 0)
            with nonempty:
                call_xxgemm(context, builder, sig.args[0], xs, x.data, sig.args[1], ys, y.data,
                            sig.args[2], os, o.data)
        return context.get_dummy_value()

    return types.none(a, b, out), codegen
