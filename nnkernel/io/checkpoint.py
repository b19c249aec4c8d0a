"""Atomic, pickle-free reading and writing of checkpoint files.

Writes go to a temporary file in the target's directory and are renamed over
the target with `os.replace`, so a crash leaves either the old file or the new
one, never half of each. Arrays are stored as .npz (the format of `np.savez`)
and read member by member without pickle: a hostile file can fail to load, but
it can never run code, block on a FIFO, or make the reader allocate more than
its declared (and bounded) contents.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import tempfile
import threading
import zipfile
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, DTypeError
from .safe_read import describe_limit, max_checkpoint_bytes, open_regular

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "LayoutMismatch", "atomic_write_bytes",
           "atomic_write_json", "load_arrays", "read_json", "save_arrays"]

# config.json is a few kB and metrics.json grows by ~100 bytes per epoch and member.
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 32  # nnkernel's own files nest 4 levels
_NUMERIC_KINDS = "biufc"
_READ_CHUNK = 16 << 20
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


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; only POSIX can open a directory to fsync it."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Terminated(BaseException):
    """Raised in place of a terminating signal while a temporary file exists."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


_TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


@contextmanager
def _signals_raise():
    """While the block runs, SIGTERM and SIGHUP raise `_Terminated` instead of killing the
    process at once, so the block's cleanup runs; on the way out the old handlers come
    back and the signal is delivered again, so the process still dies of it.

    Only signals whose handler is the default one are taken over (a handler the
    program installed keeps working), and only in the main thread (the only one
    Python lets install handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old, pending, closing = {}, [], [False]

    def handler(signum, frame):
        first = not pending
        pending.append(signum)
        if first and not closing[0]:  # a second signal must not interrupt the cleanup
            raise _Terminated(signum)

    try:
        for signum in _TERMINATING:
            if signal.getsignal(signum) is signal.SIG_DFL:
                old[signum] = signal.signal(signum, handler)
        yield
    finally:
        closing[0] = True  # a signal from here on is only recorded
        for signum, previous in old.items():
            signal.signal(signum, previous)
        if pending:
            signal.raise_signal(pending[0])  # the default action: the process ends here


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data` all at once; on any error the old file is untouched.

    No temporary file is left behind on an exception, KeyboardInterrupt, SIGTERM
    or SIGHUP (the signal still ends the process, after the cleanup); only a
    SIGKILL or a power cut can leave one (`out_dir.clean_stale_temporaries`).
    """
    path = Path(path)
    directory = path.parent
    with _signals_raise():
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as e:
            raise CheckpointError(
                f"cannot write {path}: {e.strerror or e}; check that {directory} exists and "
                "is writable") from e
        try:
            with os.fdopen(fd, "wb") as f:
                # mkstemp makes the file private (0600); keep the old file's mode, or 0644.
                os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            # Also on KeyboardInterrupt and _Terminated: never leave a stray temp file.
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(e, OSError):
                raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from e
            raise
    _fsync_dir(directory)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write `obj` as indented, key-sorted JSON (stable diffs), atomically."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot write {path}: value is not JSON-serializable: {e}") from e
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def read_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> dict:
    """Read a JSON object written by `atomic_write_json`.

    Refused with a CheckpointError naming the file: anything but a regular file,
    more than ``max_bytes`` bytes, nesting deeper than `MAX_JSON_DEPTH`, and
    anything json cannot parse (including integers of more than 4300 digits).
    """
    path = Path(path)
    f, size = open_regular(path, max_bytes)
    try:
        with f:
            data = f.read(size + 1)  # not max_bytes + 1: read(n) allocates n bytes up front
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from e
    if len(data) > size:  # it grew after the size check
        raise CheckpointError(f"{path} is over the limit of {max_bytes:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not a UTF-8 JSON file (byte {e.start})") from e
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
            "the file is corrupt or truncated"
        ) from e
    except RecursionError as e:
        raise CheckpointError(f"{path} is nested too deeply to be an nnkernel file") from e
    except ValueError as e:  # e.g. an integer longer than sys.get_int_max_str_digits()
        raise CheckpointError(f"{path} is not a valid nnkernel JSON file: "
                              f"{str(e).splitlines()[0]}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    if _json_depth(obj) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{path} is nested more than {MAX_JSON_DEPTH} levels deep; "
                              "nnkernel files are not, so it is damaged or hostile")
    return obj


