"""Data in and out of the estimators.

- The library and device of the caller's arrays (`Space`): under
  ``sklearn.set_config(array_api_dispatch=True)`` a torch, CuPy or array-api-strict X
  trains on that library and device (unless ``backend=`` says otherwise) and every
  output goes back there; without it everything is NumPy, as in scikit-learn.
- scikit-learn's checks of X (``validate_data``) and two of ours: finite float64
  values that a float32 network would turn into ±inf, and torch tensors that require
  grad (DLPack and NumPy refuse to export them, with a message about DLPack).
- Rows for the network: reshaped to its per-sample shape (a CNN takes flat rows),
  and a sparse X made dense a chunk of whole batches at a time (as skorch densifies
  per batch), never all at once.
"""

from __future__ import annotations

import contextlib
import math
import pickle
from dataclasses import dataclass

import array_api_compat
import numpy as np
from scipy import sparse
from sklearn import get_config
from sklearn.utils.validation import validate_data

from ..backend import Backend, backend_class_of, dtype_name, to_numpy
from ..errors import NnkernelError

FLOAT32_MAX = float(np.finfo(np.float32).max)
CHUNK_BYTES = 32 * 2**20  # dense float64 rows made at a time from a sparse X
PREDICT_ROWS = 1024       # rows per forward pass in predict


@dataclass(frozen=True)
class Space:
    """An array library (nnkernel's backend name) and a device of it."""

    name: str = "numpy"
    device: object = None

    def same(self, other: Space) -> bool:
        return self.name == other.name and str(self.device) == str(other.device)

    def __str__(self):
        return self.name if self.device is None else f"{self.name} on {self.device}"

    def __reduce__(self):  # pickled with a device that pickles (JAX's do not)
        return (Space, (self.name, portable_device(self.name, self.device)))


def portable_device(name: str, device):
    """The device itself where it pickles, else the backend's name for it ("gpu:1")."""
    if device is None:
        return None
    try:
        pickle.dumps(device)
        return device
    except Exception:  # noqa: BLE001 - any failure to pickle means: use the name
        return Backend(name, device).device_name


NUMPY = Space()


def space_of(X) -> Space:
    """Where X lives, as far as the estimator cares: NumPy unless array_api_dispatch is on."""
    if not get_config()["array_api_dispatch"] or isinstance(X, np.ndarray) or sparse.issparse(X):
        return NUMPY
    try:
        cls = backend_class_of(X)
    except NnkernelError:  # lists, pandas: scikit-learn makes NumPy arrays of them
        return NUMPY
    return NUMPY if cls.name == "numpy" else Space(cls.name, array_api_compat.device(X))


def on_device(X):
    """A context with X's device current (CuPy computes on the current GPU only)."""
    if isinstance(X, np.ndarray) or sparse.issparse(X):
        return contextlib.nullcontext()
    return Backend(backend_class_of(X).name, array_api_compat.device(X)).activate()


def refuse_grad(a, name: str) -> None:
    if getattr(a, "requires_grad", False) is True:
        raise ValueError(f"{name} is a torch tensor that requires grad: the estimator trains on "
                         f"it, not through it, and neither DLPack nor NumPy will export such a "
                         f"tensor; pass {name}.detach()")


def to_host(a, name: str):
    """Labels and weights are read on the host: another library's array as NumPy."""
    if a is None or isinstance(a, np.ndarray):
        return a
    refuse_grad(a, name)
    try:
        backend_class_of(a)
    except NnkernelError:  # lists, pandas: left to scikit-learn's checks
        return a
    return to_numpy(a)


def check_X(est, X, y=None, *, reset: bool, space: Space, y_checks=None):
    """scikit-learn's checks: X as a 2-D float array of its library (CSR if sparse)."""
    refuse_grad(X, "X")
    if space is NUMPY:
        return _validate(est, X, y, np, reset, y_checks)
    with on_device(X):
        return _validate(est, X, y, array_api_compat.array_namespace(X), reset, y_checks)


def _validate(est, X, y, xp, reset, y_checks):
    options = {"reset": reset, "dtype": [xp.float64, xp.float32], "accept_sparse": "csr"}
    if y is None:
        return validate_data(est, X, **options)
    return validate_data(est, X, y, **options, **(y_checks or {}))


def check_range(X, dtype) -> None:
    """Refuse finite float64 values beyond float32's range when the network is float32:
    they would become ±inf (and NaN after a layer) in silence."""
    if dtype_name(dtype) != "float32" or dtype_name(X.dtype) != "float64":
        return
    values = X.data if sparse.issparse(X) else X
    if math.prod(values.shape) == 0:
        return
    xp = np if isinstance(values, np.ndarray) else array_api_compat.array_namespace(values)
    with on_device(values):
        largest = float(xp.max(xp.abs(values)))
    if largest > FLOAT32_MAX:
        raise ValueError(f"X has values as large as {largest:.3g} in magnitude, beyond float32's "
                         f"range (±{FLOAT32_MAX:.3g}): the float32 network would overflow to "
                         f"inf; scale X (e.g. StandardScaler) or use dtype='float64'")


def rows_for(net, X):
    """X's rows in the network's per-sample shape: a CNN's (C, H, W) from flat rows."""
    shape = tuple(net.input_shape)
    if len(shape) == 1:
        return X
    xp = np if isinstance(X, np.ndarray) else array_api_compat.array_namespace(X)
    with on_device(X):
        return xp.reshape(X, (X.shape[0], *shape))


def chunks(n: int, n_features: int, batch_size: int, batchnorm: bool) -> list:
    """(start, stop) row ranges of whole batches whose dense float64 copy fits CHUNK_BYTES;
    with BatchNorm no range of a single row (it joins the one before)."""
    per = max(1, CHUNK_BYTES // (8 * max(1, n_features) * batch_size)) * batch_size
    bounds = [(a, min(a + per, n)) for a in range(0, n, per)]
    if batchnorm and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def on_net(net, X):
    """X on the network's device in its dtype (a sparse X stays on the host)."""
    if sparse.issparse(X):
        return X
    with net.backend.activate():  # a cast of a CuPy array runs on the current GPU
        return net.backend.asarray(X, dtype=net.dtype)


def outputs(net, X):
    """The network's outputs for the rows of X (sparse X a chunk at a time), on its device."""
    if not sparse.issparse(X):
        return net.predict(rows_for(net, on_net(net, X)), batch_size=PREDICT_ROWS)
    parts = [net.predict(rows_for(net, on_net(net, X[a:b].toarray())), batch_size=PREDICT_ROWS)
             for a, b in chunks(X.shape[0], X.shape[1], PREDICT_ROWS, False)]
    with net.backend.activate():
        return parts[0] if len(parts) == 1 else net.xp.concat(parts, axis=0)


def host_outputs(net, X) -> np.ndarray:
    """`outputs` as float64 NumPy (n, n_outputs), where the estimators finish their work."""
    return np.asarray(to_numpy(outputs(net, X)), dtype=np.float64)


@dataclass(frozen=True)
class Output:
    """Where results go: the caller's library and device. Regression predictions take X's
    float dtype (``cast``, as MLPRegressor's); probabilities stay float64, precise near 0
    and 1, so that predict_log_proba is the log of predict_proba; labels keep theirs."""

    space: Space
    dtype: str

    def __call__(self, a: np.ndarray, cast: bool = False):
        if cast:
            a = a.astype(self.dtype, copy=False)
        if self.space.name == "numpy":
            return a
        return Backend(self.space.name, self.space.device).asarray(a)
