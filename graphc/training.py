"""The training graph: loss -> grad -> optimizer update, as one Graph.

Its outputs are what the user asked to see (``loss`` first) followed by the new values of
every parameter and state tensor; the runtime writes the latter back in place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from . import dsl as F
from .errors import DTypeError, GraphcError, ShapeError, StateError
from .ir import Graph, Node, topo_order
from .optim.base import Optimizer, resolve_state_spec

STEP = "step"


@dataclass
class Program:
    """What a compiled call computes: ``graph`` outputs = user outputs then store updates."""

    graph: Graph
    user_names: list[str]
    updates: list[str]  # store names written, in output order after the user outputs
    declared: tuple = ()  # state the optimizer declared: in the store even if no op reads it
    hypers: dict = field(default_factory=dict)  # input name -> optimizer hyper-parameter it feeds
    structure: dict = field(default_factory=dict)  # structural hyper-parameter -> was it non-zero

    @property
    def sources(self) -> list[Node]:
        """Every param and state this program reads or writes (the store must hold them)."""
        found = {n.name: n for n in self.graph.nodes if n.op in ("param", "state")}
        for n in self.declared:
            found.setdefault(n.name, n)
        return list(found.values())


def check_unique_names(nodes) -> None:
    seen: dict[str, Node] = {}
    for n in nodes:
        if n.op not in ("param", "state", "input"):
            continue
        prev = seen.get(n.name)
        if prev is not None and prev is not n:
            raise GraphcError(f"two different {n.op}s are named {n.name!r}: {prev!r} (created at {prev.src}) "
                              f"and {n!r} (created at {n.src}); names must be unique")
        seen[n.name] = n


def state_updates(updates, reserved=()) -> list[tuple[str, Node]]:
    """``compile(..., updates={state: new value})`` checked: keys are ``gc.state`` tensors (or
    their names) that the optimizer does not own, values tensors of their shape (cast to
    their dtype). Model state such as batch normalization's moving statistics is updated
    this way, inside the same compiled call, written after every kernel has read it."""
    if updates is None:
        return []
    if not isinstance(updates, Mapping):
        raise TypeError(f"compile: updates must be a dict {{state tensor: new value}}, got {type(updates).__name__}")
    out: list[tuple[str, Node]] = []
    for key, v in updates.items():
        if not (isinstance(key, Node) and key.op == "state"):
            what = f"the {key.op} {key.name!r}" if isinstance(key, Node) and key.op in ("param", "input") else repr(key)
            raise GraphcError(f"compile: updates keys must be gc.state tensors, got {what}"
                              + (" (params are updated by the optimizer)" if isinstance(key, Node)
                                 and key.op == "param" else ""))
        if key.name == STEP or key.name in reserved or any("/" in key.name and key.name.startswith(p + "/")
                                                            for p in reserved):
            raise GraphcError(f"compile: state {key.name!r} belongs to the optimizer; updates may only name model state")
        if not isinstance(v, Node):
            v = F.const(v, key.dtype)
        if v.shape != key.shape:
            raise ShapeError(f"compile: the update of state {key.name!r} has shape {v.shape}, expected {key.shape} "
                             f"(created at {v.src})")
        out.append((key.name, F.cast(v, key.dtype)))
    names = [k for k, _ in out]
    if len(set(names)) != len(names):
        raise GraphcError(f"compile: updates name a state twice: {names}")
    return out


def forward_program(outputs: Mapping[str, Node], updates=None) -> Program:
    ups = state_updates(updates)
    g = Graph(list(outputs.values()) + [v for _, v in ups], list(outputs) + [f"update:{k}" for k, _ in ups])
    check_unique_names(g.nodes)
    return Program(g, list(outputs), [k for k, _ in ups], tuple(n for n in updates or ()))


def training_program(loss: Node, optimizer: Optimizer, extra: Mapping[str, Node] | None = None,
                     data_parallel: bool = False, model_updates: Mapping | None = None) -> Program:
    """Build loss + gradients + the optimizer's updates as one Program (``data_parallel``:
    gradients and loss averaged over the MPI ranks before the update, graphc/distributed.py)."""
    if not isinstance(loss, Node):
        raise TypeError("compile: with an optimizer, the first argument must be the scalar loss tensor")
    if loss.shape != ():
        raise ShapeError(f"compile: the loss must be a scalar, got shape {loss.shape} (created at {loss.src})")
    if loss.dtype.kind != "f":
        raise DTypeError(f"compile: the loss must be floating point, got {loss.dtype}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"compile: optimizer must be a graphc.optim.Optimizer, got {optimizer!r}")
    extra = dict(extra or {})
    if "loss" in extra:
        raise GraphcError("compile: 'loss' is always returned; choose another name for the extra output")
    nodes = topo_order([loss, *extra.values()])
    check_unique_names(nodes)
    params = sorted((n for n in topo_order([loss]) if n.op == "param"), key=lambda n: n.name)
    if not params:
        raise GraphcError("compile: the loss depends on no param, so there is nothing to train")
    optimizer.dtype = params[0].dtype  # (checks every hyper-parameter is finite in it)
    # the optimizer's gradient stage (default: grad + global_clipnorm), checked like update's result
    if data_parallel:  # one all-reduce of the gradients (and loss) before clipping and update
        from .distributed import data_parallel_gradients
        grads, loss = data_parallel_gradients(optimizer, loss, list(params))
    else:
        grads = optimizer.gradients(loss, list(params))
    where = f"{type(optimizer).__name__}.gradients"
    if isinstance(grads, Node) or not isinstance(grads, (list, tuple)) or len(grads) != len(params):
        got = (f"a list of {len(grads)}" if isinstance(grads, (list, tuple)) else f"a {type(grads).__name__}")
        raise GraphcError(f"{where} must return a list of one gradient per param ({len(params)}: "
                          f"{[p.name for p in params]}), got {got}")
    for p, g in zip(params, grads):
        if not isinstance(g, Node):
            raise GraphcError(f"{where}: the gradient of param {p.name!r} is a {type(g).__name__}, "
                              f"not a graphc tensor of shape {p.shape}")
        if g.shape != p.shape:
            raise ShapeError(f"{where}: the gradient of param {p.name!r} has shape {g.shape}, expected "
                             f"{p.shape} (the param's shape; created at {g.src})")
        if g.dtype != p.dtype:
            raise DTypeError(f"{where}: the gradient of param {p.name!r} has dtype {g.dtype}, expected "
                             f"{p.dtype} (the param's dtype; created at {g.src})")

    step = F.state(STEP, (), init="zeros", dtype="int64")
    declared = [step]
    t_new = step + 1
    t = F.cast(t_new, params[0].dtype)
    outs: dict[str, Node] = {"loss": loss, **extra}
    updates: list[tuple[str, Node]] = []
    opt_name = type(optimizer).__name__
    for p, g in zip(params, grads):
        spec = optimizer.state_spec(p)
        if not isinstance(spec, Mapping):
            raise StateError(f"{opt_name}.state_spec for param {p.name!r} must return a dict "
                             f"{{state name: entry}}, got {type(spec).__name__}")
        st = {}
        for k, entry in spec.items():
            shape, dtype, init = resolve_state_spec(optimizer, p, k, entry)
            st[k] = F.state(f"{p.name}/{k}", shape, init=init, dtype=dtype)
            declared.append(st[k])
        result = optimizer.update(p, g, st, t)
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping)):
            raise GraphcError(f"{opt_name}.update must return (new param, {{state name: new value}}), "
                              f"got {type(result).__name__}")
        new_p, new_st = result
        if set(new_st) != set(st):
            raise GraphcError(f"{opt_name}.update returned state {sorted(new_st)} "
                              f"but state_spec declared {sorted(st)}")
        for k, v, ref, what in ([(p.name, new_p, p, "param")]
                                + [(f"{p.name}/{k}", new_st[k], st[k], "state") for k in st]):
            if not isinstance(v, Node):
                raise ShapeError(f"{opt_name}.update: the new value of {what} {k!r} is a {type(v).__name__}, "
                                 f"not a graphc tensor of shape {ref.shape}")
            if v.shape != ref.shape:
                declared = "the param's shape" if what == "param" else "its declared shape"
                raise ShapeError(f"{opt_name}.update: the new value of {what} {k!r} has shape {v.shape}, "
                                 f"expected {ref.shape} ({declared})")
            updates.append((k, F.cast(v, ref.dtype)))
    updates += state_updates(model_updates, [p.name for p in params])
    declared += [n for n in model_updates or ()]
    updates.append((STEP, t_new))
    names = list(outs) + [f"update:{k}" for k, _ in updates]
    g = Graph(list(outs.values()) + [v for _, v in updates], names)
    check_unique_names(g.nodes)
    hp = optimizer.hyperparameters
    hypers = {feed: name for feed, name in optimizer.hyper_feeds().items()
              if any(n.op == "input" and n.name == feed for n in g.nodes)}
    structure = {k: hp[k] != 0.0 for k in optimizer.structural_hyperparameters if k in hp}
    return Program(g, list(outs), [k for k, _ in updates], tuple(declared), hypers, structure)


def multi_step_program(program: Program, k: int) -> Program:
    """``program`` run ``k`` times in one call (``compile(steps_per_execution=k)``), as a
    ``gc.scan`` whose carry is every value the program writes (params, optimizer state, the
    step counter, model state) and whose xs are the stacked feeds: each input gets a new
    leading axis of size ``k`` (step ``i`` reads ``x[i]``), hyper-parameter feeds are read
    once per call. User outputs come back stacked along that axis; the store receives the
    ``k``-th step's values. Step ``i`` computes exactly what the ``i``-th of ``k`` single
    calls would: the same graph on the previous step's values, the in-step random
    generator keyed by the carried counter. The compiled targets unroll the scan
    (passes/unroll.py), the numpy target interprets it."""
    from .substitution import substitute
    if k == 1:
        return program
    graph, n_user = program.graph, len(program.user_names)
    by_name = {n.name: n for n in program.sources}
    carried = [by_name[name] for name in program.updates]
    feeds = [n for n in graph.inputs if n.name not in program.hypers]
    stacked = [F.input(n.name, (k,) + tuple(n.shape), n.dtype) for n in feeds]

    def one_step(carry, xs):
        outs = substitute(list(graph.outputs), {**dict(zip(carried, carry)), **dict(zip(feeds, xs))})
        return list(outs[n_user:]), list(outs[:n_user])

    final, ys = F.scan(one_step, list(carried), stacked)
    g = Graph(list(ys) + list(final), list(graph.names))
    check_unique_names(g.nodes)
    return Program(g, list(program.user_names), list(program.updates), program.declared, dict(program.hypers),
                   dict(program.structure))
