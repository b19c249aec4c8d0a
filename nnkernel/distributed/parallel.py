"""`DataParallel`: what `fit` does differently when one model trains on many ranks.

The rules (the docs' "Data parallelism" section says the same):

- ``batch_size`` is the global batch. Every rank draws the same shuffled order
  (the permutation comes from (seed, epoch) on every rank) and takes its
  contiguous shard of each global batch: a batch of B rows over P ranks gives
  rank r ``B // P + (r < B % P)`` rows, so shard sizes differ by at most one.
- Each rank's loss is the mean over its shard; its dL/dy is scaled by its share
  ``b_r / B`` before backward, so ONE allreduce (a sum) of the flat gradient
  buffer gives exactly the gradient of the global batch's mean loss, for even
  and uneven shards alike. Every rank then applies the same update.
- A last batch too small to give every rank a row (two rows with BatchNorm)
  joins the batch before it; a batch_size below P (2P with BatchNorm) is refused.
- BatchNorm uses each rank's local batch statistics (as PyTorch's DDP without
  SyncBatchNorm): a P-rank run equals a one-process run whose global batches are
  normalised in P "ghost" shards. The running averages, which training never
  reads, are averaged over the ranks at the end of every epoch (and before an
  interruption's checkpoint), so every rank and the checkpoint hold the same.
- At the start the ranks compare hashes of the model config, optimizer, fit
  settings and a fingerprint of the data, then take rank 0's parameters, state
  and optimizer state. Metrics (loss, accuracy, validation) are sums over the
  ranks; validation is sharded the same way. Only rank 0 shows progress and runs
  callbacks that write files (``root_only``); the others (EarlyStopping,
  ReduceLROnPlateau) run everywhere, on the same numbers, so they agree.
- A stop (Ctrl-C, SIGTERM, a NaN loss) is decided together at each check step:
  one 3-integer allreduce, so every rank stops at the same step.
"""

from __future__ import annotations

import functools
import hashlib
import json

import numpy as np

from ..backend import to_numpy
from ..errors import ConfigError
from ..train.signals import InterruptFlag
from ..train.step import train_step
from . import transport
from .comm import RanksDisagreeError, world

NO_BAD = -(2**62)  # "no non-finite loss" in the MAX-reduced control vector


