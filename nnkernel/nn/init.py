"""Weight initialisation schemes, drawn on the host so every backend gets the same numbers.

Each scheme maps (shape, fan_in, fan_out, rng) to a float64 NumPy array; the
model casts it to its dtype and moves it to its device once, at construction.
Drawing on the host is what makes "same seed, same initial weights" hold on
NumPy, CuPy, torch and array-api-strict alike.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ..errors import ConfigError


def he_normal(shape, fan_in, fan_out, rng):
    """N(0, 2/fan_in): keeps the variance of ReLU activations constant across layers."""
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)


def he_uniform(shape, fan_in, fan_out, rng):
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape)


def glorot_normal(shape, fan_in, fan_out, rng):
    """N(0, 2/(fan_in + fan_out)): balances forward and backward variance (tanh, sigmoid)."""
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def glorot_uniform(shape, fan_in, fan_out, rng):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def lecun_normal(shape, fan_in, fan_out, rng):
    return rng.normal(0.0, math.sqrt(1.0 / fan_in), size=shape)


def zeros(shape, fan_in, fan_out, rng):
    return np.zeros(shape)


INITIALIZERS = {
    "he_normal": he_normal, "he_uniform": he_uniform,
    "glorot_normal": glorot_normal, "glorot_uniform": glorot_uniform,
    "xavier_normal": glorot_normal, "xavier_uniform": glorot_uniform,
    "lecun_normal": lecun_normal, "zeros": zeros,
}

# Activations after which He initialisation is the default.
RELU_FAMILY = {"relu", "leaky_relu", "elu", "swish", "gelu"}


def normal(std: float):
    """N(0, std²) whatever the fans (GPT-2 draws its weights with std 0.02); by name, the
    string "normal(0.02)", which a layer's config keeps."""
    def init(shape, fan_in, fan_out, rng):
        return rng.normal(0.0, std, size=shape)
    return init


_NORMAL = re.compile(r"normal\((.+)\)")


def get_initializer(spec):
    if callable(spec):
        return spec
    match = _NORMAL.fullmatch(spec) if isinstance(spec, str) else None
    if match:
        try:
            std = float(match.group(1))
        except ValueError:
            std = -1.0
        if not (std > 0 and math.isfinite(std)):
            raise ConfigError(f"init {spec!r}: the standard deviation must be a positive number")
        return normal(std)
    if spec not in INITIALIZERS:
        raise ConfigError(f"unknown init {spec!r}; valid: {', '.join(sorted(INITIALIZERS))}, "
                          f"normal(<std>)")
    return INITIALIZERS[spec]


def default_init(activation_name: str | None) -> str:
    return "he_normal" if activation_name in RELU_FAMILY else "glorot_uniform"
