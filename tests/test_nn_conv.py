"""graphc.nn's Conv2D, pooling and BatchNormalization layers.

Each trained model is checked against the same network written directly in the graphc DSL,
with the same initial weights and batches (same per-epoch losses, same final weights), and
each layer's forward values against the formula Keras documents. target="numpy" (the
interpreter): exact arithmetic the DSL reproduces, and no native compiles.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.nn import (AveragePooling2D, BatchNormalization, Concatenate, Conv2D, Dense, Flatten,
                       GlobalAveragePooling2D, GlobalMaxPooling2D, Input, MaxPooling2D, Model, Sequential)
from graphc.nn.losses import SparseCategoricalCrossentropy
from graphc.optim import SGD, Adam

T = "numpy"
rng = np.random.default_rng(0)


def _run_dsl(step, feeds, batch, epochs):
    """Per-epoch losses as fit reports them (shuffle=False): batch losses weighted by size."""
    out = []
    n = len(feeds["y"])
    for _ in range(epochs):
        tot = 0.0
        for lo in range(0, n, batch):
            fb = {k: v[lo:lo + batch] for k, v in feeds.items()}
            tot += float(step(**fb)["loss"]) * len(fb["y"])
        out.append(tot / n)
    return out


# ---- Conv2D and pooling ----------------------------------------------------------------------------------

def conv_model():
    """Every conv/pool layer and option once: same/valid padding, strides, dilation, a
    rectangular kernel, both global poolings, 'same' average pooling."""
    inp = Input((7, 7, 2), name="img")
    c1 = Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)                 # (7, 7, 4)
    p1 = MaxPooling2D(name="p1")(c1)                                                     # (3, 3, 4)
    c2 = Conv2D(5, (2, 3), padding="valid", activation="tanh", name="c2")(p1)            # (2, 1, 5)
    c3 = Conv2D(3, 3, dilation_rate=2, padding="same", use_bias=False, name="c3")(c1)    # (7, 7, 3)
    p3 = AveragePooling2D(pool_size=3, strides=2, padding="same", name="p3")(c3)         # (4, 4, 3)
    c4 = Conv2D(2, 3, strides=2, name="c4")(inp)                                         # (3, 3, 2)
    merged = Concatenate()([GlobalAveragePooling2D(name="gap")(c2), GlobalMaxPooling2D(name="gmp")(c2),
                            Flatten()(p3), Flatten()(MaxPooling2D(2, strides=1, name="p4")(c4))])
    return Model(inp, Dense(3, name="out")(merged))


def dsl_conv(w):
    x, y = gc.input("img", (None, 7, 7, 2)), gc.input("y", (None,), "int64")
    p = {k: gc.param(k, v.shape) for k, v in w.items()}
    c1 = gc.relu(gc.conv2d(x, p["c1/kernel"], padding="same") + p["c1/bias"])
    p1 = gc.max_pool2d(c1, 2)
    c2 = gc.tanh(gc.conv2d(p1, p["c2/kernel"]) + p["c2/bias"])
    c3 = gc.conv2d(c1, p["c3/kernel"], padding="same", dilation_rate=2)
    p3 = gc.avg_pool2d(c3, 3, strides=2, padding="same")
    c4 = gc.conv2d(x, p["c4/kernel"], strides=2) + p["c4/bias"]
    merged = gc.concatenate([gc.global_average_pool2d(c2), gc.global_max_pool2d(c2), gc.reshape(p3, (None, 48)),
                             gc.reshape(gc.max_pool2d(c4, 2, strides=1), (None, 8))], axis=1)
    logits = merged @ p["out/kernel"] + p["out/bias"]
    return gc.softmax_cross_entropy(logits, y)


def test_conv_and_pooling_model_matches_the_dsl():
    x = rng.normal(size=(20, 7, 7, 2)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    m = conv_model()
    shapes = {l.name: l.output_shape for l in m.layers}
    assert shapes["c1"] == (7, 7, 4) and shapes["p1"] == (3, 3, 4) and shapes["c2"] == (2, 1, 5)
    assert shapes["c3"] == (7, 7, 3) and shapes["p3"] == (4, 4, 3) and shapes["c4"] == (3, 3, 2)
    assert shapes["gap"] == (5,) and shapes["p4"] == (2, 2, 2)
    m.compile(optimizer=Adam(learning_rate=0.01), loss=SparseCategoricalCrossentropy(from_logits=True), target=T,
              seed=1)
    w0 = dict(zip(m._weight_names(), m.get_weights()))
    assert w0["c1/kernel"].shape == (3, 3, 2, 4) and w0["c2/kernel"].shape == (2, 3, 4, 5)  # HWIO, as Keras
    assert "c3/bias" not in w0 and not w0["c1/bias"].any()
    h = m.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    step = gc.compile(dsl_conv(w0), optimizer=Adam(learning_rate=0.01), target=T, params=w0)
    ref = _run_dsl(step, {"img": x, "y": y}, 8, 3)
    np.testing.assert_allclose(h.history["loss"], ref, rtol=1e-5)
    for k, v in zip(m._weight_names(), m.get_weights()):
        np.testing.assert_allclose(v, step.params[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_conv2d_glorot_fans_and_keras_defaults():
    """glorot_uniform on an HWIO kernel: limit sqrt(6 / (fan_in + fan_out)) with fan_in =
    kh*kw*in_channels and fan_out = kh*kw*filters (Keras' compute_fans)."""
    layer = Conv2D(8, 3)
    assert (layer.strides, layer.padding, layer.dilation_rate, layer.use_bias) == ((1, 1), "valid", (1, 1), True)
    m = Sequential([Input((5, 5, 4)), layer, MaxPooling2D(), GlobalAveragePooling2D()])
    m.compile(loss="mse", target=T)
    k, b = layer.get_weights()
    assert [l.name for l in m.layers] == ["conv2d", "max_pooling2d", "global_average_pooling2d"]  # Keras' names (Sequential.layers omits the InputLayer, as in Keras)
    limit = np.sqrt(6.0 / (9 * 4 + 9 * 8))
    assert np.abs(k).max() <= limit and np.abs(k).max() > 0.8 * limit and not b.any()
    assert MaxPooling2D().pool_size == (2, 2) and MaxPooling2D(3).strides == (3, 3)
    assert GlobalMaxPooling2D(keepdims=True).compute_output_shape((4, 4, 6)) == (1, 1, 6)


def test_conv_forward_matches_a_numpy_convolution():
    """y[n, i, j, o] = act(sum_{a,b,c} x[n, i*s + a*d, j*s + b*d, c] * K[a, b, c, o] + bias[o])
    (cross-correlation, valid padding)."""
    x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
    m = Sequential([Input((6, 5, 3)), Conv2D(4, (3, 2), strides=(2, 1), activation="relu")])
    m.compile(loss="mse", target=T)
    K, bias = m.get_weights()
    bias = rng.normal(size=4).astype(np.float32)
    m.set_weights([K, bias])
    oh, ow = (6 - 3) // 2 + 1, (5 - 2) // 1 + 1
    want = np.zeros((2, oh, ow, 4), np.float32)
    for i in range(oh):
        for j in range(ow):
            want[:, i, j] = np.einsum("nabc,abco->no", x[:, 2 * i:2 * i + 3, j:j + 2], K)
    np.testing.assert_allclose(m.predict(x), np.maximum(want + bias, 0), rtol=1e-5, atol=1e-5)


def test_conv_and_pooling_errors():
    with pytest.raises(ValueError, match=r"expected ndim=4, found ndim=3. Full shape received: \(None, 8, 8\)"):
        Conv2D(4, 3)(Input((8, 8)))
    with pytest.raises(ValueError, match="expected ndim=4, found ndim=5"):
        MaxPooling2D()(Input((4, 4, 4, 1)))
    with pytest.raises(ValueError, match="expected ndim=4"):
        GlobalAveragePooling2D()(Input((4, 3)))
    with pytest.raises(ValueError, match="channels_first.*not supported.*NHWC"):
        Conv2D(4, 3, data_format="channels_first")
    with pytest.raises(ValueError, match="channels_first"):
        MaxPooling2D(data_format="channels_first")
    with pytest.raises(ValueError, match=r"Conv2D 'c'.*output size would be negative or zero.*\(None, 2, 2, 1\)"):
        Conv2D(4, 3, name="c")(Input((2, 2, 1)))
    with pytest.raises(ValueError, match="pool_size"):
        MaxPooling2D(5)(Input((4, 4, 1)))
    with pytest.raises(ValueError, match="strides > 1 not supported in conjunction with dilation_rate > 1"):
        Conv2D(4, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="padding must be 'valid' or 'same'"):
        Conv2D(4, 3, padding="causal")
    with pytest.raises(ValueError, match=r"kernel_size.*\(3, 0\)"):
        Conv2D(4, (3, 0))
    with pytest.raises(ValueError, match="filters must be a positive int"):
        Conv2D(0, 3)
    with pytest.raises(NotImplementedError, match="groups"):
        Conv2D(4, 3, groups=2)
    m = Sequential([Conv2D(2, 3, input_shape=(5, 5, 1))])  # a 3-D sample array is caught before any step
    m.compile(optimizer="sgd", loss="mse", target=T)
    with pytest.raises(ValueError, match=r"samples of shape \(5, 5, 1\)"):
        m.fit(np.zeros((4, 5, 5), np.float32), np.zeros((4, 3, 3, 2), np.float32), verbose=0)


# ---- BatchNormalization ------------------------------------------------------------------------------------

def bn_model(momentum=0.9, epsilon=1e-3):
    inp = Input((4, 4, 2), name="img")
    h = Conv2D(3, 2, padding="same", name="conv")(inp)
    h = BatchNormalization(momentum=momentum, epsilon=epsilon, name="bn")(h)
    h = GlobalAveragePooling2D()(h)
    return Model(inp, Dense(2, name="out")(h))


def dsl_bn(w, momentum, eps, prefix=""):
    """The DSL model: batch moments in training, moving statistics written by the same step
    (``moving = moving * momentum + batch_stat * (1 - momentum)``), inference on the moving
    statistics."""
    x, y = gc.input("img", (None, 4, 4, 2)), gc.input("y", (None,), "int64")
    p = {k: gc.param(prefix + k, v.shape) for k, v in w.items() if "moving" not in k}
    mm = gc.state(prefix + "bn/moving_mean", (3,), init="zeros")
    mv = gc.state(prefix + "bn/moving_variance", (3,), init="ones")
    c = gc.conv2d(x, p["conv/kernel"], padding="same") + p["conv/bias"]
    mu, var = gc.moments(c, (0, 1, 2))
    h = gc.batch_normalization(c, mu, var, offset=p["bn/beta"], scale=p["bn/gamma"], epsilon=eps)
    loss = gc.softmax_cross_entropy(gc.global_average_pool2d(h) @ p["out/kernel"] + p["out/bias"], y)
    ups = {mm: mm * momentum + mu * (1 - momentum), mv: mv * momentum + var * (1 - momentum)}
    return loss, ups


def test_batch_normalization_trains_like_the_dsl_with_keras_moving_averages():
    x = (rng.normal(size=(24, 4, 4, 2)) * 2 + 1).astype(np.float32)
    y = rng.integers(0, 2, 24)
    m = bn_model(momentum=0.9)
    m.compile(optimizer=SGD(learning_rate=0.1), loss=SparseCategoricalCrossentropy(from_logits=True), target=T)
    bn = m.get_layer("bn")
    assert [w.name for w in bn.weights] == ["bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"]
    assert [w.name for w in bn.non_trainable_weights] == ["bn/moving_mean", "bn/moving_variance"]
    assert [w.name for w in m.trainable_weights] == ["conv/kernel", "conv/bias", "bn/gamma", "bn/beta",
                                                     "out/kernel", "out/bias"]
    g, b, mm, mv = bn.get_weights()
    assert (g == 1).all() and (b == 0).all() and (mm == 0).all() and (mv == 1).all()  # Keras' initializers
    w0 = dict(zip(m._weight_names(), m.get_weights()))
    h = m.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)

    loss, ups = dsl_bn(w0, 0.9, 1e-3)
    step = gc.compile(loss, optimizer=SGD(learning_rate=0.1), target=T, params=w0, updates=ups)
    ref = _run_dsl(step, {"img": x, "y": y}, 8, 2)
    np.testing.assert_allclose(h.history["loss"], ref, rtol=1e-5)
    got = dict(zip(m._weight_names(), m.get_weights()))
    want = {**step.params, **step.state_dict()["state"]}
    for k, v in got.items():
        np.testing.assert_allclose(v, want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert not np.allclose(got["bn/moving_mean"], 0)  # the moving statistics moved


def test_batch_normalization_formulas_in_training_and_inference():
    """Keras 3: in training, each step sets moving = moving * momentum + stat * (1 - momentum)
    with the batch mean and POPULATION variance over every axis but ``axis``; predict and
    evaluate (Keras' test_step calls the model with training=False) normalize with
    gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta and update nothing."""
    m = Sequential([Input((3, 5)), BatchNormalization(axis=1, momentum=0.8, epsilon=0.01), Flatten(), Dense(1)])
    m.compile(optimizer=SGD(learning_rate=0.0), loss="mse", target=T)  # lr 0: only the moving statistics change
    mm, mv = np.zeros(3), np.ones(3)
    batches = [(rng.normal(size=(6, 3, 5)) * [[1], [2], [3]] + [[0], [1], [-2]]).astype(np.float32)
               for _ in range(3)]
    for xb in batches:
        m.train_on_batch(xb, np.zeros((6, 1), np.float32))
        mm = mm * 0.8 + xb.mean(axis=(0, 2)) * (1 - 0.8)
        mv = mv * 0.8 + xb.var(axis=(0, 2)) * (1 - 0.8)
    g, b, got_mm, got_mv, W, c = m.get_weights()
    np.testing.assert_allclose(got_mm, mm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_mv, mv, rtol=1e-5)
    g, b = rng.normal(size=3).astype(np.float32), rng.normal(size=3).astype(np.float32)
    m.set_weights([g, b, got_mm, got_mv, W, c])
    x = rng.normal(size=(4, 3, 5)).astype(np.float32)
    norm = g[:, None] * (x - mm[:, None]) / np.sqrt(mv[:, None] + 0.01) + b[:, None]
    pred = norm.reshape(4, 15) @ W + c
    np.testing.assert_allclose(m.predict(x), pred, rtol=1e-4, atol=1e-5)
    yv = rng.normal(size=(4, 1)).astype(np.float32)
    assert m.evaluate(x, yv, verbose=0) == pytest.approx(float(np.mean((pred - yv) ** 2)), rel=1e-4)
    np.testing.assert_allclose(m.get_weights()[2], got_mm)  # evaluate/predict leave the statistics alone
    # training mode normalizes with the batch's own statistics: the train loss differs from evaluate's
    tb = x.mean(axis=(0, 2))[:, None]
    norm_t = g[:, None] * (x - tb) / np.sqrt(x.var(axis=(0, 2))[:, None] + 0.01) + b[:, None]
    assert m.train_on_batch(x, yv) == pytest.approx(float(np.mean((norm_t.reshape(4, 15) @ W + c - yv) ** 2)),
                                                    rel=1e-4)


def test_batch_normalization_called_twice_chains_its_updates():
    """A shared BN layer updates its statistics once per call, the second from the first's
    result (Keras' second assign reads the first): mm = (mm*m + mu1*(1-m))*m + mu2*(1-m)."""
    a, b = Input((4,), name="a"), Input((4,), name="b")
    bn = BatchNormalization(momentum=0.5, name="bn")
    m = Model([a, b], Dense(1)(Concatenate()([bn(a), bn(b)])))
    m.compile(optimizer=SGD(learning_rate=0.0), loss="mse", target=T)
    xa, xb = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32) + 3
    m.train_on_batch([xa, xb], np.zeros((5, 1), np.float32))
    want_mm = (0 * 0.5 + xa.mean(0) * 0.5) * 0.5 + xb.mean(0) * 0.5
    want_mv = (1 * 0.5 + xa.var(0) * 0.5) * 0.5 + xb.var(0) * 0.5
    _, _, mm, mv = bn.get_weights()
    np.testing.assert_allclose(mm, want_mm, rtol=1e-5)
    np.testing.assert_allclose(mv, want_mv, rtol=1e-5)


