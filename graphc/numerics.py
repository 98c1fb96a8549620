"""``compile(..., check_numerics=True)``: which values are guarded, and the error that
explains the first non-finite one.

With the guard on, a step keeps every new parameter/state value in scratch; after the last
kernel the native driver checks the loss (a function: its outputs) and the updates in the
order they were computed, returns ``NUMERICS_STATUS + i`` for the first non-finite one and
only otherwise copies the updates into the store. ``target="numpy"`` checks the same values
before copying. Either way nothing is written when a value is bad, and Python raises a
NumericsError built here. The error path re-evaluates the value's graph with the interpreter
(the store is unchanged, so it sees the same inputs) to find the op where the first
non-finite value appeared from finite operands: usually more useful than the update itself.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .errors import NumericsError
from .ir import Node, fmt_shape

NUMERICS_STATUS = 1_000_000  # above the label (1 + i) and feed finiteness (1000 + i) statuses


def checked_values(program, graph) -> list[tuple[str, int]]:
    """(label, output index) of the values guarded in ``graph`` (the program's graph or its
    specialization: outputs correspond by position): the loss of a training step (every
    output of a function), then every floating-point update, in output order."""
    training = bool(program.updates)  # a training step always updates its step counter
    kinds = {n.name: n.op for n in program.sources}
    k = len(program.user_names)
    out = []
    names = program.user_names[:1] if training else program.user_names
    for i, name in enumerate(names):
        if graph.outputs[i].dtype.kind == "f":
            out.append(("the loss" if training else f"output {name!r}", i))
    for j, slot in enumerate(program.updates):
        if graph.outputs[k + j].dtype.kind == "f":
            out.append((f"the update of {kinds.get(slot, 'state')} {slot!r}", k + j))
    return out


def describe_values(v: np.ndarray) -> str:
    """'NaN', 'infinity', or counts for arrays: '3 NaN and 1 infinite of 12 values'."""
    v = np.asarray(v)
    nan, inf = int(np.isnan(v).sum()), int(np.isinf(v).sum())
    if v.size == 1:
        return "NaN" if nan else "infinity"
    parts = [f"{nan} NaN"] if nan else []
    parts += [f"{inf} infinite"] if inf else []
    return f"{' and '.join(parts) or 'non-finite'} of {v.size} values"


def first_nonfinite(output: Node, feeds: Mapping[str, np.ndarray], values: Mapping[str, np.ndarray]) -> Node | None:
    """The first node (in evaluation order) among ``output``'s ancestors whose value is not
    finite although its operands are: where the NaN or infinity came from."""
    from .interpret import evaluate_each
    vals: dict[int, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for n, v in evaluate_each([output], feeds, values, vals):
            if v.dtype.kind == "f" and not np.isfinite(v).all() and all(
                    vals[id(x)].dtype.kind != "f" or np.isfinite(vals[id(x)]).all() for x in n.inputs):
                return n
    return None


def numerics_error(program, label: str, index: int, node: Node, value: np.ndarray | None,
                   feeds: Mapping[str, np.ndarray], store, kernel: str = "") -> NumericsError:
    """The error for checked value ``label`` (graph output ``index``; ``node`` computes it,
    ``kernel`` describes the native kernel that did)."""
    what = describe_values(value) if value is not None else "NaN or infinity"
    by = f" (computed by {kernel})" if kernel else ""
    msg = (f"check_numerics: {label} holds {what}{by}: {node.op} {fmt_shape(node.shape)} "
           f"created at {node.src}")
    try:
        values = {n.name: store.view(n.name) for n in program.sources}
        origin = first_nonfinite(program.graph.outputs[index], feeds, values)
    except Exception:  # noqa: BLE001 - the explanation is a bonus; the error must still be raised
        origin = None
    if origin is not None:
        if origin.op in ("input", "param", "state"):
            msg += f"; it comes from {origin.op} {origin.name!r}, which already holds NaN or infinity"
        else:
            ops = ", ".join(f"{x.op} {fmt_shape(x.shape)}" for x in origin.inputs)
            msg += (f"; the first non-finite value is {origin.op} {fmt_shape(origin.shape)} of finite "
                    f"operands ({ops}), created at {origin.src}")
    msg += ". Nothing was written: params, optimizer state and the step counter are unchanged"
    return NumericsError(msg)
