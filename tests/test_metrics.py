"""Metrics (nnkernel.train.metrics) against scikit-learn, and through nk.fit / nk.evaluate.

Every metric is compared with scikit-learn's own function on random data, ties
included; then fit must log the same numbers as val_<name>, per member for an
ensemble, on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed")

from conftest import CPU_BACKENDS, make, torch_or_skip  # noqa: E402

import nnkernel as nk  # noqa: E402
from nnkernel.errors import ConfigError  # noqa: E402
from nnkernel.train import metrics as M  # noqa: E402


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# -- each metric against scikit-learn ------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_top_k_accuracy_matches_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    n, c = 257, 7
    y = rng.integers(0, c, n)
    s = rng.normal(size=(n, c))
    if ties:  # few distinct values: many rows rank tied classes
        s = np.round(s)
    for k in range(1, c):
        want = sk.top_k_accuracy_score(y, s, k=k, labels=np.arange(c))
        assert M.top_k_accuracy(y, s, k) == pytest.approx(want, abs=0, rel=1e-15), k
    assert M.top_k_accuracy(y, s, c) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_f1_macro_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    c = 6
    y = rng.integers(0, c, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, c, 300))
    assert M.f1_macro(y, p) == pytest.approx(sk.f1_score(y, p, average="macro"), rel=1e-14)
    scores = rng.normal(size=(300, c))  # scores count through their arg-max
    assert M.f1_macro(y, scores) == pytest.approx(
        sk.f1_score(y, scores.argmax(1), average="macro"), rel=1e-14)


def test_f1_macro_averages_the_classes_sklearn_averages():
    """A class never predicted scores 0; a class neither true nor predicted is not averaged."""
    y = np.array([0, 0, 1, 1, 3, 3, 3])
    p = np.array([0, 1, 1, 1, 4, 3, 0])  # class 2 appears nowhere, 4 only in p
    want = sk.f1_score(y, p, average="macro")
    assert M.f1_macro(y, p) == pytest.approx(want, rel=1e-14)
    assert want == pytest.approx((0.5 + 0.8 + 0.5 + 0.0) / 4)  # classes 0, 1, 3, 4


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("distinct", [None, 2, 5, 40])  # None: continuous scores, no ties
def test_roc_auc_matches_sklearn_with_ties(seed, distinct):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 400)
    s = rng.normal(size=400) + 0.7 * y
    if distinct:
        s = np.floor(s * distinct / 4.0)
    assert M.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), rel=1e-13)
    two = np.stack([-s, s], axis=1)  # two columns: the second is the positive class
    assert M.roc_auc(y, two) == pytest.approx(sk.roc_auc_score(y, s), rel=1e-13)


def test_roc_auc_edge_cases():
    y = np.array([0, 1, 0, 1])
    assert M.roc_auc(y, np.zeros(4)) == 0.5 == sk.roc_auc_score(y, np.zeros(4))
    assert M.roc_auc(y, np.array([0.1, 0.9, 0.2, 0.8])) == 1.0
    assert np.isnan(M.roc_auc(np.ones(5, int), np.arange(5.0)))  # scikit-learn raises here
    with pytest.raises(ConfigError, match="binary"):
        M.roc_auc(np.array([0, 1, 2]), np.arange(3.0))


@pytest.mark.parametrize("seed", range(3))
def test_confusion_matrix_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    c = 5
    y, p = rng.integers(0, c, 200), rng.integers(0, c - 1, 200)  # class 4 never predicted
    want = sk.confusion_matrix(y, p, labels=np.arange(c))
    np.testing.assert_array_equal(M.confusion_matrix(y, p, c), want)
    np.testing.assert_array_equal(M.confusion_matrix(y, np.eye(c)[p]), want)  # from scores


def test_metric_names_and_refusals():
    assert M.get_metric("top3_accuracy").name == "top3_accuracy"
    assert M.get_metric("auc").name == "roc_auc"
    with pytest.raises(ConfigError, match="unknown metric 'f2'.*f1_macro"):
        M.get_metric("f2")
    with pytest.raises(ConfigError, match="name the metric"):
        M.get_metric(lambda y, p: 0.0)
    with pytest.raises(ConfigError, match="twice"):
        M.resolve(["f1_macro", "f1"], nk.losses.cross_entropy)
    with pytest.raises(ConfigError, match="needs a classifier"):
        M.resolve(["f1_macro"], nk.losses.mse)


# -- through fit and evaluate --------------------------------------------------------------------
def blobs(n=240, d=5, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    X = rng.normal(size=(n, d)) + 1.5 * np.eye(c, d)[y]
    return X, y


def mlp(d=5, c=4, **kw):
    return nk.Sequential(nk.Dense(d, 16), nk.Tanh(), nk.Dense(16, c), seed=1, **kw)


@pytest.mark.parametrize("backend", CPU_BACKENDS + [pytest.param("torch", id="torch")])
def test_fit_logs_validation_metrics_equal_to_sklearn(backend):
    if backend == "torch":
        torch_or_skip()
    X, y = blobs()
    Xv, yv = blobs(120, seed=1)
    model = mlp(dtype="float64", backend=backend)
    names = ["f1_macro", "top2_accuracy", "confusion_matrix", sk.log_loss,
             M.Metric("balanced", sk.balanced_accuracy_score, on="labels")]
    seen = []

    class Probe(nk.Callback):  # the model at each epoch end, as the metrics saw it
        def on_epoch_end(self, run, logs):
            seen.append(softmax(nk.backend.to_numpy(run.model.predict(make(backend, Xv)))))

    hist = nk.fit(model, make(backend, X), make(backend, y), epochs=3, batch_size=32,
                  validation_data=(make(backend, Xv), make(backend, yv)), metrics=names,
                  callbacks=[Probe()], progress=False)
    for epoch, probs in enumerate(seen):
        pred = probs.argmax(1)
        assert hist["val_f1_macro"][epoch] == pytest.approx(
            sk.f1_score(yv, pred, average="macro"), rel=1e-12)
        assert hist["val_top2_accuracy"][epoch] == pytest.approx(
            sk.top_k_accuracy_score(yv, probs, k=2), rel=1e-12)
        assert hist["val_confusion_matrix"][epoch] == sk.confusion_matrix(yv, pred).tolist()
        # a plain function gets (labels, probabilities); with on="labels", predicted labels
        assert hist["val_log_loss"][epoch] == pytest.approx(sk.log_loss(yv, probs), rel=1e-9)
        assert hist["val_balanced"][epoch] == pytest.approx(
            sk.balanced_accuracy_score(yv, pred), rel=1e-12)
        assert hist["val_accuracy"][epoch] == pytest.approx(np.mean(pred == yv), rel=1e-12)


def test_a_function_gets_labels_and_probabilities():
    X, y = blobs()
    got = {}

    def spy(labels, probs):
        got.update(labels=labels, probs=probs)
        return float(np.mean(probs.max(axis=1)))

    model = mlp()
    result = nk.evaluate(model, X, y, metrics=[spy], return_dict=True)
    np.testing.assert_array_equal(got["labels"], y)
    np.testing.assert_allclose(got["probs"], softmax(np.asarray(model(X), np.float64)),
                               rtol=1e-6)
    assert result["spy"] == pytest.approx(np.mean(got["probs"].max(axis=1)))


def test_regression_metric_function_matches_sklearn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    Y = X @ rng.normal(size=(3, 2)) + 0.1 * rng.normal(size=(200, 2))
    model = nk.Sequential(nk.Dense(3, 2), seed=0, dtype="float64")
    hist = nk.fit(model, X, Y, loss="mse", epochs=2, validation_split=0.25,
                  metrics=[sk.r2_score], progress=False, optimizer=nk.optim.Adam(lr=0.05))
    Xv = X[nk.train.data.split_indices(200, 0.25)[1]]
    Yv = Y[nk.train.data.split_indices(200, 0.25)[1]]
    assert hist["val_r2_score"][-1] == pytest.approx(sk.r2_score(Yv, model(Xv)), rel=1e-12)


def test_binary_roc_auc_for_both_binary_losses():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + 0.8 * rng.normal(size=300) > 0).astype(np.int64)
    ce = nk.Sequential(nk.Dense(4, 2), seed=0, dtype="float64")
    auc = nk.evaluate(ce, X, y, metrics=["roc_auc"], return_dict=True)["roc_auc"]
    assert auc == pytest.approx(sk.roc_auc_score(y, softmax(ce(X))[:, 1]), rel=1e-12)
    bce = nk.Sequential(nk.Dense(4, 1), seed=0, dtype="float64")
    t = y.astype(np.float64)[:, None]
    out = nk.evaluate(bce, X, t, loss="binary_cross_entropy",
                      metrics=["roc_auc", "accuracy", "f1_macro"], return_dict=True)
    z = bce(X)[:, 0]
    assert out["roc_auc"] == pytest.approx(sk.roc_auc_score(y, z), rel=1e-12)
    assert out["accuracy"] == pytest.approx(np.mean((z > 0) == y))
    assert out["f1_macro"] == pytest.approx(sk.f1_score(y, z > 0, average="macro"))
    assert "accuracy" in out and set(out) == {"loss", "accuracy", "roc_auc", "f1_macro"}


def test_evaluate_keeps_its_tuple_and_adds_a_dict():
    X, y = blobs()
    model = mlp()
    loss, acc = nk.evaluate(model, X, y)  # as before the metrics
    loss3, acc3, f1, top3 = nk.evaluate(model, X, y, metrics=["f1_macro", "top3_accuracy"])
    assert (loss3, acc3) == (loss, acc)
    d = nk.evaluate(model, X, y, metrics=["f1_macro", "top3_accuracy"], return_dict=True)
    assert d == {"loss": loss, "accuracy": acc, "f1_macro": f1, "top3_accuracy": top3}
    assert nk.evaluate(model, X, y, return_dict=True) == {"loss": loss, "accuracy": acc}


def test_metrics_need_validation_data():
    X, y = blobs()
    with pytest.raises(ConfigError, match="validation_data or validation_split"):
        nk.fit(mlp(), X, y, epochs=1, metrics=["f1_macro"], progress=False)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ensemble_metrics_are_per_member(backend):
    X, y = blobs()
    Xv, yv = blobs(100, seed=2)
    ens = mlp(ensemble=3, backend=backend)
    nk.fit(ens, make(backend, X, "float32"), make(backend, y), epochs=2, batch_size=40,
           optimizer=nk.optim.Adam(lr=[1e-3, 1e-2, 3e-2]), progress=False)
    result = nk.evaluate(ens, make(backend, Xv, "float32"), make(backend, yv),
                         metrics=["f1_macro", "top2_accuracy", "confusion_matrix"],
                         return_dict=True)
    assert len(result["f1_macro"]) == 3 and len(result["confusion_matrix"]) == 3
    for i in range(3):
        member = ens.member(i)
        alone = nk.evaluate(member, make(backend, Xv, "float32"), make(backend, yv),
                            metrics=["f1_macro", "top2_accuracy", "confusion_matrix"],
                            return_dict=True)
        for key in ("loss", "accuracy", "f1_macro", "top2_accuracy"):
            assert result[key][i] == pytest.approx(alone[key], rel=1e-5), key
        assert result["confusion_matrix"][i] == alone["confusion_matrix"]
    assert len(set(map(str, result["confusion_matrix"]))) > 1  # the members do differ
