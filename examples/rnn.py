"""Recurrent networks with graphc.nn, written as a Keras user writes them.

    python examples/rnn.py                      # digits read as sequences by an LSTM (>= 0.97 test accuracy)
    python examples/rnn.py --task text          # padded variable-length "sentences": Embedding(mask_zero) + LSTM
    python examples/rnn.py --target numpy       # the reference interpreter

``--task digits``: scikit-learn's ``load_digits``, each 8x8 image read row by row as a sequence
of 8 time steps of 8 pixels (standardized), a stratified 80/20 split (seed 0); the model is
``LSTM(units) -> Dense(10)`` trained with Adam and a cosine learning-rate decay.

``--task text``: a synthetic sentiment task on token ids. Each sentence has 2 to ``max_len``
words (padded with id 0 at the end); words 1-5 are positive, 6-10 negative, the rest neutral;
the label says whether the positive words outnumber the negative ones. The model is
``Embedding(vocab, 16, mask_zero=True) -> LSTM(units) -> Dense(2)``: the mask makes the LSTM
skip the padding (the state is carried through padded steps), so a sentence's prediction does
not depend on how much padding follows it. The example checks that: after training it changes
the padding id's embedding row and verifies every prediction is unchanged.

Each LSTM is ``gc.scan`` over the time steps: the input projection of every step is one GEMM
before the loop, only ``h @ recurrent_kernel`` and the gates run per step, and the gradient
is the scan's adjoint. Only the imports differ from Keras code.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from graphc.nn import LSTM, Dense, Embedding, Input, LearningRateScheduler, Sequential
from graphc.nn.losses import SparseCategoricalCrossentropy
from graphc.nn.optimizers import Adam


def load_digits_sequences(seed: int = 0, test_size: float = 0.2):
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:  # pragma: no cover - depends on the environment
        sys.exit("examples/rnn.py --task digits needs scikit-learn: pip install -e '.[examples]'")
    digits = load_digits()
    x = digits.images.astype(np.float64) / 16.0  # (n, 8 steps, 8 pixels)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    mean, std = x_tr.mean(), x_tr.std()
    return ((x_tr - mean) / std).astype(np.float32), y_tr, ((x_te - mean) / std).astype(np.float32), y_te


POSITIVE, NEGATIVE = range(1, 6), range(6, 11)


def make_sentences(n: int, max_len: int, vocab: int, rng: np.random.Generator):
    """Padded id sequences (n, max_len) and labels: more positive than negative words."""
    ids = np.zeros((n, max_len), np.int64)
    labels = np.zeros(n, np.int64)
    for i in range(n):
        length = int(rng.integers(2, max_len + 1))
        words = rng.integers(1, vocab, length)
        pos, neg = np.isin(words, POSITIVE).sum(), np.isin(words, NEGATIVE).sum()
        if pos == neg:  # no ties: flip one word's polarity
            words[0] = 1 if rng.random() < 0.5 else 6
            pos, neg = np.isin(words, POSITIVE).sum(), np.isin(words, NEGATIVE).sum()
        ids[i, :length] = words
        labels[i] = int(pos > neg)
    return ids, labels


def train(model, x_tr, y_tr, x_te, y_te, args, target) -> float:
    model.compile(optimizer=Adam(learning_rate=args.lr), loss=SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], seed=args.seed, **target)
    if args.verbose:
        model.summary()

    def cosine(epoch, lr):
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / args.epochs)))

    t0 = time.perf_counter()
    model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=args.batch_size, validation_data=(x_te, y_te),
              callbacks=[LearningRateScheduler(cosine)], verbose=args.verbose)
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t0:.1f} s")
    loss, acc = model.evaluate(x_te, y_te, verbose=0)
    print(f"final test accuracy: {acc:.4f} (loss {loss:.4f})")
    return acc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=("digits", "text"), default="digits")
    ap.add_argument("--target", default=None, help="graphc target: cpu (default), parallel, numpy, cuda")
    ap.add_argument("--epochs", type=int, default=None, help="default: 30 (digits), 10 (text)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--units", type=int, default=64, help="the LSTM's units (default: 64)")
    ap.add_argument("--lr", type=float, default=1e-2, help="peak Adam learning rate (cosine decay to 5%%)")
    ap.add_argument("--samples", type=int, default=2000, help="text: sentences, 80%% for training (default: 2000)")
    ap.add_argument("--max-len", type=int, default=12, help="text: longest sentence, the padded length (default: 12)")
    ap.add_argument("--vocab", type=int, default=30, help="text: vocabulary size with the padding id 0 (default: 30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    args = ap.parse_args(argv)
    if args.epochs is None:
        args.epochs = 30 if args.task == "digits" else 10
    if (args.epochs < 1 or args.batch_size < 1 or args.units < 1 or args.lr <= 0 or args.max_len < 2
            or args.vocab < 12 or args.samples < 10):
        ap.error("--epochs/--batch-size/--units >= 1, --lr > 0, --max-len >= 2, --vocab >= 12, --samples >= 10")
    target = {} if args.target is None else {"target": args.target}  # Keras code passes nothing here

    if args.task == "digits":
        x_tr, y_tr, x_te, y_te = load_digits_sequences(args.seed)
        print(f"data: load_digits as sequences of 8 steps x 8 pixels, {len(x_tr)} train / {len(x_te)} test "
              f"(stratified, seed {args.seed})")
        model = Sequential([Input(shape=(8, 8)), LSTM(args.units), Dense(10)], name="digits_lstm")
        train(model, x_tr, y_tr, x_te, y_te, args, target)
        return 0

    rng = np.random.default_rng(args.seed)
    ids, labels = make_sentences(args.samples, args.max_len, args.vocab, rng)
    n_tr = int(0.8 * len(ids))
    lengths = (ids != 0).sum(1)
    print(f"data: {len(ids)} sentences of 2-{args.max_len} words (mean {lengths.mean():.1f}) padded to "
          f"{args.max_len} with id 0, {n_tr} train / {len(ids) - n_tr} test, positive share {labels.mean():.2f}")
    model = Sequential([Input(shape=(args.max_len,), dtype="int64"), Embedding(args.vocab, 16, mask_zero=True),
                        LSTM(args.units), Dense(2)], name="sentiment_lstm")
    train(model, ids[:n_tr], labels[:n_tr], ids[n_tr:], labels[n_tr:], args, target)

    # the mask at work: the padding id's embedding row cannot change any prediction
    before = model.predict(ids[n_tr:])
    emb = model.get_layer("embedding")
    table = emb.get_weights()[0]
    table[0] = np.random.default_rng(1).normal(0.0, 3.0, table.shape[1])
    emb.set_weights([table])
    same = np.allclose(model.predict(ids[n_tr:]), before, rtol=1e-5, atol=1e-6)
    print(f"masking check: predictions unchanged when the padding embedding changes: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
