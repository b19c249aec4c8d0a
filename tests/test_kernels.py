"""Every NumPy twin kernel computes what the generic reference computes, on random inputs.

The reference runs with array-api-compat's NumPy namespace, so both see the
same NumPy arrays; the twin may only be faster (in-place updates, fewer
temporaries), never different beyond rounding.
"""

from __future__ import annotations

import array_api_compat.numpy as np_compat
import numpy as np
import pytest
from conftest import CPU_BACKENDS, host, make
from hypothesis import given, settings
from hypothesis import strategies as st

import nnkernel as nk
from nnkernel.backend import kernels_for
from nnkernel.kernels import Kernels
from nnkernel.kernels.numpy import NumpyKernels

REFERENCE = Kernels(np_compat)
TWIN = NumpyKernels(np_compat)
DTYPES = ["float32", "float64"]
RTOL = {"float32": 2e-5, "float64": 1e-12}


def test_numpy_backend_gets_the_twin_and_strict_the_reference():
    assert type(kernels_for(nk.Backend("numpy"))) is NumpyKernels
    assert type(kernels_for(nk.Backend("array_api_strict"))) is Kernels


def rand(rng, shape, dtype, low=None):
    a = rng.uniform(low, 1.0, shape) if low is not None else rng.standard_normal(shape)
    return a.astype(dtype)


