"""A checkpoint that loads must not destroy the model on the next step, and checkpoint paths
that cannot be read or written are StateErrors naming the user's path.

The step counter feeds Adam's bias corrections 1 - beta**t: a counter of -1 makes t = 0 and
every parameter NaN on the next step; 2**63 - 1 wraps to a negative t. Counters are refused
outside [0, 2**53) on every load path, before anything is written. Everything runs on
target="numpy" (the store and checkpoint code is target-independent).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import graphc as gc
from graphc.errors import StateError
from graphc.runtime import MAX_STEP

X = gc.input("ckx", (None, 3))
W = gc.param("ckW", (3, 2), init="glorot_uniform")
LOSS = gc.mean(gc.square(X @ W - 1.0))
XB = np.random.default_rng(0).standard_normal((4, 3)).astype("f4")
BAD_STEPS = [-1, -5, 2**53, 2**62, 2**63 - 1]


def make():
    step = gc.compile(LOSS, optimizer=gc.optim.Adam(0.01), target="numpy")
    step(ckx=XB)
    return step


def snapshot(step):
    sd = step.state_dict()
    return {f"{s}/{k}": np.array(v) for s in ("params", "state") for k, v in sd[s].items()}, sd["hyper"]


def assert_unchanged(step, before):
    arrays, hyper = snapshot(step)
    assert arrays.keys() == before[0].keys() and hyper == before[1]
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], before[0][k], err_msg=k)


def test_bound_keeps_the_count_exact_and_the_increment_in_range():
    assert MAX_STEP == 2**53
    assert float(np.float64(MAX_STEP - 1)) == MAX_STEP - 1 and MAX_STEP < np.iinfo(np.int64).max // 2


@pytest.mark.parametrize("bad", BAD_STEPS)
def test_out_of_range_step_counter_is_refused_by_load_state_dict(bad):
    step = make()
    before = snapshot(step)
    sd = step.state_dict()
    sd["state"]["step"] = np.int64(bad)
    sd["params"]["ckW"] = sd["params"]["ckW"] + 1.0  # would be written first without the check
    with pytest.raises(StateError, match=rf"load_state_dict: .*'step'.*{bad}.*\[0, 2\*\*53\)"):
        step.load_state_dict(sd)
    assert_unchanged(step, before)


@pytest.mark.parametrize("bad", [-1, 2**62])
def test_out_of_range_step_counter_is_refused_by_compile_params(bad):
    with pytest.raises(StateError, match=rf"compile\(params=\.\.\.\): counter 'step' is {bad}"):
        gc.compile(LOSS, optimizer=gc.optim.Adam(0.01), target="numpy", params={"step": np.int64(bad)})
    step = gc.compile(LOSS, optimizer=gc.optim.Adam(0.01), target="numpy", params={"step": np.int64(7)})
    assert step.iterations == 7


def test_largest_accepted_counter_still_trains_finitely():
    step = make()
    sd = step.state_dict()
    sd["state"]["step"] = np.int64(MAX_STEP - 1)
    step.load_state_dict(sd)
    step(ckx=XB)
    assert step.iterations == MAX_STEP
    assert np.isfinite(step.params["ckW"]).all()


@pytest.mark.parametrize("bad", [-1, 2**62])
def test_out_of_range_step_counter_is_refused_by_load(tmp_path, bad):
    step = make()
    path = step.save(tmp_path / "ck")
    with np.load(path) as z:
        arrays = dict(z)
    arrays["state::step"] = np.asarray(bad, dtype=np.int64)
    np.savez(path, **arrays)
    before = snapshot(step)
    with pytest.raises(StateError, match=rf"load: .*ck\.npz.*'step'.*{bad}"):
        step.load(tmp_path / "ck")
    assert_unchanged(step, before)


def _nn_model():
    from graphc.nn import Dense, Sequential
    m = Sequential([Dense(2, input_shape=(3,))])
    m.compile(optimizer=gc.optim.Adam(0.1), loss="mse", target="numpy")
    return m


def _rewrite(path, **entries):
    with np.load(path) as z:
        arrays = dict(z)
    arrays.update({k: np.asarray(v, dtype=np.int64) for k, v in entries.items()})
    np.savez(path, **arrays)


@pytest.mark.parametrize("entry,bad", [("state::step", -1), ("state::step", 2**62), ("__meta__::epochs_seen", -3)])
@pytest.mark.parametrize("fit_first", [True, False])
def test_out_of_range_counters_are_refused_by_nn_load_weights(tmp_path, entry, bad, fit_first):
    x = np.random.default_rng(0).standard_normal((8, 3)).astype("f4")
    y = np.zeros((8, 2), "f4")
    m = _nn_model()
    m.fit(x, y, epochs=1, verbose=0)
    path = m.save_weights(tmp_path / "m", include_optimizer=True)
    meta = [k for k in np.load(path).files if k.endswith("epochs_seen")]
    assert meta, "save_weights(include_optimizer=True) writes the epoch counter"
    _rewrite(path, **{meta[0] if "epochs_seen" in entry else entry: bad})
    other = _nn_model()
    if fit_first:
        other.fit(x, y, epochs=1, verbose=0)
    before = other.get_weights()
    with pytest.raises(StateError, match=rf"load_weights: .*m\.npz.*{bad}"):
        other.load_weights(path)
    for a, b in zip(other.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    if fit_first:
        assert other.train_function.iterations == 1 and other._epochs_seen == 1
    else:  # nothing pending either: a later fit starts from the model's own state
        assert other._pending_opt_state is None


# ---- paths -----------------------------------------------------------------------------------------

def test_a_directory_given_as_checkpoint_is_a_state_error(tmp_path):
    step = make()
    d = tmp_path / "adir.npz"
    d.mkdir()
    with pytest.raises(StateError, match=rf"load: .*adir\.npz.* is a directory"):
        step.load(d)
    with pytest.raises(StateError, match=rf"load: .*adir.* is a directory"):
        step.load(tmp_path / "adir")  # finds adir.npz, as for a file
    with pytest.raises(StateError, match=rf"save: .*adir\.npz.* is a directory"):
        step.save(d)
    m = _nn_model()
    with pytest.raises(StateError, match=rf"load_weights: .*adir\.npz.* is a directory"):
        m.load_weights(d)
    with pytest.raises(StateError, match=rf"save_weights: .*adir\.npz.* is a directory"):
        m.save_weights(d)
    assert os.listdir(d) == []


def test_save_into_a_missing_directory_names_the_users_path(tmp_path):
    step = make()
    target = tmp_path / "nodir" / "ck"
    with pytest.raises(StateError) as ei:
        step.save(target)
    msg = str(ei.value)
    assert "save:" in msg and str(tmp_path / "nodir") in msg and "does not exist" in msg, msg
    assert ".tmp-" not in msg, msg
    assert isinstance(ei.value, FileNotFoundError)  # still an OSError for code that catches those
    m = _nn_model()
    with pytest.raises(StateError, match=r"save_weights: .*nodir.*does not exist") as ei:
        m.save_weights(target)
    assert ".tmp-" not in str(ei.value)
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(StateError, match=r"save: .*afile.* is not a directory"):
        step.save(f / "ck")
    assert not (tmp_path / "nodir").exists()


def test_load_of_a_missing_file_is_a_state_error_naming_it(tmp_path):
    step = make()
    before = snapshot(step)
    with pytest.raises(StateError, match=r"load: no checkpoint at .*nothere\.npz or .*nothere") as ei:
        step.load(tmp_path / "nothere")
    assert isinstance(ei.value, FileNotFoundError) and ei.value.filename == str(tmp_path / "nothere")
    assert str(ei.value).startswith("load: ")  # the message, not OSError's "[Errno 2] ..." form
    assert_unchanged(step, before)
    with pytest.raises(StateError, match=r"load_weights: no checkpoint at .*nothere"):
        _nn_model().load_weights(tmp_path / "nothere")
