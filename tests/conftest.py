"""Shared test fixtures: the backend matrix, array helpers and array-api-strict's fake device.

Every backend test runs on NumPy and array-api-strict; torch, CuPy, JAX and Dask
join when they can be used here and are skipped, with the reason, when they cannot.
CuPy is imported only to ask whether a GPU is there. JAX runs in 64-bit mode
(``jax_enable_x64``), which the float64 tests need; nnkernel refuses a float64 JAX
model without it (tests/test_jax.py checks that refusal with the mode off).
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
    if name == "jax":
        return None if importlib.util.find_spec("jax") else "jax not installed (nnkernel[jax])"
    if name == "dask":
        if importlib.util.find_spec("dask") is None:
            return "dask not installed"
        return None if importlib.util.find_spec("dask.array") else "dask[array] not installed"
    return None


def jax_or_skip():
    """jax in 64-bit mode (the float64 tests need it), or a skip when it is not installed."""
    jax = pytest.importorskip("jax", reason="jax not installed (nnkernel[jax])")
    jax.config.update("jax_enable_x64", True)
    return jax


def backend_params(names=("numpy", "array_api_strict", "torch", "cupy", "jax", "dask")):
    """pytest params for backend names, each skipped with its reason when unusable."""
    params = []
    for name in names:
        reason = backend_unavailable(name)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


# The `backend` fixture runs on the four core backends; JAX and Dask (the generic reference
# again, traced by XLA or built as a graph: seconds per test) join it where a module sets
# EVERY_BACKEND (True: both; or a tuple of names): the namespace x device x dtype matrix and
# same-seed fits (test_backends: both), the float64 gradient checks (test_gradients: JAX;
# Dask's are in test_dask.py), and the torch.optim trajectories (TRAJECTORY_BACKENDS);
# test_jax.py and test_dask.py test the rest of theirs.
BACKENDS = backend_params(("numpy", "array_api_strict", "torch", "cupy"))
EVERY_BACKEND = backend_params()
# Backends whose optimizer/kernel paths differ: the NumPy twin and the generic reference.
CPU_BACKENDS = backend_params(("numpy", "array_api_strict"))
# Every optimizer trajectory runs on every backend: one that left torch out hid a momentum
# buffer aliasing torch's gradient buffer.
TRAJECTORY_BACKENDS = backend_params()


def pytest_generate_tests(metafunc):
    """Parametrise the `backend` fixture, unless the test names its backends itself."""
    if "backend" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        names = names.split(",") if isinstance(names, str) else names
        if "backend" in [n.strip() for n in names]:
            return
    extra = getattr(metafunc.module, "EVERY_BACKEND", ())
    params = EVERY_BACKEND if extra is True else BACKENDS + backend_params(tuple(extra))
    metafunc.parametrize("backend", params, indirect=True)


def torch_or_skip():
    """torch, single-threaded, or a skip when it is not installed.

    The tests' tensors are tiny: extra threads only fight over the shared cores
    (a 50-step torch trajectory ran 10x slower with the default thread count).
    """
    torch = pytest.importorskip("torch", reason="torch not installed")
    torch.set_num_threads(1)
    return torch


@pytest.fixture(autouse=True)
def _jax_in_64_bit_mode(request):
    """Tests parametrised with "jax" directly (not through `backend`) get 64-bit mode too."""
    callspec = getattr(request.node, "callspec", None)
    if callspec and any(isinstance(v, str) and v == "jax" for v in callspec.params.values()):
        jax_or_skip()


@pytest.fixture
def backend(request) -> str:
    """A backend name: numpy, array_api_strict, torch, cupy (and jax, dask where the module
    asks for EVERY_BACKEND), skipped with the reason where unusable."""
    if request.param == "torch":
        torch_or_skip()
    if request.param == "jax":
        jax_or_skip()
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