def shard_bounds(a: int, b: int, rank: int, size: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous part of rows [a, b): sizes differ by at most one."""
    q, rem = divmod(b - a, size)
    start = a + rank * q + min(rank, rem)
    return start, start + q + (1 if rank < rem else 0)


def _writes_files(callback) -> bool:
    """Whether a callback writes files (then only rank 0 runs it): its ``root_only``
    (True for SaveEachEpoch, ModelCheckpoint and CSVLogger)."""
    return bool(getattr(callback, "root_only", False))


class AgreedFlag:
    """The interrupt flag as every rank sees it: it changes only at a check step, together."""

    def __init__(self):
        self._local = InterruptFlag()  # what this rank's signal handlers saw
        self.raised, self.signal = False, None

    def __enter__(self):
        self._local.__enter__()
        return self

    def __exit__(self, *exc):
        return self._local.__exit__(*exc)


class DataParallel:
    """Data parallelism over the MPI world (or ``world``), for ``fit(..., distributed=)``.

    ``gpu_allreduce`` picks the transport of GPU buffers: "auto" (NCCL for CuPy),
    "nccl", "mpi" (CUDA-aware MPI) or "staged" (through the host).
    """

    def __init__(self, world_=None, *, gpu_allreduce: str | None = None):
        self.world = world_ if world_ is not None else world()
        self.rank, self.size, self.is_root = self.world.rank, self.world.size, self.world.is_root
        self.gpu_allreduce = gpu_allreduce
        self.transport = None
        self.gradient_allreduces = 0  # one per step: tests count them
        self._share = 1.0
        self._run = None

    def __repr__(self):
        return f"DataParallel(rank {self.rank} of {self.size})"

    # -- before the first step -----------------------------------------------------------------
    def plan(self, bounds: list, batchnorm: bool) -> list:
        """The global batches, with a last batch too small to shard joined to the one before."""
        need = self.size * (2 if batchnorm else 1)
        first = bounds[0][1] - bounds[0][0]
        if first < need:
            why = " (BatchNorm needs 2 rows per rank)" if batchnorm else ""
            raise ConfigError(f"batch_size {first} is the global batch and must be at least "
                              f"{need} for {self.size} ranks{why}")
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < need:
            bounds = bounds[:-2] + [(bounds[-2][0], bounds[-1][1])]
        return bounds

    def callbacks(self, callbacks) -> list:
        return list(callbacks) if self.is_root else [cb for cb in callbacks
                                                     if not _writes_files(cb)]

    def flag(self) -> AgreedFlag:
        return AgreedFlag()

    def start(self, run, settings: dict, data) -> None:
        """Check that every rank runs the same thing, then take rank 0's arrays."""
        model, optimizer = run.model, run.optimizer
        self._run = run
        self.transport = transport.choose(self.world, model.backend, self.gpu_allreduce)
        mine = fingerprints(model, optimizer, settings, data)
        every = self.world.allgather(mine, "the start-up check of the ranks' settings")
        for part in mine:
            differ = [r for r, theirs in enumerate(every) if theirs[part] != every[0][part]]
            if differ:
                ranks = ", ".join(map(str, differ))
                raise RanksDisagreeError(
                    f"the ranks disagree: rank(s) {ranks} have a different {part} from rank 0 "
                    f"(hash {every[differ[0]][part][:12]} vs {every[0][part][:12]}); every "
                    f"rank must run the same command on the same data")
        self.broadcast(model, optimizer)

    def broadcast(self, model, optimizer=None) -> None:
        broadcast(self.world, self.transport, model, optimizer)

    # -- each step -----------------------------------------------------------------------------
    def shard(self, a: int, b: int) -> tuple[int, int]:
        lo, hi = shard_bounds(a, b, self.rank, self.size)
        self._share = (hi - lo) / (b - a)
        return lo, hi

    def step_for(self, model, loss, optimizer, score=None):
        """`train_step` as this rank runs it: its shard's dL/dy weighted by the shard's share
        of the global batch, then ONE allreduce (sum) of the gradient before the update."""
        def weighted(out, y, **options):
            value, dy = loss(out, y, **options)
            return value, (dy * self._share if self.size > 1 else dy)

        return functools.partial(train_step, model, weighted, optimizer, score=score,
                                 gradients=self.reduce_gradients)

    def reduce_gradients(self, model) -> None:
        """ONE allreduce (sum) of the model's whole flat gradient buffer."""
        if self.size == 1:
            return
        store = model.store
        with model.backend.activate():
            store.set_grad(self.transport.allreduce(store.grad, self._where("gradient allreduce")))
        self.gradient_allreduces += 1

    def agree(self, bad, flag: AgreedFlag):
        """(first non-finite loss index or None) over all ranks; sets the shared stop flag."""
        local = flag._local
        signal = int(local.signal) if local.raised and local.signal is not None else 0
        vec = self.world.max_int([int(local.raised), signal, NO_BAD if bad is None else -bad],
                                 self._where("check of the stop flags"))
        if vec[0]:
            flag.raised, flag.signal = True, int(vec[1]) or local.signal
        return None if vec[2] == NO_BAD else int(-vec[2])

    def _where(self, what):
        run = self._run
        if run is None:
            return what
        return lambda: f"the {what} (epoch {run.epoch + 1}, step {run.step + 1})"

    # -- at the end of an epoch ----------------------------------------------------------------
    def end_epoch(self, model, totals) -> None:
        """Global sums of the epoch's loss, hits and rows; the ranks' mean BatchNorm averages."""
        if self.size == 1:
            return
        loss, correct, seen = self.world.sum_arrays(
            [totals.loss, totals.correct, totals.seen],
            self._where("reduction of the epoch's metrics"))
        totals.loss, totals.correct, totals.seen = loss, correct, int(round(float(seen)))
        self.average_state(model)

    def average_state(self, model) -> None:
        if not model.state or self.size == 1:
            return
        keys = list(model.state)
        sums = self.world.sum_arrays([model.state[k] for k in keys],
                                     "the BatchNorm statistics average")
        for k, total in zip(keys, sums, strict=True):
            model.state[k] = model.backend.asarray(total / self.size, dtype=model.dtype)

    def evaluate(self, evaluate, model, X, y, *, loss, batch_size):
        """``evaluate`` over this rank's contiguous share of (X, y), combined over the ranks."""
        from ..losses import cross_entropy, get_loss

        classify = get_loss(loss) is cross_entropy
        n = X.shape[0]
        lo, hi = shard_bounds(0, n, self.rank, self.size)
        width = model.ensemble or 1
        vl, va = 0.0, 0.0  # a rank with no rows (fewer rows than ranks) adds nothing
        if hi > lo:
            vl, va = evaluate(model, X[lo:hi, ...], y[lo:hi, ...], loss=loss,
                              batch_size=batch_size)
        rows = float(hi - lo)
        local = np.concatenate([np.broadcast_to(np.asarray(v, np.float64), (width,)) * rows
                                for v in (vl, va if classify else 0.0)])
        total = self.world.sum(local, "the validation metrics") / n

        def back(v):
            return float(v[0]) if model.ensemble is None else v.tolist()

        return back(total[:width]), (back(total[width:]) if classify else None)


def broadcast(world_, via, model, optimizer=None, root: int = 0) -> None:
    """Rank ``root``'s parameters, layer state and optimizer state onto every rank.

    The flat parameter buffer goes through the model's transport (NCCL on a GPU);
    the small rest (BatchNorm statistics, optimizer moments) as host arrays.
    """
    if world_.size == 1:
        return
    store, mine = model.store, world_.rank == root
    with model.backend.activate():
        store.set_flat(via.bcast(store.flat, root, "the parameter broadcast"))
    if model.state:
        host = world_.bcast_obj({k: np.asarray(to_numpy(v)) for k, v in model.state.items()}
                                if mine else None, root, "the layer state broadcast")
        for key in model.state:
            model.state[key] = model.backend.asarray(host[key], dtype=model.dtype)
    if optimizer is not None:
        state = world_.bcast_obj(optimizer.state_arrays() if mine else None, root,
                                 "the optimizer state broadcast")
        if state and not mine:
            optimizer.load_state_arrays(state, model.params)
        optimizer.t = world_.bcast_obj(optimizer.t, root, "the optimizer step count")


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprints(model, optimizer, settings: dict, data) -> dict:
    """Hashes of what must be the same on every rank, part by part (for the error message)."""
    config = optimizer.config()
    return {
        "model config": _digest(model.config()),
        "optimizer": _digest(config),
        "training settings": _digest({**settings, "backend": model.backend.name}),
        "training data": data_fingerprint(data),
    }


def data_fingerprint(arrays) -> str:
    """Shapes, dtypes, every 1-D array (labels, weights) and the others' sampled rows.

    The rows are those a run's own data fingerprint samples (`io.fingerprint.sampled_rows`).
    Cheap even on a GPU (one gather), and only exact bytes, no float sums: ranks on
    different GPU models may round a sum differently and would be refused for nothing.
    """
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        h.update(repr((tuple(a.shape), str(a.dtype))).encode())
        host = to_numpy(a) if a.ndim == 1 else _sampled_rows(a)
        h.update(np.ascontiguousarray(host).tobytes())
    return h.hexdigest()


def _sampled_rows(a):
    """The sampled rows of a device array as a host array (one gather, one copy)."""
    import array_api_compat

    from ..backend import backend_class_of
    from ..io.fingerprint import sampled_rows

    xp = backend_class_of(a).namespace()
    idx = np.asarray(sampled_rows(a.shape[0]), dtype=np.int64)
    rows = xp.take(a, xp.asarray(idx, device=array_api_compat.device(a)), axis=0)
    return np.asarray(to_numpy(rows))
