"""Combinators: layers made of layers. `Residual` is y = x + f(x).

    block = nk.Residual(nk.LayerNorm(C), nk.MultiHeadAttention(C, heads))   # x + attn(ln(x))

f is the chain of the given layers. Backward adds the two paths' gradients:
dL/dx = dL/dy + (∂f/∂x)ᵀ dL/dy. The layers inside keep their parameters in the
model's one flat store, under keys that say where they live ("3.1.Wqkv": layer 1
of the Residual at position 3). A transformer block and a ResNet block
(``Residual(Conv2D, BatchNorm2D, ReLU, Conv2D)``) are the same combinator.
"""

from __future__ import annotations

from ..errors import ConfigError, ShapeError
from .layer import Layer, register_layer


def chain_forward(ctx, x, train, side=None):
    """The children of ``ctx`` applied in order: (y, backprop of the chain). ``side``: side
    inputs, each passed to the layers that take it."""
    backprops = []
    for child in ctx.children:
        wanted = {k: v for k, v in side.items() if k in child.layer.side_inputs} if side else {}
        x, backprop = child.layer.forward(child, x, train, **wanted)
        backprops.append(backprop)

    def backprop(dy, need_dx=True):
        for i in range(len(backprops) - 1, -1, -1):
            dy = backprops[i](dy, need_dx or i > 0)
        return dy

    return x, backprop


@register_layer
class Residual(Layer):
    """y = x + f(x), f the chain of ``layers`` (which must keep x's shape)."""

    def __init__(self, *layers: Layer):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ConfigError("Residual needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ConfigError(f"Residual layer {i} is {type(layer).__name__}, not an "
                                  f"nnkernel layer")
        self.layers = tuple(layers)

    @property
    def children(self):
        return self.layers

    @property
    def stochastic(self):
        return any(layer.stochastic for layer in self.layers)

    @property
    def side_inputs(self):
        return tuple(sorted({n for layer in self.layers for n in layer.side_inputs}))

    def input_shape(self):
        return next((s for s in (layer.input_shape() for layer in self.layers)
                     if s is not None), None)

    def output_shape(self, shape):
        out = tuple(shape)
        for layer in self.layers:
            out = tuple(layer.output_shape(out))
        if len(out) != len(shape) or any(a is not None and b is not None and a != b
                                         for a, b in zip(out, shape, strict=True)):
            raise ShapeError(f"a Residual's layers must keep the shape of their input, but "
                             f"they turn {tuple(shape)} into {out}")
        return tuple(shape)

    def forward(self, ctx, x, train, **side):
        fx, f_backprop = chain_forward(ctx, x, train, side)
        y = x + fx  # y = x + f(x)

        def backprop(dy, need_dx=True):
            dfx = f_backprop(dy, need_dx)  # (∂f/∂x)ᵀ dy, and f's parameter gradients
            return dy + dfx if need_dx else None

        return y, backprop

    def config(self):
        return {"type": "Residual"}  # the model lists the layers, by position

    @classmethod
    def from_config(cls, cfg):
        return cls(*cfg["layers"])

    def __repr__(self):
        return f"Residual({', '.join(repr(layer) for layer in self.layers)})"
