"""The CuPy twin against the reference kernels, and CuPy staying out of CPU-only runs.

Every `CupyKernels` method is compared with the generic reference `Kernels`
(run by NumPy on the host, or on the same CuPy arrays where the numbers must be
equal to the bit) on random inputs, in float32 and float64, for single models,
leading batch dimensions and ensembles. These run only where CuPy sees a GPU
(python3 bench/gpu_check.py runs them there). The first test runs everywhere: a
NumPy-only program must never import CuPy. Without a GPU, the kernels' CUDA
sources run as host C++ (tests/test_cupy_xent_source.py,
tests/test_cupy_elementwise_source.py) and CuPy's Python paths on a test double
(tests/test_cupy_double.py).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import array_api_compat
import array_api_compat.numpy as np_xp
import numpy as np
import pytest
from conftest import backend_unavailable

import nnkernel as nk
from nnkernel.kernels.reference import Kernels
from nnkernel.nn.activations import get_activation

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = backend_unavailable("cupy")
gpu = pytest.mark.skipif(NO_GPU is not None, reason=str(NO_GPU))
DTYPES = ("float32", "float64")


def test_numpy_backend_never_imports_cupy():
    code = "\n".join([
        "import sys",
        "import numpy as np",
        "import nnkernel as nk",
        "model = nk.Sequential(nk.Dense(4, 8, activation='relu'), nk.Dense(8, 2), seed=0)",
        "X = np.random.default_rng(0).random((32, 4), dtype=np.float32)",
        "y = np.arange(32) % 2",
        "nk.fit(model, X, y, optimizer=nk.optim.Adam(), epochs=1, batch_size=8, progress=False)",
        "loaded = sorted(m for m in sys.modules",
        "                if m.split('.')[0] == 'cupy' or m.startswith('nnkernel.kernels.cupy'))",
        "print('loaded:', loaded)",
    ])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "loaded: []"


# -- helpers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cp():
    if NO_GPU is not None:
        pytest.skip(NO_GPU)
    import cupy

    return cupy


@pytest.fixture(scope="module")
def twin(cp):
    from nnkernel.backend import cupy as cupy_backend
    from nnkernel.kernels import cupy as cupy_twin

    cupy_backend.set_tf32(False)  # compare at full float32 precision whatever CUPY_TF32 says
    return cupy_twin.CupyKernels(array_api_compat.array_namespace(cp.empty(1)))


REF = Kernels(np_xp)


def tol(dtype, scale=1.0):
    """Tolerances for results of different summation orders (GEMMs, reductions)."""
    if dtype == "float32":
        return {"rtol": 2e-5, "atol": 2e-5 * scale}
    return {"rtol": 1e-11, "atol": 1e-11 * scale}


def close(cp, got, want, dtype, scale=1.0):
    got_host = cp.asnumpy(got)
    assert got_host.dtype == np.dtype(dtype)
    assert got_host.shape == np.shape(want)
    np.testing.assert_allclose(got_host, want, **tol(dtype, scale))


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# (x shape, W shape, b shape): one model, extra leading batch axes, shared and per-member
# ensemble inputs.
AFFINE_SHAPES = [
    ((7, 5), (5, 3), (3,)),
    ((64, 33), (33, 17), (17,)),
    ((2, 6, 5), (5, 4), (4,)),
    ((9, 5), (3, 5, 4), (3, 4)),
    ((3, 9, 5), (3, 5, 4), (3, 4)),
]


# -- Dense --------------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", AFFINE_SHAPES, ids=str)
def test_affine_matches_reference(cp, twin, dtype, shapes):
    rng = np.random.default_rng(1)
    x, W, b = (randn(rng, s, dtype) for s in shapes)
    want = REF.affine(x, W, b)
    close(cp, twin.affine(cp.asarray(x), cp.asarray(W), cp.asarray(b)), want, dtype,
          scale=np.sqrt(shapes[1][-2]))


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["identity", "relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("shapes", AFFINE_SHAPES, ids=str)
def test_fused_bias_activation_matches_reference(cp, twin, dtype, activation, shapes):
    assert activation in twin.fused_activations
    rng = np.random.default_rng(2)
    x, W, b = (randn(rng, s, dtype) for s in shapes)
    want = get_activation(activation).forward(np_xp, REF.affine(x, W, b))
    got = twin.affine_act(cp.asarray(x), cp.asarray(W), cp.asarray(b), activation)
    close(cp, got, want, dtype, scale=np.sqrt(shapes[1][-2]))


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("shapes", AFFINE_SHAPES, ids=str)
def test_affine_backward_matches_reference(cp, twin, dtype, need_dx, shapes):
    rng = np.random.default_rng(3)
    x, W, b = (randn(rng, s, dtype) for s in shapes)
    dz = randn(rng, REF.affine(x, W, b).shape, dtype)
    want = REF.affine_backward(x, W, dz, need_dx)
    got = twin.affine_backward(cp.asarray(x), cp.asarray(W), cp.asarray(dz), need_dx)
    rows = int(np.prod(dz.shape[:-1]))
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None
        else:
            close(cp, g, w, dtype, scale=np.sqrt(max(rows, shapes[1][-1])))


# -- softmax + cross-entropy ---------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("z_shape,t_shape", [
    ((16, 10), (16, 10)), ((5, 1), (5, 1)), ((13, 33), (13, 33)), ((4, 100), (4, 100)),
    ((3, 11, 10), (11, 10)),  # ensemble outputs, labels shared by the members
    ((3, 11, 10), (3, 11, 10)), ((0, 10), (0, 10)),
    ((64, 1000), (64, 1000)),  # the widest warp-per-row case
    ((5, 32768), (5, 32768)), ((2, 3, 1024), (3, 1024))])  # a block per row
@pytest.mark.parametrize("target", ["one_hot", "soft", "labels"])
def test_softmax_cross_entropy_matches_reference(cp, twin, dtype, z_shape, t_shape, target):
    """Probability targets and integer labels (of shape t_shape[:-1]) each have a raw kernel,
    a warp per row below 1024 classes, a block per row from there."""
    rng = np.random.default_rng(4)
    z = randn(rng, z_shape, dtype) * 4.0
    count = max(z_shape[-2], 1)
    if target == "labels":
        t = rng.integers(0, t_shape[-1], t_shape[:-1])
        want_losses, want_dz = REF.softmax_cross_entropy_labels(z, t, count)
        losses, dz = twin.softmax_cross_entropy_labels(cp.asarray(z), cp.asarray(t), count)
    else:
        if target == "one_hot":
            t = np.eye(t_shape[-1], dtype=dtype)[rng.integers(0, t_shape[-1], t_shape[:-1])]
        else:  # probabilities that do not sum to 1 exercise the Σt factor of the loss
            t = rng.random(t_shape).astype(dtype)
        want_losses, want_dz = REF.softmax_cross_entropy(z, t, count)
        losses, dz = twin.softmax_cross_entropy(cp.asarray(z), cp.asarray(t), count)
    close(cp, losses, want_losses, dtype, scale=10.0)
    close(cp, dz, want_dz, dtype)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [10, 1000, 32768])
@pytest.mark.parametrize("members", [False, True])
def test_cross_entropy_mean_folded_into_the_kernel(cp, twin, dtype, C, members):
    rng = np.random.default_rng(10)
    z = randn(rng, (3, 40, C) if members else (40, C), dtype) * 3.0
    y = rng.integers(0, C, 40)  # shared by the members
    want_value, want_dz = REF.softmax_cross_entropy_mean(z, y, 40, members, True)
    value, dz = twin.softmax_cross_entropy_mean(cp.asarray(z), cp.asarray(y), 40, members, True)
    close(cp, value, want_value, dtype, scale=10.0)
    close(cp, dz, want_dz, dtype)


@gpu
def test_labels_out_of_range_give_nan_not_a_bad_read(cp, twin):
    z = cp.zeros((3, 10), dtype=cp.float32)
    losses, dz = twin.softmax_cross_entropy_labels(z, cp.asarray([3, -1, 10]), 3)
    got = cp.asnumpy(losses)
    assert np.isfinite(got[0]) and np.isnan(got[1:]).all()
    np.testing.assert_allclose(cp.asnumpy(dz)[1:], 0.1 / 3, rtol=1e-6)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("members", [False, True])
def test_sum_of_squares_matches_reference(cp, twin, dtype, members):
    g = randn(np.random.default_rng(16), (3, 1000), dtype)
    got = twin.sum_of_squares(cp.asarray(g), members)
    close(cp, got, REF.sum_of_squares(g, members), dtype, scale=30.0)


# -- activation backward and dropout ---------------------------------------------------------
@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_activation_backward_is_the_reference_to_the_bit(cp, twin, dtype, name):
    """One fused launch, compiled without FMA contraction: the reference's numbers on CuPy."""
    rng = np.random.default_rng(11)
    g = get_activation(name)
    ref = Kernels(twin.xp)
    z = cp.asarray(randn(rng, (64, 33), dtype) * 3.0)
    a = g.forward(twin.xp, z)
    da = cp.asarray(randn(rng, (64, 33), dtype))
    got = twin.activation_backward(g, None, a, da)
    assert got.dtype == da.dtype
    np.testing.assert_array_equal(cp.asnumpy(got), cp.asnumpy(ref.activation_backward(
        g, z, a, da)))


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_mask_kernel(cp, twin, dtype):
    be = nk.Backend("cupy")
    rng = be.random(3)
    x = cp.asarray(randn(np.random.default_rng(12), (400, 500), dtype))
    y, mask = twin.dropout(x, 0.3, rng)
    m = cp.asnumpy(mask)
    assert set(np.unique(m).tolist()) == {0.0, float(np.array(1 / 0.7, dtype=dtype))}
    assert abs((m != 0).mean() - 0.7) < 5 * np.sqrt(0.21 / m.size)
    np.testing.assert_array_equal(cp.asnumpy(y), cp.asnumpy(x) * m)
    rng.reseed(3)  # the same (seed, draw): the same mask; the next draw: another one
    np.testing.assert_array_equal(cp.asnumpy(twin.dropout(x, 0.3, rng)[1]), m)
    assert (cp.asnumpy(twin.dropout(x, 0.3, rng)[1]) != m).any()


