"""`nnkernel bench`: throughput and scaling sweeps against PyTorch and the GEMM ceiling.

    nnkernel bench [--quick] [--only kernels,mlp,tiny,width,depth,ensemble] [--device cpu|gpu]
                   [--dtype float32|float64] [--repeats N] [--json FILE] [--plot FILE.png]
                   [--unset-openblas-env]

How the timing stays honest:

- each library runs in its own long-lived worker process (`nnkernel.bench.workers`):
  PyTorch's OpenMP threads and OpenBLAS's threads spin against each other in one
  process. nnkernel, PyTorch and a hand-written NumPy step each get one;
- every case is warmed up, then timed in rounds that alternate between the
  processes (nnkernel, torch, numpy-loop, then the reverse order), so a machine
  whose speed drifts slows every side alike; before each round the parent pauses
  (--settle) so that the previous process's idle BLAS/OpenMP threads stop
  spinning; a GPU is synchronised before each clock read;
- a row reports the median seconds per step with the min–max over rounds, and its
  ratio against each reference is the median of the per-round ratios;
- the GEMM ceiling (a large square NumPy matmul) is measured in the same run, and
  the load average is printed before timing, with a warning when it is high.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .workers import SIDES

SECTIONS = ("kernels", "mlp", "tiny", "width", "depth", "ensemble")
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
MLP_SIZES = (784, 512, 512, 10)
FULL = {"batches": (64, 128, 256, 512, 1024, 2048, 4096), "widths": (128, 256, 512, 1024, 2048),
        "depths": (1, 2, 4, 8), "members": (1, 8, 64, 256), "matmul": (512, 1024, 2048),
        "bmm": ((64, 128, 64, 64), (8, 256, 512, 512)), "dense_batches": (256, 1024),
        "ce": ((1024, 10), (1024, 1000)), "repeats": 7, "warmup_s": 0.3, "round_s": 0.25,
        "settle_s": 0.2, "ceiling_repeats": 7}
QUICK = {"batches": (64, 256, 1024), "widths": (256, 1024), "depths": (1, 4),
         "members": (8, 64), "matmul": (1024,), "bmm": ((64, 128, 64, 64),),
         "dense_batches": (256,), "ce": ((1024, 10),), "repeats": 3, "warmup_s": 0.2,
         "round_s": 0.05, "settle_s": 0.1,
         "ceiling_repeats": 3}


class BenchError(RuntimeError):
    """A worker failed or the requested benchmark cannot run here."""


# -- what to measure -------------------------------------------------------------------------
@dataclass
class Case:
    section: str
    label: str
    spec: dict
    impls: tuple
    refs: tuple                 # implementations every row is compared with
    items: float = 1.0          # samples (rows, parameters, steps) per step, for throughput
    unit: str = "samples/s"
    flops: float | None = None  # real floating-point operations per step
    x: float | None = None      # the swept value, for plots


def mlp_flops(sizes, batch) -> float:
    """Matmul FLOPs of one training step: forward 2·N·in·out per layer, backward 4·N·in·out,
    except the first layer, whose dx is skipped (2·N·in·out)."""
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    return sum(6.0 * batch * a * b for a, b in pairs) - 2.0 * batch * pairs[0][0] * pairs[0][1]


def plan(sections, p: dict, dtype: str, device: str) -> list[Case]:
    """The cases of each section, in order, from the size lists ``p`` (FULL or QUICK)."""
    common = {"dtype": dtype, "device": device}
    trio = ("nnkernel", "torch", "numpy-loop")
    cases: list[Case] = []

    def mlp_case(section, label, sizes, batch, x, **extra):
        spec = {"kind": "mlp", "sizes": list(sizes), "batch": batch, "activation": "relu",
                "loss": "ce", "optimizer": "adam", "lr": 1e-3, **common, **extra}
        flops = mlp_flops(sizes, batch)
        return Case(section, label, spec, trio, ("torch", "numpy-loop"), batch, "samples/s",
                    flops, x)

    if "kernels" in sections:
        duo, ref = ("nnkernel", "torch"), ("torch",)
        for n in p["matmul"]:
            cases.append(Case("kernels", f"matmul {n}x{n}", {"kind": "matmul", "n": n, **common},
                              duo, ref, 2.0 * n * n, "rows/s", 2.0 * n**3))
        for E, N, K, M in p["bmm"]:
            cases.append(Case("kernels", f"bmm ({E},{N},{K})@({E},{K},{M})",
                              {"kind": "bmm", "shape": [E, N, K, M], **common}, duo, ref,
                              E * N, "rows/s", 2.0 * E * N * K * M))
        for kind, factor in (("dense_fwd", 2.0), ("dense_fwd_bwd", 6.0)):
            for b in p["dense_batches"]:
                spec = {"kind": kind, "n_in": 512, "n_out": 512, "batch": b, **common}
                cases.append(Case("kernels", f"{kind} 512->512 N={b}", spec, duo, ref, b,
                                  "samples/s", factor * b * 512 * 512))
        for b, c in p["ce"]:
            cases.append(Case("kernels", f"softmax_ce N={b} C={c}",
                              {"kind": "softmax_ce", "batch": b, "classes": c, **common},
                              duo, ref, b, "rows/s"))
        n_params = sum(a * b + b for a, b in zip(MLP_SIZES[:-1], MLP_SIZES[1:], strict=True))
        cases.append(Case("kernels", "adam 784-512-512-10",
                          {"kind": "adam", "sizes": list(MLP_SIZES), **common}, duo, ref,
                          n_params, "params/s"))
    if "mlp" in sections:
        for b in p["batches"]:
            cases.append(mlp_case("mlp", f"784-512-512-10 N={b}", MLP_SIZES, b, b))
    if "tiny" in sections:
        for opt, lr in (("sgd", 0.1), ("adam", 1e-3)):
            cases.append(mlp_case("tiny", f"2-16-1 tanh mse {opt} N=64", (2, 16, 1), 64, None,
                                  activation="tanh", loss="mse", optimizer=opt, lr=lr))
    if "width" in sections:
        for w in p["widths"]:
            cases.append(mlp_case("width", f"784-{w}-{w}-10 N=256", (784, w, w, 10), 256, w))
    if "depth" in sections:
        for d in p["depths"]:
            sizes = (784,) + (512,) * d + (10,)
            cases.append(mlp_case("depth", f"{d} hidden x512 N=256", sizes, 256, d))
    if "ensemble" in sections:
        for E in p["members"]:
            spec = {"kind": "ensemble", "members": E, "sizes": [64, 64, 10], "batch": 128,
                    "activation": "relu", "loss": "ce", "optimizer": "adam", "lr": 1e-3,
                    **common}
            cases.append(Case("ensemble", f"E={E} 64-64-10 N=128", spec,
                              ("nnkernel", "nnkernel-loop", "torch-func", "torch-loop"),
                              ("torch-func", "torch-loop"), 1, "steps/s",
                              E * mlp_flops((64, 64, 10), 128), E))
    return cases


# -- the worker processes --------------------------------------------------------------------
class WorkerProcess:
    """A long-lived child process answering JSON-line commands (see nnkernel.bench.workers)."""

    def __init__(self, name: str, argv: list[str], env: dict):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, env=env)

    def call(self, **cmd) -> dict:
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchError(self._died()) from None
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(self._died())
        answer = json.loads(line)
        if "error" in answer:
            raise BenchError(f"{self.name} worker: {answer['error']}\n{answer['traceback']}")
        return answer

    def _died(self) -> str:
        code = self.proc.wait(timeout=10)
        return f"the {self.name} worker exited with code {code} (its stderr is above)"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def worker_env(unset_openblas: bool) -> dict:
    """The environment for worker processes: this one, nnkernel importable, optionally without
    the OPENBLAS_* tuning variables."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if unset_openblas:
        for name in OPENBLAS_VARS:
            env.pop(name, None)
    return env


