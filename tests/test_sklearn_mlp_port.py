"""scikit-learn's own MLP tests, ported to NNClassifier and NNRegressor.

The source: sklearn/neural_network/tests/test_mlp.py of scikit-learn 1.9.1 (BSD-3-Clause,
the scikit-learn developers). Each test below names the test it ports; where nnkernel's
estimators differ on purpose, the test is kept as scikit-learn wrote it and marked
``xfail(strict=True)`` with the reason, so the difference is stated and stays true.

How MLPClassifier's parameters map (`MLP` below): max_iter -> epochs, learning_rate_init
-> lr, alpha -> weight_decay (an L2 term in the gradient, as alpha is);
solver="sgd" -> optimizer=nk.optim.SGD with MLP's momentum (default 0.9); solver="lbfgs"
-> Adam, as nnkernel trains by minibatch steps only: those tests assert scores, which
Adam reaches with the learning rate and epochs named in the test. Datasets and epochs
are smaller than scikit-learn's where the assertion still holds, to keep the file fast.

Not ported (nothing in nnkernel answers them): test_fit (it sets MLP's private solver
state, and scores one logistic output for two classes, where NNClassifier has two
softmax outputs); test_gradient (MLP's _loss_grad_lbfgs; nnkernel's gradients are
checked by finite differences in tests/test_gradients.py); test_lbfgs_classification_maxfun
and test_lbfgs_regression_maxfun (L-BFGS's max_fun); test_learning_rate_warmstart and
test_adaptive_learning_rate (MLP's "invscaling" and "adaptive" learning_rate; nnkernel's
schedules are optimizer objects); test_mlp_vs_poisson_glm_equivalent (loss="poisson").
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import joblib  # noqa: E402
from sklearn.datasets import (  # noqa: E402
    load_digits,
    load_iris,
    make_classification,
    make_multilabel_classification,
    make_regression,
)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, scale  # noqa: E402
from sklearn.utils._testing import assert_allclose, assert_almost_equal  # noqa: E402
from sklearn.utils.fixes import CSR_CONTAINERS  # noqa: E402

import nnkernel as nk  # noqa: E402
from nnkernel.sklearn import NNClassifier, NNRegressor  # noqa: E402

ACTIVATION_TYPES = ["identity", "logistic", "tanh", "relu"]
RENAMED = {"max_iter": "epochs", "learning_rate_init": "lr", "alpha": "weight_decay"}


def MLP(cls, **params):
    """An NNClassifier/NNRegressor with MLPClassifier's parameter names (see the docstring)."""
    solver, momentum = params.pop("solver", "adam"), params.pop("momentum", 0.9)
    params = {RENAMED.get(k, k): v for k, v in params.items()}
    if solver == "sgd":  # MLP's defaults: learning_rate_init 1e-3, momentum 0.9
        params["optimizer"] = nk.optim.SGD(lr=params.pop("lr", 1e-3), momentum=momentum,
                                           weight_decay=params.pop("weight_decay", 0.0))
    return cls(**params)


MLPClassifier = NNClassifier
MLPRegressor = NNRegressor

X_digits, y_digits = load_digits(n_class=3, return_X_y=True)
X_digits_multi = MinMaxScaler().fit_transform(X_digits[:200])
y_digits_multi = y_digits[:200]
X_digits, y_digits = load_digits(n_class=2, return_X_y=True)
X_digits_binary = MinMaxScaler().fit_transform(X_digits[:200])
y_digits_binary = y_digits[:200]
classification_datasets = [(X_digits_multi, y_digits_multi),
                           (X_digits_binary, y_digits_binary)]
X_reg, y_reg = make_regression(n_samples=200, n_features=10, bias=20.0, noise=100.0,
                               random_state=7)
y_reg = scale(y_reg)
X_iris, y_iris = load_iris(return_X_y=True)

