"""Compile speed without timings (issue 15): what a faster start must NOT redo.

- Provenance out of the hash: the user's file:line stays in ``step.source()`` but not in the
  text that names and caches the driver, so an edit above the model recompiles nothing.
- Warm start: after a program's first call its manifest (module names, argument layout,
  scratch, output readers) is stored; the next build of the same program starts from it
  without passes, fusion or code generation, and a damaged manifest or a missing module is
  rebuilt.
- The fast call path is taken for repeated feeds (a counter) and every bad feed still gets
  the FeedError of the full check; the bound call (graphc/backends/cpu/bound.py) then
  serves repeated calls, and anything it was not armed for (shape, dtype, layout, names,
  hyper-parameters, re-allocated arenas, another batch size) falls through to that check.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from gc import collect as gc_collect
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.backends import cache

ROOT = Path(__file__).resolve().parents[1]

MODEL = '''
def model():
    x = gc.input("sx", (None, 6))
    y = gc.input("sy", (None,), dtype="int64")
    W = gc.param("sW", (6, 4), init="glorot_uniform")
    b = gc.param("sb", (4,), init="zeros")
    return gc.softmax_cross_entropy(gc.tanh(x @ W + b), y)
'''


def build_model(pad: int, filename: str = "user_script.py"):
    """The same model defined ``pad`` lines further down a user's script."""
    ns = {"gc": gc}
    exec(compile("\n" * pad + MODEL, filename, "exec"), ns)
    return ns["model"]()


