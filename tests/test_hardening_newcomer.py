"""What a newcomer trips on first: scalar branches of ``where``, errors that name their op,
the README's op list against the ops that exist, examples that leave no files behind."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
import graphc.dsl as dsl

ROOT = Path(__file__).resolve().parents[1]
M = np.array([[-2.0, 0.0, 3.0], [0.5, -0.25, 7.0]], "float32")


@pytest.mark.parametrize("a, b, dtype, ref", [
    (1.0, -1.0, "float32", np.where(M > 0, 1.0, -1.0)),    # floats: graphc's default float
    (1, -1.0, "float32", np.where(M > 0, 1.0, -1.0)),      # an int and a float: the float
    (2, -3, "int64", np.where(M > 0, 2, -3)),              # ints: NumPy's default int
    (True, False, "bool", M > 0),
])
def test_where_takes_scalar_branches_when_the_condition_is_a_tensor(a, b, dtype, ref):
    m = gc.input("nc_m", (None, 3))
    y = gc.where(m > 0, a, b)
    assert y.dtype == np.dtype(dtype) and y.shape == (None, 3)
    for target in ("numpy", "cpu"):
        out = gc.compile(y, target=target)(nc_m=M)
        assert out.dtype == np.dtype(dtype), target
        np.testing.assert_array_equal(out, ref.astype(dtype))


def test_where_with_one_scalar_branch_takes_the_tensors_dtype():
    m = gc.input("nc_m2", (4,), "float64")
    y = gc.where(m > 0, m, 0.0)
    assert y.dtype == np.float64  # as x + 1.0: a Python scalar takes the tensor's dtype
    assert (m + 1.0).dtype == np.float64


@pytest.mark.parametrize("call, op", [
    (lambda: gc.where(True, 1.0, -1.0), "where"),
    (lambda: gc.where(np.ones(3, bool), 1.0, -1.0), "where"),
    (lambda: gc.add(1, 2), "add"),
    (lambda: gc.maximum(1.0, np.zeros(2)), "maximum"),
    (lambda: gc.greater(1, 2), "greater"),
    (lambda: gc.mse(np.zeros(2), 0.0), "mse"),
])
def test_no_tensor_operand_names_the_op_and_the_users_line(call, op):
    with pytest.raises(gc.GraphcError) as e:
        call()
    assert isinstance(e.value, TypeError)  # what the message was raised as before
    msg = str(e.value)
    assert msg.startswith(f"{op}: ") and "graphc tensor" in msg
    assert "test_hardening_newcomer.py:" in msg


def _readme_dsl_bullet() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("- **The DSL**")
    return text[start:text.index("\n- **", start + 1)]


def test_readme_lists_every_public_dsl_op():
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", _readme_dsl_bullet()))
    missing = sorted(n for n in dsl.__all__ if n != "Tensor" and n not in words)
    assert not missing, f"README's DSL list lacks {missing}"
    text = (ROOT / "README.md").read_text()
    for name in ("grad", "check_grads", "evaluate", "substitute", "compile", "to_dot"):  # gc.* beyond the DSL
        assert f"gc.{name}(" in text, name


def test_readme_and_docstrings_say_explain_prints():
    import graphc.explain as ex
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Is my step fast?"):text.index("## Compile cache")]
    assert "prints" in section and "verbose=False" in section
    for doc in (ex.__doc__, ex.explain.__doc__):  # the module's and the function's
        assert "prints" in doc.lower() and "verbose" in doc


def _load_example(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"newcomer_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name, argv", [
    ("cnn_keras", ["--target", "numpy", "--epochs", "1", "--filters", "2,2", "--dense", "4", "--verbose", "0"]),
    ("functional_residual", ["--target", "numpy", "--epochs", "1", "--width", "8", "--blocks", "1", "--verbose", "0"]),
    ("transformer_keras", ["--target", "numpy", "--train", "64", "--test", "16", "--epochs", "1", "--dim", "8",
                           "--heads", "1", "--mlp", "8", "--verbose", "0"]),
])
def test_keras_examples_write_a_plot_only_when_asked(name, argv, tmp_path, monkeypatch, capsys):
    """A run without --plot leaves the directory it ran in as it was (a fresh clone stays clean)."""
    if name != "transformer_keras":
        pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", [f"{name}.py", *argv])  # functional_residual's main() reads sys.argv
    mod = _load_example(name)
    mod.main(argv) if name != "functional_residual" else mod.main()
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert "training curves" not in out and "training-curve plot" not in out, out


def test_transformer_example_describes_its_default_task(capsys):
    mod = _load_example("transformer")
    with pytest.raises(SystemExit):
        mod.main(["--help"])
    text = capsys.readouterr().out
    default = re.search(r"what to learn \(default: (\w+)\)", text).group(1)
    assert default == "sort"
    summary = mod.__doc__.splitlines()[0]
    assert "learns to sort" in summary, summary  # the default task is the one the summary names


def test_the_repository_speaks_about_the_project_only():
    """Code, docs and benchmarks describe graphc and what a user runs, not the circumstances
    they were written in (patterns assembled so this file does not match itself)."""
    patterns = [r"\blent\b", "borr" + "owed", "device " + "time", r"\.\./" + "shared", "DESIGN" + r"\.md",
                r"\bthe " + r"issue\b", r"other " + r"agents?\b", r"\b(?:end of the|earlier \w+|this) " + "session",
                "device " + "image"]
    rx = re.compile("|".join(patterns), re.I)
    hits = []
    for top in ("graphc", "docs", "benchmarks", "examples", "tests", "README.md", "pyproject.toml"):
        base = ROOT / top
        for f in [base] if base.is_file() else sorted(base.rglob("*")):
            if f.suffix not in (".py", ".md", ".sh", ".toml", ".txt", ".cfg") or "results" in f.parts:
                continue
            for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                if rx.search(line):
                    hits.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)
