"""graphc.nn against Keras 3's documented behaviour: ``Sequential.layers`` without its
InputLayer, tensors passed to layers by keyword (``mask=``), an output's mask in the loss,
schedule-driven learning rates in callbacks, Lambda in saved models and metric options in
``.keras`` files.

Where a number is compared, real Keras 3 (numpy backend) computes it in the session's worker
subprocess (conftest.py's ``keras_run``)."""
import importlib.util
import json
import zipfile

import numpy as np
import pytest

import graphc.nn as nn
from graphc.nn import layers as Lr
from graphc.nn.optimizers import SGD

_HAVE_KERAS = importlib.util.find_spec("h5py") is not None and importlib.util.find_spec("keras") is not None
needs_keras = pytest.mark.skipif(not _HAVE_KERAS, reason="needs h5py and keras (pip install -e '.[test]')")

RNG = np.random.default_rng(0)


# ---- Sequential.layers -------------------------------------------------------------------------------
def test_sequential_layers_leave_out_the_input_layer_as_keras_does(tmp_path):
    d1, d2 = Lr.Dense(4, activation="relu"), Lr.Dense(2)
    m = nn.Sequential([nn.Input((3,), name="x_in"), d1, d2])
    # Keras 3: Sequential.layers omits the InputLayer (a functional Model's layers include it)
    assert m.layers == [d1, d2]
    assert m.layers[0] is d1 and m.get_layer(index=0) is d1
    m.layers.append(Lr.Dense(1))  # a copy, as in Keras
    assert len(m.layers) == 2
    lines = []
    m.summary(print_fn=lines.append)
    rows = [l for l in lines if "(Dense)" in l or "(InputLayer)" in l]
    assert len(rows) == 2 and all("(Dense)" in r for r in rows)
    m.compile(SGD(0.1), "mse", target="numpy")
    x = RNG.normal(size=(8, 3)).astype("float32")
    path = m.save(tmp_path / "s.keras")
    cfg = json.loads(zipfile.ZipFile(path).read("config.json"))
    entries = cfg["config"]["layers"]
    assert [e["class_name"] for e in entries] == ["InputLayer", "Dense", "Dense"]
    assert entries[0]["config"]["name"] == "x_in"
    back = nn.models.load_model(path)
    assert [type(l).__name__ for l in back.layers] == ["Dense", "Dense"]
    np.testing.assert_allclose(back.predict(x), m.predict(x), rtol=1e-6, atol=1e-6)
    functional = nn.Model(inp := nn.Input((3,)), Lr.Dense(2)(inp))
    assert type(functional.layers[0]).__name__ == "InputLayer"
    assert m.pop() is d2 and m.layers == [d1]
    m.pop()
    with pytest.raises(ValueError, match="no layers"):
        m.pop()


# ---- callbacks that set the learning rate, with a schedule ------------------------------------------------
def _scheduled_model():
    from graphc.optim.schedules import ExponentialDecay
    m = nn.Sequential([Lr.Dense(1, input_shape=(2,))])
    m.compile(SGD(ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)), "mse", target="numpy")
    return m


@needs_keras
def test_callbacks_refuse_to_set_a_scheduled_learning_rate_as_keras_does(tmp_path, keras_run):
    x, y = RNG.normal(size=(8, 2)).astype("float32"), RNG.normal(size=(8, 1)).astype("float32")
    m = _scheduled_model()
    with pytest.raises(TypeError, match=r"LearningRateScheduler.*ExponentialDecay.*not settable"):
        m.fit(x, y, epochs=2, batch_size=4, verbose=0,
              callbacks=[nn.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)])
    # ReduceLROnPlateau reads the schedule's current value (logged) until it has to reduce it
    m = _scheduled_model()
    rop = nn.callbacks.ReduceLROnPlateau(monitor="loss", patience=1, min_delta=1e9)
    h = m.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[rop])
    np.testing.assert_allclose(h.history["learning_rate"], [0.1 * 0.5 ** (2 / 2)], rtol=1e-6)
    with pytest.raises(TypeError, match=r"ReduceLROnPlateau.*not settable"):
        m.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[rop])
    got = keras_run("""
result = []
for cb in [keras.callbacks.LearningRateScheduler(lambda e, lr: lr * 0.5),
           keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=1, min_delta=1e9)]:
    k = keras.Sequential([keras.Input((2,)), L.Dense(1)])
    k.compile(keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5)), "mse")
    cb.set_model(k)  # the numpy backend has no fit: drive the hooks as fit does
    try:
        cb.on_train_begin()
        for epoch in range(2):
            cb.on_epoch_begin(epoch)
            cb.on_epoch_end(epoch, {"loss": 1.0})
        result.append(["none", ""])
    except Exception as e:
        result.append([type(e).__name__, str(e)])
""", tmp_path)
    assert [g[0] for g in got] == ["TypeError", "TypeError"] and all("not settable" in g[1] for g in got), got


