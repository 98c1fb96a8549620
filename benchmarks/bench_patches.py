"""im2col / col2im against a plain copy of the same bytes: the cpu target's patch kernels for
the first two convolutions of bench_cnn.py's cifar config (3x3, stride 1, "same" padding,
batch 64), timed by ``step.explain()`` (graphc's own compiled kernels, one clock read after
each), next to ``np.copyto`` of an array the size of the patch matrix.

    python benchmarks/bench_patches.py                 # 5 rounds, median
    python benchmarks/bench_patches.py --rounds 9 --runs 40

GB/s counts the bytes a kernel moves: the patch matrix (written by im2col, read by col2im)
plus the image (read by im2col, written by col2im, which also reads it back to add); the
copy moves the patch matrix's bytes twice (read + write). ``x copy``: the kernel's time over
the copy's. The steps are compiled once; rounds alternate between them and the copies, and
medians are over rounds.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

BATCH = 64
# (name, H = W, Cin, Cout, which kernels): the first two convs of bench_cnn.py's cifar config;
# the image is a param where its gradient (col2im) is wanted
CONVS = [("32x32x3", 32, 3, 32, ("im2col", "col2im")), ("16x16x32", 16, 32, 64, ("im2col", "col2im"))]


def conv_step(name: str, hw: int, cin: int, cout: int):
    import graphc as gc
    x = gc.param(f"x{name}", (BATCH, hw, hw, cin), init="he_normal")
    K = gc.param(f"K{name}", (3, 3, cin, cout), init="he_normal")
    loss = gc.mean(gc.relu(gc.conv2d(x, K, strides=1, padding="same")))
    return gc.compile(loss, optimizer=gc.optim.SGD(1e-3), target="cpu", seed=0)


def copy_s(nbytes: int, runs: int) -> float:
    a = np.ones(nbytes // 4, np.float32)
    b = np.ones_like(a)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        np.copyto(b, a)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30, help="timed runs per explain() and per copy")
    a = ap.parse_args()
    steps = {c[0]: conv_step(*c[:4]) for c in CONVS}
    for s in steps.values():
        s()
    rows: dict = {}
    for _ in range(a.rounds):
        for name, hw, cin, _, ops in CONVS:
            rep = steps[name].explain(runs=a.runs, verbose=False)
            patch, image = BATCH * hw * hw * 9 * cin * 4, BATCH * hw * hw * cin * 4
            cp = copy_s(patch, a.runs)
            for k in rep.kernels:
                op = next((o for o in ops if o in k.ops), None)
                if op is not None:
                    moved = patch + image * (1 if op == "im2col" else 2)
                    rows.setdefault((name, op, patch), []).append((k.time_s, moved / k.time_s / 1e9, 2 * patch / cp / 1e9,
                                                                    k.time_s / cp))
    print(f"{'conv':10} {'kernel':7} {'patch MB':>8} {'us':>8} {'GB/s':>6} {'copy GB/s':>9} {'x copy':>6}")
    for (name, op, patch), r in rows.items():
        us, gbs, cgbs, ratio = np.median(np.array(r), axis=0)
        print(f"{name:10} {op:7} {patch / 1e6:8.1f} {us * 1e6:8.0f} {gbs:6.2f} {cgbs:9.2f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
