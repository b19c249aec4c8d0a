"""Finite-difference checks in float64: every layer's and every loss's backward, on every backend.

Layers are checked inside a small model with a linear "probe" loss L = Σ y ⊙ R
(R fixed and random), so every output element carries a different weight and
the check sees the whole Jacobian-vector product. Inputs are random normals,
which keeps ReLU, LeakyReLU and MAE away from their kinks at 0.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
from conftest import host, make

import nnkernel as nk
from nnkernel import losses

EVERY_BACKEND = ("jax",)  # JAX joins this module's backend matrix; Dask's: test_dask.py

TOL = 1e-6  # largest relative error |analytic − numeric| / max(|analytic|, |numeric|)
EPS = 1e-5  # step: truncation error ~ EPS² stays far below TOL, round-off ~ 1e-16/EPS too


def probe(y, t, *, members=False):
    """L = Σ y ⊙ t; dL/dy = t. A loss that weighs every output differently."""
    xp = array_api_compat.array_namespace(y)
    return xp.sum(y * t), t


def check(backend, layers, *, n_in=4, rows=6, train=True, seed=0, ensemble=None, setup=None):
    model = nk.Sequential(*layers, seed=seed, dtype="float64", backend=backend, ensemble=ensemble)
    if setup is not None:
        setup(model)
    rng = np.random.default_rng(seed + 100)
    x = rng.standard_normal((rows, n_in))
    out_shape = model.forward(make(backend, x), train=train).shape
    r = rng.standard_normal(out_shape)
    err = nk.gradcheck(model, probe, x, make(backend, r), train=train, eps=EPS)
    assert err < TOL
    return model


ACTIVATIONS = {
    "identity": nk.Identity, "sigmoid": nk.Sigmoid, "tanh": nk.Tanh, "relu": nk.ReLU,
    "leaky_relu": lambda: nk.LeakyReLU(0.1), "elu": lambda: nk.ELU(0.7), "swish": nk.Swish,
    "silu": nk.SiLU, "gelu": nk.GELU, "softmax": nk.Softmax,
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_dense_with_activation(backend, name):
    act = ACTIVATIONS[name]().activation  # the same activation object a Dense layer takes
    check(backend, [nk.Dense(4, 5, activation=act)])


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_layer(backend, name):
    check(backend, [nk.Dense(4, 5), ACTIVATIONS[name]()])


def test_dropout_in_training_with_its_fixed_mask(backend):
    model = check(backend, [nk.Dense(4, 8, "tanh"), nk.Dropout(0.4), nk.Dense(8, 3)], rows=10)
    # The check is only meaningful if the mask really dropped and rescaled units: the
    # backward of dy = 1 through the dropout alone is the mask.
    drop = nk.Sequential(nk.Dropout(0.4), input_shape=(8,), dtype="float64", backend=backend)
    drop.forward(make(backend, np.ones((10, 8))), train=True)
    mask = host(drop.backward(make(backend, np.ones((10, 8)))))
    assert set(np.unique(mask)) == {0.0, 1.0 / 0.6}
    assert model.layers[1].__dict__ == {"p": 0.4}  # the layer keeps no mask of its own


def _random_affine(key_prefix):
    def setup(model):
        rng = np.random.default_rng(7)
        model.params[f"{key_prefix}.gamma"] = rng.uniform(0.5, 2.0, 5)
        model.params[f"{key_prefix}.beta"] = rng.standard_normal(5)
    return setup


def test_batchnorm_training(backend):
    check(backend, [nk.Dense(4, 5, "tanh"), nk.BatchNorm(5)], rows=7, setup=_random_affine(1))


def test_batchnorm_evaluation_uses_running_statistics(backend):
    def setup(model):
        _random_affine(1)(model)
        rng = np.random.default_rng(8)
        model.state["1.running_mean"] = make(backend, rng.standard_normal(5))
        model.state["1.running_var"] = make(backend, rng.uniform(0.2, 3.0, 5))

    check(backend, [nk.Dense(4, 5, "tanh"), nk.BatchNorm(5)], train=False, setup=setup)


def test_layernorm(backend):
    check(backend, [nk.Dense(4, 5, "tanh"), nk.LayerNorm(5)], setup=_random_affine(1))


def test_deeper_network_with_every_kind_of_layer(backend):
    layers = [nk.Dense(4, 6, "gelu"), nk.BatchNorm(6), nk.Dropout(0.2), nk.Dense(6, 6),
              nk.ELU(), nk.LayerNorm(6), nk.Dense(6, 3, "sigmoid")]
    check(backend, layers, rows=8)


def test_ensemble_of_two_members(backend):
    check(backend, [nk.Dense(4, 5, "tanh"), nk.Dense(5, 3)], ensemble=2)


def test_gradcheck_catches_a_wrong_backward(monkeypatch):
    """A checker that cannot fail proves nothing: break tanh′ and watch it notice."""
    monkeypatch.setattr(nk.activations.Tanh, "backward", lambda self, xp, z, a, da: da * a)
    model = nk.Sequential(nk.Dense(4, 5, "tanh"), dtype="float64")
    x = np.random.default_rng(0).standard_normal((6, 4))
    assert nk.gradcheck(model, probe, x, np.ones((6, 5))) > 1e-2


# -- losses: direct central differences on the network output y -----------------------------
def numeric_grad(f, y, eps=EPS):
    """Central differences of the scalar f at every element of the float64 array y."""
    grad = np.zeros_like(y)
    for i in np.ndindex(y.shape):
        step = np.zeros_like(y)
        step[i] = eps
        grad[i] = (f(y + step) - f(y - step)) / (2 * eps)
    return grad


def _loss_cases():
    rng = np.random.default_rng(3)
    t = rng.standard_normal((5, 3))
    # |y − t| in [0.2, 2] with random signs: away from MAE's kink at 0 and Huber's at ±δ = 0.5
    gap = rng.uniform(0.2, 2.0, (5, 3)) * rng.choice([-1.0, 1.0], (5, 3))
    gap[np.abs(np.abs(gap) - 0.5) < 0.05] += 0.2
    logits = rng.standard_normal((5, 4)) * 3
    probs = rng.dirichlet(np.ones(4), size=5)
    return {
        "mse": (losses.mse, t + gap, t, {}),
        "mae": (losses.mae, t + gap, t, {}),
        "huber": (losses.huber, t + gap, t, {"delta": 0.5}),
        "binary_cross_entropy": (losses.binary_cross_entropy, logits,
                                 rng.uniform(0, 1, (5, 4)), {}),
        "cross_entropy_labels": (losses.cross_entropy, logits, rng.integers(0, 4, 5), {}),
        "cross_entropy_probabilities": (losses.cross_entropy, logits, probs, {}),
    }


LOSS_CASES = _loss_cases()


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_loss_gradient(backend, case):
    fn, y, t, options = LOSS_CASES[case]
    target = make(backend, t)

    def value(y_host):
        return float(fn(make(backend, y_host), target, **options)[0])

    _, dy = fn(make(backend, y), target, **options)
    analytic = host(dy)
    numeric = numeric_grad(value, y)
    np.testing.assert_allclose(analytic, numeric, rtol=TOL, atol=TOL * np.abs(numeric).max())


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_loss_through_a_network(backend, case):
    fn, _, t, options = LOSS_CASES[case]
    width = 3 if fn in (losses.mse, losses.mae, losses.huber) else 4
    model = nk.Sequential(nk.Dense(4, 6, "tanh"), nk.Dense(6, width), dtype="float64",
                          backend=backend)
    x = np.random.default_rng(4).standard_normal((5, 4))

    def loss_fn(y, target, members=False):
        return fn(y, target, members=members, **options)

    assert nk.gradcheck(model, loss_fn, x, make(backend, t), eps=EPS) < TOL
