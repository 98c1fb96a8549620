"""Time ONE training step (forward + backward + Adam) of a float32 transformer block: graphc's
compiled targets against eager NumPy, PyTorch eager, torch.compile and JAX jit, each in a
process of its own (rounds alternating between them), then all side by side in one process;
with the step's GEMM floor.

    python benchmarks/bench_transformer.py                      # small and large, all contenders
    python benchmarks/bench_transformer.py --configs large --threads 1
    python benchmarks/bench_transformer.py --quick --no-peers   # smoke run (seconds)

The model (pre-LayerNorm block, no mask): token embedding (vocab 16) + learned positions ->
x + MHA(LN(x)) -> x + MLP(LN(x)) (dense 4*d relu, dense d) -> dense to the vocabulary ->
softmax cross-entropy on every token (mean over batch x sequence). MHA: q, k, v = three dense
layers, split into heads (reshape + swapaxes), softmax(q k^T / sqrt(d_head)) v as batched
GEMMs, heads merged, output dense layer. LayerNorm epsilon 1e-5 everywhere.

- small: d_model 64, 4 heads, sequence 16, batch 32;
- large: d_model 128, 4 heads, sequence 64, batch 32.

Contenders (see benchmarks/_model_bench.py for the harness):

- graphc cpu / parallel: ``gc.take`` for the embedding, ``@`` on rank-3/4 tensors (batched
  GEMM), ``gc.swapaxes``, ``gc.softmax``, ``gc.layer_normalization``,
  ``gc.softmax_cross_entropy`` on the (-1, vocab) logits; ``gc.compile`` with Adam(1e-3).
- eager NumPy: the forward and the hand-written backward, vectorized: ``np.matmul`` on
  (B, heads, T, d_head) views for attention, LayerNorm's closed-form gradient,
  ``np.add.at`` for the embedding gradient, in-place Adam.
- PyTorch eager: ``F.scaled_dot_product_attention`` (its fused CPU kernel), ``F.layer_norm``,
  fused Adam; torch.compile: the same step function compiled.
- JAX jit: the same functions in ``jax.numpy``, the whole step (incl. Adam) under one jit.
- GEMM floor (numba): every GEMM of the step (q/k/v/output/MLP/vocabulary dense layers:
  forward, weight and input gradients; attention: q k^T and p v and both gradients of each,
  one BLAS call per (batch, head)) from ONE @njit function; GEMM floor (numpy): the same
  through ``np.dot``/``np.matmul(out=)``; Adam pass: one fused loop over params, grads, m, v.
  floor = GEMM floor (numba) + Adam pass.

Every contender first runs 3 steps from graphc's initial parameters (seed 0) on the same
batch; its losses are compared with graphc cpu's. Results: a table on stdout and
benchmarks/results/bench_transformer.json.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_bench import Bench, Gemm, NumpyAdam, jax_adam_step, linear_gemms, main, numpy_softmax_ce, torch_adam_step  # noqa: E402

CONFIGS = {
    "small": {"batch": 32, "seq": 16, "d": 64, "heads": 4, "vocab": 16},
    "large": {"batch": 32, "seq": 64, "d": 128, "heads": 4, "vocab": 16},
    "quick": {"batch": 2, "seq": 4, "d": 8, "heads": 2, "vocab": 16},
}
LN_EPS = 1e-5
DENSE = ("q", "k", "v", "o", "m1", "m2", "out")  # W_<name>, b_<name>


def describe(c: dict) -> str:
    return (f"vocab {c['vocab']}, seq {c['seq']}, d_model {c['d']}, {c['heads']} heads, MLP {4 * c['d']}, "
            f"batch {c['batch']}")


def _dims(c: dict) -> dict:
    d, v = c["d"], c["vocab"]
    return {"q": (d, d), "k": (d, d), "v": (d, d), "o": (d, d), "m1": (d, 4 * d), "m2": (4 * d, d), "out": (d, v)}


def graphc_loss(c: dict):
    import graphc as gc
    T, d, H, V = c["seq"], c["d"], c["heads"], c["vocab"]
    dh = d // H
    ids = gc.input("ids", (None, T), dtype="int64")
    y = gc.input("y", (None, T), dtype="int64")
    E = gc.param("E", (V, d), init="normal")
    P = gc.param("P", (T, d), init="normal")
    ln = {k: (gc.param(f"g_{k}", (d,), init="ones"), gc.param(f"be_{k}", (d,), init="zeros")) for k in ("ln1", "ln2")}
    W = {k: gc.param(f"W_{k}", s, init="glorot_uniform") for k, s in _dims(c).items()}
    b = {k: gc.param(f"b_{k}", (s[1],), init="zeros") for k, s in _dims(c).items()}

    def dense(x, k):
        return x @ W[k] + b[k]

    def heads(t):  # (B, T, d) -> (B, H, T, dh)
        return gc.swapaxes(gc.reshape(t, (-1, T, H, dh)), 1, 2)

    x = gc.take(E, ids) + P  # (B, T, d)
    a = gc.layer_normalization(x, *ln["ln1"], epsilon=LN_EPS)
    q, k, v = heads(dense(a, "q")), heads(dense(a, "k")), heads(dense(a, "v"))
    p = gc.softmax((q @ gc.swapaxes(k, 2, 3)) * (1.0 / math.sqrt(dh)), axis=-1)
    o = gc.reshape(gc.swapaxes(p @ v, 1, 2), (-1, T, d))
    x = x + dense(o, "o")
    m = gc.layer_normalization(x, *ln["ln2"], epsilon=LN_EPS)
    x = x + dense(gc.relu(dense(m, "m1")), "m2")
    logits = dense(x, "out")  # (B, T, V)
    return gc.softmax_cross_entropy(gc.reshape(logits, (-1, V)), gc.reshape(y, (-1,)))


def make_data(c: dict, seed: int = 0) -> dict:
    """Sequences of random tokens; the target is the sequence reversed (as a real task would)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, c["vocab"], (c["batch"], c["seq"])).astype(np.int64)
    return {"ids": ids, "y": ids[:, ::-1].copy()}


