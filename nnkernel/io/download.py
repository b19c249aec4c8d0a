"""Downloading (Fashion-)MNIST and Tiny Shakespeare: where from, the checksums, a checked fetch."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nnkernel.errors import ConfigError, DatasetError

from .dataset import IDX_FILES, search_dirs
from .safe_read import open_regular

# The largest published file is 26 MB (Fashion-MNIST's training images, gzipped).
MAX_DOWNLOAD_BYTES = 64 << 20


@dataclass(frozen=True)
class Source:
    """Where a dataset is downloaded from and the published checksum of each file."""

    url: str
    algorithm: str  # a hashlib name: "md5" where that is what the publisher gives
    checksums: dict[str, str]


SOURCES = {
    # Checksums from the README of github.com/zalandoresearch/fashion-mnist.
    "fashion-mnist": Source("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", "md5", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
    # PyTorch's mirror of yann.lecun.com/exdb/mnist (checksums as in torchvision).
    "mnist": Source("https://ossci-datasets.s3.amazonaws.com/mnist/", "md5", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
}
# Text datasets (nnkernel.io.text). The sha256 of Karpathy's char-rnn input.txt (1,115,394 bytes):
# git's object id of that file in the repository (7dcb3a2d...) fixes its bytes; this is theirs.
TEXT_SOURCES = {
    "tinyshakespeare": Source(
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",
        "sha256",
        {"input.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"}),
}


def how_to_get(name: str, searched: list[Path]) -> str:
    """Where ``name`` was looked for and how to provide it: the end of an error message."""
    if name in TEXT_SOURCES:
        source = TEXT_SOURCES[name]
        (filename, digest), = source.checksums.items()
        looked = ", ".join(dict.fromkeys(str(d) for d in searched))
        return (f"looked in: {looked}. To get {name}: put {filename} ({source.url}{filename}, "
                f"sha256 {digest}) in one of them, or pass a directory with --data-dir "
                f"(data_dir=) or $NNKERNEL_DATA; any UTF-8 text file can be given by path "
                f"instead")
    apt = "run `apt-get install dataset-fashion-mnist`, or " if name == "fashion-mnist" else ""
    files = ", ".join(f"{stem}.gz" for stem in IDX_FILES.values())
    return (f"looked in: {', '.join(map(str, searched))}. To get {name}: {apt}put {files} "
            "in a directory and pass it with --data-dir (data_dir=) or $NNKERNEL_DATA")


def download(name: str, dest_dir: str | os.PathLike, *, base_url: str | None = None,
             timeout: float = 30) -> Path:
    """Fetch the files of `name` (IDX files, or a text) into `dest_dir`, checking each
    checksum."""
    sources = {**SOURCES, **TEXT_SOURCES}
    if name not in sources:
        raise ConfigError(f"no download source for {name!r}; downloadable: {', '.join(sources)}")
    source = sources[name]
    base = (base_url or source.url).rstrip("/") + "/"
    dest = Path(dest_dir)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create download directory {dest}: {e.strerror or e}") from e
    for filename, want in source.checksums.items():
        target = dest / filename
        if target.is_file() and _file_digest(target, source.algorithm) == want:
            continue  # already there and intact
        url = base + filename
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{filename}.", suffix=".part")
        try:
            hasher = hashlib.new(source.algorithm)
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                received = 0
                while chunk := resp.read(1 << 20):
                    received += len(chunk)
                    if received > MAX_DOWNLOAD_BYTES:  # a server that never stops
                        raise DatasetError(f"{url} sent more than {MAX_DOWNLOAD_BYTES:,} bytes, "
                                           "more than the published file has; stopped. "
                                           + how_to_get(name, search_dirs(name, dest)))
                    hasher.update(chunk)
                    out.write(chunk)
            got = hasher.hexdigest()
            if got != want:
                raise DatasetError(f"{url}: {source.algorithm} checksum {got}, expected {want}; "
                                   "the download is corrupt, try again later; "
                                   + how_to_get(name, search_dirs(name, dest)))
            os.replace(tmp, target)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            if isinstance(e, urllib.error.HTTPError):
                e.close()  # it holds the open response
                reason = f"HTTP {e.code} {e.reason}"
            else:
                reason = getattr(e, "reason", None) or e
            raise DatasetError(f"could not download {url} ({reason}); "
                               + how_to_get(name, search_dirs(name, dest))) from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return dest


def _file_digest(path: Path, algorithm: str) -> str | None:
    """The checksum of a file already there, read in chunks (None: not a readable file)."""
    try:
        f, _ = open_regular(path, None, error=DatasetError)
        with f:
            hasher = hashlib.new(algorithm)
            while chunk := f.read(1 << 20):
                hasher.update(chunk)
        return hasher.hexdigest()
    except (DatasetError, OSError):
        return None
