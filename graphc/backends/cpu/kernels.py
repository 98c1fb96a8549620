"""The cpu kernels compiled by graphc itself: a kernel module's ``cfunc`` entry, read with
``ast`` and emitted as LLVM IR with llvmlite, typed as Numba types it.

Why: on a cold start Numba spent ~0.45 s starting up (its import, its target registries, the
``scipy.linalg`` import its typing brings in) and 0.05-0.25 s per kernel in Python-level
typing and lowering, most of a medium MLP's first step. The kernels the emitter writes are a
small language: views over addresses, ``range`` loops, ``if``, scalar arithmetic on numbers,
``math`` functions, a BLAS GEMM and a fill. That language is translated here, straight to IR,
then optimized by LLVM at O3 with loop and SLP vectorization (llvmlite's new pass manager)
for the host CPU, and emitted as object code: the object is what the native image stores
(image.py), and loading it is how this process binds ``graphc_<name>`` too. (Numba 0.68's
own pipeline is O3 with loop vectorization and SLP vectorization off by default, and honours
``NUMBA_OPT`` and ``NUMBA_CPU_NAME``; this compiler reads neither. The tests compare the two
compilers' results bit for bit.)

The results must be Numba's bit for bit (tests compare the two on every kind of kernel), so
the typing follows Numba's rules, not NumPy's nor C's: ``int64 + float32`` is ``float64``,
``float32 / int64`` is ``float64``, a float literal is ``float64``, an int is ``int64``,
comparisons are ordered except ``!=``, negation is ``-0.0 - x``, ``max``/``min`` select with
``>``/``<`` as Numba's ``do_minmax``, integer ``//`` and ``%`` floor (0 for a zero divisor, the
NumPy error model, and for the minimum by -1), float ``//`` and ``%`` are CPython's
float_divmod as Numba's ``real_divmod`` computes it (``x / y`` and NaN for a zero divisor),
``math.atan2`` is libm's ``atan2f``/``atan2``, a negative index wraps around, an int32 item
stays int32 where Numba keeps it (``abs``, unary minus before widening, ``max``/``min``), the same ``math`` symbols are called
(llvm.exp and llvm.log intrinsics, ``sqrtf``, ``tanhf``... as pure externals) and the same
``numba_xxgemm`` with the same arguments. Anything outside that subset (a variable whose
type changes, mixed signed/unsigned integers, integer powers, allocation other than
``np.empty``/``np.full``, slicing, a constant condition, parallel kernels) raises
``Unsupported``: that kernel is compiled by Numba, the others are not.
``GRAPHC_NATIVE_KERNELS=0`` compiles every kernel through Numba (a reference for tests)."""
from __future__ import annotations

import ast
import hashlib
import os

from .entry import EntryDesc
from .intrinsics import ALLREDUCE, DIALECT, RUNS, XXGEMM, exp32_ir, run_ir, tanh32_ir
from .jit import jit
from .lowering import Lowering, Unsupported, callee, dotted

B, I, U, F, D = "b", "i", "u", "f", "d"  # bool, int64, uint64, float32, float64
W = "w"  # int32: an array's items; it widens to int64 in every operator but abs, max, min and unification
_DTYPES = {"float32": F, "float64": D, "int64": I, "int32": W, "bool": B, "bool_": B, "uint64": U}
_EXTERN = {"math.sqrt": ("sqrtf", "sqrt"), "math.tanh": ("tanhf", "tanh"), "math.log1p": ("log1pf", "log1p"),
           "math.expm1": ("expm1f", "expm1"), "math.erf": ("erff", "erf"), "math.tan": ("tanf", "tan"),
           "math.sinh": ("sinhf", "sinh"), "math.cosh": ("coshf", "cosh"), "math.atan": ("atanf", "atan"),
           "math.asin": ("asinf", "asin"), "math.acos": ("acosf", "acos"), "math.asinh": ("asinhf", "asinh"),
           "math.acosh": ("acoshf", "acosh"), "math.atanh": ("atanhf", "atanh"), "math.erfc": ("erfcf", "erfc"),
           "math.log2": ("log2f", "log2"), "math.log10": ("log10f", "log10")}
_INTRINSIC = {"math.exp": "llvm.exp", "math.log": "llvm.log", "math.sin": "llvm.sin", "math.cos": "llvm.cos",
              "math.fabs": "llvm.fabs"}


def enabled() -> bool:
    return os.environ.get("GRAPHC_NATIVE_KERNELS", "1") != "0"


def unify(a: str, b: str) -> str:
    """The type of ``x if c else y`` (and of max/min), as Numba unifies two scalar types."""
    if a == b:
        return a
    if B in (a, b):
        return b if a == B else a
    if W in (a, b):
        return unify(I if a == W else a, I if b == W else b)
    return D  # int64/uint64/float32/float64 mixed: float64 holds them all


def arith(a: str, b: str) -> str:
    """The result type of ``+ - *`` (and of ``/`` between floats) on two scalar types."""
    s = {a, b}
    if s <= {B, I}:
        return I
    if U in s:
        if s == {U}:
            return U
        if s & {F, D}:
            return D
        raise Unsupported("uint64 mixed with a signed integer")
    if D in s or I in s:
        return D
    return F  # float32 with float32 or bool


def divmod_type(a: str, b: str) -> str:
    """The result type of ``%`` and ``//``: integers floor-divide as int64 (uint64 alone as
    uint64), floats as ``+ - *`` type them."""
    s = {a, b}
    if s <= {B, I}:
        return I
    if s == {U}:
        return U
    return arith(a, b)


def atan2_type(a: str, b: str) -> str:
    """The type ``math.atan2`` computes in: Numba's float32 and float64 versions, integers
    through the float64 one."""
    t = arith(a, b)
    return t if t in (F, D) else D


def compare_type(a: str, b: str) -> str:
    """The type two scalars are compared in."""
    s = {a, b}
    if s <= {B, I}:
        return I
    if s == {U}:
        return U
    if U in s and not s & {F, D}:
        raise Unsupported("uint64 compared with a signed integer")
    if s <= {F, B}:
        return F
    return D


