"""What every optimizer shares: one update over a model's flat buffers.

    opt.step(model.params, model.grads)

An optimizer names its state and writes one function,

    update(k, p, g, state, lr, wd, step) -> (p, state)

the formula over arrays, through the kernels (``k.adam``, ``k.sgd``, ...). `step`
runs it once over the whole model (the store's flat parameter and gradient
buffers, and flat state of the same layout), and a compiled step
(`nnkernel.train.compiled`) runs the same function under ``jax.jit``. Clipping
(`clip`), the schedule (`factor`) and per-member hyperparameters are small pieces
around it. A parameter left out of ``grads`` is frozen: its entries are masked
out of the update and its step count stays (torch skips a parameter without a
gradient). Any other dict of arrays is updated entry by entry with the same
function, the dict's entries rebound to new arrays.

Hyperparameters that are scalars in an update (``lr``, ``weight_decay``) may be
a sequence of E values for an ensemble of E members: member i then trains with
the i-th value, so a learning-rate sweep is one run. ``decay`` chooses which
parameters weight decay applies to (GPT training decays only its matrices):
every one (None), "matrices" (those of two or more axes), a collection of keys, or
a function of (key, shape).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import kernels_for_array
from ..checks import finite_positive, in_range
from ..errors import ConfigError, MissingKeyError
from ..nn.mappings import Gradients, Parameters
from .clipping import clip_by_global_norm, clip_scale
from .flat import FlatState
from .state import StateFiles


class Optimizer(StateFiles):
    """Shared machinery; a subclass names its state and writes `update`."""

    state_names: tuple[str, ...] = ()  # the state arrays kept per parameter

    def __init__(self, lr, *, weight_decay=0.0, decay=None, clip_norm: float | None = None,
                 schedule=None):
        self.lr = _check_hyper("lr", lr)
        self.weight_decay = _check_hyper("weight_decay", weight_decay, allow_zero=True)
        self.decay = _check_decay(decay)
        self.clip_norm = None if clip_norm is None else in_range(
            "clip_norm", clip_norm, 0.0, math.inf, lo_open=True, hi_open=True)
        if schedule is not None and not callable(schedule):
            raise ConfigError(f"schedule must be a function of the step number, got "
                              f"{schedule!r}")
        self.schedule = schedule
        self.t = 0                  # steps taken
        self.member_mask = None     # ensemble: 0/1 per member, 0 freezes a stopped member
        self._flat: FlatState | None = None  # state for one model's parameter store
        self._per_key: dict = {}    # state for plain dicts: key -> {"step": int, name: array}
        self._hyper_cache: dict = {}
        self._unbound = None        # state arrays of a copied or unpickled optimizer

    def update(self, k, p, g, state: dict, lr, wd, step):
        """One update of p from g: returns (new p, new state); ``k`` are the kernels of p's
        library (a twin may update in place and return the same arrays)."""
        raise NotImplementedError

    # -- the public step -----------------------------------------------------------------------
    def step(self, params, grads) -> None:
        """Update ``params`` (``model.params``, or a dict of arrays) from ``grads``."""
        if type(params) is Parameters:
            store = params.store
            fs = self._flat
            if fs is None or fs.store is not store:
                fs = self.flat_state(store)
            keys = _active_keys(store, grads)
            if not keys:
                return
            factor = 1.0 if self.schedule is None else self.factor()
            with store.backend.activate():
                lr, wd = self.step_hypers(store, factor)
                k, g = store.backend.kernels, store.grad
                if len(keys) == len(store.keys) and fs.uniform is not None:
                    if self.clip_norm is not None:
                        g = self.clip(k, [g], store.ensemble is not None, store.mutable)[0]
                    p, state = self.update(k, store.flat, g, fs.arrays, lr, wd, fs.uniform + 1)
                    fs.adopt(p, state)
                    fs.advance(keys)
                else:
                    self._step_masked(store, fs, keys, g, lr, wd)
        elif isinstance(grads, Gradients):
            raise ConfigError("opt.step got a model's gradients with parameters that are not "
                              "the model's (a copy such as dict(model.params) is not "
                              "updated); pass model.params itself")
        else:
            if not grads:
                return
            self._check_members(getattr(params, "ensemble", None), known=False)
            self._step_arrays(params, grads, self.factor())
        self.t += 1

    def _step_masked(self, store, fs, keys, g, lr, wd) -> None:
        """Some parameters left out (frozen), or at different step counts: one update per
        step count, each kept only where its parameters live (a mask over the flat buffer)."""
        k, xp = store.backend.kernels, store.xp
        active = store.mask(keys)
        g = xp.where(active, g, 0.0)  # a frozen gradient takes no part in the clipping norm
        if self.clip_norm is not None:
            g = self.clip(k, [g], store.ensemble is not None, False)[0]
        p, state = store.flat, fs.arrays
        for count in sorted({fs.step_of(key) for key in keys}):
            group = store.mask([key for key in keys if fs.step_of(key) == count])
            copies = {n: xp.asarray(a, copy=True) for n, a in state.items()}  # a twin writes
            new_p, new = self.update(k, xp.asarray(p, copy=True), g, copies, lr, wd, count + 1)
            p = xp.where(group, new_p, p)
            state = {n: xp.where(group, new[n], state[n]) for n in state}
        fs.adopt(p, state)
        fs.advance(keys)

    def _step_arrays(self, params, grads, factor) -> None:
        """The update for a plain dict of arrays: entry by entry, rebinding the dict (the
        arrays passed in are not written, whatever the library)."""
        stacked = getattr(params, "ensemble", None) is not None  # a leading member axis
        if self.clip_norm is not None:
            grads = clip_by_global_norm(grads, self.clip_norm, members=self._members or stacked)
        for key, g in grads.items():
            if key not in params:
                raise MissingKeyError(f"gradient {key!r} has no parameter among the ones "
                                      f"passed to step: {', '.join(map(str, params))}")
            p = params[key]
            k = kernels_for_array(p)
            xp = k.xp
            st = self._per_key.get(key)
            if st is None:
                st = self._per_key[key] = {"step": 0, **{n: xp.zeros_like(p)
                                                         for n in self.state_names}}
            st["step"] += 1
            lr = self._hyper("lr", self.lr, p, factor)
            shape = tuple(p.shape)[1:] if stacked else tuple(p.shape)
            wd = self._hyper("weight_decay", self.weight_decay, p) if self.decays(key, shape) \
                else 0.0
            own = xp.asarray(p, copy=True) if k.in_place else p
            new, arrays = self.update(k, own, g, {n: st[n] for n in self.state_names}, lr,
                                      None if _is_zero(wd) else wd, st["step"])
            st.update(arrays)
            params[key] = new

    # -- pieces around `update`, also used by a compiled step ------------------------------------
    def flat_state(self, store) -> FlatState:
        """This optimizer's flat state for ``store``: made on first use, moved after
        ``model.to(...)``; another model's store is refused (its state is not this one's)."""
        fs = self._flat
        if fs is not None and fs.store is store:
            return fs
        if self._unbound is not None:  # a copied or unpickled optimizer: its first model
            arrays, self._unbound = self._unbound, None
            self.load_state_arrays(arrays, Parameters(store))
            return self._flat
        if fs is None:
            fs = self._flat = FlatState(store, self.state_names)
            return fs
        if fs.store.owner is not store.owner:
            raise ConfigError("this optimizer holds the state (Adam's moments, step counts) of "
                              "another model; use one optimizer per model, or call "
                              "optimizer.reset() to start afresh")
        fs.move_to(store)
        self._hyper_cache.clear()
        return fs

    def reset(self) -> None:
        """Forget every state array and step count, as a new optimizer of these settings."""
        self.t = 0
        self._flat, self._per_key, self._unbound = None, {}, None
        self._hyper_cache.clear()

    def step_hypers(self, store, factor=None, masked: bool = True):
        """(lr, weight decay or None) of the next step: floats, or per-member (E, 1) arrays;
        with a ``decay`` selection the weight decay is an array laid out as the flat buffer
        (``masked=False``: not; the caller applies `decays` per parameter)."""
        if factor is None:
            factor = self.factor()
        lr, wd = self.lr, self.weight_decay
        if type(lr) is float and type(wd) is float and self.member_mask is None:
            if wd == 0.0:  # the usual case, in a few operations
                return lr * factor, None
            if self.decay is None or not masked:
                return lr * factor, wd
        lr = self._flat_hyper("lr", self.lr, store, factor)
        wd = self._flat_hyper("weight_decay", self.weight_decay, store)
        if _is_zero(wd):
            return lr, None
        if self.decay is not None and masked:
            wd = wd * self._decay_mask(store)
        return lr, wd

    def decays(self, key, shape) -> bool:
        """Whether weight decay applies to parameter ``key`` (of per-member ``shape``)."""
        decay = self.decay
        if decay is None:
            return True
        if decay == "matrices":
            return len(shape) >= 2
        if callable(decay):
            return bool(decay(key, tuple(shape)))
        return key in decay

    def _decay_mask(self, store):
        key = ("decay", id(store))
        mask = self._hyper_cache.get(key)
        if mask is None:
            chosen = [k for k in store.keys if self.decays(k, store.shapes[k])]
            mask = store.xp.astype(store.mask(chosen), store.dtype)
            self._remember(key, mask)
        return mask

    def clip(self, k, parts, members: bool, in_place: bool):
        """The gradients scaled to at most ``clip_norm`` in global norm (over all ``parts``);
        an ensemble's members by their own norms, as if trained alone."""
        xp = k.xp
        total = k.sum_of_squares(parts[0], members)
        for g in parts[1:]:
            total = total + k.sum_of_squares(g, members)
        scale = clip_scale(xp, xp.sqrt(total), self.clip_norm)
        if members:
            scale = xp.reshape(scale, (-1, 1))
        if in_place:
            for g in parts:
                g *= scale  # in the store's gradient buffer, as torch clips .grad in place
            return parts
        return [g * scale for g in parts]

    @property
    def current_lr(self):
        """The learning rate the next step will use (after the schedule)."""
        return self.lr * self.factor()

    def factor(self) -> float:
        """The schedule's multiplier of the base rate at the next step (1 without one)."""
        if self.schedule is None:
            return 1.0
        value = self.schedule(self.t)
        try:
            return finite_positive(f"the schedule's factor at step {self.t}", value,
                                   allow_zero=True)
        except ConfigError as err:
            raise ConfigError(f"{err} (a schedule multiplies the learning rate: a negative "
                              f"factor would ascend the loss)") from None

    # -- per-member hyperparameters ------------------------------------------------------------
    def _check_members(self, ensemble, known=True):
        """Per-member values need a model with that many members."""
        if not known and ensemble is None:
            return  # a plain dict: nothing to check against
        for name in ("lr", "weight_decay", "member_mask"):
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and value.shape[0] != (ensemble or 0):
                members = f"an ensemble of {ensemble}" if ensemble else "one model"
                raise ConfigError(f"{name} has {value.shape[0]} per-member values, but the "
                                  f"parameters belong to {members}")

    @property
    def _members(self) -> bool:
        return type(self.lr) is np.ndarray or type(self.weight_decay) is np.ndarray \
            or self.member_mask is not None

    def _flat_hyper(self, name, value, store, factor=1.0):
        """A float, or for per-member values an (E, 1) array on the store's device."""
        mask = self.member_mask if name == "lr" else None
        if type(value) is float and mask is None:
            return value * factor
        self._check_members(store.ensemble)
        host = np.broadcast_to(np.asarray(value, dtype=np.float64), (store.ensemble,)) * factor
        if mask is not None:
            host = host * mask
        key = (name, "flat", host.tobytes())
        arr = self._hyper_cache.get(key)
        if arr is None:
            arr = store.backend.asarray(host.reshape(-1, 1), dtype=store.dtype)
            self._remember(key, arr)
        return arr

    def _hyper(self, name, value, p, factor=1.0):
        """A float, or for per-member values an array shaped (E, 1, ..., 1) like p."""
        mask = self.member_mask if name == "lr" else None
        if not isinstance(value, np.ndarray) and mask is None:
            return value * factor
        host = np.broadcast_to(np.asarray(value, dtype=np.float64), (p.shape[0],)) * factor
        if mask is not None:
            host = host * mask
        key = (name, p.ndim, host.tobytes())
        arr = self._hyper_cache.get(key)
        if arr is None:
            import array_api_compat

            arr = kernels_for_array(p).xp.asarray(host.reshape((-1,) + (1,) * (p.ndim - 1)),
                                                  dtype=p.dtype,
                                                  device=array_api_compat.device(p))
            self._remember(key, arr)
        return arr

    def _remember(self, key, arr):
        if len(self._hyper_cache) > 64:  # schedules change lr every step
            self._hyper_cache.clear()
        self._hyper_cache[key] = arr

    # -- copying and pickling ------------------------------------------------------------------
    def __getstate__(self):
        """Settings, step count and state as host arrays; a copy binds them to the first model
        it steps (whose parameters must have the same keys and shapes)."""
        out = {k: v for k, v in vars(self).items()
               if k not in ("_flat", "_per_key", "_hyper_cache", "_unbound")}
        if self._per_key:
            raise ConfigError("an optimizer used on plain dicts of arrays cannot be copied; "
                              "copy the arrays and make a new optimizer")
        out["_unbound"] = self.state_arrays() if self._flat is not None else self._unbound
        return out

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._flat, self._per_key, self._hyper_cache = None, {}, {}

    def config(self) -> dict:
        """Name and hyperparameters, JSON-ready."""
        cfg = {"name": type(self).__name__, "t": self.t, "clip_norm": self.clip_norm}
        for k, v in vars(self).items():
            if k in ("schedule", "member_mask") or k.startswith("_") or k == "t":
                continue
            if k == "decay":  # a function is not configuration that can be written down
                v = sorted(v) if isinstance(v, frozenset) else (None if callable(v) else v)
            cfg[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return cfg

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k not in ("name", "t"))
        return f"{type(self).__name__}({args})"


# -- helpers -------------------------------------------------------------------------------------
def _active_keys(store, grads):
    """The store keys this step updates; gradients from elsewhere are written into the store."""
    if type(grads) is Gradients and grads.store is store:
        if not grads.left_out:
            return store.keys
    elif not grads:
        return ()
    else:
        unknown = [k for k in grads if k not in store.bounds]
        if unknown:
            raise MissingKeyError(f"gradient {unknown[0]!r} has no parameter; "
                                  f"parameters: {', '.join(store.keys)}")
        into = Gradients(store)
        for key, g in grads.items():
            into[key] = g
    if len(grads) == len(store.keys):
        return store.keys
    return [k for k in store.keys if k in grads]


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
    return finite_positive(name, value, allow_zero)


def _check_decay(decay):
    if decay is None or decay == "matrices" or callable(decay):
        return decay
    if isinstance(decay, str) or not hasattr(decay, "__iter__"):
        raise ConfigError(f"decay must be None, 'matrices', a collection of parameter keys or "
                          f"a function of (key, shape), got {decay!r}")
    return frozenset(decay)


def _is_zero(value) -> bool:
    return isinstance(value, float) and value == 0.0
