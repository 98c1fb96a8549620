"""Device memory of the cuda target: the mirror of a Store's arenas on the GPU."""
from __future__ import annotations

from typing import Any

import numpy as np

from .compat import numba_cuda


class DeviceStore:
    """The device mirror of a Store's arenas (one per store, shared by its cuda programs).

    The Store calls ``push`` (host -> device) before a device step when the host may have
    written its arenas, and ``pull`` (device -> host) before the host reads them after a
    device step (see ``Store.acquire`` / ``Store.sync_host``)."""

    def __init__(self, store):
        self.cuda = numba_cuda()
        self.arenas: dict[np.dtype, Any] = {}
        self.generation = 0  # bumped when a device arena is (re)allocated: programs re-bind
        self.pushes = self.pulls = 0

    def push(self, store) -> None:
        for dt, host in store._arenas.items():
            d = self.arenas.get(dt)
            if d is None or d.size != host.size:
                self.arenas[dt] = self.cuda.to_device(host)
                self.generation += 1
            else:
                d.copy_to_device(host)
        self.pushes += 1

    def pull(self, store) -> None:
        for dt, d in self.arenas.items():
            host = store._arenas[dt]
            if host.size == d.size:
                d.copy_to_host(host)
        self.pulls += 1
