"""Which library an array, a name or a namespace module belongs to: the one lookup.

Each `Backend` subclass registers itself here when its class is defined (the
package imports them all), so this module imports none of them and every other
module asks it: ``backend_class("cp")``, ``backend_class_of(array)``. Nothing is
ever treated as NumPy by default: an unknown name or array type is refused.
"""

from __future__ import annotations

import types
from typing import Any

from ..errors import ConfigError, DeviceError

CLASSES: dict = {}  # backend name -> its Backend subclass, in the order they were defined
ALIASES = {"np": "numpy", "cp": "cupy", "pytorch": "torch", "strict": "array_api_strict",
           "array-api-strict": "array_api_strict", "jnp": "jax", "jax.numpy": "jax",
           "dask.array": "dask", "da": "dask"}
_BY_TYPE: dict = {}  # array type -> Backend subclass, remembered


def register(cls, *aliases: str):
    """Add a backend class (each subclass of Backend does this when it is defined)."""
    CLASSES[cls.name] = cls
    ALIASES.update({a: cls.name for a in aliases})
    return cls


def names() -> tuple:
    return tuple(CLASSES)


def backend_class(spec: Any):
    """The Backend subclass for a name ("numpy", "cp", ...), a namespace module, a Backend
    or an array."""
    if hasattr(spec, "kernels") and type(spec).__name__.endswith("Backend"):
        return type(spec)
    if isinstance(spec, str):
        key = ALIASES.get(spec.lower(), spec.lower().replace("-", "_"))
        if key not in CLASSES:
            raise ConfigError(f"unknown backend {spec!r}; valid backends: {', '.join(CLASSES)}")
        return CLASSES[key]
    if isinstance(spec, types.ModuleType):  # a namespace module
        for cls in CLASSES.values():
            if spec.__name__ in cls.namespaces:
                return cls
        raise DeviceError(f"unsupported array namespace {spec.__name__!r}; nnkernel runs on "
                          f"{', '.join(CLASSES)} (pass one of those names, or its namespace)")
    return backend_class_of(spec)


def backend_class_of(x):
    """The Backend subclass of an array, by its type (remembered per type)."""
    kind = type(x)
    cls = _BY_TYPE.get(kind)
    if cls is None:
        top = kind.__module__.split(".")[0]
        cls = next((c for c in CLASSES.values() if top in c.type_modules), None)
        if cls is None:
            raise DeviceError(f"unsupported array type {kind.__module__}.{kind.__name__}; "
                              f"nnkernel runs on {', '.join(CLASSES)}")
        _BY_TYPE[kind] = cls
    return cls
