"""A custom optimizer is as fast as a built-in one: write its rule with DSL ops.

AdaBelief (Zhuang et al. 2020) customizes the update: Adam whose second moment tracks the
variance of the gradient around its running mean rather than the raw squared gradient. The
rule below is compiled into the same fused native step as the forward and backward pass:
one loop per parameter reads p, g, m, s once and writes p, m, s once.

The other three customize how the gradient is computed (``Optimizer.gradients``), and are
still ONE compiled call per step, because graphc's gradients are graph transforms:

- ``SAM`` (sharpness-aware minimization, Foret et al. 2021): the gradient at the worst
  nearby point w + rho * g / ||g||, applied at w by a base optimizer's rule.
- ``AdaHessian``: Adam with the squared gradient replaced by a Hutchinson estimate of the
  Hessian's diagonal (in the spirit of Yao et al. 2021), from Hessian-vector products.
- ``CentralizedAdam``: Adam on centralized gradients (Yong et al. 2020).

    python examples/custom_optimizer.py [--optimizer adabelief|sam|adahessian|gc-adam]
                                        [--target cpu|parallel|numpy] [--steps 200]
"""
from __future__ import annotations

import argparse
import zlib

import numpy as np

import graphc as gc


class AdaBelief(gc.optim.Optimizer):
    # each hyper-parameter's range: a value outside is refused when set (gc.HyperParameterError)
    domains = {"learning_rate": "[0, inf)", "beta_1": "[0, 1)", "beta_2": "[0, 1)", "epsilon": "(0, inf)"}

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


class SAM(gc.optim.Optimizer):
    """Sharpness-aware minimization (Foret et al. 2021) around any ``base`` optimizer.

    Per step: g = grad L(w); e = rho * g / ||g|| (one L2 norm over all params together);
    the gradient is grad L at w + e (e held constant), and ``base``'s rule applies it at w.
    PyTorch needs a closure, two backward passes and two optimizer calls for this; here it
    is one graph: the loss at w + e is ``gc.substitute(loss, {w: w + e})``.

    The hyper-parameters are ``base``'s plus ``rho`` (all settable on this object, e.g. by a
    learning-rate schedule); ``global_clipnorm`` (default: ``base``'s) clips the final
    gradient. A base whose own hyper-parameters include ``rho`` (RMSprop) is refused: the
    two would share one fed input.
    """

    def __init__(self, base: gc.optim.Optimizer, rho: float = 0.05, global_clipnorm=None):
        if not isinstance(base, gc.optim.Optimizer) or isinstance(base, SAM):
            raise TypeError(f"SAM: base must be a graphc.optim.Optimizer (not a SAM), got {base!r}")
        if "rho" in base.hyperparameters:
            raise ValueError(f"SAM: the base optimizer {type(base).__name__} has a hyper-parameter 'rho' "
                             "of its own; wrap another optimizer")
        clip = base.global_clipnorm if global_clipnorm is None else global_clipnorm
        # base's hyper-parameters keep base's ranges; rho is a radius
        super().__init__(clip, domains={**base.hyperparameter_domains, "rho": "[0, inf)"}, rho=rho,
                         **base.hyperparameters)
        self.base = base
        self.structural_hyperparameters = base.structural_hyperparameters

    def gradients(self, loss, params):
        g = gc.grad(loss, params)
        norm = gc.sqrt(sum(gc.cast(gc.sum(gc.square(gi)), params[0].dtype) for gi in g))
        scale = self.hyper("rho") / (norm + 1e-12)
        eps = [gc.stop_gradient(gi * gc.cast(scale, gi.dtype)) for gi in g]  # a constant of the step
        loss_adv = gc.substitute(loss, {p: p + e for p, e in zip(params, eps)})
        return self.clip_gradients(gc.grad(loss_adv, params))

    def _synced_base(self):
        """``base`` with this optimizer's dtype and current hyper-parameter values (its
        rule reads them when it builds the graph: momentum or not, decay or not)."""
        self.base.dtype = self.dtype
        for k in self.base.hyperparameters:
            setattr(self.base, k, self.hyperparameters[k])
        return self.base

    def state_spec(self, param):
        return self._synced_base().state_spec(param)

    def update(self, param, grad, state, step):
        return self._synced_base().update(param, grad, state, step)  # its hyper(k) inputs are ours

    def __repr__(self):
        return f"SAM({self.base!r}, rho={self.rho:g})"


PROBE = "probe:"


