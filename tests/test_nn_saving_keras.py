"""Keras 3's file formats: ``model.save("m.keras")`` / ``graphc.nn.load_model`` and
``.weights.h5`` weights, checked against real Keras 3 (numpy backend) in both directions.

Keras runs in the session's worker subprocess (conftest.py's ``keras_run``,
tests/_keras_worker.py: KERAS_BACKEND=numpy is set before Keras is imported there, whatever
this process imported): the test sends it code, arrays travel as .npy files in a temp
directory."""
import importlib.util
import json
import os
import zipfile

import numpy as np
import pytest

import graphc.nn as nn
from graphc.nn import layers as Lr
from graphc.nn.optimizers import SGD, Adam, RMSprop

# the test extra installs both; Keras is imported only in the worker (its default backend
# here would be TensorFlow)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("h5py") is None or importlib.util.find_spec("keras") is None,
                                reason="needs h5py and keras (pip install -e '.[test]')")

RNG = np.random.default_rng(0)


def _mlp(target="numpy"):
    m = nn.Sequential([Lr.Dense(8, activation="relu", input_shape=(5,)), Lr.Dropout(0.1),
                       Lr.Dense(3, activation="softmax")])
    m.compile(Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"], target=target)
    return m


def _cnn():
    inp = nn.Input((8, 8, 3))
    h = Lr.Conv2D(4, 3, padding="same", activation="relu", kernel_regularizer="l2")(inp)
    h = Lr.BatchNormalization()(h)
    h = Lr.MaxPooling2D()(h)
    h = Lr.AveragePooling2D()(h)
    o = Lr.Dense(2)(Lr.Flatten()(h))
    m = nn.Model(inp, o)
    m.compile(SGD(0.05, momentum=0.9), "mse", target="numpy")
    return m


def _attention():
    ids = nn.Input((6,), name="ids")
    e = Lr.Embedding(20, 4)(ids)
    a = Lr.MultiHeadAttention(2, 3)(e, e, use_causal_mask=True)
    a = Lr.LayerNormalization()(Lr.Add()([a, e]))
    c = Lr.Concatenate()([a, e])
    o = Lr.Dense(1)(Lr.GlobalAveragePooling2D()(Lr.Reshape((6, 8, 1))(c)))
    m = nn.Model(ids, o)
    m.compile(RMSprop(0.01, momentum=0.5, centered=True), "mse", target="numpy")
    return m


def test_graphc_models_open_in_keras_with_the_same_predictions_and_optimizer_state(tmp_path, keras_run):
    cases = {"mlp": (_mlp(), RNG.normal(size=(32, 5)).astype("float32"), RNG.integers(0, 3, 32)),
             "cnn": (_cnn(), RNG.normal(size=(16, 8, 8, 3)).astype("float32"),
                     RNG.normal(size=(16, 2)).astype("float32")),
             "att": (_attention(), RNG.integers(0, 20, (16, 6)), RNG.normal(size=(16, 1)).astype("float32"))}
    expect = {}
    for name, (m, x, y) in cases.items():
        m.fit(x, y, epochs=2, batch_size=8, verbose=0)  # optimizer state and BN statistics move
        assert m.save(tmp_path / f"{name}.keras") == str(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"x_{name}.npy", x)
        np.save(tmp_path / f"p_{name}.npy", m.predict(x))
        sd = m.train_function.state_dict()["state"]
        first = m.trainable_weights[0].name
        slot = {"mlp": "m", "cnn": "velocity", "att": "velocity"}[name]
        expect[name] = (int(sd["step"]), sd[f"{first}/{slot}"])
    got = keras_run("""
result = {}
for n in ["mlp", "cnn", "att"]:
    m = keras.models.load_model(n + ".keras")
    q = m.predict(np.load("x_" + n + ".npy"), verbose=0)
    np.save("slot_" + n + ".npy", np.asarray(m.optimizer.variables[2]))
    result[n] = [float(np.abs(q - np.load("p_" + n + ".npy")).max()), int(m.optimizer.iterations.numpy()),
                 type(m).__name__, [type(l).__name__ for l in m.layers]]
""", tmp_path)
    for name, (err, iterations, cls, layer_names) in got.items():
        assert err < 1e-6, (name, err)
        assert iterations == expect[name][0] == len(cases[name][1]) // 8 * 2
        np.testing.assert_allclose(np.load(tmp_path / f"slot_{name}.npy"), expect[name][1], rtol=1e-6, atol=1e-7)
    assert got["mlp"][2] == "Sequential" and got["cnn"][2] == "Functional"
    assert "MultiHeadAttention" in got["att"][3] and "BatchNormalization" in got["cnn"][3]


def test_layer_configs_mean_the_same_to_keras(tmp_path, keras_run):
    """Keras rebuilds each saved layer from graphc's config and writes back the same values."""
    m = _attention()
    m.save(tmp_path / "a.keras")
    c = _cnn()
    c.save(tmp_path / "c.keras")
    entries = [e for f in ("a", "c") for e in
               json.loads(zipfile.ZipFile(tmp_path / f"{f}.keras").read("config.json"))["config"]["layers"]]
    (tmp_path / "entries.json").write_text(json.dumps(entries))
    back = keras_run("""
import json
from keras.src.saving import serialization_lib as S
result = []
for e in json.load(open("entries.json")):
    lay = S.deserialize_keras_object({k: e[k] for k in ("module", "class_name", "config", "registered_name")})
    result.append(json.loads(json.dumps(S.serialize_keras_object(lay)["config"])))
""", tmp_path)

    def same(a, b):
        if isinstance(a, dict) and "class_name" in a:  # an initializer or regularizer: its class and arguments
            return a["class_name"] == b["class_name"] and all(b["config"].get(k) == v for k, v in a["config"].items())
        return a == b
    for e, kc in zip(entries, back):
        for k, v in e["config"].items():
            assert same(v, kc[k]), (e["class_name"], k, v, kc[k])


def _keras_models(keras_run, where):
    keras_run("""
rng = np.random.default_rng(1)
keras.utils.set_random_seed(0)
m = keras.Sequential([keras.Input((5,)), L.Dense(8, activation="relu"), L.Dropout(0.2), L.Dense(1)])
m.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
x = rng.normal(size=(16, 5)).astype("float32")
m.save("kseq.keras"); np.save("kx_seq.npy", x); np.save("kp_seq.npy", m.predict(x, verbose=0))
inp = keras.Input((8, 8, 3))
h = L.BatchNormalization()(L.Conv2D(4, 3, padding="same", activation="relu")(inp))
h = L.Dropout(0.2)(L.GlobalAveragePooling2D()(L.MaxPooling2D()(h)))
f = keras.Model(inp, L.Dense(2, activation="softmax")(h))
f.compile(keras.optimizers.SGD(0.1, momentum=0.9), "categorical_crossentropy", metrics=["accuracy"])
bn = f.layers[2]
bn.moving_mean.assign(rng.normal(size=4).astype("float32"))
bn.moving_variance.assign(rng.uniform(0.5, 2, size=4).astype("float32"))
xi = rng.normal(size=(8, 8, 8, 3)).astype("float32")
f.save("kcnn.keras"); np.save("kx_cnn.npy", xi); np.save("kp_cnn.npy", f.predict(xi, verbose=0))
i1 = keras.Input((6,), dtype="int32", name="ids"); i2 = keras.Input((6, 4), name="feat")
a = L.Add()([L.Embedding(20, 4)(i1), i2])
h = L.LayerNormalization()(L.MultiHeadAttention(2, 3)(a, a, use_causal_mask=True))
g = L.Flatten()(L.Concatenate()([h, a]))
t = keras.Model([i1, i2], {"a": L.Dense(2, name="out1")(g), "b": L.Dense(1, activation="sigmoid", name="out2")(g)})
t.compile(optimizer="adam", loss={"a": "mse", "b": "binary_crossentropy"})
xt = [rng.integers(0, 20, (4, 6)).astype("int32"), rng.normal(size=(4, 6, 4)).astype("float32")]
p = t.predict(xt, verbose=0)
t.save("katt.keras"); np.save("kx_att0.npy", xt[0]); np.save("kx_att1.npy", xt[1])
np.save("kp_att_a.npy", p["a"]); np.save("kp_att_b.npy", p["b"])
""", where)


def test_keras_models_load_in_graphc_with_the_same_predictions(tmp_path, keras_run):
    _keras_models(keras_run, tmp_path)
    m = nn.models.load_model(tmp_path / "kseq.keras", target="numpy")
    assert isinstance(m, nn.Sequential) and isinstance(m.optimizer, Adam) and m.optimizer.learning_rate == \
        pytest.approx(0.01)
    np.testing.assert_allclose(m.predict(np.load(tmp_path / "kx_seq.npy")), np.load(tmp_path / "kp_seq.npy"),
                               atol=1e-6)
    f = nn.saving.load_model(tmp_path / "kcnn.keras", target="numpy")
    assert [type(l).__name__ for l in f.layers][1:3] == ["Conv2D", "BatchNormalization"]
    assert isinstance(f.optimizer, SGD) and f.optimizer.momentum == pytest.approx(0.9)
    np.testing.assert_allclose(f.predict(np.load(tmp_path / "kx_cnn.npy")), np.load(tmp_path / "kp_cnn.npy"),
                               atol=1e-6)
    # compiled in Keras but never trained (no optimizer slots saved): training starts fresh
    xi = np.load(tmp_path / "kx_cnn.npy")
    f.fit(xi, np.eye(2, dtype="float32")[np.arange(len(xi)) % 2], batch_size=len(xi), verbose=0)
    assert int(f.train_function.state_dict()["state"]["step"]) == 1
    t = nn.load_model(tmp_path / "katt.keras", target="numpy")
    p = t.predict([np.load(tmp_path / "kx_att0.npy"), np.load(tmp_path / "kx_att1.npy")])
    np.testing.assert_allclose(p["a"], np.load(tmp_path / "kp_att_a.npy"), atol=1e-6)
    np.testing.assert_allclose(p["b"], np.load(tmp_path / "kp_att_b.npy"), atol=1e-6)
    # graphc's file of a Keras model opens in Keras again, predicting the same
    t.save(tmp_path / "again.keras")
    err = keras_run("""
t = keras.models.load_model("again.keras")
p = t.predict([np.load("kx_att0.npy"), np.load("kx_att1.npy")], verbose=0)
result = max(float(np.abs(p[k] - np.load("kp_att_" + k + ".npy")).max()) for k in "ab")
""", tmp_path)
    assert err < 1e-6


def test_recurrent_and_1d_layers_move_both_ways(tmp_path, keras_run):
    """Keras' masked recurrent graph (Embedding(mask_zero) -> SimpleRNN/LSTM/GRU/Bidirectional,
    Conv1D, 1-D pooling) loads in graphc and goes back to Keras; a graphc LSTM model opens in
    Keras."""
    keras_run("""
rng = np.random.default_rng(3)
inp = keras.Input((7,), dtype="int32")
e = L.Embedding(12, 4, mask_zero=True)(inp)
h = L.SimpleRNN(3, return_sequences=True)(e)
c = L.GlobalAveragePooling1D()(L.MaxPooling1D()(L.Conv1D(2, 3, padding="causal")(L.LSTM(3, return_sequences=True)(e))))
o = L.Concatenate()([c, L.GlobalMaxPooling1D()(h), L.GRU(3)(e), L.Bidirectional(L.LSTM(2))(e)])
m = keras.Model(inp, o)
x = rng.integers(0, 12, (5, 7)).astype("int32"); x[:, :2] = 0
m.save("rnn.keras"); np.save("rx.npy", x); np.save("rp.npy", m.predict(x, verbose=0))
""", tmp_path)
    m = nn.load_model(tmp_path / "rnn.keras", target="numpy")
    x, p = np.load(tmp_path / "rx.npy"), np.load(tmp_path / "rp.npy")
    np.testing.assert_allclose(m.predict(x), p, atol=1e-6)
    m.save(tmp_path / "rnn_g.keras")
    g = nn.Sequential([Lr.Embedding(12, 4, mask_zero=True, input_shape=(7,)), Lr.LSTM(3), Lr.Dense(1)])
    g.build((None, 7))
    g.save(tmp_path / "lstm_g.keras")
    np.save(tmp_path / "gp.npy", g.predict(x))
    err = keras_run("""
m = keras.models.load_model("rnn_g.keras")
g = keras.models.load_model("lstm_g.keras")
x = np.load("rx.npy")
result = [float(np.abs(m.predict(x, verbose=0) - np.load("rp.npy")).max()),
          float(np.abs(g.predict(x, verbose=0) - np.load("gp.npy")).max())]
""", tmp_path)
    assert max(err) < 1e-6, err


@pytest.mark.parametrize("opt", ["keras.optimizers.Adam(0.01)",
                                 "keras.optimizers.RMSprop(0.01, momentum=0.5, centered=True)"])
def test_training_continues_from_a_keras_optimizer_state_as_keras_continues_it(tmp_path, keras_run, opt):
    """Keras trains three steps, saves; graphc loads and takes one step on (x, y); Keras' own
    optimizer takes that step from the same state with the exact gradient of the linear
    model's MSE: the weights, slots and iteration count agree."""
    keras_run(f"""
rng = np.random.default_rng(2)
m = keras.Sequential([keras.Input((4,)), L.Dense(2)])
m.compile(optimizer={opt}, loss="mse")
m.optimizer.build(m.trainable_variables)
for _ in range(3):
    m.optimizer.apply_gradients([(rng.normal(size=v.shape).astype("float32"), v) for v in m.trainable_variables])
m.save("lin.keras")
x = rng.normal(size=(8, 4)).astype("float32"); y = rng.normal(size=(8, 2)).astype("float32")
np.save("x.npy", x); np.save("y.npy", y)
W, b = (np.asarray(v) for v in m.trainable_variables)
r = 2.0 * (x @ W + b - y) / y.size  # d mean((xW + b - y)^2)
m.optimizer.apply_gradients([(x.T @ r, m.trainable_variables[0]), (r.sum(0), m.trainable_variables[1])])
np.save("W.npy", np.asarray(m.trainable_variables[0])); np.save("b.npy", np.asarray(m.trainable_variables[1]))
np.save("slot.npy", np.asarray(m.optimizer.variables[2]))
result = int(m.optimizer.iterations.numpy())
""", tmp_path)
    m = nn.load_model(tmp_path / "lin.keras", target="numpy")
    m.train_on_batch(np.load(tmp_path / "x.npy"), np.load(tmp_path / "y.npy"))
    W, b = m.get_weights()
    np.testing.assert_allclose(W, np.load(tmp_path / "W.npy"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, np.load(tmp_path / "b.npy"), rtol=1e-5, atol=1e-6)
    sd = m.train_function.state_dict()["state"]
    assert int(sd["step"]) == 4
    slot = "m" if "Adam" in opt else "velocity"
    kernel = m.trainable_weights[0].name  # the Keras worker's layer name: dense, dense_1, ...
    np.testing.assert_allclose(sd[f"{kernel}/{slot}"], np.load(tmp_path / "slot.npy"), rtol=1e-5, atol=1e-7)


def test_graphc_round_trip_restores_the_optimizer_and_keeps_training_the_same(tmp_path):
    x, y = RNG.normal(size=(32, 5)).astype("float32"), RNG.integers(0, 3, 32)
    m = _mlp(target="cpu")
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    m.save(tmp_path / "m.keras")
    loaded = nn.load_model(tmp_path / "m.keras")  # compiled as saved, for the default target
    assert loaded.optimizer.learning_rate == pytest.approx(0.01) and loaded._metric_ids == ["accuracy"]
    a = m.train_on_batch(x[:8], y[:8], return_dict=True)
    b = loaded.train_on_batch(x[:8], y[:8], return_dict=True)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    sa, sb = m.train_function.state_dict()["state"], loaded.train_function.state_dict()["state"]
    assert int(sa["step"]) == int(sb["step"]) == 5
    for k in sa:
        np.testing.assert_allclose(sb[k], sa[k], rtol=1e-6, atol=1e-7, err_msg=k)
    for wa, wb in zip(m.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(wb, wa, rtol=1e-6, atol=1e-7)


def test_weights_h5_is_keras_layout_both_ways(tmp_path, keras_run):
    m = _cnn()
    m.fit(RNG.normal(size=(8, 8, 8, 3)).astype("float32"), RNG.normal(size=(8, 2)).astype("float32"), verbose=0)
    assert m.save_weights(tmp_path / "w.weights.h5") == str(tmp_path / "w.weights.h5")
    assert os.path.exists(tmp_path / "w.weights.h5") and not os.path.exists(tmp_path / "w.weights.h5.npz")
    x = RNG.normal(size=(4, 8, 8, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "p.npy", m.predict(x))
    err = keras_run("""
inp = keras.Input((8, 8, 3))
h = L.MaxPooling2D()(L.BatchNormalization()(L.Conv2D(4, 3, padding="same", activation="relu")(inp)))
k = keras.Model(inp, L.Dense(2)(L.Flatten()(L.AveragePooling2D(2)(h))))
k.load_weights("w.weights.h5")
result = float(np.abs(k.predict(np.load("x.npy"), verbose=0) - np.load("p.npy")).max())
for w in k.weights:
    w.assign(np.asarray(w) * 0.5)
k.save_weights("k.weights.h5")
np.save("pk.npy", k.predict(np.load("x.npy"), verbose=0))
""", tmp_path)
    assert err < 1e-6
    m.load_weights(tmp_path / "k.weights.h5")
    np.testing.assert_allclose(m.predict(x), np.load(tmp_path / "pk.npy"), atol=1e-6)
    # graphc to graphc with the optimizer: the state comes back
    m.save_weights(tmp_path / "o.weights.h5", include_optimizer=True)
    before = m.train_function.state_dict()["state"]
    m2 = _cnn()
    m2.load_weights(tmp_path / "o.weights.h5")
    after = m2.train_function.state_dict()["state"]
    assert sorted(after) == sorted(before)
    for k in before:
        np.testing.assert_allclose(after[k], before[k], err_msg=k)
    # .npz names keep the .npz format
    assert m.save_weights(tmp_path / "c").endswith("c.npz")


def test_a_layer_graphc_lacks_is_an_error_naming_its_class(tmp_path, keras_run):
    keras_run("""
m = keras.Sequential([keras.Input((3,)), L.Dense(2), L.GaussianNoise(0.1, name="noisy")])
m.save("noise.keras")
""", tmp_path)
    with pytest.raises(nn.KerasFormatError, match=r"'noisy' is a GaussianNoise"):
        nn.load_model(tmp_path / "noise.keras")
    # an optimizer graphc lacks stops the compile, not the model
    keras_run("""
m = keras.Sequential([keras.Input((3,)), L.Dense(2)])
m.compile(keras.optimizers.Ftrl(), "mse")
m.save("ftrl.keras")
""", tmp_path)
    with pytest.raises(nn.KerasFormatError, match=r"optimizer 'Ftrl' is not supported.*compile=False"):
        nn.load_model(tmp_path / "ftrl.keras")
    m = nn.load_model(tmp_path / "ftrl.keras", compile=False)
    assert not m.compiled and m.get_weights()[0].shape == (3, 2)


def test_save_refuses_other_names_and_bad_files(tmp_path):
    m = _mlp()
    m.build((None, 5))
    with pytest.raises(ValueError, match=r"must end in \.keras"):
        m.save(tmp_path / "m.h5")
    assert not os.path.exists(tmp_path / "m.h5")
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    with pytest.raises(nn.KerasFormatError, match="not a .keras file"):
        nn.load_model(tmp_path / "bad.keras")
    m.save(tmp_path / "ok.keras")
    other = nn.Sequential([Lr.Dense(4, input_shape=(5,))])
    with pytest.raises(nn.KerasFormatError, match="does not match this model"):
        other.load_weights(tmp_path / "ok.keras")


class _Scale(nn.Layer):
    """A custom layer written with get_config, as Keras asks of savable custom layers."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

    def call(self, x):
        return x * self.w * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def test_custom_layers_load_through_custom_objects_and_checkpoints_write_keras_files(tmp_path):
    m = nn.Sequential([Lr.Dense(3, input_shape=(4,)), _Scale(3.0)])
    m.compile("adam", "mse", target="numpy")
    x = RNG.normal(size=(4, 4)).astype("float32")
    ckpt = nn.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="loss", save_weights_only=False)
    m.fit(x, np.zeros((4, 3), np.float32), verbose=0, callbacks=[ckpt])
    assert ckpt.saved == [str(tmp_path / "best.keras")] and zipfile.is_zipfile(tmp_path / "best.keras")
    with pytest.raises(nn.KerasFormatError, match="is a _Scale"):
        nn.load_model(tmp_path / "best.keras")
    loaded = nn.load_model(tmp_path / "best.keras", custom_objects={"_Scale": _Scale}, target="numpy")
    assert loaded.layers[-1].factor == 3.0
    np.testing.assert_allclose(loaded.predict(x), m.predict(x), atol=1e-7)
