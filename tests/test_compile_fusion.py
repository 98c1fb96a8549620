"""Fusion and the buffer plan: kernel counts, what fuses with what, in-place updates, and
invariants of the schedule (topological order, no overlapping live buffers).

Building a CpuProgram generates code but does not run Numba until the first call, so
these tests are cheap: none of them compiles native code.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.compiler import lower
from graphc.schedule.fusion import fuse

BATCH = 16


def mlp_loss():
    x = gc.input("fx", (None, 32))
    y = gc.input("fy", (None,), dtype="int64")
    W1 = gc.param("fW1", (32, 64))
    b1 = gc.param("fb1", (64,))
    W2 = gc.param("fW2", (64, 10))
    b2 = gc.param("fb2", (10,))
    return gc.softmax_cross_entropy(gc.relu(x @ W1 + b1) @ W2 + b2, y)


PARAMS = ["fW1", "fb1", "fW2", "fb2"]


@pytest.fixture(scope="module")
def adam_prog():
    step = gc.compile(mlp_loss(), optimizer=gc.optim.Adam(1e-3), target="cpu")
    return step, step.program_for(BATCH)


def test_far_fewer_kernels_than_nodes(adam_prog):
    step, p = adam_prog
    n_k = len(p.module.kernels)
    assert p.stats.nodes_after >= 60, p.stats
    assert n_k <= 12, step.kernels()
    assert n_k * 5 <= p.stats.nodes_after
    assert p.module.functions <= n_k  # identical kernels (e.g. Adam on W1 and W2) are shared
    assert p.module.functions < n_k, "the update kernels of same-rank params should share one function"


def test_bias_and_relu_are_matmul_epilogues(adam_prog):
    _, p = adam_prog
    fwd = [k for k in p.plan.kernels if k.matmul is not None and k.matmul.inputs[1].op == "param"
           and k.matmul.inputs[1].name in ("fW1", "fW2")]
    assert len(fwd) == 2
    by_w = {k.matmul.inputs[1].name: k for k in fwd}
    assert [n.op for n in by_w["fW1"].nodes] == ["add", "relu"]
    assert [n.op for n in by_w["fW2"].nodes] == ["add"]
    assert all(k.kind == "loop" for k in fwd)


def test_softmax_ce_forward_and_grad_share_a_kernel(adam_prog):
    _, p = adam_prog
    sce = [k for k in p.plan.kernels if k.kind == "sce"]
    assert len(sce) == 1
    assert sorted(n.op for n in sce[0].nodes) == ["sce_grad", "softmax_cross_entropy"]


def test_one_gemm_per_gradient(adam_prog):
    """2 forward GEMMs + dW2, dh, dW1: scalar factors (Adam's) must not copy a GEMM."""
    _, p = adam_prog
    assert sum(n.op == "matmul" for n in p.graph.nodes) == 5


def test_each_param_update_is_one_in_place_kernel(adam_prog):
    _, p = adam_prog
    assert p.plan.copies == []  # every store write happens inside a kernel, in place
    writers: dict[str, set] = {}
    for k in p.plan.kernels:
        for o in k.outputs:
            b = p.plan.buffers[id(o)]
            if b.kind == "store":
                writers.setdefault(b.name, set()).add(k.index)
    for name in PARAMS:
        ks = writers[name] | writers[f"{name}/m"] | writers[f"{name}/v"]
        assert len(ks) == 1, (name, ks)
    # the weight-gradient GEMMs are the prologue of their update kernels
    for name in ("fW1", "fW2"):
        (i,) = writers[name]
        assert p.plan.kernels[i].matmul is not None


def test_buffer_plan_reuses_memory(adam_prog):
    _, p = adam_prog
    assert 0 < p.plan.peak_bytes < p.plan.no_reuse_bytes
    listing = p.kernel_listing()
    assert f"scratch peak {p.plan.peak_bytes} B" in listing


# ---- schedule invariants over several graphs (no native compile needed) ---------------------

def _graphs():
    x = gc.input("px", (None, 6))
    W = gc.param("pW", (6, 5))
    b = gc.param("pb", (5,))
    h = gc.tanh(x @ W + b)
    yield "mlp_adam", gc.compile(gc.mean(gc.square(h)), optimizer=gc.optim.Adam(), target="cpu"), 7
    yield "mlp_sgd_momentum", gc.compile(gc.mean(gc.square(h)), optimizer=gc.optim.SGD(0.1, momentum=0.9),
                                         target="cpu"), 7
    z = gc.input("pz", (4, 5))
    s = gc.softmax(z)
    outs = [s, gc.log_softmax(z, axis=0), gc.sum(s * z, axis=1), z.T @ s, gc.reshape(z.T, (20,))]
    yield "forward_mix", gc.compile(outs + gc.grad(gc.sum(outs[3]) + gc.sum(outs[2]), [z]), target="cpu"), None
    yield "rmsprop_centered", gc.compile(gc.mean(gc.square(h)) + gc.mean(gc.abs(W)),
                                         optimizer=gc.optim.RMSprop(momentum=0.3, centered=True), target="cpu"), 3


@pytest.mark.parametrize("case", list(range(4)))
def test_plan_invariants(case):
    name, f, batch = list(_graphs())[case]
    g, kernels, plan = lower(f._program, batch)
    ks = plan.kernels
    assert [k.index for k in ks] == list(range(len(ks)))
    # order: every materialized node is produced before it is read
    produced = {}
    for k in ks:
        for o in k.outputs + ([k.matmul] if k.matmul is not None else []):
            produced.setdefault(id(o), k.index)
    for k in ks:
        for b in k.reads():
            if b.opdef.kind != "source":
                assert produced[id(b)] < k.index, (name, k.name, b)
    # the networkx kernel graph is acyclic and the order is one of its topological orders
    import networkx as nx
    dag = plan.kernel_graph
    assert nx.is_directed_acyclic_graph(dag)
    for u, v in dag.edges:
        assert u < v, (name, u, v)
    # scratch buffers that are live at the same time do not overlap in the arena, unless they
    # form a chain of in-place writes (a loop writing over an operand that dies in it, or
    # over its own GEMM prologue's result)
    scratch = [(nid, b) for nid, b in plan.buffers.items() if b.kind == "scratch"]
    parent = {nid: nid for nid, _ in scratch}

    def root(a):
        while parent[a] != a:
            a = parent[a]
        return a

    pairs = []
    for i, (n1, b1) in enumerate(scratch):
        assert b1.offset + b1.size <= plan.arena_sizes[b1.dtype]
        for n2, b2 in scratch[i + 1:]:
            if b1.dtype != b2.dtype:
                continue
            if not (b1.offset < b2.offset + b2.size and b2.offset < b1.offset + b1.size):
                continue
            if not (b1.start <= b2.end and b2.start <= b1.end):
                continue
            pairs.append((n1, b1, n2, b2))
            (ne, be), (nl, bl) = sorted([(n1, b1), (n2, b2)], key=lambda t: t[1].start)
            writer = ks[bl.start]  # the kernel that writes the later buffer
            inside = {id(x) for x in writer.reads()} | {id(writer.matmul)}
            if (be.offset == bl.offset and be.size == bl.size and writer.kind == "loop"
                    and (ne in inside or nl in inside)):
                parent[root(nl)] = root(ne)
    for n1, b1, n2, b2 in pairs:
        assert root(n1) == root(n2), (name, b1, b2)
    assert plan.peak_bytes <= plan.no_reuse_bytes + sum(
        b.nbytes + 64 for b in plan.buffers.values() if b.kind == "const")


def test_fuse_is_target_independent_and_deterministic():
    f = gc.compile(mlp_loss(), optimizer=gc.optim.Adam(1e-3), target="cpu")
    g1, k1, _ = lower(f._program, BATCH)
    g2, k2, _ = lower(f._program, BATCH)
    assert g1.fingerprint() == g2.fingerprint()
    d = lambda ks: sorted((k.kind, tuple(k.shape), tuple(n.op for n in k.all_nodes)) for k in ks)  # noqa: E731
    assert d(k1) == d(k2) == d(fuse(g1))


# ---- a value read by several kernels is written by the loop that reads it elementwise ------

def _kernels_of(outs, feeds):
    f = gc.compile(outs, target="cpu")
    g, kernels, plan = lower(f._program, None)
    ref = gc.compile(outs, target="numpy")(**feeds)
    got = f(**feeds)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    return plan.kernels


def test_shared_value_is_written_by_its_elementwise_reader():
    x = gc.input("sx", (8, 4))
    m = x * 2.0 + 1.0  # read elementwise by out1's loop and by a reduction over another shape
    out1 = gc.tanh(m) - x
    out2 = gc.sum(m * m, axis=0)
    feeds = {"sx": np.arange(32, dtype=np.float32).reshape(8, 4) / 7}
    ks = _kernels_of([out1, out2], feeds)
    writers = [k for k in ks if any(o.op == "add" and o.shape == (8, 4) for o in k.outputs)]
    assert len(writers) == 1 and any(o.op == "sub" for o in writers[0].outputs), [k.outputs for k in ks]
    assert len(ks) == 2, [(k.kind, k.outputs) for k in ks]


def test_shared_value_is_not_merged_into_a_cycle_or_through_a_view():
    x = gc.input("cx", (4, 4))
    m = x * 3.0
    t = gc.sum(m)  # a kernel reading m whose result m's reader also reads: merging would make a cycle
    out1 = m + t
    out2 = gc.transpose(m) + x  # m read through a transpose: not the element the loop writes
    feeds = {"cx": np.arange(16, dtype=np.float32).reshape(4, 4) - 5}
    ks = _kernels_of([out1, out2], feeds)
    mul = [k for k in ks if any(o.op == "mul" for o in k.outputs)]
    assert len(mul) == 1 and not any(o.op == "add" for o in mul[0].outputs), [(k.kind, k.outputs) for k in ks]


def test_k_steps_per_call_keep_each_update_in_one_kernel():
    """Unrolled K-step training: the moments each step writes are read by the next step too;
    each param's Adam update still runs as one loop behind its gradient GEMM."""
    one = gc.compile(mlp_loss(), optimizer=gc.optim.Adam(1e-3), target="cpu")
    k3 = gc.compile(mlp_loss(), optimizer=gc.optim.Adam(1e-3), target="cpu", steps_per_execution=3)
    _, _, p1 = lower(one._program, BATCH)
    _, _, p3 = lower(k3._program, BATCH)
    steps = [k for k in p3.kernels if k.kind not in ("slice", "concat")]  # feeds sliced, losses stacked
    assert len(steps) <= 3 * len(p1.kernels), k3.kernels(BATCH)
    bare = [k for k in p3.kernels if k.kind == "matmul"]
    assert len(bare) <= 3 * len([k for k in p1.kernels if k.kind == "matmul"]), k3.kernels(BATCH)
