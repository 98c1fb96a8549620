"""The cpu kernels' dialect is defined in one place: each symbol the generated code calls has
one C prototype (backends/cpu/intrinsics.py), and the compilers take each kernel entry's
signature and operand dtypes from the emitter's description, not from the generated text."""
import ast
from pathlib import Path

import pytest

from graphc.backends.cpu import intrinsics

PKG = Path(__file__).resolve().parents[1] / "graphc"
CPU = PKG / "backends" / "cpu"


def _string_constants(path: Path) -> set[str]:
    """The module's string literals, but an LLVM module's ``name=`` (which may be a symbol's)."""
    tree = ast.parse(path.read_text())
    names = {id(k.value) for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords if k.arg == "name"}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in names}


PROTOS = [v for v in vars(intrinsics).values() if isinstance(v, intrinsics.Proto)]


@pytest.mark.parametrize("proto", PROTOS, ids=lambda p: p.symbol)
def test_each_intrinsic_prototype_is_written_once(proto):
    """No module but intrinsics.py names an intrinsic's symbol (each declares it from its Proto)."""
    assert len(PROTOS) >= 4
    named = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if proto.symbol in _string_constants(p))
    assert named == ["backends/cpu/intrinsics.py"]


def test_prototypes_build_their_llvm_types():
    from llvmlite import ir
    m = ir.Module()
    f = intrinsics.XXGEMM.declare(m)
    assert intrinsics.XXGEMM.declare(m) is f  # declared once per module
    assert str(f.function_type) == "i32 (i8, i8, i8, i64, i64, i64, i8*, i8*, i64, i8*, i64, i8*, i8*, i64)"
    assert str(intrinsics.ALLREDUCE.fnty()) == "i32 (i64, i64, i64, i32)"


def test_every_dialect_intrinsic_is_importable_from_its_module():
    import importlib
    for name, it in intrinsics.DIALECT.items():
        if it.module == "graphc.distributed":  # built on first use (needs mpi4py's MPI only when called)
            continue
        assert hasattr(importlib.import_module(it.module), name), name
    assert intrinsics.import_line("gemm") == "from graphc.backends.cpu.blas import gemm\n"


def test_no_regex_or_token_scan_recovers_entry_signatures():
    """kernels.py and the driver's translator take signatures and dtypes from the emitter's
    descriptions: neither imports ``re`` nor knows the ``@cfunc(...)`` line's form."""
    for path in [CPU / "kernels.py", *(CPU / f for f in ("driver.py", "jit.py", "image.py", "lowering.py"))]:
        assert path.exists(), path
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "re" not in imported, path.name
        assert not any("@cfunc" in s for s in _string_constants(path) if "int64(" in s), path.name


def test_the_descriptions_match_the_text_and_are_checked(tmp_path, monkeypatch):
    """Each kernel module's description names its cfunc's parameters and signature as the text
    does, lists the intrinsics it calls; a description that disagrees is refused."""
    import dataclasses
    import numpy as np
    import graphc as gc
    import graphc.backends.cache as gcache
    from graphc.backends.cpu import kernels
    from graphc.backends.cpu.lowering import Unsupported
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gcache, "_resolved", {})
    x = gc.input("dx", (None, 4))
    W = gc.param("dW", (4, 3), init="glorot_uniform")
    f = gc.compile(gc.sum(gc.exp(x @ W), axis=0), target="cpu")
    f(dx=np.ones((2, 4), np.float32))
    p = f.program_for(2)
    assert p.native and set(p.entries) == {kp.stem for kp in p.kernel_paths}
    uses = set()
    for kp in p.kernel_paths:
        desc, text = p.entries[kp.stem], kp.read_text()
        (fn,) = [n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == desc.name]
        assert [a.arg for a in fn.args.args] == [name for name, _ in desc.args]
        assert fn.decorator_list[0].args[0].value == f"int64({', '.join(desc.ctypes)})"
        called = {n.func.id for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert set(desc.intrinsics) == called & set(intrinsics.DIALECT)
        for ptr, dt in desc.dtypes:
            assert f"view({ptr}, " in text and f"np.{dt})" in text
        uses |= set(desc.intrinsics)
    assert {"gemm", "view"} <= uses
    kp = next(kp for kp in p.kernel_paths if "gemm" in p.entries[kp.stem].intrinsics)
    desc = p.entries[kp.stem]
    wrong = dataclasses.replace(desc, dtypes=tuple((ptr, "float64") for ptr, _ in desc.dtypes))
    with pytest.raises(Unsupported, match="described as float64"):
        kernels.compile_kernel("graphc_desc_dtype", kp.read_text(), wrong)
    with pytest.raises(Unsupported, match="gemm is not among"):
        kernels.compile_kernel("graphc_desc_gemm", kp.read_text(), dataclasses.replace(desc, intrinsics=("view",)))


def test_the_native_compilation_modules_import_one_way():
    """intrinsics/entry <- lowering, jit <- driver, image, kernels <- program: no module imports
    one of the same layer or above (so each can be read without the ones that use it)."""
    layer = {"intrinsics": 0, "entry": 0, "lowering": 1, "jit": 1, "driver": 2, "image": 2, "kernels": 2,
             "program": 3}
    for name, level in layer.items():
        tree = ast.parse((CPU / f"{name}.py").read_text())
        used = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1
                and n.module}
        used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 and not n.module
                 for a in n.names}
        assert "native" not in used, name
        above = {u for u in used if layer.get(u, -1) >= level}
        assert not above, (name, above)
