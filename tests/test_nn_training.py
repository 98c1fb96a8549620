"""graphc.nn training features as Keras defines them: weight regularizers, sample_weight and
class_weight, the metrics Keras users reach for, steps_per_epoch/shuffle/validation_data,
ModelCheckpoint, CSVLogger and History.plot, and the functional residual example. Each is
checked against the same training written directly in the graphc DSL (same initial weights,
same batches) or against the formula Keras documents, stated in the test."""
from __future__ import annotations

import csv
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.nn import (CSVLogger, Dense, History, Input, LambdaCallback, Model, ModelCheckpoint, Sequential,
                       metrics, regularizers)
from graphc.optim import SGD

T = "numpy"
ROOT = Path(__file__).resolve().parent.parent


def _xy(n=40, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=(d, 1)) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    return x, y


def _dsl_dense(w0, d=5, activation=None):
    """x -> Dense(3, tanh) -> Dense(1), by hand, same names as the model's weights."""
    x, y = gc.input("x", (None, d)), gc.input("y", (None, 1))
    p = {k: gc.param(k, v.shape) for k, v in w0.items()}
    out = gc.tanh(x @ p["dense/kernel"] + p["dense/bias"]) @ p["dense_1/kernel"] + p["dense_1/bias"]
    return x, y, p, out


def _model(**dense_kwargs):
    m = Sequential([Dense(3, activation="tanh", input_shape=(5,), **dense_kwargs), Dense(1)])
    m.compile(optimizer=SGD(learning_rate=0.05), loss="mse", target=T, seed=4)
    return m


def _epochs(step, feeds, batch, epochs):
    """Per-epoch losses as fit reports them (batch losses averaged with batch-size weights)."""
    out = []
    n = len(feeds["x"])
    for _ in range(epochs):
        tot = 0.0
        for lo in range(0, n, batch):
            fb = {k: v[lo:lo + batch] for k, v in feeds.items()}
            tot += float(step(**fb)["loss"]) * len(fb["x"])
        out.append(tot / n)
    return out


# ---- regularizers ----------------------------------------------------------------------------------------

def test_kernel_and_bias_regularizers_match_the_dsl():
    """Keras: L2(l2) = l2 * sum(w**2), L1(l1) = l1 * sum(|w|), added to the loss that is
    minimized AND reported (fit and evaluate)."""
    x, y = _xy()
    m = _model(kernel_regularizer=regularizers.L2(0.01), bias_regularizer=regularizers.L1(0.1))
    w0 = dict(zip(m._weight_names(), m.get_weights()))
    h = m.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)

    xi, yi, p, out = _dsl_dense(w0)
    loss = gc.mse(out, yi) + 0.01 * gc.sum(gc.square(p["dense/kernel"])) + 0.1 * gc.sum(gc.abs(p["dense/bias"]))
    step = gc.compile(loss, optimizer=SGD(learning_rate=0.05), target=T, params=w0)
    np.testing.assert_allclose(h.history["loss"], _epochs(step, {"x": x, "y": y}, 16, 3), rtol=1e-5)
    for k, v in zip(m._weight_names(), m.get_weights()):
        np.testing.assert_allclose(v, step.params[k], rtol=1e-5, atol=1e-7, err_msg=k)
    W, b = m.get_weights()[:2]
    pred = m.predict(x)
    want = np.mean((pred - y) ** 2) + 0.01 * np.sum(W.astype(np.float64) ** 2) + 0.1 * np.sum(np.abs(b))
    assert m.evaluate(x, y, verbose=0, batch_size=40) == pytest.approx(want, rel=1e-5)


