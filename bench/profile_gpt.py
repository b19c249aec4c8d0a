"""Where nnkernel's GPT training step spends its time (the bench's transformer case).

    python bench/profile_gpt.py [--steps 30] [--threads 1] [--top 20] [--torch]

The step is the bench's own (`nnkernel.bench.workers.transformer`, plan.GPT_CPU).
Timed with the CPU clock of this process (``time.process_time``) as well as the
wall clock: on a machine shared with other work the CPU time of a one-thread run
is the steadier measure of how much work a step does (an idle BLAS thread that
spins also counts, so run with --threads 1 to compare kernels). Printed:

- the step's medians, and its matrix-product FLOPs as a rate;
- per layer kind, the median forward and backward time per step (the layers'
  own calls wrapped, children of a Residual counted under their own kind);
- per kernel (the methods of ``model.k``), the time per step of each;
- with --torch, the torch side's step in this process for comparison;
- the cProfile rows with the most time of their own, µs per step.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout


def _per_step(samples: dict, steps: int) -> list:
    return sorted(((sum(v) / steps, k, len(v) / steps) for k, v in samples.items()),
                  reverse=True)


def wrap_layers(record):
    """Time every layer class's forward and the backprop it returns, by class name."""
    from nnkernel.nn.layer import LAYERS

    clock = time.process_time
    originals = {}
    for cls in set(LAYERS.values()):
        forward = cls.forward  # its own or inherited (GELU's is ActivationLayer's)
        originals[cls] = cls.__dict__.get("forward")

        def timed(self, ctx, x, train, _f=forward, **side):
            name = type(self).__name__
            t0 = clock()
            y, backprop = _f(self, ctx, x, train, **side)
            record[f"{name} forward"].append(clock() - t0)

            def timed_backprop(dy, need_dx=True):
                t1 = clock()
                out = backprop(dy, need_dx)
                record[f"{name} backward"].append(clock() - t1)
                return out

            return y, timed_backprop

        cls.forward = timed
    return originals


def wrap_kernels(k, record):
    clock = time.process_time
    for name in dir(type(k)):
        f = getattr(k, name)
        if name.startswith("_") or not callable(f) or isinstance(f, type):
            continue

        def timed(*args, _f=f, _n=name, **kw):
            t0 = clock()
            out = _f(*args, **kw)
            record[_n].append(clock() - t0)
            return out

        setattr(k, name, timed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None,
                    help="OpenBLAS threads (and torch's); default: as the environment says")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--torch", action="store_true", help="also time the torch side here")
    args = ap.parse_args(argv)
    if args.threads:
        os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)  # before NumPy loads
    import nnkernel as nk
    from nnkernel.bench.plan import GPT_CPU, gpt_flops
    from nnkernel.bench.workers import make_step

    nk.keep_freed_memory()  # as `nnkernel bench` runs the nnkernel worker
    case = {"kind": "gpt", "impl": "nnkernel", **GPT_CPU, "dtype": "float32", "device": "cpu"}
    step = make_step(case)
    for _ in range(3):
        step.run()
    cpu, wall = [], []
    for _ in range(args.steps):
        t0, w0 = time.process_time(), time.perf_counter()
        step.run()
        cpu.append(time.process_time() - t0)
        wall.append(time.perf_counter() - w0)
    flops = gpt_flops(case)
    print(f"case {case}")
    print(f"nnkernel step: CPU {1e3 * statistics.median(cpu):.1f} ms (min "
          f"{1e3 * min(cpu):.1f}), wall {1e3 * statistics.median(wall):.1f} ms (min "
          f"{1e3 * min(wall):.1f}); {flops / 1e9:.2f} GFLOP of matrix products = "
          f"{flops / statistics.median(wall) / 1e9:.1f} GF/s by the wall clock")
    if args.torch:
        import torch

        torch.set_num_threads(args.threads or 2)
        tstep = make_step({**case, "impl": "torch"})
        for _ in range(3):
            tstep.run()
        tcpu, twall = [], []
        for _ in range(args.steps):
            t0, w0 = time.process_time(), time.perf_counter()
            tstep.run()
            tcpu.append(time.process_time() - t0)
            twall.append(time.perf_counter() - w0)
        print(f"torch step:    CPU {1e3 * statistics.median(tcpu):.1f} ms (min "
              f"{1e3 * min(tcpu):.1f}), wall {1e3 * statistics.median(twall):.1f} ms")

    layers = collections.defaultdict(list)
    originals = wrap_layers(layers)
    kernels = collections.defaultdict(list)
    k = nk.Backend("numpy").kernels  # the one kernels object NumPy models share
    wrap_kernels(k, kernels)
    for _ in range(args.steps):
        step.run()
    for cls, forward in originals.items():
        if forward is None:
            del cls.forward
        else:
            cls.forward = forward
    print("\nper layer kind, ms of CPU per step (calls per step)")
    for t, name, calls in _per_step(layers, args.steps):
        print(f"  {1e3 * t:7.2f}  {name} ({calls:g})")
    print("per kernel, ms of CPU per step (calls per step)")
    for t, name, calls in _per_step(kernels, args.steps):
        print(f"  {1e3 * t:7.2f}  {name} ({calls:g})")
    for name in list(vars(k)):
        if name in kernels:
            delattr(k, name)

    prof = cProfile.Profile(time.process_time)
    prof.enable()
    for _ in range(args.steps):
        step.run()
    prof.disable()
    rows = sorted(pstats.Stats(prof).stats.items(), key=lambda kv: -kv[1][2])[:args.top]
    print(f"\ncProfile, {args.steps} steps: µs of CPU per step, own / total")
    for (file, line, func), (_cc, nc, tt, ct, _) in rows:
        where = f"{Path(file).name}:{line}({func})" if line else func
        print(f"{tt / args.steps * 1e6:9.1f} {ct / args.steps * 1e6:9.1f} "
              f"{nc / args.steps:6.1f}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
