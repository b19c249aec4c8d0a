"""The `nnkernel bench` command: arguments, the sweep, the table, JSON and plot files."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from .plan import FULL, QUICK, SECTIONS, plan
from .report import (
    case_line,
    cpu_busy,
    format_row,
    header_lines,
    section_head,
    unavailable_line,
    wrap,
)
from .report import plot as plot_rows
from .runner import BenchError, measure, spread, start_workers, summarize, worker_env
from .workers import SIDES

# the library sides a sweep leaves out, saying so, where the library is not installed
OPTIONAL_SIDES = {
    "torch": "PyTorch is not installed: the torch columns are left out "
             "(pip install torch==2.13.0 for the comparison)",
    "jax": 'JAX is not installed: the jax rows are left out (pip install "nnkernel[jax]" '
           "for them)",
}

def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="nnkernel bench",
        description="Throughput and scaling of nnkernel against PyTorch eager, a hand-written "
                    "NumPy step and the machine's GEMM ceiling; each library in its own "
                    "process, rounds interleaved, medians with min–max.")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                    help="cpu (NumPy vs torch CPU) or gpu (CuPy vs torch CUDA)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer sizes and shorter rounds: the whole sweep in a minute or two")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run (default all): {', '.join(SECTIONS)}")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed rounds per implementation (default 7, --quick 3)")
    ap.add_argument("--round-seconds", type=float, default=None,
                    help="target length of one timed round (default 0.25 s, --quick 0.05 s)")
    ap.add_argument("--settle", type=float, default=None,
                    help="seconds to wait before each round, so that the previous process's "
                         "spinning BLAS/OpenMP threads go to sleep (default 0.2, --quick 0.1)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--batches", default=None,
                    help="comma-separated batch sizes for the mlp section (overrides the default)")
    ap.add_argument("--members", default=None,
                    help="comma-separated ensemble sizes E for the ensemble section")
    ap.add_argument("--ceiling-size", type=int, default=2048,
                    help="n of the n×n float matmul that measures the GEMM ceiling (default 2048)")
    ap.add_argument("--torch-threads", type=int, default=2,
                    help="torch.set_num_threads in the PyTorch worker (default 2)")
    ap.add_argument("--json", metavar="FILE", help="write every measurement as JSON")
    ap.add_argument("--plot", metavar="FILE.png",
                    help="plot throughput against batch size / width / depth / members "
                         "(needs matplotlib)")
    ap.add_argument("--unset-openblas-env", action="store_true",
                    help="unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for the worker processes")
    args = ap.parse_args(argv)
    p = dict(QUICK if args.quick else FULL)
    args.repeats = args.repeats or p["repeats"]
    args.round_seconds = args.round_seconds or p["round_s"]
    args.settle = p["settle_s"] if args.settle is None else args.settle
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.round_seconds <= 0:
        ap.error("--round-seconds must be positive")
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        ap.error(f"--only: unknown section(s) {', '.join(bad) or '(none given)'}; "
                 f"valid: {','.join(SECTIONS)}")
    args.sections = sections
    for name, key in (("batches", "batches"), ("members", "members")):
        text = getattr(args, name)
        if text:
            try:
                values = tuple(int(v) for v in text.split(","))
            except ValueError:
                ap.error(f"--{name} takes comma-separated integers, got {text!r}")
            if any(v < 1 for v in values):
                ap.error(f"--{name} values must be positive")
            p[key] = values
    if args.ceiling_size < 1:
        ap.error("--ceiling-size must be positive")
    p["ceiling_n"] = args.ceiling_size
    args.params = p
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; print the table; return 0, or 2 when it cannot run here."""
    args = parse_args(argv)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print("nnkernel bench: --plot needs matplotlib, which is not installed "
              "(pip install matplotlib, or nnkernel[plot]); run without --plot", file=sys.stderr)
        return 2
    if args.device == "gpu" and importlib.util.find_spec("cupy") is None:
        print("nnkernel bench: --device gpu runs nnkernel on CuPy, which is not installed "
              '(pip install "nnkernel[gpu]"); use --device cpu', file=sys.stderr)
        return 2
    cases = plan(args.sections, args.params, args.dtype, args.device)
    notes = []
    for side, note in OPTIONAL_SIDES.items():
        if importlib.util.find_spec(side) is None:
            notes.append(note)
            for c in cases:
                c.impls = tuple(i for i in c.impls if SIDES[i] != side)
    env = worker_env(args.unset_openblas_env)
    sides = list(dict.fromkeys(SIDES[i] for c in cases for i in c.impls))
    sides = ["nnkernel"] + [s for s in sides if s != "nnkernel"]  # the ceiling needs it
    workers = start_workers(sides, env, args.torch_threads)
    try:
        return _run(args, cases, workers, env, notes)
    except BenchError as err:
        print(f"nnkernel bench: {err}", file=sys.stderr)
        return 2
    finally:
        for w in workers.values():
            w.close()


def _run(args, cases, workers, env, notes) -> int:
    p = args.params
    infos = {side: w.call(cmd="info", device=args.device) for side, w in workers.items()}
    if args.device == "gpu" and "torch" in workers and "gpu" not in infos["torch"]:
        notes.append("torch has no CUDA device here: the torch columns are left out")
        for c in cases:
            c.impls = tuple(i for i in c.impls if SIDES[i] != "torch")
    load = os.getloadavg()
    busy = cpu_busy()
    header = header_lines(args, infos, env, load, busy)
    for line in header + [folded for note in notes for folded in wrap(note)]:
        print(line, flush=True)
    n, reps = p["ceiling_n"], p["ceiling_repeats"]
    ceilings = {side: spread(workers[side].call(cmd="ceiling", n=n, dtype=args.dtype,
                                                repeats=reps, device=args.device)["gflops"])
                for side in ("nnkernel", "torch") if side in workers}
    ceiling = ceilings["nnkernel"]["median"]
    lib = "CuPy" if args.device == "gpu" else "NumPy"
    for side, c in ceilings.items():
        name = lib if side == "nnkernel" else "torch"
        print(f"GEMM ceiling, {name} {args.dtype} {n}x{n} matmul: {c['median']:.1f} GF/s "
              f"[{c['min']:.1f}–{c['max']:.1f}]" + ("  <- %GEMM is relative to this"
                                                    if side == "nnkernel" else ""), flush=True)
    print("vs X: X's time / this time, round by round (> 1: faster); rate: items per second;\n"
          "numpy-loop: a hand-written NumPy step", flush=True)
    rows, unavailable, head = [], [], None
    for case in cases:
        if (case.section, case.refs) != head:
            head = (case.section, case.refs)
            print("\n".join(section_head(case.section, case.refs)), flush=True)
        print(case_line(case.label, case.unit), flush=True)
        res = measure(case, workers, args.repeats, p["warmup_s"], args.round_seconds,
                      args.settle)
        for row in summarize(res, ceiling):
            rows.append(row)
            print(format_row(row), flush=True)
        for impl, why in res.unavailable.items():
            unavailable.append({"section": case.section, "case": case.label, "impl": impl,
                                "reason": why})
            print(unavailable_line(impl, why), flush=True)
    end = spread(workers["nnkernel"].call(cmd="ceiling", n=n, dtype=args.dtype, repeats=reps,
                                          device=args.device)["gflops"])
    load_after = os.getloadavg()
    drift = 100 * end["median"] / ceiling - 100
    print(f"\nGEMM ceiling at the end: {end['median']:.1f} GF/s ({drift:+.0f}% drift); "
          f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        report = {"header": header, "notes": notes, "cpu_busy_before": busy,
                  "workers": infos, "args": {k: v for k, v in vars(args).items()
                                             if k != "params"}, "params": p,
                  "load_before": load, "load_after": load_after, "ceiling": ceilings,
                  "ceiling_end": end, "rows": rows, "unavailable": unavailable}
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {args.json}")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot_rows(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0
