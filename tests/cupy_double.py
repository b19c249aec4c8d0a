"""A CuPy test double: a fake ``cupy`` package on NumPy, so CI runs CuPy's Python paths on a CPU.

The `fake_cupy` fixture puts it into ``sys.modules`` (hiding a real CuPy, if one is
installed) for one test, points nnkernel's `CupyBackend` at it with the generic
reference kernels, and hands the test the double's recorder, `STATE`:

- devices: ``STATE.n_devices`` GPUs (2 by default), the current one in
  ``STATE.current``; ``STATE.launches[i]`` counts the array operations run while
  device i was current, ``STATE.compute_type`` the cuBLAS float32 compute type;
- memory: ``STATE.max_allocation`` makes any larger allocation raise
  ``cupy.cuda.memory.OutOfMemoryError``; ``STATE.uploads`` records the dtype and
  shape of each host -> device copy, ``STATE.host_reads`` every device -> host
  read (``get``, ``float(x)``, boolean-mask indexing: the host syncs of a GPU).

Devices, memory and cuBLAS's switch are in tests/cupy_double_cuda.py, with the CuPy
sources they copy. Here, from the same sources (github.com/cupy/cupy, v15.0.0a1):
- ``cupy/_core/core.pyx`` ``ndarray``: not a ``numpy.ndarray``; ``.device`` is a
  ``Device``; ``get(stream=None, order='C', out=None, blocking=True)``;
  ``__array__`` raises TypeError (message copied); reductions give 0-d arrays;
  ``__repr__`` is the host array's; ``asarray`` of a NumPy array casts on the host
  (``_array_default``); ``_kernel.pyx`` ``_check_peer_access``: an operand on
  another device than the current one raises ValueError (without peer access),
  CuPy's message; ``_routines_indexing.pyx``: assigning a non-scalar NumPy array
  raises ValueError.
- ``cupy/random/_generator.py`` ``RandomState(seed=None, method=None)``, ``seed`` (its
  checks), ``random_sample(size=None, dtype=float)``, ``permutation`` (an argsort of
  random int32, so int64).

Where it is stricter than CuPy, it says so: every computation *and every write*
needs its arrays on the current device (CuPy lets a same-shape copy cross devices
and, with peer access, warns instead of raising), and NumPy's functions refuse its
arrays (``__array_ufunc__ = None``; CuPy dispatches them). It cannot run CUDA code:
``ElementwiseKernel``, ``RawKernel`` and ``RawModule`` construct but raise when
called (recording the launch in ``STATE.kernel_calls``), so the fixture gives
`CupyBackend` the reference kernels; the CUDA sources run as host C++ in
tests/test_cupy_*_source.py and on a GPU in tests/test_cupy_twin.py.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types

import cupy_double_cuda as cuda_side
import numpy as np
import pytest
from cupy_double_cuda import STATE, Device, OutOfMemoryError, _NoCuda


# -- arrays ---------------------------------------------------------------------------------
def _peer_check(arrays, what):
    for a in arrays:
        if a._dev != STATE.current:
            raise ValueError(f"The device where the array resides ({a._dev}) is different from "
                             f"the current device ({STATE.current}). Peer access is unavailable "
                             f"between these devices. [{what}]")


def _unwrap(obj, found):
    if isinstance(obj, ndarray):
        found.append(obj)
        return obj._a
    if isinstance(obj, np.ndarray):
        raise TypeError(f"Unsupported type {type(obj)}")  # CuPy refuses host arrays in kernels
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o, found) for o in obj)
    return obj


def _new(a):
    """A fresh device array on the current device (an allocation)."""
    if STATE.max_allocation is not None and a.nbytes > STATE.max_allocation:
        raise OutOfMemoryError(a.nbytes, STATE.allocated)
    STATE.allocated += a.nbytes
    return ndarray._wrap(a, STATE.current)


def _call(fn, args, kwargs, what, reads_host=False):
    """Run a NumPy function on the arrays' data, as CuPy would run a kernel."""
    found: list = []
    args = _unwrap(args, found)
    kwargs = {k: _unwrap(v, found) for k, v in kwargs.items()}
    result = fn(*args, **kwargs)
    out = kwargs.get("out")
    same = [a for a in found if a._a is result]
    if same and out is None:  # handed back unchanged (asarray, astype(copy=False)): no kernel
        return same[0]
    views = [a for a in found if isinstance(result, np.ndarray) and out is None
             and result.base is not None and np.may_share_memory(result, a._a)]
    if views and not reads_host:  # a view (reshape, slice, transpose): no kernel runs
        return ndarray._wrap(result, views[0]._dev)
    _peer_check(found, what)
    STATE.launches[STATE.current] += 1
    if reads_host:
        STATE.host_reads += 1
    return _wrap_result(result, found, out)


