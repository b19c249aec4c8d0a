"""NumPy: the CPU reference library; its arrays are written in place by the NumPy twin."""

from __future__ import annotations

import numpy as np

from ..errors import DeviceError
from ..kernels.numpy import NumpyKernels
from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    module_name = "numpy"
    namespaces = ("numpy", "array_api_compat.numpy")
    type_modules = ("numpy",)

    @classmethod
    def make_kernels(cls) -> NumpyKernels:
        return NumpyKernels(cls.namespace())

    def _resolve_device(self, device):
        if device not in (None, "cpu", "CPU") and str(device).lower() != "cpu":
            raise DeviceError(f"NumPy arrays live on 'cpu' only, got device={device!r}")
        return "cpu"

    def tune_allocator(self) -> bool:
        """Keep freed temporaries in the heap between steps (glibc; see `malloc`)."""
        from .malloc import keep_freed_memory

        return keep_freed_memory()

    def same_device(self, x) -> bool:
        return True

    def check(self, x, what: str = "input") -> None:
        if type(x) is not np.ndarray:  # the common case in one comparison
            super().check(x, what)

    def asarray(self, obj, dtype=None, copy=None):
        if type(obj) is self.array_type and (dtype is None or obj.dtype == dtype) and not copy:
            return obj  # the common case, without the namespace's wrappers
        return super().asarray(obj, dtype=dtype, copy=copy)
