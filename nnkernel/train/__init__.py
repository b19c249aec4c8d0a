"""Training: the fit loop and evaluation, its history, callbacks and progress line; `fit_lm`
for language models (steps over random windows of a text)."""

from .callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from .history import History
from .lm import fit_lm
from .loop import TrainingInterrupted, evaluate, fit
from .progress import Progress

__all__ = ["CSVLogger", "Callback", "EarlyStopping", "History", "ModelCheckpoint", "Progress",
           "ReduceLROnPlateau", "TerminateOnNaN", "TrainingInterrupted", "evaluate", "fit",
           "fit_lm"]
