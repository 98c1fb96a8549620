"""The cpu driver compiled by graphc itself: the generated ``step`` text, translated to LLVM
IR with llvmlite and called as a builtin function, with no Numba compile and no Numba
dispatcher in between.

Why: the driver is a straight line of address arithmetic, checks and calls of the kernels'
native entries (``graphc_<name>``, bound by ``program.export``). Numba spent ~0.2 s typing and
compiling that line on a cold start, and its dispatcher ~0.6 µs per call unboxing the
arguments (a third of the tiny step's Python cost). Here the same text (the one
``step.source()`` shows and the profiling twin instruments) is read with ``ast`` and
emitted as one function with CPython's fast-call signature, ``step(self, args, nargs)``:
arrays are read as their data pointer (``PyArrayObject.data``, after a type check), scalar
hyper-parameters and feeds through ``PyFloat_AsDouble``/``PyLong_AsLongLong``/
``PyObject_IsTrue``; it releases the GIL while the kernels run (as ``nogil=True`` did), sets
and restores the subnormal flush (fpenv.py), and returns the status as an int. A kernel's
``raise ValueError(msg)`` line becomes the status ``RAISED_STATUS + i`` and the caller raises
``messages[i]``.

Only the statement forms the emitter writes are translated (``Unsupported`` for anything
else): the program then falls back to the Numba driver, which compiles the same text.
``GRAPHC_NATIVE_DRIVER=0`` forces that fallback (a reference for tests)."""
from __future__ import annotations

import ast
import ctypes
import hashlib
import os
import sys
import threading
from typing import Callable, Mapping

import numpy as np

from .entry import EntryDesc
from .intrinsics import X86, XXGEMM, mxcsr_flush, mxcsr_restore

RAISED_STATUS = 2_000_000  # above NUMERICS_STATUS's range: a kernel's raise, by message index
FEED_MISMATCH = -2  # a feed's rank, shape, dtype or contiguity is not the program's: nothing ran

_INTS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64, "uint8": 8, "uint16": 16, "uint32": 32,
         "uint64": 64, "voidptr": 64}


class Unsupported(Exception):
    """A driver statement this translator does not know (the Numba driver is used instead)."""


def enabled() -> bool:
    return os.environ.get("GRAPHC_NATIVE_DRIVER", "1") != "0"


# ---- one LLVM JIT for the process -----------------------------------------------------------------

_LOCK = threading.RLock()
_JIT: list = []
_DRIVERS: dict[str, tuple] = {}  # key -> (callable, what keeps its code and method table alive)


def _jit():
    if not _JIT:
        import llvmlite.binding as ll
        ll.initialize_native_target()
        ll.initialize_native_asmprinter()
        tm = ll.Target.from_default_triple().create_target_machine(
            cpu=ll.get_host_cpu_name(), features=ll.get_host_cpu_features().flatten(), opt=2, jit=True)
        engine = ll.create_mcjit_compiler(ll.parse_assembly(""), tm)
        _JIT.extend([ll, tm, engine])
    return _JIT


_ABI: list = []


def _check_abi() -> None:
    """The driver reads ndarray objects at fixed offsets (``_expect_array``). Check them on
    a live array once, so that another object layout (a free-threaded or debug CPython, a
    future NumPy) falls back to the Numba driver instead of reading the wrong words."""
    if not _ABI:
        a = np.zeros((3, 2), np.float32)
        word = lambda off, ty=ctypes.c_int64: ty.from_address(id(a) + off).value  # noqa: E731
        ok = (word(16) == a.ctypes.data and word(24, ctypes.c_int32) == 2 and word(56) == id(a.dtype)
              and ctypes.c_int64.from_address(word(32) + 8).value == 2 and word(64, ctypes.c_int32) & 1
              and ctypes.c_int64.from_address(id(a) + 8).value == id(np.ndarray))
        for dt in (np.dtype("float32"), np.dtype("int64"), np.dtype("float32").newbyteorder()):
            ok = ok and (ctypes.c_int32.from_address(id(dt) + 28).value == dt.num  # type_num
                         and ctypes.c_char.from_address(id(dt) + 26).value == dt.byteorder.encode())
        _ABI.append(bool(ok))
    if not _ABI[0]:
        raise Unsupported("ndarray objects are not laid out as this driver reads them")


class _MethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p), ("ml_flags", ctypes.c_int),
                ("ml_doc", ctypes.c_char_p)]


METH_FASTCALL = 0x0080


