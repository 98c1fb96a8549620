"""compile(..., steps_per_execution=K): K training steps over K stacked batches in one call.

Oracle: the same step compiled with K=1 and called K times from the same initial values.
Params, optimizer and model state, the step counter and the per-step losses must be
bit-identical (np.array_equal), on the numpy target and the compiled ones, for Adam on an
MLP and for a model whose step draws dropout masks (the in-step generator, keyed by the
step counter) and updates batch-normalization moving statistics.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.errors import FeedError, GraphcError

K, B, F, C = 3, 5, 4, 3
RNG = np.random.default_rng(11)
XS = RNG.standard_normal((K, B, F)).astype(np.float32)
YS = RNG.integers(0, C, (K, B)).astype(np.int64)


def mlp(prefix: str):
    x = gc.input(f"{prefix}x", (None, F), "float32")
    y = gc.input(f"{prefix}y", (None,), "int64")
    W1 = gc.param(f"{prefix}W1", (F, 8), init="glorot_uniform")
    b1 = gc.param(f"{prefix}b1", (8,))
    W2 = gc.param(f"{prefix}W2", (8, C), init="glorot_uniform")
    logits = gc.relu(x @ W1 + b1) @ W2
    return gc.softmax_cross_entropy(logits, y), {"logits": logits}, None


def dropout_bn(prefix: str):
    """Dropout (a new mask every step) and a batch-norm with moving statistics."""
    x = gc.input(f"{prefix}x", (None, F), "float32")
    y = gc.input(f"{prefix}y", (None,), "int64")
    W1 = gc.param(f"{prefix}W1", (F, 8), init="glorot_uniform")
    gamma = gc.param(f"{prefix}gamma", (8,), init="ones")
    beta = gc.param(f"{prefix}beta", (8,))
    W2 = gc.param(f"{prefix}W2", (8, C), init="glorot_uniform")
    mm = gc.state(f"{prefix}moving_mean", (8,), init="zeros")
    mv = gc.state(f"{prefix}moving_var", (8,), init="ones")
    h = x @ W1
    mu, var = gc.moments(h, (0,))
    h = gc.dropout(gc.relu(gc.batch_normalization(h, mu, var, offset=beta, scale=gamma, epsilon=1e-3)), 0.3,
                   seed=5)
    loss = gc.softmax_cross_entropy(h @ W2, y)
    return loss, None, {mm: 0.9 * mm + 0.1 * mu, mv: 0.9 * mv + 0.1 * var}


MODELS = {"mlp": mlp, "dropout_bn": dropout_bn}


def pair(model: str, target: str):
    """(one-step program, K-step program) of the same model from the same initial values."""
    loss, outs, ups = MODELS[model](f"{model}_{target}_")
    one = gc.compile(loss, gc.optim.Adam(0.01), target=target, outputs=outs, updates=ups, seed=3)
    many = gc.compile(loss, gc.optim.Adam(0.01), target=target, outputs=outs, updates=ups, seed=3,
                      steps_per_execution=K)
    return one, many


@pytest.mark.parametrize("target", ["numpy", "cpu", "parallel"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_k_steps_in_one_call_are_k_single_calls(model, target):
    one, many = pair(model, target)
    prefix = f"{model}_{target}_"
    for rounds in range(2):  # the second call starts from the first one's params, state and counter
        singles = [one(**{prefix + "x": XS[k], prefix + "y": YS[k]}) for k in range(K)]
        got = many(**{prefix + "x": XS, prefix + "y": YS})
        assert got["loss"].shape == (K,)
        np.testing.assert_array_equal(got["loss"], np.stack([s["loss"] for s in singles]))
        for name in set(got) - {"loss"}:
            assert got[name].shape == (K,) + singles[0][name].shape
            np.testing.assert_array_equal(got[name], np.stack([s[name] for s in singles]))
        a, b = one.state_dict(), many.state_dict()
        for section in ("params", "state"):
            assert sorted(a[section]) == sorted(b[section])
            for k in a[section]:
                assert np.array_equal(a[section][k], b[section][k]), (section, k)
        assert many.iterations == one.iterations == K * (rounds + 1)
    if model == "dropout_bn":  # the masks differ from step to step (the counter moves inside the call)
        assert len(set(got["loss"].tolist())) == K


def test_stacked_feeds_are_checked_before_anything_runs():
    """Labels are range-checked in every one of the K batches (by the driver once the call is
    bound, by Python before that), NaN refused in any of them, a single batch is no feed."""
    one, many = pair("mlp", "cpu")
    p = "mlp_cpu_"
    with pytest.raises(FeedError, match=r"mlp_cpu_x.*steps_per_execution=3: each feed holds 3 batches"):
        many(**{p + "x": XS[0], p + "y": YS})
    for _ in range(2):  # the second call takes the bound (native) path
        many(**{p + "x": XS, p + "y": YS})
    before, calls = many.state_dict(), many.fast_calls
    bad = YS.copy()
    bad[K - 1, 0] = C  # a label out of range in the last batch only
    with pytest.raises(FeedError, match=r"mlp_cpu_y.*\[0, 3\)"):
        many(**{p + "x": XS, p + "y": bad})
    nan = XS.copy()
    nan[1, 2, 0] = np.nan
    with pytest.raises(FeedError, match="NaN"):
        many(**{p + "x": nan, p + "y": YS})
    after = many.state_dict()
    for k, v in before["params"].items():
        assert np.array_equal(v, after["params"][k])
    assert many.iterations == 2 * K and many.fast_calls > calls  # the driver refused them
    assert (one.steps_per_execution, many.steps_per_execution) == (1, K)


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_a_nonfinite_step_refuses_the_whole_call(target):
    """check_numerics: a non-finite value at any of the K steps writes nothing, as one step would."""
    x = gc.input(f"nf{target}_x", (None, 2), "float64")
    w = gc.param(f"nf{target}_w", (2,), init="ones", dtype="float64")
    loss = gc.sum(gc.log(x * w))  # log of a negative number at the step whose batch has one
    many = gc.compile(loss, gc.optim.SGD(0.01), target=target, check_numerics=True, steps_per_execution=K)
    xs = np.ones((K, 4, 2))
    xs[1, 0] = -5.0
    with pytest.raises(gc.NumericsError):
        many(**{f"nf{target}_x": xs})
    assert np.array_equal(many.params[f"nf{target}_w"], np.ones(2)) and many.iterations == 0
    xs[1, 0] = 1.0
    assert np.isfinite(many(**{f"nf{target}_x": xs})["loss"]).all() and many.iterations == K


def test_bad_arguments_are_typed_errors():
    loss, _, _ = mlp("args_")
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(GraphcError, match="steps_per_execution"):
            gc.compile(loss, gc.optim.SGD(0.1), steps_per_execution=bad)
    with pytest.raises(GraphcError, match="steps_per_execution.*optimizer"):
        gc.compile(loss, steps_per_execution=2)


# ---- graphc.nn: model.compile(steps_per_execution=K) -----------------------------------------

class Record(gc.nn.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_batch_begin(self, batch, logs=None):
        self.calls.append(("begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("end", batch, dict(logs)))


class FedNoise(gc.nn.layers.Layer):
    """A custom layer with an extra per-step input drawn by fit (the ``feeds`` hook)."""

    def call(self, x, training=False):
        return x + gc.input("spe_noise", (None, 8), "float32") if training else x

    def feeds(self, batch, rng):
        return {"spe_noise": (0.1 * rng.standard_normal((batch, 8))).astype(np.float32)}


def nn_fit(k: int):
    from graphc.nn import BatchNormalization, Dense, Dropout, Sequential
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 6)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    model = Sequential([Dense(8, activation="relu", input_shape=(6,)), FedNoise(), BatchNormalization(), Dropout(0.25),
                        Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], seed=2,
                  steps_per_execution=k)
    rec = Record()
    hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[rec])  # 7 batches: 6 of 8, 1 of 2
    return model, hist, rec


def test_nn_fit_with_steps_per_execution_is_fit_one_batch_per_call():
    """fit with K=3 trains exactly as with K=1 (weights, moving statistics, optimizer state,
    epoch logs); callbacks see each group of 3 batches once, Keras 3's way: begin with the
    first batch index, end with the last one and its logs; the short tail runs one step per call."""
    m1, h1, r1 = nn_fit(1)
    m3, h3, r3 = nn_fit(3)
    assert m3._functions.get("train_k") is not None and m3._functions.get("train_k").steps_per_execution == 3
    w1, w3 = m1.get_weights(), m3.get_weights()
    assert len(w1) == len(w3) and all(np.array_equal(a, b) for a, b in zip(w1, w3))
    assert m1.train_function.iterations == m3.train_function.iterations == 14
    assert h1.history == h3.history
    per_batch = {c[1]: c[2] for c in r1.calls[:14] if c[0] == "end"}  # K=1, first epoch: every batch
    first_epoch = r3.calls[:6]
    assert [c[:2] for c in first_epoch] == [("begin", 0), ("end", 2), ("begin", 3), ("end", 5), ("begin", 6),
                                            ("end", 6)]
    for c in first_epoch[1::2]:
        assert c[2] == per_batch[c[1]]
    with pytest.raises(ValueError, match="steps_per_execution"):
        m3.compile(optimizer="adam", loss="mse", steps_per_execution=0)
