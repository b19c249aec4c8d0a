"""The members of an .npz (a zip of .npy arrays) read from a file that may be hostile.

Shared by run checkpoints and datasets (`checkpoint.load_arrays`) and model
files (`model_file`). Everything that needs no decompression is checked first,
from the zip's directory: its size (zipfile holds one object per entry, ~0.5 KB
each), member names, duplicates, compression methods, the encryption flag and
the total uncompressed size. Then each member's .npy header is read
(`npy_read`) and checked against the expected layout and against the zip
entry's size before its data are inflated, so a deflate bomb is refused after
inflating its header. zipfile, zlib, bz2 and lzma fail in many ways on damaged
data (BadZipFile, zlib.error, RuntimeError, LZMAError, NotImplementedError, ...);
each is one CheckpointError naming the file.
"""

from __future__ import annotations

import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from . import npy_read

__all__ = ["MAX_DIRECTORY_BYTES", "LayoutMismatch", "check_directory", "check_method",
           "checked_members", "open_zip", "read_member", "unreadable"]

# A model of 10,000 layers has ~40,000 members of ~90 directory bytes each (3.6 MB).
MAX_DIRECTORY_BYTES = 16 << 20
_END = b"PK\x05\x06"          # end of central directory record (22 bytes + comment)
_END64_LOCATOR = b"PK\x06\x07"  # 20 bytes, just before the end record
_END64 = b"PK\x06\x06"        # 56 bytes, just before the locator
_KIND_NAMES = {"b": "bool", "i": "integer", "u": "unsigned integer", "f": "floating point",
               "c": "complex"}


class LayoutMismatch(CheckpointError):
    """A member of an .npz is not in the ``expected`` layout given to `load_arrays`.

    ``detail`` is the message without the file, for callers that name the layout
    ("does not match the architecture in config.json: <detail>").
    """

    def __init__(self, message: str, path: Path, detail: str):
        super().__init__(message)
        self.path, self.detail = path, detail


def unreadable(path, e: BaseException, what: str = "cannot load") -> CheckpointError:
    """The one-line CheckpointError for an exception of zipfile, zlib, lzma, ..."""
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return CheckpointError(f"{what} {path}: {reason[:300]}")


def check_directory(f, size: int, path) -> None:
    """Refuse a zip whose central directory is over `MAX_DIRECTORY_BYTES`, before zipfile
    reads it: it would hold one Python object per entry, ~7 bytes of memory per byte."""
    tail_len = min(size, 22 + 0xFFFF)  # the end record, after a comment of up to 64 KiB
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(_END)
    if at < 0 or len(tail) - at < 22:
        return  # no end record: zipfile refuses the file
    directory = int.from_bytes(tail[at + 12:at + 16], "little")
    locator = at - 20
    if locator >= 0 and tail[locator:locator + 4] == _END64_LOCATOR:
        start = size - tail_len + locator - 56  # zipfile reads the zip64 record from there
        if start >= 0:
            f.seek(start)
            record = f.read(56)
            if record[:4] == _END64:  # then zipfile takes its sizes, not the end record's
                directory = int.from_bytes(record[40:48], "little")
    f.seek(0)
    if directory > MAX_DIRECTORY_BYTES:
        raise CheckpointError(f"{path}: its zip directory claims {directory:,} bytes, over "
                              f"{MAX_DIRECTORY_BYTES:,}; the file is damaged or hostile")


@contextmanager
def open_zip(f, size: int, path):
    """The zipfile.ZipFile of the open file ``f``; inside the block any exception but a
    CheckpointError becomes one (`unreadable`)."""
    check_directory(f, size, path)
    try:
        with zipfile.ZipFile(f) as zf:
            yield zf
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - see the module docstring
        raise unreadable(path, e) from e


def checked_members(path, infos, limit: int, limit_hint: str,
                    others: tuple = ()) -> list:
    """(key, ZipInfo) of each .npy member, once the whole directory passed the checks that
    need no decompression; members named in ``others`` (read by the caller) are left out
    but checked the same way."""
    members, seen, total = [], set(), 0
    for info in infos:
        name = info.filename
        if name not in others and not name.endswith(".npy"):
            raise CheckpointError(f"cannot load {path}: member {name!r} is not a .npy array")
        if name in seen:
            shown = f"array {name[:-4]!r}" if name.endswith(".npy") else f"member {name!r}"
            raise CheckpointError(f"cannot load {path}: it holds the {shown} twice")
        check_method(path, info)
        seen.add(name)
        total += info.file_size
        if name not in others:
            members.append((name[:-4], info))
    if total > limit:
        raise CheckpointError(f"{path} holds {total:,} bytes uncompressed, over {limit_hint}")
    return members


def check_method(path, info) -> None:
    """Stored or deflated, not encrypted: what np.savez and zipfile write."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"cannot load {path}: member {info.filename!r} uses zip "
                              f"compression method {info.compress_type}; np.savez writes "
                              "stored or deflated members only")
    if info.flag_bits & 0x1:
        raise CheckpointError(f"cannot load {path}: member {info.filename!r} is encrypted")


def read_member(path, zf, info, key: str, expected) -> np.ndarray:
    """One member: header first, every check, then exactly the declared bytes of data.

    ``expected`` (None, or key -> (shape, dtype kinds)) refuses a key not listed,
    another shape or another dtype kind (`LayoutMismatch`).
    """
    where = f"cannot load {path}: array {key!r}"
    with zf.open(info) as f:
        shape, fortran, dtype, header = npy_read.read_header(f, where, CheckpointError)
        if expected is not None:
            _check_expected(path, key, expected.get(key), shape, dtype)
        n_bytes = npy_read.data_bytes(shape, dtype)
        held = info.file_size - header
        if n_bytes != held:
            raise CheckpointError(f"{where} declares shape {shape} of {dtype} ({n_bytes:,} "
                                  f"bytes of data) but the zip entry holds {held:,}")
        arr = npy_read.read_data(f, shape, fortran, dtype, where, CheckpointError)
        if f.read(1):  # also makes zipfile check the CRC, if the last read did not
            raise CheckpointError(f"{where} holds more data than its size says")
    return arr


def _check_expected(path, key: str, spec, shape: tuple, dtype: np.dtype) -> None:
    where = f"{path} does not match the expected layout: array {key!r}"
    if spec is None:
        raise LayoutMismatch(f"{where} is not part of it", path, f"unexpected array {key!r}")
    want_shape, kinds = spec
    if tuple(want_shape) != tuple(shape):
        raise LayoutMismatch(f"{where} has shape {shape}, expected {tuple(want_shape)}", path,
                             f"array {key!r} has shape {shape}, expected {tuple(want_shape)}")
    if dtype.kind not in kinds:
        names = " or ".join(_KIND_NAMES.get(k, k) for k in kinds)
        raise LayoutMismatch(f"{where} has dtype {dtype}, expected {names}", path,
                             f"array {key!r} has dtype {dtype}, expected {names}")
