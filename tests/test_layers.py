"""The package's layers point down: backends know nothing of the runtime, training or
distributed layers above them, the cpu backend's program module is its top, and target
names are read only by the backend registry (everything else asks a backend what it can do)."""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "graphc"
TARGET_NAMES = {"cpu", "parallel", "numpy", "cuda"}


def _module(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: pathlib.Path, root: pathlib.Path = ROOT) -> set[str]:
    """Every module an import statement anywhere in ``path`` names (function-level imports
    too), resolved to absolute names; ``from m import x`` names both m and m.x."""
    mod = _module(path, root)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[:len(pkg.split(".")) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return out


def _under(name: str, top: str) -> bool:
    return name == top or name.startswith(top + ".")


def test_the_import_parser_sees_relative_and_function_level_imports(tmp_path):
    d = tmp_path / "graphc" / "backends" / "cpu"
    d.mkdir(parents=True)
    f = d / "x.py"
    f.write_text("import os\ndef g():\n    from ...distributed import ensure_native\n    from .. import base\n")
    names = _imports(f, tmp_path)
    assert {"os", "graphc.distributed", "graphc.distributed.ensure_native", "graphc.backends.base"} <= names


def _imports_above(pkg: str, above: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in sorted((PKG / pkg).rglob("*.py")):
        names = sorted(n for n in _imports(path) if any(_under(n, a) for a in above))
        if names:
            bad[str(path.relative_to(ROOT))] = names
    return bad


def test_backends_import_nothing_above_them():
    # the cost model the parallel emitter's prange threshold reads is graphc/schedule/cost.py,
    # below both the backends and explain
    above = ("graphc.distributed", "graphc.runtime", "graphc.training", "graphc.api", "graphc.explain")
    bad = _imports_above("backends", above)
    assert not bad, f"modules under graphc/backends/ import layers above them: {bad}"


def test_the_schedule_imports_neither_backends_nor_explain():
    bad = _imports_above("schedule", ("graphc.explain", "graphc.backends", "graphc.distributed",
                                      "graphc.runtime", "graphc.training", "graphc.api"))
    assert not bad, f"modules under graphc/schedule/ import layers above them: {bad}"


def test_the_shared_backend_modules_import_no_backend():
    """cache.py, base.py and expr.py serve every backend: a backend registers what they need
    from it (graphc/backends/__init__.py wires it up), they never import one."""
    backends = [f"graphc.backends.{p.name}" for p in (PKG / "backends").iterdir() if p.is_dir()
                and (p / "__init__.py").exists()] + ["graphc.backends.numpy"]
    bad = {}
    for path in sorted((PKG / "backends").glob("*.py")):
        if path.name in ("__init__.py", "numpy.py"):
            continue
        names = sorted(n for n in _imports(path) if any(_under(n, b) for b in backends))
        if names:
            bad[str(path.relative_to(ROOT))] = names
    assert "graphc.backends.cpu" in backends and not bad, f"shared backend modules import a backend: {bad}"


def test_the_cpu_program_module_is_the_top_of_its_backend():
    """program.py imports the JIT, the kernel compiler and the driver translator; none of
    them (nor any other cpu module) imports it back."""
    bad = [str(p.relative_to(ROOT)) for p in sorted((PKG / "backends" / "cpu").rglob("*.py"))
           if p.name != "program.py" and "graphc.backends.cpu.program" in _imports(p)]
    assert not bad, f"these cpu backend modules import program.py, which imports them: {bad}"


def _names_a_target(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in TARGET_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_target(e) for e in node.elts)
    return False


def target_comparisons(text: str) -> list[tuple[int, str]]:
    """(line, source) of each comparison with a target name (``x == "cpu"``, ``t in
    ("cpu", "parallel")``). Default arguments are not comparisons; Numba's
    ``error_model="numpy"`` is not a target."""
    out = []
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Compare) and any(_names_a_target(o) for o in (node.left, *node.comparators)):
            if "error_model" not in lines[node.lineno - 1]:
                out.append((node.lineno, ast.get_source_segment(text, node) or ""))
    out.sort()
    return out


def test_the_target_comparison_finder_finds_them():
    text = ('def f(target="cpu", e=None):\n    if target in ("cpu", "parallel"): pass\n'
            '    a = e.target == "numpy"\n    b = "cuda" != target\n    c = target == other\n'
            '    d = getattr(k, "value", None) != "numpy" and k.arg == "error_model"\n')
    assert [line for line, _ in target_comparisons(text)] == [2, 3, 4]


def test_only_the_registry_compares_target_names():
    registry = PKG / "backends" / "__init__.py"
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        if path == registry:
            continue
        bad += [f"{path.relative_to(ROOT)}:{line}: {src}" for line, src in target_comparisons(path.read_text())]
    assert not bad, ("target names are compared outside graphc/backends/__init__.py (ask the backend's "
                     "capabilities instead):\n" + "\n".join(bad))


# imported only where the feature is used, each behind an ImportError that says what to install
OPTIONAL = {"matplotlib", "mpi4py", "cupy", "h5py", "threadpoolctl", "cuda"}


def test_every_module_graphc_needs_is_a_declared_dependency():
    import re
    import sys
    import tomllib
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in deps}
    imported = set()
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                imported.add(node.module.split(".")[0])
    needed = {m for m in imported if m not in sys.stdlib_module_names and m != "graphc"} - OPTIONAL
    assert "llvmlite" in needed and not needed - declared, f"imported but not declared: {needed - declared}"


def test_the_files_the_code_and_its_map_cite_exist():
    """Docstrings, comments, README.md and docs/ARCHITECTURE.md name modules by path
    (``graphc/backends/cpu/driver.py``): a move leaves no citation of a file that is gone."""
    import re
    texts = sorted(PKG.rglob("*.py")) + [ROOT / "README.md", ROOT / "docs" / "ARCHITECTURE.md"]
    gone = sorted({f"{path.relative_to(ROOT)}: {m}" for path in texts
                   for m in re.findall(r"(?<![\w/.])(graphc/[\w/]*\w(?:\.py)?)", path.read_text())
                   if not (ROOT / m).exists()})
    assert not gone, gone