class AdaHessian(gc.optim.Optimizer):
    """Adam with a Hutchinson estimate of the Hessian's diagonal in place of g * g (in the
    spirit of AdaHessian, Yao et al. 2021; hessian power 1, no spatial averaging: dense
    layers only, no weight decay):

        D = z * (H z)                    z: Rademacher (+1/-1) probes, Hz from grad of <g, z>
        m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) D * D
        w = w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + epsilon)

    ``probes="random"`` (default): the probes are drawn inside the compiled step by graphc's
    counter-based generator (``gc.random_uniform``, keyed by the step counter: new probes every
    step, nothing to feed, so graphc.nn's ``fit`` runs it as it is). ``probes="fed"``: every
    call needs an input ``"probe:<param name>"`` of each param's shape holding +1/-1 values
    (``rademacher_probes`` draws them), for a loop that chooses its own probes. Defaults are
    the authors' (lr 0.15, eps 1e-4).
    """

    def __init__(self, learning_rate=0.15, beta_1=0.9, beta_2=0.999, epsilon=1e-4, global_clipnorm=None,
                 probes="random", seed=0):
        super().__init__(global_clipnorm, learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon)
        if probes not in ("random", "fed"):
            raise ValueError(f"AdaHessian: probes must be 'random' or 'fed', got {probes!r}")
        self._probes, self._seed = probes, int(seed)
        self._diag = {}

    def probe(self, p):
        """The Rademacher probe of param ``p``: fed, or drawn in the step (seeded by the
        optimizer's seed and the param's name, keyed by the step counter)."""
        if self._probes == "fed":
            return gc.input(PROBE + p.name, p.shape, dtype=p.dtype)
        seed = (self._seed * 1_000_003 + zlib.crc32(p.name.encode())) & 0x7FFFFFFF
        u = gc.random_uniform(p.shape, seed=seed, dtype=p.dtype)
        return gc.cast(u >= 0.5, p.dtype) * 2.0 - 1.0  # -1 where u < 0.5, else +1

    def gradients(self, loss, params):
        g = gc.grad(loss, params)
        z = [self.probe(p) for p in params]
        gz = sum(gc.cast(gc.sum(gi * zi), params[0].dtype) for gi, zi in zip(g, z))
        hz = gc.grad(gz, params)  # Hessian-vector products, by differentiating the gradient
        self._diag = {p: zi * hzi for p, zi, hzi in zip(params, z, hz)}  # for update (same build)
        return self.clip_gradients(g)

    def state_spec(self, param):
        return {"m": "zeros", "v": "zeros"}

    def update(self, param, grad, state, step):
        lr, b1, b2, eps = (self.hyper(k) for k in ("learning_rate", "beta_1", "beta_2", "epsilon"))
        d = self._diag[param]
        m = b1 * state["m"] + (1.0 - b1) * grad
        v = b2 * state["v"] + (1.0 - b2) * gc.square(d)
        m_hat = m / (1.0 - gc.exp(step * gc.log(b1)))
        v_hat = v / (1.0 - gc.exp(step * gc.log(b2)))
        return param - lr * m_hat / (gc.sqrt(v_hat) + eps), {"m": m, "v": v}

    @staticmethod
    def rademacher_probes(step, rng) -> dict:
        """{probe input name: +1/-1 array} for every probe a compiled ``step`` reads."""
        return {n.name: rng.choice(np.array([-1.0, 1.0], dtype=n.dtype), size=n.shape)
                for n in step.graph.inputs if n.name.startswith(PROBE)}


class CentralizedAdam(gc.optim.Adam):
    """Adam on centralized gradients (Yong et al. 2020): a weight's gradient (rank >= 2)
    minus its mean over every axis but the last (per output unit, in graphc's (in, out)
    layout); biases and other rank-1 gradients pass unchanged. Then ``global_clipnorm``."""

    def gradients(self, loss, params):
        g = gc.grad(loss, params)
        g = [gi - gc.mean(gi, axis=tuple(range(gi.ndim - 1)), keepdims=True) if gi.ndim >= 2 else gi
             for gi in g]
        return self.clip_gradients(g)


OPTIMIZERS = {
    "adabelief": lambda: AdaBelief(learning_rate=1e-2),
    "sam": lambda: SAM(gc.optim.SGD(learning_rate=0.1, momentum=0.9), rho=0.05),
    "adahessian": lambda: AdaHessian(),
    "gc-adam": lambda: CentralizedAdam(learning_rate=1e-2),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--optimizer", default="adabelief", choices=sorted(OPTIMIZERS))
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

    opt = OPTIMIZERS[args.optimizer]()
    step = gc.compile(loss, optimizer=opt, target=args.target)
    for i in range(args.steps):
        if i == args.steps // 2:
            opt.learning_rate *= 0.3  # a schedule: takes effect on the next call, no recompile
        probes = AdaHessian.rademacher_probes(step, rng)  # empty unless the optimizer reads probes
        out = step(x=X, y=Y, **probes)
        if i % 50 == 0 or i == args.steps - 1:
            print(f"step {i:4d}  loss {float(out['loss']):.5f}")
    if args.target != "numpy":
        print()
        print(step.kernels())  # the custom rule is fused like a built-in one (SAM: both passes, one call)


if __name__ == "__main__":
    main()
