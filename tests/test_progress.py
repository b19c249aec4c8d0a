"""The progress line: its text at every width, and `nnkernel train` under a real pseudo-terminal.

The pty tests run the command in a child process whose stderr is a pseudo-terminal
of a set width (TIOCSWINSZ) and whose stdout is a pipe, read everything it draws,
and replay it on a small terminal model: no frame may be wider than the terminal
(nothing wraps), the first frame shows no rate, ms/step and ETA show up, and at
the end of each epoch its line stands alone where the bar was.
"""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import time

import pytest

from nnkernel.train.progress import Progress, fit_width, wrap

pty = pytest.importorskip("pty", reason="no pseudo-terminals on this platform")
fcntl = pytest.importorskip("fcntl")
termios = pytest.importorskip("termios")
import struct  # noqa: E402


class Totals:
    def __init__(self, loss, correct, seen):
        self.loss, self.correct, self.seen = loss, correct, seen


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("width", [12, 30, 50, 79, 80, 81, 120, 200])
@pytest.mark.parametrize("members", [None, 5])
def test_every_frame_fits_the_width(width, members):
    bar = Progress(epochs=150, steps=60000, stream=FakeTerminal())
    bar.start_epoch(99, 0, 0)
    loss = 1234.5678 if members is None else [1.5] * members
    for step, now in [(1, 0.001), (2, 0.05), (7, 0.5), (60000, 3600.0)]:
        text = bar.line(99, step, Totals(loss, loss, 1), True, bar.t0 + now, width)
        assert len(text) <= width - 1, (width, text)
        assert text.startswith("epoch 100/150"[:width - 1])
        if width >= 80 and members is None:
            assert f"{step}/60000" in text and "loss 1234.5678" in text


def test_the_first_frames_show_no_rate_and_ms_step_comes_after():
    bar = Progress(epochs=3, steps=100, stream=FakeTerminal())
    bar.start_epoch(0, 0, 0)
    t = Totals(2.3, 0.0, 32)
    first = bar.line(0, 1, t, True, bar.t0 + 1e-4, 100)
    assert "ms/step" not in first and "ETA" not in first and "samples/s" not in first
    assert "ms/step" not in bar.line(0, 5, t, True, bar.t0 + 0.05, 100)  # under 0.1 s
    later = bar.line(0, 50, t, True, bar.t0 + 1.0, 100)
    assert "20.0 ms/step" in later and "ETA 1.0s" in later  # 50 steps left at 20 ms


def test_narrow_terminals_drop_whole_fields_in_order():
    parts = ["epoch 1/2 [=====] 10/90", "ETA 1.0s", "3.2 ms/step", "loss 0.5000", "acc 0.9000"]
    assert fit_width(parts, 200, drop=[4, 2, 1, 3]) == "  ".join(parts)
    assert fit_width(parts, 59, drop=[4, 2, 1, 3]) == \
        "epoch 1/2 [=====] 10/90  ETA 1.0s  3.2 ms/step  loss 0.5000"
    assert fit_width(parts, 58, drop=[4, 2, 1, 3]) == \
        "epoch 1/2 [=====] 10/90  ETA 1.0s  loss 0.5000"
    assert fit_width(parts, 40, drop=[4, 2, 1, 3]) == "epoch 1/2 [=====] 10/90  loss 0.5000"
    assert wrap(["epoch 1/2", "loss 0.5", "val_loss 0.6"], 22) == \
        ["epoch 1/2  loss 0.5", "  val_loss 0.6"]


def test_without_a_terminal_one_line_per_epoch():
    out = io.StringIO()
    bar = Progress(epochs=2, steps=10, stream=out)
    bar.start_epoch(0, 0, 0)
    bar.step(0, 10, Totals(1.0, 1.0, 1), True)
    bar.epoch_end(0, {"loss": 0.5, "val_confusion_matrix": [[1, 0], [0, 1]],
                      "val_f1_macro": 0.75, "seconds": 0.5, "samples_per_second": 2000.0})
    assert out.getvalue() == "epoch 1/2  loss 0.5000  val_f1_macro 0.7500  0.50s  " \
                             "2,000 samples/s\n"


