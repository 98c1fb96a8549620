"""graphc.nn's functional API: Input, layers called on symbolic tensors, Model(inputs, outputs)
with several inputs/outputs, shared layers, residual connections, the merge layers and
Reshape, summary, checkpoints and bad-graph errors. Each trained model is checked against the
same network written directly in the graphc DSL, with the same initial weights and batches
(target="numpy": exact arithmetic the DSL can reproduce)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import nn
from graphc.nn import (Add, Average, Concatenate, Dense, Embedding, Flatten, Input, Maximum, Minimum, Model,
                       Multiply, Reshape, Sequential, Subtract)
from graphc.optim import SGD, Adam

T = "numpy"


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 4)).astype(np.float32)
    b = rng.normal(size=(n, 4)).astype(np.float32)
    y = (np.tanh(a[:, :1] - b[:, 1:2]) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    return a, b, y


def residual_two_inputs():
    """Two inputs through ONE shared Dense, merged every way, a residual block, a Reshape
    round trip, one regression output."""
    a, b = Input((4,), name="a"), Input((4,), name="b")
    shared = Dense(5, activation="tanh", name="shared")
    ha, hb = shared(a), shared(b)
    h = Concatenate()([ha, hb])                                  # (None, 10)
    r = Add()([h, Dense(10, activation="relu", name="res")(h)])  # residual: h + relu(h W + c)
    r = Flatten()(Reshape((2, 5))(r))                            # a round trip through (2, 5)
    merged = Concatenate()([r, Subtract()([ha, hb]), Average()([ha, hb]), Multiply()([ha, hb]),
                            Maximum()([ha, hb]), Minimum()([ha, hb])])  # (None, 35)
    out = Dense(1, name="out")(merged)
    return Model(inputs=[a, b], outputs=out)


def dsl_residual(w):
    """The same network in the DSL: Add = a+b, Subtract = a-b, Average = (a+b)/2,
    Multiply = a*b, Maximum/Minimum elementwise, Concatenate = np.concatenate(axis=-1)."""
    a, b = gc.input("a", (None, 4)), gc.input("b", (None, 4))
    y = gc.input("y", (None, 1))
    p = {k: gc.param(k, v.shape) for k, v in w.items()}
    ha = gc.tanh(a @ p["shared/kernel"] + p["shared/bias"])
    hb = gc.tanh(b @ p["shared/kernel"] + p["shared/bias"])
    h = gc.concatenate([ha, hb], axis=1)
    r = h + gc.relu(h @ p["res/kernel"] + p["res/bias"])
    r = gc.reshape(gc.reshape(r, (None, 2, 5)), (None, 10))
    merged = gc.concatenate([r, ha - hb, (ha + hb) * 0.5, ha * hb, gc.maximum(ha, hb), gc.minimum(ha, hb)], axis=1)
    out = merged @ p["out/kernel"] + p["out/bias"]
    return out, y


def _run_dsl(step, feeds_list, batch):
    """Per-epoch losses as fit reports them: batch losses averaged with batch-size weights."""
    losses = []
    for feeds in feeds_list:
        tot, n = 0.0, 0
        for lo in range(0, len(feeds["y"]), batch):
            fb = {k: v[lo:lo + batch] for k, v in feeds.items()}
            tot += float(step(**fb)["loss"]) * len(fb["y"])
            n += len(fb["y"])
        losses.append(tot / n)
    return losses


def test_residual_two_input_model_matches_the_dsl():
    a, b, y = _data()
    m = residual_two_inputs()
    m.compile(optimizer=Adam(learning_rate=0.01), loss="mse", target=T, seed=3)
    w0 = dict(zip(m._weight_names(), m.get_weights()))
    assert [w.name for w in m.weights] == ["shared/kernel", "shared/bias", "res/kernel", "res/bias",
                                          "out/kernel", "out/bias"]  # the shared layer's weights once
    h = m.fit({"a": a, "b": b}, y, epochs=3, batch_size=16, shuffle=False, verbose=0)

    out, yy = dsl_residual(w0)
    step = gc.compile(gc.mse(out, yy), optimizer=Adam(learning_rate=0.01), target=T, params=w0)
    ref = _run_dsl(step, [{"a": a, "b": b, "y": y}] * 3, 16)
    np.testing.assert_allclose(h.history["loss"], ref, rtol=1e-5)
    for k, v in zip(m._weight_names(), m.get_weights()):
        np.testing.assert_allclose(v, step.params[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # predict: inputs as a list, in Model(inputs=[a, b]) order
    fwd = gc.compile(out, target=T, params=step)
    np.testing.assert_allclose(m.predict([a, b]), fwd(a=a, b=b), rtol=1e-5, atol=1e-6)


def test_functional_model_on_the_native_target():
    """The functional graph compiles natively like any graph: cpu == numpy interpreter."""
    a, b, y = _data(32)
    outs = []
    for target in ("cpu", "numpy"):
        m = residual_two_inputs()
        m.compile(optimizer=SGD(learning_rate=0.05), loss="mse", target=target, seed=1)
        h = m.fit([a, b], y, epochs=2, batch_size=16, shuffle=False, verbose=0)
        outs.append((h.history["loss"], m.get_weights()))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5)
    for p, q in zip(outs[0][1], outs[1][1]):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-6)


def test_two_outputs_loss_weights_and_metrics_match_the_dsl():
    """total = 1.0 * sparse_categorical_crossentropy(cls) + 0.5 * mse(reg); the per-output
    losses are logged as '<output>_loss' (weighted, as Keras records them), metrics as
    '<output>_<metric>'."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    yc, yr = rng.integers(0, 3, 40), rng.normal(size=(40, 1)).astype(np.float32)
    inp = Input((6,))
    h = Dense(8, activation="relu")(inp)
    m = Model(inp, {"cls": Dense(3, activation="softmax")(h), "reg": Dense(1)(h)})
    m.compile(optimizer=SGD(learning_rate=0.1), loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
              loss_weights={"cls": 1.0, "reg": 0.5}, metrics={"cls": ["accuracy"], "reg": ["mae"]}, target=T)
    assert m.metrics_names == ["loss", "cls_loss", "reg_loss", "cls_accuracy", "reg_mae"]
    assert m.input_names == ["input_layer"] and m.output_names == ["cls", "reg"]
    w0 = dict(zip(m._weight_names(), m.get_weights()))
    hist = m.fit(x, {"cls": yc, "reg": yr}, epochs=2, batch_size=40, shuffle=False, verbose=0)

    xi = gc.input("input_layer", (None, 6))
    y1, y2 = gc.input("y1", (None,), dtype="int64"), gc.input("y2", (None, 1))
    p = {k: gc.param(k, v.shape) for k, v in w0.items()}
    hh = gc.relu(xi @ p["dense/kernel"] + p["dense/bias"])
    logits = hh @ p["dense_1/kernel"] + p["dense_1/bias"]
    reg = hh @ p["dense_2/kernel"] + p["dense_2/bias"]
    l1, l2 = gc.softmax_cross_entropy(logits, y1), 0.5 * gc.mse(reg, y2)
    step = gc.compile(l1 + l2, optimizer=SGD(learning_rate=0.1), target=T, params=w0, outputs={"l1": l1, "l2": l2})
    for e in range(2):
        r = step(input_layer=x, y1=yc, y2=yr)
        assert hist.history["loss"][e] == pytest.approx(float(r["loss"]), rel=1e-5)
        assert hist.history["cls_loss"][e] == pytest.approx(float(r["l1"]), rel=1e-5)
        assert hist.history["reg_loss"][e] == pytest.approx(float(r["l2"]), rel=1e-5)
    for k, v in zip(m._weight_names(), m.get_weights()):
        np.testing.assert_allclose(v, step.params[k], rtol=1e-5, atol=1e-6, err_msg=k)
    pred = m.predict(x)  # outputs given as a dict -> a dict back
    assert set(pred) == {"cls", "reg"} and pred["cls"].shape == (40, 3) and pred["reg"].shape == (40, 1)
    ev = m.evaluate(x, [yc, yr], verbose=0, return_dict=True)  # labels as a list in output order work too
    assert ev["cls_accuracy"] == pytest.approx(np.mean(pred["cls"].argmax(1) == yc))
    assert ev["reg_mae"] == pytest.approx(np.mean(np.abs(pred["reg"] - yr)), rel=1e-5)


