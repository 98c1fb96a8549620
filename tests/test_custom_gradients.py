"""Optimizers that compute their own gradients (``Optimizer.gradients``) and ``gc.substitute``.

The three example optimizers of examples/custom_optimizer.py (SAM, a Hutchinson-diagonal
AdaHessian, centralized Adam) are checked over several steps against references written
independently in NumPy: a hand-written forward/backward pass of the same 2-layer tanh MLP,
and Hessian-vector products by the complex step, Im(grad(w + i h z)) / h, which is exact
to rounding for h = 1e-30 (no cancellation), so the tolerances are those of float64.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.ir import topo_order
from graphc.training import training_program

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("custom_optimizer_example", ROOT / "examples" / "custom_optimizer.py")
ex = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ex)

D_IN, D_H, D_OUT, BATCH, STEPS = 4, 5, 3, 8, 5
NAMES = ("W1", "W2", "b1", "b2")


# ---- the model, in graphc and in NumPy --------------------------------------------------------

def mlp(dtype="float64"):
    """(loss, params by name, x, y): mse(tanh(x @ W1 + b1) @ W2 + b2, y). Hash-consed, so
    every call with one dtype returns the same nodes."""
    x = gc.input("x", (None, D_IN), dtype=dtype)
    y = gc.input("y", (None, D_OUT), dtype=dtype)
    p = {"W1": gc.param("W1", (D_IN, D_H), dtype=dtype), "b1": gc.param("b1", (D_H,), dtype=dtype),
         "W2": gc.param("W2", (D_H, D_OUT), dtype=dtype), "b2": gc.param("b2", (D_OUT,), dtype=dtype)}
    loss = gc.mse(gc.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"], y)
    return loss, p, x, y


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, D_IN))
    y = rng.standard_normal((BATCH, D_OUT))
    w = {"W1": 0.7 * rng.standard_normal((D_IN, D_H)), "b1": 0.1 * rng.standard_normal(D_H),
         "W2": 0.7 * rng.standard_normal((D_H, D_OUT)), "b2": 0.1 * rng.standard_normal(D_OUT)}
    return x, y, w


def np_loss_grad(w, x, y):
    """Loss and gradients of the MLP, by hand; only analytic ops, so complex w works."""
    h = np.tanh(x @ w["W1"] + w["b1"])
    d = h @ w["W2"] + w["b2"] - y
    loss = np.mean(d * d)
    dpred = 2.0 * d / d.size
    dz = (dpred @ w["W2"].T) * (1.0 - h * h)
    return loss, {"W1": x.T @ dz, "b1": dz.sum(0), "W2": h.T @ dpred, "b2": dpred.sum(0)}


def np_hvp(w, x, y, z, h=1e-30):
    """H z by the complex step on the gradient."""
    _, g = np_loss_grad({k: w[k] + 1j * h * z[k] for k in w}, x, y)
    return {k: g[k].imag / h for k in g}


def np_global_norm(g):
    return np.sqrt(sum(np.sum(v * v) for v in g.values()))


def np_clip(g, c):
    """Keras' global_clipnorm: g * c / max(||g||, c)."""
    if c is None:
        return g
    s = c / max(np_global_norm(g), c)
    return {k: v * s for k, v in g.items()}


def np_sam_grad(w, x, y, rho):
    """Foret et al. 2021: e = rho g / ||g|| (one norm over all params); gradient at w + e."""
    _, g = np_loss_grad(w, x, y)
    n = np_global_norm(g)
    return np_loss_grad({k: w[k] + rho * g[k] / (n + 1e-12) for k in w}, x, y)[1]


class NpSGD:
    """Keras SGD with momentum: v = mom v - lr g; w = w + v."""

    def __init__(self, lr, momentum):
        self.lr, self.mom, self.v = lr, momentum, None

    def apply(self, w, g, t):
        if self.v is None:
            self.v = {k: np.zeros_like(v) for k, v in w.items()}
        self.v = {k: self.mom * self.v[k] - self.lr * g[k] for k in w}
        return {k: w[k] + self.v[k] for k in w}


