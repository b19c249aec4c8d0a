"""The redesign's promises: one owner of memory, stateless layers, optimizers that follow the model.

- Dropout as the last layer runs backward (layers keep nothing between calls);
- a layer object placed twice shares its parameters, and their gradients add;
- an optimizer reused after model.to(...) uses the new backend's kernels and keeps its state;
- optimizer state saved and restored through the flat store resumes bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import host, make, torch_or_skip

import nnkernel as nk


def test_dropout_as_the_last_layer_backpropagates(backend):
    model = nk.Sequential(nk.Dense(3, 4), nk.Dropout(0.5), seed=0, dtype="float64",
                          backend=backend)
    x = make(backend, np.random.default_rng(0).standard_normal((6, 3)))
    y = model.forward(x, train=True)
    dx = model.backward(make(backend, np.ones(tuple(y.shape))))
    assert tuple(dx.shape) == (6, 3)
    err = nk.gradcheck(model, "mse", host(x), np.zeros((6, 4)))
    assert err < 1e-6


def test_one_layer_object_used_twice_shares_its_weights_and_their_gradients_add(backend):
    torch = torch_or_skip()
    shared = nk.Dense(4, 4, "tanh")
    model = nk.Sequential(nk.Dense(3, 4, "tanh"), shared, shared, nk.Dense(4, 2), seed=1,
                          dtype="float64", backend=backend)
    assert list(model.params) == ["0.W", "0.b", "1.W", "1.b", "3.W", "3.b"]
    assert "shares layer 1" in repr(model)
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    _, dy = nk.losses.mse(model.forward(make(backend, x), train=True), make(backend, t))
    dx = model.backward(dy)
    # the same network in torch autograd, with the middle Linear applied twice
    P = {k: torch.tensor(host(v), requires_grad=True) for k, v in model.params.items()}
    xt = torch.tensor(x, requires_grad=True)
    h = torch.tanh(xt @ P["0.W"] + P["0.b"])
    h = torch.tanh(h @ P["1.W"] + P["1.b"])
    h = torch.tanh(h @ P["1.W"] + P["1.b"])
    loss = torch.nn.functional.mse_loss(h @ P["3.W"] + P["3.b"], torch.tensor(t))
    loss.backward()
    for key, p in P.items():
        np.testing.assert_allclose(host(model.grads[key]), p.grad.numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=key)
    np.testing.assert_allclose(host(dx), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    # the sharing survives a checkpoint: config and arrays rebuild the same model
    again = nk.Sequential.from_config(model.config(), backend=backend)
    again.load_arrays(model.arrays())
    np.testing.assert_array_equal(host(again(make(backend, x))), host(model(make(backend, x))))
    assert again.layers[1] is again.layers[2]


def test_a_shared_parameterless_layer_is_just_reused():
    relu = nk.ReLU()
    model = nk.Sequential(nk.Dense(3, 4), relu, nk.Dense(4, 4), relu, nk.Dense(4, 2))
    assert model.num_parameters() == 3 * 4 + 4 + 4 * 4 + 4 + 4 * 2 + 2
    model.backward(np.ones_like(model.forward(np.ones((2, 3), np.float32), train=True)))


def test_an_optimizer_reused_after_model_to_follows_the_model():
    """Adam's moments move with the parameters to the new backend; the kernels are the new
    backend's (the update equals one done on that backend from the same state)."""
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)

    def steps(model, opt, n):
        for _ in range(n):
            xb = model.backend.asarray(x, dtype=model.dtype)
            _, dy = nk.losses.cross_entropy(model.forward(xb, train=True),
                                            model.backend.asarray(t))
            model.backward(dy, input_grad=False)
            opt.step(model.params, model.grads)

    moved = nk.Sequential(nk.Dense(3, 5, "tanh"), nk.Dense(5, 2), seed=4, dtype="float64")
    opt = nk.optim.Adam(lr=0.05)
    steps(moved, opt, 3)
    moved.to(backend="array_api_strict")
    steps(moved, opt, 3)
    assert nk.backend.backend_name_of(next(iter(opt.state.values()))["exp_avg"]) == \
        "array_api_strict"

    stay = nk.Sequential(nk.Dense(3, 5, "tanh"), nk.Dense(5, 2), seed=4, dtype="float64")
    opt2 = nk.optim.Adam(lr=0.05)
    steps(stay, opt2, 6)
    for key in stay.params:
        np.testing.assert_allclose(host(moved.params[key]), stay.params[key], rtol=1e-12)
    with pytest.raises(nk.ConfigError, match="another model"):
        other = nk.Sequential(nk.Dense(3, 6), nk.Dense(6, 2), dtype="float64")
        steps(other, opt, 1)


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "rmsprop_centered", "adam", "adamw"])
def test_optimizer_state_restored_from_the_flat_store_resumes_bit_for_bit(backend, optimizer):
    make_opt = {"sgd_momentum": lambda: nk.optim.SGD(lr=0.05, momentum=0.9),
                "rmsprop_centered": lambda: nk.optim.RMSprop(lr=0.01, centered=True,
                                                            momentum=0.5),
                "adam": lambda: nk.optim.Adam(lr=0.01),
                "adamw": lambda: nk.optim.AdamW(lr=0.01)}[optimizer]
    rng = np.random.default_rng(5)
    batches = [(rng.standard_normal((6, 3)), rng.standard_normal((6, 2))) for _ in range(6)]

    def build():
        return nk.Sequential(nk.Dense(3, 4, "tanh"), nk.BatchNorm(4), nk.Dense(4, 2), seed=6,
                             dtype="float64", backend=backend)

    def train(model, opt, part):
        for xb, tb in part:
            _, dy = nk.losses.mse(model.forward(make(backend, xb), train=True), make(backend, tb))
            model.backward(dy, input_grad=False)
            opt.step(model.params, model.grads)

    straight, opt = build(), make_opt()
    train(straight, opt, batches)
    first, opt1 = build(), make_opt()
    train(first, opt1, batches[:3])
    saved_arrays, saved_state, t = first.arrays(), opt1.state_arrays(), opt1.t
    resumed, opt2 = build(), make_opt()
    resumed.load_arrays(saved_arrays)
    opt2.load_state_arrays(saved_state, resumed.params)
    opt2.t = t
    train(resumed, opt2, batches[3:])
    for key, value in straight.arrays().items():
        np.testing.assert_array_equal(resumed.arrays()[key], value, err_msg=key)