def test_layers_by_formula():
    """Forward values of each new layer against its NumPy formula (predict on a Model)."""
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 2, 3)).astype(np.float32), rng.normal(size=(5, 2, 3)).astype(np.float32)
    c = rng.normal(size=(5, 3)).astype(np.float32)
    ia, ib, ic = Input((2, 3), name="a"), Input((2, 3), name="b"), Input((3,), name="c")
    outs = {"add": Add()([ia, ib]), "sub": Subtract()([ia, ib]), "mul": Multiply()([ia, ib]),
            "avg": Average()([ia, ib, ia]), "max": Maximum()([ia, ib]), "min": Minimum()([ia, ib]),
            "bcast": Add()([ia, ic]),  # (None, 3) against (None, 2, 3): Keras adds an axis after the batch
            "cat1": Concatenate(axis=1)([ia, ib]), "cat": Concatenate()([ia, ib]),
            "reshape": Reshape((-1, 2))(ia), "dense3d": Dense(4, name="d3")(ia),
            "fn": nn.layers.concatenate([nn.layers.add([ia, ib]), ia])}
    m = Model([ia, ib, ic], outs)
    m.compile(loss="mse", target=T)
    got = m.predict({"a": a, "b": b, "c": c})
    k, bias = m.get_layer("d3").get_weights()
    want = {"add": a + b, "sub": a - b, "mul": a * b, "avg": (a + b + a) / 3, "max": np.maximum(a, b),
            "min": np.minimum(a, b), "bcast": a + c[:, None, :], "cat1": np.concatenate([a, b], 1),
            "cat": np.concatenate([a, b], -1), "reshape": a.reshape(5, 3, 2), "dense3d": a @ k + bias,
            "fn": np.concatenate([a + b, a], -1)}
    for name, v in want.items():
        np.testing.assert_allclose(got[name], v, rtol=1e-5, atol=1e-6, err_msg=name)
    assert m.get_layer("d3").output_shape == (2, 4)  # Dense over the last axis, as Keras


