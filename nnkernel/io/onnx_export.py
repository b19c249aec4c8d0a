"""Export a Sequential to ONNX, for onnxruntime, browsers, C++ servers and other runtimes.

    nk.export_onnx(model, "digits.onnx")       # input "x" (N, n_in), output "y" (N, n_out)

The graph is the model in evaluation mode, written node by node with
``onnx.helper`` from ``model.config()`` and ``model.arrays()``; the parameters
become initializers under their nnkernel keys ("0.W", "0.b", ...):

    Dense        MatMul(x, W) + b, then its fused activation
    activations  Sigmoid, Tanh, Relu, LeakyRelu(alpha), Elu(alpha), Softmax(axis=-1);
                 swish as x * Sigmoid(x); GELU in nnkernel's tanh form, op for op as
                 nnkernel/nn/activations.py computes it (opset 17 has no Gelu, and
                 opset 20's erf form is another function). In a float64 model
                 LeakyReLU and ELU are written out with Max/Min/Exp, because ONNX
                 float attributes are 32-bit (alpha would be rounded) and
                 onnxruntime has no float64 Elu
    Dropout      nothing (the identity at inference)
    BatchNorm    BatchNormalization(epsilon=eps) with the running statistics
    LayerNorm    LayerNormalization(axis=-1, epsilon=eps)
                 ONNX float attributes are 32-bit, so in a float64 model eps goes
                 into the graph as a float64 value: BatchNormalization takes
                 running_var + eps (summed in float64) and epsilon=0, and LayerNorm
                 is written out with ReduceMean, Sqrt and Div
    Conv2D, MaxPool2D, AvgPool2D, BatchNorm2D, Dropout2D, Flatten: see `onnx_conv`
    (an image model's input "x" is (N, C, H, W), unknown sizes named H and W)
    Residual, Embedding, PositionEmbedding, MultiHeadAttention, TiedOutput: see
    `onnx_sequence` (a token model's input "x" is int64 ids (N, T), T dynamic)

Layers inside a combinator (Residual) are written where the model's plan puts
them, with node names from their paths ("3.1.qkv"); a shared or tied parameter is
one initializer under the key that owns it (a tied output reads "0.W").

An ensemble of E members (config "ensemble": E) takes the shared input (N, n_in)
and gives (E, N, n_out), as ``model(x)`` does: W is (E, n_in, n_out) and MatMul
broadcasts it over the members; per-feature vectors are stored as (E, 1, n) so
that they broadcast over the rows; BatchNorm is written out as
(x − mean)·(1/√(var + eps))·γ + β and LayerNorm as LayerNormalization without
its affine part followed by ·γ + β, because both ONNX ops take one (n,) vector
per feature, not one per member.

Why onnx.helper and not ndonnx. ndonnx (0.23.0, checked with ``pip download``
and a trial in a scratch environment) is an Array API namespace whose arrays
record ONNX nodes, so in principle it could trace nnkernel's own forward code:
tracing ``GELU().forward(ndx, x @ W)`` followed by softmax did give a graph that
onnxruntime ran. It was not chosen because:

- ``model.forward`` cannot take its arrays: backend/ knows four namespaces and
  refuses others, and the NumPy path runs in-place kernel twins. Tracing would
  need an ndonnx backend in the core, the one place that tells libraries apart,
  for a feature that needs none of training, devices or random numbers;
- the traced graph is the arithmetic, not the layers: that GELU and softmax came
  out as 40 nodes with ``If``, ``Size`` and ``IsNaN`` guards, where this module
  writes 10 nodes plus a Softmax that runtimes have fused kernels for; a reader
  of the file sees no Dense, BatchNormalization or LayerNormalization;
- it pins opset 21 and Python >= 3.11 (nnkernel supports 3.10), and adds spox and
  a 0.x API to the ``onnx`` extra.

The layers are a dozen fixed formulas, so a table of node builders is short, and
the tests check every entry against ``model(x)`` in onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from . import checkpoint
from ._optional import require
from .onnx_conv import BUILDERS as _CONV_BUILDERS
from .onnx_conv import CONV_LAYERS, members_first
from .onnx_nodes import ACTIVATIONS, activation, attribute_eps, var_plus_eps
from .onnx_sequence import BUILDERS as _SEQUENCE_BUILDERS
from .onnx_sequence import SEQUENCE_LAYERS

__all__ = ["EXPORTABLE_LAYERS", "export_onnx", "to_onnx"]

ACTIVATION_LAYERS = ("Identity", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ELU", "Swish", "GELU",
                     "Softmax")
EXPORTABLE_LAYERS = ("Dense", *ACTIVATION_LAYERS, "Dropout", "BatchNorm", "LayerNorm",
                     *CONV_LAYERS, *SEQUENCE_LAYERS)
_MAX_PROTO = 2**31 - 1  # protobuf's limit on one message


def export_onnx(model, path, *, opset: int = 17, batch_dim: str | int = "N",
                preprocessing: dict | None = None) -> None:
    """Write ``model`` as an ONNX file (atomically); see the module docstring for the graph.

    ``batch_dim`` names the dynamic batch axis (or fixes it, given an int);
    ``preprocessing`` (e.g. {"divide_by": 16.0}) is stored in the metadata.
    """
    proto = to_onnx(model, opset=opset, batch_dim=batch_dim, preprocessing=preprocessing)
    size = proto.ByteSize()
    if size > _MAX_PROTO:
        raise ConfigError(f"the model is {size / 2**30:.1f} GiB as ONNX, over protobuf's 2 GiB "
                          "limit for one file; it needs ONNX external data, which nnkernel "
                          "does not write")
    checkpoint.atomic_write_bytes(Path(path), proto.SerializeToString())


def to_onnx(model, *, opset: int = 17, batch_dim: str | int = "N",
            preprocessing: dict | None = None):
    """The ONNX ``ModelProto`` of ``model`` (checked with ``onnx.checker``)."""
    onnx = require("onnx", "onnx", "ONNX export")
    from onnx import helper

    from .. import __version__

    newest = onnx.defs.onnx_opset_version()
    if type(opset) is not int or not 17 <= opset <= newest:
        raise ConfigError(f"opset must be an integer from 17 (the first with "
                          f"LayerNormalization) to {newest} (the newest onnx "
                          f"{onnx.__version__} knows), got {opset!r}")
    if isinstance(batch_dim, bool) or not (
            (isinstance(batch_dim, str) and batch_dim) or
            (isinstance(batch_dim, int) and batch_dim > 0)):
        raise ConfigError(f"batch_dim must be a non-empty name or a positive size, got "
                          f"{batch_dim!r}")
    config = model.config()
    _check_exportable(model.plan)
    graph = _Graph(onnx, np.dtype(config["dtype"]), config.get("ensemble"), model.arrays())
    graph.opset = opset
    graph.locate(model.plan)
    y = graph.chain(model.plan.positions, graph.input_name)
    y = members_first(graph, y, model.output_shape[0])  # an ensemble that ends in images
    lead = [] if graph.ensemble is None else [graph.ensemble]
    x_type = onnx.TensorProto.INT64 if model.integer_input else graph.elem_type  # token ids
    inputs = [helper.make_tensor_value_info("x", x_type,
                                            [batch_dim, *_dims(model.input_shape, "CHW")])]
    outputs = [helper.make_tensor_value_info("y", graph.elem_type, [
        *lead, batch_dim, *_dims(model.output_shape, ["y_C", "y_H", "y_W"])])]
    graph.finish(y, "y")
    g = helper.make_graph(graph.nodes, "nnkernel", inputs, outputs, graph.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(g, opset_imports=opsets, producer_name="nnkernel",
                              producer_version=__version__,
                              doc_string="nnkernel Sequential in evaluation mode")
    # The oldest IR version that carries this opset: older runtimes can still read the file.
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    meta = {"nnkernel_version": __version__, "nnkernel_config": json.dumps(config),
            "preprocessing": json.dumps(preprocessing or {})}
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _check_exportable(the_plan) -> None:
    for pos in the_plan.walk():
        layer = pos.layer.config()
        kind = layer.get("type")
        if kind not in _LAYER_BUILDERS:
            raise ConfigError(f"cannot export layer {pos.path} ({kind}) to ONNX; exportable "
                              f"layers: {', '.join(EXPORTABLE_LAYERS)}")
        act = layer.get("activation", "identity")
        if kind in ("Dense", "Conv2D", *ACTIVATION_LAYERS) and act not in ACTIVATIONS:
            raise ConfigError(f"cannot export layer {pos.path} ({kind}): activation {act!r} "
                              f"has no ONNX form here; exportable: {', '.join(ACTIVATIONS)}")


def _dims(shape, names) -> list:
    """A per-sample shape as ONNX dims: sizes, and a name for each unknown (None) one: T for
    a sequence's length ((T,) ids or (T, C) vectors), else the last of ``names``."""
    if len(shape) <= 2 and shape[0] is None:
        names = ["T", "C"][:len(shape)]
    names = list(names)[-len(shape):] if len(shape) <= len(names) else [
        f"d{j}" for j in range(len(shape))]
    return [name if d is None else int(d) for d, name in zip(shape, names, strict=True)]


