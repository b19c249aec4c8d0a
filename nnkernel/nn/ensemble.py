"""Summaries of an ensemble's outputs (E, N, K): the members' mean, variance, mean probabilities."""

from __future__ import annotations

import numpy as np

from ..backend import namespace_of
from .activations import softmax


def ensemble_mean(y):
    """Mean over members (axis 0)."""
    xp = namespace_of(y)
    return xp.mean(y, axis=0)


def ensemble_variance(y):
    """Variance over members (axis 0): a simple measure of the ensemble's disagreement."""
    xp = namespace_of(y)
    return xp.var(y, axis=0)


def mean_probabilities(logits):
    """Average of the members' softmax probabilities, (N, K): the ensemble's prediction."""
    xp = namespace_of(logits)
    return xp.mean(softmax(xp, logits), axis=0)


def ensemble_log_loss(probabilities, labels) -> float:
    """The ensemble's own cross-entropy: −mean log p̄[label] of its mean probabilities (N, K).

    Host NumPy arrays in, a float out; p̄ is floored at 1e-300 so a confident miss is large,
    not infinite.
    """
    p = np.take_along_axis(np.asarray(probabilities, dtype=np.float64),
                           np.asarray(labels)[:, None], axis=1)
    return float(-np.mean(np.log(np.maximum(p, 1e-300))))
