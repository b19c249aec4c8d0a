"""Text datasets for character language models: a file, or Tiny Shakespeare by name.

    data = load_text("corpus.txt")                   # any UTF-8 text file
    data = load_text("tinyshakespeare")              # found like fashion-mnist, else downloaded
    data.train_ids, data.val_ids                     # int64 ids: the head, and the held-out tail
    data.tokenizer.decode(data.val_ids[:100])

The validation text is the tail of the file (the last ``val_fraction``, 0.1 by
default, as nanoGPT splits Tiny Shakespeare: 1,003,854 characters for training,
111,540 held out), not a random sample of it: windows cut from one text overlap,
so a random split would score the model on characters it was trained on.

Tiny Shakespeare is Karpathy's char-rnn ``data/tinyshakespeare/input.txt``
(1,115,394 bytes, 65 distinct characters). It is looked for as ``input.txt`` (or
``tinyshakespeare.txt``) in ``data_dir``, ``data_dir/tinyshakespeare``,
``$NNKERNEL_DATA`` (and its ``tinyshakespeare/``), ``~/.cache/nnkernel/tinyshakespeare``
and ``/usr/share/datasets/tinyshakespeare``; a copy found is checked against the
file's sha256 before it is used; if there is none, it is downloaded into ``data_dir``
(or the cache) and checked the same way (`nnkernel.io.download`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetError
from . import download
from .dataset import search_dirs
from .tabular import open_data_file
from .tokenizer import CharTokenizer

__all__ = ["TEXT_DATASETS", "TextData", "is_text_dataset", "load_text", "text_fingerprint"]

# name -> (the file names a copy may have, the first is the downloaded one)
TEXT_DATASETS = {"tinyshakespeare": ("input.txt", "tinyshakespeare.txt")}
ALIASES = {"tiny-shakespeare": "tinyshakespeare", "shakespeare": "tinyshakespeare"}
TEXT_SUFFIXES = (".txt",)
FINGERPRINT_SCHEME = "text-sha256-v1"


@dataclass
class TextData:
    """A text, its tokenizer and ids: ``ids[:n_train]`` train, ``ids[n_train:]`` validate."""

    name: str             # a dataset's name, or the file's absolute path
    path: Path
    text: str
    tokenizer: CharTokenizer
    ids: np.ndarray       # int64 (len(text),)
    n_train: int
    sha256: str           # of the file's bytes

    @property
    def train_ids(self) -> np.ndarray:
        return self.ids[:self.n_train]

    @property
    def val_ids(self) -> np.ndarray:
        return self.ids[self.n_train:]

    def fingerprint(self) -> dict:
        return text_fingerprint(len(self.text), self.sha256)


def text_fingerprint(characters: int, sha256: str) -> dict:
    """What a run records of its text, so that a resume on another text is refused."""
    return {"scheme": FINGERPRINT_SCHEME, "characters": int(characters), "sha256": sha256}


def dataset_key(name: str) -> str | None:
    """The text dataset ``name`` names ("tinyshakespeare"), or None."""
    key = str(name).lower().replace("_", "-")
    key = ALIASES.get(key, key)
    return key if key in TEXT_DATASETS else None


def is_text_dataset(name) -> bool:
    """Whether ``name`` is a text dataset's name or a .txt path."""
    return isinstance(name, str | os.PathLike) and (
        dataset_key(os.fspath(name)) is not None
        or os.fspath(name).lower().endswith(TEXT_SUFFIXES))


def load_text(name: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
              val_fraction: float = 0.1, tokenizer: CharTokenizer | None = None,
              download: bool = True) -> TextData:
    """The text of a file or named text dataset, encoded, with its held-out tail.

    ``tokenizer``: a saved run's (resume, evaluate); a character it lacks is refused by
    name. Without one the text's own characters are the vocabulary.
    """
    if not (isinstance(val_fraction, float | int) and 0.0 < val_fraction < 1.0):
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    key = dataset_key(os.fspath(name))
    if key is not None:
        path = find_text(key, data_dir)
        if path is None:
            if not download:
                raise DatasetError(f"{key} not found and download disabled; "
                                   + how_to_get(key, data_dir))
            path = _download(key, data_dir)
        label = key
    else:
        path, label = Path(name), os.path.abspath(os.fspath(name))
    raw = _read(path)
    digest = hashlib.sha256(raw).hexdigest()
    if key is not None:
        _check_digest(key, path, digest)
    try:
        text = raw.decode("utf-8-sig")  # a byte order mark is not part of the text
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); a "
                           "character language model reads UTF-8 text files") from None
    if len(text) < 4:
        raise DatasetError(f"{path} holds {len(text)} character(s); a language model needs a "
                           "text to learn from")
    tokenizer = tokenizer if tokenizer is not None else CharTokenizer.from_text(text)
    ids = tokenizer.encode(text, what=str(path))
    n_train = int(len(text) * (1.0 - val_fraction))  # as nanoGPT: int(0.9 * n)
    n_train = min(max(n_train, 2), len(text) - 2)
    return TextData(label, path, text, tokenizer, ids, n_train, digest)


def _read(path: Path) -> bytes:
    f, size = open_data_file(path, "text file")
    try:
        with f:
            return f.read(size + 1)
    except OSError as e:
        raise DatasetError(f"cannot read text file {path}: {e.strerror or e}") from e


# -------------------------------------------------------------------- Tiny Shakespeare

def find_text(key: str, data_dir=None) -> Path | None:
    """The first copy of a named text dataset in the search order (the module docstring)."""
    for directory in search_dirs(key, data_dir):
        for filename in TEXT_DATASETS[key]:
            if (directory / filename).is_file():
                return directory / filename
    return None


def _check_digest(key: str, path: Path, digest: str) -> None:
    source = download.TEXT_SOURCES[key]
    want = next(iter(source.checksums.values()))
    if digest != want:
        raise DatasetError(f"{path} is not {key}: its sha256 is {digest}, {key}'s is {want}; "
                           f"move it away, or pass it by path (--dataset {path}) to train on it")


def _download(key: str, data_dir) -> Path:
    dest = Path(data_dir) if data_dir is not None else Path.home() / ".cache/nnkernel" / key
    directory = download.download(key, dest)
    return directory / TEXT_DATASETS[key][0]


def how_to_get(key: str, data_dir=None, searched=None) -> str:
    """Where a named text was looked for (``searched``, else the search order for
    ``data_dir``) and how to provide it: the end of an error message."""
    return download.how_to_get(key, searched or search_dirs(key, data_dir))