def start_workers(sides, env, torch_threads: int) -> dict[str, WorkerProcess]:
    return {side: WorkerProcess(side, [sys.executable, "-m", "nnkernel.bench.workers", side,
                                       str(torch_threads)], env)
            for side in sides}


# -- measuring ---------------------------------------------------------------------------------
@dataclass
class Result:
    case: Case
    seconds: dict = field(default_factory=dict)   # impl -> seconds per step, one per round
    steps: dict = field(default_factory=dict)     # impl -> steps per round


def measure(case: Case, workers: dict, repeats: int, warmup_s: float, round_s: float,
            settle_s: float = 0.0) -> Result:
    """Set the case up in each implementation's process, then time interleaved rounds.

    Before each round the parent waits ``settle_s``: after a round, OpenBLAS's and
    OpenMP's idle threads keep spinning for a while (OpenBLAS ~0.1 s), which would
    steal the cores from the next process's round.
    """
    res = Result(case)
    for impl in case.impls:
        w = workers[SIDES[impl]]
        answer = w.call(cmd="setup", id=impl, case={**case.spec, "impl": impl},
                        warmup_s=warmup_s, round_s=round_s)
        res.steps[impl] = answer["steps"]
        res.seconds[impl] = []
    for r in range(repeats):
        order = case.impls if r % 2 == 0 else case.impls[::-1]  # alternate who goes first
        for impl in order:
            if settle_s:
                time.sleep(settle_s)
            res.seconds[impl].append(workers[SIDES[impl]].call(cmd="round", id=impl)["seconds"])
    for side in {SIDES[i] for i in case.impls}:
        workers[side].call(cmd="drop")
    return res


