"""graphc.nn ``fit`` per epoch against its floor: batches x the raw compiled step.

The model and data of examples/keras_style.py (Dense 10-10-1, MSE, Adam, 1600 samples,
batch 32: 50 batches per epoch). Contenders, each in a process of its own:

- ``fit K=1`` / ``fit K=8`` / ``fit K=32``: ``model.fit(x, y, epochs=10, verbose=0)`` after
  ``compile(steps_per_execution=K)``, divided by 10: the time of one epoch (shuffling,
  batching, callbacks, the History, the calls; fit's one-off data checks spread over 10);
- ``raw step``: the model's compiled training step (``model.train_function``) called once per
  batch on pre-sliced batches, x 50: the epoch's floor as graphc runs it one step per call.

Rounds alternate between the workers (the starting one rotating); medians and minima over
the rounds. Each worker warms up (compiles) before the first round.

    python benchmarks/bench_fit.py [--rounds 30]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("raw step", "fit K=1", "fit K=8", "fit K=32")
EPOCHS = 10  # epochs per fit call


def _model(k: int):
    sys.path.insert(0, str(ROOT / "examples"))
    from keras_style import synthetic_regression
    from graphc.nn import Dense, Sequential
    from graphc.nn.optimizers import Adam
    x, y = synthetic_regression()
    model = Sequential([Dense(10, activation="relu", input_shape=(10,)), Dense(10, activation="relu"), Dense(1)])
    model.compile(optimizer=Adam(learning_rate=0.01), loss="mse", metrics=["accuracy"], steps_per_execution=k)
    return model, x[:1600], y[:1600]


def worker(name: str) -> None:
    model, x, y = _model(int(name.rpartition("=")[2]) if "K=" in name else 1)
    if name == "raw step":
        step = model.train_function
        names = step.input_names
        batches = [dict(zip(names, (x[i:i + 32], y[i:i + 32].reshape(-1, 1)))) for i in range(0, 1600, 32)]

        def epoch():
            for b in batches:
                step(**b)
    else:
        def epoch():
            model.fit(x, y, batch_size=32, epochs=EPOCHS, verbose=0)
    epoch()
    epoch()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0 = time.perf_counter()
        epoch()
        print(json.dumps((time.perf_counter() - t0) / (1 if name == "raw step" else EPOCHS)), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)
    procs = {}
    for n in CONTENDERS:
        p = subprocess.Popen([sys.executable, __file__, "--worker", n], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert p.stdout.readline().strip() == "ready", n
        procs[n] = p
    times = {n: [] for n in CONTENDERS}
    loads = []
    for r in range(args.rounds):
        order = CONTENDERS[r % len(CONTENDERS):] + CONTENDERS[:r % len(CONTENDERS)]
        for n in order:
            procs[n].stdin.write("run\n")
            procs[n].stdin.flush()
            times[n].append(json.loads(procs[n].stdout.readline()))
        loads.append(os.getloadavg()[0])
    for p in procs.values():
        p.stdin.write("quit\n")
        p.stdin.flush()
        p.wait()
    raw = np.median(times["raw step"])
    print(f"keras_style model, 50 batches of 32 per epoch; {args.rounds} rounds, load average "
          f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")
    print(f"{'contender':<10} {'median ms/epoch':>16} {'min':>8} {'x raw':>7}")
    for n in CONTENDERS:
        med = np.median(times[n])
        print(f"{n:<10} {med * 1e3:16.2f} {min(times[n]) * 1e3:8.2f} {med / raw:7.2f}")


if __name__ == "__main__":
    main()
