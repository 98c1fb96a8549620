"""graphc.nn's 1-D layers: Conv1D (valid, same, causal padding; strides; dilation),
MaxPooling1D, AveragePooling1D, GlobalAveragePooling1D, GlobalMaxPooling1D.

Oracles: the layers written as loops in NumPy with Keras' (TensorFlow's) padding rules, float64
finite differences (graphc.check_grads), the numpy target for a compiled training step, and
Keras 3 itself (KERAS_BACKEND=numpy) when installed.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.nn as gn

B, T, C = 2, 7, 3
rng = np.random.default_rng(1)
X = rng.standard_normal((B, T, C)).astype(np.float32)


def _same_pad(n, k, s, d):
    out = -(-n // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


def np_conv1d(x, kernel, bias, strides=1, padding="valid", dilation=1):
    k = kernel.shape[0]
    if padding == "causal":
        lo, hi = dilation * (k - 1), 0
    elif padding == "same":
        lo, hi = _same_pad(x.shape[1], k, strides, dilation)
    else:
        lo = hi = 0
    xp = np.pad(x.astype(np.float64), ((0, 0), (lo, hi), (0, 0)))
    n_out = (xp.shape[1] - dilation * (k - 1) - 1) // strides + 1
    out = np.zeros((x.shape[0], n_out, kernel.shape[2]))
    for t in range(n_out):
        for j in range(k):
            out[:, t] += xp[:, t * strides + j * dilation] @ kernel[j]
    return out + (0 if bias is None else bias)


def np_pool1d(x, size, strides, padding, kind):
    lo, hi = _same_pad(x.shape[1], size, strides, 1) if padding == "same" else (0, 0)
    n = x.shape[1]
    n_out = -(-n // strides) if padding == "same" else (n - size) // strides + 1
    out = []
    for t in range(n_out):
        a, b = max(t * strides - lo, 0), min(t * strides - lo + size, n)  # the window inside the sequence
        w = x[:, a:b]
        out.append(w.max(1) if kind == "max" else w.mean(1))
    return np.stack(out, 1)


def _model(layer, target="numpy"):
    inp = gn.Input((T, C))
    m = gn.Model(inp, layer(inp))
    m.compile(loss="mse", optimizer="sgd", target=target)
    w = [rng.standard_normal(a.shape).astype(np.float32) for a in layer.get_weights()]
    if w:
        layer.set_weights(w)
    return m, w


CONV = [dict(kernel_size=3), dict(kernel_size=3, padding="same"), dict(kernel_size=2, padding="causal"),
        dict(kernel_size=3, strides=2), dict(kernel_size=2, strides=3, padding="same"),
        dict(kernel_size=2, dilation_rate=2, padding="causal"), dict(kernel_size=3, dilation_rate=2),
        dict(kernel_size=4, padding="same", use_bias=False)]


@pytest.mark.parametrize("opts", CONV, ids=[str(sorted(o.items())) for o in CONV])
def test_conv1d_forward(opts):
    layer = gn.Conv1D(4, **opts)
    m, w = _model(layer)
    want = np_conv1d(X, w[0], w[1] if len(w) > 1 else None, opts.get("strides", 1), opts.get("padding", "valid"),
                     opts.get("dilation_rate", 1))
    assert layer.output_shape == want.shape[1:]
    np.testing.assert_allclose(m.predict(X), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["valid", "same", "causal"])
def test_conv1d_gradients(padding):
    layer = gn.Conv1D(2, 3, padding=padding, dilation_rate=2 if padding == "causal" else 1, activation="tanh")
    x = gc.input("x", (B, T, C))
    y = layer(x)
    loss = gc.sum(y * gc.const(rng.standard_normal(y.shape).astype(np.float32)))
    params = {n.name: rng.standard_normal(n.shape).astype(np.float32) * 0.5 for n in layer.weights}
    rep = gc.check_grads(loss, layer.weights + [x], {"x": X}, params)
    assert max(rep.values()) < 1e-5


@pytest.mark.parametrize("cls,kind", [(gn.MaxPooling1D, "max"), (gn.AveragePooling1D, "avg")])
@pytest.mark.parametrize("size,strides,padding", [(2, None, "valid"), (3, 2, "same"), (2, 1, "valid"), (3, 3, "same")])
def test_pooling1d(cls, kind, size, strides, padding):
    m, _ = _model(cls(size, strides=strides, padding=padding))
    want = np_pool1d(X, size, strides or size, padding, kind)
    np.testing.assert_allclose(m.predict(X), want, rtol=1e-6)


def test_global_pooling1d():
    inp = gn.Input((T, C))
    m = gn.Model(inp, [gn.GlobalAveragePooling1D()(inp), gn.GlobalMaxPooling1D()(inp),
                       gn.GlobalAveragePooling1D(keepdims=True)(inp)])
    m.compile(loss="mse", optimizer="sgd", target="numpy")
    avg, mx, avg_k = m.predict(X)
    np.testing.assert_allclose(avg, X.mean(1), rtol=1e-6)
    np.testing.assert_allclose(mx, X.max(1))
    np.testing.assert_allclose(avg_k, X.mean(1, keepdims=True), rtol=1e-6)


def test_masked_average_pooling_after_embedding():
    ids = np.array([[3, 1, 0, 0, 0, 0, 0], [0, 2, 5, 0, 7, 1, 1]])
    inp = gn.Input((T,), dtype="int64")
    emb = gn.Embedding(8, C, mask_zero=True)
    m = gn.Model(inp, [gn.GlobalAveragePooling1D()(emb(inp)), gn.GlobalMaxPooling1D()(emb(inp))])
    m.compile(loss="mse", optimizer="sgd", target="numpy")
    e = emb.get_weights()[0][ids]
    keep = ids != 0
    avg, mx = m.predict(ids)
    np.testing.assert_allclose(avg, (e * keep[..., None]).sum(1) / keep.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(mx, e.max(1))  # Keras' GlobalMaxPooling1D ignores the mask


def test_compiled_training_step_matches_the_interpreter():
    def build(target):
        inp = gn.Input((T, C))
        h = gn.Conv1D(4, 3, padding="causal", activation="relu")(inp)
        h = gn.MaxPooling1D(2, padding="same")(h)
        h = gn.Conv1D(3, 2, strides=2)(h)
        h = gn.AveragePooling1D(1)(h)
        m = gn.Model(inp, gn.Dense(2)(gn.GlobalAveragePooling1D()(h)))
        m.compile(loss="mse", optimizer=gc.optim.SGD(0.1), target=target, seed=2)
        return m
    ms = {t: build(t) for t in ("numpy", "cpu")}
    ms["cpu"].set_weights(ms["numpy"].get_weights())
    y = rng.standard_normal((B, 2)).astype(np.float32)
    losses = {t: [float(m.train_on_batch(X, y)) for _ in range(2)] for t, m in ms.items()}
    np.testing.assert_allclose(losses["cpu"], losses["numpy"], rtol=1e-5)
    for a, b in zip(ms["cpu"].get_weights(), ms["numpy"].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="padding"):
        gn.Conv1D(2, 3, padding="full")
    with pytest.raises(ValueError, match="dilation_rate"):
        gn.Conv1D(2, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="channels_first"):
        gn.Conv1D(2, 3, data_format="channels_first")
    with pytest.raises(ValueError, match="padding"):
        gn.MaxPooling1D(2, padding="causal")
    with pytest.raises(ValueError, match="negative or zero"):
        _model(gn.Conv1D(2, 9))
    with pytest.raises(ValueError, match="ndim=3"):
        gn.Sequential([gn.Input((4, 4, 1)), gn.Conv1D(2, 2)]).build((None, 4, 4, 1))


# ---- Keras 3 itself (conftest.py's ``keras`` fixture) ----------------------------------------------------

KERAS_CASES = {
    "conv_valid": lambda L: L.Conv1D(4, 3, activation="relu"),
    "conv_same_strided": lambda L: L.Conv1D(4, 3, strides=2, padding="same"),
    "conv_causal_dilated": lambda L: L.Conv1D(4, 2, padding="causal", dilation_rate=2),
    "max_pool": lambda L: L.MaxPooling1D(2),
    "avg_pool_same": lambda L: L.AveragePooling1D(3, strides=2, padding="same"),
    "global_avg": lambda L: L.GlobalAveragePooling1D(),
    "global_max": lambda L: L.GlobalMaxPooling1D(keepdims=True),
}


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("case", list(KERAS_CASES))
def test_predictions_match_keras(keras, case):
    ki, gi = keras.Input((T, C)), gn.Input((T, C))
    km, gm = keras.Model(ki, KERAS_CASES[case](keras.layers)(ki)), gn.Model(gi, KERAS_CASES[case](gn)(gi))
    gm.compile(loss="mse", optimizer="sgd", target="numpy")
    w = [rng.standard_normal(v.shape).astype(np.float32) for v in km.get_weights()]
    km.set_weights(w)
    gm.set_weights(w)
    np.testing.assert_allclose(gm.predict(X), km.predict(X, verbose=0), rtol=1e-5, atol=1e-5)
