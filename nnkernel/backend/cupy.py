"""CuPy on an NVIDIA GPU: the device object, its context, cuRAND, TF32 and memory.

The model's device is a ``cupy.cuda.Device``. It is read by its ``.id`` (its
``str()`` is ``<CUDA Device 0>``) and made current around every forward,
backward and optimizer step: array-api-compat honours ``device=`` only in
``asarray``, so without the context new buffers and kernel launches would land
on whichever GPU happens to be current.
"""

from __future__ import annotations

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
    kernels_class = "cupy"

    def _resolve_device(self, device):
        cp = self.module
        if not usable(cp):
            raise DeviceError("CuPy is installed but sees no usable GPU (cupy.is_available() "
                              "is False); train on the CPU with --device cpu")
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
        from ..kernels.cupy_twin import enable_tf32

        return enable_tf32(enabled)

    def tf32_enabled(self) -> bool:
        from ..kernels.cupy_twin import tf32_enabled

        return tf32_enabled()

    @classmethod
    def is_out_of_memory(cls, error) -> bool:
        return isinstance(error, (MemoryError, cls.load().cuda.memory.OutOfMemoryError))

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
    """One cuRAND generator per model, drawing on the GPU.

    Philox is counter-based: reseeding it for every step (as fit does, from
    (seed, epoch, step)) only resets a counter, where XORWOW, cuRAND's default,
    re-runs its state set-up.
    """

    def reseed(self, seed) -> None:
        cp = self.backend.module
        with self.backend.device:
            if getattr(self, "rng", None) is None:
                self.rng = cp.random.RandomState(
                    mixed_seed(seed), method=cp.cuda.curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)
            else:
                self.rng.seed(mixed_seed(seed))

    def uniform(self, shape, dtype):
        with self.backend.device:
            return self.rng.random_sample(shape, dtype=dtype)

    def permutation(self, n):
        with self.backend.device:
            return self.rng.permutation(n)


def usable(cp) -> bool:
    try:
        return bool(cp.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA install means no GPU, too
        return False
