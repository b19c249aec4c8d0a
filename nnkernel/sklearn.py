"""scikit-learn estimators over nnkernel: ``NNClassifier`` and ``NNRegressor``.

    from nnkernel.sklearn import NNClassifier
    clf = NNClassifier(hidden_layer_sizes=(64,), epochs=30, random_state=0).fit(X, y)
    clf.predict_proba(X_test)

A thin layer over `nnkernel.fit` in skorch's shape: the estimator validates the data
the scikit-learn way, builds an `nnkernel.Sequential` MLP as the CLI does (Dense,
[BatchNorm], activation, [Dropout] per hidden layer), and hands the training loop
everything else. Inputs are anything scikit-learn accepts (NumPy, lists, pandas);
outputs are NumPy arrays whatever ``backend`` the network runs on.

scikit-learn is an optional extra (``pip install "nnkernel[sklearn]"``); the core of
nnkernel never imports this module.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import _check_partial_fit_first_call, check_classification_targets
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("nnkernel.sklearn needs scikit-learn >= 1.6; install it with "
                      "pip install \"nnkernel[sklearn]\"") from error

import nnkernel as nk
from nnkernel.backend import to_numpy

__all__ = ["NNClassifier", "NNRegressor", "expected_failed_checks"]

# Hidden activations by name, as public layer classes: with batchnorm the activation is
# its own layer after BatchNorm (Dense -> BatchNorm -> g, as `nnkernel train --batchnorm`).
_ACTIVATIONS = {"relu": nk.ReLU, "tanh": nk.Tanh, "sigmoid": nk.Sigmoid, "identity": nk.Identity,
                "leaky_relu": nk.LeakyReLU, "elu": nk.ELU, "gelu": nk.GELU, "swish": nk.Swish,
                "silu": nk.SiLU}
_ALIASES = {"logistic": "sigmoid", "linear": "identity"}  # MLPClassifier's names
_FLOATS = (np.float64, np.float32)  # check_array keeps these, casts ints/objects to float64
_AUTO_BATCH = 200  # MLPClassifier's batch_size="auto" is min(200, n_samples)


class _NNBase(BaseEstimator):
    """What NNClassifier and NNRegressor share; a subclass supplies the targets and the loss."""

    _loss = ""

    def __init__(self, hidden_layer_sizes=(100,), *, activation="relu", dropout=0.0,
                 batchnorm=False, optimizer="adam", lr=1e-3, weight_decay=None,
                 batch_size="auto", epochs=200, early_stopping=False, validation_fraction=0.1,
                 patience=10, random_state=None, backend="numpy", device=None, dtype="float32",
                 warm_start=False, verbose=False):
        # scikit-learn's rule: store the arguments unchanged, validate them in fit
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.batchnorm = batchnorm
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.warm_start = warm_start
        self.verbose = verbose

    # -- training -----------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Train for ``epochs`` epochs (fewer with early stopping); returns self.

        A fresh network each call, or with ``warm_start=True`` the fitted one, continued
        with a fresh optimizer (as MLPClassifier's warm_start; partial_fit keeps the
        optimizer's moments too).
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        fitted = hasattr(self, "model_")
        first = not fitted or not (incremental or self.warm_start)
        sizes, activation = self._check_params()
        X, y = validate_data(self, X, y, reset=first, dtype=_FLOATS, **self._y_checks)
        y, n_out = self._targets(y, first, classes)
        sw = None
        if sample_weight is not None:
            sw = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                      ensure_non_negative=True)
            if not np.any(sw > 0):  # older scikit-learn does not refuse this itself
                raise ValueError("sample_weight must contain at least one non-zero weight")
            self._check_weighted_targets(y, sw, incremental)
        if first:
            seed = _seed(self.random_state)
            model = self._build(X.shape[1], n_out, sizes, activation, seed)
            optimizer, history, done = self._new_optimizer(), None, 0
        else:  # partial_fit and warm_start continue; after unpickling, fresh optimizer moments
            self._check_same_network(sizes)
            seed, model, history, done = self._seed, self.model_, self.history_, self.n_iter_
            optimizer = getattr(self, "_optimizer", None) if incremental else None
            optimizer = self._new_optimizer() if optimizer is None else optimizer

        callbacks, validation = [], None
        if self.early_stopping and not incremental:  # as MLPClassifier: not in partial_fit
            train, val = self._split(y, seed)
            validation = (X[val], y[val])
            X, y, sw = X[train], y[train], None if sw is None else sw[train]
            callbacks.append(nk.EarlyStopping("val_loss", patience=self.patience,
                                              restore_best=True))
        extra = {} if sw is None else {"sample_weight": sw}  # nk.fit's Keras-style weights
        # partial_fit shifts the seed per call: each call then shuffles (and drops out) anew
        history = nk.fit(model, X, y, loss=self._loss, optimizer=optimizer,
                         epochs=1 if incremental else self.epochs,
                         batch_size=self._batch_size(X.shape[0]), validation_data=validation,
                         shuffle=True, seed=seed + done, callbacks=callbacks,
                         progress=bool(self.verbose), history=history, **extra)
        # set after training: a fit that raises keeps the model of the last fit that succeeded
        self.model_, self._optimizer, self.history_, self._seed = model, optimizer, history, seed
        self.loss_curve_ = list(history["loss"])
        self.n_iter_ = len(self.loss_curve_)
        return self

    def _check_params(self):
        """The checks nnkernel's own errors would not phrase in the estimator's terms."""
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
                   for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {sizes!r}")
        name = str(self.activation).lower()
        name = _ALIASES.get(name, name)
        if name not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: "
                             f"{', '.join(sorted(_ACTIVATIONS) + sorted(_ALIASES))}")
        if not isinstance(self.epochs, numbers.Integral) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if self.early_stopping:
            if not 0.0 < self.validation_fraction < 1.0:
                raise ValueError(f"validation_fraction must be in (0, 1), got "
                                 f"{self.validation_fraction!r}")
            if not isinstance(self.patience, numbers.Integral) or self.patience < 1:
                raise ValueError(f"patience must be a positive integer, got {self.patience!r}")
        # dropout, lr, weight_decay, optimizer, backend, dtype: nnkernel raises ConfigError,
        # a ValueError, naming the valid values
        return sizes, name

    def _check_same_network(self, sizes):
        """A continued fit needs the architecture it continues (MLPClassifier raises too)."""
        built = tuple(layer.n_out for layer in self.model_.layers
                      if isinstance(layer, nk.Dense))[:-1]
        if built != sizes:
            raise ValueError(f"hidden_layer_sizes is {sizes}, but the fitted network has hidden "
                             f"layers {built}; set warm_start=False (or refit) to train a new "
                             f"network")

    def _build(self, n_in, n_out, sizes, activation, seed):
        layers, width = [], n_in
        for size in sizes:
            if self.batchnorm:
                layers += [nk.Dense(width, size), nk.BatchNorm(size), _ACTIVATIONS[activation]()]
            else:
                layers.append(nk.Dense(width, size, activation=activation))
            if self.dropout:
                layers.append(nk.Dropout(self.dropout))
            width = size
        layers.append(nk.Dense(width, n_out))  # logits (classifier) or values (regressor)
        return nk.Sequential(*layers, seed=seed, dtype=self.dtype, backend=self.backend,
                             device=self.device)

    def _new_optimizer(self):
        options = {"lr": self.lr}
        if self.weight_decay is not None:  # else the optimizer's own default (AdamW: 0.01)
            options["weight_decay"] = self.weight_decay
        return nk.optim.get_optimizer(self.optimizer, **options)

    def _batch_size(self, n):
        if self.batchnorm and n < 2:
            raise ValueError(f"batchnorm=True needs batches of at least 2 rows; got {n} sample")
        if isinstance(self.batch_size, str) and self.batch_size == "auto":
            size = min(_AUTO_BATCH, n)
            while self.batchnorm and n % size == 1:  # no last batch of 1 row for BatchNorm
                size -= 1
            return size
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, numbers.Integral) \
                or self.batch_size < 1:
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got "
                             f"{self.batch_size!r}")
        if self.batch_size > n:  # as MLPClassifier: clip and say so (nk.fit refuses)
            warnings.warn(f"batch_size {self.batch_size} is larger than the {n} training "
                          f"samples; clipping it to {n}", UserWarning, stacklevel=3)
        return min(int(self.batch_size), n)

    def _split(self, y, seed):
        """Train and validation indices for early stopping (stratified for a classifier)."""
        n = y.shape[0]
        stratify = None
        if self._stratify:
            counts, n_val = np.bincount(y), math.ceil(self.validation_fraction * n)
            if counts.min() >= 2 and min(n_val, n - n_val) >= counts.size:  # else it raises
                stratify = y
        return train_test_split(np.arange(n), test_size=self.validation_fraction,
                                random_state=seed, stratify=stratify)

    def _check_weighted_targets(self, y, sw, incremental):
        pass

    # -- inference ----------------------------------------------------------------------
    def _outputs(self, X):
        """The network's outputs for X, as float64 NumPy (n, n_outputs)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=_FLOATS)
        model = self.model_
        out = model.predict(model.backend.asarray(X, dtype=model.dtype), batch_size=1024)
        return np.asarray(to_numpy(out), dtype=np.float64)

    # -- pickling: the model travels as (config, arrays, backend), not as live objects ----
    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: Python 3.11+ hands back __dict__ itself
        model = state.pop("model_", None)
        if model is not None:
            state["_model_saved"] = (model.config(), model.arrays(), model.backend.name)
        state.pop("_optimizer", None)  # backend arrays and kernels; partial_fit makes a new one
        return state

    def __setstate__(self, state):
        state = dict(state)
        saved = state.pop("_model_saved", None)
        super().__setstate__(state)
        if saved is not None:
            config, arrays, backend = saved
            self.model_ = nk.Sequential.from_config(config, backend=backend, device=self.device)
            self.model_.load_arrays(arrays)


