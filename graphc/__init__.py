"""graphc: a compiler for neural-network training steps.

Write a static graph with the DSL, differentiate it symbolically, and compile forward,
backward and the optimizer's update into one Numba-compiled call.
"""
from .errors import CompileError, DTypeError, FeedError, GraphcError, ShapeError, StateError  # noqa: F401
from .errors import HyperParameterError, IndexOutOfBoundsError, NumericsError  # noqa: F401
from .ir import Graph, Node  # noqa: F401
from .dsl import (  # noqa: F401
    Tensor, input, param, const, state,
    add, subtract, sub, multiply, mul, divide, div, negative, neg, power, exp, log, sqrt, abs, sign,
    square, maximum, minimum, where, clip, relu, leaky_relu, elu, sigmoid, tanh, gelu, softplus,
    greater, greater_equal, less, less_equal, equal, not_equal, cast, stop_gradient,
    matmul, transpose, reshape, broadcast_to, broadcast_like, sum_to, expand_dims, dim_size,
    sum, mean, max, softmax, log_softmax, softmax_cross_entropy, one_hot, take, mse, mae,
    binary_cross_entropy_with_logits, zeros_like, ones_like,
)
from .dsl import *  # noqa: F401,F403  (every public DSL function, see dsl.__all__)
from .autodiff import grad  # noqa: F401
from .derivatives import hessian, jacobian, jvp  # noqa: F401  (derivatives as functions)
from .substitution import substitute  # noqa: F401
from .interpret import evaluate  # noqa: F401
from .gradcheck import GradientCheckError, check_grads  # noqa: F401
from .api import compile  # noqa: F401
from .graphviz import to_dot  # noqa: F401  (the graph / a step's kernels as Graphviz DOT; gc.dot is np.dot)
from . import optim  # noqa: F401

__version__ = "0.1.0"
from . import threads  # noqa: F401,E402


def __getattr__(name: str):
    """``gc.nn`` without an explicit ``import graphc.nn`` (imported on first use: the core
    does not pay for the layer API)."""
    if name == "nn":
        import importlib
        return importlib.import_module(".nn", __name__)
    raise AttributeError(f"module 'graphc' has no attribute {name!r}")
