"""Exception types, and the helper that finds the user's line of code that built a node."""
from __future__ import annotations

import os
import sys

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


class GraphcError(Exception):
    """Base class of every error graphc raises on purpose."""


class ShapeError(GraphcError, ValueError):
    """Operand shapes do not fit the op (raised when the node is built)."""


class IndexOutOfBoundsError(ShapeError, IndexError):
    """A static index does not fit the tensor (``x[5]`` on an axis of 3, too many indices):
    an IndexError as NumPy raises, and a ShapeError like graphc's other shape mistakes."""


class DTypeError(GraphcError, TypeError):
    """Operand dtypes do not fit the op (raised when the node is built)."""


class FeedError(GraphcError, ValueError):
    """A call fed a missing, unknown or mis-shaped input (raised before native code runs)."""


class StateError(GraphcError, ValueError):
    """A state dict or checkpoint does not fit the compiled step (names, shapes, dtypes, NaN)."""


class CheckpointFileError(StateError, OSError):
    """A checkpoint path that cannot be read or written (a directory, a missing parent
    directory, an OS error while writing): a StateError naming the user's path, and an
    OSError (``errno``, ``filename``) for code that catches those."""

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno, self.filename = errno, filename

    def __str__(self) -> str:  # the message, not OSError's "[Errno N] ..." form
        return str(self.args[0]) if self.args else ""


class CheckpointNotFoundError(CheckpointFileError, FileNotFoundError):
    """``load`` found no file at the checkpoint path (nor at it with ``.npz`` appended)."""


class HyperParameterError(GraphcError, ValueError):
    """An optimizer hyper-parameter outside its domain (``Adam(beta_1=1.0)``, a negative
    learning rate, ``epsilon=0``): names the optimizer, the hyper-parameter, the value and
    the allowed range. Raised when it is set, at compile and when a state dict restores it."""


class HyperParameterStateError(StateError, HyperParameterError):
    """A state dict or checkpoint restores a hyper-parameter outside its domain: caught as
    either a StateError (a bad load) or a HyperParameterError."""


class CompileError(GraphcError, RuntimeError):
    """Code generation or Numba compilation failed; the message names the generated file."""


class NumericsError(GraphcError, FloatingPointError):
    """With ``compile(..., check_numerics=True)``: a step computed a NaN or infinite loss,
    output or parameter/state update. Raised before anything is written to the store."""


def user_location() -> str:
    """Return 'file:line' of the innermost stack frame outside the graphc package.

    Nodes remember where they were built so that every later error can point at the
    user's own line rather than at graphc internals.
    """
    f = sys._getframe(1)
    while f is not None:
        fn = os.path.abspath(f.f_code.co_filename)
        if not fn.startswith(_PKG_DIR + os.sep):
            return f"{f.f_code.co_filename}:{f.f_lineno}"
        f = f.f_back
    return "<unknown>"
