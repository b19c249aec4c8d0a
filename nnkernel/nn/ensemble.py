"""Summaries of an ensemble's outputs (E, N, K): the members' mean, variance, mean probabilities."""

from __future__ import annotations

from ..backend import namespace_of


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
    e = xp.exp(logits - xp.max(logits, axis=-1, keepdims=True))
    return xp.mean(e / xp.sum(e, axis=-1, keepdims=True), axis=0)