def test_batch_normalization_state_in_summary_and_checkpoints(tmp_path):
    x = rng.normal(size=(16, 4, 4, 2)).astype(np.float32)
    y = rng.integers(0, 2, 16)
    m = bn_model()
    m.compile(optimizer="adam", loss=SparseCategoricalCrossentropy(from_logits=True), target=T)
    lines = []
    m.summary(print_fn=lines.append)
    text = "\n".join(lines)
    # conv 2*2*2*3+3 = 27, bn 4*3 = 12 (6 trainable), dense 3*2+2 = 8
    assert "bn (BatchNormalization)" in text and "Total params: 47" in text
    assert "Trainable params: 41" in text and "Non-trainable params: 6" in text
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    p1 = m.save_weights(tmp_path / "w")
    p2 = m.save_weights(tmp_path / "full", include_optimizer=True)
    for path in (p1, p2):
        other = bn_model()
        other.compile(optimizer="adam", loss=SparseCategoricalCrossentropy(from_logits=True), target=T)
        other.load_weights(path)
        for u, v in zip(other.get_weights(), m.get_weights()):
            np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(other.predict(x), m.predict(x))  # inference uses the moving statistics
    with pytest.raises(ValueError, match=r"set_weights: weight 'bn/moving_mean' has shape \(3,\)"):
        m.get_layer("bn").set_weights([np.ones(3), np.zeros(3), np.zeros(4), np.ones(3)])
    with pytest.raises(gc.StateError, match="moving_variance"):
        m.get_layer("bn").set_weights([np.ones(3), np.zeros(3), np.zeros(3), np.full(3, np.nan)])