quiet = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@quiet
def test_alpha():  # test_alpha
    X, y = X_digits_binary[:100], y_digits_binary[:100]
    sums = []
    for alpha in (0, 1):
        mlp = MLP(MLPClassifier, hidden_layer_sizes=10, alpha=alpha, random_state=1).fit(X, y)
        sums.append(np.array([np.abs(mlp.coefs_[0]).sum(), np.abs(mlp.coefs_[1]).sum()]))
    assert (sums[0] > sums[1]).all()


@quiet
@pytest.mark.parametrize("X,y", classification_datasets)
def test_lbfgs_classification(X, y):  # test_lbfgs_classification (lbfgs -> adam, lr 0.01)
    X_train, y_train, X_test = X[:150], y[:150], X[150:]
    for activation in ACTIVATION_TYPES:
        mlp = MLP(MLPClassifier, hidden_layer_sizes=50, max_iter=150, learning_rate_init=0.01,
                  shuffle=True, random_state=1, activation=activation).fit(X_train, y_train)
        y_predict = mlp.predict(X_test)
        assert mlp.score(X_train, y_train) > 0.95
        assert (y_predict.shape[0], y_predict.dtype.kind) == (X_test.shape[0],
                                                              y_train.dtype.kind)


@quiet
def test_lbfgs_regression():  # test_lbfgs_regression (lbfgs -> adam, lr 0.03, 600 epochs)
    # tol=0, not 1e-3: L-BFGS's tol bounds its gradient and it interpolates the data; the same
    # tol on Adam's epoch losses stops it long before
    for activation in ACTIVATION_TYPES:
        mlp = MLP(MLPRegressor, hidden_layer_sizes=50, max_iter=600, learning_rate_init=0.03,
                  tol=0, random_state=1, activation=activation).fit(X_reg, y_reg)
        if activation == "identity":
            assert mlp.score(X_reg, y_reg) > 0.80
        else:  # non-linear models fit much better than the linear bottleneck
            assert mlp.score(X_reg, y_reg) > 0.98


@quiet
def test_multilabel_classification():  # test_multilabel_classification
    X, y = make_multilabel_classification(n_samples=50, random_state=0, return_indicator=True)
    mlp = MLP(MLPClassifier, hidden_layer_sizes=50, alpha=1e-5, max_iter=300, random_state=0,
              activation="logistic", learning_rate_init=0.02).fit(X, y)  # lbfgs -> adam
    assert mlp.score(X, y) > 0.97
    # lr 0.2 x 5 labels: MLP's binary log loss sums over the labels, nnkernel's
    # binary_cross_entropy averages them (as torch's and Keras'), so its gradient is 5x smaller
    mlp = MLP(MLPClassifier, solver="sgd", hidden_layer_sizes=50, max_iter=150, random_state=0,
              activation="logistic", alpha=1e-5, learning_rate_init=0.2 * 5)
    for _ in range(100):
        mlp.partial_fit(X, y, classes=[0, 1, 2, 3, 4])
    assert mlp.score(X, y) > 0.9
    # early stopping works with multilabel y (its split is not stratified)
    MLP(MLPClassifier, early_stopping=True).fit(X, y).predict(X)


@quiet
def test_multioutput_regression():  # test_multioutput_regression (lbfgs -> adam)
    X, y = make_regression(n_samples=200, n_targets=5, random_state=11)
    mlp = MLP(MLPRegressor, hidden_layer_sizes=50, max_iter=300, learning_rate_init=0.05,
              tol=1e-2, random_state=1).fit(X, y)
    assert mlp.score(X, y) > 0.9


def test_partial_fit_classes_error():  # test_partial_fit_classes_error
    X, y = [[3, 2]], [0]
    clf = MLP(MLPClassifier, solver="sgd")
    clf.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError):
        clf.partial_fit(X, y, classes=[1, 2])


