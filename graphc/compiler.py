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


def lower(program: Program, batch: int | None, passes=None, in_place: bool = True) -> tuple[Graph, list, Plan]:
    """Specialize, optimize, fuse and plan (everything but code generation); ``in_place=False``
    (check_numerics) keeps new param/state values in scratch until the driver has checked them."""
    from .passes import run_pipeline, specialize  # (not imported for a program started from its manifest)
    from .passes.unroll import unroll_scans
    from .schedule.fusion import fuse
    from .schedule.plan import build_plan
    g = specialize(unroll_scans(program.graph), batch)  # loops (gc.scan) unrolled first
    g = run_pipeline(g, passes)
    kernels = fuse(g)
    k = len(program.user_names)
    updates = list(zip(g.outputs[k:], program.updates))
    plan = build_plan(g, kernels, updates, keep=list(g.outputs[:k]), in_place=in_place)
    return g, kernels, plan


def lowered(program: Program, batch: int | None, options: Mapping) -> Lowered:
    """``lower`` with its timing and node counts, as backends receive it."""
    t0 = time.perf_counter()
    graph, kernels, plan = lower(program, batch, options.get("passes"),
                                 in_place=not options.get("check_numerics"))
    stats = CompileStats(passes_s=time.perf_counter() - t0, nodes_before=len(program.graph),
                         nodes_after=len(graph))
    return Lowered(program, batch, graph, kernels, plan, stats)


def build(program: Program, batch: int | None, target: str, store, options: Mapping) -> Any:
    """The runnable program of ``target`` for one batch size."""
    backend = backends.get(target)
    if not backend.lowered:
        return backend.build(program, batch, store, options)
    if backend.warm is not None:  # a stored manifest: no passes, fusion or code generation
        prog = backend.warm(program, batch, store, options, lambda: lowered(program, batch, options))
        if prog is not None:
            return prog
    return backend.build(lowered(program, batch, options), store, options)
