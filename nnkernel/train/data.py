"""Training data on the model's device: checked once, cut into minibatches there.

Everything about the data is checked here, once per dataset, not per step:
shapes against the model, finite values, integer labels in range (reading a
minimum from a GPU waits for it, so it is done once, not in every loss call).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import dtype_name, is_float, is_integer
from ..checks import float32_overflow, in_range, integer, is_int
from ..errors import ConfigError, DTypeError, NonFiniteError, ShapeError
from ..losses import check_probabilities


def prepare(model, X, y, classify: bool, what: str):
    """(X, y) on the model's device in its dtype, validated; int64 labels for classification."""
    with model.backend.activate():  # the checks and casts run on the model's GPU
        return _prepare(model, X, y, classify, what)


def _prepare(model, X, y, classify, what):
    be, xp = model.backend, model.xp
    if y is None:
        raise ConfigError(f"{what}: y is missing (targets or class labels)")
    X, y = _host_checked(X, "X", what), _host_checked(y, "y", what)
    _check_range(X, model, f"{what}: X")
    # numbers on the host take the model's dtype there: a GPU gets float32 bytes, not float64
    ids = model.integer_input
    X = be.asarray(X, dtype=model.dtype if _host_numbers(X) and not ids else None)
    y = be.asarray(y)
    k = len(model.input_shape)
    if X.ndim != k + 1:
        raise ShapeError(f"{what}: X must have shape (samples, "
                         f"{', '.join(str(d) for d in model.input_shape)}), got "
                         f"{tuple(X.shape)}")
    n = X.shape[0]
    if n == 0:
        raise ShapeError(f"{what}: the dataset is empty (0 samples)")
    sample = tuple(X.shape[1:])
    if any(want is not None and got != want for got, want in zip(sample, model.input_shape,
                                                                  strict=True)):
        text = f"{X.shape[1]} features" if k == 1 else f"samples of shape {sample}"
        want = f"{model.n_in}" if k == 1 else str(model.input_shape)
        raise ShapeError(f"{what}: X has {text}, but the model expects {want}")
    if y.ndim == 0 or y.shape[0] != n:
        raise ShapeError(f"{what}: X has {n} samples but y has "
                         f"{y.shape[0] if y.ndim else 'a single value'}")
    if ids:
        if not is_integer(X.dtype):
            raise DTypeError(f"{what}: X must hold integer ids for a model whose first layer "
                             f"is {type(model.layers[0]).__name__}, got dtype "
                             f"{dtype_name(X.dtype)}")
        V = model.layers[0].vocabulary()  # checked once here: a GPU's step does not read them
        lo, hi = int(xp.min(X)), int(xp.max(X))
        if V is not None and (lo < 0 or hi >= V):
            raise ShapeError(f"{what}: ids must be in [0, {V - 1}] for "
                             f"{type(model.layers[0]).__name__}({V}, ...), found values in "
                             f"[{lo}, {hi}]")
    elif not is_float(X.dtype) and not is_integer(X.dtype) and dtype_name(X.dtype) != "bool":
        raise DTypeError(f"{what}: X must hold numbers, got dtype {dtype_name(X.dtype)}")
    elif X.dtype != model.dtype:  # integer pixels or another float width
        X = xp.astype(X, model.dtype)
    if not ids and not bool(xp.all(xp.isfinite(X))):
        raise NonFiniteError(f"{what}: X contains NaN or Inf values; clean or impute them first")
    if classify:
        y = _labels(model, xp, y, what)
    else:
        y = _targets(model, xp, y, n, what)
    return X, y


def _check_range(a, model, what) -> None:
    """Finite host values that the model's float32 cannot hold would become Inf silently."""
    big = float32_overflow(a) if isinstance(a, np.ndarray) and dtype_name(
        model.dtype) == "float32" else None
    if big is not None:
        raise ConfigError(f"{what} has values beyond float32's range ({a[big]:.3g} at "
                          f"{tuple(int(i) for i in big)}); scale them, or use a float64 model")


