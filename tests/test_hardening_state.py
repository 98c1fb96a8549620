"""Load paths are all-or-nothing, checkpoint files are found, checked and written like any
other file, and non-finite state is not saved by accident (issue 9, items 5-7).

Everything runs on target="numpy" (the store and checkpoint code is target-independent);
the killed-save and umask cases run their flows in subprocesses.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import graphc as gc
from graphc.errors import StateError

X = gc.input("hx", (None, 3))
W = gc.param("hW", (3, 2), init="glorot_uniform")
B = gc.param("hb", (2,), init="zeros")
LOSS = gc.mean(gc.square(X @ W + B))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def feeds(seed=0):
    return {"hx": np.random.default_rng(seed).standard_normal((4, 3)).astype("f4")}


def make(opt=None, **kw):
    step = gc.compile(LOSS, optimizer=opt if opt is not None else gc.optim.Adam(0.01), target="numpy", **kw)
    step(**feeds())
    return step


def flat(step):
    sd = step.state_dict()
    return {f"{s}/{k}": np.array(v) for s in ("params", "state") for k, v in sd[s].items()}, sd.get("hyper")


def assert_unchanged(step, before):
    arrays, hyper = flat(step)
    assert sorted(arrays) == sorted(before[0])
    for k, v in before[0].items():
        np.testing.assert_array_equal(arrays[k], v, err_msg=k)
    assert hyper == before[1]


def run_py(code: str, *args: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env, capture_output=True,
                          text=True, timeout=120, **kw)


# ---- item 5: every load path validates everything before writing anything ---------------------------

def test_finiteness_is_checked_after_the_cast_to_the_store_dtype():
    step = make()
    before = flat(step)
    sd = step.state_dict()
    sd["params"]["hb"] = sd["params"]["hb"] + 1.0  # valid, must not be written
    sd["params"]["hW"] = np.full((3, 2), 1e300)  # float64, finite; float32 inf
    with pytest.raises(StateError, match=r"load_state_dict.*'hW'.*float32"):
        step.load_state_dict(sd)
    assert_unchanged(step, before)
    with pytest.raises(StateError, match=r"set_params.*'hW'.*float32"):
        step.set_params({"hW": np.full((3, 2), -1e300)})
    assert_unchanged(step, before)


@pytest.mark.parametrize("bad", ["abc", float("nan"), float("inf"), np.array([0.1, 0.2]), None, True])
def test_bad_hyper_parameter_in_a_state_dict_changes_nothing(bad):
    step = make()
    before = flat(step)
    sd = step.state_dict()
    sd["params"] = {k: v + 1.0 for k, v in sd["params"].items()}
    sd["state"]["step"] = np.asarray(41)
    sd["hyper"]["learning_rate"] = bad
    with pytest.raises(StateError, match=r"load_state_dict.*Adam.*learning_rate"):
        step.load_state_dict(sd)
    assert_unchanged(step, before)


def test_unknown_hyper_parameter_and_section_are_refused():
    step = make()
    before = flat(step)
    sd = step.state_dict()
    sd["params"] = {k: v + 1.0 for k, v in sd["params"].items()}
    sd["hyper"]["learnig_rate"] = 0.5
    with pytest.raises(StateError, match=r"learnig_rate.*learning_rate"):
        step.load_state_dict(sd)
    sd = step.state_dict()
    sd["optimizer"] = {"learning_rate": 0.5}
    with pytest.raises(StateError, match="optimizer"):
        step.load_state_dict(sd)
    with pytest.raises(StateError, match="'hW'.*str"):
        step.load_state_dict({**step.state_dict(), "params": {"hW": "zeros", "hb": np.zeros(2)}})
    with pytest.raises(StateError, match="mapping"):
        step.load_state_dict([("params", {})])
    assert_unchanged(step, before)
    # a good dict with a new learning rate is applied, hyper-parameters included
    sd = step.state_dict()
    sd["hyper"]["learning_rate"] = np.float64(0.25)  # what a checkpoint hands back
    step.load_state_dict(sd)
    assert step.optimizer.learning_rate == 0.25


def test_set_params_errors_name_set_params():
    step = make()
    before = flat(step)
    for bad, pattern in [({"hW": np.zeros((2, 3))}, r"set_params: 'hW' has shape \(2, 3\), expected \(3, 2\)"),
                         ({"nope": np.zeros(2)}, r"set_params: unknown params \['nope'\]"),
                         ({"hb": np.array([1, np.nan])}, r"set_params: 'hb' holds NaN or infinity")]:
        with pytest.raises(StateError, match=pattern) as e:
            step.set_params(bad)
        assert "load_state_dict" not in str(e.value)
    assert_unchanged(step, before)
    step.set_params({"hb": np.array([1.0, 2.0])})  # partial: the other param is kept
    np.testing.assert_array_equal(step.params["hb"], [1, 2])
    np.testing.assert_array_equal(step.params["hW"], before[0]["params/hW"])


def test_compile_params_dict_is_checked():
    with pytest.raises(StateError, match=r"compile\(params=\.\.\.\): 'hW' has shape \(2, 3\), expected \(3, 2\)"):
        gc.compile(LOSS, optimizer="sgd", target="numpy", params={"hW": np.zeros((2, 3))})
    with pytest.raises(StateError, match=r"unknown.*'nope'.*'hW'"):
        gc.compile(LOSS, optimizer="sgd", target="numpy", params={"hW": np.zeros((3, 2)), "nope": np.zeros(2)})
    with pytest.raises(StateError, match=r"'hW'.*float32"):
        gc.compile(LOSS, optimizer="sgd", target="numpy", params={"hW": np.full((3, 2), 1e300)})
    with pytest.raises(StateError, match=r"'hb'.*dtype"):
        gc.compile(LOSS, optimizer="sgd", target="numpy", params={"hb": np.array(["a", "b"])})
    # a state_dict handed over whole gets a pointer to what to pass
    with pytest.raises(StateError, match="load_state_dict"):
        gc.compile(LOSS, optimizer="sgd", target="numpy", params=make().state_dict())
    # legal names: the program's params and state (optimizer state included)
    w0 = np.arange(6.0).reshape(3, 2)
    step = gc.compile(LOSS, optimizer=gc.optim.Adam(0.01), target="numpy", params={"hW": w0, "hW/m": np.ones((3, 2))})
    np.testing.assert_array_equal(step.params["hW"], w0)
    np.testing.assert_array_equal(step.state_dict()["state"]["hW/m"], np.ones((3, 2)))
    # a forward function only knows its own params
    fwd = gc.compile(X @ W, target="numpy", params={"hW": w0})
    np.testing.assert_allclose(fwd(hx=np.ones((1, 3), "f4")), [[6.0, 9.0]])
    with pytest.raises(StateError, match="'hb'"):
        gc.compile(X @ W, target="numpy", params={"hW": w0, "hb": np.zeros(2)})


def _nn_model(opt):
    from graphc.nn import Dense, Sequential
    m = Sequential([Dense(2, input_shape=(3,))])
    m.compile(optimizer=opt, loss="mse", target="numpy")
    return m


@pytest.mark.parametrize("fit_first", [True, False])
def test_nn_load_weights_of_another_optimizer_changes_nothing(tmp_path, fit_first):
    x = np.random.default_rng(0).standard_normal((8, 3)).astype("f4")
    y = np.zeros((8, 2), "f4")
    adam = _nn_model(gc.optim.Adam(0.1))
    adam.fit(x, y, epochs=1, verbose=0)
    path = adam.save_weights(tmp_path / "adam", include_optimizer=True)
    sgd = _nn_model(gc.optim.SGD(0.1))
    if fit_first:
        sgd.fit(x, y, epochs=1, verbose=0)
    before = sgd.get_weights()
    with pytest.raises(ValueError, match="optimizer"):
        sgd.load_weights(path)
    for a, b in zip(sgd.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    # the weights-only checkpoint of the same model loads into it
    sgd.load_weights(adam.save_weights(tmp_path / "w"))
    for a, b in zip(sgd.get_weights(), adam.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_nn_rebuilt_layer_starts_fresh_instead_of_taking_a_stale_weight():
    """After pop() and add(), a new layer may reuse a popped layer's name with another shape:
    the model's kept weights (passed as compile(params=...)) must only hold what still fits."""
    from graphc.nn import Dense
    x = np.random.default_rng(0).standard_normal((8, 3)).astype("f4")
    m = _nn_model("sgd")
    m.add(Dense(2))
    m.fit(x, np.zeros((8, 2), "f4"), epochs=1, verbose=0)
    first = m.get_weights()[:2]
    m.pop()
    m.add(Dense(5))  # named like the popped layer, another shape
    m.compile(optimizer="sgd", loss="mse", target="numpy")
    m.fit(x, np.zeros((8, 5), "f4"), epochs=1, verbose=0)
    assert [w.shape for w in m.get_weights()] == [(3, 2), (2,), (2, 5), (5,)]
    assert not np.array_equal(m.get_weights()[0], first[0])  # the kept layer kept training


