"""Optimizers with torch.optim's update rules and defaults, plus clipping and schedules.

    opt = Adam(lr=1e-3)
    opt.step(model.params, model.grads)

`step` updates exactly the entries named in ``grads`` (leave a key out and that
parameter stays frozen) by rebinding dict entries, so backends whose arrays are
immutable work. The arithmetic lives in the kernels (`nnkernel.kernels`): a
generic reference and, for NumPy, an in-place twin.

Hyperparameters that are scalars in an update (``lr``, ``weight_decay``) may be
a sequence of E values for an ensemble of E members: member i then trains with
the i-th value, so a learning-rate sweep is one run.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np

from .backend import to_numpy
from .errors import ConfigError
from .kernels import kernels_for_namespace


class Optimizer:
    defaults: dict = {}

    def __init__(self, lr, *, weight_decay=0.0, clip_norm: float | None = None, schedule=None):
        self.lr = _check_hyper("lr", lr)
        self.weight_decay = _check_hyper("weight_decay", weight_decay, allow_zero=True)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.schedule = schedule
        self.t = 0                  # steps taken
        self.state: dict = {}       # parameter key -> {"step": int, name: array, ...}
        self.member_mask = None     # ensemble: 0/1 per member, 0 freezes a stopped member
        self._k = None
        self._hyper_cache: dict = {}

    # -- the public step -------------------------------------------------------------
    def step(self, params: dict, grads: dict) -> None:
        if not grads:
            return
        if self._k is None:
            first = next(iter(grads.values()))
            self._k = kernels_for_namespace(array_api_compat.array_namespace(first))
        if self.clip_norm is not None:
            grads = clip_by_global_norm(grads, self.clip_norm, members=self._members)
        factor = 1.0 if self.schedule is None else float(self.schedule(self.t))
        self.t += 1
        for key, g in grads.items():
            if key not in params:
                raise KeyError(f"gradient {key!r} has no parameter; parameters: {', '.join(params)}")
            p = params[key]
            st = self.state.get(key)
            if st is None:
                st = self.state[key] = {"step": 0}
            st["step"] += 1
            lr = self._hyper("lr", self.lr, p, factor)
            wd = self._hyper("weight_decay", self.weight_decay, p)
            new = self._update(p, g, st, lr, None if _is_zero(wd) else wd)
            if new is not p:
                params[key] = new

    @property
    def current_lr(self):
        """The learning rate the next step will use (after the schedule)."""
        factor = 1.0 if self.schedule is None else float(self.schedule(self.t))
        return self.lr * factor

    def _update(self, p, g, st, lr, wd):
        raise NotImplementedError

    # -- per-member hyperparameters ----------------------------------------------------
    @property
    def _members(self) -> bool:
        return isinstance(self.lr, np.ndarray) or isinstance(self.weight_decay, np.ndarray) \
            or self.member_mask is not None

    def _hyper(self, name, value, p, factor=1.0):
        """A float, or for per-member values an array shaped (E, 1, ..., 1) like p."""
        mask = self.member_mask if name == "lr" else None
        if not isinstance(value, np.ndarray) and mask is None:
            return value * factor
        host = np.broadcast_to(np.asarray(value, dtype=np.float64), (p.shape[0],)) * factor
        if mask is not None:
            host = host * mask
        cache_key = (name, p.ndim, host.tobytes())
        arr = self._hyper_cache.get(cache_key)
        if arr is None:
            xp = array_api_compat.array_namespace(p)
            arr = xp.asarray(host.reshape((-1,) + (1,) * (p.ndim - 1)), dtype=p.dtype,
                             device=array_api_compat.device(p))
            if len(self._hyper_cache) > 64:  # schedules change lr every step
                self._hyper_cache.clear()
            self._hyper_cache[cache_key] = arr
        return arr

    # -- checkpoints -----------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Optimizer state as host arrays, keys "<param key>/<name>" (for checkpoints)."""
        out = {}
        for key, st in self.state.items():
            for name, value in st.items():
                out[f"{key}/{name}"] = np.asarray(value) if name == "step" else to_numpy(value)
        return out

    def load_state_arrays(self, arrays: dict, params: dict) -> None:
        """Restore `state_arrays()` output onto the backend and device of ``params``."""
        self.state = {}
        for flat, value in arrays.items():
            key, name = flat.rsplit("/", 1)
            if key not in params:
                raise ConfigError(f"optimizer state for unknown parameter {key!r}")
            st = self.state.setdefault(key, {})
            if name == "step":
                st[name] = int(value)
            else:
                p = params[key]
                xp = array_api_compat.array_namespace(p)
                st[name] = xp.asarray(np.array(value), dtype=p.dtype,
                                      device=array_api_compat.device(p))
                if self._k is None:
                    self._k = kernels_for_namespace(xp)

    def config(self) -> dict:
        """Name and hyperparameters, JSON-ready."""
        cfg = {"name": type(self).__name__, "t": self.t, "clip_norm": self.clip_norm}
        for k, v in vars(self).items():
            if k in ("state", "schedule", "member_mask") or k.startswith("_") or k == "t":
                continue
            cfg[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return cfg

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k not in ("name", "t"))
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """p ← p − lr·g;  with momentum μ: b ← μ b + (1 − dampening) g, and g ← b (or g + μ b, Nesterov)."""

    def __init__(self, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0,
                 **kw):
        super().__init__(lr, weight_decay=weight_decay, **kw)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ConfigError("Nesterov momentum needs momentum > 0 and dampening = 0")
        self.momentum, self.nesterov, self.dampening = float(momentum), bool(nesterov), \
            float(dampening)

    def _update(self, p, g, st, lr, wd):
        first = "momentum_buffer" not in st
        p, buf = self._k.sgd(p, g, st.get("momentum_buffer"), lr, self.momentum,
                             self.dampening, self.nesterov, wd, first)
        if self.momentum:
            st["momentum_buffer"] = buf
        return p


