"""The README's first example runs as written, and training with it lowers the loss."""
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_first_example_runs_and_trains():
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)
    step, xb, yb = ns["step"], ns["xb"], ns["yb"]
    assert ns["out"]["loss"] < np.log(10)  # below chance after 100 steps on a fixed batch
    logits = ns["predict"](x=xb)
    assert logits.shape == (32, 10)
    ref = ns["gc"].compile(ns["logits"], target="numpy", params=step)(x=xb)
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-5)


def _commands(text: str) -> list[str]:
    """The pytest command lines of shell text, without comments and ``-q``."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "python -m pytest" in line:
            out.append(" ".join(w for w in line.split() if w != "-q"))
    return out


def test_ci_runs_the_readmes_test_commands():
    text = README.read_text()
    section = text[text.index("## Install and test"):text.index("## A first example")]
    readme = [c for block in re.findall(r"```bash\n(.*?)```", section, re.S) for c in _commands(block)]
    ci = _commands((README.parent / ".ci" / "run").read_text())
    assert readme and not [c for c in readme if c not in ci], (readme, ci)


def test_both_kernel_compilers_run_the_example_models_in_ci():
    """The example models and the bit-for-bit model tests (marker ``numba_kernels``) run once
    more with Numba compiling every kernel, in a cache of their own (a shared one would start
    them from the native image graphc's compiler wrote)."""
    import subprocess
    import sys
    ci = _commands((README.parent / ".ci" / "run").read_text())
    again = [c for c in ci if "GRAPHC_NATIVE_KERNELS=0" in c]
    assert len(again) == 1 and "-m numba_kernels" in again[0] and "GRAPHC_TEST_CACHE_DIR=" in again[0], ci
    first = README.read_text().split("\n\n")[1]  # the first paragraph
    assert "GRAPHC_NATIVE_KERNELS=0" in first and "reference" in first, first
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "numba_kernels", "tests"],
                       cwd=README.parent, capture_output=True, text=True)
    ids = [ln for ln in p.stdout.splitlines() if "::" in ln]
    assert any("test_examples.py::test_cnn_example" in i for i in ids), p.stdout[-2000:]
    assert any("test_examples.py::test_transformer_example" in i for i in ids)
    assert any("test_native_driver.py::test_native_driver_trains_as_the_numba_driver" in i for i in ids)
