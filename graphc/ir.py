"""The IR: immutable, hash-consed nodes and the Graph that holds a set of outputs.

A Node is (op, inputs, attrs) plus the shape and dtype its op's rule inferred when it was
built. Building the same (op, inputs, attrs) twice returns the same object, so common
subexpressions merge as they are written and graphs are cheap to hash and compare.
Shapes may hold ``None`` for the batch dimension, which is specialized at compile time.
"""
from __future__ import annotations

import hashlib
import itertools
import weakref
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import DTypeError, GraphcError, ShapeError, user_location

Shape = tuple  # tuple[int | None, ...]

_ids = itertools.count()
_TABLE: "weakref.WeakValueDictionary[tuple, Node]" = weakref.WeakValueDictionary()


class ArrayValue:
    """A NumPy array made hashable by content, so constants and init arrays can be attrs."""

    __slots__ = ("array", "_hash")

    def __init__(self, array: Any):
        a = np.array(array)  # a private copy: later edits by the user cannot change the graph
        a.setflags(write=False)
        self.array = a
        digest = hashlib.sha1(np.asarray(a, order="C").tobytes()).hexdigest()
        self._hash = hash((a.shape, a.dtype.str, digest))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ArrayValue) and self._hash == other._hash
                and self.array.shape == other.array.shape
                and self.array.dtype == other.array.dtype
                and np.array_equal(self.array, other.array, equal_nan=True))

    def __repr__(self) -> str:
        if self.array.size <= 4:
            return np.array2string(self.array, separator=",").replace("\n", "")
        return f"array{self.array.shape}:{self.array.dtype}"

    def fingerprint(self) -> str:
        a = np.asarray(self.array, order="C")
        return f"{a.shape}{a.dtype.str}{hashlib.sha1(a.tobytes()).hexdigest()[:16]}"


def _freeze(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return ArrayValue(v)
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, np.dtype):
        return v
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def _attr_key(attrs: dict) -> tuple:
    # the type is part of the key so that 1, 1.0 and True stay distinct
    return tuple(sorted((k, type(v).__name__, v) for k, v in attrs.items()))


class Node:
    """One value of the graph: ``op`` applied to ``inputs`` with ``attrs``.

    Users meet Nodes as symbolic tensors; the DSL gives them Python operators.
    """

    __slots__ = ("op", "inputs", "attrs", "shape", "dtype", "src", "id", "__weakref__")
    __array_priority__ = 1000  # numpy scalars/arrays on the left defer to our operators

    op: str
    inputs: tuple
    attrs: dict
    shape: Shape
    dtype: np.dtype
    src: str
    id: int

    def __setattr__(self, k, v):
        raise AttributeError("graphc nodes are immutable")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> str | None:
        return self.attrs.get("name")

    @property
    def opdef(self):
        from .ops import get_op
        return get_op(self.op)

    def __repr__(self) -> str:
        nm = f" {self.name!r}" if self.name else ""
        return f"<{self.op}{nm} #{self.id} {fmt_shape(self.shape)} {self.dtype}>"

    def __hash__(self) -> int:  # identity: nodes are hash-consed
        return object.__hash__(self)

    def __eq__(self, other):  # identity, so nodes work in sets and lists; gc.equal is elementwise
        return self is other

    def __bool__(self):
        raise TypeError("a symbolic graphc tensor has no truth value; use gc.where / comparisons")

    # ---- NumPy interop: a node is not an array --------------------------------------------
    # Without these, NumPy turns a node into a 0-d object array and e.g. np.argmax(node)
    # silently returns 0. Arithmetic with an ndarray on the left still builds nodes.
    def __array__(self, *args, **kwargs):
        raise TypeError(f"{self!r} is a symbolic graphc tensor: it has no value to convert to a NumPy array "
                        "(compile the graph and call it to get arrays)")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import dsl
        fn = _OPERATOR_UFUNCS.get(ufunc.__name__)
        if fn is not None and method == "__call__" and not kwargs:
            return getattr(dsl, fn)(*inputs)
        raise TypeError(_numpy_hint(f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}"),
                                    ufunc.__name__, self))

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(_numpy_hint(f"np.{func.__name__}", func.__name__, self))


# ufuncs that NumPy calls for Python operators with an array on the left (``a * node``)
_OPERATOR_UFUNCS = {"add": "add", "subtract": "subtract", "multiply": "multiply", "divide": "divide",
                    "true_divide": "divide", "matmul": "matmul", "negative": "negative", "greater": "greater",
                    "greater_equal": "greater_equal", "less": "less", "less_equal": "less_equal"}


def _numpy_hint(what: str, name: str, node: "Node") -> str:
    from . import dsl
    alt = {"amax": "max", "true_divide": "divide"}.get(name, name)
    hint = (f"use gc.{alt} instead" if callable(getattr(dsl, alt, None))
            else "graphc has no such op; compute it on the NumPy arrays a compiled call returns")
    return f"{what} cannot take the symbolic graphc tensor {node!r}: {hint}"