class NNClassifier(ClassifierMixin, _NNBase):
    """A multilayer-perceptron classifier trained by nnkernel (softmax + cross-entropy).

    Parameters mirror `sklearn.neural_network.MLPClassifier` where they overlap
    (``hidden_layer_sizes=(100,)``, ``lr`` = ``learning_rate_init``, ``batch_size="auto"``,
    ``epochs`` = ``max_iter``, ``random_state``, ``warm_start``); ``dropout``, ``batchnorm``,
    ``optimizer`` ("adam", "adamw", "sgd", "rmsprop"), ``backend``, ``device`` and ``dtype``
    are nnkernel's.
    Labels may be of any type: they are encoded with a LabelEncoder, and binary problems get
    two logits. After fit: ``classes_``, ``model_`` (the trained nnkernel.Sequential),
    ``history_`` (nk.fit's History), ``loss_curve_``, ``n_iter_``, ``n_features_in_``.
    """

    _loss = "cross_entropy"
    _y_checks: dict = {}  # 1-D labels: a column vector is raveled with a DataConversionWarning
    _stratify = True

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing the network and optimizer; ``classes`` on call one."""
        # refuses a first call without classes, or classes that differ from classes_
        if _check_partial_fit_first_call(self, classes):
            del self.classes_  # it set them; _targets sets them again, with the encoder
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _targets(self, y, first, classes):
        check_classification_targets(y)
        unseen = () if first else np.setdiff1d(np.unique(y), self.classes_)
        if len(unseen):
            raise ValueError(f"y has labels {unseen.tolist()} that the fitted classifier does "
                             f"not know (classes_ = {self.classes_.tolist()}); a continued fit "
                             f"(warm_start, partial_fit) keeps its classes")
        if first:
            self._encoder = LabelEncoder().fit(y if classes is None else classes)
            self.classes_ = self._encoder.classes_
            if self.classes_.size < 2:
                raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes; "
                                 f"y has 1 class ({self.classes_[0]!r})")
        return self._encoder.transform(y).astype(np.int64), self.classes_.size

    def _check_weighted_targets(self, y, sw, incremental):
        # zero weights can leave one class: refuse it as a one-class y is refused
        if not incremental and np.unique(y[sw > 0]).size < 2:
            raise ValueError("only one class has a non-zero sample_weight; "
                             "a classifier needs at least 2 classes")

    def decision_function(self, X):
        """The logits, (n, n_classes); for two classes z₁ − z₀, (n,), positive for classes_[1]."""
        z = self._outputs(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_log_proba(self, X):
        z = self._outputs(X)
        z = z - z.max(axis=1, keepdims=True)  # stable log-softmax, in float64 on the host
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict_proba(self, X):
        """Softmax of the logits, (n, n_classes), in the order of ``classes_``."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        z = self._outputs(X)  # first: it raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(z, axis=1)]


