"""The convolutional layers in models: finite differences, torch autograd, ensembles, shapes.

Every new layer (Conv2D, MaxPool2D, AvgPool2D, Flatten, BatchNorm2D, Dropout2D) is
checked by `nk.gradcheck` in float64 (stride 1 and 2, padding 0 and 1, odd and
even sizes, C_in > 1) and, through whole models, against the same computation
written with torch.nn.functional and differentiated by torch autograd (values,
every parameter gradient, dx and BatchNorm2D's running statistics, rtol 1e-10),
on each backend of the matrix in conftest.py.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
from conftest import host, make, torch_or_skip

import nnkernel as nk
from nnkernel.errors import ConfigError, ShapeError

TOL, EPS, RTOL = 1e-6, 1e-5, 1e-10


def probe(y, t, *, members=False):
    """L = Σ y ⊙ t, dL/dy = t: every output element weighted differently."""
    xp = array_api_compat.array_namespace(y)
    return xp.sum(y * t), t


def gradcheck(backend, layers, x_shape, *, ensemble=None, train=True, seed=0, eps=EPS):
    model = nk.Sequential(*layers, seed=seed, dtype="float64", backend=backend,
                          ensemble=ensemble, input_shape=x_shape[-3:])
    rng = np.random.default_rng(seed + 100)
    x = rng.standard_normal(x_shape)
    if train is False:  # running statistics that are not zeros and ones
        model.forward(make(backend, x), train=True)
    r = rng.standard_normal(tuple(model.forward(make(backend, x), train=train).shape))
    err = nk.gradcheck(model, probe, x, make(backend, r), train=train, eps=eps)
    assert err < TOL
    return model


# (C_in, C_out, kernel, stride, padding, H, W): odd and even sizes and kernels
CONV_CASES = [(2, 3, 3, 1, 0, 6, 7), (2, 3, 3, 1, 1, 7, 6), (3, 2, 3, 2, 0, 7, 8),
              (3, 2, 3, 2, 1, 8, 8), (2, 2, 2, 2, 1, 5, 7), (1, 2, 4, 1, 1, 6, 5)]


@pytest.mark.parametrize("c_in, c_out, k, s, p, H, W", CONV_CASES)
def test_conv2d_gradcheck(backend, c_in, c_out, k, s, p, H, W):
    gradcheck(backend, [nk.Conv2D(c_in, c_out, k, stride=s, padding=p, activation="tanh")],
              (2, c_in, H, W))


@pytest.mark.parametrize("layer", ["max2", "max3s2", "avg2", "avg3s1"])
@pytest.mark.parametrize("size", [(6, 8), (7, 5)], ids=["even", "odd"])
def test_pooling_gradcheck(backend, layer, size):
    pool = {"max2": nk.MaxPool2D(2), "max3s2": nk.MaxPool2D(3, stride=2),
            "avg2": nk.AvgPool2D(2), "avg3s1": nk.AvgPool2D(3, stride=1)}[layer]
    gradcheck(backend, [nk.Conv2D(2, 3, 3, padding=1), pool], (2, 2, *size))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_batchnorm2d_and_flatten_gradcheck(backend, train):
    # tanh before the normalisation: else the conv's bias has no effect, and its zero
    # gradient is below the finite differences' resolution
    gradcheck(backend, [nk.Conv2D(2, 3, 3, stride=2, padding=1, activation="tanh"),
                        nk.BatchNorm2D(3),
                        nk.Flatten(), nk.Dense(3 * 4 * 3, 4)], (3, 2, 7, 6), train=train)


def test_dropout_on_feature_maps_gradcheck(backend):
    gradcheck(backend, [nk.Conv2D(2, 3, 3), nk.Dropout2D(0.4), nk.Dropout(0.3)], (3, 2, 6, 6))


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_member"])
def test_ensemble_gradcheck(backend, shared):
    x_shape = (4, 2, 9, 8) if shared else (3, 4, 2, 9, 8)
    gradcheck(backend, [nk.Conv2D(2, 3, 3, padding=1, activation="relu"), nk.MaxPool2D(2),
                        nk.BatchNorm2D(3), nk.Conv2D(3, 2, 2, stride=2), nk.Flatten(),
                        nk.Dense(2 * 2 * 2, 3)], x_shape, ensemble=3, eps=1e-4)
    # eps 1e-4: three members' BatchNorm make rounding (∝ 1/eps) the larger error at 1e-5,
    # near TOL on one BLAS and past it on another; at 1e-4 the error is ~1e-7 on both


def test_pooling_first_in_an_ensemble_gradcheck(backend):
    """A shared input pooled before any weights: each member's δ comes back separately."""
    gradcheck(backend, [nk.MaxPool2D(2), nk.Conv2D(2, 3, 3), nk.AvgPool2D(2)], (3, 2, 8, 8),
              ensemble=2)


