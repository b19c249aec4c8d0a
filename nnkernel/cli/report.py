"""How a command ends: its exit status, and an error printed as one line."""

from __future__ import annotations

import sys

from .args import UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left


def report(error: BaseException) -> int:
    """Print an error as one line; returns the exit status."""
    from ..backend import device_out_of_memory
    from ..errors import ConfigError, NnkernelError

    status = EXIT_USAGE if isinstance(error, UsageError | ConfigError) else EXIT_ERROR
    if device_out_of_memory(error):
        message = f"GPU out of memory ({one_line(error)}); try a smaller --batch-size"
    elif isinstance(error, MemoryError):
        message = "out of memory; try a smaller --batch-size or a smaller network"
    elif isinstance(error, UsageError | NnkernelError | OSError):
        message = one_line(error)
    else:
        message = f"{type(error).__name__}: {one_line(error)} (run with --debug for details)"
    print(f"nnkernel: error: {message}", file=sys.stderr)
    return status


def one_line(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or text}"
    return " ".join(text.split()) or type(error).__name__
