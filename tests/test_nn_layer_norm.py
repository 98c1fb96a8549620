"""graphc.nn.LayerNormalization against Keras' documented formula and defaults."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.nn import Dense, Flatten, LayerNormalization, Sequential


def _ln(h, axes, gamma, beta, eps):
    mu = h.mean(axis=axes, keepdims=True)
    var = h.var(axis=axes, keepdims=True)
    return (h - mu) / np.sqrt(var + eps) * gamma + beta


def test_layer_normalization_matches_keras_formula_and_defaults():
    rng = np.random.default_rng(0)
    m = Sequential([Dense(6, input_shape=(4,)), LayerNormalization(), Dense(2)])
    m.compile(optimizer="adam", loss="mse")
    W1, b1, g, b, W2, b2 = m.get_weights()
    ln = m.layers[1]
    assert ln.epsilon == 1e-3 and ln.weight_names == [f"{ln.name}/gamma", f"{ln.name}/beta"]
    np.testing.assert_array_equal(g, np.ones(6))
    np.testing.assert_array_equal(b, np.zeros(6))
    g, b = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    m.set_weights([W1, b1, g, b, W2, b2])
    x = rng.normal(size=(5, 4)).astype(np.float32) * 3
    want = _ln(x @ W1 + b1, -1, g, b, 1e-3) @ W2 + b2
    np.testing.assert_allclose(m.predict(x), want, rtol=1e-4, atol=1e-5)
    y = rng.normal(size=(5, 2)).astype(np.float32)
    before = m.get_weights()[2]
    m.fit(x, y, epochs=2, verbose=0)
    assert not np.allclose(m.get_weights()[2], before)  # gamma is trained


def test_layer_normalization_over_several_axes():
    rng = np.random.default_rng(1)
    m = Sequential([LayerNormalization(axis=(1, 2), epsilon=0.01, input_shape=(3, 4)), Flatten(), Dense(1)])
    m.compile(optimizer="sgd", loss="mse")
    g, b, W, c = m.get_weights()
    assert g.shape == (3, 4)
    g = rng.normal(size=(3, 4)).astype(np.float32)
    m.set_weights([g, b, W, c])
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    want = _ln(x, (1, 2), g, b, 0.01).reshape(2, 12) @ W + c
    np.testing.assert_allclose(m.predict(x), want, rtol=1e-4, atol=1e-5)


def test_layer_normalization_rejects_the_batch_axis_and_bad_epsilon():
    with pytest.raises(ValueError, match="epsilon"):
        LayerNormalization(epsilon=-1.0)
    m = Sequential([LayerNormalization(axis=0, input_shape=(4,))])
    with pytest.raises((ValueError, gc.GraphcError), match="batch axis"):
        m.compile(optimizer="sgd", loss="mse")
        m.predict(np.zeros((2, 4), np.float32))
