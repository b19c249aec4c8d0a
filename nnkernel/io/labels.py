"""The one label policy of every dataset source: CSV, NPZ, IDX and the generated sets.

Task. ``task="classification"`` or ``task="regression"`` (``--task``) says what
the target is. Left out, the values decide, never the file format or the dtype:
the target is class labels when it is one column of whole numbers with few
distinct values (at most half as many as there are rows, so two rows per class
on average), and regression targets otherwise. So 0/1 in a CSV, int64 in an
.npz and 0.0/1.0 float32 in an .npz are all labels; 0.37, or whole numbers
that are mostly distinct (prices, ids), are regression targets.

Class labels are the integers 0..K-1, K = the largest label + 1: output k of
the model is label k, nothing is remapped, and `nnkernel predict` prints the
labels the file uses. Refused, each naming the offending label and where it
is (CSV line, or array and index):

- a negative label (relabel, e.g. -1/1 as 0/1, or pass task="regression");
- a label that is not a whole number, when task="classification";
- a largest label that would leave more than half of 0..K-1 unused: one
  stray 1e9, or an id column, would otherwise build a billion-output layer.
  Labels 1..K (class 0 unused) pass.
- with ``n_classes`` (the K of a saved run, when evaluating or resuming it):
  a label >= n_classes, whatever the new file alone would suggest.

Every check runs on the values as stored, before any cast, so a uint64 label
of 2**63 is reported as 9223372036854775808, not as a wrapped negative number.
Regression targets are any finite numbers, returned float32 of shape (n, k).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..checks import float32_overflow
from ..errors import ConfigError, DatasetError, NonFiniteError

__all__ = ["TASKS", "Part", "check_range", "check_task", "decide"]

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Part:
    """One array of a dataset's targets, as stored, and how to say where value i is."""

    values: np.ndarray
    source: str  # the file (and column or array): "data.csv, column 'label'"
    locate: Callable[[int], str] = str  # flat index -> "line 7", "y_test[3]"

    def at(self, i: int) -> str:
        return f"{self.source}, {self.locate(i)}"


def check_task(task) -> str | None:
    if task is None or task in TASKS:
        return task
    raise ConfigError(f"task must be one of {', '.join(TASKS)} (or None to decide from the "
                      f"values), got {task!r}")


def decide(parts: Sequence[Part], *, task=None, n_classes=None):
    """(task, n_classes, converted targets) for the target arrays of one dataset.

    ``parts`` are the arrays that hold targets (train and test), decided
    together. Classification gives int64 labels (n,), regression float32
    targets (n, k); errors are DatasetError or NonFiniteError naming the value
    and where it is.
    """
    task = check_task(task)
    for part in parts:
        _check_numbers(part)
    one_column = all(p.values.ndim == 1 or (p.values.ndim == 2 and p.values.shape[1] == 1)
                     for p in parts)
    if task is None:
        task = "classification" if one_column and _few_whole_numbers(parts) else "regression"
    if task == "regression":
        return task, None, [_float32(p) for p in parts]
    if not one_column:
        part = next(p for p in parts if not (p.values.ndim == 1 or p.values.shape[1] == 1))
        raise DatasetError(f"{part.source}: class labels must be one column, found shape "
                           f"{part.values.shape}; pass --task regression (task=\"regression\") "
                           f"for several target columns")
    flat = [Part(p.values.reshape(-1), p.source, p.locate) for p in parts]
    for part in flat:
        _check_whole(part)
    for part in flat:
        if part.values.size and part.values.min() < 0:
            i = int(np.argmin(part.values))
            raise DatasetError(f"{part.at(i)}: label {_show(part.values[i])} is negative; class "
                               f"labels must be 0..K-1 (relabel them, e.g. -1/1 as 0/1, or "
                               f"pass --task regression)")
    k = _classes(flat, n_classes)
    return task, k, [p.values.astype(np.int64) for p in flat]


