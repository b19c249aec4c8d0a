"""The world of ranks: MPI through mpi4py, every collective under the watchdog's deadline.

mpi4py is imported only here and only when asked (`init`), so nnkernel runs
without it. Ranks and sizes come from MPI_COMM_WORLD; the node-local rank
(for ``rank % local GPUs``) from the shared-memory split of it.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..backend import to_numpy
from ..checks import is_real
from ..errors import ConfigError, NnkernelError
from .watchdog import Watchdog

DEFAULT_TIMEOUT = 300.0  # s; long enough for rank 0's checkpoint writes and a slow data load
EXIT_TIMEOUT = 3         # the exit status of a job aborted by the watchdog
DRAIN = 0.2              # s an aborting rank leaves the launcher to forward its last lines
# Set by MPI launchers (MPICH/hydra, Intel MPI, Open MPI, MVAPICH, PMIx-based ones such as
# srun --mpi=pmix); a plain `python` has none of them. SLURM_PROCID is not one: an sbatch
# script has it without any MPI launcher.
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE",
                      "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
INSTALL_HINT = 'pip install "nnkernel[mpi]" (mpi4py and the mpich wheel)'


class DistributedError(NnkernelError):
    """MPI is missing, the job was not started by an MPI launcher, or a collective failed."""

    # True for an error every rank raises at the same point, from the same shared data: no
    # rank is left waiting in a collective, so the job can end without MPI_Abort
    on_every_rank = False


class RanksDisagreeError(DistributedError, ConfigError):
    """The ranks were started with different models, settings or data."""

    on_every_rank = True  # every rank compares the same allgathered fingerprints


def launched() -> bool:
    """Whether this process was started by an MPI launcher (mpiexec, mpirun, srun)."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def timeout_from_env(timeout=None) -> float:
    if timeout is None:
        text = os.environ.get("NNKERNEL_MPI_TIMEOUT")
        if text is None:
            return DEFAULT_TIMEOUT
        try:
            timeout = float(text)
        except ValueError:
            raise ConfigError(f"NNKERNEL_MPI_TIMEOUT must be a number of seconds, got "
                              f"{text!r}") from None
    if not is_real(timeout) or not timeout > 0:
        raise ConfigError(f"the MPI timeout must be a positive number of seconds, got "
                          f"{timeout!r}")
    return float(timeout)


