"""The hot operations, as a generic Array API reference and per-library fast twins.

Each backend carries its kernels (``backend.kernels``): the NumPy twin for
NumPy, the CuPy twin for CuPy, else the generic reference. Every twin computes
the same numbers as the reference (tests/test_kernels.py checks each on random
inputs), so layers and optimizers call ``k.affine(...)`` without knowing which
one they got.
"""

from __future__ import annotations

from .reference import Kernels


def make_kernels(kind: str, xp) -> Kernels:
    """The kernels of one kind ("reference", "numpy", "cupy") over a namespace."""
    if kind == "numpy":
        from .numpy_twin import NumpyKernels

        return NumpyKernels(xp)
    if kind == "cupy":
        from .cupy_twin import CupyKernels

        return CupyKernels(xp)
    return Kernels(xp)


def kernels_for(backend) -> Kernels:
    """The kernels of a Backend (the same as ``backend.kernels``)."""
    return backend.kernels


def kernels_for_array(x) -> Kernels:
    """The kernels of the library an array belongs to."""
    from ..backend import backend_class_of

    return backend_class_of(x).get_kernels()


def kernels_for_namespace(xp) -> Kernels:
    """The kernels of the library a namespace module belongs to."""
    from ..backend import backend_class

    return backend_class(xp).get_kernels()


__all__ = ["Kernels", "kernels_for", "kernels_for_array", "kernels_for_namespace",
           "make_kernels"]
