"""The directory a run writes: one writer at a time, no stale temporaries, writable up front.

    check_writable(out)              # before training: fail now, not after an epoch
    with RunLock(out):               # a second `train --out out` is refused
        clean_stale_temporaries(out) # what a kill -9 during a save left behind
        ...train and save...
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

from ..errors import CheckpointError, ConfigError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; RunLock then only records the pid
    fcntl = None

__all__ = ["LOCK_FILE", "RunLock", "check_writable", "clean_stale_temporaries"]

LOCK_FILE = ".lock"
# flock errors that mean "this file system cannot lock", not "someone holds the lock"
_UNSUPPORTED = {getattr(errno, name) for name in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "ENOSYS",
                                                   "EINVAL") if hasattr(errno, name)}


class RunLock:
    """The right to write a run directory, held from `acquire` (or ``with``) to `release`.

    An exclusive, non-blocking ``flock`` on ``<directory>/.lock``: while one process
    holds it, another `acquire` on the same directory, from any process (or
    another RunLock in the same one), raises CheckpointError("<directory> is in
    use by another nnkernel process (pid N)") at once, instead of both writing.
    The kernel releases the lock when the holder exits, however it exits (also
    kill -9), so a crash never leaves a directory locked; the lock file itself
    stays, holding the last holder's pid. The directory must exist.

    Where the file system cannot lock (flock fails with ENOLCK, EOPNOTSUPP, ...;
    some network file systems) or on Windows, `acquire` succeeds without
    protection and ``locked`` is False, rather than making such directories
    unusable.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.locked = False
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) \
            | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise CheckpointError(f"cannot lock {self.directory}: cannot create {self.path}: "
                                  f"{e.strerror or e}") from e
        self.locked = fcntl is not None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in _UNSUPPORTED:
                self.locked = False  # e.g. some network file systems: write, unprotected
            else:
                holder = _read_pid(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise CheckpointError(f"{self.directory} is in use by another nnkernel "
                                          f"process (pid {holder}); wait for it to finish or "
                                          "choose another --out") from None
                raise CheckpointError(f"cannot lock {self.path}: {e.strerror or e}") from e
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the directory up (idempotent); the lock file stays."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def clean_stale_temporaries(directory: str | os.PathLike, names=None) -> list[str]:
    """Remove the temporaries `checkpoint.atomic_write_bytes` leaves when killed mid-save
    (``.<name>.<random>.tmp`` for each run file name; default `run_dir.RUN_FILES`);
    returns the names removed.

    Call it only while holding the directory's `RunLock`: then no other nnkernel
    process is writing there, so every such file is stale. Only regular files
    and symlinks matching the pattern are removed, nothing else.
    """
    if names is None:
        from .run_dir import RUN_FILES as names
    directory = Path(directory)
    pattern = re.compile("|".join(rf"\.{re.escape(n)}\.[A-Za-z0-9_]+\.tmp" for n in names))
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name) and not entry.is_dir(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise CheckpointError(f"cannot remove the stale temporary file {entry.path}: "
                                      f"{e.strerror or e}") from e
    return sorted(removed)


def check_writable(out_dir: str | os.PathLike, flag: str = "--out") -> Path:
    """Make sure a run can be saved into ``out_dir`` before any training: create it if
    needed, then create and remove a temporary file in it. Returns the path.

    One-line errors: ConfigError when the path cannot be a directory ("--out X is a
    symlink to a missing path Y", "--out X exists and is not a directory", "... Z
    in its path is a file"), CheckpointError when the system refuses ("--out X is
    not writable: Read-only file system").
    """
    path = Path(out_dir)
    for p in (path, *path.parents):  # a dangling link anywhere in the path: mkdir says "exists"
        if p.is_symlink() and not p.exists():
            where = f"{flag} {path}" if p == path else f"{flag} {path}: {p}"
            raise ConfigError(f"{where} is a symlink to a missing path {os.readlink(p)}")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} exists and is not a directory")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"{flag} {path} cannot be created: {blocker} in its path is not a "
                          "directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create {flag} {path}: {e.strerror or e}") from e
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".nnkernel-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CheckpointError(f"{flag} {path} is not writable: {e.strerror or e}") from e
    return path
