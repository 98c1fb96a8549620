"""Train a small CNN on handwritten digits: conv -> pool -> conv -> dense, one compiled step per batch.

    python examples/cnn.py                      # defaults: cpu target, reaches >= 0.985 test accuracy
    python examples/cnn.py --target numpy       # the reference interpreter: the same loss curve
    python examples/cnn.py --check              # numpy and the compiled target side by side for one
                                                # epoch: the largest loss/parameter difference

Data: scikit-learn's ``load_digits`` (1797 8x8 grey images, NHWC ``(n, 8, 8, 1)``), the same
stratified, seeded split as examples/mlp.py. The MLP reaches about 0.975; the convolutions
see that neighbouring pixels belong together, which a dense layer must learn from scratch.

Each ``gc.conv2d`` is im2col plus ONE GEMM (bias and relu run as that GEMM's epilogue), both
of its gradients are GEMMs too, and the whole step (forward, backward, Adam) is one native
call. ``step.kernels()`` lists the kernels; ``--kernels`` prints them.
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
        sys.exit("examples/cnn.py needs scikit-learn: pip install -e '.[examples]'")
    digits = load_digits()
    x = digits.images.astype(np.float64)[..., None] / 16.0  # (n, 8, 8, 1) in [0, 1]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    mean, std = x_tr.mean(), x_tr.std()
    return ((x_tr - mean) / std).astype(np.float32), y_tr, ((x_te - mean) / std).astype(np.float32), y_te


def build_model(filters: tuple[int, int], dense: int, classes: int = 10, dropout: float = 0.0):
    """conv3x3(same) -> relu -> maxpool2 -> conv3x3(same) -> relu -> maxpool2 -> dense -> logits
    (the training loss sees ``dropout`` on the dense layer's input; the logits for inference
    do not)."""
    x = gc.input("x", (None, 8, 8, 1))
    y = gc.input("y", (None,), dtype="int64")
    f1, f2 = filters
    K1 = gc.param("K1", (3, 3, 1, f1), init="he_normal")
    c1 = gc.param("c1", (f1,))
    K2 = gc.param("K2", (3, 3, f1, f2), init="he_normal")
    c2 = gc.param("c2", (f2,))
    h = gc.max_pool2d(gc.relu(gc.conv2d(x, K1, padding="same") + c1), 2)   # (None, 4, 4, f1)
    h = gc.max_pool2d(gc.relu(gc.conv2d(h, K2, padding="same") + c2), 2)   # (None, 2, 2, f2)
    h = gc.reshape(h, (-1, 4 * f2))
    W1 = gc.param("W1", (4 * f2, dense), init="he_normal")
    b1 = gc.param("b1", (dense,))
    W2 = gc.param("W2", (dense, classes), init="glorot_uniform")
    b2 = gc.param("b2", (classes,))

    def head(h):
        return gc.relu(h @ W1 + b1) @ W2 + b2
    # dropout masks are drawn inside the compiled step (keyed by its step counter): nothing to feed
    train_logits = head(gc.dropout(h, dropout, seed=1)) if dropout else head(h)
    return head(h), gc.softmax_cross_entropy(train_logits, y)


def batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def shifted(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image moved by up to one pixel in each direction (zeros shifted in): the cheap
    augmentation that keeps 8x8 digits recognizable and the CNN from memorizing positions."""
    out = np.full_like(x, x.min())
    n, h, w, _ = x.shape
    dy, dx = rng.integers(-1, 2, n), rng.integers(-1, 2, n)
    for sy in (-1, 0, 1):
        for sx in (-1, 0, 1):
            m = (dy == sy) & (dx == sx)
            src = x[m][:, max(-sy, 0):h - max(sy, 0), max(-sx, 0):w - max(sx, 0)]
            out[m, max(sy, 0):h - max(-sy, 0), max(sx, 0):w - max(-sx, 0)] = src
    return out


def accuracy(predict, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(x=x).argmax(axis=1) == y).mean())


