"""graphc.nn.MultiHeadAttention, PositionEmbedding and sequence outputs (sparse categorical
cross-entropy and accuracy over every position), and examples/cnn_keras.py and
examples/transformer_keras.py on small settings.

Keras 3's MultiHeadAttention, as the NumPy reference below computes it (einsum strings as
Keras' EinsumDense layers use them):

    Q = einsum("btd,dhk->bthk", query, Wq) + bq        (likewise K from key, V from value)
    S = einsum("bshk,bthk->bhts", K, Q / sqrt(key_dim)) + (1 - mask) * -1e9
    P = softmax(S, axis=-1)                            (over the keys)
    out = einsum("bthv,hvo->bto", einsum("bhts,bshv->bthv", P, V), Wo) + bo
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.nn import (Add, Dense, Embedding, Flatten, Input, LayerNormalization, Model, MultiHeadAttention,
                       PositionEmbedding, Sequential)
from graphc.nn.losses import SparseCategoricalCrossentropy
from graphc.optim import Adam

T = "numpy"
ROOT = Path(__file__).resolve().parent.parent
rng = np.random.default_rng(0)


def softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def mha_ref(w, prefix, query, value, key=None, mask=None, causal=False):
    key = value if key is None else key
    g = {k[len(prefix) + 1:]: v for k, v in w.items() if k.startswith(prefix + "/")}
    q = np.einsum("btd,dhk->bthk", query, g["query/kernel"]) + g["query/bias"]
    k = np.einsum("btd,dhk->bthk", key, g["key/kernel"]) + g["key/bias"]
    v = np.einsum("btd,dhk->bthk", value, g["value/kernel"]) + g["value/bias"]
    s = np.einsum("bshk,bthk->bhts", k, q / np.sqrt(q.shape[-1]))
    m = np.ones(s.shape[-2:]) if mask is None else mask[:, None].astype(np.float64)
    if causal:
        m = m * np.tril(np.ones(s.shape[-2:]))
    p = softmax(s + (1.0 - m) * -1e9)
    o = np.einsum("bhts,bshv->bthv", p, v)
    return np.einsum("bthv,hvo->bto", o, g["attention_output/kernel"]) + g["attention_output/bias"]


def attention_model():
    """Causal self-attention, then cross-attention with a separate key; value_dim differs
    from key_dim and the output width is set."""
    x, c, kin = Input((5, 6), name="x"), Input((4, 3), name="c"), Input((4, 2), name="k")
    a1 = MultiHeadAttention(2, 3, value_dim=4, name="self_attn")(x, x, use_causal_mask=True)   # (5, 6)
    a2 = MultiHeadAttention(3, 2, output_shape=5, name="cross")(a1, c, key=kin)                 # (5, 5)
    return Model([x, c, kin], Dense(1, name="out")(Flatten()(a2)))


def dsl_attention(w):
    """The same network head by head (static slices of the 3-D kernels), a formulation
    independent of the layer's reshape/transpose one."""
    x, c, kin = gc.input("x", (None, 5, 6)), gc.input("c", (None, 4, 3)), gc.input("k", (None, 4, 2))
    y = gc.input("y", (None, 1))
    p = {k: gc.param(k, v.shape) for k, v in w.items()}

    def mha(prefix, heads, query, value, key, causal):
        out = p[f"{prefix}/attention_output/bias"]
        for h in range(heads):
            def proj(part, t):
                return t @ p[f"{prefix}/{part}/kernel"][:, h, :] + p[f"{prefix}/{part}/bias"][h]
            q, k, v = proj("query", query), proj("key", key), proj("value", value)
            s = (q * (1.0 / np.sqrt(q.shape[-1]))) @ gc.swapaxes(k, -1, -2)
            if causal:
                s = s + gc.const((1.0 - np.tril(np.ones((5, 5), np.float32))) * -1e9)
            out = out + (gc.softmax(s) @ v) @ p[f"{prefix}/attention_output/kernel"][h]
        return out

    a1 = mha("self_attn", 2, x, x, x, True)
    a2 = mha("cross", 3, a1, c, kin, False)
    return gc.mse(gc.reshape(a2, (None, 25)) @ p["out/kernel"] + p["out/bias"], y)


