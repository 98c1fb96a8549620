"""The everyday Keras layers (activations, 2-D reshaping, transposed/depthwise/separable
convolutions, Rescaling, Normalization) against real Keras 3 (numpy backend) on the same
configs, weights and inputs; their gradients against float64 finite differences and a
compiled cpu step against the numpy target; a model of several of them through .keras files.

Keras runs in the session's worker subprocess (conftest.py's ``keras_run``), built from graphc's
``get_config``, so the configs are checked to mean the same too."""
import importlib.util
import json

import numpy as np
import pytest

import graphc as gc
import graphc.nn as nn
from graphc.gradcheck import check_grads
from graphc.interpret import evaluate
from graphc.nn import layers as Lr

pytestmark = pytest.mark.skipif(importlib.util.find_spec("h5py") is None or importlib.util.find_spec("keras") is None,
                                reason="needs h5py and keras (pip install -e '.[test]')")

RNG = np.random.default_rng(7)


def _cases():
    """(graphc layer, per-sample input shape)."""
    return [
        (Lr.LeakyReLU(), (5,)), (Lr.LeakyReLU(negative_slope=0.05), (2, 3)),
        (Lr.PReLU(shared_axes=[1, 2]), (3, 4, 2)), (Lr.PReLU(), (6,)),
        (Lr.ELU(alpha=0.7), (5,)), (Lr.ReLU(), (5,)), (Lr.ReLU(max_value=6.0), (6,)),
        (Lr.ReLU(negative_slope=0.2), (5,)), (Lr.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.3), (8,)),
        (Lr.ReLU(threshold=0.4), (7,)),
        (Lr.Softmax(), (3, 4)), (Lr.Softmax(axis=1), (3, 4)), (Lr.Softmax(axis=[1, 2]), (3, 4)),
        (Lr.ZeroPadding2D(((1, 2), (0, 3))), (3, 4, 2)), (Lr.ZeroPadding2D(1), (2, 2, 1)),
        (Lr.Cropping2D(((1, 0), (2, 1))), (4, 5, 2)), (Lr.Cropping2D(1), (4, 4, 1)),
        (Lr.UpSampling2D((2, 3)), (2, 3, 2)), (Lr.UpSampling2D(2, interpolation="bilinear"), (3, 4, 2)),
        (Lr.UpSampling2D((3, 2), interpolation="bilinear"), (2, 1, 1)),
        (Lr.Conv2DTranspose(3, 3, strides=2, padding="same"), (3, 3, 2)),
        (Lr.Conv2DTranspose(2, (3, 2), strides=(2, 1)), (3, 4, 2)),
        (Lr.Conv2DTranspose(2, 3, strides=2, padding="same", output_padding=0), (3, 3, 2)),
        (Lr.Conv2DTranspose(2, 4, strides=3, output_padding=(1, 2), activation="tanh"), (2, 3, 1)),
        (Lr.Conv2DTranspose(2, 3, padding="same", dilation_rate=2, use_bias=False), (4, 4, 2)),
        (Lr.Conv2DTranspose(2, 1, strides=2, padding="same"), (3, 3, 2)),
        (Lr.DepthwiseConv2D(3, depth_multiplier=2, padding="same", strides=2), (5, 5, 2)),
        (Lr.DepthwiseConv2D((2, 3), dilation_rate=2, activation="relu"), (6, 7, 3)),
        (Lr.SeparableConv2D(4, 3, depth_multiplier=2, padding="same", activation="relu"), (5, 5, 2)),
        (Lr.SeparableConv2D(2, (2, 2), strides=2, use_bias=False), (5, 4, 3)),
        (Lr.Rescaling(1 / 255.0, offset=-1.0), (3, 2)), (Lr.Rescaling([0.5, 2.0], offset=[1.0, 0.0]), (2, 2)),
        (Lr.Normalization(mean=[1.0, 2.0], variance=[4.0, 0.0]), (3, 2)),
        (Lr.Normalization(axis=None, mean=0.5, variance=2.0), (3,)),
        (Lr.Normalization(axis=(1, -1), mean=[[1, 2], [3, 4], [5, 6]], variance=[[1, 2], [3, 4], [5, 6]],
                          invert=True), (3, 2)),
    ]