def expect_of(dtype, shape) -> tuple:
    """What ``native_driver``'s ``expect`` holds for an array argument of ``dtype`` and
    ``shape``: the dtype's address (NumPy's shared descriptor, the common case), the type
    numbers of every dtype equal to it (``int64`` is both ``long`` and ``longlong``) and the
    byte-order character a descriptor of another byte order carries. An equal dtype that is
    another object (unpickled arrays: multiprocessing and joblib loaders) is accepted by
    value; a byte-swapped one is a mismatch (the checked path converts it)."""
    dt = np.dtype(dtype)
    nums = sorted({np.dtype(c).num for c in np.typecodes["All"] if np.dtype(c) == dt} | {dt.num})
    swapped = ">" if sys.byteorder == "little" else "<"
    return (id(dt), tuple(nums), swapped, tuple(int(d) for d in shape))


def native_driver(source: str, kinds: list[str], entries: Mapping[str, EntryDesc],
                  expect: list | None = None) -> tuple[Callable, list[str]]:
    """The driver of ``source`` (its ``def step(...)``) as a builtin callable, and the
    messages of its raise statuses. ``kinds``: each parameter's argument kind, in order ("p"
    an ndarray, "d" a float, "i" an int, "b" a bool). ``entries``: the kernel entries it may
    call, by name (the emitter's descriptions: their C signatures). ``expect``: per parameter, None or
    ``expect_of(dtype, shape)`` an ndarray argument must have, C-contiguous: checked on the
    array object itself (its ``nd``, ``dimensions``, ``descr`` and ``flags``), anything else
    returns ``FEED_MISMATCH`` before anything runs. Compiled once per process and text
    (the dtype's address makes the code this process's own)."""
    _check_abi()
    expect = list(expect) if expect is not None else [None] * len(kinds)
    sigs = {name: d.ctypes for name, d in entries.items()}
    key = hashlib.sha256(repr((source, kinds, sorted(sigs.items()), expect)).encode()).hexdigest()
    with _LOCK:
        hit = _DRIVERS.get(key)
        if hit is None:
            ir_text, messages = _Translator(source, kinds, sigs, expect).module(f"graphc_driver_{key[:24]}")
            ll, tm, engine = _jit()
            mod = ll.parse_assembly(ir_text)
            mod.verify()
            engine.add_module(mod)
            engine.finalize_object()
            addr = engine.get_function_address(f"graphc_driver_{key[:24]}")
            name = b"step"
            md = _MethodDef(name, addr, METH_FASTCALL, b"graphc's compiled step (native driver)")
            new = ctypes.pythonapi.PyCFunction_NewEx
            new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.py_object, ctypes.py_object]
            fn = new(ctypes.addressof(md), None, None)
            hit = _DRIVERS[key] = (fn, messages, (md, name, mod))
        return hit[0], hit[1]


# ---- the translation ------------------------------------------------------------------------------

class _Lowering:
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


