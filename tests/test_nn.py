"""graphc.nn: the Keras-style layer API (target="numpy" unless said otherwise: fast and exact)."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

import graphc as gc
from graphc.nn import (Activation, Dense, Dropout, EarlyStopping, Flatten, History, LearningRateScheduler,
                       Sequential, callbacks, losses, optimizers)
from graphc.optim import SGD, Adam

T = "numpy"


def regression_data(n=256, d=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d)
    y = (x @ w + 0.1 * rng.normal(size=n)).astype(np.float32)
    return x, y


def reference_model():
    return Sequential([
        Dense(10, activation="relu", input_shape=(10,)),
        Dense(10, activation="relu"),
        Dense(1),
    ])


def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)


# ---- the reference case ------------------------------------------------------------------------

def test_reference_case_trains_and_loss_falls():
    x_train, y_train = regression_data()
    model = reference_model()
    model.compile(optimizer=Adam(learning_rate=0.01), loss="mse", metrics=["accuracy"], target=T)
    hist = model.fit(x_train, y_train, epochs=10, verbose=0)
    losses_ = hist.history["loss"]
    assert len(losses_) == 10 and set(hist.history) == {"loss", "accuracy"}
    assert losses_[-1] < 0.2 * losses_[0]
    assert all(np.isfinite(losses_))
    assert model.get_weights()[0].shape == (10, 10)
    # 'accuracy' with one output unit is Keras' binary accuracy
    assert type(model._metrics[0]).__name__ == "BinaryAccuracy"


def test_default_target_small():
    """The one test on the default target (cpu) once the native compiler exists."""
    x, y = regression_data(64)
    model = reference_model()
    kwargs = {} if importlib.util.find_spec("graphc.compiler") is not None else {"target": "numpy"}
    model.compile(optimizer=Adam(learning_rate=0.01), loss="mse", metrics=["accuracy"], **kwargs)
    assert model._target == kwargs.get("target", "cpu")
    h = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert model.predict(x[:3]).shape == (3, 1)


@pytest.mark.parametrize("shuffle", [False, True])
def test_same_weights_as_hand_written_dsl(shuffle):
    x_train, y_train = regression_data(100)
    model = reference_model()
    model.compile(optimizer=Adam(learning_rate=0.01), loss="mse", metrics=["accuracy"], target=T, seed=7)
    model.fit(x_train, y_train, epochs=3, batch_size=32, shuffle=shuffle, verbose=0)

    # the same network by hand, same parameter names and seed
    x = gc.input("x", (None, 10))
    y = gc.input("y", (None, 1))
    h = gc.relu(x @ gc.param("dense/kernel", (10, 10)) + gc.param("dense/bias", (10,)))
    h = gc.relu(h @ gc.param("dense_1/kernel", (10, 10)) + gc.param("dense_1/bias", (10,)))
    out = h @ gc.param("dense_2/kernel", (10, 1)) + gc.param("dense_2/bias", (1,))
    step = gc.compile(gc.mse(out, y), optimizer=Adam(learning_rate=0.01), target=T, seed=7)
    yy = y_train[:, None]
    for epoch in range(3):
        order = np.random.default_rng([7, 1, epoch]).permutation(100) if shuffle else np.arange(100)
        for lo in range(0, 100, 32):
            idx = order[lo:lo + 32]
            step(x=x_train[idx], y=yy[idx])
    names = ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias", "dense_2/kernel", "dense_2/bias"]
    for name, w in zip(names, model.get_weights()):
        np.testing.assert_array_equal(w, step.params[name], err_msg=name)


# ---- a classifier ------------------------------------------------------------------------------

def test_digits_classifier_reaches_95_percent():
    x_tr, x_te, y_tr, y_te = digits()
    model = Sequential([Dense(64, activation="relu", input_shape=(64,)), Dense(10, activation="softmax")])
    model.compile(optimizer=Adam(learning_rate=3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], target=T)
    h = model.fit(x_tr, y_tr, epochs=8, batch_size=32, validation_split=0.1, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert type(model._metrics[0]).__name__ == "SparseCategoricalAccuracy"
    loss, acc = model.evaluate(x_te, y_te, verbose=0)
    pred_acc = np.mean(np.argmax(model.predict(x_te), axis=1) == y_te)
    assert acc >= 0.95 and pred_acc >= 0.95
    assert abs(acc - pred_acc) < 1e-6
    assert model.predict(x_te[:4]).sum(axis=1) == pytest.approx(np.ones(4), abs=1e-5)


def test_from_logits_equivalences():
    """softmax/sigmoid output layers compute the loss from the pre-activation logits: same
    value as a linear output with from_logits=True, and the probability formula agrees."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)

    def loss_of(act, loss, labels, units=3):
        m = Sequential([Dense(units, activation=act, input_shape=(5,), name="out")])
        m.compile(optimizer="sgd", loss=loss, target=T)
        return m.evaluate(x, labels, verbose=0, batch_size=40)

    a = loss_of("softmax", "sparse_categorical_crossentropy", y)
    b = loss_of(None, losses.SparseCategoricalCrossentropy(from_logits=True), y)
    onehot = np.eye(3, dtype=np.float32)[y]
    c = loss_of("softmax", "categorical_crossentropy", onehot)
    d = loss_of(None, losses.CategoricalCrossentropy(from_logits=True), onehot)
    assert a == pytest.approx(b, rel=1e-6) and c == pytest.approx(a, rel=1e-5) and d == pytest.approx(a, rel=1e-5)
    # probabilities from something other than a softmax layer: the clipped formula
    e = Sequential([Dense(3, input_shape=(5,), name="out"), Activation(lambda t: gc.softmax(t))])
    e.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", target=T)
    assert e.evaluate(x, y, verbose=0, batch_size=40) == pytest.approx(a, rel=1e-5)

    yb = (y == 1).astype(np.float32)
    s = loss_of("sigmoid", "binary_crossentropy", yb, units=1)
    t = loss_of(None, losses.BinaryCrossentropy(from_logits=True), yb, units=1)
    assert s == pytest.approx(t, rel=1e-6)


