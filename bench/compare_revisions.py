"""Two revisions of nnkernel, `nnkernel bench` in alternating runs: is any case slower?

    python bench/compare_revisions.py BEFORE AFTER [--runs 4] [--out DIR] [-- BENCH ARGS]

BEFORE and AFTER are git revisions of this repository (exported with `git archive`
into a temporary folder, nothing in the checkout changes) or folders holding an
nnkernel checkout (a working tree, uncommitted changes included). Each run is
`python -m nnkernel bench --quick --json FILE` plus BENCH ARGS (e.g. `-- --only
mlp,tiny`), started in the revision's folder with PYTHONPATH pointing at it, so
the command and its worker processes import that revision. Runs alternate
(before, after, after, before, ...) so that a machine whose speed drifts slows
both alike.

For every (case, implementation) the table gives each revision's median time per
step over all timed rounds of all its runs with the [min–max] of those rounds,
the ratio after / before of the medians, and a verdict: "slower" where the after
median lies above every before round, "faster" where it lies below every one.
The torch rows are the same code in both revisions: when they move, the machine
moved. The JSON files stay in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def checkout(rev: str, into: Path) -> Path:
    """A folder holding revision ``rev``: the folder itself, or a `git archive` of it."""
    if Path(rev).is_dir():
        return Path(rev).resolve()
    into.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", "--format=tar", rev],
                               stdout=subprocess.PIPE)
    with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
        tar.extractall(into, filter="data")
    if archive.wait() != 0:
        raise SystemExit(f"compare_revisions: git archive {rev} failed")
    return into


def bench_run(root: Path, out: Path, bench_args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root))
    cmd = [sys.executable, "-m", "nnkernel", "bench", "--quick", "--json", str(out),
           *bench_args]
    done = subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"compare_revisions: `{' '.join(cmd)}` in {root} exited with "
                         f"{done.returncode}")
    return json.loads(out.read_text())


def rounds(reports: list[dict]) -> dict:
    """(section, case, impl) -> every timed round's seconds per step, over all runs."""
    pooled: dict = {}
    for report in reports:
        for row in report["rows"]:
            pooled.setdefault((row["section"], row["case"], row["impl"]), []).extend(
                row["seconds"])
    return pooled


def fmt(seconds: list[float]) -> str:
    k, unit = (1e6, "µs") if max(seconds) < 1e-3 else (1e3, "ms") if max(seconds) < 1 else \
        (1.0, "s")

    def num(v):
        return f"{v * k:.1f}" if v * k >= 100 else f"{v * k:.2f}"

    return f"{num(statistics.median(seconds))} [{num(min(seconds))}–{num(max(seconds))}] {unit}"


def verdict(before: list[float], after: list[float]) -> str:
    m = statistics.median(after)
    return "slower" if m > max(before) else "faster" if m < min(before) else ""


def table(before: list[dict], after: list[dict], impls: set | None) -> list[str]:
    a, b = rounds(before), rounds(after)
    keys = [k for k in a if k in b and (not impls or k[2] in impls)]
    wc = max([len(k[1]) for k in keys] + [4]) + 1
    wi = max([len(k[2]) for k in keys] + [4]) + 1
    lines = [f"{'case':<{wc}}{'impl':<{wi}}{'before':<23}{'after':<23}{'a/b':>5} verdict"]
    for key in keys:
        ratio = statistics.median(b[key]) / statistics.median(a[key])
        lines.append(f"{key[1]:<{wc}}{key[2]:<{wi}}{fmt(a[key]):<23}{fmt(b[key]):<23}"
                     f"{ratio:>5.2f} {verdict(a[key], b[key])}".rstrip())
    for section, case in sorted({k[:2] for k in a} ^ {k[:2] for k in b}):
        lines.append(f"{case} ({section}): measured in one revision only")
    return lines


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", help="git revision or folder")
    ap.add_argument("after", help="git revision or folder")
    ap.add_argument("--runs", type=int, default=4, help="runs per revision (default 4)")
    ap.add_argument("--out", help="folder for the runs' JSON files (default: a temporary one)")
    ap.add_argument("--impl", help="comma-separated implementations to list (default all)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    out = Path(args.out or tempfile.mkdtemp(prefix="nnkernel-compare-"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nnkernel-revs-") as tmp:
        roots = {"before": checkout(args.before, Path(tmp) / "before"),
                 "after": checkout(args.after, Path(tmp) / "after")}
        reports: dict = {"before": [], "after": []}
        for run in range(args.runs):
            order = ("before", "after") if run % 2 == 0 else ("after", "before")
            for name in order:
                report = bench_run(roots[name], out / f"{name}-{run + 1}.json", bench_args)
                reports[name].append(report)
                ceiling = report["ceiling"]["nnkernel"]["median"]
                print(f"run {run + 1} {name:<6} ({getattr(args, name)}): GEMM ceiling "
                      f"{ceiling:.0f} GF/s, load before {report['load_before'][0]:.2f}",
                      flush=True)
    impls = set(args.impl.split(",")) if args.impl else None
    print(f"\nseconds per step, median [min–max] over every round of {args.runs} run(s) each; "
          f"a/b = after/before\n(JSON files in {out})")
    print("\n".join(table(reports["before"], reports["after"], impls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
