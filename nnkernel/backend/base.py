"""`Backend`: one array library on one device, and everything nnkernel asks of it.

The rest of nnkernel is written against the Array API standard and asks its
backend object for what the standard leaves out or leaves open:

- ``xp`` (the namespace, from array-api-compat) and ``kernels`` (the hot
  operations: the generic reference or the library's fast twin);
- ``mutable``: whether arrays may be written in place, which decides whether
  the parameter store keeps views of flat buffers or rebinds new arrays;
- ``asynchronous``: whether device work is queued, so that reading a number
  waits for the device (then the training loop reads numbers rarely);
- the device: parsing ``gpu:1``, making it current (``activate``), moving
  arrays there (``asarray``) and back (``to_numpy``), refusing arrays that
  live elsewhere (``check``), waiting for it (``synchronize``), its memory;
- random numbers (``random``), TF32 matrix products, out-of-memory errors.

Each library is a subclass in a module of its own name (``numpy.py``,
``cupy.py``, ``torch.py``, ``strict.py``), so a difference between backends
is found by opening the same method in another file. Subclasses import their
library only when first asked, so a NumPy-only install never loads CuPy.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, ClassVar

import array_api_compat
import numpy as np

from ..errors import BackendMismatchError, ConfigError, DeviceError, DTypeError
from ..kernels.reference import Kernels
from . import registry
from .arrays import dtype_name
from .random import Random

FLOAT_DTYPES = ("float32", "float64")
_NO_CONTEXT = contextlib.nullcontext()


class Backend:
    """A namespace and a device, resolved once and passed down.

    ``Backend("numpy")``, ``Backend("cupy", "gpu:1")``, ``Backend("torch", "cuda:0")``,
    ``Backend(array_api_strict)``: called on this base class it returns the
    subclass for the library.

    >>> be = Backend("numpy")
    >>> be.name, be.xp.__name__, be.device_name
    ('numpy', 'array_api_compat.numpy', 'cpu')
    """

    name: ClassVar[str] = ""
    module_name: ClassVar[str] = ""         # what to import
    install_hint: ClassVar[str] = ""        # how to get it, for the error when it is missing
    namespaces: ClassVar[tuple] = ()        # namespace module names that mean this library
    type_modules: ClassVar[tuple] = ()      # top-level modules of its array types
    mutable: ClassVar[bool] = True          # arrays support in-place writes
    _module = None                          # the imported library, per class
    _xp = None
    _kernels = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            registry.register(cls)

    def __new__(cls, name: Any = "numpy", device: Any = None):
        if cls is Backend:
            cls = registry.backend_class(name)
        return super().__new__(cls)

    def __init__(self, name: Any = None, device: Any = None):
        cls = type(self)
        self.module = cls.load()
        self.xp = cls.namespace()
        self.kernels = self.k = cls.get_kernels()
        self.array_type = cls.array_class()
        self.device = self._resolve_device(device)
        # whether `activate` does anything: hot paths skip an empty `with` where it does not
        self.needs_context = self.activate() is not _NO_CONTEXT

    # -- the library, once per class -------------------------------------------------------
    @classmethod
    def load(cls):
        if cls._module is None:
            try:
                cls._module = importlib.import_module(cls.module_name)
            except ImportError as err:
                raise DeviceError(f"backend {cls.name!r} is not installed ({err}); "
                                  f"{cls.install_hint}") from None
        return cls._module

    @classmethod
    def probe(cls):
        """A tiny array of the library (to ask array-api-compat for its namespace)."""
        return cls.load().asarray([0.0])

    @classmethod
    def namespace(cls):
        if cls._xp is None:
            cls._xp = array_api_compat.array_namespace(cls.probe())
        return cls._xp

    @classmethod
    def array_class(cls):
        return type(cls.probe())

    @classmethod
    def make_kernels(cls) -> Kernels:
        """This library's kernels: the generic reference, unless the library has a twin."""
        return Kernels(cls.namespace())

    @classmethod
    def get_kernels(cls) -> Kernels:
        """The library's kernels, made once per class."""
        if cls._kernels is None:
            cls._kernels = cls.make_kernels()
        return cls._kernels

    @staticmethod
    def host(x) -> np.ndarray:
        """A host NumPy copy of one of the library's arrays."""
        return np.asarray(x)

    @classmethod
    def array_is_asynchronous(cls, x) -> bool:
        """Whether reading a value of x waits for queued device work."""
        return False

    # -- devices -----------------------------------------------------------------------------
    def _resolve_device(self, device):
        raise NotImplementedError

    @property
    def device_name(self) -> str:
        return str(self.device)

    @property
    def asynchronous(self) -> bool:
        return False

    def activate(self):
        """A context in which new arrays and kernel launches land on this device."""
        return _NO_CONTEXT

    def synchronize(self) -> None:
        """Wait for queued device work, so that a clock reads the true time."""

    def memory_info(self) -> str | None:
        """Free and total device memory, where the library can tell."""
        return None

    def set_tf32(self, enabled: bool = True) -> bool:
        """Allow TF32 float32 matrix products; returns whether they are now on."""
        return False

    def tf32_enabled(self) -> bool:
        return False

    def enable_dtype(self, name: str) -> None:
        """Let the library compute in ``name`` process-wide, where that is a setting (JAX's
        64-bit mode); the command line calls it, as its process is nnkernel's own."""

    @classmethod
    def tune_allocator(self) -> bool:
        """Process-wide allocator settings that suit this library's training (opt-in)."""
        return False

    @classmethod
    def is_out_of_memory(cls, error: BaseException) -> bool:
        return isinstance(error, MemoryError)

    @classmethod
    def is_device_out_of_memory(cls, error: BaseException) -> bool:
        """Whether an exception is a device's (GPU's) out-of-memory error, not the host's."""
        return False

    def __repr__(self):
        return f"Backend({self.name!r}, device={self.device_name!r})"

    def __eq__(self, other):
        return isinstance(other, Backend) and (self.name, self.device_name) == (
            other.name, other.device_name)

    def __hash__(self):
        return hash((self.name, self.device_name))

    # -- dtypes --------------------------------------------------------------------------------
    def dtype(self, name: Any):
        """The backend's float dtype for "float32" / "float64" (or a dtype object)."""
        if not isinstance(name, str):
            name = dtype_name(name)
        if name not in FLOAT_DTYPES:
            raise DTypeError(f"dtype must be one of {FLOAT_DTYPES}, got {name!r}")
        return getattr(self.xp, name)

    # -- moving data ---------------------------------------------------------------------------
    def asarray(self, obj, dtype=None, copy: bool | None = None):
        """Bring host data (NumPy, lists) or an array of this backend onto the device."""
        if isinstance(obj, self.array_type):
            self.check(obj, "array")
            out = obj if dtype is None or obj.dtype == dtype else self.xp.astype(obj, dtype)
            return self.xp.asarray(out, copy=True) if copy and out is obj else out
        obj = self._from_foreign(obj)
        return self.xp.asarray(obj, dtype=dtype, device=self.device, copy=copy)

    def _from_foreign(self, obj):
        """Another library's array, as something this one can take: through DLPack where it
        lives on this device (no host copy), else a host copy."""
        if isinstance(obj, (np.ndarray, np.generic, list, tuple, int, float, bool)):
            return obj  # host data: each library's asarray takes it as it always did
        shared = self.exchange(obj)
        if shared is not None:
            return shared
        from .arrays import to_numpy

        return to_numpy(obj)

    # -- DLPack --------------------------------------------------------------------------------
    def dlpack_device(self) -> tuple[int, int]:
        """(DLPack device type, index) of this backend's device, e.g. (1, 0) for the CPU."""
        found = getattr(self, "_dlpack_device", None)
        if found is None:
            probe = self.zeros((1,), self.xp.float32)
            kind, index = probe.__dlpack_device__()
            found = self._dlpack_device = (int(kind), int(index))
        return found

    def exchange(self, obj):
        """``obj`` (another library's array on this device) through ``from_dlpack``, or None.

        The standard lets the consumer share the producer's memory (zero-copy) where both
        sides can: NumPy, torch and CuPy do for each other; JAX copies what is not aligned
        its way. None when obj is not a DLPack producer, lives elsewhere, or refuses.
        """
        where = getattr(obj, "__dlpack_device__", None)
        if where is None or not hasattr(obj, "__dlpack__"):
            return None
        try:
            if not registry.backend_class_of(obj).exchangeable(obj):
                return None
        except Exception:  # noqa: BLE001 - a producer nnkernel has no class for
            pass
        try:
            kind, index = where()
            if (int(kind), int(index)) != self.dlpack_device():
                return None
            with self.activate():
                shared = self.xp.from_dlpack(obj)
            return shared if self.same_device(shared) else None
        except (BufferError, TypeError, ValueError, RuntimeError, NotImplementedError):
            return None

    @classmethod
    def exchangeable(cls, x) -> bool:
        """Whether x may leave its library through DLPack (a fake device may not)."""
        return True

    def accept(self, x, what: str = "input"):
        """x itself, or another library's array on this device taken through DLPack without a
        copy; anything else is refused as `check` refuses it."""
        if not isinstance(x, self.array_type):
            shared = self.exchange(x)
            if shared is not None:
                return shared
        self.check(x, what)
        return x

    # -- compiling a step --------------------------------------------------------------------
    def compile(self, fn, donate=()):
        """A traced, compiled version of a pure function of arrays (JAX: jax.jit)."""
        compiling = [n for n, c in registry.CLASSES.items() if c.compile is not Backend.compile]
        raise ConfigError(f"compile=True traces the training step as a pure function; that "
                          f"needs a backend that compiles ({', '.join(compiling)}), "
                          f"and the model is on {self.name}; move it with "
                          f"model.to(backend='jax') (--backend jax) or train without compile")

    @property
    def label_dtype(self):
        """The integer dtype class labels are kept in on the device."""
        return self.xp.int64

    def to_numpy(self, x) -> np.ndarray:
        return type(self).host(x)

    def settle(self, *arrays):
        """The arrays, made concrete where the library is lazy (Dask persists them together);
        elsewhere the arrays themselves. One array in, one out; several: a tuple."""
        return arrays[0] if len(arrays) == 1 else arrays

    def zeros(self, shape, dtype):
        with self.activate():
            return self.xp.zeros(shape, dtype=dtype, device=self.device)

    # -- checks --------------------------------------------------------------------------------
    def check(self, x, what: str = "input") -> None:
        """Refuse an array of another backend or device, saying how to fix it."""
        if not isinstance(x, self.array_type):
            raise BackendMismatchError(
                f"{what} is {describe_array(x)}, but the model is on {self.name} "
                f"({self.device_name}); convert it first (e.g. model.backend.asarray(x)) or "
                f"move the model with model.to(backend=...)")
        if not self.same_device(x):
            raise BackendMismatchError(
                f"{what} is on device {array_api_compat.device(x)!s}, but the model is on "
                f"{self.device_name}; move it with model.backend.asarray(x) or move the model "
                f"with model.to(device=...)")

    def same_device(self, x) -> bool:
        return array_api_compat.device(x) == self.device

    def random(self, seed) -> Random:
        """A random source seeded by an int or a tuple of ints (e.g. (seed, epoch))."""
        return Random(self, seed)


def describe_array(x) -> str:
    """'a torch array on device cpu' or the type's full name, for error messages."""
    try:
        name = registry.backend_class_of(x).name
        return f"a {name} array on device {array_api_compat.device(x)!s}"
    except Exception:  # noqa: BLE001 - a description, not control flow
        return f"a {type(x).__module__}.{type(x).__name__}"