# -- against torch autograd, through whole models ---------------------------------------------
def cnn(conv, pool, *, bn=True):
    """Conv(k, s, p) + ReLU, a pooling, Conv 3x3 p1 (+ BatchNorm2D), ReLU, AvgPool, Dense."""
    k, s, p = conv
    return [nk.Conv2D(2, 4, k, stride=s, padding=p, activation="relu"), pool,
            nk.Conv2D(4, 3, 3, padding=1), *([nk.BatchNorm2D(3)] if bn else []), nk.ReLU(),
            nk.AvgPool2D(2, stride=1), nk.Flatten()]


def torch_cnn(torch, model, x, dy, train=True):
    """The model's computation in torch.nn.functional: (output, grads by key, dx, state)."""
    F = torch.nn.functional
    arrays = model.arrays()
    t = {k: torch.tensor(v, requires_grad=k in model.params) for k, v in arrays.items()}
    xt = torch.tensor(x, requires_grad=True)
    h = xt
    for i, layer in enumerate(model.layers):
        cfg = layer.config()
        kind = cfg["type"]
        if kind == "Conv2D":
            h = F.conv2d(h, t[f"{i}.W"], t[f"{i}.b"], stride=cfg["stride"],
                         padding=cfg["padding"])
            h = torch.relu(h) if cfg["activation"] == "relu" else h
        elif kind == "MaxPool2D":
            h = F.max_pool2d(h, cfg["kernel_size"], cfg["stride"])
        elif kind == "AvgPool2D":
            h = F.avg_pool2d(h, cfg["kernel_size"], cfg["stride"])
        elif kind == "BatchNorm2D":
            h = F.batch_norm(h, t[f"{i}.running_mean"], t[f"{i}.running_var"],
                             t[f"{i}.gamma"], t[f"{i}.beta"], training=train,
                             momentum=cfg["momentum"], eps=cfg["eps"])
        elif kind == "ReLU":
            h = torch.relu(h)
        elif kind == "Flatten":
            h = torch.flatten(h, 1)
        elif kind == "Dense":
            h = h @ t[f"{i}.W"] + t[f"{i}.b"]
        else:
            raise AssertionError(kind)
    (h * torch.tensor(dy)).sum().backward()
    grads = {k: t[k].grad.numpy() for k in model.params}
    state = {k: t[k].detach().numpy() for k in model.state}
    return h.detach().numpy(), grads, xt.grad.numpy(), state


def close(ours, expected, what=""):
    ours, expected = host(ours), np.asarray(expected)
    assert ours.shape == expected.shape, what
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=RTOL * scale, err_msg=what)


MODELS = {
    "k3s1p1-max2": ((3, 1, 1), lambda: nk.MaxPool2D(2), (9, 8)),
    "k3s2p0-max3s2": ((3, 2, 0), lambda: nk.MaxPool2D(3, stride=2), (15, 16)),
    "k2s2p1-avg2": ((2, 2, 1), lambda: nk.AvgPool2D(2), (11, 10)),
    "k4s1p0-max2s1": ((4, 1, 0), lambda: nk.MaxPool2D(2, stride=1), (8, 9)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_matches_torch_autograd(backend, name):
    torch = torch_or_skip()
    conv, pool, (H, W) = MODELS[name]
    model = nk.Sequential(*cnn(conv, pool()), seed=3, dtype="float64", backend=backend,
                          input_shape=(2, H, W))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, H, W))
    dy = rng.standard_normal((3, *model.output_shape))
    want_y, want_g, want_dx, want_state = torch_cnn(torch, model, x, dy)
    y = model.forward(make(backend, x), train=True)
    dx = model.backward(make(backend, dy))
    close(y, want_y, "output")
    close(dx, want_dx, "dx")
    assert set(model.grads) == set(want_g)
    for key, g in want_g.items():
        close(model.grads[key], g, key)
    for key, s in want_state.items():  # running statistics updated as torch's
        close(model.state[key], s, key)
    # evaluation mode: running statistics instead of the batch's
    want_y, want_g, want_dx, _ = torch_cnn(torch, model, x, dy, train=False)
    close(model.forward(make(backend, x), train=False, record=True), want_y, "eval output")
    close(model.backward(make(backend, dy)), want_dx, "eval dx")
    for key, g in want_g.items():
        close(model.grads[key], g, "eval " + key)


