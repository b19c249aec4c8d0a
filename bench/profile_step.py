"""Where an nnkernel training step spends its time: per-phase timings and a cProfile.

    python bench/profile_step.py [mlp|fashion|tiny|tiny-adam|ensemble] [--batch N] [--members E]
                                 [--steps 2000] [--top 25]

Phases are timed one step at a time with perf_counter (medians, so a preempted
step does not count), and the minor page faults per step are counted; the
hand-written NumPy step of `nnkernel.bench.workers` is timed the same way as the
floor a library could reach. The cProfile part lists the functions with the most
time of their own, in µs per step.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import nnkernel as nk  # noqa: E402
from nnkernel.backend import malloc  # noqa: E402
from nnkernel.bench.workers.common import cycle, inputs  # noqa: E402
from nnkernel.bench.workers.numpy_side import HandMLP  # noqa: E402
from nnkernel.nn.builders import mlp  # noqa: E402

CASES = {
    "mlp": {"sizes": [784, 512, 512, 10], "batch": 256, "activation": "relu", "loss": "ce",
            "optimizer": "adam", "lr": 1e-3},
    "fashion": {"sizes": [784, 256, 256, 10], "batch": 128, "activation": "relu", "loss": "ce",
                "optimizer": "adam", "lr": 1e-3},
    "tiny": {"sizes": [2, 16, 1], "batch": 64, "activation": "tanh", "loss": "mse",
             "optimizer": "sgd", "lr": 0.1},
    "tiny-adam": {"sizes": [2, 16, 1], "batch": 64, "activation": "tanh", "loss": "mse",
                  "optimizer": "adam", "lr": 1e-3},
    "tiny-ce": {"sizes": [2, 16, 2], "batch": 4, "activation": "tanh", "loss": "ce",
                "optimizer": "sgd", "lr": 0.1},
    "ensemble": {"sizes": [64, 64, 10], "batch": 128, "activation": "relu", "loss": "ce",
                 "optimizer": "adam", "lr": 1e-3, "members": 64},
}


def phases(case, steps):
    """Median µs of forward, loss, backward and optimizer over ``steps`` single steps."""
    ens = case.get("members")
    sizes = case["sizes"]
    model = mlp(sizes[0], sizes[1:-1], sizes[-1], activation=case["activation"], ensemble=ens)
    opt = (nk.optim.Adam(lr=case["lr"]) if case["optimizer"] == "adam"
           else nk.optim.SGD(lr=case["lr"]))
    xs, ts = inputs(case, case["sizes"][0])
    data = cycle(list(zip(xs, ts, strict=True)))
    members = ens is not None
    if case["loss"] == "ce":
        def loss(y, t):
            return nk.losses.cross_entropy(y, t, members=members, num_check=False)
    else:
        def loss(y, t):
            return nk.losses.mse(y, t, members=members)
    clock = time.perf_counter
    times = {"forward": [], "loss": [], "backward": [], "optimizer": [], "step": []}
    faults = 0
    for i in range(steps + 50):
        x, t = data()
        if i == 50:
            faults = -_minor_faults()
        t0 = clock()
        out = model.forward(x, train=True)
        t1 = clock()
        _, dy = loss(out, t)
        t2 = clock()
        model.backward(dy, input_grad=False)
        t3 = clock()
        opt.step(model.params, model.grads)
        t4 = clock()
        if i >= 50:  # warm-up steps are not counted
            for name, a, b in (("forward", t0, t1), ("loss", t1, t2), ("backward", t2, t3),
                               ("optimizer", t3, t4), ("step", t0, t4)):
                times[name].append((b - a) * 1e6)
    faults = (faults + _minor_faults()) / steps
    return {k: statistics.median(v) for k, v in times.items()}, faults, model, opt, loss, data


def _minor_faults() -> int:
    """Page faults served without I/O so far: memory the allocator took back from the OS."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def hand_phases(case, steps):
    """The same phases of the hand-written NumPy step (nnkernel.bench.workers.HandMLP)."""
    hand = HandMLP(case)
    xs, ts = inputs(case, case["sizes"][0])
    data = cycle(list(zip(xs, ts, strict=True)))
    clock = time.perf_counter
    times = {"forward": [], "loss": [], "backward": [], "optimizer": [], "step": []}
    for i in range(steps + 50):
        x, t = data()
        t0 = clock()
        acts = hand.forward(x)
        t1 = clock()
        _, dz = hand.loss(acts[-1], t)
        t2 = clock()
        grads = hand.backward(acts, dz)
        t3 = clock()
        hand.update(grads)
        t4 = clock()
        if i >= 50:
            for name, a, b in (("forward", t0, t1), ("loss", t1, t2), ("backward", t2, t3),
                               ("optimizer", t3, t4), ("step", t0, t4)):
                times[name].append((b - a) * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    nk.keep_freed_memory()  # as `nnkernel train` and `nnkernel bench` run
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case", nargs="?", default="tiny", choices=sorted(CASES))
    ap.add_argument("--batch", type=int)
    ap.add_argument("--members", type=int)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    case = {"kind": "mlp", "dtype": "float32", **CASES[args.case]}
    if args.batch:
        case["batch"] = args.batch
    if args.members and "members" in case:
        case["members"] = args.members
    med, faults, model, opt, loss, data = phases(case, args.steps)
    print(f"case {args.case}: {case}")
    hand = hand_phases(case, args.steps) if "members" not in case else None
    print(f"{'phase (median µs)':<20}{'nnkernel':>10}" + (f"{'hand NumPy':>12}{'ratio':>8}"
                                                            if hand else ""))
    for k, v in med.items():
        print(f"{k:<20}{v:>10.1f}" + (f"{hand[k]:>12.1f}{v / hand[k]:>8.2f}" if hand else ""))
    print(f"minor page faults per nnkernel step: {faults:.1f}  (malloc: {malloc.status()})")
    prof = cProfile.Profile()
    n = args.steps
    prof.enable()
    for _ in range(n):
        x, t = data()
        out = model.forward(x, train=True)
        _, dy = loss(out, t)
        model.backward(dy, input_grad=False)
        opt.step(model.params, model.grads)
    prof.disable()
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:args.top]
    print(f"\ncProfile, {n} steps (profiling inflates small calls): µs per step, own / total")
    print(f"{'own':>8} {'total':>8} {'calls/step':>10}  function")
    for (file, line, func), (_cc, nc, tt, ct, _) in rows:
        where = f"{Path(file).name}:{line}({func})" if line else func
        print(f"{tt / n * 1e6:8.1f} {ct / n * 1e6:8.1f} {nc / n:10.1f}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
