"""`NNBase`: what NNClassifier and NNRegressor share; a subclass supplies targets and scores.

A thin layer over `nnkernel.fit` in skorch's shape: scikit-learn's checks of the data
(`inputs`), a network per fit (`network`), MLPClassifier's epoch rules (`training`).
"""

from __future__ import annotations

import functools
import math
import types
import warnings
from typing import NamedTuple

import array_api_compat
import numpy as np
from scipy import sparse
from sklearn import get_config
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from ..backend import Backend, dtype_name
from ..errors import NnkernelError
from ..nn.sequential import Sequential
from ..train import History
from .inputs import (
    NUMPY,
    Output,
    check_range,
    check_X,
    host_outputs,
    on_device,
    on_net,
    portable_device,
    space_of,
    to_host,
)
from .network import (
    build_network,
    dense_views,
    describe,
    new_optimizer,
    planned_layers,
    target_backend,
)
from .params import check_params, seed_of
from .training import Record, Rules, run_epochs

AUTO_BATCH = 200  # MLPClassifier's batch_size="auto" is min(200, n_samples)


class Targets(NamedTuple):
    """y as the network trains on it, its width, the loss, labels to stratify by, and the
    attributes a new fit sets once it succeeds (classes_, n_outputs_, ...)."""

    y: np.ndarray
    n_out: int
    loss: str
    strata: np.ndarray | None
    fitted: dict