def test_a_dense_head_matches_torch_and_skipping_dx_keeps_the_gradients(backend):
    torch = torch_or_skip()
    layers = [*cnn((3, 1, 1), nk.MaxPool2D(2), bn=False), nk.Dense(3 * 3 * 3, 5)]
    model = nk.Sequential(*layers, seed=5, dtype="float64", backend=backend,
                          input_shape=(2, 8, 8))
    rng = np.random.default_rng(6)
    x, dy = rng.standard_normal((4, 2, 8, 8)), rng.standard_normal((4, 5))
    want_y, want_g, _, _ = torch_cnn(torch, model, x, dy)
    close(model.forward(make(backend, x), train=True), want_y)
    assert model.backward(make(backend, dy), input_grad=False) is None
    for key, g in want_g.items():
        close(model.grads[key], g, key)


def test_torch_conv2d_takes_the_weights_unchanged():
    """W (C_out, C_in, kH, kW) and b (C_out,) go into torch.nn.Conv2d without a reshuffle."""
    torch = torch_or_skip()
    model = nk.Sequential(nk.Conv2D(3, 5, 3, stride=2, padding=1), dtype="float64", seed=1)
    conv = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(model.arrays()["0.W"]))
        conv.bias.copy_(torch.from_numpy(model.arrays()["0.b"]))
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8))
    close(model(x), conv(torch.from_numpy(x)).detach().numpy())
    # and back: torch's own initialisation loaded into nnkernel
    model.params["0.W"] = conv.weight.detach().numpy() * 2.0
    close(model(x) - model.params["0.b"][:, None, None],
          2.0 * (conv(torch.from_numpy(x)) - conv.bias[:, None, None]).detach().numpy())


# -- ensembles ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_member"])
def test_ensemble_equals_separate_models(backend, shared):
    layers = [nk.Conv2D(2, 3, 3, padding=1, activation="relu"), nk.MaxPool2D(2),
              nk.BatchNorm2D(3), nk.Dropout2D(0.0), nk.Conv2D(3, 4, 3, stride=2, padding=1),
              nk.AvgPool2D(2), nk.Flatten(), nk.Dense(4, 3)]
    singles = [nk.Sequential(*layers, seed=s, dtype="float64", backend=backend,
                             input_shape=(2, 8, 7)) for s in (1, 2, 3)]
    ens = nk.Sequential.stack(singles)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 2, 8, 7) if shared else (3, 5, 2, 8, 7))
    dy = rng.standard_normal((3, 5, 3))
    y = host(ens.forward(make(backend, x), train=True))
    dx = host(ens.backward(make(backend, dy)))
    assert dx.shape == x.shape
    dx_sum = 0.0
    for i, single in enumerate(singles):
        xi = x if shared else x[i]
        close(y[i], single.forward(make(backend, xi), train=True), f"member {i} output")
        dxi = host(single.backward(make(backend, dy[i])))
        for key, g in single.grads.items():
            close(host(ens.grads[key])[i], g, f"member {i} {key}")
        for key, s in single.state.items():
            close(host(ens.state[key])[i], s, f"member {i} {key}")
        if shared:
            dx_sum = dx_sum + dxi
        else:
            close(dx[i], dxi, f"member {i} dx")
    if shared:  # one input feeds every member: its gradient is the members' sum
        close(dx, dx_sum, "dx")


# -- shapes, summary, configuration ------------------------------------------------------------
def test_shapes_are_inferred_from_the_first_conv_and_the_first_input():
    model = nk.Sequential(nk.Conv2D(1, 4, 3, padding=1, activation="relu"), nk.MaxPool2D(2),
                          nk.Conv2D(4, 6, 3, stride=2), nk.Flatten(), nk.Dense(6 * 3 * 3, 10))
    assert model.input_shape == (1, None, None)
    assert "(N, 4, ?, ?)" in model.summary()
    model(np.zeros((2, 1, 14, 14), dtype=np.float32))
    text = model.summary()
    for shape in ("(N, 4, 14, 14)", "(N, 4, 7, 7)", "(N, 6, 3, 3)", "(N, 54)", "(N, 10)"):
        assert shape in text
    with pytest.raises(ShapeError, match="expects 54 input features"):
        model(np.zeros((2, 1, 12, 12), dtype=np.float32))
    with pytest.raises(ShapeError, match="expects"):
        model(np.zeros((2, 3, 14, 14), dtype=np.float32))


