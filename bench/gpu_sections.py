"""The sections of bench/gpu_check.py, each run in a child process the check can stop in time.

    python3 bench/gpu_sections.py SECTION --plan quick|full|dry --rows FILE

A section appends its table rows to FILE (one JSON list a line) as it finishes
each, so a section stopped at its time limit keeps the rows it had. Sections:
``environment``, ``kernels`` (every CuPy kernel of nnkernel built, compiled by
CuPy and launched once on tiny arrays: the kernel cache warmed, each compile
timed), ``cli``, and the benchmarks of bench/gpu_bench.py (``mlp``, ``tiny``,
``fused``, ``gemm``, ``ensemble``).

``--plan dry`` runs without a device: CuPy is the test double of
tests/cupy_double.py (NumPy underneath; its kernels construct and refuse to
launch), sizes are tiny and PyTorch is left out. It walks the same code, so the
plumbing is tested in CI; it measures nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DRY_REFUSAL = "cannot run CUDA code"  # the double's word when a kernel is launched


def install_stand_in() -> None:
    """CuPy's test double as ``cupy``, with the generic kernels behind the "cupy" backend."""
    sys.path.insert(0, str(ROOT / "tests"))
    import cupy_double

    sys.modules.update(cupy_double.build())
    from nnkernel.backend import CupyBackend
    from nnkernel.kernels import Kernels

    CupyBackend.make_kernels = classmethod(lambda cls: Kernels(cls.namespace()))


def torch_cuda_usable() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


# -- environment ------------------------------------------------------------------------------
def gpu_name() -> str:
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def environment(args):
    import cupy

    import nnkernel

    props = cupy.cuda.runtime.getDeviceProperties(0)
    rt, drv = cupy.cuda.runtime.runtimeGetVersion(), cupy.cuda.runtime.driverGetVersion()
    yield ["GPU", f"{gpu_name()} (compute capability {props['major']}.{props['minor']}, "
                  f"{props['totalGlobalMem'] / 2**30:.1f} GiB, "
                  f"{cupy.cuda.runtime.getDeviceCount()} GPU(s))"]
    yield ["CUDA runtime / driver", f"{rt // 1000}.{rt % 1000 // 10} / "
                                    f"{drv // 1000}.{drv % 1000 // 10}"]
    yield ["CuPy", cupy.__version__]
    yield ["nnkernel / NumPy / Python", f"{nnkernel.__version__} / {np.__version__} / "
                                        f"{platform.python_version()}"]
    if args.have_torch:
        import torch

        yield ["PyTorch", f"{torch.__version__} (CUDA {torch.version.cuda})"]
    else:
        yield ["PyTorch", "not usable on this GPU: comparisons show n/a"]


# -- every kernel compiled by CuPy and launched once -------------------------------------------
def _dtypes(spec):
    return (spec.dtype,) if hasattr(spec, "dtype") else spec.dtypes


def _params(text):
    return [item.split()[-2:] for item in text.split(",") if item.strip()]


def launch_once(spec, dtype: str) -> None:
    """Build the kernel, let CuPy compile it, launch it on tiny arrays (a Raw source: load)."""
    import cupy

    from nnkernel.kernels.cupy.specs import Elementwise, Raw

    if isinstance(spec, Raw):
        module = spec.module()
        for function in spec.functions:
            module.get_function(function)  # compiles the module and loads it
        return
    kernel = spec.build()
    if isinstance(spec, Elementwise):
        args, first = [], True
        for kind, params in (("in", spec.in_params), ("out", spec.out_params)):
            for t, name in _params(params):
                dt = dtype if len(t) == 1 else t
                if kind == "in" and name in spec.scalars:
                    args.append(np.dtype(dt).type(0.25))
                    continue
                # ndim 2: the first input broadcasts over the rows (a bias), as at run time
                shape = (32,) if spec.ndim == 2 and first and kind == "in" else (
                    (8, 32) if spec.ndim == 2 else (256,))
                first = False
                args.append(cupy.full(shape, 0.5, dtype=dt))
        kernel(*args)
    else:  # a reduction: CuPy's block reduction (< 128), CUB over everything and over rows
        for shape, axis in (((100,), None), ((4096,), None), ((4, 4096), 1)):
            kernel(cupy.full(shape, 0.5, dtype=dtype), axis=axis)
    cupy.cuda.runtime.deviceSynchronize()


