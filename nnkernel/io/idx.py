"""IDX files, the format of (Fashion-)MNIST: read safely, gzipped or not.

An IDX file is a 4-byte magic (0, 0, 8 for unsigned bytes, then the number of
dimensions), one big-endian uint32 per dimension, then the bytes of the array.
The size the header declares is checked before the data are read: against the
file for a plain file; for a gzipped one against what the gzip stream can hold
(its trailer records the inflated size modulo 2**32, and deflate cannot inflate
more than 1032 bytes per byte) and the memory nnkernel may use, so a small
file whose header claims a huge array is refused before it inflates, and a
stream is inflated once, into the array it becomes.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from nnkernel.errors import DatasetError

from .tabular import max_data_bytes, open_data_file

__all__ = ["MAX_DEFLATE_RATIO", "load_idx"]

MAX_DEFLATE_RATIO = 1032  # deflate's most: 258 bytes per 2-bit code, ~1032:1 overall
_CHUNK = 256 << 10  # inflated a chunk at a time into the array: ~1 MB beside it


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not): uint8 images (n, rows, cols) or labels (n,)."""
    path = Path(path)
    f, size = open_data_file(path, "IDX file")  # a FIFO or /dev/zero is refused
    try:
        with f:
            start = f.read(4)
            if start[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
                return _gunzip_idx(path, start + f.read(size + 1 - len(start)))
            start += f.read(4 * start[3] if len(start) == 4 and start[3] in (1, 3) else 0)
            dims, header = _header(path, start)
            expected = header + math.prod(dims)
            if size != expected:
                raise DatasetError(f"{path}: {size} bytes, expected {expected} for shape "
                                   f"{dims}; the file is truncated or corrupt, delete it and "
                                   "download it again")
            out = np.empty(expected - header, dtype=np.uint8)  # read into it: no copy
            view, done = memoryview(out), 0
            while done < out.size and (n := f.readinto(view[done:])):
                done += n
            if done < out.size or f.read(1):
                raise DatasetError(f"{path} changed size while it was read")
            return out.reshape(dims)
    except OSError as e:
        raise DatasetError(f"cannot read IDX file {path}: {e.strerror or e}") from e


def _header(path: Path, data: bytes) -> tuple[tuple, int]:
    """(dims, header length) of the IDX bytes that start ``data``."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] not in (1, 3):
        magic = data[:4].hex() if len(data) >= 4 else "too short"
        raise DatasetError(f"{path}: not an IDX file (magic {magic}); expected 00000803 (images) "
                           "or 00000801 (labels)")
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} bytes)")
    return struct.unpack(f">{data[3]}I", data[4:header]), header


def _gunzip_idx(path: Path, data: bytes) -> np.ndarray:
    """Inflate a gzipped IDX file into its array, no further than its header's shape says,
    after checking that shape against the stream (see the module docstring)."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    source, fed, tail = memoryview(data), 0, b""
    done = 0

    def take(n: int) -> bytes:
        """At most n bytes, fed a slice of input at a time (each call's unconsumed input is
        copied: feeding the whole file would copy it per call)."""
        nonlocal fed, tail
        parts, got = [], 0
        while got < n and not inflate.eof:
            if not tail:
                if fed >= len(source):
                    break  # the input is used up
                tail, fed = source[fed:fed + _CHUNK], fed + _CHUNK
            part = inflate.decompress(tail, n - got)  # n - got > 0: 0 would mean no limit
            tail = inflate.unconsumed_tail
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def broken(why) -> DatasetError:
        return DatasetError(f"{path}: corrupt or truncated gzip data ({why}); delete the file "
                            "and download it again")

    try:
        start = take(4)
        if len(start) == 4 and start[3] in (1, 3):
            start += take(4 * start[3])
        if len(start) < 4 or (start[3] in (1, 3) and len(start) < 4 + 4 * start[3]):
            raise broken(f"the stream ends within the IDX header, after {len(start)} bytes")
        dims, header = _header(path, start)
        n = math.prod(dims)
        _check_claim(path, data, header + n, dims)
        out = np.empty(n, dtype=np.uint8)
        view = memoryview(out)
        while done < n:
            chunk = take(min(n - done, _CHUNK))
            if not chunk:
                break
            view[done:done + len(chunk)] = chunk
            done += len(chunk)
        extra = take(1) if not inflate.eof else b""  # reads the trailer: checks the CRC
    except zlib.error as e:
        raise broken(e) from e
    if done < n:
        raise broken(f"the stream ends after {header + done:,} of the {header + n:,} bytes its "
                     "IDX header declares")
    if extra:
        raise DatasetError(f"{path}: the gzip stream holds more than the {header + n:,} bytes "
                           f"its IDX header declares for shape {dims}; the file is corrupt")
    if not inflate.eof:
        raise broken("the stream ends before its trailer")
    return out.reshape(dims)


def _check_claim(path: Path, data: bytes, declared: int, dims: tuple) -> None:
    """Refuse an inflated size the gzip stream cannot hold or memory cannot take."""
    if len(data) >= 18 and int.from_bytes(data[-4:], "little") != declared % 2**32:
        raise DatasetError(f"{path}: the gzip trailer records "
                           f"{int.from_bytes(data[-4:], 'little'):,} bytes inflated, expected "
                           f"{declared:,} for shape {dims}; the file is truncated or corrupt, "
                           "delete it and download it again")
    if declared > len(data) * MAX_DEFLATE_RATIO:
        raise DatasetError(f"{path}: its IDX header declares {declared:,} bytes (shape {dims}), "
                           f"more than {len(data):,} bytes of gzip can inflate to; the file is "
                           "corrupt")
    limit = max_data_bytes()
    if limit is not None and declared > limit:
        raise DatasetError(f"{path}: its IDX header declares {declared:,} bytes (shape {dims}), "
                           f"over the {limit / 2**30:.1f} GiB nnkernel may read (the memory "
                           "available, or $NNKERNEL_MAX_DATA_BYTES)")