def test_input_shape_fixes_every_layers_shape():
    model = nk.Sequential(nk.Conv2D(3, 8, 5, stride=2, padding=2), nk.BatchNorm2D(8),
                          nk.AvgPool2D(3, stride=2), nk.Flatten(), nk.Dense(8 * 3 * 3, 2),
                          input_shape=(3, 15, 16), ensemble=2)
    assert model.output_shape == (2,)
    text = model.summary()
    for shape in ("(2, N, 8, 8, 8)", "(2, N, 8, 3, 3)", "(2, N, 72)", "(2, N, 2)"):
        assert shape in text
    assert model.num_parameters() == 2 * (8 * 3 * 25 + 8 + 16 + 72 * 2 + 2)


@pytest.mark.parametrize("layers, message", [
    ([nk.Conv2D(3, 4, 3)], "expects 3 input channels"),
    ([nk.Conv2D(1, 4, 9)], "does not fit"),
    ([nk.Flatten(), nk.Conv2D(1, 4, 3)], "takes images"),
    ([nk.Conv2D(1, 4, 3), nk.BatchNorm2D(5)], "receives 4 channels"),
    ([nk.Conv2D(1, 4, 3), nk.Flatten(), nk.Dense(100, 2)], "expects 100 input features"),
])
def test_shape_errors_name_the_layer(layers, message):
    with pytest.raises(ShapeError, match=message):
        nk.Sequential(*layers, input_shape=(1, 8, 8))


@pytest.mark.parametrize("make_layer", [
    lambda: nk.Conv2D(0, 4, 3), lambda: nk.Conv2D(1, 4, 3.0), lambda: nk.Conv2D(1, 4, (3, 2)),
    lambda: nk.Conv2D(1, 4, 3, padding=-1), lambda: nk.Conv2D(1, 4, 3, stride=True),
    lambda: nk.Conv2D(1, 4, 3, activation="relu", alpha=0.1), lambda: nk.MaxPool2D(0),
    lambda: nk.AvgPool2D(2, stride=0), lambda: nk.BatchNorm2D(3, eps=0),
    lambda: nk.BatchNorm2D(3, momentum=2), lambda: nk.Dropout2D(1.0)])
def test_bad_arguments_are_config_errors(make_layer):
    with pytest.raises(ConfigError):
        make_layer()


def test_config_round_trip_rebuilds_the_same_model(backend):
    model = nk.Sequential(nk.Conv2D(1, 3, 3, padding=1, activation="leaky_relu", alpha=0.2,
                                    init="glorot_normal"), nk.MaxPool2D(3, stride=2),
                          nk.BatchNorm2D(3, eps=1e-3, momentum=0.2), nk.Dropout2D(0.1),
                          nk.Conv2D(3, 2, (2, 2), stride=(2, 2)), nk.AvgPool2D(2),
                          nk.Flatten(), nk.Dense(2, 4), seed=2, dtype="float64",
                          backend=backend, input_shape=(1, 12, 12))
    x = make(backend, np.random.default_rng(0).standard_normal((3, 1, 12, 12)))
    model.forward(x, train=True)  # running statistics off their initial values
    twin = nk.Sequential.from_config(model.config(), backend=backend)
    twin.load_arrays(model.arrays())
    assert twin.config() == model.config()
    assert twin.config()["input_shape"] == [1, 12, 12]
    assert repr(twin.layers[0]) == ("Conv2D(in_channels=1, out_channels=3, kernel_size=3, "
                                    "stride=1, padding=1, activation='leaky_relu', alpha=0.2, "
                                    "init='glorot_normal')")
    close(twin(x), model(x))


def test_he_initialisation_uses_the_fan_in_of_a_kernel():
    model = nk.Sequential(nk.Conv2D(16, 64, 3, activation="relu"), nk.Conv2D(64, 8, 5),
                          dtype="float64", seed=0)
    W0, W1 = model.arrays()["0.W"], model.arrays()["1.W"]
    assert abs(W0.std() / np.sqrt(2.0 / (16 * 9)) - 1.0) < 0.03  # He normal, fan-in C_in·k²
    limit = np.sqrt(6.0 / (64 * 25 + 8 * 25))  # Glorot uniform, fans C·k²
    assert W1.max() <= limit and W1.max() > 0.95 * limit
    assert not model.arrays()["0.b"].any()


def test_dropout_works_element_wise_and_dropout2d_by_channel():
    x = np.ones((20, 8, 6, 6))
    for layer, per_map in ((nk.Dropout(0.5), False), (nk.Dropout2D(0.5), True)):
        model = nk.Sequential(layer, dtype="float64", input_shape=(8, 6, 6))
        y = model.forward(x, train=True)
        assert set(np.unique(y)) == {0.0, 2.0}
        maps = y.reshape(20, 8, 36)
        whole = np.all(maps == maps[..., :1], axis=-1)
        assert whole.all() == per_map  # Dropout2D keeps or drops each (n, c) map whole
        assert 0.35 < (y == 0).mean() < 0.65
        np.testing.assert_array_equal(model.backward(np.ones_like(y)), y)  # dx = mask
        np.testing.assert_array_equal(model.forward(x, train=False), x)


