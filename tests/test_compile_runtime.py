"""The compiled-call runtime on native targets: batch-size specialization, feed errors
before native code runs, inference sharing a training step's params, state_dict round
trips between targets, and the inspectable source/kernel listing."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.errors import GraphcError

X = gc.input("rx", (None, 6))
Y = gc.input("ry", (None,), dtype="int64")
W1 = gc.param("rW1", (6, 8), init="he_normal")
B1 = gc.param("rb1", (8,), init="zeros")
W2 = gc.param("rW2", (8, 3), init="glorot_uniform")
LOGITS = gc.tanh(X @ W1 + B1) @ W2
LOSS = gc.softmax_cross_entropy(LOGITS, Y)


def opt():
    return gc.optim.Adam(1e-2)


def data(batch, seed=0):
    rng = np.random.default_rng(seed + batch)
    return {"rx": rng.standard_normal((batch, 6)).astype("f4"), "ry": rng.integers(0, 3, batch)}


def close(a, b, rtol=1e-5):
    b = np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(b)))))


def same_params(s1, s2, rtol=1e-5):
    p1, p2 = s1.params, s2.params
    assert sorted(p1) == sorted(p2)
    for k in p1:
        close(p1[k], p2[k], rtol)


@pytest.fixture(scope="module")
def trained():
    """A cpu step and its numpy twin after the same calls at two batch sizes."""
    ref = gc.compile(LOSS, optimizer=opt(), target="numpy")
    nat = gc.compile(LOSS, optimizer=opt(), target="cpu")
    for batch in (8, 5, 8):
        close(nat(**data(batch))["loss"], ref(**data(batch))["loss"])
    return ref, nat


def test_batch_dim_specialized_per_size(trained):
    ref, nat = trained
    assert sorted(nat._programs) == [5, 8]
    p5, p8 = nat.program_for(5), nat.program_for(8)
    assert p5 is not p8 and p5.path != p8.path and p5.batch == 5 and p8.batch == 8
    same_params(nat, ref)
    assert int(nat.state_dict()["state"]["step"]) == 3


def test_feed_error_before_native_code_runs(trained):  # (batch 5 program shared with `trained`)
    step = gc.compile(LOSS, optimizer=opt(), target="cpu")
    bad_calls = [
        {"rx": np.zeros((4, 7), "f4"), "ry": np.zeros(4, "i8")},  # wrong fixed dim
        {"rx": np.zeros((4, 6), "f4"), "ry": np.zeros(3, "i8")},  # batch sizes disagree
        {"rx": np.zeros((4, 6), "f4")},  # missing input
        {"rx": np.zeros((4, 6), "f4"), "ry": np.zeros(4, "i8"), "extra": 1},  # unknown input
        {"rx": np.zeros((4, 6), "f4"), "ry": np.zeros(4, "f4") + 0.5},  # float labels
        {"rx": np.zeros((4, 6), "f4"), "ry": np.array([0, 1, 2, 3])},  # label out of range
    ]
    before = step.state_dict()
    for feeds in bad_calls:
        with pytest.raises(gc.FeedError):
            step(**feeds)
    assert step._programs == {}, "a bad call must fail before anything is compiled"
    step(**data(5))
    after_one = step.state_dict()
    for feeds in bad_calls:
        with pytest.raises(gc.FeedError):
            step(**feeds)
    now = step.state_dict()
    for section in ("params", "state"):
        for k in now[section]:
            np.testing.assert_array_equal(now[section][k], after_one[section][k])
    assert not np.array_equal(after_one["params"]["rW1"], before["params"]["rW1"])  # the good call trained


def test_forward_function_shares_training_params(trained):
    ref, nat = trained
    infer = gc.compile({"logits": LOGITS, "p": gc.softmax(LOGITS)}, params=nat, target="cpu")
    ref_infer = gc.compile({"logits": LOGITS, "p": gc.softmax(LOGITS)}, params=ref, target="numpy")
    feeds = {"rx": data(8)["rx"]}
    a = infer(**feeds)
    assert set(a) == {"logits", "p"}
    close(a["logits"], ref_infer(**feeds)["logits"])
    nat(**data(8, seed=3))  # the shared store is updated in place ...
    ref(**data(8, seed=3))
    b = infer(**feeds)  # ... and the (already compiled) inference function sees it
    assert not np.allclose(a["logits"], b["logits"])
    close(b["logits"], ref_infer(**feeds)["logits"])
    close(b["p"].sum(axis=1), np.ones(8))


def test_state_dict_round_trip_between_targets(trained):
    ref, nat = trained
    sd = ref.state_dict()
    fresh_cpu = gc.compile(LOSS, optimizer=opt(), target="cpu", seed=123)
    fresh_np = gc.compile(LOSS, optimizer=opt(), target="numpy", seed=7)
    fresh_cpu.load_state_dict(sd)  # numpy -> cpu
    fresh_np.load_state_dict(nat.state_dict())  # cpu -> numpy
    for s in (fresh_cpu, fresh_np):
        assert int(s.state_dict()["state"]["step"]) == int(sd["state"]["step"])
    for i in range(2):
        d = data(5, seed=10 + i)
        close(fresh_cpu(**d)["loss"], fresh_np(**d)["loss"])
    same_params(fresh_cpu, fresh_np)
    for k, v in fresh_np.state_dict()["state"].items():
        close(fresh_cpu.state_dict()["state"][k], v)


def test_load_state_dict_rejects_wrong_shapes_atomically(trained):
    step = gc.compile(LOSS, optimizer=opt(), target="cpu")
    step(**data(5))
    before = step.state_dict()
    bad = step.state_dict()
    bad["params"] = {k: v + 1.0 for k, v in bad["params"].items()}  # all valid but different ...
    bad["params"]["rW2"] = np.zeros((3, 8), "f4")  # ... except one
    with pytest.raises(GraphcError, match="rW2"):
        step.load_state_dict(bad)
    bad2 = step.state_dict()
    bad2["state"]["rW1/m"] = np.zeros((6,), "f4")
    bad2["params"] = {k: v * 0 for k, v in bad2["params"].items()}
    with pytest.raises(GraphcError):
        step.load_state_dict(bad2)
    after = step.state_dict()
    for section in ("params", "state"):
        for k in before[section]:
            np.testing.assert_array_equal(after[section][k], before[section][k])
    # the compiled step still runs on the untouched state
    assert np.isfinite(step(**data(5))["loss"])


def test_source_and_kernels_are_inspectable(trained):
    _, nat = trained
    src = nat.source(8)
    assert "@njit" in src and "def step(" in src
    assert "test_compile_runtime.py" in src  # lines name the user code that created the node
    assert any(line.strip().startswith("#") and "%" in line for line in src.splitlines())
    assert str(nat.program_for(8).path) in src
    ops_lines = [ln for ln in src.splitlines() if "# %" in ln or "  # " in ln]
    assert ops_lines
    listing = nat.kernels(8)
    assert "kernels" in listing and "k0" in listing and "matmul" in listing
    assert len(listing.splitlines()) == len(nat.program_for(8).module.kernels) + 1


def test_param_as_extra_output_is_the_value_before_the_update():
    got = {}
    for target in ("numpy", "cpu"):
        step = gc.compile(LOSS, optimizer=opt(), target=target, outputs={"W2": W2})
        before = step.params["rW2"]
        got[target] = step(**data(5))["W2"]
        np.testing.assert_array_equal(got[target], before, err_msg=target)
