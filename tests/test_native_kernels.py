"""graphc's own kernel compiler (graphc/backends/cpu/kernels.py): every kernel the emitter
writes for these models is translated, and training is bit for bit what the same kernels
compiled by Numba (GRAPHC_NATIVE_KERNELS=0) compute. Each side runs in a fresh process with
a private cache (a shared one would start the second side from the first side's image)."""
import json
import operator
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cpu import kernels
from graphc.backends.cpu.lowering import Unsupported
from graphc.backends.expr import float_to_int

ROOT = Path(__file__).resolve().parents[1]

MODELS = textwrap.dedent('''
    import json, sys, warnings
    import numpy as np
    import graphc as gc
    from graphc import nn

    warnings.simplefilter("error", RuntimeWarning)  # no fallback warning, no numerics warning
    rng = np.random.default_rng(0)
    out = {}

    def record(name, step, feeds, steps=3):
        losses = [float(step(**feeds)["loss"]) for _ in range(steps)]
        progs = list(step._programs.values())
        out[name] = {"losses": losses, "params": {k: np.asarray(v).tobytes().hex() for k, v in step.params.items()},
                     "kernels": sum(len(p.kernel_paths) for p in progs),
                     "numba": sum(len(p._kernel_modules) for p in progs)}

    def record_model(name, model, x, y, steps=3):
        losses = [float(model.train_on_batch(x, y)) for _ in range(steps)]
        progs = list(model.train_function._programs.values())
        out[name] = {"losses": losses, "params": [w.tobytes().hex() for w in model.get_weights()],
                     "kernels": sum(len(p.kernel_paths) for p in progs),
                     "numba": sum(len(p._kernel_modules) for p in progs)}

    # a CNN: convolutions (im2col + GEMM + col2im), batch norm, both poolings, dropout's RNG
    m = nn.Sequential([nn.Input(shape=(8, 8, 2)), nn.Conv2D(6, 3, padding="same", activation="relu"),
                       nn.BatchNormalization(), nn.MaxPooling2D(), nn.Conv2D(5, 2, strides=2, activation="tanh"),
                       nn.Dropout(0.25), nn.AveragePooling2D(pool_size=1), nn.GlobalMaxPooling2D(), nn.Dense(4)])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", target="cpu", seed=0)
    record_model("cnn", m, rng.standard_normal((6, 8, 8, 2)).astype("f4"), rng.integers(0, 4, 6))

    # attention: embeddings, layer norm, multi-head attention (batched GEMMs, softmax), gelu
    ids = nn.Input(shape=(5,), dtype="int64")
    h = nn.Embedding(7, 8)(ids)
    h = nn.LayerNormalization()(nn.Add()([h, nn.PositionEmbedding(5)(h)]))
    h = nn.MultiHeadAttention(2, 4)(h, h)
    h = nn.Dense(6, activation="gelu")(nn.Flatten()(h))
    m = nn.Model(ids, nn.Dense(3)(h))
    m.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", target="cpu", seed=0)
    record_model("attention", m, rng.integers(0, 7, (4, 5)), rng.integers(0, 3, 4))

    # merges and activations, mean squared error, SGD with momentum
    a = nn.Input(shape=(6,))
    l, r = nn.Dense(5, activation="sigmoid")(a), nn.Dense(5, activation="softplus")(a)
    h = nn.Concatenate()([nn.Maximum()([l, r]), nn.Minimum()([l, r]), nn.Subtract()([l, r]), nn.Multiply()([l, r])])
    h = nn.Dense(4, activation="elu")(nn.Dense(4, activation="swish")(h))
    m = nn.Model(a, nn.Dense(1, activation="selu")(h))
    m.compile(optimizer=nn.optimizers.SGD(0.05, momentum=0.9), loss="mse", target="cpu", seed=0)
    record_model("merges", m, rng.standard_normal((7, 6)).astype("f4"), rng.standard_normal((7, 1)).astype("f4"))

    # the DSL's elementwise and reduction ops, integer feeds, a scalar feed
    x = gc.input("dx", (None, 5))
    k = gc.input("dk", (None,), dtype="int64")
    s = gc.input("ds", (), dtype="float32")
    W = gc.param("dW", (5, 5), init="glorot_uniform")
    z = x @ W
    t = gc.where(z > 0, gc.leaky_relu(z, 0.1), gc.clip(gc.sign(z) * gc.abs(z) ** 1.5, -2.0, 2.0))
    t = t + gc.log1p(gc.square(z)) * s - gc.sqrt(gc.exp(-gc.abs(z))) + gc.max(z, axis=1, keepdims=True)
    t = t + gc.logsumexp(z, axis=0) + gc.std(z, axis=1, keepdims=True) + gc.cast(gc.argmax(z, axis=1), "float32")[:, None]
    x64 = gc.input("dx64", (None, 5), dtype="float64")
    W64 = gc.param("dW64", (5, 2), dtype="float64")
    u = gc.tanh(x64 @ W64) / 3
    loss = gc.softmax_cross_entropy(t, k) + gc.mean(gc.take(W, k)) + gc.cast(gc.mean(gc.square(u - 1) * 2), "float32")
    step = gc.compile(loss, optimizer=gc.optim.Adam(0.01), target="cpu", seed=0)
    record("dsl", step, {"dx": rng.standard_normal((6, 5)).astype("f4"), "dk": rng.integers(0, 5, 6),
                         "ds": np.float32(0.5), "dx64": rng.standard_normal((6, 5))})

    print("RESULT" + json.dumps(out))
''')


