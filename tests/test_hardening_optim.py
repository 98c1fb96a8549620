"""Optimizer hardening (issue 9, items 11-12): hyper-parameters are checked when set and
typos are refused; state_spec entries are checked with errors naming optimizer, param and
entry; and optimizer state may have its own shape (a factored, Adafactor-like rule checked
against a NumPy implementation on the numpy and cpu targets)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import optim
from graphc.errors import ShapeError, StateError

# ---- item 11: hyper-parameters ---------------------------------------------------------------------------

BAD_VALUES = [("0.01", TypeError), (True, TypeError), (None, TypeError), (np.array([0.1, 0.2]), TypeError),
              (1 + 0j, TypeError), ([0.1], TypeError), (np.bool_(True), TypeError),
              (float("nan"), ValueError), (float("inf"), ValueError), (-np.inf, ValueError),
              (1e300, ValueError)]  # 1e300 is inf in float32, the dtype it is fed in


def test_unknown_attribute_is_refused_with_the_real_names():
    opt = optim.Adam(0.01)
    with pytest.raises(AttributeError, match=r"learnig_rate.*did you mean 'learning_rate'.*beta_1"):
        opt.learnig_rate = 0.1
    with pytest.raises(AttributeError, match=r"learnig_rate.*learning_rate"):
        opt.learnig_rate  # noqa: B018 - reading a typo names the real ones too
    assert opt.learning_rate == 0.01 and "learnig_rate" not in vars(opt)
    opt.lr = 0.02  # the Keras alias
    assert opt.learning_rate == 0.02
    opt._note = "private attributes stay free"
    opt.global_clipnorm = 1.0
    assert opt.global_clipnorm == 1.0
    sgd = optim.SGD(0.1, momentum=0.9, nesterov=True)  # plain attributes set in __init__ work ...
    assert sgd.nesterov is True
    sgd.nesterov = False  # ... and can be changed later
    assert sgd.nesterov is False
    with pytest.raises(AttributeError, match="momentum"):
        sgd.momentun = 0.5


class Custom(optim.Optimizer):
    """Sets plain attributes before and after super().__init__, like subclasses do."""

    def __init__(self, learning_rate=0.1, flavour="plain"):
        self.flavour = flavour
        super().__init__(learning_rate=learning_rate)
        self.scale = 2.0

    def update(self, param, grad, state, step):
        return param - self.scale * self.hyper("learning_rate") * grad, {}


class CustomChild(Custom):
    def __init__(self):
        super().__init__(0.5)
        self.extra = 1  # set after the parent's __init__ returned: still inside construction


def test_custom_optimizer_attributes():
    c = Custom(flavour="x")
    assert (c.flavour, c.scale, c.learning_rate) == ("x", 2.0, 0.1)
    c.scale = 3.0
    assert CustomChild().extra == 1
    with pytest.raises(AttributeError, match="learning_rate"):
        c.learning_rat = 1.0


@pytest.mark.parametrize("value,exc", BAD_VALUES, ids=[repr(v)[:12] for v, _ in BAD_VALUES])
def test_bad_hyper_parameter_values_are_refused_when_set(value, exc):
    opt = optim.SGD(0.1)
    version = opt._version
    with pytest.raises(exc, match=r"SGD.*'learning_rate'"):
        opt.learning_rate = value
    with pytest.raises(exc, match=r"SGD.*'learning_rate'"):
        opt.lr = value
    assert opt.learning_rate == 0.1 and opt._version == version
    with pytest.raises(exc, match=r"Adam.*'beta_1'"):
        optim.Adam(beta_1=value)


def test_good_hyper_parameter_values_become_floats():
    opt = optim.SGD(np.float32(0.5))
    for v in (1, np.int64(2), np.array(0.25), np.array([0.125]), np.float64(0.1)):
        opt.learning_rate = v
        assert type(opt.learning_rate) is float and opt.learning_rate == float(np.asarray(v).reshape(()))
    for bad in (0, -1.0, "1", float("nan")):
        with pytest.raises((TypeError, ValueError), match="global_clipnorm"):
            optim.Adam(global_clipnorm=bad)
    with pytest.raises(TypeError, match="initial_accumulator_value"):
        optim.Adagrad(initial_accumulator_value="0.1")


def test_hyper_parameter_set_between_steps_takes_effect_and_typo_does_not_train_silently():
    x = gc.input("ox", (None, 2))
    w = gc.param("ow", (2,), init="ones")
    step = gc.compile(gc.sum(x * w), optimizer=optim.SGD(0.5), target="numpy")
    step(ox=np.ones((1, 2), "f4"))
    np.testing.assert_allclose(step.params["ow"], [0.5, 0.5])
    step.optimizer.learning_rate = np.float32(0.25)
    step(ox=np.ones((1, 2), "f4"))
    np.testing.assert_allclose(step.params["ow"], [0.25, 0.25])
    with pytest.raises(AttributeError):
        step.optimizer.learnig_rate = 0.0


# ---- item 12: state_spec entries -----------------------------------------------------------------------

X = gc.input("fx", (None, 4))
WF = gc.param("fW", (4, 3), init="glorot_uniform")
BF = gc.param("fb", (3,), init="zeros")
LOSS = gc.mean(gc.square(gc.tanh(X @ WF + BF)))


class SpecOpt(optim.Optimizer):
    """state_spec returns whatever the test puts in ``spec``; update keeps the state as is
    (or returns ``new`` for it)."""

    def __init__(self, spec, new=None):
        super().__init__(learning_rate=0.1)
        self.spec, self.new = spec, new

    def state_spec(self, param):
        return self.spec(param) if callable(self.spec) else self.spec

    def update(self, param, grad, state, step):
        new = {k: (self.new(param, v) if self.new else v) for k, v in state.items()}
        return param - self.hyper("learning_rate") * grad, new


@pytest.mark.parametrize("spec,exc,pattern", [
    ({"m": [0.0, 1.0]}, StateError, r"list.*expected an initializer name"),
    ({"m": "zero"}, StateError, r"unknown initializer 'zero' \(did you mean 'zeros'\?\)"),
    ({"m": None}, StateError, r"NoneType"),
    ({"m": True}, StateError, r"bool"),
    ({"m": np.array(["a"])}, StateError, r"numeric"),
    ({"m": np.array([np.nan])}, StateError, r"NaN"),
    ({"m": optim.StateSpec((2, -1))}, StateError, r"non-negative ints"),
    ({"m": optim.StateSpec("3")}, StateError, r"non-negative ints"),
    ({"m": optim.StateSpec((3,), init=np.zeros(4))}, ShapeError, r"initial array has shape \(4,\).*\(3,\)"),
    ({"m": optim.StateSpec((3,), init="glorot")}, StateError, r"unknown initializer 'glorot'"),
    ({"m": optim.StateSpec((3,), dtype="complex64")}, StateError, r"dtype"),
    ({3: "zeros"}, StateError, r"state names"),
    (["m"], StateError, r"must return a dict"),
])
def test_bad_state_spec_entries_name_optimizer_param_and_entry(spec, exc, pattern):
    with pytest.raises(exc, match=pattern) as e:
        gc.compile(LOSS, optimizer=SpecOpt(spec), target="numpy")
    msg = str(e.value)
    assert "SpecOpt" in msg and ("'fW'" in msg or "'fb'" in msg), msg
    if isinstance(spec, dict) and "m" in spec:
        assert "'m'" in msg, msg


def test_update_returning_the_wrong_state_shape_names_both_shapes():
    opt = SpecOpt({"m": optim.StateSpec((3,))}, new=lambda p, v: gc.sum(p, axis=0) * 0.0 + gc.sum(p))
    # fW: sum over axis 0 of (4, 3) is (3,) -> fine; fb (3,): sum(axis=0) is () + () -> shape ()
    with pytest.raises(ShapeError, match=r"SpecOpt\.update: the new value of state 'fb/m' has shape \(\), "
                                         r"expected \(3,\)"):
        gc.compile(LOSS, optimizer=opt, target="numpy")
    with pytest.raises(ShapeError, match=r"state 'fW/m'.*\(4, 3\).*expected \(2,\)"):
        gc.compile(LOSS, optimizer=SpecOpt({"m": optim.StateSpec((2,))}, new=lambda p, v: p), target="numpy")


def test_state_of_any_shape_is_stored_checkpointed_and_checked():
    spec = {"s": optim.StateSpec((), init=2.0), "a": np.arange(5.0), "c": 0.5, "z": "ones"}
    step = gc.compile(LOSS, optimizer=SpecOpt(spec), target="numpy")
    st = step.state_dict()["state"]
    assert st["fW/s"].shape == () and float(st["fW/s"]) == 2.0
    np.testing.assert_array_equal(st["fb/a"], np.arange(5.0, dtype="f4"))
    assert st["fW/c"].shape == (4, 3) and np.all(st["fW/c"] == 0.5) and np.all(st["fb/z"] == 1)
    sd = step.state_dict()
    sd["state"]["fW/a"] = np.zeros(4)
    with pytest.raises(StateError, match=r"'fW/a' has shape \(4,\), expected \(5,\)"):
        step.load_state_dict(sd)


# ---- a factored second moment (Adafactor-like) ---------------------------------------------------------

class Factored(optim.Optimizer):
    """Adafactor's factored second moment without its relative step size or clipping:
    for a matrix, row and column means of g^2 (decayed by ``beta_2``) rebuild
    v = outer(r, c) / mean(r); vectors keep an unfactored v. The column accumulator starts
    from an array (its own shape), the row one from a StateSpec."""

    def __init__(self, learning_rate=0.05, beta_2=0.9, epsilon=1e-3):
        super().__init__(learning_rate=learning_rate, beta_2=beta_2, epsilon=epsilon)

    def state_spec(self, param):
        if len(param.shape) != 2:
            return {"v": "zeros"}
        rows, cols = param.shape
        return {"vr": optim.StateSpec((rows,), init="zeros"), "vc": np.zeros(cols, dtype=np.float32)}

    def update(self, param, grad, state, step):
        lr, b2, eps = self.hyper("learning_rate"), self.hyper("beta_2"), self.hyper("epsilon")
        g2 = gc.square(grad) + eps
        if "v" in state:
            v = b2 * state["v"] + (1.0 - b2) * g2
            return param - lr * grad / gc.sqrt(v), {"v": v}
        vr = b2 * state["vr"] + (1.0 - b2) * gc.mean(g2, axis=1)
        vc = b2 * state["vc"] + (1.0 - b2) * gc.mean(g2, axis=0)
        v = gc.expand_dims(vr, 1) * gc.expand_dims(vc, 0) / gc.mean(vr)
        return param - lr * grad / gc.sqrt(v), {"vr": vr, "vc": vc}


def factored_reference(params, grads_fn, steps, lr=0.05, b2=0.9, eps=1e-3):
    """The same rule in float64 NumPy."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    st = {k: ({"vr": np.zeros(v.shape[0]), "vc": np.zeros(v.shape[1])} if v.ndim == 2 else {"v": np.zeros(v.shape)})
          for k, v in p.items()}
    for t in range(steps):
        g = grads_fn(p, t)
        for k in p:
            g2 = g[k] ** 2 + eps
            s = st[k]
            if p[k].ndim == 2:
                s["vr"] = b2 * s["vr"] + (1 - b2) * g2.mean(axis=1)
                s["vc"] = b2 * s["vc"] + (1 - b2) * g2.mean(axis=0)
                v = np.outer(s["vr"], s["vc"]) / s["vr"].mean()
            else:
                s["v"] = b2 * s["v"] + (1 - b2) * g2
                v = s["v"]
            p[k] = p[k] - lr * g[k] / np.sqrt(v)
    return p, st