def test_the_kernel_classes_carry_the_conv_kernels():
    from nnkernel.kernels.numpy.conv import NumpyConvKernels
    from nnkernel.kernels.reference.conv import ConvKernels

    numpy_k = nk.Backend("numpy").kernels
    assert isinstance(numpy_k, NumpyConvKernels)
    assert type(numpy_k).conv2d is NumpyConvKernels.conv2d  # the twin, not the reference
    strict = pytest.importorskip("array_api_strict")
    strict_k = nk.Backend(strict).kernels
    assert isinstance(strict_k, ConvKernels) and not isinstance(strict_k, NumpyConvKernels)


def test_the_builders_keep_an_activations_parameters():
    from nnkernel.nn.activations import ELU, LeakyReLU
    from nnkernel.nn.builders import cnn, mlp

    for model in (cnn((1, 8, 8), [3], [4], 2, activation=LeakyReLU(alpha=0.2)),
                  cnn((1, 8, 8), [3], [4], 2, activation=LeakyReLU(alpha=0.2), batchnorm=True),
                  mlp(6, [4, 4], 2, activation=LeakyReLU(alpha=0.2), batchnorm=True)):
        alphas = {layer.activation.alpha for layer in model.layers
                  if isinstance(getattr(layer, "activation", None), LeakyReLU)}
        assert alphas == {0.2}, model
    model = cnn((1, 8, 8), [3], [4], 2, activation=ELU(alpha=0.5), batchnorm=True)
    assert {layer.activation.alpha for layer in model.layers
            if isinstance(getattr(layer, "activation", None), ELU)} == {0.5}


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_the_builders_initialise_a_block_for_its_activation(activation, batchnorm):
    """He for ReLU, Glorot for tanh, with a BatchNorm between the linear map and the
    activation or not, in the MLP (whose Dense took Glorot before a BatchNorm) and the CNN."""
    from nnkernel.nn.builders import cnn, mlp

    def std(fan_in, fan_out):
        return np.sqrt(2.0 / fan_in) if activation == "relu" else np.sqrt(2.0 / (fan_in + fan_out))

    W = mlp(400, [400], 2, activation=activation, batchnorm=batchnorm).arrays()["0.W"]
    assert np.std(W) == pytest.approx(std(400, 400), rel=0.03)
    W = cnn((1, 8, 8), [64], [4], 2, activation=activation, batchnorm=batchnorm).arrays()["0.W"]
    assert np.std(W) == pytest.approx(std(9, 64 * 9), rel=0.1)


@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu", "gelu"])
def test_the_cli_blocks_equal_conv_activation_pool(activation):
    """nn.builders.cnn puts a monotone activation after the pool: the same outputs and
    gradients as Conv2D(activation) -> MaxPool2D, which it keeps for the others (GELU)."""
    from nnkernel.nn.builders import cnn

    model = cnn((2, 8, 8), [3, 4], [5], 3, activation=activation, dtype="float64", seed=0)
    order = [type(layer).__name__ for layer in model.layers]
    plain = [nk.Conv2D(2, 3, 3, padding=1, activation=activation), nk.MaxPool2D(2),
             nk.Conv2D(3, 4, 3, padding=1, activation=activation), nk.MaxPool2D(2),
             *model.layers[-3:]]
    reference = nk.Sequential(*plain, dtype="float64", input_shape=(2, 8, 8))
    if activation == "gelu":
        assert order[:2] == ["Conv2D", "MaxPool2D"] and len(order) == len(plain)
        return
    assert order[:3] == ["Conv2D", "MaxPool2D", type(model.layers[2]).__name__]
    def same(key):  # "3.W" of the model is "2.W" of the reference
        position, name = key.split(".")
        return f"{ {0: 0, 3: 2, 7: 5, 8: 6}[int(position)]}.{name}"

    reference.load_arrays({same(k): v for k, v in model.arrays().items()})
    x = np.random.default_rng(1).standard_normal((6, 2, 8, 8))
    x[0, :, :2, :2] = -1.0  # a window of a channel all below zero: no gradient through ReLU
    dy = np.random.default_rng(2).standard_normal((6, 3))
    close(model.forward(x, train=True), reference.forward(x, train=True))
    close(model.backward(dy), reference.backward(dy))
    for key, g in model.grads.items():
        close(g, reference.grads[same(key)], key)
