"""`NNRegressor`: one output per target column, trained on the mean squared error."""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score

from .base import NNBase, Targets, without_early_stopping


class NNRegressor(RegressorMixin, NNBase):
    """A neural-network regressor trained by nnkernel (mean squared error).

    Parameters as `NNClassifier` (early stopping scores R² on the validation rows). y of
    shape (n,) gives predictions of shape (n,), y of shape (n, k) one output per column
    and predictions (n, k). Targets are not scaled: put the regressor in a
    `sklearn.compose.TransformedTargetRegressor` for targets of large magnitude. After
    fit: ``n_outputs_`` and the attributes listed for NNClassifier.
    """

    _y_checks = {"multi_output": True, "y_numeric": True}

    @without_early_stopping
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing the network and the optimizer state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _targets(self, y, continuing, incremental, classes):
        y2 = np.reshape(np.asarray(y, dtype=np.float64), (y.shape[0], -1))
        if continuing and y2.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y2.shape[1]} outputs, but the regressor was fitted with "
                             f"{self.n_outputs_}")
        fitted = {} if continuing else {"n_outputs_": y2.shape[1], "_y_1d": y.ndim == 1}
        return Targets(y2, y2.shape[1], "mse", None, fitted)

    def _validation_score(self, out, y, sw) -> float:
        return float(r2_score(y, out, sample_weight=sw))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y of shape (n, k): k output units
        return tags

    def predict(self, X):
        y, out = self._outputs(X, "predict")
        return out(y[:, 0] if self._y_1d else y, cast=True)
