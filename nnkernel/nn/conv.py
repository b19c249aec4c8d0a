"""Convolutional layers on NCHW images: Conv2D, MaxPool2D, AvgPool2D and Flatten.

Images are (N, C, H, W), an ensemble's (E, N, C, H, W), or (N, C, H, W) shared by
all members; Conv2D's weights are (C_out, C_in, kH, kW) and its bias (C_out,), as
`torch.nn.Conv2d`, so weights move between the two unchanged. The arithmetic is
in the kernels (`nnkernel.kernels.reference.conv`):

    X̂ = im2col(x),  Z = W̄ X̂ + b             forward, one (stacked) matrix product
    dW = δ X̂ᵀ,  db = Σ δ,  dX̂ = W̄ᵀ δ,  dx = col2im(dX̂)

and max-pooling's backward routes δ to each window's argmax. Per-sample shapes
are (C, H, W); an unknown height or width (None) is fixed by the first input.
BatchNorm2D and Dropout2D are in `nnkernel.nn.conv_norm`.
"""

from __future__ import annotations

import math

import numpy as np

from ..checks import integer
from ..errors import ConfigError, ShapeError
from ..kernels.reference.conv import conv_out_size
from . import activations as _act
from .init import default_init, get_initializer
from .layer import Layer, pass_through, per_member, positive_int, register_layer, stacked
from .layers import ActivationLayer, activation_config


def image_shape(layer, shape) -> tuple:
    """A per-sample shape that must be (C, H, W), else a ShapeError naming the layer."""
    if len(shape) != 3:
        raise ShapeError(f"{layer!r} takes images (channels, height, width) per sample, but the "
                         f"layer before it gives shape {_text(shape)}; put it before Flatten "
                         f"and pass Sequential(..., input_shape=(C, H, W)) for flat data")
    return tuple(shape)


def _text(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _out_size(layer, n, k, stride, padding):
    """One spatial output size (None stays None); a window that does not fit is a ShapeError."""
    if n is None:
        return None
    try:
        return conv_out_size(n, k, stride, padding)
    except ValueError as e:
        raise ShapeError(f"{layer!r}: {e}") from None


def _non_negative_int(name, value) -> int:
    return integer(name, value, minimum=0)


def _square(name, value) -> int:
    """A square kernel size or stride: an int, or an (n, n) pair (as torch accepts)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ConfigError(f"{name} must be one integer (square windows), got {value!r}")
        value = value[0]
    return positive_int(name, value)


def _shared_input(ctx, x) -> bool:
    """Whether x is an ensemble's shared input: (N, C, H, W) for E sets of weights."""
    return ctx.ensemble is not None and x.ndim == ctx.sample_ndim + 1


@register_layer
class Conv2D(Layer):
    """z = W ⋆ x + b (cross-correlation, as torch), a = g(z), on (N, C_in, H, W) images.

    ``kernel_size`` and ``stride`` are ints (square windows), ``padding`` zeros on
    every side. Initialised as Dense, with fan-in C_in·kH·kW and fan-out
    C_out·kH·kW: He normal before a ReLU-like activation, else Glorot uniform;
    ``alpha`` sets leaky_relu's or elu's parameter.
    """

    param_names = ("W", "b")

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 activation=None, init=None, alpha=None):
        self.in_channels = positive_int("Conv2D in_channels", in_channels)
        self.out_channels = positive_int("Conv2D out_channels", out_channels)
        self.kernel_size = _square("Conv2D kernel_size", kernel_size)
        self.stride = _square("Conv2D stride", stride)
        self.padding = _non_negative_int("Conv2D padding", padding)
        act = _act.get_activation(activation)
        if alpha is not None:
            if not hasattr(act, "alpha"):
                raise ConfigError(f"Conv2D alpha is a parameter of leaky_relu and elu, not of "
                                  f"{act.name}")
            act = type(act)(alpha)
        self.activation = act
        self.init = init
        if init is not None:
            get_initializer(init)

    def input_shape(self):
        return (self.in_channels, None, None)

    def output_shape(self, shape):
        C, H, W = image_shape(self, shape)
        if C is not None and C != self.in_channels:
            raise ShapeError(f"{self!r} expects {self.in_channels} input channels, but the "
                             f"layer before it gives {C}")
        k, s, p = self.kernel_size, self.stride, self.padding
        return (self.out_channels, _out_size(self, H, k, s, p), _out_size(self, W, k, s, p))

    def param_shapes(self):
        k = self.kernel_size
        return {"W": (self.out_channels, self.in_channels, k, k), "b": (self.out_channels,)}

    def init_params(self, rng, ensemble=None, next_layer=None):
        act = self.activation.name
        if act == "identity" and isinstance(next_layer, ActivationLayer):
            act = next_layer.activation.name  # Conv2D followed by ReLU(): He init
        init = get_initializer(self.init or default_init(act))
        area = self.kernel_size ** 2
        W = init(stacked(self.param_shapes()["W"], ensemble), self.in_channels * area,
                 self.out_channels * area, rng)
        return {"W": W, "b": np.zeros(stacked((self.out_channels,), ensemble))}

    def forward(self, ctx, x, train):
        W, b, k = ctx.params["W"], ctx.params["b"], ctx.k
        s, p, g = self.stride, self.padding, self.activation
        z, cols = k.conv2d(x, W, b, s, p)       # z = W̄ X̂ + b, X̂ = im2col(x)
        a = g.forward(ctx.xp, z)                # a = g(z)
        z = z if g.needs_z else None
        # A shared input's dx is one per member, as Dense's, so that Sequential.backward
        # (or the layer before) sums it over members; the kernel would sum it itself.
        x_shape = (ctx.ensemble, *x.shape) if _shared_input(ctx, x) else tuple(x.shape)

        def backprop(da, need_dx=True):
            dz = k.activation_backward(g, z, a, da)  # δ = da ⊙ g′(z), fused on a twin
            dx, dW, db = k.conv2d_backward(x_shape, cols, W, dz, s, p, need_dx,
                                           ctx.grads.out("W", "b"))
            ctx.grads.add("W", dW)              # dW = δ X̂ᵀ
            ctx.grads.add("b", db)              # db = Σ δ
            return dx                           # dx = col2im(W̄ᵀ δ)

        return a, backprop

    def config(self):
        return {"type": "Conv2D", "in_channels": self.in_channels,
                "out_channels": self.out_channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "padding": self.padding,
                **activation_config(self.activation),
                "init": self.init if isinstance(self.init, str) or self.init is None else None}