def run(script: Path, cache: Path, native_kernels: bool) -> dict:
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT),
               GRAPHC_NATIVE_KERNELS="1" if native_kernels else "0")
    env.pop("GRAPHC_NATIVE_DRIVER", None)
    p = subprocess.run([sys.executable, str(script)], env=env, cwd=str(ROOT), capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, f"exited with {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1][len("RESULT"):])


def test_models_train_bit_for_bit_as_with_numbas_kernels(tmp_path):
    script = tmp_path / "models.py"
    script.write_text(MODELS)
    ours = run(script, tmp_path / "ours", True)
    ref = run(script, tmp_path / "numba", False)
    assert set(ours) == set(ref) == {"cnn", "attention", "merges", "dsl"}
    for name in ours:
        assert ref[name]["numba"] == ref[name]["kernels"] > 0, name  # the reference is all Numba
        assert ours[name]["numba"] == 0, (name, ours[name]["numba"])  # every kernel translated
        assert ours[name]["losses"] == ref[name]["losses"], name
        assert ours[name]["params"] == ref[name]["params"], name
        assert all(np.isfinite(ours[name]["losses"])), name


# ---- the typing rules, against Numba's own typing context ------------------------------------

KINDS = {"b": "boolean", "i": "int64", "u": "uint64", "f": "float32", "d": "float64", "w": "int32"}
NUMBA_KIND = {"bool": "b", "int64": "i", "int32": "w", "uint64": "u", "float32": "f", "float64": "d"}


def widened(*kinds):
    """Operators see an int32 as the int64 it widens to (kernels._Kernel._widen)."""
    return ["i" if k == "w" else k for k in kinds]


@pytest.fixture(scope="module")
def typing_context():
    from numba.core.registry import cpu_target
    ctx = cpu_target.typing_context
    ctx.refresh()
    return ctx


@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul, operator.truediv])
def test_arithmetic_types_are_numbas(typing_context, op):
    from numba import types
    checked = 0
    for a, ta in KINDS.items():
        for b, tb in KINDS.items():
            x, y = widened(a, b)
            try:
                ours = kernels.arith(x, y) if op is not operator.truediv else (
                    "d" if {x, y} <= {"b", "i"} or {x, y} == {"u"} else kernels.arith(x, y))
            except Unsupported:
                continue
            sig = typing_context.resolve_function_type(op, (getattr(types, ta), getattr(types, tb)), {})
            assert ours == NUMBA_KIND[str(sig.return_type)], (op, a, b, sig)
            checked += 1
    assert checked >= 20


def test_unification_is_numbas(typing_context):
    from numba import types
    for a, ta in KINDS.items():
        for b, tb in KINDS.items():
            got = typing_context.unify_types(getattr(types, ta), getattr(types, tb))
            assert kernels.unify(a, b) == NUMBA_KIND[str(got)], (a, b, got)


def test_comparison_types_are_numbas(typing_context):
    from numba import types
    for a, ta in KINDS.items():
        for b, tb in KINDS.items():
            try:
                ours = kernels.compare_type(*widened(a, b))
            except Unsupported:
                continue
            sig = typing_context.resolve_function_type(operator.lt, (getattr(types, ta), getattr(types, tb)), {})
            theirs = NUMBA_KIND[str(sig.args[0])]
            # bools and int32s compare as int64s here (the same order)
            assert ours == theirs or (ours == "i" and theirs in ("b", "w")), (a, b, sig)


# ---- single kernels: odd values and what falls back ------------------------------------------

KERNEL = textwrap.dedent('''
    import math
    import numpy as np
    from numba import cfunc
    from graphc.backends.cpu.views import exp32, fill, view

    @cfunc('int64(voidptr, int64, voidptr, int64, voidptr, int64, int64)', cache=False, error_model='numpy')
    def kernel_odd(x_ptr, x_n0, q_ptr, q_n0, o_ptr, o_n0, k):
        x = view(x_ptr, (x_n0,), np.float32)
        q = view(q_ptr, (q_n0,), np.int64)
        o = view(o_ptr, (o_n0,), np.float64)
        acc = 0.0
        for i in range(x.shape[0]):
            v = x[i]
            w = -v if v != v else max(v, np.float32(-1.5)) * min(v, 2.0)
            j = q[i] // k
            r = (q[i] - j * k) * 3 >> 1
            if j >= 0 and v > 0 or not (r != 2):
                acc += w / k
            else:
                acc -= abs(j) * math.tanh(v) + exp32(v) - math.exp(v) + math.log1p(abs(w))
            o[i] = acc + x[-1 - i] + q[-1] / 3 + np.float32(j) * np.float32(0.1)
        return 0 if acc == acc else 1
''')


