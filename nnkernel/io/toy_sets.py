"""The generated toy datasets: xor, spirals, moons and linear, drawn from a seed."""

from __future__ import annotations

import numpy as np

from .dataset import Dataset, from_arrays


def _xor(seed: int) -> Dataset:
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([[0], [1], [1], [0]], dtype=np.float32)
    return Dataset("xor", X, y, X.copy(), y.copy(), "regression", None)  # test = train


def _spirals(seed: int, n_per_class: int = 100, n_classes: int = 3) -> Dataset:
    rng = np.random.default_rng(seed)
    radius = np.tile(np.linspace(0.0, 1.0, n_per_class), n_classes)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    angle = labels * (2 * np.pi / n_classes) + radius * 4 + rng.normal(0, 0.2, radius.shape)
    X = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1).astype(np.float32)
    return from_arrays("spirals", X, labels.astype(np.int64), "spirals", seed,
                        task="classification", n_classes=n_classes)


def _moons(seed: int, n: int = 500, noise: float = 0.1) -> Dataset:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    t = rng.uniform(0, np.pi, n)
    # Upper half circle for class 0; a lower one, shifted right and up, for class 1.
    X = np.where(labels[:, None] == 0,
                 np.stack([np.cos(t), np.sin(t)], axis=1),
                 np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=1))
    X = (X + rng.normal(0, noise, X.shape)).astype(np.float32)
    return from_arrays("moons", X, labels.astype(np.int64), "moons", seed,
                        task="classification", n_classes=2)


def _linear(seed: int, n: int = 200, noise: float = 0.05) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 1))
    y = 2 * x + 1 + rng.normal(0, noise, (n, 1))
    return from_arrays("linear", x.astype(np.float32), y.astype(np.float32), "linear", seed,
                        task="regression", n_classes=None)


TOY_SETS = {"xor": _xor, "spirals": _spirals, "moons": _moons, "linear": _linear}
