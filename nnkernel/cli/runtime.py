"""The machine a command runs on: backend and device, BLAS threads, TF32, the allocator."""

from __future__ import annotations

import sys

from ..errors import ConfigError


def backend_for(runtime: dict, args):
    """The Backend for --device / --backend (gpu means CuPy unless --backend says torch).

    Flags given on this command line win over the saved run's runtime settings.
    """
    from ..backend import resolve_backend

    device, name = runtime.get("device") or "cpu", runtime.get("backend")
    if getattr(args, "device", None) is not None or getattr(args, "backend", None) is not None:
        device, name = args.device or "cpu", args.backend or None
    if getattr(args, "threads", None):
        limit_blas_threads(args.threads)
    backend = resolve_backend(name, device)
    backend.tune_allocator()  # the command line opts in; a library user calls it themselves
    backend.enable_dtype(runtime.get("dtype") or "float32")  # JAX: float64 needs x64 mode
    if runtime.get("tf32") or getattr(args, "tf32", None):
        if backend.set_tf32(True):
            say(args, "TF32 matrix products on")
        elif backend.asynchronous:
            say(args, "note: this GPU cannot use TF32; matrix products stay full float32")
        else:
            say(args, "note: --tf32 only changes GPU matrix products; ignored on the CPU")
    return backend


def limit_blas_threads(n: int) -> None:
    """Set the BLAS thread count once for the whole process (never per operation)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise ConfigError("--threads needs threadpoolctl (pip install threadpoolctl), or set "
                          "OPENBLAS_NUM_THREADS before starting nnkernel") from None
    threadpool_limits(limits=n, user_api="blas")


def say(args, text: str) -> None:
    """A status line on stderr (stdout is kept for results and --json)."""
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr)
