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
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from nnkernel.errors import ConfigError, DatasetError, DTypeError, NonFiniteError, ShapeError

from . import labels
from .download import SOURCES, Source, download
from .idx import load_idx
from .tabular import (
    _read_csv_features,
    float32_overflow,
    load_csv,
    read_npy,
    read_npz,
)

__all__ = [
    "DATASETS", "DEFAULT_DATASET", "SOURCES", "Dataset", "Source", "download", "find_idx_dir",
    "load", "load_csv", "load_idx", "load_npz", "one_hot", "train_val_split",
]

DATASETS = ("digits", "fashion-mnist", "mnist", "xor", "spirals", "moons", "linear")
DEFAULT_DATASET = "digits"

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
        return _validated(TOY_SETS[key](seed), f"generated {key}")
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


# ----------------------------------------------------------------- validation and splitting

def _validated(ds: Dataset, source: str) -> Dataset:
    """Check the invariants every Dataset promises; `source` names the file in errors."""
    for part in ("train", "test"):
        X, y = getattr(ds, f"X_{part}"), getattr(ds, f"y_{part}")
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise DatasetError(f"{source}: {part} features are empty or not 2-D (shape {X.shape})")
        if y.shape[0] != X.shape[0]:
            raise DatasetError(f"{source}: {X.shape[0]} {part} samples but {y.shape[0]} targets")
        if not _all_finite(X):
            bad = np.argwhere(~np.isfinite(X))[0]
            raise NonFiniteError(f"{source}: NaN or Inf in {part} features (row {bad[0]}, "
                                 f"column {bad[1]}); clean or impute the data first")
        if ds.task == "classification":
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise DatasetError(f"{source}: {part} labels must be 1-D integers, found "
                                   f"{y.dtype} of shape {y.shape}")
            labels.check_range(labels.Part(y, f"{source}: {part} labels",
                                           lambda i: f"sample {i}"), ds.n_classes)
        elif not _all_finite(y):
            raise NonFiniteError(f"{source}: NaN or Inf in {part} targets")
    if ds.X_test.shape[1] != ds.X_train.shape[1]:
        raise DatasetError(f"{source}: train has {ds.X_train.shape[1]} features, "
                           f"test has {ds.X_test.shape[1]}")
    return ds


def _all_finite(a: np.ndarray) -> bool:
    # min and max propagate NaN and show Inf, without a boolean array as big as `a`.
    return bool(np.isfinite(a.min()) and np.isfinite(a.max()))


def _split_n(X, y, n_val: int, seed: int):
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
    return _split_n(X, y, n_val, seed)


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


def _from_arrays(name: str, X: np.ndarray, y: np.ndarray, source: str, seed: int = 0, *,
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
    return _validated(Dataset(name, X_tr, y_tr, X_te, y_te, task, n_classes), source)


# ---------------------------------------------------------------------- embedded digits

def _digits() -> Dataset:
    """The 1797 8x8 UCI digits shipped in nnkernel/data (see its README for credit)."""
    raw = resources.files("nnkernel.io").joinpath("data/digits.npz").read_bytes()
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        X = npz["X"].astype(np.float32) / 16.0  # pixel counts are 0..16
        y = npz["y"].astype(np.int64)
    X_tr, y_tr, X_te, y_te = _split_n(X, y, 360, seed=0)  # 1437 train / 360 test
    return _validated(Dataset("digits", X_tr, y_tr, X_te, y_te, "classification", 10,
                              {"divide_by": 16.0}, (1, 8, 8)), "nnkernel/io/data/digits.npz")


# ----------------------------------------------------------------------------- IDX files

def _idx_path(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / (stem + ".gz"), directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _search_dirs(name: str, data_dir=None) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / name]
    if os.environ.get("NNKERNEL_DATA"):
        env = Path(os.environ["NNKERNEL_DATA"])
        dirs += [env, env / name]
    dirs.append(Path.home() / ".cache" / "nnkernel" / name)
    dirs += [d / name for d in SYSTEM_DATA_DIRS]
    return dirs


search_dirs = _search_dirs  # public: nnkernel.io.text looks in the same places


def find_idx_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """First directory holding all four IDX files of `name`, in the documented search order."""
    for directory in _search_dirs(name, data_dir):
        if all(_idx_path(directory, stem) for stem in IDX_FILES.values()):
            return directory
    return None


def _how_to_get(name: str, searched: list[Path]) -> str:
    from .text import TEXT_DATASETS, how_to_get

    if name in TEXT_DATASETS:
        return how_to_get(name, searched=searched)
    apt = "run `apt-get install dataset-fashion-mnist`, or " if name == "fashion-mnist" else ""
    files = ", ".join(f"{stem}.gz" for stem in IDX_FILES.values())
    return (f"looked in: {', '.join(map(str, searched))}. To get {name}: {apt}put {files} "
            "in a directory and pass it with --data-dir (data_dir=) or $NNKERNEL_DATA")


def _load_idx_dataset(name: str, data_dir, allow_download: bool) -> Dataset:
    directory = find_idx_dir(name, data_dir)
    if directory is None:
        if not allow_download:
            raise DatasetError(f"{name} not found and download disabled; "
                               + _how_to_get(name, _search_dirs(name, data_dir)))
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
    return _validated(ds, str(directory))


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
        X = _read_csv_features(path)
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
        ds = _from_arrays(path.stem, features[0], targets[0], str(path), task=task,
                          n_classes=n_classes)
        ds.preprocessing, ds.image_shape = scaled, image
        return ds
    if parts[2].shape[1:] != parts[0].shape[1:]:
        image = None
    ds = Dataset(path.stem, features[0], targets[0], features[1], targets[1], task, n_classes,
                 scaled, image)
    return _validated(ds, str(path))


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