def data(n=5):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 6)).astype("f4"), rng.integers(0, 4, n)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A cache directory of this test's own (modules already loaded in this process are
    reused by name, so this costs no recompile)."""
    d = tmp_path / "gcache"
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(d))
    return d


def test_an_edit_above_the_model_changes_no_module_name():
    xb, yb = data()
    line = 1 + MODEL.splitlines().index('    W = gc.param("sW", (6, 4), init="glorot_uniform")')
    a = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu")
    la = a(sx=xb, sy=yb)["loss"]
    pa = a.program_for(5)
    path, kernel_paths, driver, src_a = pa.path, pa.kernel_paths, pa._driver, a.source()
    assert f"param @ user_script.py:{line} " in src_a  # provenance is where users read it
    written = path.read_text()
    assert "user_script.py" not in written and "\x01" not in written  # and not in the compiled text
    assert re.search(r"# %\d+ param \(6, 4\)", written)  # node positions stay in the cached text
    assert "\x01" not in src_a and "\x02" not in src_a
    del a, pa
    gc_collect()  # nodes are hash-consed: the edited script must build new ones
    b = gc.compile(build_model(40), optimizer=gc.optim.Adam(0.05), target="cpu")
    assert b(sx=xb, sy=yb)["loss"] == la  # same init (seed 0), same data
    pb = b.program_for(5)
    assert f"param @ user_script.py:{line + 40} " in b.source()
    assert pb.path == path and pb.kernel_paths == kernel_paths
    # the second program compiled nothing: the same native driver (or Numba dispatcher with its one overload)
    assert pb._driver is driver and (pb.native or len(driver.overloads) == 1)


def test_a_second_build_starts_from_the_manifest(fresh_cache):
    xb, yb = data()
    first = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu")
    ref = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="numpy")
    np.testing.assert_allclose(first(sx=xb, sy=yb)["loss"], ref(sx=xb, sy=yb)["loss"], rtol=1e-5)
    assert not first.program_for(5).stats.from_manifest
    manifests = list((fresh_cache / "programs").glob("*.json"))
    assert len(manifests) == 1  # written after the first successful call
    second = gc.compile(build_model(3), optimizer=gc.optim.Adam(0.05), target="cpu")
    p = second.program_for(5)
    assert p.stats.from_manifest and p._emitted is None and p._graph is None  # nothing lowered
    assert p.path == first.program_for(5).path
    ref = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="numpy")  # a fresh oracle
    for _ in range(3):
        got, want = second(sx=xb, sy=yb), ref(sx=xb, sy=yb)
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5, atol=1e-6)
    for k, v in ref.params.items():
        np.testing.assert_allclose(second.params[k], v, rtol=1e-5, atol=1e-6)
    # inspection rebuilds graph, plan and source on demand; they match the stored program
    assert cache.module_name(p.module.source) == p.path.stem
    assert "user_script.py:" in second.source() and len(p.plan.kernels) == len(p.module.kernels)
    assert second.kernels(5).startswith(f"{len(p.module.kernels)} kernels")


def test_manifest_key_covers_batch_target_and_options(fresh_cache):
    xb, yb = data(5)
    loss = build_model(0)
    gc.compile(loss, optimizer=gc.optim.Adam(0.05), target="cpu")(sx=xb, sy=yb)
    other = {
        "batch": (gc.compile(loss, optimizer=gc.optim.Adam(0.05), target="cpu"), 7),
        "check_finite": (gc.compile(loss, optimizer=gc.optim.Adam(0.05), target="cpu", check_finite=False), 5),
        "optimizer": (gc.compile(loss, optimizer=gc.optim.SGD(0.05), target="cpu"), 5),
    }
    for what, (step, n) in other.items():
        x2, y2 = data(n)
        step(sx=x2, sy=y2)
        assert not step.program_for(n).stats.from_manifest, what


def _stored_manifest(d: Path) -> Path:
    (m,) = (d / "programs").glob("*.json")
    return m


def test_a_damaged_manifest_is_rebuilt_with_a_warning(fresh_cache):
    xb, yb = data()
    gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu")(sx=xb, sy=yb)
    m = _stored_manifest(fresh_cache)
    good = json.loads(m.read_text())
    for damage in ('{"format": 1, "key": ', json.dumps({**good, "body": {**good["body"], "scratch": {}}})):
        m.write_text(damage)
        step = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu")
        with pytest.warns(RuntimeWarning, match="manifest .* was damaged"):
            step(sx=xb, sy=yb)
        assert not step.program_for(5).stats.from_manifest
        assert json.loads(m.read_text()) == good  # rewritten after the first call


def test_a_missing_or_altered_module_falls_back_to_a_full_build(fresh_cache):
    xb, yb = data()
    first = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu")
    want = first(sx=xb, sy=yb)["loss"]
    p = first.program_for(5)
    p.kernel_paths[0].unlink()
    step = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu")
    assert step(sx=xb, sy=yb)["loss"] == want
    assert not step.program_for(5).stats.from_manifest and p.kernel_paths[0].exists()
    p.path.write_text(p.path.read_text() + "# edited\n")  # content no longer matches its name
    step = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu")
    with pytest.warns(RuntimeWarning, match="corrupted"):
        assert step(sx=xb, sy=yb)["loss"] == want
    assert not step.program_for(5).stats.from_manifest


def test_the_key_names_the_passes_and_refuses_what_is_not_data():
    from graphc.backends.cpu.program import program_key
    step = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu")
    key = lambda **o: program_key(step._program, 5, "cpu", step._store, {**step._options, **o})  # noqa: E731
    assert key() == key() and key(passes=["cse"]) not in (None, key()) and key(passes=["dce"]) != key(passes=["cse"])
    assert key(passes=[lambda g: g]) is None  # not plain data: always compiled in full


# ---- the fast call path -------------------------------------------------------------------------

def test_repeated_feeds_take_the_fast_path_and_bad_feeds_still_fail():
    xb, yb = data()
    step = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu")
    ref = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="numpy")
    step(sx=xb, sy=yb), ref(sx=xb, sy=yb)
    n = step.fast_calls
    for _ in range(3):
        np.testing.assert_allclose(step(sx=xb, sy=yb)["loss"], ref(sx=xb, sy=yb)["loss"], rtol=1e-5)
    assert step.fast_calls == n + 3
    before = step.state_dict()
    bad = {
        "dtype kind": dict(sx=xb, sy=yb.astype("f4")),
        "empty batch": dict(sx=xb[:0], sy=yb[:0]),
        "shape": dict(sx=xb[:, :5].copy(), sy=yb),
        "batch mismatch": dict(sx=xb, sy=yb[:4].copy()),
        "labels": dict(sx=xb, sy=np.full(5, 4)),
        "nan": dict(sx=np.where(np.arange(30).reshape(5, 6) == 7, np.nan, xb).astype("f4"), sy=yb),
        "missing": dict(sx=xb),
        "unknown": dict(sx=xb, sy=yb, sz=yb),
    }
    for what, feeds in bad.items():
        with pytest.raises(gc.FeedError) as native:
            step(**feeds)
        with pytest.raises(gc.FeedError) as full:  # the interpreter's full Python check
            ref(**feeds)
        assert str(native.value) == str(full.value), what
    after = step.state_dict()
    for k in before["params"]:
        np.testing.assert_array_equal(after["params"][k], before["params"][k])
    assert step.iterations == 4
    # a non-contiguous view is checked in full (and copied), then the fast path resumes
    wide = np.zeros((5, 12), "f4")
    wide[:, ::2] = xb
    m = step.fast_calls
    np.testing.assert_allclose(step(sx=wide[:, ::2], sy=yb)["loss"], ref(sx=xb, sy=yb)["loss"], rtol=1e-5)
    assert step.fast_calls == m
    step(sx=xb, sy=yb), ref(sx=xb, sy=yb)
    assert step.fast_calls == m + 1


def _count_bound(step) -> list:
    """Wrap the step's bound call: the list collects what each call of it returned."""
    bound = step._bound
    assert bound is not None, "a repeated fast call must arm the bound call"
    seen, call = [], bound.call

    def counted(feeds):
        r = call(feeds)
        seen.append(r)
        return r
    bound.call = counted
    return seen