def test_regularizer_names_and_factors():
    assert regularizers.get("l2").l2 == 0.01 and regularizers.get("l1").l1 == 0.01
    both = regularizers.get("l1_l2")  # Keras documents l1=0.01, l2=0.01 for the string
    assert (both.l1, both.l2) == (0.01, 0.01)
    assert (regularizers.L1L2().l1, regularizers.L1L2().l2) == (0.0, 0.0)  # the class' defaults
    with pytest.raises(ValueError, match=r"Dense\(kernel_regularizer=...\): unknown regularizer 'l3'"):
        Dense(2, kernel_regularizer="l3")
    with pytest.raises(ValueError, match=r"L2\(l2=...\)"):
        regularizers.L2(-1.0)
    # a string regularizer on a functional model: the penalty shows in evaluate
    inp = Input((2,))
    m = Model(inp, Dense(1, kernel_regularizer="l1_l2", kernel_initializer="ones", name="d")(inp))
    m.compile(loss="mse", target=T)
    x, y = np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32)
    assert m.evaluate(x, y, verbose=0) == pytest.approx(0.01 * 2 + 0.01 * 2)  # kernel of ones (2, 1)


# ---- sample_weight / class_weight --------------------------------------------------------------------------

def test_sample_weight_is_keras_sum_over_batch_size():
    """Keras' default reduction 'sum_over_batch_size': batch loss = sum_i w_i * l_i / batch_size,
    NOT divided by sum(w) (keras-team/keras#19740 discusses exactly this)."""
    x, y = _xy()
    w = np.linspace(0.0, 2.0, 40).astype(np.float32)
    m = _model()
    w0 = dict(zip(m._weight_names(), m.get_weights()))
    pred = m.predict(x)
    per = np.mean((pred - y) ** 2, axis=1)
    assert m.evaluate(x, y, sample_weight=w, verbose=0, batch_size=40) == pytest.approx(np.sum(w * per) / 40,
                                                                                         rel=1e-5)
    assert m.evaluate(x, y, verbose=0, batch_size=40) == pytest.approx(np.mean(per), rel=1e-5)
    h = m.fit(x, y, sample_weight=w, epochs=2, batch_size=16, shuffle=False, verbose=0)

    xi, yi, p, out = _dsl_dense(w0)
    sw = gc.input("sample_weight", (None,))
    loss = gc.mean(gc.mean(gc.square(out - yi), 1) * sw)
    step = gc.compile(loss, optimizer=SGD(learning_rate=0.05), target=T, params=w0)
    np.testing.assert_allclose(h.history["loss"], _epochs(step, {"x": x, "y": y, "sample_weight": w}, 16, 2),
                               rtol=1e-5)
    for k, v in zip(m._weight_names(), m.get_weights()):
        np.testing.assert_allclose(v, step.params[k], rtol=1e-5, atol=1e-7, err_msg=k)
    # the unweighted step is still the unweighted graph: one store, two programs
    assert m._functions.get("train") is None and m._functions.get("train", weighted=True) is not None
    m.fit(x, y, epochs=1, verbose=0)
    weighted = m._functions.get("train", weighted=True)
    assert m.train_function.state_dict()["state"]["step"] == weighted.state_dict()["state"]["step"] == 6 + 2


