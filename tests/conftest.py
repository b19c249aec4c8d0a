"""Shared test fixtures: the backend matrix, array helpers and array-api-strict's fake device.

Every backend test runs on NumPy and array-api-strict; torch and CuPy join when
they can be used here and are skipped, with the reason, when they cannot.
CuPy is imported only to ask whether a GPU is there.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import numpy as np
import pytest

import nnkernel as nk


@cache
def backend_unavailable(name: str) -> str | None:
    """Why a backend cannot run here, or None when it can."""
    if name == "torch":
        return None if importlib.util.find_spec("torch") else "torch not installed"
    if name == "cupy":
        if importlib.util.find_spec("cupy") is None:
            return "cupy not installed"
        import cupy

        try:
            usable = bool(cupy.is_available())
        except Exception:  # noqa: BLE001 - a broken CUDA install means no GPU too
            usable = False
        return None if usable else "no GPU: cupy.is_available() is False"
    if name == "array_api_strict":
        spec = importlib.util.find_spec("array_api_strict")
        return None if spec else "array_api_strict not installed"
    return None


def backend_params(names=("numpy", "array_api_strict", "torch", "cupy")):
    """pytest params for backend names, each skipped with its reason when unusable."""
    params = []
    for name in names:
        reason = backend_unavailable(name)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


BACKENDS = backend_params()
# Backends whose optimizer/kernel paths differ: the NumPy twin and the generic reference.
CPU_BACKENDS = backend_params(("numpy", "array_api_strict"))


def torch_or_skip():
    """torch, single-threaded, or a skip when it is not installed.

    The tests' tensors are tiny: extra threads only fight over the shared cores
    (a 50-step torch trajectory ran 10x slower with the default thread count).
    """
    torch = pytest.importorskip("torch", reason="torch not installed")
    torch.set_num_threads(1)
    return torch


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """A backend name: numpy, array_api_strict, torch, cupy (skipped where unusable)."""
    if request.param == "torch":
        torch_or_skip()
    return request.param


def make(backend, data, dtype="float64", device=None):
    """Host data (list or NumPy array) as an array of `backend` (a name or a Backend)."""
    be = backend if isinstance(backend, nk.Backend) else nk.Backend(backend, device)
    arr = np.asarray(data)
    if arr.dtype.kind == "f":  # floats take the requested dtype; integer labels stay integers
        return be.asarray(arr, dtype=be.dtype(dtype))
    return be.asarray(arr)


def host(x) -> np.ndarray:
    """Any backend's array as a NumPy float64/int array on the host."""
    return np.asarray(nk.backend.to_numpy(x))


@pytest.fixture
def device1():
    """array-api-strict's fake second device, to test device logic without a GPU."""
    strict = pytest.importorskip("array_api_strict")
    return strict.Device("device1")
