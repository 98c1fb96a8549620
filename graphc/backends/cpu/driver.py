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
from typing import Callable, Mapping

import numpy as np

from .entry import EntryDesc
from .intrinsics import X86, mxcsr_flush, mxcsr_restore
from .jit import LOCK, add_ir
from .lowering import Lowering, Unsupported, callee

RAISED_STATUS = 2_000_000  # above NUMERICS_STATUS's range: a kernel's raise, by message index
FEED_MISMATCH = -2  # a feed's rank, shape, dtype or contiguity is not the program's: nothing ran

_INTS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64, "uint8": 8, "uint16": 16, "uint32": 32,
         "uint64": 64, "voidptr": 64}
_DRIVERS: dict[str, tuple] = {}  # key -> (callable, what keeps its code and method table alive)


def enabled() -> bool:
    return os.environ.get("GRAPHC_NATIVE_DRIVER", "1") != "0"


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
    with LOCK:
        hit = _DRIVERS.get(key)
        if hit is None:
            ir_text, messages = _Translator(source, kinds, sigs, expect).module(f"graphc_driver_{key[:24]}")
            addr, mod = add_ir(ir_text, f"graphc_driver_{key[:24]}")
            name = b"step"
            md = _MethodDef(name, addr, METH_FASTCALL, b"graphc's compiled step (native driver)")
            new = ctypes.pythonapi.PyCFunction_NewEx
            new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.py_object, ctypes.py_object]
            fn = new(ctypes.addressof(md), None, None)
            hit = _DRIVERS[key] = (fn, messages, (md, name, mod))
        return hit[0], hit[1]


class _Translator(Lowering):
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
            if callee(s.value) == "restore_fpenv":  # done at the exit
                return
            self._expr(s.value)
        elif isinstance(s, ast.Return):
            v = self._expr(s.value) if s.value is not None else (ir.Constant(self.i64, 0), "i")
            self._return(self._as(v, self.i64))
        elif isinstance(s, ast.Raise):
            e = s.exc
            if not (isinstance(e, ast.Call) and callee(e) == "ValueError" and len(e.args) == 1
                    and isinstance(e.args[0], ast.Constant) and isinstance(e.args[0].value, str)):
                raise Unsupported("raise of something else than ValueError('...')")
            self.messages.append(e.args[0].value)
            self._return(ir.Constant(self.i64, RAISED_STATUS + len(self.messages) - 1))
        elif isinstance(s, ast.If):
            self._if(s)
        elif isinstance(s, ast.For):
            self._for(s)
        else:
            raise Unsupported(f"statement {ast.dump(s)[:80]}")

    def _for(self, s) -> None:
        """``for t in range(n):`` (a compiled scan's loop over its steps): ``t`` an int64
        phi. Names bound in the body are the step's own (addresses ``base + t * stride``):
        rebinding an outer name, or reading a body name after the loop, is Unsupported (the
        Numba driver compiles that text instead)."""
        ir, b = self.ir, self.b
        it = s.iter
        if (s.orelse or not isinstance(s.target, ast.Name) or not isinstance(it, ast.Call)
                or callee(it) != "range" or len(it.args) != 1 or it.keywords):
            raise Unsupported("a loop other than for <name> in range(n)")
        assigned = {t.id for st in ast.walk(ast.Module(body=s.body, type_ignores=[]))
                    if isinstance(st, ast.Assign) for t in st.targets if isinstance(t, ast.Name)}
        if (assigned | {s.target.id}) & set(self.env):
            raise Unsupported("a loop that rebinds a name bound before it")
        n = self._as(self._expr(it.args[0]), self.i64)
        pre = b.block
        head, body, done = (self.func.append_basic_block(x) for x in ("loop", "body", "endloop"))
        b.branch(head)
        b.position_at_end(head)
        t = b.phi(self.i64, name=s.target.id)
        t.add_incoming(ir.Constant(self.i64, 0), pre)
        b.cbranch(b.icmp_signed("<", t, n), body, done)
        b.position_at_end(body)
        outer = dict(self.env)
        self.env[s.target.id] = (t, "i")
        self._block(s.body)
        if not b.block.is_terminated:
            t.add_incoming(b.add(t, ir.Constant(self.i64, 1)), b.block)
            b.branch(head)
        self.env = outer
        b.position_at_end(done)

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
            ops = {ast.Add: b.add, ast.Sub: b.sub, ast.Mult: b.mul, ast.BitAnd: b.and_}  # (& : a scan's carry half)
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
        name = callee(e)
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
        if name == "_tick" and len(e.args) == 2:  # the profiling twin's clock (graphc/explain/)
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
        """``_tick(ticks, k)``: ``ticks[k]`` = CLOCK_MONOTONIC in ns (graphc/explain/clock.py's
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