def spread(values) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(res: Result, ceiling: float | None) -> list[dict]:
    """One JSON-ready row per implementation."""
    case, rows = res.case, []
    for impl, secs in res.seconds.items():
        s = spread(secs)
        row = {"section": case.section, "case": case.label, "impl": impl, "x": case.x,
               "spec": case.spec, "seconds": secs, "steps_per_round": res.steps[impl],
               "median_s": s["median"], "min_s": s["min"], "max_s": s["max"],
               "unit": case.unit, "throughput": case.items / s["median"],
               "throughput_min": case.items / s["max"], "throughput_max": case.items / s["min"],
               "gflops": None, "pct_ceiling": None, "vs": {}}
        if case.flops:
            row["gflops"] = case.flops / s["median"] / 1e9
            if ceiling:
                row["pct_ceiling"] = 100.0 * row["gflops"] / ceiling
        for ref in case.refs:
            if ref != impl and ref in res.seconds:
                # speed relative to ref, round by round: > 1 means faster than ref
                pairs = zip(res.seconds[ref], secs, strict=True)
                row["vs"][ref] = spread([t_ref / t for t_ref, t in pairs])
        rows.append(row)
    return rows


# -- printing ----------------------------------------------------------------------------------
def fmt_time(s: float) -> str:
    return f"{s * 1e6:.1f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def fmt_rate(r: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if r >= div:
            return f"{r / div:.3g}{suffix}"
    return f"{r:.3g}"


TABLE_HEAD = (f"{'section':<9}{'case':<30}{'impl':<14}{'time/step':>11} {'[min–max]':<21}"
              f"{'throughput':>18}{'GF/s':>8}{'%GEMM':>7}  speed vs reference [min–max]")


def format_row(row: dict) -> str:
    span = f"[{fmt_time(row['min_s'])}–{fmt_time(row['max_s'])}]"
    thr = f"{fmt_rate(row['throughput'])} {row['unit']}"
    gf = f"{row['gflops']:.3g}" if row["gflops"] is not None else "—"
    pct = row["pct_ceiling"]
    pct = "—" if pct is None else f"{pct:.0f}%" if pct >= 1 else f"{pct:.1g}%"
    vs = "  ".join(f"{v['median']:.2f}x {ref} [{v['min']:.2f}–{v['max']:.2f}]"
                   for ref, v in row["vs"].items())
    return (f"{row['section']:<9}{row['case']:<30}{row['impl']:<14}"
            f"{fmt_time(row['median_s']):>11} {span:<21}{thr:>18}{gf:>8}{pct:>7}  {vs}")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_threadpools(pools) -> str:
    if isinstance(pools, str):
        return pools
    if not pools:
        return "no BLAS/OpenMP thread pool loaded"
    return "; ".join(f"{p['internal_api']} {p.get('version') or ''} {p['num_threads']} threads"
                     + (f" ({p['threading_layer']}, {p['architecture']})"
                        if p.get("architecture") else "") for p in pools)


