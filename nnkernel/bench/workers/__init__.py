"""The timed side of `nnkernel bench`: one process per library, driven over a pipe.

    python -m nnkernel.bench.workers nnkernel|numpy|torch|jax

Each library runs in its own process because PyTorch's OpenMP threads and
OpenBLAS's threads spin against each other when they share one. The parent
(`nnkernel.bench`) writes one JSON object per line on the worker's stdin and
reads one JSON line back:

    {"cmd": "info"}                                   -> versions, threads, BLAS
    {"cmd": "ceiling", "n": 2048, "dtype": "float32", "repeats": 5}
                                                      -> {"gflops": [...]} square matmul
    {"cmd": "setup", "id": "a", "case": {...}, "warmup_s": 0.1, "round_s": 0.2}
                                                      -> {"steps": steps per round}, or
                                                         {"unavailable": why} (not timed)
    {"cmd": "round", "id": "a"}                       -> {"seconds": per step}
    {"cmd": "drop"}                                   -> forget every case
    {"cmd": "quit"}

A case names a workload ("kind": mlp, matmul, bmm, dense_fwd, dense_fwd_bwd,
softmax_ce, adam, ensemble, conv, gpt, lstm) and an implementation ("impl"):
"nnkernel" and "nnkernel-loop" run through nnkernel's public API, "numpy-loop" is a
plain hand-written NumPy step (the library-overhead reference), "torch",
"torch-func" and "torch-loop" are PyTorch eager, "jax" and "jax-compiled" are
nnkernel on its JAX backend, eager and as one jitted step (`jax_side`).
`make_step(case)` builds the step from the builder registered for (kind, impl)
with `common.step`; the pytest-benchmark suite in bench/ calls it in-process too,
so both measure the same code. A builder that cannot run here raises
`common.Unavailable`; the worker answers {"unavailable": reason} and nothing is timed.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np

from .common import BUILDERS, Step, Unavailable

SIDES = {"nnkernel": "nnkernel", "nnkernel-loop": "nnkernel", "numpy-loop": "numpy",
         "torch": "torch", "torch-func": "torch", "torch-loop": "torch",
         "jax": "jax", "jax-compiled": "jax"}
# the modules whose @step builders make_step looks up (each imports its library lazily)
STEP_MODULES = ("nnkernel_side", "numpy_side", "torch_side", "jax_side", "transformer",
                "recurrent")


def make_step(case: dict) -> Step:
    """The step function of one case (see the module docstring for the fields)."""
    import importlib

    for name in STEP_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    impl, kind = case["impl"], case["kind"]
    if impl not in SIDES:
        raise ValueError(f"unknown implementation {impl!r}; valid: {', '.join(SIDES)}")
    build = BUILDERS.get((kind, impl))
    if build is None:
        have = sorted(i for k, i in BUILDERS if k == kind)
        raise ValueError(f"no {impl!r} step for the {kind!r} workload; it has: "
                         f"{', '.join(have) or 'none (unknown kind)'}")
    return build(case)


# -- timing ----------------------------------------------------------------------------------
def calibrate(step: Step, warmup_s: float, round_s: float) -> int:
    """Warm up for about ``warmup_s`` (at least 3 steps); return steps filling ``round_s``."""
    step.run()
    step.sync()
    done, t0 = 1, time.perf_counter()
    while True:
        step.run()
        done += 1
        step.sync()
        elapsed = time.perf_counter() - t0
        if done >= 3 and elapsed >= warmup_s:
            break
    per_step = elapsed / (done - 1)
    return max(1, round(round_s / per_step))


def time_round(step: Step, steps: int) -> float:
    """Seconds per step over ``steps`` steps, the device synchronised before each clock read."""
    step.sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step.run()
    step.sync()
    return (time.perf_counter() - t0) / steps


def gemm_gflops(side: str, n: int, dtype: str, repeats: int, device: str = "cpu") -> list[float]:
    """GFLOP/s of n×n @ n×n matmuls in this process's library (the machine's GEMM ceiling)."""
    impl = {"torch": "torch", "jax": "jax"}.get(side, "nnkernel")
    step = make_step({"kind": "matmul", "impl": impl, "n": n, "dtype": dtype, "device": device})
    calibrate(step, 0.0, 0.0)
    return [2.0 * n**3 / time_round(step, 1) / 1e9 for _ in range(repeats)]


# -- the worker process --------------------------------------------------------------------------
def describe(side: str, device: str = "cpu") -> dict:
    """Versions, thread settings and BLAS libraries as this process sees them."""
    import platform

    info = {"side": side, "python": platform.python_version(), "numpy": np.__version__,
            "pid": os.getpid(),
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                   "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                   "MKL_NUM_THREADS")}}
    if side == "jax":
        import jax
        import jaxlib

        info["jax"] = f"{jax.__version__} (jaxlib {jaxlib.__version__}, " \
            f"{', '.join(sorted({d.platform for d in jax.devices()}))})"
        info["nnkernel"] = __import__("nnkernel").__version__
    elif side == "torch":
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
        info["torch_mkl"] = bool(torch.backends.mkl.is_available())
        info["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
        if device == "gpu" and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    else:
        from ...backend.malloc import status

        info["malloc"] = status()
        if side == "nnkernel":
            import nnkernel

            info["nnkernel"] = nnkernel.__version__
        if device == "gpu":
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(0)
            info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) \
                else str(props["name"])
            info["cupy"] = cupy.__version__
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads",
                                                       "threading_layer", "architecture")}
                               for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    info["torch_loaded"] = "torch" in sys.modules
    return info


def serve(handle, stdin=None) -> None:
    """Answer JSON-line commands with ``handle(cmd) -> dict`` until "quit" or end of input.

    The protocol uses a private copy of stdout; file descriptor 1 is pointed at
    stderr so a library that prints cannot corrupt an answer.
    """
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in stdin or sys.stdin:
        cmd = json.loads(line)
        if cmd.get("cmd") == "quit":
            break
        try:
            answer = handle(cmd)
        except Exception as err:  # noqa: BLE001 - sent back to the parent, which raises it
            answer = {"error": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc()}
        out.write(json.dumps(answer) + "\n")
    out.close()


class BenchWorker:
    """Command handler of one library's process: holds the cases set up in it."""

    def __init__(self, side: str, torch_threads: int = 2):
        self.side = side
        self.cases: dict = {}
        if side == "torch":
            import torch

            torch.set_num_threads(torch_threads)
        if side in ("numpy", "nnkernel"):
            # nnkernel is timed as `nnkernel train` runs it, with freed memory kept in the heap;
            # the hand-written step is the floor a library could reach, so it gets the same
            # allocator setting and a comparison measures library overhead only.
            from ...backend.malloc import keep_freed_memory

            keep_freed_memory()

    def __call__(self, cmd: dict) -> dict:
        op = cmd["cmd"]
        if op == "info":
            return describe(self.side, cmd.get("device", "cpu"))
        if op == "ceiling":
            return {"gflops": gemm_gflops(self.side, cmd["n"], cmd["dtype"], cmd["repeats"],
                                          cmd.get("device", "cpu"))}
        if op == "setup":
            case = cmd["case"]
            if SIDES.get(case["impl"]) != self.side:
                raise ValueError(f"implementation {case['impl']!r} does not run in the "
                                 f"{self.side} worker")
            try:
                step = make_step(case)
            except Unavailable as why:
                return {"unavailable": str(why)}
            steps = calibrate(step, cmd.get("warmup_s", 0.1), cmd.get("round_s", 0.2))
            self.cases[cmd["id"]] = (step, steps)
            return {"steps": steps}
        if op == "round":
            step, steps = self.cases[cmd["id"]]
            return {"seconds": time_round(step, steps), "steps": steps}
        if op == "drop":
            self.cases.clear()
            return {}
        raise ValueError(f"unknown command {op!r}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("nnkernel", "numpy", "torch", "jax"):
        print("usage: python -m nnkernel.bench.workers nnkernel|numpy|torch|jax [torch threads]",
              file=sys.stderr)
        return 2
    threads = int(argv[1]) if len(argv) > 1 else 2
    serve(BenchWorker(argv[0], threads))
    return 0

