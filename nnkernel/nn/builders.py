"""Networks by description: ``mlp(784, [256, 256], 10)`` for the command line, bench and sklearn."""

from __future__ import annotations

from . import layers as L
from .activations import get_activation
from .sequential import Sequential


def mlp_layers(n_in: int, hidden, n_out: int, *, activation="relu", dropout: float = 0.0,
               batchnorm: bool = False) -> list:
    """Dense layers of the given widths: each hidden one followed by its activation (with
    ``batchnorm``: Dense, BatchNorm, activation), then Dropout if asked; a linear output."""
    act_layer = L.LAYERS[type(get_activation(activation)).__name__]
    stack, width = [], n_in
    for size in hidden:
        if batchnorm:
            stack += [L.Dense(width, size), L.BatchNorm(size), act_layer()]
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
