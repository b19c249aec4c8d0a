"""Data-parallel scaling: measured throughput on this machine, and a model for 8-64 GPUs.

    python bench/scaling.py measure [--json FILE]   # 1 process and 1 / 2 MPI ranks, here
    python bench/scaling.py model                   # the paper model (no measurement)

``measure`` trains the 784-512-512-10 ReLU MLP (float32, Adam, global batch 256)
on 16,384 synthetic rows, each configuration in its own process (under
``mpiexec -n P`` for the MPI ones), and reads samples/s from fit's epoch clocks
(median of epochs 2..5: the first warms up). It then times, on 2 ranks, the
gradient allreduce alone (the MLP's 2.7 MB and the 10x-wider MLP's 121 MB
buffer) and the per-step stop-flag check.

``model`` prints step compute time (FLOPs / an assumed throughput, with a
kernel-launch floor) against ring-allreduce time (2(P-1)/P * bytes / bandwidth
+ 2(P-1) * latency) for NVLink and InfiniBand. Every input is a stated
assumption; nothing in it is measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

WIDTHS = {"mlp": [784, 512, 512, 10], "wide": [784, 5120, 5120, 10]}
ROWS, BATCH, EPOCHS = int(os.environ.get("SCALING_ROWS", 16384)), 256, 5  # rows: a dry run
ROUNDS = int(os.environ.get("SCALING_ROUNDS", 3))


def params(widths):
    return sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False))


def train_flops_per_row(widths):
    """The step's matmul FLOPs per row, as `nnkernel bench` counts them (no dX for layer 1)."""
    from nnkernel.bench.plan import mlp_flops

    return mlp_flops(widths, 1)


# -- measuring ----------------------------------------------------------------------------------
def worker(distributed: bool) -> dict:
    import numpy as np

    import nnkernel as nk

    rng = np.random.default_rng(0)
    X = rng.standard_normal((ROWS, 784)).astype(np.float32)
    y = rng.integers(0, 10, ROWS)
    w = WIDTHS["mlp"]
    model = nk.Sequential(nk.Dense(w[0], w[1]), nk.ReLU(), nk.Dense(w[1], w[2]), nk.ReLU(),
                          nk.Dense(w[2], w[3]), seed=0)
    dp = None
    if distributed:
        from nnkernel.distributed import DataParallel

        dp = DataParallel()
    hist = nk.fit(model, X, y, epochs=EPOCHS, batch_size=BATCH, optimizer=nk.optim.Adam(lr=1e-3),
                  progress=False, distributed=dp)
    out = {"samples_per_second": statistics.median(hist["samples_per_second"][1:]),
           "ranks": dp.size if dp else 1}
    if dp is not None and dp.size > 1:
        out.update(collective_times(dp, model))
    return out if dp is None or dp.is_root else {}


def collective_times(dp, model) -> dict:
    import numpy as np

    world, times = dp.world, {}
    for name, n in (("mlp", model.store.size), ("wide", params(WIDTHS["wide"]))):
        buf = np.ones(n, dtype=np.float32)
        reps = 40 if name == "mlp" else 5
        world.barrier()
        t0 = time.perf_counter()
        for _ in range(reps):
            world.allreduce_(buf, "timing")
        times[f"allreduce_ms_{name}"] = (time.perf_counter() - t0) / reps * 1e3
    flag = dp.flag()
    world.barrier()
    t0 = time.perf_counter()
    for _ in range(200):
        dp.agree(None, flag)
    times["stop_check_us"] = (time.perf_counter() - t0) / 200 * 1e6
    return times


