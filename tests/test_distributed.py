"""Data-parallel training over MPI (graphc/distributed.py).

The MPI tests run small ``mpirun -n 2`` jobs (tests/_distributed_jobs.py) in subprocesses,
each with a timeout and in its own process group, so nothing can hang the run. They need
mpi4py and an ``mpirun`` (``pip install -e ".[distributed]"``) and are skipped, with that
reason, without them. What the jobs assert:

- ``train``: after 3 Adam steps (global_clipnorm active) on 2 ranks, each feeding half of a
  batch of 12, params are bit-identical on both ranks and equal (float32 rounding) to one
  process training on the whole batch (target numpy); the returned loss is the whole
  batch's; params are rank 0's after creation although each rank used its own seed; and on
  the numpy target SGD(lr=1) moves params by exactly the full-batch gradient
  (sum over ranks of the shard gradients / 2 = the mean-loss gradient of the whole batch).
- ``mismatch``: rank 1 compiles a different graph -> GraphcError on every rank.
- ``raise_in_step`` / ``raise_outside``: rank 1 raises (a FeedError in a step, or an uncaught
  error in user code) while rank 0 waits in the all-reduce -> the job ends within seconds
  with a non-zero status and the error message.
- ``drift``: after creation, one rank sets a hyper-parameter or writes params, or every rank
  writes different params -> a GraphcError on every rank naming the ranks and values, raised
  before the update; the same write on every rank (a learning rate, a checkpoint) and
  ``broadcast()`` train on bit-identically; an uncaught one ends the job non-zero.
- ``nn_fit``: graphc.nn ``fit`` under mpirun (distributed automatically) gives one process's
  per-epoch losses, metrics and weights.
- ``examples/mlp.py --distributed`` under ``mpirun -n 2`` reaches one process's accuracy.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc import distributed as D

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "tests" / "_distributed_jobs.py"
try:
    import mpi4py  # noqa: F401
except ImportError:
    mpi4py = None
MPIRUN = shutil.which("mpirun") or shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(mpi4py is None or MPIRUN is None,
                               reason="needs mpi4py and mpirun: pip install -e '.[distributed]'")


def mpirun(job: str | list, n: int = 2, timeout: float = 150) -> tuple[int, str, float]:
    """(exit status, stdout + stderr, time the job ended) of ``mpirun -n n`` running ``job``
    (a job of tests/_distributed_jobs.py, or a script and its arguments)."""
    cmd = [MPIRUN, "-n", str(n)]
    version = subprocess.run([MPIRUN, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:
        cmd.append("--oversubscribe")  # 2 ranks on however few cores
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    script = [str(JOBS), job] if isinstance(job, str) else job
    p = subprocess.Popen(cmd + [sys.executable, *script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, cwd=ROOT, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f"mpirun {job} did not end within {timeout} s (a hang):\n{out[-4000:]}")
    return p.returncode, out, time.time()


@needs_mpi
def test_two_ranks_train_like_one_process_on_the_whole_batch():
    rc, out, _ = mpirun("train")
    assert rc == 0, out[-6000:]
    assert "train ok rank 0" in out and "train ok rank 1" in out, out[-6000:]


@needs_mpi
def test_nn_fit_under_mpirun_matches_one_process():
    rc, out, _ = mpirun("nn_fit")
    assert rc == 0, out[-6000:]
    assert "nn_fit ok rank 0" in out and "nn_fit ok rank 1" in out, out[-6000:]


@needs_mpi
def test_ranks_with_different_programs_fail_clearly():
    rc, out, _ = mpirun("mismatch")
    assert rc == 0, out[-6000:]
    assert "mismatch ok rank 0" in out and "mismatch ok rank 1" in out, out[-6000:]


@needs_mpi
def test_writes_on_some_ranks_are_refused_before_the_update():
    rc, out, _ = mpirun("drift")
    assert "drift ok rank 0" in out and "drift ok rank 1" in out, out[-6000:]
    # the last scenario is not caught: both ranks raise, the job ends non-zero with the message
    assert rc != 0, out[-6000:]
    assert "learning_rate" in out and "rank 1: 0.7" in out and "raised GraphcError" in out, out[-6000:]
    assert "finished a step" not in out, out[-6000:]


@needs_mpi
@pytest.mark.parametrize("job, error", [("raise_in_step", "FeedError"), ("raise_outside", "RuntimeError")])
def test_a_raising_rank_ends_every_rank(job, error):
    rc, out, ended = mpirun(job)
    assert rc != 0, out[-6000:]
    assert f"rank 1 of 2 raised {error}" in out and "aborting all ranks" in out, out[-6000:]
    raised = float(re.search(r"raising at ([0-9.]+)", out).group(1))
    assert ended - raised < 20, f"the job took {ended - raised:.1f} s to end after rank 1 raised"


@needs_mpi
def test_mlp_example_distributed_reaches_one_process_accuracy():
    pytest.importorskip("sklearn")
    rc, out, _ = mpirun(["examples/mlp.py", "--epochs", "3", "--distributed"])
    assert rc == 0, out[-6000:]
    assert "data-parallel over 2 MPI ranks" in out and out.count("final test accuracy") == 1, out  # rank 0 reports
    one = subprocess.run([sys.executable, "examples/mlp.py", "--epochs", "3"], cwd=ROOT, capture_output=True,
                         text=True, timeout=150, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    acc = [float(re.search(r"final test accuracy: ([0-9.]+)", o).group(1)) for o in (out, one.stdout)]
    # each rank takes half of every batch: the same updates as one process up to float32
    # rounding (the last batch of an epoch, 29 samples, splits 15/14 and is weighted 1/2 each)
    assert acc[0] >= 0.9 and abs(acc[0] - acc[1]) <= 0.01, acc


# ---- without mpirun -------------------------------------------------------------------------

def _loss():
    x = gc.input("x", (None, 3))
    y = gc.input("y", (None,), dtype="int64")
    return gc.softmax_cross_entropy(x @ gc.param("w", (3, 2)), y)


def test_shard_covers_every_sample_once_in_near_equal_parts():
    for n, size in [(12, 2), (29, 2), (7, 3), (2, 4)]:
        parts = [D.shard(n, r, size) for r in range(size)]
        idx = np.concatenate([np.arange(n)[s] for s in parts])
        assert idx.tolist() == list(range(n))
        lens = [s.stop - s.start for s in parts]
        assert max(lens) - min(lens) <= 1


def test_data_parallel_needs_an_optimizer_and_a_target_with_an_all_reduce():
    with pytest.raises(gc.GraphcError, match="needs an optimizer"):
        gc.compile(_loss(), data_parallel=True)
    with pytest.raises(gc.GraphcError, match=r"data_parallel=True is available on targets .*'cuda'"):
        gc.compile(_loss(), optimizer="sgd", target="cuda", data_parallel=True)


def test_without_mpi4py_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `from mpi4py import MPI` raises ImportError
    with pytest.raises(gc.GraphcError, match=r"pip install -e \"\.\[distributed\]\""):
        gc.compile(_loss(), optimizer="sgd", target="numpy", data_parallel=True)