class NpAdam:
    """Keras Adam: m, v moments; w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps).
    ``second`` replaces g*g in v (AdaHessian: D*D) and ``hat`` switches to AdaHessian's
    form w -= lr m_hat / (sqrt(v_hat) + eps)."""

    def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-7, hat=False):
        self.lr, self.b1, self.b2, self.eps, self.hat = lr, b1, b2, eps, hat
        self.m = self.v = None

    def apply(self, w, g, t, second=None):
        if self.m is None:
            self.m = {k: np.zeros_like(v) for k, v in w.items()}
            self.v = {k: np.zeros_like(v) for k, v in w.items()}
        second = second or {k: g[k] * g[k] for k in g}
        b1, b2 = self.b1, self.b2
        self.m = {k: b1 * self.m[k] + (1 - b1) * g[k] for k in w}
        self.v = {k: b2 * self.v[k] + (1 - b2) * second[k] for k in w}
        if self.hat:
            return {k: w[k] - self.lr * (self.m[k] / (1 - b1 ** t)) / (np.sqrt(self.v[k] / (1 - b2 ** t)) + self.eps)
                    for k in w}
        alpha = self.lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        return {k: w[k] - alpha * self.m[k] / (np.sqrt(self.v[k]) + self.eps) for k in w}


def run_graphc(opt, target, dtype="float64", probes=None):
    """STEPS steps of ``opt`` on the MLP; returns (losses, final params)."""
    loss, _, _, _ = mlp(dtype)
    x, y, w = data()
    step = gc.compile(loss, optimizer=opt, target=target, params={k: v.astype(dtype) for k, v in w.items()})
    losses = []
    for t in range(STEPS):
        extra = {k: v.astype(dtype) for k, v in (probes[t] if probes else {}).items()}
        losses.append(float(step(x=x.astype(dtype), y=y.astype(dtype), **extra)["loss"]))
    return np.array(losses), step.params


def run_reference(grad_fn, apply_fn):
    """STEPS steps in NumPy: g = grad_fn(w, x, y, t); w = apply_fn(w, g, t)."""
    x, y, w = data()
    losses = []
    for t in range(1, STEPS + 1):
        losses.append(np_loss_grad(w, x, y)[0])
        w = apply_fn(w, grad_fn(w, x, y, t), t)
    return np.array(losses), w


def assert_close(got, want, rtol, atol):
    (gl, gp), (wl, wp) = got, want
    np.testing.assert_allclose(gl, wl, rtol=rtol, atol=atol)
    for k in NAMES:
        np.testing.assert_allclose(gp[k], wp[k], rtol=rtol, atol=atol, err_msg=k)


TARGETS = ["numpy", "cpu", "parallel"]  # the CUDA simulator: tests/cuda/test_cuda_custom_gradients.py


# ---- the default gradient stage ---------------------------------------------------------------

def test_default_gradients_are_grad_then_the_old_clipping_node_for_node():
    loss, p, _, _ = mlp("float32")
    params = [p[k] for k in NAMES]
    plain = gc.optim.Adam().gradients(loss, params)
    assert all(a is b for a, b in zip(plain, gc.grad(loss, params)))
    # the clipping training_program built before gradients() existed, written out: hash-consing
    # makes equal graphs the same nodes, so the compiled step is bit-identical
    c = 0.5
    g = gc.grad(loss, params)
    total = None
    for gi in g:
        s = gc.sum(gc.square(gi))
        total = s if total is None else total + gc.cast(s, total.dtype)
    scale = c / gc.maximum(gc.sqrt(total), c)
    old = [gi * gc.cast(scale, gi.dtype) for gi in g]
    opt = gc.optim.SGD(global_clipnorm=c)
    opt.dtype = "float32"
    new = opt.gradients(loss, params)
    assert all(a is b for a, b in zip(new, old))
    in_program = {id(n) for n in training_program(loss, opt).graph.nodes}
    assert all(id(o) in in_program for o in old)  # what the updates read