def _batch(t):
    return np.random.default_rng(100 + t).standard_normal((6, 4)).astype("f4")


def _grads(p, t):
    """d/dp of mean(tanh(x @ W + b)^2) in float64."""
    x = _batch(t).astype(np.float64)
    h = np.tanh(x @ p["fW"] + p["fb"])
    dz = 2 * h * (1 - h ** 2) / h.size
    return {"fW": x.T @ dz, "fb": dz.sum(axis=0)}


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_factored_second_moment_matches_numpy(target):
    step = gc.compile(LOSS, optimizer=Factored(), target=target)
    p0 = step.params
    for t in range(4):
        step(fx=_batch(t))
    ref_p, ref_st = factored_reference(p0, _grads, 4)
    sd = step.state_dict()
    assert sd["state"]["fW/vr"].shape == (4,) and sd["state"]["fW/vc"].shape == (3,)
    assert sd["state"]["fb/v"].shape == (3,) and int(sd["state"]["step"]) == 4
    for k in ref_p:
        np.testing.assert_allclose(sd["params"][k], ref_p[k], rtol=2e-4, atol=1e-5, err_msg=k)
    for k, s in ref_st.items():
        for name, v in s.items():
            np.testing.assert_allclose(sd["state"][f"{k}/{name}"], v, rtol=2e-4, atol=1e-7, err_msg=f"{k}/{name}")
    assert not np.allclose(sd["params"]["fW"], p0["fW"])  # it trained


