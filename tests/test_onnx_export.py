"""nk.export_onnx: every exportable layer and activation, run in onnxruntime against model(x).

Needs onnx and onnxruntime (the ``onnx`` extra, also in the test extra); the module
is skipped only when one of them is not installed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")

import nnkernel as nk  # noqa: E402
from nnkernel.errors import ConfigError  # noqa: E402
from nnkernel.io.onnx_export import EXPORTABLE_LAYERS, to_onnx  # noqa: E402

ATOL = {"float32": 1e-5, "float64": 1e-10}
DTYPES = ["float32", "float64"]
ACTIVATION_LAYERS = {
    "identity": nk.Identity, "sigmoid": nk.Sigmoid, "tanh": nk.Tanh, "relu": nk.ReLU,
    "leaky_relu": lambda: nk.LeakyReLU(0.2), "leaky_relu_steep": lambda: nk.LeakyReLU(1.5),
    "elu": lambda: nk.ELU(0.7), "swish": nk.Swish, "silu": nk.SiLU, "gelu": nk.GELU,
    "softmax": nk.Softmax,
}
FUSED = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "swish", "gelu", "softmax"]


def run_onnx(path_or_proto, x):
    data = path_or_proto if isinstance(path_or_proto, (str, bytes)) else \
        path_or_proto.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # tiny graphs on shared cores
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def widths(model) -> tuple[int, int]:
    dense = [c for c in model.config()["layers"] if c["type"] == "Dense"]
    return dense[0]["n_in"], dense[-1]["n_out"]  # every test model ends in a Dense's width


def check_against_model(model, dtype, *, ensemble=None, tmp_path=None, ns=(5, 17)):
    """Export, check the file, and compare onnxruntime with model(x) at two batch sizes."""
    if tmp_path is not None:
        path = tmp_path / "model.onnx"
        nk.export_onnx(model, path)
        onnx.checker.check_model(str(path), full_check=True)
        source = str(path)
    else:
        source = to_onnx(model)
        onnx.checker.check_model(source, full_check=True)
    rng = np.random.default_rng(2)
    n_in, n_out = widths(model)
    for n in ns:  # the batch axis is dynamic: two sizes through one file
        x = (rng.normal(size=(n, n_in)) * 2.0).astype(dtype)
        got = run_onnx(source, x)
        want = np.asarray(model(x))
        assert got.shape == want.shape == ((ensemble,) if ensemble else ()) + (n, n_out)
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL[dtype])


def trained(model, dtype):
    """One training step, so BatchNorm's running statistics are not zeros and ones."""
    x = np.random.default_rng(5).normal(size=(12, widths(model)[0])).astype(dtype)
    model.forward(x, train=True)
    return model


@pytest.mark.parametrize("ensemble", [None, 3], ids=["single", "ensemble"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ACTIVATION_LAYERS))
def test_activation_layers_match_the_model(name, dtype, ensemble):
    model = nk.Sequential(nk.Dense(4, 6), ACTIVATION_LAYERS[name](), seed=1, dtype=dtype,
                          ensemble=ensemble)
    check_against_model(model, dtype, ensemble=ensemble)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", FUSED)
def test_dense_with_its_fused_activation_matches_the_model(activation, dtype):
    model = nk.Sequential(nk.Dense(4, 6, activation=activation), nk.Dense(6, 3, activation=
                          activation), seed=2, dtype=dtype)
    check_against_model(model, dtype)


