"""The conv and pooling kernels against torch.nn.functional and torch autograd, float64.

Three kernel sets run every case: the NumPy twin, the generic reference on
array-api-strict and the reference on torch tensors (array-api-compat's torch
namespace). Values, dW, db and dx must match torch to rtol 1e-10; the twin
must also match the reference, and col2im must be im2col's adjoint.
"""

from __future__ import annotations

import array_api_compat.numpy as np_compat
import numpy as np
import pytest
from conftest import host, torch_or_skip

from nnkernel.kernels.numpy.conv import NumpyConvKernels
from nnkernel.kernels.reference.conv import ConvKernels

torch = torch_or_skip()
F = torch.nn.functional
strict = pytest.importorskip("array_api_strict")
import array_api_compat.torch as torch_compat  # noqa: E402

RTOL = 1e-10


class Reference(ConvKernels):
    def __init__(self, xp):
        self.xp = xp  # the namespace, which the class a mixin joins normally provides


class Twin(NumpyConvKernels, Reference):
    pass


KERNELS = {
    "numpy_twin": (Twin(np_compat), lambda a: a),
    "strict_reference": (Reference(strict), strict.asarray),
    "torch_reference": (Reference(torch_compat), torch.asarray),
}
REFERENCE_NP = Reference(np_compat)


@pytest.fixture(params=list(KERNELS))
def kernels(request):
    return KERNELS[request.param]


def close(ours, expected):
    ours = host(ours)
    expected = np.asarray(expected)
    assert ours.shape == expected.shape
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=RTOL * scale)


def torch_conv(x, W, b, dz, stride, padding):
    """z, dx, dW, db by torch autograd, for one member."""
    x, W, b = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    z = F.conv2d(x, W, b, stride=stride, padding=padding)
    (z * torch.tensor(dz)).sum().backward()
    return [t.detach().numpy() for t in (z, x.grad, W.grad, b.grad)]


# (x shape, W shape, stride, padding): odd/even and non-square images, C_in > 1,
# kernels 1×1, 3×3, 5×5 and non-square, strides above the kernel size
CONV_CASES = [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1),
    ((2, 3, 8, 9), (4, 3, 3, 3), 2, 0),
    ((2, 3, 8, 9), (4, 3, 3, 3), 2, 1),
    ((1, 2, 9, 7), (3, 2, 5, 5), 2, 1),
    ((2, 2, 5, 6), (2, 2, 5, 5), 1, 2),
    ((2, 4, 5, 6), (3, 4, 1, 1), 1, 0),
    ((2, 4, 5, 6), (3, 4, 1, 1), 2, 1),
    ((3, 1, 6, 7), (2, 1, 2, 3), 2, 1),
    ((1, 2, 7, 7), (2, 2, 3, 3), 3, 1),
]


