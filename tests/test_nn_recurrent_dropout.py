"""dropout / recurrent_dropout in SimpleRNN, LSTM, GRU and Bidirectional, as Keras 3 does them
(keras/src/layers/rnn/dropout_rnn_cell.py, lstm.py, gru.py, simple_rnn.py): in training ONE
input mask (batch, features) and ONE recurrent mask (batch, units) per call, reused at every
step, inverted scaling 1/(1-rate); LSTM and GRU with recurrent_dropout > 0 run Keras'
implementation 1, which draws one input and one recurrent mask PER GATE; no masks at inference.

Oracle: Keras' cell formulas in NumPy (implementation 1) fed the masks the layer drew (read from
the same evaluation), so the output matches only if that one mask is applied at every step and
in the place Keras applies it; float64 finite differences with the masks fixed (the in-step
generator is keyed by the step counter, fed here); the numpy target for training.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.nn as gn
from graphc.passes.precision import with_float_dtype

B, T, FEAT, H = 3, 5, 4, 6
rng = np.random.default_rng(7)
X = rng.standard_normal((B, T, FEAT)).astype(np.float32)


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_rnn_dropout(kind, w, x, dp, rdp, reset_after=True, go_backwards=False):
    """Keras 3's loop over its cells with fixed masks: ``dp``/``rdp`` are lists (one mask, or one
    per gate) or None; returns the last output."""
    W, U = w[0].astype(np.float64), w[1].astype(np.float64)
    b = w[2].astype(np.float64) if len(w) > 2 else None
    u = U.shape[0]
    ng = W.shape[1] // u
    h = np.zeros((x.shape[0], u))
    c = np.zeros_like(h)

    def gate(m, g):  # the mask of gate g (one mask shared by all gates, or one per gate)
        return 1.0 if m is None else m[g if len(m) > 1 else 0]

    for t in (range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])):
        xt = x[:, t].astype(np.float64)
        xs = [(xt * gate(dp, g)) @ W[:, g * u:(g + 1) * u] for g in range(ng)]
        hs = [h * gate(rdp, g) for g in range(ng)]
        if kind == "simple":
            h = np.tanh(xs[0] + (0 if b is None else b) + hs[0] @ U)
        elif kind == "lstm":
            z = [xs[g] + b[g * u:(g + 1) * u] + hs[g] @ U[:, g * u:(g + 1) * u] for g in range(4)]
            i, f, gg, o = _sig(z[0]), _sig(z[1]), np.tanh(z[2]), _sig(z[3])
            c = f * c + i * gg
            h = o * np.tanh(c)
        elif reset_after:
            bi, br = b[0], b[1]
            rz = [hs[g] @ U[:, g * u:(g + 1) * u] + br[g * u:(g + 1) * u] for g in range(3)]
            z = _sig(xs[0] + bi[:u] + rz[0])
            r = _sig(xs[1] + bi[u:2 * u] + rz[1])
            hh = np.tanh(xs[2] + bi[2 * u:] + r * rz[2])
            h = z * h + (1 - z) * hh
        else:
            z = _sig(xs[0] + b[:u] + hs[0] @ U[:, :u])
            r = _sig(xs[1] + b[u:2 * u] + hs[1] @ U[:, u:2 * u])
            hh = np.tanh(xs[2] + b[2 * u:] + (r * hs[2]) @ U[:, 2 * u:])
            h = z * h + (1 - z) * hh
    return h


CELLS = [("simple", lambda **k: gn.SimpleRNN(H, **k), {}),
         ("lstm", lambda **k: gn.LSTM(H, **k), {}),
         ("gru", lambda **k: gn.GRU(H, **k), {}),
         ("gru_ra0", lambda **k: gn.GRU(H, reset_after=False, **k), {"reset_after": False})]


def _layer(make, **kw):
    layer = make(**kw)
    layer._build((T, FEAT))
    params = {n.name: (rng.standard_normal(n.shape) * 0.5).astype(np.float32) for n in layer.weights}
    return layer, params


def _run_with_masks(layer, params, step=0, x=X):
    """The training output and the masks the layer drew, from one evaluation."""
    xin = gc.input("x", x.shape)
    dp, rdp = layer._dropout_masks(xin, True)
    out = layer.call(xin, training=True)
    nodes = [out] + list(dp or []) + list(rdp or [])
    vals = gc.evaluate(nodes, {"x": x}, {**params, "step": np.asarray(step, np.int64)})
    k = len(dp or [])
    return vals[0], (vals[1:1 + k] or None), (vals[1 + k:] or None)


@pytest.mark.parametrize("kind,make,extra", CELLS, ids=[c[0] for c in CELLS])
@pytest.mark.parametrize("rates", [(0.4, 0.0), (0.0, 0.4), (0.3, 0.5)])
def test_one_mask_per_call_reused_at_every_step_as_keras(kind, make, extra, rates):
    layer, params = _layer(make, dropout=rates[0], recurrent_dropout=rates[1], seed=5)
    y, dp, rdp = _run_with_masks(layer, params)
    w = [params[n.name] for n in layer.weights]
    per_gate = kind != "simple" and rates[1] > 0  # Keras' implementation 1
    for m, rate, shape in ((dp, rates[0], (B, FEAT)), (rdp, rates[1], (B, H))):
        if rate == 0:
            assert m is None
            continue
        assert len(m) == (layer._gates if per_gate else 1)
        for a in m:
            assert a.shape == shape
            assert set(np.unique(a)) <= {0.0, np.float32(1 / (1 - rate))}
        if len(m) > 1:
            assert not np.array_equal(m[0], m[1])  # a mask per gate, not one repeated
    np.testing.assert_allclose(y, np_rnn_dropout(kind, w, X, dp, rdp, **extra), rtol=2e-5, atol=2e-6)
    (infer,) = gc.evaluate([layer.call(gc.input("x", X.shape))], {"x": X}, params)
    assert not np.allclose(y, infer)  # the masks changed something


def test_a_new_mask_per_step_would_not_match():
    """SimpleRNN with identity recurrent weights, zero input weights and h0 from a first step of
    ones: the per-step factor of each unit is its recurrent mask, so the output is that mask to
    the power T-1 (a mask drawn anew per step would give a product of different masks)."""
    layer = gn.SimpleRNN(H, activation="linear", recurrent_dropout=0.5, seed=2, use_bias=False)
    layer._build((T, 1))
    params = {layer.kernel.name: np.ones((1, H), np.float32), layer.recurrent_kernel.name: np.eye(H, dtype=np.float32)}
    x = np.zeros((B, T, 1), np.float32)
    x[:, 0] = 1.0
    y, _, rdp = _run_with_masks(layer, params, x=x)
    np.testing.assert_allclose(y, rdp[0] ** (T - 1), rtol=1e-6)
    assert (y == 0).any() and (y > 1).any()


def test_kept_fraction_and_scaling():
    layer = gn.LSTM(50, dropout=0.3, recurrent_dropout=0.2, seed=11)
    layer._build((2, 40))
    params = {n.name: np.zeros(n.shape, np.float32) for n in layer.weights}
    x = gc.input("x", (400, 2, 40))
    dp, rdp = layer._dropout_masks(x, True)
    vals = gc.evaluate(dp + rdp, {"x": np.zeros((400, 2, 40), np.float32)}, {**params, "step": np.asarray(3, np.int64)})
    for v, rate in zip(vals, [0.3] * 4 + [0.2] * 4):
        kept = v != 0
        np.testing.assert_allclose(v[kept], 1 / (1 - rate), rtol=1e-6)
        assert abs(kept.mean() - (1 - rate)) < 0.03  # 16000-20000 draws: > 6 standard deviations
    # the 8 masks are not copies of one another (distinct seeds): independent masks agree on
    # 0.7^2+0.3^2 = 58% (input) and 68% (recurrent) of the elements, identical ones on 100%
    keep = [v[:, :40] != 0 for v in vals]
    for a in range(8):
        for b in range(a + 1, 8):
            assert np.mean(keep[a] == keep[b]) < 0.8


def test_new_masks_each_training_step():
    layer, params = _layer(lambda **k: gn.GRU(H, **k), dropout=0.3, recurrent_dropout=0.3, seed=1)
    _, dp0, rdp0 = _run_with_masks(layer, params, step=0)
    _, dp1, rdp1 = _run_with_masks(layer, params, step=1)
    assert not np.array_equal(dp0[0], dp1[0]) and not np.array_equal(rdp0[0], rdp1[0])


@pytest.mark.parametrize("kind,make,extra", CELLS, ids=[c[0] for c in CELLS])
def test_rate_zero_and_inference_are_the_plain_layer(kind, make, extra):
    plain, params = _layer(make)
    x = gc.input("x", X.shape)
    (ref,) = gc.evaluate([plain.call(x, training=True)], {"x": X}, {**params, "step": np.asarray(0, np.int64)})
    zero = make(dropout=0.0, recurrent_dropout=0.0, seed=3)
    zero._build((T, FEAT))
    p0 = {z.name: params[p.name] for z, p in zip(zero.weights, plain.weights)}
    (y0,) = gc.evaluate([zero.call(x, training=True)], {"x": X}, {**p0, "step": np.asarray(0, np.int64)})
    np.testing.assert_array_equal(y0, ref)
    drop = make(dropout=0.5, recurrent_dropout=0.5, seed=3)
    drop._build((T, FEAT))
    p1 = {z.name: params[p.name] for z, p in zip(drop.weights, plain.weights)}
    (y1,) = gc.evaluate([drop.call(x)], {"x": X}, p1)
    np.testing.assert_array_equal(y1, ref)


@pytest.mark.parametrize("kind,make,extra", CELLS, ids=[c[0] for c in CELLS])
def test_gradients_with_fixed_masks_against_finite_differences(kind, make, extra):
    layer, params = _layer(make, dropout=0.3, recurrent_dropout=0.4, seed=4, return_sequences=True)
    x = gc.input("x", (B, T, FEAT))
    y = layer.call(x, training=True)
    loss = gc.sum(y * gc.const(rng.standard_normal((B, T, H)).astype(np.float32)))
    # graphc.check_grads feeds no state, and the masks' key is the step counter (a state): the same
    # fourth-order central differences here, in float64, the step fixed so every evaluation
    # sees the same masks
    y64, *w64 = with_float_dtype([loss, *layer.weights, x])
    vals = {k: v.astype(np.float64) for k, v in params.items()}
    vals["step"] = np.asarray(2, np.int64)
    feeds = {"x": X.astype(np.float64)}
    sym = gc.evaluate(gc.grad(y64, w64), feeds, vals)
    probe = np.random.default_rng(1)
    for node, g in zip(w64, sym):
        base = feeds["x"] if node.op == "input" else vals[node.name]
        for i in probe.choice(base.size, min(base.size, 12), replace=False):
            idx = np.unravel_index(i, base.shape)
            old, h = base[idx], 1e-4
            f = {}
            for j in (1, -1, 2, -2):
                base[idx] = old + j * h
                f[j] = float(gc.evaluate([y64], feeds, vals)[0])
            base[idx] = old
            num = (8.0 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12.0 * h)
            assert abs(num - g[idx]) <= 1e-6 * max(1.0, abs(num)), (node.name, idx, num, g[idx])


def _bidir_model(target="numpy"):
    inp = gn.Input((T, FEAT))
    r = gn.Bidirectional(gn.LSTM(H, dropout=0.2, recurrent_dropout=0.3, seed=9, return_sequences=True))(inp)
    out = gn.Dense(1)(gn.GRU(3, recurrent_dropout=0.25)(r))
    m = gn.Model(inp, out)
    m.compile(loss="mse", optimizer=gc.optim.Adam(0.02), target=target, seed=1)
    return m


def test_bidirectional_and_a_short_fit_lower_the_loss():
    m = _bidir_model()
    yv = (X.sum(axis=(1, 2))[:, None] * 0.1).astype(np.float32)
    before = m.evaluate(X, yv, verbose=0)
    np.testing.assert_array_equal(m.predict(X, verbose=0), m.predict(X, verbose=0))  # no masks at inference
    m.fit(X, yv, epochs=30, batch_size=B, verbose=0)
    assert m.evaluate(X, yv, verbose=0) < 0.5 * before
    bi = m.layers[1]
    assert bi.forward_layer.recurrent_dropout == bi.backward_layer.recurrent_dropout == 0.3
    x = gc.input("x", X.shape)
    f, b = (bi.forward_layer._dropout_masks(x, True)[1], bi.backward_layer._dropout_masks(x, True)[1])
    fv, bv = gc.evaluate([f[0], b[0]], {"x": X}, {"step": np.asarray(0, np.int64)})
    assert not np.array_equal(fv, bv)  # the two directions draw their own masks


def test_config_round_trip_and_keras_file(tmp_path):
    for cls, kw in ((gn.SimpleRNN, {}), (gn.LSTM, {"seed": 3}), (gn.GRU, {"seed": 4})):
        layer = cls(H, dropout=0.25, recurrent_dropout=0.5, **kw)
        cfg = layer.get_config()
        assert cfg["dropout"] == 0.25 and cfg["recurrent_dropout"] == 0.5
        back = cls.from_config(cfg)
        assert back.get_config() == cfg and back.recurrent_dropout == 0.5
    m = _bidir_model()
    path = m.save(str(tmp_path / "m.keras"))
    m2 = gn.models.load_model(path) if hasattr(gn, "models") else gn.load_model(path)
    l2 = m2.layers[1].forward_layer
    assert (l2.dropout, l2.recurrent_dropout, l2.seed) == (0.2, 0.3, 9)
    np.testing.assert_allclose(m2.predict(X, verbose=0), m.predict(X, verbose=0), rtol=1e-5, atol=1e-7)


def test_remaining_refusals_name_the_argument():
    with pytest.raises(NotImplementedError, match=r"stateful=True"):
        gn.LSTM(4, stateful=True)
    with pytest.raises(ValueError, match=r"recurrent_dropout=.*\[0, 1\)"):
        gn.GRU(4, recurrent_dropout=1.0)
    with pytest.raises(ValueError, match=r"SimpleRNN\(dropout=.*-0.1"):
        gn.SimpleRNN(4, dropout=-0.1)
    with pytest.raises(NotImplementedError, match="kernel_constraint"):
        gn.LSTM(4, kernel_constraint="max_norm")


def test_compiled_cpu_with_steps_per_execution_matches_the_interpreter():
    """The masks are drawn inside the compiled step (the in-step generator, keyed by the step
    counter): an LSTM with both dropouts trained 4 steps on cpu, 2 steps per native call,
    gives the interpreter's weights after 4 single steps."""
    def build(target, k):
        inp = gn.Input((T, FEAT))
        r = gn.LSTM(4, dropout=0.3, recurrent_dropout=0.3, return_sequences=True)(inp)
        m = gn.Model(inp, gn.Dense(1)(gn.SimpleRNN(3, dropout=0.2, recurrent_dropout=0.4)(r)))
        m.compile(loss="mse", optimizer=gc.optim.SGD(0.3), target=target, seed=2, steps_per_execution=k)
        return m
    x = rng.standard_normal((4 * B, T, FEAT)).astype(np.float32)
    yv = rng.standard_normal((4 * B, 1)).astype(np.float32)
    ref, cpu = build("numpy", 1), build("cpu", 2)
    cpu.set_weights(ref.get_weights())
    w0 = ref.get_weights()
    for m in (ref, cpu):
        m.fit(x, yv, batch_size=B, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(cpu.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    assert all(not np.allclose(b, c) for b, c in zip(ref.get_weights(), w0))