def test_class_weight_equals_the_matching_sample_weight():
    """Keras: sample i weighs class_weight[y_i] (1.0 for classes not listed; one-hot labels
    use their argmax)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 5)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    cw = {0: 1.0, 1: 3.0}  # class 2 unlisted: weight 1

    def fresh(loss="sparse_categorical_crossentropy"):
        m = Sequential([Dense(3, activation="softmax", input_shape=(5,))])
        m.compile(optimizer=SGD(learning_rate=0.1), loss=loss, target=T, seed=2)
        return m

    a, b, c = fresh(), fresh(), fresh("categorical_crossentropy")
    ha = a.fit(x, y, class_weight=cw, epochs=2, batch_size=10, verbose=0)
    hb = b.fit(x, y, sample_weight=np.array([cw.get(int(k), 1.0) for k in y]), epochs=2, batch_size=10, verbose=0)
    hc = c.fit(x, np.eye(3)[y], class_weight=cw, epochs=2, batch_size=10, verbose=0)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-6)
    np.testing.assert_allclose(ha.history["loss"], hc.history["loss"], rtol=1e-5)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(p, q)
    with pytest.raises(ValueError, match="class_weight and sample_weight at the same time"):
        a.fit(x, y, class_weight=cw, sample_weight=np.ones(30), verbose=0)
    with pytest.raises(ValueError, match="class_weight: keys must be non-negative class indices"):
        a.fit(x, y, class_weight={-1: 2.0}, verbose=0)
    with pytest.raises(ValueError, match=r"sample_weight: expected one weight per sample, shape \(30,\)"):
        a.fit(x, y, sample_weight=np.ones(29), verbose=0)
    with pytest.raises(ValueError, match="sample_weight: sample weights contain NaN"):
        a.fit(x, y, sample_weight=np.full(30, np.nan), verbose=0)


def test_weighted_binary_and_validation_sample_weights():
    """Per-sample binary cross-entropy from logits, max(z,0) - z*y + log(1+exp(-|z|)), weighted;
    validation_data=(x, y, sample_weight) reports the weighted loss as evaluate does."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(24, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    w = rng.uniform(0, 2, 24).astype(np.float32)
    m = Sequential([Dense(1, activation="sigmoid", input_shape=(5,))])
    m.compile(optimizer=SGD(learning_rate=0.1), loss="binary_crossentropy", target=T)
    z = m.predict(x)[:, 0]
    z = np.log(z / (1 - z))
    per = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    assert m.evaluate(x, y, sample_weight=w, verbose=0, batch_size=24) == pytest.approx(np.sum(w * per) / 24,
                                                                                         rel=1e-4)
    h = m.fit(x, y, epochs=1, validation_data=(x, y, w), verbose=0, batch_size=24)
    assert h.history["val_loss"][0] == pytest.approx(m.evaluate(x, y, sample_weight=w, verbose=0), rel=1e-6)


# ---- metrics ------------------------------------------------------------------------------------------------

