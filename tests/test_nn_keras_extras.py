"""Keras 3's learning-rate schedules, Nadam/Adamax/Adafactor, the regression and margin
losses, AUC/Precision/Recall/F1Score and utils, each against real Keras 3 on the same
weights and data.

Keras runs in the session's worker subprocess with KERAS_BACKEND=numpy (conftest.py's
``keras_run``, tests/_keras_worker.py); its optimizers really run there (``optimizer.apply`` on
``keras.Variable``s), so every comparison is against Keras' own code, not a transcription."""
import importlib.util

import numpy as np
import pytest

import graphc as gc
import graphc.nn as nn
from graphc.nn import losses as L
from graphc.nn import metrics as M
from graphc.nn import optimizers as O
from graphc.nn import utils
from graphc.nn.optimizers import schedules as S

pytestmark = pytest.mark.skipif(importlib.util.find_spec("keras") is None,
                                reason="needs keras (pip install -e '.[test]')")

RNG = np.random.default_rng(0)
STEPS = 12

SCHEDULES = [
    ("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=3, decay_rate=0.5)),
    ("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=3, decay_rate=0.5, staircase=True)),
    ("PiecewiseConstantDecay", dict(boundaries=[2, 5, 9], values=[1.0, 0.5, 0.25, 0.125])),
    ("CosineDecay", dict(initial_learning_rate=0.2, decay_steps=7, alpha=0.1)),
    ("CosineDecay", dict(initial_learning_rate=0.0, decay_steps=6, warmup_target=0.3, warmup_steps=4)),
    ("InverseTimeDecay", dict(initial_learning_rate=0.1, decay_steps=2, decay_rate=0.5)),
    ("InverseTimeDecay", dict(initial_learning_rate=0.1, decay_steps=2, decay_rate=0.5, staircase=True)),
    ("PolynomialDecay", dict(initial_learning_rate=0.1, decay_steps=5, end_learning_rate=0.01, power=2.0)),
    ("PolynomialDecay", dict(initial_learning_rate=0.1, decay_steps=4, power=0.5, cycle=True)),
]


def test_schedules_match_keras_in_python_and_inside_the_compiled_step_without_recompiling(keras_run):
    want = keras_run("result = [[float(getattr(keras.optimizers.schedules, c)(**kw)(i)) for i in range(n)] "
                     "for c, kw in cases]", cases=SCHEDULES, n=STEPS)
    for (cls, kw), ref in zip(SCHEDULES, want):
        sch = getattr(S, cls)(**kw)
        np.testing.assert_allclose([float(sch(i)) for i in range(STEPS)], ref, rtol=1e-6, atol=1e-9,
                                   err_msg=f"{cls}({kw}) in Python")
        again = type(sch).from_config(sch.get_config())
        assert again == sch and again.get_config() == sch.get_config()
        # SGD without momentum on loss = sum(w): each step moves w by exactly the learning rate
        w = gc.param("w", (1,), init="zeros")
        step = gc.compile(gc.sum(w), optimizer=gc.optim.SGD(learning_rate=sch), target="cpu")
        assert "hyper:learning_rate" not in step._program.hypers  # not fed: computed from the counter
        prev, lrs = 0.0, []
        for _ in range(STEPS):
            step()
            cur = float(step.params["w"][0])
            lrs.append(prev - cur)
            prev = cur
        np.testing.assert_allclose(lrs, ref, rtol=2e-5, atol=1e-7, err_msg=f"{cls}({kw}) in the compiled step")
        assert len(step._programs) == 1 and step.fast_calls >= STEPS - 1  # one program, no Python per step


def test_a_schedule_is_fixed_once_compiled_and_only_the_learning_rate_takes_one():
    sch = S.ExponentialDecay(0.1, 10, 0.9)
    with pytest.raises(AttributeError, match="immutable"):
        sch.decay_rate = 0.5
    with pytest.raises(TypeError, match="only learning_rate"):
        O.Adam(beta_1=sch)
    with pytest.raises(ValueError, match="decay_steps"):
        S.CosineDecay(0.1, 0)
    opt = O.SGD(0.1)
    opt.learning_rate = sch  # before any step is built: allowed
    assert opt.schedules == {"learning_rate": sch} and "learning_rate" not in opt.hyperparameters
    w = gc.param("w", (1,), init="zeros")
    gc.compile(gc.sum(w), optimizer=opt, target="numpy")
    with pytest.raises(TypeError, match="compiled into this optimizer"):
        opt.learning_rate = 0.01


def _run_graphc_optimizer(opt, weights, grads, target="numpy"):
    """``opt`` applied to params ``weights`` with the given per-step gradients (a linear loss
    sum(w * g) fed g); the params after every step."""
    ps = {k: gc.param(k, v.shape, init=v) for k, v in weights.items()}
    gs = {k: gc.input("g_" + k, v.shape) for k, v in weights.items()}
    loss = None
    for k in ps:
        t = gc.sum(ps[k] * gs[k])
        loss = t if loss is None else loss + t
    step = gc.compile(loss, optimizer=opt, target=target)
    out = []
    for g in grads:
        step(**{"g_" + k: v for k, v in g.items()})
        out.append({k: np.array(step.params[k]) for k in weights})
    return out


_KERAS_APPLY = """
ws = {k: keras.Variable(np.asarray(v, dtype="float32"), name=k) for k, v in weights.items()}
opt = eval(make)
result = []
for g in grads:
    opt.apply([np.asarray(g[k], dtype="float32") for k in ws], list(ws.values()))
    result.append({k: np.asarray(v.value).tolist() for k, v in ws.items()})
"""

OPTIMIZERS = [
    ("Nadam", {}, "keras.optimizers.Nadam()"),
    ("Nadam", {"learning_rate": 0.05, "beta_1": 0.8, "weight_decay": 0.1},
     "keras.optimizers.Nadam(learning_rate=0.05, beta_1=0.8, weight_decay=0.1)"),
    ("Adamax", {}, "keras.optimizers.Adamax()"),
    ("Adamax", {"learning_rate": 0.02, "beta_2": 0.9}, "keras.optimizers.Adamax(learning_rate=0.02, beta_2=0.9)"),
    ("Adafactor", {}, "keras.optimizers.Adafactor()"),
    ("Adafactor", {"learning_rate": 0.3, "clip_threshold": 0.5, "weight_decay": 0.05},
     "keras.optimizers.Adafactor(learning_rate=0.3, clip_threshold=0.5, weight_decay=0.05)"),
    ("Adam", {"learning_rate": S.CosineDecay(0.0, 4, warmup_target=0.1, warmup_steps=2)},
     "keras.optimizers.Adam(learning_rate=keras.optimizers.schedules.CosineDecay(0.0, 4, warmup_target=0.1, "
     "warmup_steps=2))"),
    ("Nadam", {"learning_rate": S.ExponentialDecay(0.05, 2, 0.5, staircase=True)},
     "keras.optimizers.Nadam(learning_rate=keras.optimizers.schedules.ExponentialDecay(0.05, 2, 0.5, "
     "staircase=True))"),
]


@pytest.mark.parametrize("cls,kw,make", OPTIMIZERS, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(OPTIMIZERS)])
def test_optimizers_match_keras_step_by_step(keras_run, cls, kw, make):
    weights = {"a_matrix": RNG.normal(size=(3, 4)).astype("float32"), "b_vector": RNG.normal(size=(4,)).astype("float32"),
               "c_cube": RNG.normal(size=(2, 3, 2)).astype("float32")}
    grads = [{k: RNG.normal(size=v.shape).astype("float32") for k, v in weights.items()} for _ in range(5)]
    want = keras_run(_KERAS_APPLY, make=make, weights={k: v.tolist() for k, v in weights.items()},
                     grads=[{k: v.tolist() for k, v in g.items()} for g in grads])
    got = _run_graphc_optimizer(getattr(O, cls)(**kw), weights, grads)
    for i, (g_step, k_step) in enumerate(zip(got, want)):
        for k in weights:
            np.testing.assert_allclose(g_step[k], np.asarray(k_step[k], dtype="float32"), rtol=2e-5, atol=2e-6,
                                       err_msg=f"{cls}({kw}) step {i + 1}, {k}")


def test_new_optimizers_compile_on_the_cpu_target_as_on_numpy():
    weights = {"m": RNG.normal(size=(3, 4)).astype("float32"), "v": RNG.normal(size=(4,)).astype("float32")}
    grads = [{k: RNG.normal(size=v.shape).astype("float32") for k, v in weights.items()} for _ in range(3)]
    for cls in (O.Nadam, O.Adamax, O.Adafactor):
        ref = _run_graphc_optimizer(cls(learning_rate=0.05), weights, grads)[-1]
        got = _run_graphc_optimizer(cls(learning_rate=0.05), weights, grads, target="cpu")[-1]
        for k in weights:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=cls.__name__)
    with pytest.raises(gc.errors.HyperParameterError, match="beta_1"):
        O.Nadam(beta_1=1.0)
    with pytest.raises(gc.errors.HyperParameterError, match="clip_threshold"):
        O.Adafactor(clip_threshold=0.0)
    assert isinstance(gc.optim.get("nadam"), O.Nadam) and isinstance(gc.optim.get("adamax"), O.Adamax)


