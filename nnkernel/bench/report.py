"""How `nnkernel bench` prints and plots what it measured."""

from __future__ import annotations

import datetime
import os
import platform
import textwrap
import time

from .runner import OPENBLAS_VARS, BenchError

WIDTH = 100  # the table and the header lines fit this many columns
VS_CELL = 20  # "1.04x [0.95–1.10]" to "0.055x [0.032–0.078]"


def _num(v: float) -> str:
    """Four significant digits from 10 on, three below; no decimals from 1000 on."""
    return f"{v:.0f}" if v >= 1000 else f"{v:.1f}" if v >= 100 else f"{v:.2f}"


def _scale(s: float) -> tuple[float, str]:
    return (1e6, "µs") if s < 1e-3 else (1e3, "ms") if s < 1 else (1.0, "s")


def fmt_time(s: float) -> str:
    k, unit = _scale(s)
    return f"{_num(s * k)} {unit}"


def fmt_rate(r: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if r >= div:
            return f"{r / div:.3g}{suffix}"
    return f"{r:.3g}"


def fmt_ratio(v: dict) -> str:
    """A speed ratio's median and [min–max] over the rounds, in VS_CELL columns."""
    def r(x):
        return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 0.1 \
            else f"{x:.3f}"

    return f"{r(v['median'])}x [{r(v['min'])}–{r(v['max'])}]"


# columns before the "vs <reference>" cells; one line per implementation under its case
TABLE_HEAD = f"  {'impl':<14}{'time/step':>9} {'[min–max]':<13}{'rate':>6}{'GF/s':>5}{'%GEMM':>6}"


def section_head(section: str, refs) -> list[str]:
    """The lines that open a section: its name, then the column heads with its references."""
    vs = "".join(f"  {'vs ' + ref:<{VS_CELL}}" for ref in refs)
    return ["", f"── {section} ──", (TABLE_HEAD + vs).rstrip()]


def case_line(label: str, unit: str) -> str:
    return f"{label}  [rate in {unit}]"


def format_row(row: dict) -> str:
    """One implementation of one case (under its case_line), at most WIDTH columns."""
    k, _ = _scale(row["median_s"])
    span = f"[{_num(row['min_s'] * k)}–{_num(row['max_s'] * k)}]"
    gf, pct = row["gflops"], row["pct_ceiling"]
    gf = "—" if gf is None else f"{gf:.0f}" if gf >= 100 else f"{gf:.3g}" if gf >= 0.1 \
        else "<0.1"
    pct = "—" if pct is None else f"{pct:.0f}%" if pct >= 1 else f"{pct:.1f}%" if pct >= 0.1 \
        else "<0.1%"
    vs = "".join(f"  {fmt_ratio(row['vs'][ref]) if ref in row['vs'] else '':<{VS_CELL}}"
                 for ref in row.get("refs", row["vs"]))
    return (f"  {row['impl']:<14}{fmt_time(row['median_s']):>9} {span:<13}"
            f"{fmt_rate(row['throughput']):>6}{gf:>5}{pct:>6}{vs}").rstrip()


def unavailable_line(impl: str, why: str) -> str:
    return f"  {impl:<14}not available: {why}"


def wrap(line: str) -> list[str]:
    """A header line folded at WIDTH columns, continuation lines indented."""
    return textwrap.wrap(line, WIDTH, subsequent_indent="    ", break_on_hyphens=False) or [""]


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
        versions = ", ".join(f"{k} {info[k]}" for k in ("nnkernel", "numpy", "torch", "cupy",
                                                         "jax") if k in info)
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
        lines += ["  --unset-openblas-env: both variables UNSET for the worker processes;",
                  f"    this shell has {was}"]
    cores = cores or 1
    warn = load[0] > 0.75 * cores
    lines.append(f"load average before timing: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
                 + (f"  WARNING: high for {cores} cores — other processes compete, timings are "
                    f"noisy" if warn else ""))
    if busy is not None:
        lines.append(f"CPU busy in a 0.5 s sample before timing (workers idle): {busy:.0f}%"
                     + ("  WARNING: other processes are running now" if busy > 25 else ""))
    return [folded for line in lines for folded in wrap(line)]


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
