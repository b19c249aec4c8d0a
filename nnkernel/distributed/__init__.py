"""Data-parallel training over MPI (mpi4py): many processes, one model.

    mpiexec -n 2 nnkernel train --distributed          # the command line
    mpiexec -n 2 python train.py                       # a script calling:

    import nnkernel as nk
    from nnkernel import distributed as dist
    dist.init()                                        # MPI and the watchdog, once
    nk.fit(model, X, y, batch_size=256, distributed=True)   # 256 = the global batch

or, in a loop of one's own, the pieces:

    dist.broadcast_parameters(model, optimizer)        # rank 0's arrays everywhere
    ...forward, loss and backward on this rank's shard...
    dist.allreduce_gradients(model)                    # ONE allreduce, the mean
    optimizer.step(model.params, model.grads)
    dist.reduce_metrics({"loss": loss_sum}, op="sum")

``dist.rank`` and ``dist.size`` are this process's rank and the number of ranks.
How fit shards batches, weights uneven shards, treats BatchNorm, metrics,
callbacks and interruptions: `nnkernel.distributed.parallel`. How buffers travel
(in place on NumPy, NCCL or CUDA-aware MPI on a GPU): `.transport`. What bounds
a wait for a dead rank: `.watchdog`. Install: ``pip install "nnkernel[mpi]"``.
"""

from __future__ import annotations

from . import transport as _transport
from .comm import (
    DEFAULT_TIMEOUT,
    DistributedError,
    RanksDisagreeError,
    World,
    init,
    launched,
    world,
)
from .parallel import DataParallel, broadcast, shard_bounds


def __getattr__(name):  # dist.rank, dist.size, dist.local_rank: of the world, started if needed
    if name in ("rank", "size", "local_rank", "local_size", "is_root"):
        return getattr(world(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def allreduce_gradients(model, *, average: bool = True, method: str | None = None) -> None:
    """Sum the model's flat gradient buffer over the ranks with ONE allreduce.

    With ``average`` (the default) the sum is divided by the number of ranks:
    the gradient of the mean loss when every rank's shard has the same size (for
    uneven shards scale each rank's dL/dy by its share and pass average=False,
    as `fit` does). In place on NumPy (MPI_IN_PLACE); see `.transport` for GPUs.
    """
    w = world()
    if w.size == 1:
        return
    store = model.store
    via = _transport.choose(w, model.backend, method)
    with model.backend.activate():
        store.set_grad(via.allreduce(store.grad, "the gradient allreduce"))
        if average:
            scale = 1.0 / w.size
            if store.mutable:
                grad = store.grad
                grad *= scale
            else:
                store.set_grad(store.grad * scale)


def broadcast_parameters(model, optimizer=None, *, root: int = 0,
                         method: str | None = None) -> None:
    """Rank ``root``'s parameters, layer state (and optimizer state) onto every rank."""
    w = world()
    broadcast(w, _transport.choose(w, model.backend, method), model, optimizer, root)


def reduce_metrics(values, op: str = "mean"):
    """Sum or mean over the ranks of a number, an array or a dict of them (one allreduce)."""
    if op not in ("sum", "mean"):
        raise ValueError(f"op must be 'sum' or 'mean', got {op!r}")
    w = world()
    single = not isinstance(values, dict)
    items = {"_": values} if single else dict(values)
    out = {}
    for k, part in zip(items, w.sum_arrays(items.values(), "the metrics reduction"),
                       strict=True):
        part = part / w.size if op == "mean" else part
        out[k] = float(part) if part.ndim == 0 else part
    return out["_"] if single else out


__all__ = ["DEFAULT_TIMEOUT", "DataParallel", "DistributedError", "RanksDisagreeError", "World",
           "allreduce_gradients", "broadcast_parameters", "init", "launched", "reduce_metrics",
           "shard_bounds", "world"]