def test_global_clipnorm_still_clips():
    # one SGD step: w1 = w0 - lr * g * c / max(||g||, c) with ||g|| > c
    x, y, w = data()
    _, g = np_loss_grad(w, x, y)
    c = 0.25 * np_global_norm(g)
    got = run_graphc(gc.optim.SGD(0.1, global_clipnorm=c), "numpy")
    want = run_reference(lambda w, x, y, t: np_clip(np_loss_grad(w, x, y)[1], c),
                         NpSGD(0.1, 0.0).apply)
    assert_close(got, want, 1e-12, 1e-14)


class _Returns(gc.optim.SGD):
    def __init__(self, fn):
        super().__init__()
        self._fn = fn

    def gradients(self, loss, params):
        return self._fn(loss, params)


@pytest.mark.parametrize("fn, err, pattern", [
    (lambda loss, ps: gc.grad(loss, ps[0]), gc.GraphcError,
     r"_Returns\.gradients must return a list of one gradient per param \(4: \['W1', 'W2', 'b1', 'b2'\]\), got a Node"),
    (lambda loss, ps: gc.grad(loss, ps)[:3], gc.GraphcError, r"must return a list .* got a list of 3"),
    (lambda loss, ps: [None] + gc.grad(loss, ps)[1:], gc.GraphcError,
     r"_Returns\.gradients: the gradient of param 'W1' is a NoneType, not a graphc tensor of shape \(4, 5\)"),
    (lambda loss, ps: gc.grad(loss, ps)[:3] + [gc.sum(ps[3])], gc.ShapeError,
     r"_Returns\.gradients: the gradient of param 'b2' has shape \(\), expected \(3,\) .*test_custom_gradients\.py"),
    (lambda loss, ps: [gc.cast(g, "float64") for g in gc.grad(loss, ps)], gc.DTypeError,
     r"_Returns\.gradients: the gradient of param 'W1' has dtype float64, expected float32"),
])
def test_bad_gradients_are_named_errors(fn, err, pattern):
    loss, _, _, _ = mlp("float32")
    with pytest.raises(err, match=pattern):
        gc.compile(loss, optimizer=_Returns(fn), target="numpy")


# ---- gc.substitute ----------------------------------------------------------------------------

def test_substitute_shares_untouched_structure_and_is_hash_consed():
    x = gc.input("x", (None, D_IN), dtype="float64")
    y = gc.input("y", (None, D_OUT), dtype="float64")
    W1, W2 = gc.param("W1", (D_IN, D_H), dtype="float64"), gc.param("W2", (D_H, D_OUT), dtype="float64")
    z = x @ W1
    h = gc.tanh(z)
    loss = gc.mse(h @ W2, y)
    moved = gc.substitute(loss, {W2: W2 + 1.0})
    old_ids = {id(n) for n in topo_order([loss])}
    new_nodes = topo_order([moved])
    assert moved is not loss and any(n is h for n in new_nodes)  # the first layer is reused, not rebuilt
    fresh = [n for n in new_nodes if id(n) not in old_ids]
    # only W2 + 1 (and its const) and the nodes between it and the loss are new
    assert all(n.op not in ("tanh", "input", "param") for n in fresh)
    assert gc.substitute(loss, {W2: W2 + 1.0}) is moved  # rebuilt nodes are hash-consed
    assert gc.substitute(loss, {}) is loss
    assert gc.substitute(loss, {gc.param("unused", (2,)): gc.param("other", (2,))}) is loss
    # replacing an intermediate gives exactly the graph written with the replacement
    assert gc.substitute(loss, {h: gc.relu(z)}) is gc.mse(gc.relu(z) @ W2, y)
    both = gc.substitute([loss, h], {z: 2.0 * z})
    assert isinstance(both, list) and both[1] is gc.tanh(2.0 * z)
    # values: the loss at W2 + 1
    xv, yv, w = data()
    feeds, params = {"x": xv, "y": yv}, {"W1": w["W1"], "W2": w["W2"]}
    got = gc.evaluate([moved], feeds, params)[0]
    want = gc.evaluate([loss], feeds, {"W1": w["W1"], "W2": w["W2"] + 1.0})[0]
    assert got == want
    # a NumPy value becomes a constant of the old node's dtype
    assert gc.evaluate([gc.substitute(loss, {W2: np.zeros((D_H, D_OUT))})], feeds, params)[0] == np.mean(yv ** 2)