@quiet
def test_partial_fit_classification():  # test_partial_fit_classification (20 units, 50 epochs)
    for X, y in classification_datasets:
        mlp = MLP(MLPClassifier, solver="sgd", max_iter=50, random_state=1, tol=0, alpha=1e-5,
                  learning_rate_init=0.2, hidden_layer_sizes=20).fit(X, y)
        pred1 = mlp.predict(X)
        mlp = MLP(MLPClassifier, solver="sgd", random_state=1, alpha=1e-5,
                  learning_rate_init=0.2, hidden_layer_sizes=20)
        for _ in range(50):
            mlp.partial_fit(X, y, classes=np.unique(y))
        pred2 = mlp.predict(X)
        np.testing.assert_array_equal(pred1, pred2)
        assert mlp.score(X, y) > 0.95


def test_partial_fit_unseen_classes():  # test_partial_fit_unseen_classes
    clf = MLP(MLPClassifier, random_state=0)
    clf.partial_fit([[1], [2], [3]], ["a", "b", "c"], classes=["a", "b", "c", "d"])
    clf.partial_fit([[4]], ["d"])
    assert clf.score([[1], [2], [3], [4]], ["a", "b", "c", "d"]) > 0


@quiet
def test_partial_fit_regression():  # test_partial_fit_regression
    for momentum in [0, 0.9]:
        mlp = MLP(MLPRegressor, solver="sgd", max_iter=100, activation="relu", random_state=1,
                  learning_rate_init=0.01, batch_size=X_reg.shape[0], momentum=momentum)
        pred1 = mlp.fit(X_reg, y_reg).predict(X_reg)
        mlp = MLP(MLPRegressor, solver="sgd", activation="relu", learning_rate_init=0.01,
                  random_state=1, batch_size=X_reg.shape[0], momentum=momentum)
        for _ in range(100):
            mlp.partial_fit(X_reg, y_reg)
        assert_allclose(pred1, mlp.predict(X_reg))
        assert mlp.score(X_reg, y_reg) > 0.65


def test_partial_fit_errors():  # test_partial_fit_errors
    with pytest.raises(ValueError):  # y has labels that classes does not name
        MLP(MLPClassifier, solver="sgd").partial_fit([[3, 2], [1, 6]], [1, 0], classes=[2])
    # lbfgs has no partial_fit; here early_stopping=True is the mode without one
    assert not hasattr(MLP(MLPClassifier, early_stopping=True), "partial_fit")


def test_nonfinite_params():  # test_nonfinite_params: refused before training, as overflow
    rng = np.random.RandomState(0)
    X = np.finfo(np.float64).max * rng.uniform(size=(10, 2))
    y = rng.standard_normal(size=10)
    with pytest.raises(ValueError, match="beyond float32's range"):
        MLP(MLPRegressor).fit(X, y)


@quiet
def test_predict_proba_binary():  # test_predict_proba_binary
    X, y = X_digits_binary[:50], y_digits_binary[:50]
    clf = MLP(MLPClassifier, hidden_layer_sizes=5, activation="logistic", random_state=1)
    clf.fit(X, y)
    y_proba, y_log_proba = clf.predict_proba(X), clf.predict_log_proba(X)
    assert y_proba.shape == (50, 2)
    np.testing.assert_array_equal(y_proba.argmax(axis=1), y_log_proba.argmax(axis=1))
    assert_allclose(y_log_proba, np.log(y_proba))
    assert roc_auc_score(y, y_proba[:, 1]) == 1.0


@quiet
def test_predict_proba_multiclass():  # test_predict_proba_multiclass
    X, y = X_digits_multi[:10], y_digits_multi[:10]
    clf = MLP(MLPClassifier, hidden_layer_sizes=5).fit(X, y)
    y_proba, y_log_proba = clf.predict_proba(X), clf.predict_log_proba(X)
    assert y_proba.shape == (10, np.unique(y).size)
    np.testing.assert_array_equal(y_proba.argmax(axis=1), y_log_proba.argmax(axis=1))
    assert_allclose(y_log_proba, np.log(y_proba))


