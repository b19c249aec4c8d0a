"""The hot operations, as a generic Array API reference and per-backend fast twins.

`kernels_for(backend)` returns the fastest `Kernels` for a backend: the NumPy
twin for "numpy", the CuPy twin for "cupy", else the generic reference. Every
twin computes the same numbers as the reference (tests/test_kernels.py checks
each on random inputs), so layers and optimizers call ``k.affine(...)`` without
knowing which one they got.
"""

from ..backend import backend_name_of
from .reference import Kernels

_BY_NAMESPACE: dict = {}


def _make(name: str, xp) -> Kernels:
    if name == "numpy":
        from .numpy_twin import NumpyKernels

        return NumpyKernels(xp)
    if name == "cupy":
        from .cupy_twin import CupyKernels

        return CupyKernels(xp)
    return Kernels(xp)


def kernels_for(backend) -> Kernels:
    return kernels_for_namespace(backend.xp)


def kernels_for_namespace(xp) -> Kernels:
    """Kernels for an array namespace, made once per namespace."""
    k = _BY_NAMESPACE.get(xp)
    if k is None:
        k = _BY_NAMESPACE[xp] = _make(backend_name_of(xp), xp)
    return k


__all__ = ["Kernels", "kernels_for", "kernels_for_namespace"]
