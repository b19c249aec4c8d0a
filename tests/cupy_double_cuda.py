"""The CUDA side of the CuPy test double (tests/cupy_double.py): devices, memory, cuBLAS.

`STATE` is the double's recorder. What is copied from CuPy's sources
(github.com/cupy/cupy, main of 2026-08, v15.0.0a1, which match 13.x and 14.x here):
- ``cupy/cuda/device.pyx`` ``Device``: ``Device(device=None)`` is the current device,
  else ``int(device)``; ``.id``; ``__int__``; a re-entrant context manager restoring
  the previous device; ``use()``; ``__repr__`` ``'<CUDA Device %d>'`` and no
  ``__str__``; ``==`` by id against Devices only, no hash; ``compute_capability``
  as a string ('90'); ``mem_info``.
- ``cupy/cuda/memory.pyx`` ``OutOfMemoryError(MemoryError)(size, total, limit=0)`` and
  its message, word for word.
- ``cupy_backends/cuda/api/runtime.pyx``: ``getDeviceCount``, ``getDevice``,
  ``setDevice``, ``getDeviceProperties`` (a dict, ``name`` as bytes), ``memGetInfo``
  (of the current device); ``cupy_backends/cuda/libs/curand.pxd``: the generator
  constants.
- ``cupy/_core/_routines_linalg.pyx``: ``COMPUTE_TYPE_*``, ``set_compute_type`` (TF32
  needs compute capability >= 8.0, else a warning and DEFAULT), ``get_compute_type``
  (reads ``CUPY_TF32`` only while the type is undecided).
"""

from __future__ import annotations

import os
import warnings

import numpy as np


class _State:
    def reset(self, n_devices=2):
        self.n_devices, self.current, self.available = n_devices, 0, True
        self.compute_capability = (9, 0)
        self.total_memory = 80 * 2**30
        self.launches = dict.fromkeys(range(n_devices), 0)
        self.uploads: list = []
        self.host_reads = 0
        self.allocated = 0
        self.max_allocation = None
        self.generators = 0  # RandomState objects made (each a cuRAND generator on a GPU)
        self.kernel_calls: list = []
        self.compute_type = COMPUTE_TYPE_TBD
        self.stack: list = []


# -- cupy.cuda.runtime, cupy.cuda.memory, cupy.cuda.device ----------------------------------
class CUDARuntimeError(RuntimeError):
    pass


def getDeviceCount():
    return STATE.n_devices


def getDevice():
    return STATE.current


def setDevice(device):
    if not 0 <= int(device) < STATE.n_devices:
        raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
    STATE.current = int(device)


def getDeviceProperties(device):
    major, minor = STATE.compute_capability
    return {"name": b"NVIDIA Test Double", "totalGlobalMem": STATE.total_memory,
            "major": major, "minor": minor, "multiProcessorCount": 132}


def memGetInfo():
    return STATE.total_memory - STATE.allocated, STATE.total_memory


def deviceSynchronize():
    pass


def runtimeGetVersion():
    return 12080


driverGetVersion = runtimeGetVersion


class OutOfMemoryError(MemoryError):
    def __init__(self, size, total, limit=0):
        self._size, self._total, self._limit = size, total, limit
        if limit == 0:
            msg = f"Out of memory allocating {size:,} bytes"
            if total != -1:
                msg += f" (allocated so far: {total:,} bytes)."
        else:
            msg = (f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} "
                   f"bytes, limit set to: {limit:,} bytes).")
        super().__init__(msg)

    def __reduce__(self):
        return type(self), (self._size, self._total, self._limit)


class Device:
    def __init__(self, device=None):
        self.id = getDevice() if device is None else int(device)

    def __int__(self):
        return self.id

    def __enter__(self):
        STATE.stack.append(getDevice())
        if self.id != STATE.current:
            setDevice(self.id)
        return self

    def __exit__(self, *args):
        setDevice(STATE.stack.pop())

    def __repr__(self):
        return f"<CUDA Device {self.id}>"

    def __eq__(self, other):
        return isinstance(other, Device) and self.id == other.id

    __hash__ = None  # CuPy's Device defines __richcmp__ and no __hash__

    def use(self):
        setDevice(self.id)
        return self

    def synchronize(self):
        pass

    @property
    def compute_capability(self):
        return "{}{}".format(*STATE.compute_capability)

    @property
    def mem_info(self):
        with self:
            return memGetInfo()


class Stream:
    def synchronize(self):
        pass


def get_current_stream(device_id=-1):
    return Stream()


# -- cuRAND ----------------------------------------------------------------------------------
CURAND_RNG_PSEUDO_DEFAULT, CURAND_RNG_PSEUDO_XORWOW = 100, 101
CURAND_RNG_PSEUDO_MRG32K3A, CURAND_RNG_PSEUDO_PHILOX4_32_10 = 121, 161



# -- cuBLAS compute types ----------------------------------------------------------------------
(COMPUTE_TYPE_TBD, COMPUTE_TYPE_DEFAULT, COMPUTE_TYPE_PEDANTIC, COMPUTE_TYPE_FP16,
 COMPUTE_TYPE_FP32, COMPUTE_TYPE_FP64, COMPUTE_TYPE_BF16, COMPUTE_TYPE_TF32) = range(8)


def set_compute_type(dtype, compute_type):
    assert np.dtype(dtype).char == "f", "the double keeps float32's compute type only"
    if compute_type in (COMPUTE_TYPE_BF16, COMPUTE_TYPE_TF32) and STATE.compute_capability < (8,):
        warnings.warn("COMPUTE_TYPE_BF16 and COMPUTE_TYPE_TF32 are only available on GPUs with "
                      "compute capability 8.0 or higher. COMPUTE_TYPE_DEFAULT will be used "
                      "instead.", stacklevel=2)
        compute_type = COMPUTE_TYPE_DEFAULT
    STATE.compute_type = compute_type


def get_compute_type(dtype):
    if STATE.compute_type == COMPUTE_TYPE_TBD:
        tf32 = np.dtype(dtype).char == "f" and int(os.getenv("CUPY_TF32", "0")) > 0
        set_compute_type(dtype, COMPUTE_TYPE_TF32 if tf32 else COMPUTE_TYPE_DEFAULT)
    return STATE.compute_type


class _NoCuda:
    """ElementwiseKernel, RawKernel, RawModule: they construct, and refuse to run."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __call__(self, *args, **kwargs):
        STATE.kernel_calls.append((self.args, args))  # what the caller launched, for a test
        raise RuntimeError("the CuPy test double cannot run CUDA code; CupyBackend uses the "
                           "reference kernels under it")

    get_function = __call__


STATE = _State()
STATE.reset()
