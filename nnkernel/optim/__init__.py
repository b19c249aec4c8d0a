"""Optimizers (torch.optim's rules), gradient clipping and learning-rate schedules."""

from .base import Optimizer
from .clipping import clip_by_global_norm, global_norm
from .optimizers import OPTIMIZERS, SGD, Adam, AdamW, RMSprop, get_optimizer, optimizer_class
from .schedules import (
    SCHEDULES,
    CosineDecay,
    ExponentialDecay,
    LinearWarmup,
    StepDecay,
    make_schedule,
)

__all__ = ["OPTIMIZERS", "SCHEDULES", "SGD", "Adam", "AdamW", "CosineDecay", "ExponentialDecay",
           "LinearWarmup", "Optimizer", "RMSprop", "StepDecay", "clip_by_global_norm",
           "get_optimizer", "global_norm", "make_schedule", "optimizer_class"]
