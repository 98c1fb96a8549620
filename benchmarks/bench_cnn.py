"""Time ONE training step (forward + backward + Adam) of a float32 NHWC CNN: graphc's compiled
targets against eager NumPy (honest im2col), PyTorch eager, torch.compile and JAX jit, each in a
process of its own (rounds alternating between them), then all side by side in one process;
with the step's GEMM floor.

    python benchmarks/bench_cnn.py                        # digits and cifar configs, all contenders
    python benchmarks/bench_cnn.py --configs cifar --budget 60
    python benchmarks/bench_cnn.py --quick --no-peers     # smoke run (seconds)

Configs (conv = 3x3, stride 1, "same" padding, + bias, relu; pool = 2x2 max pool, stride 2):

- digits: 8x8x1, conv 32 -> pool -> conv 64 -> pool -> flatten -> dense 128 relu -> dense 10,
  batch 32 (examples/cnn.py's model);
- cifar:  32x32x3, conv 32 -> pool -> conv 64 -> pool -> conv 128 -> pool -> flatten -> dense 10,
  batch 64.

Contenders (see benchmarks/_model_bench.py for the harness):

- graphc cpu / parallel: ``gc.compile(loss, optimizer=gc.optim.Adam(1e-3), target=...)``.
- eager NumPy: im2col through ``as_strided`` (one copy into a preallocated column buffer) and
  ONE GEMM per conv, bias + relu in place, pooling as a max over a reshaped view, the pooling
  gradient as an equality mask, col2im as nine strided adds, in-place Adam; every buffer
  allocated once.
- PyTorch eager: ``F.conv2d`` / ``F.max_pool2d`` / ``torch.addmm`` in NCHW (PyTorch's native
  layout; the dense weight's rows are permuted once so the same parameters give the same
  function), fused Adam; torch.compile: the same step function compiled.
- JAX jit: ``lax.conv_general_dilated`` in NHWC/HWIO, ``lax.reduce_window`` max pooling, the
  whole step (incl. Adam) under one ``jax.jit``.
- GEMM floor (numba): the step's GEMMs alone (forward, weight gradient and, except for the
  first conv, input gradient of every conv and dense layer) with the shapes graphc hands to
  BLAS, from ONE @njit function (the BLAS graphc's generated code calls); GEMM floor (numpy):
  the same through ``np.dot(out=)``; Adam pass: one fused loop over params, grads, m and v.
  floor = GEMM floor (numba) + Adam pass.

Every contender first runs 3 steps from graphc's initial parameters (seed 0) on the same
batch; its losses are compared with graphc cpu's (``loss_check`` in the JSON).
Results: a table on stdout and benchmarks/results/bench_cnn.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_bench import Bench, NumpyAdam, jax_adam_step, linear_gemms, main, numpy_softmax_ce, torch_adam_step  # noqa: E402

CONFIGS = {
    "digits": {"batch": 32, "hw": 8, "cin": 1, "filters": (32, 64), "dense": (128,), "classes": 10},
    "cifar": {"batch": 64, "hw": 32, "cin": 3, "filters": (32, 64, 128), "dense": (), "classes": 10},
    "quick": {"batch": 4, "hw": 8, "cin": 1, "filters": (4, 8), "dense": (16,), "classes": 10},
}


def describe(c: dict) -> str:
    convs = " -> ".join(f"conv{f} -> pool" for f in c["filters"])
    dense = "".join(f" -> dense {d}" for d in c["dense"])
    return f"{c['hw']}x{c['hw']}x{c['cin']}, {convs} -> flatten{dense} -> dense {c['classes']}, batch {c['batch']}"


def _layers(c: dict):
    """[(H, W, Cin, Cout)] of the convs, then [(fan_in, fan_out)] of the dense layers."""
    convs, s, cin = [], c["hw"], c["cin"]
    for f in c["filters"]:
        convs.append((s, s, cin, f))
        s, cin = s // 2, f
    dense, w = [], s * s * cin
    for d in (*c["dense"], c["classes"]):
        dense.append((w, d))
        w = d
    return convs, dense


def graphc_loss(c: dict):
    import graphc as gc
    x = gc.input("x", (None, c["hw"], c["hw"], c["cin"]))
    y = gc.input("y", (None,), dtype="int64")
    convs, dense = _layers(c)
    h = x
    for i, (_, _, cin, cout) in enumerate(convs, 1):
        K = gc.param(f"K{i}", (3, 3, cin, cout), init="he_normal")
        b = gc.param(f"c{i}", (cout,), init="zeros")
        h = gc.max_pool2d(gc.relu(gc.conv2d(h, K, strides=1, padding="same") + b), 2)
    h = gc.reshape(h, (-1, dense[0][0]))
    for j, (fi, fo) in enumerate(dense, 1):
        last = j == len(dense)
        W = gc.param(f"W{j}", (fi, fo), init="glorot_uniform" if last else "he_normal")
        b = gc.param(f"b{j}", (fo,), init="zeros")
        h = h @ W + b
        if not last:
            h = gc.relu(h)
    return gc.softmax_cross_entropy(h, y)


def make_data(c: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((c["batch"], c["hw"], c["hw"], c["cin"])).astype(np.float32),
            "y": rng.integers(0, c["classes"], c["batch"]).astype(np.int64)}


def gemms(c: dict) -> list:
    convs, dense = _layers(c)
    n = c["batch"]
    out = []
    for i, (h, w, cin, cout) in enumerate(convs, 1):
        out += linear_gemms(f"conv{i}", n * h * w, 9 * cin, cout, input_grad=i > 1)
    for j, (fi, fo) in enumerate(dense, 1):
        out += linear_gemms(f"dense{j}", n, fi, fo)
    return out


# ---------------------------------------------------------------------------------------------
# eager NumPy
# ---------------------------------------------------------------------------------------------

class NumpyCNN:
    """The CNN step by hand: im2col by stride tricks + one GEMM per conv, col2im for the
    input gradient, every buffer allocated once."""

    def __init__(self, c: dict, params: dict, feeds: dict):
        f32 = np.float32
        self.x, self.y = feeds["x"], feeds["y"]
        n = self.x.shape[0]
        convs, dense = _layers(c)
        self.convs = []
        for i, (h, w, cin, cout) in enumerate(convs, 1):
            L = {"h": h, "w": w, "cin": cin, "cout": cout, "K": params[f"K{i}"], "b": params[f"c{i}"],
                 "xp": np.zeros((n, h + 2, w + 2, cin), f32),  # padded input: the border stays zero
                 "cols": np.empty((n * h * w, 9 * cin), f32),
                 "z": np.empty((n * h * w, cout), f32),
                 "p": np.empty((n, h // 2, w // 2, cout), f32),
                 "mask": np.empty((n, h // 2, 2, w // 2, 2, cout), bool),
                 "g6": np.empty((n, h // 2, 2, w // 2, 2, cout), f32),
                 "pos": np.empty((n * h * w, cout), bool),
                 "gK": np.empty((3, 3, cin, cout), f32), "gb": np.empty(cout, f32)}
            if i > 1:
                L["dcols"] = np.empty((n * h * w, 9 * cin), f32)
                L["dxp"] = np.empty((n, h + 2, w + 2, cin), f32)
            self.convs.append(L)
        self.dense = []
        for j, (fi, fo) in enumerate(dense, 1):
            self.dense.append({"W": params[f"W{j}"], "b": params[f"b{j}"], "h": np.empty((n, fo), f32),
                               "dx": np.empty((n, fi), f32), "gW": np.empty((fi, fo), f32), "gb": np.empty(fo, f32)})
        self.rows, self.mx, self.lse = np.arange(n), np.empty((n, 1), f32), np.empty((n, 1), f32)
        plist = [p for L in self.convs for p in (L["K"], L["b"])] + [p for D in self.dense for p in (D["W"], D["b"])]
        self.grads = [g for L in self.convs for g in (L["gK"], L["gb"])] + [g for D in self.dense for g in (D["gW"], D["gb"])]
        self.adam = NumpyAdam(plist)

    def step(self) -> float:
        n = self.x.shape[0]
        a = self.x
        for L in self.convs:  # forward: im2col, GEMM, bias + relu in place, 2x2 max pool
            h, w, cin, cout = L["h"], L["w"], L["cin"], L["cout"]
            xp = L["xp"]
            xp[:, 1:h + 1, 1:w + 1, :] = a
            s0, s1, s2, s3 = xp.strides
            win = as_strided(xp, (n, h, w, 3, 3, cin), (s0, s1, s2, s1, s2, s3))
            np.copyto(L["cols"].reshape(n, h, w, 3, 3, cin), win)
            z = L["z"]
            np.dot(L["cols"], L["K"].reshape(9 * cin, cout), out=z)
            z += L["b"]
            np.maximum(z, 0, out=z)
            np.max(z.reshape(n, h // 2, 2, w // 2, 2, cout), axis=(2, 4), out=L["p"])
            a = L["p"]
        a = a.reshape(n, -1)
        acts = [a]
        for j, D in enumerate(self.dense):
            np.dot(a, D["W"], out=D["h"])
            D["h"] += D["b"]
            if j < len(self.dense) - 1:
                np.maximum(D["h"], 0, out=D["h"])
            a = D["h"]
            acts.append(a)
        loss = numpy_softmax_ce(a, self.y, self.rows, self.mx, self.lse)
        dz = a
        for j in range(len(self.dense) - 1, -1, -1):  # dense layers backward
            D = self.dense[j]
            np.dot(acts[j].T, dz, out=D["gW"])
            np.sum(dz, axis=0, out=D["gb"])
            np.dot(dz, D["W"].T, out=D["dx"])
            dz = D["dx"]
            if j > 0:
                dz *= acts[j] > 0
        dp = dz.reshape(self.convs[-1]["p"].shape)
        for i in range(len(self.convs) - 1, -1, -1):  # convs backward
            L = self.convs[i]
            h, w, cin, cout = L["h"], L["w"], L["cin"], L["cout"]
            z = L["z"]
            z6 = z.reshape(n, h // 2, 2, w // 2, 2, cout)
            p6 = L["p"][:, :, None, :, None, :]
            np.equal(z6, p6, out=L["mask"])  # the max's position(s); a tie at 0 is masked by relu below
            np.multiply(L["mask"], dp[:, :, None, :, None, :], out=L["g6"])  # pooling gradient
            g2 = L["g6"].reshape(n * h * w, cout)
            np.greater(z, 0, out=L["pos"])
            g2 *= L["pos"]
            np.sum(g2, axis=0, out=L["gb"])
            np.dot(L["cols"].T, g2, out=L["gK"].reshape(9 * cin, cout))
            if i > 0:
                dcols = L["dcols"]
                np.dot(g2, L["K"].reshape(9 * cin, cout).T, out=dcols)
                dxp = L["dxp"]
                dxp.fill(0)
                d6 = dcols.reshape(n, h, w, 3, 3, cin)
                for u in range(3):  # col2im
                    for v in range(3):
                        dxp[:, u:u + h, v:v + w, :] += d6[:, :, :, u, v, :]
                dp = dxp[:, 1:h + 1, 1:w + 1, :]
        self.adam.update(self.grads)
        return loss


def numpy_step(c: dict, params: dict, feeds: dict):
    return NumpyCNN(c, params, feeds).step


# ---------------------------------------------------------------------------------------------
# PyTorch and JAX
# ---------------------------------------------------------------------------------------------

def torch_step(c: dict, params: dict, feeds: dict, compiled: bool, threads: int):
    import torch
    import torch.nn.functional as F
    convs, dense = _layers(c)
    s, cl = convs[-1][0] // 2, convs[-1][3]
    t = {}
    for i in range(1, len(convs) + 1):
        t[f"K{i}"] = params[f"K{i}"].transpose(3, 2, 0, 1).copy()  # HWIO -> OIHW
        t[f"c{i}"] = params[f"c{i}"]
    for j in range(1, len(dense) + 1):
        t[f"W{j}"], t[f"b{j}"] = params[f"W{j}"], params[f"b{j}"]
    # rows of W1 are (h, w, c) in graphc's NHWC flatten; NCHW flattens (c, h, w)
    fo = dense[0][1]
    t["W1"] = params["W1"].reshape(s, s, cl, fo).transpose(2, 0, 1, 3).reshape(-1, fo).copy()
    x = torch.from_numpy(feeds["x"].transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(feeds["y"])
    nc, nd = len(convs), len(dense)

    def loss_fn(ps, xb, yb):
        h = xb
        for i in range(1, nc + 1):
            h = F.max_pool2d(F.relu(F.conv2d(h, ps[f"K{i}"], ps[f"c{i}"], padding=1)), 2)
        h = h.flatten(1)
        for j in range(1, nd + 1):
            h = torch.addmm(ps[f"b{j}"], h, ps[f"W{j}"])
            if j < nd:
                h = F.relu(h)
        return F.cross_entropy(h, yb)

    return torch_adam_step(loss_fn, t, (x, y), compiled)


def jax_step(c: dict, params: dict, feeds: dict):
    import jax
    import jax.numpy as jnp
    from jax import lax
    convs, dense = _layers(c)
    nc, nd = len(convs), len(dense)

    def loss_fn(ps, x, y):
        h = x
        for i in range(1, nc + 1):
            h = lax.conv_general_dilated(h, ps[f"K{i}"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            h = jax.nn.relu(h + ps[f"c{i}"])
            h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        h = h.reshape(h.shape[0], -1)
        for j in range(1, nd + 1):
            h = h @ ps[f"W{j}"] + ps[f"b{j}"]
            if j < nd:
                h = jax.nn.relu(h)
        logz = jax.nn.logsumexp(h, axis=1)
        return jnp.mean(logz - jnp.take_along_axis(h, y[:, None], axis=1)[:, 0])

    return jax_adam_step(loss_fn, params, (feeds["x"], feeds["y"].astype(np.int32)))


BENCH = Bench(name="bench_cnn", configs=CONFIGS, quick_configs=["quick"], default_configs=["digits", "cifar"],
              describe=describe, graphc_loss=graphc_loss, make_data=make_data, numpy_step=numpy_step,
              torch_step=torch_step, jax_step=jax_step, gemms=gemms,
              notes=["torch runs NCHW (its native layout); graphc, eager NumPy and JAX run NHWC"])

if __name__ == "__main__":
    sys.exit(main(BENCH, Path(__file__).resolve()))