def conv_data(x_shape, W_shape, stride, padding, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    W = rng.standard_normal(W_shape)
    b = rng.standard_normal(W_shape[:-3])
    z_shape = torch.nn.functional.conv2d(
        torch.zeros(x_shape[-4:], dtype=torch.float64),
        torch.zeros(W_shape[-4:], dtype=torch.float64), stride=stride, padding=padding).shape
    dz = rng.standard_normal((*W_shape[:-4], *z_shape))
    return x, W, b, dz


@pytest.mark.parametrize("x_shape, W_shape, stride, padding", CONV_CASES)
def test_conv2d_matches_torch(kernels, x_shape, W_shape, stride, padding):
    k, arr = kernels
    x, W, b, dz = conv_data(x_shape, W_shape, stride, padding)
    z_t, dx_t, dW_t, db_t = torch_conv(x, W, b, dz, stride, padding)
    z, cols = k.conv2d(arr(x), arr(W), arr(b), stride, padding)
    close(z, z_t)
    dx, dW, db = k.conv2d_backward(x.shape, cols, arr(W), arr(dz), stride, padding, True)
    close(dx, dx_t)
    close(dW, dW_t)
    close(db, db_t)
    none, dW2, _ = k.conv2d_backward(x.shape, cols, arr(W), arr(dz), stride, padding, False)
    assert none is None
    close(dW2, dW_t)


def test_conv2d_without_bias(kernels):
    k, arr = kernels
    x, W, b, dz = conv_data((2, 3, 6, 5), (2, 3, 3, 3), 1, 1)
    z_t = F.conv2d(torch.tensor(x), torch.tensor(W), padding=1).numpy()
    close(k.conv2d(arr(x), arr(W), None, 1, 1)[0], z_t)


@pytest.mark.parametrize("shared", [True, False], ids=["shared_input", "own_input"])
def test_conv2d_ensemble_matches_torch_per_member(kernels, shared):
    k, arr = kernels
    E, N, stride, padding = 3, 2, 2, 1
    x_shape = (N, 2, 7, 6) if shared else (E, N, 2, 7, 6)
    x, W, b, dz = conv_data(x_shape, (E, 4, 2, 3, 3), stride, padding, seed=1)
    z, cols = k.conv2d(arr(x), arr(W), arr(b), stride, padding)
    dx, dW, db = k.conv2d_backward(x.shape, cols, arr(W), arr(dz), stride, padding, True)
    assert tuple(z.shape) == dz.shape and tuple(dx.shape) == x.shape
    per_member = [torch_conv(x if shared else x[e], W[e], b[e], dz[e], stride, padding)
                  for e in range(E)]
    z_t, dx_t, dW_t, db_t = (np.stack(t) for t in zip(*per_member, strict=True))
    close(z, z_t)
    close(dW, dW_t)
    close(db, db_t)
    close(dx, dx_t.sum(axis=0) if shared else dx_t)  # a shared input: Σ over members
    if shared:  # asking with the member axis gives each member's own dx
        dx_each, _, _ = k.conv2d_backward((E, *x.shape), cols, arr(W), arr(dz), stride,
                                          padding, True)
        close(dx_each, dx_t)


@pytest.mark.parametrize("buffers", ["contiguous", "strided"])
@pytest.mark.parametrize("name", ["numpy_twin", "torch_reference"])
def test_conv2d_backward_fills_given_buffers(name, buffers):
    k, arr = KERNELS[name]
    x, W, b, dz = conv_data((2, 3, 6, 6), (2, 4, 3, 3, 3), 1, 1)  # an ensemble of 2
    _, dx_t, dW_t, db_t = torch_conv(x, W[1], b[1], dz[1], 1, 1)
    flat = arr(np.full(W.size + b.size + 7, np.nan))  # a gradient buffer with per-key views
    if buffers == "contiguous":
        dW_buf = flat[:W.size].reshape(W.shape)
        db_buf = flat[W.size:W.size + b.size].reshape(b.shape)
    else:
        dW_buf = arr(np.full((*W.shape[:-1], 6), np.nan))[..., ::2]
        db_buf = arr(np.full((b.shape[0], 2 * b.shape[1]), np.nan))[:, ::2]
    _, cols = k.conv2d(arr(x), arr(W), arr(b), 1, 1)
    dx, dW, db = k.conv2d_backward(x.shape, cols, arr(W), arr(dz), 1, 1, False,
                                   out=(dW_buf, db_buf))
    assert dx is None and dW is dW_buf and db is db_buf
    close(dW_buf[1], dW_t)
    close(db_buf[1], db_t)


@pytest.mark.parametrize("x_shape, W_shape, stride, padding", CONV_CASES)
def test_col2im_is_the_adjoint_of_im2col(x_shape, W_shape, stride, padding):
    """⟨im2col(x), C⟩ = ⟨x, col2im(C)⟩ on the reference, and the twin equals it."""
    rng = np.random.default_rng(2)
    kh, kw = W_shape[-2:]
    x = rng.standard_normal(x_shape)
    cols = REFERENCE_NP.im2col(x, kh, kw, stride, padding)
    C = rng.standard_normal(cols.shape)
    back = REFERENCE_NP.col2im(C, x_shape, kh, kw, stride, padding)
    assert np.isclose(np.vdot(cols, C), np.vdot(x, back), rtol=1e-12)
    twin = KERNELS["numpy_twin"][0]
    np.testing.assert_allclose(twin.im2col(x, kh, kw, stride, padding), cols, rtol=0, atol=0)
    np.testing.assert_allclose(twin.col2im(C, x_shape, kh, kw, stride, padding), back,
                               rtol=1e-13, atol=1e-13)


def test_im2col_columns_are_the_torch_unfold():
    """Row (c, i, j), column (n, h, w): torch's unfold (N, C·kH·kW, L) with N moved inside."""
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 5))
    unfold = F.unfold(torch.tensor(x), (3, 2), padding=1, stride=2).numpy()
    cols = REFERENCE_NP.im2col(x, 3, 2, 2, 1)
    np.testing.assert_array_equal(cols, np.concatenate(list(unfold), axis=-1))


