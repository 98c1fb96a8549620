"""graphc.nn's recurrent layers (SimpleRNN, LSTM, GRU, Bidirectional) and masking
(Embedding(mask_zero=True), Masking) on gc.scan.

Oracles: the same layers written in NumPy with Keras 3's formulas and its generic RNN loop
(keras/src/backend/numpy/rnn.py: a masked step keeps the states and outputs the previous
output, or zeros under Bidirectional) on the same weights; float64 finite differences for the
gradients (graphc.check_grads); the numpy target for a compiled training step; and, when
Keras 3 is installed, Keras itself (KERAS_BACKEND=numpy) on the same weights and data.
Forward checks run on target="numpy" (no native compile); one model is compiled for "cpu".
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import graphc as gc
import graphc.nn as gn
from graphc.errors import GraphcError
from graphc.ir import topo_order

B, T, FEAT, H = 3, 5, 4, 6
rng = np.random.default_rng(0)
X = rng.standard_normal((B, T, FEAT)).astype(np.float32)
IDS = rng.integers(1, 10, (B, T))
IDS[0, 3:] = 0   # trailing padding
IDS[1, :2] = 0   # leading padding
IDS[2, 2] = 0    # a hole


# ---- the NumPy oracle (Keras 3's formulas) ------------------------------------------------------------

def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_cell(kind, w, xt, states, reset_after=True):
    """One step of Keras' cell: (new states, output). ``w``: [kernel, recurrent_kernel, bias?]."""
    W, U = w[0], w[1]
    b = w[2] if len(w) > 2 else None
    h = states[0]
    u = U.shape[0]
    if kind == "simple":
        h = np.tanh(xt @ W + h @ U + (0 if b is None else b))
        return [h], h
    if kind == "lstm":
        z = xt @ W + h @ U + (0 if b is None else b)
        i, f, g, o = _sig(z[:, :u]), _sig(z[:, u:2 * u]), np.tanh(z[:, 2 * u:3 * u]), _sig(z[:, 3 * u:])
        c = f * states[1] + i * g
        h = o * np.tanh(c)
        return [h, c], h
    if reset_after:  # GRU, bias (2, 3u): input and recurrent biases
        bi, br = (0, 0) if b is None else (b[0], b[1])
        mx, mi = xt @ W + bi, h @ U + br
        z, r = _sig(mx[:, :u] + mi[:, :u]), _sig(mx[:, u:2 * u] + mi[:, u:2 * u])
        hh = np.tanh(mx[:, 2 * u:] + r * mi[:, 2 * u:])
    else:
        mx = xt @ W + (0 if b is None else b)
        mi = h @ U[:, :2 * u]
        z, r = _sig(mx[:, :u] + mi[:, :u]), _sig(mx[:, u:2 * u] + mi[:, u:])
        hh = np.tanh(mx[:, 2 * u:] + (r * h) @ U[:, 2 * u:])
    h = z * h + (1 - z) * hh
    return [h], h


def np_rnn(kind, w, x, mask=None, go_backwards=False, return_sequences=False, return_state=False,
           zero_output=False, reset_after=True):
    """Keras' generic loop (backend rnn without unroll): outputs in processing order."""
    u = w[1].shape[0]
    states = [np.zeros((x.shape[0], u))] * (2 if kind == "lstm" else 1)
    outs = []
    for t in (range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])):
        new, out = np_cell(kind, w, x[:, t].astype(np.float64), states, reset_after)
        if mask is not None:
            m = mask[:, t][:, None]
            out = np.where(m, out, 0.0 if zero_output else states[0])
            new = [np.where(m, n, s) for n, s in zip(new, states)]
        states = new
        outs.append(out)
    y = np.stack(outs, axis=1) if return_sequences else outs[-1]
    return [y] + states if return_state else y