# -- under a pseudo-terminal ---------------------------------------------------------------------
def run_in_pty(width: int, *argv: str) -> tuple[int, str, str]:
    """(exit status, what stderr drew on a `width`-column pty, stdout) of `nnkernel argv`."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, width, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    child = subprocess.Popen([sys.executable, "-m", "nnkernel", *argv], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    drawn, deadline = b"", time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if child.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            drawn += chunk
        stdout, _ = child.communicate(timeout=60)
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
    return child.returncode, drawn.decode(), stdout.decode()


def replay(text: str, width: int) -> tuple[list[str], int]:
    """The screen rows a `width`-column terminal shows for `text`, and how often it wrapped."""
    rows, col, wraps = [[]], 0, 0
    for ch in text:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            rows.append([])
            col = 0
        else:
            if col >= width:
                wraps += 1
                rows.append([])
                col = 0
            row = rows[-1]
            row.extend(" " * (col + 1 - len(row)))
            row[col] = ch
            col += 1
    return ["".join(r).rstrip() for r in rows], wraps


TRAIN = ["train", "--epochs", "2", "--hidden", "512,512", "--batch-size", "4", "--threads", "1",
         "--json"]  # ~0.5 s an epoch on 2 cores: a few redraws with a measured rate


@pytest.mark.parametrize("width", [200, 80, 50, 45, 30, 12])
@pytest.mark.parametrize("members", [None, 3])
def test_the_epoch_line_is_one_line_at_any_width(width, members):
    # Issue 25: at 45 columns the epoch line wrapped onto 3 lines.
    out = FakeTerminal()
    bar = Progress(epochs=20, steps=45, stream=out)
    value = (lambda v: v) if members is None else (lambda v: [v] * members)
    logs = {"loss": value(0.0579), "accuracy": value(0.9939), "val_loss": value(0.0853),
            "val_accuracy": value(0.9791), "val_f1_macro": value(0.979), "seconds": 0.01,
            "samples_per_second": 87253.0}
    bar.width = lambda: width
    bar.epoch_end(15, logs)
    text = out.getvalue().split("\r")[-1]
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert len(text) - 1 <= width - 1
    assert text.startswith("epoch 16/20"[:width - 1])
    if width >= 45:
        assert "loss 0.0579" in text and (" 0.9939" in text or members)
    if width == 200:
        assert "val_accuracy 0.9791" in text and "87,253 samples/s" in text


def test_the_epoch_line_of_digits_fits_45_columns():
    line = Progress(20, 45, stream=FakeTerminal()).epoch_line(
        15, {"loss": 0.0053, "accuracy": 1.0, "seconds": 0.04, "samples_per_second": 38184.0},
        44)
    assert line == "epoch 16/20  loss 0.0053  acc 1.0000  0.04s"


@pytest.mark.slow
@pytest.mark.parametrize("width", [80, 45])
def test_train_under_a_pty(width):
    code, drawn, stdout = run_in_pty(width, *TRAIN)
    assert code == 0, drawn
    assert json.loads(stdout)["epochs"] == 2
    frames = [f for line in drawn.replace("\r\n", "\n").split("\n") for f in line.split("\r")]
    frames = [f for f in frames if f.strip()]
    assert max(len(f) for f in frames) <= width - 1, max(frames, key=len)
    first = frames[0]
    assert first.startswith("epoch 1/2") and "1/360" in first
    for early in ("samples/s", "ETA", "ms/step"):
        assert early not in first, first
    bars = [f for f in frames if "/360" in f]
    assert len(bars) >= 4, bars  # redrawn in place, not once per epoch
    timed = [f for f in bars if "ETA " in f]
    assert timed, bars
    if width >= 80:  # narrower, accuracy goes first, then ms/step, then ETA
        assert all("ms/step" in f for f in timed) and all("[" in f for f in bars)
    screen, wraps = replay(drawn, width)
    assert wraps == 0
    lines = [row for row in screen if row]
    # what stays on the screen: each epoch's line, one row each (names shortened and the
    # rate left out where narrow), with nothing of the bar left over
    assert lines[0].startswith("epoch 1/2  loss ") and lines[0].count("epoch") == 1
    assert [row.split()[1] for row in lines] == ["1/2", "2/2"], lines
    for row in lines:
        assert "[" not in row and "/360" not in row and "ms/step" not in row, row
        assert (" accuracy " in row and "samples/s" in row) if width >= 80 else " acc " in row
