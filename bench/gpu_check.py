"""One command for a machine with an NVIDIA GPU: packages, environment, tests, benchmarks.

    python bench/gpu_check.py --quick [--wheels DIR] [--out FILE]

1. Its first line says which packages it needed and found, or installed from the
   wheels in --wheels (default: .whl in the checkout, filled by bench/gpu_wheels.sh):
   array-api-compat (nnkernel needs it), pytest, hypothesis, array-api-strict and
   pytest-timeout (the test run). Without a usable GPU it prints one line, exit 2.
2. The CuPy tests that need a GPU (every test whose id names cupy: the CuPy twin
   against the reference, the backend matrix with cupy in it; not the CPU-only test
   double and host-C++ source tests, which CI runs), with -x, a per-test timeout and
   an overall cap (--test-timeout) well under the 600 s a device command may run;
   then ``nnkernel train --device gpu`` and ``nnkernel info``.
3. The benchmarks of bench/gpu_bench.py: the 784-512-512-10 MLP step at batch 64
   to 8192 (and 8192 with TF32), a launch-bound 2-16-1 net, the fused kernels alone,
   the cuBLAS GEMM ceiling, an ensemble against torch.func.

The markdown goes to --out (default $OUT/RESULTS-gpu.md when $OUT is set, else
a file under the temporary directory: never inside the checkout, which does not
come back from a device machine) and is rewritten after every section, so a
killed run keeps every finished table. --quick ends in under 7 minutes: each
section starts only while the time budget (--budget, 390 s) leaves room for it.

On this workplace's device machines (no PyPI there): ``bash bench/gpu_wheels.sh``
on a machine with PyPI first, then carry ``.whl`` with the command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_GPU_EXIT, NO_PACKAGES_EXIT = 2, 3
# import name -> distribution name; the first one is needed by nnkernel itself
PACKAGES = {"array_api_compat": "array-api-compat", "pytest": "pytest",
            "hypothesis": "hypothesis", "array_api_strict": "array-api-strict",
            "pytest_timeout": "pytest-timeout"}
SITE = Path(tempfile.gettempdir()) / "nnkernel-gpu-check-site"


def fail_without_gpu() -> None:
    """Exit 2 with one line unless CuPy is installed and sees a GPU."""
    if importlib.util.find_spec("cupy") is None:
        reason = 'CuPy is not installed (pip install "nnkernel[gpu]")'
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
    the dependencies of a missing package (pytest's pluggy, say) come along.
    """
    files = sorted(wheels.glob("*.whl")) if wheels is not None and wheels.is_dir() else []
    wanted = [f for f in files if importlib.util.find_spec(f.name.split("-")[0].lower()) is None]
    installed: list[str] = []
    if wanted:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                               "--no-deps", "--no-compile", "--upgrade", "--target", str(SITE),
                               *map(str, wanted)], capture_output=True, text=True)
        if proc.returncode == 0:
            sys.path.insert(0, str(SITE))
            importlib.invalidate_caches()
            installed = [w.name.split("-")[0] for w in wanted]
        else:
            print(proc.stderr[-2000:], file=sys.stderr)
    # subprocesses (pytest, the CLI) see the same packages and this checkout's nnkernel
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


# -- environment, tests, the command line -------------------------------------------------------
def environment(have_torch) -> list[list[str]]:
    import cupy
    import numpy as np

    import nnkernel

    props = cupy.cuda.runtime.getDeviceProperties(0)
    rt, drv = cupy.cuda.runtime.runtimeGetVersion(), cupy.cuda.runtime.driverGetVersion()
    rows = [["GPU", f"{gpu_name()} (compute capability {props['major']}.{props['minor']}, "
                    f"{props['totalGlobalMem'] / 2**30:.1f} GiB, "
                    f"{cupy.cuda.runtime.getDeviceCount()} GPU(s))"],
            ["CUDA runtime / driver", f"{rt // 1000}.{rt % 1000 // 10} / "
                                      f"{drv // 1000}.{drv % 1000 // 10}"],
            ["CuPy", cupy.__version__],
            ["nnkernel / NumPy / Python", f"{nnkernel.__version__} / {np.__version__} / "
                                          f"{platform.python_version()}"]]
    if have_torch:
        import torch

        rows.append(["PyTorch", f"{torch.__version__} (CUDA {torch.version.cuda})"])
    else:
        rows.append(["PyTorch", "not usable on this GPU: comparisons show n/a"])
    return rows


def gpu_name() -> str:
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def torch_cuda_usable() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def run_tests(timeout_s: int, missing: list[str]) -> list[list[str]]:
    """The CuPy-relevant tests, stopped at the first failure and capped in time."""
    if "pytest" in missing:
        return [["pytest", "not run: pytest is missing", "-"]]
    # the CPU-only CuPy tests (the test double, the CUDA sources as host C++) run in CI
    cmd = [sys.executable, "-m", "pytest", "tests", "-q", "-x", "-k",
           "cupy and not cupy_double and not _source", "-p", "no:cacheprovider"]
    if "pytest_timeout" not in missing:
        cmd += ["--timeout", "120"]
    shown = " ".join(cmd[1:])
    print(f"running: {shown} (at most {timeout_s} s)", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        tail = (err.stdout or b"")[-3000:]
        print(tail.decode(errors="replace") if isinstance(tail, bytes) else tail, flush=True)
        return [[shown, f"stopped after {timeout_s} s (--test-timeout)", "-"]]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else "(no output)"
    if proc.returncode != 0:  # show what failed, not only the count
        print(proc.stdout[-8000:], proc.stderr[-2000:], sep="\n", flush=True)
    rows = [[shown, summary, f"exit {proc.returncode}, {time.perf_counter() - t0:.0f} s"]]
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    rows += [["", line[:300], ""] for line in failed[:10]]
    return rows


def run_cli() -> list[list[str]]:
    """``nnkernel train --device gpu`` on digits and ``nnkernel info``, as a user runs them."""
    rows = []
    for argv in (["train", "--device", "gpu", "--epochs", "2", "--hidden", "64", "--json",
                  "--quiet"], ["train", "--device", "gpu", "--epochs", "1", "--tf32",
                               "--dropout", "0.2", "--quiet"], ["info"]):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "nnkernel", *argv], cwd=tempfile.gettempdir(),
                              capture_output=True, text=True, timeout=180)
        text = (proc.stdout if proc.returncode == 0 else proc.stderr).strip()
        keep = [line for line in text.splitlines() if argv[0] != "info" or
                line.startswith(("gpu:", "tf32:", "  cupy"))]
        rows.append([f"nnkernel {' '.join(argv)}", f"exit {proc.returncode}, "
                     f"{time.perf_counter() - t0:.1f} s", "<br>".join(keep)[-600:]])
    return rows