def test_multi_head_attention_trains_like_the_dsl_and_matches_keras_formula():
    x = rng.normal(size=(12, 5, 6)).astype(np.float32)
    c = rng.normal(size=(12, 4, 3)).astype(np.float32)
    k = rng.normal(size=(12, 4, 2)).astype(np.float32)
    y = rng.normal(size=(12, 1)).astype(np.float32)
    m = attention_model()
    m.compile(optimizer=Adam(learning_rate=0.01), loss="mse", target=T, seed=4)
    names = m._weight_names()
    assert names[:8] == [f"self_attn/{p}/{w}" for p in ("query", "key", "value", "attention_output")
                         for w in ("kernel", "bias")]  # Keras' order
    w0 = dict(zip(names, m.get_weights()))
    assert w0["self_attn/query/kernel"].shape == (6, 2, 3) and w0["self_attn/query/bias"].shape == (2, 3)
    assert w0["self_attn/value/kernel"].shape == (6, 2, 4)
    assert w0["self_attn/attention_output/kernel"].shape == (2, 4, 6)
    assert w0["cross/key/kernel"].shape == (2, 3, 2) and w0["cross/value/kernel"].shape == (3, 3, 2)
    assert w0["cross/attention_output/kernel"].shape == (3, 2, 5) and w0["cross/attention_output/bias"].shape == (5,)
    # glorot_uniform with Keras' fans for (d, heads, dim): fan_in = heads*d, fan_out = dim*d
    assert np.abs(w0["self_attn/query/kernel"]).max() <= np.sqrt(6 / (2 * 6 + 3 * 6))
    # forward: Keras' formula with random (non-zero) biases
    for name in names:
        if name.endswith("bias"):
            w0[name] = rng.normal(size=w0[name].shape).astype(np.float32) * 0.3
    m.set_weights([w0[n] for n in names])
    a1 = mha_ref(w0, "self_attn", x, x, causal=True)
    a2 = mha_ref(w0, "cross", a1, c, key=k)
    want = a2.reshape(12, 25) @ w0["out/kernel"] + w0["out/bias"]
    np.testing.assert_allclose(m.predict({"x": x, "c": c, "k": k}), want, rtol=1e-4, atol=1e-5)
    # training: the same per-epoch losses and final weights as the head-by-head DSL network
    h = m.fit({"x": x, "c": c, "k": k}, y, epochs=2, batch_size=6, shuffle=False, verbose=0)
    step = gc.compile(dsl_attention(w0), optimizer=Adam(learning_rate=0.01), target=T, params=w0)
    ref = []
    for _ in range(2):
        ref.append(np.mean([float(step(x=x[i:i + 6], c=c[i:i + 6], k=k[i:i + 6], y=y[i:i + 6])["loss"])
                            for i in (0, 6)]))
    np.testing.assert_allclose(h.history["loss"], ref, rtol=1e-5)
    for n, v in zip(names, m.get_weights()):
        if n.endswith("key/bias"):  # its exact gradient is 0 (a per-query constant shift of the scores, which
            continue                # softmax ignores): Adam's normalized steps of rounding noise are arbitrary
        np.testing.assert_allclose(v, step.params[n], rtol=1e-4, atol=1e-6, err_msg=n)


def test_attention_mask_and_dropout():
    """attention_mask (batch, Tq, Tv): 1 attends, 0 does not (-1e9 added to the score);
    combined with the causal mask. Dropout on the probabilities acts in training only."""
    x, mk = Input((4, 3), name="x"), Input((4, 4), name="mask")
    mha = MultiHeadAttention(2, 2, dropout=0.5, name="mha")
    m = Model([x, mk], mha(x, x, attention_mask=mk, use_causal_mask=True))
    m.compile(optimizer="sgd", loss="mse", target=T)
    xs = rng.normal(size=(3, 4, 3)).astype(np.float32)
    mask = (rng.random((3, 4, 4)) > 0.3).astype(np.int64)
    mask[:, :, 0] = 1  # every query attends to something
    w = dict(zip(m._weight_names(), m.get_weights()))
    want = mha_ref(w, "mha", xs, xs, mask=mask, causal=True)
    np.testing.assert_allclose(m.predict({"x": xs, "mask": mask}), want, rtol=1e-4, atol=1e-5)
    # in training the probabilities go through gc.dropout (drawn in the step, nothing fed)
    assert sorted(n.name for n in m.train_function.graph.inputs if ":" not in n.name) == ["mask", "x", "y"]
    assert any(n.op == "random_uniform" for n in m.train_function.graph.nodes)
    assert not any(n.op == "random_uniform" for n in m.predict_function.graph.nodes)
    zeros = np.zeros((3, 4, 3), np.float32)
    train = m.train_on_batch({"x": xs, "mask": mask}, zeros)  # lr 0.01: the weights barely move
    assert train != pytest.approx(float(np.mean(want ** 2)), rel=1e-3)
    assert m.evaluate({"x": xs, "mask": mask}, zeros, verbose=0) == pytest.approx(
        float(np.mean(mha_ref(dict(zip(m._weight_names(), m.get_weights())), "mha", xs, xs, mask=mask,
                              causal=True) ** 2)), rel=1e-4)