def test_accuracy_resolution_like_keras():
    def resolve(units, loss):
        m = Sequential([Dense(units, input_shape=(4,))])
        m.compile(optimizer="sgd", loss=loss, metrics=["accuracy", "acc", "mae"], target=T)
        m._ensure_built()
        return [type(k).__name__ for k in m._resolve_metrics()], m.metrics_names

    assert resolve(1, "binary_crossentropy")[0][0] == "BinaryAccuracy"
    assert resolve(5, "sparse_categorical_crossentropy")[0][0] == "SparseCategoricalAccuracy"
    assert resolve(5, "categorical_crossentropy")[0][0] == "CategoricalAccuracy"
    assert resolve(5, "categorical_crossentropy")[1] == ["loss", "accuracy", "acc", "mae"]


def test_categorical_accuracy_value():
    x = np.eye(4, dtype=np.float32)
    m = Sequential([Dense(4, activation="softmax", input_shape=(4,), use_bias=False, kernel_initializer="zeros")])
    m.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"], target=T)
    m.set_weights([np.eye(4, dtype=np.float32)])  # predicts class i for sample i
    labels = np.eye(4, dtype=np.float32)[[0, 1, 3, 3]]  # 3 of 4 right
    _, acc = m.evaluate(x, labels, verbose=0)
    assert acc == pytest.approx(0.75)
    m2 = Sequential([Dense(4, activation="softmax", input_shape=(4,), use_bias=False)])
    m2.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"], target=T)
    m2.set_weights([np.eye(4, dtype=np.float32)])
    assert m2.evaluate(x, np.array([0, 1, 3, 3]), verbose=0)[1] == pytest.approx(0.75)


# ---- checkpoints -------------------------------------------------------------------------------

def dropout_classifier():
    return Sequential([Dense(32, activation="relu", input_shape=(64,)), Dropout(0.2),
                       Dense(10, activation="softmax")])


