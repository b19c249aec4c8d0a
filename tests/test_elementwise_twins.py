"""The NumPy twin's element-wise steps against the reference, forward and backward: GELU in
place over cache-sized blocks gives the reference's bits (what it cannot block is left to
the reference); LayerNorm, whose sums are matrix-vector products, its numbers up to rounding;
AdamW with a decay selection slice by slice, the same bits as at once."""

from __future__ import annotations

import array_api_compat.numpy as np_compat
import numpy as np
import pytest

from nnkernel.kernels import Kernels
from nnkernel.kernels.numpy import NumpyKernels
from nnkernel.kernels.numpy import dense as numpy_dense
from nnkernel.nn.activations import GELU, ReLU

REFERENCE, TWIN = Kernels(np_compat), NumpyKernels(np_compat)


def values(shape, dtype, seed=0):
    """Normal values at several scales, with zeros, ±inf, NaN, subnormals and huge values."""
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(shape) * rng.choice([0.01, 1.0, 5.0], size=shape)).astype(dtype)
    flat = z.reshape(-1)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(dtype).smallest_subnormal,
               -np.finfo(dtype).tiny / 3, 1e30, -1e30, 12.0, -12.0]
    flat[:len(special)] = np.asarray(special, dtype=dtype)[:flat.size]
    return z


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3,), (7, 5), (2, 3, 11), (3, 100, 257)], ids=str)
def test_gelu_twin_is_the_reference_bit_for_bit(dtype, shape, monkeypatch):
    monkeypatch.setattr(numpy_dense, "ELEMENTWISE_BLOCK", 4096)  # several blocks, a ragged end
    z, da = values(shape, dtype), values(shape, dtype, seed=1)
    before = z.copy(), da.copy()
    g = GELU()
    with np.errstate(all="ignore"):
        a, want_a = TWIN.activation(g, z), REFERENCE.activation(g, z)
        dz, want_dz = TWIN.activation_backward(g, z, a, da), \
            REFERENCE.activation_backward(g, z, a, da)
    for got, want in ((a, want_a), (dz, want_dz)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)  # NaN where the reference has NaN
    np.testing.assert_array_equal(z, before[0])  # inputs untouched
    np.testing.assert_array_equal(da, before[1])


def test_gelu_twin_leaves_strided_inputs_and_other_activations_to_the_reference():
    g = GELU()
    z = np.random.default_rng(3).standard_normal((6, 8)).astype(np.float32).T  # strided
    np.testing.assert_array_equal(TWIN.activation(g, z), REFERENCE.activation(g, z))
    da = np.ones((8, 6), np.float32)
    np.testing.assert_array_equal(TWIN.activation_backward(g, z, None, da),
                                  REFERENCE.activation_backward(g, z, None, da))
    relu = ReLU()
    np.testing.assert_array_equal(TWIN.activation(relu, z), REFERENCE.activation(relu, z))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shapes", [((7, 5), (5,), (0,)), ((3, 6, 16), (16,), (0, 1)),
                                    ((4, 9), (2, 1, 9), (1,)),      # ensemble, shared input
                                    ((2, 4, 9), (2, 1, 9), (1,))],  # ensemble, own inputs
                         ids=str)
def test_layer_norm_twin_matches_the_reference(dtype, shapes):
    x_shape, g_shape, axes = shapes
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(x_shape) * 3 + 1).astype(dtype)
    gamma = (1 + 0.3 * rng.standard_normal(g_shape)).astype(dtype)
    beta = rng.standard_normal(g_shape).astype(dtype)
    y_shape = np.broadcast_shapes(x.shape, gamma.shape)
    dy = rng.standard_normal(y_shape).astype(dtype)
    before = x.copy(), dy.copy()
    tol = {"rtol": 2e-5, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}
    got, want = (k.layer_norm(x, gamma, beta, 1e-5) for k in (TWIN, REFERENCE))
    np.testing.assert_allclose(got[0], want[0], **tol)
    for g, w in zip(TWIN.layer_norm_backward(dy, gamma, got[1], axes),
                    REFERENCE.layer_norm_backward(dy, gamma, want[1], axes), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, **tol)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(dy, before[1])


def test_adam_with_a_decay_selection_in_slices_gives_the_same_numbers():
    """AdamW decaying only some entries (decay="matrices": a per-entry weight-decay array)
    runs slice by slice too, with the same bits as the whole buffer at once."""
    rng = np.random.default_rng(0)
    sliced, whole = NumpyKernels(np_compat), NumpyKernels(np_compat)
    sliced.adam_chunk_bytes = 64  # 16 float32 per slice: 101 entries take 7 slices
    whole.adam_chunk_bytes = 1 << 30
    wd = (0.1 * (rng.random(101) < 0.5)).astype(np.float32)
    start = [rng.standard_normal(101).astype(np.float32) for _ in range(2)] + \
        [np.zeros(101, np.float32)] * 2
    runs = []
    for k in (sliced, whole):
        p, g, m, v = (a.copy() for a in start)
        for step in range(1, 4):
            k.adam(p, g * step, m, v, 0.01, 0.9, 0.99, 1e-8, wd, True, step)
        runs.append((p, m, v))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
    decayed = wd > 0
    assert not np.array_equal(runs[0][0][decayed], start[0][decayed])


def test_layer_norm_twin_on_strided_arrays():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 5)).astype(np.float32).T  # (5, 6), not C-contiguous
    dy = rng.standard_normal((6, 5)).astype(np.float32).T
    gamma, beta = np.full(6, 1.5, np.float32), np.full(6, 0.5, np.float32)
    got, want = (k.layer_norm(x, gamma, beta, 1e-5) for k in (TWIN, REFERENCE))
    np.testing.assert_allclose(got[0], want[0], rtol=2e-5, atol=2e-5)
    for g, w in zip(TWIN.layer_norm_backward(dy, gamma, got[1], (0,)),
                    REFERENCE.layer_norm_backward(dy, gamma, want[1], (0,)), strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