class _Graph:
    """Nodes and initializers being collected; each tensor name is used once."""

    input_name = "x"

    def __init__(self, onnx, dtype: np.dtype, ensemble: int | None, arrays: dict):
        self.onnx, self.dtype, self.ensemble, self.arrays = onnx, dtype, ensemble, arrays
        self.elem_type = onnx.helper.np_dtype_to_tensor_dtype(dtype)
        self.nodes, self.initializers, self._consts = [], [], {}
        self.keys, self.children, self.sample_ndim, self.int_consts = {}, {}, {}, set()
        self._params = set()

    def locate(self, the_plan) -> None:
        """Where each position's arrays live ("<path>.<name>" -> store key: shared and tied
        parameters name their owner's key), its children and its input's sample axes."""
        for pos in the_plan.walk():
            self.keys.update({f"{pos.path}.{n}": key for n, key in pos.keys.items()})
            self.children[pos.path] = pos.children
            self.sample_ndim[pos.path] = pos.sample_ndim

    def chain(self, positions, x: str) -> str:
        """The layers at ``positions`` applied in order to tensor ``x``."""
        for pos in positions:
            layer = pos.layer.config()
            x = _LAYER_BUILDERS[layer["type"]](self, pos.path, layer, x)
        return x

    def param(self, key: str, per_feature: bool = False, value=None) -> str:
        """An initializer named ``key`` (its owner's key, once); per-feature vectors of an
        ensemble as (E, 1, n)."""
        key = self.keys.get(key, key)
        if key in self._params:  # shared or tied: one initializer
            return key
        self._params.add(key)
        arr = np.asarray(self.arrays[key] if value is None else value, dtype=self.dtype)
        if per_feature and self.ensemble is not None:
            arr = np.expand_dims(arr, axis=-2)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, key))
        return key

    def const(self, value: float) -> str:
        """A scalar constant in the model's dtype (one initializer per value)."""
        if value not in self._consts:
            name = f"const_{len(self._consts)}"
            self.initializers.append(self.onnx.numpy_helper.from_array(
                np.asarray(value, dtype=self.dtype), name))
            self._consts[value] = name
        return self._consts[value]

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [name], name=name,
                                                     **attrs))
        return name

    def finish(self, y: str, output: str) -> None:
        """Make ``y`` the graph output: rename the node that produced it."""
        node = next((n for n in self.nodes if n.output[0] == y), None)
        if node is None:  # y is the input itself
            self.op("Identity", [y], output)
            return
        for n in self.nodes:  # every node reading y now reads the output name
            n.input[:] = [output if v == y else v for v in n.input]
        node.output[0] = output


