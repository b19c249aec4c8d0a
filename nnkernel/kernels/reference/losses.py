"""Softmax cross-entropy and the reductions losses use, the reference."""

from __future__ import annotations

import array_api_compat


class LossKernels:
    """Mixed into `Kernels` (which provides ``self.xp``)."""

    def total(self, x):
        """Σ of all entries, a 0-d array."""
        return self.xp.sum(x)

    # -- softmax and cross-entropy ------------------------------------------------
    def log_softmax(self, z):
        xp = self.xp
        shifted = z - xp.max(z, axis=-1, keepdims=True)
        return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))

    def softmax_cross_entropy(self, z, target, count: int):
        """Per-row losses −Σ t log softmax(z) and the gradient (softmax(z) − t) / count.

        `target` holds probabilities (one-hot or soft labels) of z's shape.
        """
        xp = self.xp
        logp = self.log_softmax(z)
        losses = -xp.sum(target * logp, axis=-1)
        dz = (xp.exp(logp) - target) / float(count)
        return losses, dz

    def softmax_cross_entropy_labels(self, z, labels, count: int):
        """The same for integer class labels, shape z.shape[:-1] or broadcastable to it.

        The reference builds the one-hot target; a twin may gather the label column instead.
        """
        xp = self.xp
        classes = xp.arange(z.shape[-1], device=array_api_compat.device(z))
        target = xp.astype(xp.expand_dims(labels, axis=-1) == classes, z.dtype)
        return self.softmax_cross_entropy(z, target, count)

    def softmax_cross_entropy_mean(self, z, target, count: int, members: bool, labels: bool):
        """(mean loss, dz): the per-row losses averaged over count rows (per member: axis 0).

        ``labels``: integer labels, else probabilities. A twin folds the mean into its kernel.
        """
        fn = self.softmax_cross_entropy_labels if labels else self.softmax_cross_entropy
        losses, dz = fn(z, target, count)
        return self.mean(losses, members, count), dz

    def mean(self, x, members: bool, count: int):
        """Mean over everything, or over all but axis 0 (per member), as sum / count."""
        if not members:
            return self.total(x) / float(count)
        return self.xp.sum(x, axis=tuple(range(1, x.ndim))) / float(count)

    def labels_outside(self, labels, n_classes: int) -> tuple[int, int] | None:
        """None when every label is in 0..n_classes-1, else (min, max) for the message."""
        xp = self.xp
        lo, hi = int(xp.min(labels)), int(xp.max(labels))
        return None if lo >= 0 and hi < n_classes else (lo, hi)
