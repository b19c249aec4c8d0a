"""nnkernel.sklearn: NNClassifier and NNRegressor as scikit-learn estimators.

The networks are tiny and train for few epochs (check_estimator's datasets have at most
a few hundred rows, so an epoch is one or two steps): the file runs in seconds.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

from conftest import backend_unavailable  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_blobs, make_regression  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import nnkernel as nk  # noqa: E402
from nnkernel.sklearn import NNClassifier, NNRegressor, expected_failed_checks  # noqa: E402

# Small and quick, yet above check_estimator's score thresholds (accuracy 0.83, R² 0.5).
FAST = {"hidden_layer_sizes": (16,), "epochs": 50, "lr": 0.03}


def small_net(n_in, n_out):
    """A builder for model=: any nnkernel network goes through the same checks."""
    return [nk.Dense(n_in, 16), nk.Tanh(), nk.Dense(16, n_out)]


@parametrize_with_checks(
    [NNClassifier(**FAST), NNRegressor(**FAST),
     NNClassifier(model=small_net, epochs=50, lr=0.03),
     NNClassifier(**FAST | {"hidden_layer_sizes": (16, 16)}, batchnorm=True, dropout=0.1,
                  dtype="float64"),
     NNRegressor(**FAST, early_stopping=True, n_iter_no_change=3, activation="tanh",
                 validation_fraction=0.2)],
    expected_failed_checks=expected_failed_checks)
def test_check_estimator(estimator, check, monkeypatch):
    # the array API checks switch array_api_dispatch on, which scikit-learn allows only with
    # SciPy's array API support declared
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    namespace = getattr(check, "keywords", {}).get("array_namespace")
    if namespace == "cupy" and backend_unavailable("cupy"):  # CuPy installed, but no GPU
        pytest.skip(backend_unavailable("cupy"))
    check(estimator)


# -- data ----------------------------------------------------------------------------------
def blobs(n=120, centers=3, seed=0, std=1.0):
    return make_blobs(n_samples=n, centers=centers, n_features=4, cluster_std=std,
                      random_state=seed)


def test_string_labels_multiclass():
    X, y = blobs()
    labels = np.array(["cat", "dog", "emu"])[y]
    clf = NNClassifier(**FAST, random_state=0).fit(X, labels)
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    assert set(clf.predict(X)) <= set(labels)
    assert clf.score(X, labels) > 0.9
    proba = clf.predict_proba(X)
    assert proba.shape == (120, 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.log(proba), clf.predict_log_proba(X), atol=1e-10)
    assert clf.decision_function(X).shape == (120, 3)
    np.testing.assert_array_equal(clf.classes_[clf.decision_function(X).argmax(1)],
                                  clf.predict(X))


def test_binary_labels_of_any_type():
    X, y = blobs(centers=2)
    labels = np.where(y == 1, 7, -3)
    clf = NNClassifier(**FAST, random_state=0).fit(X, labels)
    assert list(clf.classes_) == [-3, 7]
    assert clf.model_.n_out == 2  # two logits: softmax cross-entropy for binary too
    assert clf.predict_proba(X).shape == (120, 2)
    d = clf.decision_function(X)
    assert d.shape == (120,)
    np.testing.assert_array_equal(np.where(d > 0, 7, -3), clf.predict(X))


def test_one_class_is_refused():
    X, _ = blobs()
    with pytest.raises(ValueError, match="at least 2 classes"):
        NNClassifier(**FAST).fit(X, np.zeros(120))


def test_pandas_feature_names():
    pd = pytest.importorskip("pandas")
    X, y = blobs()
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = NNClassifier(**FAST, random_state=0).fit(df, pd.Series(y))
    assert list(clf.feature_names_in_) == ["a", "b", "c", "d"]
    assert clf.n_features_in_ == 4
    with pytest.warns(UserWarning, match="feature names"):  # scikit-learn's own warning
        np.testing.assert_array_equal(clf.predict(df), clf.predict(X))
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(df[["d", "c", "b", "a"]])


def test_regression_shapes_single_and_multi_output():
    X, y = make_regression(n_samples=100, n_features=5, n_targets=3, random_state=0)
    y = y / y.std(axis=0)
    reg = NNRegressor(**FAST, random_state=0).fit(X, y)
    assert reg.n_outputs_ == 3 and reg.model_.n_out == 3
    assert reg.predict(X).shape == (100, 3)
    assert reg.score(X, y) > 0.8
    one = NNRegressor(**FAST, random_state=0).fit(X, y[:, 0])
    assert one.predict(X).shape == (100,)
    col = NNRegressor(**FAST, random_state=0).fit(X, y[:, :1])
    assert col.predict(X).shape == (100, 1)  # the shape of y, as LinearRegression
    np.testing.assert_array_equal(col.predict(X)[:, 0], one.predict(X))


def test_history_model_and_defaults():
    X, y = blobs()
    clf = NNClassifier(hidden_layer_sizes=(8, 8), epochs=7, batchnorm=True, dropout=0.2,
                       random_state=3).fit(X, y)
    assert clf.n_iter_ == 7 and len(clf.loss_curve_) == 7
    assert clf.loss_curve_ == list(clf.history_["loss"])
    assert "accuracy" in clf.history_
    assert isinstance(clf.model_, nk.Sequential)
    kinds = [type(layer).__name__ for layer in clf.model_.layers]
    assert kinds == ["Dense", "BatchNorm", "ReLU", "Dropout"] * 2 + ["Dense"]
    assert NNClassifier().get_params()["hidden_layer_sizes"] == (100,)  # as MLPClassifier


def test_no_hidden_layer_is_a_linear_model():
    X, y = blobs()
    clf = NNClassifier(hidden_layer_sizes=(), epochs=50, lr=0.03, random_state=0).fit(X, y)
    assert [type(layer).__name__ for layer in clf.model_.layers] == ["Dense"]
    assert clf.score(X, y) > 0.9  # softmax regression


def test_failed_fit_keeps_the_fitted_model():
    X, y = blobs()
    clf = NNClassifier(**FAST, random_state=0).fit(X, y)
    model = clf.model_
    with pytest.raises(ValueError, match="batch_size"):
        clf.set_params(batch_size=0).fit(X, y)
    assert clf.model_ is model


def test_random_state_int_is_the_model_seed():
    X, y = blobs()
    clf = NNClassifier(hidden_layer_sizes=(8,), epochs=1, random_state=5)
    first = clf.fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, clf.fit(X, y).predict_proba(X))  # refit: same
    other = NNClassifier(hidden_layer_sizes=(8,), epochs=1, random_state=6).fit(X, y)
    assert not np.allclose(first, other.predict_proba(X))
    assert clf.model_.seed == 5
    rs = NNClassifier(hidden_layer_sizes=(8,), epochs=1,
                      random_state=np.random.RandomState(0)).fit(X, y)
    assert isinstance(rs.model_.seed, int)


def test_early_stopping_restores_and_stops():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 6)), rng.integers(0, 2, size=200)  # noise: val loss rises
    clf = NNClassifier(hidden_layer_sizes=(64,), lr=0.05, epochs=200, early_stopping=True,
                       n_iter_no_change=3, random_state=0).fit(X, y)
    assert clf.n_iter_ < 200
    assert len(clf.validation_scores_) == clf.n_iter_ == len(clf.loss_curve_)
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None  # as MLPClassifier's, with early stopping


def test_partial_fit_continues():
    X, y = blobs(n=200, std=2.0)
    clf = NNClassifier(hidden_layer_sizes=(16,), lr=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)  # the first call must name every class
    clf.partial_fit(X[:100], y[:100], classes=[0, 1, 2])
    for _ in range(9):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 10  # n_iter_: this call's, as MLP
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    with pytest.raises(ValueError, match=r"labels \[9\].*classes_ = \[0, 1, 2\]"):
        clf.partial_fit(X, np.full(200, 9))  # a label unseen on the first call
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:, :3], y)
    reg = NNRegressor(hidden_layer_sizes=(8,), random_state=0).partial_fit(X, X[:, 0])
    assert reg.n_iter_ == 1 and reg.predict(X).shape == (200,)


def test_warm_start_continues_the_fitted_network_with_a_fresh_optimizer():
    X, y = blobs(n=200, std=2.0)
    settings = {"hidden_layer_sizes": (16,), "lr": 0.01, "epochs": 4, "batch_size": 50,
                "random_state": 0}
    cold = NNClassifier(**settings).fit(X, y)
    again = cold.get_params()
    assert np.array_equal(NNClassifier(**again).fit(X, y).model_.params.flat,
                          cold.fit(X, y).model_.params.flat)  # warm_start=False: a new network
    assert cold.n_iter_ == 4

    warm = NNClassifier(**settings, warm_start=True).fit(X, y)
    first = warm.model_.params.flat.copy()
    assert np.array_equal(first, cold.model_.params.flat)  # the first fit is the cold one
    warm.fit(X, y)
    assert warm.n_iter_ == 4 and len(warm.loss_curve_) == 8  # n_iter_: this fit's, as MLP
    # it went on from the fitted weights: its 5th epoch is far below a fresh 1st epoch
    assert warm.loss_curve_[4] < 0.2 * warm.loss_curve_[0]
    # the same as continuing by hand: the weights so far, a new Adam, epochs 4..7's shuffles
    model = nk.Sequential.from_config(cold.model_.config())
    model.load_arrays({k: np.asarray(v) for k, v in NNClassifier(**settings).fit(X, y)
                       .model_.arrays().items()})
    nk.fit(model, X.astype(np.float32), y, optimizer=nk.optim.Adam(lr=0.01), epochs=8,
           initial_epoch=4, batch_size=50, seed=0, progress=False)
    np.testing.assert_array_equal(warm.model_.params.flat, model.params.flat)

    with pytest.raises(ValueError, match=r"same classes .* got \[0 1 2\], `y` has \[0 1 7\]"):
        warm.fit(X, np.where(y == 2, 7, y))
    with pytest.raises(ValueError, match="features"):
        warm.fit(X[:, :3], y)
    with pytest.raises(ValueError, match=r"hidden layers \(8,\), but the fitted one has hidden "
                                         r"layers \(16,\); set warm_start=False"):
        warm.set_params(hidden_layer_sizes=(8,)).fit(X, y)
    assert len(warm.loss_curve_) == 8  # a refused fit keeps the fitted model
    reg = NNRegressor(hidden_layer_sizes=(8,), epochs=3, warm_start=True, random_state=0)
    assert len(reg.fit(X, X[:, 0]).fit(X, X[:, 0]).loss_curve_) == 6


def test_clone_get_set_params():
    clf = NNClassifier(hidden_layer_sizes=(5, 3), activation="tanh", lr=0.1, random_state=2)
    params = clf.get_params()
    assert set(params) == {
        "hidden_layer_sizes", "model", "activation", "dropout", "batchnorm", "optimizer", "lr",
        "weight_decay", "batch_size", "epochs", "shuffle", "tol", "n_iter_no_change",
        "early_stopping", "validation_fraction", "random_state", "backend", "device", "dtype",
        "warm_start", "verbose"}
    twin = clone(clf)
    assert twin.get_params() == params and not hasattr(twin, "model_")
    assert clf.set_params(lr=0.5, epochs=3) is clf and clf.lr == 0.5


@pytest.mark.parametrize("params, match", [
    ({"hidden_layer_sizes": (4, 0)}, "hidden_layer_sizes"),
    ({"activation": "relux"}, "activation"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": -2}, "batch_size"),
    ({"optimizer": "adamax"}, "optimizer"),
    ({"dropout": 1.5}, "dropout"),
    ({"early_stopping": True, "validation_fraction": 1.0}, "validation_fraction"),
    ({"backend": "tensorflow"}, "backend"),
])
def test_bad_parameters_raise_value_error_in_fit(params, match):
    X, y = blobs()
    clf = NNClassifier(**FAST | params)  # the constructor stores anything
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)


def test_not_fitted_and_batch_size_clipping():
    X, y = blobs(n=30)
    with pytest.raises(NotFittedError):
        NNRegressor().predict(X)
    with pytest.warns(UserWarning, match="clipping"):
        NNClassifier(hidden_layer_sizes=(4,), epochs=1, batch_size=64).fit(X, y)


def test_logistic_alias_and_verbose(capsys):
    X, y = blobs(n=40)
    clf = NNClassifier(hidden_layer_sizes=(4,), activation="logistic", epochs=2, verbose=1)
    clf.fit(X, y)
    assert clf.model_.layers[0].activation.name == "sigmoid"
    out = capsys.readouterr()
    assert "Iteration 1, loss = " in out.out and "Iteration 2" in out.out  # stdout, as MLP's


# -- composition -----------------------------------------------------------------------------
def test_pipeline_and_grid_search():
    X, y = blobs(n=150, std=2.0)
    X = X * 100.0 + 50.0  # unscaled features: the scaler matters
    pipe = make_pipeline(StandardScaler(), NNClassifier(**FAST, random_state=0))
    search = GridSearchCV(pipe, {"nnclassifier__hidden_layer_sizes": [(4,), (16,)],
                                 "nnclassifier__lr": [0.01, 0.03]}, cv=3).fit(X, y)
    assert search.best_score_ > 0.8
    assert isinstance(search.best_estimator_[-1].model_, nk.Sequential)


def test_cross_val_score_in_two_processes():
    X, y = make_regression(n_samples=90, n_features=4, noise=1.0, random_state=0)
    reg = make_pipeline(StandardScaler(), NNRegressor(**FAST, random_state=0))
    scores = cross_val_score(reg, X, y / y.std(), cv=3, n_jobs=2)  # estimators pickled to workers
    assert scores.shape == (3,) and np.all(scores > 0.5)


@pytest.mark.parametrize("backend", ["numpy", "torch", "array_api_strict"])
def test_pickle_round_trip_is_exact(backend):
    if backend_unavailable(backend):
        pytest.skip(backend_unavailable(backend))
    X, y = blobs()
    clf = NNClassifier(**FAST, batchnorm=True, random_state=0, backend=backend).fit(X, y)
    clone_ = pickle.loads(pickle.dumps(clf))
    assert clone_.model_.backend.name == backend
    np.testing.assert_array_equal(clf.predict_proba(X), clone_.predict_proba(X))
    np.testing.assert_array_equal(clf.predict(X), clone_.predict(X))
    assert clone_.loss_curve_ == clf.loss_curve_
    clone_.partial_fit(X, y)  # a fresh optimizer, the saved weights
    assert len(clone_.loss_curve_) == len(clf.loss_curve_) + 1
    reg = NNRegressor(**FAST, random_state=0, backend=backend).fit(X, X[:, :2])
    np.testing.assert_array_equal(reg.predict(X), pickle.loads(pickle.dumps(reg)).predict(X))


# -- sample_weight: these wait for nk.fit(sample_weight=...) ----------------------------------
def test_sample_weight_of_ones_changes_nothing():
    X, y = blobs()
    for est in (NNClassifier(**FAST, random_state=0), NNRegressor(**FAST, random_state=0)):
        target = y if isinstance(est, NNClassifier) else X[:, 0] - X[:, 1]
        out = "predict_proba" if isinstance(est, NNClassifier) else "predict"
        plain = getattr(clone(est).fit(X, target), out)(X)
        weighted = getattr(clone(est).fit(X, target, sample_weight=np.ones(120)), out)(X)
        np.testing.assert_allclose(plain, weighted, rtol=1e-5, atol=1e-6)


def test_sample_weight_tilts_the_classifier():
    X, y = blobs(centers=2, std=4.0, n=200)  # overlapping classes
    clf = NNClassifier(**FAST, random_state=0)
    plain = clone(clf).fit(X, y).predict(X)
    heavy = clone(clf).fit(X, y, sample_weight=np.where(y == 0, 10.0, 0.1)).predict(X)
    assert (heavy == 0).sum() > (plain == 0).sum()


def test_sample_weight_ignores_zero_weight_outliers():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(200, 1))
    y = 2.0 * X[:, 0]
    y[:20] += 25.0  # outliers
    sw = np.ones(200)
    sw[:20] = 0.0
    reg = NNRegressor(hidden_layer_sizes=(16,), epochs=100, lr=0.03, random_state=0)
    weighted = clone(reg).fit(X, y, sample_weight=sw)
    plain = clone(reg).fit(X, y)
    clean = 2.0 * X[20:, 0]
    err_weighted = np.abs(weighted.predict(X[20:]) - clean).mean()
    assert err_weighted < 0.5 * np.abs(plain.predict(X[20:]) - clean).mean()


def test_sample_weight_with_early_stopping_and_partial_fit():
    X, y = blobs(n=150)
    sw = np.linspace(0.5, 2.0, 150)
    clf = NNClassifier(**FAST, early_stopping=True, random_state=0).fit(X, y, sample_weight=sw)
    assert clf.score(X, y) > 0.9
    with pytest.raises(AttributeError, match="partial_fit does not support early_stopping=True"):
        clf.partial_fit(X, y, sample_weight=sw)  # hasattr(clf, "partial_fit") is False
    clf.set_params(early_stopping=False).partial_fit(X, y, sample_weight=sw)
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) >= 2


def test_sample_weight_validation():
    # raised by the estimator before nk.fit is called: these pass today
    X, y = blobs()
    clf = NNClassifier(**FAST)
    with pytest.raises(ValueError, match="sample_weight"):
        clf.fit(X, y, sample_weight=np.ones(119))
    with pytest.raises(ValueError, match="(?i)negative"):
        clf.fit(X, y, sample_weight=-np.ones(120))
    with pytest.raises(ValueError, match="zero"):
        clf.fit(X, y, sample_weight=np.zeros(120))
    with pytest.raises(ValueError, match="class"):
        clf.fit(X, y, sample_weight=(y == 1).astype(float))


# -- packaging -------------------------------------------------------------------------------
def test_core_never_imports_sklearn():
    code = "import sys, nnkernel; assert 'sklearn' not in sys.modules, 'core imported sklearn'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_sklearn_names_the_extra():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "try:\n    import nnkernel.sklearn\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert 'nnkernel[sklearn]' in out