class RMSprop(Optimizer):
    """v ← α v + (1 − α) g²;  p ← p − lr · g / (√v + ε)  (torch defaults: lr=0.01, α=0.99)."""

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, **kw):
        super().__init__(lr, weight_decay=weight_decay, **kw)
        self.alpha, self.eps = float(alpha), float(eps)
        self.momentum, self.centered = float(momentum), bool(centered)

    def _update(self, p, g, st, lr, wd):
        xp = array_api_compat.array_namespace(p)
        if "square_avg" not in st:
            st["square_avg"] = xp.zeros_like(p)
            if self.centered:
                st["grad_avg"] = xp.zeros_like(p)
            if self.momentum:
                st["momentum_buffer"] = xp.zeros_like(p)
        p, v, gavg, buf = self._k.rmsprop(p, g, st["square_avg"], st.get("grad_avg"),
                                          st.get("momentum_buffer"), lr, self.alpha, self.eps,
                                          wd, self.momentum, self.centered)
        st["square_avg"] = v
        if self.centered:
            st["grad_avg"] = gavg
        if self.momentum:
            st["momentum_buffer"] = buf
        return p


class Adam(Optimizer):
    """m ← β₁m + (1 − β₁)g,  v ← β₂v + (1 − β₂)g²,  p ← p − lr·m̂ / (√v̂ + ε)  (bias-corrected)."""

    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw):
        super().__init__(lr, weight_decay=weight_decay, **kw)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)

    def _update(self, p, g, st, lr, wd):
        if "exp_avg" not in st:
            xp = array_api_compat.array_namespace(p)
            st["exp_avg"], st["exp_avg_sq"] = xp.zeros_like(p), xp.zeros_like(p)
        p, st["exp_avg"], st["exp_avg_sq"] = self._k.adam(
            p, g, st["exp_avg"], st["exp_avg_sq"], lr, self.betas[0], self.betas[1], self.eps,
            wd, self.decoupled, st["step"])
        return p


