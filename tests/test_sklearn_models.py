"""nnkernel.sklearn's networks and optimizers: any nnkernel network through model= (a
Sequential copied per fit, or a builder), the command line's MLP builder for the default
network, and optimizer instances copied per fit."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_blobs  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import nnkernel as nk  # noqa: E402
from nnkernel.cli.build import build_model  # noqa: E402
from nnkernel.nn.builders import cnn, mlp  # noqa: E402
from nnkernel.run_settings import RunConfig  # noqa: E402
from nnkernel.sklearn import NNClassifier, NNRegressor  # noqa: E402
from nnkernel.sklearn.network import build_network  # noqa: E402
from nnkernel.sklearn.params import check_params  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def blobs(n=90):
    return make_blobs(n_samples=n, centers=3, n_features=4, random_state=0)


def test_batchnorm_network_is_the_command_lines():
    """NNClassifier(batchnorm=True) and `nnkernel train --batchnorm` build the same network
    from the same seed (sklearn.py had its own builder, which initialised the Dense layers
    before BatchNorm with Glorot where the CLI's uses He)."""
    X, y = blobs()
    est = NNClassifier(hidden_layer_sizes=(8, 8), batchnorm=True, random_state=3, epochs=1)
    config = RunConfig(hidden=[8, 8], activation="relu", dropout=0.0, batchnorm=True,
                       batch_size=32, seed=3, dtype="float32")
    data = SimpleNamespace(name="blobs", task="classification", n_classes=3, n_features=4,
                           y_train=y)
    cli = build_model(config, data, nk.Backend("numpy"))
    assert est.fit(X, y).model_.config()["layers"] == cli.config()["layers"]  # same layers
    start = build_network(check_params(est), 4, 3, 3, None)  # the estimator's, before training
    for key, value in cli.arrays().items():  # same weights
        np.testing.assert_array_equal(start.arrays()[key], value)


def test_a_sequential_is_copied_per_fit_never_trained_in_place():
    X, y = blobs()
    net = nk.Sequential(nk.Dense(4, 16, activation="tanh"), nk.Dense(16, 3), seed=7)
    before = net.arrays()
    clf = NNClassifier(model=net, epochs=10, lr=0.03, random_state=0)
    first = clf.fit(X, y).predict_proba(X)
    assert clf.model_ is not net
    for key, value in net.arrays().items():
        np.testing.assert_array_equal(value, before[key])  # the given network is untouched
    np.testing.assert_array_equal(clf.fit(X, y).predict_proba(X), first)  # the same start
    assert clf.get_params()["model"] is net
    twin = clone(clf)
    assert twin.get_params()["model"] is not net  # scikit-learn's clone copies it
    np.testing.assert_array_equal(twin.fit(X, y).predict_proba(X), first)
    assert clf.score(X, y) > 0.9


def test_a_builder_makes_a_new_network_per_fit_from_random_state():
    X, y = blobs()

    def layers(n_in, n_out):
        return [nk.Dense(n_in, 12, activation="relu"), nk.Dense(12, n_out)]

    def sequential(n_in, n_out):
        return nk.Sequential(*layers(n_in, n_out), seed=123)  # its seed is replaced

    a = NNClassifier(model=layers, epochs=3, random_state=1).fit(X, y)
    b = NNClassifier(model=sequential, epochs=3, random_state=1).fit(X, y)
    c = NNClassifier(model=layers, epochs=3, random_state=2).fit(X, y)
    np.testing.assert_array_equal(a.model_.params.flat, b.model_.params.flat)
    assert not np.array_equal(a.model_.params.flat, c.model_.params.flat)
    assert a.model_.seed == b.model_.seed == 1
    reg = NNRegressor(model=layers, epochs=3, random_state=0).fit(X, X[:, :2])
    assert reg.predict(X).shape == (90, 2)


def test_a_cnn_in_a_pipeline_and_a_grid_search():
    X, y = load_digits(return_X_y=True)
    X, y = X[:300], y[:300]

    def small_cnn(n_in, n_out):  # flat rows of 64 pixels in, reshaped to (1, 8, 8)
        return cnn((1, 8, 8), [4], [16], n_out)

    pipe = make_pipeline(StandardScaler(), NNClassifier(model=small_cnn, epochs=30,
                                                        random_state=0))
    grid = GridSearchCV(pipe, {"nnclassifier__lr": [1e-2, 3e-2]}, cv=2).fit(X, y)
    best = grid.best_estimator_[-1]
    assert [type(layer).__name__ for layer in best.model_.layers][:3] == [
        "Conv2D", "MaxPool2D", "ReLU"]
    assert grid.best_score_ > 0.8
    assert grid.predict_proba(X[:5]).shape == (5, 10)


def test_model_conflicts_and_mismatches_are_refused():
    X, y = blobs()
    net = mlp(4, [8], 3)
    with pytest.raises(ValueError, match="hidden_layer_sizes, batchnorm .*cannot be set beside"):
        NNClassifier(model=net, hidden_layer_sizes=(8,), batchnorm=True).fit(X, y)
    with pytest.raises(ValueError, match="y needs 2 outputs"):
        NNRegressor(model=net).fit(X, X[:, :2])
    with pytest.raises(ValueError, match="X has 3 features"):
        NNClassifier(model=net).fit(X[:, :3], y)
    with pytest.raises(ValueError, match="returned int"):
        NNClassifier(model=lambda n_in, n_out: 3).fit(X, y)
    with pytest.raises(ValueError, match="model must be"):
        NNClassifier(model="mlp").fit(X, y)


def test_an_optimizer_instance_is_a_template_copied_per_fit():
    X, y = blobs()
    adam = nk.optim.Adam(lr=0.01, betas=(0.8, 0.99))
    clf = NNClassifier(hidden_layer_sizes=(16,), optimizer=adam, epochs=5, random_state=0)
    first = clf.fit(X, y).predict_proba(X)
    second = clf.fit(X, y).predict_proba(X)  # it continued the first fit's moments (0.479)
    np.testing.assert_array_equal(first, second)
    assert adam.t == 0 and adam.state == {}  # the given instance never steps
    assert clf._optimizer is not adam and clf._optimizer.betas == (0.8, 0.99)
    by_name = NNClassifier(hidden_layer_sizes=(16,), optimizer="adam", lr=0.01, epochs=5,
                           random_state=0).fit(X, y).predict_proba(X)
    assert not np.array_equal(first, by_name)  # the instance's betas were used
    sgd = nk.optim.SGD(lr=0.05, momentum=0.9, schedule=lambda step: 0.5)
    clf.set_params(optimizer=sgd).fit(X, y)
    assert clf._optimizer.schedule is sgd.schedule and clf._optimizer.momentum == 0.9


@pytest.mark.parametrize("given", [{"lr": 0.1}, {"weight_decay": 0.01}])
def test_lr_beside_an_optimizer_instance_is_refused_not_ignored(given):
    X, y = blobs()
    with pytest.raises(ValueError, match=f"carries its own {next(iter(given))}"):
        NNClassifier(optimizer=nk.optim.Adam(lr=0.01), **given).fit(X, y)


def test_warm_start_with_a_model_continues_it():
    X, y = blobs()
    net = mlp(4, [8], 3, seed=0)
    clf = NNClassifier(model=net, warm_start=True, epochs=3, random_state=0).fit(X, y)
    weights = clf.model_.params.flat.copy()
    clf.fit(X, y)
    assert len(clf.loss_curve_) == 6 and not np.array_equal(weights, clf.model_.params.flat)
    with pytest.raises(ValueError, match="warm_start=False"):
        clf.set_params(model=mlp(4, [9], 3)).fit(X, y)