def _dense(g: _Graph, i: int, layer: dict, x: str) -> str:
    z = g.op("MatMul", [x, g.param(f"{i}.W")], f"{i}.matmul")
    z = g.op("Add", [z, g.param(f"{i}.b", per_feature=True)], f"{i}.add_b")
    return activation(g, layer, z, f"{i}.")


def _activation_layer(g: _Graph, i: int, layer: dict, x: str) -> str:
    return activation(g, layer, x, f"{i}.")


def _dropout(g: _Graph, i: int, layer: dict, x: str) -> str:
    return x  # inverted dropout: nothing to undo at inference


def _batchnorm(g: _Graph, i: int, layer: dict, x: str) -> str:
    eps = float(layer["eps"])
    keys = [f"{i}.{name}" for name in ("gamma", "beta", "running_mean", "running_var")]
    if g.ensemble is None:
        return g.op("BatchNormalization", [x, *(g.param(k) for k in keys[:3]),
                                           var_plus_eps(g, i, keys[3], eps)],
                    f"{i}.batchnorm", epsilon=attribute_eps(g, eps))
    gamma, beta, mean = (g.param(k, per_feature=True) for k in keys[:3])
    # 1/√(var + eps) computed once here, in the model's dtype, as BatchNorm.forward does.
    var = np.asarray(g.arrays[keys[3]], dtype=g.dtype)
    inv_std = g.param(f"{i}.inv_std", per_feature=True, value=1.0 / np.sqrt(var + eps))
    t = g.op("Sub", [x, mean], f"{i}.centred")
    t = g.op("Mul", [t, inv_std], f"{i}.xhat")
    t = g.op("Mul", [gamma, t], f"{i}.scaled")
    return g.op("Add", [t, beta], f"{i}.batchnorm")


