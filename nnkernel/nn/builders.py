"""Networks by description: ``mlp(784, [256, 256], 10)`` for the command line, bench and sklearn."""

from __future__ import annotations

from . import layers as L
from .activations import get_activation
from .init import default_init
from .sequential import Sequential


def activation_layer(activation) -> L.ActivationLayer:
    """The layer of an activation given by name, class or instance, keeping its parameters
    (LeakyReLU(alpha=0.2) stays 0.2)."""
    g = get_activation(activation)
    layer = L.LAYERS[type(g).__name__]()
    layer.activation = g
    return layer


def mlp_layers(n_in: int, hidden, n_out: int, *, activation="relu", dropout: float = 0.0,
               batchnorm: bool = False) -> list:
    """Dense layers of the given widths: each hidden one followed by its activation (with
    ``batchnorm``: Dense, BatchNorm, activation), then Dropout if asked; a linear output."""
    g = get_activation(activation)
    stack, width = [], n_in
    for size in hidden:
        if batchnorm:  # initialised for the activation after the BatchNorm, as cnn_layers' convs
            stack += [L.Dense(width, size, init=default_init(g.name)), L.BatchNorm(size),
                      activation_layer(g)]
        else:
            stack.append(L.Dense(width, size, activation=activation))
        if dropout:
            stack.append(L.Dropout(dropout))
        width = size
    stack.append(L.Dense(width, n_out))
    return stack


def mlp(n_in: int, hidden, n_out: int, *, activation="relu", dropout: float = 0.0,
        batchnorm: bool = False, **model_options) -> Sequential:
    """A multilayer perceptron; ``model_options`` go to Sequential (seed, dtype, backend, ...)."""
    return Sequential(*mlp_layers(n_in, hidden, n_out, activation=activation, dropout=dropout,
                                  batchnorm=batchnorm), **model_options)


# Activations g that never decrease: max(g(a), g(b)) = g(max(a, b)), with the same first
# argmax and the same gradient (for ReLU too: a window whose maximum is <= 0 gets none).
MONOTONE = {"identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh"}


def cnn_layers(image_shape, channels, hidden, n_out: int, *, activation="relu",
               dropout: float = 0.0, batchnorm: bool = False) -> list:
    """The command line's CNN: per entry of ``channels`` a 3×3 convolution (padding 1), its
    activation and a 2×2 max-pool (with ``batchnorm``, BatchNorm2D after the convolution);
    then Flatten and `mlp_layers` over the flattened maps.

    A monotone activation (ReLU, tanh, ...) comes after the pool, not before: the same
    function and gradient, on a quarter of the values.
    """
    from .conv import Conv2D, Flatten, MaxPool2D
    from .conv_norm import BatchNorm2D

    g = get_activation(activation)
    after_pool = g.name in MONOTONE and getattr(g, "alpha", 0.0) >= 0.0  # α < 0: not monotone
    stack, c_in = [], image_shape[0]
    for c in channels:
        if not (batchnorm or after_pool):  # e.g. GELU: the activation fused into the conv
            stack += [Conv2D(c_in, c, 3, padding=1, activation=activation), MaxPool2D(2)]
        else:
            stack.append(Conv2D(c_in, c, 3, padding=1, init=default_init(g.name)))
            stack += [BatchNorm2D(c)] if batchnorm else []
            act = activation_layer(g)
            stack += [MaxPool2D(2), act] if after_pool else [act, MaxPool2D(2)]
        c_in = c
    stack.append(Flatten())
    shape = tuple(image_shape)
    for layer in stack:  # a ShapeError here names the block that shrinks the image to nothing
        shape = layer.output_shape(shape)
    return stack + mlp_layers(shape[0], hidden, n_out, activation=activation, dropout=dropout,
                              batchnorm=batchnorm)


def cnn(image_shape, channels, hidden, n_out: int, *, activation="relu", dropout: float = 0.0,
        batchnorm: bool = False, **model_options) -> Sequential:
    """A CNN (`cnn_layers`) for images of ``image_shape`` (C, H, W); ``model_options`` go to
    Sequential."""
    return Sequential(*cnn_layers(image_shape, channels, hidden, n_out, activation=activation,
                                  dropout=dropout, batchnorm=batchnorm),
                      input_shape=tuple(image_shape), **model_options)