def test_substitute_errors_name_both_nodes_and_the_line():
    W = gc.param("W", (3, 2))
    x = gc.input("x", (None, 3))
    loss = gc.sum(gc.tanh(x @ W))
    with pytest.raises(gc.ShapeError, match=r"substitute: cannot replace <param 'W' .*\(3, 2\).*by .*\(2, 3\)"
                                            r".*test_custom_gradients\.py:\d+"):
        gc.substitute(loss, {W: gc.param("V", (2, 3))})
    with pytest.raises(gc.DTypeError, match=r"cannot replace <param 'W' .*dtype float32.*dtype float64.*gc\.cast"):
        gc.substitute(loss, {W: gc.param("W64", (3, 2), dtype="float64")})
    with pytest.raises(gc.ShapeError, match=r"shape \(None, 3\).*shape \(4, 3\)"):
        gc.substitute(loss, {x: gc.input("x4", (4, 3))})
    with pytest.raises(TypeError, match="every key must be a graphc tensor"):
        gc.substitute(loss, {"W": W})
    with pytest.raises(TypeError, match="must be a graphc tensor, a number or a NumPy array, got str"):
        gc.substitute(loss, {W: "W"})
    with pytest.raises(TypeError, match=r"dict \{old node: new node\}"):
        gc.substitute(loss, [(W, W)])


def test_hessian_vector_products_through_substitute_match_finite_differences():
    loss, p, _, _ = mlp("float64")
    xv, yv, w = data()
    shift = {k: gc.const(0.3 * np.random.default_rng(1).standard_normal(p[k].shape)) for k in NAMES}
    moved = gc.substitute(loss, {p[k]: p[k] + shift[k] for k in NAMES})  # the loss at w + shift
    feeds = {"x": xv, "y": yv}
    gc.check_grads(moved, [p[k] for k in NAMES], feeds=feeds, params=w, order=2)
    # explicitly: grad of <grad, v> against central differences of the NumPy gradient at w + shift
    rng = np.random.default_rng(2)
    v = {k: rng.standard_normal(w[k].shape) for k in NAMES}
    vin = {k: gc.input(f"v_{k}", w[k].shape, dtype="float64") for k in NAMES}
    g = gc.grad(moved, [p[k] for k in NAMES])
    hv = gc.grad(gc.sum(gc.stack([gc.sum(gi * vin[k]) for gi, k in zip(g, NAMES)])), [p[k] for k in NAMES])
    got = gc.evaluate(hv, {**feeds, **{f"v_{k}": v[k] for k in NAMES}}, w)
    at = {k: w[k] + np.asarray(shift[k].attrs["value"].array) for k in NAMES}
    eps = 1e-6
    gp = np_loss_grad({k: at[k] + eps * v[k] for k in NAMES}, xv, yv)[1]
    gm = np_loss_grad({k: at[k] - eps * v[k] for k in NAMES}, xv, yv)[1]
    for k, hk in zip(NAMES, got):
        np.testing.assert_allclose(hk, (gp[k] - gm[k]) / (2 * eps), rtol=1e-6, atol=1e-9, err_msg=k)
        np.testing.assert_allclose(hk, np_hvp(at, xv, yv, v)[k], rtol=1e-10, atol=1e-13, err_msg=k)


# ---- the three optimizers against NumPy -------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_sam_sgd_matches_numpy(target):
    rho, lr, mom = 0.1, 0.1, 0.9
    got = run_graphc(ex.SAM(gc.optim.SGD(lr, momentum=mom), rho=rho), target)
    want = run_reference(lambda w, x, y, t: np_sam_grad(w, x, y, rho), NpSGD(lr, mom).apply)
    assert_close(got, want, 1e-10, 1e-13)
    assert got[0][-1] < got[0][0]


