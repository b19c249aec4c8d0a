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
from . import npz_read
from .npz_read import LayoutMismatch
from .safe_read import describe_limit, max_checkpoint_bytes, open_regular

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "LayoutMismatch", "atomic_write_bytes",
           "atomic_write_json", "load_arrays", "parse_json", "read_json", "save_arrays"]

# config.json is a few kB and metrics.json grows by ~100 bytes per epoch and member.
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 32  # nnkernel's own files nest 4 levels


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
    return parse_json(data, str(path))


def parse_json(data: bytes, where: str) -> dict:
    """The JSON object in ``data``; anything else is a CheckpointError starting with
    ``where``: not UTF-8, not JSON, an integer of more than 4300 digits, nesting deeper
    than `MAX_JSON_DEPTH`, or a value that is not an object."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{where} is not a UTF-8 JSON file (byte {e.start})") from e
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{where} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
            "the file is corrupt or truncated"
        ) from e
    except RecursionError as e:
        raise CheckpointError(f"{where} is nested too deeply to be an nnkernel file") from e
    except ValueError as e:  # e.g. an integer longer than sys.get_int_max_str_digits()
        raise CheckpointError(f"{where} is not a valid nnkernel JSON file: "
                              f"{str(e).splitlines()[0]}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    if _json_depth(obj) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{where} is nested more than {MAX_JSON_DEPTH} levels deep; "
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
      ``max_bytes`` (default: $NNKERNEL_MAX_CHECKPOINT_BYTES, else 2 GiB), and
      its zip directory within `npz_read.MAX_DIRECTORY_BYTES`;
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
    f, size = open_regular(path, limit, limit_hint=limit_hint)
    with f:
        if not zipfile.is_zipfile(f):
            raise CheckpointError(f"{path} is not an .npz (zip) file; it is truncated or not "
                                  "a checkpoint")
        with npz_read.open_zip(f, size, path) as zf:
            members = npz_read.checked_members(path, zf.infolist(), limit, limit_hint)
            return {key: npz_read.read_member(path, zf, info, key, expected)
                    for key, info in members}
