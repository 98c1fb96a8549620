"""``graphc.to_dot``: a graph, or a compiled step with its fused kernels, as Graphviz DOT.

Nodes are coloured by the part of a training step they belong to: forward (ancestors of the
user's outputs, the loss first), backward (the gradients) and update (the optimizer's
arithmetic: what reads optimizer state, the step counter or a hyper-parameter feed); sources
(inputs, params, state, constants) have colours of their own. For a compiled step or
function the graph is the one the backend compiled (specialized and optimized), and every
fused kernel is a cluster labelled like ``step.kernels()`` lists it.

The DOT text needs nothing beyond graphc; SVG, PNG and PDF files are drawn by Graphviz's
``dot`` program when it is on PATH (``apt install graphviz`` / ``brew install graphviz``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from .errors import GraphcError
from .ir import Graph, Node, fmt_shape, topo_order

COLORS = {
    "forward": "#cfe2f3",
    "backward": "#f4cccc",
    "update": "#d9ead3",
    "input": "#eeeeee",
    "param": "#ffe599",
    "state": "#fff2cc",
    "const": "#ffffff",
}
RENDERED = {".svg": "svg", ".png": "png", ".pdf": "pdf"}


def classify(graph: Graph, n_user: int | None = None, hyper_feeds=()) -> dict[int, str]:
    """id(node) -> ``forward`` | ``backward`` | ``update`` | its source op. ``n_user``: how
    many leading outputs are the user's (default: those not named ``update:*``)."""
    outs = list(graph.outputs)
    if n_user is None:
        n_user = sum(1 for name in graph.names if not str(name).startswith("update:"))
    forward = {id(n) for n in topo_order(outs[:n_user])}
    hyper = set(hyper_feeds)
    seeds = {id(n) for n in graph.nodes
             if n.op == "state" or (n.op == "input" and (n.name in hyper or str(n.name).startswith("hyper:")))}
    out: dict[int, str] = {}
    for n in graph.nodes:  # topological: inputs first
        if n.opdef.kind == "source":
            out[id(n)] = n.op if n.op in COLORS else "const"
        elif id(n) in forward:
            out[id(n)] = "forward"
        elif any(id(x) in seeds or out.get(id(x)) == "update" for x in n.inputs):
            out[id(n)] = "update"
        else:
            out[id(n)] = "backward"
    return out


def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _resolve(obj: Any, batch: int | None):
    """(graph, kernels or None, number of user outputs or None, hyper feed names)."""
    from .runtime import _Compiled
    if isinstance(obj, Node):
        return Graph([obj]), None, 1, ()
    if isinstance(obj, Graph):
        return obj, None, None, ()
    if isinstance(obj, _Compiled):
        program = obj._program
        if batch is None and obj._programs:
            batch = next(reversed(obj._programs))
        if batch is None and any(None in n.shape for n in obj._inputs):
            raise GraphcError("to_dot: this graph has a batch dim; call the step once or pass batch=N")
        prog = obj.program_for(batch)
        if hasattr(prog, "plan") and hasattr(prog, "graph"):
            graph, kernels = prog.graph, prog.plan.kernels
        else:  # the numpy target interprets the program graph: show the native targets' fusion of it
            from .compiler import lower
            graph, _, plan = lower(program, batch, obj._options.get("passes"))
            kernels = plan.kernels
        return graph, kernels, len(program.user_names), tuple(program.hypers)
    raise TypeError(f"to_dot: expected a graphc Graph, tensor, compiled step or function, got {type(obj).__name__}")


def to_dot(obj: Any, path: str | os.PathLike | None = None, *, batch: int | None = None) -> str:
    """The DOT text of ``obj`` (a ``Graph``, a tensor, or a compiled step/function: then its
    compiled graph with each fused kernel as a cluster). ``path``: also write it there; a
    ``.svg``/``.png``/``.pdf`` path is drawn by Graphviz's ``dot`` (a GraphcError if it is
    not installed: nothing is written). ``batch``: which specialization of a step (default:
    the one last compiled)."""
    graph, kernels, n_user, hypers = _resolve(obj, batch)
    role = classify(graph, n_user, hypers)
    idx = {id(n): i for i, n in enumerate(graph.nodes)}
    outputs = {}
    for name, o in zip(graph.names, graph.outputs):
        outputs.setdefault(id(o), []).append(str(name))
    lines = ["digraph graphc {",
             "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [color="#555555", arrowsize=0.6];']
    # each node in at most one cluster: a scalar recomputed in several kernels' preludes stays outside
    owner: dict[int, Any] = {}
    shared: set[int] = set()
    for k in kernels or ():
        for n in k.all_nodes:
            if id(n) in owner and owner[id(n)] is not k:
                shared.add(id(n))
            owner.setdefault(id(n), k)

    def decl(n: Node, indent: str = "  ") -> str:
        i = idx[id(n)]
        head = f"%{i} {n.op}" + (f" {n.name!r}" if n.name else "")
        label = f"{head}\n{fmt_shape(n.shape)} {n.dtype}"
        if id(n) in outputs:
            label += "\n-> " + ", ".join(outputs[id(n)])
        r = role[id(n)]
        extra = ', shape=ellipse' if n.opdef.kind == "source" else ""
        extra += ', penwidth=2' if id(n) in outputs else ""
        return (f"{indent}n{i} [label={_q(label)}, fillcolor={_q(COLORS[r])}, "
                f"tooltip={_q(r + ' @ ' + n.src)}{extra}];")

    placed: set[int] = set()
    for k in kernels or ():
        members = [n for n in k.all_nodes if owner.get(id(n)) is k and id(n) not in shared]
        if not members:
            continue
        label = f"{k.name or 'kernel'}: {k.kind} {fmt_shape(tuple(k.shape))}"
        lines += [f"  subgraph cluster_{k.name or id(k)} {{",
                  f"    label={_q(label)}; style=dashed; color=\"#888888\"; fontsize=9;"]
        for n in members:
            lines.append(decl(n, "    "))
            placed.add(id(n))
        lines.append("  }")
    for n in graph.nodes:
        if id(n) not in placed:
            lines.append(decl(n))
    for n in graph.nodes:
        for x in dict.fromkeys(n.inputs):
            lines.append(f"  n{idx[id(x)]} -> n{idx[id(n)]};")
    used = sorted(set(role.values()), key=list(COLORS).index)
    lines += ["  subgraph cluster_legend {", '    label="legend"; style=solid; color="#cccccc"; fontsize=9;']
    lines += [f"    legend_{r} [label={_q(r)}, fillcolor={_q(COLORS[r])}];" for r in used]
    lines += ["  }", "}"]
    text = "\n".join(lines) + "\n"
    if path is not None:
        write(text, path)
    return text


def write(text: str, path: str | os.PathLike) -> str:
    """Write DOT ``text`` to ``path``: as text, or drawn by Graphviz for .svg/.png/.pdf."""
    path = os.fspath(path)
    fmt = RENDERED.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        with open(path, "w") as f:
            f.write(text)
        return path
    exe = shutil.which("dot")
    if exe is None:
        raise GraphcError(f"to_dot: drawing {path} needs Graphviz's `dot` program on PATH "
                          f"(apt install graphviz / brew install graphviz); nothing was written. "
                          f"A .dot path writes the text without it.")
    r = subprocess.run([exe, f"-T{fmt}", "-o", path], input=text.encode(), capture_output=True)
    if r.returncode != 0:
        raise GraphcError(f"to_dot: Graphviz failed to draw {path}: {r.stderr.decode(errors='replace').strip()}")
    return path
