"""Checks of single setting values: one rule, one message, for every place a setting enters.

A check takes a value and returns None when it is sound, or what the value must be
("a positive integer", "one of adam, sgd"). It never raises, whatever the value (a
JSON file can hold anything), so a caller can collect every problem of a file at
once; `require` turns one answer into a ConfigError. Used by `RunConfig`
(nnkernel.run_settings), the command line's argument types, the validation of a
run's config.json (nnkernel.io.run_config), and open to the scikit-learn
estimators. A leaf module: the standard library and nnkernel.errors only; the
registries of names (activations, losses, ...) are imported when first asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .errors import ConfigError

__all__ = ["BIG", "MAX_LAYERS", "Check", "betas", "boolean", "choice", "integer", "is_int",
           "is_number", "json_object", "learning_rate", "names", "normalized_name", "number",
           "require", "show", "text", "widths"]

BIG = 2 ** 63  # every integer must fit the int64 of a checkpoint's progress arrays
MAX_LAYERS = 10_000

# A check: value -> None, or what the value must be.
Check = Callable[[object], "str | None"]


def show(value) -> str:
    """A value as a message shows it: repr, cut at 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def require(label: str, value, check: Check):
    """``value`` if ``check`` passes it, else ConfigError "<label> must be ..., got ..."."""
    why = check(value)
    if why:
        raise ConfigError(f"{label} must be {why}, got {show(value)}")
    return value


def integer(lo: int = 0, hi: int = BIG, optional=False) -> Check:
    def check(v):
        if v is None and optional:
            return None
        if not is_int(v) or not lo <= v < hi:
            kind = {0: "an integer >= 0", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
            return kind + (" or null" if optional else "")
        return None
    return check


def number(lo: float, hi: float, lo_open=False, hi_open=False, optional=False) -> Check:
    def check(v):
        if v is None and optional:
            return None
        ok = is_number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open
                                                                     else v <= hi)
        if ok:
            return None
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        return f"a finite number in {interval}" + (" or null" if optional else "")
    return check


def normalized_name(v: str) -> str:
    """How names are compared: "Leaky-ReLU" is "leaky_relu"."""
    return v.lower().replace("-", "_")


def choice(values, optional=False, normalize=str.lower) -> Check:
    """One of ``values`` (a collection, or a function returning one: read when checked)."""
    def check(v):
        if v is None and optional:
            return None
        allowed = values() if callable(values) else values
        if isinstance(v, str) and normalize(v) in allowed:
            return None
        return "one of " + ", ".join(sorted(str(x) for x in allowed if x)) + (
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


def optional_boolean(v) -> str | None:
    return None if v is None or isinstance(v, bool) else "true, false or null"


def json_object(v) -> str | None:
    return None if isinstance(v, dict) else "a JSON object"


def widths(v) -> str | None:
    if isinstance(v, list) and len(v) <= MAX_LAYERS and all(
            is_int(w) and 0 < w < BIG for w in v):
        return None
    return "a list of positive integers (layer widths)"


def betas(v) -> str | None:
    """Adam's (beta1, beta2): two numbers in [0, 1), or null."""
    one = number(0, 1, hi_open=True)
    if v is None or (isinstance(v, list) and len(v) == 2 and all(one(x) is None for x in v)):
        return None
    return "two numbers in [0, 1) (beta1,beta2) or null"


def learning_rate(v) -> str | None:
    one = number(0, math.inf, lo_open=True, hi_open=True)
    if one(v) is None or (isinstance(v, list) and 0 < len(v) <= MAX_LAYERS
                          and all(one(x) is None for x in v)):
        return None
    return "a finite number > 0, or a non-empty list of them (one per ensemble member)"


def names(kind: str) -> set:
    """The names a registry knows: "activation", "loss", "optimizer", "schedule", "layer",
    "init" or "task". Imported late: the registries sit in nn, losses, optim and io."""
    if kind == "activation":
        from .nn.activations import ACTIVATIONS

        return {k for k in ACTIVATIONS if k}
    if kind == "loss":
        from .losses import ALIASES, LOSSES

        return set(LOSSES) | set(ALIASES)
    if kind in ("optimizer", "schedule"):
        from .optim import OPTIMIZERS, SCHEDULES

        return set(OPTIMIZERS if kind == "optimizer" else SCHEDULES)
    if kind == "layer":
        from .nn.layers import LAYERS

        return set(LAYERS)
    if kind == "init":
        from .nn.init import INITIALIZERS

        return set(INITIALIZERS)
    if kind == "task":
        return {"classification", "regression"}
    raise KeyError(kind)


def registry(kind: str, optional=False, normalize=normalized_name) -> Check:
    """One of the names of a registry (see `names`), looked up when a value is checked."""
    return choice(lambda: names(kind), optional=optional, normalize=normalize)
