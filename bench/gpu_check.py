"""One command for a machine with an NVIDIA GPU, made for a single try: kernels, tests, benchmarks.

    python3 bench/gpu_check.py --quick [--wheels DIR] [--out DIR]
    python3 bench/gpu_check.py --dry-run          # no device: walks every section, tiny sizes

On this workplace's device machines (no PyPI there; see README "On a GPU"): first, on a
machine with PyPI, ``bash bench/gpu_wheels.sh``, then run, carrying ``.whl``, with a
``timeout_s`` of 360::

    PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --quick

1. Its first line says which packages it needed and found, or installed from --wheels
   (default: .whl in the checkout) into a temporary folder. Without a usable GPU it
   prints one line and exits 2 (3 without array-api-compat, which nnkernel needs).
2. Sections, in this order, each in a child process stopped at its own time limit
   and at the time left (--budget: 300 s with --quick), so one slow section cannot
   eat the others: ``environment``; ``kernels``, every CuPy kernel of nnkernel built,
   compiled by CuPy and launched once, each compile timed (this also warms CuPy's
   kernel cache for what follows); the CuPy tests (``pytest -k cupy``: the twin
   against the reference, the backend matrix; no -x, stopped after 25 failures, 60 s
   a test); ``nnkernel train --device gpu`` and ``nnkernel info``; the benchmarks
   of bench/gpu_bench.py against PyTorch CUDA.
3. Everything lands in --out (default $OUT where set, else a temporary folder: never
   the checkout, which does not come back from a device machine) as it goes:
   ``RESULTS-gpu.md`` (rewritten after every section), ``gpu_check.json`` (the same
   figures), ``gpu_check.log`` (every child's output) and ``pytest.log``. A section
   stopped at its limit keeps the rows it had finished.

Exit 0 when every section finished, 1 when one failed, was stopped or was skipped.
``--dry-run`` runs the sections on CuPy's test double (tests/cupy_double.py) with
tiny sizes and the tests collected, not run: CI checks the plumbing with it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
NO_GPU_EXIT, NO_PACKAGES_EXIT = 2, 3
# import name -> distribution name; the first one is needed by nnkernel itself
PACKAGES = {"array_api_compat": "array-api-compat", "pytest": "pytest",
            "hypothesis": "hypothesis", "array_api_strict": "array-api-strict",
            "pytest_timeout": "pytest-timeout"}
SITE = Path(tempfile.gettempdir()) / "nnkernel-gpu-check-site"
RESERVE_S = 8.0  # kept back from every limit for writing the files after a stopped section
STEP = ["case", "nnkernel ms/step", "nnkernel samples/s", "torch ms/step",
        "torch time / nnkernel time"]
KERNEL = ["kernel", "CuPy twin", "twin, per parameter", "generic reference on CuPy", "PyTorch"]
# name, title, table header, seconds at most (quick, full), seconds needed to start at all
SECTIONS = [
    ("environment", "Environment", ["", ""], (30, 60), 5),
    ("kernels", "Kernels: each built, compiled by CuPy and launched once (its cache warmed)",
     ["kernel", "dtype", "seconds", "status"], (90, 300), 10),
    ("tests", "Tests on CuPy (pytest -k cupy: the twin, the backend matrix)",
     ["command", "result", "status"], (100, 600), 20),
    ("cli", "Command line on the GPU", ["command", "status", "output"], (30, 120), 10),
    ("mlp", "MLP training step (float32, Adam, cross-entropy; medians of interleaved blocks)",
     STEP, (30, 180), 8),
    ("tiny", "Launch-bound tiny network (binary cross-entropy, Adam)", STEP, (8, 60), 4),
    ("fused", "Fused kernels alone (µs per call)", KERNEL, (20, 120), 6),
    ("gemm", "GEMM ceiling against the MLP", ["what", "GFLOP/s", "kind"], (10, 60), 4),
    ("ensemble", "Ensemble against torch.func (Adam, cross-entropy per member)", STEP,
     (15, 120), 6),
]
NOTES = ("## Notes\n\nTiming: wall clock around blocks of steps, with cudaDeviceSynchronize "
         "before and after each block, so CPU launch overhead counts; blocks of the two "
         "libraries alternate and the median block is reported. torch time / nnkernel time > 1 "
         "means nnkernel is faster. PyTorch runs eager with its default Adam (foreach on CUDA). "
         "TF32 rows switch TF32 on for both libraries' matmuls.\n")


def fail_without_gpu() -> None:
    """Exit 2 with one line unless CuPy is installed and sees a GPU."""
    if importlib.util.find_spec("cupy") is None:
        reason = 'CuPy is not installed (pip install "nnkernel[gpu]"; README "On a GPU")'
    else:
        try:
            import cupy

            reason = None if cupy.is_available() else "cupy.is_available() is False"
        except Exception as err:  # noqa: BLE001 - a broken CUDA install is "no GPU" too
            reason = f"CuPy cannot reach CUDA ({type(err).__name__}: {err})"
    if reason:
        print(f"gpu_check: no usable GPU: {reason}", file=sys.stderr)
        sys.exit(NO_GPU_EXIT)


def ensure_packages(wheels: Path | None) -> tuple[str, list[str]]:
    """Install what is missing from the wheels (into SITE, put on the path); (line, missing).

    Every wheel of the folder whose distribution cannot be imported is installed, so
    the dependencies of a missing package come along (one version of each, as
    bench/gpu_wheels.sh downloads them).
    """
    files = sorted(wheels.glob("*.whl")) if wheels is not None and wheels.is_dir() else []
    wanted = [f for f in files if importlib.util.find_spec(f.name.split("-")[0].lower()) is None]
    installed: list[str] = []
    if wanted:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                               "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade",
                               "--target", str(SITE), *map(str, wanted)],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            sys.path.insert(0, str(SITE))
            importlib.invalidate_caches()
            installed = [w.name.split("-")[0] for w in wanted]
        else:
            print(proc.stderr[-2000:], file=sys.stderr)
    # the children (sections, pytest, the CLI) see the same packages and this checkout
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [*([str(SITE)] if installed else []), str(ROOT), *filter(None, [
            os.environ.get("PYTHONPATH")])])
    missing = [mod for mod in PACKAGES if importlib.util.find_spec(mod) is None]
    found = [f"{PACKAGES[m]} {_version(PACKAGES[m])}" for m in PACKAGES if m not in missing]
    line = "gpu_check: packages: " + ", ".join(found)
    if installed:
        line += f" (installed from {wheels}: {', '.join(installed)})"
    if missing:
        line += f"; MISSING: {', '.join(PACKAGES[m] for m in missing)} (run bench/gpu_wheels.sh " \
                "on a machine with PyPI, carry the folder, pass --wheels)"
    return line, missing


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:  # importable from SITE or the checkout
        return "(version unknown)"


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Check:
    """Runs the sections against one deadline and writes the files after each."""

    def __init__(self, out: Path, budget_s: float, plan: str, missing: list[str]):
        self.out, self.plan, self.missing = out, plan, missing
        self.deadline = time.monotonic() + budget_s
        out.mkdir(parents=True, exist_ok=True)
        self.md, self.log = out / "RESULTS-gpu.md", out / "gpu_check.log"
        self.parts: list[str] = []
        self.figures: dict = {"plan": plan, "budget_s": budget_s, "sections": {}}
        self.log.write_text("")
        self.work = Path(tempfile.mkdtemp(prefix="nnkernel-gpu-check-"))  # rows as they come
        self.ok = True

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.md.write_text("\n".join(self.parts))

    def run(self, name, title, header, caps, needs_s) -> list:
        cap = caps[self.plan == "full"]
        left = self.deadline - time.monotonic() - RESERVE_S
        limit = min(cap, left)
        if limit < needs_s:
            self._record(name, title, header, [], f"skipped: {max(left, 0):.0f} s of the "
                         f"time budget left, it needs at least {needs_s} s (--budget)", 0.0)
            return []
        print(f"gpu_check: {name} (at most {limit:.0f} s)", flush=True)
        rows_file = self.work / f"{name}.rows"
        cmd = self._command(name, rows_file)
        output = self.out / "pytest.log" if name == "tests" else self.log
        with self.log.open("a") as log:
            log.write(f"\n===== {name}: {' '.join(cmd)}\n")
        t0 = time.monotonic()
        with output.open("a" if output == self.log else "w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=limit)
                note = "" if code == 0 else f"failed (exit {code}): see {output.name}"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the section and what it started
                proc.wait()
                note = f"stopped at its time limit, {limit:.0f} s (the rows it had finished)"
        seconds = time.monotonic() - t0
        if output != self.log:
            with self.log.open("a") as log:
                log.write(output.read_text())
        rows = self._rows(name, rows_file)
        self._record(name, title, header, rows, note, seconds)
        return rows

    def _command(self, name, rows_file) -> list[str]:
        if name == "tests":
            return self._pytest()
        cmd = [sys.executable, str(BENCH / "gpu_sections.py"), name, "--plan", self.plan,
               "--rows", str(rows_file)]
        return cmd + (["--earlier", str(self.work / "mlp.rows")] if name == "gemm" else [])

    def _pytest(self) -> list[str]:
        # the CPU-only CuPy tests (the test double, the sources as host C++ and as device
        # code) run in CI; no -x: one failure must not hide the others
        where = "tests/test_cupy_twin.py" if self.plan == "dry" else "tests"
        cmd = [sys.executable, "-m", "pytest", where, "-q", "-rfE", "--maxfail", "25", "-k",
               "cupy and not cupy_double and not _source", "-p", "no:cacheprovider"]
        if "pytest_timeout" not in self.missing:
            cmd += ["--timeout", "60"]
        return cmd + (["--collect-only"] if self.plan == "dry" else [])  # the stand-in: no run

    def _rows(self, name, rows_file) -> list:
        if name == "tests":
            path = self.out / "pytest.log"
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()] \
                if path.is_file() else []
            summary = lines[-1].strip("= ") if lines else "(no output)"
            failed = [ln[:300] for ln in lines if ln.startswith(("FAILED", "ERROR"))][:25]
            return [["pytest -k cupy (pytest.log)", summary, ""]] + [["", f, ""] for f in failed]
        if not rows_file.is_file():
            return []
        return [json.loads(line) for line in rows_file.read_text().splitlines() if line]

    def _record(self, name, title, header, rows, note, seconds) -> None:
        self.ok &= not note
        body = table(header, rows) if rows else ""
        self.add(f"## {title}\n\n{body}\n\n{note}\n\n({seconds:.0f} s)\n".replace("\n\n\n\n",
                                                                                 "\n\n"))
        self.figures["sections"][name] = {"title": title, "header": header, "rows": rows,
                                          "note": note, "seconds": round(seconds, 1)}
        (self.out / "gpu_check.json").write_text(json.dumps(self.figures, indent=1))
        print(f"gpu_check: {name}: {len(rows)} row(s), {seconds:.0f} s {note}", flush=True)


def default_out() -> Path:
    base = os.environ.get("OUT")
    return Path(base) if base else Path(tempfile.gettempdir()) / "nnkernel-gpu-check"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for the files (default: $OUT, else {default_out()})")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl",
                        help="folder of wheels for missing packages (bench/gpu_wheels.sh)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats; 300 s")
    parser.add_argument("--dry-run", action="store_true",
                        help="no device: CuPy's test double, tiny sizes, tests collected only")
    parser.add_argument("--skip-tests", action="store_true", help="no pytest section")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole check (default 300 with --quick or "
                             "--dry-run, else 1500)")
    args = parser.parse_args(argv)
    plan = "dry" if args.dry_run else "quick" if args.quick else "full"
    budget = args.budget or (1500.0 if plan == "full" else 300.0)

    if plan != "dry":
        fail_without_gpu()
    line, missing = ensure_packages(args.wheels)
    print(line, flush=True)
    if "array_api_compat" in missing:
        print("gpu_check: nnkernel cannot run without array-api-compat", file=sys.stderr)
        return NO_PACKAGES_EXIT
    check = Check(args.out or default_out(), budget, plan, missing)
    print(f"gpu_check: writing {check.out} (RESULTS-gpu.md, gpu_check.json, gpu_check.log)",
          flush=True)
    when = f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    dry = ("\nA dry run on CuPy's test double (NumPy on the CPU), tiny sizes: no figure here "
           "is a GPU measurement.\n" if plan == "dry" else "")
    check.add(f"# nnkernel GPU check ({plan}), {when}\n{dry}\n{line}\n")
    for name, title, header, caps, needs_s in SECTIONS:
        if name == "tests" and args.skip_tests:
            continue
        rows = check.run(name, title, header, caps, needs_s)
        if name == "environment" and rows:  # the GPU's name into the title
            check.parts[0] = check.parts[0].replace("# nnkernel GPU check",
                                                    f"# nnkernel on {rows[0][1].split(' (')[0]}"
                                                    ": GPU check")
    check.add(NOTES)
    verdict = "every section finished" if check.ok else "NOT every section finished"
    print(f"gpu_check: done, {verdict}: {check.md}", flush=True)
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