class AdamW(Adam):
    """Adam with decoupled weight decay: p ← p(1 − lr·λ) before the Adam step (default λ = 0.01)."""

    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, **kw):
        super().__init__(lr, betas=betas, eps=eps, weight_decay=weight_decay, **kw)


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def get_optimizer(spec, **kwargs) -> Optimizer:
    """An optimizer from an instance or a name ("adam", "sgd", ...) and keyword arguments."""
    if isinstance(spec, Optimizer):
        return spec
    key = str(spec).lower()
    if key not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {spec!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key](**kwargs)


# -- gradient clipping ----------------------------------------------------------------
def global_norm(grads: dict, members: bool = False):
    """√(Σ g²) over all gradients (per member when ``members``), a backend array."""
    gs = list(grads.values())
    xp = array_api_compat.array_namespace(gs[0])
    if not members:
        return xp.sqrt(sum(xp.sum(g * g) for g in gs))
    return xp.sqrt(sum(xp.sum(xp.reshape(g * g, (g.shape[0], -1)), axis=1) for g in gs))


def clip_by_global_norm(grads: dict, max_norm: float, members: bool = False) -> dict:
    """Scale all gradients by min(1, max_norm / (‖g‖ + 1e-6)), as torch's clip_grad_norm_."""
    xp = array_api_compat.array_namespace(next(iter(grads.values())))
    norm = global_norm(grads, members)
    scale = xp.clip(max_norm / (norm + 1e-6), max=1.0)
    out = {}
    for k, g in grads.items():
        s = xp.reshape(scale, (-1,) + (1,) * (g.ndim - 1)) if members else scale
        out[k] = g * s
    return out


# -- learning-rate schedules: step number (from 0) -> factor on the base lr ----------------
class StepDecay:
    """factor = gamma ** (t // step_size)."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size, self.gamma = int(step_size), float(gamma)

    def __call__(self, t):
        return self.gamma ** (t // self.step_size)


class ExponentialDecay:
    """factor = gamma ** t."""

    def __init__(self, gamma: float):
        self.gamma = float(gamma)

    def __call__(self, t):
        return self.gamma ** t


class CosineDecay:
    """factor from 1 down to ``min_factor`` over ``total_steps`` along half a cosine."""

    def __init__(self, total_steps: int, min_factor: float = 0.0):
        self.total, self.min_factor = max(int(total_steps), 1), float(min_factor)

    def __call__(self, t):
        frac = min(t, self.total) / self.total
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * frac))


class LinearWarmup:
    """factor rises linearly over ``warmup_steps``, then follows ``after`` (or stays 1)."""

    def __init__(self, warmup_steps: int, after=None):
        self.warmup, self.after = max(int(warmup_steps), 1), after

    def __call__(self, t):
        if t < self.warmup:
            return (t + 1) / self.warmup
        return 1.0 if self.after is None else self.after(t - self.warmup)


SCHEDULES = ("constant", "step", "exponential", "cosine", "warmup", "warmup_cosine")


def make_schedule(name: str | None, total_steps: int, steps_per_epoch: int = 1):
    """A schedule by name for a run of ``total_steps`` (used by the command line)."""
    if name in (None, "constant", "none"):
        return None
    if name == "step":
        return StepDecay(max(total_steps // 3, 1), 0.1)
    if name == "exponential":
        return ExponentialDecay(0.01 ** (1.0 / max(total_steps, 1)))
    if name == "cosine":
        return CosineDecay(total_steps)
    if name == "warmup":
        return LinearWarmup(steps_per_epoch)
    if name == "warmup_cosine":
        return LinearWarmup(steps_per_epoch, CosineDecay(max(total_steps - steps_per_epoch, 1)))
    raise ConfigError(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")


def _check_hyper(name, value, allow_zero=False):
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ConfigError(f"{name} must be a number or a 1-D sequence (one per member)")
        bad = arr < 0 if allow_zero else arr <= 0
        if bad.any() or not np.isfinite(arr).all():
            raise ConfigError(f"{name} values must be finite and {'>= 0' if allow_zero else '> 0'}"
                              f", got {arr.tolist()}")
        return arr
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, "
                          f"got {value}")
    return value


def _is_zero(value) -> bool:
    return isinstance(value, float) and value == 0.0