def check_range(part: Part, n_classes: int) -> None:
    """Refuse labels outside 0..n_classes-1, naming the first one (fixed class counts)."""
    values = part.values.reshape(-1)
    bad = np.flatnonzero((values < 0) | (values >= n_classes)) if values.size else []
    if len(bad):
        i = int(bad[0])
        raise DatasetError(f"{part.at(i)}: label {_show(values[i])} is not one of the classes "
                           f"0..{n_classes - 1}")


# -- helpers -------------------------------------------------------------------------------------
def _float32(part: Part) -> np.ndarray:
    """Regression targets as float32 (n, k); a value that would overflow to Inf is named."""
    values = part.values
    big = float32_overflow(values)
    if big is not None:
        raise DatasetError(f"{part.at(int(big[0]))}: target "
                           f"{values[big]:g} is too large for float32 (the largest is 3.4e+38); "
                           "rescale it")
    width = int(np.prod(values.shape[1:], dtype=np.int64))  # also for 0 rows
    return values.astype(np.float32).reshape(values.shape[0], width)


def _check_numbers(part: Part) -> None:
    values = part.values
    if values.dtype.kind not in "biuf":
        raise DatasetError(f"{part.source}: targets must be numbers, found dtype {values.dtype}")
    flat = values.reshape(-1)
    if values.dtype.kind == "f" and flat.size and not (np.isfinite(flat.min())
                                                       and np.isfinite(flat.max())):
        i = int(np.flatnonzero(~np.isfinite(flat))[0])
        raise NonFiniteError(f"{part.at(i)}: target {flat[i]} is not a finite number; clean "
                             f"the data first")


def _whole(values: np.ndarray):
    """True, or an elementwise mask, where values are whole numbers."""
    return True if values.dtype.kind != "f" else values == np.floor(values)


def _few_whole_numbers(parts) -> bool:
    flat = [p.values.reshape(-1) for p in parts]
    if not all(np.all(_whole(v)) for v in flat):
        return False
    n = sum(v.size for v in flat)
    distinct = np.unique(np.concatenate(flat)).size if n else 0
    return distinct <= max(2, n // 2)


def _check_whole(part: Part) -> None:
    whole = _whole(part.values)
    if whole is not True and not np.all(whole):
        i = int(np.flatnonzero(~whole)[0])
        raise DatasetError(f"{part.at(i)}: label {part.values[i]} is not a whole number; class "
                           f"labels are integers 0..K-1 (or pass --task regression)")


def _classes(flat, n_classes) -> int:
    """K: the saved run's (every label must be below it), or the largest label + 1."""
    present = [p for p in flat if p.values.size]
    if n_classes is not None:
        for part in present:
            if part.values.max() >= n_classes:
                i = int(np.argmax(part.values))
                raise DatasetError(f"{part.at(i)}: label {_show(part.values[i])} is not one of "
                                   f"the run's classes 0..{n_classes - 1}")
        return int(n_classes)
    if not present:
        raise DatasetError(f"{flat[0].source}: no labels (no rows)" if flat else "no labels")
    part = max(present, key=lambda p: int(p.values.max()))
    i = int(np.argmax(part.values))
    k = int(part.values[i]) + 1
    distinct = np.unique(np.concatenate([p.values for p in present])).size
    if k > 2 * distinct:
        raise DatasetError(f"{part.at(i)}: label {_show(part.values[i])} would make {k:,} "
                           f"classes, but only {distinct} distinct "
                           f"{'label occurs' if distinct == 1 else 'labels occur'}; class labels "
                           f"must be 0..K-1 with most of them used (a stray value or an id "
                           f"column? pick the column with --target, or pass --task regression)")
    return k


def _show(value) -> str:
    """A label as stored: 1e9 as 1000000000, a uint64 2**63 as 9223372036854775808."""
    number = value.item() if hasattr(value, "item") else value
    if isinstance(number, float) and not (number.is_integer() and abs(number) < 1e16):
        return repr(number)
    return str(int(number))