@gpu
def test_dropout_model_on_cupy_is_reproducible():
    X = np.random.default_rng(13).standard_normal((64, 6))
    y = np.arange(64) % 3

    def train():
        model = nk.Sequential(nk.Dense(6, 32, activation="relu"), nk.Dropout(0.3),
                              nk.Dense(32, 3), seed=0, backend="cupy")
        nk.fit(model, X, y, epochs=2, batch_size=16, progress=False)
        return model.arrays()

    first, second = train(), train()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


@gpu
@pytest.mark.parametrize("ensemble", [None, 3])
def test_affine_backward_fills_the_gradient_views(cp, twin, ensemble):
    model = nk.Sequential(nk.Dense(5, 4), backend="cupy", ensemble=ensemble)
    rng = np.random.default_rng(14)
    x = cp.asarray(randn(rng, (9, 5), "float32"))
    dz = cp.asarray(randn(rng, (9, 4) if ensemble is None else (3, 9, 4), "float32"))
    outs = (model.grads["0.W"], model.grads["0.b"])
    _, dW, db = twin.affine_backward(x, model.params["0.W"], dz, False, outs)
    assert dW is outs[0] and db is outs[1]  # written in place (through a copy for E > 1)
    want = REF.affine_backward(cp.asnumpy(x), cp.asnumpy(model.params["0.W"]), cp.asnumpy(dz))
    close(cp, model.grads["0.W"], want[1], "float32", scale=3.0)
    close(cp, model.grads["0.b"], want[2], "float32", scale=3.0)


