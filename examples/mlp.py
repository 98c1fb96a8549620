"""Train an MLP classifier on handwritten digits with one compiled graphc step per batch.

    python examples/mlp.py                      # defaults: cpu target, reaches >= 0.97 test accuracy
    python examples/mlp.py --target numpy       # the reference interpreter: the same loss curve
    python examples/mlp.py --check              # run numpy and the compiled target side by side
                                                # for one epoch and print the largest difference
    python examples/mlp.py --explain            # then where a step's time goes (step.explain())
    mpirun -n 2 python examples/mlp.py --distributed   # data-parallel over MPI: each rank takes
                                                # half of every batch; the same accuracy
                                                # (pip install -e ".[distributed]"; as root add
                                                # --allow-run-as-root, on few cores --oversubscribe)

Data: scikit-learn's bundled ``load_digits`` (1797 8x8 images, 10 classes, works offline;
``pip install -e ".[examples]"``). Features are standardized with the training split's
mean/std; the test split is stratified and seeded.

The model is written with graphc's DSL and compiled with ``gc.compile``: each call of the
step runs forward, backward and the Adam update as one native call. The batch dim is
``None``, so the last, partial batch of an epoch is just another (cached) specialization.
Every source of randomness (split, initialization, shuffling) follows ``--seed``, and the
parameter initialization does not depend on the target, so ``--target numpy`` reproduces
the compiled target's loss curve to float32 rounding.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import graphc as gc


def load_data(seed: int, test_size: float = 0.2):
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:  # pragma: no cover - depends on the environment
        sys.exit("examples/mlp.py needs scikit-learn: pip install -e '.[examples]'")
    digits = load_digits()
    x = digits.data.astype(np.float64)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0  # a few border pixels are always 0
    x_tr = ((x_tr - mean) / std).astype(np.float32)
    x_te = ((x_te - mean) / std).astype(np.float32)
    return x_tr, y_tr, x_te, y_te


def build_model(features: int, hidden: list[int], classes: int):
    """The MLP in graphc's DSL: returns (logits, loss) tensors."""
    x = gc.input("x", (None, features))
    y = gc.input("y", (None,), dtype="int64")
    h = x
    fan_in = features
    for i, width in enumerate(hidden, start=1):
        W = gc.param(f"W{i}", (fan_in, width), init="he_normal")
        b = gc.param(f"b{i}", (width,), init="zeros")
        h = gc.relu(h @ W + b)
        fan_in = width
    W = gc.param("W_out", (fan_in, classes), init="he_normal")
    b = gc.param("b_out", (classes,), init="zeros")
    logits = h @ W + b
    loss = gc.softmax_cross_entropy(logits, y)  # mean over the batch
    return logits, loss