class NNBase(BaseEstimator):
    """Parameters and fit; see NNClassifier for their meaning."""

    def __init__(self, hidden_layer_sizes=(100,), *, model=None, activation="relu", dropout=0.0,
                 batchnorm=False, optimizer="adam", lr=None, weight_decay=None,
                 batch_size="auto", epochs=200, shuffle=True, tol=1e-4, n_iter_no_change=10,
                 early_stopping=False, validation_fraction=0.1, random_state=None, backend=None,
                 device=None, dtype=None, warm_start=False, verbose=False):
        # scikit-learn's rule: store the arguments unchanged, validate them in fit (params.py)
        self.hidden_layer_sizes = hidden_layer_sizes
        self.model = model
        self.activation = activation
        self.dropout = dropout
        self.batchnorm = batchnorm
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.shuffle = shuffle
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.warm_start = warm_start
        self.verbose = verbose

    # -- training -----------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Train for up to ``epochs`` epochs; returns self.

        A new network each call; with ``warm_start=True`` the fitted one, continued for up
        to ``epochs`` more with a fresh optimizer (as MLPClassifier's warm_start).
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        settings = check_params(self)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             f"is None")
        continuing = hasattr(self, "model_") and (incremental or self.warm_start)
        space = space_of(X)
        if continuing:
            self._check_space(space, "partial_fit" if incremental else "fit")
        y, sample_weight = to_host(y, "y"), to_host(sample_weight, "sample_weight")
        X, y = check_X(self, X, y, reset=not continuing, space=space, y_checks=self._y_checks)
        targets = self._targets(y, continuing, incremental, classes)
        sw = None
        if sample_weight is not None:
            sw = np.asarray(to_host(_check_sample_weight(sample_weight, X,
                                                         ensure_non_negative=True),
                                    "sample_weight"), dtype=np.float64)
            self._check_weighted_targets(targets, sw, incremental)
        seed = self._seed if continuing else seed_of(self.random_state)
        net = self._network(settings, X.shape[1], targets.n_out, seed, space, continuing)
        check_range(X, net.dtype)
        optimizer = self.__dict__.get("_optimizer") if continuing and incremental else None
        if optimizer is None:  # a fresh one per fit; partial_fit keeps its moments
            optimizer = new_optimizer(self.optimizer, self.lr, self.weight_decay)

        # a continued fit trains the fitted network in place and extends its record (as
        # MLPClassifier); a new one commits its network and record only once it succeeds
        record = self._record if continuing else Record.new(self.early_stopping)
        record.expect(self.early_stopping)  # a warm start may switch early stopping on or off
        history = self.history_ if continuing else History()
        train, scorer = (X, targets.y, sw), None
        if self.early_stopping:
            train, val = self._split(X, targets, sw, seed, settings.validation_fraction)
            _mean_one(val[2], "validation")  # a score of no weight is undefined
            scorer = self._scorer(net, *val)
        rules = Rules(record, settings.tol, settings.n_iter_no_change, scorer, self.verbose)
        done, epochs = len(record.loss_curve), 1 if incremental else settings.epochs
        run_epochs(net, train[0], train[1],
                   _mean_one(train[2], "training" if self.early_stopping else ""),
                   rules=rules, history=history, epochs=done + epochs, initial_epoch=done,
                   seed=seed, loss=targets.loss, optimizer=optimizer, shuffle=settings.shuffle,
                   batch_size=self._batch_size(train[0].shape[0]))
        if scorer is not None and record.best_arrays is not None:
            net.load_arrays(record.best_arrays)  # the weights of the best validation score
        if not incremental and not rules.stopped and rules.epochs == epochs:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({epochs}) reached and the "
                          f"optimization hasn't converged yet (epochs={epochs}; the loss still "
                          f"improves by more than tol={settings.tol})", ConvergenceWarning,
                          stacklevel=3)
        self.model_, self._optimizer, self._seed, self._space = net, optimizer, seed, space
        for name, value in targets.fitted.items():
            setattr(self, name, value)
        self._record, self.history_, self.n_iter_ = record, history, rules.epochs
        self.loss_curve_, self.best_loss_ = record.loss_curve, record.best_loss
        self.validation_scores_ = record.validation_scores
        self.best_validation_score_ = record.best_validation_score
        return self

    def _network(self, settings, n_in, n_out, seed, space, continuing):
        """A new network, or the fitted one where the parameters still describe it."""
        if not continuing:
            return build_network(settings, n_in, n_out, seed,
                                 target_backend(settings, space, self.device))
        planned = planned_layers(settings, n_in, n_out)
        if planned is None:  # a builder: only calling it tells
            planned = build_network(settings, n_in, n_out, seed,
                                    target_backend(settings, space, self.device)
                                    ).config()["layers"]
        if planned != self.model_.config()["layers"]:
            raise ValueError(f"the parameters describe a network with {describe(planned)}, but "
                             f"the fitted one has {describe(self.model_.config()['layers'])}; "
                             f"set warm_start=False (or refit) to train a new network")
        return self.model_

    def _split(self, X, targets, sw, seed, fraction):
        """(train, validation) triples (X, y, sample_weight) for early stopping, stratified by
        class where that is possible (else with a warning)."""
        n = X.shape[0]
        n_val = math.ceil(fraction * n)
        if n_val < 2 or n_val >= n:
            raise ValueError(f"The validation set is too small: validation_fraction={fraction} "
                             f"of n_samples={n} gives {n_val} validation rows and {n - n_val} "
                             f"training rows; early stopping needs 2 or more validation rows "
                             f"and a training row. Increase 'validation_fraction' or the size "
                             f"of your dataset.")
        strata = targets.strata
        if strata is not None:
            counts = np.bincount(strata)
            counts = counts[counts > 0]
            if counts.min() < 2 or min(n_val, n - n_val) < counts.size:
                warnings.warn(f"the early-stopping validation split is not stratified: the "
                              f"least populated class has {counts.min()} sample(s) and there "
                              f"are {counts.size} classes for {n_val} validation rows; it is "
                              f"a plain random split", UserWarning, stacklevel=4)
                strata = None
        train, val = train_test_split(np.arange(n), test_size=fraction, random_state=seed,
                                      stratify=strata)
        train, val = np.sort(train), np.sort(val)
        pick = [_rows(X, train), targets.y[train], None if sw is None else sw[train]]
        return pick, (_rows(X, val), targets.y[val], None if sw is None else sw[val])

    def _batch_size(self, n):
        if self.batchnorm and n < 2:
            raise ValueError(f"batchnorm=True needs batches of at least 2 rows; got {n} sample")
        if isinstance(self.batch_size, str):  # "auto" (params.py refused anything else)
            return min(AUTO_BATCH, n)
        if self.batch_size > n:  # as MLPClassifier: clip and say so (nk.fit refuses)
            warnings.warn(f"batch_size {self.batch_size} is larger than the {n} training "
                          f"samples; clipping it to {n}", UserWarning, stacklevel=4)
        return min(int(self.batch_size), n)

    def _check_weighted_targets(self, targets, sw, incremental):
        pass

    # -- inference ----------------------------------------------------------------------
    def _check_space(self, space, method):
        """Under array_api_dispatch, X must come from the library and device of fit's X."""
        if get_config()["array_api_dispatch"] and not space.same(self._space):
            raise ValueError(f"Inputs passed to {type(self).__name__}.{method}() must use the "
                             f"same namespace and the same device as those passed to fit(): "
                             f"fit had {self._space} arrays, {method} has {space} ones")

    def _outputs(self, X, method):
        """(the network's outputs for X as float64 NumPy (n, n_outputs), an `Output` that puts
        results back where X came from: its library, device and float dtype)."""
        check_is_fitted(self)
        space = space_of(X)
        self._check_space(space, method)
        X = check_X(self, X, reset=False, space=space)
        check_range(X, self.model_.dtype)
        space = space if get_config()["array_api_dispatch"] else NUMPY
        return host_outputs(self.model_, X), Output(space, dtype_name(X.dtype))

    def _scorer(self, net, X, y, sw):
        """The validation score of the network as it is (early stopping)."""
        X = on_net(net, X)  # moved to the device once

        def score(model):
            out = host_outputs(model, X)
            if not np.isfinite(out).all():  # diverging: NaN, as MLPClassifier's score
                return math.nan
            return self._validation_score(out, y, sw)
        return score

    @property
    def coefs_(self) -> list:
        """The Dense layers' weights, (n_in, n_out) each, as MLPClassifier's coefs_: views of
        the network's parameters where its backend writes in place (NumPy, torch, CuPy)."""
        return dense_views(self._fitted("coefs_"), "W")

    @property
    def intercepts_(self) -> list:
        """The Dense layers' biases, as MLPClassifier's intercepts_ (views, as coefs_)."""
        return dense_views(self._fitted("intercepts_"), "b")

    def _fitted(self, name):
        net = self.__dict__.get("model_")
        if net is None:
            raise AttributeError(f"{type(self).__name__} has no {name} before fit")
        return net

    # -- pickling: the network as (config, arrays, where), the optimizer's moments left -----
    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: Python 3.11+ hands back __dict__ itself
        net = state.pop("model_", None)
        if net is not None:
            state["_model_saved"] = (net.config(), net.arrays(), net.backend.name,
                                     portable_device(net.backend.name, net.backend.device))
        state.pop("_optimizer", None)  # backend arrays; partial_fit makes a new one
        return state

    def __setstate__(self, state):
        state = dict(state)
        saved = state.pop("_model_saved", None)
        super().__setstate__(state)
        if saved is not None:
            config, arrays, name, device = saved
            try:
                where = Backend(name, device)
            except NnkernelError as err:  # e.g. pickled on a GPU machine, loaded on a CPU one
                warnings.warn(f"unpickling a {name} network onto numpy: {err}", RuntimeWarning,
                              stacklevel=2)
                where = Backend("numpy")
            self.model_ = Sequential.from_config(config, backend=where)
            self.model_.load_arrays(arrays)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.array_api_support = True
        return tags


