"""The cpu kernels' dialect is defined in one place: each symbol the generated code calls has
one C prototype (backends/cpu/intrinsics.py), and the compilers take each kernel entry's
signature and operand dtypes from the emitter's description, not from the generated text."""
import ast
from pathlib import Path

import pytest

from graphc.backends.cpu import intrinsics

PKG = Path(__file__).resolve().parents[1] / "graphc"
CPU = PKG / "backends" / "cpu"
# allreduce.py (the all-reduce's lowering and symbol binding) still writes its prototype itself;
# this entry goes once it declares it from intrinsics.ALLREDUCE
ELSEWHERE = {"graphc_mpi_allreduce": {"backends/cpu/allreduce.py"}}


def _string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


PROTOS = [v for v in vars(intrinsics).values() if isinstance(v, intrinsics.Proto)]


@pytest.mark.parametrize("proto", PROTOS, ids=lambda p: p.symbol)
def test_each_intrinsic_prototype_is_written_once(proto):
    """No module but intrinsics.py names an intrinsic's symbol (each declares it from its Proto)."""
    assert len(PROTOS) >= 4
    named = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if proto.symbol in _string_constants(p))
    allowed = {"backends/cpu/intrinsics.py"} | ELSEWHERE.get(proto.symbol, set())
    assert "backends/cpu/intrinsics.py" in named
    assert set(named) <= allowed, named


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
