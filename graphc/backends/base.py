"""What every runnable program shares, whatever its backend: the lowered input, compile
stats, scratch arenas with their constants, output readers, node naming in generated code,
de-duplication of generated functions, and the index-range checks of structured ops."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..ir import Graph, Node

if TYPE_CHECKING:  # (networkx, imported by the planner, is not needed to run a cached program)
    from ..schedule.plan import Plan


@dataclass
class CompileStats:
    passes_s: float = 0.0
    codegen_s: float = 0.0
    numba_s: float = 0.0  # first call: compiling (graphc's LLVM, or Numba) or loading kernels and driver
    nodes_before: int = 0
    nodes_after: int = 0
    from_manifest: bool = False  # started from a stored manifest: no passes, fusion or codegen ran
    from_image: bool = False  # kernels loaded from their native image (cpu): no Numba at all


@dataclass
class Lowered:
    """A program specialized to one batch size, optimized, fused and planned: what the
    compiler hands a backend (graphc/compiler.py)."""

    program: Any  # training.Program
    batch: int | None
    graph: Graph
    kernels: list
    plan: Plan
    stats: CompileStats


@dataclass
class KernelInfo:
    """One scheduled kernel as ``kernels()`` lists it (every backend fills the same fields;
    ``launches`` is for backends with more than one launch per kernel)."""

    name: str  # k0, k1 ... in schedule order
    function: str  # the generated function (shared between identical kernels)
    kind: str
    shape: tuple
    ops: list[str]
    nodes: list[Node]
    outputs: list[Node]
    out_bytes: int
    parallel: bool = False
    launches: list = field(default_factory=list)


def numel(shape) -> int:
    """Elements of a tensor of ``shape`` (1 for a scalar)."""
    return int(np.prod(shape)) if shape else 1


def out_bytes(outputs: list[Node]) -> int:
    return sum((int(np.prod(o.shape)) if o.shape else 1) * o.dtype.itemsize for o in outputs)


# ---- generated code ---------------------------------------------------------------------------

def local_names(graph: Graph) -> dict[int, int]:
    """id(node) -> its position in ``graph.dump()``. Generated code names nodes by position,
    never by process-wide ids, so one program generates the same text (the same cache
    entry) in every process, whatever else was built first."""
    return {id(n): i for i, n in enumerate(graph.nodes)}


def site(n: Node, local: dict[int, int]) -> str:
    """``%k op @ file:line`` for generated-code comments."""
    return f"%{local[id(n)]} {n.op} @ {n.src.rsplit('/', 1)[-1]}"


# Provenance (the user's file:line) in generated comments is wrapped in these markers: the
# text that is hashed, written and compiled has it removed (``without_provenance``), so an
# edit above the model in the user's script changes no module name and recompiles nothing;
# ``source()`` shows it (``with_provenance``). The %k node positions stay in both.
_PROV_OPEN, _PROV_CLOSE = "\x01", "\x02"
_PROV = re.compile("\x01([^\x02\n]*)\x02")


def site_comment(n: Node, local: dict[int, int]) -> str:
    """``site`` with its ``@ file:line`` marked as provenance (see ``without_provenance``)."""
    return f"%{local[id(n)]} {n.op}{_PROV_OPEN} @ {n.src.rsplit('/', 1)[-1]}{_PROV_CLOSE}"


def without_provenance(text: str) -> str:
    """Generated text with the marked provenance removed: what is hashed and written."""
    return _PROV.sub("", text)


def with_provenance(text: str) -> str:
    """Generated text with the marked provenance shown as plain comments: what users read."""
    return _PROV.sub(r"\1", text)


class FunctionTable:
    """Generated functions by the hash of their text: identical kernels (the update of every
    parameter, say) are emitted and compiled once."""

    def __init__(self):
        self.sources: dict[str, str] = {}  # name -> source
        self.nparams: dict[str, int] = {}

    def add(self, deco: str, params: list[str], body: list[str], tag: str = "kernel") -> str:
        text = "\n".join(body)
        key = hashlib.sha1((deco + ",".join(params) + text).encode()).hexdigest()[:12]
        name = f"{tag}_{key}"
        if name not in self.sources:
            self.sources[name] = f"{deco}\ndef {name}({', '.join(params)}):\n{text}\n"
            self.nparams[name] = len(params)
        return name

    def __len__(self) -> int:
        return len(self.sources)

    def modules(self, header: str) -> tuple[dict[str, str], dict[str, str]]:
        """One module per function (``header`` + its text), named by the hash of that text:
        programs that share a kernel (another batch size, a forward function next to its
        training step) import one file and reuse its compiled code. Returns {module name:
        source} and {function name: module name} (what a driver imports from where)."""
        from .cache import module_name
        modules, owner = {}, {}
        for fname, fsrc in self.sources.items():
            owner[fname] = module_name(header + fsrc)
            modules[owner[fname]] = header + fsrc
        return modules, owner


def describe_modules(kernels, driver, driver_source: str, graph: Graph) -> str:
    """A native program's ``describe()``: each kernel module headed by its path (``kernels``:
    (path, source) pairs), the driver, then the compiled graph (``%k`` in the comments is
    line k of ``graph.dump()``)."""
    dump = "\n".join("# " + line for line in graph.dump().splitlines())
    text = "".join(f"# ---- {path} ----\n{src}\n" for path, src in kernels)
    return (text + f"# ---- {driver} (the driver) ----\n" + driver_source
            + "\n# ---- the compiled graph (%k in the comments above) ----\n" + dump + "\n")


# ---- memory -----------------------------------------------------------------------------------

def host_scratch(plan: Plan, graph: Graph, sizes: dict | None = None) -> dict[np.dtype, np.ndarray]:
    """One zeroed host arena per dtype (``sizes``: elements, default the plan's), with the
    plan's constants filled in."""
    sizes = plan.arena_sizes if sizes is None else sizes
    scratch = {np.dtype(dt): np.zeros(max(int(n), 1), dtype=dt) for dt, n in sizes.items()}
    for n in graph.nodes:
        b = plan.buffers.get(id(n))
        if b is not None and b.kind == "const":
            scratch[b.dtype][b.offset:b.offset + b.size] = b.value.reshape(-1)
    return scratch


def output_reader(n: Node, plan: Plan, read_scratch: Callable) -> Callable:
    """``reader(feeds, before)`` -> the value of user output ``n`` after a run of a device
    backend. Scratch values come from ``read_scratch(buffer)`` (a flat host copy of the
    buffer); ``before`` holds the pre-step values of params/state read as outputs. (The cpu
    program reads its host arenas with readers of its own, cpu/program.py.)"""
    b = plan.buffers[id(n)]
    shape = n.shape
    if b.kind == "scratch":
        if shape == ():
            return lambda feeds, before: np.array(read_scratch(b)[0])
        return lambda feeds, before: read_scratch(b).reshape(shape)
    if b.kind in ("literal", "const"):
        v = np.array(b.value, dtype=n.dtype).reshape(shape)
        return lambda feeds, before: v.copy()
    if b.kind == "feed":
        return lambda feeds, before: np.array(feeds[n.name])
    if b.kind == "store":  # a param/state read as an output: its value before the update
        return lambda feeds, before: before[n.name]
    raise AssertionError(b.kind)


def index_checks(graph: Graph) -> list[tuple[str, int, str]]:
    """(input name, bound, the ops it indexes) for every fed integer input that a structured
    op uses as indices (class labels, embedding ids): values must lie in [0, bound) before
    any kernel runs. Each op declares its index operands in its rule (ops/base.py)."""
    out: dict[str, tuple[int, set]] = {}
    _index_uses(graph.nodes, {}, out)
    return [(k, b, " and ".join(sorted(u))) for k, (b, u) in sorted(out.items())]


def _fed(x, alias: dict):
    """The fed input whose elements ``x`` holds: the input itself, a reshape of it, one
    leading-axis entry of it (``x[t]``: one step's batch of stacked feeds, a scan's x slice
    once unrolled), or a scan body's placeholder standing for one (``alias``); else None.
    The whole input is checked (every entry is read when a scan or K steps unroll)."""
    while id(x) not in alias and (x.op == "reshape" or (x.op == "slice" and _one_row(x.attrs["slices"]))):
        x = x.inputs[0]
    return x if x.op == "input" else alias.get(id(x))


def _one_row(slices) -> bool:
    first, rest = slices[0], slices[1:]
    return first is not None and first[1] - first[0] == 1 and all(r is None for r in rest)


def _index_uses(nodes, alias: dict, out: dict) -> None:
    for n in nodes:
        if n.op == "scan":  # the body's index operands, its placeholders mapped to what they read
            body = n.attrs["body"]
            inner = {id(a): f for a, x in zip(body.args, n.inputs) if (f := _fed(x, alias)) is not None}
            _index_uses(body.order(), inner, out)
            continue
        rule = n.opdef.structured
        if rule is None or rule.index_operands is None:
            continue
        for idx, bound in rule.index_operands(n):
            fed = _fed(idx, alias)
            if fed is not None:
                b, users = out.get(fed.name, (bound, set()))
                out[fed.name] = (min(b, bound), users | {n.op})
