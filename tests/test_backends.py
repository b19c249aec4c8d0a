"""Backends and devices: the fit loop on array-api-strict, device checks, moves, seeds.

array-api-strict refuses everything outside the standard, so a whole fit on it
proves the library has no NumPy-isms; its fake device "device1" tests device
handling without a GPU.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import backend_unavailable, host, make, torch_or_skip

import nnkernel as nk
from nnkernel.errors import BackendMismatchError, DeviceError

EVERY_BACKEND = True  # JAX and Dask join this module's backend matrix (conftest.py)

strict = pytest.importorskip("array_api_strict")
STRICT_ARRAY = type(strict.asarray(0.0))


def blobs(n=96, seed=0):
    """Three Gaussian blobs in 4-D: easy to learn, so progress is visible in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.standard_normal((3, 4)) * 3
    return centers[y] + rng.standard_normal((n, 4)), y


def network(backend="numpy", device=None, dtype="float32", seed=0, dropout=True):
    layers = [nk.Dense(4, 16, "relu"), nk.BatchNorm(16)]
    layers += [nk.Dropout(0.1)] if dropout else []
    layers += [nk.Dense(16, 3)]
    return nk.Sequential(*layers, seed=seed, dtype=dtype, backend=backend, device=device)


def on_device(x, device):
    return strict.asarray(x, device=device)


@pytest.mark.parametrize("use_device1", [False, True], ids=["default_device", "device1"])
def test_fit_on_array_api_strict(use_device1, device1):
    device = device1 if use_device1 else strict.Device("CPU_DEVICE")
    X, y = blobs()
    X = on_device(X.astype(np.float32), device)
    y = on_device(y, device)
    model = network("array_api_strict", device=device if use_device1 else None)
    opt = nk.optim.Adam(lr=0.02, clip_norm=5.0, schedule=nk.optim.CosineDecay(60))
    history = nk.fit(model, X, y, epochs=6, batch_size=20, optimizer=opt,  # 96 = 4·20 + 16
                     validation_data=(X, y), progress=False)
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] > 0.9
    for arr in [*model.params.values(), *model.state.values(), model.predict(X, batch_size=25)]:
        assert isinstance(arr, STRICT_ARRAY) and arr.device == device
    loss, acc = nk.evaluate(model, X, y, batch_size=50)
    assert acc > 0.9 and np.isfinite(loss)


def test_regression_fit_on_array_api_strict(device1):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 4))
    Y = np.tanh(X @ rng.standard_normal((4, 3)))
    model = nk.Sequential(nk.Dense(4, 8, "gelu"), nk.LayerNorm(8), nk.Dense(8, 3),
                          backend="array_api_strict", device="device1", dtype="float64")
    for loss in ("mse", "huber", "mae"):
        history = nk.fit(model, on_device(X, device1), on_device(Y, device1), loss=loss,
                         epochs=3, batch_size=16, optimizer=nk.optim.RMSprop(lr=0.01),
                         progress=False)
        assert np.isfinite(history["loss"]).all()


@pytest.mark.parametrize("target", ["array_api_strict", "torch", "jax", "dask"])
def test_fit_follows_the_same_trajectory_on_every_backend(target):
    """Same seed, float64, same data order: every backend trains to the same weights.

    array-api-strict runs the generic reference kernels, NumPy its twin, so this
    also compares the two on a whole run. Shuffling and Dropout draw from each
    backend's own generator, so they are left out.
    """
    if target == "torch":
        torch_or_skip()
    if backend_unavailable(target):
        pytest.skip(backend_unavailable(target))
    X, y = blobs(48)
    runs = {}
    for name in ("numpy", target):
        model = network(name, dtype="float64", dropout=False)
        history = nk.fit(model, X, y, epochs=3, batch_size=16, shuffle=False,
                         optimizer=nk.optim.Adam(lr=0.01), progress=False)
        runs[name] = (history["loss"], model.arrays())
    np.testing.assert_allclose(runs[target][0], runs["numpy"][0], rtol=1e-10)
    for key, value in runs["numpy"][1].items():
        np.testing.assert_allclose(runs[target][1][key], value, rtol=1e-9, atol=1e-12)


# -- device and backend checks ------------------------------------------------------------------
def test_input_on_another_device_names_both_devices(device1):
    model = network("array_api_strict")
    x = on_device(np.zeros((2, 4), np.float32), device1)
    with pytest.raises(BackendMismatchError) as err:
        model.forward(x)
    assert "device1" in str(err.value) and "CPU_DEVICE" in str(err.value)

    on_device1 = network("array_api_strict", device="device1")
    with pytest.raises(BackendMismatchError) as err:
        on_device1.forward(strict.zeros((2, 4), dtype=strict.float32))
    assert "device1" in str(err.value) and "CPU_DEVICE" in str(err.value)


