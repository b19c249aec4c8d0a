"""CuPy on an NVIDIA GPU: the device object, its context, cuRAND, TF32 and memory.

The model's device is a ``cupy.cuda.Device``. It is read by its ``.id`` (its
``str()`` is ``<CUDA Device 0>``) and made current around every forward,
backward and optimizer step: array-api-compat honours ``device=`` only in
``asarray``, so without the context new buffers and kernel launches would land
on whichever GPU happens to be current.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np

from ..errors import DeviceError
from .arrays import mixed_seed
from .base import Backend
from .devices import parse_device
from .random import Random


class CupyBackend(Backend):
    name = "cupy"
    module_name = "cupy"
    install_hint = 'pip install "nnkernel[gpu]" (cupy-cuda12x)'
    namespaces = ("cupy", "array_api_compat.cupy")
    type_modules = ("cupy",)

    @classmethod
    def make_kernels(cls):
        from ..kernels.cupy import CupyKernels  # imports CuPy: only once a model is on it

        return CupyKernels(cls.namespace())

    @classmethod
    def probe(cls):
        _check_usable(cls.load())  # before the first array: without a GPU, that one raises
        return super().probe()

    def _resolve_device(self, device):
        cp = self.module
        _check_usable(cp)
        kind, index = parse_device(device)
        index = 0 if index is None else index
        n = cp.cuda.runtime.getDeviceCount()
        if not 0 <= index < n:
            raise DeviceError(f"GPU {index} does not exist: CuPy sees {n} GPU(s) (0..{n - 1})")
        return cp.cuda.Device(index)

    @property
    def device_name(self) -> str:
        return f"gpu:{self.device.id}"

    @staticmethod
    def host(x):
        return x.get()

    @classmethod
    def array_is_asynchronous(cls, x) -> bool:
        return True

    @property
    def asynchronous(self) -> bool:
        return True

    def same_device(self, x) -> bool:
        return x.device.id == self.device.id

    def activate(self):
        return self.device  # a cupy.cuda.Device is a re-entrant context manager

    def synchronize(self) -> None:
        with self.device:
            self.module.cuda.get_current_stream().synchronize()

    def memory_info(self):
        with self.device:
            free, total = self.module.cuda.runtime.memGetInfo()
        return f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free"

    def set_tf32(self, enabled=True) -> bool:
        with self.device:  # CuPy asks the current device whether it has TF32
            return set_tf32(enabled)

    def tf32_enabled(self) -> bool:
        return tf32_enabled()

    @classmethod
    def is_device_out_of_memory(cls, error) -> bool:
        # cupy.cuda.memory.OutOfMemoryError subclasses MemoryError: tell it from the host's
        return isinstance(error, cls.load().cuda.memory.OutOfMemoryError)

    def random(self, seed) -> Random:
        return CupyRandom(self, seed)

    @classmethod
    def describe_devices(cls) -> list[str]:
        """One line per GPU: index, name, memory (for ``nnkernel info``)."""
        cp = cls.load()
        lines = []
        for i in range(cp.cuda.runtime.getDeviceCount()):
            name = cp.cuda.runtime.getDeviceProperties(i)["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            with cp.cuda.Device(i):
                free, total = cp.cuda.runtime.memGetInfo()
            lines.append(f"gpu:{i} {name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB "
                         f"free)")
        return lines


class CupyRandom(Random):
    """The model's random source on the GPU: one cuRAND generator, made when first drawn from.

    ``reseed`` (fit calls it every step, from (seed, epoch, step)) only stores the seed:
    the CuPy twin's dropout draws its masks from `counter_key` in one fused launch,
    with no generator state on the GPU, so a training step need not touch cuRAND at
    all. `uniform` and `permutation` use the one cuRAND generator, Philox (counter-based:
    reseeding it resets a counter, where XORWOW, cuRAND's default, re-runs its set-up).
    """

    rng = None

    def reseed(self, seed) -> None:
        self.key, self.draws, self._seeded = mixed_seed(seed), 0, False

    def counter_key(self) -> int:
        """A fresh 64-bit key for one counter-based draw: a hash of (seed, draws so far)."""
        self.draws += 1
        return _mix64(self.key ^ _mix64(self.draws))

    def _generator(self):
        if not self._seeded:
            cp = self.backend.module
            with self.backend.device:
                if self.rng is None:
                    self.rng = cp.random.RandomState(
                        self.key, method=cp.cuda.curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)
                else:
                    self.rng.seed(self.key)
            self._seeded = True
        return self.rng

    def uniform(self, shape, dtype):
        rng = self._generator()
        with self.backend.device:
            return rng.random_sample(shape, dtype=dtype)

    def permutation(self, n):
        rng = self._generator()
        with self.backend.device:
            return rng.permutation(n)


_MASK64 = (1 << 64) - 1


def _mix64(z: int) -> int:
    """SplitMix64's finaliser: a 64-bit integer hash (Python ints, ~1 µs)."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def set_tf32(enabled: bool = True) -> bool:
    """Let float32 2-D matrix products use TF32 tensor cores (GPUs of compute capability ≥ 8.0).

    TF32 rounds each input of the multiply to a 10-bit mantissa (float16's precision,
    float32's exponent range) and accumulates in float32: relative errors grow from
    ~1e-7 to ~1e-3 per product, usually harmless for training and 2-8x faster for
    large GEMMs. The switch is CuPy's cuBLAS compute type for float32, process-wide.
    The CUPY_TF32 environment variable sets the same switch, but CuPy reads it only
    while the type is undecided (at the first float32 matmul), so a CUPY_TF32=0 set
    earlier, or a matmul already run, would make setting the variable a silent no-op:
    this sets the compute type itself. It applies to 2-D products (every Dense layer
    of a single model); CuPy's batched products (ensembles) stay full float32.

    Returns whether TF32 is now on: False on older GPUs (CuPy's warning about it is
    silenced, the caller reports the False).
    """
    linalg = importlib.import_module("cupy._core._routines_linalg")  # private, in 13 and 14
    mode = linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        linalg.set_compute_type(np.float32, mode)
    return tf32_enabled()


def tf32_enabled() -> bool:
    """Whether float32 2-D products run in TF32 now (CUPY_TF32=1 counts until set_tf32)."""
    linalg = importlib.import_module("cupy._core._routines_linalg")
    return linalg.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_TF32


def _check_usable(cp) -> None:
    if not usable(cp):
        raise DeviceError("CuPy is installed but sees no usable GPU (cupy.is_available() is "
                          "False); train on the CPU with --device cpu")


def usable(cp) -> bool:
    try:
        return bool(cp.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA install means no GPU, too
        return False
