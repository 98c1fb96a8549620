"""The launch-list passes of graphc/backends/cuda/merge.py on small hand-built launch lists:
what merges and what must not. Device-free: a launch here is only its name, function, argument
kinds and the element ranges it reads and writes; the text of a merged launch is the caller's
(``combine`` / ``fold``), so these pin the decisions alone."""
from __future__ import annotations

import copy

from graphc.backends.cuda.launch import Launch
from graphc.backends.cuda.merge import clash, fold_tiny, multi_tensor


def launch(name, fn="upd", reads=(), writes=(), arenas=("S_float32",), ew=True, kind="kernel", tag="ew",
           tiny=False, anchor=0, ints=(0,)):
    """A launch of ``fn`` over ``arenas``; ``reads``/``writes``: (arena, first, end) ranges."""
    ln = Launch(name, kind, fn if kind == "kernel" else "cupy.matmul", 1, 1,
                [("arena", a) for a in arenas] + [("int", v) for v in ints] if kind == "kernel" else [],
                reads=list(reads), writes=list(writes))
    ln.ew = ("prelude", "o0", "inner") if ew and kind == "kernel" else None
    ln.src = (None, [], tag) if kind == "kernel" else None
    ln.tiny = object() if tiny else None
    ln.anchor, ln.covers = anchor, {anchor}
    return ln


class Combine:
    """Records the groups a pass merges; the merged launch is a new kernel launch."""

    def __init__(self):
        self.groups = []

    def __call__(self, group):
        self.groups.append([g.name for g in group])
        return Launch("?", "kernel", "multi_" + group[0].function, 1, 1, [])


def names(launches):
    return [ln.name for ln in launches]


# ---- clash -----------------------------------------------------------------------------------

def test_clash_is_a_memory_dependence():
    a = ("S_float32", 0, 4)
    assert not clash(([a], []), ([a], []))  # both only read
    assert clash(([], [a]), ([("S_float32", 3, 8)], []))  # write, then a read of an overlapping range
    assert clash(([a], []), ([], [("S_float32", 2, 3)]))  # read, then a write inside it
    assert clash(([], [a]), ([], [a]))  # both write
    assert not clash(([], [a]), ([("S_float32", 4, 8)], [("S_float32", 4, 8)]))  # adjacent ranges
    assert not clash(([], [a]), ([("T_float32", 0, 4)], [("S_float64", 0, 4)]))  # other arenas


# ---- multi-tensor apply --------------------------------------------------------------------------

def test_independent_launches_of_one_function_become_one_launch_at_the_last():
    u0 = launch("k1", writes=[("S_float32", 0, 4)], reads=[("T_float32", 0, 4)], anchor=1, ints=(0, 4))
    g = launch("k2", fn="other", reads=[("T_float32", 8, 12)], writes=[("T_float32", 16, 20)], anchor=2)
    u1 = launch("k3", writes=[("S_float32", 4, 10)], reads=[("T_float32", 16, 22)], anchor=3, ints=(4, 6))
    u2 = launch("k4", writes=[("S_float32", 10, 12)], reads=[("T_float32", 30, 32)], anchor=4, ints=(10, 2))
    before = copy.deepcopy([u0, g, u1, u2])
    comb = Combine()
    out = multi_tensor([u0, g, u1, u2], comb)
    assert comb.groups == [["k1", "k3", "k4"]]
    assert names(out) == ["k2", "k1+k3+k4"]
    m = out[1]
    assert m.merged == ("k1", "k3", "k4") and m.function == "multi_upd"
    assert m.anchor == 4 and m.covers == {1, 3, 4}  # listed where the last one was
    assert m.reads == u0.reads + u1.reads + u2.reads and m.writes == u0.writes + u1.writes + u2.writes
    # a pass: the launches it was given are left as they were
    assert [(x.name, x.reads, x.writes, x.merged, x.anchor, x.covers) for x in [u0, g, u1, u2]] == \
        [(x.name, x.reads, x.writes, x.merged, x.anchor, x.covers) for x in before]


def test_a_launch_depending_on_a_member_keeps_it_in_place():
    """u0 writes what r reads: u0 cannot wait past r, so it is not merged with u1."""
    u0 = launch("k1", writes=[("S_float32", 0, 4)])
    r = launch("k2", fn="other", reads=[("S_float32", 2, 3)], writes=[("T_float32", 0, 1)])
    u1 = launch("k3", writes=[("S_float32", 4, 8)])
    comb = Combine()
    assert names(multi_tensor([u0, r, u1], comb)) == ["k1", "k2", "k3"]
    assert comb.groups == []


def test_dependent_launches_of_one_function_are_not_merged():
    """The second update reads what the first writes: in one launch they would race."""
    u0 = launch("k1", writes=[("T_float32", 0, 4)])
    u1 = launch("k2", reads=[("T_float32", 0, 4)], writes=[("S_float32", 0, 4)])
    comb = Combine()
    assert names(multi_tensor([u0, u1], comb)) == ["k1", "k2"]
    assert comb.groups == []


def test_a_dependence_ends_the_group_but_not_the_earlier_members():
    u0 = launch("k1", writes=[("S_float32", 0, 4)])
    u1 = launch("k2", writes=[("S_float32", 4, 8)])
    w = launch("k3", fn="other", reads=[("S_float32", 0, 8)], writes=[("T_float32", 0, 8)])
    u2 = launch("k4", writes=[("S_float32", 8, 12)])
    comb = Combine()
    assert names(multi_tensor([u0, u1, w, u2], comb)) == ["k1+k2", "k3", "k4"]
    assert comb.groups == [["k1", "k2"]]


