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
import operator

import array_api_compat
import numpy as np

from ..backend import namespace_of, to_numpy
from ..errors import ConfigError
from ..kernels import kernels_for_namespace


class Optimizer:
    """Shared machinery; a subclass writes only `_update(p, g, state, lr, weight_decay)`."""

    def __init__(self, lr, *, weight_decay=0.0, clip_norm: float | None = None, schedule=None):
        self.lr = _check_hyper("lr", lr)
        self.weight_decay = _check_hyper("weight_decay", weight_decay, allow_zero=True)
        self.clip_norm = None if clip_norm is None else _in_range(
            "clip_norm", clip_norm, 0.0, math.inf, lo_open=True, hi_open=True)
        self.schedule = schedule
        self.t = 0                  # steps taken
        self.state: dict = {}       # parameter key -> {"step": int, name: array, ...}
        self.member_mask = None     # ensemble: 0/1 per member, 0 freezes a stopped member
        self._k = None
        self._hyper_cache: dict = {}
        self._group = None          # _FlatGroup: the parameters as views of one buffer

    # -- the public step -------------------------------------------------------------
    def step(self, params: dict, grads: dict) -> None:
        if not grads:
            return
        members = self._members
        if members:
            self._check_members(params)
        if self._k is None:
            first = next(iter(grads.values()))
            self._k = kernels_for_namespace(namespace_of(first))
        if self.clip_norm is not None:
            # an ensemble's members are clipped by their own norms, as if trained alone
            per_member = members or getattr(params, "ensemble", None) is not None
            grads = clip_by_global_norm(grads, self.clip_norm, members=per_member)
        factor = 1.0 if self.schedule is None else float(self.schedule(self.t))
        self.t += 1
        if self._k.in_place and not members and self._flat_step(params, grads, factor):
            return
        for key, g in grads.items():
            if key not in params:
                raise KeyError(f"gradient {key!r} has no parameter; "
                               f"parameters: {', '.join(params)}")
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

    def _flat_step(self, params, grads, factor) -> bool:
        """One update over all parameters at once, on backends that update in place.

        The parameters become views of one flat buffer (and so does the state),
        so Adam is a dozen whole-buffer calls per step instead of a dozen per
        parameter: what makes small networks fast. Returns False (and the caller
        updates parameter by parameter) when the grouping does not apply.
        """
        group = self._group
        if group is None or not group.matches(params, grads):
            group = self._group = _FlatGroup.build(params, grads, self.state)
            if group is None:
                return False
        g = getattr(grads, "flat", None)  # the model's own flat buffer, when it has one
        if g is None or tuple(grads) != group.keys or g.dtype != group.flat.dtype:
            g = self._k.flatten([grads[k] for k in group.keys])
        group.state["step"] += 1
        for k in group.keys:
            self.state[k]["step"] = group.state["step"]
        wd = self.weight_decay
        new = self._update(group.flat, g, group.state, self.lr * factor,
                           None if _is_zero(wd) else wd)
        if new is not group.flat:
            group.rebind(params, new)
        group.share_state(self.state)
        return True

    @property
    def current_lr(self):
        """The learning rate the next step will use (after the schedule)."""
        factor = 1.0 if self.schedule is None else float(self.schedule(self.t))
        return self.lr * factor

    def _update(self, p, g, st, lr, wd):
        raise NotImplementedError

    # -- per-member hyperparameters ----------------------------------------------------
    def _check_members(self, params):
        """Per-member values need a model with that many members (model.params knows)."""
        if not hasattr(params, "ensemble"):
            return  # a plain dict: nothing to check against
        for name in ("lr", "weight_decay", "member_mask"):
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and value.shape[0] != (params.ensemble or 0):
                members = f"an ensemble of {params.ensemble}" if params.ensemble else "one model"
                raise ConfigError(f"{name} has {value.shape[0]} per-member values, but the "
                                  f"parameters belong to {members}")

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
            xp = namespace_of(p)
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
        self._group = None
        for flat, value in arrays.items():
            key, name = flat.rsplit("/", 1)
            if key not in params:
                raise ConfigError(f"optimizer state for unknown parameter {key!r}")
            st = self.state.setdefault(key, {})
            if name == "step":
                st[name] = int(value)
            else:
                p = params[key]
                xp = namespace_of(p)
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
    """p ← p − lr·g;  with momentum μ: b ← μb + (1 − dampening)g, then g ← b (Nesterov: g + μb)."""

    def __init__(self, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0,
                 **kw):
        super().__init__(lr, weight_decay=weight_decay, **kw)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ConfigError("Nesterov momentum needs momentum > 0 and dampening = 0")
        self.momentum = _in_range("momentum", momentum, 0.0, math.inf, hi_open=True)
        self.nesterov = bool(nesterov)
        self.dampening = _in_range("dampening", dampening, 0.0, 1.0)

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
        self.alpha = _in_range("alpha", alpha, 0.0, 1.0)
        self.eps = _in_range("eps", eps, 0.0, math.inf, hi_open=True)
        self.momentum = _in_range("momentum", momentum, 0.0, math.inf, hi_open=True)
        self.centered = bool(centered)

    def _update(self, p, g, st, lr, wd):
        xp = namespace_of(p)
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
        self.betas = (_in_range("betas[0]", betas[0], 0.0, 1.0, hi_open=True),
                      _in_range("betas[1]", betas[1], 0.0, 1.0, hi_open=True))
        self.eps = _in_range("eps", eps, 0.0, math.inf, hi_open=True)

    def _update(self, p, g, st, lr, wd):
        if "exp_avg" not in st:
            xp = namespace_of(p)
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
    xp = namespace_of(gs[0])
    if not members:
        return xp.sqrt(sum(xp.sum(g * g) for g in gs))
    return xp.sqrt(sum(xp.sum(xp.reshape(g * g, (g.shape[0], -1)), axis=1) for g in gs))


