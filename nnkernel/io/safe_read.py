"""Opening files that may be hostile: regular files only, and never more bytes than a limit.

A path handed to nnkernel may name a FIFO (reading it blocks until someone
writes), a device such as /dev/zero (endless bytes) or a directory. `open_regular`
looks at what the path is before reading a byte: it stats the path, opens it
with O_NONBLOCK (so even a FIFO swapped in after the stat cannot block the
open) and checks the opened file with fstat, so what is read is what was
checked. The size of a regular file is known before reading, so a limit is
enforced without reading anything.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["DEFAULT_MAX_CHECKPOINT_BYTES", "MAX_CHECKPOINT_BYTES_ENV", "max_checkpoint_bytes",
           "open_regular"]

MAX_CHECKPOINT_BYTES_ENV = "NNKERNEL_MAX_CHECKPOINT_BYTES"
# 2 GiB: a 784-512-512-10 MLP with Adam's state is ~8 MB; 2 GiB holds ~180M float32
# parameters with Adam's two state arrays, far beyond the networks nnkernel trains,
# and it refuses the 4.2 GB deflate bomb of issue 16 even without an expected layout.
DEFAULT_MAX_CHECKPOINT_BYTES = 2 << 30
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISSOCK, "a socket"))


def max_checkpoint_bytes(max_bytes: int | None = None) -> int:
    """The byte limit for reading a checkpoint: ``max_bytes`` if given, else
    $NNKERNEL_MAX_CHECKPOINT_BYTES (an integer, optionally with a K, M, G or T suffix,
    powers of 1024), else `DEFAULT_MAX_CHECKPOINT_BYTES`.
    """
    if max_bytes is not None:
        return int(max_bytes)
    limit = bytes_from_env(MAX_CHECKPOINT_BYTES_ENV, CheckpointError)
    return DEFAULT_MAX_CHECKPOINT_BYTES if limit is None else limit


def bytes_from_env(name: str, error: type[Exception]) -> int | None:
    """A positive byte count from $name (K, M, G, T suffixes: powers of 1024), None if unset;
    anything else raises ``error`` naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    suffix = text[-1].upper() if text[-1].isalpha() else ""
    number = text[:-1] if suffix else text
    if suffix in _SUFFIXES and number.strip().isdigit() and int(number) > 0:
        return int(number) * _SUFFIXES[suffix]
    raise error(f"${name} must be a positive number of bytes such as 8000000000 or 8G, "
                f"got {text!r}")


def describe_limit(limit: int, parameter: str = "max_bytes") -> str:
    """How to raise a limit, for the end of an error message."""
    return (f"the limit of {limit:,} bytes; if the file is trusted, raise it with "
            f"${MAX_CHECKPOINT_BYTES_ENV} (or {parameter}=)")


def _kind(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO (named pipe)", ...), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((text for test, text in _KINDS if test(mode)), "not a regular file")


def _refuse(path: Path, mode: int, error: type[Exception]) -> Exception:
    shown = str(path)
    if path.is_symlink():
        shown += f" (a symlink to {os.readlink(path)})"
    return error(f"{shown} is {_kind(mode)}, not a regular file; refusing to read it")


def open_regular(path: str | os.PathLike, max_bytes: int | None = None, *,
                 limit_hint: str | None = None, error: type[Exception] = CheckpointError,
                 what: str = "checkpoint file"):
    """Open ``path`` for binary reading if, and only if, it is a regular file of at most
    ``max_bytes`` bytes (None: no limit); returns ``(file, size)``.

    Never blocks (a FIFO is refused, not opened for reading), never reads a device,
    and reads nothing at all before refusing. Errors are ``error`` (CheckpointError;
    datasets pass DatasetError) naming the path; a missing file is "<what> not
    found: <path>"; ``limit_hint`` ends the message of a file over the limit.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows symlinks: a link to /dev/zero is a device
    except FileNotFoundError as e:
        dangling = f" (a symlink to the missing {os.readlink(path)})" if path.is_symlink() else ""
        raise error(f"{what} not found: {path}{dangling}") from e
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from e
    if _kind(mode) is not None:
        raise _refuse(path, mode, error)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from e
    try:
        info = os.fstat(fd)  # the file actually opened: it may have been swapped since the stat
        if _kind(info.st_mode) is not None:
            raise _refuse(path, info.st_mode, error)
        if max_bytes is not None and info.st_size > max_bytes:
            raise error(f"{path} is {info.st_size:,} bytes, over "
                        f"{limit_hint or f'the limit of {max_bytes:,} bytes'}")
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise
