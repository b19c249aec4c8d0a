"""The progress line of `fit`: redrawn in place on a terminal, one line per epoch otherwise.

On a terminal the line never exceeds its width (it is cut, not wrapped), and
the rate and the time left appear once they can be measured (after two steps
and a tenth of a second), as ms/step and ETA, like Keras and tqdm show them.
"""

from __future__ import annotations

import shutil
import sys
import time

import numpy as np

MIN_INTERVAL = 0.1  # seconds between redraws


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
        self._draw(self.line(epoch, step, totals, classify, now))

    def line(self, epoch, step, totals, classify, now) -> str:
        from .loop import _host

        done = step - self.first_step
        elapsed = now - self.t0
        frac = step / self.steps
        filled = int(20 * frac)
        parts = [f"epoch {epoch + 1}/{self.epochs}", "[" + "=" * filled + "." * (20 - filled) + "]",
                 f"{step}/{self.steps}", f"loss {fmt(_host(totals.loss, totals.seen))}"]
        if classify:
            parts.append(f"acc {fmt(_host(totals.correct, totals.seen))}")
        if done >= 2 and elapsed >= MIN_INTERVAL:
            per_step = elapsed / done
            parts.append(f"{per_step * 1e3:.1f} ms/step")
            parts.append(f"ETA {duration(per_step * (self.steps - step))}")
        return "  ".join(parts)

    def _draw(self, text: str) -> None:
        width = shutil.get_terminal_size((80, 24)).columns - 1
        text = text[:width]
        self.stream.write("\r" + text + " " * max(self.drawn - len(text), 0))
        self.stream.flush()
        self.drawn = len(text)

    def epoch_end(self, epoch, logs) -> None:
        if not self.enabled:
            return
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                parts.append(f"{key} {fmt(logs[key])}")
        parts.append(f"{logs['seconds']:.2f}s")
        parts.append(f"{logs['samples_per_second']:,.0f} samples/s")
        text = "  ".join(parts)
        if self.tty:
            self._draw(text)
            self.stream.write("\n")
            self.drawn = 0
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def fmt(value) -> str:
    if isinstance(value, list):
        return f"{np.mean(value):.4f} (mean of {len(value)})"
    return f"{value:.4f}"


def duration(seconds: float) -> str:
    """3.2s, 4m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, s = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m"
