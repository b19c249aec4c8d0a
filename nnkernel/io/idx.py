"""IDX files, the format of (Fashion-)MNIST: read safely, gzipped or not."""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from nnkernel.errors import DatasetError

from .tabular import open_data_file


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not): uint8 images (n, rows, cols) or labels (n,)."""
    path = Path(path)
    f, size = open_data_file(path, "IDX file")  # a FIFO or /dev/zero is refused
    try:
        with f:
            data = f.read(size + 1)
    except OSError as e:
        raise DatasetError(f"cannot read IDX file {path}: {e.strerror or e}") from e
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        data = _gunzip_idx(path, data)
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] not in (1, 3):
        magic = data[:4].hex() if len(data) >= 4 else "too short"
        raise DatasetError(f"{path}: not an IDX file (magic {magic}); expected 00000803 (images) "
                           "or 00000801 (labels)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise DatasetError(f"{path}: {len(data)} bytes, expected {expected} for shape {dims}; "
                           "the file is truncated or corrupt, delete it and download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _gunzip_idx(path: Path, data: bytes) -> bytes:
    """Inflate a gzipped IDX file no further than its header's shape says (no gzip bomb).

    What comes out is checked by `load_idx` (magic, size); here only the gzip
    stream: corrupt, or ending before its trailer, is a DatasetError.
    """
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = data

    def take(n: int) -> bytes:  # at most n bytes (n > 0: a max_length of 0 means no limit)
        nonlocal pending
        chunk = inflate.decompress(pending, n)
        pending = inflate.unconsumed_tail
        return chunk

    def broken(why) -> DatasetError:
        return DatasetError(f"{path}: corrupt or truncated gzip data ({why}); delete the file "
                            "and download it again")

    try:
        out = take(4)
        ndim = out[3] if len(out) == 4 and out[3] in (1, 3) else 0
        if ndim:
            out += take(4 * ndim)
        if len(out) == 4 + 4 * ndim and ndim:
            out += take(math.prod(struct.unpack(f">{ndim}I", out[4:])) + 1)  # +1: garbage shows
            if not inflate.eof:
                out += take(1)  # reads the trailer: checks the CRC, sets eof
    except zlib.error as e:
        raise broken(e) from e
    if not inflate.eof and not pending:  # all input used, and the stream is not over
        raise broken("the stream ends early")
    return out
