"""Datasets as NumPy arrays: the embedded digits, (Fashion-)MNIST, toy sets, CSV, NPZ.

Every loader returns a validated `Dataset`: float32 features of shape
(n, features), int64 class labels or float32 regression targets of shape (n, k),
and finite values throughout. "digits" ships inside the package so that the
library works offline with only NumPy installed.

Whether a file's target is class labels or regression targets, and which
labels are refused, is one policy for every source (`nnkernel.io.labels`):
whole numbers with few distinct values are labels 0..K-1, unless ``task``
says otherwise; a negative or stray label is refused by name. Files are
opened with `tabular.open_data_file` (regular files only, size bounded).
"""

from __future__ import annotations

import io
import os
from importlib import resources
from pathlib import Path

import numpy as np

from nnkernel.errors import ConfigError, DatasetError, DTypeError, NonFiniteError, ShapeError

from ..checks import float32_overflow
from . import labels
from .dataset import (
    IDX_FILES,
    SYSTEM_DATA_DIRS,
    Dataset,
    from_arrays,
    search_dirs,
    split_n,
    train_val_split,
    validated,
)
from .download import SOURCES, Source, download, how_to_get
from .idx import load_idx
from .tabular import load_csv, read_csv_features, read_npy, read_npz

__all__ = [
    "DATASETS", "DEFAULT_DATASET", "IDX_FILES", "SOURCES", "SYSTEM_DATA_DIRS", "Dataset",
    "Source", "download", "find_idx_dir", "from_arrays", "load", "load_csv", "load_idx",
    "load_npz", "one_hot", "search_dirs", "train_val_split",
]

DATASETS = ("digits", "fashion-mnist", "mnist", "xor", "spirals", "moons", "linear")
DEFAULT_DATASET = "digits"








def load(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
         seed: int = 0, task: str | None = None, n_classes: int | None = None) -> Dataset:
    """Load a dataset by name (see DATASETS) or from a .csv / .npz path.

    (Fashion-)MNIST is looked for with `find_idx_dir`; if missing and `download`
    is true it is downloaded into `data_dir`, or else ~/.cache/nnkernel/<name>.
    `seed` drives the generated toy sets only; the test split of real data is
    fixed so that results stay comparable between runs. ``task`` and
    ``n_classes`` (a saved run's) apply the label policy of `nnkernel.io.labels`
    to a file; a named dataset's task is fixed and they must agree with it.
    """
    text = os.fspath(name)
    labels.check_task(task)
    if text.lower().endswith(".csv"):
        return load_csv(text, task=task, n_classes=n_classes)
    if text.lower().endswith(".npz"):
        return load_npz(text, task=task, n_classes=n_classes)
    return _agrees(_named(text, data_dir, download, seed), task, n_classes)


def _named(text: str, data_dir, download: bool, seed: int) -> Dataset:
    key = text.lower().replace("_", "-")
    if key == "digits":
        return _digits()
    if key in SOURCES:
        return _load_idx_dataset(key, data_dir, allow_download=download)
    from .text import dataset_key

    if dataset_key(key) is not None:
        raise ConfigError(f"{text!r} is a text: train a language model on it (nnkernel train "
                          f"--dataset {text} --model gpt, or nnkernel.io.text.load_text)")
    from .toy_sets import TOY_SETS

    if key in TOY_SETS:
        return validated(TOY_SETS[key](seed), f"generated {key}")
    raise ConfigError(
        f"unknown dataset {text!r}; valid names: {', '.join(DATASETS)} "
        "(or a path to a .csv or .npz file)"
    )


def _agrees(ds: Dataset, task, n_classes) -> Dataset:
    """A named dataset's own task and classes; a --task or saved run that differs is refused."""
    if task is not None and task != ds.task:
        raise ConfigError(f"{ds.name} is a {ds.task} dataset, not {task} (only the task of a "
                          ".csv or .npz file can be chosen)")
    if n_classes is not None and ds.n_classes is not None and n_classes != ds.n_classes:
        raise DatasetError(f"{ds.name} has {ds.n_classes} classes, the run {n_classes}")
    return ds


