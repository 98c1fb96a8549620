"""``GRAPHC_LOG``: what the compiler decided, on stderr, by channel (in the spirit of TORCH_LOGS).

``GRAPHC_LOG=passes,fusion,cache python train.py`` prints

- ``passes``: each graph pass with its node counts before and after and the ops it removed
  or added (the rewrites that fired, by op);
- ``fusion``: one line per kernel fusion made (its kind, loop shape, fused ops, whether a
  GEMM became its prologue, what it reads and writes);
- ``cache``: generated modules found in the compile cache (hit) or written (miss), and the
  Numba cache hits/misses of each program's first call.

``GRAPHC_LOG=all`` turns every channel on. Unset (or empty), graphc prints nothing and each
hook costs one dictionary lookup.
"""
from __future__ import annotations

import os
import sys
import warnings

CHANNELS = ("passes", "fusion", "cache")

_parsed: dict[str, frozenset] = {}


def channels(value: str | None = None) -> frozenset:
    """The channels ``value`` (default: ``$GRAPHC_LOG``) turns on; unknown names are
    ignored with one RuntimeWarning listing the known ones."""
    raw = os.environ.get("GRAPHC_LOG", "") if value is None else value
    hit = _parsed.get(raw)
    if hit is not None:
        return hit
    names = {s.strip().lower() for s in raw.split(",") if s.strip()}
    if "all" in names:
        names = (names - {"all"}) | set(CHANNELS)
    unknown = sorted(names - set(CHANNELS))
    if unknown:
        warnings.warn(f"GRAPHC_LOG: unknown channel(s) {unknown}; known: {', '.join(CHANNELS)} (or all)",
                      RuntimeWarning, stacklevel=3)
    out = frozenset(names & set(CHANNELS))
    _parsed[raw] = out
    return out


def enabled(category: str) -> bool:
    """Whether ``category`` is on (read from the environment at every call, so a test or a
    notebook may change ``GRAPHC_LOG`` between compiles)."""
    return category in channels()


def log(category: str, msg: str) -> None:
    """Print ``[graphc:<category>] msg`` to stderr when the channel is on."""
    if category in channels():
        print(f"[graphc:{category}] {msg}", file=sys.stderr, flush=True)


def log_fusion(kernels: list) -> None:
    """The ``fusion`` channel: one line per kernel that ``schedule.fusion.fuse`` made."""
    if "fusion" not in channels():
        return
    from .ir import fmt_shape
    log("fusion", f"{len(kernels)} kernels")
    for i, k in enumerate(kernels):
        ops = [n.op for n in k.all_nodes]
        why = {"loop": "elementwise ops of one shape" + (" + reductions of their values" if k.reductions else ""),
               "matmul": "a GEMM on its own (its result has several consumers or is an output)",
               "copy": "a movement that is no strided view: materialized"}.get(k.kind, f"structured rule {k.kind!r}")
        if k.matmul is not None and k.kind == "loop":
            why = "GEMM prologue + its elementwise epilogue" + (" + reductions" if k.reductions else "")
        where = sorted({n.src.rsplit('/', 1)[-1] for n in k.all_nodes})
        log("fusion", f"#{i} {k.kind} {fmt_shape(tuple(k.shape))} [{', '.join(ops)}]: {why}; "
                      f"reads {len(k.reads())} tensors, writes {len(k.outputs)}"
                      + (f"; {len(k.prelude)} scalar ops recomputed in its prelude" if k.prelude else "")
                      + f" (from {', '.join(where[:3])}{', ...' if len(where) > 3 else ''})")


def log_pass(name: str, before, after) -> None:
    """The ``passes`` channel: a pass's node counts and the ops it removed/added."""
    from collections import Counter
    b = Counter(n.op for n in before.nodes)
    a = Counter(n.op for n in after.nodes)
    diff = [f"-{b[op] - a[op]} {op}" for op in sorted(b) if b[op] > a[op]]
    diff += [f"+{a[op] - b[op]} {op}" for op in sorted(a) if a[op] > b[op]]
    changed = ", ".join(diff) if diff else ("rewired, same op counts" if before is not after
                                             and [id(n) for n in before.nodes] != [id(n) for n in after.nodes]
                                             else "no change")
    log("passes", f"{name}: {len(before.nodes)} -> {len(after.nodes)} nodes ({changed})")
