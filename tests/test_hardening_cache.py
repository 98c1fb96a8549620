"""Issue 9 hardening of the on-disk cache and of loading generated code:

- a ``parallel`` driver compiled in a process whose parfor kernels came from the cache
  must load from the cache later (it segfaulted: Numba dropped the kernels' reload hook);
- a damaged Numba cache file (random bytes, swapped files, a truncated index) is found
  before it is loaded, cleared and rebuilt with one RuntimeWarning: never SIGILL/SIGSEGV;
- an unusable GRAPHC_CACHE_DIR (a file, a path under a file, an unwritable directory)
  falls back to a private temporary cache with one RuntimeWarning;
- a dropped program releases its generated modules and Numba dispatchers;
- two threads making their first calls at once on a cold cache both succeed.

The crash-type flows run in subprocesses (a segfault is a failed test, not a dead run),
each with its own cache directory; the models are tiny to keep the compiles short.
"""
from __future__ import annotations

import gc as pygc
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.backends import cache as gcache

ROOT = Path(__file__).resolve().parents[1]


def run_py(script: Path, cache, *args, env_extra=None) -> dict:
    """Run ``script`` with GRAPHC_CACHE_DIR=cache; return its RESULT json (rc must be 0)."""
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT), **(env_extra or {}))
    p = subprocess.run([sys.executable, str(script), *args], env=env, cwd=str(ROOT),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{script.name} {args} exited with {p.returncode}:\n{p.stdout}\n{p.stderr}"
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


# ---- 1. parallel driver compiled against cached parfor kernels --------------------------------

PARALLEL = textwrap.dedent('''
    import json, sys, warnings
    import numpy as np
    import graphc as gc
    import graphc.backends.cache as gcache

    if "legacy" in sys.argv:  # graphc before the fix: Numba's reload hooks are not restored
        gcache._fix_numba_reload_init = lambda: None
    warnings.simplefilter("always")
    x = gc.input("px", (None, 128))
    W = gc.param("pW", (128,), init="ones")
    b = gc.param("pb", (128,), init="zeros")
    # 2048 x 128 = 262144 elements (3 MB moved): a prange (parfor) kernel; elementwise, as a
    # GEMM's epilogue needs a longer loop for one (emitter.GEMM_PARFOR_MIN_S)
    out = gc.relu(x * W + b)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = gc.compile(out, target="parallel", seed=3)
        ref = gc.compile(out, target="numpy", seed=3)
        xb = np.random.default_rng(0).standard_normal((2048, 128)).astype("f4")
        err = float(np.max(np.abs(f(px=xb) - ref(px=xb))))
    p = f.program_for(2048)
    print("RESULT" + json.dumps({
        "driver": p.path.stem, "parallel": [k.parallel for k in p.module.kernels],
        "err": err, "cache": p.cache_info(),
        "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]}))
''')


# these tests are about Numba's cache files: the kernels are Numba's (graphc compiles them
# itself by default, kernels.py, and keeps no Numba file for them), and so is the driver
NUMBA_KERNELS = {"GRAPHC_NATIVE_KERNELS": "0"}
NUMBA_DRIVER = {**NUMBA_KERNELS, "GRAPHC_NATIVE_DRIVER": "0"}


def _without_check_finite(script: str) -> str:
    """The same model with another driver (no finiteness checks) over the same kernels (an
    edited line number would not do: the user's file:line is not part of the driver's text)."""
    return script.replace('target="parallel", seed=3)', 'target="parallel", seed=3, check_finite=False)')


def _driver_nbc(cache: Path, stem: str) -> bytes:
    (f,) = (cache / "__pycache__").glob(f"{stem}.step-*.nbc")
    return f.read_bytes()


def test_parallel_driver_compiled_against_cached_kernels_loads_from_cache(tmp_path):
    cache = tmp_path / "cache"
    first = tmp_path / "model.py"
    first.write_text(PARALLEL)
    copy = tmp_path / "model_copy.py"  # no finiteness prologue: a new driver, the same kernels
    copy.write_text(_without_check_finite(PARALLEL))

    a = run_py(first, cache)  # cold: kernels and driver compiled
    assert any(a["parallel"]) and a["err"] < 1e-5, a
    # the Numba driver (the fallback of graphc's own, driver.py) is the one cached by Numba
    b = run_py(copy, cache, env_extra=NUMBA_DRIVER)  # kernels from the cache, the driver compiled
    assert b["driver"] != a["driver"] and b["err"] < 1e-5, b
    # the root cause: code linking a parfor kernel needs Numba's parallel runtime started. The
    # driver calls kernels through symbols and links none of their code; a parallel kernel's
    # module starts the runtime itself when imported (its native entry's cache entry carries
    # no reload hook), before that entry can be called
    assert b"_reload_parfors" not in _driver_nbc(cache, b["driver"])
    parallel = [f.read_text() for f in cache.glob("graphc_*.py") if "parallel=True" in f.read_text()]
    assert parallel and all("\nstart_parallel_runtime()" in t for t in parallel)
    c = run_py(copy, cache, env_extra=NUMBA_DRIVER)  # the driver from the cache: this run segfaulted
    assert c["err"] < 1e-5 and c["cache"]["misses"] == 0 and c["warnings"] == [], c
    d = run_py(copy, cache)  # graphc's native driver over the same cached parfor kernels
    assert d["err"] < 1e-5 and d["cache"]["misses"] == 0 and d["warnings"] == [], d


def test_parallel_driver_cached_without_its_reload_hook_still_runs(tmp_path):
    """Entries written before the fix lack the hook; graphc starts the parallel runtime itself
    before it loads a driver that links parfor kernels."""
    cache = tmp_path / "cache"
    first, copy = tmp_path / "model.py", tmp_path / "model_copy.py"
    first.write_text(PARALLEL)
    copy.write_text(_without_check_finite(PARALLEL))
    run_py(first, cache)
    b = run_py(copy, cache, "legacy", env_extra=NUMBA_DRIVER)
    assert b"_reload_parfors" not in _driver_nbc(cache, b["driver"])  # what Numba alone writes
    c = run_py(copy, cache, env_extra=NUMBA_DRIVER)
    assert c["err"] < 1e-5 and c["cache"]["misses"] == 0, c


# ---- 2. damaged Numba cache files -------------------------------------------------------------

TRAIN = textwrap.dedent('''
    import json, sys, warnings
    import numpy as np
    import graphc as gc

    x = gc.input("dx", (None, 6))
    y = gc.input("dy", (None,), dtype="int64")
    W = gc.param("dW", (6, 4), init="glorot_uniform")
    b = gc.param("db", (4,), init="zeros")
    loss = gc.softmax_cross_entropy(gc.tanh(x @ W + b), y)
    rng = np.random.default_rng(0)
    xb, yb = rng.standard_normal((5, 6)).astype("f4"), rng.integers(0, 4, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nat = gc.compile(loss, optimizer=gc.optim.Adam(0.05), target="cpu")
        ref = gc.compile(loss, optimizer=gc.optim.Adam(0.05), target="numpy")
        losses = [(float(nat(dx=xb, dy=yb)["loss"]), float(ref(dx=xb, dy=yb)["loss"])) for _ in range(3)]
    p = nat.program_for(5)
    print("RESULT" + json.dumps({
        "driver": p.path.stem, "kernels": [k.stem for k in p.kernel_paths], "cache": p.cache_info(),
        "loss_err": max(abs(a - b) for a, b in losses),
        "param_err": max(float(np.max(np.abs(nat.params[k] - ref.params[k]))) for k in ref.params),
        "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]}))
''')


@pytest.fixture
def trained(tmp_path):
    """A private cache holding one trained program's modules and Numba files. The driver
    is Numba's (GRAPHC_NATIVE_DRIVER=0): graphc's native driver is compiled in each process
    and has no cache file to damage; its kernels' files are those of the Numba driver."""
    cache = tmp_path / "cache"
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    first = run_py(script, cache, env_extra=NUMBA_DRIVER)
    assert first["warnings"] == [] and first["cache"]["misses"] > 0, first
    return cache, script, first


def _check_rebuilt(cache, script):
    r = run_py(script, cache, env_extra=NUMBA_DRIVER)
    assert r["loss_err"] < 1e-5 and r["param_err"] < 1e-5, r
    assert len(r["warnings"]) == 1 and "integrity" in r["warnings"][0], r["warnings"]
    native = run_py(script, cache, env_extra=NUMBA_KERNELS)  # the native driver over the rebuilt kernels
    assert native["warnings"] == [] and native["cache"]["misses"] == 0, native
    assert native["loss_err"] < 1e-5 and native["param_err"] < 1e-5, native
    again = run_py(script, cache, env_extra=NUMBA_DRIVER)  # the rebuilt entries are trusted, warm entries again
    assert again["warnings"] == [] and again["cache"]["misses"] == 0, again
    assert again["loss_err"] < 1e-5 and again["param_err"] < 1e-5, again


def _entry_code(data: bytes) -> int:
    """Offset, in an .nbc, of the machine code of the driver's Python entry point (found
    through the symbol table of the ELF object Numba stores there)."""
    import struct
    elf = data.index(b"\x7fELF")
    shoff, = struct.unpack_from("<Q", data, elf + 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, elf + 0x3A)
    sections = []
    for i in range(shnum):
        h = elf + shoff + i * shentsize
        sh_type, = struct.unpack_from("<I", data, h + 4)
        off, size, link = struct.unpack_from("<QQI", data, h + 24)
        entsize, = struct.unpack_from("<Q", data, h + 56)
        sections.append((sh_type, elf + off, size, link, entsize))
    for sh_type, off, size, link, entsize in sections:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        strtab = sections[link][1]
        for s in range(off, off + size, entsize):
            name_off, _, _, shndx, value = struct.unpack_from("<IBBHQ", data, s)
            end = data.index(b"\0", strtab + name_off)
            name = data[strtab + name_off:end]
            if b"cpython" in name and b"step" in name and 0 < shndx < len(sections):
                return sections[shndx][1] + value
    raise AssertionError("no entry point symbol in the driver's object code")


def test_random_bytes_in_the_drivers_nbc(trained):
    cache, script, first = trained
    (nbc,) = (cache / "__pycache__").glob(f"{first['driver']}.*.nbc")
    data = bytearray(nbc.read_bytes())
    at = _entry_code(bytes(data))  # machine code that runs first, loaded by Numba unchecked
    data[at:at + 64] = np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes()
    nbc.write_bytes(bytes(data))
    _check_rebuilt(cache, script)


def test_two_nbc_files_swapped(trained):
    cache, script, first = trained
    pyc = cache / "__pycache__"
    (driver,) = pyc.glob(f"{first['driver']}.*.nbc")
    kernel = max((f for k in first["kernels"] for f in pyc.glob(f"{k}.*.nbc")), key=lambda f: f.stat().st_size)
    a, b = driver.read_bytes(), kernel.read_bytes()
    driver.write_bytes(b)
    kernel.write_bytes(a)
    _check_rebuilt(cache, script)


def test_truncated_nbi(trained):
    cache, script, first = trained
    (nbi,) = (cache / "__pycache__").glob(f"{first['driver']}.*.nbi")
    data = nbi.read_bytes()
    nbi.write_bytes(data[: len(data) // 2])
    _check_rebuilt(cache, script)


def test_a_warm_start_trusts_its_own_entries_and_writes_nothing(trained):
    cache, script, first = trained
    first_native = run_py(script, cache, env_extra=NUMBA_KERNELS)  # writes the kernels' native image once
    assert first_native["warnings"] == [] and first_native["cache"]["misses"] == 0, first_native
    assert len(list(cache.glob("graphc_*.o"))) == len(first["kernels"])
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    for env in (NUMBA_DRIVER, {}, {}):  # the Numba driver, then graphc's native one from the image
        r = run_py(script, cache, env_extra=env)
        assert r["warnings"] == [] and r["cache"]["misses"] == 0, r
        assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == before


# ---- 14. an unusable cache directory ----------------------------------------------------------

def _resolve(monkeypatch, configured) -> tuple[Path, list]:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(configured))
    monkeypatch.setattr(gcache, "_resolved", {})  # resolved afresh, as in a new process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = gcache.cache_dir()
        again = gcache.cache_dir()
    assert again == d
    return d, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def _assert_private_fallback(d: Path, caught: list, configured) -> None:
    assert len(caught) == 1, [str(w.message) for w in caught]
    msg = str(caught[0].message)
    assert str(configured) in msg and "temporary" in msg, msg
    assert d.is_dir() and os.access(d, os.W_OK)
    assert not str(d).startswith(str(configured))
    assert Path(tempfile.gettempdir()) in d.parents


def test_cache_path_that_is_a_file(tmp_path, monkeypatch):
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    d, caught = _resolve(monkeypatch, f)
    _assert_private_fallback(d, caught, f)
    assert f.read_text() == "x"


def test_cache_path_under_a_file(tmp_path, monkeypatch):
    f = tmp_path / "plain-file"
    f.write_text("x")
    d, caught = _resolve(monkeypatch, f / "sub")
    _assert_private_fallback(d, caught, f / "sub")


def test_cache_dir_that_cannot_be_written(monkeypatch):
    """/sys/kernel exists, and no one, root included, can create a file in it (sysfs)."""
    ro = Path("/sys/kernel")
    assert ro.is_dir()
    with pytest.raises(OSError):
        tempfile.mkstemp(dir=ro)  # the precondition: this directory really is unwritable
    d, caught = _resolve(monkeypatch, ro)
    _assert_private_fallback(d, caught, ro)


def test_unusable_cache_dir_end_to_end(tmp_path):
    """A whole training run with GRAPHC_CACHE_DIR pointing at a file: one warning, right values."""
    f = tmp_path / "cachefile"
    f.write_text("not a directory")
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    r = run_py(script, f)
    assert r["loss_err"] < 1e-5 and r["param_err"] < 1e-5, r
    assert len(r["warnings"]) == 1 and "temporary" in r["warnings"][0], r["warnings"]
    assert f.read_text() == "not a directory"


# ---- 15. dropped programs release their modules ------------------------------------------------

def _model(tag: str, features: int):
    x = gc.input(f"{tag}x", (None, features))
    W = gc.param(f"{tag}W", (features, 3), init="glorot_uniform")
    return gc.sigmoid(x @ W) * 3.0


def test_a_dropped_program_releases_its_modules(monkeypatch, tmp_path):
    monkeypatch.setattr(gcache, "RETIRED_MODULES", 0)  # release at once, keep no recent ones
    monkeypatch.setenv("GRAPHC_NATIVE_KERNELS", "0")  # modules of Numba's kernels are what is released
    # Numba caches the helpers it compiles while compiling a function once per process
    # (cached_internal_func), and that cache pins the environment, so the module, of the
    # first caller that needed them: a fixed cost, not one per program. So the drivers are
    # compiled here (a private cache) and a live program compiles first.
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gcache, "_resolved", {})
    warm = gc.compile(_model("w", 5), target="cpu")
    warm(wx=np.ones((3, 5), np.float32))
    f = gc.compile(_model("r", 7), target="cpu")
    xb = np.ones((2, 7), np.float32)
    f(rx=xb)
    p = f.program_for(2)
    name, driver, module = p.path.stem, weakref.ref(p._driver), weakref.ref(p._module)
    native_driver = p._driver if p.native else None
    assert name in sys.modules
    del f, p
    pygc.collect()  # runs the program's finalizer, which unloads its modules
    assert name not in sys.modules
    pygc.collect()
    # the module and its compiled code objects; a native driver (driver.py) stays compiled for
    # the process, as Numba's own compiled code does
    assert module() is None and (driver() is None or driver() is native_driver)


def test_a_recreated_program_reuses_a_recently_dropped_module():
    x = gc.input("qx", (None, 7))
    W = gc.param("qW", (7, 3), init="glorot_uniform")
    out = gc.tanh(x @ W) - 1.0
    xb = np.ones((2, 7), np.float32)
    f = gc.compile(out, target="cpu")
    r1 = f(qx=xb)
    mod = f.program_for(2)._module
    del f
    pygc.collect()
    g = gc.compile(out, target="cpu")
    np.testing.assert_allclose(g(qx=xb), r1, rtol=1e-6)
    p = g.program_for(2)
    # kept among the recently dropped: nothing reloaded (or started from the native image the
    # first program wrote, which imports and compiles nothing either)
    assert p._module is mod or (p.stats.from_image and p._module is None)
    assert p.cache_info()["misses"] == 0


# ---- 4. first calls from three threads on a cold cache ----------------------------------------

THREADS = textwrap.dedent('''
    import json, threading, traceback
    import numpy as np
    import graphc as gc

    errors, results = [], {}
    acts = [gc.tanh, gc.sigmoid, gc.relu, gc.exp]

    def build(act):
        x = gc.input("tx", (None, 5))
        W = gc.param("tW", (5, 3), init="glorot_uniform")
        return act(x @ W) * 2.0 + 1.0  # the same graph in every thread: shared modules

    def work(t, i, barrier):
        try:
            f = gc.compile(build(acts[i]), target="cpu", seed=1)
            ref = gc.compile(build(acts[i]), target="numpy", seed=1)
            xb = np.full((3 + t % 2, 5), 0.5, np.float32)  # two drivers, one of them twice
            barrier.wait()
            results[(t, i)] = float(np.max(np.abs(f(tx=xb) - ref(tx=xb))))
        except BaseException:
            errors.append(traceback.format_exc())

    for i in range(len(acts)):  # every round has kernels nobody has loaded yet
        barrier = threading.Barrier(3)
        ts = [threading.Thread(target=work, args=(t, i, barrier)) for t in range(3)]
        [t.start() for t in ts]
        [t.join() for t in ts]
    print("RESULT" + json.dumps({"errors": errors, "err": max(results.values()), "n": len(results)}))
''')


def test_first_calls_from_threads_on_a_cold_cache(tmp_path):
    script = tmp_path / "threads.py"
    script.write_text(THREADS)
    r = run_py(script, tmp_path / "cache")
    assert r["errors"] == [], "\n".join(r["errors"])
    assert r["n"] == 12 and r["err"] < 1e-5, r
