"""``gc.substitute``: the same computation with some of its nodes replaced.

Graphs are immutable values, so "evaluate the loss somewhere else" is a graph transform:
rebuild every node between the replaced ones and the outputs, keep everything else. Nodes
are hash-consed (``graphc.ir.make``), so a rebuilt node that another graph already built is
that graph's node, and a node that depends on no replaced node is returned as is: a
substituted graph shares all untouched structure with the original (a forward pass at the
perturbed weights of SAM reuses every feed-only subexpression of the first pass).

The result is ordinary nodes: it can be evaluated, compiled, and differentiated with
``gc.grad`` to any order (a Hessian-vector product is ``grad(sum(grad(loss, w) * v), w)``;
``grad`` of a substituted loss is the gradient at the substituted point).
"""
from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

import numpy as np

from . import dsl as F
from .errors import DTypeError, ShapeError, user_location
from .ir import Node, fmt_shape, make, topo_order


def _replacement(old: Node, new: Any, where: str) -> Node:
    """``new`` as a node that may stand for ``old``: a tensor of the same shape and dtype
    (numbers and arrays become constants of ``old``'s dtype)."""
    if not isinstance(old, Node):
        raise TypeError(f"substitute: every key must be a graphc tensor, got {type(old).__name__} {old!r} at {where}")
    if not isinstance(new, Node):
        if isinstance(new, (bool, np.bool_)) or not isinstance(new, (numbers.Number, np.ndarray, np.generic)):
            raise TypeError(f"substitute: the replacement for {old!r} (created at {old.src}) must be a graphc "
                            f"tensor, a number or a NumPy array, got {type(new).__name__} at {where}")
        arr = np.asarray(new)
        if arr.ndim == 0:
            arr = np.full(old.shape, arr) if None not in old.shape else arr
        new = F.const(arr.astype(old.dtype))
    if new.shape != old.shape:
        raise ShapeError(f"substitute: cannot replace {old!r} (shape {fmt_shape(old.shape)}, created at {old.src}) "
                         f"by {new!r} (shape {fmt_shape(new.shape)}, created at {new.src}): a replacement must have "
                         f"the same shape, so every op that used the old node still fits, at {where}")
    if new.dtype != old.dtype:
        raise DTypeError(f"substitute: cannot replace {old!r} (dtype {old.dtype}, created at {old.src}) by {new!r} "
                         f"(dtype {new.dtype}, created at {new.src}): a replacement must have the same dtype "
                         f"(use gc.cast), at {where}")
    return new


def substitute(nodes: Node | Sequence[Node], replace: Mapping[Node, Any]) -> Node | list[Node]:
    """``nodes`` recomputed with each key of ``replace`` standing for its value.

    ``replace`` maps nodes (params, inputs, state or any intermediate) to tensors of the
    same shape and dtype; a number or NumPy array becomes a constant of the old node's
    dtype. The replacement is simultaneous and not recursive: a value is used as given,
    so ``{w: w + eps}`` means "w + eps wherever w was used", and the ``w`` inside
    ``w + eps`` stays ``w``. Keys that ``nodes`` do not depend on change nothing.

    Returns one node for one node, else a list in the order given. Nodes that depend on no
    key are returned unchanged (the very same objects), and rebuilt nodes are hash-consed,
    so substituting twice gives the same graph. A replacement of another shape is a
    ShapeError, of another dtype a DTypeError, naming both nodes, where each was created
    and the calling line.

    Example (the loss at perturbed weights, as sharpness-aware minimization needs)::

        loss_adv = gc.substitute(loss, {W: W + gc.stop_gradient(eps)})
        g_adv = gc.grad(loss_adv, W)      # the gradient of the loss at W + eps
    """
    where = user_location()
    single = isinstance(nodes, Node)
    roots = [nodes] if single else list(nodes)
    for r in roots:
        if not isinstance(r, Node):
            raise TypeError(f"substitute: expected a graphc tensor or a sequence of them, got {type(r).__name__} "
                            f"at {where}")
    if not isinstance(replace, Mapping):
        raise TypeError(f"substitute: the replacements must be a dict {{old node: new node}}, got "
                        f"{type(replace).__name__} at {where}")
    new: dict[int, Node] = {id(old): _replacement(old, v, where) for old, v in replace.items()}
    if new:
        for n in topo_order(roots):
            if id(n) in new:
                continue
            ins = [new.get(id(x), x) for x in n.inputs]
            if any(a is not b for a, b in zip(ins, n.inputs)):
                new[id(n)] = make(n.op, ins, n.attrs, src=n.src)
    out = [new.get(id(r), r) for r in roots]
    return out[0] if single else out
