"""The network and the optimizer of one fit.

The network comes from one of three places, and a fit never trains what the caller
passed in:

- ``hidden_layer_sizes`` (the default): the command line's MLP builder
  (`nnkernel.nn.builders.mlp`), so ``NNClassifier(batchnorm=True, random_state=s)``
  and ``nnkernel train --batchnorm --seed s`` start from the same weights;
- ``model=`` a Sequential: each fit starts from a copy of it (its weights, e.g. a
  pretrained network, are the starting point);
- ``model=`` a function ``(n_features_in, n_outputs) -> Sequential or list of layers``:
  called per fit, initialised from ``random_state``.

An optimizer given by name is made with ``lr`` (default 1e-3, MLPClassifier's
learning_rate_init); an instance is a template: each fit gets a fresh one with its
hyperparameters, never the moments of an earlier fit.
"""

from __future__ import annotations

import copy
import math

from ..backend import Backend
from ..errors import ConfigError
from ..nn.builders import mlp, mlp_layers
from ..nn.layers import LAYERS, ActivationLayer, Dense
from ..nn.sequential import Sequential
from ..optim import Optimizer, get_optimizer

DEFAULT_LR = 1e-3  # MLPClassifier's learning_rate_init
ACTIVATION_LAYERS = [name for name, cls in LAYERS.items() if issubclass(cls, ActivationLayer)]


def target_backend(settings, space, device) -> Backend | None:
    """Where a new network goes; None: where the model decides (a given Sequential: its own
    backend; else NumPy).

    The ``backend`` parameter wins; else a given Sequential keeps its own; else, under
    array_api_dispatch, the library and device of the caller's arrays (``space``).
    ``device`` is the estimator's ``device`` parameter.
    """
    name = settings.backend
    if name is None and isinstance(settings.model, Sequential):
        if device is None:
            return None
        name = settings.model.backend.name
    if name is None and space.name != "numpy":
        name, device = space.name, space.device if device is None else device
    if name is None and device is None:
        return None
    return Backend(name or "numpy", device)


def build_network(settings, n_in: int, n_out: int, seed: int, where) -> Sequential:
    """A new network for (n_in features, n_out outputs) on ``where`` (`target_backend`)."""
    dtype, model = settings.dtype, settings.model
    if model is None:
        return mlp(n_in, settings.hidden, n_out, activation=settings.activation,
                   dropout=settings.dropout, batchnorm=settings.batchnorm, seed=seed,
                   dtype=dtype or "float32", backend=where or "numpy")
    if isinstance(model, Sequential):
        net = model.copy(backend=where, dtype=dtype)
    else:
        made = model(n_in, n_out)
        if isinstance(made, (list, tuple)):
            net = Sequential(*made, seed=seed, dtype=dtype or "float32", backend=where or "numpy")
        elif isinstance(made, Sequential):  # rebuilt from its architecture with our seed
            net = Sequential.from_config({**made.config(), "seed": seed},
                                         backend=where or made.backend,
                                         dtype=dtype or made.config()["dtype"])
        else:
            raise ConfigError(f"model({n_in}, {n_out}) returned {type(made).__name__}; it must "
                              f"return an nnkernel Sequential or a list of layers")
    _check_fits(net, n_in, n_out)
    return net


def _check_fits(net: Sequential, n_in: int, n_out: int) -> None:
    if net.ensemble is not None:
        raise ConfigError("model is an ensemble; the estimators train one network (wrap each "
                          "member, or use nk.fit for ensembles)")
    if math.prod(net.input_shape) != n_in:
        raise ConfigError(f"model takes samples of shape {tuple(net.input_shape)} "
                          f"({math.prod(net.input_shape)} values), but X has {n_in} features")
    if len(net.output_shape) != 1 or net.n_out != n_out:
        raise ConfigError(f"model gives outputs of shape {tuple(net.output_shape)}, but y needs "
                          f"{n_out} outputs per sample")


def planned_layers(settings, n_in: int, n_out: int) -> list | None:
    """The layer configs a new network would have, without making its weights (a continued
    fit checks the fitted network against them); None for a builder: only calling it tells."""
    if settings.model is None:
        return [layer.config() for layer in mlp_layers(
            n_in, settings.hidden, n_out, activation=settings.activation,
            dropout=settings.dropout, batchnorm=settings.batchnorm)]
    if isinstance(settings.model, Sequential):
        return settings.model.config()["layers"]
    return None


def describe(layers: list) -> str:
    """'hidden layers (16, 8)' for the configs of an MLP's layers; the layer types too for
    anything else."""
    kinds = [c.get("type") for c in layers]
    widths = tuple(c["n_out"] for c in layers if c.get("type") == "Dense")[:-1]
    plain = set(kinds) <= {"Dense", "BatchNorm", "Dropout"} | set(ACTIVATION_LAYERS)
    return f"hidden layers {widths}" + ("" if plain else f" ({', '.join(map(str, kinds))})")


def new_optimizer(spec, lr, weight_decay) -> Optimizer:
    """A fresh optimizer: from a name with ``lr``/``weight_decay``, or with the
    hyperparameters of an instance (which is never stepped itself)."""
    if isinstance(spec, Optimizer):
        hypers = {k: v for k, v in spec.config().items() if k not in ("name", "t")}
        try:
            return type(spec)(**hypers, schedule=spec.schedule)
        except TypeError:  # a subclass whose constructor takes other names
            if spec.t or spec.state:
                raise ConfigError(f"cannot make a fresh copy of the optimizer {spec!r}, and it "
                                  f"has already taken {spec.t} steps; pass an unused "
                                  f"instance") from None
            return copy.deepcopy(spec)
    options = {"lr": DEFAULT_LR if lr is None else lr}
    if weight_decay is not None:  # else the optimizer's own default (AdamW: 0.01)
        options["weight_decay"] = weight_decay
    return get_optimizer(spec, **options)


def dense_views(net: Sequential, name: str) -> list:
    """The weight matrices ("W", (n_in, n_out) as MLPClassifier's coefs_) or biases ("b") of
    the Dense layers in order: views of the parameter store where the backend allows in-place
    writes, the current arrays elsewhere (array-api-strict, JAX)."""
    params = net.params
    keys = [f"{i}.{name}" for i, layer in enumerate(net.layers) if isinstance(layer, Dense)]
    return [params[k] for k in keys if k in params]