# -- markdown -------------------------------------------------------------------------------------
def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """The markdown file, rewritten after every section."""

    def __init__(self, out: Path, budget_s: float):
        self.out, self.parts = out, []
        self.deadline = time.monotonic() + budget_s
        out.parent.mkdir(parents=True, exist_ok=True)

    def add(self, text: str) -> None:
        self.parts.append(text)
        print(text, flush=True)
        self.out.write_text("\n".join(self.parts))

    def section(self, title, header, produce, needs_s: float = 0.0) -> None:
        """A table; an error in one section is reported, not fatal; skipped without time."""
        left = self.deadline - time.monotonic()
        if left < needs_s:
            self.add(f"## {title}\n\nskipped: {left:.0f} s of the time budget left, this "
                     f"section needs about {needs_s:.0f} s (--budget)\n")
            return
        t0 = time.monotonic()
        try:
            body = table(header, produce())
        except Exception as err:  # noqa: BLE001 - report and go on to the next section
            body = f"failed: {type(err).__name__}: {' '.join(str(err).split())[:1000]}"
        self.add(f"## {title}\n\n{body}\n\n({time.monotonic() - t0:.0f} s)\n")


def default_out() -> Path:
    base = os.environ.get("OUT")
    return Path(base) / "RESULTS-gpu.md" if base else \
        Path(tempfile.gettempdir()) / "nnkernel-gpu-check" / "RESULTS-gpu.md"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write "
                        f"(default: {default_out()})")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl",
                        help="folder of wheels for missing packages (bench/gpu_wheels.sh)")
    parser.add_argument("--skip-tests", action="store_true", help="benchmarks only")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--test-timeout", type=int, default=None,
                        help="seconds for the test run (default 200, 300 without --quick)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole check (default 390 with --quick, 1500)")
    args = parser.parse_args(argv)
    args.repeats, args.block_s = (3, 0.05) if args.quick else (7, 0.2)
    test_timeout = args.test_timeout or (200 if args.quick else 300)
    budget = args.budget or (390.0 if args.quick else 1500.0)

    fail_without_gpu()
    line, missing = ensure_packages(args.wheels)
    print(line, flush=True)
    if "array_api_compat" in missing:
        print("gpu_check: nnkernel cannot run without array-api-compat", file=sys.stderr)
        return NO_PACKAGES_EXIT
    sys.path.insert(0, str(ROOT))  # this checkout's nnkernel, before any installed one
    import gpu_bench as gb

    have_torch = torch_cuda_usable()
    report = Report(args.out or default_out(), budget)
    print(f"writing: {report.out}", flush=True)
    report.add(f"# nnkernel on {gpu_name()}: GPU check, "
               f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n\n{line}\n")
    report.section("Environment", ["", ""], lambda: environment(have_torch))
    if not args.skip_tests:
        report.section("Tests on CuPy (pytest -k cupy: the twin, the backend matrix)",
                       ["command", "result", "status"],
                       lambda: run_tests(test_timeout, missing), needs_s=test_timeout / 3)
    report.section("Command line on the GPU", ["command", "status", "output"], run_cli,
                   needs_s=30)
    mlp_rows: list = []
    report.section(f"MLP training step (float32, Adam, cross-entropy; medians of "
                   f"{args.repeats} interleaved blocks)", gb.STEP_HEADER,
                   lambda: mlp_rows.extend(gb.bench_mlp(args, have_torch)) or mlp_rows,
                   needs_s=40)
    report.section("Launch-bound tiny network (binary cross-entropy, Adam)", gb.STEP_HEADER,
                   lambda: gb.bench_tiny(args, have_torch), needs_s=10)
    report.section("Fused kernels alone (µs per call)", gb.KERNEL_HEADER,
                   lambda: gb.bench_fused(args, have_torch), needs_s=40)
    report.section("GEMM ceiling against the MLP", ["what", "GFLOP/s", "kind"],
                   lambda: gb.bench_gemm(args, mlp_rows), needs_s=20)
    report.section("Ensemble against torch.func (Adam, cross-entropy per member)",
                   gb.STEP_HEADER, lambda: gb.bench_ensemble(args, have_torch), needs_s=40)
    report.add("## Notes\n\nTiming: wall clock around blocks of steps, with "
               "cudaDeviceSynchronize before and after each block, so CPU launch overhead "
               "counts; blocks of the two libraries alternate and the median block is "
               "reported. torch time / nnkernel time > 1 means nnkernel is faster. PyTorch "
               "runs eager with its default Adam (foreach on CUDA). TF32 rows switch TF32 on "
               "for both libraries' matmuls.\n")
    print(f"written: {report.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