LOSSES = [("Huber", {}), ("Huber", {"delta": 0.3}), ("LogCosh", {}), ("KLDivergence", {}), ("Hinge", {}),
          ("SquaredHinge", {}), ("Poisson", {}), ("CosineSimilarity", {}), ("CosineSimilarity", {"axis": 1})]


def test_losses_match_keras_reduced_and_per_sample(keras_run):
    y_reg = RNG.normal(size=(6, 4)).astype("float32")
    p_reg = (y_reg + RNG.normal(size=(6, 4)) * 1.5).astype("float32")
    p_pos = RNG.uniform(0.05, 1.0, size=(6, 4)).astype("float32")
    p_pos /= p_pos.sum(-1, keepdims=True)
    y_pos = RNG.uniform(0.0, 1.0, size=(6, 4)).astype("float32")
    y_pos /= y_pos.sum(-1, keepdims=True)
    y_bin = RNG.integers(0, 2, size=(6, 4)).astype("float32")
    y_sign = np.where(RNG.random((6, 4)) < 0.5, -1.0, 1.0).astype("float32")
    y_reg[0] = 0.0  # a zero vector for the cosine
    data = {"Huber": [(y_reg, p_reg)], "LogCosh": [(y_reg, p_reg * 30)], "KLDivergence": [(y_pos, p_pos)],
            "Hinge": [(y_bin, p_reg), (y_sign, p_reg)], "SquaredHinge": [(y_bin, p_reg), (y_sign, p_reg)],
            "Poisson": [(y_pos * 3, p_pos * 2)], "CosineSimilarity": [(y_reg, p_reg)]}
    cases = [(cls, kw, yt.tolist(), yp.tolist()) for cls, kw in LOSSES for yt, yp in data[cls]]
    want = keras_run("""
result = []
for cls, kw, yt, yp in cases:
    yt, yp = np.asarray(yt, dtype="float32"), np.asarray(yp, dtype="float32")
    loss = getattr(keras.losses, cls)(**kw)
    fn = {"Huber": keras.losses.huber, "LogCosh": keras.losses.log_cosh, "KLDivergence": keras.losses.kl_divergence,
          "Hinge": keras.losses.hinge, "SquaredHinge": keras.losses.squared_hinge, "Poisson": keras.losses.poisson,
          "CosineSimilarity": keras.losses.cosine_similarity}[cls]
    result.append([float(loss(yt, yp)), np.asarray(fn(yt, yp, **kw)).tolist()])
""", cases=cases)
    yt_in, yp_in = gc.input("yt", (None, 4)), gc.input("yp", (None, 4))
    outs = {}
    for i, (cls, kw, _, _) in enumerate(cases):
        loss = getattr(L, cls)(**kw)
        outs[f"r{i}"] = loss(yt_in, yp_in)
        outs[f"s{i}"] = loss.per_sample(yt_in, yp_in, yp_in, "linear")
        outs[f"f{i}"] = getattr(L, type(loss).fn.__name__)(yt_in, yp_in, **kw)
    fn = gc.compile(outs, target="numpy")
    for i, ((cls, kw, yt, yp), (ref, ref_each)) in enumerate(zip(cases, want)):
        got = fn(yt=np.asarray(yt, "float32"), yp=np.asarray(yp, "float32"))
        np.testing.assert_allclose(got[f"r{i}"], ref, rtol=1e-5, atol=1e-6, err_msg=f"{cls}({kw})")
        np.testing.assert_allclose(got[f"f{i}"], ref_each, rtol=1e-5, atol=1e-6, err_msg=f"{cls}({kw}) per sample")
        if kw.get("axis", -1) == -1:
            np.testing.assert_allclose(got[f"s{i}"], ref_each, rtol=1e-5, atol=1e-6, err_msg=f"{cls} per_sample")
    assert isinstance(L.get("huber"), L.Huber) and isinstance(L.get("kld"), L.KLDivergence)
    with pytest.raises(ValueError, match="delta"):
        L.Huber(delta=-1.0)