def _host_numbers(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind in "biuf"


def _host_checked(a, name, what):
    """Refuse what cannot be an array of numbers (strings, None, ragged lists) clearly."""
    if isinstance(a, np.ndarray) and a.dtype.kind in "OUSV":
        raise DTypeError(f"{what}: {name} has dtype {a.dtype}; it must hold numbers (encode "
                         f"string labels as integers first)")
    if isinstance(a, (list, tuple)):
        try:
            arr = np.asarray(a)
        except ValueError as e:
            raise ShapeError(f"{what}: {name} is not a rectangular array ({e})") from None
        if arr.dtype.kind in "OUSV":
            raise DTypeError(f"{what}: {name} holds {arr.dtype} values; it must hold numbers")
        return arr
    return a


def _labels(model, xp, y, what):
    """Integer class labels, one per output row: (samples,) for a model with (C,) outputs,
    (samples, T) for (T, C) outputs; or probabilities shaped like the outputs."""
    name = dtype_name(y.dtype)
    rows, C = tuple(model.output_shape[:-1]), model.n_out
    if tuple(y.shape[1:]) == rows:
        if name.startswith("float"):
            raise DTypeError(f"{what}: cross-entropy needs integer class labels, got float "
                             f"labels (dtype {name}); convert with y.astype(int) or use a "
                             f"regression loss such as mse")
        if not is_integer(y.dtype):
            raise DTypeError(f"{what}: class labels must be integers, got dtype {name}")
        lo, hi = int(xp.min(y)), int(xp.max(y))
        if lo < 0 or hi >= C:
            raise ShapeError(f"{what}: labels must be in [0, {C - 1}] for a model "
                             f"with {C} outputs, found values in [{lo}, {hi}]")
        want = model.backend.label_dtype  # int64, or int32 where JAX runs without x64
        return y if y.dtype == want else xp.astype(y, want)
    if tuple(y.shape[1:]) == tuple(model.output_shape):  # probabilities (one-hot or soft)
        y = y if y.dtype == model.dtype else xp.astype(y, model.dtype)
        check_probabilities(xp, y, what)
        return y
    want = ", ".join(str(d) for d in rows)
    raise ShapeError(f"{what}: class labels must be (samples{', ' + want if want else ''}) "
                     f"integers or (samples, {', '.join(str(d) for d in model.output_shape)}) "
                     f"probabilities, got shape {tuple(y.shape)}")


def _targets(model, xp, y, n, what):
    if y.ndim == 1:
        y = xp.reshape(y, (n, 1))
    if not is_float(y.dtype) and not is_integer(y.dtype) and dtype_name(y.dtype) != "bool":
        raise DTypeError(f"{what}: targets must be numbers, got dtype {dtype_name(y.dtype)}")
    if y.dtype != model.dtype:
        y = xp.astype(y, model.dtype)
    if not bool(xp.all(xp.isfinite(y))):
        raise NonFiniteError(f"{what}: y contains NaN or Inf values")
    if tuple(y.shape[1:]) != tuple(model.output_shape):
        raise ShapeError(f"{what}: targets have shape {tuple(y.shape[1:])} per sample, but the "
                         f"model outputs {tuple(model.output_shape)}")
    return y


def sample_weights(model, y, n, sample_weight, class_weight, classify):
    """One weight per training sample on the device, or None (all weights 1)."""
    if sample_weight is None and class_weight is None:
        return None
    w = np.ones(n)
    if sample_weight is not None:
        sw = np.asarray(model.backend.to_numpy(sample_weight) if hasattr(
            sample_weight, "shape") and not isinstance(sample_weight, np.ndarray)
            else sample_weight, dtype=np.float64)
        if sw.shape != (n,):
            raise ShapeError(f"sample_weight must have one value per sample, shape ({n},), got "
                             f"{sw.shape}")
        if not np.isfinite(sw).all() or (sw < 0).any():
            raise ConfigError("sample_weight values must be finite and >= 0")
        if not sw.any():
            raise ConfigError("sample_weight is 0 for every sample: nothing would be trained")
        w = w * sw
    if class_weight is not None:
        if not classify:
            raise ConfigError("class_weight needs a classification loss (cross_entropy)")
        if not isinstance(class_weight, dict):
            raise ConfigError(f"class_weight must be a dict class -> weight, got "
                              f"{type(class_weight).__name__}")
        labels = model.backend.to_numpy(y)
        labels = labels if labels.ndim == 1 else labels.argmax(axis=-1)
        table = np.ones(model.n_out)
        for c, v in class_weight.items():
            if not is_int(c) or not 0 <= c < model.n_out:
                raise ConfigError(f"class_weight has class {c!r}; classes are 0..{model.n_out - 1}")
            if not (isinstance(v, (int, float, np.number)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"class_weight[{c}] must be a finite number >= 0, got {v!r}")
            table[int(c)] = float(v)
        w = w * table[labels]
    return model.backend.asarray(w, dtype=model.dtype)


def split_indices(n: int, fraction, seed: int = 0):
    """(train rows, validation rows): a shuffled hold-out of ``fraction`` of n rows."""
    in_range("validation_split", fraction, 0.0, 1.0, lo_open=True, hi_open=True)
    n_val = max(1, int(round(n * fraction)))
    if n_val >= n:
        raise ConfigError(f"validation_split {fraction} leaves no training data of {n} samples")
    order = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def plan_batches(n: int, batch_size, merge_single: bool) -> list[tuple[int, int]]:
    """[start, stop) of each minibatch of an epoch.

    With ``merge_single`` (a model with BatchNorm, which needs two rows to take
    statistics) a last batch of a single row joins the batch before it.
    """
    batch_size = integer("batch_size", batch_size)
    if batch_size > n:
        raise ConfigError(f"batch_size {batch_size} is larger than the {n} training samples")
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if merge_single and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def take(xp, arrays, idx, boot=None):
    """The rows ``idx`` of each array (None stays None); with ``boot``, each member's resample."""
    if boot is None:
        return [None if a is None else xp.take(a, idx, axis=0) for a in arrays]
    rows = xp.take(boot, idx, axis=1)  # (E, B): each member's own resample
    E, B = rows.shape
    flat = xp.reshape(rows, (-1,))
    return [None if a is None else xp.reshape(xp.take(a, flat, axis=0), (E, B, *a.shape[1:]))
            for a in arrays]