def test_groups_are_per_function_and_arenas():
    """Launches merge when they run the same function on the same arenas (their integer
    arguments differ: the table holds them); float32 and float64 updates are two groups."""
    u0 = launch("k1", arenas=("S_float32", "T_float32"), writes=[("S_float32", 0, 4)], ints=(0, 4))
    v0 = launch("k2", arenas=("S_float64", "T_float64"), writes=[("S_float64", 0, 4)], ints=(0, 4))
    u1 = launch("k3", arenas=("S_float32", "T_float32"), writes=[("S_float32", 4, 8)], ints=(4, 4))
    v1 = launch("k4", arenas=("S_float64", "T_float64"), writes=[("S_float64", 4, 8)], ints=(4, 4))
    x = launch("k5", fn="other", arenas=("S_float32", "T_float32"), writes=[("S_float32", 8, 9)])
    comb = Combine()
    out = multi_tensor([u0, v0, u1, v1, x], comb)
    assert names(out) == ["k1+k3", "k2+k4", "k5"]
    assert comb.groups == [["k1", "k3"], ["k2", "k4"]]


def test_only_elementwise_kernel_launches_merge():
    """A launch without an elementwise loop's pieces (a reduction, a GEMM) or a cuBLAS call
    is never merged, however independent."""
    a = launch("k1", ew=False, writes=[("T_float32", 0, 4)])
    b = launch("k2", ew=False, writes=[("T_float32", 4, 8)])
    c = launch("k3", kind="cublas", writes=[("T_float32", 8, 12)])
    d = launch("k4", kind="cublas", writes=[("T_float32", 12, 16)])
    comb = Combine()
    assert names(multi_tensor([a, b, c, d], comb)) == ["k1", "k2", "k3", "k4"]
    assert comb.groups == []


# ---- one-element kernels folded into another launch ------------------------------------------------

class Fold:
    def __init__(self):
        self.calls = []

    def __call__(self, x, y, barrier):
        self.calls.append((x.name, y.name, barrier))
        return Launch("?", "kernel", y.function, y.grid, y.block, [], comment="")


T = ("S_float32", 100, 101)  # the step counter


def test_a_one_element_kernel_runs_in_the_last_launch_before_its_first_reader():
    t = launch("k0", fn="tiny", tiny=True, reads=[T], writes=[T], anchor=0)
    a = launch("k1", fn="a", writes=[("T_float32", 0, 4)], anchor=1)
    b = launch("k2", fn="b", writes=[("T_float32", 4, 8)], anchor=2)
    r = launch("k3", fn="r", reads=[T, ("T_float32", 0, 8)], writes=[("S_float32", 0, 8)], anchor=3)
    fold = Fold()
    out = fold_tiny([t, a, b, r], fold)
    assert fold.calls == [("k0", "k2", False)]
    assert names(out) == ["k1", "k0+k2", "k3"]
    h = out[1]
    assert h.merged == ("k0", "k2") and h.anchor == 2 and h.covers == {0, 2} and h.folds == 1
    assert h.reads == t.reads + b.reads and h.writes == t.writes + b.writes


def test_a_one_element_kernel_runs_first_in_a_softmax_ce_reader_behind_a_barrier():
    t = launch("k0", fn="tiny", tiny=True, reads=[T], writes=[T])
    a = launch("k1", fn="a", writes=[("T_float32", 0, 4)])
    s = launch("k2", fn="sce", tag="sce", reads=[T, ("T_float32", 0, 4)], writes=[("T_float32", 8, 9)])
    fold = Fold()
    assert names(fold_tiny([t, a, s], fold)) == ["k1", "k0+k2"]
    assert fold.calls == [("k0", "k2", True)]


def test_a_softmax_ce_launch_writing_what_it_touches_is_no_barrier_host():
    """A barrier orders a write before reads only: a host that also writes the counter is out."""
    t = launch("k0", fn="tiny", tiny=True, reads=[T], writes=[T])
    a = launch("k1", fn="a", writes=[("T_float32", 0, 4)])
    s = launch("k2", fn="sce", tag="sce", reads=[T], writes=[T])
    fold = Fold()
    assert names(fold_tiny([t, a, s], fold)) == ["k0+k1", "k2"]
    assert fold.calls == [("k0", "k1", False)]


def test_a_one_element_kernel_never_moves_past_a_launch_it_depends_on():
    t = launch("k0", fn="tiny", tiny=True, reads=[T], writes=[T])
    a = launch("k1", fn="a", writes=[("T_float32", 0, 4)])
    w = launch("k2", fn="w", reads=[T], writes=[("T_float32", 4, 8)])  # its first reader
    b = launch("k3", fn="b", writes=[("T_float32", 8, 12)])
    fold = Fold()
    assert names(fold_tiny([t, a, w, b], fold)) == ["k0+k1", "k2", "k3"]


def test_a_one_element_kernel_stays_when_nothing_can_host_it():
    """Its reader right after it (not one block), or only cuBLAS calls before its reader."""
    t = launch("k0", fn="tiny", tiny=True, reads=[T], writes=[T])
    r = launch("k1", fn="r", reads=[T], writes=[("T_float32", 0, 4)])
    c = launch("k2", kind="cublas", reads=[("T_float32", 8, 12)], writes=[("T_float32", 12, 16)])
    fold = Fold()
    assert names(fold_tiny([t, r], fold)) == ["k0", "k1"]
    assert names(fold_tiny([t, c, r], fold)) == ["k0", "k2", "k1"]
    assert fold.calls == []


def test_launches_that_are_not_one_element_kernels_are_not_folded():
    a = launch("k0", fn="a", writes=[("T_float32", 0, 4)])
    b = launch("k1", fn="b", writes=[("T_float32", 4, 8)])
    fold = Fold()
    assert names(fold_tiny([a, b], fold)) == ["k0", "k1"]
    assert fold.calls == []
