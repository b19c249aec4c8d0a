"""`nnkernel train` on digits, quiet and with a busy-loop process on every core.

    python bench/threads_under_load.py                 # 3 runs each way: minutes
    python bench/threads_under_load.py --runs 5 --json threads.json

Issue 25: with the BLAS library's default threads (one per core), `nnkernel train` on
digits took 9.9 s and then 24.5 s on a machine under load 3, where one thread took 1.4 s.
The command line now chooses the threads by the work (nnkernel.cli.threads). The goal:
the loaded run within 2x the quiet one. For comparison the same runs are made with
``--threads <cores>``, the count the BLAS library would take by itself.

Each run is a fresh process (its wall time, start-up included, and the `train_seconds` it
reports); the variants alternate within each round, so a drift of the machine's speed
falls on both. The load is one `while True: pass` process per core this process may use.
A benchmark, not a test: its figures depend on the machine and on everything else it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

GOAL = 2.0  # loaded / quiet, for the default (chosen) threads


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def train(extra: list[str]) -> dict:
    """One `nnkernel train` (digits, defaults): its wall time and what it reports."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "nnkernel", "train", "--quiet", "--json", *extra],
                       capture_output=True, text=True, env=env, timeout=900)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"nnkernel train failed ({p.returncode}): {p.stderr.strip()}")
    result = json.loads(p.stdout)
    return {"wall_s": wall, "train_s": result["train_seconds"], "threads": result.get("threads"),
            "test_accuracy": result["test_accuracy"]}


def busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(processes) -> None:
    for p in processes:
        p.kill()
    for p in processes:
        p.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each variant, quiet and loaded")
    ap.add_argument("--json", metavar="PATH", help="write the figures to PATH")
    args = ap.parse_args(argv)
    n = cores()
    variants = {"chosen by the work": [], f"--threads {n} (the BLAS default)":
                ["--threads", str(n)]}
    load_before = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    runs: dict = {(name, state): [] for name in variants for state in ("quiet", "loaded")}
    for state in ("quiet", "loaded"):
        load = busy_loops(n) if state == "loaded" else []
        try:
            time.sleep(1.0 if load else 0.0)  # let the busy loops take their cores
            for _ in range(args.runs):
                for name, extra in variants.items():
                    runs[name, state].append(train(extra))
        finally:
            stop(load)
    print(f"nnkernel train on digits, {args.runs} run(s) each, {n} core(s), load average "
          f"{load_before} before; loaded = one busy loop per core")
    print(f"{'threads':<34} {'state':<7} {'threads':>7} {'wall s (median)':>16} "
          f"{'train s (median)':>17}")
    summary = {}
    for (name, state), results in runs.items():
        wall = statistics.median(r["wall_s"] for r in results)
        trained = statistics.median(r["train_s"] for r in results)
        summary.setdefault(name, {})[state] = {"wall_s": wall, "train_s": trained,
                                               "threads": results[0]["threads"],
                                               "runs": results}
        print(f"{name:<34} {state:<7} {results[0]['threads']!s:>7} {wall:16.2f} {trained:17.2f}")
    for name, states in summary.items():
        ratio = states["loaded"]["wall_s"] / states["quiet"]["wall_s"]
        states["loaded_over_quiet"] = ratio
        verdict = ""
        if name == "chosen by the work":
            verdict = f" — goal <= {GOAL:g}x: {'MET' if ratio <= GOAL else 'MISSED'}"
        print(f"{name}: loaded / quiet = {ratio:.2f}x (wall time){verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cores": n, "load_average_before": load_before, "runs": args.runs,
                       "goal_loaded_over_quiet": GOAL, "variants": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
