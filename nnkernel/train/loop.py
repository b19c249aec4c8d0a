"""The fit loop: minibatches cut and shuffled on the model's device, metrics, callbacks.

One epoch is, for each minibatch (xb, yb), one `train_step` (nnkernel.train.step):

    y        = model.forward(xb, train=True)
    loss, dy = loss_fn(y, yb)
    model.backward(dy, input_grad=False)
    optimizer.step(model.params, model.grads)

run eagerly, data-parallel over MPI ranks (`DataParallel.step_for` wraps it) or as
one compiled program (`CompiledStep`).

The data is moved to the model's device once; shuffling draws a permutation on
that device from (seed, epoch), and Dropout masks from (seed, epoch, step), so a
run resumed from a checkpoint at any step continues bit for bit. The host reads
numbers from the device only to report progress and at the end of an epoch
(on a GPU, the NaN check of the loss looks at a batch of steps at once).
"""

from __future__ import annotations

import functools
import time

import numpy as np

from ..backend import is_float, to_numpy
from ..checks import integer
from ..errors import ConfigError, NonFiniteError
from ..losses import cross_entropy, get_loss
from ..nn.layers import BatchNorm
from ..optim import get_optimizer
from .data import plan_batches, prepare, sample_weights, split_indices, take
from .history import History
from .metrics import resolve as resolve_metrics
from .metrics import score
from .progress import Progress
from .signals import InterruptFlag
from .step import train_step
from .totals import Totals, first_nonfinite, host_mean

