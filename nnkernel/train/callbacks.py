"""Hooks into `fit`, with the Keras names: EarlyStopping, ModelCheckpoint, CSVLogger,
ReduceLROnPlateau, TerminateOnNaN.

A callback sees ``run``: the model, optimizer, history, epoch and step of the fit
in progress. ``on_epoch_end`` returning True stops training after that epoch.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ..checks import in_range, integer
from ..errors import ConfigError


class Callback:
    def on_train_begin(self, run) -> None: ...

    def on_epoch_end(self, run, logs: dict) -> bool | None:
        """Return True to stop training."""

    def on_train_end(self, run) -> None: ...


class _Monitor:
    """Which way a monitored metric improves: accuracies up, losses down ("auto")."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.min_delta = monitor, float(min_delta)
        self.sign = -1.0 if (mode == "max" or (mode == "auto" and (
            "acc" in monitor or "auc" in monitor or "f1" in monitor))) else 1.0

    def value(self, logs):
        if self.monitor not in logs:
            raise ConfigError(f"{type(self).__name__} monitors {self.monitor!r}, but the logs "
                              f"have {', '.join(logs)} (validation metrics need "
                              f"validation_data or validation_split)")
        value = np.asarray(logs[self.monitor], dtype=np.float64)
        if value.ndim > 1:  # e.g. val_confusion_matrix
            raise ConfigError(f"{type(self).__name__} monitors {self.monitor!r}, which is not a "
                              f"number (or one number per ensemble member)")
        return self.sign * value


class EarlyStopping(Callback, _Monitor):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the parameters of the best epoch are put back at the end.
    For an ensemble each member stops on its own: its updates are masked from
    then on, and training ends when every member has stopped.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True, mode: str = "auto"):
        _Monitor.__init__(self, monitor, mode, min_delta)
        self.patience = integer("patience", patience)
        self.restore_best = restore_best

    def on_train_begin(self, run):
        self.best = None
        self.wait = None
        self.best_arrays = None
        self.stopped_epoch = None

    def on_epoch_end(self, run, logs):
        value = self.value(logs)
        if self.best is None:
            self.best = np.full(value.shape, np.inf)
            self.wait = np.zeros(value.shape, dtype=int)
        improved = value < self.best - self.min_delta
        self.best = np.where(improved, value, self.best)
        self.wait = np.where(improved, 0, self.wait + 1)
        if self.restore_best and improved.any():
            arrays = run.model.arrays()
            if self.best_arrays is None or value.ndim == 0:
                self.best_arrays = arrays
            else:  # keep each member's best
                for k, v in arrays.items():
                    self.best_arrays[k][improved] = v[improved]
        stopped = self.wait >= self.patience
        if value.ndim and run.model.ensemble is not None:
            run.optimizer.member_mask = np.where(stopped, 0.0, 1.0)
        if stopped.all():
            self.stopped_epoch = run.epoch
            return True
        return None

    def on_train_end(self, run):
        if self.restore_best and self.best_arrays is not None:
            run.model.load_arrays(self.best_arrays)
        run.optimizer.member_mask = None  # stopped members would stay frozen in a later fit


_writer: dict = {}  # "save": how ModelCheckpoint writes a model (see `use_model_writer`)


def use_model_writer(save) -> None:
    """Set how `ModelCheckpoint` writes a model by default: ``save(model, path)``. nnkernel's
    package sets ``nnkernel.save`` (io sits above train, so train does not import it)."""
    _writer["save"] = save


