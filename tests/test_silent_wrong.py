"""Issue 22's findings in the library API: each once reproduced a wrong answer with no error.

Each test states the finding it guards; each failed on the code before the fix. The file
readers' findings are in tests/test_fuzz_readers.py and the reader tests; the property
suite over the same API is tests/test_properties.py.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from conftest import host, make

import nnkernel as nk
from nnkernel.errors import (
    BackendMismatchError,
    ConfigError,
    DTypeError,
    MissingKeyError,
    NonFiniteError,
    PassError,
    ShapeError,
)

EVERY_BACKEND = True  # JAX and Dask too: every finding on every backend (conftest.py)


def small(backend="numpy", seed=0, **kw):
    return nk.Sequential(nk.Dense(3, 5, "tanh"), nk.BatchNorm(5), nk.Dense(5, 2), seed=seed,
                         dtype="float64", backend=backend, **kw)


def batch(backend, rows=6, seed=1):
    rng = np.random.default_rng(seed)
    return make(backend, rng.standard_normal((rows, 3)), "float64"), \
        make(backend, rng.integers(0, 2, rows))


def grads_of(model, x, t):
    out = model.forward(x, train=True)
    _, dy = nk.losses.cross_entropy(out, t)
    model.backward(dy, input_grad=False)
    return {k: host(v).copy() for k, v in model.grads.items()}


# -- 2: every mapping method goes through the one checked write -------------------------------
@pytest.mark.parametrize("how", ["update", "ior", "setitem"])
def test_params_update_and_ior_reach_the_model(backend, how):
    model = small(backend)
    x, _ = batch(backend)
    new = np.full((5, 2), 0.25)
    if how == "update":
        model.params.update({"2.W": new})
    elif how == "ior":
        params = model.params
        params |= {"2.W": new}
    else:
        model.params["2.W"] = new
    np.testing.assert_array_equal(host(model.params["2.W"]), new)
    np.testing.assert_array_equal(host(model.store.flat)[-12:-2], new.reshape(-1))
    twin = small(backend)
    twin.params["2.W"] = new
    np.testing.assert_array_equal(host(model(x)), host(twin(x)))  # the model uses it


def test_grads_update_reaches_the_flat_buffer(backend):
    model = small(backend)
    x, t = batch(backend)
    grads_of(model, x, t)
    model.grads.update({"0.b": np.ones(5)})
    a, b = model.store.bounds["0.b"]
    np.testing.assert_array_equal(host(model.store.grad)[a:b], np.ones(5))


@pytest.mark.parametrize("method", ["pop", "popitem", "clear", "del"])
def test_parameters_cannot_be_removed_by_any_method(method):
    model = small()
    before = host(model.store.flat).copy()
    with pytest.raises(TypeError, match="cannot be removed"):
        if method == "pop":
            model.params.pop("0.W")
        elif method == "popitem":
            model.params.popitem()
        elif method == "clear":
            model.params.clear()
        else:
            del model.params["0.W"]
    assert list(model.params) == ["0.W", "0.b", "1.gamma", "1.beta", "2.W", "2.b"]
    np.testing.assert_array_equal(model.store.flat, before)


def test_setdefault_and_unknown_keys():
    model = small()
    assert model.params.setdefault("0.b") is model.params["0.b"]
    with pytest.raises(MissingKeyError, match="not a parameter"):
        model.params.setdefault("9.W", np.zeros(3))
    with pytest.raises(MissingKeyError, match="not a state entry"):
        model.state["9.running_mean"] = np.zeros(5)
    assert not hasattr(model.params, "fromkeys")  # not a dict: no dict-only constructors


def test_state_entries_are_checked_when_assigned(backend):
    model = small(backend, dtype=None) if False else nk.Sequential(
        nk.Dense(3, 5), nk.BatchNorm(5), backend=backend)  # float32
    with pytest.raises(ShapeError, match="running_var"):
        model.state["1.running_var"] = np.ones(1)  # broadcast silently before
    with pytest.raises(ShapeError):
        model.state.update({"1.running_mean": np.zeros((5, 1))})
    with pytest.raises(TypeError, match="cannot be removed"):
        model.state.pop("1.running_mean")
    model.state["1.running_var"] = np.full(5, 2.0)  # float64 values take the model's dtype
    assert model.state["1.running_var"].dtype == model.dtype
    x = make(backend, np.ones((4, 3)), "float32")
    assert model(x).dtype == model.dtype  # outputs stayed float32


@pytest.mark.parametrize("value", [np.ones((3, 5)) * (1 + 2j), np.array([["a"] * 5] * 3),
                                   np.empty((3, 5), dtype=object)])
def test_complex_string_and_object_arrays_are_refused(value):
    model = small()
    before = host(model.params["0.W"]).copy()
    with pytest.raises(DTypeError):
        model.params["0.W"] = value
    np.testing.assert_array_equal(model.params["0.W"], before)


def test_a_model_written_through_the_mappings_saves_and_loads(tmp_path):
    model = small()
    model.params.update({"2.b": np.array([0.5, -0.5])})
    model.state.update({"1.running_mean": np.arange(5.0)})
    nk.save(model, tmp_path / "m.npz")
    loaded = nk.load(tmp_path / "m.npz")
    for k, v in model.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[k], v)


# -- 3: an optimizer's state belongs to one model ----------------------------------------------
def test_an_optimizer_reused_on_another_model_is_refused(backend):
    first, second = small(backend, seed=1), small(backend, seed=1)  # same architecture
    x, t = batch(backend)
    opt = nk.optim.Adam(lr=0.05)
    grads_of(first, x, t)
    opt.step(first.params, first.grads)
    grads_of(second, x, t)
    with pytest.raises(ConfigError, match="another model"):
        opt.step(second.params, second.grads)
    opt.reset()  # a fresh start is explicit
    opt.step(second.params, second.grads)
    fresh_model, fresh = small(backend, seed=1), nk.optim.Adam(lr=0.05)
    grads_of(fresh_model, x, t)
    fresh.step(fresh_model.params, fresh_model.grads)
    np.testing.assert_allclose(host(second.store.flat), host(fresh_model.store.flat), rtol=1e-12)


# -- 4: only a training pass is recorded for backward ------------------------------------------
def test_an_evaluation_pass_between_forward_and_backward_changes_nothing(backend):
    model, twin = small(backend), small(backend)
    x, t = batch(backend)
    out = model.forward(x, train=True)
    model(make(backend, np.ones((6, 3)), "float64"))  # same batch size: replaced it before
    model.predict(make(backend, np.ones((6, 3)), "float64"))
    model.forward(make(backend, np.ones((6, 3)), "float64"), train=False)
    _, dy = nk.losses.cross_entropy(out, t)
    model.backward(dy, input_grad=False)
    want = grads_of(twin, x, t)
    for k, g in want.items():
        np.testing.assert_allclose(host(model.grads[k]), g, rtol=1e-12, atol=1e-15)


def test_backward_without_a_recorded_pass_says_so():
    model = small()
    dy = np.ones((6, 2))
    with pytest.raises(PassError, match="recorded pass"):
        model.backward(dy)
    x, t = batch("numpy")
    model.forward(x, train=True)
    model.to(backend="array_api_strict")
    with pytest.raises(PassError, match="moved"):
        model.backward(model.backend.asarray(dy))


# -- 5: the architecture is fixed once built ---------------------------------------------------
def test_layers_cannot_be_changed_after_building():
    model = small()
    with pytest.raises(TypeError):
        model.layers[1] = nk.Tanh()
    with pytest.raises(AttributeError):
        model.layers.append(nk.Tanh())
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "BatchNorm", "Dense"]


# -- 6: a copy of the parameters is not the model's --------------------------------------------
def test_stepping_a_copy_of_the_parameters_is_refused_on_every_backend(backend):
    model = small(backend)
    x, t = batch(backend)
    grads_of(model, x, t)
    opt = nk.optim.SGD(lr=0.1)
    before = host(model.store.flat).copy()
    with pytest.raises(ConfigError, match="model.params itself"):
        opt.step(dict(model.params), model.grads)
    assert opt.t == 0
    np.testing.assert_array_equal(host(model.store.flat), before)


def test_a_plain_dict_is_updated_by_rebinding_on_every_backend(backend):
    model = small(backend)
    x, t = batch(backend)
    grads = grads_of(model, x, t)
    params = {k: v for k, v in model.params.items()}
    before = host(model.store.flat).copy()
    nk.optim.SGD(lr=0.1).step(params, {k: make(backend, g, "float64") for k, g in grads.items()})
    np.testing.assert_array_equal(host(model.store.flat), before)  # the model is not written
    np.testing.assert_allclose(host(params["0.b"]), before[15:20] - 0.1 * grads["0.b"])
    with pytest.raises(MissingKeyError, match="no parameter"):
        nk.optim.SGD(lr=0.1).step({"0.W": params["0.W"]}, {"0.b": params["0.b"]})


# -- 7: an ensemble scored against one-hot targets ---------------------------------------------
@pytest.mark.parametrize("members", [1, 3, 6])
def test_ensemble_accuracy_with_one_hot_targets(members):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    model = nk.Sequential(nk.Dense(3, 2), ensemble=members, dtype="float64", seed=3)
    _, acc_labels = nk.evaluate(model, X, y)
    _, acc_onehot = nk.evaluate(model, X, np.eye(2)[y])
    assert len(acc_onehot) == members
    np.testing.assert_allclose(acc_onehot, acc_labels)
    hist = nk.fit(model, X, np.eye(2)[y], epochs=1, batch_size=6, progress=False,
                  optimizer=nk.optim.SGD(lr=0.0 + 1e-9))
    assert len(hist["accuracy"][0]) == members


# -- 8: schedules are checked like the rates they scale ----------------------------------------
@pytest.mark.parametrize("factor", [-1.0, float("nan"), float("inf"), "fast"])
def test_a_bad_schedule_factor_is_refused_before_any_update(factor):
    model = small()
    x, t = batch("numpy")
    grads_of(model, x, t)
    before = model.store.flat.copy()
    opt = nk.optim.SGD(lr=0.1, schedule=lambda step: factor)
    with pytest.raises(ConfigError, match="schedule"):
        opt.step(model.params, model.grads)
    np.testing.assert_array_equal(model.store.flat, before)


# -- 9 and 12: targets and weights -----------------------------------------------------------
@pytest.mark.parametrize("target, error", [
    ([[1.5, -0.5], [0.5, 0.5]], ShapeError),     # negative
    ([[0.7, 0.7], [0.5, 0.5]], ShapeError),      # unnormalised
    ([[np.nan, 1.0], [0.5, 0.5]], NonFiniteError),
])
def test_bad_probability_targets_are_refused(backend, target, error):
    y = make(backend, np.zeros((2, 2)), "float64")
    with pytest.raises(error):
        nk.losses.cross_entropy(y, make(backend, np.array(target), "float64"), num_check=True)


def test_fit_refuses_nan_one_hot_targets_before_any_step():
    model = small()
    before = model.store.flat.copy()
    y = np.eye(2)[np.arange(6) % 2]
    y[2, 0] = np.nan
    with pytest.raises(NonFiniteError, match="NaN"):
        nk.fit(model, np.ones((6, 3)), y, epochs=1, progress=False)
    np.testing.assert_array_equal(model.store.flat, before)


def test_all_zero_sample_weight_is_refused():
    with pytest.raises(ConfigError, match="0 for every sample"):
        nk.fit(small(), np.ones((6, 3)), np.arange(6) % 2, sample_weight=np.zeros(6),
               epochs=1, progress=False)


def test_values_beyond_float32_are_named_not_called_nan():
    X = np.ones((6, 3))
    X[0, 0] = 1e39
    with pytest.raises(ConfigError, match="beyond float32"):
        nk.fit(nk.Sequential(nk.Dense(3, 2)), X, np.arange(6) % 2, epochs=1, progress=False)


# -- 14: an optimizer copies and pickles after it has stepped ----------------------------------
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_an_optimizer_copies_after_a_step_and_continues_the_same(how):
    model = small()
    x, t = batch("numpy")
    opt = nk.optim.Adam(lr=0.05)
    grads_of(model, x, t)
    opt.step(model.params, model.grads)
    twin_model = copy.deepcopy(model)
    twin_opt = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    assert twin_opt.t == 1
    for m, o in ((model, opt), (twin_model, twin_opt)):
        grads_of(m, x, t)
        o.step(m.params, m.grads)
    np.testing.assert_array_equal(model.store.flat, twin_model.store.flat)


# -- 17: targets of another library are taken as forward takes inputs --------------------------
@pytest.mark.parametrize("out_backend", ["array_api_strict", "torch"])
def test_numpy_targets_and_weights_with_other_outputs(out_backend):
    rng = np.random.default_rng(0)
    z, labels, w = rng.standard_normal((4, 3)), rng.integers(0, 3, 4), rng.random(4)
    want = nk.losses.cross_entropy(z, labels, weights=w)
    got = nk.losses.cross_entropy(make(out_backend, z, "float64"), labels, weights=w)
    assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-12)
    got_mse = nk.losses.mse(make(out_backend, z, "float64"), z * 0.5)
    assert float(got_mse[0]) == pytest.approx(float(np.mean((0.5 * z) ** 2)), rel=1e-12)


def test_torch_labels_with_numpy_outputs_and_another_device_refused(device1):
    torch = pytest.importorskip("torch")
    z = np.random.default_rng(1).standard_normal((4, 3))
    labels = np.array([0, 2, 1, 1])
    got = nk.losses.cross_entropy(z, torch.tensor(labels))
    assert float(got[0]) == pytest.approx(float(nk.losses.cross_entropy(z, labels)[0]))
    import array_api_strict as strict

    elsewhere = strict.asarray(labels, device=device1)
    with pytest.raises(BackendMismatchError, match="target"):
        nk.losses.cross_entropy(make("array_api_strict", z, "float64"), elsewhere)