def describe(src: str):
    """The entry description (entry.EntryDesc) of a kernel text written here by hand (the
    emitter hands its own kernels' descriptions to the compilers)."""
    import ast
    from graphc.backends.cpu.entry import EntryDesc
    from graphc.backends.cpu.intrinsics import DIALECT
    (fn,) = [n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.decorator_list]
    sig = fn.decorator_list[0].args[0].value  # 'int64(voidptr, int64, ...)'
    ctypes_ = [t.strip() for t in sig[sig.index("(") + 1:-1].split(",") if t.strip()]
    calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    dtypes = tuple((c.args[0].id, ast.unparse(c.args[2]).removeprefix("np.")) for c in calls if c.func.id == "view")
    return EntryDesc(fn.name, tuple(zip((a.arg for a in fn.args.args), ctypes_)), "int64", dtypes,
                     tuple(sorted({c.func.id for c in calls if c.func.id in DIALECT})))


def both(tmp_path, module: str, src: str):
    """The kernel entry of ``src`` compiled by graphc (kernels.py) and by Numba, each as a
    ctypes function of its C signature: (ours, theirs); None where graphc refuses it."""
    import ctypes
    import hashlib
    import importlib.util
    import llvmlite.binding as ll
    from graphc.backends.cpu import image
    try:
        desc = describe(src)
        sym, native_name, obj, _ = kernels.compile_kernel(module, src, desc)
    except Unsupported:
        return None
    assert image.load_images([(sym, native_name, hashlib.sha256(obj).hexdigest(), obj)]) is None
    path = tmp_path / f"{module}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(module, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = {"voidptr": ctypes.c_void_p, "int64": ctypes.c_int64, "float32": ctypes.c_float, "float64": ctypes.c_double}
    proto = ctypes.CFUNCTYPE(ctypes.c_int64, *(c[p] for p in desc.ctypes))
    return proto(ll.address_of_symbol(sym)), proto(getattr(mod, desc.name).address)


def test_odd_values_give_numbas_bits(tmp_path):
    """NaN, infinities, signed zeros and negative numbers through the rules that differ
    between C, NumPy and Numba: mixed-type arithmetic, floor division of negatives, wrapped
    negative indices, max/min with NaN, short-circuit conditions."""
    ours, theirs = both(tmp_path, "graphc_oddkernel", KERNEL)
    x = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-30, -3.5, 2.25, 88.0, -104.0, 7.0, -7.0, 1e30, -1.0],
                 np.float32)
    q = np.array([-7, -6, -5, -1, 0, 1, 5, 6, 7, -2 ** 40, 2 ** 40, 3, -3, 4], np.int64)
    for k in (3, -2, 1, 0):
        o1, o2 = np.zeros(len(x)), np.zeros(len(x))
        r1 = ours(x.ctypes.data, len(x), q.ctypes.data, len(q), o1.ctypes.data, len(o1), k)
        r2 = theirs(x.ctypes.data, len(x), q.ctypes.data, len(q), o2.ctypes.data, len(o2), k)
        assert r1 == r2
        np.testing.assert_array_equal(o1.view(np.int64), o2.view(np.int64), err_msg=f"k={k}")


RUNS_KERNEL = textwrap.dedent('''
    import numpy as np
    from numba import cfunc
    from graphc.backends.cpu.views import add_run, copy_run, fill_run, view

    @cfunc('int64(voidptr, int64, voidptr, int64, voidptr, int64, int64, int64, int64, int64)', cache=False, error_model='numpy')
    def kernel_runs(x_ptr, x_n0, o_ptr, o_n0, a_ptr, a_n0, a_n1, d, s, n):
        x = view(x_ptr, (x_n0,), np.float32)
        o = view(o_ptr, (o_n0,), np.float32)
        a = view(a_ptr, (a_n0, a_n1,), np.float32)
        copy_run(o, d, x, s, n)
        add_run(a, s, x, d, n)
        fill_run(o, d + n, n, 0.1)
        return 0
''')


def test_run_intrinsics_give_numbas_bits_and_numpys_slices(tmp_path):
    """copy_run / add_run / fill_run (the patch kernels' contiguous runs) at flat offsets of
    1-D and 2-D arrays, empty runs included: both compilers give the slice assignments' bits
    (NaN, infinities and signed zeros copied and added as items; a float64 fill value rounded
    to float32)."""
    ours, theirs = both(tmp_path, "graphc_runkernel", RUNS_KERNEL)
    assert ours is not None  # graphc compiles the run intrinsics itself
    x = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-30, -3.5, 2.25, 1e30, -1.0, 7.0, 3.0] * 3, np.float32)
    for d, s, n in [(0, 0, 5), (3, 7, 9), (10, 1, 0), (2, 20, 16), (0, 0, 18)]:
        res = []
        for f in (ours, theirs):
            o, a = np.full(40, -2.0, np.float32), np.arange(36, dtype=np.float32).reshape(6, 6) - 0.5
            assert f(x.ctypes.data, len(x), o.ctypes.data, len(o), a.ctypes.data, 6, 6, d, s, n) == 0
            res.append((o, a))
        o, a = np.full(40, -2.0, np.float32), np.arange(36, dtype=np.float32).reshape(6, 6) - 0.5
        o[d:d + n] = x[s:s + n]
        a.reshape(-1)[s:s + n] += x[d:d + n]
        o[d + n:d + 2 * n] = np.float32(0.1)
        for got in res:
            np.testing.assert_array_equal(got[0].view(np.int32), o.view(np.int32), err_msg=f"copy/fill {d, s, n}")
            np.testing.assert_array_equal(got[1].view(np.int32), a.view(np.int32), err_msg=f"add {d, s, n}")