def import_mpi():
    """mpi4py's MPI module, or a one-line DistributedError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(f"distributed training needs mpi4py and an MPI library ({e}); "
                               f"{INSTALL_HINT}") from None
    except (RuntimeError, OSError) as e:  # mpi4py present, its MPI library not loadable
        raise DistributedError(f"mpi4py cannot load an MPI library ({e}); "
                               f"{INSTALL_HINT}") from None
    return MPI


class World:
    """This process's place among the ranks, and the collectives nnkernel uses."""

    def __init__(self, comm, MPI, timeout: float = DEFAULT_TIMEOUT):
        self.comm, self.MPI = comm, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.is_root = self.rank == 0
        self.timeout = float(timeout)
        local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        # MPI_Abort from the watchdog thread while the main thread is inside MPI needs
        # MPI_THREAD_MULTIPLE (mpi4py asks for it; MPICH grants it); else exit the process
        # and let the launcher end the others.
        self._abort_ok = MPI.Query_thread() == MPI.THREAD_MULTIPLE
        self.watchdog = Watchdog(self.timeout, self._describe, self._abort_from_watchdog) \
            if self.size > 1 else None

    def __repr__(self):
        return f"World(rank {self.rank} of {self.size}, timeout {self.timeout:g} s)"

    # -- ending the job ------------------------------------------------------------------------
    def _describe(self):
        peers = [r for r in range(self.size) if r != self.rank]
        others = f"rank {peers[0]}" if len(peers) == 1 else \
            f"at least one of ranks {', '.join(map(str, peers))}"
        return f"rank {self.rank} of {self.size}", others

    def _abort_from_watchdog(self, message: str) -> None:
        self.abort(EXIT_TIMEOUT)

    def abort(self, code: int = 1) -> None:
        """End every rank now (MPI_Abort): what a rank does when it cannot go on alone."""
        sys.stdout.flush()
        sys.stderr.flush()
        if self._abort_ok:
            time.sleep(DRAIN)  # the launcher forwards output asynchronously; Abort drops it
            self.comm.Abort(code)
        os._exit(code)

    # -- guarded collectives -------------------------------------------------------------------
    def call(self, what, fn, *args, **kwargs):
        """``fn(*args)`` (a blocking collective) under the deadline; ``what`` names it."""
        dog = self.watchdog
        if dog is None:
            return fn(*args, **kwargs)
        dog.arm(what)
        try:
            return fn(*args, **kwargs)
        finally:
            dog.disarm()

    def allreduce_(self, buf, what, op=None):
        """Sum (or ``op``) ``buf`` over the ranks, in place: a host array or a device buffer
        that mpi4py can read (``__cuda_array_interface__``, with a CUDA-aware MPI)."""
        if self.size > 1:
            self.call(what, self.comm.Allreduce, self.MPI.IN_PLACE, buf,
                      op=self.MPI.SUM if op is None else op)
        return buf

    def bcast_(self, buf, root, what):
        if self.size > 1:
            self.call(what, self.comm.Bcast, buf, root=root)
        return buf

    def sum(self, values, what) -> np.ndarray:
        """The elementwise sum over the ranks of a host vector, in float64."""
        arr = np.array(values, dtype=np.float64).reshape(-1)
        return self.allreduce_(arr, what)

    def sum_arrays(self, arrays, what) -> list[np.ndarray]:
        """The elementwise sums over the ranks of numbers or arrays of any shape and backend,
        in float64 host arrays of their shapes: packed into one vector, one allreduce."""
        host = [np.asarray(to_numpy(a), dtype=np.float64) for a in arrays]
        flat = self.sum(np.concatenate([h.reshape(-1) for h in host]) if host else [], what)
        out, at = [], 0
        for h in host:
            out.append(flat[at:at + h.size].reshape(h.shape))
            at += h.size
        return out

    def allgather(self, obj, what) -> list:
        if self.size == 1:
            return [obj]
        return self.call(what, self.comm.allgather, obj)

    def bcast_obj(self, obj, root, what):
        if self.size == 1:
            return obj
        return self.call(what, self.comm.bcast, obj, root=root)

    def max_int(self, values, what) -> np.ndarray:
        arr = np.array(values, dtype=np.int64).reshape(-1)
        return self.allreduce_(arr, what, op=self.MPI.MAX)

    def barrier(self, what="a barrier") -> None:
        if self.size > 1:
            self.call(what, self.comm.Barrier)


_WORLD: World | None = None


def init(timeout=None, *, require_launcher: bool = False) -> World:
    """Start MPI (once per process) and the watchdog; returns the `World`.

    ``timeout`` (seconds, default $NNKERNEL_MPI_TIMEOUT or 300) bounds every
    collective. With ``require_launcher`` a process not started by mpiexec /
    mpirun / srun is refused (the command line's --distributed); otherwise it is
    a world of one rank.
    """
    global _WORLD
    seconds = timeout_from_env(timeout)
    if _WORLD is not None:
        if timeout is not None and _WORLD.watchdog is not None:
            _WORLD.timeout = seconds
            _WORLD.watchdog.set_timeout(seconds)
        return _WORLD
    if require_launcher and not launched():
        raise DistributedError("--distributed needs the processes started by an MPI launcher, "
                               "e.g. mpiexec -n 2 nnkernel train --distributed ...")
    MPI = import_mpi()
    new = World(MPI.COMM_WORLD, MPI, seconds)
    expected = launcher_size()
    if expected is not None and expected > 1 and new.size == 1:
        # e.g. Open MPI's mpirun first on PATH, mpi4py on the mpich wheel: every process
        # would be a rank 0 of its own and they would all write the same run directory
        library = MPI.Get_library_version().splitlines()[0].strip()
        raise DistributedError(f"the launcher started {expected} processes but MPI sees one "
                               f"(rank 0 of 1): the mpiexec used is not the one of the MPI "
                               f"that mpi4py loaded ({library}); use the mpiexec next to "
                               f"this Python ({os.path.dirname(sys.executable)})")
    _WORLD = new
    return _WORLD


def launcher_size() -> int | None:
    """The number of processes the launcher says it started, when it says."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        text = os.environ.get(name)
        if text and text.isdigit():
            return int(text)
    return None


def world() -> World:
    """The world started by `init` (starting it with the defaults if needed)."""
    return _WORLD if _WORLD is not None else init()
