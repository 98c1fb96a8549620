"""The native image (graphc/backends/cpu/image.py): after a program's first call its
kernels' object code is stored beside their modules, and a later process starts from it
without importing Numba. Each start here is a fresh process with a private cache."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from graphc.backends.cpu import image, jit

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json, sys, warnings
    import numpy as np
    import graphc as gc

    warnings.simplefilter("always")
    x = gc.input("ix", (None, 6))
    y = gc.input("iy", (None,), dtype="int64")
    W = gc.param("iW", (6, 4), init="glorot_uniform")
    b = gc.param("ib", (4,), init="zeros")
    loss = gc.softmax_cross_entropy(gc.tanh(x @ W + b), y)
    rng = np.random.default_rng(0)
    xb, yb = rng.standard_normal((5, 6)).astype("f4"), rng.integers(0, 4, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step = gc.compile(loss, optimizer=gc.optim.Adam(0.05), target="cpu", seed=0)
        losses = [float(step(ix=xb, iy=yb)["loss"]) for _ in range(3)]
    p = step.program_for(5)
    numba_loaded, linalg_loaded = "numba" in sys.modules, "scipy.linalg" in sys.modules
    import scipy.linalg  # the user's own SciPy, after graphc bound its BLAS by hand
    linalg_ok = hasattr(scipy.linalg, "cython_blas") and float(scipy.linalg.solve([[2.0]], [1.0])[0]) == 0.5
    print("RESULT" + json.dumps({
        "losses": losses, "params": {k: v.tolist() for k, v in step.params.items()},
        "from_image": p.stats.from_image, "native": p.native, "numba": numba_loaded,
        "linalg": linalg_loaded, "linalg_ok": linalg_ok,
        "kernels": [k.stem for k in p.kernel_paths],
        "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]}))
''')


def run(script: Path, cache: Path, **env_extra) -> dict:
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    env.pop("GRAPHC_NATIVE_DRIVER", None)
    env.pop("GRAPHC_NATIVE_KERNELS", None)
    env.update(env_extra)
    p = subprocess.run([sys.executable, str(script)], env=env, cwd=str(ROOT), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, f"exited with {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1][len("RESULT"):])


@pytest.fixture
def imaged(tmp_path):
    """A cold start (writes modules, Numba's cache and the native image), then a warm start
    from the image."""
    cache, script = tmp_path / "cache", tmp_path / "train.py"
    script.write_text(SCRIPT)
    cold = run(script, cache)
    assert cold["native"] and not cold["from_image"] and cold["warnings"] == [], cold
    images = sorted(cache.glob("graphc_*.o"))
    assert len(images) == len(cold["kernels"])  # one object per kernel module
    warm = run(script, cache)
    assert warm["from_image"] and warm["native"] and warm["warnings"] == [], warm
    return cache, script, cold, warm, images


def test_a_warm_start_from_the_image_imports_no_numba_and_trains_identically(imaged):
    cache, script, cold, warm, images = imaged
    # graphc compiled every kernel itself (kernels.py): not even the cold start imported Numba
    assert not cold["numba"] and not warm["numba"]
    assert not warm["linalg"] and warm["linalg_ok"] and cold["linalg_ok"]  # GEMMs without scipy.linalg
    assert warm["losses"] == cold["losses"] and warm["params"] == cold["params"]  # bit for bit


def test_an_image_of_numbas_kernels_starts_without_numba_too(tmp_path):
    cache, script = tmp_path / "cache", tmp_path / "train.py"
    script.write_text(SCRIPT)
    cold = run(script, cache, GRAPHC_NATIVE_KERNELS="0")  # Numba compiles the kernels
    assert cold["numba"] and cold["native"] and cold["warnings"] == [], cold
    warm = run(script, cache)
    assert warm["from_image"] and not warm["numba"] and warm["warnings"] == [], warm
    assert warm["losses"] == cold["losses"] and warm["params"] == cold["params"]


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "missing", "swapped"])
def test_a_damaged_image_is_rebuilt_never_fatal(imaged, damage):
    cache, script, cold, warm, images = imaged
    big = max(images, key=lambda f: f.stat().st_size)
    data = bytearray(big.read_bytes())
    if damage == "random bytes":
        at = len(data) // 2
        data[at:at + 64] = np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes()
        big.write_bytes(bytes(data))
    elif damage == "truncated":
        big.write_bytes(bytes(data[:len(data) // 3]))
    elif damage == "missing":
        big.unlink()
    else:
        small = min(images, key=lambda f: f.stat().st_size)
        a, b = big.read_bytes(), small.read_bytes()
        big.write_bytes(b)
        small.write_bytes(a)
    r = run(script, cache)  # compiled again, with one warning, and the image written again
    assert not r["from_image"] and r["losses"] == cold["losses"] and r["params"] == cold["params"], r
    assert len(r["warnings"]) == 1 and "native image" in r["warnings"][0], r["warnings"]
    again = run(script, cache)
    assert again["from_image"] and not again["numba"] and again["warnings"] == [], again
    assert again["losses"] == cold["losses"]


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Programs compiled here compile their kernels (no image yet)."""
    import graphc.backends.cache as gcache
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gcache, "_resolved", {})


