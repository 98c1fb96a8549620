"""Custom layers and models written the Keras 3 way: the layers of Keras' guide "Making new
layers and models via subclassing" as written there (``import keras`` -> graphc.nn, ``ops``
-> the graphc DSL), a subclassed Model, shapes inferred from ``call``, ``trainable=False``
(frozen weights are constants of the training step), keras-style initializers and Lambda.
Oracles: NumPy on the model's own weights; one SGD step by hand. target="numpy" keeps it fast."""
import warnings

import numpy as np
import pytest

import graphc as ops  # keras.ops -> the graphc DSL
import graphc.nn as keras
from graphc.nn import initializers
from graphc.nn.layers import BatchNormalization, Dense, Input, Lambda
from graphc.nn.optimizers import SGD, Adam

T = "numpy"


# ---- the guide's layers, as written there --------------------------------------------------------

class LinearInInit(keras.layers.Layer):
    def __init__(self, units=32, input_dim=32):
        super().__init__()
        self.w = self.add_weight(
            shape=(input_dim, units),
            initializer="random_normal",
            trainable=True,
        )
        self.b = self.add_weight(shape=(units,), initializer="zeros", trainable=True)

    def call(self, inputs):
        return ops.matmul(inputs, self.w) + self.b


class ComputeSum(keras.layers.Layer):
    def __init__(self, input_dim):
        super().__init__()
        self.total = self.add_weight(
            initializer="zeros", shape=(input_dim,), trainable=False
        )

    def call(self, inputs):
        self.total.assign_add(ops.sum(inputs, axis=0))
        return self.total


class Linear(keras.layers.Layer):
    def __init__(self, units=32, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer="random_normal",
            trainable=True,
        )
        self.b = self.add_weight(
            shape=(self.units,), initializer="random_normal", trainable=True
        )

    def call(self, inputs):
        return ops.matmul(inputs, self.w) + self.b

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


class MLPBlock(keras.layers.Layer):
    def __init__(self):
        super().__init__()
        self.linear_1 = Linear(32)
        self.linear_2 = Linear(32)
        self.linear_3 = Linear(1)

    def call(self, inputs):
        x = self.linear_1(inputs)
        x = keras.activations.relu(x)
        x = self.linear_2(x)
        x = keras.activations.relu(x)
        return self.linear_3(x)


class ActivityRegularizationLayer(keras.layers.Layer):
    def __init__(self, rate=1e-2):
        super().__init__()
        self.rate = rate

    def call(self, inputs):
        self.add_loss(self.rate * ops.mean(inputs))
        return inputs


class MyModel(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense1 = keras.layers.Dense(32, activation="relu")
        self.dense2 = keras.layers.Dense(5, activation="softmax")
        self.dropout = keras.layers.Dropout(0.5)

    def call(self, inputs, training=False):
        x = self.dense1(inputs)
        x = self.dropout(x, training=training)
        return self.dense2(x)


def _data(n=24, d=8, k=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=(d, k))).astype(np.float32)
    return x, y


def _relu(v):
    return np.maximum(v, 0.0)


# ---- add_weight, build, call, compute_output_shape -----------------------------------------------

def test_weights_created_in_init_train_with_fit():
    x, y = _data(d=2)
    lin = LinearInInit(4, 2)
    assert lin.weights == [lin.w, lin.b] and lin.w.shape == (2, 4)
    model = keras.Sequential([Input((2,)), lin, Dense(1)])
    model.compile(optimizer=SGD(0.05), loss="mse", target=T)
    w0 = model.get_weights()
    assert 0.0 < np.std(w0[0]) < 0.2 and not np.any(w0[1])  # random_normal(stddev=0.05), zeros
    hist = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    w, b, k, c = model.get_weights()
    np.testing.assert_allclose(model.predict(x, verbose=0), (x @ w + b) @ k + c, rtol=1e-5, atol=1e-6)


def test_shape_changing_layer_without_compute_output_shape():
    """Linear(3) on 8 features: the output shape comes from tracing call, so the Dense after
    it is built for 3 inputs (it used to be assumed (8,) and fail in a matmul)."""
    x, y = _data(d=8, k=2)
    inp = Input((8,))
    h = Linear(3)(inp)
    assert h.shape == (None, 3)
    out = Dense(2)(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=Adam(0.01), loss="mse", target=T)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    w, b, k, c = model.get_weights()
    assert w.shape == (8, 3) and k.shape == (3, 2)
    np.testing.assert_allclose(model.predict(x, verbose=0), (x @ w + b) @ k + c, rtol=1e-5, atol=1e-6)
    seq = keras.Sequential([Input((8,)), Linear(3), Dense(2)])
    assert seq.output_shape == (None, 2) and seq.layers[-2].output_shape == (3,)


