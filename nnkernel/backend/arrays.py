"""Facts about arrays of any library: their dtype's name, a host copy, their namespace."""

from __future__ import annotations

import array_api_compat
import numpy as np

from . import registry

# The standard's dtype names, each before any name it contains ("uint8" before "int8").
_DTYPE_WORDS = ("float64", "float32", "float16", "bfloat16", "complex128", "complex64",
                "uint64", "uint32", "uint16", "uint8", "int64", "int32", "int16", "int8", "bool")
# (type, dtype) -> name: str(dtype) is slow next to a dict lookup, and a CE step asks every
# time. The type in the key keeps strict's dtypes from being compared with NumPy's (they warn).
_DTYPE_NAMES: dict = {}
_NAMESPACE_BY_TYPE: dict = {}


def dtype_name(dtype) -> str:
    """'float32' for np.float32, torch.float32, strict.float32, 'float32', ..."""
    if isinstance(dtype, str):
        return dtype
    key = (type(dtype), dtype)
    try:
        return _DTYPE_NAMES[key]
    except (KeyError, TypeError):  # not seen yet, or a dtype that cannot be hashed
        pass
    text = str(dtype)
    name = next((w for w in _DTYPE_WORDS if w in text), None) or np.dtype(dtype).name
    try:
        _DTYPE_NAMES[key] = name
    except TypeError:
        pass
    return name


def is_float(dtype) -> bool:
    return dtype_name(dtype) in ("float16", "bfloat16", "float32", "float64")


def is_integer(dtype) -> bool:
    name = dtype_name(dtype)
    return name.startswith("int") or name.startswith("uint")


def namespace_of(x):
    """array_api_compat.array_namespace(x), remembered per array type (the lookup is slow)."""
    ns = _NAMESPACE_BY_TYPE.get(type(x))
    if ns is None:
        ns = _NAMESPACE_BY_TYPE[type(x)] = array_api_compat.array_namespace(x)
    return ns


def to_numpy(x) -> np.ndarray:
    """A host NumPy copy (or view) of an array of any supported library."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (np.generic, int, float, bool, list, tuple)):
        return np.asarray(x)
    return registry.backend_class_of(x).host(x)  # each library knows its copy to the host


def seed_words(seed) -> list[int]:
    """An int or a tuple of ints (e.g. (seed, epoch, step)) as 64-bit words for SeedSequence."""
    words = list(seed) if isinstance(seed, (tuple, list)) else [seed]
    return [int(w) & 0xFFFF_FFFF_FFFF_FFFF for w in words]


def mixed_seed(seed) -> int:
    """One 63-bit integer drawn from the seed words (for generators that take a single int)."""
    state = np.random.SeedSequence(seed_words(seed)).generate_state(1, np.uint64)[0]
    return int(state) & 0x7FFF_FFFF_FFFF_FFFF
