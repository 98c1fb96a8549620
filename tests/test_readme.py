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