def train(args, x_tr, y_tr, x_te, y_te) -> float:
    logits, loss = build_model(args.filters, args.dense, dropout=args.dropout)
    step = gc.compile(loss, optimizer=gc.optim.Adam(args.lr), target=args.target, seed=args.seed)
    predict = gc.compile(logits, params=step, target=args.target)
    n_params = sum(p.size for p in step.params.values())
    print(f"graphc {gc.__version__}: CNN conv{args.filters[0]}-pool-conv{args.filters[1]}-pool-{args.dense}-10 "
          f"({n_params} params), Adam(lr={args.lr}), batch {args.batch_size}, target {args.target!r}")
    print(f"data: load_digits as 8x8x1 images, {len(x_tr)} train / {len(x_te)} test (stratified, seed {args.seed})")
    rng = np.random.default_rng(args.seed)
    test_acc, t_start, step_time, steps, first = 0.0, time.perf_counter(), 0.0, 0, 0.0
    for epoch in range(1, args.epochs + 1):
        # cosine decay to 5% of lr: a hyper-parameter is an input of the step, so no recompiling
        step.optimizer.learning_rate = args.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / args.epochs)))
        total, seen, t0 = 0.0, 0, time.perf_counter()
        for idx in batches(len(x_tr), args.batch_size, rng):
            xb = shifted(x_tr[idx], rng) if args.augment else x_tr[idx]
            s0 = time.perf_counter()
            out = step(x=xb, y=y_tr[idx])
            dt = time.perf_counter() - s0
            if epoch == 1 and seen == 0:
                first = dt  # the first call compiles
            else:
                step_time, steps = step_time + dt, steps + 1
            total += float(out["loss"]) * len(idx)
            seen += len(idx)
        test_acc = accuracy(predict, x_te, y_te)
        print(f"epoch {epoch:3d}/{args.epochs}  loss {total / seen:.4f}  test acc {test_acc:.4f}  "
              f"{time.perf_counter() - t0:6.3f} s", flush=True)
    print(f"final test accuracy: {test_acc:.4f}")
    if steps:
        print(f"{1e6 * step_time / steps:.0f} us/step over {steps} steps (first call, which compiles: "
              f"{first:.2f} s); {time.perf_counter() - t_start:.2f} s in all")
    if args.kernels:
        print(step.kernels())
    return test_acc


def check(args, x_tr, y_tr) -> float:
    """The numpy interpreter and the compiled target in lock step from the same init."""
    target = args.target if args.target != "numpy" else "cpu"
    _, loss = build_model(args.filters, args.dense, dropout=args.dropout)
    ref = gc.compile(loss, optimizer=gc.optim.Adam(args.lr), target="numpy", seed=args.seed)
    step = gc.compile(loss, optimizer=gc.optim.Adam(args.lr), target=target, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    worst, n = 0.0, 0
    for idx in batches(len(x_tr), args.batch_size, rng):
        a = float(ref(x=x_tr[idx], y=y_tr[idx])["loss"])
        b = float(step(x=x_tr[idx], y=y_tr[idx])["loss"])
        worst, n = max(worst, abs(a - b) / max(1.0, abs(a))), n + 1
    pdiff = max(float(np.max(np.abs(ref.params[k] - step.params[k]))) for k in ref.params)
    tol = 1e-4
    print(f"check: numpy vs {target}, {n} steps (1 epoch): max loss difference {worst:.2e} (relative), "
          f"max parameter difference {pdiff:.2e} -> "
          f"{'same loss curve within float32 tolerance' if worst <= tol else 'DIFFERENT'} (tolerance {tol:g})")
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=("numpy", "cpu", "parallel"), default="cpu")
    ap.add_argument("--epochs", type=int, default=20, help="passes over the training set (default: 20)")
    ap.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default: 32)")
    ap.add_argument("--filters", type=lambda s: tuple(int(v) for v in s.split(",")), default=(32, 64),
                    help="filters of the two conv layers (default: 32,64)")
    ap.add_argument("--dense", type=int, default=128, help="width of the dense layer (default: 128)")
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: 2e-3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.25, help="dropout rate before the dense layer (default: 0.25)")
    ap.add_argument("--augment", action="store_true",
                    help="shift each training image by up to one pixel (default: off; dropout regularizes enough)")
    ap.add_argument("--kernels", action="store_true", help="print the compiled step's kernels at the end")
    ap.add_argument("--check", action="store_true",
                    help="instead of training: numpy vs the compiled target for one epoch")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or len(args.filters) != 2 or min(args.filters) < 1:
        ap.error("--epochs/--batch-size >= 1, --lr > 0, --filters two positive ints")
    x_tr, y_tr, x_te, y_te = load_data(args.seed)
    if args.check:
        return 0 if check(args, x_tr, y_tr) <= 1e-4 else 1
    train(args, x_tr, y_tr, x_te, y_te)
    return 0


if __name__ == "__main__":
    sys.exit(main())