def cpu_busy(seconds: float = 0.5) -> float | None:
    """Percent of all cores' time spent busy over a short sample (/proc/stat), or None.

    Unlike the load average, which lags by minutes, this says whether other
    processes are running right now, while this benchmark's workers sit idle.
    """
    def snapshot():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        total0, idle0 = snapshot()
        time.sleep(seconds)
        total1, idle1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return 100.0 * (1.0 - (idle1 - idle0) / total) if total > 0 else None


def header_lines(args, infos: dict, env: dict, load: tuple, busy: float | None) -> list[str]:
    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    lines = [f"nnkernel bench — {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"machine: {cpu_model()}, {cores} logical cores ({usable} usable), "
             f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
             f"device: {args.device}; dtype: {args.dtype}; repeats: {args.repeats}; "
             f"round ≈ {args.round_seconds} s after a {args.settle} s pause; "
             f"mode: {'quick' if args.quick else 'full'}"]
    for side, info in infos.items():
        versions = ", ".join(f"{k} {info[k]}" for k in ("nnkernel", "numpy", "torch", "cupy")
                             if k in info)
        extra = ""
        if side == "torch":
            extra = (f"; torch threads {info['torch_threads']} (interop "
                     f"{info['torch_interop_threads']}), MKL {info['torch_mkl']}, "
                     f"oneDNN {info['torch_mkldnn']}")
        if "gpu" in info:
            extra += f"; GPU: {info['gpu']}"
        lines.append(f"{side} worker (pid {info['pid']}): {versions}{extra}")
        lines.append(f"  thread pools: {describe_threadpools(info['threadpools'])}")
        if "malloc" in info:
            lines.append(f"  malloc: {info['malloc']}")
    parent = {k: os.environ.get(k) for k in OPENBLAS_VARS}
    given = ", ".join(f"{k}={env.get(k, '<unset>')}" for k in OPENBLAS_VARS)
    lines.append(f"workers' OpenBLAS environment: {given}")
    if args.unset_openblas_env:
        was = ", ".join(f"{k}={v if v is not None else '<unset>'}" for k, v in parent.items())
        lines.append(f"  --unset-openblas-env: both variables UNSET for the worker processes "
                     f"(this shell has {was})")
    cores = cores or 1
    warn = load[0] > 0.75 * cores
    lines.append(f"load average before timing: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
                 + (f"  WARNING: high for {cores} cores — other processes compete, timings are "
                    f"noisy" if warn else ""))
    if busy is not None:
        lines.append(f"CPU busy in a 0.5 s sample before timing (workers idle): {busy:.0f}%"
                     + ("  WARNING: other processes are running now" if busy > 25 else ""))
    return lines


# -- goals from the benchmark issue ------------------------------------------------------------
def check_goals(rows: list[dict]) -> list[dict]:
    """Each goal that the measured rows can answer: description, value, target, holds."""
    by = {(r["section"], r["case"], r["impl"]): r for r in rows}
    goals = []

    def add(text, value, target, higher_is_better=True):
        if value is None:
            return
        holds = value >= target if higher_is_better else value <= target
        goals.append({"goal": text, "value": value, "target": target,
                      "comparison": ">=" if higher_is_better else "<=", "holds": holds})

    r = by.get(("mlp", "784-512-512-10 N=256", "nnkernel"))
    if r and "torch" in r["vs"]:
        add("MLP step N=256: nnkernel speed vs PyTorch eager", r["vs"]["torch"]["median"], 1.25)
    r = by.get(("mlp", "784-512-512-10 N=1024", "nnkernel"))
    if r and r["pct_ceiling"] is not None:
        add("MLP step N=1024: nnkernel % of the NumPy GEMM ceiling", r["pct_ceiling"], 90.0)
    for opt in ("sgd", "adam"):
        r = by.get(("tiny", f"2-16-1 tanh mse {opt} N=64", "nnkernel"))
        if r and "torch" in r["vs"]:
            add(f"2-16-1 step ({opt}): nnkernel speed vs PyTorch eager",
                r["vs"]["torch"]["median"], 10.0)
        if r and "numpy-loop" in r["vs"]:
            add(f"2-16-1 step ({opt}): nnkernel time / hand-written NumPy time",
                1.0 / r["vs"]["numpy-loop"]["median"], 1.3, higher_is_better=False)
    r = by.get(("ensemble", "E=64 64-64-10 N=128", "nnkernel"))
    if r:
        if "torch-func" in r["vs"]:
            add("ensemble E=64: nnkernel speed vs torch.func (vmap)",
                r["vs"]["torch-func"]["median"], 1.6)
        if "torch-loop" in r["vs"]:
            add("ensemble E=64: nnkernel speed vs a loop over PyTorch models",
                r["vs"]["torch-loop"]["median"], 10.0)
    return goals


