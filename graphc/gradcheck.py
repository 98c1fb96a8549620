"""check_grads: symbolic gradients (first and second order) against finite differences.

The check runs in float64 whatever the graph's precision: the graph is rebuilt with
float64 values first, since central differences in float32 cannot resolve 1e-6.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from . import dsl as F
from .autodiff import grad
from .errors import GraphcError
from .interpret import evaluate
from .ir import Node, topo_order
from .initializers import init_value
from .passes.precision import with_float_dtype


class GradientCheckError(GraphcError, AssertionError):
    """Symbolic and numerical derivatives disagree."""


def _rel_err(a: np.ndarray, b: np.ndarray, atol: float) -> float:
    den = np.maximum(np.maximum(np.abs(a), np.abs(b)), atol)
    return float(np.max(np.abs(a - b) / den)) if a.size else 0.0


def check_grads(y: Node, wrt: Sequence[Node], feeds: Mapping[str, np.ndarray] | None = None,
                params: Mapping[str, np.ndarray] | None = None, order: int = 1, eps: float = 1e-4,
                rtol: float = 1e-6, atol: float = 1e-4, max_elements: int = 64,
                seed: int = 0) -> dict:
    """Check ``grad(y, wrt)`` against central differences; raise GradientCheckError if off.

    The differences are fourth-order central ones, (8(f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h
    with h = eps * max(1, |x|): accurate to ~1e-12 in float64, where the two-point rule's
    rounding error (~1e-16 |f| / h) is too large for a 1e-6 check. The error of each element is
    |sym - num| / max(|sym|, |num|, atol): relative, except for elements smaller than ``atol``,
    whose absolute error must stay below ``rtol * atol``.

    ``feeds`` give the inputs, ``params`` the parameter values (params not given take
    their initializers). ``order=2`` also checks Hessian-vector products (the gradient of
    <grad, v> against differences of the gradient along a random v). At most
    ``max_elements`` coordinates of each tensor are probed. Returns the worst relative
    error per tensor and order.
    """
    rng = np.random.default_rng(seed)
    wrt = list(wrt)
    y64, *wrt64 = with_float_dtype([y, *wrt])
    feeds = {k: np.asarray(v) for k, v in (feeds or {}).items()}
    feeds = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in feeds.items()}
    pvals = {}
    for n in topo_order([y64]):
        if n.op == "param":
            v = (params or {}).get(n.name)
            pvals[n.name] = np.array(v if v is not None else init_value(n), dtype=np.float64)

    def values_of(x: Node, fd, pv):
        return (pv if x.op == "param" else fd)[x.name]

    for x in wrt64:
        if x.op not in ("param", "input"):
            raise GraphcError(f"check_grads: can only perturb params and inputs, not {x.op} (created at {x.src})")

    def run(nodes, fd, pv):
        return evaluate(nodes, fd, pv)

    grads = grad(y64, wrt64)
    report: dict = {}

    def probe(x, f_of, sym):
        """Compare sym (array shaped like x) with central differences of the scalar f_of."""
        base = values_of(x, feeds, pvals)
        flat_idx = np.arange(base.size)
        if base.size > max_elements:
            flat_idx = rng.choice(base.size, max_elements, replace=False)
        num = np.empty(len(flat_idx))
        for k, i in enumerate(flat_idx):
            idx = np.unravel_index(i, base.shape)
            old = base[idx]
            h = eps * max(1.0, abs(old))
            f = {}
            for j in (1, -1, 2, -2):
                base[idx] = old + j * h
                f[j] = f_of()
            base[idx] = old
            num[k] = (8.0 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12.0 * h)
        return _rel_err(np.asarray(sym).reshape(-1)[flat_idx], num, atol)

    gvals = run(grads, feeds, pvals)
    for x, g in zip(wrt64, gvals):
        err = probe(x, lambda: float(run([y64], feeds, pvals)[0]), g)
        report[(x.name, 1)] = err
        if err > rtol:
            raise GradientCheckError(f"gradient of {x.name!r}: relative error {err:.3g} > {rtol:g}")
    if order >= 2:
        # the direction v enters as inputs (not consts) so that tensors with a None batch
        # dim work: their concrete shape is only known from the feeds
        vs = []
        for i, x in enumerate(wrt64):
            v = F.input(f"__check_grads_v{i}", x.shape, dtype=x.dtype)
            feeds[v.name] = rng.standard_normal(values_of(x, feeds, pvals).shape)
            vs.append(v)
        inner = None
        for g, v in zip(grads, vs):
            t = F.sum(g * v)
            inner = t if inner is None else inner + t
        hvps = run(grad(inner, wrt64), feeds, pvals)
        for i, x in enumerate(wrt64):
            # row i of H v  ==  d/dx_i <grad, v>, checked coordinate by coordinate
            err = probe(x, lambda: float(run([inner], feeds, pvals)[0]), hvps[i])
            report[(x.name, 2)] = err
            if err > rtol:
                raise GradientCheckError(f"Hessian-vector product for {x.name!r}: relative error {err:.3g} > {rtol:g}")
    return report
