"""Errors: ShapeError/DTypeError when a node is built (naming the op, the operand shapes and
this file's line), FeedError when a call is fed badly (naming the input, expected vs given),
grad's errors, and zero gradients through comparisons, integer casts and stop_gradient."""
from __future__ import annotations

import inspect
import os
import re

import numpy as np
import pytest

import graphc as gc
from graphc import DTypeError, FeedError, ShapeError

THIS_FILE = os.path.basename(__file__)


def here() -> int:
    """The line number of the caller's current line."""
    return inspect.currentframe().f_back.f_lineno


def assert_located(excinfo, line: int, op: str, *fragments: str) -> str:
    msg = str(excinfo.value)
    assert msg.startswith(f"{op}:") or f"{op}:" in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    m = re.search(r"at (\S+):(\d+)", msg)
    assert m, f"no file:line in {msg!r}"
    assert os.path.basename(m.group(1)) == THIS_FILE, msg
    assert int(m.group(2)) == line, f"line {m.group(2)} != {line} in {msg!r}"
    return msg


# ---- construction errors ------------------------------------------------------------------------

def a(shape, dtype="float32", name=None):
    return gc.input(name or f"in_{'x'.join(map(str, shape))}_{dtype}_{np.random.randint(1 << 30)}", shape, dtype=dtype)


def test_matmul_inner_dims():
    x, w = a((2, 3)), a((4, 5))
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.matmul(x, w)  # noqa: E702
    assert_located(ei, line, "matmul", "(2, 3)", "(4, 5)")


def test_matmul_operator_and_rank():
    x, v = a((2, 3)), a((3,))
    with pytest.raises(ShapeError) as ei:
        line = here(); x @ v  # noqa: E702
    assert_located(ei, line, "matmul", "(2, 3)", "(3,)", "2-D")


def test_matmul_dtypes():
    with pytest.raises(DTypeError) as ei:
        line = here(); gc.matmul(a((2, 3), "int64"), a((3, 2), "int64"))  # noqa: E702
    assert_located(ei, line, "matmul", "(2, 3) int64", "(3, 2) int64")
    with pytest.raises(DTypeError) as ei:
        line = here(); gc.matmul(a((2, 3), "float64"), a((3, 2), "float32"))  # noqa: E702
    assert_located(ei, line, "matmul", "(2, 3) float64", "(3, 2) float32")


@pytest.mark.parametrize("opname,fn", [("add", gc.add), ("sub", gc.sub), ("mul", gc.mul), ("div", gc.div),
                                       ("maximum", gc.maximum), ("greater", gc.greater)])
def test_broadcast_mismatch(opname, fn):
    x, y = a((2, 3)), a((4,))
    with pytest.raises(ShapeError) as ei:
        line = here(); fn(x, y)  # noqa: E702
    assert_located(ei, line, opname, "(2, 3)", "(4,)")


def test_broadcast_batch_dim_against_fixed_dim():
    x, y = a((None, 3)), a((5, 3))
    with pytest.raises(ShapeError) as ei:
        line = here(); x + y  # noqa: E702
    assert_located(ei, line, "add", "(None, 3)", "(5, 3)")


def test_broadcast_to():
    x = a((2, 3))
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.broadcast_to(x, (4, 3, 2))  # noqa: E702
    assert_located(ei, line, "broadcast_to", "(2, 3)", "(4, 3, 2)")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.broadcast_to(x, (3,))  # noqa: E702
    assert_located(ei, line, "broadcast_to", "(2, 3)", "(3,)")


def test_reshape():
    x = a((2, 3))
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.reshape(x, (4,))  # noqa: E702
    assert_located(ei, line, "reshape", "(2, 3)", "(4,)")
    with pytest.raises(ShapeError) as ei:
        line = here(); x.reshape(-1, -1)  # noqa: E702
    assert_located(ei, line, "reshape", "(2, 3)", "-1")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.reshape(x, (-1, 4))  # noqa: E702
    assert_located(ei, line, "reshape", "(2, 3)", "(-1, 4)")
    xb = a((None, 6))
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.reshape(xb, (3, 2))  # noqa: E702
    assert_located(ei, line, "reshape", "(None, 6)", "(3, 2)")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.reshape(xb, (-1, 4))  # noqa: E702 (6 and 4 do not divide each other)
    assert_located(ei, line, "reshape", "(None, 6)", "(-1, 4)")


def test_transpose():
    x = a((2, 3, 4))
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.transpose(x, (0, 0, 1))  # noqa: E702
    assert_located(ei, line, "transpose", "(2, 3, 4)", "(0, 0, 1)")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.transpose(x, (1, 0))  # noqa: E702
    assert_located(ei, line, "transpose", "(2, 3, 4)")


