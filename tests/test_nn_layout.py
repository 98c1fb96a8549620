"""graphc.nn's module layout: every module imports on its own, a module's imports come before
its code, the package's modules import each other without a cycle (layer modules import
graphc/nn/base.py, never layers.py), and every layer is reachable as ``graphc.nn.layers.X``."""
import ast
import inspect
import pathlib
import subprocess
import sys

import graphc.nn
from graphc.nn import base, layers

NN = pathlib.Path(graphc.nn.__file__).parent
MODULES = sorted(p.stem for p in NN.glob("*.py") if p.stem != "__init__")


def _tree(name: str) -> ast.Module:
    return ast.parse((NN / f"{name}.py").read_text(), filename=f"{name}.py")


def _nn_imports(name: str) -> set[str]:
    """The graphc.nn modules ``name`` imports at module level."""
    out = set()
    for node in _tree(name).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out |= {a.name for a in node.names} if node.module is None else {node.module.split(".")[0]}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("graphc.nn."):
            out.add(node.module.split(".")[2])
    return out & set(MODULES)


def test_each_module_imports_on_its_own():
    procs = {m: subprocess.Popen([sys.executable, "-c", f"import graphc.nn.{m}"], stderr=subprocess.PIPE)
             for m in MODULES}
    failed = {m: p.communicate()[1].decode()[-400:] for m, p in procs.items()}
    failed = {m: err for m, err in failed.items() if procs[m].returncode != 0}
    assert not failed, failed
    assert {"base", "layers", "model"} <= set(MODULES)


def test_imports_come_before_code():
    for m in MODULES + ["__init__"]:
        body = _tree(m).body
        code = [i for i, n in enumerate(body) if not isinstance(n, (ast.Import, ast.ImportFrom))
                and not (i == 0 and isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        late = [n.lineno for n in body[code[0]:] if isinstance(n, (ast.Import, ast.ImportFrom))] if code else []
        assert not late, f"graphc/nn/{m}.py imports at line(s) {late}, after its code"


def test_no_import_cycle_between_nn_modules():
    graph = {m: _nn_imports(m) for m in MODULES}
    assert "base" in graph["layers"] and "layers" not in graph["base"]

    def cycle_from(m, path):
        if m in path:
            return path[path.index(m):] + [m]
        for n in sorted(graph[m]):
            c = cycle_from(n, path + [m])
            if c:
                return c
        return None

    for m in MODULES:
        c = cycle_from(m, [])
        assert c is None, f"import cycle: {' -> '.join(c)}"


def test_every_layer_is_exported_by_layers():
    import importlib
    found = {}
    for m in MODULES:
        mod = importlib.import_module(f"graphc.nn.{m}")
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and issubclass(obj, base.Layer) and not name.startswith("_") \
                    and obj.__module__ == mod.__name__:
                found[name] = obj
    assert {"Dense", "Conv2D", "MultiHeadAttention", "BatchNormalization", "InputLayer", "Layer"} <= set(found)
    missing = sorted(n for n, cls in found.items() if getattr(layers, n, None) is not cls)
    assert not missing, f"not importable as graphc.nn.layers.X: {missing}"
    assert layers.Input is base.Input and layers.KerasTensor is base.KerasTensor
