"""Derivatives as functions, built on reverse mode (``graphc.autodiff.grad``): ``jacobian``,
``hessian`` and ``jvp``. The results are ordinary graph nodes (compile, evaluate or
differentiate them again).

Cost: ``jacobian(y, x)`` is one VJP per element of ``y`` (its rows), so O(y.size) backward
passes and a graph that size; ``hessian(f, x)`` is the Jacobian of the gradient, O(x.size)
VJPs of the backward graph. Both are for small operands (JAX's ``jacrev``/``hessian`` batch
the rows with vmap; graphc unrolls them). ``jvp`` costs two VJPs whatever the sizes.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from . import dsl as F
from .autodiff import grad
from .errors import DTypeError, ShapeError, user_location
from .ir import Node

_PLACEHOLDERS = itertools.count()


def _checked(op: str, name: str, t, allow_batch: bool = False) -> Node:
    if not isinstance(t, Node):
        raise TypeError(f"{op}: {name} must be a graphc tensor, got {type(t).__name__} at {user_location()}")
    if t.dtype.kind != "f":
        raise DTypeError(f"{op}: {name} must be floating point, got {t.dtype} (shape {t.shape}) at {user_location()}")
    if not allow_batch and None in t.shape:
        raise ShapeError(f"{op}: {name} has the batch dimension (shape {t.shape}); a Jacobian needs fixed "
                         f"shapes (one row per element) at {user_location()}")
    return t


def jacobian(y: Node, x: Node | Sequence[Node]):
    """``dy/dx`` of shape ``y.shape + x.shape`` (``jax.jacrev``'s layout); ``x`` a tensor or a
    list of tensors (then a list of Jacobians). One reverse pass per element of ``y``."""
    single = isinstance(x, Node)
    xs = [x] if single else list(x)
    y = _checked("jacobian", "y", y)
    for t in xs:
        _checked("jacobian", "x", t)
    n = int(np.prod(y.shape, dtype=np.int64))
    flat = F.reshape(y, (n,))
    rows = [grad(flat[i], xs) for i in range(n)]
    out = []
    for j, t in enumerate(xs):
        if n == 0:
            out.append(F.zeros(y.shape + t.shape, t.dtype))
            continue
        out.append(F.reshape(F.stack([r[j] for r in rows]), y.shape + t.shape))
    return out[0] if single else out


def hessian(f: Node, x: Node):
    """The matrix of second derivatives of the scalar ``f``, shape ``x.shape + x.shape``
    (``jax.hessian``): the Jacobian of ``grad(f, x)``, one reverse pass per element of ``x``."""
    f = _checked("hessian", "f", f)
    if f.shape != ():
        raise ShapeError(f"hessian: f must be a scalar, got shape {f.shape} at {user_location()}")
    x = _checked("hessian", "x", x)
    return jacobian(grad(f, x), x)


def jvp(y: Node, x: Node, v) -> Node:
    """The forward-mode derivative ``J v`` (shape ``y.shape``) of ``y`` along ``v`` (shape
    ``x.shape``) through two VJPs: ``g(u) = J^T u`` is linear in a placeholder cotangent ``u``,
    so ``grad(sum(g(u) * v), u) = J v`` (the placeholder drops out)."""
    y = _checked("jvp", "y", y, allow_batch=True)
    x = _checked("jvp", "x", x, allow_batch=True)
    v = F._lift(v, x)
    if v.shape != x.shape:
        raise ShapeError(f"jvp: the tangent v has shape {v.shape}, x has {x.shape} at {user_location()}")
    if v.dtype != x.dtype:
        v = F.cast(v, x.dtype)
    u = F.input(f"__jvp_cotangent_{next(_PLACEHOLDERS)}", y.shape, y.dtype)
    g = grad(F.sum(y * u), x)
    out = grad(F.sum(g * v), u)
    from .ir import topo_order
    if any(n is u for n in topo_order([out])):  # linear in u: any value of u gives J v
        from .substitution import substitute
        out = substitute(out, {u: F.zeros_like(y)})
    return out