@quiet
def test_predict_proba_multilabel():  # test_predict_proba_multilabel (lbfgs -> adam)
    X, Y = make_multilabel_classification(n_samples=50, random_state=0, return_indicator=True)
    clf = MLP(MLPClassifier, hidden_layer_sizes=30, random_state=0, max_iter=400,
              learning_rate_init=0.02).fit(X, Y)
    y_proba = clf.predict_proba(X)
    assert y_proba.shape == Y.shape
    np.testing.assert_array_equal(y_proba > 0.5, Y)
    y_log_proba = clf.predict_log_proba(X)
    assert (y_proba.sum(1) - 1).dot(y_proba.sum(1) - 1) > 1e-10  # not a softmax
    np.testing.assert_array_equal(y_proba.argmax(axis=1), y_log_proba.argmax(axis=1))
    assert_allclose(y_log_proba, np.log(y_proba))


@quiet
def test_shuffle():  # test_shuffle
    X, y = make_regression(n_samples=50, n_features=5, n_targets=1, random_state=0)
    for shuffle in [True, False]:
        mlp1, mlp2 = (MLP(MLPRegressor, hidden_layer_sizes=1, max_iter=1, batch_size=1,
                          random_state=0, shuffle=shuffle).fit(X, y) for _ in range(2))
        assert np.array_equal(mlp1.coefs_[0], mlp2.coefs_[0])
    mlp1, mlp2 = (MLP(MLPRegressor, hidden_layer_sizes=1, max_iter=1, batch_size=1,
                      random_state=0, shuffle=shuffle).fit(X, y) for shuffle in (True, False))
    assert not np.array_equal(mlp1.coefs_[0], mlp2.coefs_[0])


@quiet
@pytest.mark.parametrize("csr_container", CSR_CONTAINERS)
def test_sparse_matrices(csr_container):  # test_sparse_matrices (lbfgs -> adam)
    X, y = X_digits_binary[:50], y_digits_binary[:50]
    X_sparse = csr_container(X)
    mlp = MLP(MLPClassifier, hidden_layer_sizes=15, random_state=1, learning_rate_init=0.01)
    pred1 = mlp.fit(X, y).predict(X)
    pred2 = mlp.fit(X_sparse, y).predict(X_sparse)
    assert_almost_equal(pred1, pred2)
    np.testing.assert_array_equal(mlp.predict(X), mlp.predict(X_sparse))


def test_tolerance():  # test_tolerance
    clf = MLP(MLPClassifier, tol=0.5, max_iter=3000, solver="sgd").fit([[3, 2], [1, 6]], [1, 0])
    assert clf.epochs > clf.n_iter_


@quiet
def test_verbose_sgd(capsys):  # test_verbose_sgd
    X, y = [[3, 2], [1, 6]], [1, 0]
    clf = MLP(MLPClassifier, solver="sgd", max_iter=2, verbose=10, hidden_layer_sizes=2)
    clf.fit(X, y)
    clf.partial_fit(X, y)
    out, _ = capsys.readouterr()
    assert "Iteration" in out


@pytest.mark.parametrize("MLPEstimator", [MLPClassifier, MLPRegressor])
def test_early_stopping(MLPEstimator):  # test_early_stopping
    X, y = X_digits_binary[:100], y_digits_binary[:100]
    tol = 0.2
    mlp = MLP(MLPEstimator, tol=tol, max_iter=3000, solver="sgd", early_stopping=True).fit(X, y)
    assert mlp.epochs > mlp.n_iter_
    assert mlp.best_loss_ is None
    assert isinstance(mlp.validation_scores_, list)
    scores, best = mlp.validation_scores_, mlp.best_validation_score_
    assert max(scores) == best
    assert best + tol > scores[-2]
    assert best + tol > scores[-1]
    mlp = MLP(MLPEstimator, tol=tol, max_iter=3000, solver="sgd", early_stopping=False)
    mlp.fit(X, y)
    assert mlp.validation_scores_ is None
    assert mlp.best_validation_score_ is None
    assert mlp.best_loss_ is not None