def test_each_layer_predicts_as_keras_built_from_its_config(tmp_path, keras_run):
    cases, expect = [], []
    for i, (layer, shape) in enumerate(_cases()):
        m = nn.Sequential([nn.Input(shape), layer])
        m.compile("sgd", "mse", target="numpy")
        ws = [RNG.normal(size=w.shape).astype("float32") for w in m.weights]
        if ws:
            m.set_weights(ws)
        x = (RNG.normal(size=(3,) + shape) * 2).astype("float32")
        np.save(tmp_path / f"x{i}.npy", x)
        for j, w in enumerate(ws):
            np.save(tmp_path / f"w{i}_{j}.npy", w)
        cases.append({"cls": type(layer).__name__, "config": layer.get_config(), "nw": len(ws)})
        expect.append(m.predict(x, verbose=0))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    got = keras_run("""
import json
result = []
for i, c in enumerate(json.load(open("cases.json"))):
    if c["cls"] == "Softmax" and isinstance(c["config"]["axis"], list):
        c["config"]["axis"] = tuple(c["config"]["axis"])  # Keras 3.15's softmax fails on a list of axes
    layer = getattr(L, c["cls"]).from_config(c["config"])
    x = np.load(f"x{i}.npy")
    layer(x)
    if c["nw"]:
        layer.set_weights([np.load(f"w{i}_{j}.npy") for j in range(c["nw"])])
    np.save(f"y{i}.npy", np.asarray(layer(x)))
    result.append(sorted(layer.get_config()))
""", tmp_path)
    for i, (c, y) in enumerate(zip(cases, expect)):
        what = f"{c['cls']} {c['config']}"
        assert sorted(c["config"]) == got[i], what  # the same arguments, by Keras' names
        np.testing.assert_allclose(y, np.load(tmp_path / f"y{i}.npy"), rtol=1e-5, atol=1e-5, err_msg=what)


def test_normalization_adapt_and_softmax_mask_as_keras(tmp_path, keras_run):
    data = (RNG.normal(size=(40, 3, 2)) * [[3.0, 0.5]] + 2).astype("float32")
    x = RNG.normal(size=(4, 3, 2)).astype("float32")
    outs = {}
    for name, axis, batches in [("last", -1, data), ("pair", (1, 2), data), ("iter", -1, [data[:25], data[25:]])]:
        layer = Lr.Normalization(axis=axis)
        layer.adapt(batches)
        m = nn.Sequential([nn.Input((3, 2)), layer])
        m.compile("sgd", "mse", target="numpy")
        outs[name] = (m.predict(x, verbose=0), [w.name.split("/")[-1] for w in m.weights])
    # adapt on a layer already in a model sets that model's weights
    layer = Lr.Normalization()
    m = nn.Sequential([nn.Input((3, 2)), layer])
    m.compile("sgd", "mse", target="numpy")
    before = m.predict(x, verbose=0)
    layer.adapt(data)
    np.testing.assert_array_equal(before, x)  # mean 0, variance 1 before
    np.testing.assert_allclose(m.predict(x, verbose=0), outs["last"][0], rtol=1e-6)
    # Softmax with a mask, applied to graphc tensors
    logits, mask = RNG.normal(size=(2, 3, 4)).astype("float32"), RNG.random((2, 3, 4)) > 0.4
    gx, gm = gc.input("x", (None, 3, 4)), gc.input("m", (None, 3, 4), dtype="bool")
    sm = evaluate([Lr.Softmax()(gx, mask=gm)], {"x": logits, "m": mask}, {})[0]
    for k, v in {"data": data, "x": x, "logits": logits, "mask": mask}.items():
        np.save(tmp_path / f"{k}.npy", v)
    got = keras_run("""
data, x = np.load("data.npy"), np.load("x.npy")
result = {}
for name, axis, batches in [("last", -1, data), ("pair", (1, 2), data), ("iter", -1, data)]:
    n = L.Normalization(axis=axis)  # (Keras adapts on a list of batches only through TensorFlow)
    n.adapt(batches)
    np.save(name + ".npy", np.asarray(n(x)))
    result[name] = [v.path.split("/")[-1] for v in n.weights]
np.save("sm.npy", np.asarray(L.Softmax()(np.load("logits.npy"), mask=np.load("mask.npy"))))
""", tmp_path)
    for name, (y, names) in outs.items():
        np.testing.assert_allclose(y, np.load(tmp_path / f"{name}.npy"), rtol=1e-5, atol=1e-5, err_msg=name)
        assert names == got[name] == ["mean", "variance", "count"]
    np.testing.assert_allclose(sm, np.load(tmp_path / "sm.npy"), rtol=1e-6, atol=1e-7)
    assert (sm[~mask] == 0).all()