class _Translator(_Lowering):
    """``def step(...)`` of the emitter's driver text -> LLVM IR (text)."""

    def __init__(self, source: str, kinds: list[str], sigs: dict[str, list[str]], expect: list):
        from llvmlite import ir
        self.ir = ir
        tree = ast.parse(source)
        fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "step"]
        if len(fns) != 1:
            raise Unsupported("no single 'def step'")
        self.fn_ast = fns[0]
        self.params = [a.arg for a in self.fn_ast.args.args]
        if len(self.params) != len(kinds):
            raise Unsupported(f"parameters {self.params} vs kinds {kinds}")
        self.kinds, self.sigs = dict(zip(self.params, kinds)), sigs
        self.expect = dict(zip(self.params, expect))
        self.messages: list[str] = []
        self.i64, self.i32, self.i8p = ir.IntType(64), ir.IntType(32), ir.IntType(8).as_pointer()
        self.f64, self.f32, self.i1 = ir.DoubleType(), ir.FloatType(), ir.IntType(1)

    def _ctype(self, t: str):
        if t in ("float64", "double"):
            return self.f64
        if t in ("float32", "float"):
            return self.f32
        if t in _INTS:
            return self.ir.IntType(_INTS[t])
        raise Unsupported(f"C type {t}")

    def module(self, name: str) -> tuple[str, list[str]]:
        ir = self.ir
        self.module_ = m = ir.Module(name=name)
        import llvmlite.binding as ll
        m.triple = ll.get_process_triple()
        fnty = ir.FunctionType(self.i8p, [self.i8p, self.i8p.as_pointer(), self.i64])
        f = ir.Function(m, fnty, name)
        _, args, nargs = f.args
        b = self.b = ir.IRBuilder(f.append_basic_block("entry"))
        fail = f.append_basic_block("fail")
        self.exit = f.append_basic_block("exit")
        # arguments: count, then each unboxed
        ok = f.append_basic_block("unbox")
        b.cbranch(b.icmp_signed("==", nargs, ir.Constant(self.i64, len(self.params))), ok, fail)
        b.position_at_end(fail)
        seterr = self._decl("PyErr_SetString", ir.VoidType(), [self.i8p, self.i8p])
        # the process's objects by address (no data symbols: this code is compiled per process)
        exc = ir.Constant(self.i64, id(TypeError)).inttoptr(self.i8p)
        msg = self._cstring(f"graphc native driver: {len(self.params)} ndarrays and numbers expected "
                            f"({', '.join(self.params)})")
        b.call(seterr, [exc, msg])
        b.ret(ir.Constant(self.i8p, None))
        err = f.append_basic_block("error")  # a Python error is set already
        with b.goto_block(err):
            b.ret(ir.Constant(self.i8p, None))
        mismatch = f.append_basic_block("mismatch")  # a feed of another shape/dtype/layout
        box = self._decl("PyLong_FromLongLong", self.i8p, [self.i64])
        with b.goto_block(mismatch):
            b.ret(b.call(box, [ir.Constant(self.i64, FEED_MISMATCH)]))
        b.position_at_end(ok)
        self.env: dict[str, tuple] = {}
        nd_type = ir.Constant(self.i64, id(np.ndarray)).inttoptr(self.i8p)
        isinst = self._decl("PyObject_IsInstance", self.i32, [self.i8p, self.i8p])
        occurred = self._decl("PyErr_Occurred", self.i8p, [])
        for i, p in enumerate(self.params):
            obj = b.load(b.gep(args, [ir.Constant(self.i64, i)]))
            kind = self.kinds[p]
            words = b.bitcast(obj, self.i8p.as_pointer())
            if kind == "p":
                tp = b.load(b.gep(words, [ir.Constant(self.i64, 1)]))
                good = f.append_basic_block(f"arr{i}")
                slow = f.append_basic_block(f"sub{i}")
                b.cbranch(b.icmp_unsigned("==", tp, nd_type), good, slow)
                b.position_at_end(slow)
                r = b.call(isinst, [obj, nd_type])
                slow_ok = b.icmp_signed(">", r, ir.Constant(self.i32, 0))
                b.cbranch(slow_ok, good, fail)
                b.position_at_end(good)
                if self.expect.get(p) is not None:
                    self._expect_array(obj, self.expect[p], mismatch, f, i)
                data = b.load(b.gep(words, [ir.Constant(self.i64, 2)]))
                self.env[p] = (b.ptrtoint(data, self.i64), "i")
            elif kind == "d":
                v = b.call(self._decl("PyFloat_AsDouble", self.f64, [self.i8p]), [obj])
                self._check_err(b.fcmp_ordered("==", v, ir.Constant(self.f64, -1.0)), occurred, err, f, i)
                self.env[p] = (v, "d")
            elif kind == "i":
                v = b.call(self._decl("PyLong_AsLongLong", self.i64, [self.i8p]), [obj])
                self._check_err(b.icmp_signed("==", v, ir.Constant(self.i64, -1)), occurred, err, f, i)
                self.env[p] = (v, "i")
            elif kind == "b":
                v = b.call(self._decl("PyObject_IsTrue", self.i32, [self.i8p]), [obj])
                bad = b.icmp_signed("<", v, ir.Constant(self.i32, 0))
                go = f.append_basic_block(f"bool{i}")
                b.cbranch(bad, err, go)
                b.position_at_end(go)
                self.env[p] = (b.zext(v, self.i64), "i")
            else:
                raise Unsupported(f"argument kind {kind!r}")
        # the GIL is released while the step runs; subnormals flushed, the word restored at exit
        ts = b.call(self._decl("PyEval_SaveThread", self.i8p, []), [])
        saved = self._fpenv_save()
        body = f.append_basic_block("body")
        b.branch(body)
        b.position_at_end(self.exit)
        status = b.phi(self.i64)
        self.status_phi = status
        self._fpenv_restore(saved)
        b.call(self._decl("PyEval_RestoreThread", ir.VoidType(), [self.i8p]), [ts])
        b.ret(b.call(self._decl("PyLong_FromLongLong", self.i8p, [self.i64]), [status]))
        b.position_at_end(body)
        self.func = f
        self._block(self.fn_ast.body)
        if not b.block.is_terminated:
            raise Unsupported("the driver does not end with a return")
        return str(m), self.messages

    def _expect_array(self, obj, expect, mismatch, f, i) -> None:
        """Branch to ``mismatch`` unless ``obj`` (an ndarray) has the expected rank, dims,
        dtype and the C-contiguous flag. NumPy's ``PyArrayObject_fields``, stable since 1.7
        and in 2.x: data @16, nd @24 (int), dimensions @32, strides @40, base @48, descr @56,
        flags @64 (int). The dtype (``expect_of``) is its descr pointer, or an equal
        descriptor by value: ``PyArray_Descr``'s byteorder @26 (char) and type_num @28 (int),
        the same in NumPy 1.x and 2.x (``_check_abi`` reads both on live dtypes)."""
        b, ir = self.b, self.ir
        descr, nums, swapped, shape = expect
        i32p = ir.IntType(32).as_pointer()
        raw = b.bitcast(obj, ir.IntType(8).as_pointer())
        at = lambda off, ty: b.bitcast(b.gep(raw, [ir.Constant(self.i64, off)]), ty)  # noqa: E731
        ok = b.icmp_signed("==", b.load(at(24, i32p)), ir.Constant(self.i32, len(shape)))
        d = b.load(at(56, self.i8p.as_pointer()))
        same = b.icmp_unsigned("==", b.ptrtoint(d, self.i64), ir.Constant(self.i64, descr))
        num = b.load(b.bitcast(b.gep(d, [ir.Constant(self.i64, 28)]), i32p))
        equal = None
        for n in nums:
            e = b.icmp_signed("==", num, ir.Constant(self.i32, int(n)))
            equal = e if equal is None else b.or_(equal, e)
        order = b.load(b.gep(d, [ir.Constant(self.i64, 26)]))
        equal = b.and_(equal, b.icmp_unsigned("!=", order, ir.Constant(ir.IntType(8), ord(swapped))))
        ok = b.and_(ok, b.or_(same, equal))
        flags = b.load(at(64, i32p))
        ok = b.and_(ok, b.icmp_signed("!=", b.and_(flags, ir.Constant(self.i32, 1)), ir.Constant(self.i32, 0)))
        dims_ok = f.append_basic_block(f"dims{i}")
        b.cbranch(ok, dims_ok, mismatch)
        b.position_at_end(dims_ok)
        if shape:
            dims = b.load(at(32, self.i64.as_pointer().as_pointer()))
            good = None
            for k, d in enumerate(shape):
                e = b.icmp_signed("==", b.load(b.gep(dims, [ir.Constant(self.i64, k)])), ir.Constant(self.i64, int(d)))
                good = e if good is None else b.and_(good, e)
            nxt = f.append_basic_block(f"shape{i}")
            b.cbranch(good, nxt, mismatch)
            b.position_at_end(nxt)

    def _check_err(self, maybe, occurred, err, f, i):
        b, ir = self.b, self.ir
        chk = f.append_basic_block(f"chk{i}")
        go = f.append_basic_block(f"ok{i}")
        b.cbranch(maybe, chk, go)
        b.position_at_end(chk)
        e = b.call(occurred, [])
        b.cbranch(b.icmp_unsigned("!=", e, ir.Constant(self.i8p, None)), err, go)
        b.position_at_end(go)

    def _cstring(self, s: str):
        ir = self.ir
        data = bytearray(s.encode()) + b"\0"
        g = ir.GlobalVariable(self.module_, ir.ArrayType(ir.IntType(8), len(data)), f"str{len(self.module_.globals)}")
        g.global_constant, g.linkage = True, "internal"
        g.initializer = ir.Constant(ir.ArrayType(ir.IntType(8), len(data)), data)
        return self.b.bitcast(g, self.i8p)

    def _fpenv_save(self):
        return mxcsr_flush(self.b) if X86 else None

    def _fpenv_restore(self, slot):
        if slot is not None:
            mxcsr_restore(self.b, slot)

    # -- statements
    def _return(self, value):
        self.status_phi.add_incoming(value, self.b.block)
        self.b.branch(self.exit)

    def _block(self, stmts) -> None:
        for s in stmts:
            if self.b.block.is_terminated:
                raise Unsupported("code after a return")
            self._stmt(s)

    def _stmt(self, s) -> None:
        ir = self.ir
        if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name):
            name = s.targets[0].id
            if name == "fpcsr":  # fpcsr = flush_subnormals(): done in the prologue
                return
            self.env[name] = self._expr(s.value)
        elif isinstance(s, ast.Expr) and isinstance(s.value, ast.Call):
            if _callee(s.value) == "restore_fpenv":  # done at the exit
                return
            self._expr(s.value)
        elif isinstance(s, ast.Return):
            v = self._expr(s.value) if s.value is not None else (ir.Constant(self.i64, 0), "i")
            self._return(self._as(v, self.i64))
        elif isinstance(s, ast.Raise):
            e = s.exc
            if not (isinstance(e, ast.Call) and _callee(e) == "ValueError" and len(e.args) == 1
                    and isinstance(e.args[0], ast.Constant) and isinstance(e.args[0].value, str)):
                raise Unsupported("raise of something else than ValueError('...')")
            self.messages.append(e.args[0].value)
            self._return(ir.Constant(self.i64, RAISED_STATUS + len(self.messages) - 1))
        elif isinstance(s, ast.If):
            self._if(s)
        else:
            raise Unsupported(f"statement {ast.dump(s)[:80]}")

    # -- expressions: (value, "i" | "d" | "f" | "b")
    def _expr(self, e):
        b, ir = self.b, self.ir
        if isinstance(e, ast.Name):
            if e.id not in self.env:
                raise Unsupported(f"name {e.id}")
            return self.env[e.id]
        if isinstance(e, ast.Constant):
            if isinstance(e.value, bool):
                return ir.Constant(self.i64, int(e.value)), "i"
            if isinstance(e.value, int):
                return ir.Constant(self.i64, e.value), "i"
            if isinstance(e.value, float):
                return ir.Constant(self.f64, e.value), "d"
            raise Unsupported(f"constant {e.value!r}")
        if isinstance(e, ast.UnaryOp):
            v = self._expr(e.operand)
            if isinstance(e.op, ast.USub):
                return (b.fneg(v[0]), v[1]) if v[1] in "df" else (b.neg(v[0]), v[1])
            if isinstance(e.op, ast.Not):
                return b.not_(self._truth(v)), "b"
            raise Unsupported("unary op")
        if isinstance(e, ast.BinOp):
            l, r = self._expr(e.left), self._expr(e.right)
            if l[1] != "i" or r[1] != "i":
                raise Unsupported("arithmetic on floats")
            ops = {ast.Add: b.add, ast.Sub: b.sub, ast.Mult: b.mul}
            op = ops.get(type(e.op))
            if op is None:
                raise Unsupported("binary op")
            return op(l[0], r[0]), "i"
        if isinstance(e, ast.BoolOp):
            vals = [self._truth(self._expr(v)) for v in e.values]
            acc = vals[0]
            for v in vals[1:]:
                acc = b.or_(acc, v) if isinstance(e.op, ast.Or) else b.and_(acc, v)
            return acc, "b"
        if isinstance(e, ast.Compare) and len(e.ops) == 1:
            l, r = self._expr(e.left), self._expr(e.comparators[0])
            sym = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}.get(type(e.ops[0]))
            if sym is None:
                raise Unsupported("comparison")
            if l[1] == "i" and r[1] == "i":
                return b.icmp_signed(sym, l[0], r[0]), "b"
            return b.fcmp_ordered(sym, self._as(l, self.f64), self._as(r, self.f64)), "b"
        if isinstance(e, ast.Call):
            return self._call(e)
        raise Unsupported(f"expression {ast.dump(e)[:80]}")

    def _call(self, e):
        b, ir = self.b, self.ir
        name = _callee(e)
        if name == "np.int64" and len(e.args) == 1:
            a = e.args[0]  # np.int64(X.ctypes.data): an array's address
            if (isinstance(a, ast.Attribute) and a.attr == "data" and isinstance(a.value, ast.Attribute)
                    and a.value.attr == "ctypes" and isinstance(a.value.value, ast.Name)):
                return self._expr(a.value.value)
            return self._as(self._expr(a), self.i64), "i"
        if name == "int" and len(e.args) == 1:
            return self._as(self._expr(e.args[0]), self.i64), "i"
        if name in ("np.float32", "np.float64", "float") and len(e.args) == 1:
            return self._as(self._expr(e.args[0]), self.f64), "d"
        if name == "math.isfinite" and len(e.args) == 1:
            v = self._as(self._expr(e.args[0]), self.f64)
            fabs = self._decl("llvm.fabs.f64", self.f64, [self.f64])
            return b.fcmp_ordered("!=", b.call(fabs, [v]), ir.Constant(self.f64, float("inf"))), "b"
        if name == "_tick" and len(e.args) == 2:  # the profiling twin's clock (graphc/explain.py)
            return self._tick(e)
        sig = self.sigs.get(name)
        if sig is None or e.keywords:
            raise Unsupported(f"call of {name}")
        if len(e.args) != len(sig):
            raise Unsupported(f"{name}: {len(e.args)} arguments for {len(sig)} parameters")
        types_ = [self._ctype(t) for t in sig]
        fn = self._decl(f"graphc_{name}", self.i64, types_)
        vals = [self._as(self._expr(a), t) for a, t in zip(e.args, types_)]
        return b.call(fn, vals), "i"

    def _tick(self, e):
        """``_tick(ticks, k)``: ``ticks[k]`` = CLOCK_MONOTONIC in ns (explain.clock_tick's
        clock, read the same way: clock_gettime, ~20 ns)."""
        import time
        import llvmlite.binding as ll
        b, ir = self.b, self.ir
        k = e.args[1]
        if not (isinstance(k, ast.Constant) and type(k.value) is int) or not ll.address_of_symbol("clock_gettime"):
            raise Unsupported("a clock read of this form")
        ts = b.alloca(ir.ArrayType(self.i64, 2))
        clock = self._decl("clock_gettime", self.i32, [self.i32, self.i8p])
        b.call(clock, [ir.Constant(self.i32, int(getattr(time, "CLOCK_MONOTONIC", 1))), b.bitcast(ts, self.i8p)])
        sec = b.load(b.gep(ts, [ir.Constant(self.i64, 0), ir.Constant(self.i64, 0)]))
        nsec = b.load(b.gep(ts, [ir.Constant(self.i64, 0), ir.Constant(self.i64, 1)]))
        ticks = b.inttoptr(self._as(self._expr(e.args[0]), self.i64), self.i64.as_pointer())
        b.store(b.add(b.mul(sec, ir.Constant(self.i64, 1_000_000_000)), nsec),
                b.gep(ticks, [ir.Constant(self.i64, k.value)]))
        return ir.Constant(self.i64, 0), "i"

    def _as(self, v, t):
        """Convert a (value, kind) to IR type ``t`` as Numba's implicit conversions do."""
        b, ir = self.b, self.ir
        val, kind = v
        if kind == "b":
            val, kind = b.zext(val, self.i64), "i"
        if isinstance(t, ir.IntType):
            if kind in "df":
                return b.fptosi(val, t)
            w = val.type.width
            return val if w == t.width else (b.trunc(val, t) if w > t.width else b.sext(val, t))
        if kind == "i":
            return b.sitofp(val, t)
        if val.type == t:
            return val
        return b.fptrunc(val, t) if t == self.f32 else b.fpext(val, t)


