"""Losses return the value and its gradient with respect to the input, together.

    value, dy = loss(y, target, **options)

The value is the mean over samples (a 0-d array of the model's backend: reading
it as a number is ``float(value)``, which waits for a GPU only when asked). The
gradient is that of the mean. Fused forms come naturally: softmax +
cross-entropy has δ = (softmax(y) − t) / N, sigmoid + binary cross-entropy has
δ = (σ(y) − t) / n.

For an ensemble pass ``members=True``: axis 0 indexes members, each member's
loss is averaged on its own, `value` has one entry per member and dy is each
member's own gradient, exactly what it would get if trained alone.

``weights`` (one per sample, shape y.shape[:-1]) multiplies each sample's loss;
the mean still divides by the number of samples, as Keras' sample_weight.

Values and gradients agree with torch.nn.functional's mse_loss, l1_loss,
huber_loss, binary_cross_entropy_with_logits and cross_entropy.
"""

from __future__ import annotations

import array_api_compat
import numpy as np

from .backend import backend_class_of, dtype_name, is_float, is_integer
from .checks import in_range, is_int
from .errors import BackendMismatchError, ConfigError, DTypeError, NonFiniteError, ShapeError
from .nn.activations import sigmoid


def _library(y):
    """(namespace, kernels, whether reading a value waits for a device) of y's library."""
    cls = backend_class_of(y)
    return cls.namespace(), cls.get_kernels(), cls.array_is_asynchronous(y)


def _as_output_array(xp, y, a, what: str, dtype=None):
    """``a`` (targets or weights) as an array of y's library on y's device: host data is
    copied there, another library's array on the same device is taken through DLPack (as
    `forward` takes inputs), and one on another device is refused by name."""
    if not hasattr(a, "shape"):
        return xp.asarray(a, dtype=dtype, device=array_api_compat.device(y))
    if type(a) is type(y):
        if type(a) is np.ndarray or array_api_compat.device(a) == array_api_compat.device(y):
            return a
        raise BackendMismatchError(f"{what} is on device {array_api_compat.device(a)!s} but the "
                                   f"outputs are on {array_api_compat.device(y)!s}; move it "
                                   f"with model.backend.asarray(...) first")
    if isinstance(a, np.ndarray):  # host data: NumPy and Dask outputs take it as it is
        if type(y).__module__.split(".")[0] in ("numpy", "dask"):
            return a
        return xp.asarray(a, dtype=dtype, device=array_api_compat.device(y))
    try:
        taken = xp.from_dlpack(a)
    except Exception:  # noqa: BLE001 - not shareable: say which libraries met
        taken = None
    if taken is None or array_api_compat.device(taken) != array_api_compat.device(y):
        try:
            theirs = backend_class_of(a).name
        except Exception:  # noqa: BLE001 - an array type nnkernel does not know
            theirs = f"{type(a).__module__}.{type(a).__name__}"
        raise BackendMismatchError(
            f"{what} is a {theirs} array but the outputs are {backend_class_of(y).name} "
            f"arrays on {array_api_compat.device(y)!s}; convert them with "
            f"model.backend.asarray(...) first")
    return taken


def _count(y, members: bool, per_row: bool = False) -> int:
    """Number of terms averaged per member: the normaliser of the gradient."""
    shape = tuple(y.shape)
    if per_row:
        shape = shape[:-1]
    if members:
        shape = shape[1:]
    n = 1
    for s in shape:
        n *= s
    return max(n, 1)


def _regression_target(xp, y, target, name, members=False):
    target = _as_output_array(xp, y, target, f"{name}: the target", y.dtype)
    if target.dtype != y.dtype:
        if not (is_float(target.dtype) or is_integer(target.dtype)
                or dtype_name(target.dtype) == "bool"):
            raise DTypeError(f"{name}: targets must be numbers, got dtype "
                             f"{dtype_name(target.dtype)}")
        target = xp.astype(target, y.dtype)
    if tuple(target.shape) != tuple(y.shape):
        if not (members and tuple(target.shape) == tuple(y.shape[1:])):
            raise ShapeError(f"{name}: target shape {tuple(target.shape)} does not match "
                             f"output shape {tuple(y.shape)}")
        target = xp.broadcast_to(target, y.shape)  # targets shared by every member
    return target


def _weighted(xp, elementwise, dy, weights, y, name, per_row=False):
    """Multiply each sample's loss terms and gradient by its weight."""
    if weights is None:
        return elementwise, dy
    w = _as_output_array(xp, y, weights, f"{name}: the weights", y.dtype)
    if w.dtype != y.dtype:
        w = xp.astype(w, y.dtype)
    rows = tuple(y.shape[:-1])
    if tuple(w.shape) not in (rows, rows[1:]):
        raise ShapeError(f"{name}: weights have shape {tuple(w.shape)}, expected one per sample "
                         f"{rows}")
    w_rows = xp.expand_dims(w, axis=-1)
    return (elementwise * (w if per_row else w_rows)), dy * w_rows


