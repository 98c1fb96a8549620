"""Control flow: ``scan``, a loop in the graph (``jax.lax.scan`` semantics).

A scan is ONE node (op ``scan``, kind "other") whose attr ``body`` is a :class:`Body`: the
user's ``fn(carry, x) -> (carry, y)`` traced once on placeholder tensors (op ``scan_arg``),
closed over nothing: every tensor the body uses that depends on no placeholder (a param, a
feed, a loop-invariant expression of them) became a placeholder too and is an extra input
of the node. The node's inputs are therefore ``init leaves + xs leaves + captured tensors``
and its body a pure function of ``carry leaves + x slices + captured tensors``.

A scan has several results, so the node itself is a tuple (shape (), dtype object) that
only ``scan_out`` nodes read: ``scan_out(i)`` for i in ``[0, n_carry)`` is the final carry,
``[n_carry, n_carry + n_y)`` the stacked ys, ``[n_carry + n_y, 2 n_carry + n_y)`` the
stacked per-step carries (the carry *entering* the step that reads ``xs[t]``, stored at
``t``): the residuals the adjoint needs, free to drop when nothing reads them.

The adjoint (``_scan_vjp``, called by ``grad`` with the cotangents of all results at once)
is another scan, running the other way: its carry holds the carry's cotangent and the
accumulated cotangents of the captured tensors; its xs are the stacked carries, the xs and
the ys' cotangents; its body recomputes the forward body from the saved carry and applies
``grad`` to ``sum(out * cotangent)`` (so the adjoint is ordinary nodes and can itself be
differentiated: second derivatives follow). Only the carries are saved (``checkpoint=True``,
the default: one extra body forward per step in the reverse pass, O(T x |carry|) memory);
``checkpoint=False`` saves the forward values the reverse body reads as well, computed once
by the forward scan (O(T x |residuals|) memory, no recomputation).

The numpy target interprets the loop (``_scan_eval``). The compiled targets unroll it
before specialization (graphc/passes/unroll.py), so every backend compiles it unchanged.
"""
from __future__ import annotations

import builtins
import itertools
import numbers
from typing import Any, Callable

import numpy as np

from ..errors import DTypeError, ShapeError, user_location
from ..ir import Graph, Node, _attr_fp, fmt_shape, make, rebuild, topo_order
from .base import OpDef, register

OBJECT = np.dtype(object)


# ---- pytrees of tuples, lists and dicts -------------------------------------------------

def flatten(tree: Any, path: str) -> tuple[list, Any, list[str]]:
    """(leaves, treedef, leaf paths) of nested tuples/lists/dicts; None is an empty node."""
    leaves: list = []
    paths: list[str] = []

    def go(t, p):
        if t is None:
            return ("none",)
        if isinstance(t, (tuple, list)) and not isinstance(t, Node):
            return (type(t).__name__, tuple(go(c, f"{p}[{i}]") for i, c in enumerate(t)))
        if isinstance(t, dict):
            keys = sorted(t, key=repr)
            return ("dict", tuple(keys), tuple(go(t[k], f"{p}[{k!r}]") for k in keys))
        leaves.append(t)
        paths.append(p)
        return ("leaf",)

    return leaves, go(tree, path), paths


def unflatten(treedef: Any, leaves: list) -> Any:
    it = iter(leaves)

    def go(d):
        if d[0] == "none":
            return None
        if d[0] == "leaf":
            return next(it)
        if d[0] == "dict":
            return {k: go(c) for k, c in zip(d[1], d[2])}
        kids = [go(c) for c in d[1]]
        return tuple(kids) if d[0] == "tuple" else kids

    return go(treedef)


def _fmt_tree(d) -> str:
    if d[0] == "none":
        return "None"
    if d[0] == "leaf":
        return "*"
    if d[0] == "dict":
        return "{" + ", ".join(f"{k!r}: {_fmt_tree(c)}" for k, c in zip(d[1], d[2])) + "}"
    inner = ", ".join(_fmt_tree(c) for c in d[1])
    return f"({inner}{',' if len(d[1]) == 1 else ''})" if d[0] == "tuple" else f"[{inner}]"


