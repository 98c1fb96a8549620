"""The compiled callables users hold (CompiledStep, Function) and checkpoint files.

A callable owns a Program, a Store (graphc/store.py) and one runnable program per batch
size, built by the target's backend (graphc/backends) on first use.
"""
from __future__ import annotations

import errno
import os
import threading
from typing import Any, Callable, Mapping

import numpy as np

from .atomic import write_atomic
from .errors import (CheckpointFileError, CheckpointNotFoundError, FeedError, GraphcError, HyperParameterError,
                     HyperParameterStateError, StateError)
from .feeds import check_feeds
from .ir import Node
from .optim.base import Optimizer
from .store import MAX_STEP, Store, check_counter, checked_array  # noqa: F401 - MAX_STEP: re-exported
from .training import STEP, Program

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


class _Compiled:
    """What CompiledStep (training) and Function (inference) share: feeds, store, programs."""

    def __init__(self, program: Program, target: str, store: Store, optimizer: Optimizer | None,
                 options: dict):
        from . import backends
        from .backends.base import index_checks
        self._program = program
        self.target = target
        self._backend = backends.get(target)
        self._native_checks = self._backend.native_checks  # read at every call: one attribute
        self._store = store
        self.optimizer = optimizer
        self._options = options
        self._programs: dict[int | None, Any] = {}
        self._build_lock = threading.Lock()  # two threads' first calls build one program
        self._inputs = [n for n in program.graph.inputs if n.name not in program.hypers]
        self._hypers = [(n.name, n.dtype.type, program.hypers[n.name]) for n in program.graph.inputs
                        if n.name in program.hypers]
        self._index_checks = index_checks(program.graph)  # fed indices (class labels) and their bounds
        self._specs = [(n.name, n.dtype, n.shape) for n in self._inputs]
        # positional feeds follow the order the inputs were declared (gc.input), not the
        # graph's traversal order: a node's id counts the nodes built before it
        self._input_order = tuple(n.name for n in sorted(self._inputs, key=lambda n: n.id))
        self._hyper_cache = None
        self._last_shapes = None  # (((name, dtype, shape), ...), batch) of the last fast call
        self.fast_calls = 0  # calls that took the fast path (diagnostics: tests count them)
        # the bound call (backends/cpu/bound.py): the last batch's driver call with its checks,
        # arguments and output readers generated once; None until a fast call armed it
        self._bound = None
        self._bound_by_batch: dict = {}

    # ---- calling ----------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        """The names of the inputs fed at each call, in the order they were declared with
        ``gc.input``: the order of positional feeds (``step(xb, yb)``)."""
        return list(self._input_order)

    def _positional(self, args: tuple, feeds: dict) -> dict:
        """Name positional feeds by the declaration order; a name given twice or more feeds
        than inputs is a FeedError listing the inputs."""
        names = self._input_order
        if not feeds and len(args) == len(names):  # step(xb, yb)
            return dict(zip(names, args))
        what = f"{type(self).__name__} call"
        if len(args) > len(names):
            raise FeedError(f"{what}: {len(args)} positional feeds, but this graph has {len(names)} "
                            f"input{'s' if len(names) != 1 else ''} {list(names)} (positional feeds "
                            f"follow that order)")
        for name, a in zip(names, args):
            if name in feeds:
                raise FeedError(f"{what}: input {name!r} given twice (positionally and by name); "
                                f"positional feeds follow the inputs' order {list(names)}")
            feeds[name] = a
        return feeds

    def _fast_feeds(self, feeds: Mapping[str, Any]):
        """The common case in a few attribute checks per input: exact dtype, C-contiguous,
        right rank and fixed dims. Returns (arrays, batch) or None to take the full check."""
        if len(feeds) != len(self._inputs):
            return None
        last = self._last_shapes
        if last is not None:  # the same dtypes and shapes as last time: one comparison per input
            arrays = {}
            for name, dtype, shape in last[0]:
                a = feeds.get(name)
                if (type(a) is not np.ndarray or a.shape != shape or (a.dtype is not dtype and a.dtype != dtype)
                        or not a.flags.c_contiguous):
                    break
                arrays[name] = a
            else:
                return arrays, last[1]
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
        self._last_shapes = (tuple((name, dtype, arrays[name].shape) for name, dtype, _ in self._specs), batch)
        return arrays, batch

    def _hyper_values(self) -> dict:
        opt = self.optimizer
        if opt is None:
            return {}
        if self._hyper_cache is None or self._hyper_cache[0] != opt.version:
            hp = opt.hyperparameters
            for k, nonzero in self._program.structure.items():
                if (hp[k] != 0.0) != nonzero:
                    raise GraphcError(
                        f"{type(opt).__name__}.{k} was {'non-zero' if nonzero else '0'} when this step was compiled, "
                        f"which decided the compiled graph ({'no ' if not nonzero else ''}{k} term or state); "
                        f"setting it to {hp[k]} would silently do {'nothing' if not nonzero else 'the wrong thing'}: "
                        f"compile a new step with the new value")
            vals = {feed: cast(hp[name]) for feed, cast, name in self._hypers}
            self._hyper_cache = (opt.version, vals)
        return self._hyper_cache[1]

    def _feeds(self, feeds: Mapping[str, Any]) -> tuple[dict, int | None]:
        try:
            arrays, batch = check_feeds(self._inputs, feeds, what=f"{type(self).__name__} call")
        except FeedError as e:
            k = getattr(self, "steps_per_execution", 1)
            if k == 1 or "expects shape" not in str(e):
                raise
            raise FeedError(f"{e} (compiled with steps_per_execution={k}: each feed holds {k} batches "
                            f"stacked along a new leading axis)") from None
        for name, bound, users in self._index_checks:
            a = arrays.get(name)
            if a is not None and a.size and (a.min() < 0 or a.max() >= bound):
                raise FeedError(f"input {name!r}: indices must lie in [0, {bound}) (they index {users}), "
                                f"got values in [{a.min()}, {a.max()}]; nothing was run")
        arrays.update(self._hyper_values())
        if self._options.get("check_finite", True):
            for name, a in arrays.items():
                if a.dtype.kind == "f" and not np.isfinite(a).all():
                    what = "hyper-parameter" if name in self._program.hypers else "input"
                    raise FeedError(f"{what} {name!r} contains NaN or infinity; refusing to run the step "
                                    f"(pass check_finite=False to compile to allow it)")
        return arrays, batch

    def _rejected(self, feeds: Mapping[str, Any]) -> None:
        """The bound call's driver returned a status (labels out of range, NaN in a feed)
        before running any kernel: raise the full check's FeedError."""
        self.fast_calls += 1
        self._feeds(feeds)
        raise FeedError("the compiled step rejected its feeds")  # pragma: no cover

    def _arm(self, prog, batch: int | None, hypers: dict) -> None:
        """After a fast call that ran: bind (or re-bind) the call of ``batch``'s program so
        that the next call with the same shapes and dtypes skips everything else."""
        bound = self._bound_by_batch.get(batch, False)
        if bound is False:
            specs = self._last_shapes[0] if self._last_shapes is not None else None
            try:  # the step has run: a program the binder does not understand keeps prog.run
                make = getattr(prog, "bound_call", None)  # backends that offer one (cpu, parallel)
                bound = make(self._store, self.optimizer, specs, self._program.user_names,
                             self._options) if specs is not None and make is not None else None
            except (AttributeError, KeyError, TypeError, ValueError, IndexError):
                bound = None
            self._bound_by_batch[batch] = bound
        if bound is not None:
            with self._store.lock:  # not while another thread's call reads the arguments
                if not bound.arm(prog, self._store, hypers):
                    bound = None
        self._bound = bound

    def program_for(self, batch: int | None):
        """The executable specialized to ``batch`` (built on first use, then cached)."""
        prog = self._programs.get(batch)
        if prog is None:
            with self._build_lock:
                prog = self._programs.get(batch)
                if prog is None:
                    from .compiler import build
                    prog = build(self._program, batch, self.target, self._store, self._options)
                    self._programs[batch] = prog
        return prog

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        bound = self._bound
        if bound is not None:  # the same shapes and dtypes as the call that armed it
            out = bound.call(feeds)
            if out.__class__ is dict:
                self.fast_calls += 1
                return out
            if out is not None:
                self._rejected(feeds)
        return self._run_checked(feeds)

    def _run_checked(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """A call that the bound call did not serve."""
        # cpu/parallel drivers range-check labels and finiteness themselves; other targets
        # take the full Python checks
        fast = self._fast_feeds(feeds) if self._native_checks else None
        if fast is not None:
            arrays, batch = fast
            prog = self._programs.get(batch)
            if prog is not None:  # native: labels are range-checked by the driver before any kernel
                hypers = self._hyper_values()
                arrays.update(hypers)
                outs = prog.run(arrays, self._store)
                if outs is not None:
                    self.fast_calls += 1
                    self._arm(prog, batch, hypers)
                    return dict(zip(self._program.user_names, outs))
                # the driver ran nothing: labels out of range or NaN (the full check below
                # raises the FeedError naming the input), or a feed whose layout it does
                # not take (FEED_MISMATCH), which runs with the full check's arrays
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

    def set_params(self, values: Mapping[str, np.ndarray], allow_nonfinite: bool = False) -> None:
        """Overwrite some parameters (validated first: nothing is written if any is wrong).
        Values are cast to the store's dtype; NaN/infinity is refused unless ``allow_nonfinite``."""
        if not isinstance(values, Mapping):
            raise StateError(f"set_params: expected a dict of arrays by param name, got {type(values).__name__}")
        self._load({"params": values}, partial=True, what="set_params", allow_nonfinite=allow_nonfinite)

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

    def load_state_dict(self, d: Mapping, allow_nonfinite: bool = False, partial: bool = False) -> None:
        """Restore what ``state_dict`` returned (from any target). Every entry (names, shapes,
        dtypes, values after the cast to the store's dtype, hyper-parameters) is checked before
        anything is written, so a bad dict changes nothing. NaN/infinity is refused unless
        ``allow_nonfinite``. ``partial=True`` writes only the entries given (some params and
        some model state, e.g. graphc.nn's ``set_weights``), still all or nothing."""
        self._load(d, partial=bool(partial), what="load_state_dict", allow_nonfinite=allow_nonfinite)

    def _load(self, d: Mapping, partial: bool, what: str, allow_nonfinite: bool = False) -> None:
        """Validate everything in ``d``, then write it all under the store's lock. ``what``
        (the method the user called) starts every error message."""
        if not isinstance(d, Mapping):
            raise StateError(f"{what}: expected a mapping like state_dict() returns, got {type(d).__name__}")
        extra = sorted((str(k) for k in d if k not in ("params", "state", "hyper")))
        if extra:
            raise StateError(f"{what}: unknown sections {extra}; a state dict holds 'params', 'state' and 'hyper'")
        pending = []
        for section, kind in (("params", "param"), ("state", "state")):
            given = d.get(section, {})
            if not isinstance(given, Mapping):
                raise StateError(f"{what}: {section!r} must be a dict of arrays by name, got {type(given).__name__}")
            expected = set(self._store.names(kind))
            unknown = sorted((k for k in given if k not in expected), key=str)
            if unknown:
                raise StateError(f"{what}: unknown {section} {unknown}; expected {sorted(expected)}")
            missing = sorted(expected - set(given))
            if missing and not partial and (section == "params" or "state" in d):
                raise StateError(f"{what}: missing {section} {missing}")
            for k, v in given.items():
                dt, _, shape = self._store.layout[k]
                c = checked_array(what, k, v, dt, shape, allow_nonfinite)
                if section == "state" and k == STEP:
                    check_counter(what, k, c)
                pending.append((k, c))
        hyper = {}
        given = d.get("hyper")
        opt = self.optimizer
        if given is not None and opt is not None:  # a Function has no hyper-parameters to restore
            if not isinstance(given, Mapping):
                raise StateError(f"{what}: 'hyper' must be a dict of numbers by name, got {type(given).__name__}")
            known = opt.hyperparameters
            unknown = sorted((k for k in given if k not in known), key=str)
            if unknown:
                raise StateError(f"{what}: unknown hyper-parameters {unknown} for {type(opt).__name__}; "
                                 f"it has {sorted(known)}")
            for k, v in given.items():
                try:
                    hyper[k] = opt.check_hyperparameter(k, v)
                except HyperParameterError as e:  # outside its domain: typed as both
                    raise HyperParameterStateError(f"{what}: {e}") from None
                except (TypeError, ValueError) as e:
                    raise StateError(f"{what}: {e}") from None
        with self._store.lock:  # nothing below can fail: every value is checked and cast
            self._store.writes += 1
            for k, c in pending:
                self._store.view(k)[...] = c
            for k, v in hyper.items():
                setattr(opt, k, v)

    def save(self, path: str | os.PathLike, allow_nonfinite: bool = False) -> str:
        """Write ``state_dict()`` to an .npz file (``.npz`` appended if missing) atomically:
        temp file + rename, so a crash mid-save leaves the previous file intact. A state
        holding NaN or infinity is refused (StateError, the old file kept) unless
        ``allow_nonfinite``: a loop that saves every epoch keeps its last good checkpoint.
        Returns the path written."""
        sd = self.state_dict()
        path = checkpoint_path(path)
        if not allow_nonfinite:
            check_savable(sd, f"save: {path}")
        return save_npz_atomic(path, flatten_state(sd))

    def load(self, path: str | os.PathLike, allow_nonfinite: bool = False) -> None:
        """Restore a checkpoint written by ``save`` (``path`` as given to ``save``: ``ck``
        finds ``ck.npz``). A damaged or foreign file is a StateError naming it; everything is
        checked before anything is written, as in ``load_state_dict``."""
        path, flat = read_checkpoint(path, "load")
        where = f"load: {path}"
        self._load(unflatten_state(flat, where), partial=False, what=where, allow_nonfinite=allow_nonfinite)

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

    def explain(self, feeds: Mapping[str, Any] | None = None, *, batch: int | None = None,
                runs: int | None = None, refresh_peaks: bool = False, verbose: bool = True, **named: Any):
        """Where the time of a call goes, kernel by kernel, against this machine's roofs:
        prints the report and returns it (a ``graphc.explain.Explanation``; ``.plot(path)``
        draws the roofline). Feeds as in a call (``step.explain(x=xb, y=yb)``, or a dict), or
        none for random feeds of ``batch`` rows. The step runs ``runs`` times (default: about
        half a second's worth); parameters, optimizer state and the step counter are restored
        afterwards. ``refresh_peaks``: measure the machine's roofs again (graphc/peaks.py).
        ``verbose=False`` returns the report without printing it."""
        from .explain import explain
        if named:
            if feeds is not None:
                raise TypeError("explain: pass feeds either as a dict or as keywords, not both")
            feeds = named
        return explain(self, feeds, batch=batch, runs=runs, refresh_peaks=refresh_peaks, verbose=verbose)

    def _any_program(self, batch):
        if batch is None and self._programs:
            return next(iter(self._programs.values()))
        if batch is None and any(None in n.shape for n in self._inputs):
            raise GraphcError("source(): this graph has a batch dim; call it once or pass batch=N")
        return self.program_for(batch)


class CompiledStep(_Compiled):
    """One training step (forward + backward + update) as one call: ``step(x=..., y=...)``
    returns ``{'loss': ..., **extras}`` and updates params and optimizer state in place.
    Feeds may also be positional, in the order the inputs were declared
    (``step.input_names``): ``step(xb, yb)``, or mixed as ``step(xb, y=yb)``.
    Compiled with ``steps_per_execution=K``, a call takes K batches stacked along a new
    leading axis and runs K steps (outputs stacked the same way)."""

    steps_per_execution = 1  # training steps per call (compile(steps_per_execution=K))

    def __call__(self, *args: Any, **feeds: Any) -> dict[str, np.ndarray]:
        if args:
            feeds = self._positional(args, feeds)
        bound = self._bound  # _run's first lines, inlined: this is the call a training loop makes
        if bound is not None:
            out = bound.call(feeds)
            if out.__class__ is dict:
                self.fast_calls += 1
                return out
            if out is not None:
                self._rejected(feeds)
        return self._run_checked(feeds)

    def __repr__(self) -> str:
        return f"<CompiledStep target={self.target!r} optimizer={self.optimizer!r} params={self._store.names('param')}>"


class Function(_Compiled):
    """A forward-only compiled function: returns the outputs in the structure they were given.
    Feeds by name (``f(x=xb)``) or positional in the inputs' declaration order
    (``f.input_names``): ``f(xb)``."""

    def __init__(self, program, target, store, options, rebuild):
        super().__init__(program, target, store, None, options)
        self._rebuild = rebuild

    def __call__(self, *args: Any, **feeds: Any):
        if args:
            feeds = self._positional(args, feeds)
        return self._rebuild(self._run(feeds))

    def __repr__(self) -> str:
        return f"<Function target={self.target!r} outputs={self._program.user_names}>"


# ---- checkpoints ---------------------------------------------------------------------------

def nonfinite_entries(d: Mapping) -> list[str]:
    """Names of the float params/state in a state dict holding NaN or infinity."""
    return [k for section in ("params", "state") for k, v in d.get(section, {}).items()
            if np.asarray(v).dtype.kind == "f" and not np.isfinite(v).all()]


def check_savable(d: Mapping, what: str) -> None:
    """Refuse to write a checkpoint holding NaN/infinity (a StateError naming the entries)."""
    bad = nonfinite_entries(d)
    if bad:
        shown = bad[:8] + (["..."] if len(bad) > 8 else [])
        raise StateError(f"{what}: refusing to write a checkpoint holding NaN or infinity in {shown}; "
                         f"the file is left as it was (pass allow_nonfinite=True to write it anyway)")


def flatten_state(d: Mapping) -> dict[str, np.ndarray]:
    out = {}
    for section in ("params", "state"):
        for k, v in d.get(section, {}).items():
            out[f"{section}::{k}"] = np.asarray(v)
    for k, v in d.get("hyper", {}).items():
        out[f"hyper::{k}"] = np.asarray(v)
    return out


def unflatten_state(flat: Mapping[str, np.ndarray], where: str = "checkpoint") -> dict:
    """The inverse of ``flatten_state``; a foreign entry is a StateError starting with ``where``."""
    d: dict = {"params": {}, "state": {}, "hyper": {}}
    for k, v in flat.items():
        section, sep, name = str(k).partition("::")
        if not sep or section not in d or not name:
            raise StateError(f"{where}: entry {k!r} is not graphc state (entries are named params::<name>, "
                             f"state::<name> or hyper::<name>)")
        v = np.asarray(v)
        if v.dtype.kind not in "biuf":
            raise StateError(f"{where}: entry {k!r} has dtype {v.dtype}, not a number type")
        if section == "hyper":
            if v.size != 1:
                raise StateError(f"{where}: hyper-parameter {name!r} must be a scalar, got shape {v.shape}")
            v = v.reshape(()).item()
        d[section][name] = v
    if not d["state"]:
        del d["state"]
    return d


def checkpoint_path(path: str | os.PathLike) -> str:
    """The file ``save(path)`` writes: ``path`` with ``.npz`` appended if missing (as np.savez)."""
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def find_checkpoint(path: str | os.PathLike, what: str) -> str:
    """The file ``load(path)`` reads: the one ``save(path)`` writes, else ``path`` as given."""
    p = os.fspath(path)
    candidates = [checkpoint_path(p)] + ([] if p.endswith(".npz") else [p])
    for c in candidates:
        if os.path.exists(c):
            if os.path.isdir(c):
                raise CheckpointFileError(f"{what}: {c} is a directory, not a checkpoint file", errno.EISDIR, c)
            return c
    raise CheckpointNotFoundError(f"{what}: no checkpoint at {' or '.join(candidates)}", errno.ENOENT, p)


def read_checkpoint(path: str | os.PathLike, what: str) -> tuple[str, dict[str, np.ndarray]]:
    """(the file read, its arrays by entry name). Anything but an intact .npz archive of
    numeric arrays is a StateError naming the file and the problem; nothing is unpickled."""
    path = find_checkpoint(path, what)
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:  # unreadable (permissions), or gone since it was found
        raise CheckpointFileError(f"{what}: cannot read {path} ({e.strerror or e})", e.errno, path) from None
    if not head:
        raise StateError(f"{what}: {path} is empty (a save that never finished?)")
    if head.startswith(b"\x93NUMPY"):
        raise StateError(f"{what}: {path} is a single .npy array, not an .npz checkpoint")
    if not head.startswith(b"PK"):
        raise StateError(f"{what}: {path} is not an .npz checkpoint (it does not start like a zip archive)")
    out = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):  # pragma: no cover - excluded by the magic check
                raise StateError(f"{what}: {path} is not an .npz checkpoint")
            for k in z.files:
                try:
                    out[k] = z[k]
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise
                    raise StateError(f"{what}: {path}: entry {k!r} is an object array (pickled Python "
                                     f"objects); checkpoints hold numeric arrays only") from None
    except StateError:
        raise
    except Exception as e:  # BadZipFile, EOFError, zlib.error, a bad .npy header, a CRC mismatch, ...
        raise StateError(f"{what}: {path} is damaged or not an .npz checkpoint ({type(e).__name__}: {e})") from None
    return path, out