@pytest.mark.parametrize("ensemble", [None, 2], ids=["single", "ensemble"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_layer_kind_in_one_network_matches_the_model(tmp_path, dtype, ensemble):
    model = nk.Sequential(
        nk.Dense(5, 8, activation="gelu"), nk.BatchNorm(8, eps=1e-3), nk.Swish(),
        nk.Dropout(0.4), nk.Dense(8, 7, activation="elu"), nk.LayerNorm(7, eps=1e-4),
        nk.LeakyReLU(0.1), nk.Dense(7, 6), nk.BatchNorm(6), nk.Tanh(), nk.Dense(6, 4),
        nk.Softmax(), nk.Dropout(0.1), seed=4, dtype=dtype, ensemble=ensemble)
    trained(model, dtype)
    kinds = {layer.config()["type"] for layer in model.layers}
    assert kinds == {"Dense", "BatchNorm", "Swish", "Dropout", "LayerNorm", "LeakyReLU", "Tanh",
                     "Softmax"}
    check_against_model(model, dtype, ensemble=ensemble, tmp_path=tmp_path)


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("ensemble", [None, 2], ids=["single", "ensemble"])
def test_float64_norms_use_eps_in_float64(ensemble, opset):
    """ONNX float attributes are 32-bit: eps = 0.1 stored as an attribute is 0.10000000149,
    which moves a float64 output whose variance is near eps by ~1e-8 relative."""
    model = nk.Sequential(nk.Dense(3, 4), nk.BatchNorm(4, eps=0.1), nk.LayerNorm(4, eps=0.1),
                          nk.Dense(4, 2), seed=3, dtype="float64", ensemble=ensemble)
    arrays = model.arrays()
    arrays["1.running_var"] = np.full_like(arrays["1.running_var"], 1e-4)
    arrays["3.W"] = arrays["3.W"] * 1e3  # the outputs O(1e3): a 1e-8 error shows as 1e-5
    model.load_arrays(arrays)
    x = np.random.default_rng(0).normal(size=(7, 3)) * 0.05  # small: var ~ eps in LayerNorm
    got = run_onnx(to_onnx(model, opset=opset), x)
    want = np.asarray(model(x))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_every_exportable_layer_is_tested():
    tested = {type(f()).__name__ for f in ACTIVATION_LAYERS.values()}
    conv = {"Conv2D", "MaxPool2D", "AvgPool2D", "BatchNorm2D", "Dropout2D", "Flatten"}
    sequence = {"Residual", "Embedding", "PositionEmbedding", "MultiHeadAttention", "TiedOutput"}
    assert set(EXPORTABLE_LAYERS) - tested == {"Dense", "Dropout", "BatchNorm", "LayerNorm",
                                               *conv, *sequence}
    # conv: tests/test_conv_export.py; sequence: tests/test_onnx_sequence.py


def test_graph_uses_the_named_ops_and_nnkernel_keys():
    model = trained(nk.Sequential(nk.Dense(4, 6, activation="relu"), nk.BatchNorm(6),
                                  nk.Dense(6, 3), nk.LayerNorm(3), nk.Softmax(), seed=0),
                    "float32")
    proto = to_onnx(model, preprocessing={"divide_by": 16.0})
    ops = [n.op_type for n in proto.graph.node]
    assert ops == ["MatMul", "Add", "Relu", "BatchNormalization", "MatMul", "Add",
                   "LayerNormalization", "Softmax"]
    names = {t.name for t in proto.graph.initializer}
    assert names == set(model.arrays())
    W = onnx.numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "0.W"))
    np.testing.assert_array_equal(W, model.arrays()["0.W"])  # (n_in, n_out), as in the file
    assert [o.version for o in proto.opset_import] == [17]
    assert proto.ir_version == 8  # the oldest IR that carries opset 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["nnkernel_version"] == nk.__version__
    assert json.loads(meta["preprocessing"]) == {"divide_by": 16.0}
    assert json.loads(meta["nnkernel_config"]) == model.config()
    (x,), (y,) = proto.graph.input, proto.graph.output
    assert (x.name, y.name) == ("x", "y")
    assert [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == ["N", 4]
    assert [d.dim_param or d.dim_value for d in y.type.tensor_type.shape.dim] == ["N", 3]


def test_ensemble_output_has_the_member_axis():
    model = nk.Sequential(nk.Dense(4, 3), seed=0, ensemble=5)
    (y,) = to_onnx(model).graph.output
    assert [d.dim_param or d.dim_value for d in y.type.tensor_type.shape.dim] == [5, "N", 3]


def test_batch_dim_can_be_renamed_or_fixed():
    model = nk.Sequential(nk.Dense(4, 3), seed=0)
    (x,) = to_onnx(model, batch_dim="batch").graph.input
    assert x.type.tensor_type.shape.dim[0].dim_param == "batch"
    proto = to_onnx(model, batch_dim=8)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 8
    x8 = np.ones((8, 4), np.float32)
    np.testing.assert_allclose(run_onnx(proto, x8), model(x8), atol=1e-6)


@pytest.mark.parametrize("opset", [18, 20])
def test_newer_opsets(opset):
    model = trained(nk.Sequential(nk.Dense(4, 6, activation="gelu"), nk.LayerNorm(6),
                                  nk.BatchNorm(6), nk.Dense(6, 2), seed=3), "float32")
    proto = to_onnx(model, opset=opset)
    assert [o.version for o in proto.opset_import] == [opset]
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(proto, x), model(x), atol=1e-5)


class Doubler(nk.Layer):
    """A layer the exporter does not know."""

    def forward(self, net, x, train):
        return 2.0 * x

    def backward(self, net, dy, need_dx=True):
        return 2.0 * dy

    def config(self):
        return {"type": "Doubler"}


def test_unknown_layers_and_bad_options_are_config_errors(tmp_path):
    model = nk.Sequential(nk.Dense(4, 3), Doubler(), seed=0)
    with pytest.raises(ConfigError, match=r"cannot export layer 1 \(Doubler\) to ONNX; "
                                          r"exportable layers: Dense, Identity"):
        nk.export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    ok = nk.Sequential(nk.Dense(4, 3), seed=0)
    with pytest.raises(ConfigError, match="opset must be an integer from 17"):
        nk.export_onnx(ok, tmp_path / "m.onnx", opset=13)
    with pytest.raises(ConfigError, match="batch_dim must be"):
        nk.export_onnx(ok, tmp_path / "m.onnx", batch_dim="")


def test_export_command_writes_an_onnx_file(tmp_path, capsys):
    from nnkernel import cli

    run = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--hidden", "16", "--out", str(run),
                     "--quiet"]) == 0
    capsys.readouterr()
    target = tmp_path / "digits.onnx"
    assert cli.main(["export", str(run), "--onnx", str(target)]) == 0
    assert capsys.readouterr().err == f"wrote {target} (onnx)\n"
    model = nk.io.run_dir.load(run).build_model()
    x = nk.datasets.load("digits").X_test[:32]
    np.testing.assert_allclose(run_onnx(str(target), x), model(x), atol=1e-5)