def _wrap_result(result, found, out):
    if isinstance(result, (tuple, list)):
        return type(result)(_wrap_result(r, found, out) for r in result)
    if out is not None and result is out:  # CuPy returns the `out` array itself
        return next(a for a in found if a._a is out)
    if isinstance(result, np.ndarray):
        return _new(result)
    if isinstance(result, np.generic):  # CuPy's reductions give 0-d arrays, never scalars
        return _new(np.asarray(result))
    return result


def _function(fn, name, reads_host=False):
    def wrapper(*args, **kwargs):
        return _call(fn, args, kwargs, name, reads_host)

    wrapper.__name__ = wrapper.__qualname__ = name
    return wrapper


class ndarray:
    __array_ufunc__ = None  # stricter than CuPy: NumPy's functions refuse these arrays
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        made = _new(np.empty(shape, dtype=dtype, order=order))
        self._a, self._dev = made._a, made._dev

    @classmethod
    def _wrap(cls, a, dev):
        obj = cls.__new__(cls)
        obj._a, obj._dev = a, dev
        return obj

    @property
    def device(self):
        return Device(self._dev)

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray._wrap(self._a.T, self._dev))
    mT = property(lambda self: ndarray._wrap(np.swapaxes(self._a, -1, -2), self._dev))

    def get(self, stream=None, order="C", out=None, blocking=True):
        STATE.host_reads += 1
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order)

    def set(self, arr, stream=None):
        self._a[...] = arr

    def item(self):
        return self.get().item()

    def tolist(self):
        return self.get().tolist()

    def __dlpack_device__(self):
        # cupy/_core/core.pyx: (kDLCUDA, device id), a query that launches nothing
        return (2, self._dev.id if hasattr(self._dev, "id") else int(self._dev))

    def __dlpack__(self, *args, **kwargs):
        raise BufferError("the CuPy test double does not export DLPack capsules")

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def __getattr__(self, name):  # the other methods: astype, sum, reshape, copy, fill, ...
        method = getattr(np.ndarray, name)
        if not callable(method):
            raise AttributeError(name)
        return lambda *a, **k: _call(method, (self, *a), k, f"ndarray.{name}")

    def __getitem__(self, key):
        keys = key if isinstance(key, tuple) else (key,)
        mask = any(isinstance(k, ndarray) and k.dtype == bool for k in keys)
        # a boolean mask: CuPy reads the number of hits back from the GPU to size the result
        return _call(_getitem, (self, key), {}, "getitem", reads_host=mask)

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and value.ndim:
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        found: list = [self]
        key, value = _unwrap(key, found), _unwrap(value, found)
        _peer_check(found, "setitem")
        STATE.launches[STATE.current] += 1
        self._a[key] = value

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __bool__(self):
        return bool(self.get())

    def __float__(self):
        return float(self.get())

    def __int__(self):
        return int(self.get())

    def __complex__(self):
        return complex(self.get())

    def __repr__(self):
        return repr(self.get())

    def __str__(self):
        return str(self.get())

    def __format__(self, spec):
        return format(self.get(), spec)

    def __reduce__(self):
        return array, (self.get(order="A"),)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()


def _getitem(x, key):
    got = x[key]
    if isinstance(got, np.generic):  # CuPy gives a 0-d view, not a scalar
        return x[(*(key if isinstance(key, tuple) else (key,)), Ellipsis)]
    return got


