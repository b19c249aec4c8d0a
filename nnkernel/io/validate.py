"""Checks on the arrays of a run: finite values, complete optimizer state, the expected layout.

A checkpoint that loads is not yet one that can be trusted: an optimizer state
with one array missing resumes "fine" with that array silently reset to zeros,
and a diverged run's NaN weights evaluate to nonsense. These functions say
exactly what is wrong, naming the key, before any of it is used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..checks import is_int
from ..errors import CheckpointError, NonFiniteError

__all__ = ["assert_finite", "expected_run_arrays", "model_array_shapes", "model_bytes",
           "non_finite_key", "optimizer_state_names", "validate_optimizer_state"]


def non_finite_key(arrays: Mapping) -> str | None:
    """The key of the first floating-point array of ``arrays`` holding a NaN or an Inf, or None.

    One ``np.isfinite(a).all()`` per array (integer and bool arrays are skipped):
    one pass over memory, cheap next to writing the checkpoint.
    """
    for key, value in arrays.items():
        a = np.asarray(value)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            return key
    return None


def assert_finite(arrays: Mapping, what: str) -> None:
    """Raise NonFiniteError if a floating-point array of ``arrays`` holds a NaN or an Inf:
    "<what>: '<key>' is not finite (N of M values are NaN or Inf)", naming the first
    such key (also as the error's ``key`` attribute).
    """
    key = non_finite_key(arrays)
    if key is None:
        return
    a = np.asarray(arrays[key])
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    error = NonFiniteError(f"{what}: {key!r} is not finite ({bad} of {a.size} values are NaN "
                           "or Inf)")
    error.key = key
    raise error


# ------------------------------------------------------------------ optimizer state

def optimizer_state_names(optimizer_name: str, optimizer_config: Mapping) -> set[str] | None:
    """The state arrays (besides "step") each parameter has once the optimizer has stepped:
    what an optimizer of that name and settings keeps (`Optimizer.state_names`); None
    for a name or settings nnkernel's optimizers do not accept.
    """
    from ..optim import OPTIMIZERS

    cls = OPTIMIZERS.get(str(optimizer_name).lower())
    cfg = optimizer_config if isinstance(optimizer_config, Mapping) else {}
    if cls is None:
        return None
    try:
        options = {k: v for k, v in cfg.items() if k not in ("name", "t")}
        return set(cls(**options).state_names)
    except (TypeError, ValueError):
        return None


def validate_optimizer_state(arrays: Mapping, param_shapes: Mapping, optimizer_name: str,
                             optimizer_config: Mapping, *, t: int | None = None,
                             source: str = "optimizer state", prefix: str = "") -> None:
    """Check optimizer state ("<param key>/<name>" -> array, `Optimizer.state_arrays()`'s
    format) against the parameters it belongs to; raise CheckpointError naming the
    first bad key, "<source>: ...", with keys shown as "<prefix><key>".

    The promise, for the state of a run directory (every parameter is trained):

    - either there is no state at all (the optimizer never stepped: ``t`` is 0
      when given), or every parameter has exactly "step" plus the arrays its
      optimizer keeps (`optimizer_state_names`): nothing missing, nothing extra,
      no state for a key that is not a parameter;
    - every array has its parameter's shape and a floating-point dtype;
    - every step is a non-negative integer scalar, all steps are equal (the
      parameters step together), and they equal ``t`` when it is given.

    For an optimizer `optimizer_state_names` does not know, only shapes, dtypes
    and steps are checked.
    """
    def fail(message):
        raise CheckpointError(f"{source}: {message}")

    required = optimizer_state_names(optimizer_name, optimizer_config)
    present: dict[str, set] = {}
    for flat in arrays:
        key, _, name = str(flat).rpartition("/")
        if not key or not name:
            fail(f"{prefix}{flat!r} is not of the form '<parameter>/<name>'")
        if key not in param_shapes:
            fail(f"{prefix}{flat!r} is state for {key!r}, which is not a parameter of the model")
        present.setdefault(key, set()).add(name)
    if not arrays:
        if t:
            fail(f"it is missing, but the optimizer took {t} steps")
        return
    steps = {}
    for key, shape in param_shapes.items():
        names = present.get(key, set())
        wanted = None if required is None else required | {"step"}
        for name in sorted((wanted or {"step"}) - names):
            fail(f"{prefix}{key}/{name} is missing ({optimizer_name} keeps "
                 f"{_listing(wanted or {'step'})} for every parameter)")
        if wanted is not None and names - wanted:
            extra = sorted(names - wanted)[0]
            fail(f"unexpected {prefix}{key}/{extra} ({optimizer_name} with these settings "
                 f"keeps {_listing(wanted)})")
        for name in sorted(names):
            value = np.asarray(arrays[f"{key}/{name}"])
            label = f"{prefix}{key}/{name}"
            if name == "step":
                steps[key] = _step(value, label, fail)
            elif tuple(value.shape) != tuple(shape):
                fail(f"{label} has shape {tuple(value.shape)}, the parameter {tuple(shape)}")
            elif value.dtype.kind != "f":
                fail(f"{label} has dtype {value.dtype}, expected floating point")
    if not steps:
        return
    first = next(iter(steps.values()))
    other = next((k for k, v in steps.items() if v != first), None)
    if other is not None:
        fail(f"the parameters are at different steps ({prefix}{other}/step is {steps[other]}, "
             f"others {first}); a run's parameters step together")
    if t is not None and first != t:
        fail(f"the parameters are at step {first} but the run's position says the optimizer "
             f"took {t} steps")


def _step(value: np.ndarray, label: str, fail) -> int:
    if value.shape != () or value.dtype.kind not in "iu":
        fail(f"{label} must be an integer scalar, found {value.dtype} of shape {value.shape}")
    if int(value) < 0:
        fail(f"{label} is {int(value)}, a negative step count")
    return int(value)


def _listing(names) -> str:
    names = sorted(names)
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


# ------------------------------------------------------------------ layout from config.json

def model_array_shapes(model_config) -> tuple[dict, dict] | None:
    """(parameter shapes, state shapes) by key ("0.W", "1.running_mean", "3.0.gamma", ...)
    that ``Sequential.from_config(model_config)`` will have, from the layers' own
    `param_shapes`/`state_shapes` (nothing is allocated); None if the config is not
    one that builds (`validate_run_config` reports why). A combinator's layers have
    keys under its path (it has no arrays of its own); a shared or tied position
    has none (its arrays are an earlier layer's).
    """
    from ..errors import NnkernelError

    try:
        layers, ensemble = model_config["layers"], model_config.get("ensemble")
        lead = () if ensemble is None else (_size(ensemble),)
        params, state = {}, {}
        _layer_shapes(layers, "", lead, params, state, 0)
        return params, state
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError, NnkernelError):
        return None


def _layer_shapes(layers, prefix: str, lead: tuple, params: dict, state: dict, depth) -> None:
    """Each layer's own arrays under its path (nnkernel.nn.plan's keys), whether or not the
    layers' shapes chain (a damaged config is still sized before anything is built)."""
    from ..nn.layer import layer_from_config

    if not isinstance(layers, list) or depth > 32:
        raise ValueError(layers)
    for i, cfg in enumerate(layers):
        if isinstance(cfg, dict) and (cfg.get("type") == "Shared" or "tied_to" in cfg):
            continue  # the arrays of an earlier layer
        if isinstance(cfg, dict) and "layers" in cfg:  # a combinator (Residual)
            _layer_shapes(cfg["layers"], f"{prefix}{i}.", lead, params, state, depth + 1)
            continue
        layer = layer_from_config(cfg)
        params.update({f"{prefix}{i}.{n}": (*lead, *s) for n, s in layer.param_shapes().items()})
        state.update({f"{prefix}{i}.{n}": (*lead, *s) for n, s in layer.state_shapes().items()})


def _size(value) -> int:
    if not is_int(value) or value <= 0:
        raise ValueError(value)
    return int(value)


def model_bytes(model_config) -> int | None:
    """Bytes of the parameters and state ``model_config`` describes (None if unreadable)."""
    shapes = model_array_shapes(model_config)
    if shapes is None:
        return None
    itemsize = 8 if str(model_config.get("dtype")) == "float64" else 4
    return itemsize * sum(math.prod(s) for part in shapes for s in part.values())


def expected_run_arrays(config: Mapping) -> dict | None:
    """The arrays a run directory's model.npz may hold, for `checkpoint.load_arrays(...,
    expected=)`: key -> (shape, dtype kinds), from config.json; None when the model or
    the optimizer is of a kind not known here (then only the byte limit applies).

    model/<key>: float, the parameter's or the state's shape. optimizer/<key>/<name>:
    float, the parameter's shape, for the names its optimizer keeps, plus
    optimizer/<key>/step. progress/epoch, progress/step, progress/t: integer scalars.
    With hyperparameters.early_stopping: early_stopping/best (float) and /wait
    (integer), scalars or one per ensemble member, and early_stopping/model/<key>,
    the best weights, as model/<key>.
    """
    shapes = model_array_shapes(config.get("model"))
    optimizer = config.get("optimizer")
    if shapes is None or not isinstance(optimizer, Mapping):
        return None
    names = optimizer_state_names(optimizer.get("name", ""), optimizer)
    if names is None:
        return None
    params, state = shapes
    expected = {f"model/{k}": (s, "f") for k, s in {**params, **state}.items()}
    for key, shape in params.items():
        expected.update({f"optimizer/{key}/{n}": (shape, "f") for n in names})
        expected[f"optimizer/{key}/step"] = ((), "iu")
    expected.update({f"progress/{n}": ((), "iu") for n in ("epoch", "step", "t")})
    hyper = config.get("hyperparameters")
    if isinstance(hyper, Mapping) and hyper.get("early_stopping"):
        members = config["model"].get("ensemble")
        lead = () if members is None else (members,)  # one verdict per ensemble member
        expected["early_stopping/best"] = (lead, "f")
        expected["early_stopping/wait"] = (lead, "iu")
        expected.update({f"early_stopping/model/{k}": (s, "f")
                         for k, s in {**params, **state}.items()})
    return expected