def assert_same(ours, reference, dtype):
    if reference is None:
        assert ours is None
        return
    assert ours.dtype == reference.dtype and ours.shape == reference.shape
    scale = max(float(np.abs(reference).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(ours, reference, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


def unchanged(*arrays):
    """Copies to prove afterwards that a kernel did not write into its inputs."""
    return [a.copy() for a in arrays]


# (x shape, W shape, b shape): plain, leading batch dims, ensemble with shared and own inputs
AFFINE_SHAPES = [
    ((5, 3), (3, 4), (4,)),
    ((1, 7), (7, 2), (2,)),
    ((2, 3, 4), (4, 6), (6,)),
    ((6, 3), (2, 3, 5), (2, 5)),       # ensemble of 2, one input shared by both members
    ((3, 6, 3), (3, 3, 5), (3, 5)),    # ensemble of 3, each member its own input
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", AFFINE_SHAPES, ids=str)
def test_affine(dtype, shapes):
    rng = np.random.default_rng(0)
    x, W, b = (rand(rng, s, dtype) for s in shapes)
    before = unchanged(x, W, b)
    assert_same(TWIN.affine(x, W, b), REFERENCE.affine(x, W, b), dtype)
    for a, a0 in zip(before, (x, W, b), strict=True):
        assert np.array_equal(a, a0)


@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", AFFINE_SHAPES, ids=str)
def test_affine_backward(dtype, shapes, need_dx):
    rng = np.random.default_rng(1)
    x, W, b = (rand(rng, s, dtype) for s in shapes)
    dz = rand(rng, REFERENCE.affine(x, W, b).shape, dtype)
    before = unchanged(x, W, dz)
    ours = TWIN.affine_backward(x, W, dz, need_dx)
    reference = REFERENCE.affine_backward(x, W, dz, need_dx)
    for got, want in zip(ours, reference, strict=True):
        assert_same(got, want, dtype)
    assert (ours[0] is None) is (not need_dx)
    assert ours[1].shape == W.shape and ours[2].shape == b.shape
    for a, a0 in zip(before, (x, W, dz), strict=True):
        assert np.array_equal(a, a0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3), (1, 10), (2, 5, 4)], ids=str)
def test_softmax_cross_entropy(dtype, shape):
    rng = np.random.default_rng(2)
    z = rand(rng, shape, dtype) * 20  # large logits: the max must be subtracted
    target = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(dtype)
    target *= rng.uniform(0.5, 1.5, shape[:-1] + (1,)).astype(dtype)  # Σt need not be 1
    count = int(np.prod(shape[:-1]))
    before = unchanged(z, target)
    ours = TWIN.softmax_cross_entropy(z, target, count)
    reference = REFERENCE.softmax_cross_entropy(z, target, count)
    for got, want in zip(ours, reference, strict=True):
        assert_same(got, want, dtype)
    assert np.array_equal(z, before[0]) and np.array_equal(target, before[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, label_shape, label_dtype", [
    ((4, 3), (4,), "int64"), ((1, 10), (1,), "int32"), ((2, 5, 4), (5,), "uint8"),
    ((2, 5, 4), (2, 5), "int64"), ((3, 7, 1000), (7,), "int64")], ids=str)
def test_softmax_cross_entropy_labels(dtype, shape, label_shape, label_dtype):
    """The twin gathers each row's label; the reference builds the one-hot target."""
    rng = np.random.default_rng(3)
    z = rand(rng, shape, dtype) * 20
    labels = rng.integers(0, shape[-1], label_shape).astype(label_dtype)
    count = int(np.prod(shape[1:-1] if len(shape) == 3 else shape[:-1]))
    before = unchanged(z, labels)
    ours = TWIN.softmax_cross_entropy_labels(z, labels, count)
    reference = REFERENCE.softmax_cross_entropy_labels(z, labels, count)
    one_hot = (labels[..., None] == np.arange(shape[-1])).astype(dtype)
    dense = REFERENCE.softmax_cross_entropy(z, np.broadcast_to(one_hot, shape), count)
    for got, want, want_dense in zip(ours, reference, dense, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert_same(got, want, dtype)
        assert np.array_equal(want, want_dense)
    assert np.array_equal(z, before[0]) and np.array_equal(labels, before[1])


# -- optimizer updates --------------------------------------------------------------------------
PARAM_SHAPES = [(7,), (3, 4), (2, 3, 5)]
# (shape, per_member): per-member hyperparameters need a stacked (E, ...) parameter
MEMBER_CASES = [(shape, False) for shape in PARAM_SHAPES] + [((3, 4), True), ((2, 3, 5), True)]


def _hyper(value, p, per_member):
    """A scalar, or per member of a stacked parameter an (E, 1, ..., 1) array like p's."""
    if not per_member:
        return value
    E = p.shape[0]
    return (value * np.linspace(0.5, 1.5, E)).reshape((E,) + (1,) * (p.ndim - 1)).astype(p.dtype)


def run_update(kernel, name, arrays, options, steps):
    """Several updates from copies of the same start; returns the final arrays."""
    state = [a.copy() if a is not None else None for a in arrays]
    method = getattr(kernel, name)
    for step in range(1, steps + 1):
        g = state[1] * 0.5 + np.asarray(step, state[0].dtype)  # a gradient that changes
        if name == "sgd":
            p, buf = method(state[0], g, state[2], **options, first=step == 1)
            out = (p, buf)
            state = [p, state[1], buf]
        elif name == "adam":
            p, m, v = method(state[0], g, state[2], state[3], **options, step=step)
            out = (p, m, v)
            state = [p, state[1], m, v]
        else:
            p, v, gavg, buf = method(state[0], g, *state[2:], **options)
            out = (p, v, gavg, buf)
            state = [p, state[1], v, gavg, buf]
    return out


def _compare_update(name, dtype, shape, options, n_state):
    rng = np.random.default_rng(3)
    p = rand(rng, shape, dtype)
    arrays = [p, rand(rng, shape, dtype)] + [np.zeros(shape, dtype)] * n_state
    ours = run_update(TWIN, name, arrays, options, steps=4)
    reference = run_update(REFERENCE, name, arrays, options, steps=4)
    for got, want in zip(ours, reference, strict=True):
        assert_same(got, want, dtype)
    # It moved the parameter, so equality is not a tie of two no-ops.
    assert not np.allclose(reference[0], p)


@pytest.mark.parametrize("variant", [
    dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=None),
    dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=None),
    dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.01),
    dict(momentum=0.8, dampening=0.3, nesterov=False, weight_decay=0.1),
], ids=["plain", "momentum", "nesterov_wd", "dampening_wd"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, per_member", MEMBER_CASES, ids=str)
def test_sgd(shape, per_member, dtype, variant):
    p = np.zeros(shape, dtype)
    options = dict(variant, lr=_hyper(0.1, p, per_member))
    _compare_update("sgd", dtype, shape, options, n_state=1)


@pytest.mark.parametrize("variant", [
    dict(weight_decay=None, decoupled=False),
    dict(weight_decay=0.1, decoupled=False),
    dict(weight_decay=0.1, decoupled=True),
], ids=["plain", "l2", "decoupled"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, per_member", MEMBER_CASES, ids=str)
def test_adam(shape, per_member, dtype, variant):
    p = np.zeros(shape, dtype)
    options = dict(variant, lr=_hyper(0.01, p, per_member), beta1=0.9, beta2=0.999, eps=1e-8)
    if per_member and variant["weight_decay"] is not None:
        options["weight_decay"] = _hyper(0.1, p, per_member)
    _compare_update("adam", dtype, shape, options, n_state=2)


@pytest.mark.parametrize("variant", [
    dict(weight_decay=None, momentum=0.0, centered=False),
    dict(weight_decay=0.1, momentum=0.7, centered=False),
    dict(weight_decay=None, momentum=0.5, centered=True),
], ids=["plain", "wd_momentum", "centered_momentum"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", PARAM_SHAPES, ids=str)
def test_rmsprop(shape, dtype, variant):
    options = dict(variant, lr=0.01, alpha=0.9, eps=1e-8)
    _compare_update("rmsprop", dtype, shape, options, n_state=3)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_twin_updates_write_into_the_given_arrays(name):
    """The twin's contract: parameter and state come back as the very same arrays."""
    rng = np.random.default_rng(4)
    p, g, m = (rand(rng, (3, 4), "float64") for _ in range(3))
    v = rand(rng, (3, 4), "float64", low=0.0)
    if name == "sgd":
        out = TWIN.sgd(p, g, m, 0.1, 0.9, 0.0, False, None, first=False)
        assert out[0] is p and out[1] is m
    else:
        out = TWIN.adam(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, None, False, 3)
        assert out[0] is p and out[1] is m and out[2] is v


# -- Dense with leading batch dimensions -------------------------------------------------------
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@settings(max_examples=25, deadline=None)
@given(a=st.integers(1, 4), b=st.integers(1, 4), n_in=st.integers(1, 5),
       n_out=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_dense_with_leading_dimensions_equals_a_loop_of_matrix_products(backend, a, b, n_in,
                                                                        n_out, seed):
    rng = np.random.default_rng(seed)
    model = nk.Sequential(nk.Dense(n_in, n_out), seed=seed, dtype="float64", backend=backend)
    W, bias = host(model.params["0.W"]), host(model.params["0.b"])
    x, dy = rng.standard_normal((a, b, n_in)), rng.standard_normal((a, b, n_out))

    y = host(model.forward(make(backend, x), train=True))
    dx = host(model.backward(make(backend, dy)))

    for i in range(a):
        np.testing.assert_allclose(y[i], x[i] @ W + bias, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx[i], dy[i] @ W.T, rtol=1e-12, atol=1e-12)
    dW = sum(x[i].T @ dy[i] for i in range(a))
    db = sum(dy[i].sum(axis=0) for i in range(a))
    np.testing.assert_allclose(host(model.grads["0.W"]), dW, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(model.grads["0.b"]), db, rtol=1e-12, atol=1e-12)