# ---- the body ------------------------------------------------------------------------------

class Body:
    """A traced loop body: ``outputs`` (carry leaves, then y leaves) as a function of ``args``
    (``scan_arg`` placeholders: carry leaves, x slices, captured tensors). Equal bodies (the
    same structure) compare and hash equal; the repr names the structure's fingerprint, so
    the compile cache keys on it."""

    __slots__ = ("args", "outputs", "n_carry", "n_x", "y_tree", "_fp", "_order")

    def __init__(self, args, outputs, n_carry: int, n_x: int, y_tree):
        self.args, self.outputs = tuple(args), tuple(outputs)
        self.n_carry, self.n_x, self.y_tree = n_carry, n_x, y_tree
        self._order = None
        self._fp = self._fingerprint()

    @property
    def n_y(self) -> int:
        return len(self.outputs) - self.n_carry

    @property
    def n_captured(self) -> int:
        return len(self.args) - self.n_carry - self.n_x

    def order(self) -> list[Node]:
        if self._order is None:
            self._order = topo_order(self.outputs)
        return self._order

    def _fingerprint(self) -> str:
        """Graph.fingerprint's text with each placeholder named by its position in ``args``
        (not by its process-wide uid): the same body gives the same text in every process."""
        import hashlib
        h = hashlib.sha256()
        pos = {id(a): k for k, a in enumerate(self.args)}
        index: dict[int, int] = {}
        for i, n in enumerate(self.order()):
            index[id(n)] = i
            if id(n) in pos:
                h.update(f"arg{pos[id(n)]}{n.shape}{n.dtype.str};".encode())
                continue
            attrs = ",".join(f"{k}={_attr_fp(v)}" for k, v in sorted(n.attrs.items()))
            ins = ",".join(str(index[id(x)]) for x in n.inputs)
            h.update(f"{n.op}({ins})[{attrs}]{n.shape}{n.dtype.str};".encode())
        h.update(("|".join(str(index[id(o)]) for o in self.outputs)).encode())
        sig = ";".join(f"{fmt_shape(a.shape)}{a.dtype.str}" for a in self.args)
        return f"{h.hexdigest()}|{sig}|{self.n_carry},{self.n_x}|{self.y_tree!r}"

    def __hash__(self) -> int:
        return hash(self._fp)

    def __eq__(self, other) -> bool:
        return isinstance(other, Body) and other._fp == self._fp

    def __repr__(self) -> str:
        import hashlib
        return (f"Body(carry={self.n_carry}, x={self.n_x}, y={self.n_y}, captured={self.n_captured}, "
                f"{hashlib.sha256(self._fp.encode()).hexdigest()[:16]})")

    def mapped(self, fn) -> "Body":
        """The body rebuilt by ``fn`` (a list of nodes -> the rebuilt list), applied to
        outputs and arguments at once (e.g. with_float_dtype)."""
        new = fn(list(self.outputs) + list(self.args))
        k = len(self.outputs)
        return Body(new[k:], new[:k], self.n_carry, self.n_x, self.y_tree)

    def graph(self) -> Graph:
        """The body as a Graph (outputs named carry0.., y0..) for ``dump``."""
        names = [f"carry{i}" for i in range(self.n_carry)] + [f"y{i}" for i in range(self.n_y)]
        return Graph(list(self.outputs), names)


def replay(outputs, mapping: dict, src_suffix: str | None = None, expand=None) -> list[Node]:
    """``outputs`` rebuilt with ``mapping`` (id(old node) -> new node) substituted; with
    ``expand`` (the unroll pass), scan nodes met on the way are replaced by what it returns."""
    new = dict(mapping)
    for n in topo_order(outputs):
        if id(n) in new:
            continue
        ins = [new[id(x)] for x in n.inputs]
        if expand is not None and n.op in ("scan", "scan_out"):
            new[id(n)] = expand(n, ins)
        elif src_suffix is not None and n.inputs:
            new[id(n)] = make(n.op, ins, n.attrs, src=n.src + src_suffix)
        else:
            new[id(n)] = rebuild(n, ins)
    return [new[id(o)] for o in outputs]