def test_warm_start():  # test_warm_start (lbfgs -> adam)
    X, y = X_iris, y_iris
    y_2classes = np.array([0] * 75 + [1] * 75)
    y_3classes = np.array([0] * 40 + [1] * 40 + [2] * 70)
    y_3classes_alt = np.array([0] * 50 + [1] * 50 + [3] * 50)
    y_4classes = np.array([0] * 37 + [1] * 37 + [2] * 38 + [3] * 38)
    y_5classes = np.array([0] * 30 + [1] * 30 + [2] * 30 + [3] * 30 + [4] * 30)
    settings = {"hidden_layer_sizes": 2, "warm_start": True, "random_state": 42, "tol": 1e-2,
                "max_iter": 20}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLP(MLPClassifier, **settings).fit(X, y)  # no error raised
        clf.fit(X, y)
        clf.fit(X, y_3classes)
        for y_i in (y_2classes, y_3classes_alt, y_4classes, y_5classes):
            clf = MLP(MLPClassifier, **settings).fit(X, y)
            message = ("warm_start can only be used where `y` has the same classes as in the "
                       f"previous call to fit. Previously got [0 1 2], `y` has {np.unique(y_i)}")
            with pytest.raises(ValueError, match=re.escape(message)):
                clf.fit(X, y_i)


@pytest.mark.parametrize("MLPEstimator", [MLPClassifier, MLPRegressor])
def test_warm_start_full_iteration(MLPEstimator):  # test_warm_start_full_iteration
    clf = MLP(MLPEstimator, hidden_layer_sizes=2, solver="sgd", warm_start=True, max_iter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_iris, y_iris)
        assert clf.n_iter_ == 3
        clf.fit(X_iris, y_iris)
        assert clf.n_iter_ == 3


def test_n_iter_no_change():  # test_n_iter_no_change
    X, y = X_digits_binary[:100], y_digits_binary[:100]
    tol, max_iter = 0.01, 3000
    for n_iter_no_change in [2, 5, 10, 50, 100]:
        clf = MLP(MLPClassifier, tol=tol, max_iter=max_iter, solver="sgd",
                  n_iter_no_change=n_iter_no_change).fit(X, y)
        # MLP's _no_improvement_count: the epochs that did not improve on the best by tol
        assert clf._record.no_improvement == n_iter_no_change + 1
        assert max_iter > clf.n_iter_
        # the same read from loss_curve_: each of the last n + 1 epochs missed by tol
        curve = clf.loss_curve_
        for i in range(len(curve) - n_iter_no_change - 1, len(curve)):
            assert curve[i] > min(curve[:i]) - tol


@quiet
def test_n_iter_no_change_inf():  # test_n_iter_no_change_inf (3000 -> 300 epochs)
    X, y = X_digits_binary[:100], y_digits_binary[:100]
    clf = MLP(MLPClassifier, tol=1e9, max_iter=300, solver="sgd", n_iter_no_change=np.inf)
    clf.fit(X, y)
    assert clf.n_iter_ == 300  # no early stop
    assert clf._record.no_improvement == clf.n_iter_ - 1  # every epoch after the first counted


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "where a stratified split is impossible nnkernel warns and splits at random instead of "
    "raising; here the 1-row validation set is refused first, as too small"))
def test_early_stopping_stratified():  # test_early_stopping_stratified
    mlp = MLP(MLPClassifier, early_stopping=True)
    with pytest.raises(ValueError, match=r"The least populated classes in y have only 1 "
                                         r"member.*Classes with too few members are: \['True'\]"):
        mlp.fit([[1, 2], [2, 3], [3, 4], [4, 5]], [0, 0, 0, 1])


