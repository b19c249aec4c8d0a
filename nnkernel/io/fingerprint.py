"""Which data a run was trained on: a cheap fingerprint, and dataset paths that stay valid.

A resume continues the saved position (epoch, step) in a shuffle that depends
on the number of samples, so resuming on other data silently mixes two
datasets into one run. `data_fingerprint` records the training data's size,
dtype and a hash of a fixed sample of rows; `check_fingerprint` says what
differs. Hashing at most 67 rows instead of all of them keeps it cheap for any
dataset size (it detects a different file, a different subset or a reordering,
not an edit of one pixel in an unsampled row).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import numpy as np

__all__ = ["FINGERPRINT_SCHEME", "absolute_dataset_spec", "check_fingerprint",
           "data_fingerprint", "sampled_rows"]

FINGERPRINT_SCHEME = "rows-sha256-v1"
N_SPACED_ROWS = 64
FILE_SUFFIXES = (".csv", ".npz")


def sampled_rows(n: int) -> list[int]:
    """Rows 0, n // 2, n - 1 and 64 evenly spaced rows, sorted, without repeats."""
    if n <= 0:
        return []
    spaced = np.linspace(0, n - 1, num=min(N_SPACED_ROWS, n)).round().astype(np.int64)
    return sorted({0, n // 2, n - 1, *(int(i) for i in spaced)})


def _canonical_bytes(a: np.ndarray) -> bytes:
    """The values of ``a`` as little-endian, C-ordered bytes (the same on every machine)."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian):
        a = a.astype(a.dtype.newbyteorder("<"))
    return a.tobytes()


def data_fingerprint(X, y) -> dict:
    """A JSON-ready fingerprint of training data (host NumPy arrays, X of shape (n, ...)):

        {"scheme": "rows-sha256-v1", "n_samples": n, "n_features": d,
         "dtype": "float32", "y_dtype": "int64", "y_shape": [...trailing axes],
         "rows_sha256": sha256 over X and y at `sampled_rows(n)`}

    Equal data give equal fingerprints on every machine and byte order.
    """
    X, y = np.asarray(X), np.asarray(y)
    n = int(X.shape[0]) if X.ndim else 0
    rows = sampled_rows(n)
    digest = hashlib.sha256()
    for part in (X, y):
        sample = part[rows] if part.ndim else part
        digest.update(f"{sample.dtype.name}{sample.shape}".encode())
        digest.update(_canonical_bytes(sample))
    return {"scheme": FINGERPRINT_SCHEME, "n_samples": n,
            "n_features": int(np.prod(X.shape[1:])) if X.ndim > 1 else 1,
            "dtype": X.dtype.name, "y_dtype": y.dtype.name, "y_shape": list(y.shape[1:]),
            "rows_sha256": digest.hexdigest()}


_FIELDS = (("n_samples", "samples"), ("n_features", "features"), ("dtype", "feature dtype"),
           ("y_dtype", "target dtype"), ("y_shape", "target shape"))


def check_fingerprint(saved, current: Mapping) -> str | None:
    """None when ``current`` (`data_fingerprint` of the data at hand) matches ``saved`` (the
    one the run recorded), else one sentence saying what differs, e.g. "the training
    data differ from those the run was trained on: 1437 samples then, 1000 now".

    A run saved before fingerprints existed (``saved`` is None), or with another
    scheme, cannot be checked: None.
    """
    if saved is None:
        return None
    if not isinstance(saved, Mapping):
        return f"the run's data fingerprint is damaged ({type(saved).__name__}, not an object)"
    if saved.get("scheme") != current.get("scheme"):
        return None
    differences = [f"{saved.get(key)} {label} then, {current.get(key)} now"
                   for key, label in _FIELDS if saved.get(key) != current.get(key)]
    if not differences and saved.get("rows_sha256") != current.get("rows_sha256"):
        differences.append(f"the same shape ({current.get('n_samples')} x "
                           f"{current.get('n_features')} {current.get('dtype')}) but other "
                           "values in the sampled rows (another file, subset or order)")
    if not differences:
        return None
    return "the training data differ from those the run was trained on: " \
        + "; ".join(differences)


def absolute_dataset_spec(spec: Mapping, cwd: str | os.PathLike | None = None) -> dict:
    """A copy of a dataset spec ({"name", "data_dir", "target", ...}) whose paths are absolute:
    a ``name`` ending in .csv or .npz and a ``data_dir`` are joined to ``cwd`` (default:
    the current directory) and normalised; named datasets ("digits", "fashion-mnist")
    stay names. So a run resumed or evaluated from another directory reads the same
    files. Symlinks are kept as given, not resolved.
    """
    base = os.fspath(cwd) if cwd is not None else os.getcwd()
    out = dict(spec)
    name = out.get("name")
    if isinstance(name, str) and name.lower().endswith(FILE_SUFFIXES):
        out["name"] = os.path.normpath(os.path.join(base, name))
    if isinstance(out.get("data_dir"), str) and out["data_dir"]:
        out["data_dir"] = os.path.normpath(os.path.join(base, out["data_dir"]))
    return out