def np_bidirectional(kind, wf, wb, x, mask=None, merge_mode="concat", return_sequences=False):
    zo = return_sequences  # Keras' Bidirectional sets zero_output_for_mask = return_sequences
    y = np_rnn(kind, wf, x, mask, False, return_sequences, zero_output=zo)
    yr = np_rnn(kind, wb, x, mask, True, return_sequences, zero_output=zo)
    if return_sequences:
        yr = yr[:, ::-1]
    return {"concat": lambda: np.concatenate([y, yr], -1), "sum": lambda: y + yr, "ave": lambda: (y + yr) / 2,
            "mul": lambda: y * yr}[merge_mode]()


# ---- helpers -------------------------------------------------------------------------------------------

def _model(layer, masked=False, target="numpy"):
    """Input (or Embedding(mask_zero=True) over ids) -> layer; random weights set; returns
    (model, the layer's weights)."""
    if masked:
        inp = gn.Input((T,), dtype="int64")
        emb = gn.Embedding(10, FEAT, mask_zero=True, embeddings_initializer=rng.standard_normal((10, FEAT)))
        out = layer(emb(inp))
    else:
        inp = gn.Input((T, FEAT))
        out = layer(inp)
    m = gn.Model(inp, out)
    m.compile(loss="mse", optimizer="sgd", target=target)
    ws = [(rng.standard_normal(w.shape) * 0.5).astype(np.float32) for w in layer.get_weights()]
    layer.set_weights(ws)
    return m, ws


def _masked_inputs(m):
    emb = next(l for l in m.layers if isinstance(l, gn.Embedding))
    return emb.get_weights()[0][IDS], IDS != 0


CELLS = [("simple", lambda **k: gn.SimpleRNN(H, **k), {}),
         ("lstm", lambda **k: gn.LSTM(H, **k), {}),
         ("gru", lambda **k: gn.GRU(H, **k), {}),
         ("gru_ra0", lambda **k: gn.GRU(H, reset_after=False, **k), {"reset_after": False})]


# ---- forward against the NumPy oracle --------------------------------------------------------------------

@pytest.mark.parametrize("kind,make,extra", CELLS, ids=[c[0] for c in CELLS])
@pytest.mark.parametrize("opts", [{}, {"return_sequences": True}, {"return_sequences": True, "go_backwards": True},
                                  {"go_backwards": True}])
