"""The "numpy" target: the reference interpreter (graphc/interpret.py) behind the
compiled-call interface; the oracle every other backend is tested against."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..store import Store


class NumpyProgram:
    """The "numpy" target: the reference interpreter behind the compiled-call interface."""

    target = "numpy"

    def __init__(self, program: Any, batch: int | None, check_numerics: bool = False):
        # program: a training.Program (the layer above; only its graph, sources, names are read)
        self.program = program
        self.batch = batch
        self.check_numerics = check_numerics
        self._checks = []  # check_numerics: (label, output index), in the order they are computed
        if check_numerics:
            from ..ir import topo_order
            from ..numerics import checked_values
            g = program.graph
            pos = {id(n): i for i, n in enumerate(topo_order(g.outputs))}
            self._checks = sorted(checked_values(program, g), key=lambda t: pos[id(g.outputs[t[1]])])

    def run(self, feeds: Mapping[str, np.ndarray], store: Store) -> list[np.ndarray]:
        from ..interpret import evaluate

        g = self.program.graph
        with store.lock:
            values = {n.name: store.view(n.name) for n in self.program.sources}
            outs = evaluate(g.outputs, feeds, values)
            k = len(self.program.user_names)
            for label, i in self._checks:  # check_numerics: the first bad value, before any write
                if not np.isfinite(outs[i]).all():
                    from ..numerics import numerics_error
                    raise numerics_error(self.program, label, i, g.outputs[i], outs[i], feeds, store)
            # copy everything first: a param output (or an update) may be a view of the store
            user = [np.array(v) for v in outs[:k]]
            for name, v in zip(self.program.updates, [np.array(v) for v in outs[k:]]):
                np.copyto(store.view(name), v)
        return user

    def describe(self) -> str:
        return self.program.graph.dump()
