"""A one-block transformer that learns to reverse digit sequences, written with graphc.nn as a
Keras user writes it (functional API; only the imports differ from Keras/keras_hub).

    python examples/transformer_keras.py                    # defaults: cpu target, >= 99% token accuracy
    python examples/transformer_keras.py --target numpy     # the reference interpreter
    python examples/transformer_keras.py --plot curves.png  # also save the training curves

Task: each input is ``--length`` random digits (0-9), the target is the same digits
reversed, so output position ``i`` must attend to input position ``length - 1 - i``:
exactly what self-attention over learned position embeddings can express.

Model: token Embedding + learned PositionEmbedding -> MultiHeadAttention (self-attention)
with a residual connection and LayerNormalization -> a Dense MLP with a residual
connection and LayerNormalization -> Dense logits over the vocabulary, trained with
sparse categorical cross-entropy over every position. Each fit() batch runs ONE compiled
graphc step; the attention's per-head products are batched GEMMs.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from graphc.nn import (Add, Dense, Embedding, Input, LayerNormalization, LearningRateScheduler, Model,
                       MultiHeadAttention, PositionEmbedding)
from graphc.nn.losses import SparseCategoricalCrossentropy
from graphc.nn.optimizers import Adam


def make_data(n: int, length: int, vocab: int, rng: np.random.Generator):
    x = rng.integers(0, vocab, (n, length))
    return x, x[:, ::-1].copy()


def build_model(length: int, vocab: int, dim: int, heads: int, mlp: int) -> Model:
    tokens = Input(shape=(length,), dtype="int64", name="tokens")
    x = Embedding(vocab, dim)(tokens)
    x = Add()([x, PositionEmbedding(length)(x)])
    attn = MultiHeadAttention(num_heads=heads, key_dim=dim // heads)(x, x)  # self-attention
    x = LayerNormalization()(Add()([x, attn]))
    h = Dense(mlp, activation="relu")(x)
    h = Dense(dim)(h)
    x = LayerNormalization()(Add()([x, h]))
    logits = Dense(vocab, name="logits")(x)
    return Model(tokens, logits, name="reverser")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default=None, help="graphc target: cpu (default), parallel, numpy, cuda")
    ap.add_argument("--length", type=int, default=8, help="sequence length (default: 8)")
    ap.add_argument("--vocab", type=int, default=10, help="number of distinct tokens (default: 10 digits)")
    ap.add_argument("--train", type=int, default=8000, help="training sequences (default: 8000)")
    ap.add_argument("--test", type=int, default=1000, help="held-out sequences (default: 1000)")
    ap.add_argument("--dim", type=int, default=64, help="model width (default: 64)")
    ap.add_argument("--heads", type=int, default=4, help="attention heads (default: 4)")
    ap.add_argument("--mlp", type=int, default=128, help="width of the MLP (default: 128)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate (cosine decay to 5%%)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default=None, metavar="PATH", help="save the training curves as a PNG at PATH (needs matplotlib)")
    ap.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    args = ap.parse_args(argv)
    if min(args.length, args.vocab, args.train, args.test, args.dim, args.heads, args.mlp, args.epochs,
           args.batch_size) < 1 or args.dim % args.heads or args.lr <= 0:
        ap.error("sizes must be positive, --dim a multiple of --heads, --lr > 0")
    target = {} if args.target is None else {"target": args.target}  # Keras code passes nothing here

    rng = np.random.default_rng(args.seed)
    x_tr, y_tr = make_data(args.train, args.length, args.vocab, rng)
    x_te, y_te = make_data(args.test, args.length, args.vocab, rng)

    model = build_model(args.length, args.vocab, args.dim, args.heads, args.mlp)
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
    pred = model.predict(x_te, batch_size=256).argmax(-1)
    whole = float((pred == y_te).all(axis=1).mean())
    print(f"trained {args.epochs} epochs in {seconds:.1f} s")
    print(f"held-out per-token accuracy: {acc:.4f}; whole sequences reversed correctly: {whole:.4f}")
    if args.plot:
        try:
            history.plot(args.plot, metrics=["loss", "accuracy"], title="transformer: sequence reversal")
            print(f"training curves saved to {args.plot}")
        except ImportError as e:
            print(f"no training-curve plot: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
