"""PyTorch tensors through the generic Array API path, on the CPU or a CUDA device."""

from __future__ import annotations

import numpy as np

from ..errors import DeviceError
from .arrays import mixed_seed
from .base import Backend
from .devices import parse_device
from .random import Random


class TorchBackend(Backend):
    name = "torch"
    module_name = "torch"
    install_hint = "pip install torch==2.13.0"
    namespaces = ("torch", "array_api_compat.torch")
    type_modules = ("torch",)

    @classmethod
    def probe(cls):
        return cls.load().zeros(1)

    def _resolve_device(self, device):
        torch = self.module
        if isinstance(device, torch.device):
            dev = device
        else:
            kind, index = parse_device(device)
            dev = torch.device("cpu" if kind == "cpu" else f"cuda:{index}")
        if dev.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = dev.index or 0
            if index >= count:
                raise DeviceError(f"torch sees no GPU {index} (torch.cuda.is_available() is "
                                  f"{torch.cuda.is_available()}, {count} GPU(s)); use --device "
                                  f"cpu")
        return dev

    @property
    def device_name(self) -> str:
        return str(self.device)

    @staticmethod
    def host(x) -> np.ndarray:
        return x.detach().cpu().numpy()

    @classmethod
    def array_is_asynchronous(cls, x) -> bool:
        return x.device.type == "cuda"

    @property
    def asynchronous(self) -> bool:
        return self.device.type == "cuda"

    def activate(self):
        if self.device.type == "cuda":
            return self.module.cuda.device(self.device)
        return super().activate()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.module.cuda.synchronize(self.device)

    def set_tf32(self, enabled=True) -> bool:
        if self.device.type != "cuda":
            return False
        self.module.backends.cuda.matmul.allow_tf32 = bool(enabled)
        return self.tf32_enabled()

    def tf32_enabled(self) -> bool:
        return self.device.type == "cuda" and bool(self.module.backends.cuda.matmul.allow_tf32)

    def memory_info(self):
        if self.device.type != "cuda":
            return None
        free, total = self.module.cuda.mem_get_info(self.device)
        return f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free"

    @classmethod
    def is_out_of_memory(cls, error) -> bool:
        oom = getattr(cls.load().cuda, "OutOfMemoryError", ())
        return isinstance(error, (MemoryError, oom))

    def asarray(self, obj, dtype=None, copy=None):
        if isinstance(obj, self.array_type):
            return super().asarray(obj, dtype=dtype, copy=copy)
        obj = self._from_foreign(obj)  # a tensor already where it lives on our device (DLPack)
        t = obj if isinstance(obj, self.array_type) else self.module.as_tensor(
            np.asarray(obj), device=self.device)
        t = t if dtype is None else t.to(dtype)
        return t.clone() if copy else t

    def random(self, seed) -> Random:
        return TorchRandom(self, seed)


class TorchRandom(Random):
    """Draws with a torch.Generator on the model's device."""

    def reseed(self, seed) -> None:
        torch = self.backend.module
        if getattr(self, "gen", None) is None:
            self.gen = torch.Generator(device=self.backend.device)
        self.gen.manual_seed(mixed_seed(seed))

    def uniform(self, shape, dtype):
        return self.backend.module.rand(shape, generator=self.gen, dtype=dtype,
                                        device=self.backend.device)

    def permutation(self, n):
        return self.backend.module.randperm(n, generator=self.gen, device=self.backend.device)
