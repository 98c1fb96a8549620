"""Validation of what a call feeds: names, dtypes kinds, shapes and the batch size."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .errors import FeedError
from .ir import Node, fmt_shape


def check_feeds(inputs: Sequence[Node], feeds: Mapping[str, object], what: str = "call") -> tuple[dict, int | None]:
    """Return ({name: contiguous array of the input's dtype}, batch size or None).

    Raises FeedError naming the input and expected vs given for a missing or unknown
    name, a dtype of the wrong kind (a float for integer labels, say), a wrong rank or a
    wrong size of a fixed dim, batch dims that disagree, or an empty batch.
    """
    by_name = {n.name: n for n in inputs}
    unknown = sorted(set(feeds) - set(by_name))
    if unknown:
        raise FeedError(f"{what}: unknown input(s) {unknown}; this graph's inputs are {sorted(by_name)}")
    missing = sorted(set(by_name) - set(feeds))
    if missing:
        raise FeedError(f"{what}: missing input(s) {missing}; expected "
                        + ", ".join(f"{n} {fmt_shape(by_name[n].shape)} {by_name[n].dtype}" for n in missing))
    out: dict[str, np.ndarray] = {}
    batch: int | None = None
    batch_from = None
    for name, node in by_name.items():
        v = feeds[name]
        try:
            a = np.asarray(v)
        except Exception as e:  # pragma: no cover - exotic objects
            raise FeedError(f"{what}: input {name!r} could not be read as an array ({e})") from None
        want = node.dtype
        ok = (a.dtype.kind == want.kind
              or (want.kind == "f" and a.dtype.kind in "iub")
              or (want.kind in "iu" and a.dtype.kind in "iu"))
        if not ok:
            raise FeedError(f"{what}: input {name!r} expects dtype {want}, got {a.dtype}")
        if a.ndim != len(node.shape):
            raise FeedError(f"{what}: input {name!r} expects shape {fmt_shape(node.shape)}, got {a.shape} (rank {a.ndim} != {len(node.shape)})")
        for i, (d, got) in enumerate(zip(node.shape, a.shape)):
            if d is None:
                if batch is None:
                    batch, batch_from = got, name
                elif got != batch:
                    raise FeedError(f"{what}: batch sizes disagree: {batch_from!r} has {batch}, {name!r} has {got} (dim {i})")
            elif d != got:
                raise FeedError(f"{what}: input {name!r} expects shape {fmt_shape(node.shape)}, got {a.shape} (dim {i}: {got} != {d})")
        if want.kind in "iu" and a.dtype != want:
            if a.size and (a.min() < np.iinfo(want).min or a.max() > np.iinfo(want).max):
                raise FeedError(f"{what}: input {name!r} has values outside {want}'s range")
        out[name] = np.asarray(a, dtype=want, order="C")  # (ascontiguousarray would make 0-d feeds 1-d)
    if batch == 0:  # means over no samples are NaN, and a step would still advance its state
        raise FeedError(f"{what}: empty batch: input {batch_from!r} has 0 samples along its batch dim; "
                        "nothing was run (feed at least one sample)")
    return out, batch