def fmt_shape(shape: Shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def describe_operands(inputs: Sequence[Node]) -> str:
    return ", ".join(f"{fmt_shape(x.shape)} {x.dtype}" for x in inputs)


def make(op: str, inputs: Sequence[Node] = (), attrs: dict | None = None, src: str | None = None) -> Node:
    """Build (or find) the node ``op(inputs, attrs)``; shape and dtype rules run here.

    A rule that rejects its operands raises ShapeError/DTypeError naming the op, the
    operand shapes and dtypes, and the user's file:line.
    """
    from .ops import get_op

    attrs = {k: _freeze(v) for k, v in (attrs or {}).items()}
    inputs = tuple(inputs)
    for x in inputs:
        if not isinstance(x, Node):
            raise TypeError(f"{op}: operand {x!r} is not a graphc tensor")
    # ids, not nodes: a live entry keeps its inputs alive, so an id names one node, and
    # the DSL's elementwise __eq__ never runs inside the table
    key = (op, tuple(id(x) for x in inputs), _attr_key(attrs))
    try:
        hit = _TABLE.get(key)
    except TypeError as e:
        raise TypeError(f"{op}: attribute values must be hashable ({e})") from None
    if hit is not None:
        return hit
    opdef = get_op(op)
    try:
        shape, dtype = opdef.infer(inputs, attrs)
    except (ShapeError, DTypeError) as e:
        where = src or user_location()
        raise type(e)(f"{op}: {e} (operands: {describe_operands(inputs) or 'none'}) at {where}") from None
    n = object.__new__(Node)
    for k, v in (("op", op), ("inputs", inputs), ("attrs", attrs), ("shape", tuple(shape)),
                 ("dtype", np.dtype(dtype)), ("src", src or user_location()), ("id", next(_ids))):
        object.__setattr__(n, k, v)
    _TABLE[key] = n
    return n


def rebuild(node: Node, inputs: Sequence[Node], attrs: dict | None = None) -> Node:
    """The same op as ``node`` on new inputs (keeping its source location): what passes use."""
    if attrs is None and all(a is b for a, b in zip(inputs, node.inputs)):
        return node
    return make(node.op, inputs, node.attrs if attrs is None else attrs, src=node.src)


def topo_order(outputs: Iterable[Node]) -> list[Node]:
    """Every node reachable from ``outputs``, each after its inputs (iterative DFS)."""
    order: list[Node] = []
    seen: set[int] = set()
    for root in outputs:
        if id(root) in seen:
            continue
        stack = [(root, False)]
        while stack:
            n, expanded = stack.pop()
            if expanded:
                order.append(n)
                continue
            if id(n) in seen:
                continue
            seen.add(id(n))
            stack.append((n, True))
            for x in reversed(n.inputs):
                if id(x) not in seen:
                    stack.append((x, False))
    return order


class Graph:
    """A set of named output nodes and everything they depend on.

    Graphs are values: passes take a Graph and return a new one.
    """

    def __init__(self, outputs: Sequence[Node] | dict, names: Sequence[str] | None = None):
        if isinstance(outputs, dict):
            names = list(outputs.keys())
            outputs = list(outputs.values())
        self.outputs: tuple[Node, ...] = tuple(outputs)
        self.names: tuple[str, ...] = tuple(names) if names is not None else tuple(
            f"out{i}" for i in range(len(self.outputs)))
        if len(self.names) != len(self.outputs):
            raise GraphcError("Graph: one name per output is needed")
        self._nodes: list[Node] | None = None

    @property
    def nodes(self) -> list[Node]:
        if self._nodes is None:
            self._nodes = topo_order(self.outputs)
        return self._nodes

    @property
    def inputs(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "input"]

    @property
    def params(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "param"]

    def consumers(self) -> dict[int, list[Node]]:
        """id(node) -> the nodes that use it (each listed once)."""
        users: dict[int, list[Node]] = {id(n): [] for n in self.nodes}
        for n in self.nodes:
            for x in dict.fromkeys(n.inputs):
                users[id(x)].append(n)
        return users

    def fingerprint(self) -> str:
        """A stable text hash of the graph's structure (for the compile cache)."""
        h = hashlib.sha256()
        index: dict[int, int] = {}
        for i, n in enumerate(self.nodes):
            index[id(n)] = i
            attrs = ",".join(f"{k}={_attr_fp(v)}" for k, v in sorted(n.attrs.items()))
            ins = ",".join(str(index[id(x)]) for x in n.inputs)
            h.update(f"{n.op}({ins})[{attrs}]{n.shape}{n.dtype.str};".encode())
        h.update(("|".join(f"{nm}={index[id(o)]}" for nm, o in zip(self.names, self.outputs))).encode())
        return h.hexdigest()

    def dump(self) -> str:
        """One line per node: %k (its position here: what generated code refers to), op,
        inputs, attrs, shape, dtype, the user's file:line; outputs marked."""
        outs = {}
        for nm, o in zip(self.names, self.outputs):
            outs.setdefault(id(o), []).append(nm)
        local = {id(n): i for i, n in enumerate(self.nodes)}
        lines = []
        for n in self.nodes:
            ins = ", ".join(f"%{local[id(x)]}" for x in n.inputs)
            attrs = " ".join(f"{k}={v!r}" for k, v in sorted(n.attrs.items()) if not (
                n.opdef.kind == "source" and k in ("shape", "dtype")))
            mark = f"  -> {', '.join(outs[id(n)])}" if id(n) in outs else ""
            where = n.src.rsplit("/", 1)[-1]
            lines.append(f"%{local[id(n)]:<4} = {n.op}({ins}) {attrs}".rstrip()
                         + f" : {fmt_shape(n.shape)} {n.dtype}  @ {where}{mark}")
        return "\n".join(lines)

    __str__ = dump

    def to_networkx(self):
        """A networkx.DiGraph: one vertex per node id (attributes op, shape, dtype, node), edges input -> user."""
        import networkx as nx

        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.id, op=n.op, shape=n.shape, dtype=str(n.dtype), node=n)
            for x in n.inputs:
                g.add_edge(x.id, n.id)
        return g

    def __len__(self) -> int:
        return len(self.nodes)


def _attr_fp(v: Any) -> str:
    if isinstance(v, ArrayValue):
        return v.fingerprint()
    if isinstance(v, tuple):
        return "(" + ",".join(_attr_fp(x) for x in v) + ")"
    return f"{type(v).__name__}:{v!r}"
