"""nnkernel.sklearn and the arrays it is given: other libraries' arrays under scikit-learn's
array_api_dispatch (torch, array-api-strict's fake device, CuPy through its test double),
JAX models, tensors that require grad, sparse X, values beyond float32's range, weights.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

import array_api_compat  # noqa: E402
from conftest import backend_unavailable, torch_or_skip  # noqa: E402
from cupy_double import fake_cupy  # noqa: E402, F401 - the fixture
from scipy import sparse  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402

import nnkernel as nk  # noqa: E402
import nnkernel.sklearn.inputs as inputs  # noqa: E402
import nnkernel.sklearn.training as training  # noqa: E402
from nnkernel.sklearn import NNClassifier, NNRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
SMALL = {"hidden_layer_sizes": (8,), "epochs": 5, "lr": 0.03, "random_state": 0}


def blobs(n=60, seed=0):
    X, y = make_blobs(n_samples=n, centers=3, n_features=4, random_state=seed)
    return X, y


@pytest.fixture
def dispatch(monkeypatch):
    """scikit-learn's array API dispatch (it asks for SciPy's array API support declared)."""
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    with sklearn.config_context(array_api_dispatch=True):
        yield


def _library_arrays(library):
    """(name of the namespace, device, function host array -> that library's array)."""
    if library == "torch":
        torch = torch_or_skip()
        return "torch", torch.device("cpu"), lambda a: torch.asarray(a)
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")  # a fake second device: device logic without a GPU
    return "array_api_strict", device, lambda a: strict.asarray(a, device=device)


def _in(result, name, device):
    assert array_api_compat.array_namespace(result).__name__.endswith(name)
    assert str(array_api_compat.device(result)) == str(device)


@pytest.mark.parametrize("library", ["torch", "array_api_strict"])
def test_dispatch_trains_where_X_lives_and_answers_there(library, dispatch):
    name, device, make = _library_arrays(library)
    X, y = blobs()
    clf = NNClassifier(**SMALL).fit(make(X), make(y))
    assert clf.model_.backend.name == name
    assert str(clf.model_.backend.device) == str(device)
    ref = NNClassifier(**SMALL).fit(X, y)  # the same seed on NumPy: the same numbers
    for method in ("predict_proba", "predict_log_proba", "decision_function", "predict"):
        out = getattr(clf, method)(make(X))
        _in(out, name, device)
        np.testing.assert_allclose(nk.backend.to_numpy(out), getattr(ref, method)(X),
                                   rtol=1e-4, atol=1e-5)
    assert isinstance(clf.score(make(X), make(y)), float)
    with pytest.raises(ValueError, match=r"NNClassifier.predict\(\) must use the same namespace"):
        clf.predict(X)  # NumPy X for a model fitted on another library's arrays, as sklearn's
    reg = NNRegressor(**SMALL).fit(make(X), make(X[:, 0]))
    pred = reg.predict(make(X.astype(np.float32)))
    _in(pred, name, device)
    assert "float32" in str(pred.dtype)  # predictions follow X's dtype, as MLPRegressor's


def test_dispatch_on_a_cupy_gpu_through_the_double(dispatch, fake_cupy):  # noqa: F811
    import cupy

    X, y = blobs()
    with cupy.cuda.Device(1):  # data on the second GPU; the current device is still 0
        X1 = cupy.asarray(X)
    clf = NNClassifier(**SMALL).fit(X1, y)
    assert clf.model_.backend.device_name == "gpu:1"
    proba = clf.predict_proba(X1)
    assert isinstance(proba, cupy.ndarray) and proba.device.id == 1
    np.testing.assert_allclose(proba.get(), NNClassifier(**SMALL).fit(X, y).predict_proba(X),
                               rtol=1e-5, atol=1e-6)
    assert NNRegressor(**SMALL).fit(X1, X[:, 0]).predict(X1).device.id == 1


@pytest.mark.parametrize("dispatched", [False, True])
def test_a_jax_model_predicts_from_numpy_as_it_fits(dispatched, monkeypatch):
    if backend_unavailable("jax"):
        pytest.skip(backend_unavailable("jax"))
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    X, y = blobs()
    with sklearn.config_context(array_api_dispatch=dispatched):
        net = nk.Sequential(nk.Dense(4, 8, activation="relu"), nk.Dense(8, 3), backend="jax")
        for given in ({"backend": "jax", "hidden_layer_sizes": (8,)}, {"model": net}):
            clf = NNClassifier(epochs=5, lr=0.03, random_state=0, **given).fit(X, y)
            assert clf.model_.backend.name == "jax"
            assert isinstance(clf.predict_proba(X), np.ndarray)
            assert clf.predict(X).shape == (60,)
            again = pickle.loads(pickle.dumps(clf))  # JAX's devices do not pickle
            np.testing.assert_array_equal(again.predict(X), clf.predict(X))


@pytest.mark.parametrize("dispatched", [False, True])
def test_a_tensor_that_requires_grad_is_refused_naming_the_cause(dispatched, monkeypatch):
    torch = torch_or_skip()
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    X, y = blobs()
    Xt = torch.asarray(X).requires_grad_(True)
    with sklearn.config_context(array_api_dispatch=dispatched):
        for est in (NNClassifier(**SMALL), NNClassifier(**SMALL, backend="torch")):
            with pytest.raises(ValueError, match=r"requires grad.*X\.detach\(\)"):
                est.fit(Xt, y)
        fitted = NNClassifier(**SMALL).fit(Xt.detach(), y)
        with pytest.raises(ValueError, match="requires grad"):
            fitted.predict(Xt)


@pytest.mark.parametrize("Estimator", [NNClassifier, NNRegressor])
def test_values_beyond_float32_are_refused_in_fit_and_predict(Estimator):
    X, y = blobs()
    big = X.copy()
    big[3, 1] = 1e39  # finite in float64, inf in float32
    est = Estimator(**SMALL)
    with pytest.raises(ValueError, match=r"beyond float32's range.*overflow"):
        est.fit(big, y)
    est.fit(X, y)
    with pytest.raises(ValueError, match=r"beyond float32's range.*overflow"):
        est.predict(big)  # it returned NaN in silence
    with pytest.raises(ValueError, match="beyond float32's range"):
        est.predict(sparse.csr_matrix(big))
    wide = Estimator(**SMALL, dtype="float64").fit(X, y)
    assert np.isfinite(wide.predict(big * 1e-300)).all()  # a float64 network takes them


def test_sparse_X_trains_as_its_dense_copy_and_in_chunks(monkeypatch):
    X, y = blobs(n=90)
    X[X < 0] = 0.0
    dense = NNClassifier(**SMALL).fit(X, y)
    csr = NNClassifier(**SMALL).fit(sparse.csr_matrix(X), y)
    # one chunk: the same batches in the same order as nk.fit's, so the same weights
    np.testing.assert_array_equal(csr.model_.params.flat, dense.model_.params.flat)
    np.testing.assert_array_equal(csr.predict_proba(sparse.csr_matrix(X)),
                                  dense.predict_proba(X))
    monkeypatch.setattr(inputs, "CHUNK_BYTES", 8 * 4 * 20)  # 20 rows of 4 float64 at a time
    rows, real = [], training.fit
    monkeypatch.setattr(training, "fit", lambda net, X, *a, **k: rows.append(X.shape[0]) or
                        real(net, X, *a, **k))
    chunked = NNClassifier(**SMALL, batch_size=20).fit(sparse.csc_matrix(X), y)
    assert rows == [20, 20, 20, 20, 10] * 5  # densified 20 rows at a time, never all 90
    assert chunked.n_iter_ == 5 and chunked.score(X, y) > 0.9
    proba = chunked.predict_proba(sparse.csr_matrix(X))
    np.testing.assert_allclose(proba, chunked.predict_proba(X), rtol=1e-6)


def test_tiny_sample_weights_train_as_their_ratios():
    X, y = blobs()
    w = np.random.default_rng(0).uniform(1.0, 2.0, size=60)
    clf = NNClassifier(**SMALL)
    by_ratio = clone(clf).fit(X, y, sample_weight=w).predict_proba(X)
    tiny = clone(clf).fit(X, y, sample_weight=w * 1e-46).predict_proba(X)  # 0 in float32
    np.testing.assert_allclose(tiny, by_ratio, rtol=1e-4, atol=1e-6)


def test_zero_weight_for_every_training_row_is_refused():
    # the weights of the early-stopping split's training rows: all 0 for some seeds
    X, y = blobs(n=8)
    refused = 0
    for seed in range(20):
        reg = NNRegressor(**SMALL | {"random_state": seed}, early_stopping=True,
                          validation_fraction=0.5)
        try:
            reg.fit(X, X[:, 0], sample_weight=np.r_[np.ones(2), np.zeros(6)])
        except ValueError as e:
            assert "sample_weight is zero for every" in str(e)
            refused += "training row" in str(e)
    assert refused > 0  # it trained nothing, in silence