class Arr:
    """An array value: its element pointer, dtype kind, IR element type, dims and strides (in
    elements), and layout ("C", "F", or "A")."""

    def __init__(self, ptr, kind, ety, dims, strides, layout):
        self.ptr, self.kind, self.ety, self.dims, self.strides, self.layout = ptr, kind, ety, dims, strides, layout


def native_name(module: str) -> str:
    return f"graphc_native_{module}"


_OBJECTS: dict[str, bytes] = {}  # digest of module name and text -> object code (compiled once per process)


def compile_kernel(module: str, source: str, desc: EntryDesc) -> tuple[str, str, bytes, bool]:
    """(symbol, native name, object code, whether it was compiled now rather than earlier in
    this process) of the kernel module ``module`` (its text ``source``, its entry described
    by ``desc``: the emitter's signature, operand dtypes and intrinsics, which the text is
    checked against); raises ``Unsupported`` for a kernel outside the translated subset."""
    ll = jit()[0]
    if not hasattr(ll, "create_pass_builder"):  # an older llvmlite: Numba compiles the kernels
        raise Unsupported("this llvmlite has no bindings of the new pass manager")
    key = hashlib.sha256(f"{module}\n{source}".encode()).hexdigest()
    obj = _OBJECTS.get(key)
    fresh = obj is None
    if fresh:
        ir_text = _Kernel(source, desc).module(native_name(module))
        mod = ll.parse_assembly(ir_text)
        mod.verify()
        tm = _kernel_tm(ll)
        pto = ll.create_pipeline_tuning_options(speed_level=3)
        pto.loop_vectorization = True
        pto.slp_vectorization = True
        pb = ll.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
        obj = _OBJECTS[key] = tm.emit_object(mod)
    return desc.symbol, native_name(module), obj, fresh


_TM: list = []


def _kernel_tm(ll):
    """The target machine Numba's JIT compiles kernels for: the host CPU and features, O3,
    static relocations, the JIT code model."""
    if not _TM:
        jit()  # initializes LLVM's native target
        target = ll.Target.from_default_triple()
        _TM.append(target.create_target_machine(cpu=ll.get_host_cpu_name(), features=ll.get_host_cpu_features().flatten(),
                                                opt=3, reloc="static", codemodel="jitdefault", jit=True))
    return _TM[0]