def test_save_load_continue_equals_uninterrupted(tmp_path):
    x_tr, _, y_tr, _ = digits()
    x_tr, y_tr = x_tr[:300], y_tr[:300]

    def fresh():
        m = dropout_classifier()
        m.compile(optimizer=Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], target=T, seed=3)
        return m

    full = fresh()
    h_full = full.fit(x_tr, y_tr, epochs=4, batch_size=50, verbose=0)

    first = fresh()
    first.fit(x_tr, y_tr, epochs=2, batch_size=50, verbose=0)
    path = first.save_weights(tmp_path / "ckpt", include_optimizer=True)
    assert path.endswith(".npz") and os.path.exists(path)

    resumed = fresh()
    resumed.load_weights(tmp_path / "ckpt")
    h_rest = resumed.fit(x_tr, y_tr, epochs=4, initial_epoch=2, batch_size=50, verbose=0)
    assert h_rest.epoch == [2, 3]
    np.testing.assert_allclose(h_rest.history["loss"], h_full.history["loss"][2:], rtol=0, atol=0)
    for a, b in zip(resumed.get_weights(), full.get_weights()):
        np.testing.assert_array_equal(a, b)
    sd_a, sd_b = resumed.train_function.state_dict(), full.train_function.state_dict()
    for k in sd_b["state"]:
        np.testing.assert_array_equal(sd_a["state"][k], sd_b["state"][k])

    # weights only: same weights, fresh optimizer (its step counter starts again)
    wpath = first.save_weights(tmp_path / "w.npz")
    other = fresh()
    other.load_weights(wpath)
    for a, b in zip(other.get_weights(), first.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(other.train_function.state_dict()["state"]["step"]) == 0


def test_save_is_atomic_and_load_checks(tmp_path, monkeypatch):
    m = reference_model()
    m.compile(optimizer="adam", loss="mse", target=T)
    path = m.save_weights(tmp_path / "m.npz")
    before = open(path, "rb").read()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    m.set_weights([w + 1 for w in m.get_weights()])
    with pytest.raises(OSError):
        m.save_weights(path)
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert [p for p in os.listdir(tmp_path) if p != "m.npz"] == []

    other = Sequential([Dense(5, input_shape=(10,)), Dense(1)])
    other.compile(optimizer="adam", loss="mse", target=T)
    with pytest.raises(ValueError, match="does not match this model"):
        other.load_weights(path)


def test_get_set_weights_and_predict_shares_weights():
    x, y = regression_data(64)
    m = reference_model()
    m.compile(optimizer=SGD(learning_rate=0.01), loss="mse", target=T)
    p0 = m.predict(x)
    m.fit(x, y, epochs=1, verbose=0)
    p1 = m.predict(x)
    assert not np.allclose(p0, p1)  # predict sees the trained weights without a copy
    w = m.get_weights()
    assert [a.shape for a in w] == [(10, 10), (10,), (10, 10), (10,), (10, 1), (1,)]
    m.set_weights([np.zeros_like(a) for a in w])
    np.testing.assert_array_equal(m.predict(x), np.zeros((64, 1), np.float32))
    m.layers[2].set_weights([np.ones((10, 1)), np.full((1,), 2.0)])
    np.testing.assert_array_equal(m.predict(x[:3]), np.full((3, 1), 2.0, np.float32))
    with pytest.raises(ValueError, match="has 6 weights"):
        m.set_weights(w[:2])
    with pytest.raises(ValueError, match="shape"):
        m.set_weights([a.T if a.ndim == 2 else a for a in w[::-1]])


def test_recompile_keeps_weights_and_resets_optimizer():
    x, y = regression_data(64)
    m = reference_model()
    m.compile(optimizer="adam", loss="mse", target=T)
    m.fit(x, y, epochs=1, verbose=0)
    w = m.get_weights()
    m.compile(optimizer=SGD(learning_rate=0.0), loss="mae", target=T)
    for a, b in zip(w, m.get_weights()):
        np.testing.assert_array_equal(a, b)
    m.fit(x, y, epochs=1, verbose=0)  # lr 0: nothing moves
    for a, b in zip(w, m.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---- optimizers --------------------------------------------------------------------------------

class SignSGD(optimizers.Optimizer):
    def __init__(self, learning_rate=0.01):
        super().__init__(learning_rate=learning_rate)

    def update(self, param, grad, state, step):
        return param - self.hyper("learning_rate") * gc.sign(grad), {}


def test_custom_optimizer_and_names():
    x, y = regression_data(64)
    m = reference_model()
    opt = SignSGD(learning_rate=0.01)
    m.compile(optimizer=opt, loss="mse", target=T)
    w0 = m.get_weights()
    m.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
    # one step of sign SGD moves every weight with a nonzero gradient by exactly lr
    d = np.abs(m.get_weights()[4] - w0[4])
    assert np.all(np.isclose(d, 0.01) | (d == 0)) and np.any(d > 0)
    assert m.train_function.optimizer is opt
    for name in ("sgd", "adam", "adamw", "rmsprop", "adagrad"):
        m2 = reference_model()
        m2.compile(optimizer=name, loss="mse", target=T)
        h = m2.fit(x, y, epochs=1, verbose=0)
        assert np.isfinite(h.history["loss"][0])
    with pytest.raises(ValueError, match="optimizer"):
        reference_model().compile(optimizer="nope", loss="mse")
    assert optimizers.Adam is gc.optim.Adam


# ---- bad input ----------------------------------------------------------------------------------

def test_bad_input_errors_name_the_argument():
    x, y = regression_data(64)
    m = reference_model()
    m.compile(optimizer="adam", loss="mse", target=T)
    with pytest.raises(ValueError, match=r"x and y have different numbers of samples: x has 64, y has 60"):
        m.fit(x, y[:60], verbose=0)
    with pytest.raises(ValueError, match=r"x: the model expects samples of shape \(10,\).*\(12,\)"):
        m.fit(np.zeros((64, 12)), y, verbose=0)
    xn = x.copy()
    xn[5, 3] = np.nan
    with pytest.raises(ValueError, match=r"x: contains 1 NaN.*sample 5"):
        m.fit(xn, y, verbose=0)
    yn = y.copy()
    yn[7] = np.inf
    with pytest.raises(ValueError, match=r"y: contains 1 NaN"):
        m.fit(x, yn, verbose=0)
    with pytest.warns(UserWarning, match="x: contains 1 NaN"):
        m.fit(xn, y, verbose=0, epochs=0, nan_policy="warn")
    with pytest.raises(ValueError, match=r"y: labels have per-sample shape \(3,\)"):
        m.fit(x, np.zeros((64, 3)), verbose=0)
    with pytest.raises(ValueError, match="validation_data\\[0\\]"):
        m.fit(x, y, validation_data=(np.zeros((8, 9)), y[:8]), verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        m.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        m.fit(x, y, validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="x: expected numeric data"):
        m.fit(np.array([["a"] * 10] * 64), y, verbose=0)
    trained = m._functions.get("train") is not None
    assert not trained or int(m.train_function.state_dict()["state"]["step"]) == 0  # nothing trained

    c = Sequential([Dense(3, activation="softmax", input_shape=(10,))])
    c.compile(optimizer="adam", loss="sparse_categorical_crossentropy", target=T)
    with pytest.raises(ValueError, match=r"y: .*one-hot\?\); use loss='categorical_crossentropy'"):
        c.fit(x, np.eye(3)[np.arange(64) % 3], verbose=0)
    with pytest.raises(ValueError, match="y: sparse_categorical_crossentropy needs integer class indices"):
        c.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match=r"y: class labels must lie in \[0, 3\)"):
        c.fit(x, np.arange(64) % 5, verbose=0)
    c.fit(x, (np.arange(64) % 3).astype(np.float32), verbose=0, epochs=1)  # integral floats are fine
    c2 = Sequential([Dense(3, activation="softmax", input_shape=(10,))])
    c2.compile(optimizer="adam", loss="categorical_crossentropy", target=T)
    with pytest.raises(ValueError, match="y: categorical_crossentropy needs one-hot labels.*sparse_categorical"):
        c2.fit(x, np.arange(64) % 3, verbose=0)
    b = Sequential([Dense(1, activation="sigmoid", input_shape=(10,))])
    b.compile(optimizer="adam", loss="binary_crossentropy", target=T)
    with pytest.raises(ValueError, match=r"y: binary_crossentropy needs labels in \[0, 1\]"):
        b.fit(x, np.arange(64) % 3, verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        reference_model().fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="unknown loss"):
        reference_model().compile(optimizer="adam", loss="msee")
    with pytest.raises(ValueError, match="unknown activation"):
        Dense(3, activation="relux")


# ---- callbacks and output -------------------------------------------------------------------------

def test_learning_rate_scheduler_does_not_recompile():
    x, y = regression_data(100)
    m = reference_model()
    m.compile(optimizer=Adam(learning_rate=0.01), loss="mse", target=T)
    seen_lr, programs = [], []

    class Probe(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen_lr.append(self.model.optimizer.learning_rate)
            programs.append(len(self.model.train_function._programs))

    sched = LearningRateScheduler(lambda epoch, lr: 0.01 * 0.5 ** epoch)
    h = m.fit(x, y, epochs=4, batch_size=32, callbacks=[sched, Probe()], verbose=0)
    assert seen_lr == pytest.approx([0.01, 0.005, 0.0025, 0.00125])
    assert h.history["learning_rate"] == pytest.approx(seen_lr)
    assert programs == [2, 2, 2, 2]  # batch 32 and the last batch of 4; none added by lr changes
    step = m.train_function
    assert step.optimizer.learning_rate == pytest.approx(0.00125)


def test_early_stopping_and_restore():
    x, y = regression_data(64)
    m = reference_model()
    m.compile(optimizer=SGD(learning_rate=0.01), loss="mse", target=T)
    # lr 0 after the first epoch: val_loss stops improving, so patience 2 stops at epoch 3
    sched = LearningRateScheduler(lambda epoch, lr: 0.01 if epoch == 0 else 0.0)
    es = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = m.fit(x, y, epochs=20, validation_data=(x[:16], y[:16]), callbacks=[sched, es], verbose=0)
    assert h.epoch == [0, 1, 2] and es.stopped_epoch == 2
    assert "val_loss" in h.history and len(h.history["val_loss"]) == 3
    assert isinstance(m.history, History)


def test_verbose_modes(capsys):
    x, y = regression_data(64)
    m = reference_model()
    m.compile(optimizer="adam", loss="mse", metrics=["mae"], target=T)
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert capsys.readouterr().out == ""
    m.fit(x, y, epochs=2, batch_size=16, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "4/4 [==============================]" in out
    assert "loss:" in out and "mae:" in out
    m.fit(x, y, epochs=3, batch_size=16, verbose=2, validation_split=0.25)
    lines = [l for l in capsys.readouterr().out.splitlines() if l]
    assert len(lines) == 6 and lines[1].startswith("3/3 - ") and "val_loss:" in lines[1]


def test_summary(capsys):
    m = Sequential([Flatten(input_shape=(8, 8)), Dense(16, activation="relu"), Dropout(0.5), Dense(10)])
    m.summary()
    out = capsys.readouterr().out
    for s in ("flatten (Flatten)", "(None, 64)", "dense (Dense)", "1,040", "dropout (Dropout)",
              "dense_1 (Dense)", "170", "Total params: 1,210"):
        assert s in out, s
    assert m.count_params() == 1210
    assert [w.name for w in m.weights] == ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]


def test_dropout_and_flatten():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4, 4)).astype(np.float32)
    y = (x[:, 0, :].sum(axis=1) > 0).astype(np.float32)
    m = Sequential([Flatten(input_shape=(4, 4)), Dense(32, activation="relu"), Dropout(0.5),
                    Dense(1, activation="sigmoid")])
    m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"], target=T)
    # dropout is off in predict/evaluate: deterministic
    np.testing.assert_array_equal(m.predict(x), m.predict(x))
    # in training, the mask is drawn inside the step (gc.dropout: nothing fed), inverted (kept units
    # scaled by 1/(1-rate)); predict has no random op
    assert [n.name for n in m.train_function.graph.inputs if ":" not in n.name] == ["x", "y"]  # no mask feed
    assert any(n.op == "random_uniform" for n in m.train_function.graph.nodes)
    assert not any(n.op == "random_uniform" for n in m.predict_function.graph.nodes)
    h1 = gc.compile(m.layers[2](gc.input("h", (None, 32)), training=True), target=T)(h=np.ones((1000, 32), np.float32))
    assert set(np.unique(h1)) == {0.0, 2.0} and abs(h1.mean() - 1.0) < 0.05
    h = m.fit(x, y, epochs=10, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    # training with dropout differs from the deterministic evaluation loss
    tr = m.train_on_batch(x, y)
    assert np.isfinite(tr[0])


def test_layer_names_unique_and_input_inference():
    m = Sequential()
    m.add(Dense(4, activation="tanh"))
    m.add(Dense(4, name="dense_1x"))
    m.add(Activation("gelu"))
    m.add(Dense(2, activation="leaky_relu"))
    x = np.ones((5, 3), np.float32)
    assert m.predict(x).shape == (5, 2)  # built from the data
    assert [l.name for l in m.layers] == ["dense", "dense_1x", "activation", "dense_1"]
    assert m.input_shape == (None, 3) and m.output_shape == (None, 2)
    with pytest.raises(ValueError, match="x: the model expects samples of shape"):
        m.predict(np.ones((5, 4)))