def mse(y, target, *, members: bool = False, weights=None):
    """mean((y − t)²);  dy = 2 (y − t) / n."""
    xp, k, _ = _library(y)
    diff = y - _regression_target(xp, y, target, "mse", members)
    n = _count(y, members)
    sq, dy = _weighted(xp, diff * diff, diff * (2.0 / n), weights, y, "mse")
    return k.mean(sq, members, n), dy


def mae(y, target, *, members: bool = False, weights=None):
    """mean(|y − t|);  dy = sign(y − t) / n (0 where y = t, as torch)."""
    xp, k, _ = _library(y)
    diff = y - _regression_target(xp, y, target, "mae", members)
    n = _count(y, members)
    ad, dy = _weighted(xp, xp.abs(diff), xp.sign(diff) * (1.0 / n), weights, y, "mae")
    return k.mean(ad, members, n), dy


def huber(y, target, delta: float = 1.0, *, members: bool = False, weights=None):
    """½d² where |d| ≤ δ, else δ(|d| − ½δ);  dy = clip(d, −δ, δ) / n."""
    delta = in_range("huber delta", delta, 0.0, float("inf"), lo_open=True, hi_open=True)
    xp, k, _ = _library(y)
    d = y - _regression_target(xp, y, target, "huber", members)
    ad = xp.abs(d)
    elementwise = xp.where(ad <= delta, 0.5 * d * d, delta * (ad - 0.5 * delta))
    n = _count(y, members)
    # min/max, not xp.clip: array-api-compat's clip reads a count back from a GPU
    dy = xp.minimum(xp.maximum(d, -delta), delta) * (1.0 / n)
    elementwise, dy = _weighted(xp, elementwise, dy, weights, y, "huber")
    return k.mean(elementwise, members, n), dy


def binary_cross_entropy(y, target, *, members: bool = False, weights=None,
                         num_check: bool | None = None):
    """Logits y, targets t in [0, 1]: mean(max(y, 0) − y t + log(1 + e^−|y|));  dy = (σ(y) − t)/n.

    The log1p form never evaluates e^y for large y, so it is stable for any |y|.
    """
    xp, k, waits = _library(y)
    t = _regression_target(xp, y, target, "binary_cross_entropy", members)
    if (not waits if num_check is None else num_check) and not bool(
            xp.all((t >= 0.0) & (t <= 1.0))):
        raise ShapeError("binary_cross_entropy: targets must be in [0, 1] (probabilities), "
                         f"found values in [{float(xp.min(t))}, {float(xp.max(t))}]")
    elementwise = xp.maximum(y, 0.0) - y * t + xp.log1p(xp.exp(-xp.abs(y)))
    n = _count(y, members)
    elementwise, dy = _weighted(xp, elementwise, (sigmoid(xp, y) - t) * (1.0 / n), weights, y,
                                "binary_cross_entropy")
    return k.mean(elementwise, members, n), dy


def cross_entropy(y, target, *, members: bool = False, weights=None,
                  num_check: bool | None = None, ignore_index: int | None = None):
    """Logits y (..., C); target integer labels (...) or probabilities (..., C).

    Softmax is fused in: value = mean(−Σ t log softmax(y)),  dy = (softmax(y) − t) / N.
    Labels are checked to lie in 0..C−1 where that is cheap (``num_check=None``: on the
    CPU; on a GPU the check would wait for the device, and `fit` checks each dataset
    once instead); ``num_check=True`` or ``False`` decides it outright.

    ``ignore_index``: rows whose label is this id (padding) count for nothing: the mean
    is over the other rows, their gradient is zero (torch's ``ignore_index``; a batch
    with every row ignored gives 0, where torch gives NaN). Logits (B, T, V) with
    labels (B, T) are a language model's: the mean over tokens.
    """
    xp, k, waits = _library(y)
    check = not waits if num_check is None else num_check
    if ignore_index is not None:
        return _cross_entropy_ignoring(xp, k, y, target, ignore_index, members, weights, check)
    t, labels = _class_target(xp, k, y, target, check)
    count = _count(y, members, per_row=True)
    if weights is None:  # the mean and its gradient in one call (a twin folds the mean in)
        return k.softmax_cross_entropy_mean(y, t, count, members, labels)
    losses, dy = (k.softmax_cross_entropy_labels(y, t, count) if labels
                  else k.softmax_cross_entropy(y, t, count))
    losses, dy = _weighted(xp, losses, dy, weights, y, "cross_entropy", per_row=True)
    return k.mean(losses, members, count), dy


