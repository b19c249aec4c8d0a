"""One dataset: the `Dataset` every loader returns, its checks and split, and where data
files are looked for. The loaders (`datasets`, `tabular`, `idx`, `toy_sets`, `text`) all
import this module and it imports none of them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnkernel.errors import ConfigError, DatasetError, NonFiniteError, ShapeError

from . import labels

# The four IDX files of (Fashion-)MNIST, by role; each may also be gzipped (.gz).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Searched after data_dir, $NNKERNEL_DATA and ~/.cache/nnkernel; a list so tests can empty it.
SYSTEM_DATA_DIRS = [Path("/usr/share/datasets")]  # Debian's dataset-fashion-mnist installs here


@dataclass
class Dataset:
    """Train and test arrays of one dataset, ready for `fit`."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str  # "classification" or "regression"
    n_classes: int | None
    # What the loader did to the raw features, for files that record it (nk.save):
    # {"divide_by": d} means X = float32(raw) / d, computed in float32 (a divisor, not a
    # 1/d factor, because that is the operation applied: 1/255 has no exact float).
    # Empty where the features are used as read (toy sets, CSV, float NPZ).
    preprocessing: dict = field(default_factory=dict)
    # Images: the (channels, height, width) each flat row of X is, in C order; a
    # convolutional model is built for that shape and takes X.reshape(n, C, H, W).
    # None: the features are not images.
    image_shape: tuple | None = None

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])


def validated(ds: Dataset, source: str) -> Dataset:
    """Check the invariants every Dataset promises; `source` names the file in errors."""
    for part in ("train", "test"):
        X, y = getattr(ds, f"X_{part}"), getattr(ds, f"y_{part}")
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise DatasetError(f"{source}: {part} features are empty or not 2-D (shape {X.shape})")
        if y.shape[0] != X.shape[0]:
            raise DatasetError(f"{source}: {X.shape[0]} {part} samples but {y.shape[0]} targets")
        if not all_finite(X):
            bad = np.argwhere(~np.isfinite(X))[0]
            raise NonFiniteError(f"{source}: NaN or Inf in {part} features (row {bad[0]}, "
                                 f"column {bad[1]}); clean or impute the data first")
        if ds.task == "classification":
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise DatasetError(f"{source}: {part} labels must be 1-D integers, found "
                                   f"{y.dtype} of shape {y.shape}")
            labels.check_range(labels.Part(y, f"{source}: {part} labels",
                                           lambda i: f"sample {i}"), ds.n_classes)
        elif not all_finite(y):
            raise NonFiniteError(f"{source}: NaN or Inf in {part} targets")
    if ds.X_test.shape[1] != ds.X_train.shape[1]:
        raise DatasetError(f"{source}: train has {ds.X_train.shape[1]} features, "
                           f"test has {ds.X_test.shape[1]}")
    return ds


def all_finite(a: np.ndarray) -> bool:
    # min and max propagate NaN and show Inf, without a boolean array as big as `a`.
    return bool(np.isfinite(a.min()) and np.isfinite(a.max()))


def split_n(X, y, n_val: int, seed: int):
    order = np.random.default_rng(seed).permutation(X.shape[0])
    val, train = order[:n_val], order[n_val:]
    return X[train], y[train], X[val], y[val]


def train_val_split(X, y, fraction: float, seed: int = 0):
    """Shuffle with a fixed seed and hold out `fraction` of the rows (at least one row each)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation fraction must be strictly between 0 and 1, got {fraction}")
    n = X.shape[0]
    if y.shape[0] != n:
        raise ShapeError(f"cannot split {n} samples with {y.shape[0]} targets; counts must match")
    if n < 2:
        raise DatasetError(f"cannot split {n} sample(s) into two non-empty parts; need at least 2")
    n_val = min(max(round(n * fraction), 1), n - 1)
    return split_n(X, y, n_val, seed)


def from_arrays(name: str, X: np.ndarray, y: np.ndarray, source: str, seed: int = 0, *,
                 task: str, n_classes: int | None) -> Dataset:
    """Split 80/20 the rows of targets `labels.decide` has converted for ``task``."""
    if X.shape[0] == 0:
        raise DatasetError(f"{source} has no rows")
    if y.shape[0] != X.shape[0]:
        raise DatasetError(f"{source}: {X.shape[0]} samples but {y.shape[0]} targets")
    if X.shape[0] < 2:
        raise DatasetError(f"{source} has {X.shape[0]} row; at least 2 are needed (the test "
                           "set is 20% of the rows, at least one)")
    X_tr, y_tr, X_te, y_te = train_val_split(X, y, 0.2, seed)
    return validated(Dataset(name, X_tr, y_tr, X_te, y_te, task, n_classes), source)


def search_dirs(name: str, data_dir=None) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / name]
    if os.environ.get("NNKERNEL_DATA"):
        env = Path(os.environ["NNKERNEL_DATA"])
        dirs += [env, env / name]
    dirs.append(Path.home() / ".cache" / "nnkernel" / name)
    dirs += [d / name for d in SYSTEM_DATA_DIRS]
    return dirs