def test_fit_refuses_data_on_another_device(device1):
    X, y = blobs(16)
    model = network("array_api_strict")
    with pytest.raises(BackendMismatchError, match="device1"):
        nk.fit(model, on_device(X.astype(np.float32), device1), on_device(y, device1),
               epochs=1, batch_size=8, progress=False)


def test_gradient_on_another_device_is_refused(device1):
    model = network("array_api_strict", device="device1")
    model.forward(on_device(np.ones((3, 4), np.float32), device1), train=True)
    with pytest.raises(BackendMismatchError, match="dy"):
        model.backward(strict.zeros((3, 3), dtype=strict.float32))


def test_an_array_another_library_cannot_share_says_how_to_convert(device1):
    """Arrays on this device come in through DLPack (tests/test_dlpack.py); one on another
    device (here array-api-strict's fake one) is refused, with the fix."""
    torch_or_skip()
    model = network("torch")
    with pytest.raises(BackendMismatchError) as err:
        model.forward(on_device(np.zeros((2, 4), np.float32), device1))
    message = str(err.value)
    assert "array_api_strict" in message and "torch" in message
    assert "model.backend.asarray" in message  # the hint


@pytest.mark.parametrize("device", [None, "device1"])
def test_to_moves_the_model_and_keeps_its_outputs(backend, device):
    if device is not None and backend != "array_api_strict":
        device = None  # only array-api-strict has a fake second device
    X, _ = blobs(10)
    model = network("numpy", dtype="float64")
    model.forward(X, train=True)  # update BatchNorm's running statistics, so state moves too
    expected = host(model.predict(X))
    moved = model.to(backend=backend, device=device)
    assert moved is model and model.backend.name == backend
    if device is not None:
        assert model.device == strict.Device(device)
    got = model.predict(make(backend, X, device=device))
    assert nk.backend.backend_name_of(got) == backend
    np.testing.assert_allclose(host(got), expected, rtol=1e-12)
    model.to(backend="numpy")
    np.testing.assert_array_equal(model.predict(X), expected)


def test_to_changes_dtype():
    model = network("numpy", dtype="float64")
    model.to(dtype="float32")
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert model.forward(np.ones((2, 4), np.float32)).dtype == np.float32


def test_same_seed_same_initial_weights_on_every_backend(backend):
    reference = network("numpy", seed=3).arrays()
    for _ in range(2):  # and identical again on the same backend
        ours = network(backend, seed=3).arrays()
        assert ours.keys() == reference.keys()
        for key in reference:
            np.testing.assert_array_equal(ours[key], reference[key], err_msg=key)
    other = network(backend, seed=4).arrays()
    assert not np.array_equal(other["0.W"], reference["0.W"])


# -- CuPy without a GPU -------------------------------------------------------------------------
def test_cupy_without_a_gpu_is_a_device_error():
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("cupy not installed")
    if backend_unavailable("cupy") is None:
        pytest.skip("a GPU is present: CuPy is usable here")
    with pytest.raises(DeviceError, match="is_available"):
        nk.Sequential(nk.Dense(2, 2), backend="cupy")


def test_cupy_not_installed_is_a_device_error_with_the_install_hint():
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed")
    with pytest.raises(DeviceError, match="nnkernel\\[gpu\\]"):
        nk.Sequential(nk.Dense(2, 2), backend="cupy")


# -- dtype names ----------------------------------------------------------------------------------
STANDARD_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                   "uint64", "float32", "float64", "complex64", "complex128"]


@pytest.mark.parametrize("name", STANDARD_DTYPES)
def test_dtype_name_for_every_standard_dtype_of_every_backend(backend, name, recwarn):
    """Each name twice (the second from the cache), and no cross-library comparison warning."""
    xp = nk.Backend(backend).xp
    if not hasattr(xp, name):
        pytest.skip(f"{backend} has no {name}")
    for _ in range(2):
        assert nk.backend.dtype_name(getattr(xp, name)) == name
    assert not [w for w in recwarn if "comparing" in str(w.message)]


def test_cross_entropy_takes_uint8_labels_on_array_api_strict():
    logits = np.random.default_rng(0).standard_normal((5, 3))
    labels = np.array([0, 2, 1, 1, 0], dtype=np.uint8)
    value, dy = nk.losses.cross_entropy(strict.asarray(logits), strict.asarray(labels))
    want, want_dy = nk.losses.cross_entropy(logits, labels.astype(np.int64))
    np.testing.assert_allclose(float(value), float(want), rtol=1e-12)
    np.testing.assert_allclose(host(dy), want_dy, rtol=1e-12)
