"""The cuda target's generated modules: one module per kernel plus a driver, each named by
the hash of its text, and that text names nodes by graph position. So the same program
writes the same cache files whatever was built first in the process, and programs that
differ only in batch size, or a forward function sharing the training step's weights,
import the same kernel modules (on a GPU: compile each kernel once, load it from Numba's
cache in later processes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

import graphc as gc

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import graphc as gc
    if sys.argv[1] == "shift":  # ~50 unrelated nodes first: process-wide node ids move on
        [gc.exp(gc.input("unrelated%d" % i, (2,))) * float(i) for i in range(17)]
    x = gc.input("x", (None, 4)); y = gc.input("y", (None,), dtype="int64")
    W = gc.param("W", (4, 3), init="glorot_uniform"); b = gc.param("b", (3,))
    loss = gc.softmax_cross_entropy(gc.tanh(x @ W + b), y)
    step = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cuda", seed=0)
    rng = np.random.default_rng(0)
    out = float(step(x=rng.standard_normal((3, 4)).astype("f4"), y=np.array([0, 2, 1]))["loss"])
    p = step.program_for(3)
    print("RESULT" + json.dumps({"loss": out, "driver": p.path.name,
                                 "kernels": sorted(k.name for k in p.kernel_paths)}))
''')


def _run(cache: Path, variant: str) -> dict:
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache), NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", SCRIPT, variant], capture_output=True, text=True, env=env,
                       cwd=str(ROOT), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    return json.loads(line[len("RESULT"):])


def _files(cache: Path) -> set[str]:
    return {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()}


def test_cache_file_names_do_not_depend_on_what_was_built_first(tmp_path):
    plain = _run(tmp_path / "plain", "plain")
    shifted = _run(tmp_path / "shifted", "shift")
    assert _files(tmp_path / "plain") == _files(tmp_path / "shifted")
    assert plain == shifted  # same driver, same kernel modules, same loss
    # one module per generated kernel plus the driver, all in the cache directory
    modules = {f for f in _files(tmp_path / "plain") if f.endswith(".py")}
    assert modules == {plain["driver"], *plain["kernels"]}
    assert len(plain["kernels"]) >= 4 and plain["driver"] not in plain["kernels"]


FEAT, HID, CLS = 6, 5, 3


def test_other_batch_sizes_and_a_forward_function_reuse_the_kernel_modules():
    x = gc.input("x", (None, FEAT)); y = gc.input("y", (None,), dtype="int64")
    W1 = gc.param("W1", (FEAT, HID), init="he_normal"); b1 = gc.param("b1", (HID,))
    W2 = gc.param("W2", (HID, CLS), init="he_normal"); b2 = gc.param("b2", (CLS,))
    hidden = gc.relu(x @ W1 + b1)
    logits = hidden @ W2 + b2
    loss = gc.softmax_cross_entropy(logits, y)
    step = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cuda", seed=1)
    ref = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="numpy", seed=1)
    rng = np.random.default_rng(0)
    for n in (4, 5):
        xb, yb = rng.standard_normal((n, FEAT)).astype("f4"), rng.integers(0, CLS, n)
        np.testing.assert_allclose(step(x=xb, y=yb)["loss"], ref(x=xb, y=yb)["loss"], rtol=5e-5)
    p4, p5 = step.program_for(4), step.program_for(5)
    # every kernel of the batch-5 step is a module the batch-4 step already loaded; only
    # the drivers (which hold the launch sizes) differ
    assert set(p5.kernel_paths) == set(p4.kernel_paths) and len(p4.kernel_paths) >= 5  # 6 launches, 5 functions
    assert p4.path != p5.path
    for ln in p5.module.launches:
        if ln.kind == "kernel":  # the very same dispatcher: compiled once per process on a GPU
            assert p5.kernel(ln.function) is p4.kernel(ln.function)

    fwd = gc.compile([hidden, logits], params=step, target="cuda")
    xb = rng.standard_normal((4, FEAT)).astype("f4")
    want = gc.compile([hidden, logits], params=ref, target="numpy")(x=xb)
    for got, w in zip(fwd(x=xb), want):
        np.testing.assert_allclose(got, w, rtol=2e-5, atol=1e-6)
    pf = fwd.program_for(4)
    assert pf.kernel_paths and set(pf.kernel_paths) <= set(p4.kernel_paths)

    # step.source() shows every kernel module (path and text), then the driver
    text = step.source(4)
    for path in p4.kernel_paths:
        assert f"# ---- {path} ----" in text
        assert path.read_text() in text
    assert f"# ---- {p4.path} (the driver) ----" in text