def gemms(c: dict) -> list:
    B, T, d, H = c["batch"], c["seq"], c["d"], c["heads"]
    R, dh, BH = B * T, d // H, B * H
    out = []
    for k, (fi, fo) in _dims(c).items():
        out += linear_gemms(k, R, fi, fo)
    out += [Gemm(T, dh, T, tb=True, batch=BH, what="q k^T fwd"), Gemm(T, T, dh, batch=BH, what="q k^T dq"),
            Gemm(T, T, dh, ta=True, batch=BH, what="q k^T dk"), Gemm(T, T, dh, batch=BH, what="p v fwd"),
            Gemm(T, dh, T, tb=True, batch=BH, what="p v dp"), Gemm(T, T, dh, ta=True, batch=BH, what="p v dv")]
    return out


# ---------------------------------------------------------------------------------------------
# eager NumPy
# ---------------------------------------------------------------------------------------------

def _ln(x, g, be):
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    rstd = 1.0 / np.sqrt((xc * xc).mean(-1, keepdims=True) + np.float32(LN_EPS))
    xhat = xc * rstd
    return xhat * g + be, xhat, rstd


def _ln_back(dy, xhat, rstd, g):
    """LayerNorm's gradient: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))."""
    dxhat = dy * g
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return dx, (dy * xhat).reshape(-1, g.size).sum(0), dy.reshape(-1, g.size).sum(0)


