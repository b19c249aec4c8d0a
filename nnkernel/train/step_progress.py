"""The progress lines of `fit_lm`: a bar redrawn in place on a terminal, a line per evaluation.

    step 250/2000  loss 2.4563 (3.544 bpc)  val_loss 2.4987 (3.605 bpc)  lr 9.96e-04  28.1s  ...

Losses are in nats per token (the mean cross-entropy, natural log) and in bits
per token, loss / ln 2: bits per character for a character model ("bpc"). The
widths and the shortening follow `nnkernel.train.progress` (`fit`'s bar).
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from .progress import MIN_INTERVAL, SEP, duration, fit_width

BAR = 20


class StepProgress:
    """A bar over ``steps`` optimizer steps (on a terminal) and a line per evaluation."""

    def __init__(self, steps: int, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled, self.steps = enabled, steps
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last_draw, self.drawn = 0.0, 0
        self.t0, self.first = time.perf_counter(), 0

    def start(self, first_step: int) -> None:
        self.t0, self.first = time.perf_counter(), first_step

    def step(self, step: int, loss: float | None) -> None:
        """After optimizer step ``step`` (counted from 1); ``loss``: the latest mean, if read."""
        if not self.tty:
            return
        now = time.perf_counter()
        if now - self.last_draw < MIN_INTERVAL and step != self.steps:
            return
        self.last_draw = now
        width = _width(self.stream)
        self._draw(self.line(step, loss, now, width), width)

    def line(self, step, loss, now, width=80) -> str:
        done, elapsed = step - self.first, now - self.t0
        count = f"{step}/{self.steps}".rjust(2 * len(str(self.steps)) + 1)
        timing = []
        if done >= 2 and elapsed >= MIN_INTERVAL:
            per_step = elapsed / done
            timing = [f"ETA {duration(per_step * (self.steps - step))}",
                      f"{per_step * 1e3:.1f} ms/step"]
        values = [] if loss is None else [f"loss {loss:.4f}"]
        inner = min(BAR, width - 1 - len("step ") - 3 - len(count) - 40)
        bar = ""
        if inner >= 5:
            filled = inner * step // self.steps
            bar = "[" + "=" * filled + "." * (inner - filled) + "] "
        parts = [f"step {bar}{count}", *timing, *values]
        return fit_width(parts, width - 1, drop=[2, 1] if timing else [])

    def _draw(self, text: str, width: int) -> None:
        self.stream.write("\r" + text + " " * max(min(self.drawn, width - 1) - len(text), 0))
        self.stream.flush()
        self.drawn = len(text)

    def evaluation(self, logs: dict) -> None:
        """The line of an evaluation (the bar, if any, blanked first)."""
        if not self.enabled:
            return
        text = eval_line(logs, self.steps)
        if self.tty:
            width = _width(self.stream)
            self.stream.write("\r" + " " * min(self.drawn, width - 1) + "\r")
            text = fit_width(text.split(SEP), width - 1, drop=[6, 5, 4])
            self.drawn = 0
        self.stream.write(text + "\n")
        self.stream.flush()


def eval_line(logs: dict, steps: int) -> str:
    """step N/S, loss (bpc), val_loss (val bpc), lr, seconds, tokens/s."""
    parts = [f"step {logs['step']}/{steps}",
             f"loss {logs['loss']:.4f} ({logs['bpc']:.3f} bpc)"]
    if "val_loss" in logs:
        parts.append(f"val_loss {logs['val_loss']:.4f} ({logs['val_bpc']:.3f} bpc)")
    parts.append(f"lr {logs['lr']:.2e}")
    parts.append(f"{logs['seconds']:.1f}s")
    parts.append(f"{logs['tokens_per_second']:,.0f} tokens/s")
    return SEP.join(parts)


def _width(stream) -> int:
    """Columns of the stream's own terminal (as `Progress.width`)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns or shutil.get_terminal_size((80, 24)).columns
