"""History: what `fit` measured, per epoch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class History:
    """Per-epoch metrics: ``history["loss"][e]``, ``history["val_accuracy"][e]``, ...

    For an ensemble each entry is a list with one value per member. ``partial``
    holds the running sums of an epoch interrupted part way (so that its metrics,
    after a resume, cover the whole epoch).
    """

    history: dict = field(default_factory=dict)
    epochs: list = field(default_factory=list)
    partial: dict | None = None

    def append(self, epoch: int, logs: dict) -> None:
        self.epochs.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def last(self) -> dict:
        return {k: v[-1] for k, v in self.history.items() if v}

    def to_dict(self) -> dict:
        out = {"epochs": self.epochs, **self.history}
        if self.partial:
            out["partial_epoch"] = self.partial
        return out