class _Kernel(Lowering):
    """One ``cfunc`` entry's ``def`` -> an LLVM module (text) defining it as a C function."""

    def __init__(self, source: str, desc: EntryDesc):
        from llvmlite import ir
        self.ir = ir
        tree = ast.parse(source)
        fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == desc.name]
        if len(fns) != 1 or not fns[0].decorator_list or callee(fns[0].decorator_list[0]) != "cfunc":
            raise Unsupported("no single cfunc entry")
        deco = fns[0].decorator_list[0]
        if any(k.arg == "error_model" and getattr(k.value, "value", None) != "numpy" for k in deco.keywords):
            raise Unsupported("an error model other than numpy")
        self.fn_ast = fns[0]
        self.params = [a.arg for a in self.fn_ast.args.args]
        if self.params != [p for p, _ in desc.args] or desc.ret != "int64":
            raise Unsupported("the entry's parameters are not its description's")
        self.desc, self.ctypes = desc, desc.ctypes
        self.i1, self.i8, self.i32, self.i64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
        self.f32, self.f64 = ir.FloatType(), ir.DoubleType()
        self.irtype = {B: self.i1, I: self.i64, U: self.i64, F: self.f32, D: self.f64, W: self.i32}

    # -- the function
    def module(self, name: str) -> str:
        ir = self.ir
        import llvmlite.binding as ll
        self.module_ = m = ir.Module(name=name)
        m.triple = ll.get_process_triple()
        m.data_layout = str(_kernel_tm(ll).target_data)  # the optimizer's cost models read it, as Numba's modules
        argtys = []
        for t in self.ctypes:
            if t == "voidptr":
                argtys.append(self.i8.as_pointer())
            elif t in ("int64", "float32", "float64"):
                argtys.append({"int64": self.i64, "float32": self.f32, "float64": self.f64}[t])
            else:
                raise Unsupported(f"parameter type {t}")
        f = self.func = ir.Function(m, ir.FunctionType(self.i64, argtys), name)
        entry = f.append_basic_block("entry")
        self.alloca_b = ir.IRBuilder(entry)
        body = f.append_basic_block("body")
        self.b = ir.IRBuilder(body)
        self.env: dict = {}  # name -> ("var", slot, kind) | ("arr", Arr) | ("ptr", value) | ("tuple", [values])
        self.loops: list = []  # (continue block, break block)
        self.heap: list = []  # np.empty's slots (freed at the exit)
        self.result = self.alloca_b.alloca(self.i64, name="result")
        self.exit = f.append_basic_block("exit")
        for p, t, a in zip(self.params, self.ctypes, f.args):
            if t == "voidptr":
                self.env[p] = ("ptr", a)
            else:
                self._assign(p, (a, {"int64": I, "float32": F, "float64": D}[t]))
        self._block(self.fn_ast.body)
        if not self.b.block.is_terminated:
            raise Unsupported("the kernel does not end with a return")
        self.alloca_b.branch(body)
        self.b.position_at_end(self.exit)
        for slot in self.heap:
            self.b.call(self.module_.globals["free"], [self.b.load(slot)])
        self.b.ret(self.b.load(self.result))
        return str(m)

    # -- variables: one slot (and one type) per name, promoted to registers by LLVM
    def _assign(self, name: str, v) -> None:
        val, kind = v
        got = self.env.get(name)
        if got is None:
            slot = self.alloca_b.alloca(self.irtype[kind], name=name)
            self.env[name] = got = ("var", slot, kind)
        if got[0] != "var":
            raise Unsupported(f"{name} re-assigned")
        if got[2] != kind:
            raise Unsupported(f"{name} assigned a {kind} and a {got[2]}")
        self.b.store(val, got[1])

    def _block(self, stmts) -> None:
        for s in stmts:
            if self.b.block.is_terminated:
                return  # code after return/continue/break is never run
            self._stmt(s)

    def _stmt(self, s) -> None:
        b = self.b
        if isinstance(s, ast.Assign) and len(s.targets) == 1:
            t = s.targets[0]
            if isinstance(t, ast.Name):
                v = self._value(s.value)
                if isinstance(v, Arr):
                    if t.id in self.env:
                        raise Unsupported(f"{t.id} re-assigned")
                    self.env[t.id] = ("arr", v)
                elif isinstance(v, list):
                    if t.id in self.env:
                        raise Unsupported(f"{t.id} re-assigned")
                    self.env[t.id] = ("tuple", v)
                else:
                    self._assign(t.id, v)
            elif isinstance(t, ast.Tuple) and all(isinstance(e, ast.Name) for e in t.elts):
                v = self._value(s.value)
                if not isinstance(v, list) or len(v) != len(t.elts):
                    raise Unsupported("tuple unpacking of something else than a tuple of its size")
                for e, x in zip(t.elts, v):
                    self._assign(e.id, x)
            elif isinstance(t, ast.Subscript):
                arr, ptr = self._element(t)
                self._store(arr, ptr, self._expr(s.value))
            else:
                raise Unsupported("assignment target")
        elif isinstance(s, ast.AugAssign):
            op = ast.BinOp(left=s.target, op=s.op, right=s.value)
            if isinstance(s.target, ast.Name):
                tgt = ast.Name(id=s.target.id, ctx=ast.Load())
                self._assign(s.target.id, self._binop(ast.BinOp(left=tgt, op=s.op, right=s.value)))
            elif isinstance(s.target, ast.Subscript):
                arr, ptr = self._element(s.target)  # the index is evaluated once
                cur = self._load(arr, ptr)
                self._store(arr, ptr, self._arith(type(op.op), cur, self._expr(s.value)))
            else:
                raise Unsupported("augmented assignment target")
        elif isinstance(s, ast.For):
            self._for(s)
        elif isinstance(s, ast.If):
            _check_condition(s.test)
            self._if(s)
        elif isinstance(s, ast.Return):
            if s.value is None:
                raise Unsupported("return without a value")
            b.store(self._cast(self._expr(s.value), I), self.result)
            b.branch(self.exit)
        elif isinstance(s, (ast.Continue, ast.Break)):
            if not self.loops:
                raise Unsupported("continue/break outside a loop")
            b.branch(self.loops[-1][0 if isinstance(s, ast.Continue) else 1])
        elif isinstance(s, ast.Expr) and isinstance(s.value, ast.Call):
            name = self._intrinsic(callee(s.value))
            if name == "fill" and len(s.value.args) == 2:
                self._fill(self._array(s.value.args[0]), self._expr(s.value.args[1]))
            elif name == "gemm" and len(s.value.args) == 3:
                self._gemm(*[self._array(a) for a in s.value.args])
            elif name in RUNS and len(s.value.args) == (4 if name == "fill_run" else 5):
                self._run(name, s.value.args)
            else:
                raise Unsupported(f"call of {name} as a statement")
        elif isinstance(s, ast.Pass):
            pass
        else:
            raise Unsupported(f"statement {type(s).__name__}")

    def _for(self, s) -> None:
        b, ir = self.b, self.ir
        it = s.iter
        if not (isinstance(s.target, ast.Name) and isinstance(it, ast.Call) and callee(it) == "range"
                and 1 <= len(it.args) <= 3 and not it.keywords and not s.orelse):
            raise Unsupported("a loop other than for i in range(...)")
        args = [self._cast(self._int(a), I) for a in it.args]
        start, stop = (ir.Constant(self.i64, 0), args[0]) if len(args) == 1 else (args[0], args[1])
        step = 1
        if len(args) == 3:
            step = _const_int(it.args[2])
            if not step:
                raise Unsupported("range with a step that is not a nonzero constant")
        counter = self.alloca_b.alloca(self.i64, name="range")
        b.store(start, counter)
        head, body = self.func.append_basic_block("for"), self.func.append_basic_block("body")
        latch, done = self.func.append_basic_block("next"), self.func.append_basic_block("endfor")
        b.branch(head)
        b.position_at_end(head)
        i = b.load(counter)
        b.cbranch(b.icmp_signed("<" if step > 0 else ">", i, stop), body, done)
        b.position_at_end(body)
        self._assign(s.target.id, (i, I))
        self.loops.append((latch, done))
        self._block(s.body)
        self.loops.pop()
        if not b.block.is_terminated:
            b.branch(latch)
        b.position_at_end(latch)
        b.store(b.add(b.load(counter), ir.Constant(self.i64, step)), counter)
        b.branch(head)
        b.position_at_end(done)

    # -- arrays
    def _value(self, e):
        """An expression that may be an array or a tuple (of dims) as well as a scalar."""
        if isinstance(e, ast.Call) and callee(e) == "view":
            return self._view(e)
        if isinstance(e, ast.Attribute) and e.attr == "T":
            a = self._array(e.value)
            return Arr(a.ptr, a.kind, a.ety, a.dims[::-1], a.strides[::-1],
                       {"C": "F", "F": "C"}.get(a.layout, "A") if len(a.dims) > 1 else a.layout)
        if isinstance(e, ast.Call) and callee(e) == "np.transpose" and len(e.args) == 2:
            a = self._array(e.args[0])
            perm = ast.literal_eval(e.args[1])
            if sorted(perm) != list(range(len(a.dims))):
                raise Unsupported("transpose axes")
            return Arr(a.ptr, a.kind, a.ety, [a.dims[p] for p in perm], [a.strides[p] for p in perm],
                       a.layout if list(perm) == list(range(len(perm))) else "A")
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and e.func.attr == "reshape":
            a = self._array(e.func.value)
            if a.layout != "C" or len(e.args) != 1:
                raise Unsupported("reshape of a non-contiguous array")
            dims = self._value(e.args[0])
            if not isinstance(dims, list):
                raise Unsupported("reshape to something else than a tuple")
            return self._c_array(a.ptr, a.kind, a.ety, [self._cast(d, I) for d in dims])
        if isinstance(e, ast.Attribute) and e.attr == "shape":
            return [(d, I) for d in self._array(e.value).dims]
        if isinstance(e, ast.Subscript) and not isinstance(e.slice, ast.Slice):
            a = self._value(e.value)
            idx = e.slice.elts if isinstance(e.slice, ast.Tuple) else [e.slice]
            if isinstance(a, Arr) and len(idx) < len(a.dims):  # a[i]: the subarray (a view)
                a, ptr = self._element(e, len(idx))
                return Arr(ptr, a.kind, a.ety, a.dims[len(idx):], a.strides[len(idx):],
                           "C" if a.layout == "C" else "A")
        if isinstance(e, ast.Call) and callee(e) == "np.empty":
            return self._empty(e)
        if isinstance(e, ast.Call) and callee(e) == "np.full":
            return self._full(e)
        if isinstance(e, ast.Tuple):
            return [self._expr(x) for x in e.elts]
        if isinstance(e, ast.Name) and self.env.get(e.id, ("",))[0] in ("arr", "tuple"):
            got = self.env[e.id]
            return got[1]
        return self._expr(e)

    def _array(self, e) -> Arr:
        v = self._value(e)
        if not isinstance(v, Arr):
            raise Unsupported("an array expected")
        return v

    def _intrinsic(self, name: str) -> str:
        """``name``, checked: a dialect intrinsic the entry's description does not list is refused."""
        if name in DIALECT and name not in self.desc.intrinsics:
            raise Unsupported(f"{name} is not among the entry's intrinsics {self.desc.intrinsics}")
        return name

    def _view(self, e) -> Arr:
        if len(e.args) != 3 or e.keywords:
            raise Unsupported("view arguments")
        p, shape, dt = e.args
        if not (isinstance(p, ast.Name) and self.env.get(p.id, ("",))[0] == "ptr"):
            raise Unsupported("view of something else than a pointer parameter")
        self._intrinsic("view")
        dtname = self.desc.dtype_of(p.id)  # the operand's dtype as the emitter described it
        if dotted(dt) != f"np.{dtname}":
            raise Unsupported(f"view of {p.id} as {ast.unparse(dt)}, described as {dtname}")
        kind = _DTYPES.get(dtname)
        if kind is None:
            raise Unsupported(f"view dtype {dtname}")
        dims = self._value(shape)
        if not isinstance(dims, list) or not dims:
            raise Unsupported("view shape")
        ety = {B: self.i8, I: self.i64, U: self.i64, F: self.f32, D: self.f64, W: self.i32}[kind]
        ptr = self.b.bitcast(self.env[p.id][1], ety.as_pointer())
        return self._c_array(ptr, kind, ety, [self._cast(d, I) for d in dims])

    def _c_array(self, ptr, kind, ety, dims) -> Arr:
        strides, s = [], self.ir.Constant(self.i64, 1)
        for d in reversed(dims):
            strides.insert(0, s)
            s = self.b.mul(s, d)
        return Arr(ptr, kind, ety, dims, strides, "C")

    def _empty(self, e) -> Arr:
        """``np.empty(n, dtype=np.X)`` (or a shape tuple): heap memory, freed when the same
        line allocates again (the next iteration) and when the kernel returns, as Numba's
        reference counting frees it."""
        kw = {k.arg: k.value for k in e.keywords}
        if len(e.args) != 1 or set(kw) != {"dtype"}:
            raise Unsupported("np.empty arguments")
        dtname = dotted(kw["dtype"]).removeprefix("np.")
        kind = _DTYPES.get(dtname)
        if kind is None or kind == W:
            raise Unsupported(f"np.empty of {dtname}")
        return self._alloc(self._value(e.args[0]), kind)

    def _full(self, e) -> Arr:
        """``np.full(shape, v)``: an array of v's type, every item v (a scalar broadcast)."""
        if len(e.args) != 2 or e.keywords:
            raise Unsupported("np.full arguments")
        v = self._expr(e.args[1])
        a = self._alloc(self._value(e.args[0]), v[1])
        self._fill(a, v)
        return a

    def _alloc(self, shape, kind: str) -> Arr:
        b, ir = self.b, self.ir
        dims = [self._cast(d, I) for d in (shape if isinstance(shape, list) else [shape])]
        ety = {B: self.i8, I: self.i64, U: self.i64, F: self.f32, D: self.f64}[kind]
        i8p = self.i8.as_pointer()
        slot = self.alloca_b.alloca(i8p, name="heap")
        self.alloca_b.store(ir.Constant(i8p, None), slot)
        self.heap.append(slot)
        free = self._decl("free", ir.VoidType(), [i8p])
        b.call(free, [b.load(slot)])
        n = ir.Constant(self.i64, 1)
        for d in dims:
            n = b.mul(n, b.select(b.icmp_signed("<", d, ir.Constant(self.i64, 0)), ir.Constant(self.i64, 0), d))
        size = b.mul(n, ir.Constant(self.i64, 1 if kind == B else 4 if kind == F else 8))
        ptr = b.call(self._decl("malloc", i8p, [self.i64]), [b.select(b.icmp_signed("==", size, ir.Constant(self.i64, 0)),
                                                                     ir.Constant(self.i64, 1), size)])
        b.store(ptr, slot)
        return self._c_array(b.bitcast(ptr, ety.as_pointer()), kind, ety, dims)

    def _element(self, e, count: int | None = None) -> tuple[Arr, object]:
        """(array, element pointer) of ``a[i, j, ...]`` with one integer per dim (or the
        first ``count``); a negative index counts from the end (Numba's wraparound)."""
        b = self.b
        a = self._array(e.value)
        idx = e.slice.elts if isinstance(e.slice, ast.Tuple) else [e.slice]
        if len(idx) != (len(a.dims) if count is None else count):
            raise Unsupported("indexing with fewer or more indices than dims")
        off = None
        for x, d, st in zip(idx, a.dims, a.strides):
            v = self._int(x)
            if v[1] == U:
                raise Unsupported("an unsigned index")
            i = self._cast(v, I)
            zero = self.ir.Constant(self.i64, 0)
            i = b.select(b.icmp_signed("<", i, zero), b.add(i, d), i)
            t = b.mul(i, st)
            off = t if off is None else b.add(off, t)
        return a, b.gep(a.ptr, [off], inbounds=True)

    def _load(self, a: Arr, ptr):
        v = self.b.load(ptr)
        if a.kind == B:
            return self.b.icmp_unsigned("!=", v, self.ir.Constant(self.i8, 0)), B
        return v, a.kind

    def _store(self, a: Arr, ptr, v) -> None:
        val = self._cast(v, a.kind)
        if a.kind == B:
            val = self.b.zext(val, self.i8)
        self.b.store(val, ptr)

    def _fill(self, a: Arr, v) -> None:
        """``arr[...] = v`` (views.fill): a loop over the items of a C-contiguous array."""
        if a.layout != "C":
            raise Unsupported("fill of a non-contiguous array")
        b, ir = self.b, self.ir
        n = ir.Constant(self.i64, 1)
        for d in a.dims:
            n = b.mul(n, d)
        counter = self.alloca_b.alloca(self.i64, name="fill")
        b.store(ir.Constant(self.i64, 0), counter)
        head, body, done = (self.func.append_basic_block(x) for x in ("fill", "fillbody", "endfill"))
        val = self._cast(v, a.kind)
        val = b.zext(val, self.i8) if a.kind == B else val
        b.branch(head)
        b.position_at_end(head)
        i = b.load(counter)
        b.cbranch(b.icmp_signed("<", i, n), body, done)
        b.position_at_end(body)
        b.store(val, b.gep(a.ptr, [i], inbounds=True))
        b.store(b.add(i, ir.Constant(self.i64, 1)), counter)
        b.branch(head)
        b.position_at_end(done)

    def _run(self, name: str, args) -> None:
        """``copy_run``/``add_run``/``fill_run`` (views.py): a unit-stride loop over a flat
        run of C-contiguous arrays of one dtype (intrinsics.run_ir)."""
        dst = self._array(args[0])
        if dst.kind == B:
            raise Unsupported(f"{name} of a bool array")

        def at(a: Arr, off):
            if a.layout != "C":
                raise Unsupported(f"{name} of a non-contiguous array")
            return self.b.gep(a.ptr, [self._cast(self._int(off), I)], inbounds=True)

        if name == "fill_run":
            run_ir(self.b, name, at(dst, args[1]), self._cast(self._expr(args[3]), dst.kind), self._cast(self._int(args[2]), I))
            return
        src = self._array(args[2])
        if src.kind != dst.kind or dst.kind == B or (name == "add_run" and dst.kind not in (F, D)):
            raise Unsupported(f"{name} operands")
        run_ir(self.b, name, at(dst, args[1]), at(src, args[3]), self._cast(self._int(args[4]), I))

    def _gemm(self, x: Arr, y: Arr, o: Arr) -> None:
        """``o = x @ y`` as blas.gemm emits it: Numba's ``call_xxgemm`` arguments (row-major
        as column-major: the operands swapped), zeros for an empty product."""
        b, ir = self.b, self.ir
        if not (len(x.dims) == len(y.dims) == len(o.dims) == 2 and x.kind == y.kind == o.kind
                and x.kind in (F, D) and x.layout in "CF" and y.layout in "CF" and o.layout == "C"):
            raise Unsupported("gemm operands")
        i8p = self.i8.as_pointer()
        fn = XXGEMM.declare(self.module_)
        m, k = x.dims
        n = y.dims[1]
        zero = ir.Constant(self.i64, 0)
        empty = b.or_(b.icmp_signed("==", k, zero), b.or_(b.icmp_signed("==", m, zero), b.icmp_signed("==", n, zero)))
        yes, no, done = (self.func.append_basic_block(s) for s in ("empty", "gemm", "endgemm"))
        b.cbranch(empty, yes, no)
        b.position_at_end(yes)
        memset = self.module_.declare_intrinsic("llvm.memset", (i8p, self.i64))
        size = b.mul(b.mul(o.dims[0], o.dims[1]), ir.Constant(self.i64, 4 if o.kind == F else 8))
        b.call(memset, [b.bitcast(o.ptr, i8p), ir.Constant(self.i8, 0), size, ir.Constant(self.i1, 0)])
        b.branch(done)
        b.position_at_end(no)
        ety = self.irtype[x.kind]
        alpha, beta = self.alloca_b.alloca(ety), self.alloca_b.alloca(ety)
        b.store(ir.Constant(ety, 1.0), alpha)
        b.store(ir.Constant(ety, 0.0), beta)

        def param(a: Arr):
            trans = ord("n") if a.layout == o.layout else ord("t")
            return ir.Constant(self.i8, trans), a.dims[1] if a.layout == "C" else a.dims[0], b.bitcast(a.ptr, i8p)

        ta, lda, da = param(y)
        tb, ldb, db = param(x)
        b.call(fn, [ir.Constant(self.i8, ord("s" if x.kind == F else "d")), ta, tb, n, m, k, b.bitcast(alpha, i8p),
                    da, lda, db, ldb, b.bitcast(beta, i8p), b.bitcast(o.ptr, i8p), o.dims[1]])
        b.branch(done)
        b.position_at_end(done)

    # -- scalar expressions: (IR value, kind)
    def _int(self, e):
        v = self._widen(self._expr(e))
        if v[1] not in (I, U, B):
            raise Unsupported("a float where an integer is needed")
        return v

    def _expr(self, e):
        b, ir = self.b, self.ir
        if isinstance(e, ast.Name):
            got = self.env.get(e.id)
            if got is None or got[0] != "var":
                raise Unsupported(f"name {e.id}")
            return b.load(got[1]), got[2]
        if isinstance(e, ast.Constant):
            if isinstance(e.value, bool):
                return ir.Constant(self.i1, int(e.value)), B
            if isinstance(e.value, int):
                if not -2 ** 63 <= e.value < 2 ** 63:
                    raise Unsupported("an integer literal beyond int64")
                return ir.Constant(self.i64, e.value), I
            if isinstance(e.value, float):
                return ir.Constant(self.f64, e.value), D
            raise Unsupported(f"constant {e.value!r}")
        if isinstance(e, ast.Attribute):
            name = dotted(e)
            if name in ("np.inf", "math.inf"):
                return ir.Constant(self.f64, float("inf")), D
            if name in ("np.nan", "math.nan"):
                return ir.Constant(self.f64, float("nan")), D
            if name in ("math.pi", "np.pi"):
                import math
                return ir.Constant(self.f64, math.pi), D
            if e.attr == "size":
                a = self._array(e.value)
                n = ir.Constant(self.i64, 1)
                for d in a.dims:
                    n = b.mul(n, d)
                return n, I
            raise Unsupported(f"attribute {name}")
        if isinstance(e, ast.Subscript):
            if isinstance(e.value, ast.Attribute) and e.value.attr == "shape":
                k = _const_int(e.slice)
                dims = self._array(e.value.value).dims
                if k is None or not -len(dims) <= k < len(dims):
                    raise Unsupported("shape index")
                return dims[k], I
            if isinstance(e.value, ast.Name) and self.env.get(e.value.id, ("",))[0] == "tuple":
                k = _const_int(e.slice)
                t = self.env[e.value.id][1]
                if k is None or not -len(t) <= k < len(t):
                    raise Unsupported("tuple index")
                return t[k]
            return self._load(*self._element(e))
        if isinstance(e, ast.UnaryOp):
            v = self._expr(e.operand)
            if isinstance(e.op, ast.USub) and v[1] == W:  # Numba negates an int32 before widening it
                return b.sext(b.neg(v[0]), self.i64), I
            v = self._widen(v)
            if isinstance(e.op, ast.USub):
                if v[1] in (F, D):
                    return b.fsub(ir.Constant(v[0].type, -0.0), v[0]), v[1]
                if v[1] in (I, B):
                    return b.neg(self._cast(v, I)), I
                raise Unsupported("negation of an unsigned integer")
            if isinstance(e.op, ast.UAdd):
                return v if v[1] != B else (self._cast(v, I), I)
            if isinstance(e.op, ast.Not):
                return b.xor(self._truth(v), ir.Constant(self.i1, 1)), B
            raise Unsupported("unary operator")
        if isinstance(e, ast.BinOp):
            return self._binop(e)
        if isinstance(e, ast.BoolOp):
            return self._boolop(e)
        if isinstance(e, ast.Compare):
            if len(e.ops) != 1:
                raise Unsupported("chained comparison")
            return self._compare(type(e.ops[0]), self._expr(e.left), self._expr(e.comparators[0]))
        if isinstance(e, ast.IfExp):
            return self._ifexp(e)
        if isinstance(e, ast.Call):
            return self._call(e)
        raise Unsupported(f"expression {type(e).__name__}")

    def _binop(self, e):
        return self._arith(type(e.op), self._expr(e.left), self._expr(e.right))

    def _widen(self, v):
        """int32 -> int64: what every Numba operator on an int32 but abs/max/min computes in."""
        return (self.b.sext(v[0], self.i64), I) if v[1] == W else v

    def _arith(self, op, l, r):
        b = self.b
        l, r = self._widen(l), self._widen(r)
        if op in (ast.Add, ast.Sub, ast.Mult):
            t = arith(l[1], r[1])
            x, y = self._cast(l, t), self._cast(r, t)
            if t in (F, D):
                return {ast.Add: b.fadd, ast.Sub: b.fsub, ast.Mult: b.fmul}[op](x, y), t
            return {ast.Add: b.add, ast.Sub: b.sub, ast.Mult: b.mul}[op](x, y), t
        if op is ast.Div:
            t = D if {l[1], r[1]} <= {B, I} or {l[1], r[1]} == {U} else arith(l[1], r[1])
            return b.fdiv(self._cast(l, t), self._cast(r, t)), t
        if op is ast.Pow:  # float ** float: Numba's real_power_impl (llvm.pow); integer powers are loops there
            if not {l[1], r[1]} <= {F, D}:
                raise Unsupported("a power of other than two floats")
            t = arith(l[1], r[1])
            fn = self.module_.declare_intrinsic("llvm.pow", [self.irtype[t]])
            return b.call(fn, [self._cast(l, t), self._cast(r, t)]), t
        if op in (ast.FloorDiv, ast.Mod):
            t = divmod_type(l[1], r[1])
            x, y = self._cast(l, t), self._cast(r, t)
            q, m = self._real_divmod(x, y) if t in (F, D) else self._int_divmod(x, y, t == I)
            return (q if op is ast.FloorDiv else m), t
        if op in (ast.BitAnd, ast.BitOr, ast.BitXor):
            s = {l[1], r[1]}
            t = B if s == {B} else I if s <= {B, I} else U if s == {U} else None
            if t is None:
                raise Unsupported("bitwise operation on these types")
            x, y = self._cast(l, t), self._cast(r, t)
            return {ast.BitAnd: b.and_, ast.BitOr: b.or_, ast.BitXor: b.xor}[op](x, y), t
        if op in (ast.RShift, ast.LShift):
            if l[1] == I and r[1] in (I, B):
                x, y = l[0], self._cast(r, I)
                return (b.ashr(x, y) if op is ast.RShift else b.shl(x, y)), I
            if l[1] == U and r[1] == U:
                return (b.lshr(l[0], r[0]) if op is ast.RShift else b.shl(l[0], r[0])), U
            raise Unsupported("shift of these types")
        raise Unsupported(f"operator {op.__name__}")

    def _int_divmod(self, x, y, signed: bool):
        """Python's floor division and remainder of integers (Numba's ``int_divmod``): 0 and 0
        for a zero divisor (the NumPy error model) and for the minimum by -1 (which traps in
        x86's idiv)."""
        b, ir = self.b, self.ir
        zero = ir.Constant(self.i64, 0)
        yz = b.icmp_signed("==", y, zero)
        if signed:
            yz = b.or_(yz, b.and_(b.icmp_signed("==", x, ir.Constant(self.i64, -2 ** 63)),
                                  b.icmp_signed("==", y, ir.Constant(self.i64, -1))))
        safe = b.select(yz, ir.Constant(self.i64, 1), y)
        if not signed:
            return b.select(yz, zero, b.udiv(x, safe)), b.select(yz, zero, b.urem(x, safe))
        q, r = b.sdiv(x, safe), b.srem(x, safe)
        fix = b.and_(b.icmp_signed("!=", r, zero), b.icmp_signed("<", b.xor(safe, r), zero))
        q = b.select(fix, b.sub(q, ir.Constant(self.i64, 1)), q)
        r = b.select(fix, b.add(r, safe), r)
        return b.select(yz, zero, q), b.select(yz, zero, r)

    def _real_divmod(self, x, y):
        """Python's floor division and remainder of floats, Numba's ``real_divmod_func_body``
        (CPython's float_divmod: fmod, the remainder given the divisor's sign, the quotient
        snapped to an integer, a zero quotient signed as x / y) operation for operation, its
        branches as selects of the same values; a zero divisor gives ``x / y`` and
        ``fmod(x, y)`` (NaN) as Numba's ``real_floordiv_impl``/``real_mod_impl`` under the
        NumPy error model."""
        b, ir = self.b, self.ir
        c = lambda v: ir.Constant(x.type, v)  # noqa: E731
        mod = b.frem(x, y)
        div = b.fdiv(b.fsub(x, mod), y)
        mod_true = b.fcmp_unordered("!=", mod, c(0.0))
        y_neg = b.fcmp_ordered("<", y, c(0.0))
        fix = b.and_(mod_true, b.icmp_unsigned("!=", y_neg, b.fcmp_ordered("<", mod, c(0.0))))
        div = b.select(fix, b.fsub(div, c(1.0)), div)
        mod = b.select(mod_true, b.select(fix, b.fadd(mod, y), mod), b.select(y_neg, c(-0.0), c(0.0)))
        floor = self._decl("floorf" if x.type == self.f32 else "floor", x.type, [x.type], pure=True)
        fl = b.call(floor, [div])
        snapped = b.select(b.fcmp_ordered(">", b.fsub(div, fl), c(0.5)), b.fadd(fl, c(1.0)), fl)
        zero_q = b.fdiv(b.fmul(b.fmul(div, div), x), y)
        q = b.select(b.fcmp_ordered("!=", div, c(0.0)), snapped, zero_q)
        yz = b.fcmp_ordered("==", y, c(0.0))
        return b.select(yz, b.fdiv(x, y), q), b.select(yz, b.frem(x, y), mod)

    def _compare(self, op, l, r):
        b = self.b
        l, r = self._widen(l), self._widen(r)
        sym = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}.get(op)
        if sym is None:
            raise Unsupported("comparison operator")
        t = compare_type(l[1], r[1])
        x, y = self._cast(l, t), self._cast(r, t)
        if t == I:
            return b.icmp_signed(sym, x, y), B
        if t == U:
            return b.icmp_unsigned(sym, x, y), B
        if sym == "!=":
            return b.fcmp_unordered(sym, x, y), B
        return b.fcmp_ordered(sym, x, y), B

    def _boolop(self, e):
        """``and``/``or`` of conditions, short-circuit (a later operand may read memory the
        earlier ones guard)."""
        b = self.b
        res = self.alloca_b.alloca(self.i1, name="boolop")
        done = self.func.append_basic_block("endbool")
        for k, x in enumerate(e.values):
            v = self._expr(x)
            if v[1] != B:
                raise Unsupported("and/or of something else than conditions")
            b.store(v[0], res)
            if k < len(e.values) - 1:
                nxt = self.func.append_basic_block("bool")
                if isinstance(e.op, ast.And):
                    b.cbranch(v[0], nxt, done)
                else:
                    b.cbranch(v[0], done, nxt)
                b.position_at_end(nxt)
        b.branch(done)
        b.position_at_end(done)
        return b.load(res), B

    def _ifexp(self, e):
        """``a if c else b``: only the chosen side is evaluated, the result unified."""
        b = self.b
        _check_condition(e.test)
        cond = self._truth(self._expr(e.test))
        yes, no, done = (self.func.append_basic_block(s) for s in ("ifexp", "orelse", "endifexp"))
        b.cbranch(cond, yes, no)
        b.position_at_end(yes)
        a = self._expr(e.body)
        a_end = b.block
        b.position_at_end(no)
        c = self._expr(e.orelse)
        t = unify(a[1], c[1])
        cv = self._cast(c, t)
        c_end = b.block
        b.branch(done)
        b.position_at_end(a_end)
        av = self._cast(a, t)
        a_end = b.block
        b.branch(done)
        b.position_at_end(done)
        phi = b.phi(self.irtype[t])
        phi.add_incoming(av, a_end)
        phi.add_incoming(cv, c_end)
        return phi, t

    def _call(self, e):
        b, ir = self.b, self.ir
        name = callee(e)
        if e.keywords:
            raise Unsupported(f"keywords in a call of {name}")
        args = e.args
        cast = {"np.float32": F, "np.float64": D, "float": D, "np.int64": I, "int": I, "np.uint64": U,
                "np.int32": W, "np.bool_": B, "bool": B}.get(name)
        if cast == U and len(args) == 1 and isinstance(args[0], ast.Constant) and type(args[0].value) is int:
            if not 0 <= args[0].value < 2 ** 64:
                raise Unsupported("a uint64 literal out of range")
            return ir.Constant(self.i64, args[0].value - (2 ** 64 if args[0].value >= 2 ** 63 else 0)), U
        if cast is not None and len(args) == 1:
            v = self._expr(args[0])
            if cast == B:
                return self._truth(v), B
            return self._cast(v, cast), cast
        name = self._intrinsic(name)
        if name in ("exp32", "tanh32") and len(args) == 1:
            v = self._expr(args[0])
            if v[1] != F:
                raise Unsupported(f"{name} of something else than a float32")
            return (exp32_ir if name == "exp32" else tanh32_ir)(b, v[0]), F
        if name in _INTRINSIC and len(args) == 1:
            v = self._float(self._expr(args[0]))
            fn = self._decl(f"{_INTRINSIC[name]}.f{32 if v[1] == F else 64}", self.irtype[v[1]], [self.irtype[v[1]]])
            return b.call(fn, [v[0]]), v[1]
        if name in _EXTERN and len(args) == 1:
            v = self._float(self._expr(args[0]))
            ty = self.irtype[v[1]]
            fn = self._decl(_EXTERN[name][0 if v[1] == F else 1], ty, [ty], pure=True)
            return b.call(fn, [v[0]]), v[1]
        if name == "math.atan2" and len(args) == 2:  # the libm symbol, as Numba's atan2_float_impl
            l, r = self._widen(self._expr(args[0])), self._widen(self._expr(args[1]))
            t = atan2_type(l[1], r[1])
            ty = self.irtype[t]
            fn = self._decl("atan2f" if t == F else "atan2", ty, [ty, ty], pure=True)
            return b.call(fn, [self._cast(l, t), self._cast(r, t)]), t
        if name in ("math.isfinite", "math.isnan", "math.isinf") and len(args) == 1:
            v = self._expr(args[0])
            if v[1] not in (F, D):
                return ir.Constant(self.i1, int(name == "math.isfinite")), B
            if name == "math.isnan":
                return b.fcmp_unordered("uno", v[0], v[0]), B
            fabs = self._decl(f"llvm.fabs.f{32 if v[1] == F else 64}", v[0].type, [v[0].type])
            inf = ir.Constant(v[0].type, float("inf"))
            if name == "math.isinf":
                return b.fcmp_ordered("==", b.call(fabs, [v[0]]), inf), B
            return b.fcmp_ordered("!=", b.call(fabs, [v[0]]), inf), B  # NaN: False
        if name == "abs" and len(args) == 1:
            v = self._expr(args[0])
            if v[1] in (F, D):
                return b.call(self._decl(f"llvm.fabs.f{32 if v[1] == F else 64}", v[0].type, [v[0].type]), [v[0]]), v[1]
            if v[1] in (I, W):  # an int32 stays one (abs(-2**31) wraps, as in Numba)
                return b.select(b.icmp_signed("<", v[0], ir.Constant(v[0].type, 0)), b.neg(v[0]), v[0]), v[1]
            raise Unsupported("abs of this type")
        if name in ("max", "min") and len(args) >= 2:
            acc = self._expr(args[0])
            for x in args[1:]:
                v = self._expr(x)
                t = unify(acc[1], v[1])
                a, y = self._cast(acc, t), self._cast(v, t)
                pred = self._compare(ast.Gt if name == "max" else ast.Lt, (y, t), (a, t))[0]
                acc = b.select(pred, y, a), t
            return acc
        if name == "mpi_allreduce_sum" and len(args) == 2:  # allreduce.py's intrinsic
            a, o = self._array(args[0]), self._array(args[1])
            if not (a.kind == o.kind and a.kind in (F, D) and a.layout == o.layout == "C"
                    and len(a.dims) == len(o.dims)):
                raise Unsupported("an all-reduce of these arrays")
            from .allreduce import bind
            bind()  # binds graphc_mpi_allreduce before this kernel's object is loaded
            n = ir.Constant(self.i64, 1)
            for d in a.dims:
                n = b.mul(n, d)
            fn = ALLREDUCE.declare(self.module_)
            r = b.call(fn, [b.ptrtoint(a.ptr, self.i64), b.ptrtoint(o.ptr, self.i64), n,
                            ir.Constant(self.i32, 0 if a.kind == F else 1)])
            return b.sext(r, self.i64), I
        if name == "len" and len(args) == 1:
            return self._array(args[0]).dims[0], I
        raise Unsupported(f"call of {name}")

    def _float(self, v):
        """A math function's argument: floats as they are, integers as float64."""
        if v[1] in (F, D):
            return v
        return self._cast(v, D), D

    def _cast(self, v, t: str):
        """Numba's implicit conversion of a (value, kind) to kind ``t`` (float to integer
        defined for every value: _fptosi)."""
        b, ir = self.b, self.ir
        val, k = v
        if k == t:
            return val
        if t == B:
            return self._truth(v)
        if k == W:  # int32 converts as its int64 value
            val, k = b.sext(val, self.i64), I
            if t == I:
                return val
        if t == W:
            if k in (F, D):  # as Numba's np.int32(x): straight to 32 bits (not int64's low bits)
                return self._fptosi(val, self.i32)
            return b.trunc(self._cast((val, k), I), self.i32)
        if t in (I, U):
            if k == B:
                return b.zext(val, self.i64)
            if k in (I, U):
                return val
            if t == I:
                return self._fptosi(val, self.i64)
            fits = b.and_(b.fcmp_ordered(">=", val, ir.Constant(val.type, 0.0)),
                          b.fcmp_ordered("<", val, ir.Constant(val.type, 2.0 ** 64)))
            return b.select(fits, b.fptoui(val, self.i64), self._fptosi(val, self.i64))
        ty = self.irtype[t]
        if k == B or k == U:
            return b.uitofp(val, ty)
        if k == I:
            return b.sitofp(val, ty)
        return b.fpext(val, ty) if t == D else b.fptrunc(val, ty)

    def _fptosi(self, val, ity):
        """fptosi defined everywhere: LLVM's is poison for NaN, +-inf and values out of range
        (folded to anything), so those select x86's "integer indefinite" value, the minimum
        (what cvttss2si gives, NumPy's astype on x86, and backends/expr.float_to_int)."""
        b, ir = self.b, self.ir
        lim = 2.0 ** (ity.width - 1)
        fits = b.and_(b.fcmp_ordered(">=", val, ir.Constant(val.type, -lim)),
                      b.fcmp_ordered("<", val, ir.Constant(val.type, lim)))
        return b.select(fits, b.fptosi(val, ity), ir.Constant(ity, -(1 << (ity.width - 1))))


def _check_condition(test) -> None:
    """Numba prunes a branch whose condition is a constant before typing, so the other side's
    type is not unified in (``1 if 1 < True else True`` is a bool there): refused."""
    if not any(isinstance(n, (ast.Name, ast.Subscript)) and dotted(n).split(".")[0] not in ("np", "math")
               for n in ast.walk(test)):
        raise Unsupported("a constant condition")


def _const_int(e) -> int | None:
    if isinstance(e, ast.Constant) and isinstance(e.value, int) and not isinstance(e.value, bool):
        return e.value
    if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub):
        v = _const_int(e.operand)
        return -v if v is not None else None
    return None