# ---- item 6: checkpoint files ---------------------------------------------------------------------

def test_load_finds_the_file_save_wrote(tmp_path):
    step = make()
    step.save(tmp_path / "ck")  # writes ck.npz, as np.savez does
    assert os.listdir(tmp_path) == ["ck.npz"]
    for p in (tmp_path / "ck", str(tmp_path / "ck"), tmp_path / "ck.npz"):
        other = gc.compile(LOSS, optimizer=gc.optim.Adam(0.5), target="numpy", seed=5)
        other.load(p)
        assert_unchanged(other, flat(step))
    with pytest.raises(FileNotFoundError, match="nothere"):
        step.load(tmp_path / "nothere")
    # graphc.nn: the same rule for other names; a Keras name (.weights.h5) is Keras' h5 file
    m = _nn_model("sgd")
    assert m.save_weights(tmp_path / "m.weights.h5") == str(tmp_path / "m.weights.h5")
    assert (tmp_path / "m.weights.h5").read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"
    assert not (tmp_path / "m.weights.h5.npz").exists()
    other = _nn_model("sgd")
    other.build((None, 3))
    other.set_weights([w + 1 for w in m.get_weights()])
    other.load_weights(tmp_path / "m.weights.h5")
    for a, b in zip(other.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)


def _corrupt_files(tmp_path, good: bytes):
    rng = np.random.default_rng(0)
    files = {
        "truncated.npz": (good[:len(good) // 2], "damaged"),
        "empty.npz": (b"", "empty"),
        "random.npz": (rng.bytes(256), "not an .npz"),
    }
    flipped = bytearray(good)
    i = good.index(b"\x93NUMPY")
    i += 10 + int.from_bytes(good[i + 8:i + 10], "little")  # past the .npy header: the first data byte
    flipped[i] ^= 0xFF
    files["flipped.npz"] = (bytes(flipped), "damaged")
    np.save(tmp_path / "array.npy", np.zeros(3))
    files["array.npy"] = ((tmp_path / "array.npy").read_bytes(), r"\.npy")
    np.savez(tmp_path / "obj.npz", **{"params::hW": np.array([None, 1], dtype=object)})
    files["obj.npz"] = ((tmp_path / "obj.npz").read_bytes(), "object")
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    files["foreign.npz"] = ((tmp_path / "foreign.npz").read_bytes(), "'weights'")
    np.savez(tmp_path / "hyper.npz", **{"hyper::learning_rate": np.zeros(3)})
    files["hyper.npz"] = ((tmp_path / "hyper.npz").read_bytes(), "learning_rate")
    with open(tmp_path / "pickled.npz", "wb") as f:
        pickle.dump({"params::hW": np.zeros((3, 2))}, f)
    files["pickled.npz"] = ((tmp_path / "pickled.npz").read_bytes(), "not an .npz")
    return files


def test_corrupt_checkpoints_are_state_errors_naming_the_file(tmp_path):
    step = make()
    step.save(tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    before = flat(step)
    for name, (content, what) in _corrupt_files(tmp_path, good).items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(StateError, match=what) as e:
            step.load(tmp_path / name)
        assert name in str(e.value), (name, str(e.value))
        assert_unchanged(step, before)
        from graphc.nn import Dense, Sequential
        m = Sequential([Dense(2, input_shape=(3,))])
        with pytest.raises(ValueError, match=name):
            m.load_weights(tmp_path / name)


def test_save_uses_the_umask_and_keeps_an_existing_files_mode(tmp_path):
    code = """
        import os, sys, numpy as np
        import graphc as gc
        os.umask(0o027)
        x = gc.input("x", (None, 2)); w = gc.param("w", (2,))
        step = gc.compile(gc.mean(x * w), optimizer="sgd", target="numpy")
        step.save(sys.argv[1] + "/a")
        from graphc.nn import Dense, Sequential
        m = Sequential([Dense(1, input_shape=(2,))])
        m.save_weights(sys.argv[1] + "/b")
        os.chmod(sys.argv[1] + "/a.npz", 0o604)
        step.save(sys.argv[1] + "/a")
        print(oct(os.stat(sys.argv[1] + "/a.npz").st_mode & 0o777), oct(os.stat(sys.argv[1] + "/b.npz").st_mode & 0o777))
    """
    r = run_py(code, str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0o604", "0o640"]
    assert sorted(os.listdir(tmp_path)) == ["a.npz", "b.npz"]


def test_a_killed_save_leaves_a_temp_file_the_next_save_removes(tmp_path):
    code = """
        import sys, time, numpy as np
        import graphc as gc
        x = gc.input("x", (None, 2)); w = gc.param("w", (2,))
        step = gc.compile(gc.mean(x * w), optimizer="sgd", target="numpy")
        def slow_savez(f, **arrays):
            f.write(b"PK" + b"x" * 100000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        np.savez = slow_savez
        step.save(sys.argv[1])
    """
    target = tmp_path / "ck.npz"
    step = make()
    step.save(target)
    good = target.read_bytes()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(target)], env=env,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "writing"
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(30)
        p.stdout.close()
    stale = [f for f in os.listdir(tmp_path) if f != "ck.npz"]
    assert len(stale) == 1 and stale[0].startswith(".ck.npz.tmp-"), stale
    assert target.read_bytes() == good  # the killed save never touched the target
    # a live writer's temp file (this process's pid) is kept; so is another target's
    live = tmp_path / stale[0].replace(f"-{p.pid}-", f"-{os.getpid()}-")
    live.write_bytes(b"x")
    other = tmp_path / (".other.npz" + stale[0][len(".ck.npz"):])
    other.write_bytes(b"x")
    step.save(target)
    left = sorted(os.listdir(tmp_path))
    assert left == sorted(["ck.npz", live.name, other.name]), left
    step.load(target)
    # a temp file untouched for hours is stale whoever wrote it
    old = time.time() - 3 * 3600
    os.utime(live, (old, old))
    step.save(target)
    assert sorted(os.listdir(tmp_path)) == sorted(["ck.npz", other.name])


# ---- item 7: non-finite state is not saved (or loaded) without saying so -------------------------------

def test_save_refuses_nonfinite_state_and_keeps_the_old_file(tmp_path):
    step = make()
    path = tmp_path / "ck.npz"
    step.save(path)
    good = path.read_bytes()
    w = step.params["hW"]
    w[1, 0] = np.nan
    step.set_params({"hW": w}, allow_nonfinite=True)
    with pytest.raises(StateError, match=r"save.*'hW'.*allow_nonfinite=True"):
        step.save(path)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["ck.npz"]
    with pytest.raises(StateError, match="'hW'"):
        step.set_params({"hW": w})
    step.save(tmp_path / "nan", allow_nonfinite=True)  # the explicit opt-out, e.g. to debug a divergence
    fresh = gc.compile(LOSS, optimizer=gc.optim.Adam(0.01), target="numpy")
    before = flat(fresh)
    with pytest.raises(StateError, match=r"'hW'.*allow_nonfinite"):
        fresh.load(tmp_path / "nan")
    assert_unchanged(fresh, before)
    fresh.load(tmp_path / "nan", allow_nonfinite=True)
    assert np.isnan(fresh.params["hW"][1, 0])
    # state counts as much as params
    sd = step.state_dict()
    sd["params"]["hW"][1, 0] = 0.0
    sd["state"]["hb/v"] = np.array([np.inf, 0.0], "f4")
    step.load_state_dict(sd, allow_nonfinite=True)
    with pytest.raises(StateError, match="'hb/v'"):
        step.save(path)
    assert path.read_bytes() == good


def test_nn_save_weights_refuses_nonfinite_weights(tmp_path):
    m = _nn_model(gc.optim.SGD(1e30))
    m.save_weights(tmp_path / "w")
    good = (tmp_path / "w.npz").read_bytes()
    x = np.full((8, 3), 1e3, "f4")
    with np.errstate(all="ignore"):
        m.fit(x, np.full((8, 2), 1e3, "f4"), epochs=3, verbose=0)  # diverges: the weights overflow
    assert not all(np.isfinite(w).all() for w in m.get_weights())
    with pytest.raises(StateError, match="allow_nonfinite"):
        m.save_weights(tmp_path / "w")
    assert (tmp_path / "w.npz").read_bytes() == good and os.listdir(tmp_path) == ["w.npz"]
    with pytest.raises(StateError, match="allow_nonfinite"):
        m.save_weights(tmp_path / "w", include_optimizer=True)
    m.save_weights(tmp_path / "w", allow_nonfinite=True)
    other = _nn_model("sgd")
    before = other.get_weights()
    with pytest.raises(ValueError, match="allow_nonfinite"):
        other.load_weights(tmp_path / "w")
    for a, b in zip(other.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    other.load_weights(tmp_path / "w", allow_nonfinite=True)
    for a, b in zip(other.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