def run_body(body: Body, values: list) -> list:
    """The body's outputs (NumPy arrays) for the argument values, by the interpreter."""
    env = {id(a): v for a, v in zip(body.args, values)}
    for n in body.order():
        if id(n) in env:
            continue
        v = n.opdef.evaluate([env[id(x)] for x in n.inputs], n.attrs, n)
        env[id(n)] = v if n.op == "scan" else np.asarray(v)
    return [env[id(o)] for o in body.outputs]


# ---- ops ---------------------------------------------------------------------------------

def _arg_infer(inputs, attrs):
    return attrs["shape"], attrs["dtype"]


def _arg_eval(args, attrs, node):
    raise RuntimeError("a scan_arg placeholder has no value outside its scan's body")


register(OpDef("scan_arg", "source", _arg_infer, _arg_eval,
               doc="a placeholder of a scan body: a carry leaf, an x slice or a captured tensor"))


def out_types(node: Node) -> list[tuple]:
    """(shape, dtype) of each result of the scan ``node`` (see the module doc)."""
    body, T = node.attrs["body"], node.attrs["length"]
    nc = body.n_carry
    carry = [(a.shape, a.dtype) for a in body.args[:nc]]
    ys = [((T,) + o.shape, o.dtype) for o in body.outputs[nc:]]
    return carry + ys + [((T,) + s, d) for s, d in carry]


def _scan_infer(inputs, attrs):
    body = attrs["body"]
    if len(inputs) != len(body.args):
        raise ShapeError(f"{len(inputs)} operands for a body of {len(body.args)} arguments")
    for i, (x, a) in enumerate(zip(inputs, body.args)):
        want = a.shape if i < body.n_carry or i >= body.n_carry + body.n_x else (attrs["length"],) + a.shape
        if x.shape != want or x.dtype != a.dtype:
            raise ShapeError(f"operand {i} is {fmt_shape(x.shape)} {x.dtype}, the body expects "
                             f"{fmt_shape(want)} {a.dtype}")
    return (), OBJECT


def _scan_eval(args, attrs, node):
    body, T, rev = attrs["body"], attrs["length"], attrs["reverse"]
    nc, nx = body.n_carry, body.n_x
    carry = [np.asarray(a) for a in args[:nc]]
    xs, caps = args[nc:nc + nx], list(args[nc + nx:])
    saved: list = [None] * T
    ys: list = [None] * T
    for i in range(T):
        t = T - 1 - i if rev else i
        saved[t] = carry
        outs = run_body(body, carry + [x[t] for x in xs] + caps)
        carry, ys[t] = [np.asarray(o) for o in outs[:nc]], outs[nc:]
    stacked_y = [np.stack([ys[t][j] for t in range(T)]) for j in range(body.n_y)]
    stacked_c = [np.stack([saved[t][j] for t in range(T)]) for j in range(nc)]
    return tuple(carry + stacked_y + stacked_c)


def _scan_vjp_unused(node, g):  # grad calls vjp_multi with every result's cotangent
    raise AssertionError("scan's VJP takes the cotangents of all its results (autodiff.grad)")


register(OpDef("scan", "other", _scan_infer, _scan_eval, _scan_vjp_unused,
               doc="a loop: attr body (a traced fn(carry, x) -> (carry, y)), length, reverse; a tuple of "
                   "results read by scan_out (final carry, stacked ys, stacked per-step carries)"))


def _out_infer(inputs, attrs):
    (s,) = inputs
    if s.op != "scan":
        raise ShapeError("scan_out reads the results of a scan node")
    types = out_types(s)
    i = attrs["index"]
    if not 0 <= i < len(types):
        raise ShapeError(f"result {i} of a scan with {len(types)} results")
    return types[i]


register(OpDef("scan_out", "other", _out_infer, lambda args, attrs, node: args[0][attrs["index"]],
               None, doc="result `index` of a scan node (final carry leaf, stacked y, stacked carry)"))


