"""NumPy twin of the loss kernels: softmax cross-entropy in place, labels without a one-hot."""

from __future__ import annotations

import numpy as np

_UNSIGNED = {np.dtype(np.int8): np.uint8, np.dtype(np.int16): np.uint16,
             np.dtype(np.int32): np.uint32, np.dtype(np.int64): np.uint64}


class NumpyLossKernels:
    _starts: dict | None = None  # (rows, C) -> row starts, made on first use per instance

    def total(self, x):
        return np.add.reduce(x, axis=None)  # what np.sum calls, without its two wrappers

    def labels_outside(self, labels, n_classes):
        # One reduction: viewed as unsigned, a negative label is larger than any class.
        unsigned = _UNSIGNED.get(labels.dtype)
        top = np.maximum.reduce((labels.view(unsigned) if unsigned else labels), axis=None)
        if int(top) < n_classes:
            return None
        return int(labels.min()), int(labels.max())

    def softmax_cross_entropy(self, z, target, count):
        shifted = z - _row_max(z)
        e = np.exp(shifted)
        s = _row_sum(e)
        # −Σ t (z' − log s) = log s · Σt − Σ t z': soft targets need not sum to 1
        losses = np.log(s) * _row_sum(target) - _row_sum(target * shifted)
        e /= s[..., None]  # softmax in place
        e -= target
        e *= 1.0 / count
        return losses, e

    def softmax_cross_entropy_labels(self, z, labels, count):
        # −Σ t log softmax(z) with a one-hot t is log Σe^z' − z'[label]: pick one entry per
        # row instead of building and multiplying an (N, C) target (C times less work).
        lead = z.shape[:-1]
        rows = (labels if labels.shape == lead else np.broadcast_to(labels, lead)).reshape(-1)
        at = self._row_starts(rows.shape[0], z.shape[-1]) + rows  # flat index of each label
        shifted = z - _row_max(z)
        flat = shifted.reshape(-1)  # a view: shifted is a fresh contiguous array
        picked = flat[at]
        e = np.exp(shifted, out=shifted)
        s = _row_sum(e)
        losses = np.log(s)
        losses -= picked.reshape(lead)
        e /= s[..., None]  # softmax in place
        flat[at] -= 1.0
        e *= 1.0 / count
        return losses, e

    def _row_starts(self, rows: int, C: int):
        """0, C, 2C, ...: where each row starts in a flat (rows, C) array (kept per shape)."""
        key = (rows, C)
        if self._starts is None:
            self._starts = {}
        starts = self._starts.get(key)
        if starts is None:
            if len(self._starts) > 32:
                self._starts.clear()
            starts = self._starts[key] = np.arange(0, rows * C, C)
        return starts


def _row_max(z):
    """z.max(axis=-1, keepdims=True), the same numbers, faster for many rows of few columns.

    NumPy reduces a short last axis row by row, slowly when there are many rows
    (an ensemble of 64 at batch 128 has 8192 rows of 10 logits); a maximum over
    whole columns, one ufunc call per column, is an order of magnitude faster.
    The maximum is exact, so the order of comparisons does not change a bit.
    """
    C = z.shape[-1]
    if C > 16 or z.size < 256 * C:  # tunables: where the column loop measured faster
        # (bench/history/2026-11-22-intel-sweeps.md, the ensemble's 8192 rows of 10 logits)
        return np.maximum.reduce(z, axis=-1, keepdims=True)  # z.max without its wrappers
    out = z[..., 0:1].copy()
    for j in range(1, C):
        np.maximum(out, z[..., j:j + 1], out=out)
    return out


def _row_sum(e):
    """Σ over the last axis, shape e.shape[:-1]; many short rows as a product with ones.

    Like the maximum above, NumPy sums a short last axis row by row; the product
    is several times faster (a different summation order, so float rounding
    differs in the last bits). Few rows are summed directly.
    """
    C = e.shape[-1]
    if e.size < 256 * C:
        return np.add.reduce(e, axis=-1)
    rows = e.reshape(-1, C) if e.flags.c_contiguous else np.ascontiguousarray(e).reshape(-1, C)
    return (rows @ np.ones(C, dtype=e.dtype)).reshape(e.shape[:-1])
