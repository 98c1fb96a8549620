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

from .intrinsics import X86, mxcsr_flush, mxcsr_restore  # the native driver emits the same IR


@intrinsic
def flush_subnormals(typingctx):
    """Set FTZ | DAZ on this thread; returns the previous control word (for ``restore_fpenv``)."""
    def codegen(context, builder, sig, args):
        if not X86:
            return ir.Constant(ir.IntType(64), 0)
        return builder.zext(builder.load(mxcsr_flush(builder)), ir.IntType(64))
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
            mxcsr_restore(builder, slot)
        return context.get_dummy_value()
    return types.none(saved), codegen