def test_keras_metrics_values():
    """sparse_categorical_accuracy = mean(argmax(p) == y); top-k: the label's score has fewer
    than k scores strictly above it (TF's in_top_k); mae/mse on the outputs."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 8, 64)
    m = Sequential([Dense(8, activation="softmax", input_shape=(6,))])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", target=T,
              metrics=["sparse_categorical_accuracy", "sparse_top_k_categorical_accuracy",
                       metrics.SparseTopKCategoricalAccuracy(k=2, name="top2"), "accuracy"])
    logs = m.evaluate(x, y, verbose=0, return_dict=True, batch_size=64)
    p = m.predict(x)
    above = (p > p[np.arange(64), y][:, None]).sum(1)
    assert logs["sparse_categorical_accuracy"] == pytest.approx(np.mean(p.argmax(1) == y))
    assert logs["accuracy"] == logs["sparse_categorical_accuracy"]
    assert logs["sparse_top_k_categorical_accuracy"] == pytest.approx(np.mean(above < 5))
    assert logs["top2"] == pytest.approx(np.mean(above < 2))
    assert 0 < logs["top2"] < logs["sparse_top_k_categorical_accuracy"] < 1

    onehot = np.eye(8, dtype=np.float32)[y]
    m2 = Sequential([Dense(8, activation="softmax", input_shape=(6,))])
    m2.compile(loss="categorical_crossentropy", metrics=["top_k_categorical_accuracy", "mae", "mse",
                                                         metrics.MeanAbsoluteError()], target=T)
    logs = m2.evaluate(x, onehot, verbose=0, return_dict=True, batch_size=64)
    p = m2.predict(x)
    above = (p > p[np.arange(64), y][:, None]).sum(1)
    assert logs["top_k_categorical_accuracy"] == pytest.approx(np.mean(above < 5))
    assert logs["mae"] == pytest.approx(np.mean(np.abs(p - onehot)), rel=1e-5)
    assert logs["mean_absolute_error"] == logs["mae"]
    assert logs["mse"] == pytest.approx(np.mean((p - onehot) ** 2), rel=1e-5)
    with pytest.raises(ValueError, match="k must be a positive int"):
        metrics.SparseTopKCategoricalAccuracy(k=0)


# ---- steps_per_epoch / shuffle ------------------------------------------------------------------------------

def test_steps_per_epoch_continues_through_the_data_like_keras():
    """10 batches of 4, steps_per_epoch=4: epochs take batches 0-3, 4-7, then 8-9 and stop
    with Keras' 'ran out of data' warning; the 4th epoch starts a new pass."""
    x, y = _xy(40)
    m = _model()
    w0 = dict(zip(m._weight_names(), m.get_weights()))
    seen = []
    cb = LambdaCallback(on_epoch_end=lambda e, logs: seen.append(m.train_function.iterations))
    with pytest.warns(UserWarning, match="ran out of data"):
        h = m.fit(x, y, batch_size=4, epochs=4, steps_per_epoch=4, shuffle=False, callbacks=[cb], verbose=0)
    assert seen == [4, 8, 10, 14]
    xi, yi, p, out = _dsl_dense(w0)
    step = gc.compile(gc.mse(out, yi), optimizer=SGD(learning_rate=0.05), target=T, params=w0)
    batches = [list(range(0, 4)), list(range(4, 8)), [8, 9], list(range(0, 4))]
    for e, bs in enumerate(batches):
        losses = [float(step(x=x[4 * b:4 * b + 4], y=y[4 * b:4 * b + 4])["loss"]) for b in bs]
        assert h.history["loss"][e] == pytest.approx(np.mean(losses), rel=1e-5)
    for k, v in zip(m._weight_names(), m.get_weights()):
        np.testing.assert_allclose(v, step.params[k], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        m.fit(x, y, steps_per_epoch=0, verbose=0)
    with pytest.raises(ValueError, match="shuffle"):
        m.fit(x, y, shuffle="batch", verbose=0)


def test_shuffle_order_is_the_seeded_permutation():
    x, y = _xy(20)
    m = _model()
    w0 = dict(zip(m._weight_names(), m.get_weights()))
    m.fit(x, y, batch_size=8, epochs=2, verbose=0)  # shuffle=True by default
    xi, yi, p, out = _dsl_dense(w0)
    step = gc.compile(gc.mse(out, yi), optimizer=SGD(learning_rate=0.05), target=T, params=w0)
    for epoch in range(2):
        order = np.random.default_rng([4, 1, epoch]).permutation(20)  # (compile seed, 1, epoch)
        for lo in range(0, 20, 8):
            step(x=x[order[lo:lo + 8]], y=y[order[lo:lo + 8]])
    for k, v in zip(m._weight_names(), m.get_weights()):
        np.testing.assert_allclose(v, step.params[k], rtol=1e-5, atol=1e-7)


# ---- callbacks -----------------------------------------------------------------------------------------------

def _scripted(values):
    """A callback (listed first) that overwrites val_loss with scripted values."""
    return LambdaCallback(on_epoch_end=lambda e, logs: logs.__setitem__("val_loss", values[e]))


def test_model_checkpoint_best_only_and_formatting(tmp_path):
    x, y = _xy(16)
    m = _model()
    snaps = []
    grab = LambdaCallback(on_epoch_end=lambda e, logs: snaps.append(m.get_weights()))
    ck = ModelCheckpoint(str(tmp_path / "ck-{epoch:02d}-{val_loss:.1f}"), save_best_only=True)
    m.fit(x, y, epochs=4, callbacks=[_scripted([3.0, 1.0, 2.0, 0.5]), grab, ck], verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["ck-01-3.0.npz", "ck-02-1.0.npz", "ck-04-0.5.npz"]  # improvements only
    assert ck.best == 0.5
    other = _model()
    other.load_weights(tmp_path / "ck-02-1.0.npz")
    for a, b in zip(other.get_weights(), snaps[1]):
        np.testing.assert_array_equal(a, b)
    # one fixed path, overwritten atomically each epoch; with the optimizer state when asked
    path = tmp_path / "last"
    m.fit(x, y, epochs=2, callbacks=[ModelCheckpoint(path, save_weights_only=False)], verbose=0)
    with np.load(str(path) + ".npz") as f:
        assert any(k.startswith("state::") for k in f.files)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    with pytest.raises(KeyError, match="failed to format this callback filepath"):
        m.fit(x, y, epochs=1, callbacks=[ModelCheckpoint(str(tmp_path / "{val_acc}"))], verbose=0)
    with pytest.raises(ValueError, match="mode"):
        ModelCheckpoint("x", mode="best")


def test_model_checkpoint_keeps_the_last_good_file_on_nan(tmp_path):
    x, y = _xy(16)
    m = _model()
    path = tmp_path / "w"
    m.fit(x, y, epochs=1, callbacks=[ModelCheckpoint(path)], verbose=0)
    before = open(str(path) + ".npz", "rb").read()
    # NaN weights from the start of the epoch: the step computes NaN, the save is refused
    bad = LambdaCallback(on_epoch_begin=lambda e, logs: m._set_weights_by_name(
        {"dense/bias": np.full(3, np.nan)}, allow_nonfinite=True))
    with pytest.warns(UserWarning, match="ModelCheckpoint: not saved"):
        m.fit(x, y, epochs=1, callbacks=[bad, ModelCheckpoint(path)], verbose=0)
    assert open(str(path) + ".npz", "rb").read() == before


def test_csv_logger(tmp_path):
    """Keras' format: header 'epoch' + sorted log keys, epochs counted from 0, 'NA' for a
    value missing in an epoch; append=True adds rows without a second header."""
    x, y = _xy(16)
    m = _model()
    path = tmp_path / "log.csv"
    m.fit(x, y, epochs=2, validation_data=(x, y), validation_freq=2, callbacks=[CSVLogger(path)], verbose=0)
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["epoch", "loss"] and [r[0] for r in rows[1:]] == ["0", "1"]
    m.fit(x, y, epochs=2, validation_data=(x, y), callbacks=[CSVLogger(path, separator=";")], verbose=0)
    rows = [r.split(";") for r in open(path).read().splitlines()]
    assert rows[0] == ["epoch", "loss", "val_loss"] and len(rows) == 3
    h = m.fit(x, y, epochs=1, validation_data=(x, y), callbacks=[CSVLogger(path, separator=";", append=True)],
              verbose=0)
    rows = [r.split(";") for r in open(path).read().splitlines()]
    assert len(rows) == 4 and rows[0][0] == "epoch" and rows[3][0] == "0"
    assert float(rows[3][2]) == pytest.approx(h.history["val_loss"][0])
    with pytest.raises(ValueError, match="separator"):
        CSVLogger(path, separator="::")


def test_history_plot_writes_a_png(tmp_path, monkeypatch):
    x, y = _xy(16)
    m = _model()
    m.compile(optimizer=SGD(learning_rate=0.05), loss="mse", metrics=["mae"], target=T)
    h = m.fit(x, y, epochs=3, validation_split=0.25, verbose=0)
    with pytest.raises(ValueError, match=r"History.plot\(metrics=...\): \['acc'\] not logged"):
        h.plot(metrics=["acc"])
    with pytest.raises(ValueError, match="nothing to plot"):
        History().plot()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="History.plot needs matplotlib, an optional dependency"):
        h.plot(tmp_path / "no.png")
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    fig = h.plot(tmp_path / "curves.png")
    assert open(tmp_path / "curves.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert [ax.get_title() for ax in fig.axes] == ["loss", "mae"]
    assert [ln.get_label() for ln in fig.axes[0].lines] == ["loss", "val_loss"]
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), h.history["val_loss"])


# ---- the example ---------------------------------------------------------------------------------------------

def test_functional_residual_example_trains(tmp_path):
    pytest.importorskip("sklearn")
    png = tmp_path / "curves.png"
    p = subprocess.run([sys.executable, "examples/functional_residual.py", "--epochs", "4", "--width", "32",
                        "--blocks", "1", "--target", "numpy", "--verbose", "0", "--plot", str(png)],
                       cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    assert "Connected to" in out and "encoder[1][0]" in out  # the shared encoder's second call

    m = re.search(r"train loss: ([\d.]+) \(epoch 1\) -> ([\d.]+) \(epoch 4\); 4 epochs logged", out)
    assert m and float(m.group(2)) < float(m.group(1)), out
    acc = float(re.search(r"test accuracy: ([\d.]+)", out).group(1))
    assert 0.85 < acc <= 1.0, out
    try:
        import matplotlib  # noqa: F401
        assert png.read_bytes()[:4] == b"\x89PNG"
    except ImportError:
        assert "no training-curve plot" in out