def test_shared_layer_gets_one_gradient_sum_and_embedding_input_is_int():
    """An Embedding fed by an Input of unspecified dtype takes int64 ids (range-checked); a
    layer called twice is one set of weights whose gradient sums both uses."""
    ids = Input((3,))
    emb = Embedding(10, 4)
    e1, e2 = emb(ids), emb(ids)
    m = Model(ids, Dense(1)(Flatten()(Add()([e1, e2]))))
    m.compile(optimizer=SGD(learning_rate=0.1), loss="mse", target=T)
    assert m._in_dtypes == ["int64"]
    x = np.array([[1, 2, 3], [4, 5, 9]])
    E, W, bias = m.get_weights()
    np.testing.assert_allclose(m.predict(x), (2 * E[x]).reshape(2, 12) @ W + bias, rtol=1e-5)
    with pytest.raises(gc.FeedError, match=r"\[0, 10\)"):
        m.predict(np.array([[1, 2, 10]]))


def test_summary_shows_connections_and_totals():
    m = residual_two_inputs()
    lines = []
    m.summary(print_fn=lines.append)
    text = "\n".join(lines)
    for s in ("Connected to", "a (InputLayer)", "shared (Dense)", "a[0][0]", "b[0][0]", "shared[0][0]",
              "shared[1][0]", "concatenate[0][0]", "res[0][0]", "reshape (Reshape)", "(None, 2, 5)",
              "Total params: 171", "Trainable params: 171", "Non-trainable params: 0"):
        assert s in text, s
    # shared: 4*5+5 = 25, res: 10*10+10 = 110, out: 35*1+1 = 36 parameters
    assert m.count_params() == 25 + 110 + 36 == 171
    row = next(l for l in lines if l.startswith(" shared (Dense)"))
    assert "25" in row and "a[0][0]" in row
    assert lines[lines.index(row) + 1].strip() == "b[0][0]"  # the second call on its own line


def test_save_and_load_weights_between_functional_models(tmp_path):
    a, b, y = _data(32)
    m = residual_two_inputs()
    m.compile(optimizer="adam", loss="mse", target=T)
    m.fit([a, b], y, epochs=1, verbose=0)
    path = m.save_weights(tmp_path / "res", include_optimizer=True)
    other = residual_two_inputs()  # fresh layers, same structure: the same weight names
    other.compile(optimizer="adam", loss="mse", target=T)
    other.load_weights(path)
    np.testing.assert_array_equal(other.predict([a, b]), m.predict([a, b]))
    assert int(other.train_function.state_dict()["state"]["step"]) == 1  # 32 samples, one batch


def test_single_input_and_output_given_as_lists():
    inp = Input((3,))
    m = Model([inp], [Dense(2, name="o")(inp)])
    m.compile(optimizer="sgd", loss="mse", target=T)
    x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    assert m.fit([x], [y], epochs=1, verbose=0).history["loss"][0] > 0
    p = m.predict([x])
    assert isinstance(p, list) and p[0].shape == (4, 2)  # outputs=[...] -> a list back


def test_sequential_takes_an_input_tensor_first():
    m = Sequential([Input((4,), dtype="float32"), Dense(2)])
    assert m.input_shape == (None, 4)
    assert m.predict(np.ones((3, 4), np.float32)).shape == (3, 2)


# ---- errors ---------------------------------------------------------------------------------------------

