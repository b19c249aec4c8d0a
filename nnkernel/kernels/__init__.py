"""The hot operations: a generic Array API reference and per-library fast twins.

    kernels/reference/   the mathematics in the standard only (runs on every library)
    kernels/numpy/       NumPy's twin: in place, fewer temporaries
    kernels/cupy/        CuPy's twin: fused CUDA kernels

Each folder has the same file names (``dense.py``, ``losses.py``, ``optim.py``,
``conv.py``, ...), so a difference between libraries is a diff of two same-named
files. Each backend names its kernels (``backend.kernels``); every twin computes the
same numbers as the reference (tests/test_kernels.py checks each on random inputs),
so layers and optimizers call ``k.affine(...)`` without knowing which one they got.
Nothing here imports ``nnkernel.backend``.
"""

from __future__ import annotations

from .reference import Kernels


def __getattr__(name):
    # The array-to-library lookup lives in nnkernel.backend (one place); these names of
    # nnkernel 0.1 forward there when asked for.
    if name in ("kernels_for_array", "kernels_for_namespace", "kernels_for"):
        from .. import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Kernels"]
