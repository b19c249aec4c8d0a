"""``nnkernel train --distributed``: data-parallel training over MPI ranks.

    mpiexec -n 2 nnkernel train --distributed --out runs/dp

Every rank runs the same command on the same data (checked at the start).
Rank 0 prints and writes the run directory; the others are quiet. A GPU run
gives each rank the GPU ``local rank % visible GPUs`` (choose GPUs with
CUDA_VISIBLE_DEVICES). On the CPU each rank's BLAS threads are chosen as for
one process (nnkernel.cli.threads) but from its share of the node's cores, unless
--threads or OMP/OPENBLAS/MKL_NUM_THREADS say otherwise: P ranks with a BLAS
thread per core each would oversubscribe the machine P times.

An error on one rank ends every rank at once (MPI_Abort), with the error line
naming the rank: the others would otherwise wait in their next collective. An
error every rank raises together (ranks that disagree on the model) ends the job
normally, with rank 0's line.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import time

from ..errors import ConfigError

GRACE = 0.5  # s a rank other than 0 waits before aborting, so rank 0's own report wins


def add_flags(group, types) -> None:
    group.add_argument("--distributed", action="store_true", default=None,
                       help="data-parallel over MPI ranks, started by mpiexec -n P; "
                       "--batch-size is then the global batch (pip install 'nnkernel[mpi]')")
    group.add_argument("--mpi-timeout", type=types.float_in(0, math.inf, lo_open=True),
                       metavar="SECONDS", help="with --distributed: abort every rank when one "
                       "waits this long for the others (default 300, or "
                       "$NNKERNEL_MPI_TIMEOUT)")


def start(args):
    """The `DataParallel` of this rank for --distributed, else None."""
    if not getattr(args, "distributed", None):
        if getattr(args, "mpi_timeout", None) is not None:
            raise ConfigError("--mpi-timeout needs --distributed")
        return None
    from ..distributed import DataParallel, init

    world = init(args.mpi_timeout, require_launcher=True)
    if not world.is_root:
        args.quiet = True  # one progress line and one result, from rank 0
    args.core_share = _share_of_cores(world)  # the most threads this rank's run may choose
    return DataParallel(world)


def _share_of_cores(world) -> int:
    from .threads import cores

    return max(1, cores() // world.local_size)


def place(settings, args, dp) -> None:
    """A GPU run: this rank's GPU is its node-local rank modulo the GPUs it can see.

    ``settings``: the run's RunConfig (or a dict with "device" and "backend"); a --device
    given on the command line is changed in ``args`` instead."""
    from ..backend.devices import parse_device

    def get(name):
        return settings.get(name) if isinstance(settings, dict) else getattr(settings, name)

    given = args.device is not None
    kind, _ = parse_device(args.device if given else get("device") or "cpu")
    if kind != "gpu":
        return
    count = gpu_count(args.backend or get("backend"))
    if count == 0:
        return  # the backend reports the missing GPU itself
    mine = f"gpu:{dp.world.local_rank % count}"
    if given:
        args.device = mine
    elif isinstance(settings, dict):
        settings["device"] = mine
    else:
        settings.device = mine


def gpu_count(backend_name) -> int:
    try:
        if backend_name == "torch":
            import torch

            return torch.cuda.device_count()
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no CUDA: no GPUs
        return 0


@contextlib.contextmanager
def one_rank_fails_all(dp, debug: bool = False):
    """An exception on this rank: report it, naming the rank, and end every rank."""
    try:
        yield
    except BaseException as error:  # noqa: BLE001 - Ctrl-C too: the others must not wait
        if dp.size == 1 or isinstance(error, SystemExit):
            raise
        from .report import EXIT_INTERRUPTED, report

        if isinstance(error, KeyboardInterrupt):
            status, line = EXIT_INTERRUPTED, "nnkernel: interrupted"
        else:
            buf = io.StringIO()
            with contextlib.redirect_stderr(buf):
                status = report(error)
            line = buf.getvalue().strip()
        if debug:
            import traceback

            traceback.print_exc()
        if getattr(error, "on_every_rank", False):
            # No rank waits on another: end normally, so the launcher forwards rank 0's line
            # (an abort can kill it in transit)
            if dp.is_root:
                print(line, file=sys.stderr, flush=True)
            raise SystemExit(status) from None
        if not dp.is_root:
            time.sleep(GRACE)  # the same error on rank 0 ends the job with one message
        prefix = "nnkernel: error: "
        if line.startswith(prefix):
            line = prefix + f"(rank {dp.rank} of {dp.size}) " + line[len(prefix):]
        print(line, file=sys.stderr, flush=True)
        dp.world.abort(status)