CHECK_EVERY_ASYNC = 50  # steps between NaN checks where reading the loss waits for a GPU


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during fit: the current step finished; ``epoch`` and ``step`` say where."""

    def __init__(self, epoch: int, step: int, history: History, signal=None):
        super().__init__(f"interrupted at epoch {epoch + 1}, step {step}")
        self.epoch, self.step, self.history, self.signal = epoch, step, history, signal


class _Run:
    """What callbacks see of a fit in progress."""

    def __init__(self, model, optimizer, history):
        self.model, self.optimizer, self.history = model, optimizer, history
        self.epoch, self.step = 0, 0


def fit(model, X, y=None, *, loss="cross_entropy", optimizer="adam", epochs: int = 10,
        batch_size: int = 32, validation_data=None, validation_split: float | None = None,
        shuffle: bool = True, seed: int = 0, callbacks=(), progress: bool = True,
        initial_epoch: int = 0, initial_step: int = 0, bootstrap: bool = False,
        history: History | None = None, sample_weight=None, class_weight=None,
        metrics=(), distributed=None, compile: bool = False) -> History:
    """Train ``model`` on (X, y); returns the per-epoch History.

    ``loss`` is a function of `nnkernel.losses` or its name, ``optimizer`` an
    instance or a name. X and y may be arrays of any backend or NumPy: they are
    moved to the model's device once. ``validation_split`` holds out that
    fraction (shuffled by ``seed``) as validation data. ``sample_weight`` (one
    per sample) and ``class_weight`` ({class: weight}) multiply each sample's
    loss. ``initial_epoch``/``initial_step`` resume a run where a checkpoint
    left it. A model with BatchNorm never gets a last batch of one row: it joins
    the batch before it. ``metrics`` (names or functions, `nnkernel.train.metrics`)
    are computed on the validation data at each epoch end, logged as val_<name>.
    ``distributed=True`` (or a `nnkernel.distributed.DataParallel`) trains
    data-parallel over the MPI ranks: ``batch_size`` is then the global batch
    (rules: `nnkernel.distributed.parallel`). ``compile=True`` runs each step as one
    compiled program (`nnkernel.train.compiled`; JAX models): the same numbers, traced once.
    """
    loss_fn = get_loss(loss)
    opt = get_optimizer(optimizer)
    epochs = integer("epochs", epochs, minimum=0)
    seed = integer("seed", seed, minimum=0)
    members = model.ensemble is not None
    classify = loss_fn is cross_entropy
    if validation_split is not None:
        if validation_data is not None:
            raise ConfigError("give validation_data or validation_split, not both")
        X, y, sample_weight, validation_data = _split(X, y, sample_weight, validation_split, seed)
    metrics = resolve_metrics(metrics, loss_fn)
    if metrics and validation_data is None:  # why not the training batches: metrics.py
        raise ConfigError("metrics are computed on validation data at each epoch end; pass "
                          "validation_data or validation_split, or use nk.evaluate(metrics=)")
    X, y = prepare(model, X, y, classify, "training data")
    n = X.shape[0]
    weights = sample_weights(model, y, n, sample_weight, class_weight, classify)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ConfigError("validation_data must be a pair (X_val, y_val)")
        val = prepare(model, *validation_data, classify, "validation data")
    batchnorm = any(isinstance(layer, BatchNorm) for layer in model.layers)
    bounds = plan_batches(n, batch_size, batchnorm)
    dp = _data_parallel(distributed)
    if dp is not None:  # the global batches; this rank computes its shard of each
        bounds = dp.plan(bounds, batchnorm)
        callbacks, progress = dp.callbacks(callbacks), progress and dp.is_root
    steps = len(bounds)
    initial_epoch = integer("initial_epoch", initial_epoch, minimum=0)
    initial_step = integer("initial_step", initial_step, minimum=0)
    if initial_step >= steps and initial_step:
        raise ConfigError(f"initial_step {initial_step} is past the end of an epoch of {steps} "
                          f"steps")
    be, xp, k = model.backend, model.xp, model.k
    boot = None
    if bootstrap:
        if not members:
            raise ConfigError("bootstrap=True needs an ensemble model")
        rng = np.random.default_rng([seed, 2**31])
        boot = be.asarray(rng.integers(0, n, size=(model.ensemble, n)))

    history = history if history is not None else History()
    run = _Run(model, opt, history)
    if dp is not None:  # same model, settings and data on every rank; rank 0's arrays
        dp.start(run, {"n": n, "epochs": epochs, "batch_size": batch_size, "seed": seed,
                       "shuffle": shuffle, "loss": getattr(loss_fn, "__name__", repr(loss_fn)),
                       "bootstrap": bootstrap, "initial": [initial_epoch, initial_step]},
                 (X, y, weights) + (tuple(val) if val is not None else ()))
    stop_on_nan = any(getattr(cb, "stops_on_nan", False) for cb in callbacks)
    for cb in callbacks:
        cb.on_train_begin(run)
    loss_options = {"num_check": False} if classify else {}  # labels checked once above
    step_loss = functools.partial(loss_fn, **loss_options) if loss_options else loss_fn
    score = functools.partial(correct_count, xp, members) if classify else None
    if compile:  # the same step, traced once (refused, with the reason, where it cannot be)
        from .compiled import CompiledStep

        if dp is not None:  # the allreduce would have to run inside the traced program
            raise ConfigError("compile=True and distributed training cannot be combined yet; "
                              "use one of them")
        step_fn = CompiledStep(model, step_loss, opt, score)
    elif dp is not None:
        step_fn = dp.step_for(model, step_loss, opt, score)
    else:
        step_fn = functools.partial(train_step, model, step_loss, opt, score=score)
    check_every = CHECK_EVERY_ASYNC if be.asynchronous else 1
    bar = Progress(epochs, steps, enabled=progress)
    model.loss = loss_fn
    with (InterruptFlag() if dp is None else dp.flag()) as stop_flag, be.activate():
        for epoch in range(initial_epoch, epochs):
            run.epoch = epoch
            first_step = initial_step if epoch == initial_epoch else 0
            totals = Totals.resume(history.partial if dp is None or dp.is_root else None,
                                    epoch, first_step)  # the saved sums count once
            history.partial = None
            t0 = time.perf_counter() - totals.seconds
            order = be.random((seed, epoch)).permutation(n) if shuffle else \
                xp.arange(n, device=be.device)
            pending = []
            bar.start_epoch(epoch, first_step, totals.seen)
            for step in range(first_step, steps):
                run.step = step
                a, b = bounds[step]
                if dp is not None:
                    a, b = dp.shard(a, b)
                idx = order[a:b]
                xb, yb, wb = take(xp, (X, y, weights), idx, boot)
                frozen = dict(model.state) if opt.member_mask is not None else None
                value, correct = step_fn((xb, yb, wb), seed=(seed, epoch, step))
                if frozen:
                    _restore_stopped_members(model, opt.member_mask, frozen)
                value, correct = be.settle(value, correct)  # Dask: numbers, in one pass
                totals.add(value, b - a, correct)
                pending.append(value)
                if len(pending) >= check_every or step == steps - 1:
                    bad = first_nonfinite(xp, pending)
                    if dp is not None:  # every rank stops at the same step, or none does
                        bad = dp.agree(bad, stop_flag)
                    if bad is not None:
                        at = step - (len(pending) - 1) + bad
                        if stop_on_nan:
                            return _end(callbacks, run, history)
                        raise NonFiniteError(f"loss became NaN/Inf at epoch {epoch + 1}, step "
                                             f"{at + 1}; try a lower learning rate (--lr) or "
                                             f"gradient clipping")
                    pending = []
                bar.step(epoch, step + 1, totals, classify)
                if stop_flag.raised and step + 1 < steps:  # after the last step: end the epoch
                    if dp is not None:
                        dp.end_epoch(model, totals)
                    history.partial = totals.snapshot(epoch, step + 1,
                                                      time.perf_counter() - t0)
                    raise TrainingInterrupted(epoch, step + 1, history, stop_flag.signal)
            be.synchronize()
            seconds = time.perf_counter() - t0
            if dp is not None:  # the epoch's sums over every rank
                dp.end_epoch(model, totals)
            if not k.all_finite(model.store.flat):  # e.g. a huge weight decay: loss still finite
                if stop_on_nan:
                    return _end(callbacks, run, history)
                raise NonFiniteError(f"the parameters became NaN/Inf at epoch {epoch + 1}, step "
                                     f"{steps}; try a lower learning rate or weight decay")
            logs = {"loss": host_mean(totals.loss, totals.seen)}
            if classify:
                logs["accuracy"] = host_mean(totals.correct, totals.seen)
            if val is not None:
                scores = _validate(model, val, loss_fn, max(batch_size, 1024), metrics, dp)
                logs.update({f"val_{name}": value for name, value in scores.items()})
            logs["seconds"] = seconds
            logs["samples_per_second"] = totals.seen / seconds if seconds > 0 else float("inf")
            history.append(epoch, logs)
            bar.epoch_end(epoch, logs)
            stop = False
            for cb in callbacks:
                stop = bool(cb.on_epoch_end(run, logs)) or stop
            if stop:
                break
            if stop_flag.raised:  # a signal in the epoch's last step: stop with the epoch saved
                raise TrainingInterrupted(epoch + 1, 0, history, stop_flag.signal)
    return _end(callbacks, run, history)


def _validate(model, val, loss_fn, batch_size, metrics, dp) -> dict:
    """Validation loss, accuracy and metrics; under MPI the loss and accuracy are sharded
    over the ranks, while metrics that do not add up over shards (F1, AUC) are computed on
    the whole validation set by every rank, which holds all of it."""
    if dp is None:
        return evaluate(model, *val, loss=loss_fn, batch_size=batch_size, metrics=metrics,
                        return_dict=True)
    vl, va = dp.evaluate(evaluate, model, val[0], val[1], loss=loss_fn, batch_size=batch_size)
    scores = {"loss": vl, **({"accuracy": va} if va is not None else {})}
    if metrics:
        whole = evaluate(model, *val, loss=loss_fn, batch_size=batch_size, metrics=metrics,
                         return_dict=True)
        scores.update({k: v for k, v in whole.items() if k not in ("loss", "accuracy")})
    return scores


def _data_parallel(distributed):
    """None, or the object whose hooks fit calls (nnkernel.distributed.DataParallel)."""
    if distributed is None or distributed is False:
        return None
    if distributed is True:  # imported only when asked: MPI is optional
        from ..distributed import DataParallel

        return DataParallel()
    return distributed


def _end(callbacks, run, history):
    for cb in callbacks:
        cb.on_train_end(run)
    return history


def evaluate(model, X, y, *, loss="cross_entropy", batch_size: int = 1024, sample_weight=None,
             metrics=(), return_dict: bool = False):
    """(mean loss, accuracy or None) in evaluation mode; per member for an ensemble.

    With ``metrics`` the tuple goes on with their values, in order; with
    ``return_dict`` it is a dict instead: "loss", "accuracy" (cross-entropy
    only) and each metric by name.
    """
    loss_fn = get_loss(loss)
    chosen = resolve_metrics(metrics, loss_fn)
    loss_value, accuracy, out, y = evaluation_pass(model, X, y, loss_fn, batch_size=batch_size,
                                                   sample_weight=sample_weight,
                                                   keep_outputs=bool(chosen))
    if not (chosen or return_dict):
        return loss_value, accuracy
    values = score(chosen, loss_fn, out, y, members=model.ensemble is not None)
    if not return_dict:
        return (loss_value, accuracy, *values.values())
    return {"loss": loss_value, **({"accuracy": accuracy} if loss_fn is cross_entropy else {}),
            **values}


def evaluation_pass(model, X, y, loss_fn, *, batch_size: int = 1024, sample_weight=None,
                    keep_outputs: bool = False):
    """One pass over (X, y) in evaluation mode: (mean loss, accuracy or None, outputs, y).

    The loss and accuracy are per member for an ensemble. With ``keep_outputs``
    the outputs, (N, C) or per member (M, N, C), stay on the device for whatever
    else is scored from them (else None); y is the targets as checked and moved.
    """
    batch_size = integer("batch_size", batch_size)
    classify = loss_fn is cross_entropy
    X, y = prepare(model, X, y, classify, "evaluation data")
    xp = model.xp
    members = model.ensemble is not None
    n = X.shape[0]
    weights = sample_weights(model, y, n, sample_weight, None, classify)
    loss_sum, correct, parts = 0.0, 0.0, []
    with model.backend.activate():
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)  # array-api-strict refuses stops past the end
            xb, yb = X[i:j, ...], y[i:j, ...]
            wb = None if weights is None else weights[i:j]
            out = model(xb)
            if keep_outputs:
                parts.append(out)
            value, _ = loss_fn(out, yb, members=members, weights=wb,
                               **({"num_check": False} if classify else {}))
            loss_sum = loss_sum + value * float(j - i)
            if classify:
                correct = correct + correct_count(xp, members, out, yb)
        out = (None if not parts else parts[0] if len(parts) == 1
               else xp.concat(parts, axis=1 if members else 0))
    loss_value, accuracy = host_mean(loss_sum, n), (host_mean(correct, n) if classify else None)
    return loss_value, accuracy, out, y


# -- helpers -------------------------------------------------------------------------------------
def _split(X, y, sample_weight, fraction, seed):
    """Hold out ``fraction`` of the rows (shuffled by seed) as validation data, on the host."""
    Xh, yh = _host_rows(X), _host_rows(y)
    train, held = split_indices(Xh.shape[0], fraction, seed)
    sw = None if sample_weight is None else _host_rows(sample_weight)[train]
    return Xh[train], yh[train], sw, (Xh[held], yh[held])


def _host_rows(a):
    return a if isinstance(a, np.ndarray) else np.asarray(to_numpy(a) if hasattr(a, "shape")
                                                          else a)


def _restore_stopped_members(model, mask, before):
    """Members stopped by early stopping keep their BatchNorm statistics, like their weights.

    state = m·new + (1 − m)·old per member: exact for a 0/1 mask, and no xp.where.
    """
    for key, old in before.items():
        m = model.backend.asarray(mask.reshape((-1,) + (1,) * (old.ndim - 1)), dtype=old.dtype)
        model.state[key] = m * model.state[key] + (1.0 - m) * old


def correct_count(xp, members: bool, out, yb):
    """The number of rows whose largest output is the target class (per member: axis 0).

    Targets are labels, or probabilities (one-hot) whose largest entry is the class;
    an ensemble's targets may be shared (N, ...) or per member (E, N, ...).
    """
    pred = xp.argmax(out, axis=-1)
    if is_float(yb.dtype):  # one-hot or soft targets: the class is their largest entry
        yb = xp.argmax(yb, axis=-1)
    hits = xp.astype(pred == yb, out.dtype)
    return xp.sum(hits, axis=tuple(range(1, hits.ndim)) if members else None)
