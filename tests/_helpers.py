"""Helpers shared by the test modules (imported as ``_helpers``: pytest puts tests/ on the path)."""
from __future__ import annotations

import numpy as np


def random_feeds(nodes, batch, seed, high=10):
    """Feeds for input ``nodes``: normal floats, integers in [0, high); None dims -> ``batch``."""
    rng = np.random.default_rng(seed)
    out = {}
    for n in nodes:
        shape = tuple(batch if d is None else d for d in n.shape)
        if n.dtype.kind == "f":
            out[n.name] = rng.standard_normal(shape).astype(n.dtype)
        else:
            out[n.name] = rng.integers(0, high, shape).astype(n.dtype)
    return out


def broadcastable(*shapes) -> bool:
    """Whether NumPy broadcasts ``shapes`` together."""
    try:
        np.broadcast_shapes(*shapes)
        return True
    except ValueError:
        return False