@pytest.mark.parametrize("x_shape, W_shape, stride, padding",
                         CONV_CASES[:4] + [((2, 3, 2, 6, 5), (2, 4, 2, 3, 3), 2, 1)])
def test_conv2d_twin_equals_reference(x_shape, W_shape, stride, padding):
    twin = KERNELS["numpy_twin"][0]
    x, W, b, dz = conv_data(x_shape, W_shape, stride, padding)
    (z1, c1), (z2, c2) = twin.conv2d(x, W, b, stride, padding), REFERENCE_NP.conv2d(
        x, W, b, stride, padding)
    np.testing.assert_allclose(z1, z2, rtol=1e-13, atol=1e-13)
    ours = twin.conv2d_backward(x.shape, c1, W, dz, stride, padding, True)
    reference = REFERENCE_NP.conv2d_backward(x.shape, c2, W, dz, stride, padding, True)
    for g1, g2 in zip(ours, reference, strict=True):
        np.testing.assert_allclose(g1, g2, rtol=1e-13, atol=1e-13)


def test_float32_and_the_device_are_kept(kernels):
    """float32 stays float32 (no float64 zeros or NumPy scalars); strict: on its device1."""
    k, base = kernels
    on_strict = base is strict.asarray
    device1 = strict.Device("device1")

    def arr(a):
        if on_strict:  # a mixed-device operation raises on array-api-strict
            return strict.asarray(a, dtype=strict.float32, device=device1)
        return base(np.asarray(a, dtype=np.float32))

    x, W, b, dz = conv_data((2, 2, 6, 5), (3, 2, 3, 3), 2, 1)
    z, cols = k.conv2d(arr(x), arr(W), arr(b), 2, 1)
    outs = [z, *k.conv2d_backward(x.shape, cols, arr(W), arr(dz), 2, 1, True)]
    for fn in ("max_pool2d", "avg_pool2d"):
        y, ctx = getattr(k, fn)(arr(x), 3, 2)
        outs += [y, getattr(k, fn + "_backward")(ctx, y, x.shape)]
    for o in outs:
        assert "float32" in str(o.dtype)
        assert not on_strict or o.device == device1


# -- pooling ---------------------------------------------------------------------------
# (x shape, k, stride): divisible and not, overlapping windows, stride above k, ensembles
POOL_CASES = [
    ((2, 3, 6, 6), 2, None),
    ((2, 3, 7, 5), 2, None),
    ((2, 2, 7, 8), 3, 2),
    ((1, 2, 6, 7), 2, 3),
    ((2, 1, 5, 6), 3, 1),
    ((2, 3, 2, 4, 4), 2, None),   # an ensemble's (E, N, C, H, W)
    ((2, 1, 2, 7, 6), 3, 2),
]


def torch_pool(fn, x, dy, k, stride):
    xt = torch.tensor(x.reshape(-1, *x.shape[-3:]), requires_grad=True)  # members into N
    y = fn(xt, k, stride)
    (y * torch.tensor(dy.reshape(y.shape))).sum().backward()
    return y.detach().numpy().reshape(dy.shape), xt.grad.numpy().reshape(x.shape)


