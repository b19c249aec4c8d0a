"""array-api-strict: the standard and nothing else, with fake devices to test device logic."""

from __future__ import annotations

import numpy as np

from .base import Backend


class StrictBackend(Backend):
    name = "array_api_strict"
    module_name = "array_api_strict"
    install_hint = "pip install array-api-strict"
    namespaces = ("array_api_strict",)
    type_modules = ("array_api_strict",)
    mutable = False  # strict allows __setitem__, but nnkernel keeps it as the rebinding proof

    @classmethod
    def namespace(cls):
        return cls.load()  # it is its own namespace

    def _resolve_device(self, device):
        strict = self.module
        if device is None:
            return strict.Device("CPU_DEVICE")
        return device if isinstance(device, strict.Device) else strict.Device(str(device))

    @staticmethod
    def host(x) -> np.ndarray:
        import array_api_strict as strict

        return np.asarray(strict.asarray(x, device=strict.Device("CPU_DEVICE"), copy=True)._array)

    @classmethod
    def exchangeable(cls, x) -> bool:
        # its fake devices (device1, ...) say "CPU" to DLPack; they stand for other devices
        return x.device == cls.load().Device("CPU_DEVICE")
