"""``einsum``, ``tensordot``, ``outer``, ``diagonal``, ``trace``: no new op, compositions of
existing ones, so their gradients are those ops' VJPs.

``einsum`` follows ``numpy.einsum``'s subscripts (explicit ``->`` or the implicit output:
the labels seen once, in alphabetical order, after the ``...`` dims; repeated labels in an
operand take its diagonal; ``...`` broadcasts as NumPy). Operands are reduced first (a
diagonal for a repeated label, a sum for a label no other operand and not the output
needs), then contracted left to right, two at a time: a pair sharing a summed label is ONE
GEMM (``matmul``, labels grouped as (batch, rows, contracted) x (batch, contracted, cols)
by transposes and reshapes) or a batched GEMM when labels of both are kept (``batch_matmul``);
a pair sharing none is a broadcasting multiply. Integer/bool operands and zero-size
contractions take the multiply-and-sum path instead of a GEMM.
"""
from __future__ import annotations

import builtins
import numbers
import string

import numpy as np

from ..errors import ShapeError
from ..ir import Node

_LETTERS = string.ascii_letters
_ELL = [chr(c) for c in range(0x3B1, 0x3B1 + 32)]  # private labels for the '...' dims (Greek letters)


def _F():
    from .. import dsl
    return dsl


def _fail(cls, msg, *xs):
    return _F()._fail(cls, "einsum", msg, *xs)


def _parse(subscripts: str, xs: list) -> tuple[list[str], str]:
    """Each operand's labels (one char per dim, '...' expanded into private labels) and the
    output's."""
    s = subscripts.replace(" ", "")
    if s.count("->") > 1 or ("-" in s.replace("->", "")) or (">" in s.replace("->", "")):
        raise _fail(ValueError, f"subscripts {subscripts!r}: '->' must appear at most once", *xs)
    lhs, arrow, rhs = s.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(xs):
        raise _fail(ValueError, f"subscripts {subscripts!r} name {len(terms)} operands, {len(xs)} were given", *xs)
    for t in terms + [rhs]:
        bad = set(t.replace("...", "")) - set(_LETTERS)
        if bad or t.count("...") > 1 or "." in t.replace("...", ""):
            raise _fail(ValueError, f"subscripts {subscripts!r}: {t!r} is not letters with at most one '...'", *xs)
    labels, ell_n = [], 0
    for t, x in zip(terms, xs):
        n_letters = len(t.replace("...", ""))
        if "..." in t:
            k = x.ndim - n_letters
            if k < 0:
                raise _fail(ShapeError, f"subscripts {t!r} name more dims than operand of rank {x.ndim} has", x)
            ell_n = builtins.max(ell_n, k)
        elif n_letters != x.ndim:
            raise _fail(ShapeError, f"subscripts {t!r} name {n_letters} dims for an operand of rank {x.ndim}", x)
    for t, x in zip(terms, xs):
        if "..." in t:
            k = x.ndim - len(t.replace("...", ""))
            a, b = t.split("...")
            labels.append(a + "".join(_ELL[ell_n - k:ell_n]) + b)
        else:
            labels.append(t)
    ell = "".join(_ELL[:ell_n])
    if arrow:
        if "..." in rhs:
            a, b = rhs.split("...")
            out = a + ell + b
        elif ell_n:
            raise _fail(ValueError, f"subscripts {subscripts!r}: the operands have '...' dims, so the output "
                        "must name them with '...' too (as NumPy)", *xs)
        else:
            out = rhs
        if len(set(out)) != len(out):
            raise _fail(ValueError, f"output subscripts {rhs!r} repeat a label", *xs)
        missing = set(out) - set("".join(labels))
        if missing:
            raise _fail(ValueError, f"output label(s) {sorted(missing)} appear in no operand", *xs)
    else:
        counts = {}
        for t in labels:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c in _LETTERS))
    return labels, out


def _sizes(labels, xs):
    """Each label's size; a size-1 dim broadcasts against the label's other size (NumPy's)."""
    size: dict = {}
    for t, x in zip(labels, xs):
        for c, d in zip(t, x.shape):
            if c not in size or size[c] == 1:
                size[c] = d
            elif d != size[c] and d != 1:
                raise _fail(ShapeError, f"label {c!r} has sizes {size[c]} and {d}", *xs)
    return size


def _dims(shape):
    return tuple(-1 if d is None else d for d in shape)