def test_mlp_early_stopping_string_labels():  # test_mlp_early_stopping_string_labels
    X, y = make_classification(n_samples=200, n_features=10, n_classes=3, n_informative=5,
                               random_state=42)
    y = np.array(["class_a", "class_b", "class_c"], dtype=object)[y]
    mlp = MLP(MLPClassifier, early_stopping=True, max_iter=50, random_state=42)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(X, y)
    assert mlp.validation_scores_ is not None
    assert len(mlp.validation_scores_) == mlp.n_iter_
    assert np.isfinite(mlp.validation_scores_).all()


@quiet
def test_mlp_classifier_dtypes_casting():  # test_mlp_classifier_dtypes_casting
    X, y = load_digits(n_class=2, return_X_y=True)
    params = {"alpha": 1e-5, "hidden_layer_sizes": (5, 3), "random_state": 1, "max_iter": 100,
              "tol": 1e-1}
    mlp_64 = MLP(MLPClassifier, **params).fit(X[:300], y[:300])
    mlp_32 = MLP(MLPClassifier, **params).fit(X[:300].astype(np.float32), y[:300])
    np.testing.assert_array_equal(mlp_64.predict(X[300:]),
                                  mlp_32.predict(X[300:].astype(np.float32)))
    assert_allclose(mlp_64.predict_proba(X[300:]),
                    mlp_32.predict_proba(X[300:].astype(np.float32)), rtol=1e-02)


@quiet
def test_mlp_regressor_dtypes_casting():  # test_mlp_regressor_dtypes_casting
    X, y = load_digits(n_class=2, return_X_y=True)
    params = {"alpha": 1e-5, "hidden_layer_sizes": (5, 3), "random_state": 1, "max_iter": 150,
              "tol": 1e-3}
    pred_64 = MLP(MLPRegressor, **params).fit(X[:300], y[:300]).predict(X[300:])
    pred_32 = MLP(MLPRegressor, **params).fit(X[:300].astype(np.float32), y[:300]).predict(
        X[300:].astype(np.float32))
    assert_allclose(pred_64, pred_32, rtol=5e-04)


@quiet
@pytest.mark.parametrize("dtype", [
    np.float32,
    pytest.param(np.float64, marks=pytest.mark.xfail(strict=True, reason=(
        "the network computes in float32 unless dtype='float64' is given (MLPClassifier: in "
        "X's dtype), so coefs_ are float32 for float64 X; predictions do follow X's dtype")))])
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_mlp_param_dtypes(dtype, Estimator):  # test_mlp_param_dtypes
    X, y = load_digits(n_class=2, return_X_y=True)
    X = X.astype(dtype)
    mlp = MLP(Estimator, alpha=1e-5, hidden_layer_sizes=(5, 3), random_state=1, max_iter=50,
              tol=1e-1).fit(X[:300], y[:300])
    pred = mlp.predict(X[300:])
    assert all(intercept.dtype == dtype for intercept in mlp.intercepts_)
    assert all(coef.dtype == dtype for coef in mlp.coefs_)
    if Estimator == MLPRegressor:
        assert pred.dtype == dtype


@quiet
def test_mlp_loading_from_joblib_partial_fit(tmp_path):  # test_mlp_loading_from_joblib_...
    pre_trained = MLP(MLPRegressor, hidden_layer_sizes=(42,), random_state=42,
                      learning_rate_init=0.01, max_iter=200).fit([[2]], [4])
    joblib.dump(pre_trained, tmp_path / "mlp.pkl")
    loaded = joblib.load(tmp_path / "mlp.pkl")
    for _ in range(200):  # more epochs on x=2, y=1
        loaded.partial_fit([[2]], [1])
    assert_allclose(loaded.predict([[2]]), [1], rtol=1e-4)  # it learned the new target


