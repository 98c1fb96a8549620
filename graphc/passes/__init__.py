"""Graph -> Graph passes, each pure and testable alone, run as an explicit named list."""
from __future__ import annotations

from typing import Sequence

from ..ir import Graph
from .simplify import cse, dce, fold_constants, simplify
from .snapshot import snapshot_sources
from .specialize import specialize

PIPELINE = {
    "simplify": simplify,
    "fold_constants": fold_constants,
    "cse": cse,
    "dce": dce,
}


def run_pipeline(graph: Graph, names: Sequence[str] | None = None) -> Graph:
    """Run the named passes (all of PIPELINE, in order, by default) twice: folding can
    expose new simplifications and vice versa. Then, always, ``snapshot_sources`` (needed
    for correctness, not an optimization)."""
    names = list(PIPELINE) if names is None else list(names)
    for name in names:
        if name not in PIPELINE:
            raise ValueError(f"unknown pass {name!r}; available: {list(PIPELINE)}")
    from ..logs import enabled, log_pass
    verbose = enabled("passes")  # GRAPHC_LOG=passes: node counts and rewrites of each pass
    for rnd in range(2):
        for name in names:
            before = graph
            graph = PIPELINE[name](graph)
            if verbose:
                log_pass(f"{name} (round {rnd + 1})", before, graph)
    return snapshot_sources(graph)