class NumpyTransformer:
    def __init__(self, c: dict, params: dict, feeds: dict):
        self.c, self.p = c, params
        self.ids, self.y = feeds["ids"], feeds["y"].reshape(-1)
        self.names = list(params)
        self.adam = NumpyAdam([params[k] for k in self.names])
        R = self.y.size
        self.rows, self.mx, self.lse = np.arange(R), np.empty((R, 1), np.float32), np.empty((R, 1), np.float32)

    def step(self) -> float:
        c, p = self.c, self.p
        B, T, d, H = c["batch"], c["seq"], c["d"], c["heads"]
        dh, R = d // H, B * T
        scale = np.float32(1.0 / math.sqrt(dh))

        def heads(t):  # (R, d) -> (B, H, T, dh) view
            return t.reshape(B, T, H, dh).transpose(0, 2, 1, 3)

        def merge(t):  # (B, H, T, dh) -> (R, d)
            return t.transpose(0, 2, 1, 3).reshape(R, d)

        x0 = (p["E"][self.ids] + p["P"]).reshape(R, d)
        a, xh1, rs1 = _ln(x0, p["g_ln1"], p["be_ln1"])
        q, k, v = (a @ p[f"W_{n}"] + p[f"b_{n}"] for n in "qkv")
        qh, kh, vh = heads(q), heads(k), heads(v)
        s = np.matmul(qh, kh.transpose(0, 1, 3, 2))
        s *= scale
        s -= s.max(-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(-1, keepdims=True)
        pr = s
        o = merge(np.matmul(pr, vh))
        x1 = x0 + (o @ p["W_o"] + p["b_o"])
        m, xh2, rs2 = _ln(x1, p["g_ln2"], p["be_ln2"])
        u = m @ p["W_m1"] + p["b_m1"]
        r = np.maximum(u, 0)
        x2 = x1 + (r @ p["W_m2"] + p["b_m2"])
        z = x2 @ p["W_out"] + p["b_out"]
        loss = numpy_softmax_ce(z, self.y, self.rows, self.mx, self.lse)  # z -> dz
        g = {}
        g["W_out"], g["b_out"] = x2.T @ z, z.sum(0)
        dx2 = z @ p["W_out"].T
        g["W_m2"], g["b_m2"] = r.T @ dx2, dx2.sum(0)
        du = dx2 @ p["W_m2"].T
        du *= u > 0
        g["W_m1"], g["b_m1"] = m.T @ du, du.sum(0)
        dln, g["g_ln2"], g["be_ln2"] = _ln_back(du @ p["W_m1"].T, xh2, rs2, p["g_ln2"])
        dx1 = dx2 + dln
        g["W_o"], g["b_o"] = o.T @ dx1, dx1.sum(0)
        do = heads(dx1 @ p["W_o"].T)
        dp = np.matmul(do, vh.transpose(0, 1, 3, 2))
        dvh = np.matmul(pr.transpose(0, 1, 3, 2), do)
        dp -= (dp * pr).sum(-1, keepdims=True)  # softmax's gradient
        dp *= pr
        dp *= scale
        dqh, dkh = np.matmul(dp, kh), np.matmul(dp.transpose(0, 1, 3, 2), qh)
        da = np.zeros((R, d), np.float32)
        for n, dt in (("q", dqh), ("k", dkh), ("v", dvh)):
            dt = merge(dt)
            g[f"W_{n}"], g[f"b_{n}"] = a.T @ dt, dt.sum(0)
            da += dt @ p[f"W_{n}"].T
        dln, g["g_ln1"], g["be_ln1"] = _ln_back(da, xh1, rs1, p["g_ln1"])
        dx0 = dx1 + dln
        g["P"] = dx0.reshape(B, T, d).sum(0)
        g["E"] = np.zeros_like(p["E"])
        np.add.at(g["E"], self.ids.reshape(-1), dx0)
        self.adam.update([g[k] for k in self.names])
        return loss


def numpy_step(c: dict, params: dict, feeds: dict):
    return NumpyTransformer(c, params, feeds).step


# ---------------------------------------------------------------------------------------------
# PyTorch and JAX
# ---------------------------------------------------------------------------------------------

def torch_step(c: dict, params: dict, feeds: dict, compiled: bool, threads: int):
    import torch
    import torch.nn.functional as F
    T, d, H, V = c["seq"], c["d"], c["heads"], c["vocab"]
    dh = d // H

    def loss_fn(ps, ids, y):
        def dense(x, k):
            return x @ ps[f"W_{k}"] + ps[f"b_{k}"]

        def heads(t):
            return t.view(-1, T, H, dh).transpose(1, 2)

        x = ps["E"][ids] + ps["P"]
        a = F.layer_norm(x, (d,), ps["g_ln1"], ps["be_ln1"], LN_EPS)
        o = F.scaled_dot_product_attention(heads(dense(a, "q")), heads(dense(a, "k")), heads(dense(a, "v")))
        x = x + dense(o.transpose(1, 2).reshape(-1, T, d), "o")
        m = F.layer_norm(x, (d,), ps["g_ln2"], ps["be_ln2"], LN_EPS)
        x = x + dense(F.relu(dense(m, "m1")), "m2")
        return F.cross_entropy(dense(x, "out").reshape(-1, V), y.reshape(-1))

    return torch_adam_step(loss_fn, params, (torch.from_numpy(feeds["ids"]), torch.from_numpy(feeds["y"])), compiled)


def jax_step(c: dict, params: dict, feeds: dict):
    import jax
    import jax.numpy as jnp
    T, d, H, V = c["seq"], c["d"], c["heads"], c["vocab"]
    dh = d // H

    def ln(x, g, be):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + LN_EPS) * g + be

    def loss_fn(ps, ids, y):
        def dense(x, k):
            return x @ ps[f"W_{k}"] + ps[f"b_{k}"]

        def heads(t):
            return t.reshape(-1, T, H, dh).transpose(0, 2, 1, 3)

        x = ps["E"][ids] + ps["P"]
        a = ln(x, ps["g_ln1"], ps["be_ln1"])
        q, k, v = heads(dense(a, "q")), heads(dense(a, "k")), heads(dense(a, "v"))
        pr = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh), axis=-1)
        x = x + dense((pr @ v).transpose(0, 2, 1, 3).reshape(-1, T, d), "o")
        m = ln(x, ps["g_ln2"], ps["be_ln2"])
        x = x + dense(jax.nn.relu(dense(m, "m1")), "m2")
        z = dense(x, "out").reshape(-1, V)
        logz = jax.nn.logsumexp(z, axis=1)
        return jnp.mean(logz - jnp.take_along_axis(z, y.reshape(-1)[:, None], axis=1)[:, 0])

    return jax_adam_step(loss_fn, params, (feeds["ids"].astype(np.int32), feeds["y"].astype(np.int32)))


BENCH = Bench(name="bench_transformer", configs=CONFIGS, quick_configs=["quick"], default_configs=["small", "large"],
              describe=describe, graphc_loss=graphc_loss, make_data=make_data, numpy_step=numpy_step,
              torch_step=torch_step, jax_step=jax_step, gemms=gemms,
              notes=["torch uses F.scaled_dot_product_attention; the others spell attention out"])

if __name__ == "__main__":
    sys.exit(main(BENCH, Path(__file__).resolve()))