def test_multi_head_attention_errors():
    x, v = Input((5, 6)), Input((4, 6))
    with pytest.raises(ValueError, match=r"query must have rank 3.*\(None, 6\)"):
        MultiHeadAttention(2, 3)(Input((6,)), v)
    with pytest.raises(ValueError, match="key and value must have the same length"):
        MultiHeadAttention(2, 3)(x, v, key=Input((3, 6)))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, 5, 4\)"):
        MultiHeadAttention(2, 3)(x, v, attention_mask=Input((5, 5)))
    with pytest.raises(ValueError, match="num_heads must be a positive int"):
        MultiHeadAttention(0, 3)
    with pytest.raises(ValueError, match="dropout"):
        MultiHeadAttention(2, 3, dropout=1.0)
    with pytest.raises(NotImplementedError, match="return_attention_scores"):
        MultiHeadAttention(2, 3)(x, x, return_attention_scores=True)
    with pytest.raises(TypeError, match="all be symbolic tensors"):
        MultiHeadAttention(2, 3)(x, gc.input("zz", (None, 5, 6)))
    with pytest.raises(ValueError, match="takes several inputs"):
        Sequential([Input((5, 6)), MultiHeadAttention(2, 3)])


# ---- sequence models ---------------------------------------------------------------------------------------

def sequence_model(length=6, vocab=7, dim=8):
    tokens = Input((length,), dtype="int64", name="tokens")
    h = Embedding(vocab, dim, name="tok")(tokens)
    h = Add()([h, PositionEmbedding(length, name="pos")(h)])
    h = LayerNormalization(name="ln")(Add()([h, MultiHeadAttention(2, 4, name="mha")(h, h)]))
    return Model(tokens, Dense(vocab, name="logits")(h))


def test_sequence_outputs_loss_and_accuracy_over_every_position():
    """Keras' sparse categorical cross-entropy on (batch, T, vocab) logits and (batch, T)
    labels is the mean over all batch*T positions; accuracy is the mean over positions of
    argmax == label; with sample_weight: sum_i w_i * mean_t loss_it / batch."""
    x = rng.integers(0, 7, (10, 6))
    y = x[:, ::-1].copy()
    m = sequence_model()
    m.compile(optimizer=Adam(learning_rate=0.02), loss=SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"], target=T)
    pos = m.get_layer("pos").get_weights()[0]
    assert pos.shape == (6, 8)
    logits = m.predict(x)
    assert logits.shape == (10, 6, 7)
    tok = m.get_layer("tok").get_weights()[0]
    np.testing.assert_allclose(m.get_layer("pos")(gc.const(tok[x])).shape, (10, 6, 8))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per = -np.take_along_axis(logp, y[..., None], -1)[..., 0]  # (10, 6)
    loss, acc = m.evaluate(x, y, verbose=0)
    assert loss == pytest.approx(per.mean(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(-1) == y).mean())
    sw = rng.random(10).astype(np.float32)
    wl = m.evaluate(x, y, sample_weight=sw, verbose=0)[0]
    assert wl == pytest.approx(float((sw * per.mean(1)).sum() / 10), rel=1e-5)
    h = m.fit(x, y, epochs=5, batch_size=5, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    with pytest.raises(ValueError, match=r"integer class indices of shape \('n', 6\)"):
        m.fit(x, y[:, :3], verbose=0)


def test_position_embedding_errors():
    with pytest.raises(ValueError, match="sequence_length must be a positive int"):
        PositionEmbedding(0)
    with pytest.raises(ValueError, match="longer than sequence_length=3"):
        PositionEmbedding(3)(Input((5, 2)))
    with pytest.raises(ValueError, match="min_ndim=3"):
        PositionEmbedding(3)(Input((5,)))


# ---- the examples, on small settings -----------------------------------------------------------------------

def _example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cnn_keras_example_small(tmp_path, capsys):
    pytest.importorskip("sklearn")
    png = tmp_path / "curves.png"
    assert _example("cnn_keras").main(["--target", "numpy", "--epochs", "2", "--filters", "4,8", "--dense", "16",
                                       "--verbose", "0", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("final test accuracy: ")[1].split()[0])
    assert 0.5 < acc <= 1.0, out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no training-curve plot" in out
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_transformer_keras_example_small(capsys):
    assert _example("transformer_keras").main(
        ["--target", "numpy", "--train", "1024", "--test", "128", "--epochs", "10", "--dim", "16", "--heads", "2",
         "--mlp", "32", "--lr", "1e-2", "--verbose", "0", "--plot", ""]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("held-out per-token accuracy: ")[1].split(";")[0])
    assert acc >= 0.95, out
