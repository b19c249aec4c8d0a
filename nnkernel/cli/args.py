"""Argument types and the flags several commands share."""

from __future__ import annotations

import argparse
import math

from ..checks import interval_text


class UsageError(Exception):
    """A command line argparse refused."""


class Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line and go through main's error path."""

    def error(self, message):
        raise UsageError(f"{self.prog.removeprefix('nnkernel').strip() or 'usage'}: {message}")


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def float_in(lo, hi, lo_open=False, hi_open=True):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (
            value < hi if hi_open else value <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(
                f"must be in {interval_text(lo, hi, lo_open, hi_open)}, got {text}")
        return value
    return parse


def int_list(what, example):
    """'256,256' -> [256, 256]; '' or 'none' -> [] (no such layers)."""
    def parse(text):
        if text.strip().lower() in ("", "none"):
            return []
        try:
            sizes = [int(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what} such as "
                                             f"{example}, got {text!r}") from None
        if any(s <= 0 for s in sizes):
            raise argparse.ArgumentTypeError(f"{what} must be positive, got {text!r}")
        return sizes
    return parse


hidden = int_list("layer widths", "256,256")


def learning_rates(text):
    """'1e-3' -> [0.001]; '1e-3,3e-3' -> one ensemble member per value."""
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a learning rate or a comma list such as "
                                         f"1e-3,3e-3, got {text!r}") from None
    if any(not (math.isfinite(r) and r > 0) for r in rates):
        raise argparse.ArgumentTypeError(f"learning rates must be finite and > 0, got {text!r}")
    return rates


# How a flag's text becomes a RunConfig value (its check then says whether it is sound).
def _ints(text):
    if text.strip().lower() in ("", "none"):
        return []
    return [int(part) for part in text.split(",")]


def _floats(text):
    values = [float(part) for part in text.split(",")]
    return values[0] if len(values) == 1 else values


CONVERT = {"text": str, "int": int, "float": float, "ints": _ints, "floats": _floats}
EXPECTED = {"int": "an integer", "float": "a number",
            "ints": "comma-separated integers such as 256,256 (or none)",
            "floats": "a number or a comma list such as 1e-3,3e-3"}


def setting_type(kind: str, check):
    """An argparse type for a RunConfig field: convert the text, then the field's check."""
    convert = CONVERT[kind]

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {EXPECTED[kind]}, got {text!r}") from None
        why = check(value)
        if why:
            raise argparse.ArgumentTypeError(f"must be {why.removesuffix(' or null')}, got {text}")
        return value
    parse.__name__ = kind  # argparse names it in "invalid <name> value"
    return parse


def add_setting_flags(parser, group: str, title: str | None = None):
    """The flags of one group of RunConfig's settings (nnkernel.run_settings), default None:
    a flag left out takes the dataset's default, or on resume the run's own value."""
    from ..run_settings import flag_name, settings_with_flags

    target = parser.add_argument_group(title or group)
    for fd in settings_with_flags(group):
        meta = fd.metadata
        if meta["kind"] == "switch":
            target.add_argument(flag_name(fd.name), action="store_true", default=None,
                                help=meta["doc"])
            continue
        options = {"choices": meta["choices"]} if meta["choices"] else {}
        if meta["kind"] != "text":
            options["type"] = setting_type(meta["kind"], meta["check"])
        target.add_argument(flag_name(fd.name), metavar=meta["metavar"], help=meta["doc"],
                            **options)
    return target


def add_device_flags(parser):
    add_setting_flags(parser, "device")


def add_output_flags(parser):
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress or summary lines")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