def _dotted(e) -> str:
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


def _callee(call: ast.Call) -> str:
    return _dotted(call.func)


# ---- the native image: a cpu program's kernels loaded without Numba --------------------------------
#
# A warm start spent ~0.5 s in Numba before the first step: importing it, initializing its
# CPU target, and loading each kernel's cache entry through it. The kernels' machine code
# does not need any of that: after a program's first successful call graphc writes each
# kernel entry's object code (graphc's own, kernels.py, or what Numba's cache holds) to
# ``<module>-<host>-<digest>.o``, with its
# digest in the program manifest, and a later process adds those objects to its own LLVM JIT
# and binds each entry's address to ``graphc_<name>``. What the objects call into Numba's C
# runtime (helpers, NRT, the math functions, Python's exception objects) is bound exactly as
# Numba binds it, from Numba's C extensions loaded on their own (the ``numba`` package is not
# imported). Every undefined symbol of every object is checked before anything is added (an
# unresolved one would abort the process inside LLVM); anything unusual (a digest mismatch, a
# symbol that cannot be bound, another host) makes the program compile its kernels instead.

_BOUND: list = []  # the runtime symbols are bound once
_IMAGES: dict[str, int] = {}  # object file digest -> its entry's address (loaded once per process)


def host_tag() -> str:
    """Object code is specific to the CPU it was compiled for (Numba compiles for the host)
    and to the Numba and llvmlite that compiled it."""
    if not _HOST:  # once per process: it is read at every program's start
        import importlib.metadata as md
        ll = _jit()[0]
        parts = [ll.get_host_cpu_name(), ll.get_host_cpu_features().flatten(), ll.get_process_triple()]
        for dist in ("numba", "llvmlite"):
            try:
                parts.append(md.version(dist))
            except md.PackageNotFoundError:  # pragma: no cover - installed with graphc
                parts.append("?")
        _HOST.append(hashlib.sha256("|".join(parts).encode()).hexdigest()[:16])
    return _HOST[0]


