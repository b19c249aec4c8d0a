"""ONNX node builders for the convolutional layers (used by `nnkernel.io.onnx_export`).

    Conv2D       Conv(x, W, b; kernel_shape, strides, pads), then its fused activation
    MaxPool2D    MaxPool(kernel_shape, strides);  AvgPool2D  AveragePool(same)
    BatchNorm2D  BatchNormalization(epsilon) with the running statistics (float64: with
                 running_var + eps and epsilon=0, as in onnx_export)
    Dropout2D    nothing (the identity at inference)
    Flatten      Flatten(axis=1)

The weights keep nnkernel's (and torch's) layout (C_out, C_in, kH, kW), so no
initializer is transposed.

An ensemble of E members has no direct ONNX form (Conv takes one set of weights),
so between its first convolution and its Flatten the graph keeps the members in
the channel axis, (N, E·C, H, W) with channel e·C + c for member e's channel c:

- a Conv of the shared input uses the E·C_out stacked kernels (W reshaped to
  (E·C_out, C_in, kH, kW)); a Conv of member channels is the same with group=E,
  so member e's kernels read only member e's channels;
- pooling and the element-wise activations do not mix channels and need nothing;
- BatchNormalization takes the members' statistics as one (E·C,) vector each (a
  shared input is first tiled E times along the channels);
- Flatten reshapes (N, E, C·H·W) and transposes it to nnkernel's (E, N, C·H·W),
  and a model that ends without Flatten gets its (E, N, C, H, W) output the same way.

onnxruntime (1.32 here) implements Conv and AveragePool in float32 only: a float64
conv model exports to a valid graph (onnx.checker accepts it, and onnx's reference
evaluator runs it) that onnxruntime refuses to load.
"""

from __future__ import annotations

import numpy as np

from .onnx_nodes import activation, attribute_eps, var_plus_eps

CONV_LAYERS = ("Conv2D", "MaxPool2D", "AvgPool2D", "BatchNorm2D", "Dropout2D", "Flatten")


def _members_in_channels(g) -> bool:
    return getattr(g, "member_channels", False)


def _member_major(g, key: str, value=None) -> str:
    """An ensemble's per-member arrays (E, C, ...) as one stacked (E·C, ...) initializer."""
    arr = np.asarray(g.arrays[key] if value is None else value)
    if g.ensemble is not None:
        arr = arr.reshape(arr.shape[0] * arr.shape[1], *arr.shape[2:])
    return g.param(key, value=arr)


def _ints(g, name: str, values) -> str:
    """An int64 initializer (shapes for Reshape, Concat)."""
    g.initializers.append(g.onnx.numpy_helper.from_array(np.asarray(values, dtype=np.int64),
                                                         name))
    return name


def conv2d(g, i, layer, x):
    k, s, p = int(layer["kernel_size"]), int(layer["stride"]), int(layer["padding"])
    group = g.ensemble if g.ensemble is not None and _members_in_channels(g) else 1
    W, b = _member_major(g, f"{i}.W"), _member_major(g, f"{i}.b")
    z = g.op("Conv", [x, W, b], f"{i}.conv", kernel_shape=[k, k], strides=[s, s],
             pads=[p, p, p, p], group=group)
    if g.ensemble is not None:
        g.member_channels = True
    return activation(g, layer, z, f"{i}.")


def _pool(op):
    def build(g, i, layer, x):
        k, s = int(layer["kernel_size"]), int(layer["stride"])
        return g.op(op, [x], f"{i}.{op.lower()}", kernel_shape=[k, k], strides=[s, s])
    return build


def batchnorm2d(g, i, layer, x):
    if g.ensemble is not None and not _members_in_channels(g):  # a shared input, per member
        x = g.op("Tile", [x, _ints(g, f"{i}.repeats", [1, g.ensemble, 1, 1])], f"{i}.tile")
        g.member_channels = True
    eps = float(layer["eps"])
    keys = [f"{i}.{name}" for name in ("gamma", "beta", "running_mean", "running_var")]
    var = var_plus_eps(g, i, keys[3], eps, stack=lambda key, value=None: _member_major(
        g, key, value))
    return g.op("BatchNormalization", [x, *(_member_major(g, key) for key in keys[:3]), var],
                f"{i}.batchnorm", epsilon=attribute_eps(g, eps))


def dropout2d(g, i, layer, x):
    return x  # inverted dropout: nothing to undo at inference


def flatten(g, i, layer, x):
    if g.sample_ndim[i] == 1:
        return x  # already one feature axis: Flatten does nothing
    if not _members_in_channels(g):
        return g.op("Flatten", [x], f"{i}.flatten", axis=1)
    g.member_channels = False
    t = g.op("Reshape", [x, _ints(g, f"{i}.members_shape", [0, g.ensemble, -1])],
             f"{i}.split_members")
    return g.op("Transpose", [t], f"{i}.flatten", perm=[1, 0, 2])


def members_first(g, x, channels: int):
    """(N, E·C, H, W) back to nnkernel's (E, N, C, H, W), where a graph ends in that layout."""
    if not _members_in_channels(g):
        return x
    shape = g.op("Shape", [x], "out.shape")
    hw = g.op("Slice", [shape, _ints(g, "out.hw_start", [2]), _ints(g, "out.hw_end", [4])],
              "out.hw")
    target = g.op("Concat", [_ints(g, "out.lead", [0, g.ensemble, channels]), hw],
                  "out.members_shape", axis=0)
    t = g.op("Reshape", [x, target], "out.split_members")
    return g.op("Transpose", [t], "out.members_first", perm=[1, 0, 2, 3, 4])


BUILDERS = {"Conv2D": conv2d, "MaxPool2D": _pool("MaxPool"), "AvgPool2D": _pool("AveragePool"),
            "BatchNorm2D": batchnorm2d, "Dropout2D": dropout2d, "Flatten": flatten}