def _cross_entropy_ignoring(xp, k, y, target, ignore, members, weights, check):
    """Mean over the rows whose label is not ``ignore``:  with keep_i = [t_i ≠ ignore] and
    n = Σ keep, value = Σ keep_i · loss_i / n,  dy_i = keep_i (softmax(y_i) − onehot(t_i)) / n."""
    if not is_int(ignore):
        raise ConfigError(f"cross_entropy: ignore_index must be an integer id, got {ignore!r}")
    if not hasattr(target, "dtype"):
        target = xp.asarray(target, device=array_api_compat.device(y))
    if not is_integer(target.dtype):
        raise DTypeError(f"cross_entropy: ignore_index needs integer labels, got dtype "
                         f"{dtype_name(target.dtype)}")
    keep = target != ignore
    safe = xp.where(keep, target, xp.zeros_like(target))  # ignored rows: any valid class
    t, _ = _class_target(xp, k, y, safe, check)
    losses, dy = k.softmax_cross_entropy_labels(y, t, 1)   # per row: loss_i, softmax − onehot
    scale = xp.astype(keep, y.dtype)
    if weights is not None:
        losses, dy = _weighted(xp, losses, dy, weights, y, "cross_entropy", per_row=True)
    n = xp.sum(scale)  # the rows that count (a member's own: targets are shared or per member)
    if members and scale.ndim == losses.ndim:
        n = xp.sum(scale, axis=tuple(range(1, scale.ndim)), keepdims=True)
    scale = scale / xp.maximum(n, 1.0)  # all ignored: 0, not 0/0
    losses = losses * scale
    value = xp.sum(losses, axis=tuple(range(1, losses.ndim))) if members else xp.sum(losses)
    return value, dy * xp.expand_dims(scale, axis=-1)


def _class_target(xp, k, y, target, check):
    """(target, is_labels): validated integer labels, or probabilities in y's dtype.

    With ``check`` the values are checked too (labels in 0..C−1; probabilities finite,
    ≥ 0 and summing to 1 per row): where reading them is cheap (the CPU), or once per
    dataset in `fit`.
    """
    C = y.shape[-1]
    target = _as_output_array(xp, y, target, "cross_entropy: the target")
    tshape, yshape = tuple(target.shape), tuple(y.shape)
    if tshape == yshape[:-1] and is_integer(target.dtype):  # labels, one per row: the usual
        if check and target.ndim and target.shape[0] > 0:
            _check_labels(k, target, C)
        return target, True
    name = dtype_name(target.dtype)
    if tshape == yshape or (target.ndim >= 2 and tshape == yshape[1:]):
        if not is_float(target.dtype) and not is_integer(target.dtype):
            raise DTypeError(f"cross_entropy: target probabilities must be numbers, got {name}")
        target = target if target.dtype == y.dtype else xp.astype(target, y.dtype)
        if check:
            check_probabilities(xp, target, "cross_entropy")
        return target, False
    if name.startswith("float"):
        raise DTypeError(f"cross_entropy: target has float dtype {name} and shape "
                         f"{tshape}; pass integer class labels of shape "
                         f"{yshape[:-1]} or probabilities of shape {yshape}")
    if not is_integer(target.dtype):
        raise DTypeError(f"cross_entropy: labels must be integers, got dtype {name}")
    rows = yshape[:-1]
    if tshape != rows and tshape != rows[1:]:
        raise ShapeError(f"cross_entropy: labels have shape {tshape}, expected "
                         f"{rows} for outputs of shape {yshape}")
    if check and (target.ndim == 0 or target.shape[0] > 0):
        _check_labels(k, target, C)
    return target, True


def _check_labels(k, labels, C):
    bad = k.labels_outside(labels, C)
    if bad is not None:
        raise ShapeError(f"cross_entropy: labels must be in [0, {C - 1}] for {C} classes, "
                         f"found values in [{bad[0]}, {bad[1]}]")


def check_probabilities(xp, t, name: str) -> None:
    """Probability targets: finite, ≥ 0, each row summing to 1 (a NaN would reach the
    weights at the first step; a negative or unnormalised row trains towards no
    distribution)."""
    if not bool(xp.all(xp.isfinite(t))):
        raise NonFiniteError(f"{name}: the target probabilities contain NaN or Inf")
    if bool(xp.any(t < 0.0)):
        raise ShapeError(f"{name}: target probabilities must be >= 0, found "
                         f"{float(xp.min(t))}")
    sums = xp.sum(t, axis=-1)
    tolerance = 1e-3 if dtype_name(t.dtype) == "float32" else 1e-6
    if t.shape[-1] and bool(xp.any(xp.abs(sums - 1.0) > tolerance)):
        worst = float(xp.max(xp.abs(sums - 1.0)))
        raise ShapeError(f"{name}: each row of target probabilities must sum to 1, found a "
                         f"row {worst:.3g} away (normalise them, or pass integer labels)")


LOSSES = {"mse": mse, "mae": mae, "huber": huber, "binary_cross_entropy": binary_cross_entropy,
          "cross_entropy": cross_entropy}
ALIASES = {"l2": "mse", "l1": "mae", "bce": "binary_cross_entropy", "ce": "cross_entropy",
           "crossentropy": "cross_entropy", "smooth_l1": "huber"}


def get_loss(spec):
    """A loss function from a name ("cross_entropy", "mse", ...) or a callable."""
    if callable(spec):
        return spec
    key = str(spec).lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in LOSSES:
        raise ConfigError(f"unknown loss {spec!r}; valid losses: {', '.join(LOSSES)}")
    return LOSSES[key]