def pool_data(x_shape, k, stride, ties, seed=4):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, x_shape).astype(np.float64) if ties else rng.standard_normal(x_shape)
    s = k if stride is None else stride
    out = ((x_shape[-2] - k) // s + 1, (x_shape[-1] - k) // s + 1)
    return x, rng.standard_normal((*x_shape[:-2], *out))


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("x_shape, k, stride", POOL_CASES)
def test_max_pool2d_matches_torch(kernels, x_shape, k, stride, ties):
    """With ties (values in {0, 1, 2}) δ goes to the first maximum of each window, as torch."""
    kern, arr = kernels
    x, dy = pool_data(x_shape, k, stride, ties)
    y_t, dx_t = torch_pool(F.max_pool2d, x, dy, k, stride)
    y, ctx = kern.max_pool2d(arr(x), k, stride)
    close(y, y_t)
    close(kern.max_pool2d_backward(ctx, arr(dy), x.shape), dx_t)


@pytest.mark.parametrize("x_shape, k, stride", POOL_CASES)
def test_avg_pool2d_matches_torch(kernels, x_shape, k, stride):
    kern, arr = kernels
    x, dy = pool_data(x_shape, k, stride, ties=False)
    y_t, dx_t = torch_pool(F.avg_pool2d, x, dy, k, stride)
    y, ctx = kern.avg_pool2d(arr(x), k, stride)
    close(y, y_t)
    close(kern.avg_pool2d_backward(ctx, arr(dy), x.shape), dx_t)


@pytest.mark.parametrize("x_shape, k, stride", POOL_CASES[:4])
def test_pooling_twin_equals_reference(x_shape, k, stride):
    twin = KERNELS["numpy_twin"][0]
    x, dy = pool_data(x_shape, k, stride, ties=True)
    for forward, backward in [("max_pool2d", "max_pool2d_backward"),
                              ("avg_pool2d", "avg_pool2d_backward")]:
        (y1, c1), (y2, c2) = getattr(twin, forward)(x, k, stride), getattr(
            REFERENCE_NP, forward)(x, k, stride)
        np.testing.assert_allclose(y1, y2, rtol=1e-14)
        np.testing.assert_allclose(getattr(twin, backward)(c1, dy, x.shape),
                                   getattr(REFERENCE_NP, backward)(c2, dy, x.shape), rtol=1e-14)


def test_max_pool2d_nan_wins_like_torch(kernels):
    kern, arr = kernels
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y, ctx = kern.max_pool2d(arr(x), 2)
    y = host(y)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 1] == 15.0
    dx = host(kern.max_pool2d_backward(ctx, arr(np.ones((1, 1, 2, 2))), x.shape))
    assert dx[0, 0, 0, 1] == 1.0 and dx[0, 0, :2, :2].sum() == 1.0


def test_conv2d_refuses_mismatched_shapes():
    k = KERNELS["numpy_twin"][0]
    with pytest.raises(ValueError, match="channels"):
        k.conv2d(np.zeros((1, 2, 5, 5)), np.zeros((3, 4, 3, 3)), None)
    with pytest.raises(ValueError, match="does not fit"):
        k.conv2d(np.zeros((1, 2, 2, 2)), np.zeros((3, 2, 3, 3)), None)


@pytest.mark.parametrize("k, stride", [(2, None), (3, 2)])
def test_max_pool2d_backward_of_a_non_finite_dy_routes_it_exactly(k, stride):
    """NaN and ±Inf in dy reach the argmax only, as the reference routes them (NaN·0 is NaN)."""
    twin = KERNELS["numpy_twin"][0]
    x, dy = pool_data((2, 3, 7, 8), k, stride, ties=True)
    dy[0, 0, 0, 0], dy[1, 2, 1, 1], dy[0, 1, 2, 0] = np.nan, np.inf, -np.inf
    (_, c1), (_, c2) = twin.max_pool2d(x, k, stride), REFERENCE_NP.max_pool2d(x, k, stride)
    np.testing.assert_array_equal(twin.max_pool2d_backward(c1, dy, x.shape),
                                  REFERENCE_NP.max_pool2d_backward(c2, dy, x.shape))