def result(node: Node, i: int) -> Node:
    return make("scan_out", (node,), {"index": int(i)}, src=node.src)


# ---- building a scan ------------------------------------------------------------------------

_UID = itertools.count()


def _placeholder(i: int, shape, dtype) -> Node:
    """A new placeholder, distinct from every other (its ``uid``): nested traces and the
    adjoint's bodies never confuse each other's arguments. Bodies fingerprint placeholders
    by position, not uid."""
    return make("scan_arg", (), {"index": i, "uid": next(_UID), "shape": tuple(shape), "dtype": np.dtype(dtype)})


def _leaf(v, path: str, where: str) -> Node:
    from .. import dsl as F
    if isinstance(v, Node):
        return v
    if isinstance(v, (numbers.Number, np.ndarray, np.generic)) and not isinstance(v, (bool, np.bool_)):
        return F.const(v)
    raise TypeError(f"scan: {path} must be a graphc tensor (or a number/array), got {type(v).__name__} at {where}")


def scan(fn: Callable, init: Any, xs: Any = None, length: int | None = None, reverse: bool = False,
         unroll: int | bool = 1, checkpoint: bool = True):
    """See ``graphc.scan`` (dsl.py)."""
    where = user_location()
    if not callable(fn):
        raise TypeError(f"scan: fn must be callable, got {type(fn).__name__} at {where}")
    for name, v in (("reverse", reverse), ("checkpoint", checkpoint)):
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"scan: {name} must be a bool, got {v!r} at {where}")
    if isinstance(unroll, bool):
        unroll = 1
    if not isinstance(unroll, numbers.Integral) or unroll < 1:
        raise ValueError(f"scan: unroll must be a positive int or a bool, got {unroll!r} at {where}")
    init_leaves, c_tree, c_paths = flatten(init, "carry")
    init_leaves = [_leaf(v, p, where) for v, p in zip(init_leaves, c_paths)]
    x_leaves, x_tree, x_paths = flatten(xs, "xs")
    x_leaves = [_leaf(v, p, where) for v, p in zip(x_leaves, x_paths)]
    if length is not None and (isinstance(length, bool) or not isinstance(length, numbers.Integral)):
        raise TypeError(f"scan: length must be an int, got {length!r} at {where}")
    T = None if length is None else int(length)
    for x, p in zip(x_leaves, x_paths):
        if x.ndim == 0:
            raise ShapeError(f"scan: {p} is a scalar (shape ()); every xs leaf needs a leading axis to scan "
                             f"over at {where}")
        if x.shape[0] is None:
            raise ShapeError(f"scan: {p} has shape {fmt_shape(x.shape)}: its leading (scanned) axis is the batch "
                             f"dimension (None); put the time axis first at {where}")
        if T is None:
            T = x.shape[0]
        elif x.shape[0] != T:
            first = f"{x_paths[0]} has {x_leaves[0].shape[0]}" if length is None else f"length={length}"
            raise ShapeError(f"scan: {p} has shape {fmt_shape(x.shape)}, leading dim {x.shape[0]}, but {first}: "
                             f"every xs leaf must have the same leading (scanned) dim at {where}")
    if T is None:
        raise ShapeError(f"scan: with xs=None (or no xs leaves) the number of steps must be given: length=... "
                         f"at {where}")
    if T < 1:
        raise ShapeError(f"scan: length must be at least 1, got {T} at {where}")

    # trace fn once on placeholders
    nc, nx = len(init_leaves), len(x_leaves)
    c_ph = [_placeholder(i, c.shape, c.dtype) for i, c in enumerate(init_leaves)]
    x_ph = [_placeholder(nc + j, x.shape[1:], x.dtype) for j, x in enumerate(x_leaves)]
    out = fn(unflatten(c_tree, c_ph), unflatten(x_tree, x_ph))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"scan: fn must return a pair (carry, y), got {type(out).__name__} at {where}")
    c_out, y_out = out
    co_leaves, co_tree, co_paths = flatten(c_out, "carry")
    if co_tree != c_tree:
        raise ShapeError(f"scan: fn returned a carry of structure {_fmt_tree(co_tree)} but init has structure "
                         f"{_fmt_tree(c_tree)}: the carry must keep its structure at {where}")
    co_leaves = [_leaf(v, p, where) for v, p in zip(co_leaves, co_paths)]
    for o, c, p in zip(co_leaves, init_leaves, c_paths):
        if o.shape != c.shape:
            raise ShapeError(f"scan: the carry leaf {p} enters fn with shape {fmt_shape(c.shape)} {c.dtype} but "
                             f"fn returns it with shape {fmt_shape(o.shape)} {o.dtype} (created at {o.src}): "
                             f"the carry must keep its shapes at {where}")
        if o.dtype != c.dtype:
            raise DTypeError(f"scan: the carry leaf {p} enters fn as {c.dtype} {fmt_shape(c.shape)} but fn "
                             f"returns it as {o.dtype} (created at {o.src}): the carry must keep its dtypes "
                             f"(gc.cast it) at {where}")
    y_leaves, y_tree, y_paths = flatten(y_out, "y")
    y_leaves = [_leaf(v, p, where) for v, p in zip(y_leaves, y_paths)]
    body, captured = _close(c_ph + x_ph, co_leaves + y_leaves, nc, nx, y_tree)
    node = make("scan", init_leaves + x_leaves + captured,
                {"body": body, "length": T, "reverse": bool(reverse), "unroll": int(unroll),
                 "checkpoint": bool(checkpoint)}, src=where)
    carry = [result(node, i) for i in range(nc)]
    ys = [result(node, nc + j) for j in range(len(y_leaves))]
    return unflatten(c_tree, carry), unflatten(y_tree, ys)


