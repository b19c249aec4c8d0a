"""Training: the fit loop and evaluation, its history, callbacks and progress line."""

from .callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from .history import History
from .loop import TrainingInterrupted, evaluate, fit
from .progress import Progress

__all__ = ["CSVLogger", "Callback", "EarlyStopping", "History", "ModelCheckpoint", "Progress",
           "ReduceLROnPlateau", "TerminateOnNaN", "TrainingInterrupted", "evaluate", "fit"]