def test_the_bound_call_serves_repeated_calls_and_misses_on_any_change():
    """After two calls with the same shapes the step runs through its bound call (no Python
    checks but attribute identities); anything else goes down the checked path, which gives
    the same results and the same FeedError as the interpreter, and re-arms it."""
    xb, yb = data()
    step = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu")
    ref = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="numpy")
    for _ in range(2):
        np.testing.assert_allclose(step(sx=xb, sy=yb)["loss"], ref(sx=xb, sy=yb)["loss"], rtol=1e-5)
    seen = _count_bound(step)
    n = step.fast_calls
    for _ in range(3):
        got = step(sx=xb.copy(), sy=yb.copy())  # other arrays, same shapes and dtypes
        assert got.keys() == {"loss"} and got["loss"].shape == () and type(got["loss"]) is np.ndarray
        np.testing.assert_allclose(got["loss"], ref(sx=xb, sy=yb)["loss"], rtol=1e-5)
    assert len(seen) == 3 and all(type(r) is dict for r in seen) and step.fast_calls == n + 3

    def same_error(**feeds):
        with pytest.raises(gc.FeedError) as native:
            step(**feeds)
        with pytest.raises(gc.FeedError) as full:
            ref(**feeds)
        assert str(native.value) == str(full.value)

    before = step.state_dict()
    moved = xb.copy()
    moved.shape = (10, 3)  # the same array object, reshaped in place
    same_error(sx=moved, sy=yb)
    same_error(sx=xb)  # missing
    same_error(sx=xb, sy=yb, sz=yb)  # extra
    same_error(sx=xb, sy=yb, learning_rate=np.float32(0.1))  # a hyper-parameter is not a feed
    k = len(seen)
    same_error(sx=xb, sy=np.full(5, 4))  # labels out of range: the driver's status
    same_error(sx=np.where(xb > 1, np.nan, xb).astype("f4"), sy=yb)  # NaN: the driver's status
    assert [type(r) for r in seen[k:]] == [int, int] and all(seen[k:])
    after = step.state_dict()
    for name in before["params"]:
        np.testing.assert_array_equal(after["params"][name], before["params"][name])

    # accepted, but only by the checked path (cast or copied there): dtype changed in place,
    # a Fortran-ordered array, int labels of another width, a nested list
    as_int = np.arange(30, dtype="f4").reshape(5, 6) / 30
    retyped = as_int.copy()
    retyped.dtype = np.int32  # the same bytes read as int32: cast to float32 by the full check
    k = len(seen)
    for feeds in (dict(sx=retyped, sy=yb), dict(sx=np.asfortranarray(xb), sy=yb),
                  dict(sx=xb, sy=yb.astype("i4")), dict(sx=xb.tolist(), sy=yb)):
        np.testing.assert_allclose(step(**feeds)["loss"], ref(**feeds)["loss"], rtol=1e-5)
    assert seen[k:] == [None] * 4

    # a hyper-parameter change is seen at once (and re-arms), a structural one still refused
    step.optimizer.learning_rate = ref.optimizer.learning_rate = 0.001
    for _ in range(3):
        np.testing.assert_allclose(step(sx=xb, sy=yb)["loss"], ref(sx=xb, sy=yb)["loss"], rtol=1e-5)
    i = step._bound._hyper_keys.index("hyper:learning_rate")
    assert step._bound._ns[f"H{i}"] == np.float32(0.001)  # re-armed with the new value
    for k, v in ref.params.items():
        np.testing.assert_allclose(step.params[k], v, rtol=1e-5, atol=1e-6)


