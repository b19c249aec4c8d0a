"""Windows of one long token sequence: random (B, T) batches to train on, fixed ones to score.

A language model learns to predict each next token of a window of T tokens:

    x = ids[i : i + T],   y = ids[i + 1 : i + T + 1]      (start i, 0 ≤ i < n − T)

Training draws B random starts per step (nanoGPT's ``get_batch``), not epochs
over a list of samples: every position of the text can start a window. The starts
come from NumPy's generator seeded by (seed, step, micro-batch), so a resumed run
draws the windows it would have drawn. The ids live on the model's device; only
the B starts cross to it per step.

Scoring uses fixed windows: non-overlapping ones, 0, T, 2T, ..., so each token of
the text is a target at most once (evenly spaced among them when ``limit`` is
smaller than their number), the same every time, so that losses measured at
different steps (or by another library) compare.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..losses import cross_entropy

__all__ = ["TokenWindows", "window_loss"]


class TokenWindows:
    """(x, y) windows of length ``block_size`` over ``ids`` (host integers), on ``backend``."""

    def __init__(self, backend, ids, block_size: int, what: str = "the text"):
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ConfigError(f"{what} must be a 1-D array of integer token ids, got "
                              f"{ids.dtype} of shape {ids.shape}")
        T = int(block_size)
        if ids.shape[0] < T + 1:
            raise ConfigError(f"{what} has {ids.shape[0]} tokens; windows of block size {T} "
                              f"need at least {T + 1} (a longer text or a smaller block size)")
        self.backend, self.block_size, self.n = backend, T, int(ids.shape[0])
        xp, dt = backend.xp, backend.label_dtype
        with backend.activate():
            self.ids = backend.asarray(ids.astype(np.int64), dtype=dt)
            self.offsets = xp.reshape(xp.arange(T + 1, dtype=dt, device=backend.device),
                                      (1, T + 1))

    @property
    def n_starts(self) -> int:
        """Starts a window can have: 0..n − T − 1 (its last target is ids[i + T])."""
        return self.n - self.block_size

    def random_starts(self, batch_size: int, seed) -> np.ndarray:
        """``batch_size`` starts drawn uniformly, from NumPy's generator seeded by ``seed``."""
        return np.random.default_rng(seed).integers(0, self.n_starts, size=batch_size)

    def fixed_starts(self, limit: int | None = None) -> np.ndarray:
        """The non-overlapping windows' starts 0, T, 2T, ...; at most ``limit`` of them,
        evenly spaced over the text."""
        T = self.block_size
        starts = np.arange(0, self.n_starts, T, dtype=np.int64)
        if limit is not None and starts.shape[0] > limit:
            starts = starts[np.linspace(0, starts.shape[0] - 1, num=limit).round().astype(int)]
        return starts

    def batch(self, starts):
        """(x, y), each (B, T) ids on the device, of the windows starting at ``starts``."""
        be, xp = self.backend, self.backend.xp
        B, T = len(starts), self.block_size
        with be.activate():
            s = be.asarray(np.asarray(starts, dtype=np.int64), dtype=be.label_dtype)
            index = xp.reshape(s, (B, 1)) + self.offsets                   # (B, T + 1)
            w = xp.reshape(xp.take(self.ids, xp.reshape(index, (-1,))), (B, T + 1))
            return w[:, :T], w[:, 1:]


def window_loss(model, windows: TokenWindows, starts, batch_size: int = 64,
                loss=cross_entropy) -> float:
    """The mean loss per token over the windows at ``starts`` (evaluation mode)."""
    from ..backend import to_numpy

    starts = np.asarray(starts)
    if starts.shape[0] == 0:
        raise ConfigError("no windows to score")
    total = 0.0
    for i in range(0, starts.shape[0], batch_size):
        part = starts[i:i + batch_size]
        x, y = windows.batch(part)
        value, _ = loss(model(x), y)  # the mean over the part's B·T tokens
        total += float(np.asarray(to_numpy(value), dtype=np.float64)) * part.shape[0]
    return total / starts.shape[0]