def format_goal(g: dict) -> str:
    verdict = "HOLDS" if g["holds"] else "MISSED"
    return f"  {verdict:<7}{g['goal']}: {g['value']:.2f} (goal {g['comparison']} {g['target']:g})"


# -- plotting ----------------------------------------------------------------------------------
def plot(rows: list[dict], path: str) -> None:
    """Throughput against the swept value, one line per implementation, log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"mlp": "MLP 784-512-512-10: batch size", "width": "784-w-w-10, N=256: width w",
              "depth": "hidden layers of 512, N=256: depth", "ensemble": "ensemble: members E"}
    sections = [s for s in titles if any(r["section"] == s and r["x"] for r in rows)]
    if not sections:
        raise BenchError("--plot needs a swept section: mlp, width, depth or ensemble")
    fig, axes = plt.subplots(1, len(sections), figsize=(5.5 * len(sections), 4.2), squeeze=False)
    for ax, sec in zip(axes[0], sections, strict=True):
        sec_rows = [r for r in rows if r["section"] == sec]
        for impl in dict.fromkeys(r["impl"] for r in sec_rows):
            pts = sorted((r["x"], r["throughput"], r["throughput_min"], r["throughput_max"])
                         for r in sec_rows if r["impl"] == impl)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=impl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(titles[sec])
        ax.set_ylabel(sec_rows[0]["unit"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the command ---------------------------------------------------------------------------------
def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="nnkernel bench",
        description="Throughput and scaling of nnkernel against PyTorch eager, a hand-written "
                    "NumPy step and the machine's GEMM ceiling; each library in its own "
                    "process, rounds interleaved, medians with min–max.")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                    help="cpu (NumPy vs torch CPU) or gpu (CuPy vs torch CUDA)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer sizes and shorter rounds: the whole sweep in under a minute")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run (default all): {','.join(SECTIONS)}")
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
    have_torch = importlib.util.find_spec("torch") is not None
    cases = plan(args.sections, args.params, args.dtype, args.device)
    notes = []
    if not have_torch:
        notes.append("PyTorch is not installed: the torch columns are left out "
                     "(pip install torch==2.13.0 for the comparison)")
        for c in cases:
            c.impls = tuple(i for i in c.impls if SIDES[i] != "torch")
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
    for line in header + notes:
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
    print("speed vs reference = reference time / this time, round by round (> 1: faster); "
          "numpy-loop is a hand-written NumPy step", flush=True)
    print(TABLE_HEAD, flush=True)
    rows = []
    for case in cases:
        res = measure(case, workers, args.repeats, p["warmup_s"], args.round_seconds,
                      args.settle)
        for row in summarize(res, ceiling):
            rows.append(row)
            print(format_row(row), flush=True)
    end = spread(workers["nnkernel"].call(cmd="ceiling", n=n, dtype=args.dtype, repeats=reps,
                                          device=args.device)["gflops"])
    load_after = os.getloadavg()
    drift = 100 * end["median"] / ceiling - 100
    print(f"GEMM ceiling at the end: {end['median']:.1f} GF/s ({drift:+.0f}% drift); "
          f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} "
          f"{load_after[2]:.2f}")
    goals = check_goals(rows)
    if goals:
        print("goals (from the benchmark issue):")
        for g in goals:
            print(format_goal(g))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        report = {"header": header, "notes": notes, "cpu_busy_before": busy,
                  "workers": infos, "args": {k: v for k, v in vars(args).items()
                                             if k != "params"}, "params": p,
                  "load_before": load, "load_after": load_after, "ceiling": ceilings,
                  "ceiling_end": end, "rows": rows, "goals": goals}
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {args.json}")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