def test_the_bound_call_follows_batch_sizes_hyper_parameters_and_store_growth():
    step = gc.compile(build_model(0), optimizer=gc.optim.SGD(0.1, momentum=0.9), target="cpu")
    ref = gc.compile(build_model(0), optimizer=gc.optim.SGD(0.1, momentum=0.9), target="numpy")
    for n in (5, 5, 7, 7, 5, 7, 5):  # alternating batch sizes: one bound call each, re-armed
        xb, yb = data(n)
        np.testing.assert_allclose(step(sx=xb, sy=yb)["loss"], ref(sx=xb, sy=yb)["loss"], rtol=1e-5)
    seen = _count_bound(step)
    step.optimizer.learning_rate = ref.optimizer.learning_rate = 0.02
    np.testing.assert_allclose(step(sx=xb, sy=yb)["loss"], ref(sx=xb, sy=yb)["loss"], rtol=1e-5)
    assert seen == [None]  # the version moved: checked path, which re-reads the hyper-parameters
    np.testing.assert_allclose(step(sx=xb, sy=yb)["loss"], ref(sx=xb, sy=yb)["loss"], rtol=1e-5)
    assert type(seen[-1]) is dict
    # a step compiled to share the store adds a param: the arenas are re-allocated
    version = step._store._version
    extra = gc.param("sExtra", (64, 64), init="ones")
    f = gc.compile(gc.sum(extra), params=step, target="cpu")
    assert step._store._version != version and float(f()) == 64 * 64
    np.testing.assert_allclose(step(sx=xb, sy=yb)["loss"], ref(sx=xb, sy=yb)["loss"], rtol=1e-5)
    assert seen[-1] is None  # missed on the store version, then re-armed on the new arenas
    np.testing.assert_allclose(step(sx=xb, sy=yb)["loss"], ref(sx=xb, sy=yb)["loss"], rtol=1e-5)
    assert type(seen[-1]) is dict
    for k, v in ref.params.items():
        np.testing.assert_allclose(step.params[k], v, rtol=1e-5, atol=1e-6)

    class Mirror:  # a device program sharing the store ran last: the host must pull first
        pulls = 0

        def pull(self, store):
            Mirror.pulls += 1
    step._store._owner = Mirror()
    np.testing.assert_allclose(step(sx=xb, sy=yb)["loss"], ref(sx=xb, sy=yb)["loss"], rtol=1e-5)
    assert seen[-1] is None and Mirror.pulls == 1 and step._store._owner is None
    step.optimizer.momentum = 0.0  # structural: the same refusal as before any fast path
    with pytest.raises(gc.GraphcError, match=r"SGD\.momentum was non-zero .* compile a new step"):
        step(sx=xb, sy=yb)


def test_an_inference_function_is_bound_too_and_returns_its_structure():
    x = gc.input("fx", (None, 6))
    W = gc.param("fW", (6, 4), init="glorot_uniform")
    h = gc.tanh(x @ W)
    outs = {"h": h, "s": gc.sum(h), "two": gc.const(np.full(3, 2.0, "f4")) * 1.0}
    f = gc.compile(outs, target="cpu")
    g = gc.compile(outs, target="numpy")
    xb, _ = data()
    for _ in range(2):
        f(fx=xb)
    seen = _count_bound(f)
    for _ in range(2):
        got, want = f(fx=xb), g(fx=xb)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
            assert np.shape(got[k]) == np.shape(want[k])
    assert len(seen) == 2 and all(type(r) is dict for r in seen)
    a, b = f(fx=xb)["h"], f(fx=xb)["h"]
    assert a is not b and not np.shares_memory(a, b)  # every call returns fresh arrays


