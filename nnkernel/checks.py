"""Argument checks shared by the library and the command line: one message for one mistake."""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError


def interval_text(lo, hi, lo_open=False, hi_open=False) -> str:
    return f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def in_range(name, value, lo, hi, *, lo_open=False, hi_open=False) -> float:
    """A real number as a float, refused (also NaN, bools, strings) outside [lo, hi]."""
    if not is_real(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not ((v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)):
        raise ConfigError(f"{name} must be in {interval_text(lo, hi, lo_open, hi_open)}, "
                          f"got {value}")
    return v


def is_int(value) -> bool:
    """Whether value is an integer: an int or a NumPy integer, not a bool (the one check)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value) -> bool:
    """Whether value is a real number (int, float or a NumPy one), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def integer(name, value, *, minimum: int = 1) -> int:
    """An int (not a bool, not 2.5, not "3") of at least ``minimum``."""
    if not is_int(value) or value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}")
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def finite_positive(name, value, allow_zero=False) -> float:
    if not is_real(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ConfigError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, "
                          f"got {value}")
    return v


def float32_overflow(a: np.ndarray):
    """The index of the first finite value of ``a`` too large for float32 (it would become
    Inf when the data are cast), or None."""
    if a.dtype.kind != "f" or a.dtype.itemsize <= 4 or a.size == 0:
        return None
    limit = float(np.finfo(np.float32).max)
    with np.errstate(invalid="ignore"):
        lo, hi = float(np.min(a)), float(np.max(a))  # no copy of ``a`` in the common case
    if -limit <= lo and hi <= limit:
        return None
    if not np.abs(a[np.isfinite(a)]).max(initial=0.0) > limit:
        return None
    flat = int(np.flatnonzero(np.isfinite(a) & (np.abs(a) > limit))[0])
    return np.unravel_index(flat, a.shape)
