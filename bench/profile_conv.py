"""Where the CNN training step of `nnkernel bench --only conv` spends its time, on NumPy.

    python bench/profile_conv.py [--batch 128] [--steps 30] [--top 20]

Three views of the step of `nnkernel train --conv 32,64 --hidden 128` on 1x28x28:
the whole step (median of single steps, with the machine's GEMM rate measured in
the same run as the floor), each kernel on the step's own shapes (im2col, the
GEMMs, col2im, max-pool forward and backward, ReLU on the pooled maps) and a
cProfile of whole steps listing the functions with the most time of their own.
OPENBLAS_NUM_THREADS=1 gives steadier figures on a shared machine.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from nnkernel.bench.plan import CONV_NET, conv_flops  # noqa: E402
from nnkernel.bench.workers import make_step  # noqa: E402
from nnkernel.kernels.numpy import NumpyKernels  # noqa: E402
from nnkernel.nn.activations import ReLU  # noqa: E402

RELU = ReLU()


def median_ms(fn, steps: int, *args) -> tuple[float, float]:
    """(median, min) milliseconds of fn(*args) over ``steps`` calls, after one warm-up call."""
    fn(*args)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, min(times) * 1e3


def gemm_rate(n=1024, repeats=5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    best = min(median_ms(np.matmul, repeats, a, a))
    return 2.0 * n**3 / (best / 1e3) / 1e9


def _relu_backward(a, da):
    """ReLU's backward as the layer runs it (nnkernel.nn.activations.ReLU)."""
    return RELU.backward(np, None, a, da)


def kernels(batch: int, steps: int) -> list[tuple[str, float, float, float | None]]:
    """(name, median ms, min ms, GFLOP) of each kernel call of one step, in step order."""
    k = NumpyKernels(np)
    rng = np.random.default_rng(0)
    rows = []
    c_in, h, w = CONV_NET["image"]
    x = rng.random((batch, c_in, h, w), dtype=np.float32)
    for depth, c in enumerate(CONV_NET["channels"]):
        W = rng.standard_normal((c, c_in, 3, 3)).astype(np.float32)
        b = np.zeros(c, np.float32)
        flops = 2.0 * batch * h * w * 9 * c_in * c
        tag = f"conv{depth + 1} {c_in}->{c} {h}x{w}"
        cols = k.im2col(x, 3, 3, 1, 1)
        W2 = W.reshape(c, -1)
        rows.append((f"{tag} im2col", *median_ms(k.im2col, steps, x, 3, 3, 1, 1), None))
        rows.append((f"{tag} GEMM W·X̂", *median_ms(np.matmul, steps, W2, cols), flops / 1e9))
        z, _ = k.conv2d(x, W, b, 1, 1)
        rows.append((f"{tag} conv2d (im2col, GEMM, bias; z in NCHW)",
                     *median_ms(k.conv2d, steps, x, W, b, 1, 1), flops / 1e9))
        # the CLI's block: pool, then ReLU on the pooled maps (nn.builders.cnn_layers)
        p, ctx = k.max_pool2d(z, 2)
        rows.append((f"{tag} max-pool fwd", *median_ms(k.max_pool2d, steps, z, 2), None))
        y = np.maximum(p, 0.0)
        rows.append((f"{tag} relu fwd (pooled)", *median_ms(np.maximum, steps, p, 0.0), None))
        dy = rng.standard_normal(y.shape).astype(np.float32)
        rows.append((f"{tag} relu bwd (pooled)", *median_ms(_relu_backward, steps, y, dy),
                     None))
        dp = _relu_backward(y, dy)
        rows.append((f"{tag} max-pool bwd",
                     *median_ms(k.max_pool2d_backward, steps, ctx, dp, z.shape), None))
        da = k.max_pool2d_backward(ctx, dp, z.shape)
        need_dx = depth > 0
        rows.append((f"{tag} conv2d_backward" + (" (dW, db, dX̂, col2im)" if need_dx else
                                                  " (dW, db)"),
                     *median_ms(k.conv2d_backward, steps, x.shape, cols, W, da, 1, 1, need_dx),
                     flops * (2 if need_dx else 1) / 1e9))
        if need_dx:
            dcols = rng.standard_normal(cols.shape).astype(np.float32)
            rows.append((f"{tag}   col2im alone",
                         *median_ms(k.col2im, steps, dcols, x.shape, 3, 3, 1, 1), None))
        x, c_in, h, w = y, c, h // 2, w // 2
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)
    case = {"kind": "conv", "impl": "nnkernel", "batch": args.batch, **CONV_NET,
            "activation": "relu", "loss": "ce", "optimizer": "adam", "lr": 1e-3,
            "dtype": "float32", "device": "cpu"}
    rate = gemm_rate()
    step = make_step(case)
    med, low = median_ms(step.run, args.steps)
    flops = conv_flops(CONV_NET, args.batch)
    print(f"step: median {med:.1f} ms, min {low:.1f} ms; {flops / 1e9:.2f} GFLOP of matmuls "
          f"= {flops / 1e9 / rate * 1e3:.1f} ms at this run's 1024² GEMM rate "
          f"({rate:.0f} GF/s)")
    title = f"kernel (float32, batch {args.batch})"
    print(f"\n{title:<58}{'median ms':>10}{'min':>8}"
          f"{'GF/s':>8}")
    for name, m, lo, gf in kernels(args.batch, args.steps):
        rate_text = f"{gf / (lo / 1e3):8.0f}" if gf else f"{'':8}"
        print(f"{name:<58}{m:10.2f}{lo:8.2f}{rate_text}")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.steps):
        step.run()
    prof.disable()
    stats = pstats.Stats(prof)
    n = args.steps
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:args.top]
    print(f"\ncProfile, {n} steps: ms per step, own / total")
    print(f"{'own':>8} {'total':>8} {'calls/step':>10}  function")
    for (file, line, func), (_cc, nc, tt, ct, _) in rows:
        where = f"{Path(file).name}:{line}({func})" if line else func
        print(f"{tt / n * 1e3:8.2f} {ct / n * 1e3:8.2f} {nc / n:10.1f}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