def test_bound_calls_from_two_threads_are_whole_steps():
    """The bound call holds the store's lock around the driver and the output reads: two
    threads stepping one model on the same batch end where one thread's 2n steps end."""
    import threading
    xb, yb = data()
    step = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu")
    alone = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu")
    step(sx=xb, sy=yb), step(sx=xb, sy=yb)
    assert step._bound is not None
    losses = {}

    def run(k):
        losses[k] = [float(step(sx=xb, sy=yb)["loss"]) for _ in range(40)]
    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = [float(alone(sx=xb, sy=yb)["loss"]) for _ in range(82)]
    assert step.iterations == 82
    for k, v in alone.params.items():
        np.testing.assert_array_equal(step.params[k], v)
    assert sorted(losses[0] + losses[1]) == sorted(want[2:])  # every loss read belongs to one whole step


def test_check_numerics_and_params_as_outputs_are_never_bound():
    xb, yb = data()
    step = gc.compile(build_model(0), optimizer=gc.optim.Adam(0.05), target="cpu", check_numerics=True)
    for _ in range(3):
        step(sx=xb, sy=yb)
    assert step._bound is None and step.fast_calls == 2  # prog.run turns statuses into NumericsErrors
    x = gc.input("px", (None, 6))
    W = gc.param("pW", (6, 1), init="ones")
    step = gc.compile(gc.mean(gc.square(x @ W)), optimizer=gc.optim.SGD(0.01), outputs={"W": W}, target="cpu")
    ref = gc.compile(gc.mean(gc.square(x @ W)), optimizer=gc.optim.SGD(0.01), outputs={"W": W}, target="numpy")
    for _ in range(3):  # W is read as an output before its update: prog.run copies it first
        got, want = step(px=xb), ref(px=xb)
        np.testing.assert_allclose(got["W"], want["W"], rtol=1e-6)
    assert step._bound is None and step.fast_calls == 2


# ---- a second process ---------------------------------------------------------------------------

CHILD = textwrap.dedent('''
    import json, sys
    import numpy as np
    import graphc as gc
    pad = int(sys.argv[1])
    ns = {"gc": gc}
    exec(compile("\\n" * pad + sys.argv[2], "user_script.py", "exec"), ns)
    step = gc.compile(ns["model"](), optimizer=gc.optim.Adam(0.05), target="cpu")
    rng = np.random.default_rng(0)
    xb, yb = rng.standard_normal((5, 6)).astype("f4"), rng.integers(0, 4, 5)
    loss = float(step(sx=xb, sy=yb)["loss"])
    p = step.program_for(5)
    lowered = any(m in sys.modules for m in ("graphc.schedule.plan", "graphc.schedule.fusion", "networkx"))
    src = step.source()
    print("RESULT" + json.dumps({"loss": loss, "driver": p.path.stem, "cache": p.cache_info(),
                                 "manifest": p.stats.from_manifest, "lowered": lowered,
                                 "shows_line": f"user_script.py:{pad + 5}" in src}))
''')


def run_child(cache_dir: Path, pad: int) -> dict:
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", CHILD, str(pad), MODEL], env=env, cwd=str(ROOT),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_edited_script_in_a_new_process_compiles_nothing(tmp_path):
    cold = run_child(tmp_path, 0)
    assert cold["cache"]["misses"] > 0 and not cold["manifest"] and cold["lowered"] and cold["shows_line"]
    warm = run_child(tmp_path, 9)  # the model moved 9 lines down the user's script
    assert warm["driver"] == cold["driver"] and warm["loss"] == cold["loss"]
    assert warm["manifest"] and warm["cache"]["misses"] == 0, warm
    assert not warm["lowered"]  # no passes, fusion or planning (networkx not even imported)
    assert warm["shows_line"]  # source() lowers on demand and shows the script as it is now
