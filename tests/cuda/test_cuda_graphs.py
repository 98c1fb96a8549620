"""CUDA-graph replay of the whole step (graphc/backends/cuda/graphs.py).

Under the simulator: asking for graphs falls back to plain launches, says why in
``step.kernels()`` and gives the numpy target's results; and the capture/replay state machine
(capture once after a plain first step, replay, capture again after a re-bind, fall back on a
driver error without losing or repeating a step) runs against a recording stand-in for the
CUDA driver. On a real device: replay equals plain launches over several steps and the
replay path ran.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda import graphs
from graphc.backends.cuda.compat import simulator_active
from graphc.errors import GraphcError

FEAT, HID, CLS, BATCH = 6, 5, 3, 4


def mlp():
    x = gc.input("x", (None, FEAT))
    y = gc.input("y", (None,), dtype="int64")
    W1 = gc.param("W1", (FEAT, HID), init="he_normal"); b1 = gc.param("b1", (HID,))
    W2 = gc.param("W2", (HID, CLS), init="he_normal"); b2 = gc.param("b2", (CLS,))
    return gc.softmax_cross_entropy(gc.relu(x @ W1 + b1) @ W2 + b2, y)


def batch(seed, n=BATCH):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, FEAT)).astype("float32"), rng.integers(0, CLS, n)


def _close(a, b, rtol=2e-5):
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=rtol, err_msg=k)


def _replay(step):
    return step.program_for(BATCH)._replay


def test_cuda_graphs_needs_the_cuda_target():
    with pytest.raises(GraphcError, match="cuda_graphs=True needs target='cuda'"):
        gc.compile(mlp(), optimizer=gc.optim.Adam(1e-2), target="cpu", cuda_graphs=True)


@pytest.mark.skipif(not simulator_active(), reason="the fallback reason checked here is the simulator's")
@pytest.mark.parametrize("how", ["option", "env"])
def test_simulator_falls_back_to_plain_launches_and_says_why(how, monkeypatch):
    loss = mlp()
    ref = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="numpy")
    if how == "env":
        monkeypatch.setenv(graphs.ENV, "1")
        step = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cuda")
    else:
        step = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cuda", cuda_graphs=True)
    for i in range(3):
        xb, yb = batch(i)
        np.testing.assert_allclose(step(x=xb, y=yb)["loss"], ref(x=xb, y=yb)["loss"], rtol=2e-5)
    _close(step.params, ref.params)
    listing = step.kernels()
    assert "step path: plain launches (the CUDA simulator" in listing, listing
    r = _replay(step)
    assert r is not None and not r.active and r.replays == 0 and r.plain_steps == 3


def test_not_requested_says_so(monkeypatch):
    monkeypatch.delenv(graphs.ENV, raising=False)
    step = gc.compile(mlp(), optimizer="sgd", target="cuda")
    step(x=batch(0)[0], y=batch(0)[1])
    assert _replay(step) is None
    assert "step path: plain launches (CUDA graphs not requested" in step.kernels()


def test_preflight_names_what_stops_a_capture(monkeypatch):
    monkeypatch.setattr(graphs, "simulator_active", lambda: False)
    monkeypatch.delenv("NUMBA_CUDA_PER_THREAD_DEFAULT_STREAM", raising=False)
    monkeypatch.delenv("CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM", raising=False)
    assert "refuses cuBLAS calls during a stream capture" in graphs._unavailable("cublas")
    monkeypatch.setenv("NUMBA_CUDA_PER_THREAD_DEFAULT_STREAM", "1")
    assert "NUMBA_CUDA_PER_THREAD_DEFAULT_STREAM is set" in graphs._unavailable("auto")
    monkeypatch.delenv("NUMBA_CUDA_PER_THREAD_DEFAULT_STREAM")

    def missing():
        raise ImportError("No module named 'cuda.bindings'")
    monkeypatch.setattr(graphs, "_driver", missing)
    assert graphs._unavailable("auto") == "cuda-bindings is not importable (ImportError: No module named 'cuda.bindings')"


# ---- the state machine against a recording stand-in for cuda.bindings.driver ---------------------

class FakeDriver:
    """Records what is issued between begin and end of a capture as the 'graph' and issues it
    again, for real (on the simulator), at every cuGraphLaunch."""

    class CUresult:
        CUDA_SUCCESS = 0
        CUDA_ERROR_FAKE = 999

    class CUstreamCaptureMode:
        CU_STREAM_CAPTURE_MODE_RELAXED = 2

    def __init__(self, real_issue):
        self.real_issue = real_issue
        self.capturing = None
        self.begins = self.launches = self.destroyed = 0
        self.fail = set()  # names of calls that return CUDA_ERROR_FAKE

    def _rc(self, name):
        return self.CUresult.CUDA_ERROR_FAKE if name in self.fail else 0

    def CUstream(self, h):  # noqa: N802 - the driver's names
        return h

    def cuStreamBeginCapture(self, h, mode):  # noqa: N802
        assert mode == 2
        self.begins += 1
        self.capturing = []
        return (0,)

    def cuStreamEndCapture(self, h):  # noqa: N802
        g, self.capturing = self.capturing, None
        return (self._rc("end"), g)

    def cuGraphInstantiate(self, g, flags):  # noqa: N802
        return (self._rc("instantiate"), ("exec", g))

    def cuGraphGetNodes(self, g, n):  # noqa: N802
        return (0, None, sum(len(calls) + len(copies) for calls, copies in g))

    def cuGraphLaunch(self, ex, h):  # noqa: N802
        if "launch" in self.fail:
            return (self.CUresult.CUDA_ERROR_FAKE,)
        for calls, copies in ex[1]:
            self.real_issue(calls, copies, 0)
        self.launches += 1
        return (0,)

    def cuStreamSynchronize(self, h):  # noqa: N802
        return (0,)

    def cuGraphExecDestroy(self, ex):  # noqa: N802
        self.destroyed += 1
        return (0,)

    def cuGraphDestroy(self, g):  # noqa: N802
        return (0,)

    def cuGetErrorName(self, code):  # noqa: N802
        return (0, b"CUDA_ERROR_FAKE")


@pytest.fixture
def fake(monkeypatch):
    if not simulator_active():
        pytest.skip("the recording stand-in for the CUDA driver is for the simulator; a real device "
                    "runs test_replay_equals_plain_launches_on_a_device instead")
    real_issue = graphs._issue
    drv = FakeDriver(real_issue)

    def issue(calls, copies, stream):
        if drv.capturing is not None:  # inside a capture: record, run nothing
            drv.capturing.append((calls, copies))
        else:
            real_issue(calls, copies, stream)
    monkeypatch.setattr(graphs, "_issue", issue)
    monkeypatch.setattr(graphs, "_driver", lambda: drv)
    monkeypatch.setattr(graphs, "_unavailable", lambda gemm: None)
    monkeypatch.setattr(graphs, "_handle", lambda cu, stream: "stream")
    return drv


def test_capture_once_replay_and_recapture_after_a_rebind(fake):
    loss = mlp()
    ref = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="numpy")
    step = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cuda", cuda_graphs=True)
    assert "graph pending" in step.kernels(batch=BATCH)  # compiled, nothing run yet
    for i in range(4):
        xb, yb = batch(i)
        np.testing.assert_allclose(step(x=xb, y=yb)["loss"], ref(x=xb, y=yb)["loss"], rtol=2e-5)
    _close(step.params, ref.params)
    r = _replay(step)
    # step 1 plain (loads the kernels), step 2 captures, steps 2-4 replay the one graph
    assert (r.plain_steps, fake.begins, r.captures, r.replays, fake.launches) == (1, 1, 1, 3, 3)
    assert "GEMMs: numba.cuda fallback GEMM (capturable" in step.kernels()
    prog = step.program_for(BATCH)
    n = len(prog._calls) + len(prog._copies)  # kernels and deferred store copies: the graph's nodes
    assert f"step path: replay: CUDA graph of {n} launches" in step.kernels(), step.kernels()

    # host writes reach the device in place: the same graph stays valid
    new = {k: np.full_like(v, 0.01) for k, v in step.params.items()}
    step.set_params(new); ref.set_params(new)
    xb, yb = batch(5)
    np.testing.assert_allclose(step(x=xb, y=yb)["loss"], ref(x=xb, y=yb)["loss"], rtol=2e-5)
    assert r.captures == 1

    # a hyper-parameter is a kernel argument: the program re-binds, the graph is captured again
    step.optimizer.lr = 0.1; ref.optimizer.lr = 0.1
    for i in (6, 7):
        xb, yb = batch(i)
        np.testing.assert_allclose(step(x=xb, y=yb)["loss"], ref(x=xb, y=yb)["loss"], rtol=2e-5)
    _close(step.params, ref.params, rtol=5e-5)
    assert (r.captures, r.replays, fake.destroyed) == (2, 6, 1)
    _close(step.state_dict()["state"], ref.state_dict()["state"], rtol=5e-5)


def _train_state_cycle():
    """State updates that form a cycle (a <- b, b <- a + x) end in device copies after the
    kernels; 4 steps of it on cuda (with CUDA graphs) against numpy. Returns (f, ref)."""
    x = gc.input("x", (3,))
    a = gc.state("a", (3,), init="ones"); b = gc.state("b", (3,), init="zeros")
    out = gc.sum(x * a + b)
    ups = {a: b, b: a + x}
    ref = gc.compile(out, target="numpy", updates=ups)
    f = gc.compile(out, target="cuda", updates=ups, cuda_graphs=True)
    for i in range(4):
        xb = np.arange(3, dtype="float32") + i
        np.testing.assert_allclose(f(x=xb), ref(x=xb), rtol=2e-5)
    return f, ref


def test_deferred_store_copies_are_captured_too(fake):
    """State updates that form a cycle end in device copies after the kernels: part of the graph."""
    f, ref = _train_state_cycle()
    prog = f.program_for(None)
    r = prog._replay
    assert prog.launches_per_step()["memcpy_d2d"] > 0 and r.replays == 3 and r.captures == 1
    assert r.nodes == len(prog._calls) + len(prog._copies)
    _close(f.state_dict()["state"], ref.state_dict()["state"])


@pytest.mark.parametrize("where", ["end", "instantiate", "launch"])
def test_a_driver_error_falls_back_without_losing_or_repeating_a_step(fake, where):
    fake.fail.add(where)
    loss = mlp()
    ref = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="numpy")
    step = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cuda", cuda_graphs=True)
    for i in range(3):
        xb, yb = batch(i)
        np.testing.assert_allclose(step(x=xb, y=yb)["loss"], ref(x=xb, y=yb)["loss"], rtol=2e-5)
    _close(step.params, ref.params)
    _close(step.state_dict()["state"], ref.state_dict()["state"])  # the step counter: no step ran twice
    r = _replay(step)
    assert not r.active and r.replays == 0 and r.plain_steps == 3 and fake.begins == 1
    listing = step.kernels()
    assert "step path: plain launches (graph capture/replay failed" in listing, listing
    assert "CUDA_ERROR_FAKE" in listing


def test_a_launch_raising_inside_the_capture_ends_it_and_falls_back(fake, monkeypatch):
    boom = {"armed": True}
    recording = graphs._issue

    def issue(calls, copies, stream):
        if fake.capturing is not None and boom["armed"]:
            raise RuntimeError("launch refused while capturing")
        recording(calls, copies, stream)
    monkeypatch.setattr(graphs, "_issue", issue)
    loss = mlp()
    ref = gc.compile(loss, optimizer="sgd", target="numpy")
    step = gc.compile(loss, optimizer="sgd", target="cuda", cuda_graphs=True)
    for i in range(2):
        xb, yb = batch(i)
        np.testing.assert_allclose(step(x=xb, y=yb)["loss"], ref(x=xb, y=yb)["loss"], rtol=2e-5)
    _close(step.params, ref.params)
    assert fake.capturing is None  # the capture was ended
    assert "launch refused while capturing" in step.kernels()


# ---- a real device ------------------------------------------------------------------------------------

@pytest.mark.skipif(simulator_active(), reason="needs a real CUDA device: the simulator cannot capture CUDA graphs")
def test_replay_equals_plain_launches_on_a_device():
    loss = mlp()
    plain = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cuda", seed=1)
    replay = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="cuda", seed=1, cuda_graphs=True)
    ref = gc.compile(loss, optimizer=gc.optim.Adam(1e-2), target="numpy", seed=1)
    for i in range(6):
        if i == 4:  # a re-bind in the middle: captured again
            plain.optimizer.lr = replay.optimizer.lr = ref.optimizer.lr = 0.05
        xb, yb = batch(i)
        a, b, c = replay(x=xb, y=yb)["loss"], plain(x=xb, y=yb)["loss"], ref(x=xb, y=yb)["loss"]
        np.testing.assert_allclose(a, b, rtol=2e-5)
        np.testing.assert_allclose(a, c, rtol=2e-5)
    _close(replay.params, plain.params, rtol=5e-5)
    _close(replay.state_dict()["state"], plain.state_dict()["state"], rtol=5e-5)
    r = _replay(replay)
    listing = replay.kernels()
    assert r.active, listing  # shows the reason if capture failed
    assert "step path: replay: CUDA graph of" in listing, listing
    assert r.plain_steps == 1 and r.captures == 2 and r.replays == 5, listing


@pytest.mark.skipif(simulator_active(), reason="needs a real CUDA device: the simulator cannot capture CUDA graphs")
def test_replay_captures_deferred_store_copies_on_a_device():
    f, ref = _train_state_cycle()
    _close(f.state_dict()["state"], ref.state_dict()["state"])
    prog = f.program_for(None)
    assert prog.launches_per_step()["memcpy_d2d"] > 0
    assert prog._replay.replays == 3, f.kernels()
