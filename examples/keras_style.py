"""The Keras reference case, end to end, on graphc.nn.

    python examples/keras_style.py                  # default target: "cpu" (compiled by graphc)
    python examples/keras_style.py --target numpy   # the reference interpreter

The model code below is what a Keras user writes; only the imports differ. Each fit()
batch runs ONE compiled graphc training step (forward, backward, Adam update and the
metrics together).
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from graphc.nn import Dense, EarlyStopping, LearningRateScheduler, Sequential
from graphc.nn.optimizers import Adam


def synthetic_regression(n: int = 2000, features: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    w = rng.normal(size=features)
    y = (np.tanh(x @ w / 2) * 3 + 0.1 * rng.normal(size=n)).astype(np.float32)
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default=None, help="graphc target: cpu (default), parallel, numpy, cuda")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    args = ap.parse_args()
    target = {} if args.target is None else {"target": args.target}  # Keras code passes nothing here

    x, y = synthetic_regression()
    x_train, y_train, x_test, y_test = x[:1600], y[:1600], x[1600:], y[1600:]

    # ---- the reference case, unchanged ----
    model = Sequential([
        Dense(10, activation='relu', input_shape=(10,)),
        Dense(10, activation='relu'),
        Dense(1),
    ])
    model.compile(optimizer=Adam(learning_rate=0.01), loss='mse', metrics=['accuracy'], **target)
    history = model.fit(x_train, y_train, epochs=args.epochs, verbose=args.verbose)
    # ---------------------------------------

    model.summary()
    losses = history.history["loss"]
    print(f"train loss: {losses[0]:.4f} (epoch 1) -> {losses[-1]:.4f} (epoch {len(losses)})")
    print(f"test mse: {model.evaluate(x_test, y_test, verbose=0)[0]:.4f}")
    print("predictions:", np.round(model.predict(x_test[:5]).ravel(), 3), "targets:", np.round(y_test[:5], 3))

    # Keras extras: validation, callbacks (the lr changes without recompiling), checkpoints
    with tempfile.TemporaryDirectory() as d:
        path = model.save_weights(os.path.join(d, "reference"), include_optimizer=True)
        h = model.fit(x_train, y_train, epochs=args.epochs + 5, initial_epoch=args.epochs, validation_split=0.2,
                      verbose=0, callbacks=[LearningRateScheduler(lambda epoch, lr: lr * 0.7),
                                            EarlyStopping(monitor="val_loss", patience=2)])
        print(f"5 more epochs with a decaying lr: val_loss {h.history['val_loss'][-1]:.4f}, "
              f"lr now {model.optimizer.learning_rate:.5f}")
        model.load_weights(path)
        print(f"restored checkpoint: test mse {model.evaluate(x_test, y_test, verbose=0)[0]:.4f}")


if __name__ == "__main__":
    main()
