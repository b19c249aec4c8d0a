"""An epoch's running sums (loss, correct predictions, rows), kept on the device and read
on the host only when reported: at an epoch's end, by the progress line, in a checkpoint."""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy


class Totals:
    """Running sums of an epoch (device scalars, read only at its end)."""

    def __init__(self, loss=0.0, correct=0.0, seen=0, seconds=0.0):
        self.loss, self.correct, self.seen, self.seconds = loss, correct, seen, seconds

    @classmethod
    def resume(cls, partial, epoch, step):
        """Start from an interrupted epoch's sums, when that is the epoch being resumed."""
        if partial and step and partial.get("epoch") == epoch and partial.get("step") == step:
            return cls(partial["loss_sum"], partial["correct"], int(partial["seen"]),
                       float(partial.get("seconds", 0.0)))
        return cls()

    def add(self, value, rows, correct):
        self.loss = self.loss + value * float(rows)
        if correct is not None:
            self.correct = self.correct + correct
        self.seen += rows

    def snapshot(self, epoch, step, seconds) -> dict:
        def host(v):
            arr = np.asarray(to_numpy(v) if not isinstance(v, float) else v, dtype=np.float64)
            return float(arr) if arr.ndim == 0 else arr.tolist()

        return {"epoch": epoch, "step": step, "loss_sum": host(self.loss),
                "correct": host(self.correct), "seen": self.seen, "seconds": seconds}


def host_mean(total, count):
    """A device scalar (or per-member vector) divided by count, as Python float(s)."""
    arr = to_numpy(total) if not isinstance(total, float) else np.asarray(total)
    arr = np.asarray(arr, dtype=np.float64) / count
    return float(arr) if arr.ndim == 0 else arr.tolist()


def first_nonfinite(xp, values):
    """Index of the first non-finite loss among ``values`` (one host copy), or None."""
    stacked = values[0] if len(values) == 1 else xp.stack(values)
    host = np.asarray(to_numpy(stacked), dtype=np.float64).reshape(len(values), -1)
    ok = np.isfinite(host).all(axis=1)
    return None if ok.all() else int(np.argmin(ok))
