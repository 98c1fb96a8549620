"""Optimizer hyper-parameters are checked against their domains, not only for finiteness.

``Adam(epsilon=0)`` divides 0 by 0 on a zero gradient and ``beta_1=1.0`` makes Adam's bias
correction 1 - beta_1**t zero: every parameter NaN on the first step. Each built-in declares
the domains Keras 3 and torch.optim document or enforce (lr >= 0, 0 <= beta < 1, epsilon > 0,
momentum in [0, 1] as Keras' SGD checks, weight_decay >= 0, rho in [0, 1), Lion's beta_1 in
(0, 1] as Keras' Lion checks); a value outside is a HyperParameterError naming the optimizer,
the hyper-parameter, the value and the range, when it is set (constructor, attribute), at
compile and when a state dict restores it. Custom optimizers declare theirs the same way.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc import optim
from graphc.errors import GraphcError, HyperParameterError, StateError

# (optimizer, hyper-parameter, a refused value, the range named in the message)
REFUSED = [
    (optim.SGD, "learning_rate", -0.1, "[0, inf)"),
    (optim.SGD, "momentum", 1.5, "[0, 1]"),
    (optim.SGD, "momentum", -0.1, "[0, 1]"),
    (optim.SGD, "weight_decay", -1e-4, "[0, inf)"),
    (optim.Adam, "learning_rate", -1.0, "[0, inf)"),
    (optim.Adam, "beta_1", 1.0, "[0, 1)"),
    (optim.Adam, "beta_1", -0.5, "[0, 1)"),
    (optim.Adam, "beta_2", 1.0, "[0, 1)"),
    (optim.Adam, "epsilon", 0.0, "(0, inf)"),
    (optim.Adam, "epsilon", -1e-7, "(0, inf)"),
    (optim.AdamW, "weight_decay", -0.004, "[0, inf)"),
    (optim.AdamW, "beta_2", 1.5, "[0, 1)"),
    (optim.RMSprop, "rho", 1.0, "[0, 1)"),
    (optim.RMSprop, "momentum", 2.0, "[0, 1]"),
    (optim.RMSprop, "epsilon", 0.0, "(0, inf)"),
    (optim.Adagrad, "epsilon", 0.0, "(0, inf)"),
    (optim.Adagrad, "initial_accumulator_value", -0.1, "[0, inf)"),
    (optim.Lion, "beta_1", 0.0, "(0, 1]"),
    (optim.Lion, "beta_2", 1.5, "[0, 1]"),
    (optim.Lion, "learning_rate", -1e-3, "[0, inf)"),
]
IDS = [f"{c.__name__}-{k}={v}" for c, k, v, _ in REFUSED]
ACCEPTED = [(optim.SGD, "momentum", 1.0), (optim.SGD, "momentum", 0.0), (optim.SGD, "learning_rate", 0.0),
            (optim.Adam, "beta_1", 0.0), (optim.Adam, "beta_2", 0.0), (optim.Adam, "epsilon", 1e-30),
            (optim.RMSprop, "rho", 0.0), (optim.Adagrad, "initial_accumulator_value", 0.0),
            (optim.Lion, "beta_1", 1.0), (optim.Lion, "beta_2", 0.0)]


def _message(cls, name, value, rng):
    return rf"{cls.__name__}: hyper-parameter '{name}'.*{value}.*{re.escape(rng)}"


@pytest.mark.parametrize("cls,name,value,rng", REFUSED, ids=IDS)
def test_out_of_domain_value_is_refused_by_the_constructor(cls, name, value, rng):
    with pytest.raises(HyperParameterError, match=_message(cls, name, value, rng)) as ei:
        cls(**{name: value})
    assert isinstance(ei.value, GraphcError) and isinstance(ei.value, ValueError)


@pytest.mark.parametrize("cls,name,value,rng", REFUSED, ids=IDS)
def test_out_of_domain_value_is_refused_as_an_attribute(cls, name, value, rng):
    opt = cls()
    before, version = getattr(opt, name), opt.version
    with pytest.raises(HyperParameterError, match=_message(cls, name, value, rng)):
        setattr(opt, name, value)
    assert getattr(opt, name) == before and opt.version == version


@pytest.mark.parametrize("cls,name,value", ACCEPTED)
def test_boundary_values_inside_the_domain_are_accepted(cls, name, value):
    opt = cls(**{name: value})
    assert getattr(opt, name) == value


def test_lr_alias_and_keras_module_are_checked_too():
    from graphc.nn import optimizers as keras_optimizers
    opt = keras_optimizers.SGD(0.1)
    with pytest.raises(HyperParameterError, match=r"SGD: hyper-parameter 'learning_rate'.*-1"):
        opt.lr = -1
    with pytest.raises(HyperParameterError, match=r"SGD.*'momentum'.*1.5.*\[0, 1\]"):
        keras_optimizers.SGD(momentum=1.5)
    assert keras_optimizers.get("adam").hyperparameter_domains["epsilon"] == "(0, inf)"


X = gc.input("hpx", (None, 2))
W = gc.param("hpW", (2,), init="ones")
LOSS = gc.sum(gc.square(X * W))
XB = np.ones((2, 2), "f4")


def test_a_compiled_step_refuses_a_bad_value_before_it_runs():
    step = gc.compile(LOSS, optimizer=optim.Adam(0.1), target="numpy")
    step(hpx=XB)
    before = step.params["hpW"]
    with pytest.raises(HyperParameterError, match=r"Adam: hyper-parameter 'beta_1'.*1\.0.*\[0, 1\)"):
        step.optimizer.beta_1 = 1.0
    with pytest.raises(HyperParameterError, match="learning_rate"):
        step.optimizer.learning_rate = -1
    step(hpx=XB)
    assert np.isfinite(step.params["hpW"]).all() and not np.array_equal(step.params["hpW"], before)


@pytest.mark.parametrize("name,value", [("epsilon", 0.0), ("beta_1", 1.0), ("learning_rate", -0.5)])
def test_a_state_dict_with_an_out_of_domain_value_changes_nothing(tmp_path, name, value):
    step = gc.compile(LOSS, optimizer=optim.Adam(0.1), target="numpy")
    step(hpx=XB)
    before = step.state_dict()
    sd = step.state_dict()
    sd["params"]["hpW"] = sd["params"]["hpW"] + 1.0
    sd["hyper"][name] = value
    with pytest.raises(StateError, match=rf"load_state_dict: Adam: hyper-parameter '{name}'") as ei:
        step.load_state_dict(sd)
    assert isinstance(ei.value, HyperParameterError)  # catchable as either
    np.testing.assert_array_equal(step.params["hpW"], before["params"]["hpW"])
    assert step.optimizer.hyperparameters == before["hyper"]
    # the same through a checkpoint file
    path = step.save(tmp_path / "ck")
    with np.load(path) as z:
        arrays = dict(z)
    arrays[f"hyper::{name}"] = np.asarray(value)
    np.savez(path, **arrays)
    with pytest.raises(HyperParameterError, match=rf"load: .*ck\.npz.*'{name}'"):
        step.load(path)
    assert step.optimizer.hyperparameters == before["hyper"]


def test_nn_compile_and_load_weights_check_domains(tmp_path):
    from graphc.nn import Dense, Sequential
    m = Sequential([Dense(1, input_shape=(2,))])
    bad = optim.RMSprop()
    bad._hyper["rho"] = 1.0  # past every setter: compile checks again what it will feed
    with pytest.raises(HyperParameterError, match=r"RMSprop.*'rho'.*1\.0"):
        m.compile(optimizer=bad, loss="mse", target="numpy")
        m.train_function  # noqa: B018 - graphc.nn builds the step lazily
    with pytest.raises(HyperParameterError, match=r"RMSprop.*'rho'.*1\.0"):
        gc.compile(LOSS, optimizer=bad, target="numpy")
    m.compile(optimizer=optim.Adam(0.01), loss="mse", target="numpy")
    m.fit(np.ones((4, 2), "f4"), np.zeros((4, 1), "f4"), epochs=1, verbose=0)
    path = m.save_weights(tmp_path / "w", include_optimizer=True)
    with np.load(path) as z:
        arrays = dict(z)
    arrays["hyper::epsilon"] = np.asarray(0.0)
    np.savez(path, **arrays)
    before = m.get_weights()
    with pytest.raises(ValueError, match=r"epsilon.*\(0, inf\)"):
        m.load_weights(path)
    assert m.optimizer.epsilon == 1e-7
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)


# ---- custom optimizers ------------------------------------------------------------------------------------

class Damped(optim.Optimizer):
    """A custom rule with declared domains (class attribute, merged with its subclasses')."""

    domains = {"learning_rate": "[0, inf)", "damping": "(0, 1]"}

    def __init__(self, learning_rate=0.1, damping=0.5, scale=1.0, domains=None):
        super().__init__(learning_rate=learning_rate, damping=damping, scale=scale, domains=domains)

    def update(self, param, grad, state, step):
        return param - self.hyper("learning_rate") * self.hyper("damping") * self.hyper("scale") * grad, {}


class DampedPositiveScale(Damped):
    domains = {"scale": "(0, inf)"}


def test_custom_optimizers_declare_domains():
    with pytest.raises(HyperParameterError, match=r"Damped: hyper-parameter 'damping'.*0\.0.*\(0, 1\]"):
        Damped(damping=0.0)
    opt = Damped(scale=-2.0)  # undeclared: finite is enough
    assert opt.scale == -2.0
    child = DampedPositiveScale()
    assert child.hyperparameter_domains == {"learning_rate": "[0, inf)", "damping": "(0, 1]", "scale": "(0, inf)"}
    with pytest.raises(HyperParameterError, match=r"DampedPositiveScale.*'scale'.*-2"):
        child.scale = -2.0
    with pytest.raises(HyperParameterError, match=r"DampedPositiveScale.*'learning_rate'"):
        child.learning_rate = -1.0
    # per instance, as a wrapper copying another optimizer's hyper-parameters does
    wrapped = Damped(domains={"scale": "[1, 2]"})
    with pytest.raises(HyperParameterError, match=r"'scale'.*3.*\[1, 2\]"):
        wrapped.scale = 3.0
    assert Damped().hyperparameter_domains.get("scale") is None


@pytest.mark.parametrize("spec", ["0, 1", "[1, 0]", "(0, 0)", "[0, nan]", "[a, 1)", 5])
def test_a_malformed_domain_is_refused_naming_it(spec):
    with pytest.raises((TypeError, ValueError), match=r"Damped: the domain of hyper-parameter 'damping'"):
        Damped(domains={"damping": spec})


def test_a_domain_for_an_unknown_name_is_refused():
    with pytest.raises(ValueError, match=r"Damped.*domain.*'dampin'.*damping"):
        Damped(domains={"dampin": "[0, 1]"})