def one_hot(y, n_classes: int) -> np.ndarray:
    """Labels (n,) -> float32 one-hot rows (n, n_classes)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ShapeError(f"one_hot expects 1-D labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DTypeError(f"one_hot expects integer labels, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DatasetError(f"labels range over {y.min()}..{y.max()}, outside 0..{n_classes - 1}")
    out = np.zeros((y.shape[0], n_classes), dtype=np.float32)
    out[np.arange(y.shape[0]), y] = 1.0
    return out


# ---------------------------------------------------------------------- embedded digits

def _digits() -> Dataset:
    """The 1797 8x8 UCI digits shipped in nnkernel/data (see its README for credit)."""
    raw = resources.files("nnkernel.io").joinpath("data/digits.npz").read_bytes()
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        X = npz["X"].astype(np.float32) / 16.0  # pixel counts are 0..16
        y = npz["y"].astype(np.int64)
    X_tr, y_tr, X_te, y_te = split_n(X, y, 360, seed=0)  # 1437 train / 360 test
    return validated(Dataset("digits", X_tr, y_tr, X_te, y_te, "classification", 10,
                              {"divide_by": 16.0}, (1, 8, 8)), "nnkernel/io/data/digits.npz")


# ----------------------------------------------------------------------------- IDX files

def _idx_path(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / (stem + ".gz"), directory / stem):
        if candidate.is_file():
            return candidate
    return None


def find_idx_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """First directory holding all four IDX files of `name`, in the documented search order."""
    for directory in search_dirs(name, data_dir):
        if all(_idx_path(directory, stem) for stem in IDX_FILES.values()):
            return directory
    return None


def _load_idx_dataset(name: str, data_dir, allow_download: bool) -> Dataset:
    directory = find_idx_dir(name, data_dir)
    if directory is None:
        if not allow_download:
            raise DatasetError(f"{name} not found and download disabled; "
                               + how_to_get(name, search_dirs(name, data_dir)))
        dest = Path(data_dir) if data_dir is not None else Path.home() / ".cache/nnkernel" / name
        directory = _download(name, dest)
    paths = {role: _idx_path(directory, stem) for role, stem in IDX_FILES.items()}
    arrays = {role: load_idx(path) for role, path in paths.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise DatasetError(f"{paths[f'{part}_images']} must hold images (3-D) and "
                               f"{paths[f'{part}_labels']} labels (1-D); are they swapped?")
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(f"{paths[f'{part}_images']} has {images.shape[0]} images but "
                               f"{paths[f'{part}_labels']} has {labels.shape[0]} labels")

    def pixels(images):
        X = images.reshape(images.shape[0], -1).astype(np.float32)
        X /= 255  # in place: no second 188 MB array for the training images
        return X

    ds = Dataset(name, pixels(arrays["train_images"]), arrays["train_labels"].astype(np.int64),
                 pixels(arrays["test_images"]), arrays["test_labels"].astype(np.int64),
                 "classification", 10, {"divide_by": 255.0},
                 (1, *arrays["train_images"].shape[1:]))
    return validated(ds, str(directory))


_download = download  # load() has a parameter called `download`


# ------------------------------------------------------------------------- CSV and NPZ


def load_features(path: str | os.PathLike, images: bool = False) -> np.ndarray:
    """Features to predict on, float32 (samples, features): a .npy (no pickles) or a numeric
    .csv whose header row is optional. With ``images`` a .npy may also hold images
    (samples, channels, height, width)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        X = read_npy(path)  # a FIFO or a device is refused, the header checked first
    elif suffix == ".csv":
        X = read_csv_features(path)
    else:
        raise DatasetError(f"INPUT must be a .npy or .csv file, got {path.name!r}")
    if X.ndim == 1:
        X = X[None, :]  # one sample
    if X.ndim == 2 and X.shape[0] == 0:
        raise ShapeError(f"{path} has no rows (shape {X.shape}); nothing to predict")
    if not (X.ndim == 2 or (images and X.ndim == 4)) or X.shape[0] == 0:
        what = ("an array (samples, features) or (samples, C, H, W)" if images
                else "a 2-D array (samples, features)")
        raise ShapeError(f"{path}: expected {what}, got shape {X.shape}")
    X = X.astype(np.float32)
    if not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        where = f"column {bad[1]}" if X.ndim == 2 else f"(c, h, w) {tuple(map(int, bad[1:]))}"
        raise NonFiniteError(f"{path}: NaN or Inf at row {bad[0]}, {where}")
    return X