@pytest.mark.parametrize("body, why", [
    ("    y = x[0] ** 2\n", "power"),
    ("    t = np.zeros(3)\n", "np.zeros"),
    ("    t = np.uint64(3) + 1\n", "uint64 mixed"),
    ("    v = 1\n    v = 2.0\n", "assigned"),
    ("    z = x[0:2]\n", "Slice"),
])
def test_forms_outside_the_subset_are_refused(body, why):
    src = ("@cfunc('int64(voidptr, int64)', cache=True, error_model='numpy')\n"
           "def kernel_x(x_ptr, x_n0):\n    x = view(x_ptr, (x_n0,), np.float32)\n" + body + "    return 0\n")
    with pytest.raises(Unsupported, match=why):
        kernels.compile_kernel("graphc_refused", src, describe(src))


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A cache of this test's own: no manifest or image of an earlier run starts the program."""
    import graphc.backends.cache as gcache
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gcache, "_resolved", {})


def test_a_kernel_outside_the_subset_is_compiled_by_numba_beside_the_others(monkeypatch, private_cache):
    """Per-kernel fallback: a program whose one kernel is refused still trains, bit for bit as
    the all-Numba program, and only that kernel's module is imported through Numba."""
    refuse = kernels._Kernel._stmt

    def picky(self, s):
        if "tanh" in self.fn_ast.name or "tanh" in __import__("ast").unparse(s):  # math.tanh or tanh32
            raise Unsupported("refused by the test")
        return refuse(self, s)

    monkeypatch.setattr(kernels._Kernel, "_stmt", picky)
    monkeypatch.setattr(kernels, "_OBJECTS", {})
    x = gc.input("fbx", (None, 4))
    y = gc.input("fby", (None,), dtype="int64")
    W = gc.param("fbW", (4, 3), init="glorot_uniform")
    loss = gc.softmax_cross_entropy(gc.tanh(x @ W) * 2.0, y)
    feeds = {"fbx": np.random.default_rng(1).standard_normal((5, 4)).astype("f4"), "fby": np.arange(5) % 3}
    step = gc.compile(loss, optimizer=gc.optim.SGD(0.1), target="cpu", seed=0)
    losses = [float(step(**feeds)["loss"]) for _ in range(3)]
    prog = step.program_for(5)
    assert prog.native and 0 < len(prog._kernel_modules) < len(prog.kernel_paths)
    ref = gc.compile(loss, optimizer=gc.optim.SGD(0.1), target="numpy", seed=0)
    np.testing.assert_allclose(losses, [float(ref(**feeds)["loss"]) for _ in range(3)], rtol=1e-5)


def test_explain_times_the_kernels_that_run():
    """step.explain()'s profiling twin of a program with graphc's driver is graphc's too: it
    calls the same compiled kernels (not Numba's compile of their text)."""
    from graphc import explain
    x = gc.input("exx", (None, 6))
    y = gc.input("exy", (None,), dtype="int64")
    W = gc.param("exW", (6, 3), init="glorot_uniform")
    loss = gc.softmax_cross_entropy(gc.relu(x @ W), y)
    step = gc.compile(loss, optimizer=gc.optim.Adam(0.01), target="cpu", seed=0)
    feeds = {"exx": np.ones((4, 6), np.float32), "exy": np.arange(4) % 3}
    step(**feeds)
    rep = step.explain(runs=3, verbose=False, **feeds)
    prog = step.program_for(4)
    twin, n = explain._PROFILERS[prog]
    assert prog.native and type(twin).__name__ == "builtin_function_or_method"
    assert n == len(prog.module.kernels) and not prog._kernel_modules
    assert "kernels" in str(rep)


def test_a_translator_failure_warns_and_numba_compiles_that_kernel(monkeypatch, private_cache):
    """A bug of graphc's compiler (an exception other than Unsupported) costs a warning and
    that kernel's compile time, never a failed step."""
    real = kernels._Kernel._call

    def broken(self, e):
        if __import__("graphc.backends.cpu.lowering", fromlist=["callee"]).callee(e) in ("math.tanh", "tanh32"):
            raise RuntimeError("a bug in the translator")
        return real(self, e)

    monkeypatch.setattr(kernels._Kernel, "_call", broken)
    monkeypatch.setattr(kernels, "_OBJECTS", {})
    x = gc.input("tfx", (None, 4))
    W = gc.param("tfW", (4, 3), init="glorot_uniform")
    f = gc.compile(gc.tanh(x @ W) * 3.0, target="cpu")
    xb = np.random.default_rng(2).standard_normal((5, 4)).astype("f4")
    with pytest.warns(RuntimeWarning, match="graphc's compiler failed .*a bug in the translator"):
        out = f(tfx=xb)
    np.testing.assert_allclose(out, np.tanh(xb @ f.params["tfW"]) * 3.0, rtol=1e-5)
    prog = f.program_for(5)
    assert prog.native and len(prog._kernel_modules) == 1


