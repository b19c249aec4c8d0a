"""What each rank runs in tests/test_distributed.py: ``mpiexec -n 2 python THIS CASE [DIR]``.

Rank 0 prints one JSON object (the test reads it); nothing here asserts, so a
failure shows up in the test with the numbers.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np

import nnkernel as nk
from nnkernel import distributed as dist
from nnkernel.cli.run_policy import SaveEachEpoch
from nnkernel.distributed import DataParallel, shard_bounds
from nnkernel.io import checkpoint, run_dir


def digits():
    d = nk.datasets.load("digits")
    return d.X_train, d.y_train, d.X_test, d.y_test


def mlp(batchnorm=False, ensemble=None, seed=3, backend="numpy"):
    layers = [nk.Dense(64, 48)] + ([nk.BatchNorm(48)] if batchnorm else []) + [
        nk.ReLU(), nk.Dense(48, 10)]
    return nk.Sequential(*layers, seed=seed, dtype="float64", ensemble=ensemble,
                         backend=backend)


def flat(model):
    return np.asarray(nk.backend.to_numpy(model.store.flat), dtype=np.float64)


def gap(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def train(model, X, y, dp, epochs=3, batch=64, lr=1e-3, **kw):
    return nk.fit(model, X, y, epochs=epochs, batch_size=batch, optimizer=nk.optim.Adam(lr=lr),
                  distributed=dp, progress=False, **kw)


def ghost_batches(model, X, y, epochs, batch, ranks, lr, seed=0):
    """One process doing what `ranks` ranks with local BatchNorm statistics do."""
    be, xp = model.backend, model.xp
    Xd, yd = be.asarray(X, dtype=model.dtype), be.asarray(y)
    n, opt = X.shape[0], nk.optim.Adam(lr=lr)
    bounds = [(i, min(i + batch, n)) for i in range(0, n, batch)]
    states = [dict(model.state) for _ in range(ranks)]
    for epoch in range(epochs):
        order = be.random((seed, epoch)).permutation(n)
        for a, b in bounds:
            total = 0.0
            for r in range(ranks):
                lo, hi = shard_bounds(a, b, r, ranks)
                model.state = states[r]  # this rank's running averages ...
                idx = order[lo:hi]
                out = model.forward(xp.take(Xd, idx, axis=0), train=True)
                states[r] = dict(model.state)  # ... as BatchNorm updated them
                _, dy = nk.losses.cross_entropy(out, xp.take(yd, idx, axis=0))
                model.backward(dy * ((hi - lo) / (b - a)), input_grad=False)
                total = total + np.array(model.store.grad)
            model.store.grad[...] = total
            opt.step(model.params, model.grads)
        mean = {k: sum(s[k] for s in states) / ranks for k in states[0]}
        states = [dict(mean) for _ in range(ranks)]
    model.state = states[0]


def own_loop(X, y):
    """The public pieces in a loop of one's own: broadcast, one allreduce, metrics."""
    model = mlp(seed=dist.rank)  # different weights on each rank ...
    opt = nk.optim.Adam(lr=1e-3)
    dist.broadcast_parameters(model, opt)  # ... until rank 0's are everywhere
    lo, hi = shard_bounds(0, 128, dist.rank, dist.size)  # an even split of 128 rows
    out = model.forward(model.backend.asarray(X[lo:hi], dtype=model.dtype), train=True)
    _, dy = nk.losses.cross_entropy(out, model.backend.asarray(y[lo:hi]))
    model.backward(dy, input_grad=False)
    dist.allreduce_gradients(model)  # the mean of the two halves' gradients
    ref = mlp(seed=0)
    out = ref.forward(ref.backend.asarray(X[:128], dtype=ref.dtype), train=True)
    _, dy = nk.losses.cross_entropy(out, ref.backend.asarray(y[:128]))
    ref.backward(dy, input_grad=False)
    metrics = dist.reduce_metrics({"rank": float(dist.rank), "pair": [1.0, dist.rank]}, op="sum")
    return {"broadcast_gap": gap(flat(model), flat(ref)),
            "allreduce_gap": gap(np.array(model.store.grad), np.array(ref.store.grad)),
            "metrics": {k: np.asarray(v).tolist() for k, v in metrics.items()}}


def equivalence():
    X, y, Xt, yt = digits()
    dp = DataParallel()
    out = {"ranks": dp.size, **own_loop(X, y)}
    model = mlp()
    hist = train(model, X, y, dp, validation_data=(Xt, yt))
    out["allreduces"] = dp.gradient_allreduces
    ens = mlp(ensemble=2)
    dp_ens = DataParallel()
    train(ens, X, y, dp_ens, epochs=2, lr=[1e-3, 3e-3])
    bn = mlp(batchnorm=True)
    train(bn, X, y, DataParallel(), epochs=2)
    strict = mlp(backend="array_api_strict")  # immutable arrays: the staged transport
    train(strict, X, y, DataParallel(), epochs=1)
    if dp.is_root:  # the references, in one process
        ref = mlp()
        ref_hist = train(ref, X, y, None, validation_data=(Xt, yt))
        out["weights_gap"] = gap(flat(model), flat(ref))
        out["history_gap"] = max(gap(hist[k], ref_hist[k]) for k in
                                 ("loss", "accuracy", "val_loss", "val_accuracy"))
        out["steps"] = 3 * len(range(0, X.shape[0], 64))
        ens_ref = mlp(ensemble=2)
        train(ens_ref, X, y, None, epochs=2, lr=[1e-3, 3e-3])
        out["ensemble_gap"] = gap(flat(ens), flat(ens_ref))
        strict_ref = mlp(backend="array_api_strict")
        train(strict_ref, X, y, None, epochs=1)
        out["strict_gap"] = gap(flat(strict), flat(strict_ref))
        ghost = mlp(batchnorm=True)
        ghost_batches(ghost, X, y, 2, 64, dp.size, 1e-3)
        out["batchnorm_gap"] = gap(flat(bn), flat(ghost))
        out["batchnorm_state_gap"] = max(gap(nk.backend.to_numpy(bn.state[k]),
                                             nk.backend.to_numpy(ghost.state[k]))
                                         for k in bn.state)
        whole = mlp(batchnorm=True)  # one process, whole-batch statistics: not the same
        train(whole, X, y, None, epochs=2)
        out["batchnorm_vs_whole_batch"] = gap(flat(bn), flat(whole))
        print(json.dumps(out))