@gpu
def test_a_model_on_the_second_gpu(cp):
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("one GPU: gpu:1 is tested on the CuPy test double")
    model = nk.Sequential(nk.Dense(6, 8, activation="relu"), nk.Dense(8, 3), backend="cupy",
                          device="gpu:1")
    X = np.random.default_rng(15).standard_normal((64, 6))
    nk.fit(model, X, np.arange(64) % 3, epochs=1, batch_size=16, progress=False)
    assert model.store.flat.device.id == 1 and cp.cuda.Device().id == 0


@gpu
def test_softmax_cross_entropy_is_stable_for_large_logits(cp, twin):
    z = np.array([[1000.0, 0.0, -1000.0], [-5e4, -5e4, -5e4]], dtype=np.float32)
    t = np.eye(3, dtype=np.float32)[[0, 2]]
    losses, dz = twin.softmax_cross_entropy(cp.asarray(z), cp.asarray(t), 2)
    np.testing.assert_allclose(cp.asnumpy(losses), [0.0, np.log(3.0)], rtol=1e-6, atol=1e-6)
    assert np.isfinite(cp.asnumpy(dz)).all()


# -- optimizer updates ----------------------------------------------------------------------
def update_inputs(rng, dtype, per_member):
    """A parameter, its gradient and a learning rate: a float or one per member (E, 1, 1)."""
    shape = (3, 6, 5) if per_member else (6, 5)
    p, g = randn(rng, shape, dtype), randn(rng, shape, dtype)
    lr = np.array([0.1, 0.01, 0.03], dtype=dtype).reshape(3, 1, 1) if per_member else 0.05
    return p, g, lr


