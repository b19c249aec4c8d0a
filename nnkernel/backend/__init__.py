"""The one place that tells NumPy, CuPy, PyTorch and array-api-strict apart.

Everything else in nnkernel is written against the Array API standard and
receives a `Backend`: its namespace ``xp`` (from array-api-compat), its device,
and the few things the standard lacks, each with a generic fallback:

- random numbers (`Random`): the standard has none. The fallback draws with
  NumPy on the host and moves the result to the device; NumPy, CuPy and torch
  draw natively, on the device.
- moving arrays to and from the host, synchronising before a clock is read,
  and checking that an input lives where the model does.

CuPy and torch are imported only when a caller asks for them.
"""

from __future__ import annotations

import importlib
from typing import Any

import array_api_compat
import numpy as np

from ..errors import BackendMismatchError, DeviceError, DTypeError

BACKENDS = ("numpy", "cupy", "torch", "array_api_strict")

# Modules a backend name stands for, and how users spell them.
_MODULE = {name: name for name in BACKENDS}
_ALIASES = {"np": "numpy", "cp": "cupy", "pytorch": "torch", "strict": "array_api_strict",
            "array-api-strict": "array_api_strict"}
FLOAT_DTYPES = ("float32", "float64")


def backend_name_of(namespace_or_array: Any) -> str:
    """The backend name ("numpy", "torch", ...) of an array or namespace module."""
    obj = namespace_or_array
    if not hasattr(obj, "__name__"):  # an array, not a module
        obj = array_api_compat.array_namespace(obj)
    name = obj.__name__
    for key in BACKENDS:
        if name == key or name.endswith("." + key) or name.startswith(key + "."):
            return key
    raise DeviceError(f"unsupported array namespace {name!r}; use one of {', '.join(BACKENDS)}")