# ---- random kernels: graphc's compile and Numba's, bit for bit --------------------------------

FUZZ_LEAVES = ["a", "b", "c", "d", "e", "f", "1", "2", "0.5", "-3", "np.float32(1.5)", "np.float32(-0.25)",
               "np.float64(2.0)", "True"]


def _fuzz_expr(rng, depth: int) -> str:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(FUZZ_LEAVES)
    r, x, y = rng.random(), _fuzz_expr(rng, depth - 1), _fuzz_expr(rng, depth - 1)
    if r < 0.35:
        return f"({x} {rng.choice(['+', '-', '*', '/', '%', '//'])} {y})"
    if r < 0.45:
        return f"({x} if {x} {rng.choice(['<', '>', '<=', '>=', '==', '!='])} {y} else {y})"
    if r < 0.55:
        return f"{rng.choice(['max', 'min'])}({x}, {y})"
    if r < 0.65:
        return f"abs({x})"
    if r < 0.75:
        fn = rng.choice(["math.exp", "math.log", "math.sqrt", "math.tanh", "math.log1p"])
        return f"{fn}(abs({x}) + np.float32(0.5))"
    if r < 0.80:
        return f"{rng.choice(['np.float32', 'np.float64'])}({x})"
    if r < 0.83:  # of integers (a float's np.int32 out of range is LLVM's poison: the next one)
        return f"np.int32({rng.choice(['c', 'd', 'e', '(c - e)', '(d * e)', 'f'])})"
    if r < 0.87:  # gc.cast of a float as the emitters write it: NaN, +-inf, out of range included
        return float_to_int(rng.choice(["a", "b", "(a * 3e9)", "(b * 1e10)", "(a * b)", "(b - a)"]),
                            rng.choice(["int32", "int64"]))
    if r < 0.92:
        return f"(-{x})"
    return f"(c // {rng.choice(['2', '-3', 'd'])} + e)"


def _fuzz_kernel(rng, n: int) -> str:
    """A kernel over float32/float64/int64/int32/bool arrays (a, b, c and d, e, f per item)
    computing random expressions, an accumulator under a random condition, stores with
    implicit casts."""
    body = [f"        v{j} = {_fuzz_expr(rng, 4)}" for j in range(3)]
    cond = f"{_fuzz_expr(rng, 2)} {rng.choice(['<', '>', '!='])} {_fuzz_expr(rng, 2)} and f"
    return textwrap.dedent(f'''
        import math
        import numpy as np
        from numba import cfunc
        from graphc.backends.cpu.views import view

        @cfunc('int64({", ".join(["voidptr, int64"] * 7)})', cache=False, error_model='numpy')
        def kernel_fuzz{n}(x_ptr, x_n0, y_ptr, y_n0, k_ptr, k_n0, o_ptr, o_n0, p_ptr, p_n0, q_ptr, q_n0, m_ptr, m_n0):
            x = view(x_ptr, (x_n0,), np.float32)
            y = view(y_ptr, (y_n0,), np.float64)
            k = view(k_ptr, (k_n0,), np.int64)
            o = view(o_ptr, (o_n0,), np.float64)
            p = view(p_ptr, (p_n0,), np.float32)
            q = view(q_ptr, (q_n0,), np.int32)
            m = view(m_ptr, (m_n0,), np.bool_)
            acc = 0.0
            for i in range(x.shape[0]):
                a = x[i]
                b = y[i]
                c = k[i]
                d = k[x.shape[0] - 1 - i]
                e = q[i]
                f = m[i]
    ''') + "\n".join(body) + (f"\n        if {cond}:\n            acc += v1\n        else:\n            acc -= v0\n"
                              "        o[i] = v0 + v1 + acc\n        p[i] = v2\n        q[i] = e + c // 3\n"
                              "    return 0\n")


