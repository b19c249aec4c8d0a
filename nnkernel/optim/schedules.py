"""Learning-rate schedules: step number (from 0) -> factor on the base learning rate."""

from __future__ import annotations

import math

from ..checks import in_range, integer
from ..errors import ConfigError


class StepDecay:
    """factor = gamma ** (t // step_size)."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = integer("step_size", step_size)
        self.gamma = in_range("gamma", gamma, 0.0, math.inf, lo_open=True, hi_open=True)

    def __call__(self, t):
        return self.gamma ** (t // self.step_size)


class ExponentialDecay:
    """factor = gamma ** t."""

    def __init__(self, gamma: float):
        self.gamma = in_range("gamma", gamma, 0.0, math.inf, lo_open=True, hi_open=True)

    def __call__(self, t):
        return self.gamma ** t


class CosineDecay:
    """factor from 1 down to ``min_factor`` over ``total_steps`` along half a cosine."""

    def __init__(self, total_steps: int, min_factor: float = 0.0):
        self.total = max(integer("total_steps", total_steps, minimum=0), 1)
        self.min_factor = in_range("min_factor", min_factor, 0.0, 1.0)

    def __call__(self, t):
        frac = min(t, self.total) / self.total
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * frac))


class LinearWarmup:
    """factor rises linearly over ``warmup_steps``, then follows ``after`` (or stays 1)."""

    def __init__(self, warmup_steps: int, after=None):
        self.warmup, self.after = max(integer("warmup_steps", warmup_steps, minimum=0), 1), after

    def __call__(self, t):
        if t < self.warmup:
            return (t + 1) / self.warmup
        return 1.0 if self.after is None else self.after(t - self.warmup)


SCHEDULES = ("constant", "step", "exponential", "cosine", "warmup", "warmup_cosine")


def make_schedule(name: str | None, total_steps: int, steps_per_epoch: int = 1):
    """A schedule by name for a run of ``total_steps`` (used by the command line)."""
    if name in (None, "constant", "none"):
        return None
    total_steps, steps_per_epoch = max(int(total_steps), 1), max(int(steps_per_epoch), 1)
    if name == "step":
        return StepDecay(max(total_steps // 3, 1), 0.1)
    if name == "exponential":
        return ExponentialDecay(0.01 ** (1.0 / total_steps))
    if name == "cosine":
        return CosineDecay(total_steps)
    if name == "warmup":
        return LinearWarmup(steps_per_epoch)
    if name == "warmup_cosine":
        return LinearWarmup(steps_per_epoch, CosineDecay(max(total_steps - steps_per_epoch, 1)))
    raise ConfigError(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")