@pytest.mark.parametrize("layer,shape", [
    (lambda: Lr.Conv2DTranspose(2, 3, strides=2, padding="same"), (3, 3, 2)),
    (lambda: Lr.Conv2DTranspose(2, (3, 2), strides=(3, 2), output_padding=(2, 1)), (2, 2, 1)),
    (lambda: Lr.Conv2DTranspose(1, 2, strides=2, padding="same", output_padding=1), (2, 3, 1)),
    (lambda: Lr.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same"), (5, 4, 2)),
    (lambda: Lr.SeparableConv2D(2, 2, depth_multiplier=2, dilation_rate=2), (5, 5, 2)),
    (lambda: Lr.UpSampling2D((2, 3), interpolation="bilinear"), (2, 3, 2)),
    (lambda: Lr.PReLU(shared_axes=2), (3, 2, 2)),
    (lambda: Lr.ReLU(max_value=1.0, negative_slope=0.2, threshold=0.3), (7,)),
    (lambda: Lr.Cropping2D(((1, 0), (0, 2))), (3, 4, 1)),
])
def test_gradients_against_finite_differences(layer, shape):
    lay = layer()
    x = gc.input("x", (2,) + shape)
    y = lay(x)
    r = RNG.normal(size=(2,) + tuple(y.shape[1:]))
    loss = gc.sum(y * gc.const(r.astype("float32")))
    xv = RNG.normal(size=(2,) + shape) + 0.05  # away from the kinks
    params = {w.name: RNG.normal(size=w.shape) for w in lay.weights}
    check_grads(loss, [x] + list(lay.weights), {"x": xv}, params, rtol=1e-6)


def _model(data):
    inp = nn.Input((4, 4, 2))
    norm = Lr.Normalization()
    norm.adapt(data)
    h = Lr.Rescaling(0.5, offset=0.1)(norm(inp))
    h = Lr.Conv2DTranspose(3, 3, strides=2, padding="same", activation="relu")(h)  # 8x8
    h = Lr.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(h)
    h = Lr.PReLU(alpha_initializer="ones", shared_axes=[1, 2])(h)
    h = Lr.SeparableConv2D(4, 3, strides=2)(Lr.ZeroPadding2D(1)(h))  # 4x4
    h = Lr.UpSampling2D(2, interpolation="bilinear")(Lr.Cropping2D(((1, 1), (0, 2)))(h))
    h = Lr.LeakyReLU()(Lr.ELU(0.5)(h))
    o = Lr.Softmax()(Lr.Dense(3)(Lr.ReLU(max_value=3.0)(Lr.GlobalAveragePooling2D()(h))))
    return nn.Model(inp, o)


def test_a_compiled_step_trains_as_the_numpy_target_and_the_model_round_trips_through_keras(tmp_path, keras_run):
    x = RNG.normal(size=(8, 4, 4, 2)).astype("float32")
    y = np.eye(3, dtype="float32")[RNG.integers(0, 3, 8)]
    ms = {}
    for target in ("cpu", "numpy"):
        m = _model(x * 3 + 1)
        m.compile(nn.optimizers.Adam(0.01), "categorical_crossentropy", target=target, seed=3)
        ms[target] = m
    w0 = ms["cpu"].get_weights()
    ms["numpy"].set_weights(w0)
    for m in ms.values():
        m.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    for a, b, w in zip(ms["cpu"].get_weights(), ms["numpy"].get_weights(), ms["cpu"].weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=w.name)
    m = ms["cpu"]
    moved = {w.name for w, a, b in zip(m.weights, m.get_weights(), w0) if not np.allclose(a, b)}
    assert moved == {w.name for w in m.trainable_weights}  # every weight had a gradient, the statistics none
    p = m.predict(x, verbose=0)
    m.save(tmp_path / "m.keras")
    back = nn.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(back.predict(x, verbose=0), p, rtol=1e-6, atol=1e-7)
    assert [type(l).__name__ for l in back.layers] == [type(l).__name__ for l in m.layers]
    np.save(tmp_path / "x.npy", x)
    got = keras_run("""
k = keras.models.load_model("m.keras")
np.save("p.npy", k.predict(np.load("x.npy"), verbose=0))
k.save("k.keras")
result = [type(l).__name__ for l in k.layers]
""", tmp_path)
    assert got == [type(l).__name__ for l in m.layers]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), p, rtol=1e-5, atol=1e-6)
    # the file Keras wrote loads in graphc and predicts the same
    again = nn.load_model(tmp_path / "k.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), p, rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="negative_slope"):
        Lr.LeakyReLU(-0.1)
    with pytest.raises(ValueError, match="max_value"):
        Lr.ReLU(max_value=-1)
    with pytest.raises(NotImplementedError, match="interpolation='bicubic'"):
        Lr.UpSampling2D(interpolation="bicubic")
    with pytest.raises(ValueError, match="output padding"):
        Lr.Conv2DTranspose(2, 3, strides=2, output_padding=2)
    with pytest.raises(ValueError, match="cropping"):
        nn.Sequential([nn.Input((3, 3, 1)), Lr.Cropping2D(2)]).build()
    with pytest.raises(ValueError, match="padding"):
        Lr.ZeroPadding2D((1, 2, 3))
    with pytest.raises(ValueError, match="both `mean` and `variance`"):
        Lr.Normalization(mean=1.0)
    with pytest.raises(ValueError, match="batch"):
        nn.Sequential([nn.Input((3,)), Lr.Normalization(axis=0)]).build()
    with pytest.raises(ValueError, match="channels_first"):
        Lr.DepthwiseConv2D(3, data_format="channels_first")
    with pytest.raises(ValueError, match="given `mean` and `variance`"):
        Lr.Normalization(mean=0.0, variance=1.0).adapt(np.ones((4, 2)))
    norm = Lr.Normalization()
    norm(nn.Input((2,)))
    with pytest.raises(ValueError, match="not in a model yet"):
        norm.adapt(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"built for inputs of shape \(None, 2\)"):
        norm.adapt(np.ones((4, 3)))