_HOST: list[str] = []


def image_of(module) -> tuple[str, str, bytes] | None:
    """(symbol, entry's native name, object code) of a loaded kernel module's ``cfunc``
    entry, or None. (Parallel programs are not imaged: their kernels link Numba's parfor
    runtime, which needs Numba.)"""
    cf = getattr(module, "_cfunc", None)
    if cf is None:
        return None
    # the module's own ``name = export(name, _cfunc)``: the external function drivers call
    ext = getattr(module, getattr(getattr(cf, "__wrapped__", None), "__name__", ""), None)
    sym = getattr(ext, "symbol", None)
    try:
        obj = cf._library._compiled_object  # compiled in this process (the JIT consumes it on load)
        if obj is None:  # loaded from Numba's cache: the object code is in its cache file
            codegen = cf._targetdescr.target_context.codegen()
            data = cf._cache._cache_file.load(cf._cache._index_key(cf._sig, codegen))
            name, kind, (obj, _) = data[0]
            if kind != "object":
                return None
    except Exception:  # noqa: BLE001 - Numba's internals: no image then, not an error
        return None
    return (sym, cf.native_name, bytes(obj)) if sym and obj else None


def _load_extension(name: str, pattern: str):
    """One of Numba's C extension modules, without importing the ``numba`` package (the
    import would initialize all of Numba: ~0.15 s, and its target ~0.3 s more on first use).
    Registered in ``sys.modules`` as the regular import would, so a later ``import numba``
    uses the same module."""
    import sys
    if name in sys.modules:
        return sys.modules[name]
    import glob
    import importlib.machinery
    import importlib.util
    top = name.split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{top} is not installed")
    paths = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], pattern)))
    if not paths:
        raise ImportError(f"{name} not found")
    loader = importlib.machinery.ExtensionFileLoader(name, paths[0])
    mod = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, paths[0], loader=loader))
    sys.modules[name] = mod
    try:
        loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def _bind_runtime(ll) -> None:
    """The symbols Numba binds for its compiled code (numba/core/base.py
    ``_load_global_helpers``, the NRT's registration, the math functions of externals.py),
    bound to the same addresses."""
    if _BOUND:
        return
    import builtins
    helper = _load_extension("numba._helperlib", "_helperlib*.so")
    dynfunc = _load_extension("numba._dynfunc", "_dynfunc*.so")
    nrt = _load_extension("numba.core.runtime._nrt_python", os.path.join("core", "runtime", "_nrt_python*.so"))
    ll.add_symbol("_Py_NoneStruct", id(None))
    for helpers in (helper.c_helpers, dynfunc.c_helpers):
        for name, addr in helpers.items():
            ll.add_symbol("numba_" + name, addr)
    for name, addr in nrt.c_helpers.items():
        ll.add_symbol(name if name.startswith("_") else "NRT_" + name, addr)
    for obj in builtins.__dict__.values():
        if isinstance(obj, type) and issubclass(obj, BaseException):
            ll.add_symbol(f"PyExc_{obj.__name__}", id(obj))
    for name in _MATH:  # Numba's own bindings of the C math functions (externals.py)
        if name in helper.c_helpers:
            ll.add_symbol(name, helper.c_helpers[name])
    _bind_gemm(ll)
    _BOUND.append(True)