def test_mlp_block_of_nested_layers():
    x, y = _data(d=64)
    mlp = MLPBlock()
    model = keras.Sequential([Input((64,)), mlp])
    model.compile(optimizer=Adam(0.01), loss="mse", target=T)
    assert len({w.name for w in model.weights}) == 6  # the three Linears have distinct names
    assert len(mlp.weights) == 6 and len(mlp.trainable_weights) == 6
    hist = model.fit(x, y, epochs=4, batch_size=8, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    w1, b1, w2, b2, w3, b3 = model.get_weights()
    ref = _relu(_relu(x @ w1 + b1) @ w2 + b2) @ w3 + b3
    np.testing.assert_allclose(model.predict(x, verbose=0), ref, rtol=1e-4, atol=1e-5)
    # the same block in the functional API
    inp = Input((64,))
    fm = keras.Model(inp, MLPBlock()(inp))
    assert fm.output_shape == (None, 1) and len(fm.weights) == 6 and len({w.name for w in fm.weights}) == 6


def test_non_trainable_weight_assign_add():
    class WithSum(keras.Model):
        def __init__(self):
            super().__init__()
            self.summer = ComputeSum(3)
            self.dense = keras.layers.Dense(1)

        def call(self, inputs):
            self.summer(inputs)
            return self.dense(inputs)

    x, y = _data(n=12, d=3)
    model = WithSum()
    model.compile(optimizer="sgd", loss="mse", target=T)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    s = model.summer
    assert s.weights == [s.total] and s.non_trainable_weights == [s.total] and s.trainable_weights == []
    np.testing.assert_allclose(s.get_weights()[0], 2 * x.sum(axis=0), rtol=1e-5)  # 2 epochs of every sample


def test_add_loss_joins_the_total_loss():
    x, y = _data(n=16, d=4)
    model = keras.Sequential([Input((4,)), Dense(3), ActivityRegularizationLayer(0.5), Dense(1)])
    model.compile(optimizer="sgd", loss="mse", target=T)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    k1, b1, k2, b2 = model.get_weights()
    h = x @ k1 + b1
    want = np.mean((h @ k2 + b2 - y) ** 2) + 0.5 * np.mean(h)
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=16, verbose=0), want, rtol=1e-5)


def test_subclass_of_a_builtin_layer_overriding_call():
    """The losses take logits from call_split only when it describes call: a softmax Dense
    subclass whose call doubles its input is scored on what its call returns."""
    class Doubled(Dense):
        def call(self, inputs):
            return super().call(inputs * 2.0)

    x, _ = _data(n=16, d=4)
    y = np.arange(16) % 3
    model = keras.Sequential([Input((4,)), Doubled(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", target=T)
    k, c = model.get_weights()
    z = 2 * x @ k + c
    logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=16, verbose=0), -logp[np.arange(16), y].mean(),
                               rtol=1e-5)


def test_call_receives_training_by_keyword_only_when_it_takes_it():
    seen = []

    class Scale(keras.layers.Layer):
        def call(self, inputs, training=None):
            seen.append(training)
            return inputs * 2.0 if training else inputs

    x, y = _data(d=4)
    model = keras.Sequential([Input((4,)), Scale(), Dense(1)])
    model.compile(optimizer="sgd", loss="mse", target=T)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    k, c = model.get_weights()
    np.testing.assert_allclose(model.predict(x, verbose=0), x @ k + c, rtol=1e-5, atol=1e-6)  # not doubled
    assert True in seen and False in seen


def test_get_config_from_config():
    layer = Linear(64)
    config = layer.get_config()
    new_layer = Linear.from_config(config)
    assert new_layer.units == 64 and config["units"] == 64 and config["trainable"] is True
    frozen = Linear.from_config({**config, "trainable": False})
    assert frozen.trainable is False


# ---- subclassed Model ---------------------------------------------------------------------------------

def test_subclassed_model_compile_fit_evaluate_predict():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 5, size=40)
    model = MyModel()
    model.compile(optimizer=Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"], target=T)
    hist = model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert [type(l).__name__ for l in model.layers] == ["Dense", "Dense", "Dropout"]
    assert len(model.trainable_weights) == 4 and model.output_shape == (None, 5)
    k1, b1, k2, b2 = model.get_weights()
    z = _relu(x @ k1 + b1) @ k2 + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), p, rtol=1e-4, atol=1e-6)  # dropout off
    loss, acc = model.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(loss, -np.mean(np.log(p[np.arange(40), y])), rtol=1e-4)
    np.testing.assert_allclose(acc, np.mean(p.argmax(1) == y), rtol=1e-6)


