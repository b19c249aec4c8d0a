"""BatchNorm2D and Dropout2D: per-channel normalisation and dropout of feature maps.

Both act on images (N, C, H, W) (or an ensemble's (E, N, C, H, W)) with one
statistic or one coin per channel, as `torch.nn.BatchNorm2d` and
`torch.nn.Dropout2d`. The element-wise `Dropout` works on feature maps too
(any shape); Dropout2D drops whole channels, which is what helps convolutions,
whose neighbouring pixels are strongly correlated.
"""

from __future__ import annotations

import math

import numpy as np

from ..checks import in_range
from ..errors import ConfigError, ShapeError
from .conv import image_shape
from .layer import Layer, per_member, positive_int, register_layer, stacked
from .layers import Dropout, batch_norm


def _channels(ctx, v):
    """A per-channel vector (C,) or (E, C), shaped to broadcast over (.., N, C, H, W)."""
    xp = ctx.xp
    if ctx.ensemble is None:
        return xp.reshape(v, (v.shape[0], 1, 1))
    return xp.reshape(v, (v.shape[0], 1, v.shape[1], 1, 1))


@register_layer
class BatchNorm2D(Layer):
    """Normalise each channel over the batch and the pixels (N, H, W), per member.

    Training uses the batch mean and biased variance and updates running averages
    (momentum 0.1, unbiased variance, as torch.nn.BatchNorm2d); evaluation uses them.
    y = γ x̂ + β with x̂ = (x − μ)/√(σ² + eps), γ and β one per channel.
    """

    param_names = ("gamma", "beta")
    state_names = ("running_mean", "running_var")

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        self.channels = positive_int("BatchNorm2D channels", channels)
        if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0
                and math.isfinite(eps)):
            raise ConfigError(f"BatchNorm2D eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.momentum = in_range("BatchNorm2D momentum", momentum, 0.0, 1.0)

    def input_shape(self):
        return (self.channels, None, None)

    def output_shape(self, shape):
        C, H, W = image_shape(self, shape)
        if C is not None and C != self.channels:
            raise ShapeError(f"BatchNorm2D({self.channels}) receives {C} channels from the "
                             f"layer before it")
        return (self.channels, H, W)

    def param_shapes(self):
        return {"gamma": (self.channels,), "beta": (self.channels,)}

    def state_shapes(self):
        return {"running_mean": (self.channels,), "running_var": (self.channels,)}

    def init_params(self, rng, ensemble=None, next_layer=None):
        shape = stacked((self.channels,), ensemble)
        return {"gamma": np.ones(shape), "beta": np.zeros(shape)}

    def init_state(self, ensemble=None):
        shape = stacked((self.channels,), ensemble)
        return {"running_mean": np.zeros(shape), "running_var": np.ones(shape)}

    def forward(self, ctx, x, train):
        x = per_member(ctx, x)  # a shared input: statistics still per member
        axes = (0, 2, 3) if ctx.ensemble is None else (1, 3, 4)  # N, H, W
        return batch_norm(self, ctx, x, train, axes, lambda v: _channels(ctx, v),
                          "values per channel")

    def config(self):
        return {"type": "BatchNorm2D", "channels": self.channels, "eps": self.eps,
                "momentum": self.momentum}


@register_layer
class Dropout2D(Dropout):
    """Channel dropout: in training zero each (sample, channel) map with probability p and
    scale the rest by 1/(1 − p), as torch.nn.Dropout2d; the identity in evaluation."""

    def output_shape(self, shape):
        return image_shape(self, shape)

    def forward(self, ctx, x, train):
        if not train or self.p == 0.0:
            return x, _identity
        xp = ctx.xp
        x = per_member(ctx, x)
        coins = ctx.random.uniform((*x.shape[:-2], 1, 1), x.dtype)  # one per (n, c) map
        mask = xp.astype(coins >= self.p, x.dtype) * (1.0 / (1.0 - self.p))

        def backprop(dy, need_dx=True):
            return dy * mask

        return x * mask, backprop

    def config(self):
        return {"type": "Dropout2D", "p": self.p}


def _identity(dy, need_dx=True):
    return dy
