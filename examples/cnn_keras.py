"""The digits CNN of examples/cnn.py, written with graphc.nn as a Keras user writes it.

    python examples/cnn_keras.py                     # defaults: cpu target, >= 0.985 test accuracy
    python examples/cnn_keras.py --target numpy      # the reference interpreter
    python examples/cnn_keras.py --plot curves.png   # also save the training curves

Data: scikit-learn's ``load_digits`` as 8x8x1 images scaled to [0, 1] and standardized,
a stratified 80/20 split (seed 0), as examples/cnn.py. The model is Keras' classic
Conv2D(32) -> MaxPooling2D -> Conv2D(64) -> MaxPooling2D -> Flatten -> Dense(128) -> Dense(10)
with Keras' default initializers and a BatchNormalization after each convolution (batch
statistics in training, moving statistics in evaluate/predict; ``--no-batchnorm`` drops
them: 0.983 instead of 0.989 on this split, since examples/cnn.py's random-shift
augmentation is not used here), trained with Adam and a cosine learning-rate decay (a
LearningRateScheduler callback). The model code is what Keras takes; only the imports
differ. Each fit() batch runs ONE compiled graphc step (forward, backward, Adam, metrics);
each Conv2D is im2col plus one GEMM with bias and relu in its epilogue.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from graphc.nn import (BatchNormalization, Conv2D, Dense, Flatten, Input, LearningRateScheduler, MaxPooling2D,
                       Sequential)
from graphc.nn.losses import SparseCategoricalCrossentropy
from graphc.nn.optimizers import Adam


def load_data(seed: int = 0, test_size: float = 0.2):
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:  # pragma: no cover - depends on the environment
        sys.exit("examples/cnn_keras.py needs scikit-learn: pip install -e '.[examples]'")
    digits = load_digits()
    x = digits.images.astype(np.float64)[..., None] / 16.0  # (n, 8, 8, 1) in [0, 1]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    mean, std = x_tr.mean(), x_tr.std()
    return ((x_tr - mean) / std).astype(np.float32), y_tr, ((x_te - mean) / std).astype(np.float32), y_te


def build_model(filters: tuple[int, int] = (32, 64), dense: int = 128, batchnorm: bool = True) -> Sequential:
    model = Sequential([Input(shape=(8, 8, 1))], name="digits_cnn")
    for f in filters:
        model.add(Conv2D(f, 3, padding="same", activation="relu"))
        if batchnorm:
            model.add(BatchNormalization())
        model.add(MaxPooling2D())
    model.add(Flatten())
    model.add(Dense(dense, activation="relu"))
    model.add(Dense(10))  # logits
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default=None, help="graphc target: cpu (default), parallel, numpy, cuda")
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--filters", type=lambda s: tuple(int(v) for v in s.split(",")), default=(32, 64),
                    help="filters of the two Conv2D layers (default: 32,64)")
    ap.add_argument("--dense", type=int, default=128, help="width of the hidden Dense layer (default: 128)")
    ap.add_argument("--no-batchnorm", dest="batchnorm", action="store_false",
                    help="no BatchNormalization after the convolutions")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate (cosine decay to 5%%)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default=None, metavar="PATH", help="save the training curves as a PNG at PATH (needs matplotlib)")
    ap.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or len(args.filters) != 2 or min(args.filters) < 1:
        ap.error("--epochs/--batch-size >= 1, --lr > 0, --filters two positive ints")
    target = {} if args.target is None else {"target": args.target}  # Keras code passes nothing here

    x_tr, y_tr, x_te, y_te = load_data(args.seed)
    model = build_model(args.filters, args.dense, args.batchnorm)
    model.compile(optimizer=Adam(learning_rate=args.lr), loss=SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], seed=args.seed, **target)
    if args.verbose:
        model.summary()

    def cosine(epoch, lr):
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / args.epochs)))

    t0 = time.perf_counter()
    history = model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=args.batch_size, validation_data=(x_te, y_te),
                        callbacks=[LearningRateScheduler(cosine)], verbose=args.verbose)
    seconds = time.perf_counter() - t0
    loss, acc = model.evaluate(x_te, y_te, verbose=0)
    print(f"data: load_digits as 8x8x1 images, {len(x_tr)} train / {len(x_te)} test (stratified, seed {args.seed})")
    print(f"trained {args.epochs} epochs in {seconds:.1f} s")
    print(f"final test accuracy: {acc:.4f} (loss {loss:.4f})")
    if args.plot:
        try:
            history.plot(args.plot, metrics=["loss", "accuracy"], title="digits CNN (graphc.nn)")
            print(f"training curves saved to {args.plot}")
        except ImportError as e:
            print(f"no training-curve plot: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
