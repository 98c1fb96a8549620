"""The op set. Each op is declared once, in the module of its kind."""
from .base import OpDef, all_ops, get_op, register  # noqa: F401
from . import source, elementwise, reduce, movement, linalg, nn, indexing, slicing, conv, random, control, numeric  # noqa: F401,E402
