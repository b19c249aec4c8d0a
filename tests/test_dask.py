"""Dask: lazy arrays trained eagerly-in-effect, the graph kept one step long.

The model's arrays are persisted after every update, so training neither grows a
graph over the steps nor recomputes earlier steps; random numbers are NumPy's
host streams, so a run equals the NumPy backend's from the same seed, shuffling
and Dropout included.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnkernel as nk
from nnkernel.errors import ConfigError, DeviceError

da = pytest.importorskip("dask.array", reason="dask[array] not installed")


def blobs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return rng.standard_normal((3, 4))[y] * 2 + rng.standard_normal((n, 4)), y


def network(backend):
    return nk.Sequential(nk.Dense(4, 12, "relu"), nk.BatchNorm(12), nk.Dropout(0.2),
                         nk.Dense(12, 3), backend=backend, dtype="float64", seed=5)


def test_a_dask_run_equals_the_numpy_run_with_shuffling_and_dropout():
    X, y = blobs()
    runs = {}
    for name, data in (("numpy", (X, y)),
                       ("dask", (da.from_array(X, chunks=(16, 4)), da.from_array(y, chunks=16)))):
        model = network(name)
        history = nk.fit(model, *data, epochs=2, batch_size=16, progress=False,
                         optimizer=nk.optim.Adam(lr=0.01))
        runs[name] = (history["loss"], history["accuracy"], model.arrays())
    np.testing.assert_allclose(runs["dask"][0], runs["numpy"][0], rtol=1e-12)
    np.testing.assert_allclose(runs["dask"][1], runs["numpy"][1], rtol=1e-12)
    for key, value in runs["numpy"][2].items():
        np.testing.assert_allclose(runs["dask"][2][key], value, rtol=1e-11, atol=1e-13,
                                   err_msg=key)


def test_the_model_arrays_are_numbers_not_a_growing_graph():
    X, y = blobs(48)
    model = network("dask")
    opt = nk.optim.Adam(lr=0.01)
    nk.fit(model, X, y, epochs=2, batch_size=8, optimizer=opt, progress=False)  # 12 steps
    persisted = [model.store.flat, model.store.grad, *model.state.values(),
                 *opt.flat_state(model.store).arrays.values()]
    for arr in persisted:
        assert isinstance(arr, da.Array)
        assert len(arr.__dask_graph__()) == 1, "not one computed chunk"
    assert model.predict(X).shape == (48, 3)


def test_a_frozen_parameter_leaves_no_growing_graph_in_the_optimizer_state():
    """Freezing a parameter (leaving it out of the gradients) takes the optimizer's
    per-segment path; its new state is persisted with the parameters there too."""
    model = nk.Sequential(nk.Dense(4, 5, "tanh"), nk.Dense(5, 3), backend="dask", seed=0)
    opt = nk.optim.Adam(lr=0.01)
    X, y = blobs(8)
    x, t = model.backend.asarray(X), model.backend.asarray(y)
    for _ in range(4):
        _, dy = nk.losses.cross_entropy(model.forward(x, train=True), t)
        model.backward(dy)
        opt.step(model.params, {k: g for k, g in model.grads.items() if k != "0.W"})
    for arr in (model.store.flat, *opt.flat_state(model.store).arrays.values()):
        assert len(arr.__dask_graph__()) == 1, "not one computed chunk"


def test_dask_runs_on_the_cpu_only():
    with pytest.raises(DeviceError, match="CPU only"):
        nk.Backend("dask", "gpu:0")
    with pytest.raises(ConfigError, match="CPU only"):
        nk.backend.resolve_backend("dask", "gpu")


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_float64_gradients_on_dask_equal_finite_differences(loss):
    """Dask's float64 gradient checks (the backend matrix's test_gradients runs on the core
    backends and JAX; on Dask each check takes seconds): Dense, tanh, BatchNorm, Dropout."""
    model = nk.Sequential(nk.Dense(3, 5, "tanh"), nk.BatchNorm(5), nk.Dropout(0.3),
                          nk.Dense(5, 2), backend="dask", dtype="float64", seed=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 3))
    t = rng.integers(0, 2, 6) if loss == "cross_entropy" else rng.standard_normal((6, 2))
    assert nk.gradcheck(model, loss, x, t) < 1e-6


def test_batchnorm_statistics_are_computed_in_one_pass_each_step(monkeypatch):
    # persisting running_mean and running_var apart computed the forward up to them twice
    import dask

    model = nk.Sequential(nk.Dense(4, 12, "relu"), nk.BatchNorm(12), nk.Dense(12, 3),
                          nk.BatchNorm(3), backend="dask", dtype="float64", seed=5)
    passes, original = [], dask.persist

    def counted(*arrays, **kw):
        passes.append(len(arrays))
        return original(*arrays, **kw)

    monkeypatch.setattr(dask, "persist", counted)
    out = model.forward(model.backend.asarray(blobs()[0]), train=True)
    assert passes == [2, 2]  # one pass per BatchNorm, both statistics together
    reference = nk.Sequential(*model.layers, backend="numpy", dtype="float64", seed=5)
    np.testing.assert_allclose(np.asarray(out), reference.forward(blobs()[0], train=True),
                               rtol=1e-12)
    for key, value in reference.state.items():
        np.testing.assert_allclose(np.asarray(model.state[key]), value, rtol=1e-12)