def test_subclassed_model_needs_call():
    class NoCall(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = Dense(1)

    with pytest.raises(NotImplementedError, match="call"):
        NoCall().predict(np.ones((2, 3), np.float32), verbose=0)


# ---- trainable=False ------------------------------------------------------------------------------------

def test_frozen_layer_is_constant_in_the_step():
    """A frozen Dense: its weights stay, the others train; the step's graph reads it as state
    (no gradient, no optimizer slots, not written). One SGD step checked by hand."""
    x, y = _data(n=8, d=4)
    model = keras.Sequential([Input((4,)), Dense(3, name="frozen", trainable=False), Dense(1, name="head")])
    model.compile(optimizer=Adam(0.01), loss="mse", target=T)
    assert [w.name for w in model.trainable_weights] == ["head/kernel", "head/bias"]
    assert [w.name for w in model.non_trainable_weights] == ["frozen/kernel", "frozen/bias"]
    before = model.get_weights()
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    after = model.get_weights()
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert not np.allclose(after[2], before[2])
    prog = model.train_function._program
    assert not any(n.op == "param" and n.name.startswith("frozen/") for n in prog.graph.nodes)
    assert not any(u.startswith("frozen/") for u in prog.updates)  # not written, no Adam slots
    assert any(u.startswith("head/kernel") for u in prog.updates)

    sgd = keras.Sequential([Input((4,)), Dense(3, trainable=False), Dense(1)])
    sgd.compile(optimizer=SGD(0.1), loss="mse", target=T)
    k1, b1, k2, b2 = sgd.get_weights()
    sgd.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    h = x @ k1 + b1
    g = 2.0 * (h @ k2 + b2 - y) / len(x)
    new = sgd.get_weights()
    np.testing.assert_allclose(new[2], k2 - 0.1 * h.T @ g, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new[3], b2 - 0.1 * g.sum(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(new[0], k1)


def test_trainable_takes_effect_at_compile_as_in_keras():
    x, y = _data(n=8, d=4)
    first = Dense(3)
    model = keras.Sequential([Input((4,)), first, Dense(1)])
    model.compile(optimizer="sgd", loss="mse", target=T)
    first.trainable = False
    before = model.get_weights()
    with pytest.warns(UserWarning, match="compile"):
        model.fit(x, y, epochs=1, verbose=0)
    assert not np.allclose(model.get_weights()[0], before[0])  # the compiled step still trains it
    model.compile(optimizer="sgd", loss="mse", target=T)  # as Keras: compile again to apply it
    mid = model.get_weights()
    np.testing.assert_array_equal(mid[0], model.get_weights()[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_weights()[0], mid[0])
    assert not np.allclose(model.get_weights()[2], mid[2])


def test_model_trainable_and_nested_freezing():
    mlp = MLPBlock()
    model = keras.Sequential([Input((5,)), mlp])
    model.build((None, 5))
    mlp.linear_2.trainable = False
    assert len(mlp.trainable_weights) == 4 and len(mlp.non_trainable_weights) == 2
    assert mlp.weights[2] is mlp.linear_2.w  # freezing does not reorder weights (as Keras)
    model.trainable = False
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 6
    assert mlp.linear_1.trainable is False
    model.trainable = True
    assert len(model.trainable_weights) == 6


def test_subclassed_model_trainable_false():
    class Net(keras.Model):
        def __init__(self):
            super().__init__(trainable=False)
            self.a = Dense(3)
            self.b = Dense(1)

        def call(self, inputs):
            return self.b(self.a(inputs))

    x, y = _data(n=8, d=4)
    model = Net()
    model.compile(optimizer="sgd", loss="mse", target=T)
    model.build((None, 4))
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 4
    model.b.trainable = True
    model.trainable = True  # after compile: applies at the next compile, as in Keras
    model.a.trainable = False
    model.compile(optimizer="sgd", loss="mse", target=T)
    before = model.get_weights()
    model.fit(x, y, epochs=1, verbose=0)
    after = model.get_weights()
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.allclose(after[2], before[2])


def test_frozen_batch_normalization_runs_in_inference_mode():
    x, y = _data(n=16, d=3)
    x = x * 3.0 + 1.0
    bn = BatchNormalization(trainable=False)
    model = keras.Sequential([Input((3,)), bn, Dense(1)])
    model.compile(optimizer="sgd", loss="mse", target=T)
    gamma, beta, mm, mv, k, c = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    w = model.get_weights()
    for i in range(4):  # gamma, beta and the moving statistics are untouched
        np.testing.assert_array_equal(w[i], [gamma, beta, mm, mv][i])
    # the training step used the moving statistics: its loss is the inference loss
    model2 = keras.Sequential([Input((3,)), BatchNormalization(trainable=False), Dense(1)])
    model2.compile(optimizer=SGD(0.0), loss="mse", target=T)
    res = model2.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(res["loss"], model2.evaluate(x, y, batch_size=16, verbose=0), rtol=1e-6)


# ---- initializers, errors, Lambda ------------------------------------------------------------------------

def test_keras_initializers_by_name_and_object():
    class W(keras.layers.Layer):
        def build(self, input_shape):
            n = 4000
            self.a = self.add_weight(shape=(n,), initializer=initializers.RandomNormal(mean=1.0, stddev=0.5, seed=3))
            self.b = self.add_weight(shape=(n,), initializer=initializers.RandomUniform(minval=2.0, maxval=3.0))
            self.c = self.add_weight(shape=(n,), initializer="truncated_normal")
            self.d = self.add_weight(shape=(3, 2), initializer=initializers.Constant(0.25))
            self.e = self.add_weight(shape=(200, 50), initializer="lecun_normal")
            self.f = self.add_weight(shape=(200, 50), initializer="he_uniform")

        def call(self, inputs):
            return inputs

    model = keras.Sequential([Input((2,)), W()])
    a, b, c, d, e, f = model.get_weights()
    assert abs(a.mean() - 1.0) < 0.05 and abs(a.std() - 0.5) < 0.05
    assert b.min() >= 2.0 and b.max() <= 3.0 and abs(b.mean() - 2.5) < 0.05
    assert np.abs(c).max() <= 2 * 0.05 + 1e-7 and 0.03 < c.std() < 0.05  # truncated at two stddevs
    np.testing.assert_array_equal(d, np.full((3, 2), 0.25, np.float32))
    assert abs(e.std() - np.sqrt(1 / 200)) < 0.01 and np.abs(f).max() <= np.sqrt(6 / 200)
    assert initializers.get("random_normal").get_config() == {"mean": 0.0, "stddev": 0.05, "seed": None}
    with pytest.raises(ValueError, match=r"Bad.*initializer.*'nope'"):
        class Bad(keras.layers.Layer):
            def build(self, input_shape):
                self.w = self.add_weight(shape=(2,), initializer="nope")

            def call(self, inputs):
                return inputs
        keras.Sequential([Input((2,)), Bad()]).build((None, 2))


def test_add_weight_refuses_what_it_cannot_honour():
    class C(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(2,), constraint="non_neg")

        def call(self, inputs):
            return inputs

    with pytest.raises(NotImplementedError, match=r"C.*constraint"):
        keras.Sequential([Input((2,)), C()]).build((None, 2))


def test_output_without_batch_dim_in_the_functional_api_is_an_error():
    with pytest.raises(ValueError, match="batch"):
        ComputeSum(3)(Input((3,)))


def test_lambda_layer():
    x, y = _data(d=4, k=2)
    inp = Input((4,))
    h = Lambda(lambda t: ops.concatenate([t, t * t], axis=-1))(inp)
    assert h.shape == (None, 8)
    model = keras.Model(inp, Dense(2)(h))
    model.compile(optimizer="sgd", loss="mse", target=T)
    model.fit(x, y, epochs=1, verbose=0)
    k, c = model.get_weights()
    np.testing.assert_allclose(model.predict(x, verbose=0), np.concatenate([x, x * x], 1) @ k + c,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="output_shape"):
        Lambda(lambda t: t[:, :2], output_shape=(3,))(Input((4,)))
    seq = keras.Sequential([Input((4,)), Lambda(lambda t: t[:, :2], output_shape=(2,))])
    np.testing.assert_allclose(seq.predict(x, verbose=0), x[:, :2])