def _fuzz(tmp_path, seed: int, count: int) -> int:
    """Compile ``count`` random kernels both ways and compare every output bit for bit; returns
    how many graphc translated (the rest it refused, which is allowed)."""
    import random
    rng = random.Random(seed)
    x = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-30, -3.5, 2.25, 88.0, -104.0, 7.0, 1e30, 0.1, -1.0],
                 np.float32)
    y = np.array([1.0, -2.5, 0.0, -0.0, np.nan, 1e300, -1e-300, 3.0, np.inf, 5.5, -7.25, 0.3, 1e10, 2.0])
    k = np.array([-7, -6, -1, 0, 1, 5, 6, 7, 3, -3, 4, 2, -2, 100], np.int64)
    q0 = np.array([-2 ** 31, 2 ** 31 - 1, -1, 0, 1, 5, 6, 7, 3, -3, 4, 2, -2, 100], np.int32)
    mask = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 1], np.bool_)
    translated = 0
    for n in range(count):
        src = _fuzz_kernel(rng, n)
        fns = both(tmp_path, f"graphc_fuzz_{seed}_{n}", src)
        if fns is None:  # refused: Numba would compile it
            continue
        outs = []
        for fn in fns:
            o, p, q = np.zeros(len(x)), np.zeros(len(x), np.float32), q0.copy()
            fn(*[v for a in (x, y, k, o, p, q, mask) for v in (a.ctypes.data, len(a))])
            outs.append((o, p, q))
        for ours, theirs in zip(*outs):
            # bit for bit, signed zeros included; a NaN is a NaN (its sign and payload follow the
            # instruction order LLVM picks, which IEEE leaves open)
            nan = np.isnan(ours) if ours.dtype.kind == "f" else np.zeros(ours.shape, bool)
            bits = {4: np.uint32, 8: np.uint64}.get(ours.itemsize) if ours.dtype.kind == "f" else None
            msg = f"seed {seed}, kernel {n}:\n{src}"
            np.testing.assert_array_equal(nan, np.isnan(theirs) if ours.dtype.kind == "f" else nan, err_msg=msg)
            np.testing.assert_array_equal(ours[~nan].view(bits) if bits else ours, theirs[~nan].view(bits) if bits
                                          else theirs, err_msg=msg)
        translated += 1
    return translated


def test_random_kernels_give_numbas_bits(tmp_path):
    assert _fuzz(tmp_path, 20261130, 24) >= 12


@pytest.mark.slow
def test_random_kernels_give_numbas_bits_new_seeds(tmp_path):
    """New random kernels every run (the seed is in the failure message)."""
    import time
    seed = int(time.time())
    assert _fuzz(tmp_path, seed, 120) >= 60, seed


# ---- every op's template on NaN, infinities and signed zeros ----------------------------------

SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.0, 0.3, -0.5]
TEMPLATE_ATTRS = {"pow": {"p": 3.0}, "leaky_relu": {"alpha": 0.1}, "elu": {"alpha": 0.7},
                  "clip": {"lo": -0.5, "hi": 0.3}}
# the rounding ops' constants depend on the dtype (ops/numeric.py)
ROUNDING = ("round", "floor", "ceil", "trunc")


def _template_kernel(dtype: str):
    """(kernel text, nodes): a kernel storing, for items a and b of two arrays, every float
    elementwise op's template (the emitters' text, backends/expr.node_expr) in a column of
    its own, and the max reduction's running step (reduce_step) over a in the last."""
    from graphc.backends.expr import literal, node_expr, reduce_step
    from graphc.ir import make
    from graphc.ops.base import all_ops
    from graphc.ops.numeric import _rounding_attrs
    a, b = gc.input("tpl_a", (3,), dtype=dtype), gc.input("tpl_b", (3,), dtype=dtype)
    nodes, lines = [], []
    for name, op in sorted(all_ops().items()):
        if op.kind != "elementwise" or name in ("cast", "stop_gradient"):
            continue
        if name == "where":
            n, operands = make("where", (a > b, a, b)), ["(a > b)", "a", "b"]
        elif "{1}" not in op.template:
            attrs = _rounding_attrs(dtype) if name in ROUNDING else TEMPLATE_ATTRS.get(name, {})
            n, operands = make(name, (a,), attrs), ["a"]
        else:
            n, operands = make(name, (a, b)), ["a", "b"]
        e = node_expr(n, operands)
        if n.dtype.kind == "b":
            e = f"({literal(1, dtype)} if {e} else {literal(0, dtype)})"
        lines.append(f"        o[i, {len(nodes)}] = {e}  # {name}")
        nodes.append(n)
    src = textwrap.dedent(f'''
        import math
        import numpy as np
        from numba import cfunc
        from graphc.backends.cpu.views import view

        @cfunc('int64(voidptr, int64, voidptr, int64, voidptr, int64, int64)', cache=False, error_model='numpy')
        def kernel_templates(x_ptr, x_n0, y_ptr, y_n0, o_ptr, o_n0, o_n1):
            x = view(x_ptr, (x_n0,), np.{dtype})
            y = view(y_ptr, (y_n0,), np.{dtype})
            o = view(o_ptr, (o_n0, o_n1), np.{dtype})
            m = {literal(-np.inf, dtype)}
            for i in range(x.shape[0]):
                a = x[i]
                b = y[i]
    ''') + "\n".join(lines) + f"\n        m = {reduce_step('max', 'm', 'a')}\n        o[i, {len(nodes)}] = m\n    return 0\n"
    return src, nodes


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_op_templates_give_numbas_bits_and_numpys_nan(tmp_path, dtype):
    """Each elementwise op's template and the max reduction's step, on every pair of NaN,
    +-inf, +-0.0 and finite values: graphc's kernel and Numba's agree bit for bit (NaN
    positions, signed zeros), and both agree with the op's NumPy evaluation (the numpy
    target): NaN where it has NaN (relu, maximum, minimum, sign, max propagate it), the same
    infinities and signs of zero, close values (the math functions' last bits may differ)."""
    src, nodes = _template_kernel(dtype)
    ours, theirs = both(tmp_path, f"graphc_templates_{dtype}", src)
    a, b = (np.array(v, dtype) for v in zip(*[(p, q) for p in SPECIALS for q in SPECIALS]))
    outs = []
    for fn in (ours, theirs):
        o = np.zeros((len(a), len(nodes) + 1), dtype)
        assert fn(a.ctypes.data, len(a), b.ctypes.data, len(b), o.ctypes.data, *o.shape) == 0
        outs.append(o)
    nan = np.isnan(outs[0])
    np.testing.assert_array_equal(nan, np.isnan(outs[1]))
    bits = np.uint32 if dtype == "float32" else np.uint64
    np.testing.assert_array_equal(outs[0][~nan].view(bits), outs[1][~nan].view(bits))
    with np.errstate(all="ignore"):
        want = [np.asarray(n.opdef.evaluate([a > b, a, b] if n.op == "where" else [a, b][:len(n.inputs)],
                                            n.attrs, n)).astype(dtype) for n in nodes]
        want.append(np.maximum.accumulate(a))
    rtol = 2e-6 if dtype == "float32" else 1e-12
    for k, w in enumerate(want):
        got, what = outs[0][:, k], nodes[k].op if k < len(nodes) else "max (reduce_step)"
        msg = f"{what}: a={a}\nb={b}\ngot {got}\nwant {w}"
        np.testing.assert_array_equal(np.isnan(got), np.isnan(w), err_msg=msg)
        ok = ~np.isnan(w)
        np.testing.assert_allclose(got[ok], w[ok], rtol=rtol, atol=0, err_msg=msg)
        if k < len(nodes):  # (which of two tied zeros np.maximum.accumulate keeps varies with the machine)
            np.testing.assert_array_equal(np.signbit(got[ok]), np.signbit(w[ok]), err_msg=msg)
    assert {"relu", "maximum", "minimum", "sign", "clip", "mod", "floor_divide", "arctan2"} <= {n.op for n in nodes}