def test_forward_matches_keras_formulas(kind, make, extra, opts):
    m, w = _model(make(**opts))
    want = np_rnn(kind.split("_")[0], w, X, **opts, **extra)
    np.testing.assert_allclose(m.predict(X), want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("kind,make,extra", CELLS, ids=[c[0] for c in CELLS])
@pytest.mark.parametrize("opts", [{}, {"return_sequences": True, "go_backwards": True}])
def test_masked_steps_carry_the_state_through(kind, make, extra, opts):
    m, w = _model(make(**opts), masked=True)
    e, mask = _masked_inputs(m)
    want = np_rnn(kind.split("_")[0], w, e, mask, **opts, **extra)
    np.testing.assert_allclose(m.predict(IDS), want, rtol=2e-5, atol=2e-6)


def test_trailing_padding_is_the_shorter_sequence():
    # a property of masking that needs no formula: a sequence padded at the end gives the same
    # last output as the unpadded sequence alone
    layer = gn.LSTM(H)
    m, _ = _model(layer, masked=True)
    got = m.predict(IDS[:1])
    short = gn.Input((3,), dtype="int64")
    emb2 = gn.Embedding(10, FEAT)
    m2 = gn.Model(short, gn.LSTM(H)(emb2(short)))
    m2.compile(loss="mse", optimizer="sgd", target="numpy")
    m2.set_weights(m.get_weights())
    np.testing.assert_allclose(got, m2.predict(IDS[:1, :3]), rtol=1e-6)


def test_return_state_gives_output_and_states():
    layer = gn.LSTM(H, return_sequences=True, return_state=True)
    inp = gn.Input((T, FEAT))
    seq, h, c = layer(inp)
    assert seq.shape == (None, T, H) and h.shape == (None, H) and c.shape == (None, H)
    m = gn.Model(inp, [seq, h, c])
    assert m.output_names == ["lstm", "lstm_1", "lstm_2"]
    m.compile(loss="mse", optimizer="sgd", target="numpy")
    w = [(rng.standard_normal(a.shape) * 0.5).astype(np.float32) for a in layer.get_weights()]
    layer.set_weights(w)
    for got, want in zip(m.predict(X), np_rnn("lstm", w, X, return_sequences=True, return_state=True)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("masked", [False, True])
def test_bidirectional(merge_mode, masked):
    rs = merge_mode in ("concat", "ave")
    layer = gn.Bidirectional(gn.GRU(H, return_sequences=rs), merge_mode=merge_mode)
    m, w = _model(layer, masked=masked)
    x, mask = _masked_inputs(m) if masked else (X, None)
    want = np_bidirectional("gru", w[:3], w[3:], x, mask, merge_mode, rs)
    np.testing.assert_allclose(m.predict(IDS if masked else X), want, rtol=2e-5, atol=2e-6)


def test_bidirectional_merge_none_and_names():
    layer = gn.Bidirectional(gn.LSTM(H, return_sequences=True), merge_mode=None)
    inp = gn.Input((T, FEAT))
    y, yr = layer(inp)
    m = gn.Model(inp, [y, yr])
    assert [n.name for n in m.weights] == [f"bidirectional/{d}_lstm/lstm_cell/{k}" for d in ("forward", "backward")
                                          for k in ("kernel", "recurrent_kernel", "bias")]
    m.compile(loss="mse", optimizer="sgd", target="numpy")
    w = [(rng.standard_normal(a.shape) * 0.5).astype(np.float32) for a in layer.get_weights()]
    layer.set_weights(w)
    got = m.predict(X)
    np.testing.assert_allclose(got[0], np_rnn("lstm", w[:3], X, return_sequences=True), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(got[1], np_rnn("lstm", w[3:], X, go_backwards=True, return_sequences=True)[:, ::-1],
                               rtol=2e-5, atol=2e-6)


def test_masking_layer_and_average_pooling_over_unmasked_steps():
    x = X.copy()
    x[0, 3:] = 0.0
    x[2, 1] = 0.0
    inp = gn.Input((T, FEAT))
    masked = gn.Masking()(inp)
    m = gn.Model(inp, [gn.GlobalAveragePooling1D()(masked), gn.SimpleRNN(H, return_sequences=True)(masked)])
    m.compile(loss="mse", optimizer="sgd", target="numpy")
    rnn = m.layers[-1]
    w = [(rng.standard_normal(a.shape) * 0.5).astype(np.float32) for a in rnn.get_weights()]
    rnn.set_weights(w)
    keep = (x != 0).any(-1)
    pooled, seq = m.predict(x)
    np.testing.assert_allclose(pooled, (x * keep[..., None]).sum(1) / keep.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(seq, np_rnn("simple", w, x, keep, return_sequences=True), rtol=2e-5, atol=2e-6)


def test_mask_passes_through_dense_and_stops_at_a_last_output():
    inp = gn.Input((T,), dtype="int64")
    e = gn.Embedding(10, FEAT, mask_zero=True)(inp)
    d = gn.Dense(FEAT, activation="tanh")(e)            # passes the mask on (Keras' supports_masking)
    r = gn.LSTM(H, return_sequences=True)(d)           # keeps it (return_sequences)
    r2 = gn.GRU(H)(r)                                  # uses it, outputs none
    m = gn.Model(inp, gn.Dense(2)(r2))
    m.compile(loss="mse", optimizer="sgd", target="numpy")
    base = m.predict(IDS)
    ids2 = IDS.copy()
    ids2[0, 3:] = 0
    np.testing.assert_allclose(m.predict(ids2), base)  # unchanged: those were already padding
    emb = m.layers[1].get_weights()[0]
    emb[0] += 10.0  # the padding id's vector cannot matter when every layer honours the mask
    m.layers[1].set_weights([emb])
    np.testing.assert_allclose(m.predict(IDS), base, rtol=1e-6, atol=1e-7)


# ---- the loop's structure ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layer,n_body", [(gn.LSTM(H), 1), (gn.GRU(H), 1), (gn.GRU(H, reset_after=False), 2),
                                          (gn.SimpleRNN(H), 1)])
def test_input_projection_is_hoisted_out_of_the_loop(layer, n_body):
    x = gc.input("x", (None, T, FEAT))
    y = layer(x)
    nodes = topo_order([y])
    (scan,) = [n for n in nodes if n.op == "scan"]
    outside = [n for n in nodes if n.op in ("matmul", "batch_matmul", "dot")]
    body = [n for n in scan.attrs["body"].order() if n.op in ("matmul", "batch_matmul", "dot")]
    # one GEMM over batch*time rows before the loop; only h @ recurrent_kernel inside
    assert len(outside) == 1 and outside[0].inputs[1] is layer.kernel, outside
    assert len(body) == n_body


# ---- gradients ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,make,extra", CELLS, ids=[c[0] for c in CELLS])
def test_gradients_against_finite_differences(kind, make, extra):
    layer = make(return_sequences=True, go_backwards=kind == "gru")
    x = gc.input("x", (B, T, FEAT))
    mask = gc.input("mask", (B, T), "bool")
    layer._build((T, FEAT))
    y = layer.call(x, mask=mask)
    loss = gc.sum(y * gc.const(rng.standard_normal((B, T, H)).astype(np.float32)))
    params = {n.name: (rng.standard_normal(n.shape) * 0.5).astype(np.float32) for n in layer.weights}
    rep = gc.check_grads(loss, layer.weights + [x], {"x": X, "mask": IDS != 0}, params)
    assert max(rep.values()) < 1e-5


def test_compiled_training_step_matches_the_interpreter():
    """Embedding(mask_zero) -> Bidirectional(GRU) -> LSTM -> Dense trained two steps on the
    cpu target (the scans unrolled into native kernels) and on the numpy target."""
    def build(target):
        inp = gn.Input((4,), dtype="int64")
        e = gn.Embedding(10, 3, mask_zero=True)(inp)
        b = gn.Bidirectional(gn.GRU(4, return_sequences=True))(e)
        r = gn.LSTM(5)(b)
        m = gn.Model(inp, gn.Dense(2)(r))
        m.compile(loss="mse", optimizer=gc.optim.SGD(0.5), target=target, seed=3)
        return m
    ids = IDS[:, :4].copy()
    yv = rng.standard_normal((B, 2)).astype(np.float32)
    ms = {t: build(t) for t in ("numpy", "cpu")}
    ms["cpu"].set_weights(ms["numpy"].get_weights())
    w0 = ms["numpy"].get_weights()
    for m in ms.values():
        for _ in range(2):
            m.train_on_batch(ids, yv)
    for a, b, c in zip(ms["cpu"].get_weights(), ms["numpy"].get_weights(), w0):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    assert any(not np.allclose(b, c) for b, c in zip(ms["numpy"].get_weights()[1:], w0[1:]))


# ---- arguments --------------------------------------------------------------------------------------------

def test_keras_defaults_and_initializers():
    layer = gn.LSTM(H)
    m, _ = _model(layer)
    m2 = gn.Sequential([gn.Input((T, FEAT)), gn.LSTM(H)])
    m2.compile(loss="mse", optimizer="sgd", target="numpy", seed=1)
    k, rk, b = m2.get_weights()
    assert k.shape == (FEAT, 4 * H) and rk.shape == (H, 4 * H) and b.shape == (4 * H,)
    np.testing.assert_allclose(rk @ rk.T, np.eye(H), atol=1e-5)   # orthogonal rows (H < 4H)
    np.testing.assert_array_equal(b, np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])  # unit_forget_bias
    g = gn.Sequential([gn.Input((T, FEAT)), gn.GRU(H, return_sequences=True), gn.GRU(2, reset_after=False)])
    g.build((None, T, FEAT))
    assert [w.shape for w in g.weights][2] == (2, 3 * H) and [w.shape for w in g.weights][5] == (6,)
    assert layer.return_sequences is False and layer.dropout == 0.0


def test_unsupported_arguments_are_named():
    with pytest.raises(ValueError, match="recurrent_dropout"):
        gn.LSTM(4, recurrent_dropout=1.2)
    with pytest.raises(NotImplementedError, match="stateful"):
        gn.GRU(4, stateful=True)
    with pytest.raises(ValueError, match="units"):
        gn.SimpleRNN(0)
    with pytest.raises(ValueError, match="merge_mode"):
        gn.Bidirectional(gn.LSTM(4), merge_mode="max")
    with pytest.raises(ValueError, match="go_backwards"):
        gn.Bidirectional(gn.LSTM(4), backward_layer=gn.LSTM(4))
    with pytest.raises(ValueError, match="ndim=3"):
        gn.Sequential([gn.Input((4,)), gn.LSTM(3)]).build((None, 4))
    s = gn.Sequential([gn.Input((T, FEAT)), gn.LSTM(3, return_state=True)])
    s.compile(loss="mse", optimizer="sgd", target="numpy")
    with pytest.raises(ValueError, match="functional API"):
        s.predict(X)
    assert gn.LSTM(4, unroll=True, use_cudnn=False).unroll


def test_input_dropout_only_in_training():
    layer = gn.LSTM(H, dropout=0.5, seed=1)
    x = gc.input("x", (B, T, FEAT))
    layer._build((T, FEAT))
    params = {n.name: (rng.standard_normal(n.shape) * 0.5).astype(np.float32) for n in layer.weights}
    w = [params[n.name] for n in layer.weights]
    params["step"] = np.asarray(0, np.int64)  # the in-step generator's key (gc.step_counter)
    train, infer = gc.evaluate([layer.call(x, training=True), layer.call(x)], {"x": X}, params)
    np.testing.assert_allclose(infer, np_rnn("lstm", w, X), rtol=2e-5, atol=2e-6)
    assert not np.allclose(train, infer)


# ---- Keras 3 itself (conftest.py's ``keras`` fixture) ----------------------------------------------------

# Keras' numpy backend calls np.array(variable, copy=False) on its own variables
_KERAS_WARNINGS = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


KERAS_CASES = {
    "lstm_seq_backwards": lambda L: L.LSTM(H, return_sequences=True, go_backwards=True),
    "gru": lambda L: L.GRU(H, return_sequences=True),
    "gru_reset_before": lambda L: L.GRU(H, reset_after=False),
    "simple_rnn": lambda L: L.SimpleRNN(H, return_sequences=True),
    "bidirectional_lstm": lambda L: L.Bidirectional(L.LSTM(H, return_sequences=True)),
    "bidirectional_sum": lambda L: L.Bidirectional(L.GRU(H), merge_mode="sum"),
}


def _keras_pair(keras, make, masked):
    if masked:
        ki, gi = keras.Input((T,), dtype="int32"), gn.Input((T,), dtype="int64")
        ko = make(keras.layers)(keras.layers.Embedding(10, FEAT, mask_zero=True)(ki))
        go = make(gn)(gn.Embedding(10, FEAT, mask_zero=True)(gi))
    else:
        ki, gi = keras.Input((T, FEAT)), gn.Input((T, FEAT))
        ko, go = make(keras.layers)(ki), make(gn)(gi)
    km, gm = keras.Model(ki, ko), gn.Model(gi, go)
    gm.compile(loss="mse", optimizer="sgd", target="numpy")
    w = [(rng.standard_normal(v.shape) * 0.5).astype(np.float32) for v in km.get_weights()]
    km.set_weights(w)
    gm.set_weights(w)  # the same layout: loads as it is
    return km, gm


@_KERAS_WARNINGS
@pytest.mark.parametrize("case", list(KERAS_CASES))
@pytest.mark.parametrize("masked", [False, True])
def test_predictions_match_keras(keras, case, masked):
    km, gm = _keras_pair(keras, KERAS_CASES[case], masked)
    x = IDS if masked else X
    np.testing.assert_allclose(gm.predict(x), km.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@_KERAS_WARNINGS
@_KERAS_WARNINGS
def test_merge_layers_combine_masks_as_keras(keras):
    # Add ORs the masks of its inputs (None if one input has none); Concatenate on the feature
    # axis counts an unmasked input as all-True: a step is kept if any input keeps it
    def build(L, Model, Input, dtype):
        i = Input((T,), dtype=dtype)
        j = Input((T,), dtype=dtype)
        x = Input((T, FEAT))
        a = L.Embedding(10, FEAT, mask_zero=True)(i)
        b = L.Embedding(10, FEAT, mask_zero=True)(j)
        return Model([i, j, x], [L.LSTM(H, return_sequences=True)(L.Add()([a, b])),
                                 L.GRU(H)(L.Concatenate()([a, b])),
                                 L.SimpleRNN(H)(L.Concatenate()([a, x])),
                                 L.SimpleRNN(H)(L.Add()([a, x]))])
    km, gm = build(keras.layers, keras.Model, keras.Input, "int32"), build(gn, gn.Model, gn.Input, "int64")
    gm.compile(loss="mse", optimizer="sgd", target="numpy")
    w = [(rng.standard_normal(v.shape) * 0.5).astype(np.float32) for v in km.get_weights()]
    km.set_weights(w)
    gm.set_weights(w)
    ids2 = np.roll(IDS, 1, axis=1)
    feeds = [IDS, ids2, X]
    for got, want in zip(gm.predict(feeds), km.predict(feeds, verbose=0)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@_KERAS_WARNINGS
def test_weight_names_match_keras(keras):
    for make in (lambda L: L.LSTM(H, name="lstm"), lambda L: L.Bidirectional(L.GRU(H, name="gru"), name="bidirectional")):
        km, gm = _keras_pair(keras, make, False)
        assert [v.path for v in km.weights] == [n.name for n in gm.weights]


_TRAIN_SCRIPT = r'''
import numpy as np, keras
import graphc.nn as gn
rng = np.random.default_rng(0)
N, T = 48, 6
ids = rng.integers(1, 12, (N, T))
for i in range(N):
    ids[i, rng.integers(2, T + 1):] = 0
y = rng.integers(0, 3, N)

def build(L, Model, Input, dtype):
    i = Input((T,), dtype=dtype)
    e = L.Embedding(12, 5, mask_zero=True)(i)
    r = L.Bidirectional(L.GRU(4, return_sequences=True))(e)
    r = L.LSTM(5, return_sequences=True)(r)
    r = L.SimpleRNN(3, go_backwards=True, return_sequences=True)(r)
    g = L.GlobalMaxPooling1D()(L.Conv1D(2, 2, padding="causal")(e))
    return Model(i, L.Dense(3)(L.Concatenate()([L.GlobalAveragePooling1D()(r), g])))

km, gm = build(keras.layers, keras.Model, keras.Input, "int32"), build(gn, gn.Model, gn.Input, "int64")
w = [rng.standard_normal(v.shape).astype(np.float32) * 0.4 for v in km.get_weights()]
km.set_weights(w)
gm.set_weights(w)
km.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
gm.compile(optimizer=gn.optimizers.Adam(0.01), loss=gn.losses.SparseCategoricalCrossentropy(from_logits=True),
           target="numpy")
hk = km.fit(ids, y, epochs=3, batch_size=16, shuffle=False, verbose=0).history["loss"]
hg = gm.fit(ids, y, epochs=3, batch_size=16, shuffle=False, verbose=0).history["loss"]
np.testing.assert_allclose(hg, hk, rtol=1e-5)
for a, b in zip(gm.get_weights(), km.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
print("same training", hk)
'''


def test_training_matches_keras_with_a_training_backend():
    """Per-epoch losses and final weights of a masked Embedding -> Bidirectional(GRU) -> LSTM ->
    SimpleRNN(go_backwards) + Conv1D model against Keras 3 on its jax backend (its numpy
    backend cannot train; jax comes with the test extra), in a subprocess: the Keras backend is
    chosen at import."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
        pytest.skip("needs keras and jax (a Keras backend that trains)")
    env = dict(os.environ, KERAS_BACKEND="jax")
    p = subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "same training" in p.stdout, p.stdout[-2000:] + p.stderr[-4000:]