@pytest.mark.parametrize("red", ["sum", "mean", "max", "softmax", "log_softmax"])
def test_reduction_axis_out_of_range(red):
    x = a((2, 3))
    with pytest.raises(ShapeError) as ei:
        line = here(); getattr(gc, red)(x, axis=2)  # noqa: E702
    assert_located(ei, line, red, "(2, 3)", "axis 2")
    with pytest.raises(ShapeError) as ei:
        line = here(); getattr(gc, red)(x, axis=-3)  # noqa: E702
    assert_located(ei, line, red, "(2, 3)", "axis -3")


def test_sum_repeated_axis_and_tensor_method():
    x = a((2, 3))
    with pytest.raises(ShapeError) as ei:
        line = here(); x.sum(axis=(1, -1))  # noqa: E702
    assert_located(ei, line, "sum", "(2, 3)", "repeated")


def test_softmax_cross_entropy_label_shape():
    z = a((None, 10))
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.softmax_cross_entropy(z, a((None, 1), "int64"))  # noqa: E702
    assert_located(ei, line, "softmax_cross_entropy", "(None, 10)", "(None, 1)")
    z8 = a((8, 10))
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.softmax_cross_entropy(z8, a((7,), "int64"))  # noqa: E702
    assert_located(ei, line, "softmax_cross_entropy", "(8, 10)", "(7,)")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.softmax_cross_entropy(a((2, 3, 4)), a((2,), "int64"))  # noqa: E702
    assert_located(ei, line, "softmax_cross_entropy", "(2, 3, 4)", "(2,)")


def test_softmax_cross_entropy_label_dtype():
    z = a((None, 10))
    with pytest.raises(DTypeError) as ei:
        line = here(); gc.softmax_cross_entropy(z, a((None,), "float32"))  # noqa: E702
    assert_located(ei, line, "softmax_cross_entropy", "(None, 10) float32", "(None,) float32", "integer")
    with pytest.raises(DTypeError) as ei:
        line = here(); gc.softmax_cross_entropy(a((None, 10), "int64"), a((None,), "int64"))  # noqa: E702
    assert_located(ei, line, "softmax_cross_entropy", "(None, 10) int64")


def test_where_condition_not_boolean():
    x = a((2, 3))
    with pytest.raises(DTypeError) as ei:
        line = here(); gc.where(x, x, 0.0)  # noqa: E702
    assert_located(ei, line, "where", "(2, 3) float32", "boolean")
    c = a((4,), "bool")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.where(c, x, 0.0)  # noqa: E702
    assert_located(ei, line, "where", "(4,) bool", "(2, 3) float32")


@pytest.mark.parametrize("opname", ["log", "exp", "sqrt", "tanh", "sigmoid", "relu", "softplus", "gelu"])
def test_float_only_unary_on_integers(opname):
    i = a((3,), "int64")
    with pytest.raises(DTypeError) as ei:
        line = here(); getattr(gc, opname)(i)  # noqa: E702
    assert_located(ei, line, opname, "(3,) int64")


def test_boolean_arithmetic_and_mixed_comparison():
    b, x = a((3,), "bool"), a((3,))
    with pytest.raises(DTypeError) as ei:
        line = here(); b + b  # noqa: E702
    assert_located(ei, line, "add", "(3,) bool")
    with pytest.raises(DTypeError) as ei:
        line = here(); -b  # noqa: E702
    assert_located(ei, line, "neg", "(3,) bool")
    with pytest.raises(DTypeError) as ei:
        line = here(); gc.less(b, x)  # noqa: E702
    assert_located(ei, line, "less", "(3,) bool", "(3,) float32")
    with pytest.raises(DTypeError) as ei:
        line = here(); gc.sum(b)  # noqa: E702
    assert_located(ei, line, "sum", "(3,) bool")


def test_div_of_integers_is_a_dtype_error():
    i = a((3,), "int64")
    with pytest.raises(DTypeError) as ei:
        line = here(); i / i  # noqa: E702
    assert_located(ei, line, "div", "(3,) int64")


def test_dsl_level_errors_are_located_too():
    x = a((2, 3))
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.power(x, x)  # noqa: E702
    assert_located(ei, line, "pow", "(2, 3)")
    with pytest.raises(DTypeError) as ei:
        line = here(); gc.one_hot(x, 3)  # noqa: E702
    assert_located(ei, line, "one_hot", "(2, 3) float32")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.expand_dims(x, 3)  # noqa: E702
    assert_located(ei, line, "expand_dims", "(2, 3)")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.param("p_none_dim", (None, 3))  # noqa: E702
    assert_located(ei, line, "param 'p_none_dim'", "(None, 3)")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.param("p_bad_init", (2, 2), init=np.zeros((3, 2)))  # noqa: E702
    assert_located(ei, line, "param 'p_bad_init'", "(3, 2)", "(2, 2)")
    with pytest.raises(DTypeError) as ei:
        line = here(); gc.param("p_int", (2,), dtype="int64")  # noqa: E702
    assert_located(ei, line, "param 'p_int'", "int64")
    with pytest.raises(ValueError, match="unknown initializer"):
        gc.param("p_unknown_init", (2,), init="nope")