def on_device(cp, lr):
    return cp.asarray(lr) if isinstance(lr, np.ndarray) else lr


SGD_CASES = [  # momentum, dampening, nesterov, weight_decay
    (0.0, 0.0, False, None), (0.0, 0.0, False, 0.01), (0.9, 0.0, False, None),
    (0.9, 0.1, False, 0.01), (0.9, 0.0, True, None), (0.9, 0.0, True, 0.01)]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_member", [False, True])
@pytest.mark.parametrize("momentum,dampening,nesterov,wd", SGD_CASES)
def test_sgd_matches_reference(cp, twin, dtype, per_member, momentum, dampening, nesterov, wd):
    rng = np.random.default_rng(5)
    p, g, lr = update_inputs(rng, dtype, per_member)
    g2 = randn(rng, g.shape, dtype)
    # two steps: the first creates the momentum buffer, the second uses it
    p1, buf1 = REF.sgd(p, g, None, lr, momentum, dampening, nesterov, wd, True)
    p2, buf2 = REF.sgd(p1, g2, buf1, lr, momentum, dampening, nesterov, wd, False)
    dp = cp.asarray(p)
    q, dbuf = twin.sgd(dp, cp.asarray(g), None, on_device(cp, lr), momentum, dampening,
                       nesterov, wd, True)
    assert q is dp  # updated in place
    close(cp, q, p1, dtype)
    q, dbuf = twin.sgd(q, cp.asarray(g2), dbuf, on_device(cp, lr), momentum, dampening,
                       nesterov, wd, False)
    close(cp, q, p2, dtype)
    if momentum:
        close(cp, dbuf, buf2, dtype)
    else:
        assert dbuf is None


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_member", [False, True])
@pytest.mark.parametrize("wd,decoupled", [(None, False), (0.01, False), (0.01, True)])
@pytest.mark.parametrize("step", [1, 7])
def test_adam_matches_reference(cp, twin, dtype, per_member, wd, decoupled, step):
    rng = np.random.default_rng(6)
    p, g, lr = update_inputs(rng, dtype, per_member)
    m = randn(rng, p.shape, dtype) * 0.1 if step > 1 else np.zeros_like(p)
    v = rng.random(p.shape).astype(dtype) * 0.01 if step > 1 else np.zeros_like(p)
    want = REF.adam(p, g, m, v, lr, 0.9, 0.999, 1e-8, wd, decoupled, step)
    dp, dm, dv = cp.asarray(p), cp.asarray(m), cp.asarray(v)
    got = twin.adam(dp, cp.asarray(g), dm, dv, on_device(cp, lr), 0.9, 0.999, 1e-8, wd,
                    decoupled, step)
    assert got[0] is dp and got[1] is dm and got[2] is dv  # updated in place
    for a, b in zip(got, want, strict=True):
        close(cp, a, b, dtype)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_member", [False, True])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("wd", [None, 0.01])