def test_batch_normalization_on_the_native_target():
    """The moving-statistics update runs inside the compiled native step: cpu == numpy."""
    x = rng.normal(size=(16, 4, 4, 2)).astype(np.float32)
    y = rng.integers(0, 2, 16)
    res = []
    for target in ("cpu", "numpy"):
        m = bn_model()
        m.compile(optimizer=SGD(learning_rate=0.05), loss=SparseCategoricalCrossentropy(from_logits=True),
                  target=target, seed=2)
        h = m.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        res.append((h.history["loss"], m.get_weights(), m.predict(x)))
    np.testing.assert_allclose(res[0][0], res[1][0], rtol=1e-5)
    for u, v in zip(res[0][1] + [res[0][2]], res[1][1] + [res[1][2]]):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


def test_batch_normalization_errors():
    with pytest.raises(ValueError, match="momentum"):
        BatchNormalization(momentum=1.5)
    with pytest.raises(ValueError, match="epsilon"):
        BatchNormalization(epsilon=-1)
    with pytest.raises(ValueError, match="axis must be an int"):
        BatchNormalization(axis=(1, 2))
    with pytest.raises(ValueError, match="batch axis 0 cannot be the channels axis"):
        BatchNormalization(axis=0)(Input((3,)))
    with pytest.raises(ValueError, match="axis=3 is out of range"):
        BatchNormalization(axis=3)(Input((3, 4)))
    with pytest.raises(ValueError, match="min_ndim=2, found ndim=1"):
        BatchNormalization()(Input(()))