def _operator(name, inplace=False):
    method = getattr(np.ndarray, name)
    if not inplace:
        return lambda self, *other: _call(method, (self, *other), {}, name)

    def apply(self, other):
        found: list = [self]
        other = _unwrap(other, found)
        _peer_check(found, name)
        STATE.launches[STATE.current] += 1
        method(self._a, other)
        return self

    return apply


for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
            "xor", "lshift", "rshift"):
    setattr(ndarray, f"__{_op}__", _operator(f"__{_op}__"))
    setattr(ndarray, f"__r{_op}__", _operator(f"__r{_op}__"))
    setattr(ndarray, f"__i{_op}__", _operator(f"__i{_op}__", inplace=True))
for _op in ("lt", "le", "eq", "ne", "gt", "ge", "neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_op}__", _operator(f"__{_op}__"))
ndarray.__module__ = "cupy"  # as cupy.ndarray's: nnkernel tells libraries apart by it


def _upload(obj, dtype=None, copy=None, **kwargs):
    """cupy.asarray / cupy.array of host data: cast on the host, then one copy to the device."""
    if isinstance(obj, ndarray):
        same = dtype is None or np.dtype(dtype) == obj.dtype
        return obj if same and not copy else _call(np.array, (obj,), {"dtype": dtype}, "array")
    host = np.array(obj, dtype=dtype, copy=True, **{k: v for k, v in kwargs.items()
                                                     if k in ("order", "ndmin")})
    STATE.uploads.append((host.dtype.name, host.shape))
    return _new(host)


def asarray(a, dtype=None, order=None, *, blocking=False):
    return _upload(a, dtype, copy=False)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    return _upload(obj, dtype, copy=copy, ndmin=ndmin)


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    return a.get(order=order, out=out) if isinstance(a, ndarray) else np.asarray(a, order=order)


def is_available():
    return STATE.available


class RandomState:
    def __init__(self, seed=None, method=None):
        self.method = cuda_side.CURAND_RNG_PSEUDO_DEFAULT if method is None else method
        STATE.generators += 1
        self.seed(seed)

    def seed(self, seed=None):
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        seed_arr = np.asarray(seed)
        if seed_arr.dtype.kind not in "biu":
            raise TypeError("Seed must be an integer.")
        if not 0 <= int(seed_arr) < 2**64:
            raise ValueError("Seed must be an integer between 0 and 2**64 - 1")
        self._rng = np.random.Generator(np.random.Philox(int(seed_arr)))

    def random_sample(self, size=None, dtype=float):
        dtype = np.dtype(dtype)
        if dtype.char not in "fd":
            raise TypeError(f"cupy.random only supports float32 and float64 ({dtype})")
        STATE.launches[STATE.current] += 1
        return _new(np.asarray(self._rng.random(() if size is None else size, dtype=dtype)))

    def permutation(self, a):
        if not isinstance(a, int):
            return a[self.permutation(len(a))]
        STATE.launches[STATE.current] += 1
        sample = self._rng.integers(-2**31, 2**31, a, dtype=np.int32)
        return _new(np.argsort(sample, kind="stable"))


# -- the package -----------------------------------------------------------------------------
_METHODS_READING_HOST = {"nonzero", "argwhere", "flatnonzero", "unique", "extract", "compress"}


def _module(name, **attrs):
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib.util.find_spec asks
    return mod


def _numpy_names(source):
    out = {}
    for name in source.__all__:
        obj = getattr(source, name)
        if isinstance(obj, types.ModuleType) or name.startswith("__"):
            continue
        wrap = callable(obj) and not isinstance(obj, type)
        out[name] = _function(obj, name, name in _METHODS_READING_HOST) if wrap else obj
    return out


