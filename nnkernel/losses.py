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

Values and gradients agree with torch.nn.functional's mse_loss, l1_loss,
huber_loss, binary_cross_entropy_with_logits and cross_entropy.
"""

from __future__ import annotations

import array_api_compat

from .backend import dtype_name, namespace_of
from .errors import ConfigError, DTypeError, ShapeError
from .kernels import kernels_for_namespace


def _reduce(xp, elementwise, members: bool, count: int | None = None):
    """Mean over everything, or over all but axis 0 (members).

    Written as sum / count: NumPy's ``mean`` is a Python wrapper that costs twice
    ``sum`` (8 against 4 µs), which shows on small networks; the kernels' `total`
    skips the wrappers on NumPy (1.6 µs).
    """
    count = _count(elementwise, members) if count is None else count
    if not members:
        return kernels_for_namespace(xp).total(elementwise) / float(count)
    return xp.sum(elementwise, axis=tuple(range(1, elementwise.ndim))) / float(count)


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


def _regression_target(xp, y, target, name):
    if not hasattr(target, "shape"):
        target = xp.asarray(target, dtype=y.dtype, device=array_api_compat.device(y))
    if target.dtype != y.dtype:
        target = xp.astype(target, y.dtype)
    if tuple(target.shape) != tuple(y.shape):
        try:
            target = xp.broadcast_to(target, y.shape)
        except (ValueError, RuntimeError, TypeError):
            raise ShapeError(f"{name}: target shape {tuple(target.shape)} does not match "
                             f"output shape {tuple(y.shape)}") from None
    return target


def mse(y, target, *, members: bool = False):
    """mean((y − t)²);  dy = 2 (y − t) / n."""
    xp = namespace_of(y)
    diff = y - _regression_target(xp, y, target, "mse")
    n = _count(y, members)
    return _reduce(xp, diff * diff, members, n), diff * (2.0 / n)


def mae(y, target, *, members: bool = False):
    """mean(|y − t|);  dy = sign(y − t) / n (0 where y = t, as torch)."""
    xp = namespace_of(y)
    diff = y - _regression_target(xp, y, target, "mae")
    return _reduce(xp, xp.abs(diff), members), xp.sign(diff) * (1.0 / _count(y, members))


def huber(y, target, delta: float = 1.0, *, members: bool = False):
    """½d² where |d| ≤ δ, else δ(|d| − ½δ);  dy = clip(d, −δ, δ) / n."""
    xp = namespace_of(y)
    d = y - _regression_target(xp, y, target, "huber")
    ad = xp.abs(d)
    elementwise = xp.where(ad <= delta, 0.5 * d * d, delta * (ad - 0.5 * delta))
    dy = xp.clip(d, min=-delta, max=delta) * (1.0 / _count(y, members))
    return _reduce(xp, elementwise, members), dy


def binary_cross_entropy(y, target, *, members: bool = False):
    """Logits y, targets t in [0, 1]: mean(max(y, 0) − y t + log(1 + e^−|y|));  dy = (σ(y) − t)/n.

    The log1p form never evaluates e^y for large y, so it is stable for any |y|.
    """
    xp = namespace_of(y)
    t = _regression_target(xp, y, target, "binary_cross_entropy")
    elementwise = xp.maximum(y, 0.0) - y * t + xp.log1p(xp.exp(-xp.abs(y)))
    sigma = 0.5 * (xp.tanh(0.5 * y) + 1.0)
    return _reduce(xp, elementwise, members), (sigma - t) * (1.0 / _count(y, members))


def cross_entropy(y, target, *, members: bool = False, num_check: bool = True):
    """Logits y (..., C); target integer labels (...) or probabilities (..., C).

    Softmax is fused in: value = mean(−Σ t log softmax(y)),  dy = (softmax(y) − t) / N.
    """
    xp = namespace_of(y)
    t, labels = _class_target(xp, y, target, check=num_check)
    k = kernels_for_namespace(xp)
    count = _count(y, members, per_row=True)
    losses, dy = (k.softmax_cross_entropy_labels(y, t, count) if labels
                  else k.softmax_cross_entropy(y, t, count))
    return _reduce(xp, losses, members), dy


def _class_target(xp, y, target, check=True):
    """(target, is_labels): probabilities in y's dtype, or validated integer labels."""
    C = y.shape[-1]
    if not hasattr(target, "dtype"):
        target = xp.asarray(target, device=array_api_compat.device(y))
    name = dtype_name(target.dtype)
    if tuple(target.shape) == tuple(y.shape) or (
            target.ndim >= 2 and tuple(target.shape) == tuple(y.shape[1:])):
        return (target if target.dtype == y.dtype else xp.astype(target, y.dtype)), False
    if name.startswith("float"):
        raise DTypeError(f"cross_entropy: target has float dtype {name} and shape "
                         f"{tuple(target.shape)}; pass integer class labels of shape "
                         f"{tuple(y.shape[:-1])} or probabilities of shape {tuple(y.shape)}")
    if not (name.startswith("int") or name.startswith("uint")):
        raise DTypeError(f"cross_entropy: labels must be integers, got dtype {name}")
    rows = tuple(y.shape[:-1])
    if tuple(target.shape) != rows and tuple(target.shape) != rows[1:]:
        raise ShapeError(f"cross_entropy: labels have shape {tuple(target.shape)}, expected "
                         f"{rows} for outputs of shape {tuple(y.shape)}")
    if check and (target.ndim == 0 or target.shape[0] > 0):
        lo, hi = int(xp.min(target)), int(xp.max(target))
        if lo < 0 or hi >= C:
            raise ShapeError(f"cross_entropy: labels must be in [0, {C - 1}] for {C} classes, "
                             f"found values in [{lo}, {hi}]")
    return target, True


LOSSES = {"mse": mse, "mae": mae, "huber": huber, "binary_cross_entropy": binary_cross_entropy,
          "cross_entropy": cross_entropy}
ALIASES = {"l2": "mse", "l1": "mae", "bce": "binary_cross_entropy", "ce": "cross_entropy",
           "crossentropy": "cross_entropy", "smooth_l1": "huber"}


def get_loss(spec):
    """A loss function from a name ("cross_entropy", "mse", ...) or a callable."""
    if callable(spec):
        return spec
    key = ALIASES.get(str(spec).lower().replace("-", "_"), str(spec).lower().replace("-", "_"))
    if key not in LOSSES:
        raise ConfigError(f"unknown loss {spec!r}; valid losses: {', '.join(LOSSES)}")
    return LOSSES[key]


def loss_name(fn) -> str:
    for name, f in LOSSES.items():
        if f is fn:
            return name
    return getattr(fn, "__name__", "custom")
