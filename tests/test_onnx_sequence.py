"""ONNX export of token and sequence models (nk.gpt, Residual blocks) run in onnxruntime.

Every graph is run against ``model(x)``: GPTs at T = 1 and T = max_len through one file
(the batch and the length are dynamic), tied and untied heads, float32 and float64;
Residual conv blocks (float64 through onnx's reference evaluator, as onnxruntime has
no float64 Conv); what cannot be exported is refused by name. The safetensors file of
a GPT round-trips and stores the tied weight once.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
from onnx.reference import ReferenceEvaluator  # noqa: E402

import nnkernel as nk  # noqa: E402
from nnkernel.errors import ConfigError  # noqa: E402
from nnkernel.io.onnx_export import to_onnx  # noqa: E402
from nnkernel.io.onnx_sequence import SEQUENCE_LAYERS  # noqa: E402
from nnkernel.nn.layer import Layer  # noqa: E402

ATOL = {"float32": 2e-6, "float64": 1e-10}
V, MAX_LEN, DIM = 13, 9, 16


def session(proto):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # tiny graphs on shared cores
    return ort.InferenceSession(proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def perturbed(model, seed=0):
    """Every parameter moved off its initial value (biases and β off zero, γ off one), so
    each one shows in the output."""
    rng = np.random.default_rng(seed)
    model.load_arrays({k: v + 0.2 * rng.normal(size=v.shape) for k, v in model.arrays().items()})
    return model


def small_gpt(dtype="float32", tie=True, layers=2, backend="numpy"):
    return perturbed(nk.gpt(vocab_size=V, max_len=MAX_LEN, dim=DIM, heads=4, layers=layers,
                            tie_weights=tie, dtype=dtype, seed=3, backend=backend))


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_gpt_matches_the_model_at_every_length(dtype, tie):
    model = small_gpt(dtype, tie)
    proto = to_onnx(model)
    run = session(proto)
    rng = np.random.default_rng(1)
    for n, T in ((3, 1), (2, MAX_LEN), (4, 5)):  # one file, any batch and length ≤ max_len
        ids = rng.integers(0, V, (n, T))
        got = run.run(None, {"x": ids})[0]
        want = np.asarray(model(ids))
        assert got.shape == want.shape == (n, T, V) and got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL[dtype])
    (x,), (y,) = proto.graph.input, proto.graph.output
    assert x.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert dims(x) == ["N", "T"] and dims(y) == ["N", "T", V]


def test_the_causal_mask_hides_the_future():
    """Changing the last token changes only the last position's logits, in the graph too."""
    run = session(to_onnx(small_gpt(layers=1)))
    ids = np.random.default_rng(2).integers(0, V, (2, MAX_LEN))
    other = ids.copy()
    other[:, -1] = (other[:, -1] + 1) % V
    a, b = (run.run(None, {"x": x})[0] for x in (ids, other))
    np.testing.assert_array_equal(a[:, :-1], b[:, :-1])
    assert np.abs(a[:, -1] - b[:, -1]).max() > 1e-3


def test_a_model_on_another_backend_exports_the_same_graph():
    torch = pytest.importorskip("torch", reason="torch not installed")
    model = small_gpt(backend="torch")
    ids = np.random.default_rng(3).integers(0, V, (2, 6))
    got = session(to_onnx(model)).run(None, {"x": ids})[0]
    want = model(torch.as_tensor(ids)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL["float32"])