# ---- tensors passed by keyword ---------------------------------------------------------------------------
@needs_keras
def test_a_mask_passed_by_keyword_is_an_input_of_the_graph_as_in_keras(tmp_path, keras_run):
    x = nn.Input((4, 3), name="x")
    m = nn.Input((4, 3), name="m")  # a float mask (> 0.5 keeps), as Softmax takes it
    steps = nn.Input((4,), name="steps")  # a (batch, time) mask for the LSTM (1: a step, 0: padding)
    soft = Lr.Softmax()(x, mask=m)
    seq = Lr.LSTM(2, return_sequences=True)(x, mask=steps)
    model = nn.Model([x, m, steps], [soft, Lr.Dense(1)(seq)])
    rng = np.random.default_rng(3)
    xv = rng.normal(size=(5, 4, 3)).astype("float32")
    mv = (rng.random((5, 4, 3)) > 0.4).astype("float32")
    mv[..., 0] = 1.0  # no row masked whole
    sv = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 1]], "float32")
    p_soft, p_seq = model.predict([xv, mv, sv])
    z = np.where(mv > 0.5, xv, -np.inf)
    np.testing.assert_allclose(p_soft, np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(
        -1, keepdims=True), rtol=1e-5, atol=1e-6)
    # a masked step keeps the previous state (Keras): a sample's outputs repeat at its masked steps
    np.testing.assert_allclose(p_seq[0, 3], p_seq[0, 2], rtol=1e-6)
    assert np.abs(p_seq[3, 3] - p_seq[3, 2]).max() > 1e-4
    model.compile(SGD(0.1), ["mse", "mse"], target="numpy")
    path = model.save(tmp_path / "kw.keras")
    back = nn.models.load_model(path)
    for a, b in zip(back.predict([xv, mv, sv]), (p_soft, p_seq)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for name, v in (("x", xv), ("m", mv), ("s", sv)):
        np.save(tmp_path / f"{name}.npy", v)
    got = keras_run("""
k = keras.models.load_model("kw.keras", compile=False)
a, b = k.predict([np.load("x.npy"), np.load("m.npy"), np.load("s.npy")], verbose=0)
np.save("k_soft.npy", np.asarray(a)); np.save("k_seq.npy", np.asarray(b))
result = 1
""", tmp_path)
    assert got == 1
    np.testing.assert_allclose(np.load(tmp_path / "k_soft.npy"), p_soft, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "k_seq.npy"), p_seq, rtol=1e-5, atol=1e-6)


# ---- an output's mask in the loss ------------------------------------------------------------------------------
@needs_keras
def test_an_outputs_mask_weighs_the_loss_as_in_keras(tmp_path, keras_run):
    rng = np.random.default_rng(5)
    ids = rng.integers(1, 9, (6, 5))
    for i, n in enumerate([5, 3, 1, 4, 2, 5]):
        ids[i, n:] = 0  # padding: masked steps
    labels = rng.integers(0, 3, (6, 5))
    dense_y = rng.normal(size=(6, 5, 3)).astype("float32")
    got = {}
    for loss, y in (("sparse_categorical_crossentropy", labels), ("mse", dense_y)):
        inp = nn.Input((5,), dtype="int64")
        h = Lr.LSTM(4, return_sequences=True)(Lr.Embedding(9, 3, mask_zero=True)(inp))
        model = nn.Model(inp, Lr.Dense(3, activation="softmax" if loss != "mse" else None)(h))
        model.compile(SGD(0.1), loss, target="numpy")
        got[loss] = model.evaluate(ids, y, batch_size=4, verbose=0)
        p = model.predict(ids)
        # the loss of each step, averaged over the unmasked steps of each batch, batches by size
        if loss == "mse":
            steps = ((p - y) ** 2).mean(-1)
        else:
            steps = -np.log(np.take_along_axis(p, labels[..., None], -1)[..., 0])
        keep = ids != 0
        want = sum((steps[a:b] * keep[a:b]).sum() / keep[a:b].sum() * (b - a) for a, b in ((0, 4), (4, 6))) / 6
        np.testing.assert_allclose(got[loss], want, rtol=1e-5)
        assert abs(got[loss] - steps.mean()) > 1e-4  # the unmasked mean differs (10x the tolerance)
        model.save(tmp_path / f"{loss}.keras")
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "labels.npy", labels)
    np.save(tmp_path / "dense_y.npy", dense_y)
    keras_loss = keras_run("""
result = {}
for loss, y in (("sparse_categorical_crossentropy", "labels"), ("mse", "dense_y")):
    k = keras.models.load_model(loss + ".keras")
    result[loss] = float(k.evaluate(np.load("ids.npy"), np.load(y + ".npy"), batch_size=4, verbose=0))
""", tmp_path)
    for loss in got:
        np.testing.assert_allclose(got[loss], keras_loss[loss], rtol=1e-5)


