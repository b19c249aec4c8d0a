"""What a run's config.json may hold: types and ranges of every field nnkernel reads back.

`validate_run_config` never raises on any JSON value; it returns one line per
problem ("hyperparameters.batch_size must be a positive integer, got '32'"), so
a damaged or hand-edited config.json is refused with all its faults named,
instead of a TypeError deep inside training or a model 64.9 features wide.
Fields nnkernel does not read are ignored; a section that is present must be
complete, since resuming reads every field of it.
"""

from __future__ import annotations

import math

from ..fields import (
    BIG,
    MAX_LAYERS,
    boolean,
    choice,
    integer,
    is_int,
    names,
    normalized_name,
    number,
    show,
    text,
)
from ..run_settings import RunConfig
from .safe_read import max_checkpoint_bytes
from .validate import model_bytes

__all__ = ["validate_run_config"]

DTYPES = ("float16", "float32", "float64")
_show, _is_int = show, is_int
_text = text()


def _names():
    """The registries a model's layers name."""
    return {kind: names(kind) for kind in ("activation", "layer", "init")}


def _section(problems, where, section, fields: dict, required=True) -> None:
    """Check each field of a dict against its Check; missing fields are problems too."""
    if not isinstance(section, dict):
        problems.append(f"{where} must be a JSON object, got {_show(section)}")
        return
    for name, check in fields.items():
        label = f"{where}.{name}" if where else name
        if name not in section:
            if required:
                problems.append(f"{label} is missing")
            continue
        why = check(section[name])
        if why:
            problems.append(f"{label} must be {why}, got {_show(section[name])}")


def _layer_fields(kind: str, names) -> dict:
    """The fields a layer of this type may have, and their checks ("type" aside)."""
    activation = {"activation": choice(names["activation"], optional=True,
                                       normalize=normalized_name),
                  "alpha": number(-math.inf, math.inf, optional=True)}
    if kind == "Dense":
        return {"n_in": integer(1), "n_out": integer(1), **activation, "init": _init}
    if kind == "Dropout":
        return {"p": number(0, 1, hi_open=True)}
    if kind in ("BatchNorm", "LayerNorm"):
        extra = {"momentum": number(0, 1)} if kind == "BatchNorm" else {}
        return {"n": integer(1), "eps": number(0, math.inf, lo_open=True, hi_open=True), **extra}
    if kind == "Conv2D":
        return {**CONV_FIELDS[kind], **activation,
                "init": choice(names["init"], optional=True, normalize=str)}
    if kind in CONV_FIELDS:
        return CONV_FIELDS[kind]
    return activation


# The image layers (nnkernel.nn.conv, conv_norm): each field is required.
_WINDOW = {"kernel_size": integer(1), "stride": integer(1)}
CONV_FIELDS = {
    "Conv2D": {"in_channels": integer(1), "out_channels": integer(1), **_WINDOW,
               "padding": integer(0)},
    "MaxPool2D": _WINDOW, "AvgPool2D": _WINDOW, "Flatten": {},
    "BatchNorm2D": {"channels": integer(1), "eps": number(0, math.inf, lo_open=True,
                                                          hi_open=True),
                    "momentum": number(0, 1)},
    "Dropout2D": {"p": number(0, 1, hi_open=True)},
}
_REQUIRED = ("n_in", "n_out", "n", "p", "in_channels", "out_channels", "kernel_size", "stride",
             "padding", "channels")


def input_shape(v) -> str | None:
    if v is None or (isinstance(v, list) and 0 < len(v) <= 8 and all(
            d is None or (_is_int(d) and 0 < d < BIG) for d in v)):
        return None
    return "a list of positive sizes or nulls (the per-sample input shape)"


def _model_problems(problems, model, names, max_bytes=None) -> None:
    if not isinstance(model, dict):
        problems.append(f"model must be a JSON object with the layers, got {_show(model)}")
        return
    _section(problems, "model", model, {"seed": integer(0), "dtype": choice(DTYPES, normalize=str),
                                        "ensemble": integer(1, optional=True)}, required=False)
    layers = model.get("layers")
    if not isinstance(layers, list) or not 0 < len(layers) <= MAX_LAYERS:
        problems.append(f"model.layers must be a non-empty list of at most {MAX_LAYERS} layers, "
                        f"got {_show(layers)}")
        return
    width = None  # the previous layer's output width
    for i, layer in enumerate(layers):
        where = f"model.layers[{i}]"
        kind = _layer_problems(problems, where, layer, names)
        if kind is None or _checks_itself(kind):
            width = None  # unknown, or a layer that checks its own input when built
            continue
        n_in = layer.get("n_in") if kind == "Dense" else layer.get("n")
        if width is not None and _is_int(n_in) and n_in != width:
            problems.append(f"{where} ({kind}) takes {n_in} features but the layer before "
                            f"gives {width}")
        if kind == "Dense":
            width = layer.get("n_out") if _is_int(layer.get("n_out")) else None
        elif kind in ("BatchNorm", "LayerNorm"):
            width = n_in if _is_int(n_in) else None
        elif kind in CONV_FIELDS:
            width = None  # images: Sequential checks their shapes when it builds the model
    _section(problems, "model", model, {"input_shape": input_shape}, required=False)
    first = layers[0].get("type") if isinstance(layers[0], dict) else None
    if not any(isinstance(layer, dict) and layer.get("type") in ("Dense", "Conv2D")
               for layer in layers) and model.get("input_shape") is None and not (
            isinstance(first, str) and first in names["layer"] and _checks_itself(first)):
        problems.append("model.layers has no Dense or Conv2D layer and model has no "
                        "input_shape, so the model has no input width")
    size, limit = model_bytes(model), _limit(max_bytes)
    if size is not None and limit is not None and size > limit:
        problems.append(f"model describes {size:,} bytes of parameters and state, more than "
                        f"a checkpoint may hold ({limit:,} bytes, $NNKERNEL_MAX_CHECKPOINT_BYTES)")


