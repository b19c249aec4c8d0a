"""What `nnkernel train` does around `fit` for a run directory: save every epoch, and early
stopping whose state the directory keeps, so that a resume stops where the run would have.
Run policy, not file formats: the files are written by nnkernel.io.run_dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.run_dir import save
from ..run_settings import RunConfig
from ..train import Callback, EarlyStopping

__all__ = ["ResumableEarlyStopping", "SaveEachEpoch"]


class SaveEachEpoch(Callback):
    """Save the run at the end of every epoch (a failing epoch leaves the last one intact).

    ``settings``: the run's `RunConfig` (or the dict config.json holds of it).
    ``early_stopping`` (a `ResumableEarlyStopping` earlier in the callback list, so
    this epoch's verdict is in) has its state saved with the position.
    """

    root_only = True  # under MPI, rank 0 writes the run for every rank

    def __init__(self, directory, settings: RunConfig | dict, early_stopping=None):
        self.directory, self.settings = Path(directory), settings
        self.early_stopping = early_stopping

    def on_epoch_end(self, run, logs):
        extra = self.early_stopping.state_arrays() if self.early_stopping else None
        save(self.directory, run.model, run.optimizer, self.settings, run.history,
             run.epoch + 1, 0, extra)

class ResumableEarlyStopping(EarlyStopping):
    """EarlyStopping whose state a run directory keeps (`state_arrays`, ``saved=``).

    Without it a run interrupted and resumed started counting afresh: it trained
    epochs past the one where the uninterrupted run stopped, and restore_best
    knew only the epochs after the resume. Restored: the best value, the epochs
    waited (per member for an ensemble, whose stopped members stay frozen) and
    the best weights.
    """

    def __init__(self, *args, saved: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.saved = dict(saved or {})

    def on_train_begin(self, run):
        super().on_train_begin(run)
        if not self.saved:
            return
        self.best = np.array(self.saved["best"], dtype=np.float64)
        self.wait = np.array(self.saved["wait"], dtype=int)
        best = {k[len("model/"):]: np.array(v) for k, v in self.saved.items()
                if k.startswith("model/")}
        self.best_arrays = best or None
        if self.wait.ndim and run.model.ensemble is not None:
            run.optimizer.member_mask = np.where(self.wait >= self.patience, 0.0, 1.0)

    def state_arrays(self) -> dict:
        """{"best", "wait", "model/<key>"...}: empty before the first epoch's verdict."""
        if self.best is None:
            return {}
        out = {"best": np.asarray(self.best, dtype=np.float64),
               "wait": np.asarray(self.wait, dtype=np.int64)}
        out.update({f"model/{k}": v for k, v in (self.best_arrays or {}).items()})
        return out
