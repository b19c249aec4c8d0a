"""`fit_lm`: train a language model for a number of steps on random windows of one text.

    history = fit_lm(model, train_ids, val_ids=val_ids, steps=2000, block_size=64,
                     batch_size=12, optimizer=nk.optim.AdamW(...), eval_interval=250)

Each step is one optimizer update from ``accumulate`` micro-batches of
``batch_size`` random windows (`nnkernel.train.windows`, `accumulate_step`):
there are no epochs over a dataset. Every ``eval_interval`` steps (and after the
last) the model is scored on a fixed set of windows of the held-out ids, and a
line says the training loss over the interval and the validation loss, in nats
per token and in bits (loss / ln 2: bits per character for a character model).

It is `fit`'s machinery with steps for samples: an interval between evaluations
plays the part of an epoch. History has one entry per interval ("step", "loss",
"bpc", "val_loss", "val_bpc", "lr", "seconds", "tokens_per_second");
callbacks' ``on_epoch_end`` runs after each evaluation with ``run.epoch`` the
interval's index (so `nnkernel.cli.run_policy.SaveEachEpoch` saves there);
Ctrl-C, SIGTERM and SIGHUP finish the step and raise `TrainingInterrupted` with
(interval, step within it), the interval's partial sums in ``history.partial``.
Windows come from (seed, step, micro-batch) and Dropout masks likewise, so a run
resumed with ``initial_step`` (= interval · eval_interval + step) and its
optimizer state continues bit for bit.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np

from ..backend import to_numpy
from ..checks import integer
from ..errors import ConfigError, NonFiniteError
from ..losses import cross_entropy
from ..optim import get_optimizer
from .accumulate import accumulate_step
from .history import History
from .loop import TrainingInterrupted
from .signals import InterruptFlag
from .step_progress import StepProgress
from .windows import TokenWindows, window_loss

__all__ = ["fit_lm"]

CHECK_EVERY_ASYNC = 50  # steps between reads of the loss where reading waits for a GPU
LN2 = math.log(2.0)


class LMRun:
    """What callbacks see of a `fit_lm` in progress (as `fit`'s run: epoch = interval)."""

    def __init__(self, model, optimizer, history):
        self.model, self.optimizer, self.history = model, optimizer, history
        self.epoch, self.step = 0, 0


def fit_lm(model, train_ids, *, steps: int, block_size: int, batch_size: int = 12,
           optimizer="adamw", val_ids=None, accumulate: int = 1, eval_interval: int = 250,
           eval_windows: int | None = 200, seed: int = 0, callbacks=(), progress: bool = True,
           initial_step: int = 0, history: History | None = None) -> History:
    """Train ``model`` (token ids (B, T) -> logits (B, T, V)) for ``steps`` steps on random
    windows of ``train_ids``; score it on ``eval_windows`` fixed windows of ``val_ids``
    (None: all of them) every ``eval_interval`` steps. Returns the History."""
    steps = integer("steps", steps)
    block_size = integer("block_size", block_size)
    batch_size = integer("batch_size", batch_size)
    accumulate = integer("accumulate", accumulate)
    eval_interval = integer("eval_interval", eval_interval)
    seed = integer("seed", seed, minimum=0)
    initial_step = integer("initial_step", initial_step, minimum=0)
    if initial_step > steps:
        raise ConfigError(f"initial_step {initial_step} is past the run's {steps} steps")
    opt = get_optimizer(optimizer)
    be = model.backend
    vocab = int(model.n_out)
    for ids, what in ((train_ids, "the training ids"), (val_ids, "the validation ids")):
        if ids is not None and np.asarray(ids).size and (
                np.min(ids) < 0 or np.max(ids) >= vocab):
            raise ConfigError(f"{what} range over {np.min(ids)}..{np.max(ids)}, but the model "
                              f"predicts {vocab} tokens (0..{vocab - 1})")
    train = TokenWindows(be, train_ids, block_size, "the training text")
    val = val_starts = None
    if val_ids is not None:
        val = TokenWindows(be, val_ids, block_size, "the held-out (validation) text")
        val_starts = val.fixed_starts(eval_windows)
    history = history if history is not None else History()
    run = LMRun(model, opt, history)
    for cb in callbacks:
        cb.on_train_begin(run)
    step_loss = functools.partial(cross_entropy, num_check=False)  # ids checked above
    check_every = CHECK_EVERY_ASYNC if be.asynchronous else 1
    bar = StepProgress(steps, enabled=progress)
    bar.start(initial_step)
    tokens_per_step = accumulate * batch_size * block_size
    g = initial_step
    with InterruptFlag() as stop_flag, be.activate():
        while g < steps:
            interval = g // eval_interval
            first, end = interval * eval_interval, min((interval + 1) * eval_interval, steps)
            run.epoch = interval
            sums = _resume_sums(history.partial, interval, g - first)
            history.partial = None
            t0 = time.perf_counter() - sums["seconds"]
            pending, lr = [], opt.current_lr
            for step in range(g, end):
                run.step = step - first
                lr = opt.current_lr
                batches = [train.batch(train.random_starts(batch_size, (seed, step, i)))
                           for i in range(accumulate)]
                value, _ = accumulate_step(model, step_loss, opt, batches, seed=(seed, step))
                pending.append(value)
                if len(pending) >= check_every or step == end - 1 or stop_flag.raised:
                    _add_losses(sums, pending, step, model.xp)
                    pending = []
                bar.step(step + 1, sums["loss_sum"] / sums["seen"] if sums["seen"] else None)
                if stop_flag.raised and step + 1 < end:  # after an interval's last step: end it
                    sums["seconds"] = time.perf_counter() - t0
                    history.partial = {"epoch": interval, "step": step + 1 - first, **sums}
                    raise TrainingInterrupted(interval, step + 1 - first, history,
                                              stop_flag.signal)
            be.synchronize()
            seconds = time.perf_counter() - t0
            if not model.k.all_finite(model.store.flat):
                raise NonFiniteError(f"the parameters became NaN/Inf by step {end}; try a lower "
                                     f"learning rate or weight decay")
            mean = sums["loss_sum"] / sums["seen"]
            logs = {"step": end, "loss": mean, "bpc": mean / LN2}
            if val is not None:
                val_loss = window_loss(model, val, val_starts)
                logs.update(val_loss=val_loss, val_bpc=val_loss / LN2)
            logs.update(lr=float(lr), seconds=seconds,
                        tokens_per_second=sums["seen"] * tokens_per_step / seconds
                        if seconds > 0 else float("inf"))
            history.append(interval, logs)
            bar.evaluation(logs)
            stop = False
            for cb in callbacks:
                stop = bool(cb.on_epoch_end(run, logs)) or stop
            if stop:
                break
            if stop_flag.raised and end < steps:  # in an interval's last step: stop, saved
                raise TrainingInterrupted(interval + 1, 0, history, stop_flag.signal)
            g = end
    for cb in callbacks:
        cb.on_train_end(run)
    return history


def _resume_sums(partial, interval: int, step: int) -> dict:
    """The interval's running sums: those an interrupted run saved, when it is this interval
    at this step, else zeros. "seen" counts steps, "loss_sum" adds their mean losses."""
    if partial and step and partial.get("epoch") == interval and partial.get("step") == step:
        return {"loss_sum": float(partial["loss_sum"]), "seen": int(partial["seen"]),
                "correct": 0.0, "seconds": float(partial.get("seconds", 0.0))}
    return {"loss_sum": 0.0, "seen": 0, "correct": 0.0, "seconds": 0.0}


def _add_losses(sums: dict, pending: list, last_step: int, xp) -> None:
    """Read the pending step losses (one host copy), refuse a NaN/Inf, add them in order."""
    values = np.asarray(to_numpy(pending[0] if len(pending) == 1 else xp.stack(pending)),
                        dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        at = last_step - (len(values) - 1) + int(bad[0]) + 1
        raise NonFiniteError(f"loss became NaN/Inf at step {at}; try a lower learning rate "
                             f"(--lr) or gradient clipping (--clip-norm)")
    for v in values.tolist():  # in step order: a resumed run adds the same numbers alike
        sums["loss_sum"] += v
    sums["seen"] += len(values)

