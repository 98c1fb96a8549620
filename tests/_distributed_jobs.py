"""MPI jobs run by tests/test_distributed.py: ``mpirun -n 2 python tests/_distributed_jobs.py JOB``.

Each job asserts on every rank; a failed assertion is an uncaught exception, which graphc's
data-parallel excepthook turns into MPI_Abort (a non-zero exit of the whole job). A job that
passes prints ``JOB ok rank R``.
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc import distributed as D

F, C, H = 6, 3, 5  # features, classes, hidden width
GLOBAL_BATCH = 12


def model(hidden: int = H):
    x = gc.input("x", (None, F))
    y = gc.input("y", (None,), dtype="int64")
    w1 = gc.param("w1", (F, hidden), init="glorot_uniform")
    b1 = gc.param("b1", (hidden,), init="uniform")
    w2 = gc.param("w2", (hidden, C), init="glorot_uniform")
    b2 = gc.param("b2", (C,), init="zeros")
    return gc.softmax_cross_entropy(gc.tanh(x @ w1 + b1) @ w2 + b2, y)  # the mean over the batch


def data(step: int):
    rng = np.random.default_rng(100 + step)
    return rng.normal(size=(GLOBAL_BATCH, F)).astype(np.float32), rng.integers(0, C, GLOBAL_BATCH)


def gathered(values: dict) -> list[dict]:
    return D.world().allgather(values)


def train() -> None:
    comm = D.world()
    r = comm.Get_rank()
    loss = model()
    mine = D.shard(GLOBAL_BATCH)
    # Adam with global_clipnorm small enough to clip: the norm must be the averaged gradient's
    opt = gc.optim.Adam(0.05, global_clipnorm=0.1)
    step = gc.compile(loss, optimizer=opt, target="cpu", data_parallel=True, seed=r)  # seeds differ per rank
    start = step.state_dict()
    for other in gathered(start["params"]):  # broadcast from rank 0 at creation
        for k, v in other.items():
            assert np.array_equal(v, start["params"][k]), k
    ref = gc.compile(loss, optimizer=gc.optim.Adam(0.05, global_clipnorm=0.1), target="numpy",
                     params={**start["params"], **start["state"]})
    for t in range(3):
        x, y = data(t)
        # positional feeds (declaration order) on one step: the same call on every rank
        out = step(x[mine], y[mine]) if t == 1 else step(x=x[mine], y=y[mine])
        want = ref(x=x, y=y)  # one process, the concatenated (global) batch
        # the returned loss is the global batch's: the mean over ranks of the shard means
        np.testing.assert_allclose(out["loss"], want["loss"], rtol=1e-5)
    params = step.params
    for other in gathered(params):  # bit-identical on every rank
        for k in params:
            assert np.array_equal(other[k], params[k]), k
    for k, v in ref.params.items():  # equal to one process on the global batch (float32 rounding)
        np.testing.assert_allclose(params[k], v, rtol=2e-5, atol=2e-6, err_msg=k)
    assert step.iterations == 3 and ref.iterations == 3

    # the gradient itself, on the numpy target (its all-reduce is mpi4py's): SGD with
    # learning rate 1 moves every param by minus the gradient, which must be the full
    # batch's gradient: sum over the ranks of the shard gradients / 2
    sgd = gc.compile(loss, optimizer=gc.optim.SGD(1.0), target="numpy", data_parallel=True, seed=r)
    p0 = sgd.params
    x, y = data(7)
    sgd(x=x[mine], y=y[mine])
    names = sorted(p0)
    nodes = {n.name: n for n in sgd.graph.nodes if n.op == "param"}
    full = gc.evaluate(gc.grad(loss, [nodes[k] for k in names]), {"x": x, "y": y}, p0)
    for k, g in zip(names, full):
        np.testing.assert_allclose(p0[k] - sgd.params[k], g, rtol=1e-5, atol=1e-6, err_msg=k)
    print(f"train ok rank {r}", flush=True)


def mismatch() -> None:
    r = D.rank()
    try:  # rank 1 builds a wider hidden layer: the programs differ
        gc.compile(model(H + r), optimizer=gc.optim.SGD(0.1), target="numpy", data_parallel=True)
    except gc.GraphcError as e:
        assert "different programs" in str(e), e
        print(f"mismatch ok rank {r}", flush=True)
        return
    raise AssertionError("no error for different programs")


def raise_in_step() -> None:
    r = D.rank()
    step = gc.compile(model(), optimizer=gc.optim.SGD(0.1), target="cpu", data_parallel=True)
    mine = D.shard(GLOBAL_BATCH)
    for t in range(3):
        x, y = data(t)
        y = y[mine]
        if r == 1 and t == 1:
            y = y + 100  # out-of-range labels: a FeedError on this rank only
            print(f"raising at {time.time():.3f}", flush=True)
        step(x=x[mine], y=y)  # rank 0 waits in the all-reduce of step 1 until rank 1 aborts
    raise AssertionError(f"rank {r} finished although rank 1 raised")


def raise_outside() -> None:
    r = D.rank()
    step = gc.compile(model(), optimizer=gc.optim.SGD(0.1), target="cpu", data_parallel=True)
    mine = D.shard(GLOBAL_BATCH)
    for t in range(3):
        if r == 1 and t == 1:
            print(f"raising at {time.time():.3f}", flush=True)
            raise RuntimeError("boom: rank 1's data loader failed")  # uncaught, outside any step
        x, y = data(t)
        step(x=x[mine], y=y[mine])
    raise AssertionError(f"rank {r} finished although rank 1 raised")


def nn_fit() -> None:
    """graphc.nn fit under mpirun: each global batch split between the ranks (equal shards),
    the same weights and per-epoch losses as one process fitting the whole data."""
    from graphc import nn
    r = D.rank()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(48, F)).astype(np.float32)
    y = rng.integers(0, C, 48)

    def make():
        m = nn.Sequential([nn.Input((F,)), nn.Dense(H, activation="tanh"), nn.Dense(C)])
        m.compile(optimizer=gc.optim.SGD(0.1), loss=nn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], seed=3)
        return m
    dist, one = make(), make()
    h = dist.fit(x, y, batch_size=12, epochs=3, verbose=0)  # distributed: automatic under mpirun
    h1 = one.fit(x, y, batch_size=12, epochs=3, verbose=0, distributed=False)
    np.testing.assert_allclose(h.history["loss"], h1.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(h.history["accuracy"], h1.history["accuracy"], rtol=1e-6)
    for a, b in zip(dist.get_weights(), one.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    for other in gathered({"w": dist.get_weights()[0]}):
        assert np.array_equal(other["w"], dist.get_weights()[0])
    print(f"nn_fit ok rank {r}", flush=True)


def drift() -> None:
    """Writes after creation that would make the ranks drift apart: a GraphcError on every
    rank, raised before the update (params and step counter as they were); the same write on
    every rank trains on. Ends with rank 1 changing the learning rate and not catching the
    error: the job must end with that message and a non-zero status."""
    r = D.rank()
    step = gc.compile(model(), optimizer=gc.optim.Adam(0.05), target="cpu", data_parallel=True)
    mine = D.shard(GLOBAL_BATCH)

    def run(t):
        x, y = data(t)
        return step(x=x[mine], y=y[mine])

    def identical():
        params = step.params
        for other in gathered(params):
            for k in params:
                assert np.array_equal(other[k], params[k]), k

    def refused(t, *needles):
        before, it = step.state_dict(), step.iterations
        try:
            run(t)
        except gc.GraphcError as e:
            for n in needles:
                assert n in str(e), (n, str(e))
            after = step.state_dict()  # nothing ran: not half an update
            for sec in ("params", "state"):
                for k, v in before[sec].items():
                    assert np.array_equal(after[sec][k], v), (sec, k)
            assert step.iterations == it
            return str(e)
        raise AssertionError(f"rank {r}: no error for {needles}")

    run(0)
    # one rank changes a hyper-parameter: the error names it, the rank and both values
    if r == 1:
        step.optimizer.learning_rate = 0.5
    refused(1, "learning_rate", "rank 1: 0.5", "rank 0: 0.05")
    step.optimizer.learning_rate = 0.05
    run(1)
    identical()
    # every rank sets the same value: trains on, identical
    step.optimizer.learning_rate = 0.02
    run(2)
    identical()
    # one rank writes params: the error names the rank, the method family and the param
    if r == 1:
        step.set_params({"b2": np.ones(C, np.float32)})
    refused(3, "rank 1", "set_params", "'b2'")
    step.broadcast()  # rank 0's params on every rank again
    run(3)
    identical()
    # every rank loads the same state (a checkpoint): trains on, identical
    sd = gathered(step.state_dict())[0]
    step.load_state_dict(sd)
    run(4)
    identical()
    # every rank writes, but different values (each its own initialization): caught by content
    step.set_params({"w2": np.full((H, C), float(r), np.float32)})
    refused(5, "'w2'", "rank 1")
    # rank 0 loads a checkpoint, then broadcasts it (Horovod's idiom): trains on, identical
    if r == 0:
        step.load_state_dict(sd)
    step.broadcast()
    run(5)
    identical()
    assert step.iterations == 5
    print(f"drift ok rank {r}", flush=True)
    if r == 1:
        step.optimizer.learning_rate = 0.7
    run(6)  # uncaught GraphcError on both ranks
    raise AssertionError(f"rank {r} finished a step although rank 1 changed the learning rate")


if __name__ == "__main__":
    {"train": train, "mismatch": mismatch, "raise_in_step": raise_in_step,
     "raise_outside": raise_outside, "nn_fit": nn_fit, "drift": drift}[sys.argv[1]]()
