"""CSV files: a dataset with a header row (`load_csv`), or features to predict on."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nnkernel.errors import DatasetError, NonFiniteError

if TYPE_CHECKING:  # datasets imports this module; this one imports it back only when called
    from .datasets import Dataset


def load_csv(path: str | os.PathLike, target: str = "label") -> Dataset:
    """A CSV with a header row and numeric columns; `target` names the column to predict.

    Non-negative whole-number targets mean classification (classes 0..max),
    anything else regression. The test set is a fixed-seed 20% of the rows.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read CSV file {path}: {e}") from e
    rows = [row for row in rows if row]  # tolerate blank lines
    if len(rows) < 2:
        raise DatasetError(f"{path} is empty: expected a header row and at least one data row")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if target not in header:
        raise DatasetError(f"{path} has no target column {target!r}; available columns: "
                           f"{', '.join(header)}; pass target=NAME (--target NAME)")
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DatasetError(f"{path}, line {i}: {len(row)} fields, header has {len(header)}")
    try:
        table = np.array(body, dtype=np.float64)
    except ValueError:
        i, j = next((i, j) for i, row in enumerate(body) for j, v in enumerate(row)
                    if not _is_number(v))
        raise DatasetError(f"{path}, line {i + 2}, column {header[j]!r}: {body[i][j]!r} is not "
                           "a number; all columns must be numeric") from None
    t = header.index(target)
    X = np.delete(table, t, axis=1).astype(np.float32)
    y = table[:, t]
    if not np.isfinite(X).all():
        i, j = np.argwhere(~np.isfinite(X))[0]
        raise NonFiniteError(f"{path}, line {i + 2}: NaN or Inf in column "
                             f"{[h for h in header if h != target][j]!r}; clean the data first")
    if np.isfinite(y).all() and (y == np.round(y)).all() and y.min() >= 0:
        y = y.astype(np.int64)
    else:
        y = y.astype(np.float32).reshape(-1, 1)
    from .datasets import _from_arrays

    return _from_arrays(path.stem, X, y, str(path))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True



def _read_csv_features(path: Path) -> np.ndarray:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row]
    except FileNotFoundError:
        raise DatasetError(f"input file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read CSV file {path}: {e}") from e
    if rows and not all(_is_number(v) for v in rows[0]):
        rows = rows[1:]  # a header
    if not rows:
        raise DatasetError(f"{path} has no data rows")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DatasetError(f"{path}: row {i + 1} has {len(row)} fields, the first has {width}")
        for v in row:
            if not _is_number(v):
                raise DatasetError(f"{path}: row {i + 1}: {v!r} is not a number")
    return np.array(rows, dtype=np.float64)