def test_graph_is_the_named_ops_with_the_tied_weight_stored_once():
    model = small_gpt(layers=2)
    proto = to_onnx(model)
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:2] == ["Gather", "Shape"] and "LayerNormalization" in ops
    # Add: positions, then per block qkv, Wo, residual, two Dense biases, GELU's two, residual
    for op, count in (("Softmax", 2), ("Split", 2), ("Where", 2), ("Range", 1),
                      ("Add", 1 + 2 * 8), ("Transpose", 2 * 4 + 1)):
        assert ops.count(op) == count, op  # the causal mask is built once for every layer
    attention = [n.op_type for n in proto.graph.node if n.name.startswith("2.1.")]
    assert attention == ["MatMul", "Add", "Split", "Reshape", "Reshape", "Reshape",
                         "Transpose", "Transpose", "Transpose", "MatMul", "Mul", "Where",
                         "Softmax", "MatMul", "Transpose", "Reshape", "MatMul", "Add"]
    floats = [t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    params = [k for k in floats if not k.startswith("const_")]
    assert sorted(params) == sorted(model.arrays())  # "0.W" once; no "7.W" for the head
    assert proto.graph.node[-1].op_type == "MatMul" and proto.graph.node[-2].input == ["0.W"]


def test_a_sequence_model_on_float_input_without_a_mask():
    """Vectors (N, T, C) in, non-causal attention, the Dense on (N, T, C), GELU."""
    model = perturbed(nk.Sequential(
        nk.PositionEmbedding(MAX_LEN, 8), nk.Residual(nk.LayerNorm(8), nk.MultiHeadAttention(
            8, 2, dropout=0.3)), nk.Residual(nk.Dense(8, 12), nk.GELU(), nk.Dense(12, 8),
                                           nk.Dropout(0.2)), nk.Dense(8, 3), seed=1))
    proto = to_onnx(model)
    assert "Where" not in [n.op_type for n in proto.graph.node]
    assert dims(proto.graph.input[0]) == ["N", "T", 8]
    run = session(proto)
    for T in (1, MAX_LEN):
        x = np.random.default_rng(T).normal(size=(3, T, 8)).astype(np.float32)
        np.testing.assert_allclose(run.run(None, {"x": x})[0], model(x), rtol=0,
                                   atol=ATOL["float32"])


def conv_block(dtype, ensemble=None):
    """A ResNet block: Residual(Conv2D, BatchNorm2D, ReLU, Conv2D) between convolutions,
    trained one step so BatchNorm's running statistics are not zeros and ones."""
    model = nk.Sequential(
        nk.Conv2D(2, 4, 3, padding=1, activation="relu"),
        nk.Residual(nk.Conv2D(4, 4, 3, padding=1), nk.BatchNorm2D(4), nk.ReLU(),
                    nk.Conv2D(4, 4, 3, padding=1)),
        nk.MaxPool2D(2), nk.Flatten(), nk.Dense(4 * 3 * 4, 3), input_shape=(2, 6, 8),
        dtype=dtype, ensemble=ensemble, seed=1)
    x = np.random.default_rng(0).normal(size=(5, 2, 6, 8)).astype(dtype)
    model.forward(x, train=True)
    return model, x


@pytest.mark.parametrize("ensemble", [None, 3], ids=["single", "ensemble"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_residual_conv_block_matches_the_model(dtype, ensemble):
    model, x = conv_block(dtype, ensemble)
    proto = to_onnx(model)
    got = (ReferenceEvaluator(proto).run(None, {"x": x})[0] if dtype == "float64"
           else session(proto).run(None, {"x": x})[0])
    want = np.asarray(model(x))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 if dtype == "float32" else 1e-11)


def test_an_ensembles_residual_from_the_shared_input():
    """The branch turns the shared (N, C, H, W) input into member channels: x is tiled."""
    model = nk.Sequential(nk.Residual(nk.Conv2D(2, 2, 3, padding=1), nk.BatchNorm2D(2)),
                          nk.Flatten(), nk.Dense(2 * 6 * 8, 3), input_shape=(2, 6, 8),
                          ensemble=2, seed=0)
    x = np.random.default_rng(0).normal(size=(5, 2, 6, 8)).astype(np.float32)
    model.forward(x, train=True)
    proto = to_onnx(model)
    assert "Tile" in [n.op_type for n in proto.graph.node]
    np.testing.assert_allclose(session(proto).run(None, {"x": x})[0], model(x), rtol=0,
                               atol=1e-5)


def test_a_shared_layer_is_one_initializer():
    dense = nk.Dense(4, 4, activation="tanh")
    model = perturbed(nk.Sequential(dense, nk.Residual(dense), dense, seed=0))
    proto = to_onnx(model)
    assert sorted(t.name for t in proto.graph.initializer) == ["0.W", "0.b"]
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(session(proto).run(None, {"x": x})[0], model(x), atol=1e-6)


class Scale(Layer):
    """A layer the exporter does not know (y = 2x)."""

    def forward(self, ctx, x, train):
        return 2 * x, lambda dy, need_dx=True: 2 * dy

    def config(self):
        return {"type": "Scale"}


def test_what_cannot_be_exported_is_refused_by_name():
    model = nk.Sequential(nk.Dense(4, 4), nk.Residual(nk.LayerNorm(4), Scale()), seed=0)
    with pytest.raises(ConfigError, match=r"layer 1\.1 \(Scale\).*exportable layers:.*"
                                          r"MultiHeadAttention"):
        to_onnx(model)
    late = nk.Sequential(nk.Dense(4, 4), nk.Embedding(V, 4), seed=0)
    with pytest.raises(ConfigError, match=r"layer 1 \(Embedding\).*model's first layer"):
        to_onnx(late)
    with pytest.raises(ConfigError, match="does not support ensembles"):
        nk.gpt(vocab_size=V, max_len=4, dim=8, heads=2, layers=1, ensemble=2)


def test_every_sequence_layer_is_tested():
    model = small_gpt(tie=True)
    kinds = {pos.layer.config()["type"] for pos in model.plan.walk()}
    assert set(SEQUENCE_LAYERS) <= kinds


def test_gpt_safetensors_round_trip_stores_the_tied_weight_once(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    model = small_gpt(tie=True)
    path = tmp_path / "gpt.safetensors"
    nk.save(model, path)
    tensors = st.load_file(str(path))
    assert sorted(tensors) == sorted(model.arrays())  # the head's W is the embedding's "0.W"
    assert not any(k.startswith("7.") for k in tensors)
    back = nk.load(path)
    assert back.layers[-1].embedding is back.layers[0]  # tied again after loading
    ids = np.random.default_rng(4).integers(0, V, (2, MAX_LEN))
    np.testing.assert_array_equal(back(ids), model(ids))
    for k, v in model.arrays().items():
        np.testing.assert_array_equal(back.arrays()[k], v)
