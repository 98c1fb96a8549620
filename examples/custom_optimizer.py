"""A custom optimizer is as fast as a built-in one: write its update rule with DSL ops.

Here AdaBelief (Zhuang et al. 2020): Adam whose second moment tracks the variance of the
gradient around its running mean rather than the raw squared gradient. The rule below is
compiled into the same fused native step as the forward and backward pass: one loop per
parameter reads p, g, m, s once and writes p, m, s once.

    python examples/custom_optimizer.py [--target cpu|parallel|numpy] [--steps 200]
"""
from __future__ import annotations

import argparse

import numpy as np

import graphc as gc


class AdaBelief(gc.optim.Optimizer):
    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-12):
        # hyper-parameters are scalar inputs of the compiled step: changing one never recompiles
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)

    def state_spec(self, param):
        return {"m": "zeros", "s": "zeros"}  # per-parameter state, shaped like the parameter

    def update(self, param, grad, state, step):
        lr, b1, b2, eps = (self.hyper(k) for k in ("learning_rate", "beta_1", "beta_2", "epsilon"))
        m = b1 * state["m"] + (1.0 - b1) * grad
        s = b2 * state["s"] + (1.0 - b2) * gc.square(grad - m) + eps
        m_hat = m / (1.0 - gc.exp(step * gc.log(b1)))  # bias corrections; step counts from 1
        s_hat = s / (1.0 - gc.exp(step * gc.log(b2)))
        return param - lr * m_hat / (gc.sqrt(s_hat) + eps), {"m": m, "s": s}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="cpu", choices=["numpy", "cpu", "parallel"])
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    X = rng.standard_normal((512, 20)).astype("float32")
    w_true = rng.standard_normal((20, 1)).astype("float32")
    Y = np.tanh(X @ w_true) + 0.05 * rng.standard_normal((512, 1)).astype("float32")

    x = gc.input("x", (None, 20))
    y = gc.input("y", (None, 1))
    W1 = gc.param("W1", (20, 32), init="he_normal")
    b1 = gc.param("b1", (32,))
    W2 = gc.param("W2", (32, 1))
    b2 = gc.param("b2", (1,))
    loss = gc.mse(gc.tanh(x @ W1 + b1) @ W2 + b2, y)

    opt = AdaBelief(learning_rate=1e-2)
    step = gc.compile(loss, optimizer=opt, target=args.target)
    for i in range(args.steps):
        if i == args.steps // 2:
            opt.learning_rate = 3e-3  # a schedule: takes effect on the next call, no recompile
        out = step(x=X, y=Y)
        if i % 50 == 0 or i == args.steps - 1:
            print(f"step {i:4d}  loss {float(out['loss']):.5f}")
    if args.target != "numpy":
        print()
        print(step.kernels())  # the custom update is fused like a built-in one


if __name__ == "__main__":
    main()
