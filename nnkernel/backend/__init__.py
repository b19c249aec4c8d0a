"""The one place that tells the array libraries apart.

``Backend(name, device)`` is an array library on a device (see `base.Backend`);
each library is a subclass in a module of its own: `numpy`, `cupy`, `torch`,
`strict`, `jax`, `dask`. This module maps what users pass (a name, a namespace module, an
array, ``--device gpu:1``) to those classes, and refuses what it does not know:
nothing is ever treated as NumPy by default.
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import ConfigError
from .arrays import dtype_name, is_float, is_integer, namespace_of, to_numpy
from .base import FLOAT_DTYPES, Backend, describe_array
from .cupy import CupyBackend
from .dask import DaskBackend
from .devices import parse_device
from .jax import JaxBackend
from .numpy import NumpyBackend
from .random import Random
from .registry import ALIASES, CLASSES, backend_class, backend_class_of, names, register
from .strict import StrictBackend
from .torch import TorchBackend

# The subclasses registered themselves as they were defined; this is the order in which
# messages and `nnkernel info` list them.
for _cls in (NumpyBackend, CupyBackend, TorchBackend, StrictBackend, JaxBackend, DaskBackend):
    CLASSES[_cls.name] = CLASSES.pop(_cls.name)
BACKENDS = names()


def kernels_for_array(x):
    """The kernels of the library an array belongs to (its twin, or the reference)."""
    return backend_class_of(x).get_kernels()


def kernels_for_namespace(xp):
    """The kernels of the library a namespace module belongs to."""
    return backend_class(xp).get_kernels()


def kernels_for(backend: Backend):
    """The kernels of a Backend (the same as ``backend.kernels``)."""
    return backend.kernels


def backend_name_of(namespace_or_array: Any) -> str:
    """The backend name ("numpy", "torch", ...) of an array or namespace module."""
    return backend_class(namespace_or_array).name


def resolve_backend(backend: str | None = None, device: Any = "cpu") -> Backend:
    """The Backend for a command line's --backend and --device (gpu means CuPy by default)."""
    try:
        kind, index = parse_device(device)
    except ConfigError as e:
        raise ConfigError(f"unknown --device {device!r}: {e}") from None
    if backend is None:
        cls = CupyBackend if kind == "gpu" else NumpyBackend
    else:
        cls = backend_class(backend)
    if kind == "gpu" and cls in (NumpyBackend, StrictBackend, DaskBackend):
        raise ConfigError(f"--backend {cls.name} runs on the CPU only; use --backend cupy or "
                          "torch with --device gpu")
    if kind == "cpu" and cls is CupyBackend:
        raise ConfigError("--backend cupy needs a GPU; use --device gpu (or --backend numpy)")
    return cls(device=None if kind == "cpu" else f"gpu:{index}")


def compiling_backends() -> list[str]:
    """Names of the backends whose `Backend.compile` traces a step (jax)."""
    return [name for name, cls in CLASSES.items() if cls.compile is not Backend.compile]


def _loaded_classes():
    # only libraries already imported can have raised an error: importing one would be slow
    return (cls for cls in CLASSES.values()
            if cls._module is not None or cls.module_name in sys.modules)


def out_of_memory(error: BaseException) -> bool:
    """Whether an exception is an out-of-memory error of any library in use."""
    return isinstance(error, MemoryError) or any(
        cls.is_out_of_memory(error) for cls in _loaded_classes())


def device_out_of_memory(error: BaseException) -> bool:
    """Whether an exception says a GPU ran out of memory (CuPy's subclasses MemoryError)."""
    if isinstance(error, MemoryError):
        return any(cls.is_device_out_of_memory(error) for cls in _loaded_classes())
    return out_of_memory(error)


def available_backends() -> dict[str, str]:
    """Backend name -> 'ok' or the reason it cannot be used here (imports each one)."""
    report = {}
    for name, cls in CLASSES.items():
        try:
            cls()
            report[name] = "ok"
        except Exception as err:  # noqa: BLE001 - a report, not control flow
            report[name] = str(err)
    return report


def describe_gpus(cupy_status: str) -> str:
    """The GPUs CuPy sees, or why there are none (for ``nnkernel info``)."""
    if cupy_status != "ok":
        return f"none usable by CuPy ({cupy_status})"
    return "; ".join(CupyBackend.describe_devices())


__all__ = [
    "ALIASES", "available_backends", "Backend", "backend_class", "backend_class_of",
    "backend_name_of", "BACKENDS", "CLASSES", "compiling_backends", "CupyBackend",
    "DaskBackend", "describe_array", "describe_gpus", "device_out_of_memory", "dtype_name",
    "FLOAT_DTYPES", "is_float", "is_integer", "JaxBackend", "kernels_for", "kernels_for_array",
    "kernels_for_namespace", "names", "namespace_of", "NumpyBackend", "out_of_memory",
    "parse_device", "Random", "register", "resolve_backend", "StrictBackend", "to_numpy",
    "TorchBackend",
]
