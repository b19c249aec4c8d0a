"""Atomic, pickle-free reading and writing of checkpoint files.

Writes go to a temporary file in the target's directory and are renamed over
the target with `os.replace`, so a crash leaves either the old file or the new
one, never half of each. Arrays are stored as .npz (the format of `np.savez`)
and read with ``allow_pickle=False``: a hostile file can fail to load, but it
can never run code.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, DTypeError

__all__ = ["atomic_write_bytes", "atomic_write_json", "load_arrays", "read_json", "save_arrays"]


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; only POSIX can open a directory to fsync it."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data` all at once; on any error the old file is untouched."""
    path = Path(path)
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise CheckpointError(
            f"cannot write {path}: {e.strerror or e}; check that {directory} exists and is writable"
        ) from e
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private (0600); keep the old file's mode, or 0644.
            os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        # Also on KeyboardInterrupt: never leave a stray temp file behind.
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


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON object written by `atomic_write_json`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint file not found: {path}") from e
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not a UTF-8 JSON file (byte {e.start})") from e
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
            "the file is corrupt or truncated"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


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


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load an .npz file saved by `save_arrays`, never unpickling anything."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint file not found: {path}") from e
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from e
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise CheckpointError(f"{path} is not an .npz (zip) file; it is truncated or not a "
                              "checkpoint")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as e:
        # A damaged or hostile zip fails in many ways (zipfile, zlib, numpy's
        # header parser, a refused pickle); for the caller all mean "unreadable".
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"cannot load {path}: {reason}") from e
    for key, value in arrays.items():
        # np.load returns the raw bytes of a zip member that is not a .npy.
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"cannot load {path}: member {key!r} is not a .npy array")
    return arrays
