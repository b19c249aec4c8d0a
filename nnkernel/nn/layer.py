"""`Layer`: what every layer is — a configuration, shapes, initial arrays and a forward.

    y, backprop = layer.forward(ctx, x, train)
    dx = backprop(dy, need_dx)          # and dL/dθ into ctx.grads

A layer object holds only its configuration: everything backward needs is
captured by the `backprop` closure of one call (thinc's ``(Y, backprop)``), so
the same object can be used twice and nothing depends on "the last forward".
Parameters live in the model's store and reach the layer as ``ctx.params``
(see `nnkernel.nn.context`); their keys are "<path>.<name>", the path being the
layer's position ("3", or "3.0" inside a combinator at position 3).

For an ensemble of E models (``ctx.ensemble = E``) every parameter has a
leading axis of length E and activations are (E, N, features); per-feature
vectors (b, gamma, beta) broadcast over the rows through `rows`.

This module also keeps the registry of layer classes by name (`register_layer`,
`layer_from_config`), which checkpoints use to rebuild a model.
"""

from __future__ import annotations

import numpy as np

from ..checks import integer
from ..errors import ConfigError


class Layer:
    param_names: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()
    stochastic = False       # draws random numbers in training (Dropout)
    integer_input = False    # takes integer ids, not features (Embedding)
    side_inputs: tuple[str, ...] = ()  # keyword inputs of model.forward it takes ("lengths")

    @property
    def children(self) -> tuple:
        """A combinator's own layers, applied in order (Residual); () for a plain layer."""
        return ()

    def vocabulary(self) -> int | None:
        """For a layer that takes integer ids: how many (ids are 0..vocabulary−1)."""
        return None

    @property
    def ties(self) -> dict:
        """Parameters that are another layer's: {name: (that layer, its name)}."""
        return {}

    def input_shape(self) -> tuple | None:
        """The per-sample input shape this layer fixes (None: it takes any)."""
        return None

    def output_shape(self, shape: tuple) -> tuple:
        """The per-sample output shape for a per-sample input shape (None entries: unknown)."""
        return shape

    def param_shapes(self) -> dict[str, tuple]:
        """Each parameter's shape (of one member), known without allocating anything."""
        return {}

    def state_shapes(self) -> dict[str, tuple]:
        return {}

    def init_params(self, rng, ensemble=None, next_layer=None) -> dict[str, np.ndarray]:
        """Initial parameters as float64 host arrays (with a leading E axis for an ensemble)."""
        return {}

    def init_state(self, ensemble=None) -> dict[str, np.ndarray]:
        return {}

    def forward(self, ctx, x, train: bool):
        """(y, backprop): the output and a function dy, need_dx -> dx."""
        raise NotImplementedError

    def config(self) -> dict:
        """The constructor arguments, for checkpoints (`from_config` inverts it)."""
        return {"type": type(self).__name__}

    @classmethod
    def from_config(cls, cfg: dict) -> Layer:
        """The layer of a `config()` (without its "type"); combinators get their layers
        built, under "layers", and a tied layer the layer it ties to, under "tied_to"."""
        return cls(**cfg)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items()
                         if k != "type" and v is not None and v != "identity")
        return f"{type(self).__name__}({args})"


# -- helpers for layers ----------------------------------------------------------------
def stacked(shape, ensemble):
    return tuple(shape) if ensemble is None else (ensemble, *shape)


def rows(ctx, v):
    """A per-feature vector, shaped to broadcast over rows: (E, D) -> (E, 1, D)."""
    return v if ctx.ensemble is None else ctx.xp.expand_dims(v, axis=-2)


def row_axes(ctx, x) -> tuple[int, ...]:
    """The axes a per-feature gradient sums over: all but the member and feature axes."""
    start = 0 if ctx.ensemble is None else 1
    return tuple(range(start, x.ndim - 1))


def per_member(ctx, x):
    """Give a shared input (N, ...) its member axis, so each member gets its own draw or
    statistics; ``ctx.sample_ndim`` is the number of per-sample axes at this position."""
    if ctx.ensemble is not None and x.ndim == ctx.sample_ndim + 1:
        return ctx.xp.broadcast_to(x, (ctx.ensemble, *x.shape))
    return x


def positive_int(name, value) -> int:
    """An int > 0 (not a bool, not 64.5), or a ConfigError naming the argument."""
    return integer(name, value, minimum=1)


def pass_through(dy, need_dx=True):
    """The backprop of a layer that passes its input on unchanged."""
    return dy


# -- the registry of layer classes, for checkpoints ----------------------------------------
LAYERS: dict[str, type[Layer]] = {}


def register_layer(cls):
    """Make a Layer subclass known to `layer_from_config` (checkpoints) by its class name."""
    LAYERS[cls.__name__] = cls
    return cls


def layer_from_config(cfg: dict) -> Layer:
    """Rebuild a layer from `Layer.config()` (used when loading checkpoints)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"a layer config is a JSON object, got {type(cfg).__name__}")
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind not in LAYERS:
        raise ConfigError(f"unknown layer type {kind!r}; valid: {', '.join(sorted(LAYERS))}")
    try:
        return LAYERS[kind].from_config(cfg)
    except (TypeError, KeyError) as e:
        raise ConfigError(f"invalid {kind} layer config {cfg}: {e}") from None
