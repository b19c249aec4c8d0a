"""Device names as users write them: cpu, gpu, gpu:1, cuda:0, 1, or a library's device object."""

from __future__ import annotations

import operator

from ..errors import ConfigError


def parse_device(device) -> tuple[str, int | None]:
    """("cpu", None) or ("gpu", index) for any spelling of a device.

    Device objects are read by their index (`.id` as CuPy's ``cuda.Device``,
    `.index` as torch's, or ``__index__``), never by ``str()``: CuPy's device
    prints as ``<CUDA Device 0>``.
    """
    if device is None:
        return "cpu", None
    if isinstance(device, bool):
        raise ConfigError(f"cannot read a device from {device!r}; use cpu, gpu, gpu:N or cuda:N")
    if isinstance(device, int):
        return _gpu(device, device)
    if not isinstance(device, str):
        kind = getattr(device, "type", None)
        if kind == "cpu":
            return "cpu", None
        for attr in ("id", "index"):
            value = getattr(device, attr, None)
            if isinstance(value, int):
                return _gpu(value, device)
            if value is None and attr == "index" and kind == "cuda":
                return "gpu", 0
        try:
            return _gpu(operator.index(device), device)
        except TypeError:
            device = str(device)
    text = device.strip().lower()
    if text == "cpu":
        return "cpu", None
    for prefix in ("gpu", "cuda"):
        if text.startswith(prefix):
            tail = text[len(prefix):].lstrip(":")
            if tail == "":
                return "gpu", 0
            if tail.isdigit():
                return "gpu", int(tail)
    if text.isdigit():
        return "gpu", int(text)
    raise ConfigError(f"cannot read a device from {device!r}; use cpu, gpu, gpu:N or cuda:N")


def _gpu(index: int, given) -> tuple[str, int]:
    if index < 0:
        raise ConfigError(f"a GPU index is >= 0, got {given!r}")
    return "gpu", index
