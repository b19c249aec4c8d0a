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


def add_device_flags(parser):
    group = parser.add_argument_group("device")
    group.add_argument("--device", help="cpu (default), gpu (= GPU 0 with CuPy), gpu:1, ...")
    group.add_argument("--backend", help="numpy (default on cpu), cupy (default on gpu), "
                       "torch, array_api_strict, jax, dask")
    group.add_argument("--dtype", choices=("float32", "float64"))
    group.add_argument("--tf32", action="store_true", default=None,
                       help="allow TF32 matrix products (GPU only)")
    group.add_argument("--threads", type=positive_int,
                       help="BLAS threads on the CPU (default: the BLAS library's own choice; "
                       "1 is faster for small networks on a busy machine)")


def add_output_flags(parser):
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress or summary lines")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