# ---- metric options in .keras files --------------------------------------------------------------------------
@needs_keras
def test_metric_options_survive_keras_files_both_ways(tmp_path, keras_run):
    from graphc.nn import metrics as M
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 4)).astype("float32")
    y = (x[:, :1] + 0.5 * rng.normal(size=(40, 1)) > 0).astype("float32")
    model = nn.Sequential([Lr.Dense(1, activation="sigmoid", input_shape=(4,))])
    metrics = [M.AUC(num_thresholds=20, curve="PR", summation_method="majoring", name="pr"),
               M.Precision(thresholds=0.3), M.BinaryAccuracy(threshold=0.7), M.F1Score(threshold=0.6)]
    model.compile(SGD(0.1), "binary_crossentropy", metrics=metrics, target="numpy")
    want = model.evaluate(x, y, batch_size=40, verbose=0, return_dict=True)
    path = model.save(tmp_path / "met.keras")
    saved = json.loads(zipfile.ZipFile(path).read("config.json"))["compile_config"]["metrics"]
    assert saved[0]["class_name"] == "AUC" and saved[0]["config"]["num_thresholds"] == 20
    back = nn.models.load_model(path, target="numpy")
    got = back.evaluate(x, y, batch_size=40, verbose=0, return_dict=True)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6)
    # the options change the values: the default metrics give other numbers
    plain = nn.models.load_model(path, target="numpy", compile=False)
    plain.compile(SGD(0.1), "binary_crossentropy", metrics=[M.AUC(), M.Precision(), M.BinaryAccuracy()],
                  target="numpy")
    dflt = plain.evaluate(x, y, batch_size=40, verbose=0, return_dict=True)
    assert abs(dflt["auc"] - want["pr"]) > 1e-3 and abs(dflt["binary_accuracy"] - want["binary_accuracy"]) > 1e-3
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    keras_logs = keras_run("""
k = keras.models.load_model("met.keras")
result = k.evaluate(np.load("x.npy"), np.load("y.npy"), batch_size=40, verbose=0, return_dict=True)
result = {n: np.asarray(v, "float64").tolist() for n, v in result.items()}
""", tmp_path)
    assert set(keras_logs) == set(want), keras_logs
    for k in want:
        np.testing.assert_allclose(keras_logs[k], want[k], rtol=1e-5, atol=1e-6)


# ---- Lambda in .keras files ------------------------------------------------------------------------------------
def _scaled(scale, shift):
    return lambda t: t * scale + shift  # a closure: Keras saves its captured values


def _double(t):
    return t * 2.0


@needs_keras
def test_lambda_layers_save_as_keras_does_and_load_only_outside_safe_mode(tmp_path, keras_run):
    from graphc.nn import KerasFormatError
    inp = nn.Input((3,))
    h = Lr.Lambda(_scaled(2.0, 0.5), name="affine")(inp)
    h = Lr.Lambda(_double, name="double")(h)
    model = nn.Model(inp, Lr.Dense(2)(h))
    model.compile(SGD(0.1), "mse", target="numpy")
    x = RNG.normal(size=(4, 3)).astype("float32")
    want = model.predict(x)
    path = model.save(tmp_path / "lam.keras")
    entries = {e["config"]["name"]: e["config"] for e in
               json.loads(zipfile.ZipFile(path).read("config.json"))["config"]["layers"]}
    assert entries["affine"]["function"]["class_name"] == "__lambda__"
    assert entries["affine"]["function"]["config"]["closure"] == [2.0, 0.5]
    assert entries["double"]["function"]["config"] == "_double"
    with pytest.raises(KerasFormatError, match=r"Lambda 'affine'.*safe_mode=False"):
        nn.models.load_model(path, custom_objects={"_double": _double})
    with pytest.raises(KerasFormatError, match=r"_double.*custom_objects"):
        nn.models.load_model(path, safe_mode=False)
    back = nn.models.load_model(path, safe_mode=False, custom_objects={"_double": _double}, target="numpy")
    np.testing.assert_allclose(back.predict(x), want, rtol=1e-6)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", want)
    got = keras_run("""
result = []
try:
    keras.models.load_model("lam.keras", custom_objects={"_double": lambda t: t * 2.0})
except ValueError as e:
    result.append("safe_mode=False" in str(e))
k = keras.models.load_model("lam.keras", custom_objects={"_double": lambda t: t * 2.0}, safe_mode=False)
result.append(float(np.abs(k.predict(np.load("x.npy"), verbose=0) - np.load("want.npy")).max()))
""", tmp_path)
    assert got[0] is True and got[1] < 1e-5, got
    # a lambda capturing what JSON cannot hold is refused when saving, naming the layer
    layer = object()
    bad = nn.Model(inp2 := nn.Input((3,)), Lr.Lambda(lambda t: t if layer else t, name="holds")(inp2))
    bad.compile(SGD(0.1), "mse", target="numpy")
    with pytest.raises(TypeError, match=r"Lambda 'holds'.*get_config"):
        bad.save(tmp_path / "bad.keras")
    assert not (tmp_path / "bad.keras").exists()
