"""Subnormal floats flushed to zero inside a compiled step (x86-64: MXCSR's FTZ and DAZ bits).

Why: Adam's first moment of a weight whose gradient stays zero (a dead ReLU unit, an unused
embedding row) decays by beta_1 every step and reaches the subnormal range after ~900 steps
in float32; from then on every multiply touching it takes a microcode assist (~100 cycles).
Measured on the tiny MLP of benchmarks/bench_step.py memorizing one batch: 10.5 µs per step
with normal floats, 21-37 µs once the moments went subnormal. XLA and TensorFlow run their
CPU kernels with the same two bits set; results differ from IEEE only below 1.2e-38 (float32).

The driver saves the caller's control word on entry, sets FTZ | DAZ, and restores the saved
word before every ``return`` and ``raise``, so the user's own NumPy code never sees the
change. Only the calling thread is affected: kernels of the ``parallel`` target run their
prange loops on Numba's worker threads, which keep IEEE subnormals. On other machines
(aarch64) both functions are no-ops.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .native import FTZ_DAZ, X86  # the native driver (native.py) does the same in its own IR


def _mxcsr(builder, name: str, slot) -> None:
    fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    builder.call(fn, [builder.bitcast(slot, ir.IntType(8).as_pointer())])


@intrinsic
def flush_subnormals(typingctx):
    """Set FTZ | DAZ on this thread; returns the previous control word (for ``restore_fpenv``)."""
    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        if not X86:
            return ir.Constant(ir.IntType(64), 0)
        slot = cgutils.alloca_once(builder, i32)
        _mxcsr(builder, "llvm.x86.sse.stmxcsr", slot)
        old = builder.load(slot)
        builder.store(builder.or_(old, ir.Constant(i32, FTZ_DAZ)), slot)
        _mxcsr(builder, "llvm.x86.sse.ldmxcsr", slot)
        return builder.zext(old, ir.IntType(64))
    return types.int64(), codegen


@intrinsic
def restore_fpenv(typingctx, saved):
    """Put back the control word ``flush_subnormals`` returned."""
    if saved not in types.integer_domain:
        return None

    def codegen(context, builder, sig, args):
        if X86:
            i32 = ir.IntType(32)
            slot = cgutils.alloca_once(builder, i32)
            builder.store(builder.trunc(args[0], i32), slot)
            _mxcsr(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()
    return types.none(saved), codegen