class without_early_stopping:  # noqa: N801 - used as a decorator, as available_if
    """A method that exists only with early_stopping=False (partial_fit: one epoch has no
    validation curve to stop on): hasattr() says False otherwise, so meta-estimators and
    scikit-learn's checks see it is absent, and the AttributeError says why (available_if's
    says only that the attribute is missing)."""

    def __init__(self, method):
        self.method = method
        functools.update_wrapper(self, method)

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        if obj.early_stopping:
            raise AttributeError(f"{self.method.__name__} does not support early_stopping=True: "
                                 f"one epoch has no validation curve to stop on; set "
                                 f"early_stopping=False")
        return types.MethodType(self.method, obj)


def _mean_one(sw, split: str):
    """Weights scaled to mean 1: only their ratios matter (MLPClassifier divides by their
    sum), and tiny ones do not underflow to 0 in a float32 network. Equal weights are no
    weights (None): the fit is then exactly the unweighted one. ``split`` names the rows of
    the early-stopping split ("training", "validation"), or is "" for all of them."""
    if sw is None:
        return None
    total = float(np.sum(sw))
    if total <= 0.0:
        rows = f"{split} row of the early-stopping split" if split else "row"
        raise ValueError(f"sample_weight is zero for every {rows}: nothing would be learned or "
                         f"scored; give some of those rows a positive weight")
    return None if np.all(sw == sw[0]) else sw * (sw.shape[0] / total)


def _rows(X, index):
    """Rows of X by a NumPy index, for any library's X (array-api-strict wants its own)."""
    if isinstance(X, np.ndarray) or sparse.issparse(X):
        return X[index]
    xp = array_api_compat.array_namespace(X)
    with on_device(X):
        return xp.take(X, xp.asarray(index, device=array_api_compat.device(X)), axis=0)