# ---- Python's float % and //, math.atan2: Numba's real_divmod, the libm symbol ------------------

DIVMOD_SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30, 3e37, -3e37, 1.5, -1.5]
INT_SPECIALS = [-2 ** 63, -2 ** 63 + 1, -7, -3, -2, -1, 0, 1, 2, 3, 7, 2 ** 63 - 1, 5]

DIVMOD_KERNEL = '''
import math
import numpy as np
from numba import cfunc
from graphc.backends.cpu.views import view

@cfunc('int64(voidptr, int64, voidptr, int64, voidptr, int64, voidptr, int64, voidptr, int64, int64, '
       'voidptr, int64, int64, voidptr, int64, int64)', cache=False, error_model='numpy')
def kernel_divmod(x_ptr, x_n0, y_ptr, y_n0, k_ptr, k_n0, j_ptr, j_n0, o_ptr, o_n0, o_n1, p_ptr, p_n0, p_n1,
                  q_ptr, q_n0, q_n1):
    x = view(x_ptr, (x_n0,), np.DTYPE)
    y = view(y_ptr, (y_n0,), np.DTYPE)
    k = view(k_ptr, (k_n0,), np.int64)
    j = view(j_ptr, (j_n0,), np.int64)
    o = view(o_ptr, (o_n0, o_n1), np.DTYPE)
    p = view(p_ptr, (p_n0, p_n1), np.float64)
    q = view(q_ptr, (q_n0, q_n1), np.int64)
    for i in range(x.shape[0]):
        a = x[i]
        b = y[i]
        c = k[i]
        d = j[i]
        o[i, 0] = a % b
        o[i, 1] = a // b
        o[i, 2] = math.atan2(a, b)
        p[i, 0] = a % np.float64(b)
        p[i, 1] = a // c
        p[i, 2] = c % b
        p[i, 3] = math.atan2(c, d)
        q[i, 0] = c % d
        q[i, 1] = c // d
    return 0
'''


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_mod_floor_divide_and_atan2_give_numbas_bits(tmp_path, dtype):
    """Every pair of NaN, +-inf, +-0, +-1, +-tiny, +-huge, +-1.5 through ``%``, ``//`` and
    ``math.atan2`` (same-type, mixed with float64 and int64, a zero divisor included) and
    int64 ``%``/``//`` on the extremes (a zero divisor, the minimum by -1): graphc compiles the
    kernel and its results are Numba's bit for bit (a NaN is a NaN)."""
    fns = both(tmp_path, f"graphc_divmod_{dtype}", DIVMOD_KERNEL.replace("DTYPE", dtype))
    assert fns is not None, "graphc refused the kernel"
    x, y = (np.array(v, dtype) for v in zip(*[(p, q) for p in DIVMOD_SPECIALS for q in DIVMOD_SPECIALS]))
    k, j = (np.array(v, np.int64) for v in zip(*[(p, q) for p in INT_SPECIALS for q in INT_SPECIALS]))
    assert len(x) == len(k) == 169
    outs = []
    for fn in fns:
        o, p, q = np.zeros((len(x), 3), dtype), np.zeros((len(x), 4)), np.zeros((len(x), 2), np.int64)
        assert fn(*[v for arr in (x, y, k, j) for v in (arr.ctypes.data, len(arr))],
                  *[v for arr in (o, p, q) for v in (arr.ctypes.data, *arr.shape)]) == 0
        outs.append((o, p, q))
    for col, (ours, theirs) in enumerate(zip(*outs)):
        if ours.dtype.kind == "i":
            np.testing.assert_array_equal(ours, theirs)
            continue
        nan = np.isnan(ours)
        np.testing.assert_array_equal(nan, np.isnan(theirs), err_msg=f"output {col}")
        bits = np.uint32 if ours.dtype == np.float32 else np.uint64
        for c in range(ours.shape[1]):
            ok = ~nan[:, c]
            np.testing.assert_array_equal(ours[ok, c].view(bits), theirs[ok, c].view(bits),
                                          err_msg=f"output {col} column {c}: x={x[ok]} y={y[ok]}")
    o = outs[0][0]
    with np.errstate(all="ignore"):  # and NumPy's values (the numpy target's evaluation)
        for c, ref in enumerate((np.remainder, np.floor_divide, np.arctan2)):
            if ref is np.arctan2:  # libm's atan2 and NumPy's may differ in the last bits
                np.testing.assert_allclose(o[:, c], ref(x, y), rtol=4e-7 if dtype == "float32" else 1e-15, atol=0)
            else:  # the same algorithm (CPython's float_divmod): the same values
                np.testing.assert_array_equal(o[:, c], ref(x, y), err_msg=ref.__name__)
            np.testing.assert_array_equal(np.signbit(o[:, c]), np.signbit(ref(x, y)), err_msg=ref.__name__)
    np.testing.assert_array_equal(outs[0][2][:, 0], [0 if b == 0 or (a, b) == (-2 ** 63, -1) else a % b
                                                     for a, b in zip(k.tolist(), j.tolist())])


