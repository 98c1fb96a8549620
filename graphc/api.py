"""graphc.compile: the one entry point from a graph to a callable."""
from __future__ import annotations

import numbers
from typing import Any, Mapping

from . import backends
from .errors import GraphcError
from .ir import Node
from .optim.base import Optimizer
from .runtime import CompiledStep, Function, Store, _Compiled, _flatten
from .training import forward_program, multi_step_program, training_program

TARGETS = backends.targets()  # the registered backends (graphc/backends/__init__.py)


def compile(loss_or_outputs: Any, optimizer: Optimizer | str | None = None, target: str = "cpu",
            outputs: Mapping[str, Node] | None = None, params: Any = None, seed: int = 0,
            passes: Any = None, check_finite: bool = True,
            check_numerics: bool = False, data_parallel: bool = False,
            updates: Mapping[Node, Any] | None = None, cuda_graphs: bool = False,
            steps_per_execution: int = 1) -> CompiledStep | Function:  # noqa: A001
    """Compile a training step (with ``optimizer``) or a forward-only function (without).

    - With an optimizer, ``loss_or_outputs`` is the scalar loss; a call runs forward,
      backward and update in one go and returns ``{'loss': ..., **outputs}``.
    - Without, it is a tensor, a list/tuple or a dict of tensors; a call returns the same
      structure of NumPy arrays.
    - ``target``: ``"cpu"`` (serial loops, compiled by graphc through LLVM), ``"parallel"``
      (Numba ``parallel=True``), ``"numpy"`` (the reference interpreter) or ``"cuda"``.
    - ``params``: another compiled step/function whose parameters to share (live, not a
      copy: an inference function sees the training step's latest weights), or a dict
      of initial values by name. Others are initialized from their initializers, seeded
      by ``seed``. The dict may name any param or state of this program (optimizer state
      included); an unknown name, a wrong shape, a dtype that does not cast, or a value
      that is NaN/infinite after the cast to the param's dtype is a StateError.
    - ``passes``: names of graph passes to run (default: all; see graphc.passes.PIPELINE).
    - ``check_finite``: reject float feeds (and hyper-parameters) holding NaN or infinity
      with a FeedError before anything runs, so bad data never reaches the parameters
      (natively this is one vectorized pass over the feeds inside the compiled call).
    - ``check_numerics``: stop at the first NaN/infinite loss (a function: output) or
      parameter/state update, before anything is written to the store, with a
      ``gc.NumericsError`` naming the value, the kernel and the line where the first
      non-finite value appeared (updates go through scratch and a check: see
      graphc/numerics.py). Not on target "cuda".
    - ``updates``: ``{gc.state tensor: new value}``, model state written by the same call
      after every kernel has read the old values (batch normalization's moving statistics:
      ``{moving_mean: momentum * moving_mean + (1 - momentum) * batch_mean, ...}``).
    - ``data_parallel``: run under ``mpirun -n N``, each rank feeding its shard of the batch:
      gradients and loss are averaged over the ranks (one MPI all-reduce inside the call)
      before the update; params start as rank 0's. Needs the ``distributed`` extra; targets
      cpu, parallel, numpy (see graphc/distributed.py).
    - ``cuda_graphs``: target "cuda" only, opt-in: capture the whole step once as a CUDA graph
      and replay it (one graph launch per step instead of one launch per kernel); falls back
      to plain launches, saying why in ``step.kernels()``, wherever capture is not possible
      (see graphc/backends/cuda/graphs.py). ``GRAPHC_CUDA_GRAPHS=1`` does the same.
    - ``steps_per_execution=K`` (a training step, default 1): one call runs K full training
      steps (forward, backward, update, in-step random draws, model state updates) on K
      batches, each feed stacked along a new leading axis: ``step(x=xb[K, B, ...], y=yb[K, B])``.
      Outputs come back stacked the same way (``loss`` of shape (K,)); params, optimizer
      state and the step counter end exactly as after K single calls (bit for bit: the same
      graph on each step's values, see training.multi_step_program). Hyper-parameters are
      read once per call. Feed checks cover all K batches; with ``check_numerics`` a
      non-finite loss or update at any of the K steps refuses the whole call and writes
      nothing, as for one step (an intermediate step's params are checked through the
      losses of the steps after it).
    """
    try:
        backend = backends.get(target)
    except ValueError as e:
        raise ValueError(f"compile: {e}") from None
    if check_numerics and "check_numerics" not in backend.options:
        able = [t for t in backends.targets() if "check_numerics" in backends.get(t).options]
        raise GraphcError(f"compile: check_numerics=True is not available on target={target!r} yet; "
                          f"use one of {able} to find where the NaN comes from")
    if cuda_graphs and "cuda_graphs" not in backend.options:
        able = [t for t in backends.targets() if "cuda_graphs" in backends.get(t).options]
        raise GraphcError(f"compile: cuda_graphs=True needs target={' or '.join(map(repr, able))}, "
                          f"got target={target!r}")
    if isinstance(optimizer, str):
        from . import optim
        optimizer = optim.get(optimizer)
    if (isinstance(steps_per_execution, bool) or not isinstance(steps_per_execution, numbers.Integral)
            or steps_per_execution < 1):
        raise GraphcError(f"compile: steps_per_execution must be a positive int (training steps per call), "
                          f"got {steps_per_execution!r}")
    if steps_per_execution != 1 and (optimizer is None or data_parallel):
        raise GraphcError(f"compile: steps_per_execution={steps_per_execution} runs several training steps per "
                          f"call, so it needs an optimizer" + (" and is not available with data_parallel=True yet"
                                                               if data_parallel else ""))
    if data_parallel:
        if optimizer is None:
            raise GraphcError("compile: data_parallel=True averages gradients, so it needs an optimizer")
        from .distributed import check_target
        check_target(target)
    if optimizer is not None:
        program = training_program(loss_or_outputs, optimizer, outputs, data_parallel=data_parallel,
                                   model_updates=updates)
        program = multi_step_program(program, int(steps_per_execution))
        rebuild = None
    else:
        if outputs is not None:
            raise GraphcError("compile: outputs= names extra outputs of a training step; "
                              "without an optimizer pass the outputs as the first argument")
        named, rebuild = _flatten(loss_or_outputs)
        program = forward_program(named, updates)
    if backend.available is not None:
        backend.available()
    sources = program.sources
    if isinstance(params, _Compiled):
        store = params._store
        store.ensure(sources)
    else:
        if params is not None and not isinstance(params, Mapping):
            raise TypeError("compile: params must be a compiled step/function to share with, or a dict of arrays")
        store = Store(sources, seed=seed, initial=params)
    options = {"passes": passes, "check_finite": bool(check_finite), "check_numerics": bool(check_numerics)}
    if cuda_graphs:  # only when asked: the options are part of cached programs' keys
        options["cuda_graphs"] = True
    if data_parallel:
        from .distributed import DataParallelStep
        return DataParallelStep(program, target, store, optimizer, options)
    if optimizer is not None:
        step = CompiledStep(program, target, store, optimizer, options)
        step.steps_per_execution = int(steps_per_execution)
        return step
    return Function(program, target, store, options, rebuild)