class NNRegressor(RegressorMixin, _NNBase):
    """A multilayer-perceptron regressor trained by nnkernel (mean squared error).

    Parameters as `NNClassifier`. y of shape (n,) gives predictions of shape (n,), y of
    shape (n, k) one output per column and predictions (n, k). Targets are not scaled:
    put the regressor in a `sklearn.compose.TransformedTargetRegressor` for targets of
    large magnitude. After fit: ``n_outputs_`` and the attributes listed for NNClassifier.
    """

    _loss = "mse"
    _y_checks = {"multi_output": True, "y_numeric": True}
    _stratify = False

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing the network and the optimizer state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _targets(self, y, first, classes):
        y2 = np.reshape(np.asarray(y, dtype=np.float64), (y.shape[0], -1))
        if first:
            self._y_1d = y.ndim == 1
            self.n_outputs_ = y2.shape[1]
        elif y2.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y2.shape[1]} outputs, but the regressor was fitted with "
                             f"{self.n_outputs_}")
        return y2, y2.shape[1]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y of shape (n, k): k output units
        return tags

    def predict(self, X):
        out = self._outputs(X)
        return out[:, 0] if self._y_1d else out


def expected_failed_checks(estimator) -> dict[str, str]:
    """The `check_estimator` checks an estimator fails by nature, with the reason.

    scikit-learn >= 1.6 takes these as ``check_estimator(est, expected_failed_checks=...)``
    or ``parametrize_with_checks([...], expected_failed_checks=expected_failed_checks)``.
    """
    failing = {"check_sample_weight_equivalence_on_dense_data": (
        "minibatch training with Keras-style weights (each sample's loss times its weight, "
        "the mean over the batch size) is not the same computation as repeating samples: "
        "the batch means and the minibatches differ, so the fits agree only roughly")}
    if str(getattr(estimator, "dtype", "float32")) == "float32":
        failing["check_methods_subset_invariance"] = (
            "float32 matrix products: BLAS sums a 1-row product in another order than a "
            "20-row one, so outputs differ by float32 rounding (~1e-7 relative), beyond the "
            "check's atol=1e-7; with dtype='float64' the check passes")
    return failing


def _seed(random_state) -> int:
    """The int seed nnkernel takes: an int as is (so random_state=0 gives the weights of
    nk.Sequential(seed=0)), else one drawn from the RandomState (None: the global one)."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