def _bind_gemm(ll) -> None:
    """``numba_xxgemm`` (what the kernels' GEMMs call) straight into SciPy's OpenBLAS.

    Numba's own looks up ``sgemm`` in ``scipy.linalg.cython_blas`` on its first call, which
    imports all of ``scipy.linalg`` (~0.2 s, a third of a warm start). The same BLAS library
    (the one cython_blas wraps, with the same thread pool) is opened with ctypes and called
    from a few lines of IR with Numba's signature. Where SciPy ships no such library (a
    build against the system's BLAS), Numba's stays bound: correct, only slower to start."""
    import glob
    import importlib.util
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return
    root = os.path.dirname(spec.submodule_search_locations[0])
    libs = sorted(glob.glob(os.path.join(root, "scipy.libs", "libscipy_openblas*.so*")))
    try:
        lib = ctypes.CDLL(libs[0])
        fns = [ctypes.cast(getattr(lib, f"scipy_{t}gemm_"), ctypes.c_void_p).value for t in "sdcz"]
    except (IndexError, OSError, AttributeError):
        return
    from llvmlite import ir
    i8, i32 = ir.IntType(8), ir.IntType(32)
    p8, p32 = i8.as_pointer(), i32.as_pointer()
    m = ir.Module(name="graphc_xxgemm")
    m.triple = ll.get_process_triple()
    f = XXGEMM.define(m, "graphc_xxgemm")
    kind, ta, tb, mm, nn, kk, alpha, a, lda, bb, ldb, beta, c, ldc = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    blas = ir.FunctionType(ir.VoidType(), [p8, p8, p32, p32, p32, p8, p8, p32, p8, p32, p8, p8, p32])

    def slot(v, ty):
        x = b.alloca(ty)
        b.store(b.trunc(v, ty) if ty == i32 else v, x)
        return x

    args = [slot(ta, i8), slot(tb, i8), slot(mm, i32), slot(nn, i32), slot(kk, i32), alpha, a, slot(lda, i32),
            bb, slot(ldb, i32), beta, c, slot(ldc, i32)]
    for ch, addr in zip("sdcz", fns):  # Numba's kinds; other Numba code may call this too
        ll.add_symbol(f"graphc_blas_{ch}gemm", addr)
        yes, no = f.append_basic_block(ch), f.append_basic_block(ch + "_no")
        b.cbranch(b.icmp_unsigned("==", kind, ir.Constant(i8, ord(ch))), yes, no)
        b.position_at_end(yes)
        b.call(ir.Function(m, blas, f"graphc_blas_{ch}gemm"), args)
        b.ret(ir.Constant(i32, 0))
        b.position_at_end(no)
    b.ret(ir.Constant(i32, -1))  # not a BLAS kind (Numba's returns -1 too)
    _, _, engine = _jit()
    mod = ll.parse_assembly(str(m))
    mod.verify()
    engine.add_module(mod)
    engine.finalize_object()
    _GEMM.append(mod)
    ll.add_symbol(XXGEMM.symbol, engine.get_function_address("graphc_xxgemm"))


