"""How many BLAS threads a run gets: chosen by the work, set once, recorded with the run.

A BLAS library starts a thread per core and hands each matrix product to all of
them. For a small network the products are too short to share: the threads spend
the step waiting for one another, and on a busy machine a thread that is not
scheduled stalls every product (``nnkernel train`` on digits: 1.4 s with one thread,
10 to 25 s with the library's default under load; bench/threads_under_load.py
measures it). Large products do gain from every core. So a run gets one thread when
the largest matrix product of its step is below `SMALL_PRODUCT` multiply-adds, else
the cores this process may use; ``--threads N`` or the OMP/OPENBLAS/MKL_NUM_THREADS
variables decide instead when given. The count is set once for the whole process
(threadpoolctl, ~1 ms; never per operation) and recorded in the run's config.json,
so that a resume sums in the same order as the run it continues.
"""

from __future__ import annotations

import math
import os

from ..backend.devices import parse_device

SMALL_PRODUCT = 1 << 24  # multiply-adds: ~0.3 ms on one core; digits' largest is 2^21
ENVIRONMENT = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cores() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def largest_product(model, batch_size: int) -> int:
    """Multiply-adds of the largest matrix product of a training step: for each layer with a
    weight of >= 2 dimensions, batch x members x weight size x output positions per
    channel (1 for Dense, H'W' for a convolution). The backward products are as large."""
    shape, largest = tuple(model.input_shape), 0
    members = model.ensemble or 1
    for layer in model.layers:
        if any(d is None for d in shape):
            shape = None
        out = tuple(layer.output_shape(shape)) if shape is not None else None
        for weight in layer.param_shapes().values():
            if len(weight) >= 2:
                positions = math.prod(out[1:]) if out else 1
                largest = max(largest, batch_size * members * math.prod(weight) * positions)
        shape = out
    return largest


def environment_setting() -> str | None:
    """"OPENBLAS_NUM_THREADS=1" (the first such variable set), or None."""
    return next((f"{k}={os.environ[k]}" for k in ENVIRONMENT if os.environ.get(k)), None)


def choose(model, batch_size: int, share: int | None = None) -> tuple[int, str]:
    """(threads, why) for a new run on the CPU. ``share``: the cores this process may take
    (under MPI, its part of the node's)."""
    return _choose(largest_product(model, batch_size), share)


def choose_for_rows(model, rows: int, share: int | None = None) -> tuple[int, str]:
    """`choose` for a sequence model: ``rows`` (batch · tokens) through its largest weight
    matrix, nested layers' included."""
    largest = max((math.prod(s) for s in model.store.shapes.values() if len(s) >= 2), default=0)
    return _choose(rows * largest, share)


def _choose(work: int, share: int | None) -> tuple[int, str]:
    available = min(cores(), share or cores())
    env = environment_setting()
    if env is not None:
        return current() or available, f"{env} (the environment)"
    if work < SMALL_PRODUCT:
        return 1, (f"the work: the largest matrix product is {work:,} multiply-adds, under "
                   f"{SMALL_PRODUCT:,}")
    return available, (f"the work: the largest matrix product is {work:,} multiply-adds; "
                       f"{available} core(s) available")


def on_cpu(device) -> bool:
    try:
        return parse_device(device or "cpu")[0] == "cpu"
    except Exception:  # noqa: BLE001 - a bad device is reported by the backend
        return False


def apply(n: int) -> None:
    """Set the BLAS and OpenMP thread count of the whole process (once per run)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(n))


def current() -> int | None:
    """The BLAS threads now (the first BLAS library's), or None if none is found."""
    libraries = blas_libraries()
    return libraries[0]["threads"] if libraries else None


def blas_libraries() -> list[dict]:
    """The BLAS libraries loaded and their thread counts (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    return [{"library": lib.get("internal_api"), "version": lib.get("version"),
             "threads": lib.get("num_threads"), "architecture": lib.get("architecture"),
             "file": lib.get("filepath")}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]


def rule() -> str:
    """The policy in one line, for `nnkernel info`."""
    env = environment_setting()
    if env is not None:
        return f"{env} from the environment, unless --threads says otherwise"
    return (f"1 when the largest matrix product of a step is under {SMALL_PRODUCT:,} "
            f"multiply-adds, else {cores()} (the cores this process may use); --threads N "
            "sets it, a resume keeps the run's")