class Backend:
    """A namespace and a device, resolved once and passed down.

    >>> be = Backend("numpy")
    >>> be.name, be.xp.__name__
    ('numpy', 'array_api_compat.numpy')
    """

    def __init__(self, name: Any = "numpy", device: Any = None):
        if not isinstance(name, str):
            name = backend_name_of(name)
        name = _ALIASES.get(name.lower(), name.lower())
        if name not in BACKENDS:
            from ..errors import ConfigError

            raise ConfigError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
        self.name = name
        self.module = _import_backend(name)
        self.xp = array_api_compat.array_namespace(self._probe())
        self.device = self._resolve_device(device)
        self.array_type = type(self._probe())

    # -- construction -------------------------------------------------------------
    def _probe(self):
        return self.module.asarray([0.0]) if self.name != "torch" else self.module.zeros(1)

    def _resolve_device(self, device):
        if self.name == "numpy":
            if device not in (None, "cpu"):
                raise DeviceError(f"NumPy arrays live on 'cpu' only, got device={device!r}")
            return "cpu"
        if self.name == "cupy":
            cp = self.module
            if not _cupy_usable(cp):
                raise DeviceError("CuPy is installed but sees no usable GPU (cupy.is_available() "
                                  "is False); train on the CPU with --device cpu")
            index = 0 if device is None else _device_index(device)
            n = cp.cuda.runtime.getDeviceCount()
            if not 0 <= index < n:
                raise DeviceError(f"GPU {index} does not exist: CuPy sees {n} GPU(s) (0..{n - 1})")
            return cp.cuda.Device(index)
        if self.name == "torch":
            return self.module.device("cpu" if device is None else device)
        # array_api_strict: "CPU_DEVICE", "device1", "device2", ...
        strict = self.module
        if device is None:
            return strict.Device("CPU_DEVICE")
        return device if isinstance(device, strict.Device) else strict.Device(str(device))

    def __repr__(self):
        return f"Backend({self.name!r}, device={self.device_name!r})"

    @property
    def device_name(self) -> str:
        if self.name == "cupy":
            return f"gpu:{self.device.id}"
        return str(self.device)

    # -- dtypes -------------------------------------------------------------------
    def dtype(self, name: Any):
        """The backend's float dtype for "float32" / "float64" (or a dtype object)."""
        if not isinstance(name, str):
            name = dtype_name(name)
        if name not in FLOAT_DTYPES:
            raise DTypeError(f"dtype must be one of {FLOAT_DTYPES}, got {name!r}")
        return getattr(self.xp, name)

    # -- moving data --------------------------------------------------------------
    def asarray(self, obj, dtype=None, copy: bool | None = None):
        """Bring host data (NumPy, lists) or an array of this backend onto the device."""
        if isinstance(obj, self.array_type):
            self.check(obj, "array")
            out = obj if dtype is None or obj.dtype == dtype else self.xp.astype(obj, dtype)
            return self.xp.asarray(out, copy=True) if copy and out is obj else out
        if self.name != "numpy" and not isinstance(obj, (np.ndarray, np.generic, list, tuple,
                                                         int, float, bool)):
            obj = to_numpy(obj)  # another backend's array: through the host, deliberately
        if self.name == "torch":
            t = self.module.as_tensor(np.asarray(obj), device=self.device)
            t = t if dtype is None else t.to(dtype)
            return t.clone() if copy else t
        return self.xp.asarray(obj, dtype=dtype, device=self.device, copy=copy)

    def to_numpy(self, x) -> np.ndarray:
        return to_numpy(x)

    def synchronize(self) -> None:
        """Wait for queued device work, so that a clock reads the true time."""
        if self.name == "cupy":
            self.module.cuda.get_current_stream().synchronize()
        elif self.name == "torch" and self.device.type == "cuda":
            self.module.cuda.synchronize(self.device)

    # -- checks -------------------------------------------------------------------
    def check(self, x, what: str = "input") -> None:
        """Refuse an array of another backend or device, saying how to fix it."""
        if not isinstance(x, self.array_type):
            got = _describe(x)
            raise BackendMismatchError(
                f"{what} is {got}, but the model is on {self.name} ({self.device_name}); "
                f"convert it first (e.g. model.backend.asarray(x)) or move the model with "
                f"model.to(backend=...)")
        if self.name != "numpy" and array_api_compat.device(x) != self.device:
            raise BackendMismatchError(
                f"{what} is on device {array_api_compat.device(x)!s}, but the model is on "
                f"{self.device_name}; move it with array_api_compat.to_device(x, model.device) "
                f"or move the model with model.to(device=...)")

    def random(self, seed) -> Random:
        """A random source seeded by an int or a tuple of ints (e.g. (seed, epoch))."""
        if self.name == "cupy":
            return _CupyRandom(self, seed)
        if self.name == "torch":
            return _TorchRandom(self, seed)
        return Random(self, seed)


class Random:
    """Random numbers for one backend; this generic version draws on the host.

    It serves NumPy natively (no copy) and array-api-strict through a copy.
    Seeds are ints or tuples of ints, so (seed, epoch, step) names a stream.
    """

    def __init__(self, backend: Backend, seed):
        self.backend = backend
        self.rng = np.random.default_rng(_seed_words(seed))

    def uniform(self, shape, dtype):
        """Uniform [0, 1) samples of the given shape and backend dtype."""
        host = self.rng.random(shape, dtype=np.float32 if _is32(dtype) else np.float64)
        return self.backend.asarray(host) if self.backend.name != "numpy" else host

    def permutation(self, n: int):
        """A random permutation of 0..n-1 as a backend int64 array."""
        host = self.rng.permutation(n)
        return self.backend.asarray(host) if self.backend.name != "numpy" else host


class _CupyRandom(Random):
    """Draws on the GPU: a dropout mask never crosses the bus."""

    def __init__(self, backend, seed):
        self.backend = backend
        words = _seed_words(seed)
        mixed = int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0])
        self.rng = backend.module.random.RandomState(mixed)

    def uniform(self, shape, dtype):
        with self.backend.device:
            return self.rng.random_sample(shape, dtype=dtype)

    def permutation(self, n):
        with self.backend.device:
            return self.rng.permutation(n)