def test_rmsprop_matches_reference(cp, twin, dtype, per_member, centered, momentum, wd):
    rng = np.random.default_rng(7)
    p, g, lr = update_inputs(rng, dtype, per_member)
    v = rng.random(p.shape).astype(dtype) * 0.1 + 0.05
    gavg = randn(rng, p.shape, dtype) * 0.01 if centered else None
    buf = randn(rng, p.shape, dtype) * 0.1 if momentum else None
    want = REF.rmsprop(p, g, v, gavg, buf, lr, 0.99, 1e-8, wd, momentum, centered)
    dev = [None if a is None else cp.asarray(a) for a in (p, v, gavg, buf)]
    got = twin.rmsprop(dev[0], cp.asarray(g), dev[1], dev[2], dev[3], on_device(cp, lr), 0.99,
                       1e-8, wd, momentum, centered)
    for a, b, d in zip(got, want, dev, strict=True):
        if b is None:
            assert a is None
        else:
            assert a is d  # updated in place
            close(cp, a, b, dtype)


# -- the twin in use: models on the GPU agree with NumPy ------------------------------------
@gpu
def test_cupy_backend_selects_the_twin(cp):
    from nnkernel.kernels.cupy import CupyKernels

    model = nk.Sequential(nk.Dense(3, 2), backend="cupy")
    assert isinstance(model.k, CupyKernels)


@gpu
@pytest.mark.parametrize("optimizer,lr", [
    (nk.optim.Adam, 1e-2), (nk.optim.AdamW, 1e-2),
    (functools.partial(nk.optim.SGD, momentum=0.9, nesterov=True), 0.1),
    (functools.partial(nk.optim.RMSprop, centered=True, momentum=0.5), 1e-3)],
    ids=["adam", "adamw", "sgd-nesterov", "rmsprop-centered-momentum"])
@pytest.mark.parametrize("ensemble", [None, 3])
def test_training_on_cupy_matches_numpy(optimizer, lr, ensemble):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((96, 6))
    y = rng.integers(0, 4, 96)

    def train(backend):
        model = nk.Sequential(nk.Dense(6, 16, activation="tanh"), nk.Dense(16, 12),
                              nk.ReLU(), nk.Dense(12, 8, activation="sigmoid"), nk.Dense(8, 4),
                              seed=0, dtype="float64", backend=backend, ensemble=ensemble)
        # an ensemble trains each member with its own rate (per-member update kernels)
        opt = optimizer(lr=[lr, lr / 2, lr * 2] if ensemble else lr)
        # no shuffling: CuPy and NumPy draw different permutations from one seed
        nk.fit(model, X, y, optimizer=opt, epochs=2, batch_size=16, shuffle=False,
               progress=False)
        return model.arrays()

    want, got = train("numpy"), train("cupy")
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-10, err_msg=key)


@gpu
def test_tf32_switch(cp):
    from nnkernel.backend import cupy as cupy_backend

    rng = np.random.default_rng(9)
    a, b = randn(rng, (512, 512), "float32"), randn(rng, (512, 512), "float32")
    exact = a.astype(np.float64) @ b.astype(np.float64)

    def rel_error():
        got = cp.asnumpy(cp.matmul(cp.asarray(a), cp.asarray(b)))
        return float(np.abs(got - exact).max() / np.abs(exact).max())

    try:
        on = cupy_backend.set_tf32(True)
        capable = int(cp.cuda.Device().compute_capability) >= 80
        assert on == capable == cupy_backend.tf32_enabled()
        tf32_error = rel_error()
        assert not cupy_backend.set_tf32(False)
        fp32_error = rel_error()
    finally:
        cupy_backend.set_tf32(False)
    assert fp32_error < 1e-5
    if capable:  # a 10-bit mantissa in the multiply: errors near 2^-11, far above float32's
        assert 1e-5 < tf32_error < 1e-2
