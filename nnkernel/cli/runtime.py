"""The machine a command runs on: backend and device, BLAS threads, TF32, the allocator."""

from __future__ import annotations

import sys


def backend_for(args, device="cpu", backend=None, dtype="float32", tf32=False,
                allocator=True):
    """The Backend for --device / --backend (gpu means CuPy unless --backend says torch).

    ``device``, ``backend``, ``dtype`` and ``tf32`` are the saved run's (or the new run's);
    flags given on this command line win. ``--threads`` is set here for the whole
    process; ``allocator=False`` leaves the allocator to the caller (train records it).
    """
    from ..backend import resolve_backend

    if getattr(args, "device", None) is not None or getattr(args, "backend", None) is not None:
        device, backend = args.device or "cpu", args.backend or None
    if getattr(args, "threads", None):
        limit_blas_threads(args.threads)
    chosen = resolve_backend(backend, device or "cpu")
    if allocator:
        chosen.tune_allocator()  # the command line opts in; a library user calls it themselves
    chosen.enable_dtype(dtype or "float32")  # JAX: float64 needs x64 mode
    if tf32 or getattr(args, "tf32", None):
        if chosen.set_tf32(True):
            say(args, "TF32 matrix products on")
        elif chosen.asynchronous:
            say(args, "note: this GPU cannot use TF32; matrix products stay full float32")
        else:
            say(args, "note: --tf32 only changes GPU matrix products; ignored on the CPU")
    return chosen


def limit_blas_threads(n: int) -> None:
    """Set the BLAS thread count once for the whole process (never per operation)."""
    from .threads import apply

    apply(n)


def say(args, text: str) -> None:
    """A status line on stderr (stdout is kept for results and --json)."""
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr)
