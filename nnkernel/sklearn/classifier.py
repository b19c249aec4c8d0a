"""`NNClassifier`: one label per sample (softmax + cross-entropy) or multilabel 0/1 columns
(one sigmoid output per column + binary cross-entropy)."""

from __future__ import annotations

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import column_or_1d

from .base import NNBase, Targets, without_early_stopping


class NNClassifier(ClassifierMixin, NNBase):
    """A neural-network classifier trained by nnkernel; MLPClassifier's contract where it
    makes sense.

    The network: ``hidden_layer_sizes`` (default (100,)), ``activation`` (MLPClassifier's
    names too), ``dropout`` and ``batchnorm`` describe an MLP built as ``nnkernel train``
    builds it; or ``model=`` gives any nnkernel network: a Sequential (each fit starts
    from a copy of it, weights included) or a function ``(n_features_in, n_outputs) ->
    Sequential or list of layers`` (called per fit, initialised from ``random_state``). A
    network whose input shape is (C, H, W) takes X's rows flat, so CNNs fit in Pipelines.

    Training: ``optimizer`` a name ("adam", "adamw", "sgd", "rmsprop") with ``lr``
    (default 1e-3, MLPClassifier's learning_rate_init) and ``weight_decay``, or an
    optimizer instance (a template: each fit gets a fresh copy); ``batch_size``
    ("auto" = min(200, n)), ``epochs`` (MLPClassifier's max_iter), ``shuffle``, ``tol``
    and ``n_iter_no_change`` (stop when the training loss, or with ``early_stopping``
    the validation accuracy, has not improved by tol for n_iter_no_change + 1 epochs;
    else a ConvergenceWarning), ``validation_fraction`` (a stratified split where it
    can be), ``warm_start``, ``verbose`` (MLPClassifier's lines on stdout),
    ``random_state``. sample_weight is scaled to mean 1 over the training rows.

    Where it runs: ``backend``, ``device`` and ``dtype`` (float32 unless a given model
    says otherwise). Under ``sklearn.set_config(array_api_dispatch=True)`` a torch,
    CuPy or array-api-strict X trains on its library and device, and outputs come back
    there; else outputs are NumPy. X may be sparse (made dense a chunk of rows at a time).

    After fit: ``classes_``, ``model_`` (the trained nnkernel.Sequential), ``coefs_`` and
    ``intercepts_`` (views of its Dense layers), ``loss_curve_``, ``n_iter_`` (this fit's
    epochs), ``best_loss_``, ``validation_scores_``, ``best_validation_score_``,
    ``history_`` (nk.fit's History), ``n_features_in_``. Binary problems have two
    softmax outputs (MLPClassifier: one logistic output).
    """

    _y_checks = {"multi_output": True}  # multilabel indicator y; (n, 1) is raveled below

    @without_early_stopping
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing the network and its optimizer; the first call
        names every class in ``classes`` (for multilabel y, its column numbers)."""
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _targets(self, y, continuing, incremental, classes):
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # a DataConversionWarning, as MLPClassifier
        check_classification_targets(y)
        kind = type_of_target(y)
        multilabel = kind == "multilabel-indicator"
        if y.ndim == 2 and not multilabel:
            raise ValueError(f"y is {kind}; {type(self).__name__} takes one label per sample "
                             f"or multilabel 0/1 indicator columns")
        if classes is not None:
            classes = unique_labels(classes)
            if continuing and not np.array_equal(classes, self.classes_):
                raise ValueError(f"`classes={classes.tolist()}` is not the same as on the first "
                                 f"call to partial_fit, was: {self.classes_.tolist()}")
        elif incremental and not continuing:
            raise ValueError("classes must be passed on the first call to partial_fit")
        seen = np.arange(y.shape[1]) if multilabel else unique_labels(y)
        if not continuing:
            fitted = self._classes(y, multilabel, classes, seen)
        else:
            self._check_continued(y, multilabel, incremental, seen)
            fitted = {}
        encoder = fitted.get("_encoder", self.__dict__.get("_encoder"))
        if multilabel:
            y = np.asarray(y, dtype=np.float64)
            return Targets(y, y.shape[1], "binary_cross_entropy", None, fitted)
        codes = encoder.transform(y).astype(np.int64)
        return Targets(codes, encoder.classes_.size, "cross_entropy", codes, fitted)

    def _classes(self, y, multilabel, classes, seen) -> dict:
        """The attributes a new fit sets (after it succeeds): classes_ and their encoder."""
        if multilabel:
            if classes is not None and classes.size != y.shape[1]:
                raise ValueError(f"y has {y.shape[1]} label columns, but classes has "
                                 f"{classes.size} entries")
            classes = seen
        elif classes is not None:
            unknown = np.setdiff1d(seen, classes)
            if unknown.size:
                raise ValueError(f"y has labels {unknown.tolist()} that are not in classes "
                                 f"{classes.tolist()}")
        encoder = LabelEncoder().fit(seen if classes is None else classes)
        if encoder.classes_.size < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes; "
                             f"y has 1 class ({encoder.classes_[0]!r})")
        return {"classes_": encoder.classes_, "_encoder": encoder, "_multilabel": multilabel}

    def _check_continued(self, y, multilabel, incremental, seen):
        """MLPClassifier's rules: warm_start needs the fitted classes exactly; partial_fit
        takes any subset of them."""
        if multilabel != self._multilabel or (multilabel and y.shape[1] != self.classes_.size):
            raise ValueError(f"y is {'multilabel' if multilabel else 'one label per sample'}"
                             f"{f' with {y.shape[1]} columns' if multilabel else ''}, but the "
                             f"classifier was fitted on "
                             f"{'multilabel' if self._multilabel else 'one label per sample'} "
                             f"y with classes {self.classes_.tolist()}")
        if multilabel:
            return
        if self.warm_start:
            if set(seen) != set(self.classes_):
                raise ValueError(f"warm_start can only be used where `y` has the same classes "
                                 f"as in the previous call to fit. Previously got "
                                 f"{self.classes_}, `y` has {seen}")
        elif np.setdiff1d(seen, self.classes_).size:
            raise ValueError(f"y has labels {np.setdiff1d(seen, self.classes_).tolist()} that "
                             f"the fitted classifier does not know (classes_ = "
                             f"{self.classes_.tolist()}); partial_fit keeps its classes")

    def _check_weighted_targets(self, targets, sw, incremental):
        # zero weights can leave one class: refuse it as a one-class y is refused
        if not incremental and targets.strata is not None and \
                np.unique(targets.strata[sw > 0]).size < 2:
            raise ValueError("only one class has a non-zero sample_weight; "
                             "a classifier needs at least 2 classes")

    def _validation_score(self, z, y, sw) -> float:
        """Accuracy of the outputs z on validation labels (codes, or 0/1 columns)."""
        predicted = (z > 0).astype(np.int64) if y.ndim == 2 else z.argmax(axis=1)
        return float(accuracy_score(y.astype(np.int64), predicted, sample_weight=sw))

    # -- outputs --------------------------------------------------------------------------
    def decision_function(self, X):
        """The logits, (n, n_classes); for two classes z₁ − z₀, (n,), positive for classes_[1]."""
        z, out = self._outputs(X, "decision_function")
        return out(z[:, 1] - z[:, 0] if z.shape[1] == 2 and not self._multilabel else z)

    def predict_log_proba(self, X):
        z, out = self._outputs(X, "predict_log_proba")
        return out(_log_proba(z, self._multilabel))

    def predict_proba(self, X):
        """Softmax of the logits (multilabel: a sigmoid per column), in classes_ order."""
        z, out = self._outputs(X, "predict_proba")
        return out(np.exp(_log_proba(z, self._multilabel)))

    def predict(self, X):
        z, out = self._outputs(X, "predict")
        if self._multilabel:
            return out((z > 0).astype(np.int64))
        labels = self.classes_[np.argmax(z, axis=1)]
        return out(labels) if labels.dtype.kind in "biuf" else labels

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


def _log_proba(z, multilabel: bool):
    if multilabel:  # log σ(z) = −log(1 + e^−z), stably
        return -np.logaddexp(0.0, -z)
    z = z - z.max(axis=1, keepdims=True)  # stable log-softmax, in float64 on the host
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