def batches(n: int, batch_size: int, rng: np.random.Generator):
    """Shuffled index batches covering all n samples; the last one may be smaller."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def accuracy(predict, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(x=x).argmax(axis=1) == y).mean())


def parse_hidden(s: str) -> list[int]:
    try:
        widths = [int(w) for w in s.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden expects widths like 128 or 256,128, got {s!r}") from None
    if not widths or min(widths) <= 0:
        raise argparse.ArgumentTypeError(f"--hidden expects positive widths, got {s!r}")
    return widths


def train(args, x_tr, y_tr, x_te, y_te) -> float:
    logits, loss = build_model(x_tr.shape[1], args.hidden, 10)
    # --distributed: every rank shuffles alike (same seed) and takes its shard of each batch;
    # the step averages gradients and loss over the ranks (one MPI all-reduce per step), so
    # the training curve is one process's on the whole batch
    step = gc.compile(loss, optimizer=gc.optim.Adam(args.lr), target=args.target, seed=args.seed,
                      data_parallel=args.distributed)
    predict = gc.compile(logits, params=step, target=args.target)  # shares the step's weights
    if args.distributed:
        from graphc import distributed
        ranks, shard = distributed.size(), distributed.shard
    else:
        ranks, shard = 1, None
    # under mpirun rank 0 reports; the others train silently
    say = print if not args.distributed or distributed.rank() == 0 else (lambda *a, **k: None)
    n_params = sum(p.size for p in step.params.values())
    say(f"graphc {gc.__version__}: MLP {x_tr.shape[1]}-{'-'.join(map(str, args.hidden))}-10 "
          f"({n_params} params), Adam(lr={args.lr}), batch {args.batch_size}, target {args.target!r}"
          + (f", data-parallel over {ranks} MPI ranks ({args.batch_size // ranks} per rank)" if args.distributed else ""))
    say(f"data: load_digits, {len(x_tr)} train / {len(x_te)} test (stratified, seed {args.seed})")

    rng = np.random.default_rng(args.seed)
    first_call: dict[int, float] = {}  # batch size -> seconds of its first call (incl. compile)
    step_time = 0.0
    steps = 0
    t_start = time.perf_counter()
    test_acc = 0.0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        total, seen = 0.0, 0
        for idx in batches(len(x_tr), args.batch_size, rng):
            mine = idx[shard(len(idx))] if shard is not None else idx
            xb, yb = x_tr[mine], y_tr[mine]
            s0 = time.perf_counter()
            out = step(x=xb, y=yb)  # data-parallel: the loss of the whole batch
            dt = time.perf_counter() - s0
            if len(mine) in first_call or args.target == "numpy":
                step_time += dt
                steps += 1
            else:
                first_call[len(mine)] = dt
            total += float(out["loss"]) * len(idx)
            seen += len(idx)
        train_s = time.perf_counter() - t0
        train_acc = accuracy(predict, x_tr, y_tr)
        test_acc = accuracy(predict, x_te, y_te)
        say(f"epoch {epoch:3d}/{args.epochs}  loss {total / seen:.4f}  train acc {train_acc:.4f}  "
              f"test acc {test_acc:.4f}  {train_s:6.3f} s", flush=True)
    elapsed = time.perf_counter() - t_start
    say(f"final test accuracy: {test_acc:.4f}")
    if steps:
        say(f"{steps / step_time:,.0f} steps/second ({1e6 * step_time / steps:.0f} us/step over {steps} steps; "
              f"first call of each batch size {sorted(first_call)} excluded, it compiles: "
              f"{sum(first_call.values()):.2f} s); {elapsed:.2f} s in all")
    if args.target != "numpy":
        say("`--target numpy` (the reference interpreter) gives the same loss curve for the same seed, "
            "within float32 rounding; `--check` verifies it.")
    if args.explain:  # where a step's time goes, kernel by kernel, against this machine's roofs
        say("")
        rep = step.explain(x=x_tr[:args.batch_size], y=y_tr[:args.batch_size])
        if args.roofline:
            say(f"roofline picture: {rep.plot(args.roofline)}")
    return test_acc


def check(args, x_tr, y_tr) -> float:
    """Run the numpy interpreter and the compiled target in lock step from the same init."""
    target = args.target if args.target != "numpy" else "cpu"
    _, loss = build_model(x_tr.shape[1], args.hidden, 10)
    ref = gc.compile(loss, optimizer=gc.optim.Adam(args.lr), target="numpy", seed=args.seed)
    step = gc.compile(loss, optimizer=gc.optim.Adam(args.lr), target=target, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    worst = 0.0
    n = 0
    epochs = max(1, min(args.epochs, 2))
    for epoch in range(epochs):
        for idx in batches(len(x_tr), args.batch_size, rng):
            a = float(ref(x=x_tr[idx], y=y_tr[idx])["loss"])
            b = float(step(x=x_tr[idx], y=y_tr[idx])["loss"])
            worst = max(worst, abs(a - b) / max(1.0, abs(a)))
            n += 1
    pdiff = max(float(np.max(np.abs(ref.params[k] - step.params[k]))) for k in ref.params)
    tol = 1e-4
    verdict = "same loss curve within float32 tolerance" if worst <= tol else "DIFFERENT"
    print(f"check: numpy vs {target}, {n} steps ({epochs} epoch(s)): max loss difference {worst:.2e} "
          f"(relative), max parameter difference {pdiff:.2e} -> {verdict} (tolerance {tol:g})")
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=("numpy", "cpu", "parallel"), default="cpu",
                    help="graphc target (default: cpu)")
    ap.add_argument("--epochs", type=int, default=20, help="passes over the training set (default: 20)")
    ap.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default: 32)")
    ap.add_argument("--hidden", type=parse_hidden, default=[128],
                    help="hidden layer widths, comma-separated (default: 128)")
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: 2e-3)")
    ap.add_argument("--seed", type=int, default=0, help="seed for split, init and shuffling (default: 0)")
    ap.add_argument("--check", action="store_true",
                    help="instead of training: run --target numpy and the compiled target side by side "
                         "for up to 2 epochs and print the largest loss/parameter difference")
    ap.add_argument("--distributed", action="store_true",
                    help="data-parallel training over MPI: run under mpirun -n N (each rank takes 1/N of "
                         "every batch; needs the distributed extra)")
    ap.add_argument("--explain", action="store_true",
                    help="after training, print step.explain(): per-kernel time, FLOPs, bytes and roofline bound")
    ap.add_argument("--roofline", metavar="PNG", help="with --explain: also draw the roofline picture (matplotlib)")
    args = ap.parse_args(argv)
    if args.explain and args.distributed:
        ap.error("--explain profiles one process's step; run it without --distributed")
    if args.distributed and args.check:
        ap.error("--check compares one process's targets; run it without --distributed")
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        ap.error("--epochs and --batch-size must be >= 1 and --lr > 0")

    x_tr, y_tr, x_te, y_te = load_data(args.seed)
    if args.check:
        return 0 if check(args, x_tr, y_tr) <= 1e-4 else 1
    train(args, x_tr, y_tr, x_te, y_te)
    return 0


if __name__ == "__main__":
    sys.exit(main())
