"""The runtime: the parameter/state store and the compiled callables users hold.

Parameters and optimizer state live in one flat arena per dtype (a ``Store``), so a native
step takes a handful of arguments, and every batch-size specialization of a step, and any
inference function compiled to share its weights, reads the same memory.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Mapping

import numpy as np

from .atomic import write_atomic
from .errors import FeedError, GraphcError, StateError
from .feeds import check_feeds
from .initializers import init_value
from .ir import Node, fmt_shape
from .optim.base import HYPER_PREFIX, Optimizer
from .training import Program

_ALIGN = 64  # bytes: each tensor starts on a cache line


class Store:
    """Named persistent tensors (params and state) packed into one arena per dtype."""

    def __init__(self, nodes: list[Node], seed: int = 0, initial: Mapping[str, np.ndarray] | None = None):
        self.seed = seed
        # every program reading or writing these arenas holds this lock while it runs, and so
        # do host reads and loads: a step never loses another thread's update, a reader never
        # sees half a step (re-entrant: a load may read the store while it holds the lock)
        self.lock = threading.RLock()
        self.layout: dict[str, tuple[np.dtype, int, tuple]] = {}  # name -> (dtype, offset, shape)
        self.kinds: dict[str, str] = {}
        self._arenas: dict[np.dtype, np.ndarray] = {}
        self._version = 0  # bumped when an arena is reallocated (programs re-bind their arguments)
        # device mirrors (target="cuda"): {key: mirror}; ``_owner`` is the mirror holding newer
        # values than the host arenas (None: the host is current)
        self._mirrors: dict[str, object] = {}
        self._owner = None
        self._add(nodes, initial or {})

    # ---- host/device coherence ------------------------------------------------------------------
    # The host arenas are the store's truth unless a device program ran last. Every host access
    # (``arenas``, ``version``, ``view``) first pulls the device values back; a device program
    # calls ``acquire`` before it runs, which pushes the host values to the device when the
    # host may have been written since (any host access counts as a possible write).

    @property
    def arenas(self) -> dict[np.dtype, np.ndarray]:
        self.sync_host()
        return self._arenas

    @property
    def version(self) -> int:
        self.sync_host()
        return self._version

    def mirror(self, key: str, factory):
        """The device mirror ``key`` of this store, created by ``factory(store)`` on first use."""
        m = self._mirrors.get(key)
        if m is None:
            m = self._mirrors[key] = factory(self)
        return m

    def sync_host(self) -> None:
        """Make the host arenas current (pull from the device mirror that ran last)."""
        owner = self._owner
        if owner is not None:
            owner.pull(self)
            self._owner = None

    def acquire(self, mirror) -> None:
        """Make ``mirror`` current before a device step runs (push the host values if needed);
        until the host next touches the store, the device holds its newest values."""
        if self._owner is mirror:
            return
        self.sync_host()
        mirror.push(self)
        self._owner = mirror

    def _add(self, nodes, initial):
        self.sync_host()
        sizes: dict[np.dtype, int] = {dt: a.size for dt, a in self._arenas.items()}
        new = []
        for n in nodes:
            if n.name in self.layout:
                dt, _, shape = self.layout[n.name]
                if dt != n.dtype or shape != n.shape:
                    raise GraphcError(f"{n.op} {n.name!r}: declared as {fmt_shape(n.shape)} {n.dtype} "
                                      f"but the shared store holds {fmt_shape(shape)} {dt}")
                continue
            dt = n.dtype
            align = max(1, _ALIGN // dt.itemsize)
            off = -(-sizes.get(dt, 0) // align) * align
            size = int(np.prod(n.shape, dtype=np.int64))
            self.layout[n.name] = (dt, off, n.shape)
            self.kinds[n.name] = n.op
            sizes[dt] = off + max(size, 1)
            new.append(n)
        for dt, total in sizes.items():
            old = self._arenas.get(dt)
            if old is None or old.size < total:
                arena = np.zeros(-(-total // 16) * 16, dtype=dt)
                if old is not None:
                    arena[:old.size] = old
                self._arenas[dt] = arena
                self._version += 1
        for n in new:
            v = initial.get(n.name)
            self.view(n.name)[...] = init_value(n, self.seed) if v is None else np.asarray(v, dtype=n.dtype).reshape(n.shape)

    def ensure(self, nodes: list[Node]) -> None:
        """Add (and initialize) any of ``nodes`` not yet in the store.

        Growing an arena reallocates it; compiled programs look arenas up at each call.
        """
        self._add(nodes, {})

    def view(self, name: str) -> np.ndarray:
        dt, off, shape = self.layout[name]
        size = int(np.prod(shape, dtype=np.int64))
        return self.arenas[dt][off:off + size].reshape(shape)

    def names(self, kind: str | None = None) -> list[str]:
        return [k for k in self.layout if kind is None or self.kinds[k] == kind]


def _flatten(outputs) -> tuple[dict[str, Node], Callable[[dict], Any]]:
    """Outputs given as a tensor, a list/tuple or a dict -> named nodes + a function that
    rebuilds the same structure from {name: array}."""
    if isinstance(outputs, Node):
        return {"out": outputs}, lambda d: d["out"]
    if isinstance(outputs, (list, tuple)):
        names = [f"out{i}" for i in range(len(outputs))]
        kind = type(outputs)
        for o in outputs:
            if not isinstance(o, Node):
                raise TypeError(f"compile: outputs must be graphc tensors, got {o!r}")
        return dict(zip(names, outputs)), lambda d: kind(d[n] for n in names)
    if isinstance(outputs, Mapping):
        for k, o in outputs.items():
            if not isinstance(o, Node):
                raise TypeError(f"compile: output {k!r} is not a graphc tensor: {o!r}")
        return {str(k): v for k, v in outputs.items()}, lambda d: {k: d[str(k)] for k in outputs}
    raise TypeError(f"compile: outputs must be a tensor, a list/tuple or a dict of tensors, got {type(outputs).__name__}")


class NumpyProgram:
    """The "numpy" target: the reference interpreter behind the compiled-call interface."""

    target = "numpy"

    def __init__(self, program: Program, batch: int | None):
        self.program = program
        self.batch = batch

    def run(self, feeds: Mapping[str, np.ndarray], store: Store) -> list[np.ndarray]:
        from .interpret import evaluate

        g = self.program.graph
        with store.lock:
            values = {n.name: store.view(n.name) for n in self.program.sources}
            outs = evaluate(g.outputs, feeds, values)
            k = len(self.program.user_names)
            # copy everything first: a param output (or an update) may be a view of the store
            user = [np.array(v) for v in outs[:k]]
            for name, v in zip(self.program.updates, [np.array(v) for v in outs[k:]]):
                np.copyto(store.view(name), v)
        return user

    def describe(self) -> str:
        return self.program.graph.dump()


class _Compiled:
    """What CompiledStep (training) and Function (inference) share: feeds, store, programs."""

    def __init__(self, program: Program, target: str, store: Store, optimizer: Optimizer | None,
                 options: dict):
        self._program = program
        self.target = target
        self._store = store
        self.optimizer = optimizer
        self._options = options
        self._programs: dict[int | None, Any] = {}
        self._build_lock = threading.Lock()  # two threads' first calls build one program
        self._inputs = [n for n in program.graph.inputs if not n.name.startswith(HYPER_PREFIX)]
        self._hypers = [n for n in program.graph.inputs if n.name.startswith(HYPER_PREFIX)]
        self._label_checks = [(n.inputs[1], n.inputs[0].shape[1]) for n in program.graph.nodes
                              if n.op in ("softmax_cross_entropy", "sce_grad") and n.inputs[1].op == "input"]
        self._specs = [(n.name, n.dtype, n.shape) for n in self._inputs]
        self._hyper_cache = None

    # ---- calling ----------------------------------------------------------------------------
    def _fast_feeds(self, feeds: Mapping[str, Any]):
        """The common case in a few attribute checks per input: exact dtype, C-contiguous,
        right rank and fixed dims. Returns (arrays, batch) or None to take the full check."""
        if len(feeds) != len(self._inputs):
            return None
        batch = None
        arrays = {}
        for name, dtype, shape in self._specs:
            a = feeds.get(name)
            if type(a) is not np.ndarray or a.dtype != dtype or not a.flags.c_contiguous or a.ndim != len(shape):
                return None
            for d, g in zip(shape, a.shape):
                if d is None:
                    if batch is None:
                        batch = g
                    elif g != batch:
                        return None
                elif d != g:
                    return None
            arrays[name] = a
        return arrays, batch

    def _hyper_values(self) -> dict:
        opt = self.optimizer
        if opt is None:
            return {}
        if self._hyper_cache is None or self._hyper_cache[0] != opt._version:
            hp = opt.hyperparameters
            vals = {n.name: n.dtype.type(hp[n.name[len(HYPER_PREFIX):]]) for n in self._hypers}
            self._hyper_cache = (opt._version, vals)
        return self._hyper_cache[1]

    def _feeds(self, feeds: Mapping[str, Any]) -> tuple[dict, int | None]:
        arrays, batch = check_feeds(self._inputs, feeds, what=f"{type(self).__name__} call")
        for lab, classes in self._label_checks:
            a = arrays.get(lab.name)
            if a is not None and a.size and (a.min() < 0 or a.max() >= classes):
                raise FeedError(f"input {lab.name!r}: class labels must lie in [0, {classes}), got values in "
                                f"[{a.min()}, {a.max()}] (labels feed softmax_cross_entropy)")
        arrays.update(self._hyper_values())
        if self._options.get("check_finite", True):
            for name, a in arrays.items():
                if a.dtype.kind == "f" and not np.isfinite(a).all():
                    what = "hyper-parameter" if name.startswith(HYPER_PREFIX) else "input"
                    raise FeedError(f"{what} {name!r} contains NaN or infinity; refusing to run the step "
                                    f"(pass check_finite=False to compile to allow it)")
        return arrays, batch

    def program_for(self, batch: int | None):
        """The executable specialized to ``batch`` (built on first use, then cached)."""
        prog = self._programs.get(batch)
        if prog is None:
            with self._build_lock:
                prog = self._programs.get(batch)
                if prog is None:
                    if self.target == "numpy":
                        prog = NumpyProgram(self._program, batch)
                    else:
                        from .compiler import build_native
                        prog = build_native(self._program, batch, self.target, self._store, self._options)
                    self._programs[batch] = prog
        return prog

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        # cpu/parallel drivers range-check labels and finiteness themselves; other targets
        # take the full Python checks
        fast = self._fast_feeds(feeds) if self.target in ("cpu", "parallel") else None
        if fast is not None:
            arrays, batch = fast
            prog = self._programs.get(batch)
            if prog is not None:  # native: labels are range-checked by the driver before any kernel
                arrays.update(self._hyper_values())
                outs = prog.run(arrays, self._store)
                if outs is None:
                    self._feeds(feeds)  # raises the FeedError that explains the status
                    raise FeedError("the compiled step rejected its feeds")  # pragma: no cover
                return dict(zip(self._program.user_names, outs))
        arrays, batch = self._feeds(feeds)
        prog = self.program_for(batch)
        outs = prog.run(arrays, self._store)
        if outs is None:  # pragma: no cover - _feeds checks labels first
            raise FeedError("the compiled step rejected its feeds (class labels out of range)")
        return dict(zip(self._program.user_names, outs))

    # ---- parameters and state -----------------------------------------------------------------
    @property
    def params(self) -> dict[str, np.ndarray]:
        """Copies of the current parameter values, by name (a consistent snapshot: taken
        between steps, never during one)."""
        with self._store.lock:
            return {k: self._store.view(k).copy() for k in self._store.names("param")}

    def set_params(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrite some parameters (validated first: nothing is written if any is wrong)."""
        self._load({"params": values}, partial=True)

    @property
    def iterations(self) -> int:
        """How many training steps have run (the optimizer's step counter, as in Keras)."""
        return int(self._store.view("step")) if "step" in self._store.layout else 0

    def state_dict(self) -> dict:
        """Copies of params, optimizer state (incl. the step counter) and hyper-parameters."""
        with self._store.lock:
            d = {"params": self.params,
                 "state": {k: self._store.view(k).copy() for k in self._store.names("state")}}
        if self.optimizer is not None:
            d["hyper"] = self.optimizer.hyperparameters
        return d

    def load_state_dict(self, d: Mapping) -> None:
        """Restore what ``state_dict`` returned (from any target). Every entry is checked
        against the store before anything is written, so a bad dict changes nothing."""
        self._load(d, partial=False)

    def _load(self, d: Mapping, partial: bool) -> None:
        pending = []
        for section, kind in (("params", "param"), ("state", "state")):
            given = dict(d.get(section, {}))
            expected = set(self._store.names(kind))
            unknown = sorted(set(given) - expected)
            if unknown:
                raise StateError(f"load_state_dict: unknown {section} {unknown}; expected {sorted(expected)}")
            missing = sorted(expected - set(given))
            if missing and not partial and (section == "params" or "state" in d):
                raise StateError(f"load_state_dict: missing {section} {missing}")
            for k, v in given.items():
                dst = self._store.view(k)
                a = np.asarray(v)
                if a.shape != dst.shape:
                    raise StateError(f"load_state_dict: {k!r} has shape {a.shape}, expected {dst.shape}")
                if a.dtype.kind != dst.dtype.kind:
                    raise StateError(f"load_state_dict: {k!r} has dtype {a.dtype}, expected {dst.dtype}")
                if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                    raise StateError(f"load_state_dict: {k!r} holds NaN or infinity")
                pending.append((dst, a))
        for dst, a in pending:
            dst[...] = a
        if self.optimizer is not None and "hyper" in d:
            for k, v in d["hyper"].items():
                if k in self.optimizer.hyperparameters:
                    setattr(self.optimizer, k, v)

    def save(self, path: str) -> None:
        """Write ``state_dict()`` to an .npz file atomically (temp file + rename)."""
        save_npz_atomic(path, flatten_state(self.state_dict()))

    def load(self, path: str) -> None:
        with np.load(path) as z:
            self.load_state_dict(unflatten_state({k: z[k] for k in z.files}))

    # ---- inspection ----------------------------------------------------------------------
    @property
    def graph(self):
        """The graph this callable computes (before specialization and passes)."""
        return self._program.graph

    def source(self, batch: int | None = None) -> str:
        """The generated source (native targets) or the graph dump (numpy), for ``batch``."""
        return self._any_program(batch).describe()

    def kernels(self, batch: int | None = None) -> str:
        prog = self._any_program(batch)
        return prog.kernel_listing() if hasattr(prog, "kernel_listing") else prog.describe()

    def _any_program(self, batch):
        if batch is None and self._programs:
            return next(iter(self._programs.values()))
        if batch is None and any(None in n.shape for n in self._inputs):
            raise GraphcError("source(): this graph has a batch dim; call it once or pass batch=N")
        return self.program_for(batch)