@pytest.mark.parametrize("Estimator", [
    pytest.param(MLPClassifier, marks=pytest.mark.xfail(strict=True, raises=ValueError, reason=(
        "the test's y has one class; NNClassifier refuses to fit one class (MLPClassifier "
        "fits it and always predicts it)"))),
    MLPRegressor])
def test_preserve_feature_names(Estimator):  # test_preserve_feature_names
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    X = pd.DataFrame(data=rng.randn(10, 2), columns=["colname_a", "colname_b"])
    y = pd.Series(data=np.full(10, 1), name="colname_y")
    model = MLP(Estimator, early_stopping=True, validation_fraction=0.2, max_iter=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)


@pytest.mark.parametrize("MLPEstimator", [MLPClassifier, MLPRegressor])
def test_mlp_warm_start_with_early_stopping(MLPEstimator):  # test_mlp_warm_start_with_early...
    mlp = MLP(MLPEstimator, max_iter=10, random_state=0, warm_start=True, early_stopping=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(X_iris, y_iris)
        n_validation_scores = len(mlp.validation_scores_)
        mlp.set_params(epochs=20)
        mlp.fit(X_iris, y_iris)
    assert len(mlp.validation_scores_) > n_validation_scores


@pytest.mark.parametrize("MLPEstimator", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_mlp_warm_start_no_convergence(MLPEstimator, solver):  # test_mlp_warm_start_no_...
    model = MLP(MLPEstimator, solver=solver, warm_start=True, early_stopping=False, max_iter=10,
                n_iter_no_change=np.inf, random_state=0)  # lbfgs -> adam
    with pytest.warns(ConvergenceWarning):
        model.fit(X_iris, y_iris)
    assert model.n_iter_ == 10
    model.set_params(epochs=20)
    with pytest.warns(ConvergenceWarning):
        model.fit(X_iris, y_iris)
    assert model.n_iter_ == 20


@pytest.mark.xfail(strict=True, raises=AttributeError, reason=(
    "with early_stopping=True partial_fit is absent (hasattr() is False, so meta-estimators "
    "and scikit-learn's checks see it): an AttributeError with MLP's words, not a ValueError"))
@pytest.mark.parametrize("MLPEstimator", [MLPClassifier, MLPRegressor])
def test_mlp_partial_fit_after_fit(MLPEstimator):  # test_mlp_partial_fit_after_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLP(MLPEstimator, early_stopping=True, random_state=0, max_iter=20)
        mlp.fit(X_iris, y_iris)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        mlp.partial_fit(X_iris, y_iris)


def test_mlp_diverging_loss():  # test_mlp_diverging_loss
    mlp = MLP(MLPRegressor, hidden_layer_sizes=100, activation="identity", solver="sgd",
              alpha=0.0001, learning_rate_init=1, shuffle=True, max_iter=20,
              early_stopping=True, n_iter_no_change=10, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(X_iris, y_iris)
    assert str(mlp.validation_scores_[-1]) == str(np.nan)
    assert isinstance(mlp.validation_scores_[-1], float)


def test_mlp_sample_weight_with_early_stopping():  # test_mlp_sample_weight_with_early_stopping
    X, y = make_regression(n_samples=100, n_features=2, n_informative=2, random_state=42)
    params = {"hidden_layer_sizes": 10, "solver": "adam", "early_stopping": True, "tol": 1e-2,
              "learning_rate_init": 0.01, "batch_size": 10, "random_state": 42}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m1 = MLP(MLPRegressor, **params).fit(X, y, sample_weight=np.ones_like(y))
        m2 = MLP(MLPRegressor, **params).fit(X, y, sample_weight=None)
    assert_allclose(m1.predict(X), m2.predict(X))


def test_minimum_input_sample_size():  # test_minimum_input_sample_size
    X, y = make_regression(n_samples=2, n_features=5, random_state=0)
    model = MLP(MLPRegressor, early_stopping=True, random_state=0)
    with pytest.raises(ValueError, match="The validation set is too small"):
        model.fit(X, y)