def run(config, mpiexec, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "worker"]
    if config["ranks"] is not None:
        cmd = [mpiexec, "-n", str(config["ranks"]), *cmd, "--distributed"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode:
        raise SystemExit(f"{config['name']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(json_path):
    mpiexec = str(Path(sys.executable).with_name("mpiexec"))
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    configs = [
        {"name": "1 process, 2 BLAS threads (no MPI)", "ranks": None, "threads": 2},
        {"name": "1 process, 1 BLAS thread (no MPI)", "ranks": None, "threads": 1},
        {"name": "mpiexec -n 1 --distributed, 2 threads", "ranks": 1, "threads": 2},
        {"name": "mpiexec -n 2 --distributed, 1 thread each", "ranks": 2, "threads": 1},
    ]
    # Rounds interleave the configurations, so that a change in the machine's load (it is
    # shared) hits all of them alike; each row reports the median and the range.
    runs = {c["name"]: [] for c in configs}
    for _ in range(ROUNDS):
        for c in configs:
            runs[c["name"]].append(run(c, mpiexec, c["threads"]))
    rows = []
    for c in configs:
        rates = [r["samples_per_second"] for r in runs[c["name"]]]
        row = {**c, **{k: statistics.median(r[k] for r in runs[c["name"]])
                       for k in runs[c["name"]][0]}, "range": [min(rates), max(rates)]}
        rows.append(row)
        print(f"{c['name']:45s} {row['samples_per_second']:9,.0f} samples/s "
              f"(range {min(rates):,.0f}-{max(rates):,.0f})", flush=True)
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    two = rows[-1]
    print(f"2 ranks: allreduce {two['allreduce_ms_mlp']:.2f} ms (MLP, "
          f"{params(WIDTHS['mlp']) * 4 / 1e6:.2f} MB), {two['allreduce_ms_wide']:.1f} ms "
          f"(wide, {params(WIDTHS['wide']) * 4 / 1e6:.0f} MB); stop check "
          f"{two['stop_check_us']:.1f} us")
    print(f"load average before {' '.join(load_before)}, after {' '.join(load_after)}")
    if json_path:
        Path(json_path).write_text(json.dumps({"rows": rows, "load_before": load_before,
                                               "load_after": load_after}, indent=1))


# -- the model ----------------------------------------------------------------------------------
# Assumptions (a model, not measurements):
FP32_RATE = 50e12    # FLOP/s achieved by an H100-class GPU on FP32 GEMMs (~75% of 67 TF/s peak)
LAUNCH_FLOOR = 0.3e-3  # s per step when the GEMMs are tiny: ~25 launches x ~12 us
BACKWARD_SHARE = 2 / 3  # of a step's FLOPs: the backward pass, during which buckets can travel
LINKS = {  # (bandwidth per direction, latency per ring step)
    "NVLink4 (1 node, P=8)": (450e9, 3e-6),
    "InfiniBand NDR 400 Gb/s": (50e9, 6e-6),
}


def ring_allreduce(nbytes, ranks, bandwidth, latency):
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency


def step_compute(widths, rows):
    return max(train_flops_per_row(widths) * rows / FP32_RATE, LAUNCH_FLOOR)


def model_row(name, batch, ranks):
    """One configuration of the model: times in seconds, speed-ups against one GPU."""
    w = WIDTHS[name]
    link = "NVLink4" if ranks <= 8 else "InfiniBand"
    bw, lat = LINKS["NVLink4 (1 node, P=8)" if ranks <= 8 else "InfiniBand NDR 400 Gb/s"]
    one = step_compute(w, batch)         # the whole global batch on one GPU, no communication
    c = step_compute(w, batch / ranks)   # each GPU's shard
    a = ring_allreduce(params(w) * 4, ranks, bw, lat)
    hidden = min(a, BACKWARD_SHARE * c)  # bucketed allreduce during backward hides this much
    return {"net": name, "batch": batch, "ranks": ranks, "link": link, "one_gpu": one,
            "compute": c, "allreduce": a, "speedup": one / (c + a),
            "speedup_overlap": one / (c + a - hidden), "comm_share": a / (c + a)}


def model_table() -> str:
    lines = ["| net | global batch | P | link | 1 GPU step | compute/step | allreduce | "
             "comm share | speed-up | with overlap |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name in ("mlp", "wide"):
        for batch in (256, 4096, 65536):
            for ranks in (8, 16, 32, 64):
                r = model_row(name, batch, ranks)
                lines.append(f"| {name} | {batch:,} | {ranks} | {r['link']} | "
                             f"{r['one_gpu'] * 1e3:.2f} ms | {r['compute'] * 1e3:.2f} ms | "
                             f"{r['allreduce'] * 1e3:.2f} ms | {r['comm_share']:.0%} | "
                             f"{r['speedup']:.1f}x | {r['speedup_overlap']:.1f}x |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("measure", "model", "worker"))
    parser.add_argument("--json")
    parser.add_argument("--distributed", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "worker":
        result = worker(args.distributed)
        if result:  # rank 0 (or the one process) reports
            print(json.dumps(result))
    elif args.what == "measure":
        measure(args.json)
    else:
        for name, w in WIDTHS.items():
            print(f"{name}: {params(w):,} parameters ({params(w) * 4 / 1e6:.1f} MB fp32), "
                  f"{train_flops_per_row(w) / 1e6:.1f} MFLOP per training row")
        print(model_table())
        print("\nInfiniBand variants of the allreduce (ms): flat ring at 50 GB/s (the table) | "
              "8 rails (one NIC per GPU, NCCL's ring per NIC: ~400 GB/s per node) | 8 rails "
              "with the latency of a tree, 2 log2(P) steps")
        bw, lat = LINKS["InfiniBand NDR 400 Gb/s"]
        for name, w in WIDTHS.items():
            nbytes = params(w) * 4
            for ranks in (16, 32, 64):
                flat_ring = ring_allreduce(nbytes, ranks, bw, lat)
                rails = ring_allreduce(nbytes, ranks, 8 * bw, lat)
                tree = 2 * (ranks - 1) / ranks * nbytes / (8 * bw) + 2 * math.log2(ranks) * lat
                print(f"  {name} P={ranks}: {flat_ring * 1e3:.2f} | {rails * 1e3:.2f} | "
                      f"{tree * 1e3:.2f}")


if __name__ == "__main__":
    main()
