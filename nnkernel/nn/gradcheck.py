"""Central finite differences in float64: does backward agree with forward?

`gradcheck(model, loss_fn, x, t)` compares every analytic gradient (each
parameter and dL/dx) with (L(θ + εv) − L(θ − εv)) / 2ε. Small tensors are
checked element by element; large ones along a few random directions v
(chainer's directional check: two loss evaluations per direction instead of
two per element). Stochastic layers see the same Dropout mask in every
evaluation. The check runs on a float64 copy of the model, so it never changes
the model it checks (not its dtype, parameters or BatchNorm statistics).
"""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..losses import get_loss

_ELEMENTWISE_LIMIT = 64


def gradcheck(model, loss_fn, x, t, *, eps: float = 1e-6, train: bool = True,
              directions: int = 4, seed: int = 0) -> float:
    """The largest relative error |analytic − numeric| / max(|analytic|, |numeric|, 1e-8)."""
    loss_fn = get_loss(loss_fn)
    model = model.copy(dtype="float64")
    be, xp = model.backend, model.xp
    members = model.ensemble is not None
    x = be.asarray(x)
    if not model.integer_input:  # token ids stay integers (and carry no gradient)
        x = xp.astype(x, xp.float64)
    if hasattr(t, "dtype") and str(t.dtype).find("float") >= 0:
        t = xp.astype(be.asarray(t), xp.float64)
    else:
        t = be.asarray(t)
    state0 = dict(model.state)

    def total_loss(xin):
        model.state = dict(state0)
        model.reseed((seed, 12345))
        value, dy = loss_fn(model.forward(xin, train=train, record=True), t, members=members)
        return float(xp.sum(value)), dy

    _, dy = total_loss(x)
    dx = model.backward(dy)
    analytic = {k: to_numpy(g).astype(np.float64) for k, g in model.grads.items()}
    if dx is not None:
        analytic["x"] = to_numpy(dx).astype(np.float64)
    rng = np.random.default_rng(seed)
    worst = 0.0
    base_params = {k: to_numpy(v).astype(np.float64) for k, v in model.params.items()}
    for key, grad in analytic.items():
        base = to_numpy(x).astype(np.float64) if key == "x" else base_params[key]
        if grad.size <= _ELEMENTWISE_LIMIT:
            dirs = [np.eye(grad.size)[i].reshape(grad.shape) for i in range(grad.size)]
        else:
            dirs = [rng.standard_normal(grad.shape) for _ in range(directions)]
        for v in dirs:
            def at(sign, base=base, v=v, key=key):
                shifted = be.asarray(base + sign * eps * v, dtype=xp.float64)
                if key == "x":
                    return total_loss(shifted)[0]
                model.params[key] = shifted
                try:
                    return total_loss(x)[0]
                finally:
                    model.params[key] = be.asarray(base, dtype=xp.float64)
            numeric = (at(+1) - at(-1)) / (2 * eps)
            exact = float(np.sum(grad * v))
            err = abs(exact - numeric) / max(abs(exact), abs(numeric), 1e-8)
            worst = max(worst, err)
    return worst
