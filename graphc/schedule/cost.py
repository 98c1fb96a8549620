"""The cost model: the FLOPs and bytes of every fused kernel, known at compile time (the
fusion's Kernel descriptions).

- FLOPs come from one rule per kernel kind (``COSTS``; a new kind is one entry): a GEMM is
  ``2 m n k``, an elementwise op one FLOP per element (casts, selects and copies none), a
  reduction one per element reduced, softmax-CE 4 per logit (+1 with its gradient).
- Bytes moved: every distinct tensor a kernel reads, once, plus every tensor it writes; a
  GEMM prologue's result counts as written by BLAS and read back by the epilogue.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..ir import Node


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


# ---- FLOPs per kernel kind ----------------------------------------------------------------------

FREE_OPS = frozenset({"cast", "stop_gradient", "where", "reshape", "transpose", "broadcast_to"})


def _ew_flops(nodes) -> int:
    """One FLOP per element per elementwise op (casts, selects and movement: none)."""
    return sum(_numel(n.shape) for n in nodes if n.op not in FREE_OPS)


def matmul_flops(n: Node) -> int:
    """``2 m n k`` for ``(m, k) @ (k, n)`` (leading dims of a stacked operand multiply m)."""
    a = n.inputs[0]
    return 2 * _numel(n.shape) * int(a.shape[-1])


def _loop(k) -> int:
    f = matmul_flops(k.matmul) if k.matmul is not None else 0
    f += _ew_flops(k.prelude) + _ew_flops(k.nodes)
    f += sum(_numel(r.inputs[0].shape) for r in k.reductions)  # one add/max per element reduced
    return f


def _bmm(k) -> int:
    total = 0
    for n in k.nodes:  # (B, m, n) = op(a) @ op(b): 2 B m n k
        a = n.inputs[0]
        inner = a.shape[1] if n.attrs.get("ta") else a.shape[2]
        total += 2 * _numel(n.shape) * int(inner)
    return total


def _sce(k) -> int:
    z = k.nodes[0].inputs[0]
    rows, logits = (z.shape[0], _numel(z.shape)) if z.shape else (1, 1)
    per = 4 + (1 if any(n.op == "sce_grad" for n in k.nodes) else 0)  # max, sub, exp, sum (+ scale)
    return per * logits + 3 * rows  # log, add, pick the label per row


def _window(n) -> int:
    kh, kw = n.attrs["kernel"]
    return int(kh) * int(kw)


def _pool(k) -> int:
    n = k.nodes[0]
    f = _numel(n.shape) * _window(n)  # a compare (max) or an add (avg) per window element
    return f + (_numel(n.shape) if n.attrs.get("mode") == "avg" else 0)  # avg: the scale


def _pool_grad(k) -> int:
    n = k.nodes[0]
    g = n.inputs[1]
    return _numel(g.shape) * (_window(n) + 1)  # max: compares to find the winner, + the add


# kind -> FLOPs of one kernel of that kind. Kinds that only move data count none.
COSTS: dict[str, Callable[[Any], int]] = {
    "loop": _loop,
    "matmul": lambda k: matmul_flops(k.matmul),
    "copy": lambda k: 0,
    "bmm": _bmm,
    "sce": _sce,
    "im2col": lambda k: 0,
    "col2im": lambda k: _numel(k.nodes[0].inputs[0].shape),  # every patch value added back
    "pool2d": _pool,
    "pool2d_grad": _pool_grad,
    "take": lambda k: 0,
    "scatter_add": lambda k: _numel(k.nodes[0].inputs[0].shape),  # one add per gradient value
    "slice": lambda k: 0,
    "pad": lambda k: 0,
    "concat": lambda k: 0,
    "allreduce": lambda k: 0,  # the sum happens in MPI, over the network
    "rng": lambda k: _numel(k.nodes[0].shape),  # the scale to [0, 1); SplitMix64's mixing is integer work
}

# kinds that read only part of an operand: bytes of what they touch, not of the whole tensor
_PARTIAL_READS = {
    "take": lambda k: 2 * _nbytes(k.nodes[0]) + _nbytes(k.nodes[0].inputs[1]),  # rows read + written, ids
    "slice": lambda k: 2 * sum(_nbytes(n) for n in k.nodes),
}


def _nbytes(n: Node) -> int:
    return _numel(n.shape) * n.dtype.itemsize


def kernel_flops(k) -> int:
    """FLOPs of one fused kernel (``COSTS[k.kind]``; an unknown kind counts none)."""
    rule = COSTS.get(k.kind)
    return int(rule(k)) if rule is not None else 0


def kernel_bytes(k, plan=None) -> int:
    """Bytes a kernel moves: each distinct tensor it reads (once) plus each it writes; a
    GEMM prologue's result is written by BLAS and read back by the epilogue. Literals (values
    in the code) move nothing. ``plan`` (optional) tells literals apart."""
    partial = _PARTIAL_READS.get(k.kind)
    if partial is not None:
        return int(partial(k))
    total = 0
    for x in k.reads():
        if plan is not None:
            b = plan.buffers.get(id(x))
            if b is not None and b.kind == "literal":
                continue
        total += _nbytes(x)
    total += sum(_nbytes(o) for o in dict.fromkeys(k.outputs))
    if k.matmul is not None and k.kind == "loop":
        total += 2 * _nbytes(k.matmul)
    return total


def gemm_flops(k) -> int:
    """The part of a kernel's FLOPs that runs in BLAS (its GEMMs)."""
    if k.kind == "bmm":
        return _bmm(k)
    if k.matmul is not None:
        return matmul_flops(k.matmul)
    return 0