@pytest.mark.parametrize("op", ["mod", "floordiv", "atan2"])
def test_divmod_and_atan2_types_are_numbas(typing_context, op):
    import math
    from numba import types
    fn, ours = {"mod": (operator.mod, kernels.divmod_type), "floordiv": (operator.floordiv, kernels.divmod_type),
                "atan2": (math.atan2, kernels.atan2_type)}[op]
    checked = 0
    for a, ta in KINDS.items():
        for b, tb in KINDS.items():
            try:
                got = ours(*widened(a, b))
            except Unsupported:
                continue
            sig = typing_context.resolve_function_type(fn, (getattr(types, ta), getattr(types, tb)), {})
            assert got == NUMBA_KIND[str(sig.return_type)], (op, a, b, sig)
            checked += 1
    assert checked >= 20


def test_mod_floor_divide_and_arctan2_programs_are_compiled_by_graphc(private_cache):
    """The ops' kernels no longer fall back to Numba: no kernel module of the program is
    imported through it, and the values are the numpy target's."""
    a, b = gc.input("dma", (None,), dtype="float32"), gc.input("dmb", (None,), dtype="float32")
    i, j = gc.input("dmi", (None,), dtype="int64"), gc.input("dmj", (None,), dtype="int64")
    outs = [gc.mod(a, b), gc.remainder(b, a), gc.floor_divide(a, b), gc.arctan2(a, b), a % 0.75, a // -1.5,
            gc.mod(i, j), i // j]
    feeds = {"dma": np.array([7.5, -7.5, 0.0, -0.0, np.inf, 2.0, -1e-30, 1.0], np.float32),
             "dmb": np.array([2.0, 2.0, -3.0, 1.5, 1.0, 0.0, np.inf, -np.inf], np.float32),
             "dmi": np.array([7, -7, 7, -7, 0, 5, -2 ** 63, 3]), "dmj": np.array([3, 3, -3, -3, 2, 0, 7, 1])}
    f = gc.compile(outs, target="cpu", check_finite=False)
    got = f(**feeds)
    prog = f.program_for(8)
    assert prog.native and prog.kernel_paths and not prog._kernel_modules
    with np.errstate(all="ignore"):
        want = gc.compile(outs, target="numpy", check_finite=False)(**feeds)
    for g, w, n in zip(got, want, ("mod", "remainder", "floor_divide", "arctan2", "% 0.75", "// -1.5", "int mod",
                                   "int //")):
        if n == "arctan2":  # libm's atan2f and NumPy's may differ in the last bit
            np.testing.assert_allclose(g, w, rtol=4e-7, atol=0)
        else:
            np.testing.assert_array_equal(g, w, err_msg=n)
        np.testing.assert_array_equal(np.signbit(g), np.signbit(w), err_msg=n)
        assert g.dtype == w.dtype, n
