"""Data files read safely: CSV tables (`load_csv`), .npy features, .npz arrays.

Every dataset or feature file goes through `open_data_file`: only a regular
file is opened (a FIFO would block forever, /dev/zero never ends), and never
one larger than `max_data_bytes` ($NNKERNEL_MAX_DATA_BYTES, else the memory
available now: a file that cannot fit is refused with the figure before it is
read). An .npz is read with the checkpoint reader (no pickle, each member's
declared size checked before it inflates), and a .npy's header is checked
against the file size before its data is read.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import zipfile
from array import array
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nnkernel.errors import CheckpointError, DatasetError, NonFiniteError

from ..checks import float32_overflow
from . import labels, npy_read
from .dataset import from_arrays
from .safe_read import bytes_from_env, open_regular

if TYPE_CHECKING:  # datasets imports this module; this one imports it back only when called
    from .dataset import Dataset

MAX_DATA_BYTES_ENV = "NNKERNEL_MAX_DATA_BYTES"


def max_data_bytes() -> int | None:
    """$NNKERNEL_MAX_DATA_BYTES (bytes; K, M, G, T suffixes), else the available memory."""
    limit = bytes_from_env(MAX_DATA_BYTES_ENV, DatasetError)
    return available_memory() if limit is None else limit


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes, or None where there is no such file."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _limit_hint(limit: int) -> str:
    return (f"the {limit / 2**30:.1f} GiB nnkernel may read (the memory available, or "
            f"${MAX_DATA_BYTES_ENV})")




def open_data_file(path: Path, what: str = "data file"):
    """(binary file, size) of a regular file within `max_data_bytes`; else DatasetError."""
    limit = max_data_bytes()
    return open_regular(path, limit, error=DatasetError, what=what,
                        limit_hint=_limit_hint(limit) if limit else None)


@contextmanager
def csv_rows(path: Path, what: str = "CSV file"):
    """A csv.reader over the file, decoded as it is read (UTF-8; a byte order mark is not
    part of the first name): the text is never held whole. Undecodable bytes and csv's
    own errors become DatasetError."""
    f, _ = open_data_file(path, what)
    with f, io.TextIOWrapper(f, encoding="utf-8-sig", newline="") as text:
        try:
            yield csv.reader(text)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DatasetError(f"cannot read {what} {path}: {e}") from e


def numeric_rows(path: Path, rows, width: int, names=None, first=None):
    """(float64 array (n, width), each row's line number) of the csv.reader ``rows``
    (after ``first``, a (line, row) already read), blank lines skipped. A row is
    converted as it is read, into 8 bytes a value: a list of the strings cost ~20 times
    the file. ``names`` (the header) names a bad column."""
    values, lines = array("d"), array("q")
    numbered = ((rows.line_num, row) for row in rows)
    for line, row in itertools.chain([first] if first else [], numbered):
        if not row:
            continue
        if len(row) != width:
            what = f"header has {width}" if names else f"the first has {width}"
            raise DatasetError(f"{path}, line {line}: {len(row)} fields, {what}")
        try:
            values.extend([float(v) for v in row])
        except ValueError:
            j = next(j for j, v in enumerate(row) if not _is_number(v))
            column = f", column {names[j]!r}" if names else f", field {j + 1}"
            raise DatasetError(f"{path}, line {line}{column}: {row[j][:40]!r} is not a number; "
                               "all columns must be numeric") from None
        lines.append(line)
    return np.frombuffer(values, dtype=np.float64).reshape(-1, width), lines


def read_npy(path: Path) -> np.ndarray:
    """One array of numbers from a .npy file, its declared size checked before it is read.

    Any damage (a header NumPy's parser chokes on, a size that disagrees with the
    file, a dtype that is not a number) is a DatasetError naming the file.
    """
    f, size = open_data_file(path, "input file")
    try:
        with f:
            shape, fortran, dtype, header = npy_read.read_header(f, str(path), DatasetError)
            if dtype.kind not in "biuf":
                raise DatasetError(f"{path}: features must be numbers, found dtype {dtype}")
            declared = npy_read.data_bytes(shape, dtype)
            if declared != size - header:
                raise DatasetError(f"{path}: its header declares shape {shape} of {dtype} "
                                   f"({declared:,} bytes) but the file holds "
                                   f"{size - header:,} bytes of data; it is truncated or "
                                   "damaged")
            return npy_read.read_data(f, shape, fortran, dtype, str(path), DatasetError)
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from e


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz dataset: never unpickled, never inflated past their declared size."""
    from .checkpoint import load_arrays

    f, _ = open_data_file(path, "NPZ file")
    with f:
        start = f.read(6)
        f.seek(0)
        if not zipfile.is_zipfile(f):
            kind = ("a .npy file (a single array)" if start == b"\x93NUMPY"
                    else "empty" if not start else "not a zip archive")
            raise DatasetError(f"{path} is not an .npz file: it is {kind}; save the features "
                               "and targets with np.savez(path, X=..., y=...)")
    limit = max_data_bytes()
    try:
        return load_arrays(path, max_bytes=limit or 1 << 62,
                           limit_hint=_limit_hint(limit) if limit else None)
    except CheckpointError as e:
        raise DatasetError(str(e).replace("cannot load", "cannot read NPZ file", 1)) from e


def load_csv(path: str | os.PathLike, target: str = "label", *, task: str | None = None,
             n_classes: int | None = None) -> Dataset:
    """A CSV with a header row and numeric columns; `target` names the column to predict.

    Whether the target is class labels or regression targets follows the label
    policy of `nnkernel.io.labels` (``task`` forces one; ``n_classes`` is a
    saved run's class count). The test set is a fixed-seed 20% of the rows.
    """
    path = Path(path)
    with csv_rows(path) as rows:
        header = next((row for row in rows if row), None)
        if header is None:
            raise DatasetError(f"{path} is empty: expected a header row and data rows")
        header = [h.strip() for h in header]
        if target not in header:
            raise DatasetError(f"{path} has no target column {target!r}; available columns: "
                               f"{', '.join(header)}; pass target=NAME (--target NAME)")
        twice = sorted({h for h in header if header.count(h) > 1})
        if twice:  # the second "label" would silently become a feature
            raise DatasetError(f"{path}: the header names {', '.join(map(repr, twice))} more "
                               "than once; each column needs its own name")
        table, lines = numeric_rows(path, rows, len(header), header)
    if table.shape[0] == 0:
        raise DatasetError(f"{path} is empty: expected a header row and at least one data row")
    t = header.index(target)
    X = np.delete(table, t, axis=1)
    names = [h for h in header if h != target]
    if not np.isfinite(X).all():
        i, j = np.argwhere(~np.isfinite(X))[0]
        raise NonFiniteError(f"{path}, line {lines[i]}: NaN or Inf in column {names[j]!r}; "
                             "clean the data first")
    big = float32_overflow(X)
    if big is not None:
        i, j = big
        raise DatasetError(f"{path}, line {lines[i]}, column {names[j]!r}: {X[i, j]:g} is too "
                           "large for float32 (the largest is 3.4e+38); rescale the column")
    X = X.astype(np.float32)
    part = labels.Part(table[:, t], str(path), lambda i: f"line {lines[i]}, column {target!r}")
    task, n_classes, (y,) = labels.decide([part], task=task, n_classes=n_classes)

    return from_arrays(path.stem, X, y, str(path), task=task, n_classes=n_classes)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True



def read_csv_features(path: Path) -> np.ndarray:
    """The rows of a numeric CSV; a first row that is not all numbers is a header."""
    with csv_rows(path, "input file") as rows:
        first = next((row for row in rows if row), None)
        if first is None:
            raise DatasetError(f"{path} has no data rows")
        header = None if all(_is_number(v) for v in first) else first
        table, _ = numeric_rows(path, rows, len(first), header,
                                first=None if header else (rows.line_num, first))
    if table.shape[0] == 0:
        raise DatasetError(f"{path} has no data rows")
    return table
