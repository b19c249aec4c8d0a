"""Keep the memory NumPy frees in the process, so the next step does not fault it back in.

glibc serves a request above M_MMAP_THRESHOLD with a fresh mmap, and hands
free memory at the top of its heap back to the OS once more than
M_TRIM_THRESHOLD is free. Both thresholds adapt to the largest block freed so
far, and the trim threshold ends at twice it: about 4 MiB when a step's largest
temporaries are 2 MiB. A training step frees and re-allocates the same large
temporaries every time, so with the defaults each step can return its pages to
the OS and fault every one of them back (an ensemble of 64 small MLPs faulted
hundreds of pages per step; bench/history/2026-11-22-intel-sweeps.md has the figures).

`keep_freed_memory` fixes both thresholds, once per process. It is process-wide,
so nnkernel never calls it behind a library user's back: the command line
calls it (``nnkernel info`` shows the setting), a program opts in by calling
``nnkernel.keep_freed_memory()``. It changes nothing where the C library is not glibc,
where the user set glibc's own ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_``, or with ``NNKERNEL_TUNE_MALLOC=0``. The price is
that up to ``TRIM_THRESHOLD`` bytes of freed memory stay mapped to the process.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit for it on 64-bit systems
TRIM_THRESHOLD = 128 << 20
OPT_OUT = "NNKERNEL_TUNE_MALLOC"
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_state: dict = {}  # "applied": the result of the first call


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (first call only); True when they were set."""
    if "applied" not in _state:
        _state["applied"] = _apply()
    return _state["applied"]


def _why_not() -> str | None:
    """Why the thresholds are left alone here, or None when they can be raised."""
    if os.environ.get(OPT_OUT, "1").strip() == "0":
        return f"glibc defaults ({OPT_OUT}=0)"
    if any(name in os.environ for name in GLIBC_VARIABLES):  # the user tuned glibc
        return "set by the environment (" + ", ".join(
            f"{n}={os.environ[n]}" for n in GLIBC_VARIABLES if n in os.environ) + ")"
    if not sys.platform.startswith("linux") or not _is_glibc():
        return "the C library's defaults (not glibc)"
    return None


def _apply() -> bool:
    if _why_not() is not None:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def status() -> str:
    """One line for `nnkernel info`."""
    reason = _why_not()
    if reason:
        return reason
    if not _state.get("applied"):
        return "glibc defaults (nnkernel.keep_freed_memory() not called in this process)"
    return (f"glibc mmap/trim thresholds raised to {MMAP_THRESHOLD >> 20}/"
            f"{TRIM_THRESHOLD >> 20} MiB ({OPT_OUT}=0 keeps glibc's defaults)")