def _close(phs: list, outputs: list, nc: int, nx: int, y_tree) -> tuple[Body, list]:
    """The Body of ``outputs`` over the placeholders ``phs``: every node that depends on no
    placeholder and feeds one that does (or is an output) is captured (a constant stays in)."""
    own = {id(p) for p in phs}
    dep: dict[int, bool] = {}
    order = topo_order(outputs)
    for n in order:
        dep[id(n)] = id(n) in own or builtins.any(dep[id(x)] for x in n.inputs)
    captured: list[Node] = []
    seen: set[int] = set()

    def capture(x):
        if not dep[id(x)] and x.op != "const" and id(x) not in seen:
            seen.add(id(x))
            captured.append(x)

    for n in order:
        if dep[id(n)]:
            for x in n.inputs:
                capture(x)
    for o in outputs:
        capture(o)
    k0 = len(phs)
    cap_ph = [_placeholder(k0 + j, c.shape, c.dtype) for j, c in enumerate(captured)]
    mapping = {id(c): p for c, p in zip(captured, cap_ph)}
    body_out = replay(outputs, mapping)
    return Body(phs + cap_ph, body_out, nc, nx, y_tree), captured


# ---- the adjoint ------------------------------------------------------------------------------

def vjp_multi(node: Node, gs: list) -> list:
    """Cotangents of the scan ``node``'s inputs given those of its results (None: zero)."""
    from .. import dsl as F
    from ..autodiff import grad

    body, T, rev = node.attrs["body"], node.attrs["length"], node.attrs["reverse"]
    nc, nx, ny = body.n_carry, body.n_x, body.n_y
    ins = node.inputs
    init, xs, caps = ins[:nc], ins[nc:nc + nx], ins[nc + nx:]
    g_final, g_ys, g_saved = gs[:nc], gs[nc:nc + ny], gs[nc + ny:]
    fc = [i for i in range(nc) if init[i].dtype.kind == "f"]
    fx = [j for j in range(nx) if xs[j].dtype.kind == "f"]
    fk = [j for j in range(len(caps)) if caps[j].dtype.kind == "f"]
    fy = [j for j in range(ny) if g_ys[j] is not None and body.outputs[nc + j].dtype.kind == "f"]
    fs = [i for i in fc if g_saved[i] is not None]
    if not (builtins.any(g_final[i] is not None for i in fc) or fy or fs) or not (fc or fx or fk):
        return [None] * len(ins)
    saved = [result(node, nc + ny + i) for i in range(nc)]
    carry0 = ([g_final[i] if g_final[i] is not None else F.zeros_like(init[i]) for i in fc],
              [F.zeros_like(caps[j]) for j in fk])

    # one step's VJP, built once on the body's own placeholders and new ones for the
    # cotangents; grad is taken w.r.t. the captured tensors' placeholders, so that their
    # cotangents are partial derivatives (a captured U and a captured U.T are independent
    # arguments of the body)
    cp, xp, kp = body.args[:nc], body.args[nc:nc + nx], body.args[nc + nx:]
    gcp = [_placeholder(-1, cp[i].shape, cp[i].dtype) for i in fc]
    gyp = [_placeholder(-1, body.outputs[nc + j].shape, body.outputs[nc + j].dtype) for j in fy]
    terms = [F.sum(body.outputs[i] * gcp[k]) for k, i in enumerate(fc)] + [
        F.sum(body.outputs[nc + j] * gyp[k]) for k, j in enumerate(fy)]
    s = terms[0]
    for t in terms[1:]:
        s = s + t
    step_vjp = grad(s, [cp[i] for i in fc] + [xp[j] for j in fx] + [kp[j] for j in fk])
    nf = len(fc) + len(fx)
    # a captured tensor's per-step term A_t^T @ B_t (a weight's gradient, A_t: the step's
    # input rows) is not summed in the carry by T skinny GEMMs: the reverse scan emits B_t
    # (and A_t unless its stacked values exist already) and ONE GEMM over the T*rows stacked
    # rows follows it (as oneDNN/cuDNN do). Other terms stay in the carry.
    rest, gemms = _split_param_cotangents(step_vjp[nf:], {id(a) for a in cp + xp})
    outs = list(step_vjp[:nf]) + [t for t in rest if t is not None] + [a for _, a, _ in gemms] + [
        b for _, _, b in gemms]
    rk = [k for k, t in enumerate(rest) if t is not None]
    residuals: list[Node] = []
    stacked: list[Node] = []
    if not node.attrs["checkpoint"]:
        # save what the reverse step reads from the forward (computed once, by a forward scan
        # that also returns them) instead of recomputing it
        residuals = _residuals(outs, {id(a) for a in cp + xp}, {id(a) for a in gcp + gyp})
        aug = make("scan", ins, {**node.attrs, "body": Body(body.args, body.outputs + tuple(residuals), nc, nx,
                                                            ("residuals", body.y_tree))}, src=node.src)
        stacked = [result(aug, nc + ny + r) for r in range(len(residuals))]
    # A_t's stacked values outside the reverse scan: saved carries, xs, saved residuals
    outside = {id(cp[i]): saved[i] for i in range(nc)}
    outside.update({id(xp[j]): xs[j] for j in range(nx)})
    outside.update({id(r): v for r, v in zip(residuals, stacked)})
    a_emit = [a for _, a, _ in gemms if id(a) not in outside]
    a_emit = list({id(a): a for a in a_emit}.values())
    b_emit = list({id(b): b for _, _, b in gemms}.values())  # one B_t may serve several weights
    carry0 = (carry0[0], [carry0[1][k] for k in rk])
    bxs = (saved, list(xs), [g_ys[j] for j in fy], [g_saved[i] for i in fs], stacked)
    n_rest = len(rk)
    slots: dict = {}  # id(emitted node) -> its stacked y (equal nodes replay to one y)

    def backward(carry, x):
        gc, gk = carry
        c, xt, gy, gsv, res = x
        pairs = list(zip(cp, c)) + list(zip(xp, xt)) + list(zip(kp, caps)) + list(zip(gcp, gc)) + list(
            zip(gyp, gy)) + list(zip(residuals, res))
        g = replay(outs[:nf + n_rest] + a_emit + b_emit, {id(a): v for a, v in pairs})
        g_c = list(g[:len(fc)])
        for k, i in enumerate(fs):
            p = fc.index(i)
            g_c[p] = g_c[p] + gsv[k]
        g_x = list(g[len(fc):nf])
        g_k = [a + b for a, b in zip(gk, g[nf:nf + n_rest])]
        uniq: dict = {}
        for e, v in zip(a_emit + b_emit, g[nf + n_rest:]):
            slots[id(e)] = uniq.setdefault(id(v), (len(uniq), v))[0]
        return (g_c, g_k), (g_x, [v for _, v in uniq.values()])

    (g_init, g_rest), (g_xs, e_st) = scan(backward, carry0, bxs, length=T, reverse=not rev,
                                                unroll=node.attrs["unroll"], checkpoint=node.attrs["checkpoint"])
    a_of = {k: e_st[i] for k, i in slots.items()}
    a_of.update(outside)
    g_caps: list = [None] * len(fk)
    for k, v in zip(rk, g_rest):
        g_caps[k] = v
    for k, a, b in gemms:
        bs = a_of[id(b)]
        m, n = a.shape[-1], bs.shape[-1]  # -1: T*rows, also where rows is the batch (None)
        term = F.reshape(a_of[id(a)], (-1, m)).T @ F.reshape(bs, (-1, n))
        g_caps[k] = term if g_caps[k] is None else g_caps[k] + term
    out: list = [None] * len(ins)
    for k, i in enumerate(fc):
        out[i] = g_init[k]
    for k, j in enumerate(fx):
        out[nc + j] = g_xs[k]
    for k, j in enumerate(fk):
        out[nc + nx + j] = g_caps[k]
    return out