class ModelCheckpoint(Callback, _Monitor):
    """Save the model to ``path`` (``nk.save``) after an epoch that improves ``monitor``.

    With ``save_best_only=False`` every epoch is saved. ``path`` may name the
    epoch and the logs as Keras' does, ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``
    (epochs counted from 1). The file is replaced atomically, so it always holds
    a whole model. An ensemble is judged by the mean of its members' values.
    ``best``, ``best_epoch`` (from 0) and ``saved`` (the paths written) say what
    happened. ``save(model, path)`` writes the file (default: ``nnkernel.save``, the format
    by the file's suffix).
    """

    root_only = True  # under MPI, rank 0 writes the file

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = True,
                 mode: str = "auto", min_delta: float = 0.0, save=None):
        _Monitor.__init__(self, monitor, mode, min_delta)
        self.path, self.save_best_only = Path(path), bool(save_best_only)
        self.save = save

    def on_train_begin(self, run):
        self.best = math.inf
        self.best_epoch = None
        self.saved = []

    def on_epoch_end(self, run, logs):
        value = float(np.mean(self.value(logs))) if self.save_best_only else None
        if self.save_best_only and not value < self.best - self.min_delta:
            return None
        save = self.save or _writer.get("save")
        if save is None:
            raise ConfigError("ModelCheckpoint has no writer: pass save=nnkernel.save")
        path = Path(str(self.path).format(epoch=run.epoch + 1, **logs)) if "{" in str(
            self.path) else self.path
        save(run.model, path)
        self.saved.append(path)
        if value is not None:
            self.best = value
            self.best_epoch = run.epoch
        return None

    @property
    def best_value(self):
        """The best monitored value in its own sign (``best`` is negated for "max" metrics)."""
        return None if self.best_epoch is None else self.sign * self.best


class CSVLogger(Callback):
    """One CSV row per epoch (epoch, then every logged metric); ``append`` continues a file."""

    root_only = True  # under MPI, rank 0 writes the file

    def __init__(self, path, append: bool = False, separator: str = ","):
        self.path, self.append, self.separator = Path(path), bool(append), separator

    def on_train_begin(self, run):
        self.columns = None
        if self.append and self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                self.columns = next(csv.reader(f, delimiter=self.separator), None)
        elif not self.append:
            self.path.write_text("")

    def on_epoch_end(self, run, logs):
        if self.columns is None:
            self.columns = ["epoch", *logs]
            with self.path.open("a", newline="") as f:
                csv.writer(f, delimiter=self.separator).writerow(self.columns)
        row = [run.epoch + 1] + [_cell(logs.get(c)) for c in self.columns[1:]]
        with self.path.open("a", newline="") as f:  # a row at a time: a crash keeps the rest
            csv.writer(f, delimiter=self.separator).writerow(row)
        return None


def _cell(value):
    if isinstance(value, list) and any(isinstance(v, list) for v in value):
        return json.dumps(value)  # a confusion matrix (per member): one cell, read back by json
    if isinstance(value, list):
        return " ".join(f"{v:.6g}" for v in value)
    return "" if value is None else (f"{value:.6g}" if isinstance(value, float) else value)


class ReduceLROnPlateau(Callback, _Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs.

    Acts on the optimizer's base ``lr`` (a schedule keeps multiplying it), never
    below ``min_lr``; after a reduction it waits ``cooldown`` epochs.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0,
                 mode: str = "auto"):
        _Monitor.__init__(self, monitor, mode, min_delta)
        self.factor = in_range("factor", factor, 0.0, 1.0, lo_open=True, hi_open=True)
        self.patience = integer("patience", patience)
        self.cooldown = integer("cooldown", cooldown, minimum=0)
        self.min_lr = in_range("min_lr", min_lr, 0.0, math.inf, hi_open=True)

    def on_train_begin(self, run):
        self.best, self.wait, self.cool = math.inf, 0, 0
        self.reductions = []  # (epoch, new lr)

    def on_epoch_end(self, run, logs):
        value = float(np.mean(self.value(logs)))
        if self.cool:
            self.cool -= 1
            self.wait = 0
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return None
        if self.cool:  # Keras: an epoch in cooldown is not counted as waiting
            return None
        self.wait += 1
        opt = run.optimizer
        if self.wait >= self.patience and np.any(np.asarray(opt.lr) > self.min_lr):
            opt.lr = np.maximum(opt.lr * self.factor, self.min_lr) if isinstance(
                opt.lr, np.ndarray) else max(opt.lr * self.factor, self.min_lr)
            self.reductions.append((run.epoch, opt.lr))
            self.wait, self.cool = 0, self.cooldown
        return None


class TerminateOnNaN(Callback):
    """End training quietly when the loss becomes NaN or Inf, instead of raising.

    `fit` raises NonFiniteError by default; with this callback it stops after the
    step where the loss was found non-finite and returns the history so far.
    """

    stops_on_nan = True