def kernels(args):
    from nnkernel.kernels.cupy import cuda_sources
    from nnkernel.kernels.cupy.specs import Raw

    # compile times mean something only from a cold cache: say which it was
    cache = Path(os.environ.get("CUPY_CACHE_DIR", Path.home() / ".cupy" / "kernel_cache"))
    cached = sum(1 for _ in cache.rglob("*.cubin")) if cache.is_dir() else 0
    yield ["(CuPy's kernel cache)", "", "", f"{cached} cubin file(s) in {cache} before this "
           "section: " + ("cold" if cached == 0 else "WARM, compile times are not cold")]
    for spec in cuda_sources():
        for dtype in _dtypes(spec):
            t0 = time.perf_counter()
            try:
                launch_once(spec, dtype)
                status = "compiled and loaded" if isinstance(spec, Raw) else \
                    "compiled and launched"
            except Exception as err:  # noqa: BLE001 - every kernel is tried and reported
                status = f"FAILED: {type(err).__name__}: {' '.join(str(err).split())[:400]}"
                if args.plan == "dry" and (DRY_REFUSAL in str(err) or "'ReductionKernel'" in
                                           str(err)):  # the double refuses, or has none
                    status = "built; not compiled (dry run: the stand-in has no CUDA)"
            yield [spec.name, dtype, f"{time.perf_counter() - t0:.2f}", status]


# -- the command line as a user runs it --------------------------------------------------------
def cli(args):
    device = "cpu" if args.plan == "dry" else "gpu"
    epochs = ("1", "1") if args.plan == "dry" else ("2", "1")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for argv in (["train", "--device", device, "--epochs", epochs[0], "--hidden", "64",
                  "--json", "--quiet"],
                 ["train", "--device", device, "--epochs", epochs[1], "--dropout", "0.2",
                  "--quiet"] + (["--tf32"] if device == "gpu" else []),
                 ["info"]):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "nnkernel", *argv], env=env,
                              cwd=tempfile.gettempdir(), capture_output=True, text=True,
                              timeout=180)
        print(proc.stdout, proc.stderr, sep="\n", flush=True)  # into the check's log
        text = (proc.stdout if proc.returncode == 0 else proc.stderr).strip()
        keep = [line for line in text.splitlines() if argv[0] != "info" or
                line.startswith(("gpu:", "tf32:", "  cupy"))]
        yield [f"nnkernel {' '.join(argv)}", f"exit {proc.returncode}, "
               f"{time.perf_counter() - t0:.1f} s", "<br>".join(keep)[-600:]]


# -- the benchmarks ----------------------------------------------------------------------------
def bench(name):
    def section(args):
        import gpu_bench

        return getattr(gpu_bench, f"bench_{name}")(args)

    return section


SECTIONS = {"environment": environment, "kernels": kernels, "cli": cli,
            **{name: bench(name) for name in ("mlp", "tiny", "fused", "gemm", "ensemble")}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="one section of bench/gpu_check.py")
    parser.add_argument("section", choices=sorted(SECTIONS))
    parser.add_argument("--plan", choices=("quick", "full", "dry"), default="quick")
    parser.add_argument("--rows", type=Path, required=True, help="JSON lines, appended")
    parser.add_argument("--earlier", type=Path, default=None,
                        help="rows of the MLP section (for gemm's achieved GFLOP/s)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).parent))
    if args.plan == "dry":
        install_stand_in()
    args.have_torch = args.plan != "dry" and torch_cuda_usable()
    args.earlier_rows = [json.loads(line) for line in args.earlier.read_text().splitlines()] \
        if args.earlier is not None and args.earlier.is_file() else []
    with args.rows.open("a") as out:
        for row in SECTIONS[args.section](args):
            out.write(json.dumps([str(c) for c in row]) + "\n")
            out.flush()
            print("row:", " | ".join(map(str, row)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
