"""One fit's epochs under MLPClassifier's rules.

After each epoch (`Rules.end_epoch`), as MLPClassifier's ``_update_no_improvement_count``:
the training loss goes to ``loss_curve_``; with early stopping the validation score
(accuracy, R²) goes to ``validation_scores_`` and the weights of the best one are
kept. An epoch that does not improve on the best by ``tol`` adds one to a count, one
that does resets it, and training stops when the count passes ``n_iter_no_change``.
The `Record` carries over between warm-start fits and partial_fit calls, as
MLPClassifier's attributes do.

A dense X trains in one `nnkernel.fit` call with `Rules` as its callback; a sparse X
one epoch at a time, each a few `nnkernel.fit` calls over dense chunks of its rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from ..backend import to_numpy
from ..backend.arrays import mixed_seed
from ..errors import NonFiniteError
from ..nn.conv_norm import BatchNorm2D
from ..nn.layers import BatchNorm
from ..train import Callback, History, fit
from .inputs import chunks, rows_for


@dataclass
class Record:
    """What the estimator learns about its training, across the fits that continue it."""

    loss_curve: list = field(default_factory=list)
    validation_scores: list | None = None
    best_loss: float | None = math.inf
    best_validation_score: float | None = None
    no_improvement: int = 0
    best_arrays: dict | None = None  # early stopping: the weights of the best score

    @classmethod
    def new(cls, early_stopping: bool) -> Record:
        if early_stopping:  # MLPClassifier's values: best_loss_ None, scores from -inf
            return cls(validation_scores=[], best_loss=None, best_validation_score=-math.inf)
        return cls()

    def expect(self, early_stopping: bool) -> None:
        """Start the fields that the other mode left empty (warm start switching modes)."""
        if early_stopping and self.validation_scores is None:
            self.validation_scores, self.best_validation_score = [], -math.inf
        if not early_stopping and self.best_loss is None:
            self.best_loss = math.inf


class Rules(Callback):
    """MLPClassifier's end of an epoch, as a callback of `nnkernel.fit`.

    ``scorer(net) -> float`` scores the validation data (early stopping) or is None.
    ``stopped`` says the count passed ``n_iter_no_change``; ``epochs`` counts this fit's.
    """

    def __init__(self, record: Record, tol: float, n_iter_no_change, scorer, verbose: bool):
        self.record, self.tol, self.patience = record, tol, n_iter_no_change
        self.scorer, self.verbose = scorer, verbose
        self.epochs, self.stopped = 0, False
        # with early stopping a NaN loss ends the fit (nk.fit returns) and the best weights
        # come back, as MLPClassifier's; without it nk.fit raises NonFiniteError
        self.stops_on_nan = scorer is not None

    def on_epoch_end(self, run, logs):
        return self.end_epoch(run.model, float(logs["loss"]))

    def end_epoch(self, net, loss: float) -> bool:
        r = self.record
        self.epochs += 1
        r.loss_curve.append(loss)
        self._say(f"Iteration {len(r.loss_curve)}, loss = {loss:.8f}")
        if self.scorer is None:
            worse = loss > r.best_loss - self.tol
            r.best_loss = min(r.best_loss, loss)
        else:
            score = float(self.scorer(net))
            r.validation_scores.append(score)
            self._say(f"Validation score: {score:f}")
            worse = score < r.best_validation_score + self.tol
            if score > r.best_validation_score:
                r.best_validation_score, r.best_arrays = score, net.arrays()
        r.no_improvement = r.no_improvement + 1 if worse else 0
        if r.no_improvement > self.patience:
            what = "Training loss" if self.scorer is None else "Validation score"
            self._say(f"{what} did not improve more than tol={self.tol:f} for "
                      f"{self.patience} consecutive epochs. Stopping.")
            self.stopped = True
        return self.stopped

    def nan_stop(self) -> None:
        """The loss became NaN/Inf (early stopping): the epoch is recorded as NaN."""
        self.epochs += 1
        self.record.loss_curve.append(math.nan)
        self.record.validation_scores.append(math.nan)
        self._say(f"Iteration {len(self.record.loss_curve)}: the loss became NaN or Inf; "
                  f"stopping, with the best weights so far")

    def _say(self, line: str) -> None:
        if self.verbose:
            print(line)  # stdout, as MLPClassifier's verbose output


def run_epochs(net, X, y, sw, *, rules: Rules, history: History, epochs: int,
               initial_epoch: int, seed: int, **options) -> None:
    """Train ``net`` for epochs [initial_epoch, epochs) of (X, y), appending to ``history``.

    ``options``: loss, optimizer, batch_size and shuffle, as `nnkernel.fit` takes them.
    """
    if sparse.issparse(X):
        _sparse_epochs(net, X, y, sw, rules, history, epochs, initial_epoch, seed, **options)
        return
    fit(net, rows_for(net, X), y, epochs=epochs, initial_epoch=initial_epoch, seed=seed,
        callbacks=[rules], progress=False, sample_weight=sw, history=history, **options)
    if rules.epochs < epochs - initial_epoch and not rules.stopped:  # nk.fit met a NaN loss
        rules.nan_stop()


def _sparse_epochs(net, X, y, sw, rules, history, epochs, initial_epoch, seed, *, shuffle,
                   batch_size, **options) -> None:
    """Each epoch over a shuffled order of the rows, made dense a chunk of whole batches at a
    time; each chunk is one `nnkernel.fit` epoch (its Dropout masks seeded by the chunk).
    Without Dropout, a sparse X that fits in one chunk trains exactly as its dense copy."""
    n = X.shape[0]
    batchnorm = any(isinstance(layer, (BatchNorm, BatchNorm2D)) for layer in net.layers)
    bounds = chunks(n, X.shape[1], batch_size, batchnorm)
    for epoch in range(initial_epoch, epochs):
        # nk.fit's own order for (seed, epoch): a sparse X in one chunk trains as the dense one
        order = to_numpy(net.backend.random((seed, epoch)).permutation(n)) if shuffle else \
            np.arange(n)
        total = 0.0
        for c, (a, b) in enumerate(bounds):
            rows = order[a:b]
            try:
                part = fit(net, rows_for(net, X[rows].toarray()), y[rows], epochs=1,
                           batch_size=min(batch_size, b - a), shuffle=False,
                           seed=mixed_seed((seed, epoch, c)), progress=False,
                           sample_weight=None if sw is None else sw[rows], **options)
            except NonFiniteError:
                if not rules.stops_on_nan:
                    raise
                rules.nan_stop()
                return
            total += part["loss"][0] * (b - a)
        logs = {"loss": total / n}
        history.append(epoch, logs)
        if rules.end_epoch(net, logs["loss"]):
            break