_GEMM: list = []  # the module of graphc_xxgemm (kept alive)


_MATH = ("fmod", "fmodf", "ldexp", "ldexpf", "log1p", "log1pf", "expm1", "expm1f", "exp", "expf", "exp2",
         "exp2f", "log", "logf", "log2", "log2f", "log10", "log10f", "sqrt", "sqrtf", "pow", "powf", "sin",
         "sinf", "cos", "cosf", "tan", "tanf", "asin", "asinf", "acos", "acosf", "atan", "atanf", "atan2",
         "atan2f", "sinh", "sinhf", "cosh", "coshf", "tanh", "tanhf", "asinh", "asinhf", "acosh", "acoshf",
         "atanh", "atanhf", "erf", "erff", "erfc", "erfcf", "gamma", "gammaf", "lgamma", "lgammaf",
         "round", "roundf", "trunc", "truncf", "floor", "floorf", "ceil", "ceilf", "fabs", "fabsf")


def undefined_symbols(obj: bytes) -> list[str]:
    """The undefined symbols of an ELF64 little-endian relocatable object (its .symtab)."""
    import struct
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        raise ValueError("not an ELF64 little-endian object")
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    sections = []
    for i in range(shnum):
        h = shoff + i * shentsize
        sh_type, = struct.unpack_from("<I", obj, h + 4)
        off, size, link = struct.unpack_from("<QQI", obj, h + 24)
        entsize, = struct.unpack_from("<Q", obj, h + 56)
        sections.append((sh_type, off, size, link, entsize))
    out = []
    for sh_type, off, size, link, entsize in sections:
        if sh_type != 2 or entsize < 24:  # SHT_SYMTAB
            continue
        strtab = sections[link][1]
        for s in range(off + entsize, off + size, entsize):  # entry 0 is the null symbol
            name_off, info, _, shndx = struct.unpack_from("<IBBH", obj, s)
            if shndx == 0 and name_off:  # SHN_UNDEF
                end = obj.index(b"\0", strtab + name_off)
                out.append(obj[strtab + name_off:end].decode())
    return out