def build():
    """The fake modules by their import names (made once per process)."""
    pick = {n: getattr(cuda_side, n) for n in ("getDeviceCount", "getDevice", "setDevice",
                                               "getDeviceProperties", "memGetInfo",
                                               "deviceSynchronize", "runtimeGetVersion",
                                               "driverGetVersion", "CUDARuntimeError")}
    runtime = _module("cupy.cuda.runtime", **pick)
    memory = _module("cupy.cuda.memory", OutOfMemoryError=OutOfMemoryError)
    device = _module("cupy.cuda.device", Device=Device, get_device_id=cuda_side.getDevice)
    curand = _module("cupy.cuda.curand", **{n: v for n, v in vars(cuda_side).items()
                                            if n.startswith("CURAND_")})
    cuda = _module("cupy.cuda", Device=Device, runtime=runtime, memory=memory, device=device,
                   curand=curand, Stream=cuda_side.Stream,
                   get_current_stream=cuda_side.get_current_stream, is_available=is_available)
    linalg_core = _module("cupy._core._routines_linalg",
                          set_compute_type=cuda_side.set_compute_type,
                          get_compute_type=cuda_side.get_compute_type,
                          **{n: v for n, v in vars(cuda_side).items()
                             if n.startswith("COMPUTE_")})
    core = _module("cupy._core", _routines_linalg=linalg_core)
    random = _module("cupy.random", RandomState=RandomState)
    linalg = _module("cupy.linalg", **_numpy_names(np.linalg))
    linalg.__all__ = list(np.linalg.__all__)
    fft = _module("cupy.fft", **_numpy_names(np.fft))
    fft.__all__ = list(np.fft.__all__)
    names = _numpy_names(np)
    names.update(ndarray=ndarray, asarray=asarray, array=array, asnumpy=asnumpy,
                 is_available=is_available, ElementwiseKernel=_NoCuda, RawKernel=_NoCuda,
                 RawModule=_NoCuda)
    cupy = _module("cupy", **names, cuda=cuda, random=random, linalg=linalg, fft=fft,
                   _core=core, __version__="14.2.0")
    cupy.__all__ = sorted(n for n in names if not n.startswith("_"))
    return {m.__name__: m for m in (cupy, cuda, runtime, memory, device, curand, core,
                                    linalg_core, random, linalg, fft)}


_MODULES: dict = {}
_COMPAT: dict = {}  # array_api_compat.cupy and its submodules, imported once against the double


_OURS = ("cupy", "cupyx", "cupy_backends", "array_api_compat.cupy", "nnkernel.kernels.cupy",
         "nnkernel.kernels.conv_cupy")


@pytest.fixture
def fake_cupy(monkeypatch):
    """Install the double as ``cupy`` for one test; yields its recorder, `STATE`.

    A real CuPy (and everything imported over it) is hidden for the test and comes back
    after it; modules imported over the double (the CuPy twin, say) are forgotten.
    """
    import array_api_compat

    from nnkernel.backend import CupyBackend
    from nnkernel.kernels import Kernels

    if not _MODULES:
        _MODULES.update(build())
    STATE.reset()
    for name in [m for m in sys.modules if m.startswith(_OURS)]:
        monkeypatch.delitem(sys.modules, name)
    for name, mod in {**_MODULES, **_COMPAT}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    # `from .. import cupy` in array_api_compat reads the package attribute first
    monkeypatch.setattr(array_api_compat, "cupy", None, raising=False)  # restored afterwards
    if _COMPAT:
        array_api_compat.cupy = _COMPAT["array_api_compat.cupy"]
    else:
        del array_api_compat.cupy
    for attr, value in (("_module", None), ("_xp", None), ("_kernels", None),
                        ("make_kernels", classmethod(lambda cls: Kernels(cls.namespace())))):
        monkeypatch.setattr(CupyBackend, attr, value)
    monkeypatch.delenv("CUPY_TF32", raising=False)
    before = set(sys.modules)
    CupyBackend.namespace()  # imports array_api_compat.cupy over the double the first time
    if not _COMPAT:
        _COMPAT.update({n: m for n, m in sys.modules.items()
                        if n.startswith("array_api_compat.cupy")})
    yield STATE
    for name in [m for m in sys.modules if m.startswith(_OURS) and m not in before]:
        del sys.modules[name]
        parent, _, child = name.rpartition(".")
        if parent.startswith("nnkernel") and hasattr(sys.modules[parent], child):
            delattr(sys.modules[parent], child)  # nnkernel.kernels.cupy, ...
