"""graphc.nn.Embedding: Keras' arguments and initializer, integer inputs, range checks."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.nn import Dense, Embedding, Flatten, Sequential


def _model():
    m = Sequential([Embedding(10, 4, input_shape=(3,)), Flatten(), Dense(2)])
    m.compile(optimizer=gc.nn.optimizers.Adam(learning_rate=0.05),
              loss=gc.nn.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return m


def test_embedding_forward_matches_a_table_lookup_and_keras_init():
    m = _model()
    E, W, b = m.get_weights()
    assert E.shape == (10, 4) and np.abs(E).max() <= 0.05  # Keras: uniform in [-0.05, 0.05]
    ids = np.array([[1, 2, 2], [9, 0, 1]])
    want = E[ids].reshape(2, 12) @ W + b
    np.testing.assert_allclose(m.predict(ids), want, rtol=1e-5, atol=1e-6)  # Dense(2): linear logits


def test_embedding_model_learns_which_id_is_present():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 10, (512, 3))
    y = (ids == 7).any(axis=1).astype(np.int64)
    m = _model()
    m.fit(ids, y, epochs=15, batch_size=32, verbose=0)
    assert m.evaluate(ids, y, verbose=0)[1] > 0.95


def test_embedding_rejects_out_of_range_and_fractional_ids_before_any_update():
    m = _model()
    ids = np.array([[1, 2, 3]])
    m.predict(ids)
    before = m.get_weights()
    with pytest.raises(gc.FeedError, match=r"\[0, 10\)"):
        m.fit(np.array([[1, 2, 10]]), np.array([0]), epochs=1, verbose=0)
    with pytest.raises(gc.FeedError, match=r"\[0, 10\)"):
        m.predict(np.array([[-1, 2, 3]]))
    with pytest.raises(ValueError, match="integer ids"):
        m.predict(np.array([[1.5, 2, 3]]))
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)
