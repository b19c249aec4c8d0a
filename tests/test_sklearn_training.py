"""nnkernel.sklearn's training contract, MLPClassifier's where it makes sense: tol and
n_iter_no_change, ConvergenceWarning, n_iter_ per fit, the fitted attributes, coefs_ and
intercepts_ as views, the stratified early-stopping split, verbose output, multilabel y,
which classes a continued fit accepts, and partial_fit beside early stopping."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from conftest import backend_unavailable  # noqa: E402
from sklearn.datasets import make_blobs, make_multilabel_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

import nnkernel.sklearn.base as base  # noqa: E402
from nnkernel.backend import to_numpy  # noqa: E402
from nnkernel.sklearn import NNClassifier, NNRegressor  # noqa: E402

SMALL = {"hidden_layer_sizes": (8,), "lr": 0.03, "random_state": 0}


def blobs(n=90, centers=3):
    return make_blobs(n_samples=n, centers=centers, n_features=4, random_state=0)


def test_tol_and_n_iter_no_change_stop_else_a_convergence_warning():
    X, y = blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a converged fit does not warn
        clf = NNClassifier(**SMALL, epochs=500, tol=0.05, n_iter_no_change=2).fit(X, y)
    assert clf.n_iter_ < 500 and len(clf.loss_curve_) == clf.n_iter_
    curve = clf.loss_curve_  # it stopped after 3 epochs that missed the best by tol
    assert all(curve[i] > min(curve[:i]) - 0.05 for i in range(len(curve) - 3, len(curve)))
    assert clf.best_loss_ == min(curve)
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(5\)"):
        NNClassifier(**SMALL, epochs=5).fit(X, y)
    with pytest.warns(ConvergenceWarning):  # n_iter_no_change=inf: never stops early
        reg = NNRegressor(**SMALL, epochs=30, tol=1e9, n_iter_no_change=np.inf).fit(X, y)
    assert reg.n_iter_ == 30


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_n_iter_is_per_fit_and_the_record_carries_over():
    X, y = blobs()
    clf = NNClassifier(**SMALL, epochs=3, warm_start=True).fit(X, y)
    clf.fit(X, y)
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 6  # as MLPClassifier's warm_start
    assert clf.history_.epochs == [0, 1, 2, 3, 4, 5]
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 7
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    cold = NNClassifier(**SMALL, epochs=3).fit(X, y)
    assert len(cold.fit(X, y).loss_curve_) == 3  # a new fit starts a new record


@pytest.mark.parametrize("backend", ["numpy", "torch", "array_api_strict"])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_coefs_and_intercepts_in_mlps_layout(backend):
    if backend_unavailable(backend):
        pytest.skip(backend_unavailable(backend))
    X, y = blobs()
    clf = NNClassifier(hidden_layer_sizes=(8, 5), epochs=2, backend=backend).fit(X, y)
    assert [tuple(w.shape) for w in clf.coefs_] == [(4, 8), (8, 5), (5, 3)]
    assert [tuple(b.shape) for b in clf.intercepts_] == [(8,), (5,), (3,)]
    if backend != "array_api_strict":  # in-place backends: views of the parameters
        before = clf.predict_proba(X)
        clf.coefs_[-1][...] = 0.0
        clf.intercepts_[-1][...] = 0.0
        np.testing.assert_allclose(clf.predict_proba(X), 1 / 3, rtol=1e-6)
        assert not np.allclose(before, 1 / 3)
    assert not hasattr(NNClassifier(), "coefs_")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_early_stopping_split_is_stratified_or_says_why_not(monkeypatch):
    seen, real = [], base.train_test_split
    monkeypatch.setattr(base, "train_test_split",
                        lambda *a, **k: seen.append(k["stratify"]) or real(*a, **k))
    X, y = blobs()
    clf = NNClassifier(**SMALL, epochs=10, early_stopping=True, validation_fraction=0.2)
    clf.fit(X, y)
    np.testing.assert_array_equal(seen[-1], y)  # by class
    rare = y.copy()
    rare[0] = 3  # a class of one sample cannot be in both parts
    with pytest.warns(UserWarning, match="not stratified: the least populated class has 1"):
        clf.fit(X, rare)
    assert seen[-1] is None
    # the weights of the best validation score are the ones kept
    val = np.sort(real(np.arange(90), test_size=0.2, random_state=0, stratify=y)[1])
    clf.fit(X, y)
    assert clf.score(X[val], y[val]) == clf.best_validation_score_
    assert clf.best_validation_score_ == max(clf.validation_scores_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_verbose_prints_mlps_lines_on_stdout(capsys):
    X, y = blobs()
    NNClassifier(**SMALL, epochs=2, early_stopping=True, verbose=True).fit(X, y)
    out = capsys.readouterr()
    assert "Iteration 1, loss = " in out.out and "Validation score: " in out.out
    assert out.err == ""
    NNClassifier(**SMALL, epochs=2).fit(X, y)
    assert capsys.readouterr().out == ""


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_multilabel_y_gets_a_sigmoid_per_label():
    X, Y = make_multilabel_classification(n_samples=80, n_classes=4, random_state=0)
    clf = NNClassifier(hidden_layer_sizes=(32,), epochs=200, lr=0.01, random_state=0).fit(X, Y)
    assert clf.model_.n_out == 4 and list(clf.classes_) == [0, 1, 2, 3]
    proba = clf.predict_proba(X)
    assert proba.shape == (80, 4) and not np.allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(X), (proba > 0.5).astype(int))
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba), rtol=1e-7)
    assert clf.decision_function(X).shape == (80, 4)
    assert clf.score(X, Y) > 0.8  # subset accuracy
    inc = NNClassifier(**SMALL).partial_fit(X, Y, classes=[0, 1, 2, 3]).partial_fit(X, Y)
    assert inc.predict(X).shape == (80, 4)
    NNClassifier(**SMALL, epochs=3, early_stopping=True).fit(X, Y)  # an unstratified split
    with pytest.raises(ValueError, match="multilabel with 3 columns"):
        inc.partial_fit(X, Y[:, :3])
    with pytest.raises(ValueError, match="one label per sample"):
        inc.partial_fit(X, Y[:, 0])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_which_classes_a_continued_fit_accepts():
    X, y = blobs()
    subset = X[y < 2], y[y < 2]
    warm = NNClassifier(**SMALL, epochs=2, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match=r"same classes .* got \[0 1 2\], `y` has \[0 1\]"):
        warm.fit(*subset)  # MLPClassifier refuses a subset in a warm-start fit
    with pytest.raises(ValueError, match="same classes"):
        warm.partial_fit(*subset)  # and in partial_fit with warm_start=True
    inc = NNClassifier(**SMALL).partial_fit(X, y, classes=[0, 1, 2])
    inc.partial_fit(*subset)  # partial_fit takes any subset of the classes
    with pytest.raises(ValueError, match=r"labels \[5\]"):
        inc.partial_fit(X, np.full(90, 5))
    with pytest.raises(ValueError, match="not the same as on the first call"):
        inc.partial_fit(X, y, classes=[0, 1, 2, 3])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_partial_fit_is_absent_with_early_stopping_and_says_why():
    X, y = blobs()
    for est in (NNClassifier(early_stopping=True), NNRegressor(early_stopping=True)):
        assert not hasattr(est, "partial_fit")
        with pytest.raises(AttributeError, match="does not support early_stopping=True"):
            est.partial_fit(X, y)
        assert hasattr(est.set_params(early_stopping=False), "partial_fit")


def test_early_stopping_ends_at_a_nan_loss_with_the_best_weights():
    X, y = blobs()
    reg = NNRegressor(hidden_layer_sizes=(16,), lr=50.0, optimizer="sgd", epochs=30,
                      early_stopping=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.fit(X * 100, y * 1e3)
    assert np.isnan(reg.loss_curve_[-1]) and np.isnan(reg.validation_scores_[-1])
    assert reg.n_iter_ == len(reg.loss_curve_) < 30
    assert np.isfinite(to_numpy(reg.model_.params.flat)).all()  # the best epoch's
