"""A two-input residual network on the digits, written with the functional API of graphc.nn.

    python examples/functional_residual.py                   # default target: "cpu" (compiled by graphc)
    python examples/functional_residual.py --target numpy    # the reference interpreter
    python examples/functional_residual.py --plot curves.png # also save the training curves

Each 8x8 digit is split into its top and bottom halves, two inputs of 32 pixels. One
Dense "encoder" is shared by both halves (one layer called twice: one set of weights), the
codes are concatenated and go through two residual blocks (``x + f(x)`` with ``Add``), and a
softmax layer classifies. The model code is what a Keras user writes; only the imports
differ. Each fit() batch runs ONE compiled graphc step (forward, backward, Adam update and
the metrics together). ``--plot PATH`` also saves the training curves as a PNG (matplotlib).
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from graphc.nn import (Add, Concatenate, CSVLogger, Dense, Dropout, Input, Model, ModelCheckpoint,
                       regularizers)
from graphc.nn.optimizers import Adam


def load_halves(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=0.25, random_state=seed, stratify=d.target)
    return (x_tr[:, :32], x_tr[:, 32:]), y_tr, (x_te[:, :32], x_te[:, 32:]), y_te


def residual_block(x, units: int, dropout: float):
    h = Dense(units, activation="relu", kernel_regularizer=regularizers.l2(1e-4))(x)
    h = Dropout(dropout)(h)
    h = Dense(units)(h)
    return Add()([x, h])


def build_model(width: int = 64, blocks: int = 2, dropout: float = 0.1) -> Model:
    top = Input(shape=(32,), name="top")
    bottom = Input(shape=(32,), name="bottom")
    encoder = Dense(width // 2, activation="relu", name="encoder")  # shared by both halves
    x = Concatenate()([encoder(top), encoder(bottom)])
    for _ in range(blocks):
        x = residual_block(x, width, dropout)
    out = Dense(10, activation="softmax", name="digit")(x)
    return Model(inputs=[top, bottom], outputs=out, name="residual_halves")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default=None, help="graphc target: cpu (default), parallel, numpy, cuda")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--plot", default=None, metavar="PATH", help="save the training curves as a PNG at PATH (needs matplotlib)")
    ap.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    args = ap.parse_args()
    target = {} if args.target is None else {"target": args.target}  # Keras code passes nothing here

    (top_tr, bot_tr), y_tr, (top_te, bot_te), y_te = load_halves()
    model = build_model(args.width, args.blocks)
    model.compile(optimizer=Adam(learning_rate=2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", "sparse_top_k_categorical_accuracy"], **target)
    model.summary()

    with tempfile.TemporaryDirectory() as d:
        best = os.path.join(d, "best")
        callbacks = [ModelCheckpoint(best, monitor="val_accuracy", save_best_only=True),
                     CSVLogger(os.path.join(d, "log.csv"))]
        history = model.fit({"top": top_tr, "bottom": bot_tr}, y_tr, epochs=args.epochs, batch_size=args.batch_size,
                            validation_split=0.1, callbacks=callbacks, verbose=args.verbose)
        n_logged = len(open(os.path.join(d, "log.csv")).read().splitlines()) - 1
        model.load_weights(best)  # the epoch with the best validation accuracy
    losses = history.history["loss"]
    print(f"train loss: {losses[0]:.4f} (epoch 1) -> {losses[-1]:.4f} (epoch {len(losses)}); {n_logged} epochs logged")
    print(f"best val accuracy: {max(history.history['val_accuracy']):.4f}")
    loss, acc, top5 = model.evaluate([top_te, bot_te], y_te, verbose=0)
    print(f"test accuracy: {acc:.4f} (top-5: {top5:.4f})")
    if args.plot:
        try:
            history.plot(args.plot, metrics=["loss", "accuracy"], title="functional residual network, digits")
            print(f"training curves saved to {args.plot}")
        except ImportError as e:
            print(f"no training-curve plot: {e}")


if __name__ == "__main__":
    main()
