"""The native pipeline up to the backend: specialize -> passes -> fuse -> schedule/plan.

``build`` looks the target up in the backend registry (graphc/backends), lowers the program
for one batch size when the backend wants it lowered, and hands the result to the backend.
Code generation, loading and calling live in the backends; nothing there imports this file.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Mapping

from . import backends
from .backends.base import CompileStats, Lowered
from .ir import Graph
from .training import Program

if TYPE_CHECKING:
    from .schedule.plan import Plan


def lower(program: Program, batch: int | None, passes=None, in_place: bool = True,
          loops: bool = False) -> tuple[Graph, list, Plan]:
    """Specialize, optimize, fuse and plan (everything but code generation); ``in_place=False``
    (check_numerics) keeps new param/state values in scratch until the driver has checked them.
    ``loops`` (a backend that compiles loops, ``Backend.loops``): each ``scan`` stays one kernel
    of kind "scan" whose body is lowered on its own (``lower_body``); otherwise (and under
    check_numerics) scans are unrolled first."""
    from .passes import run_pipeline, specialize  # (not imported for a program started from its manifest)
    from .passes.unroll import merge_scans, unroll_scans
    from .schedule.fusion import fuse
    from .schedule.plan import build_plan, place_loops
    loops = loops and in_place
    g = merge_scans(specialize(program.graph, batch)) if loops else specialize(unroll_scans(program.graph), batch)
    g = run_pipeline(g, passes)
    kernels = fuse(g)
    for kn in kernels:
        if kn.kind == "scan":
            kn.body = lower_body(kn.nodes[0], passes)
    k = len(program.user_names)
    updates = list(zip(g.outputs[k:], program.updates))
    plan = build_plan(g, kernels, updates, keep=list(g.outputs[:k]), in_place=in_place)
    place_loops(plan)
    return g, kernels, plan


def lower_body(scan, passes=None) -> tuple[Graph, list, Plan, list]:
    """A (specialized) scan node's body optimized, fused and planned as a graph of its own: its
    placeholders (carry leaves, x slices, captured tensors) are its sources, its outputs are
    kept to the end of a step. Inner scans are unrolled. Returns (graph, kernels, plan,
    the body's arguments after the passes: None where a pass dropped an unused one)."""
    from .passes import run_pipeline
    from .passes.unroll import unroll_scans
    from .schedule.fusion import fuse
    from .schedule.plan import build_plan
    body = scan.attrs["body"]
    g = unroll_scans(Graph(list(body.outputs), [f"out{i}" for i in range(len(body.outputs))]))
    g = run_pipeline(g, passes)
    kernels = fuse(g)
    plan = build_plan(g, kernels, [], keep=list(g.outputs))
    by_uid = {n.attrs["uid"]: n for n in g.nodes if n.op == "scan_arg"}
    return g, kernels, plan, [by_uid.get(a.attrs["uid"]) for a in body.args]


def lowered(program: Program, batch: int | None, options: Mapping, loops: bool = False) -> Lowered:
    """``lower`` with its timing and node counts, as backends receive it."""
    t0 = time.perf_counter()
    graph, kernels, plan = lower(program, batch, options.get("passes"),
                                 in_place=not options.get("check_numerics"), loops=loops)
    stats = CompileStats(passes_s=time.perf_counter() - t0, nodes_before=len(program.graph),
                         nodes_after=len(graph))
    return Lowered(program, batch, graph, kernels, plan, stats)


def build(program: Program, batch: int | None, target: str, store, options: Mapping) -> Any:
    """The runnable program of ``target`` for one batch size."""
    backend = backends.get(target)
    if not backend.lowered:
        return backend.build(program, batch, store, options)
    if backend.warm is not None:  # a stored manifest: no passes, fusion or code generation
        prog = backend.warm(program, batch, store, options, lambda: lowered(program, batch, options, backend.loops))
        if prog is not None:
            return prog
    return backend.build(lowered(program, batch, options, backend.loops), store, options)