def test_a_model_trains_with_a_new_loss_and_a_scheduled_optimizer_from_graphc_nn():
    x = RNG.normal(size=(64, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")).astype("float32")
    model = nn.Sequential([nn.Dense(1, input_shape=(3,))])
    model.compile(O.Adam(learning_rate=S.ExponentialDecay(0.1, 10, 0.9)), loss=L.Huber(0.5), target="numpy")
    h = model.fit(x, y, epochs=6, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    # K steps per call: the schedule moves at every inner step, exactly as K single calls
    ws = []
    for k in (1, 4):
        m = nn.Sequential([nn.Dense(1, input_shape=(3,))])
        m.compile(O.Nadam(S.PiecewiseConstantDecay([2, 5], [0.1, 0.01, 0.001])), "mse", target="numpy",
                  steps_per_execution=k)
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        ws.append(m.get_weights())
    for a, b in zip(*ws):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AttributeError, match="learning_rate"):
        model.optimizer.learnig_rate = 0.1


def test_utils_to_categorical_and_set_random_seed_as_keras(keras_run):
    cases = [[0, 2, 1, 2], [[1], [0], [3]], [[0, 1], [2, 0]]]
    want = keras_run("result = [keras.utils.to_categorical(np.asarray(c)).tolist() for c in cases]"
                     " + [keras.utils.to_categorical(np.asarray([0, 1]), num_classes=4).tolist()]", cases=cases)
    got = [utils.to_categorical(c) for c in cases] + [utils.to_categorical([0, 1], num_classes=4)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, np.asarray(w))
        assert g.dtype == np.float64  # Keras' NumPy path returns float64 (np.zeros' dtype)
    with pytest.raises(ValueError, match="num_classes"):
        utils.to_categorical([0, 5], num_classes=3)
    with pytest.raises(ValueError, match="seed"):
        utils.set_random_seed(1.5)
    utils.set_random_seed(7)
    a = (np.random.random(), __import__("random").random())
    utils.set_random_seed(7)
    assert (np.random.random(), __import__("random").random()) == a


_KERAS_METRICS = """
result = []
for make, batches in cases:
    m = eval(make)
    for yt, yp in batches:
        m.update_state(np.asarray(yt, dtype="float32"), np.asarray(yp, dtype="float32"))
    result.append(np.asarray(m.result()).tolist())
"""


def _batches(y, p, size):
    return [(y[i:i + size].tolist(), p[i:i + size].tolist()) for i in range(0, len(y), size)]


def test_confusion_metrics_accumulate_over_batches_as_keras(keras_run):
    # binary: AUC (ROC, PR, other summations), Precision, Recall
    x = RNG.normal(size=(70, 3)).astype("float32")
    y = (x[:, :1] + 0.8 * RNG.normal(size=(70, 1)) > 0).astype("float32")
    binary = {"auc": ("AUC()", M.AUC()), "pr": ("AUC(curve='PR', name='pr')", M.AUC(curve="PR", name="pr")),
              "minor": ("AUC(num_thresholds=37, summation_method='minoring', name='minor')",
                        M.AUC(num_thresholds=37, summation_method="minoring", name="minor")),
              "major_pr": ("AUC(curve='PR', summation_method='majoring', name='major_pr')",
                           M.AUC(curve="PR", summation_method="majoring", name="major_pr")),
              "precision": ("Precision()", M.Precision()), "recall": ("Recall(thresholds=0.3)", M.Recall(thresholds=0.3))}
    model = nn.Sequential([nn.Dense(1, activation="sigmoid", input_shape=(3,))])
    model.compile(O.SGD(0.1), "binary_crossentropy", metrics=[v[1] for v in binary.values()], target="numpy")
    got = model.evaluate(x, y, batch_size=16, return_dict=True)
    p = model.predict(x, batch_size=16)
    # multi-class: F1Score's averages and thresholds on one-hot labels
    xc = RNG.normal(size=(50, 4)).astype("float32")
    yc = np.eye(3, dtype="float32")[RNG.integers(0, 3, 50)]
    f1 = {"f1_none": ("F1Score(name='f1_none')", M.F1Score(name="f1_none")),
          "f1_micro": ("F1Score(average='micro', name='f1_micro')", M.F1Score(average="micro", name="f1_micro")),
          "f1_macro": ("F1Score(average='macro', threshold=0.3, name='f1_macro')",
                       M.F1Score(average="macro", threshold=0.3, name="f1_macro")),
          "f1_weighted": ("F1Score(average='weighted', name='f1_weighted')",
                          M.F1Score(average="weighted", name="f1_weighted")),
          "multi_precision": ("Precision(thresholds=0.4, name='multi_precision')",
                              M.Precision(thresholds=0.4, name="multi_precision"))}
    mc = nn.Sequential([nn.Dense(3, activation="softmax", input_shape=(4,))])
    mc.compile(O.SGD(0.1), "categorical_crossentropy", metrics=[v[1] for v in f1.values()], target="numpy")
    got.update(mc.evaluate(xc, yc, batch_size=16, return_dict=True))
    pc = mc.predict(xc, batch_size=16)
    cases = ([("keras.metrics." + make, _batches(y, p, 16)) for make, _ in binary.values()]
             + [("keras.metrics." + make, _batches(yc, pc, 16)) for make, _ in f1.values()])
    want = keras_run(_KERAS_METRICS, cases=cases)
    for name, ref in zip(list(binary) + list(f1), want):
        np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.ndim(got["f1_none"]) == 1 and len(got["f1_none"]) == 3  # one value per class, as Keras
    assert 0.0 < got["auc"] < 1.0 and got["auc"] != got["pr"]
    # fit accumulates the same way: the epoch's value is the metric over all its batches
    h = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert 0.0 <= h.history["auc"][0] <= 1.0 and 0.0 <= h.history["precision"][0] <= 1.0
    with pytest.raises(ValueError, match="curve"):
        M.AUC(curve="XY")
    with pytest.raises(ValueError, match="average"):
        M.F1Score(average="mean")


@pytest.mark.skipif(importlib.util.find_spec("h5py") is None, reason="needs h5py (pip install -e '.[test]')")
@pytest.mark.parametrize("make", ["nadam_schedule", "adamax"])
def test_new_optimizers_schedules_and_losses_round_trip_through_keras_files(tmp_path, keras_run, make):
    x = RNG.normal(size=(16, 3)).astype("float32")
    y = RNG.normal(size=(16, 2)).astype("float32")
    opt = (O.Nadam(learning_rate=S.ExponentialDecay(0.05, 2, 0.5, staircase=True)) if make == "nadam_schedule"
           else O.Adamax(0.02, beta_2=0.9))
    model = nn.Sequential([nn.Dense(4, activation="tanh", input_shape=(3,)), nn.Dense(2)])
    model.compile(opt, L.Huber(delta=0.5), target="numpy")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)  # 4 steps: optimizer state to carry
    path = str(tmp_path / "m.keras")
    model.save(path)
    # Keras opens it and restores the optimizer: schedule, iterations, slots, Nadam's u_product
    got = keras_run("""
m = keras.saving.load_model(path)
x = np.asarray(x, dtype="float32")
lr = m.optimizer.get_config()["learning_rate"]
result = {"pred": m.predict(x, verbose=0).tolist(), "optimizer": type(m.optimizer).__name__,
          "vars": {v.path: np.asarray(v.value).tolist() for v in m.optimizer.variables},
          "loss": type(m.loss).__name__, "delta": m.loss._fn_kwargs.get("delta"),  # (Keras' get_config omits it)
          "lr": lr if isinstance(lr, dict) else float(lr)}
""", path=path, x=x.tolist())
    np.testing.assert_allclose(got["pred"], model.predict(x), rtol=1e-5, atol=1e-6)
    assert got["optimizer"] == type(opt).__name__
    assert got["loss"] == "Huber" and got["delta"] == 0.5
    kv = list(got["vars"].values())
    sd = model.train_function.state_dict()["state"]
    assert kv[0] == 4 == int(sd["step"])
    w = [n.name for layer in model.layers for n in layer.trainable_weights]
    slots = ["m", "v"] if make == "nadam_schedule" else ["m", "u"]
    ours = [sd[f"{n}/{k}"] for n in w for k in slots]
    if make == "nadam_schedule":  # no learning_rate variable beside a schedule; u_product last
        assert got["lr"]["class_name"] == "ExponentialDecay" and got["lr"]["config"]["decay_rate"] == 0.5
        ours = ours + [sd[f"{w[0]}/u_product"]]
        theirs = kv[1:]
    else:
        assert kv[1] == pytest.approx(0.02)
        theirs = kv[2:]
    assert len(theirs) == len(ours)
    for a, b in zip(theirs, ours):
        np.testing.assert_allclose(np.asarray(a, dtype="float32"), b, rtol=1e-6, atol=1e-7)
    # and back: graphc loads the file with its optimizer, schedule, loss and state
    back = nn.load_model(path)
    assert type(back.optimizer) is type(opt) and back.optimizer.schedules == opt.schedules
    assert isinstance(back.loss, L.Huber) and back.loss.delta == 0.5
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    back.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for g, k in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_allclose(g, k, rtol=1e-6, atol=1e-7)