def _layernorm(g: _Graph, i: int, layer: dict, x: str) -> str:
    eps = float(layer["eps"])
    gamma, beta = f"{i}.gamma", f"{i}.beta"
    per_feature = g.ensemble is not None
    if g.dtype != np.float32:
        t = _layernorm_float64(g, i, x, eps)
    elif not per_feature:
        return g.op("LayerNormalization", [x, g.param(gamma), g.param(beta)], f"{i}.layernorm",
                    axis=-1, epsilon=eps)
    else:
        ones = g.param(f"{i}.ones", value=np.ones(int(layer["n"])))
        t = g.op("LayerNormalization", [x, ones], f"{i}.xhat", axis=-1, epsilon=eps)
    t = g.op("Mul", [g.param(gamma, per_feature=per_feature), t], f"{i}.scaled")
    return g.op("Add", [t, g.param(beta, per_feature=per_feature)], f"{i}.layernorm")


def _layernorm_float64(g: _Graph, i: int, x: str, eps: float) -> str:
    """x̂ = (x − mean)·(1/√(var + eps)) over the last axis, written out as LayerNorm.forward
    computes it: LayerNormalization's epsilon attribute is 32-bit."""
    def mean(v: str, name: str) -> str:
        if g.opset >= 18:  # axes became an input
            axes = f"{i}.axes"
            if not any(t.name == axes for t in g.initializers):
                g.initializers.append(g.onnx.numpy_helper.from_array(
                    np.asarray([-1], dtype=np.int64), axes))
            return g.op("ReduceMean", [v, axes], name, keepdims=1)
        return g.op("ReduceMean", [v], name, axes=[-1], keepdims=1)

    centred = g.op("Sub", [x, mean(x, f"{i}.mean")], f"{i}.centred")
    var = mean(g.op("Mul", [centred, centred], f"{i}.squared"), f"{i}.var")
    std = g.op("Sqrt", [g.op("Add", [var, g.const(eps)], f"{i}.var_eps")], f"{i}.std")
    inv_std = g.op("Div", [g.const(1.0), std], f"{i}.inv_std")
    return g.op("Mul", [centred, inv_std], f"{i}.xhat")


_LAYER_BUILDERS = {"Dense": _dense, "Dropout": _dropout, "BatchNorm": _batchnorm,
                   "LayerNorm": _layernorm,
                   **{name: _activation_layer for name in ACTIVATION_LAYERS}, **_CONV_BUILDERS,
                   **_SEQUENCE_BUILDERS}