def test_error_points_at_user_line_inside_helper_functions():
    """The location is the innermost user frame: a helper in this file, not graphc internals."""
    def layer(h, n_in, n_out):
        w = gc.const(np.zeros((n_in, n_out), np.float32))
        return h @ w  # the line that fails
    line = inspect.getsourcelines(layer)[1] + 2
    with pytest.raises(ShapeError) as ei:
        layer(a((4, 3)), 5, 2)
    assert_located(ei, line, "matmul", "(4, 3)", "(5, 2)")


def test_node_remembers_its_source_line():
    line = here(); x = a((2,)) * 2.0  # noqa: E702
    assert x.src.endswith(f"{THIS_FILE}:{line}")


# ---- feed errors --------------------------------------------------------------------------------

@pytest.fixture
def fn():
    x = gc.input("fx", (None, 3))
    lab = gc.input("flab", (None,), dtype="int64")
    W = gc.param("fW", (3, 4))
    loss = gc.softmax_cross_entropy(x @ W, lab)
    return gc.compile({"loss": loss, "h": x @ W}, target="numpy")


def good_feeds(batch=5):
    rng = np.random.default_rng(0)
    return {"fx": rng.standard_normal((batch, 3)).astype(np.float32), "flab": rng.integers(0, 4, batch)}


def test_feeds_ok(fn):
    out = fn(**good_feeds())
    assert set(out) == {"loss", "h"} and out["h"].shape == (5, 4)


def test_feed_missing_input(fn):
    f = good_feeds()
    del f["flab"]
    with pytest.raises(FeedError) as ei:
        fn(**f)
    msg = str(ei.value)
    assert "missing" in msg and "flab" in msg and "(None,)" in msg and "int64" in msg


def test_feed_unknown_name(fn):
    with pytest.raises(FeedError) as ei:
        fn(**good_feeds(), fz=np.zeros(3))
    msg = str(ei.value)
    assert "unknown" in msg and "fz" in msg and "fx" in msg and "flab" in msg


def test_feed_wrong_fixed_dim(fn):
    f = good_feeds()
    f["fx"] = np.zeros((5, 4), np.float32)
    with pytest.raises(FeedError) as ei:
        fn(**f)
    msg = str(ei.value)
    assert "'fx'" in msg and "(None, 3)" in msg and "(5, 4)" in msg


def test_feed_wrong_rank(fn):
    f = good_feeds()
    f["fx"] = np.zeros((5, 3, 1), np.float32)
    with pytest.raises(FeedError) as ei:
        fn(**f)
    msg = str(ei.value)
    assert "'fx'" in msg and "(None, 3)" in msg and "(5, 3, 1)" in msg


def test_feed_float_to_integer_labels(fn):
    f = good_feeds()
    f["flab"] = f["flab"].astype(np.float64)
    with pytest.raises(FeedError) as ei:
        fn(**f)
    msg = str(ei.value)
    assert "'flab'" in msg and "int64" in msg and "float64" in msg


def test_feed_batch_dims_disagree(fn):
    f = good_feeds()
    f["flab"] = f["flab"][:4]
    with pytest.raises(FeedError) as ei:
        fn(**f)
    msg = str(ei.value)
    assert "batch" in msg and "fx" in msg and "flab" in msg and "5" in msg and "4" in msg


@pytest.mark.parametrize("bad", [4, -1])
def test_feed_labels_out_of_range(fn, bad):
    f = good_feeds()
    f["flab"][2] = bad
    with pytest.raises(FeedError) as ei:
        fn(**f)
    msg = str(ei.value)
    assert "'flab'" in msg and "[0, 4)" in msg and str(bad) in msg


def test_feed_ints_for_floats_and_lists_are_accepted(fn):
    f = good_feeds()
    ref = fn(**f)
    out = fn(fx=f["fx"].tolist(), flab=f["flab"].astype(np.int32))
    np.testing.assert_allclose(out["loss"], ref["loss"], rtol=1e-6)


def test_bad_feed_changes_nothing_in_a_training_step():
    x = gc.input("sx", (None, 2))
    w = gc.param("sw", (2, 1), init="ones")
    step = gc.compile(gc.mean(gc.square(x @ w)), optimizer=gc.optim.SGD(0.1), target="numpy")
    before = step.state_dict()
    with pytest.raises(FeedError):
        step(sx=np.zeros((3, 5), np.float32))
    after = step.state_dict()
    np.testing.assert_array_equal(after["params"]["sw"], before["params"]["sw"])
    np.testing.assert_array_equal(after["state"]["step"], before["state"]["step"])