def save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], what: str = "save") -> str:
    """np.savez to a temp file in the same directory, fsync, then rename over ``path``
    (``.npz`` appended if missing): a crash mid-save leaves the previous file intact, and
    the next save removes the orphaned temp file. Returns the path written. A path that
    cannot be written (a directory, a missing parent directory, an OS error) is a
    CheckpointFileError (a StateError and an OSError) naming ``path``, not the temp file."""
    path = checkpoint_path(path)
    parent = os.path.dirname(path) or "."
    if not os.path.exists(parent):
        raise CheckpointNotFoundError(f"{what}: cannot write {path}: the directory {parent} does not exist",
                                      errno.ENOENT, path)
    if not os.path.isdir(parent):
        raise CheckpointFileError(f"{what}: cannot write {path}: {parent} is not a directory", errno.ENOTDIR, path)
    if os.path.isdir(path):
        raise CheckpointFileError(f"{what}: cannot write {path}: it is a directory", errno.EISDIR, path)
    try:
        write_atomic(path, lambda f: np.savez(f, **arrays))
    except CheckpointFileError:
        raise
    except OSError as e:  # disk full, permissions: the previous file is intact
        raise CheckpointFileError(f"{what}: cannot write {path} ({e.strerror or e}); any previous file is "
                                  f"left as it was", e.errno, path) from e
    return path