def load_images(images: list[tuple[str, str, str, bytes]]) -> str | None:
    """Add kernel objects ``(symbol, native name, digest, object code)`` to the JIT and
    bind each entry to its symbol; returns None, or why not (nothing is bound then)."""
    with _LOCK:
        ll, _, engine = _jit()
        try:
            _bind_runtime(ll)
        except (ImportError, OSError, AttributeError) as e:
            return f"Numba's C runtime could not be loaded ({e})"
        todo = []
        for sym, native_name, digest, obj in images:
            if hashlib.sha256(obj).hexdigest() != digest:
                return f"{sym}: its object code does not match its digest"
            if digest in _IMAGES:
                continue
            try:
                missing = [u for u in undefined_symbols(obj) if not ll.address_of_symbol(u)]
            except (ValueError, IndexError, UnicodeDecodeError) as e:
                return f"{sym}: unreadable object code ({e})"
            if missing:
                return f"{sym}: unresolved symbols {missing[:4]}"
            todo.append((sym, native_name, digest, obj))
        for sym, native_name, digest, obj in todo:
            engine.add_object_file(ll.ObjectFileRef.from_data(obj))
        if todo:
            engine.finalize_object()
        for sym, native_name, digest, obj in todo:
            _IMAGES[digest] = engine.get_function_address(native_name)
        addrs = {sym: _IMAGES[digest] for sym, _, digest, _ in images}
        if not all(addrs.values()):
            return "an entry point is missing from its object code"
        for sym, addr in addrs.items():
            ll.add_symbol(sym, addr)
        return None
