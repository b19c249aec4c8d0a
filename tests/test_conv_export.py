"""Conv models as files: nk.save / nk.load and ONNX graphs run in onnxruntime.

float32 graphs run in onnxruntime; onnxruntime has no float64 Conv or AveragePool,
so float64 graphs run in onnx's own reference evaluator (onnx.reference) instead.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnkernel as nk
from nnkernel.io.onnx_conv import CONV_LAYERS

onnx = pytest.importorskip("onnx", reason="onnx not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
from onnx.reference import ReferenceEvaluator  # noqa: E402

from nnkernel.io.onnx_export import EXPORTABLE_LAYERS, to_onnx  # noqa: E402

ATOL = {"float32": 2e-5, "float64": 1e-11}


def every_conv_layer(dtype, ensemble=None, seed=1):
    """Each conv layer kind, stride 1 and 2, padding 0 and 1, trained one step (BatchNorm2D
    statistics off their initial values)."""
    model = nk.Sequential(
        nk.Conv2D(2, 4, 3, padding=1, activation="relu"), nk.MaxPool2D(2),
        nk.BatchNorm2D(4), nk.Conv2D(4, 3, 3, stride=2, activation="leaky_relu", alpha=0.2),
        nk.Dropout2D(0.3), nk.AvgPool2D(2, stride=1), nk.Tanh(), nk.Flatten(),
        nk.Dense(3 * 1 * 2, 5, activation="gelu"), nk.Dense(5, 3), seed=seed, dtype=dtype,
        ensemble=ensemble, input_shape=(2, 11, 15))
    x = np.random.default_rng(seed).normal(size=(6, 2, 11, 15)).astype(dtype)
    model.forward(x, train=True)
    return model


def run_graph(proto, x):
    if x.dtype == np.float64:
        return ReferenceEvaluator(proto).run(None, {"x": x})[0]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def check_against_model(model, x, dtype):
    proto = to_onnx(model)
    got = run_graph(proto, x)
    want = np.asarray(model(x))
    assert got.shape == want.shape and got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL[dtype])
    return proto


@pytest.mark.parametrize("ensemble", [None, 3], ids=["single", "ensemble"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_conv_layer_in_one_network_matches_the_model(dtype, ensemble):
    model = every_conv_layer(dtype, ensemble)
    assert {type(layer).__name__ for layer in model.layers} >= set(CONV_LAYERS)
    for n in (4, 9):  # the batch axis is dynamic
        x = np.random.default_rng(n).normal(size=(n, 2, 11, 15)).astype(dtype)
        proto = check_against_model(model, x, dtype)
    (x_info,) = proto.graph.input
    assert [d.dim_param or d.dim_value for d in x_info.type.tensor_type.shape.dim] == \
        ["N", 2, 11, 15]


@pytest.mark.parametrize("ensemble", [None, 2], ids=["single", "ensemble"])
def test_float64_batchnorm2d_uses_eps_in_float64(ensemble):
    """BatchNormalization's epsilon attribute is 32-bit; a float64 model keeps eps exact
    (var + eps as a float64 initializer). No Conv, so onnxruntime runs it in float64."""
    model = nk.Sequential(nk.BatchNorm2D(3, eps=0.1), nk.Flatten(), nk.Dense(12, 2), seed=2,
                          dtype="float64", ensemble=ensemble, input_shape=(3, 2, 2))
    arrays = model.arrays()
    arrays["0.running_var"] = np.full_like(arrays["0.running_var"], 1e-4)
    arrays["2.W"] = arrays["2.W"] * 1e3
    model.load_arrays(arrays)
    x = np.random.default_rng(1).normal(size=(5, 3, 2, 2))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(to_onnx(model).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    got, want = session.run(None, {"x": x})[0], np.asarray(model(x))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_conv_graph_uses_the_named_ops_and_torch_layout_weights():
    model = nk.Sequential(nk.Conv2D(1, 4, 3, padding=1, activation="relu"), nk.MaxPool2D(2),
                          nk.Flatten(), nk.Dense(4 * 4 * 4, 10), input_shape=(1, 8, 8))
    proto = to_onnx(model)
    assert [n.op_type for n in proto.graph.node] == ["Conv", "Relu", "MaxPool", "Flatten",
                                                     "MatMul", "Add"]
    W = next(t for t in proto.graph.initializer if t.name == "0.W")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(W), model.arrays()["0.W"])
    assert {t.name for t in proto.graph.initializer} == set(model.arrays())


@pytest.mark.parametrize("first", ["maxpool", "batchnorm"])
def test_ensemble_with_a_shared_input_before_the_first_conv(first):
    head = nk.MaxPool2D(2) if first == "maxpool" else nk.BatchNorm2D(2)
    model = nk.Sequential(head, nk.Conv2D(2, 3, 3), nk.Flatten(), nk.Dense(3 * 2 * 2, 2),
                          ensemble=2, input_shape=(2, 8, 8) if first == "maxpool" else
                          (2, 4, 4), seed=2)
    size = 8 if first == "maxpool" else 4
    x = np.random.default_rng(0).normal(size=(5, 2, size, size)).astype(np.float32)
    model.forward(x, train=True)
    check_against_model(model, x, "float32")


@pytest.mark.parametrize("ensemble", [None, 2], ids=["single", "ensemble"])
def test_a_model_ending_in_images_with_unknown_sizes(ensemble):
    model = nk.Sequential(nk.Conv2D(1, 3, 3, stride=2, padding=1), nk.AvgPool2D(2),
                          ensemble=ensemble, seed=4)
    assert model.input_shape == (1, None, None)
    proto = to_onnx(model)
    for size in ((12, 16), (9, 7)):  # one graph, two image sizes
        x = np.random.default_rng(1).normal(size=(3, 1, *size)).astype(np.float32)
        got = run_graph(proto, x)
        np.testing.assert_allclose(got, model(x), rtol=0, atol=ATOL["float32"])
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 1, "H", "W"]


def test_every_conv_layer_is_exportable():
    assert set(CONV_LAYERS) <= set(EXPORTABLE_LAYERS)


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
@pytest.mark.parametrize("ensemble", [None, 3], ids=["single", "ensemble"])
def test_save_and_load_round_trip(tmp_path, fmt, ensemble):
    if fmt == "safetensors":
        pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    model = every_conv_layer("float64", ensemble, seed=5)
    path = tmp_path / f"cnn.{fmt}"
    nk.save(model, path, preprocessing={"divide_by": 255.0})
    loaded = nk.load(path)
    assert loaded.config() == model.config()
    for key, value in model.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[key], value)
    x = np.random.default_rng(3).normal(size=(4, 2, 11, 15))
    np.testing.assert_array_equal(loaded(x), model(x))