def clip_by_global_norm(grads: dict, max_norm: float, members: bool = False) -> dict:
    """Scale all gradients by min(1, max_norm / (‖g‖ + 1e-6)), as torch's clip_grad_norm_."""
    xp = namespace_of(next(iter(grads.values())))
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


def _in_range(name, value, lo, hi, *, lo_open=False, hi_open=False) -> float:
    """A scalar hyperparameter as a float, refused (also NaN) outside [lo, hi] or its open ends."""
    v = float(value)
    if not ((v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)):
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ConfigError(f"{name} must be in {interval}, got {value}")
    return v


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


class _FlatGroup:
    """Parameters (and their optimizer state) packed as views of one flat buffer each."""

    def __init__(self, keys, flat, views, state):
        self.keys, self.flat, self.views, self.state = keys, flat, views, state
        self._shared: dict = {}  # state name -> the flat array whose views opt_state holds

    @classmethod
    def build(cls, params, grads, opt_state):
        keys = tuple(grads)
        arrays = [params[k] for k in keys]
        if len({a.dtype for a in arrays}) != 1:
            return None
        steps = {opt_state.get(k, {}).get("step", 0) for k in keys}
        names = [set(opt_state.get(k, {})) - {"step"} for k in keys]
        if len(steps) != 1 or any(n != names[0] for n in names):
            return None  # parameters at different points of their history
        xp = namespace_of(arrays[0])
        flat = xp.concat([xp.reshape(a, (-1,)) for a in arrays])
        views = cls._split(xp, flat, arrays)
        for k, v in zip(keys, views, strict=True):
            params[k] = v
        state = {"step": steps.pop()}
        for name in names[0]:
            state[name] = xp.concat([xp.reshape(opt_state[k][name], (-1,)) for k in keys])
        group = cls(keys, flat, views, state)
        for k in keys:
            opt_state.setdefault(k, {"step": state["step"]})
        group.share_state(opt_state)
        return group

    @staticmethod
    def _split(xp, flat, like):
        views, start = [], 0
        for a in like:
            n = 1
            for d in a.shape:
                n *= d
            views.append(xp.reshape(flat[start:start + n], a.shape))
            start += n
        return views

    def matches(self, params, grads) -> bool:
        """Same keys, and every parameter still the view of this buffer (map: no Python loop)."""
        return (len(grads) == len(self.keys)
                and all(map(operator.is_, map(params.get, self.keys), self.views))
                and all(map(grads.__contains__, self.keys)))

    def share_state(self, opt_state):
        """Point each parameter's state entries at its slice of the flat state (for checkpoints)."""
        for name, flat in self.state.items():
            if name == "step" or flat is None or self._shared.get(name) is flat:
                continue
            xp = namespace_of(flat)
            for k, v in zip(self.keys, self._split(xp, flat, self.views), strict=True):
                opt_state[k][name] = v
            self._shared[name] = flat

    def rebind(self, params, flat):
        """Adopt a new flat parameter buffer (an update that returned a new array)."""
        xp = namespace_of(flat)
        self.flat, self.views = flat, self._split(xp, flat, self.views)
        for k, v in zip(self.keys, self.views, strict=True):
            params[k] = v


def _is_zero(value) -> bool:
    return isinstance(value, float) and value == 0.0
