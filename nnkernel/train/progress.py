"""The progress line of `fit`: redrawn in place on a terminal, one line per epoch otherwise.

On a terminal each redraw fits the width of the terminal that the stream is
(asked again at every redraw, so a resized window is followed): the bar gets
the room the numbers leave, and where even they do not fit the least useful
are left out, so the line is never wrapped. The rate and the time left appear
once they can be measured (after two steps and a tenth of a second), as
ms/step and ETA, like Keras and tqdm show them. At the end of an epoch the bar
is blanked and the epoch's line takes its place, one line on a terminal of any
width: where it is too narrow, names are shortened and the least useful fields
left out (`Progress.epoch_line`).

Why not tqdm or rich: the core depends on NumPy and array-api-compat only, and
what fit needs is this one line; tqdm's bar shows it/s or s/it, not ms/step,
and would still need a format string and a postfix for the loss and accuracy.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

import numpy as np

from .totals import host_mean

MIN_INTERVAL = 0.1  # seconds between redraws
BAR = 20  # the widest bar, in characters
SEP = "  "
NOT_SHOWN = ("seconds", "samples_per_second")  # shown in their own form at the end


class Progress:
    def __init__(self, epochs, steps, enabled=True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.epochs, self.steps = epochs, steps
        self.last_draw, self.drawn = 0.0, 0

    def start_epoch(self, epoch, first_step, seen) -> None:
        self.t0, self.first_step, self.first_seen = time.perf_counter(), first_step, seen

    def step(self, epoch, step, totals, classify) -> None:
        if not self.tty:
            return
        now = time.perf_counter()
        if now - self.last_draw < MIN_INTERVAL and step != self.steps:
            return
        self.last_draw = now
        width = self.width()
        self._draw(self.line(epoch, step, totals, classify, now, width), width)

    def line(self, epoch, step, totals, classify, now, width=80) -> str:
        """The bar's text for a terminal ``width`` columns wide (at most width − 1 long)."""

        done = step - self.first_step
        elapsed = now - self.t0
        count = f"{step}/{self.steps}".rjust(2 * len(str(self.steps)) + 1)  # a steady width
        timing = []
        if done >= 2 and elapsed >= MIN_INTERVAL:  # before that a rate would be noise
            per_step = elapsed / done
            timing = [f"ETA {duration(per_step * (self.steps - step))}",
                      f"{per_step * 1e3:.1f} ms/step"]
        values = [f"loss {fmt(host_mean(totals.loss, totals.seen))}"]
        if classify:
            values.append(f"acc {fmt(host_mean(totals.correct, totals.seen))}")
        prefix = f"epoch {epoch + 1}/{self.epochs} "
        # the bar's room is what the fields leave at their usual widest, timing included even
        # before it shows, so that the bar keeps its length from frame to frame
        reserved = len(SEP.join(["ETA 00.0s", "00.0 ms/step", *values]))
        inner = min(BAR, width - 1 - len(prefix) - 3 - len(count) - len(SEP) - reserved)
        bar = ""
        if inner >= 5:  # a narrower bar says nothing that the step count does not
            filled = inner * step // self.steps
            bar = "[" + "=" * filled + "." * (inner - filled) + "] "
        parts = [prefix + bar + count, *timing, *values]
        # where the line is too long, accuracy goes first, then ms/step, ETA, and the loss
        return fit_width(parts, width - 1, drop=[4, 2, 1, 3] if timing else [2, 1])

    def width(self) -> int:
        """Columns of the stream's own terminal (not stdout's, which may be a file)."""
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
        return columns or shutil.get_terminal_size((80, 24)).columns

    def _draw(self, text: str, width: int) -> None:
        # blank what is left of the last frame, but never past this width (after a resize)
        self.stream.write("\r" + text + " " * max(min(self.drawn, width - 1) - len(text), 0))
        self.stream.flush()
        self.drawn = len(text)

    def epoch_end(self, epoch, logs) -> None:
        if not self.enabled:
            return
        if self.tty:
            width = self.width()
            self.stream.write("\r" + " " * min(self.drawn, width - 1) + "\r")  # blank the bar
            self.stream.write(self.epoch_line(epoch, logs, width - 1) + "\n")
            self.drawn = 0
        else:
            self.stream.write(self.epoch_line(epoch, logs) + "\n")
        self.stream.flush()

    def epoch_line(self, epoch, logs, limit: int | None = None) -> str:
        """The epoch's line; on a terminal (``limit`` columns) one line that fits: names
        shortened (accuracy -> acc, samples/s -> /s) first, then the rate, the seconds and
        the metrics from the last are left out, the loss last of all."""
        metrics = [(key, value) for key, value in logs.items()
                   if key not in NOT_SHOWN and _is_numbers(value)]  # not a confusion matrix
        head = f"epoch {epoch + 1}/{self.epochs}"
        seconds = f"{logs['seconds']:.2f}s"
        rate = logs["samples_per_second"]
        full = [head, *(f"{k} {fmt(v)}" for k, v in metrics), seconds, f"{rate:,.0f} samples/s"]
        if limit is None or len(SEP.join(full)) <= limit:
            return SEP.join(full)
        parts = [head, *(f"{_short(k)} {fmt(v, short=True)}" for k, v in metrics), seconds,
                 f"{rate:,.0f}/s"]
        # leave out: the rate, the seconds, then metrics from the last to the second
        drop = [len(parts) - 1, len(parts) - 2, *range(len(parts) - 3, 1, -1)]
        return fit_width(parts, limit, drop)


def fit_width(parts, limit: int, drop=()) -> str:
    """The parts joined, leaving out those at the indices ``drop`` (in that order) until the
    text is at most ``limit`` long; cut at ``limit`` if even the rest is longer."""
    keep = dict(enumerate(parts))
    for i in drop:
        if len(SEP.join(keep.values())) <= limit:
            break
        keep.pop(i, None)
    return SEP.join(keep.values())[:max(limit, 0)]


def wrap(parts, limit: int) -> list[str]:
    """The parts as lines of at most ``limit`` characters, broken between parts."""
    lines, line = [], ""
    for part in parts:
        joined = f"{line}{SEP}{part}" if line else part
        if len(joined) <= limit or not line:
            line = joined
        else:
            lines.append(line)
            line = SEP + part
    lines.append(line)
    return [text[:max(limit, 1)] for text in lines]


def _is_numbers(value) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, (int, float)) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fmt(value, short: bool = False) -> str:
    if isinstance(value, list):
        return f"{np.mean(value):.4f} (mean" + (")" if short else f" of {len(value)})")
    return f"{value:.4f}"


def _short(key: str) -> str:
    """A metric's name on a narrow terminal: accuracy -> acc (val_accuracy -> val_acc)."""
    return key.replace("accuracy", "acc")


def duration(seconds: float) -> str:
    """3.2s, 4m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, s = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m"