# ---- grad errors and zero gradients -------------------------------------------------------------

def test_grad_wrt_integer_is_dtype_error():
    x = gc.input("gi_x", (3,), dtype="float64")
    i = gc.input("gi_i", (3,), dtype="int64")
    y = gc.sum(x * gc.cast(i, "float64"))
    with pytest.raises(DTypeError) as ei:
        line = here(); gc.grad(y, [x, i])  # noqa: E702
    msg = str(ei.value)
    assert "gi_i" in msg and "int64" in msg and f"{THIS_FILE}:{line}" in msg


def test_grad_of_non_scalar_is_shape_error():
    x = gc.input("gs_x", (None, 3), dtype="float64")
    with pytest.raises(ShapeError) as ei:
        line = here(); gc.grad(x * 2.0, x)  # noqa: E702
    msg = str(ei.value)
    assert "scalar" in msg and "(None, 3)" in msg and f"{THIS_FILE}:{line}" in msg


def test_grad_of_integer_y_is_dtype_error():
    i = gc.input("gy_i", (3,), dtype="int64")
    x = gc.input("gy_x", (3,), dtype="float64")
    with pytest.raises(DTypeError):
        gc.grad(gc.sum(i), x)


def _grad_values(y, xs, feeds):
    return gc.evaluate(gc.grad(y, xs), feeds, {})


def test_gradients_through_comparisons_are_zero():
    x = gc.input("cz_x", (4,), dtype="float64")
    xv = np.array([-1.5, -0.5, 0.5, 2.0])
    # only the comparison path: zero
    y1 = gc.sum(gc.cast(x > 0.0, "float64"))
    (g1,) = _grad_values(y1, [x], {x.name: xv})
    np.testing.assert_array_equal(g1, np.zeros(4))
    # mask * x: the gradient is the mask (the comparison contributes nothing)
    y2 = gc.sum(gc.cast(gc.greater_equal(x, 0.0), "float64") * x)
    (g2,) = _grad_values(y2, [x], {x.name: xv})
    np.testing.assert_array_equal(g2, (xv >= 0).astype(float))
    # a where whose branches do not depend on x
    y3 = gc.sum(gc.where(x < 0.0, gc.ones_like(x), 3.0))
    (g3,) = _grad_values(y3, [x], {x.name: xv})
    np.testing.assert_array_equal(g3, np.zeros(4))
    # and a round trip through an integer cast
    y4 = gc.sum(gc.cast(gc.cast(x * 10.0, "int64"), "float64"))
    (g4,) = _grad_values(y4, [x], {x.name: xv})
    np.testing.assert_array_equal(g4, np.zeros(4))


def test_gradients_through_stop_gradient():
    x = gc.input("sg_x", (3,), dtype="float64")
    xv = np.array([1.0, -2.0, 3.0])
    (g,) = _grad_values(gc.sum(gc.stop_gradient(x) * 3.0), [x], {x.name: xv})
    np.testing.assert_array_equal(g, np.zeros(3))
    (g,) = _grad_values(gc.sum(x * gc.stop_gradient(x)), [x], {x.name: xv})
    np.testing.assert_array_equal(g, xv)  # d/dx (x * c) with c = x held fixed
    (g,) = _grad_values(gc.sum(gc.sign(x) * x), [x], {x.name: xv})
    np.testing.assert_array_equal(g, np.sign(xv))


def test_gradient_of_unrelated_tensor_is_zero():
    x = gc.input("uz_x", (2, 3), dtype="float64")
    z = gc.input("uz_z", (None, 3), dtype="float64")
    y = gc.sum(x * x)
    gx, gz = gc.grad(y, [x, z])
    assert gz.shape == (None, 3)
    vx, vz = gc.evaluate([gx, gz], {x.name: np.ones((2, 3)), z.name: np.ones((4, 3))}, {})
    np.testing.assert_array_equal(vx, 2 * np.ones((2, 3)))
    np.testing.assert_array_equal(vz, np.zeros((4, 3)))


def test_check_grads_reports_a_wrong_vjp():
    """check_grads catches a bad derivative: stop_gradient hides one from the VJP."""
    x = gc.input("cg_x", (3,), dtype="float64")
    y = gc.sum(x * gc.stop_gradient(x))
    with pytest.raises(gc.GradientCheckError, match="cg_x"):
        gc.check_grads(y, [x], feeds={x.name: np.array([1.0, 2.0, 3.0])})