class CompiledStep(_Compiled):
    """One training step (forward + backward + update) as one call: ``step(x=..., y=...)``
    returns ``{'loss': ..., **extras}`` and updates params and optimizer state in place."""

    def __call__(self, **feeds: Any) -> dict[str, np.ndarray]:
        return self._run(feeds)

    def __repr__(self) -> str:
        return f"<CompiledStep target={self.target!r} optimizer={self.optimizer!r} params={self._store.names('param')}>"


class Function(_Compiled):
    """A forward-only compiled function: returns the outputs in the structure they were given."""

    def __init__(self, program, target, store, options, rebuild):
        super().__init__(program, target, store, None, options)
        self._rebuild = rebuild

    def __call__(self, **feeds: Any):
        return self._rebuild(self._run(feeds))

    def __repr__(self) -> str:
        return f"<Function target={self.target!r} outputs={self._program.user_names}>"


# ---- checkpoints ---------------------------------------------------------------------------

def flatten_state(d: Mapping) -> dict[str, np.ndarray]:
    out = {}
    for section in ("params", "state"):
        for k, v in d.get(section, {}).items():
            out[f"{section}::{k}"] = np.asarray(v)
    for k, v in d.get("hyper", {}).items():
        out[f"hyper::{k}"] = np.asarray(v)
    return out


def unflatten_state(flat: Mapping[str, np.ndarray]) -> dict:
    d: dict = {"params": {}, "state": {}, "hyper": {}}
    for k, v in flat.items():
        section, _, name = k.partition("::")
        if section not in d:
            raise StateError(f"checkpoint entry {k!r} is not graphc state")
        d[section][name] = float(v) if section == "hyper" else v
    if not d["state"]:
        del d["state"]
    return d


def save_npz_atomic(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez to a temp file in the same directory, fsync, then rename over ``path``:
    a crash mid-save leaves the previous file intact."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    write_atomic(path, lambda f: np.savez(f, **arrays))