class SignalAt(nk.optim.Adam):
    """Adam that sends SIGTERM to rank 1 only, after update ``at``: the ranks must agree."""

    def __init__(self, at, **kw):
        super().__init__(**kw)
        self.at = at

    def step(self, params, grads):
        super().step(params, grads)
        if self.t == self.at and dist.rank == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def nan_on_one_rank(X, y):
    """A loss that turns NaN on rank 1 only, at step 5: both ranks must raise, at step 5."""
    calls = [0]

    def flaky_mse(out, target, **kw):
        value, dy = nk.losses.mse(out, target, **kw)
        calls[0] += 1
        return (value * float("nan") if dist.rank == 1 and calls[0] == 5 else value), dy

    try:
        nk.fit(mlp(), X, np.eye(10)[y], loss=flaky_mse, epochs=1, batch_size=64,
               distributed=True, progress=False)
    except nk.NonFiniteError as e:
        return str(e)
    return None


def resume(directory):
    X, y, _, _ = digits()
    nan = nan_on_one_rank(X, y)
    writes = []
    for name in ("save_arrays", "atomic_write_json"):  # who writes what
        original = getattr(checkpoint, name)

        def record(path, *a, _original=original, **k):
            writes.append(str(path))
            return _original(path, *a, **k)

        setattr(checkpoint, name, record)
    whole = mlp()
    whole_hist = nk.fit(whole, X, y, epochs=3, batch_size=64, optimizer=nk.optim.Adam(lr=1e-3),
                        distributed=True, progress=False)
    model, opt = mlp(), SignalAt(23 + 7, lr=1e-3)  # epoch 2, step 7
    settings = {"note": "test"}
    try:
        nk.fit(model, X, y, epochs=3, batch_size=64, optimizer=opt, distributed=True,
               progress=False, callbacks=[SaveEachEpoch(directory, settings)])
        stopped = None
    except nk.TrainingInterrupted as stop:
        stopped = [stop.epoch, stop.step]
        if dist.rank == 0:
            run_dir.save(directory, model, opt, settings, stop.history, stop.epoch, stop.step)
    dist.world().barrier()
    saved = run_dir.load(directory)
    again = saved.build_model()
    opt2 = nk.optim.Adam(lr=1e-3)
    saved.restore_optimizer(opt2, again)
    hist = nk.fit(again, X, y, epochs=3, batch_size=64, optimizer=opt2, distributed=True,
                  progress=False, initial_epoch=saved.epoch, initial_step=saved.step,
                  history=saved.history)
    every = dist.world().allgather({"writes": writes, "stopped": stopped, "nan": nan}, "test")
    if dist.rank == 0:
        print(json.dumps({"stopped": [e["stopped"] for e in every],
                          "nan": [e["nan"] for e in every],
                          "writes": [e["writes"] for e in every],
                          "weights_gap": gap(flat(again), flat(whole)),
                          "loss_gap": gap(hist["loss"], whole_hist["loss"]),
                          "accuracy_gap": gap(hist["accuracy"], whole_hist["accuracy"])}))


class StopAfterEpoch(nk.Callback):
    """Rank 1 dies (SIGKILL) or hangs (SIGSTOP) at the end of epoch 1.

    Rank 0's deadline drops to 2 s only then, so that a slow start on a busy machine
    cannot fire the watchdog before the collective this test is about.
    """

    def __init__(self, how):
        self.how = how

    def on_epoch_end(self, run, logs):
        if dist.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL if self.how == "kill" else signal.SIGSTOP)
        dist.init(timeout=2.0)


def dead(how):
    dist.init(timeout=60.0)
    X, y, _, _ = digits()
    print(f"rank {dist.rank} training", file=sys.stderr, flush=True)
    nk.fit(mlp(), X, y, epochs=3, batch_size=64, distributed=True, progress=False,
           callbacks=[StopAfterEpoch(how)])
    print(f"rank {dist.rank} finished: the watchdog did not fire", flush=True)


if __name__ == "__main__":
    case = sys.argv[1]
    if case == "equivalence":
        equivalence()
    elif case == "resume":
        resume(sys.argv[2])
    elif case in ("kill", "hang"):
        dead(case)
    else:
        raise SystemExit(f"unknown case {case!r}")