def _prod(ds):
    if None in ds:
        return -1
    return int(np.prod(ds, dtype=np.int64))


def _reduce_one(x: Node, lab: str, keep: set) -> tuple[Node, str]:
    """Diagonals for repeated labels, then a sum over the labels nothing else needs."""
    F = _F()
    while len(set(lab)) != len(lab):
        c = next(c for c in lab if lab.count(c) > 1)
        i = lab.index(c)
        j = lab.index(c, i + 1)
        x = diagonal(x, 0, i, j)
        lab = "".join(ch for k, ch in enumerate(lab) if k not in (i, j)) + c
    drop = tuple(i for i, c in enumerate(lab) if c not in keep)
    if drop:
        x = F.sum(x, drop)
        lab = "".join(c for i, c in enumerate(lab) if i not in drop)
    return x, lab


def _arrange(x: Node, lab: str, order: str, size: dict) -> Node:
    """``x`` (labels ``lab``) transposed to ``order``, where ``order`` may hold labels ``x``
    lacks (inserted as size-1 dims, so the result broadcasts)."""
    F = _F()
    present = [c for c in order if c in lab]
    x = F.transpose(x, [lab.index(c) for c in present])
    if len(present) != len(order):
        x = F.reshape(x, _dims(tuple(x.shape[present.index(c)] if c in present else 1 for c in order)))
    return x


def _pair(a: Node, la: str, b: Node, lb: str, keep: set, size: dict) -> tuple[Node, str]:
    F = _F()
    batch = [c for c in la if c in lb and c in keep]
    contract = [c for c in la if c in lb and c not in keep]
    a_only = [c for c in la if c not in lb]
    b_only = [c for c in lb if c not in la]
    out_lab = "".join(batch + a_only + b_only)
    gemm = (contract and a.dtype == b.dtype and a.dtype.kind == "f"
            and builtins.all(size[c] not in (0, None) for c in contract)
            and builtins.all(a.shape[la.index(c)] == b.shape[lb.index(c)] for c in batch + contract))
    if not gemm:
        order = "".join(batch + a_only + b_only + contract)
        y = _arrange(a, la, order, size) * _arrange(b, lb, order, size)
        if contract:
            y = F.sum(y, tuple(range(len(order) - len(contract), len(order))))
        return y, out_lab
    dims = lambda x, lab, cs: [x.shape[lab.index(c)] for c in cs]  # noqa: E731
    bd, md, nd, kd = dims(a, la, batch), dims(a, la, a_only), dims(b, lb, b_only), dims(a, la, contract)
    A = F.transpose(a, [la.index(c) for c in batch + a_only + contract])
    B = F.transpose(b, [lb.index(c) for c in batch + contract + b_only])
    if batch:
        y = F.matmul(F.reshape(A, (_prod(bd), _prod(md), _prod(kd))), F.reshape(B, (_prod(bd), _prod(kd), _prod(nd))))
    else:
        y = F.matmul(F.reshape(A, (_prod(md), _prod(kd))), F.reshape(B, (_prod(kd), _prod(nd))))
    return F.reshape(y, _dims(tuple(bd + md + nd))), out_lab


def einsum(subscripts: str, *operands) -> Node:
    F = _F()
    if not isinstance(subscripts, str):
        raise _fail(TypeError, f"subscripts must be a string, got {subscripts!r}")
    if not operands:
        raise _fail(ValueError, "needs at least one operand")
    xs = [F._lift(x) for x in operands]
    labels, out = _parse(subscripts, xs)
    from .base import promote
    dt = promote(*[x.dtype for x in xs])
    xs = [F.cast(x, dt) for x in xs]
    size = _sizes(labels, xs)
    pending = list(zip(xs, labels))
    # each operand reduced by what neither the output nor another operand names
    red = []
    for i, (x, lab) in enumerate(pending):
        others = set(out).union(*[set(l) for j, (_, l) in enumerate(pending) if j != i])
        red.append(_reduce_one(x, lab, others))
    x, lab = red[0]
    for i in range(1, len(red)):
        b, lb = red[i]
        keep = set(out).union(*[set(l) for _, l in red[i + 1:]])
        x, lab = _pair(x, lab, b, lb, keep, size)
    x, lab = _reduce_one(x, lab, set(out))
    y = _arrange(x, lab, out, size)
    want = tuple(size[c] for c in out)
    if y.shape != want and None not in want:
        y = F.broadcast_to(y, want)  # a size-1 dim broadcast against a larger one of the same label
    return y