def _objects(p) -> list:
    """(symbol, native name, object code) of each kernel of program ``p``: compiled by graphc
    (kernels.py) or by Numba."""
    return [*p._objects.values(), *(image.image_of(m) for m in p._kernel_modules)]


@pytest.mark.parametrize("kernels_by", ["graphc", "numba"])
def test_undefined_symbols_reads_an_object_and_refuses_other_bytes(private_cache, monkeypatch, kernels_by):
    import graphc as gc
    monkeypatch.setenv("GRAPHC_NATIVE_KERNELS", "1" if kernels_by == "graphc" else "0")
    x = gc.input("ux", (None, 3))
    f = gc.compile(gc.exp(x) @ gc.param("uW", (3, 2)), target="cpu")
    f(ux=np.ones((2, 3), np.float32))
    p = f.program_for(2)
    objs = _objects(p)
    assert len(objs) == len(p.kernel_paths) and len(p._objects) == (len(objs) if kernels_by == "graphc" else 0)
    assert objs and all(o is not None for o in objs)
    und = set().union(*(image.undefined_symbols(o[2]) for o in objs))
    assert "numba_xxgemm" in und  # the GEMM kernel calls BLAS through Numba's helper
    assert not any(s.startswith("graphc_") for s in und)  # kernels call nothing of graphc's
    with pytest.raises(ValueError):
        image.undefined_symbols(b"not an object file at all")


def test_graphcs_gemm_binding_serves_numba_code_of_every_blas_kind():
    """A warm start binds ``numba_xxgemm`` to graphc's own entry into SciPy's OpenBLAS; Numba
    code compiled afterwards in the same process (the user's np.dot) calls it too: real and
    complex, single and double."""
    import llvmlite.binding as ll
    from numba import njit
    jit.bind_runtime(jit.jit()[0])

    @njit
    def dot(a, b):
        return np.dot(a, b)

    rng = np.random.default_rng(3)
    for dt in ("f4", "f8", "c8", "c16"):
        a = (rng.standard_normal((5, 4)) + (1j * rng.standard_normal((5, 4)) if dt[0] == "c" else 0)).astype(dt)
        np.testing.assert_allclose(dot(a, a.T), a @ a.T, rtol=1e-5)
    assert ll.address_of_symbol("numba_xxgemm")


@pytest.mark.parametrize("kernels_by", ["graphc", "numba"])
def test_an_unresolvable_symbol_is_refused_before_anything_is_loaded(private_cache, monkeypatch, kernels_by):
    import graphc as gc
    monkeypatch.setenv("GRAPHC_NATIVE_KERNELS", "1" if kernels_by == "graphc" else "0")
    x = gc.input("rx", (None, 3))
    f = gc.compile(gc.sqrt(x) * 2.0, target="cpu")
    f(rx=np.ones((2, 3), np.float32))
    p = f.program_for(2)
    sym, native_name, obj = _objects(p)[-1]
    if kernels_by == "graphc":  # that object is loaded already: the same kernel under another name is not
        from graphc.backends.cpu import kernels
        sym, native_name, obj, _ = kernels.compile_kernel("graphc_probe_unresolvable", p.kernel_paths[-1].read_text(),
                                                       p.entries[p.kernel_paths[-1].stem])
    import hashlib
    monkeypatch.setattr(image, "undefined_symbols", lambda o: ["graphc_no_such_symbol_anywhere"])
    why = image.load_images([(sym, native_name, hashlib.sha256(obj).hexdigest(), obj)])
    assert why is not None and "graphc_no_such_symbol_anywhere" in why
    why = image.load_images([(sym, native_name, "0" * 64, obj)])
    assert why is not None and "digest" in why