class _Pool2D(Layer):
    """Shared parts of the pooling layers: k×k windows every s pixels, no padding (floor)."""

    def __init__(self, kernel_size, stride=None):
        name = type(self).__name__
        self.kernel_size = _square(f"{name} kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else _square(f"{name} stride", stride)

    def output_shape(self, shape):
        C, H, W = image_shape(self, shape)
        k, s = self.kernel_size, self.stride
        return (C, _out_size(self, H, k, s, 0), _out_size(self, W, k, s, 0))

    def forward(self, ctx, x, train):
        # A shared input of an ensemble is pooled per member: the δ coming back is per
        # member, and the kernels' pooling contexts are for the shape they pooled.
        x = per_member(ctx, x)
        y, pool = self._pool(ctx.k)(x, self.kernel_size, self.stride)
        x_shape = tuple(x.shape)
        unpool = self._unpool(ctx.k)

        def backprop(dy, need_dx=True):
            return unpool(pool, dy, x_shape)

        return y, backprop

    def config(self):
        return {"type": type(self).__name__, "kernel_size": self.kernel_size,
                "stride": self.stride}


@register_layer
class MaxPool2D(_Pool2D):
    """y = the maximum of each k×k window (stride defaults to k); δ goes to the argmax."""

    @staticmethod
    def _pool(k):
        return k.max_pool2d

    @staticmethod
    def _unpool(k):
        return k.max_pool2d_backward


@register_layer
class AvgPool2D(_Pool2D):
    """y = the mean of each k×k window (stride defaults to k); δ/k² to every pixel of it."""

    @staticmethod
    def _pool(k):
        return k.avg_pool2d

    @staticmethod
    def _unpool(k):
        return k.avg_pool2d_backward


@register_layer
class Flatten(Layer):
    """(N, C, H, W) -> (N, C·H·W) in C order (as torch.flatten(x, 1)), for the Dense layers."""

    def output_shape(self, shape):
        if any(d is None for d in shape):
            return (None,)
        return (math.prod(shape),)

    def forward(self, ctx, x, train):
        k = ctx.sample_ndim
        if k == 1:
            return x, pass_through
        xp = ctx.xp
        sample = tuple(x.shape[x.ndim - k:])
        y = xp.reshape(x, (*x.shape[:x.ndim - k], math.prod(sample)))

        def backprop(dy, need_dx=True):
            return xp.reshape(dy, (*dy.shape[:-1], *sample))

        return y, backprop

    def config(self):
        return {"type": "Flatten"}