def test_a_partial_optimizer_state_is_refused_before_anything_is_loaded():
    model = nk.Sequential(nk.Dense(3, 2), dtype="float64")
    opt = nk.optim.Adam()
    _, dy = nk.losses.mse(model.forward(np.ones((2, 3)), train=True), np.zeros((2, 2)))
    model.backward(dy)
    opt.step(model.params, model.grads)
    state = opt.state_arrays()
    del state["0.W/exp_avg"]
    fresh = nk.optim.Adam()
    with pytest.raises(nk.ConfigError, match="0.W/exp_avg.*missing"):
        fresh.load_state_arrays(state, model.params)
    assert fresh.state == {}


def test_parameters_and_gradients_are_views_of_one_buffer_each():
    model = nk.Sequential(nk.Dense(3, 4), nk.LayerNorm(4), nk.Dense(4, 2), ensemble=3)
    store = model.store
    assert store.flat.shape == (3, model.num_parameters() // 3)
    for key, view in model.params.items():
        assert np.shares_memory(view, store.flat), key
    model.params["0.b"] = np.full((3, 4), 7.0)
    a, b = store.bounds["0.b"]
    np.testing.assert_array_equal(store.flat[:, a:b], 7.0)
    y = model.forward(np.ones((5, 3), np.float32), train=True)
    model.backward(np.ones(y.shape, np.float32))
    for key, view in model.grads.items():
        assert np.shares_memory(view, model.grads.flat), key