def _json_depth(obj) -> int:
    """How deeply lists and dicts nest in ``obj`` (iterative: no recursion limit to hit)."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:  # no need to walk further than the limit
                todo.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict)
                                                      else value))
    return deepest


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Save named arrays as an .npz file atomically; object arrays are refused.

    The zip is written member by member (exactly what `np.savez` does) so that
    any key works, even ones like "file" that `np.savez(**arrays)` would reject.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            if not isinstance(key, str) or not key:
                raise CheckpointError(f"cannot save to {path}: array names must be non-empty "
                                      f"strings, found {key!r}")
            arr = np.asarray(value)
            if arr.dtype.hasobject:
                raise DTypeError(
                    f"cannot save array {key!r} to {path}: dtype {arr.dtype} holds Python "
                    "objects, which would need pickle; convert it to a numeric array"
                )
            with zf.open(key + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def load_arrays(path: str | os.PathLike, expected: Mapping | None = None,
                max_bytes: int | None = None, *,
                limit_hint: str | None = None) -> dict[str, np.ndarray]:
    """Load an .npz file saved by `save_arrays`, never unpickling anything, and never
    reading or allocating more than the file's declared contents allow.

    Promises, each a one-line CheckpointError naming the file:

    - only a regular file is read (a FIFO, /dev/zero or a directory is refused
      before a byte is read);
    - the file, and the sum of its members' uncompressed sizes, stay within
      ``max_bytes`` (default: $NNKERNEL_MAX_CHECKPOINT_BYTES, else 2 GiB);
    - each member's .npy header (shape, dtype) is read before its data is
      inflated: the dtype must be plain numeric (bool, int, uint, float, complex),
      the data size the header declares must equal the zip entry's size, and
      with ``expected`` (key -> (shape, dtype kinds), e.g. ``{"model/0.W":
      ((64, 16), "f")}``) a key not listed, another shape or another dtype kind
      is refused. A key listed but absent is not an error here: the caller
      knows which keys are required.

    So a deflate bomb is refused after inflating at most its header.
    ``limit_hint`` replaces the end of an over-the-limit message (datasets name
    their own limit).
    """
    path = Path(path)
    limit = max_checkpoint_bytes(max_bytes)
    limit_hint = limit_hint or describe_limit(limit)
    f, _ = open_regular(path, limit, limit_hint=limit_hint)
    with f:
        if not zipfile.is_zipfile(f):
            raise CheckpointError(f"{path} is not an .npz (zip) file; it is truncated or not "
                                  "a checkpoint")
        try:
            with zipfile.ZipFile(f) as zf:
                members = _checked_members(path, zf.infolist(), limit, limit_hint)
                return {key: _read_member(path, zf, info, key, expected)
                        for key, info in members}
        except CheckpointError:
            raise
        except Exception as e:
            # A damaged or hostile zip fails in many ways (zipfile, zlib, numpy's
            # header parser); for the caller all mean "unreadable".
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"cannot load {path}: {reason}") from e


def _checked_members(path: Path, infos, limit: int, limit_hint: str | None = None) -> list:
    """(key, ZipInfo) per member, once the whole directory of the zip passed the checks
    that need no decompression: names, duplicates, methods, total uncompressed size."""
    members, seen, total = [], set(), 0
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise CheckpointError(f"cannot load {path}: member {info.filename!r} is not a .npy "
                                  "array")
        key = info.filename[:-4]
        if key in seen:
            raise CheckpointError(f"cannot load {path}: it holds the array {key!r} twice")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"cannot load {path}: member {info.filename!r} uses zip "
                                  f"compression method {info.compress_type}; np.savez writes "
                                  "stored or deflated members only")
        seen.add(key)
        total += info.file_size
        members.append((key, info))
    if total > limit:
        raise CheckpointError(f"{path} holds {total:,} bytes uncompressed, over "
                              f"{limit_hint or describe_limit(limit)}")
    return members


def _read_member(path: Path, zf, info, key: str, expected) -> np.ndarray:
    """One member: header first, every check, then exactly the declared bytes of data."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise CheckpointError(f"cannot load {path}: array {key!r} uses .npy format version "
                                  f"{version[0]}.{version[1]}; expected 1.0 or 2.0")
        where = f"cannot load {path}: array {key!r}"
        if dtype.hasobject:
            raise CheckpointError(f"{where} holds Python objects, which would need pickle; "
                                  "refused (nnkernel reads arrays of numbers only)")
        if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype:
            raise CheckpointError(f"{where} has dtype {dtype.str}, which is not a numeric dtype")
        if expected is not None:
            _check_expected(path, key, expected.get(key), shape, dtype)
        count = math.prod(shape)
        n_bytes = count * dtype.itemsize
        held = info.file_size - f.tell()
        if n_bytes != held:
            raise CheckpointError(f"{where} declares shape {shape} of {dtype} ({n_bytes:,} "
                                  f"bytes of data) but the zip entry holds {held:,}")
        buf = np.empty(n_bytes, dtype=np.uint8)
        view, done = memoryview(buf), 0
        while done < n_bytes:  # in chunks: readinto copies through a bytes object of its size
            n = f.readinto(view[done:done + _READ_CHUNK])
            if not n:
                raise CheckpointError(f"{where} is truncated")
            done += n
        if f.read(1):  # also makes zipfile check the CRC, if the last read did not
            raise CheckpointError(f"{where} holds more data than its size says")
    arr = buf.view(dtype)
    if fortran:
        return arr.reshape(shape[::-1]).transpose()
    return arr.reshape(shape)


def _check_expected(path: Path, key: str, spec, shape: tuple, dtype: np.dtype) -> None:
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
