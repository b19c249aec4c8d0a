"""DLPack: arrays of another library on the model's device come in without a host copy.

Zero-copy is checked on the memory itself: ``np.shares_memory`` and data pointers.
Arrays that live elsewhere (array-api-strict's fake device) are still refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import host, jax_or_skip, torch_or_skip

import nnkernel as nk
from nnkernel.errors import BackendMismatchError


def small(backend="numpy", dtype="float32"):
    return nk.Sequential(nk.Dense(4, 5, "tanh"), nk.Dense(5, 3), backend=backend, dtype=dtype,
                         seed=2)


def test_a_torch_cpu_tensor_into_a_numpy_model_is_taken_zero_copy():
    torch = torch_or_skip()
    t = torch.randn(6, 4)
    be = nk.Backend("numpy")
    shared = be.accept(t)
    assert isinstance(shared, np.ndarray) and np.shares_memory(shared, t.numpy())
    model = small()
    np.testing.assert_array_equal(model.forward(t), model.forward(t.numpy()))
    taken = be.asarray(t)  # asarray takes the same road
    assert np.shares_memory(taken, t.numpy())


def test_a_numpy_array_into_a_torch_cpu_model_is_taken_zero_copy():
    torch = torch_or_skip()
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    be = nk.Backend("torch")
    shared = be.accept(x)
    assert isinstance(shared, torch.Tensor) and shared.data_ptr() == x.ctypes.data
    model = small("torch")
    np.testing.assert_allclose(host(model.forward(x)), host(model.forward(torch.from_numpy(x))),
                               rtol=1e-6)


def test_torch_into_jax_and_jax_into_numpy_share_the_buffer():
    torch = torch_or_skip()
    jax = jax_or_skip()
    t = torch.randn(8, 4, dtype=torch.float64)
    j = nk.Backend("jax").asarray(t)
    assert isinstance(j, jax.Array) and j.unsafe_buffer_pointer() == t.data_ptr()
    n = nk.Backend("numpy").accept(j)
    assert n.ctypes.data == j.unsafe_buffer_pointer() and not n.flags.writeable


def test_jax_does_not_alias_a_numpy_array_it_cannot_own():
    """JAX assumes immutable buffers, so host data is copied (asarray), never aliased."""
    jax_or_skip()
    x = np.ones((4, 4))
    j = nk.Backend("jax").asarray(x)
    x[0, 0] = 5.0
    assert float(j[0, 0]) == 1.0


def test_model_to_moves_over_dlpack_and_keeps_its_outputs(monkeypatch):
    torch_or_skip()
    model = small("numpy", dtype="float64")
    x = np.random.default_rng(1).standard_normal((5, 4))
    expected = model.forward(x)
    import nnkernel.nn.sequential as sequential

    def no_host_copy(*a, **k):
        raise AssertionError("model.to went through the host")

    monkeypatch.setattr(sequential.Sequential, "arrays", no_host_copy)
    model.to(backend="torch")
    assert model.backend.name == "torch"
    np.testing.assert_allclose(host(model.forward(model.backend.asarray(x))), expected,
                               rtol=1e-12)
    before = host(model.store.flat).copy()
    flat = model.store.flat
    model.to(backend="numpy")  # the store gets a buffer of its own: it writes in place
    assert not np.shares_memory(model.store.flat, flat.numpy())
    np.testing.assert_array_equal(model.store.flat, before)


def test_an_array_on_another_device_is_still_refused(device1):
    strict = pytest.importorskip("array_api_strict")
    x = strict.asarray(np.zeros((2, 4), np.float32), device=device1)
    with pytest.raises(BackendMismatchError, match="device1"):
        small("numpy").forward(x)
    on_device1 = small("array_api_strict")
    on_device1.to(device="device1")
    with pytest.raises(BackendMismatchError, match="device1|CPU_DEVICE"):
        on_device1.forward(np.zeros((2, 4), np.float32))
