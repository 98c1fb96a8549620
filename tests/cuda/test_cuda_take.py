"""gc.take and its scatter-add gradient on cuda against the interpreter: gathers along any axis
with any index rank and dtype (a rank-0 feed included), a transposed table, duplicate indices,
an embedding + dense model trained with Adam, and fed indices checked before anything runs."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.errors import FeedError
from helpers import check_cuda


def test_take_forward_and_scatter_add_gradient():
    ids = gc.input("ct_ids", (5,), dtype="int64")
    ids2 = gc.input("ct_ids2", (2, 2), dtype="int32")
    ids8 = gc.input("ct_ids8", (3,), dtype="uint8")
    one = gc.input("ct_one", (), dtype="int16")
    W = gc.input("ct_W", (10, 2))  # more rows than ids: the gradient's rows split into blocks
    V = gc.input("ct_V", (4, 3, 2))
    outs = [gc.take(W, ids), gc.take(V, ids2), gc.take(V, ids8, axis=1), gc.take(W, one),
            gc.take(gc.transpose(W), [1, 0, 1])]
    feeds = {"ct_ids": np.array([7, 0, 7, 9, 7]), "ct_ids2": np.array([[3, 3], [0, 3]], "int32"),
             "ct_ids8": np.array([2, 2, 0], "uint8"), "ct_one": np.array(9, "int16"),
             "ct_W": np.random.default_rng(1).standard_normal((10, 2)).astype("float32"),
             "ct_V": np.random.default_rng(2).standard_normal((4, 3, 2)).astype("float32")}
    f = check_cuda(outs, wrt=[W, V], feeds=feeds)
    listing = f.kernels()
    assert "take_" in listing and "scatter_" in listing, listing


VOCAB, DIM, SEQ, CLS = 7, 2, 3, 3


def embedding_loss():
    tok = gc.input("ce_tok", (None, SEQ), dtype="int32")
    lab = gc.input("ce_lab", (None,), dtype="int64")
    r = np.random.default_rng(0)
    E = gc.param("ce_E", (VOCAB, DIM), init=r.standard_normal((VOCAB, DIM)).astype("float32"))
    W = gc.param("ce_W", (SEQ * DIM, CLS), init=r.standard_normal((SEQ * DIM, CLS)).astype("float32"))
    h = gc.reshape(gc.take(E, tok), (None, SEQ * DIM))
    return gc.softmax_cross_entropy(gc.tanh(h) @ W, lab)


def test_embedding_adam_step_matches_numpy_and_rejects_bad_ids():
    loss = embedding_loss()
    ref = gc.compile(loss, optimizer=gc.optim.Adam(0.05), target="numpy")
    step = gc.compile(loss, optimizer=gc.optim.Adam(0.05), target="cuda")
    feeds = {"ce_tok": np.array([[1, 1, 4], [6, 1, 0]], "int32"), "ce_lab": np.array([2, 0])}
    for _ in range(2):
        np.testing.assert_allclose(step(**feeds)["loss"], ref(**feeds)["loss"], rtol=2e-5)
    for k, v in ref.params.items():
        np.testing.assert_allclose(step.params[k], v, rtol=2e-5, atol=2e-6, err_msg=k)
    before = step.state_dict()
    bad = dict(feeds, ce_tok=np.array([[1, 1, 4], [6, 1, VOCAB]], "int32"))
    with pytest.raises(FeedError, match=rf"'ce_tok'.*\[0, {VOCAB}\)"):
        step(**bad)
    after = step.state_dict()
    assert step.iterations == 2
    for section in ("params", "state"):
        for k in before[section]:
            np.testing.assert_array_equal(after[section][k], before[section][k], err_msg=k)


PTX = """
import sys
import numpy as np, graphc as gc
from graphc.backends.cuda.emitter import REAL, emit_for, compile_ptx
from graphc.compiler import lowered
from graphc.backends.cuda.compat import numba_cuda
try:
    numba_cuda().compile_ptx(lambda a: None, (__import__("numba").float32[:],), cc=(9, 0))
except Exception as e:
    print("NO-NVVM", type(e).__name__)
    sys.exit(0)
W = gc.param("W", (50, 8)); V = gc.param("V", (3, 6, 2), dtype="float64")
outs = []
for dt in ("int64", "int32", "uint8", "uint64"):
    i = gc.input("i_" + dt, (None, 2), dtype=dt)
    outs += [gc.take(W, i), gc.take(V, i, axis=1)]
s = gc.input("s", (), dtype="int16")
outs.append(gc.take(W, s))
y = sum(gc.sum(gc.square(o)) for o in outs)
f = gc.compile(outs + gc.grad(y, [W, V]), target="cpu")
mod = emit_for(lowered(f._program, 4, {}), f._store.layout, lp=REAL)
ptx = compile_ptx(mod, cc=(9, 0))
print("PTX", sorted(k.split("_")[0] for k in ptx))
"""


def test_take_kernels_compile_to_ptx():
    """Typing the real (non-simulated) kernels for every index dtype, a scalar index feed and
    float32/float64 tables: what the simulator, running kernels as Python, cannot catch."""
    from test_cuda_toolchain import run_ptx
    (line,) = [ln for ln in run_ptx(PTX).splitlines() if ln.startswith("PTX")]
    assert line.count("'take'") >= 8 and line.count("'scatter'") >= 8, line