def load_npz(path: str | os.PathLike, x: str = "X", y: str = "y", *, task: str | None = None,
             n_classes: int | None = None) -> Dataset:
    """An .npz with X_train/y_train/X_test/y_test, or with `x` and `y` to split 80/20.

    The targets follow the label policy of `nnkernel.io.labels` (``task``,
    ``n_classes``); uint8 features are taken as pixels and scaled by 1/255.
    """
    path = Path(path)
    arrays = read_npz(path)
    split = ("X_train", "y_train", "X_test", "y_test")
    if all(k in arrays for k in split):
        parts = [arrays[k] for k in split]
    elif x in arrays and y in arrays:
        parts = [arrays[x], arrays[y]]
    else:
        raise DatasetError(f"{path} must contain arrays {x!r} and {y!r}, or "
                           f"{', '.join(split)}; found: {', '.join(arrays) or 'nothing'}")
    features = [_features(a, path) for a in parts[0::2]]
    names = (split[1::2] if len(parts) == 4 else (y,))
    task, n_classes, targets = labels.decide(
        [labels.Part(_targets(a, path, key), str(path), lambda i, key=key: f"{key}[{i}]")
         for a, key in zip(parts[1::2], names, strict=True)], task=task, n_classes=n_classes)
    scaled = {"divide_by": 255.0} if parts[0].dtype == np.uint8 else {}  # as _features does
    # (n, H, W) grey or (n, C, H, W) images: flattened here, their shape kept
    image = {3: (1, *parts[0].shape[1:]), 4: tuple(parts[0].shape[1:])}.get(parts[0].ndim)
    if len(parts) == 2:
        ds = from_arrays(path.stem, features[0], targets[0], str(path), task=task,
                          n_classes=n_classes)
        ds.preprocessing, ds.image_shape = scaled, image
        return ds
    if parts[2].shape[1:] != parts[0].shape[1:]:
        image = None
    ds = Dataset(path.stem, features[0], targets[0], features[1], targets[1], task, n_classes,
                 scaled, image)
    return validated(ds, str(path))


def _features(a: np.ndarray, path: Path) -> np.ndarray:
    if a.dtype.kind not in "biuf" or a.ndim == 0:
        raise DatasetError(f"{path}: features must be a numeric array with one row per sample, "
                           f"found dtype {a.dtype}, shape {a.shape}")
    if a.shape[0] == 0:  # reshape(0, -1) cannot infer the width
        raise DatasetError(f"{path}: a features array has no rows (shape {a.shape})")
    X = a.reshape(a.shape[0], -1) if a.ndim != 1 else a.reshape(-1, 1)
    big = float32_overflow(X)  # it would become Inf, reported as if the file held one
    if big is not None:
        raise DatasetError(f"{path}: feature {X[big]:g} (row {big[0]}, column {big[1]}) is too "
                           "large for float32 (the largest is 3.4e+38); rescale the features")
    return X.astype(np.float32) / 255 if a.dtype == np.uint8 else X.astype(np.float32)


def _targets(a: np.ndarray, path: Path, key: str) -> np.ndarray:
    """The targets as stored (`labels.decide` converts them), one row per sample."""
    if a.ndim == 0:
        raise DatasetError(f"{path}: {key} must have one target per sample, found a scalar")
    return a if a.ndim <= 2 else a.reshape(a.shape[0], -1)