def test_sam_adam_matches_numpy_and_float32_on_cpu():
    rho, lr = 0.05, 0.02
    want = run_reference(lambda w, x, y, t: np_sam_grad(w, x, y, rho), NpAdam(lr).apply)
    assert_close(run_graphc(ex.SAM(gc.optim.Adam(lr), rho=rho), "numpy"), want, 1e-10, 1e-13)
    assert_close(run_graphc(ex.SAM(gc.optim.Adam(lr), rho=rho), "cpu", "float32"), want, 2e-4, 1e-5)


def test_sam_hyperparameters_reach_the_base_rule():
    sam = ex.SAM(gc.optim.SGD(0.1, momentum=0.9), rho=0.1)
    assert sam.hyperparameters == {"rho": 0.1, "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0.0}
    sam.learning_rate = 0.05  # what a schedule (or graphc.nn's LearningRateScheduler) does
    got = run_graphc(sam, "numpy")
    want = run_reference(lambda w, x, y, t: np_sam_grad(w, x, y, 0.1), NpSGD(0.05, 0.9).apply)
    assert_close(got, want, 1e-10, 1e-13)
    with pytest.raises(ValueError, match="RMSprop has a hyper-parameter 'rho'"):
        ex.SAM(gc.optim.RMSprop())


@pytest.mark.parametrize("target", TARGETS)
def test_adahessian_matches_numpy(target):
    lr, eps = 0.01, 1e-4
    rng = np.random.default_rng(3)
    _, _, w0 = data()
    probes = [{k: rng.choice([-1.0, 1.0], size=w0[k].shape) for k in NAMES} for _ in range(STEPS)]
    got = run_graphc(ex.AdaHessian(lr, epsilon=eps, probes="fed"), target,
                     probes=[{"probe:" + k: v for k, v in z.items()} for z in probes])
    ref = NpAdam(lr, eps=eps, hat=True)

    def apply(w, g, t):  # D = z * Hz, the Hutchinson estimate of diag(H)
        x, y, _ = data()
        hz = np_hvp(w, x, y, probes[t - 1])
        return ref.apply(w, g, t, second={k: (probes[t - 1][k] * hz[k]) ** 2 for k in w})
    want = run_reference(lambda w, x, y, t: np_loss_grad(w, x, y)[1], apply)
    assert_close(got, want, 1e-9, 1e-12)
    assert got[0][-1] < got[0][0]


@pytest.mark.parametrize("target", TARGETS)
def test_adahessian_draws_its_probes_in_the_step(target):
    """probes="random": the Rademacher probes come from gc.random_uniform keyed by the step
    counter (u < 0.5 -> -1, else +1). The same rule with those probes, computed in NumPy, gives
    the same steps; nothing is fed."""
    lr, eps = 0.01, 1e-4
    opt = ex.AdaHessian(lr, epsilon=eps, seed=4)
    got = run_graphc(opt, target)
    _, params, _, _ = mlp("float64")
    draws = []
    for t in range(STEPS):  # the draws of step t (the counter before the step is t)
        z = {}
        for p in params.values():
            u = gc.random_uniform(p.shape, seed=(4 * 1_000_003 + ex.zlib.crc32(p.name.encode())) & 0x7FFFFFFF,
                                  dtype="float64", key=gc.const(np.int64(t)))
            z[p.name] = np.where(gc.compile(u, target="numpy")() < 0.5, -1.0, 1.0)
        draws.append(z)
    assert any((draws[0][k] != draws[1][k]).any() for k in NAMES)  # new probes every step
    ref = NpAdam(lr, eps=eps, hat=True)

    def apply(w, g, t):
        x, y, _ = data()
        hz = np_hvp(w, x, y, draws[t - 1])
        return ref.apply(w, g, t, second={k: (draws[t - 1][k] * hz[k]) ** 2 for k in w})
    want = run_reference(lambda w, x, y, t: np_loss_grad(w, x, y)[1], apply)
    assert_close(got, want, 1e-9, 1e-12)


def test_adahessian_probes_are_required_feeds():
    loss, _, _, _ = mlp("float64")
    x, y, w = data()
    step = gc.compile(loss, optimizer=ex.AdaHessian(probes="fed"), target="numpy", params=w)
    probes = ex.AdaHessian.rademacher_probes(step, np.random.default_rng(0))
    assert sorted(probes) == ["probe:" + k for k in NAMES]
    assert all(set(np.unique(v)) <= {-1.0, 1.0} and v.shape == w[k[6:]].shape for k, v in probes.items())
    with pytest.raises(gc.FeedError, match="probe:"):
        step(x=x, y=y)


@pytest.mark.parametrize("target", TARGETS)
def test_centralized_adam_matches_numpy(target):
    lr, clip = 0.02, 0.5

    def centralized(w, x, y, t):  # rank >= 2: minus the mean over all axes but the last
        g = np_loss_grad(w, x, y)[1]
        g = {k: v - v.mean(axis=tuple(range(v.ndim - 1)), keepdims=True) if v.ndim >= 2 else v
             for k, v in g.items()}
        return np_clip(g, clip)
    got = run_graphc(ex.CentralizedAdam(lr, global_clipnorm=clip), target)
    want = run_reference(centralized, NpAdam(lr).apply)
    assert_close(got, want, 1e-10, 1e-13)
    # the centralized gradient of a weight has zero column means: so its Adam update's first step
    x, y, w = data()
    assert np.abs(centralized(w, x, y, 1)["W1"].mean(axis=0)).max() < 1e-15


def test_sam_through_graphc_nn_fit():
    from graphc.nn import Dense, Sequential
    x, y, _ = data()
    x, y = x.astype(np.float32), y.astype(np.float32)
    model = Sequential([Dense(D_H, activation="tanh", input_shape=(D_IN,)), Dense(D_OUT)])
    model.compile(optimizer=ex.SAM(gc.optim.SGD(0.1, momentum=0.9), rho=0.1), loss="mse", target="numpy")
    w0 = dict(zip(["W1", "b1", "W2", "b2"], (v.astype(np.float64) for v in model.get_weights())))
    hist = model.fit(x, y, epochs=STEPS, batch_size=BATCH, shuffle=False, verbose=0)
    sgd = NpSGD(0.1, 0.9)
    w, losses = w0, []
    for t in range(1, STEPS + 1):
        losses.append(np_loss_grad(w, x.astype(np.float64), y.astype(np.float64))[0])
        w = sgd.apply(w, np_sam_grad(w, x.astype(np.float64), y.astype(np.float64), 0.1), t)
    np.testing.assert_allclose(hist.history["loss"], losses, rtol=1e-5)
    for got, k in zip(model.get_weights(), ["W1", "b1", "W2", "b2"]):
        np.testing.assert_allclose(got, w[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_adahessian_with_in_step_probes_trains_through_graphc_nn_fit():
    """Nothing to feed: graphc.nn's fit runs it as it is (on the native target)."""
    from graphc.nn import Dense, Sequential
    x, y, _ = data()
    model = Sequential([Dense(D_H, activation="tanh", input_shape=(D_IN,)), Dense(D_OUT)])
    model.compile(optimizer=ex.AdaHessian(0.05), loss="mse", target="cpu")
    hist = model.fit(x.astype(np.float32), y.astype(np.float32), epochs=30, batch_size=BATCH, verbose=0)
    assert hist.history["loss"][-1] < 0.7 * hist.history["loss"][0], hist.history["loss"]


def test_readme_sam_snippet_compiles_into_one_step():
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def gradients" in b)
    ns = {"gc": gc}
    exec(compile(block, "README.md", "exec"), ns)
    loss, _, _, _ = mlp("float64")
    opt = ns["SAM"](0.1, rho=0.1)
    got = run_graphc(opt, "numpy")
    want = run_reference(lambda w, x, y, t: np_sam_grad(w, x, y, 0.1), NpSGD(0.1, 0.0).apply)
    assert_close(got, want, 1e-10, 1e-13)


@pytest.mark.parametrize("name", sorted(ex.OPTIMIZERS))
def test_example_script_trains_with_each_optimizer(name, capsys):
    ex.main(["--optimizer", name, "--target", "numpy", "--steps", "60"])
    losses = [float(v) for v in re.findall(r"loss ([\d.]+)", capsys.readouterr().out)]
    assert len(losses) == 3 and losses[-1] < 0.5 * losses[0]