def test_graph_errors_name_the_argument():
    a, b = Input((4,), name="a"), Input((4,), name="b")
    s = Add()([a, b])
    with pytest.raises(ValueError, match=r"Model\(inputs=...\): graph disconnected: .*depends on input 'b'"):
        Model(inputs=a, outputs=Dense(1)(s))
    c = Input((2,), name="c")
    with pytest.raises(ValueError, match=r"Model\(inputs=...\): input\(s\) \['c'\] are not connected"):
        Model(inputs=[a, b, c], outputs=s)
    with pytest.raises(ValueError, match=r"not a tensor made by graphc.nn.Input"):
        Model(inputs=s, outputs=Dense(1)(s))
    with pytest.raises(TypeError, match=r"Model\(outputs=...\)"):
        Model(inputs=a, outputs=np.zeros(3))
    d2, yin = Dense(1), Input((2,), name="y")
    with pytest.raises(ValueError, match="reserved"):
        Model(yin, d2(yin))
    xin = Input((2,))
    assert Model(xin, d2(xin)).get_layer(index=1) is d2  # the failed Model let go of its layers
    d = Dense(3)
    m1 = Model(a, d(a))
    with pytest.raises(ValueError, match="already belongs to model"):
        Model(a, Dense(1)(d(a)))
    assert m1.output_shape == (None, 3)


def test_layer_errors_at_call_time():
    a, b, v = Input((4,)), Input((5,)), Input((2, 4))
    with pytest.raises(ValueError, match=r"Add 'add': inputs have incompatible shapes \[\(None, 4\), \(None, 5\)\]"):
        Add()([a, b])
    with pytest.raises(ValueError, match=r"Concatenate.*matching shapes except for the concatenation axis -1.*"
                                         r"\(None, 4\), \(None, 2, 4\)|Concatenate.*same rank"):
        Concatenate()([a, v])
    with pytest.raises(ValueError, match=r"matching shapes except for the concatenation axis 1"):
        Concatenate(axis=1)([v, Input((2, 5))])
    with pytest.raises(ValueError, match="batch axis 0 cannot be concatenated"):
        Concatenate(axis=0)([a, a])
    with pytest.raises(ValueError, match=r"a merge layer should be called on a list"):
        Add()(a)
    with pytest.raises(ValueError, match=r"exactly 2"):
        Subtract()([a, a, a])
    with pytest.raises(ValueError, match=r"expected min_ndim=2, found ndim=1. Full shape received: \(None,\)"):
        Dense(3)(Input(()))
    with pytest.raises(ValueError, match=r"Reshape.*total size.*\(None, 4\).*target_shape=\(3, -1\)"):
        Reshape((3, -1))(a)
    with pytest.raises(ValueError, match="target_shape"):
        Reshape((-1, -1))
    shared = Dense(2)
    shared(a)
    with pytest.raises(ValueError, match=r"was built for inputs of shape \(None, 4\), got \(None, 5\)"):
        shared(b)
    with pytest.raises(TypeError, match="mix symbolic tensors"):
        Add()([a, gc.input("z", (None, 4))])
    with pytest.raises(ValueError, match="shape is required"):
        Input()
    with pytest.raises(ValueError, match=r"Input\(dtype=...\)"):
        Input((2,), dtype="complex64")


def test_data_errors_name_the_input():
    a, b, y = _data(16)
    m = residual_two_inputs()
    m.compile(optimizer="sgd", loss="mse", target=T)
    with pytest.raises(ValueError, match=r"x: the model's inputs are \['a', 'b'\]; missing \['b'\]"):
        m.fit({"a": a}, y, verbose=0)
    with pytest.raises(ValueError, match=r"x\[1\]: the model expects samples of shape \(4,\) \(input 'b'\)"):
        m.fit([a, b[:, :3]], y, verbose=0)
    with pytest.raises(ValueError, match=r"x: the model has 2 inputs"):
        m.fit(a, y, verbose=0)
    with pytest.raises(ValueError, match=r"x\[0\] and x\[1\] have different numbers of samples"):
        m.predict([a, b[:5]])
    with pytest.raises(ValueError, match=r"x\[0\] and y have different numbers of samples"):
        m.fit([a, b], y[:5], verbose=0)
    inp = Input((2,))
    two = Model(inp, [Dense(1, name="p")(inp), Dense(1, name="q")(inp)])
    with pytest.raises(ValueError, match=r"compile\(metrics=...\): the model has 2 outputs"):
        two.compile(loss="mse", metrics=["mae"], target=T)  # Keras: a list of lists, or a dict
    with pytest.raises(ValueError, match=r"compile\(loss=...\): the model has 2 outputs"):
        two.compile(loss=["mse"], target=T)
    with pytest.raises(ValueError, match=r"compile\(loss=...\): unknown output name\(s\) \['r'\]"):
        two.compile(loss={"p": "mse", "r": "mse"}, target=T)
    assert not two.compiled
    two.compile(loss="mse", metrics=[["mae"], []], target=T)  # one loss for every output
    assert two.metrics_names == ["loss", "p_loss", "q_loss", "p_mae"]
    with pytest.raises(ValueError, match=r"y: the model has 2 outputs"):
        two.evaluate(np.zeros((3, 2)), np.zeros(3), verbose=0)