def test_state_that_is_written_but_never_read_is_in_the_store():
    """An optimizer may keep state it only writes (e.g. the previous param, for logging)."""
    class KeepPrev(gc.optim.Optimizer):
        def __init__(self):
            super().__init__(learning_rate=0.5)

        def state_spec(self, param):
            return {"prev": "zeros"}

        def update(self, param, grad, state, step):
            return param - self.hyper("learning_rate") * grad, {"prev": param * 1.0}

    x = gc.input("x", (None, 2))
    W = gc.param("W", (2, 1), init=np.ones((2, 1), np.float32))
    loss = gc.mean(x @ W)
    xv = np.ones((3, 2), np.float32)
    for target in ("numpy", "cpu"):
        step = gc.compile(loss, optimizer=KeepPrev(), target=target)
        step(x=xv)
        step(x=xv)
        sd = step.state_dict()
        np.testing.assert_allclose(sd["state"]["W/prev"], np.full((2, 1), 0.5, np.float32))
        np.testing.assert_allclose(sd["params"]["W"], np.zeros((2, 1), np.float32))


@pytest.mark.parametrize("make, name, value", [
    (lambda: optim.SGD(0.1), "momentum", 0.9),           # no velocity state was compiled
    (lambda: optim.SGD(0.1, momentum=0.9), "momentum", 0.0),
    (lambda: optim.Adam(0.1), "weight_decay", 0.01),     # no decay term was compiled
])
def test_structural_hyperparameter_change_after_compile_is_refused(make, name, value):
    x = gc.input("x", (None, 2))
    W = gc.param("W", (2, 1), init=np.ones((2, 1), np.float32))
    opt = make()
    step = gc.compile(gc.mean(x @ W), optimizer=opt, target="numpy")
    xv = np.ones((3, 2), np.float32)
    step(x=xv)
    before = step.state_dict()
    setattr(opt, name, value)
    with pytest.raises(gc.GraphcError, match=rf"{type(opt).__name__}\.{name} was .* compile a new step"):
        step(x=xv)
    np.testing.assert_array_equal(step.params["W"], before["params"]["W"])
    assert step.iterations == 1
    opt.learning_rate = 0.5  # an ordinary hyper-parameter still changes freely once restored
    setattr(opt, name, 0.0 if value else 0.9)
    step(x=xv)
    assert step.iterations == 2


def test_hyperparameter_exchange_is_public():
    opt = optim.Adam(1e-3)
    v = opt.version
    opt.learning_rate = 2e-3
    assert opt.version == v + 1
    assert set(opt.hyper_feeds().values()) == set(opt.hyperparameters)
    opt.dtype = "float64"
    assert opt.hyper("learning_rate").dtype == np.float64
    with pytest.raises(TypeError):
        opt.dtype = "int32"


@pytest.mark.parametrize("make", [lambda: optim.SGD(nesterov="no"), lambda: optim.RMSprop(centered=1)])
def test_boolean_options_must_be_booleans(make):
    with pytest.raises(TypeError, match="must be True or False"):
        make()
