"""What graphc's two translators of generated text share (driver.py translates the driver,
kernels.py the kernels): the refusal that sends a text to Numba, declarations, truth values,
``if``/``else``, and reading dotted names and callees from the ``ast``."""
from __future__ import annotations

import ast


class Unsupported(Exception):
    """A form a translator does not know: Numba compiles that text instead (the Numba driver,
    or that one kernel)."""


class Lowering:
    """What the driver's and the kernels' translators (kernels.py) share: declarations,
    truth values, ``if``/``else``. Values are ``(IR value, kind)``, kind one of "b" (bool),
    "i" (int64), "u" (uint64), "f" (float32), "d" (float64), "w" (int32, kernels only)."""

    def _decl(self, name: str, ret, args, var_arg=False, pure=False):
        g = self.module_.globals.get(name)
        if g is None:
            g = self.ir.Function(self.module_, self.ir.FunctionType(ret, args, var_arg=var_arg), name)
            if pure:  # as Numba's cgutils.insert_pure_function declares the C math functions
                g.attributes.add("readonly")
                g.attributes.add("nounwind")
        return g

    def _truth(self, v):
        """Python's truth of a number: nonzero (a NaN is true, as in Python and Numba)."""
        val, kind = v
        if kind == "b":
            return val
        if kind in ("i", "u", "w"):
            return self.b.icmp_signed("!=", val, self.ir.Constant(val.type, 0))
        return self.b.fcmp_unordered("!=", val, self.ir.Constant(val.type, 0.0))

    def _if(self, s) -> None:
        b = self.b
        cond = self._truth(self._expr(s.test))
        then, other = self.func.append_basic_block("then"), self.func.append_basic_block("else")
        join = self.func.append_basic_block("endif")
        b.cbranch(cond, then, other)
        for block, body in ((then, s.body), (other, s.orelse)):
            b.position_at_end(block)
            self._block(body)
            if not b.block.is_terminated:
                b.branch(join)
        b.position_at_end(join)


def dotted(e) -> str:
    """``a.b.c`` of a name or an attribute chain ("" for anything else)."""
    parts = []
    while isinstance(e, ast.Attribute):
        parts.append(e.attr)
        e = e.value
    if isinstance(e, ast.Name):
        parts.append(e.id)
    elif parts:
        return ""
    return ".".join(reversed(parts))


def callee(call: ast.Call) -> str:
    return dotted(call.func)
