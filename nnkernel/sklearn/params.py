"""The estimators' constructor parameters, checked in one place.

scikit-learn's rule: ``__init__`` stores its arguments unchanged and ``fit`` validates
them. `check_params` does all of it and returns the `Settings` one fit uses, so a
later switch to shared validators (the command line's run settings) is one module.
Every refusal is a ValueError (nnkernel's ConfigError) naming the parameter.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_random_state

from ..backend import backend_class
from ..checks import in_range, integer, is_int
from ..errors import ConfigError
from ..nn.sequential import Sequential
from ..optim import Optimizer, optimizer_class

# Hidden activations: nnkernel's names, and MLPClassifier's for the same functions.
ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity", "leaky_relu", "elu", "gelu", "swish",
               "silu")
ALIASES = {"logistic": "sigmoid", "linear": "identity"}
# The parameters that describe the default network: with model= they must keep these values.
MLP_DEFAULTS = {"hidden_layer_sizes": (100,), "activation": "relu", "dropout": 0.0,
                "batchnorm": False}
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Settings:
    """What one fit needs from the constructor parameters, checked."""

    model: object            # None, a Sequential or a builder callable
    hidden: tuple            # hidden layer widths (model is None)
    activation: str          # nnkernel's name
    dropout: float
    batchnorm: bool
    epochs: int
    tol: float
    n_iter_no_change: float  # a positive int, or math.inf (never stop early)
    validation_fraction: float
    shuffle: bool
    backend: object          # None: the given model's, else the caller's arrays' (or NumPy)
    dtype: str | None        # None: the given model's, else float32


def check_params(est) -> Settings:
    model = est.model
    if model is not None:
        if not (isinstance(model, Sequential) or callable(model)):
            raise ConfigError(f"model must be an nnkernel Sequential or a function "
                              f"(n_features_in, n_outputs) -> Sequential or list of layers, got "
                              f"{type(model).__name__}")
        changed = [k for k, v in MLP_DEFAULTS.items() if _differs(getattr(est, k), v)]
        if changed:
            raise ConfigError(f"model= gives the network, so {', '.join(changed)} (which "
                              f"describe the default network) cannot be set beside it; build "
                              f"them into the model")
    sizes = est.hidden_layer_sizes
    sizes = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
               for s in sizes):
        raise ConfigError(f"hidden_layer_sizes must be positive integers, got {sizes!r}")
    name = str(est.activation).lower()
    name = ALIASES.get(name, name)
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {est.activation!r}; valid: "
                          f"{', '.join(sorted(ACTIVATIONS + tuple(ALIASES)))}")
    dropout = in_range("dropout", est.dropout, 0.0, 1.0, hi_open=True)
    patience = est.n_iter_no_change
    if not (isinstance(patience, (float, np.floating)) and patience == math.inf):
        patience = integer("n_iter_no_change", patience)
    fraction = est.validation_fraction
    if est.early_stopping:
        fraction = in_range("validation_fraction", fraction, 0.0, 1.0, lo_open=True,
                            hi_open=True)
    _check_optimizer(est.optimizer, est.lr, est.weight_decay)
    check_batch_size(est.batch_size)
    if est.backend is not None:
        backend_class(est.backend)  # refuses an unknown name, listing the valid ones
    dtype = est.dtype
    if dtype is not None:
        dtype = np.dtype(dtype).name if isinstance(dtype, type) else str(dtype)
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be None, 'float32' or 'float64', got {est.dtype!r}")
    return Settings(model=model, hidden=sizes, activation=name, dropout=dropout,
                    batchnorm=bool(est.batchnorm), epochs=integer("epochs", est.epochs),
                    tol=in_range("tol", est.tol, 0.0, math.inf), n_iter_no_change=patience,
                    validation_fraction=fraction, shuffle=bool(est.shuffle), backend=est.backend,
                    dtype=dtype)


def _differs(value, default) -> bool:
    if isinstance(default, tuple):
        value = (value,) if isinstance(value, numbers.Integral) else tuple(value)
    return value != default


def _check_optimizer(optimizer, lr, weight_decay) -> None:
    if isinstance(optimizer, Optimizer):
        given = [k for k, v in (("lr", lr), ("weight_decay", weight_decay)) if v is not None]
        if given:  # refused rather than ignored: the instance carries its own
            raise ConfigError(f"optimizer is an instance ({optimizer!r}), which carries its own "
                              f"{' and '.join(given)}; set them on it, or give the optimizer "
                              f"by name")
        return
    if not isinstance(optimizer, str):
        raise ConfigError(f"optimizer must be a name ('adam', 'adamw', 'sgd', 'rmsprop') or an "
                          f"nnkernel optimizer instance, got {optimizer!r}")
    optimizer_class(optimizer)  # refuses an unknown name, listing the valid ones
    if lr is not None:
        in_range("lr", lr, 0.0, math.inf, lo_open=True, hi_open=True)
    if weight_decay is not None:
        in_range("weight_decay", weight_decay, 0.0, math.inf, hi_open=True)


def check_batch_size(batch_size) -> None:
    if isinstance(batch_size, str) and batch_size == "auto":
        return
    if not is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size must be 'auto' or a positive integer, got "
                          f"{batch_size!r}")


def seed_of(random_state) -> int:
    """The int seed nnkernel takes: an int as is (so random_state=0 gives the weights of
    nk.Sequential(seed=0)), else one drawn from the RandomState (None: the global one)."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