def _split_param_cotangents(gk: list, per_step: set) -> tuple[list, list]:
    """Each captured tensor's step cotangent (an ``add`` tree) split into the terms
    ``matmul(transpose(A), B)`` with 2-D A and B whose A depends on the step's carry or x
    (``per_step``: their placeholders): (the rest summed per
    tensor, None where nothing is left; [(tensor index, A, B)])."""
    dep: dict[int, bool] = {}
    for n in topo_order(gk):
        dep[id(n)] = id(n) in per_step or builtins.any(dep[id(x)] for x in n.inputs)
    rest: list = []
    gemms: list = []
    for k, g in enumerate(gk):
        terms, stack = [], [g]
        while stack:
            n = stack.pop()
            if n.op == "add" and builtins.all(x.shape == n.shape and x.dtype == n.dtype for x in n.inputs):
                stack.extend(reversed(n.inputs))
            else:
                terms.append(n)
        left = []
        for t in terms:
            a = t.inputs[0].inputs[0] if t.op == "matmul" and t.inputs[0].op == "transpose" else None
            if (a is not None and t.ndim == 2 and a.ndim == 2 and t.inputs[1].ndim == 2
                    and t.inputs[0].attrs["axes"] == (1, 0) and dep[id(a)]):
                gemms.append((k, a, t.inputs[1]))
            else:
                left.append(t)
        s = left[0] if left else None
        for t in left[1:]:
            s = s + t
        rest.append(s)
    return rest, gemms


def _residuals(outputs: list, fwd: set, cot: set) -> list[Node]:
    """The forward values the reverse step reads: nodes of ``outputs``' graph that depend on a
    forward argument (``fwd``: carry or x placeholders, themselves excluded) but on no
    cotangent (``cot``), and feed a node that does (or are outputs)."""
    order = topo_order(outputs)
    on_f: dict[int, bool] = {}
    on_c: dict[int, bool] = {}
    for n in order:
        on_f[id(n)] = id(n) in fwd or builtins.any(on_f[id(x)] for x in n.inputs)
        on_c[id(n)] = id(n) in cot or builtins.any(on_c[id(x)] for x in n.inputs)
    out: dict[int, Node] = {}
    reads = [x for n in order if on_c[id(n)] for x in n.inputs] + list(outputs)
    for x in reads:
        if on_f[id(x)] and not on_c[id(x)] and id(x) not in fwd and x.op != "scan":
            out.setdefault(id(x), x)
    return list(out.values())


__all__ = ["scan", "Body", "replay", "run_body", "vjp_multi", "result", "out_types", "flatten", "unflatten"]