def _layer_problems(problems, where, layer, names, depth=0) -> str | None:
    """The problems of one layer's config (and of the layers inside it); its type, or None
    when it has no known type."""
    kind = layer.get("type") if isinstance(layer, dict) else None
    if not isinstance(kind, str) or kind not in names["layer"]:
        problems.append(f"{where} must be a layer with a known 'type' "
                        f"({', '.join(sorted(names['layer']))}), got {_show(layer)}")
        return None
    if _checks_itself(kind):
        _self_checked_problems(problems, where, kind, layer, names, depth)
        return kind
    fields = _layer_fields(kind, names)
    for extra in sorted(set(layer) - set(fields) - {"type"}):
        problems.append(f"{where} ({kind}) has an unknown field {extra!r}")
    required = {k: v for k, v in fields.items() if k in _REQUIRED}
    _section(problems, where, layer, required)
    _section(problems, where, layer, {k: v for k, v in fields.items() if k not in required},
             required=False)
    return kind


def _checks_itself(kind: str) -> bool:
    """Whether a layer type is left to check its own configuration: those the tables above
    do not describe (Embedding, MultiHeadAttention, Residual, recurrent layers, ...), whose
    constructors refuse bad values with a ConfigError."""
    from ..nn.layers import LAYERS, ActivationLayer

    return kind not in ("Dense", "Dropout", "BatchNorm", "LayerNorm", *CONV_FIELDS) and not (
        issubclass(LAYERS[kind], ActivationLayer))


def _self_checked_problems(problems, where, kind, layer, names, depth) -> None:
    """A combinator's layers one by one; a tied layer's reference; any other layer built
    from its config (nothing allocated), its ConfigError as the problem."""
    from ..errors import ConfigError
    from ..nn.layers import layer_from_config

    if "layers" in layer:
        inner = layer["layers"]
        if not isinstance(inner, list) or not 0 < len(inner) <= MAX_LAYERS or depth > 32:
            problems.append(f"{where}.layers must be a non-empty list of layers, got "
                            f"{_show(inner)}")
            return
        for j, child in enumerate(inner):
            _layer_problems(problems, f"{where}.layers[{j}]", child, names, depth + 1)
    elif "tied_to" in layer:
        if not (_is_int(layer["tied_to"]) or isinstance(layer["tied_to"], str)):
            problems.append(f"{where} ({kind}).tied_to must be the path of a layer before it, "
                            f"got {_show(layer['tied_to'])}")
    else:
        try:
            layer_from_config(layer)
        except (ConfigError, TypeError, ValueError) as e:
            problems.append(f"{where} ({kind}): {e}")


def _init(v) -> str | None:
    """An initializer's name, or "normal(std)" (GPT-2's N(0, std²))."""
    from ..errors import ConfigError
    from ..nn.init import get_initializer

    if v is None:
        return None
    try:
        if isinstance(v, str):
            get_initializer(v)
            return None
    except (ConfigError, KeyError, ValueError):
        pass
    return "an initializer's name or normal(std), or null"


def _limit(max_bytes=None) -> int | None:
    try:
        return max_checkpoint_bytes(max_bytes)
    except ValueError:  # a bad environment variable: reported when the checkpoint is read
        return None


def validate_run_config(config, max_bytes: int | None = None) -> list[str]:
    """Every problem of a run's config.json, one line each; [] when it is sound.

    Checked when present (a section present must have all its fields): the model
    (known layer types, n_in/n_out/n positive integers and not bools, widths that
    chain, probabilities in [0, 1), eps > 0, a size a checkpoint may hold), the
    hyperparameters of `nnkernel train` (types and ranges, known names, one lr
    per ensemble member), the dataset and runtime dicts, seed, epoch and step
    (non-negative integers) and the optimizer's name. "model" is required.
    ``max_bytes`` is the checkpoint limit the model's size is held to (default:
    `safe_read.max_checkpoint_bytes()`).
    """
    if not isinstance(config, dict):
        return [f"the configuration must be a JSON object, got {_show(config)}"]
    problems: list[str] = []
    names = _names()
    if "model" not in config:
        problems.append("model (the architecture) is missing")
    else:
        _model_problems(problems, config["model"], names, max_bytes)
    problems += RunConfig.json_problems(config)  # dataset, hyperparameters, runtime, seed
    _section(problems, "", config, {"epoch": integer(0),
                                    "step": integer(0), "finished": boolean,
                                    "stopped_early_at_epoch": integer(1, optional=True),
                                    "nnkernel_version": _text}, required=False)
    if "optimizer" in config:
        _section(problems, "optimizer", config["optimizer"], {"name": _text})
    return problems