class _TorchRandom(Random):
    def __init__(self, backend, seed):
        self.backend = backend
        torch = backend.module
        mixed = int(np.random.SeedSequence(_seed_words(seed)).generate_state(1, np.uint64)[0])
        self.gen = torch.Generator(device=backend.device)
        self.gen.manual_seed(mixed & 0x7FFF_FFFF_FFFF_FFFF)

    def uniform(self, shape, dtype):
        return self.backend.module.rand(shape, generator=self.gen, dtype=dtype,
                                        device=self.backend.device)

    def permutation(self, n):
        return self.backend.module.randperm(n, generator=self.gen, device=self.backend.device)


# -- helpers --------------------------------------------------------------------------
_NAMESPACE_BY_TYPE: dict = {}


def namespace_of(x):
    """array_api_compat.array_namespace(x), remembered per array type.

    The full lookup costs microseconds; losses and optimizers need it every
    step, and the namespace of an array depends only on its type.
    """
    ns = _NAMESPACE_BY_TYPE.get(type(x))
    if ns is None:
        ns = _NAMESPACE_BY_TYPE[type(x)] = array_api_compat.array_namespace(x)
    return ns


def to_numpy(x) -> np.ndarray:
    """A host NumPy copy (or view) of an array of any supported backend."""
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__
    if mod.startswith("cupy"):
        return x.get()
    if mod.startswith("torch"):
        return x.detach().cpu().numpy()
    if mod.startswith("array_api_strict"):
        import array_api_strict as strict

        return np.asarray(strict.asarray(x, device=strict.Device("CPU_DEVICE"), copy=True)._array)
    return np.asarray(x)


# The standard's dtype names, each before any name it contains ("uint8" before "int8").
_DTYPE_WORDS = ("float64", "float32", "float16", "complex128", "complex64", "uint64", "uint32",
                "uint16", "uint8", "int64", "int32", "int16", "int8", "bool")
# (type, dtype) -> name: str(dtype) costs ~4 µs, a lookup 0.1. The type in the key keeps
# strict's dtypes from being compared with NumPy's (they warn).
_DTYPE_NAMES: dict = {}


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


def _is32(dtype) -> bool:
    return dtype_name(dtype) == "float32"


def _seed_words(seed) -> list[int]:
    words = list(seed) if isinstance(seed, (tuple, list)) else [seed]
    return [int(w) & 0xFFFF_FFFF_FFFF_FFFF for w in words]


def _describe(x) -> str:
    try:
        name = backend_name_of(x)
        dev = array_api_compat.device(x)
        return f"a {name} array on device {dev!s}"
    except Exception:
        return f"a {type(x).__module__}.{type(x).__name__}"


def _device_index(device) -> int:
    text = str(device).lower()
    for prefix in ("gpu:", "cuda:", "gpu", "cuda"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    try:
        return int(text or 0)
    except ValueError:
        raise DeviceError(f"cannot read a GPU index from device={device!r}; "
                          f"use gpu, gpu:1, cuda:0 or an int") from None


def _cupy_usable(cp) -> bool:
    try:
        return bool(cp.is_available())
    except Exception:
        return False


def _import_backend(name: str):
    try:
        return importlib.import_module(_MODULE[name])
    except ImportError as err:
        hint = {"cupy": 'pip install "nnkernel[gpu]" (cupy-cuda12x)',
                "torch": "pip install torch",
                "array_api_strict": "pip install array-api-strict"}.get(name, "")
        raise DeviceError(f"backend {name!r} is not installed ({err}); {hint}") from None


def available_backends() -> dict[str, str]:
    """Backend name -> 'ok' or the reason it cannot be used here (imports each one)."""
    report = {}
    for name in BACKENDS:
        try:
            Backend(name)
            report[name] = "ok"
        except Exception as err:  # noqa: BLE001 - a report, not control flow
            report[name] = str(err)
    return report