def tensordot(a, b, axes=2) -> Node:
    F = _F()
    a, b = F._lift(a), F._lift(b)
    if isinstance(axes, numbers.Integral) and not isinstance(axes, bool):
        n = int(axes)
        if n < 0 or n > a.ndim or n > b.ndim:
            raise F._fail(ShapeError, "tensordot", f"axes={n} is out of range for ranks {a.ndim} and {b.ndim}", a, b)
        ax_a, ax_b = list(range(a.ndim - n, a.ndim)), list(range(n))
    else:
        try:
            ax_a, ax_b = axes
            ax_a = [ax_a] if isinstance(ax_a, numbers.Integral) else list(ax_a)
            ax_b = [ax_b] if isinstance(ax_b, numbers.Integral) else list(ax_b)
        except (TypeError, ValueError):
            raise F._fail(TypeError, "tensordot", f"axes must be an int or a pair of axis lists, got {axes!r}",
                          a, b) from None
        if len(ax_a) != len(ax_b):
            raise F._fail(ShapeError, "tensordot", f"axes {axes!r}: the two lists differ in length", a, b)
        ax_a = [F._checked_axes("tensordot", a, int(i))[0] for i in ax_a]
        ax_b = [F._checked_axes("tensordot", b, int(i))[0] for i in ax_b]
    for i, j in zip(ax_a, ax_b):
        if a.shape[i] != b.shape[j]:
            raise F._fail(ShapeError, "tensordot", f"shape mismatch for sum: axis {i} of a has size {a.shape[i]}, "
                          f"axis {j} of b {b.shape[j]}", a, b)
    la = _LETTERS[:a.ndim]
    lb = list(_LETTERS[a.ndim:a.ndim + b.ndim])
    for i, j in zip(ax_a, ax_b):
        lb[j] = la[i]
    lb = "".join(lb)
    out = "".join(c for i, c in enumerate(la) if i not in ax_a) + "".join(c for j, c in enumerate(lb) if j not in ax_b)
    return einsum(f"{la},{lb}->{out}", a, b)


def diagonal(a, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Node:
    F = _F()
    a = F._lift(a)
    if a.ndim < 2:
        raise F._fail(ShapeError, "diagonal", f"needs an operand of rank >= 2, got rank {a.ndim}", a)
    if isinstance(offset, bool) or not isinstance(offset, numbers.Integral):
        raise F._fail(TypeError, "diagonal", f"offset must be an int, got {offset!r}", a)
    (i,) = F._checked_axes("diagonal", a, axis1)
    (j,) = F._checked_axes("diagonal", a, axis2)
    if i == j:
        raise F._fail(ShapeError, "diagonal", f"axis1 and axis2 cannot be the same (both {i})", a)
    if a.shape[i] is None or a.shape[j] is None:
        raise F._fail(ShapeError, "diagonal", "the two axes must be fixed (not the batch dimension)", a)
    rest = [k for k in range(a.ndim) if k not in (i, j)]
    x = F.transpose(a, rest + [i, j])
    r, c = a.shape[i], a.shape[j]
    off = int(offset)
    r0, c0 = (0, off) if off >= 0 else (-off, 0)
    n = builtins.max(0, builtins.min(r - r0, c - c0))
    lead = (builtins.slice(None),) * len(rest)
    x = F._index(x, lead + (builtins.slice(r0, r0 + n), builtins.slice(c0, c0 + n)), "diagonal")
    lead_shape = _dims(x.shape[:-2])
    if n == 0:
        return F.reshape(x, lead_shape + (0,))
    flat = F.reshape(x, lead_shape + (n * n,))
    return F._index(flat, lead + (builtins.slice(None, None, n + 1),), "diagonal")


def trace(a, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype=None) -> Node:
    F = _F()
    d = diagonal(a, offset, axis1, axis2)
    if dtype is not None:
        d = F.cast(d, dtype)
    elif d.dtype.kind == "b":
        d = F.cast(d, "int64")
    return F.sum(d, -1)


def outer(a, b) -> Node:
    F = _F()
    a, b = F._lift(a), F._lift(b)
    return F.expand_dims(F.ravel(a), 1) * F.expand_dims(F.ravel(b), 0)


