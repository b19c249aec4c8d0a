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
from collections.abc import Callable

from .labels import TASKS
from .safe_read import max_checkpoint_bytes
from .validate import model_bytes

__all__ = ["validate_run_config"]

BIG = 2 ** 63  # every integer must fit the int64 of the checkpoint's progress arrays
MAX_LAYERS = 10_000
DTYPES = ("float16", "float32", "float64")
RUNTIME_DTYPES = ("float32", "float64")  # what --dtype offers


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# Each check takes a value and returns None, or what the value must be.
Check = Callable[[object], "str | None"]


def integer(lo: int = 0, hi: int = BIG, optional=False) -> Check:
    def check(v):
        if v is None and optional:
            return None
        if not _is_int(v) or not lo <= v < hi:
            kind = {0: "an integer >= 0", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
            return kind + (" or null" if optional else "")
        return None
    return check


def number(lo: float, hi: float, lo_open=False, hi_open=False, optional=False) -> Check:
    def check(v):
        if v is None and optional:
            return None
        ok = _is_number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open
                                                                      else v <= hi)
        if ok:
            return None
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        return f"a finite number in {interval}" + (" or null" if optional else "")
    return check


def choice(values, optional=False, normalize=str.lower) -> Check:
    def check(v):
        if v is None and optional:
            return None
        if isinstance(v, str) and normalize(v) in values:
            return None
        return "one of " + ", ".join(sorted(str(x) for x in values if x)) + (
            " or null" if optional else "")
    return check


def text(optional=False, nonempty=True) -> Check:
    def check(v):
        if v is None and optional:
            return None
        if isinstance(v, str) and (v or not nonempty):
            return None
        return "a non-empty string" + (" or null" if optional else "")
    return check


def boolean(v) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def widths(v) -> str | None:
    if isinstance(v, list) and len(v) <= MAX_LAYERS and all(
            _is_int(w) and 0 < w < BIG for w in v):
        return None
    return "a list of positive integers (layer widths)"


def learning_rate(v) -> str | None:
    one = number(0, math.inf, lo_open=True, hi_open=True)
    if one(v) is None or (isinstance(v, list) and 0 < len(v) <= MAX_LAYERS
                          and all(one(x) is None for x in v)):
        return None
    return "a finite number > 0, or a non-empty list of them (one per ensemble member)"


def _names():
    """The registries, imported late: io sits above nn, losses and optim."""
    from ..losses import ALIASES, LOSSES
    from ..nn.activations import ACTIVATIONS
    from ..nn.init import INITIALIZERS
    from ..nn.layers import LAYERS
    from ..optim import OPTIMIZERS, SCHEDULES

    return {"activation": {k for k in ACTIVATIONS if k}, "loss": set(LOSSES) | set(ALIASES),
            "optimizer": set(OPTIMIZERS), "schedule": set(SCHEDULES), "layer": set(LAYERS),
            "init": set(INITIALIZERS)}


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


def _activation_name(v):
    return v.lower().replace("-", "_")


def _hyper_fields(names) -> dict:
    return {
        "hidden": widths, "activation": choice(names["activation"], normalize=_activation_name),
        "dropout": number(0, 1, hi_open=True), "batchnorm": boolean,
        "ensemble": integer(1, optional=True),
        "loss": choice(names["loss"], optional=True, normalize=_activation_name),
        "optimizer": choice(names["optimizer"]), "lr": learning_rate,
        "schedule": choice(names["schedule"], normalize=str),
        "weight_decay": number(0, math.inf, hi_open=True, optional=True),
        "clip_norm": number(0, math.inf, lo_open=True, hi_open=True, optional=True),
        "epochs": integer(0), "batch_size": integer(1), "early_stopping": integer(1, optional=True),
        "val_split": number(0, 1, lo_open=True, hi_open=True, optional=True),
    }


DATASET_FIELDS = {"name": text(), "data_dir": text(optional=True),
                  "target": text(optional=True)}
DATASET_OPTIONAL = {"n_features": integer(1), "task": choice(TASKS, normalize=str),
                    "n_classes": integer(1, optional=True), "n_outputs": integer(1)}
RUNTIME_FIELDS = {"backend": text(optional=True), "device": text(),
                  "dtype": choice(RUNTIME_DTYPES, normalize=str), "tf32": boolean}


def _layer_fields(kind: str, names) -> dict:
    """The fields a layer of this type may have, and their checks ("type" aside)."""
    activation = {"activation": choice(names["activation"], optional=True,
                                       normalize=_activation_name),
                  "alpha": number(-math.inf, math.inf, optional=True)}
    if kind == "Dense":
        return {"n_in": integer(1), "n_out": integer(1), **activation,
                "init": choice(names["init"], optional=True, normalize=str)}
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
        kind = layer.get("type") if isinstance(layer, dict) else None
        if not isinstance(kind, str) or kind not in names["layer"]:
            problems.append(f"{where} must be a layer with a known 'type' "
                            f"({', '.join(sorted(names['layer']))}), got {_show(layer)}")
            width = None
            continue
        fields = _layer_fields(kind, names)
        for extra in sorted(set(layer) - set(fields) - {"type"}):
            problems.append(f"{where} ({kind}) has an unknown field {extra!r}")
        required = {k: v for k, v in fields.items() if k in _REQUIRED}
        _section(problems, where, layer, required)
        _section(problems, where, layer, {k: v for k, v in fields.items() if k not in required},
                 required=False)
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
    if not any(isinstance(layer, dict) and layer.get("type") in ("Dense", "Conv2D")
               for layer in layers) and model.get("input_shape") is None:
        problems.append("model.layers has no Dense or Conv2D layer and model has no "
                        "input_shape, so the model has no input width")
    size, limit = model_bytes(model), _limit(max_bytes)
    if size is not None and limit is not None and size > limit:
        problems.append(f"model describes {size:,} bytes of parameters and state, more than "
                        f"a checkpoint may hold ({limit:,} bytes, $NNKERNEL_MAX_CHECKPOINT_BYTES)")


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
    if "hyperparameters" in config:
        hyper = config["hyperparameters"]
        _section(problems, "hyperparameters", hyper, _hyper_fields(names))
        _section(problems, "hyperparameters", hyper, {"conv": widths}, required=False)
        lr = hyper.get("lr") if isinstance(hyper, dict) else None
        ensemble = hyper.get("ensemble") if isinstance(hyper, dict) else None
        if isinstance(lr, list) and (ensemble is None or _is_int(ensemble)) \
                and len(lr) != (ensemble or 1):
            members = f"an ensemble of {ensemble}" if ensemble else "one model (no ensemble)"
            problems.append(f"hyperparameters.lr lists {len(lr)} values for {members}")
    if "dataset" in config:
        _section(problems, "dataset", config["dataset"], DATASET_FIELDS)
        _section(problems, "dataset", config["dataset"], DATASET_OPTIONAL, required=False)
        fingerprint = config["dataset"].get("fingerprint") if isinstance(
            config["dataset"], dict) else None
        if fingerprint is not None and not isinstance(fingerprint, dict):
            problems.append(f"dataset.fingerprint must be a JSON object, got {_show(fingerprint)}")
    if "runtime" in config:
        _section(problems, "runtime", config["runtime"], RUNTIME_FIELDS)
    _section(problems, "", config, {"seed": integer(0), "epoch": integer(0),
                                    "step": integer(0), "finished": boolean,
                                    "stopped_early_at_epoch": integer(1, optional=True),
                                    "nnkernel_version": text()}, required=False)
    if "optimizer" in config:
        _section(problems, "optimizer", config["optimizer"], {"name": text()})
    return problems
