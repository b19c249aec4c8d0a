"""Sequential: its params dict, input checks, config round trips, initialisation, learning XOR."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import host, make

import nnkernel as nk
from nnkernel.errors import BackendMismatchError, ConfigError, DTypeError, ShapeError
from nnkernel.nn.init import INITIALIZERS


def small(backend="numpy", **kw):
    return nk.Sequential(nk.Dense(3, 5, "tanh"), nk.BatchNorm(5), nk.Dropout(0.2),
                         nk.Dense(5, 4), nk.LayerNorm(4), nk.Dense(4, 2), backend=backend, **kw)


# -- the params dict ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_assigning_host_data_converts_to_backend_dtype_and_device(backend, dtype):
    model = small(backend, dtype=dtype)
    old = model.params["0.W"]
    values = np.arange(15.0).reshape(3, 5) / 7
    for given in (values.tolist(), values, values.astype(np.float16)):
        model.params["0.W"] = given
        new = model.params["0.W"]
        assert type(new) is type(old) and new.dtype == old.dtype and new.shape == old.shape
        assert nk.backend.backend_name_of(new) == backend
        np.testing.assert_allclose(host(new), values, rtol=1e-3)
    # The forward pass reads the assigned entry: with x = 0 a Dense layer outputs tanh(b).
    single = nk.Sequential(nk.Dense(3, 5, "tanh"), backend=backend, dtype=dtype)
    single.params["0.b"] = [0.5, -1.0, 0.0, 2.0, 0.25]
    out = single.forward(make(backend, np.zeros((1, 3)), dtype))
    np.testing.assert_allclose(host(out)[0], np.tanh([0.5, -1.0, 0.0, 2.0, 0.25]), rtol=1e-6)


def test_assigning_on_fake_device_stays_on_that_device(device1):
    model = small("array_api_strict", device="device1")
    model.params["3.W"] = np.ones((5, 4))
    assert model.params["3.W"].device == device1


def test_assigning_an_array_from_another_device_is_refused(device1):
    import array_api_strict as strict

    model = small("array_api_strict")
    with pytest.raises(BackendMismatchError, match="device1"):
        model.params["0.b"] = strict.zeros(5, dtype=strict.float32, device=device1)


def test_assigning_a_wrong_shape_names_both_shapes():
    model = small()
    with pytest.raises(ShapeError) as err:
        model.params["0.W"] = np.zeros((5, 3))
    assert "(3, 5)" in str(err.value) and "(5, 3)" in str(err.value)


def test_unknown_parameter_key_is_a_key_error():
    model = small()
    with pytest.raises(KeyError, match="9.W"):
        model.params["9.W"] = np.zeros((3, 5))
    with pytest.raises(KeyError):
        model.params["nope"]


def test_grads_have_the_keys_order_and_shapes_of_params(backend):
    model = small(backend, dtype="float64")
    x = make(backend, np.random.default_rng(0).standard_normal((6, 3)))
    y = model.forward(x, train=True)
    dx = model.backward(make(backend, np.ones(tuple(y.shape))))
    assert list(model.grads) == list(model.params)
    for key, g in model.grads.items():
        assert tuple(g.shape) == tuple(model.params[key].shape)
        assert nk.backend.backend_name_of(g) == backend
    assert tuple(dx.shape) == (6, 3)
    assert model.backward(make(backend, np.ones(tuple(y.shape))), input_grad=False) is None


@pytest.mark.parametrize("ensemble", [None, 3])
def test_gradients_live_in_one_flat_buffer_equal_to_the_reference(ensemble):
    """Every backend's gradients are views of one buffer in parameter order (member-major for
    an ensemble); NumPy's Dense layers write into it, and the values match array-api-strict's,
    whose store rebinds instead."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3))
    dy = rng.standard_normal((6, 2) if ensemble is None else (ensemble, 6, 2))
    grads = {}
    for backend in ("numpy", "array_api_strict"):
        model = nk.Sequential(nk.Dense(3, 5, "tanh"), nk.BatchNorm(5), nk.Dense(5, 4),
                              nk.LayerNorm(4), nk.Dense(4, 2), backend=backend,
                              dtype="float64", ensemble=ensemble)
        model.forward(make(backend, x, "float64"), train=True)
        model.backward(make(backend, dy, "float64"), input_grad=False)
        grads[backend] = model.grads
    for backend, g in grads.items():
        flat = host(g.flat)
        lead = () if ensemble is None else (ensemble,)
        assert flat.shape == lead + (sum(v.size for v in g.values()) // (ensemble or 1),)
        start = 0
        for v in g.values():  # parameter order, back to back
            n = v.size // (ensemble or 1)
            np.testing.assert_array_equal(flat[..., start:start + n].reshape(v.shape), host(v))
            if backend == "numpy":
                assert np.shares_memory(v, g.flat)
            start += n
    for key, v in grads["numpy"].items():
        np.testing.assert_allclose(v, host(grads["array_api_strict"][key]), rtol=1e-12,
                                   atol=1e-12)


def test_the_next_backward_reuses_the_gradient_buffer():
    model = small("numpy", dtype="float64")
    x = np.random.default_rng(0).standard_normal((6, 3))
    model.forward(x, train=True)
    model.backward(np.ones((6, 2)))
    first, kept = model.grads, {k: v.copy() for k, v in model.grads.items()}
    model.forward(2 * x, train=True)
    model.backward(np.ones((6, 2)))
    assert first["0.W"] is model.grads["0.W"]  # the same view, overwritten, as torch's .grad
    assert not np.array_equal(kept["0.W"], model.grads["0.W"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_an_update_from_the_flat_buffer_equals_one_from_separate_arrays(optimizer):
    models = [small("numpy", dtype="float64", seed=4) for _ in range(2)]
    opts = [nk.optim.get_optimizer(optimizer, lr=0.01) for _ in models]
    rng = np.random.default_rng(5)
    for _ in range(3):
        x = rng.standard_normal((8, 3))
        for i, (model, opt) in enumerate(zip(models, opts, strict=True)):
            model.reseed(0)
            model.forward(x, train=True)
            model.backward(np.ones((8, 2)), input_grad=False)
            grads = model.grads if i == 0 else {k: v.copy() for k, v in model.grads.items()}
            opt.step(model.params, grads)
    assert models[0].grads.flat is not None
    for key in models[0].params:
        np.testing.assert_array_equal(models[0].params[key], models[1].params[key])


def test_a_replaced_gradient_entry_is_the_one_the_optimizer_uses():
    """Assigning an entry of model.grads writes it into the flat buffer the optimizer reads."""
    models = [small("numpy", dtype="float64", seed=4) for _ in range(2)]
    x = np.random.default_rng(6).standard_normal((8, 3))
    for i, model in enumerate(models):
        opt = nk.optim.SGD(lr=0.1)
        for _ in range(2):
            model.reseed(0)
            model.forward(x, train=True)
            model.backward(np.ones((8, 2)), input_grad=False)
            grads = model.grads if i == 0 else dict(model.grads)
            halved = grads["0.W"] * 0.5
            grads["0.W"] = halved
            if i == 0:
                np.testing.assert_array_equal(grads.flat[:15].reshape(3, 5), halved)
            opt.step(model.params, grads)
    for key in models[0].params:
        np.testing.assert_array_equal(models[0].params[key], models[1].params[key])


def test_a_gradient_left_out_freezes_its_parameter(backend):
    model = small(backend, dtype="float64", seed=4)
    x = make(backend, np.random.default_rng(6).standard_normal((8, 3)))
    before = {k: host(v).copy() for k, v in model.params.items()}
    model.forward(x, train=True)
    model.backward(make(backend, np.ones((8, 2))), input_grad=False)
    grads = model.grads
    del grads["3.W"]
    nk.optim.Adam(lr=0.1).step(model.params, grads)
    for key, value in model.params.items():
        changed = not np.array_equal(host(value), before[key])
        assert changed == (key != "3.W"), key


def test_a_deep_copy_trains_like_the_original(backend):
    """Same arrays, own gradient buffer (an optimizer never reads a stale one), same steps."""
    import copy

    original = small(backend, dtype="float64", seed=2)
    x = make(backend, np.random.default_rng(0).standard_normal((6, 3)), "float64")
    dy = make(backend, np.ones((6, 2)), "float64")
    original.forward(x, train=True)
    original.backward(dy)
    twin = copy.deepcopy(original)
    assert twin.backend.name == backend and twin.dtype == original.dtype
    for model in (original, twin):
        opt = nk.optim.Adam(lr=0.05)
        for _ in range(3):
            model.reseed(0)
            model.forward(x, train=True)
            model.backward(dy, input_grad=False)
            opt.step(model.params, model.grads)
    if backend == "numpy":
        assert not np.shares_memory(original.grads.flat, twin.grads.flat)
    for key in original.params:
        np.testing.assert_array_equal(host(original.params[key]), host(twin.params[key]))


# -- input checks ---------------------------------------------------------------------------------
def test_input_width_mismatch_is_a_shape_error(backend):
    model = small(backend)
    with pytest.raises(ShapeError, match="expects"):
        model.forward(make(backend, np.zeros((2, 4)), "float32"))


def test_integer_input_is_a_dtype_error(backend):
    model = small(backend)
    with pytest.raises(DTypeError, match="int"):
        model.forward(make(backend, np.zeros((2, 3), dtype=np.int64)))


def test_dy_of_the_wrong_shape_is_a_shape_error(backend):
    model = small(backend)
    model.forward(make(backend, np.zeros((4, 3)), "float32"), train=True)
    with pytest.raises(ShapeError, match="dy"):
        model.backward(make(backend, np.zeros((4, 3)), "float32"))


def test_backward_before_forward_is_refused():
    with pytest.raises(RuntimeError, match="forward"):
        small().backward(np.zeros((1, 2), np.float32))


def test_layers_that_do_not_fit_together_are_a_shape_error():
    with pytest.raises(ShapeError, match="layer 1"):
        nk.Sequential(nk.Dense(3, 4), nk.Dense(5, 2))
    with pytest.raises(ShapeError, match="BatchNorm"):
        nk.Sequential(nk.Dense(3, 4), nk.BatchNorm(3))


# -- config round trip, predict, repr -------------------------------------------------------------
def test_config_round_trip_rebuilds_the_same_model(backend):
    model = nk.Sequential(nk.Dense(3, 6, "leaky_relu", init="he_uniform"), nk.BatchNorm(6, eps=1e-3,
                          momentum=0.2), nk.Dropout(0.3), nk.Dense(6, 6), nk.ELU(alpha=0.5),
                          nk.LayerNorm(6), nk.Dense(6, 4, "gelu"), nk.Softmax(), seed=11,
                          dtype="float64", backend=backend)
    cfg = json.loads(json.dumps(model.config()))  # it must survive JSON
    again = nk.Sequential.from_config(cfg, backend=backend)
    assert again.config() == model.config()
    assert repr(again) == repr(model)
    x = make(backend, np.random.default_rng(1).standard_normal((5, 3)))
    np.testing.assert_array_equal(host(again.forward(x)), host(model.forward(x)))
    model.reseed(5)
    again.reseed(5)
    np.testing.assert_array_equal(host(again.forward(x, train=True)),
                                  host(model.forward(x, train=True)))


def test_predict_in_batches_equals_one_forward(backend):
    model = small(backend, dtype="float64")
    x = make(backend, np.random.default_rng(2).standard_normal((23, 3)))
    model.forward(x, train=True)  # non-trivial BatchNorm running statistics
    whole = host(model.forward(x))
    for batch_size in (1, 5, 22, 23, 100):
        np.testing.assert_allclose(host(model.predict(x, batch_size=batch_size)), whole,
                                   rtol=1e-12, atol=1e-12)


def test_repr_lists_layers_and_counts_parameters():
    model = nk.Sequential(nk.Dense(100, 20, "relu"), nk.LayerNorm(20), nk.Dense(20, 3))
    n = 100 * 20 + 20 + 2 * 20 + 20 * 3 + 3
    assert model.num_parameters() == n
    text = repr(model)
    assert f"{n:,} parameters" in text and "2,123 parameters" in text
    assert "Dense(n_in=100, n_out=20, activation='relu'" in text and "LayerNorm" in text


# -- initialisation -------------------------------------------------------------------------------
FAN_IN, FAN_OUT = 400, 100


def _weights(*layers):
    model = nk.Sequential(*layers, seed=0, dtype="float64")
    return host(model.params["0.W"]), host(model.params["0.b"])


@pytest.mark.parametrize("layers, expected", [
    ([nk.Dense(FAN_IN, FAN_OUT, "relu")], "he"),
    ([nk.Dense(FAN_IN, FAN_OUT), nk.ReLU()], "he"),  # an activation layer after Dense counts
    ([nk.Dense(FAN_IN, FAN_OUT, "gelu")], "he"),
    ([nk.Dense(FAN_IN, FAN_OUT, "tanh")], "glorot"),
    ([nk.Dense(FAN_IN, FAN_OUT, "sigmoid")], "glorot"),
    ([nk.Dense(FAN_IN, FAN_OUT)], "glorot"),
    ([nk.Dense(FAN_IN, FAN_OUT), nk.Tanh()], "glorot"),
], ids=["relu", "dense_then_ReLU", "gelu", "tanh", "sigmoid", "linear", "dense_then_Tanh"])
def test_default_init_is_he_before_relu_and_glorot_otherwise(layers, expected):
    W, b = _weights(*layers)
    he, glorot = math.sqrt(2 / FAN_IN), math.sqrt(2 / (FAN_IN + FAN_OUT))  # 11% apart
    assert W.std() == pytest.approx(he if expected == "he" else glorot, rel=0.03)
    assert not np.any(b)


# name -> (standard deviation, uniform bound or None for a normal law)
INIT_STATS = {
    "he_normal": (math.sqrt(2 / FAN_IN), None),
    "he_uniform": (math.sqrt(2 / FAN_IN), math.sqrt(6 / FAN_IN)),
    "glorot_normal": (math.sqrt(2 / (FAN_IN + FAN_OUT)), None),
    "glorot_uniform": (math.sqrt(2 / (FAN_IN + FAN_OUT)), math.sqrt(6 / (FAN_IN + FAN_OUT))),
    "xavier_normal": (math.sqrt(2 / (FAN_IN + FAN_OUT)), None),
    "xavier_uniform": (math.sqrt(2 / (FAN_IN + FAN_OUT)), math.sqrt(6 / (FAN_IN + FAN_OUT))),
    "lecun_normal": (math.sqrt(1 / FAN_IN), None),
    "zeros": (0.0, 0.0),
}


def test_every_initializer_is_covered():
    assert set(INIT_STATS) == set(INITIALIZERS)


@pytest.mark.parametrize("name", list(INIT_STATS))
def test_initializer_statistics(name):
    std, bound = INIT_STATS[name]
    W, _ = _weights(nk.Dense(FAN_IN, FAN_OUT, "relu", init=name))
    if std == 0.0:
        assert not np.any(W)
        return
    n = W.size
    assert abs(W.mean()) < 5 * std / math.sqrt(n)
    assert W.std() == pytest.approx(std, rel=0.02)
    kurtosis = np.mean((W - W.mean()) ** 4) / W.var() ** 2
    if bound is None:
        assert kurtosis == pytest.approx(3.0, abs=0.15)  # normal
    else:
        assert kurtosis == pytest.approx(1.8, abs=0.1)  # uniform
        assert np.abs(W).max() <= bound and np.abs(W).max() > 0.99 * bound


def test_unknown_initializer_is_a_config_error():
    with pytest.raises(ConfigError, match="he_normal"):
        nk.Sequential(nk.Dense(2, 2, init="orthogonal"))


def test_custom_initializer_callable():
    def ones(shape, fan_in, fan_out, rng):
        return np.ones(shape)

    W, _ = _weights(nk.Dense(3, 2, init=ones))
    np.testing.assert_array_equal(W, np.ones((3, 2)))


# -- learning -------------------------------------------------------------------------------------
XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
XOR_Y = np.array([[0], [1], [1], [0]], dtype=np.float32)


@pytest.mark.parametrize("loss, optimizer, threshold", [
    ("binary_cross_entropy", lambda: nk.optim.Adam(lr=0.05), 0.0),  # logits: decide at 0
    ("mse", lambda: nk.optim.SGD(lr=0.2, momentum=0.9), 0.5),
], ids=["bce_adam", "mse_sgd"])
def test_learns_xor(backend, loss, optimizer, threshold):
    model = nk.Sequential(nk.Dense(2, 8, "tanh"), nk.Dense(8, 1), seed=0, backend=backend)
    history = nk.fit(model, XOR_X, XOR_Y, loss=loss, optimizer=optimizer(), epochs=300,
                     batch_size=4, progress=False)
    assert history["loss"][-1] < 0.05 * history["loss"][0]
    predictions = host(model.predict(make(backend, XOR_X, "float32"))) > threshold
    np.testing.assert_array_equal(predictions, XOR_Y > 0.5)
