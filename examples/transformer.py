"""A small transformer learns to sort digit sequences (or to reverse them), written in graphc's DSL.

    python examples/transformer.py              # defaults: sorting, >= 99% per-token accuracy on held-out sequences
    python examples/transformer.py --task reverse
    python examples/transformer.py --blocks 2 --steps 1500 --target parallel

The task (``--task``, default ``sort``): read a sequence of ``--length`` random digits and
output it sorted, position by position. Output ``i`` is the ``i``-th smallest digit, which
depends on every input token, so each position must attend to the whole sequence. With
``--task reverse`` the output is the sequence reversed: no position holds its answer, every
output token must attend to the mirrored input position, so the model has to learn attention
by position (through the learned position embeddings); a model without attention scores
about 10% (chance).

The model: token + learned position embeddings (``gc.take``), then ``--blocks`` encoder blocks
(pre-norm: multi-head self-attention through batched GEMMs, a ReLU MLP, residuals, layer
normalization), a final layer norm and a dense layer to the 10 digits; softmax cross-entropy on
every token. Training data is drawn fresh for every step; the held-out sequences are drawn once
from another seed (and the reported accuracy is on them). Every step is one native call:
forward, backward and Adam for every weight.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import graphc as gc

VOCAB = 10


def make_data(n: int, length: int, rng: np.random.Generator, task: str = "sort") -> tuple[np.ndarray, np.ndarray]:
    x = rng.integers(0, VOCAB, (n, length))
    return x, (np.sort(x, axis=1) if task == "sort" else x[:, ::-1].copy())


def dense(name: str, h, fan_in: int, fan_out: int, bias: bool = True):
    W = gc.param(f"{name}/kernel", (fan_in, fan_out), init="glorot_uniform")
    y = h @ W  # (None, T, fan_in) @ (fan_in, fan_out): one GEMM over every token of the batch
    return y + gc.param(f"{name}/bias", (fan_out,)) if bias else y


def layer_norm(name: str, h, d: int):
    return gc.layer_normalization(h, gc.param(f"{name}/gamma", (d,), init="ones"), gc.param(f"{name}/beta", (d,)),
                                  epsilon=1e-5)


def attention(name: str, h, length: int, d: int, heads: int):
    """Multi-head self-attention: softmax(q k^T / sqrt(d_head)) v per head, as batched GEMMs."""
    dh = d // heads

    def split(t):  # (None, T, d) -> (None, heads, T, dh)
        return gc.swapaxes(gc.reshape(t, (-1, length, heads, dh)), 1, 2)
    q, k, v = (split(dense(f"{name}/{w}", h, d, d)) for w in ("query", "key", "value"))
    scores = (q @ gc.swapaxes(k, -1, -2)) * (1.0 / np.sqrt(dh))  # (None, heads, T, T); k^T read in place
    ctx = gc.softmax(scores, axis=-1) @ v  # (None, heads, T, dh)
    ctx = gc.reshape(gc.swapaxes(ctx, 1, 2), (-1, length, d))
    return dense(f"{name}/output", ctx, d, d)


def build_model(length: int, d: int, heads: int, blocks: int, mlp: int):
    x = gc.input("tokens", (None, length), dtype="int64")
    y = gc.input("targets", (None, length), dtype="int64")
    emb = gc.param("embedding", (VOCAB, d), init="normal")
    pos = gc.param("positions", (length, d), init="normal")
    h = gc.take(emb, x) + pos  # (None, T, d)
    for b in range(blocks):
        h = h + attention(f"block{b}/attention", layer_norm(f"block{b}/norm1", h, d), length, d, heads)
        u = layer_norm(f"block{b}/norm2", h, d)
        h = h + dense(f"block{b}/mlp2", gc.relu(dense(f"block{b}/mlp1", u, d, mlp)), mlp, d)
    logits = dense("logits", layer_norm("final_norm", h, d), d, VOCAB)  # (None, T, 10)
    loss = gc.softmax_cross_entropy(gc.reshape(logits, (-1, VOCAB)), gc.reshape(y, (-1,)))
    return logits, loss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=("numpy", "cpu", "parallel"), default="cpu")
    ap.add_argument("--task", choices=("sort", "reverse"), default="sort", help="what to learn (default: sort)")
    ap.add_argument("--length", type=int, default=8, help="sequence length (default: 8)")
    ap.add_argument("--d-model", type=int, default=64, help="model width (default: 64)")
    ap.add_argument("--heads", type=int, default=4, help="attention heads (default: 4)")
    ap.add_argument("--blocks", type=int, default=1, help="transformer blocks (default: 1)")
    ap.add_argument("--steps", type=int, default=600, help="training steps (default: 600)")
    ap.add_argument("--batch-size", type=int, default=64, help="sequences per step (default: 64)")
    ap.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate (default: 3e-3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--held-out", type=int, default=2000, help="held-out sequences (default: 2000)")
    args = ap.parse_args(argv)
    if args.d_model % args.heads or min(args.length, args.steps, args.batch_size, args.blocks) < 1:
        ap.error("--d-model must be a multiple of --heads; --length, --steps, --batch-size, --blocks >= 1")

    logits, loss = build_model(args.length, args.d_model, args.heads, args.blocks, 4 * args.d_model)
    step = gc.compile(loss, optimizer=gc.optim.Adam(args.lr), target=args.target, seed=args.seed)
    predict = gc.compile(logits, params=step, target=args.target)
    n_params = sum(p.size for p in step.params.values())
    print(f"graphc {gc.__version__}: transformer, {args.blocks} block(s), d_model {args.d_model}, {args.heads} heads "
          f"({n_params} params), {'sorting' if args.task == 'sort' else 'reversing'} {args.length}-digit sequences, batch {args.batch_size}, "
          f"target {args.target!r}")
    rng = np.random.default_rng(args.seed)
    x_te, y_te = make_data(args.held_out, args.length, np.random.default_rng(args.seed + 10_000), args.task)

    def held_out_accuracy() -> float:
        return float((predict(tokens=x_te).argmax(-1) == y_te).mean())

    t0, acc, report = time.perf_counter(), 0.0, max(1, args.steps // 8)
    warm = max(1, args.steps // 20)
    for i in range(1, args.steps + 1):
        # linear warm-up, then cosine decay to 5%: hyper-parameters are inputs, nothing recompiles
        frac = min(1.0, i / warm)
        decay = 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * max(0, i - warm) / max(1, args.steps - warm)))
        step.optimizer.learning_rate = args.lr * frac * decay
        xb, yb = make_data(args.batch_size, args.length, rng, args.task)
        out = step(tokens=xb, targets=yb)
        if i % report == 0 or i == args.steps:
            acc = held_out_accuracy()
            print(f"step {i:5d}/{args.steps}  loss {float(out['loss']):.4f}  held-out token accuracy {acc:.4f}  "
                  f"{time.perf_counter() - t0:6.1f} s", flush=True)
    print(f"final held-out per-token accuracy: {acc:.4f} ({args.held_out} sequences, "
          f"{time.perf_counter() - t0:.1f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
