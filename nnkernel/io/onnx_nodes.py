"""ONNX nodes more than one layer writes: activations, and normalisation's eps.

Used by `onnx_export` (Dense, the activation layers, BatchNorm), `onnx_conv` (Conv2D,
BatchNorm2D) and `onnx_sequence`; ``g`` is the graph being written (`onnx_export._Graph`).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

_ELEMENTWISE = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}
_WITH_ALPHA = {"leaky_relu": "LeakyRelu", "elu": "Elu"}
ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "swish", "gelu",
               "softmax")
_GELU_C = float(np.sqrt(2.0 / np.pi))  # the constant of nnkernel.nn.activations.GELU


def activation(g, layer: dict, z: str, p: str) -> str:
    """a = g(z) for the activation named in a layer's config; ``p`` prefixes node names."""
    act = layer.get("activation", "identity")
    if act == "identity":
        return z
    if act in _ELEMENTWISE:
        return g.op(_ELEMENTWISE[act], [z], f"{p}{act}")
    if act in _WITH_ALPHA:
        alpha = float(layer["alpha"])
        if g.dtype == np.float32:
            return g.op(_WITH_ALPHA[act], [z], f"{p}{act}", alpha=alpha)
        return _alpha_formula(g, act, alpha, z, p)
    if act == "swish":  # z σ(z)
        return g.op("Mul", [z, g.op("Sigmoid", [z], f"{p}swish.sigmoid")], f"{p}swish")
    if act == "gelu":
        # ½z(1 + tanh(c(z + 0.044715 z³))), in the order activations.GELU.forward computes it
        # (0.044715·z·z·z left to right), so float32 rounding matches up to tanh's own.
        t = g.op("Mul", [g.const(0.044715), z], f"{p}gelu.k_z")
        t = g.op("Mul", [t, z], f"{p}gelu.k_z2")
        t = g.op("Mul", [t, z], f"{p}gelu.k_z3")
        t = g.op("Add", [z, t], f"{p}gelu.inner")
        t = g.op("Mul", [g.const(_GELU_C), t], f"{p}gelu.scaled")
        t = g.op("Tanh", [t], f"{p}gelu.tanh")
        t = g.op("Add", [g.const(1.0), t], f"{p}gelu.one_plus")
        half = g.op("Mul", [g.const(0.5), z], f"{p}gelu.half_z")
        return g.op("Mul", [half, t], f"{p}gelu")
    if act == "softmax":
        return g.op("Softmax", [z], f"{p}softmax", axis=-1)
    raise ConfigError(f"activation {act!r} has no ONNX form here")  # _check_exportable stops it


def _alpha_formula(g, act: str, alpha: float, z: str, p: str) -> str:
    """LeakyReLU and ELU of a float64 model, as activations.py writes them.

    ONNX float attributes are 32-bit, so LeakyRelu(alpha=0.2) would compute with
    0.2000000030 (an error of 1e-8 relative in float64); a float64 constant keeps
    alpha exact. onnxruntime also has no float64 Elu kernel.
    """
    a = g.const(alpha)
    if act == "leaky_relu":  # max(z, αz), or min(z, αz) for α > 1
        az = g.op("Mul", [a, z], f"{p}leaky_relu.alpha_z")
        return g.op("Max" if alpha <= 1.0 else "Min", [z, az], f"{p}leaky_relu")
    # max(z, 0) + α(e^min(z, 0) − 1); ONNX has no expm1, and in float64 the
    # difference from it is below 1e-16 absolute
    zero = g.const(0.0)
    pos = g.op("Max", [z, zero], f"{p}elu.pos")
    neg = g.op("Exp", [g.op("Min", [z, zero], f"{p}elu.neg_z")], f"{p}elu.exp")
    neg = g.op("Sub", [neg, g.const(1.0)], f"{p}elu.expm1")
    return g.op("Add", [pos, g.op("Mul", [a, neg], f"{p}elu.alpha_expm1")], f"{p}elu")


def attribute_eps(g, eps: float) -> float:
    """The epsilon attribute of a normalisation node. ONNX float attributes are 32-bit
    (1e-5 is stored as 9.99999975e-06), so in a float64 model eps goes into the variance
    instead (`var_plus_eps`) and the attribute is 0."""
    return eps if g.dtype == np.float32 else 0.0


def var_plus_eps(g, i: int, key: str, eps: float, stack=None) -> str:
    """The running variance for BatchNormalization: as saved in a float32 model; in a
    float64 one var + eps, summed in float64 as BatchNorm.forward does, under a name
    of its own ("<i>.running_var_plus_eps")."""
    if g.dtype == np.float32:
        return (stack or g.param)(key)
    value = np.asarray(g.arrays[key], dtype=g.dtype) + eps
    return (stack or g.param)(f"{i}.running_var_plus_eps", value=value)
